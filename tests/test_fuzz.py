"""Standing fuzz suite: generated and mutated inputs of every kind, run through the real CLI in-process.

Each case is written to a fresh directory, the CLI runs there (click's CliRunner on the command typer
builds from ``envbuild.cli.app``, the object the console script calls), and the outcome is checked the
way a user would:

- no traceback (no exception escapes, and not the internal-error net's exit 70),
- the exit code is one of the documented ones (0-5),
- a refused input is named: the file (JSON ``path``) and, when the file parsed as an object, the field,
- a failed command leaves no output behind (no new file or directory besides the inputs).

The run is bounded and seeded (``derandomize=True``, a small ``max_examples`` per kind) so CI stays
under a minute; ``bench/fuzz_campaign.py`` runs the same generators for 10k inputs and tallies instead
of asserting.  Nothing here touches the network: every command used is offline for these inputs.
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import os
import tarfile
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click.testing
import pytest
import typer.main
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from envbuild.cli import app

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTED_EXITS = {0, 1, 2, 3, 4, 5, 6}
EXIT_INTERNAL = 70

# --- seeds: real files envbuild writes (committed examples), or built the way envbuild builds them --

PROFILE_SEED: dict[str, Any] = json.loads((ROOT / "examples/echofusion/targets/laptop.json").read_text())
CPU_PROFILE: dict[str, Any] = json.loads((ROOT / "examples/cpu/targets/cpu.json").read_text())
LOCK_SEED: dict[str, Any] = json.loads((ROOT / "examples/cpu/out/lock/envbuild.lock.json").read_text())
SPEC_SEED = (ROOT / "examples/cpu/envbuild.toml").read_text().replace('profile = "targets/cpu.json"', "")
REQS_SEED = "numpy<2\nscipy  # comment\n-r other.txt\nmmengine==0.10.4\n"
ENV_SEED = (
    "name: demo\nchannels:\n  - conda-forge\ndependencies:\n  - python=3.10\n  - pip\n"
    "  - pip:\n      - numpy<2\n      - scipy\n"
)
LOG_SEED = (
    'Traceback (most recent call last):\n  File "train.py", line 3, in <module>\n'
    "    import mmcv._ext\nImportError: libcudart.so.11.0: cannot open shared object file: "
    "No such file or directory\n"
)
WHEEL = b"not really a wheel, but the cache only hashes it\n"
CACHE_SEED: dict[str, Any] = {
    "files": [
        {
            "file": "wheels/demo-1.0-py3-none-any.whl",
            "sha256": hashlib.sha256(WHEEL).hexdigest(),
            "size": len(WHEEL),
            "url": "https://example.invalid/demo-1.0-py3-none-any.whl",
            "name": "demo",
            "version": "1.0",
            "kind": "wheel",
            "commit": None,
        }
    ],
    "lock": "demo",
    "spec_hash": "0" * 64,
}
MANIFEST_SEED: dict[str, Any] = {
    "schema_version": 1,
    "generated_by": "envbuild 0.1.0",
    "created": "2026-12-01T00:00:00Z",
    "kind": "venv",
    "format": "tar.gz",
    "source": {"prefix": "/home/user/envs/demo", "profile": CPU_PROFILE},
    "python": "3.11.4",
    "torch": {"version": "2.1.0+cu118", "cuda": "11.8", "site": "lib/python3.11/site-packages"},
    "packages": [
        {
            "name": "numpy",
            "version": "1.26.4",
            "build": None,
            "installer": "pip",
            "channel": None,
            "cuda": None,
        }
    ],
    "lock": None,
    "checksums": "envbuild-files.sha256",
    "fixup": {
        "kind": "venv",
        "old_prefix": "/home/user/envs/demo",
        "python_links": {"bin/python": "/usr/bin/python3"},
        "text_files": ["bin/activate"],
    },
}

# --- generators ---------------------------------------------------------------------------------

json_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
    st.sampled_from(
        [
            "abc",
            "3.10",
            "３.１０",
            "４７０.１２",
            "",
            "[/]",
            "[bold]x",
            "../../victim",
            "/etc/passwd",
            "a\nb",
            "\x00",
            "8.6",
            "sm_86",
            "1e400",
            "-1",
            "x" * 5000,
            "\ud800",
            "numpy[/]",
        ]
    ),
)
json_value = st.recursive(
    json_leaf,
    lambda kids: st.one_of(
        st.lists(kids, max_size=4), st.dictionaries(st.text(max_size=8), kids, max_size=4)
    ),
    max_leaves=12,
)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield prefix
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, (*prefix, i))


def _set(root: Any, path: tuple[Any, ...], value: Any, delete: bool = False) -> Any:
    if not path:
        return value
    parent = root
    for k in path[:-1]:
        parent = parent[k]
    if delete:
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    return root


@st.composite
def mutated_json(draw: st.DrawFn, seed: Any) -> bytes:
    """The seed with a few fields replaced, deleted or retyped; or its bytes damaged; or nested deep."""
    doc = copy.deepcopy(seed)
    for _ in range(draw(st.integers(1, 3))):
        paths = list(_paths(doc))
        path = draw(st.sampled_from(paths))
        op = draw(st.sampled_from(["replace", "replace", "delete", "retype"]))
        if op == "delete" and path:
            doc = _set(doc, path, None, delete=True)
        elif op == "retype":
            doc = _set(doc, path, draw(st.sampled_from([[], {}, 0, "", None, True, [None], {"": 1}])))
        else:
            doc = _set(doc, path, draw(json_value))
    text = json.dumps(doc, indent=2)
    form = draw(st.sampled_from(["json"] * 6 + ["bytes", "truncate", "deep", "nan", "bom"]))
    raw = text.encode("utf-8", "surrogatepass")
    if form == "bytes":
        at = draw(st.integers(0, len(raw)))
        raw = (
            raw[:at] + draw(st.sampled_from([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\x80\x80"])) + raw[at:]
        )
    elif form == "truncate":
        raw = raw[: draw(st.integers(0, len(raw)))]
    elif form == "deep":
        n = draw(st.sampled_from([70, 1000, 100_000]))
        raw = b"[" * n + b"]" * n
    elif form == "nan":
        raw = raw.replace(b"null", b"NaN", 1) if b"null" in raw else b"[NaN]"
    elif form == "bom":
        raw = b"\xef\xbb\xbf" + raw
    return raw


@st.composite
def mutated_text(draw: st.DrawFn, seed: str) -> bytes:
    """Line-level and byte-level damage to a text seed (spec, requirements, environment.yml, logs)."""
    lines = seed.splitlines()
    for _ in range(draw(st.integers(0, 3))):
        op = draw(st.sampled_from(["insert", "replace", "delete", "dup"]))
        i = draw(st.integers(0, max(len(lines) - 1, 0)))
        junk = draw(
            st.one_of(
                st.text(max_size=40),
                st.sampled_from(
                    [
                        "[project]",
                        "python = 3.10",
                        'python = "３.１０"',
                        "name = '../../x'",
                        "requirements = [[[[[[]]]]]]",
                        "a = " + "[" * 2000 + "]" * 2000,
                        "numpy[/]",
                        "x[bold]y",
                        "- pip:",
                        "name: ../../victim",
                        "  - python=３.１０",
                        "git+https://[/]",
                        "-e .",
                        "\t\t- numpy",
                        "[indexes]",
                        'pypi = "ftp://x"',
                        "manager = 'conda'",
                        "requirements = 'numpy'",
                        "[[project]]",
                    ]
                ),
            )
        )
        if op == "insert" or not lines:
            lines.insert(i, junk)
        elif op == "replace":
            lines[i] = junk
        elif op == "delete":
            del lines[i]
        else:
            lines.insert(i, lines[i])
    raw = "\n".join(lines).encode("utf-8", "surrogatepass")
    if draw(st.integers(0, 4)) == 0:
        at = draw(st.integers(0, len(raw)))
        raw = raw[:at] + draw(st.sampled_from([b"\xff\xfe", b"\x00", b"\xc0\xaf", b"\r\r\n"])) + raw[at:]
    return raw


hostile_names = st.one_of(
    st.sampled_from(
        [
            "../escape.txt",
            "../../escape.txt",
            "/tmp/envbuild-fuzz-abs.txt",
            "a/../../b",
            "./.",
            "",
            "envbuild-manifest.json",
            "bin/python",
            "x" * 300,
            "a\nb",
            "dir/",
            "\u202e.txt",
            "..",
            "bin/../../../up",
        ]
    ),
    st.text(alphabet=st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=30),
)


@st.composite
def hostile_tar(draw: st.DrawFn) -> bytes:
    """A tar.gz with hostile member names and link targets (and sometimes a manifest member)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", format=tarfile.PAX_FORMAT) as tf:
        if draw(st.booleans()):
            data = draw(mutated_json(MANIFEST_SEED))
            info = tarfile.TarInfo("envbuild-manifest.json")
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        for _ in range(draw(st.integers(1, 5))):
            info = tarfile.TarInfo(draw(hostile_names))
            kind = draw(st.sampled_from(["file", "file", "symlink", "hardlink", "dir", "fifo"]))
            if kind == "file":
                data = draw(st.binary(max_size=64))
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
                continue
            info.type = {
                "symlink": tarfile.SYMTYPE,
                "hardlink": tarfile.LNKTYPE,
                "dir": tarfile.DIRTYPE,
                "fifo": tarfile.FIFOTYPE,
            }[kind]
            if kind in ("symlink", "hardlink"):
                info.linkname = draw(hostile_names)
            tf.addfile(info)
    return buf.getvalue()


