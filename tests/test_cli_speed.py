"""The lock command's speed rules, checked as a user could: what a command imports, and that a re-lock's
early uv run (started before the CLI is parsed) never changes what is written.

Offline: a local index on 127.0.0.1 (tests/pypi_fixture.py) and the real uv.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from pypi_fixture import Index, make_wheel, serving

from envbuild.tools import uv

ROOT = Path(__file__).resolve().parents[1]


def _envbuild(args: list[str], cwd: Path) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    """Run ``python -m envbuild ARGS`` (the console script's entry) and list the modules it imported."""
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "envbuild", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "COLUMNS": "100"})
    mods = {ln.rsplit("|", 1)[1].strip() for ln in proc.stderr.splitlines() if ln.startswith("import time:")}
    return proc, mods


def _six_index(tmp_path: Path, *versions: str) -> Index:
    idx = Index(tmp_path / "www")
    idx.add("simple", [make_wheel(idx.file("x").parent, "six", v, tag="py2.py3-none-any") for v in versions])
    return idx


STAGES = {"envbuild.lock", "envbuild.resolve", "envbuild.matrix", "envbuild.spec", "envbuild.models",
          "envbuild.pack", "envbuild.doctor", "envbuild.fetch", "requests"}


def test_help_and_version_import_no_stage(tmp_path: Path) -> None:
    for args in (["--version"], ["--help"], ["lock", "--help"]):
        proc, mods = _envbuild(args, tmp_path)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert not mods & STAGES, (args, sorted(mods & STAGES))
    _, mods = _envbuild(["--version"], tmp_path)
    assert not {m for m in mods if m.split(".")[0] in ("rich", "pydantic")}


def test_lock_json_imports_its_stage_but_no_rich_and_no_other_stage(tmp_path: Path) -> None:
    with serving(_six_index(tmp_path, "1.16.0")) as url:
        proc, mods = _envbuild(["lock", "six", "--python", "3.11", "--index-url", f"{url}/simple",
                                "-o", str(tmp_path / "lk"), "--json"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout)["packages"] == {"six": "1.16.0"}
    assert {"envbuild.lock", "envbuild.resolve"} <= mods
    # JSON output needs no terminal renderer; lock needs no other stage.
    assert not {m for m in mods if m.split(".")[0] == "rich"}
    assert not mods & {"envbuild.pack", "envbuild.doctor", "envbuild.fetch", "envbuild.bundle"}


def test_relock_with_an_early_uv_run_writes_the_same_bytes(tmp_path: Path) -> None:
    idx = _six_index(tmp_path, "1.15.0")
    cache = Path(os.environ["ENVBUILD_CACHE_DIR"]) / "uv-early"
    with serving(idx) as url:
        args = ["lock", "six", "--python", "3.11", "--index-url", f"{url}/simple", "-o", "lk", "--json"]
        before = set(cache.glob("*.json")) if cache.is_dir() else set()
        assert _envbuild(args, tmp_path)[0].returncode == 0
        records = set(cache.glob("*.json")) - before
        assert len(records) == 1  # the run this command line starts with next time
        first = {p.name: p.read_bytes() for p in (tmp_path / "lk").iterdir()}
        assert _envbuild(args, tmp_path)[0].returncode == 0
        assert {p.name: p.read_bytes() for p in (tmp_path / "lk").iterdir()} == first
        # A record that no longer matches what the command computes is never adopted: --upgrade
        # (other inputs) sees the new release although the recorded run did not.
        idx.add("simple", [make_wheel(idx.file("x").parent, "six", "1.16.0", tag="py2.py3-none-any")])
        proc, _ = _envbuild([*args, "--upgrade"], tmp_path)
        assert proc.returncode == 0 and json.loads(proc.stdout)["packages"] == {"six": "1.16.0"}
        # A password in an index URL never reaches the record (nor is a record written for it).
        secret = url.replace("http://", "http://user:s3cret@") + "/private/simple"
        before = set(cache.glob("*.json"))
        proc, _ = _envbuild(["lock", "six", "--python", "3.11", "--index-url", secret, "-o", "lk2", "--json"],
                            tmp_path)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert set(cache.glob("*.json")) == before
        assert not any("s3cret" in p.read_text() for p in cache.glob("*.json"))


def test_an_early_run_is_adopted_only_for_exactly_its_inputs(tmp_path: Path) -> None:
    idx = _six_index(tmp_path, "1.16.0")
    with serving(idx) as url:
        opts = uv.CompileOptions(requirements=("six",), python_version="3.11",
                                 python_platform="x86_64-manylinux_2_17", index_url=f"{url}/simple",
                                 only_binary=True)
        early = uv._Early()
        early.record = tmp_path / "rec.json"
        inputs = uv._Inputs(opts, ("--format", "pylock.toml"), "pylock.toml", None, None)
        out = uv._Run(inputs).result(60)
        early.remember(inputs, out)
        assert json.loads((tmp_path / "rec.json").read_text())["output"] == out

        again = uv._Early()
        again.record, again.run = None, uv._Run(uv._Inputs(opts, inputs.fmt, inputs.out_name, out, None))
        other = uv._Inputs(opts, inputs.fmt, inputs.out_name, None, None)  # no preferences: other inputs
        proc = again.run.proc
        assert again.take(other) is None
        assert proc.poll() is not None  # the run that did not match is stopped
        again.run = uv._Run(uv._Inputs(opts, inputs.fmt, inputs.out_name, out, None))
        taken = again.take(uv._Inputs(opts, inputs.fmt, inputs.out_name, out, None))
        assert taken is not None and uv.parse_pylock(taken.result(60))[0].version == "1.16.0"


def test_early_run_records_are_pruned_to_the_newest(tmp_path: Path) -> None:
    records = tmp_path / "uv-early"
    records.mkdir()
    for i in range(uv._EARLY_RECORDS + 6):
        old = records / f"old{i:03d}.json"
        old.write_text("{}")
        os.utime(old, (1_000_000 + i, 1_000_000 + i))
    opts = uv.CompileOptions(requirements=("six",), python_version="3.11",
                             python_platform="x86_64-manylinux_2_17", index_url="https://pypi.org/simple",
                             only_binary=True)
    early = uv._Early()
    early.record = records / "new.json"
    early.remember(uv._Inputs(opts, ("--format", "pylock.toml"), "pylock.toml", None, None), "out")
    left = {p.name for p in records.glob("*.json")}
    assert len(left) == uv._EARLY_RECORDS and "new.json" in left
    assert "old000.json" not in left and f"old{uv._EARLY_RECORDS + 5:03d}.json" in left
