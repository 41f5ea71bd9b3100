"""The ``--json`` contract: every key a script may read stays where it was.

``envbuild resolve --json`` on each shipped example (examples/*/envbuild.toml against each of its
targets) and on each story of tests/cases/resolve, and ``envbuild matrix KIND --json``, are run
in-process and reduced to their key paths (``choices[].verdict.rule``); the paths must equal the
committed snapshot tests/data/json_contract.json, written from the code before a refactor.  Keys
whose names are data (package names, table names, env variables) are compared as a map, not by name,
so a data update does not break the contract but a renamed or dropped field does.

A key added on purpose goes into ``ADDED`` (the snapshot stays the record of the old contract); a new
example or case: ``python tests/test_json_contract.py --update``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from envbuild.cli import app

ROOT = Path(__file__).resolve().parent.parent
SNAPSHOT = Path(__file__).parent / "data" / "json_contract.json"
CASES = Path(__file__).parent / "cases" / "resolve"
PROFILES = Path(__file__).parent / "data" / "profiles"
# keys that are data (package names, table names, env variable names): one "*" entry stands for them
MAPS = {"packages", "knowledge.tables", "source_builds[].env", "build_env"}
# keys added on purpose since the snapshot (never a rename: the old keys stay): the structured form of
# ``conflicts`` (issue 14: each fact with its source, and the suggestion)
ADDED = {"resolve": {"conflict_details", "conflict_details[].text", "conflict_details[].suggestion",
                     "conflict_details[].facts", "conflict_details[].facts[].text",
                     "conflict_details[].facts[].source", "conflict_details[].facts[].confidence"}}
FLAG = {"python": "--python", "driver": "--driver", "gpu": "--gpu", "cuda_toolkit": "--cuda-toolkit",
        "gcc": "--gcc"}


def key_paths(obj: Any, prefix: str = "") -> set[str]:
    """Every key path of a JSON value; list elements merge under ``name[]``; maps become ``name.*``."""
    out: set[str] = set()
    if isinstance(obj, dict):
        if prefix.rstrip(".") in MAPS:
            return {prefix + "*"} if obj else set()
        for k, v in obj.items():
            out.add(prefix + k)
            out |= key_paths(v, f"{prefix}{k}.")
    elif isinstance(obj, list):
        base = prefix.rstrip(".") + "[]."
        for e in obj:
            out |= key_paths(e, base)
    return out


def _case_args(case: dict[str, Any]) -> list[str]:
    args = ["resolve", *case["requested"]]
    if case.get("profile"):
        args += ["--target", str(PROFILES / case["profile"])]
    for k, v in case.get("flags", {}).items():
        if k == "cpu":
            args += ["--cpu"] if v else []
        else:
            args += [FLAG[k], str(v)]
    opts = case.get("options", {})
    if opts.get("native_driver_only"):
        args.append("--native-driver-only")
    if opts.get("prefer_pypi") is False:
        args.append("--pytorch-index-always")
    return args


def commands() -> dict[str, list[str]]:
    """Every contract run: id -> CLI arguments (without --json)."""
    runs: dict[str, list[str]] = {}
    for spec in sorted((ROOT / "examples").glob("*/envbuild.toml")):
        for tgt in sorted((spec.parent / "targets").glob("*.json")):
            runs[f"resolve:example:{spec.parent.name}:{tgt.stem}"] = [
                "resolve", "--spec", str(spec), "--target", str(tgt)]
    for path in sorted(CASES.glob("*.json")):
        runs[f"resolve:case:{path.stem}"] = _case_args(json.loads(path.read_text()))
    for kind in ("torch", "mmcv", "cupy", "driver"):
        runs[f"matrix:{kind}"] = ["matrix", kind]
    runs["error:bad-requirement"] = ["resolve", "torch>=>2", "--cpu"]
    return runs


def run_json(args: list[str]) -> Any:
    result = CliRunner().invoke(app, [*args, "--json"], catch_exceptions=False)
    assert result.exit_code in (0, 1, 2), (args, result.exit_code, result.output)
    return json.loads(result.stdout)


def current() -> dict[str, list[str]]:
    return {cid: sorted(key_paths(run_json(args))) for cid, args in commands().items()}


_SNAP: dict[str, list[str]] = json.loads(SNAPSHOT.read_text()) if SNAPSHOT.exists() else {}


def test_snapshot_covers_every_run() -> None:
    """A new example or case is added to the snapshot on purpose, not skipped silently."""
    assert set(commands()) == set(_SNAP), "regenerate with: python tests/test_json_contract.py --update"


@pytest.mark.parametrize("cid", sorted(commands()))
def test_json_keys_unchanged(cid: str) -> None:
    got = set(key_paths(run_json(commands()[cid])))
    want = set(_SNAP[cid])
    assert not want - got, f"{cid}: keys dropped from --json: {sorted(want - got)}"
    extra = got - want - ADDED.get(cid.split(":")[0], set())
    assert not extra, f"{cid}: keys added to --json (list them in ADDED on purpose): {sorted(extra)}"


def test_key_paths_merges_lists_and_maps() -> None:
    d = {"a": [{"x": 1}, {"y": 2}], "packages": {"torch": "1"}, "b": {"c": None}}
    assert key_paths(d) == {"a", "a[].x", "a[].y", "packages", "packages.*", "b", "b.c"}


if __name__ == "__main__":
    if sys.argv[1:] == ["--update"]:
        SNAPSHOT.write_text(json.dumps(current(), indent=1, sort_keys=True) + "\n")
        print(f"wrote {SNAPSHOT}")