@st.composite
def flag_argv(draw: st.DrawFn) -> list[str]:
    """Command lines with hostile flag values; none of them can reach the network."""
    weird = st.one_of(
        st.sampled_from(
            [
                "-5",
                "0",
                "99",
                "-3",
                "1e9",
                "abc",
                "",
                "[/]",
                "[bold]",
                "４７０.１２",
                "３.１１",
                "3.11",
                "470.223.02",
                "a\nb",
                "sm_86",
                "9" * 40,
                "\x7f",
                "../../victim",
                "numpy[/]",
            ]
        ),
        st.text(max_size=12),
    )
    cmd = draw(
        st.sampled_from(
            [
                "resolve",
                "pack",
                "plan",
                "init",
                "matrix",
                "slurm-script",
                "doctor",
                "lock",
                "fetch",
                "render",
                "unpack",
                "rebuild",
            ]
        )
    )
    v = draw(weird)
    if cmd == "resolve":
        flag = draw(st.sampled_from(["--python", "--driver", "--gpu", "--cuda-toolkit", "--gcc"]))
        return ["resolve", "numpy", "--json", flag, v]
    if cmd == "pack":
        flag = draw(st.sampled_from(["--level", "--jobs", "--format"]))
        return ["pack", "no-such-env", "-o", "out.tar.gz", flag, v, "--json"]
    if cmd == "plan":
        return ["plan", "--spec", "missing.toml", "--jobs", v, "--json"]
    if cmd == "init":
        flag = draw(st.sampled_from(["--name", "--python", "--manager"]))
        return ["init", "sub", flag, v, "--json"]
    if cmd == "matrix":
        return ["matrix", v, "--json"]
    if cmd == "slurm-script":
        return ["slurm-script", "missing.tar.gz", "--dest", v, "-o", "s.sh", "--json"]
    if cmd == "doctor":
        return ["doctor", "--log", v or "-", "--no-load", "--json"]
    if cmd == "lock":
        flag = draw(
            st.sampled_from(["--python", "--driver", "--name", "--engine", "--manager", "-o", "--index-url"])
        )
        # a malformed value must be refused before anything is locked: --python keeps it offline
        return ["lock", "numpy", "--cpu", "--python", "3.x" if flag != "--python" else v, flag, v, "--json"]
    if cmd == "fetch":
        return ["fetch", "missing-lock", "--jobs", v, "--json"]
    if cmd == "render":
        return ["render", v or "x", "--manager", v, "--json"]
    if cmd == "unpack":
        return ["unpack", "missing.tar.gz", v or "d", "--check-only", "--json"]
    return ["rebuild", "missing-lock", "--no-lock", "--driver", v, "--json"]


# --- running one case ---------------------------------------------------------------------------


@dataclass
class Outcome:
    kind: str
    argv: list[str]
    exit_code: int
    output: str
    traceback: bool
    partial: list[str] = field(default_factory=list)
    unclear: str | None = None

    def problems(self) -> list[str]:
        out = []
        if self.traceback:
            out.append("traceback / internal error")
        if self.exit_code not in DOCUMENTED_EXITS:
            out.append(f"undocumented exit code {self.exit_code}")
        if self.partial:
            out.append(f"partial output {self.partial}")
        if self.unclear:
            out.append(f"unclear message: {self.unclear}")
        return out


_runner = click.testing.CliRunner()
# The click command typer builds from ``app`` (what the console script runs), built once: typer
# rebuilds it on every CliRunner.invoke, which is 90% of a case's time.
_command = typer.main.get_command(app)


@contextmanager
def _workdir() -> Iterator[Path]:
    old = os.getcwd()
    with tempfile.TemporaryDirectory(prefix="envbuild-fuzz-") as tmp:
        os.chdir(tmp)
        try:
            yield Path(tmp)
        finally:
            os.chdir(old)


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def _error_json(output: str) -> dict[str, Any] | None:
    start = output.find("{")
    if start < 0:
        return None
    try:
        data = json.loads(output[start:])
    except ValueError:
        return None
    return data if isinstance(data, dict) and data.get("ok") is False else None


UNPARSED = object()  # not JSON, or not a JSON kind: a refusal must then name a line or a field


def run_case(
    kind: str,
    files: dict[str, bytes],
    argv: list[str],
    *,
    named: str | None = None,
    parsed: Any = UNPARSED,
    stdin: bytes | None = None,
) -> Outcome:
    """Write ``files``, run ``envbuild ARGV`` in-process in a fresh directory, and judge the outcome.

    ``named`` is the input file a refusal must name; ``parsed`` the input as JSON (when it parses), so
    a refusal of a JSON object must also name the field.
    """
    with _workdir() as root:
        for rel, data in files.items():
            p = root / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(data)
        before = _tree(root)
        res = _runner.invoke(_command, argv, input=stdin, catch_exceptions=True)
        after = _tree(root)
    out = res.output
    crashed = (
        (res.exception is not None and not isinstance(res.exception, SystemExit))
        or res.exit_code == EXIT_INTERNAL
        or "Traceback (most recent call last)" in out
    )
    o = Outcome(kind, argv, res.exit_code, out, crashed)
    if res.exit_code != 0:
        o.partial = sorted(after - before)
    err = _error_json(out)
    if named is not None and res.exit_code == 2 and err is not None:
        path = str(err.get("path") or "")
        if Path(named).name not in path:
            o.unclear = f"does not name {named}: {err.get('message')!r}"
        elif (
            not err.get("field")
            and (isinstance(parsed, dict) or parsed is UNPARSED)
            and "line " not in str(err.get("message"))
            and "cannot read" not in str(err.get("message"))
        ):
            o.unclear = f"names no field: {err.get('message')!r}"
    if (
        kind == "flags"
        and res.exit_code == 2
        and err is None
        and "Invalid value" not in out
        and "No such" not in out
        and "Missing" not in out
        and "Usage" not in out
    ):
        o.unclear = f"no flag named: {out[:200]!r}"
    return o


def _parsed(raw: bytes) -> Any:
    try:
        return json.loads(raw.decode("utf-8-sig"))
    except (ValueError, RecursionError):
        return UNPARSED


def _profile_bytes() -> bytes:
    return json.dumps(CPU_PROFILE).encode()


# One entry per input kind: (strategy, case builder).  The campaign imports this table.
def _case_spec(raw: bytes) -> Outcome:
    return run_case(
        "spec",
        {"envbuild.toml": raw},
        ["resolve", "--spec", "envbuild.toml", "--python", "3.11", "--cpu", "--json"],
        named="envbuild.toml",
    )


def _case_requirements(raw: bytes) -> Outcome:
    return run_case(
        "requirements",
        {"requirements.txt": raw},
        ["resolve", "--spec", "requirements.txt", "--python", "3.11", "--cpu", "--json"],
        named="requirements.txt",
    )


def _case_environment(raw: bytes) -> Outcome:
    return run_case(
        "environment.yml",
        {"environment.yml": raw},
        ["resolve", "--spec", "environment.yml", "--cpu", "--json"],
        named="environment.yml",
    )


def _case_profile(raw: bytes) -> Outcome:
    return run_case(
        "profile",
        {"target.json": raw},
        ["resolve", "numpy", "--target", "target.json", "--json"],
        named="target.json",
        parsed=_parsed(raw),
    )


def _case_lock(raw: bytes) -> Outcome:
    # render reads the lock and writes scripts: a refused lock must leave no 'out' behind
    return run_case(
        "lock",
        {"lock/envbuild.lock.json": raw},
        ["render", "lock", "-o", "out", "--json"],
        named="envbuild.lock.json",
        parsed=_parsed(raw),
    )


def _case_cache_manifest(raw: bytes) -> Outcome:
    return run_case(
        "cache manifest",
        {"cache/manifest.json": raw, "cache/wheels/demo-1.0-py3-none-any.whl": WHEEL},
        ["verify-cache", "cache", "--json"],
        named="manifest.json",
        parsed=_parsed(raw),
    )


def _manifest_tar(manifest: bytes) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, data in (("envbuild-manifest.json", manifest), ("bin/activate", b"# activate\n")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _case_pack_manifest(raw: bytes) -> Outcome:
    return run_case(
        "pack manifest",
        {"env.tar.gz": _manifest_tar(raw), "target.json": _profile_bytes()},
        ["unpack", "env.tar.gz", "dest", "--check-only", "--target", "target.json", "--json"],
        named="envbuild-manifest.json",
        parsed=_parsed(raw),
    )


def _case_archive(raw: bytes) -> Outcome:
    # Only 'no traceback' is asserted for hostile members (extraction safety is tested in test_pack);
    # the archive sits two levels down so a '../' member cannot leave the case's directory.
    return run_case(
        "archive",
        {"a/b/env.tar.gz": raw, "target.json": _profile_bytes()},
        ["inspect", "a/b/env.tar.gz", "--json"],
    )


def _case_log(raw: bytes) -> Outcome:
    return run_case(
        "log", {"error.log": raw}, ["doctor", "--log", "error.log", "--no-load", "--json"], named="error.log"
    )


def _case_flags(argv: list[str]) -> Outcome:
    return run_case("flags", {}, argv)


KINDS: dict[str, tuple[st.SearchStrategy[Any], Callable[[Any], Outcome]]] = {
    "spec": (mutated_text(SPEC_SEED), _case_spec),
    "requirements": (mutated_text(REQS_SEED), _case_requirements),
    "environment.yml": (mutated_text(ENV_SEED), _case_environment),
    "profile": (mutated_json(PROFILE_SEED), _case_profile),
    "lock": (mutated_json(LOCK_SEED), _case_lock),
    "pack manifest": (mutated_json(MANIFEST_SEED), _case_pack_manifest),
    "cache manifest": (mutated_json(CACHE_SEED), _case_cache_manifest),
    "archive": (hostile_tar(), _case_archive),
    "log": (mutated_text(LOG_SEED), _case_log),
    "flags": (flag_argv(), _case_flags),
}

# Bounded, seeded CI run: the same 40 examples per kind every time (the whole file < 60 s on 2 busy cores).
CI = settings(
    max_examples=40,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.function_scoped_fixture,
    ],
)


@pytest.fixture(autouse=True)
def _crash_logs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENVBUILD_LOG_DIR", str(tmp_path / "crash-logs"))


@pytest.mark.parametrize("kind", list(KINDS))
def test_fuzz_kind(kind: str) -> None:
    strategy, case = KINDS[kind]

    @CI
    @given(strategy)
    def check(value: Any) -> None:
        o = case(value)
        problems = o.problems()
        if kind == "archive":  # extraction is another stage's work: here only 'no traceback'
            problems = [p for p in problems if p.startswith(("traceback", "undocumented"))]
        assert not problems, f"{kind} {o.argv}: {problems}\n{o.output[-2000:]}"

    check()


# --- the named cases, as plain regressions -------------------------------------------------


def test_bad_python_version_in_profile_names_the_field() -> None:
    o = _case_profile(b'{"python_version": "abc"}')
    err = _error_json(o.output)
    assert o.exit_code == 2 and err is not None and not o.traceback
    assert err["field"] == "python_version" and "target.json" in err["path"] and '"abc"' in err["message"]
    assert "3.10" in err["message"]  # says what to write


def test_markup_in_user_text_is_printed_literally() -> None:
    for req in ("numpy[/]", "x[bold]y"):
        o = run_case("flags", {}, ["resolve", req, "--python", "3.11", "--cpu"])
        assert o.exit_code == 2 and not o.traceback and req in o.output


def test_fullwidth_driver_digits_refused() -> None:
    o = run_case("flags", {}, ["resolve", "numpy", "--driver", "４７０.１２", "--json"])
    err = _error_json(o.output)
    assert o.exit_code == 2 and err is not None and err["field"] == "--driver"


@pytest.mark.parametrize(
    "argv",
    [
        ["pack", "env", "-o", "x.tar.gz", "--level", "99"],
        ["pack", "env", "-o", "x.tar.gz", "--level", "-5"],
        ["pack", "env", "-o", "x.tar.gz", "--jobs", "-3"],
        ["pack", "env", "-o", "x.tar.gz", "--level", "15"],
        ["plan", "--spec", "envbuild.toml", "--jobs", "0"],
    ],
)
def test_bad_numeric_flags_refused_before_writing(argv: list[str]) -> None:
    o = run_case("flags", {"envbuild.toml": SPEC_SEED.encode(), "env/bin/python": b""}, argv)
    assert o.exit_code == 2 and not o.traceback and o.partial == []
    assert ("--level" in o.output) or ("--jobs" in o.output)


def test_non_utf8_inputs_are_input_errors() -> None:
    for case, name in (
        (_case_profile, "target.json"),
        (_case_lock, "envbuild.lock.json"),
        (_case_spec, "envbuild.toml"),
        (_case_requirements, "requirements.txt"),
        (_case_environment, "environment.yml"),
        (_case_pack_manifest, "envbuild-manifest.json"),
    ):
        o = case(b'{"name": "caf\xe9"}\n')
        err = _error_json(o.output)
        # what is wrong inside an archive is the archive's fault: exit 5, as for the rest of it
        want = 5 if name == "envbuild-manifest.json" else 2
        assert o.exit_code == want and err is not None and name in err["path"], (name, o.output)
        assert "UTF-8" in err["message"] and err["field"] == "line 1"


def test_deep_nesting_is_an_input_error() -> None:
    o = _case_lock(b"[" * 100_000 + b"]" * 100_000)
    err = _error_json(o.output)
    assert o.exit_code == 2 and err is not None and "nested" in err["message"]


def test_internal_error_net(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A bug becomes one paragraph, exit 70 and a log file; --debug shows the traceback."""
    import envbuild.matrix

    def boom(kind: str) -> Any:
        raise ZeroDivisionError("planted bug")

    monkeypatch.setattr(envbuild.matrix, "matrix_table", boom)
    res = _runner.invoke(_command, ["matrix", "torch"])
    assert res.exit_code == EXIT_INTERNAL and "Traceback" not in res.output
    assert "internal error (ZeroDivisionError)" in res.output
    logs = list((tmp_path / "crash-logs").glob("crash-*.log"))
    assert (
        len(logs) == 1
        and "planted bug" in logs[0].read_text()
        and str(logs[0]) in res.output.replace("\n", "")
    )
    res = _runner.invoke(_command, ["--debug", "matrix", "torch", "--json"])
    assert res.exit_code == EXIT_INTERNAL and "Traceback (most recent call last)" in res.output
    assert json.loads(res.output[: res.output.index("Traceback")])["error"] == "InternalError"


# --- the schema layer's formats, one per field family -----------------------------------------------


@pytest.mark.parametrize(
    ("patch", "field", "found"),
    [
        ({"python_version": "abc"}, "python_version", '"abc"'),
        ({"driver_version": "４７０.１２"}, "driver_version", "４７０.１２"),
        ({"gpus": [{"name": "RTX", "compute_capability": "８.６"}]}, "gpus[0].compute_capability", "８.６"),
        ({"gpus": [{"name": "RTX", "memory_mib": -1}]}, "gpus[0].memory_mib", "-1"),
        ({"gpus": [{"name": ["RTX"]}]}, "gpus[0].name", "a list"),
        ({"cuda_toolkits": [{"version": "eleven"}]}, "cuda_toolkits[0].version", '"eleven"'),
        ({"notes": "one note"}, "notes", '"one note"'),
        ({"schema_version": 9}, "schema_version", "9"),
        ({"hostname": "a\nb"}, "hostname", "a\\nb"),
    ],
)
def test_profile_fields_are_checked(patch: dict[str, Any], field: str, found: str) -> None:
    from envbuild.errors import ProfileError
    from envbuild.models import Profile

    with pytest.raises(ProfileError) as ei:
        Profile.from_dict({**CPU_PROFILE, **patch}, path="t.json")
    assert ei.value.field == field and ei.value.path == "t.json" and ei.value.exit_code == 2
    assert found in ei.value.message and "write" in ei.value.message


def test_probe_profiles_and_numbers_written_by_old_profiles_still_load() -> None:
    from envbuild.models import Profile

    p = Profile.from_dict(
        {**PROFILE_SEED, "gpus": [{"name": "RTX", "compute_capability": 8.6, "memory_mib": 6144.0}]}
    )
    assert p.gpus[0].compute_capability == "8.6" and p.gpus[0].memory_mib == 6144
    assert Profile.from_dict({**CPU_PROFILE, "python_version": "3.13.0rc1"}).python_version == "3.13.0rc1"


@pytest.mark.parametrize(
    ("where", "value", "field"),
    [
        (("artifacts", 0, "filename"), "../../x.whl", "artifacts[0].filename"),
        (("artifacts", 0, "sha256"), "abc", "artifacts[0].sha256"),
        (("artifacts", 0, "requires"), "numpy", "artifacts[0].requires"),
        (("target", "python_version"), "３.１１", "target.python_version"),
        (("resolution", "packages"), {"numpy": 1}, "resolution.packages.numpy"),
        (("python",), "eleven", "python"),
        (("name",), "../../victim", "name"),
        (("index_urls",), ["not a url"], "index_urls[0]"),
    ],
)
def test_lock_fields_are_checked(where: tuple[Any, ...], value: Any, field: str) -> None:
    from envbuild.lockfile import Lock, LockError

    data = _set(copy.deepcopy(LOCK_SEED), where, value)
    with pytest.raises(LockError) as ei:
        Lock.from_dict(data, path="l.json")
    assert ei.value.field == field and ei.value.path == "l.json"


@pytest.mark.parametrize(
    ("where", "value", "field"),
    [
        (("fixup", "text_files"), ["/etc/passwd"], "fixup.text_files[0]"),
        (("fixup", "text_files"), ["a/../../x"], "fixup.text_files[0]"),
        (("fixup", "python_links"), {"../bin/python": "/usr/bin/python3"}, "fixup.python_links"),
        (("packages", 0, "name"), None, "packages[0].name"),
        (("source", "profile", "driver_version"), "latest", "source.profile.driver_version"),
        (("torch",), "2.1", "torch"),
    ],
)
def test_pack_manifest_fields_are_checked(where: tuple[Any, ...], value: Any, field: str) -> None:
    from envbuild.errors import InputError
    from envbuild.models import check_pack_manifest

    with pytest.raises(InputError) as ei:
        check_pack_manifest(_set(copy.deepcopy(MANIFEST_SEED), where, value), "a.tar!m.json")
    assert ei.value.field == field


def test_cache_manifest_entries_are_checked() -> None:
    from envbuild.errors import FetchError
    from envbuild.models import check_cache_manifest

    for key, value in (("file", "/etc/passwd"), ("sha256", "x"), ("size", -1), ("commit", "HEAD")):
        data = copy.deepcopy(CACHE_SEED)
        data["files"][0][key] = value
        with pytest.raises(FetchError) as ei:
            check_cache_manifest(data, "c/manifest.json", error=FetchError)
        assert ei.value.field == f"files[0].{key}" and ei.value.exit_code == 3


@pytest.mark.parametrize(
    ("flag", "value"),
    [("-o", "lk\n--index-url http://evil/"), ("--name", "../../victim"), ("--python", "３.１１")],
)
def test_hostile_lock_flags_refused_before_anything_is_written(flag: str, value: str) -> None:
    o = run_case("flags", {}, ["lock", "six", "--python", "3.11", "--cpu", flag, value, "--json"])
    err = _error_json(o.output)
    assert o.exit_code == 2 and err is not None and o.partial == []
    assert err["field"] in (flag, "--output")
