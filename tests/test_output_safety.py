"""Outputs never destroy what the user had; names and user text cannot escape into paths or lines.

Every case runs the real CLI (a subprocess) against a local PEP 503 index on 127.0.0.1 (uv really
resolves), on real folders the test fills with the user's files.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from pypi_fixture import Index, make_wheel, serving

from envbuild._fs import one_line

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "UV_"))}
    return subprocess.run([sys.executable, "-m", "envbuild", *args], capture_output=True, text=True, cwd=cwd,
                          env={**env, "COLUMNS": "200", "PIP_CONFIG_FILE": os.devnull}, check=False,
                          timeout=300)


@pytest.fixture
def index(tmp_path: Path) -> Iterator[str]:
    idx = Index(tmp_path / "www")
    idx.add("simple", [make_wheel(idx.file("x").parent, "six", "1.16.0", tag="py2.py3-none-any")])
    with serving(idx) as url:
        yield f"{url}/simple"


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_lock_refuses_a_project_folder_and_keeps_every_file(tmp_path: Path, index: str) -> None:
    proj = tmp_path / "proj"
    (proj / "src").mkdir(parents=True)
    (proj / "src" / "main.py").write_text("x\n")
    proc = cli("lock", "six", "--python", "3.11", "--cpu", "--index-url", index, "-o", "proj", cwd=tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    msg = " ".join(proc.stderr.split())
    assert "proj" in msg and "src" in msg and "did not write" in msg and "nothing was written" in msg
    assert (proj / "src" / "main.py").read_text() == "x\n"
    assert tree(proj) == {"src/main.py": b"x\n"}
    # Nothing beside it either (no temp dirs, no renamed-away copy).
    assert sorted(p.name for p in tmp_path.iterdir()) == ["proj", "www"]


@pytest.mark.slow
def test_relock_into_its_own_dir_replaces_only_its_files(tmp_path: Path, index: str) -> None:
    args = ("lock", "six", "--python", "3.11", "--cpu", "--index-url", index, "-o", "lk")
    assert cli(*args, cwd=tmp_path).returncode == 0
    lk = tmp_path / "lk"
    marker = json.loads((lk / ".envbuild-output").read_text())
    assert "envbuild.lock.json" in marker["files"] and "requirements.txt" in marker["files"]
    (lk / "NOTES.md").write_text("mine\n")  # the user adds a file to the lock dir
    (lk / "requirements.txt").write_text("stale\n")
    proc = cli(*args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (lk / "NOTES.md").read_text() == "mine\n"
    assert "six==1.16.0" in (lk / "requirements.txt").read_text()
    # An empty directory is taken too.
    (tmp_path / "empty").mkdir()
    assert cli("lock", "six", "--python", "3.11", "--cpu", "--index-url", index, "-o", "empty",
               cwd=tmp_path).returncode == 0
    assert (tmp_path / "empty" / "envbuild.lock.json").is_file()


@pytest.mark.slow
def test_render_fetch_plan_bundle_refuse_foreign_outputs(tmp_path: Path, index: str) -> None:
    assert cli("lock", "six", "--python", "3.11", "--cpu", "--index-url", index, "-o", "lk",
               cwd=tmp_path).returncode == 0
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "install.sh").write_text("my own script\n")
    for args in (("render", "lk", "-o", "mine"), ("fetch", "lk", "--cache", "mine")):
        proc = cli(*args, cwd=tmp_path)
        assert proc.returncode == 2, (args, proc.stdout, proc.stderr)
        assert "install.sh" in proc.stderr
        assert tree(mine) == {"install.sh": b"my own script\n"}
    spec = tmp_path / "envbuild.toml"
    spec.write_text(f'[project]\nname = "demo"\nrequirements = ["six"]\n[indexes]\npypi = "{index}"\n')
    proc = cli("plan", "--spec", str(spec), "--python", "3.11", "--cpu", "-o", "mine", cwd=tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert tree(mine) == {"install.sh": b"my own script\n"}
    # bundle -o onto a file envbuild did not write.
    assert cli("fetch", "lk", "--cache", "cache", cwd=tmp_path).returncode == 0
    (tmp_path / "report.tar").write_text("not a bundle\n")
    proc = cli("bundle", "lk", "--cache", "cache", "-o", "report.tar", cwd=tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert (tmp_path / "report.tar").read_text() == "not a bundle\n"
    # ... while its own bundle is replaced, and render/fetch write into their own directories again.
    assert cli("bundle", "lk", "--cache", "cache", "-o", "b.tar", cwd=tmp_path).returncode == 0
    assert cli("bundle", "lk", "--cache", "cache", "-o", "b.tar", cwd=tmp_path).returncode == 0
    with tarfile.open(tmp_path / "b.tar") as tf:
        assert "b/lockfiles/env/envbuild.lock.json" in tf.getnames()
    proc = cli("rebuild", "lk", "--driver", "535.104.05", "--no-lock", "-o", "mine", cwd=tmp_path)
    assert proc.returncode == 2 and "install.sh" in proc.stderr, proc.stdout + proc.stderr
    assert tree(mine) == {"install.sh": b"my own script\n"}
    assert cli("fetch", "lk", "--cache", "cache", cwd=tmp_path).returncode == 0
    assert cli("render", "lk", "-o", "scripts", cwd=tmp_path).returncode == 0
    assert cli("render", "lk", "-o", "scripts", cwd=tmp_path).returncode == 0


@pytest.mark.parametrize("bad", ["../../victim", "a/b", ".hidden", "x\ny"])
def test_names_are_validated_before_they_become_paths(tmp_path: Path, index: str, bad: str) -> None:
    work = tmp_path / "a" / "b"
    work.mkdir(parents=True)
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "data.txt").write_text("keep\n")
    yml = work / "environment.yml"
    yml.write_text(f"name: {json.dumps(bad)}\nchannels: [conda-forge]\ndependencies:\n  - python=3.11\n"
                   f"  - pip\n  - pip:\n    - six\n")
    runs: list[tuple[str, ...]] = [
        ("lock", "six", "--python", "3.11", "--cpu", "--index-url", index, "--name", bad),
    ]
    if "\n" not in bad:  # a YAML scalar cannot hold a raw newline; --name can
        runs.append(("lock", "--spec", str(yml), "--manager", "venv", "--python", "3.11", "--cpu",
                     "--index-url", index))
    for args in runs:
        proc = cli(*args, cwd=work)
        assert proc.returncode == 2, (args, proc.stdout, proc.stderr)
        assert "name" in proc.stderr
    assert tree(victim) == {"data.txt": b"keep\n"}
    assert sorted(p.name for p in work.iterdir()) == ["environment.yml"]


def test_a_newline_in_output_path_is_refused_and_header_text_is_escaped(tmp_path: Path, index: str) -> None:
    out = "lk\n--index-url http://evil.invalid/simple\nevil-package==6.6.6"
    proc = cli("lock", "six", "--python", "3.11", "--cpu", "--index-url", index, "-o", out, cwd=tmp_path)
    # refused at the flag boundary: nothing is written at all
    assert proc.returncode == 2 and "-o" in proc.stderr, proc.stderr
    assert not any(p.name.startswith("lk") for p in tmp_path.iterdir())
    # and text that does reach a header (a command line) cannot start a live pip line
    header = one_line("envbuild lock -o " + out)
    assert "\n" not in header and "\\n--index-url" in header


def test_control_characters_in_urls_are_input_errors(tmp_path: Path, index: str) -> None:
    proc = cli("lock", "six", "--python", "3.11", "--cpu", "--index-url", index + "\nevil==1", "-o", "lk",
               cwd=tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "URL" in proc.stderr and not (tmp_path / "lk").exists()


# --- secrets --------------------------------------------------------------------------------------

PASSWORDS = ["Sup3r@Leak9", "qu'ote\"Pw@xYz9"]


@pytest.mark.parametrize("engine", ["uv", "pip-tools"])
@pytest.mark.parametrize("password", PASSWORDS)
def test_index_password_never_written_printed_or_on_argv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         password: str, engine: str) -> None:
    import pypi_fixture
    from typer.testing import CliRunner

    import envbuild.tools._run as run_mod
    from envbuild.cli import app

    # The index answers 401 unless it gets exactly this password: a green lock proves the tool had it.
    monkeypatch.setattr(pypi_fixture, "AUTH", ("u", password))
    idx = Index(tmp_path / "www")
    idx.add("simple", [make_wheel(idx.file("x").parent, "six", "1.16.0", tag="py2.py3-none-any")])
    seen: list[tuple[list[str], dict[str, str]]] = []
    real = run_mod.subprocess.Popen  # every child starts here (subprocess.run and the uv adapter's Popen)

    def spy(args: list[str], **kw: object) -> object:
        seen.append((list(args), dict(kw.get("env") or {})))  # type: ignore[call-overload]
        return real(args, **kw)  # type: ignore[call-overload]

    monkeypatch.setattr(run_mod.subprocess, "Popen", spy)
    py = f"{sys.version_info[0]}.{sys.version_info[1]}"
    with serving(idx) as url:
        secret = url.replace("http://", f"http://u:{password}@") + "/private/simple"
        out = tmp_path / "lk"
        result = CliRunner().invoke(app, ["lock", "six", "--python", py, "--cpu", "--index-url", secret,
                                          "--engine", engine, "-o", str(out)])
        assert result.exit_code == 0, result.output
    pieces = [password, *password.split("@"), "u:"]
    written = {p.name: p.read_text() for p in out.iterdir()}
    assert {"envbuild.lock.json", "requirements.txt", "git.txt", "source-builds.txt"} <= set(written)
    for name, text in [*written.items(), ("printed output", result.output)]:
        for piece in pieces:
            assert piece not in text, (name, piece)
    assert f"--index-url {url}/private/simple" in written["requirements.txt"].splitlines()
    tools = [(a, e) for a, e in seen if "compile" in a]
    assert tools, "the engine ran"
    for args, env in tools:
        assert not any(piece in a for a in args for piece in pieces), args
        # It got the password another way: the environment (uv: UV_INDEX_*_PASSWORD; pip: PIP_INDEX_URL).
        assert any(password in v or password.replace("@", "%40") in v or "%40" in v for v in env.values())


def test_git_gets_credentials_in_its_environment_not_argv(monkeypatch: pytest.MonkeyPatch) -> None:
    import base64

    import envbuild.tools._run as run_mod
    from envbuild.errors import ToolError
    from envbuild.tools.git import resolve_ref

    seen: list[tuple[list[str], dict[str, str]]] = []
    real = run_mod.subprocess.run

    def spy(args: list[str], **kw: object) -> object:
        seen.append((list(args), dict(kw.get("env") or {})))  # type: ignore[call-overload]
        return real(args, **kw)  # type: ignore[call-overload]

    monkeypatch.setattr(run_mod.subprocess, "run", spy)
    for pw in PASSWORDS:
        seen.clear()
        with pytest.raises(ToolError) as info:  # nothing listens on port 9: git really runs and fails
            resolve_ref(f"https://u:{pw}@127.0.0.1:9/repo.git", "main")
        assert pw not in info.value.render() and "Leak9" not in info.value.render()
        ((args, env),) = seen
        assert args == ["git", "ls-remote", "https://127.0.0.1:9/repo.git"]
        token = base64.b64encode(f"u:{pw}".encode()).decode()
        assert env["GIT_CONFIG_KEY_0"] == "http.https://127.0.0.1:9/.extraHeader"
        assert env["GIT_CONFIG_VALUE_0"] == f"Authorization: Basic {token}"


def test_redact_and_split_take_the_last_at() -> None:
    from envbuild.tools._run import redact, split_credentials

    for pw in PASSWORDS:
        text = f"cannot read 'http://u:{pw}@host:8/simple/six/': timed out"
        assert redact(text) == "cannot read 'http://host:8/simple/six/': timed out"
        assert split_credentials(f"https://u:{pw}@host/simple") == ("https://host/simple", "u", pw)
    assert redact("ssh://git@host/repo.git") == "ssh://git@host/repo.git"


# --- nothing installed unverified -----------------------------------------------------------------


def _bash(script: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "UV_", "VIRTUAL_ENV"))}
    return subprocess.run(["bash", str(script), *args], capture_output=True, text=True, timeout=300,
                          env={**env, "PYTHON": sys.executable, "PIP_CONFIG_FILE": os.devnull})


def _set_manifest_entry(cache: Path, rel: str, path: Path, **extra: object) -> None:
    """What a tamperer does: make the cache's own manifest.json agree with the file."""
    import hashlib

    m = json.loads((cache / "manifest.json").read_text())
    entry = {"file": rel, "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
             "size": path.stat().st_size, "url": "", "name": "x", "version": "1",
             "kind": "git-wheel", "commit": None, **extra}
    m["files"] = [e for e in m["files"] if e["file"] != rel] + [entry]
    (cache / "manifest.json").write_text(json.dumps(m, indent=2, sort_keys=True) + "\n")


@pytest.mark.slow
def test_a_replaced_git_wheel_is_refused_and_unlisted_files_are_not_installed(tmp_path: Path,
                                                                            index: str) -> None:
    from fetch_fixture import git_repo

    from envbuild.fetch import fetch, read_built
    from envbuild.lock import lock
    from envbuild.models import Profile
    from envbuild.render import render
    from envbuild.spec import GitRequirement, Spec

    host = f"{sys.version_info[0]}.{sys.version_info[1]}"
    repo, commits = git_repo(tmp_path / "mypkg")
    spec = Spec(name="g", python=host, requirements=("six",), indexes={"pypi": index},
                git=(GitRequirement("mypkg", repo.as_uri(), "v1.0"),))
    lk, cache = tmp_path / "lk", tmp_path / "cache"
    lock(spec, Profile(python_version=host), out_dir=lk)
    fetch(lk, cache, show_progress=False)
    render(lk)  # after the fetch: the scripts beside the lock find its record of git/ and build/
    rel = "git/mypkg-1.0-py3-none-any.whl"
    recorded = read_built(lk)
    assert list(recorded) == [rel]  # a pure wheel: nothing is built on the target, no build/ needed

    # Files nobody recorded, listed in the cache's manifest: not installed.
    evil = make_wheel(tmp_path / "evil", "evilpkg", "6.6.6")
    for where in ("git", "build"):
        (cache / where).mkdir(exist_ok=True)
        (cache / where / evil.name).write_bytes(evil.read_bytes())
        _set_manifest_entry(cache, f"{where}/{evil.name}", evil)
    prefix = tmp_path / "env"
    ok = _bash(lk / "install-offline.sh", "--prefix", str(prefix), "--cache", str(cache))
    assert ok.returncode == 0, ok.stdout[-2000:] + ok.stderr[-3000:]
    assert "evilpkg" not in ok.stdout + ok.stderr
    freeze = subprocess.run([str(prefix / "bin" / "python"), "-m", "pip", "freeze"], capture_output=True,
                            text=True, check=True).stdout.lower()
    assert "mypkg" in freeze and "six==1.16.0" in freeze and "evilpkg" not in freeze
    report = cli("verify-cache", str(cache), "--lock", str(lk), "--json", cwd=tmp_path)
    assert report.returncode == 3
    assert {(p["file"], p["problem"]) for p in json.loads(report.stdout)["problems"]} == {
        (f"git/{evil.name}", "unrecorded"), (f"build/{evil.name}", "unrecorded")}

    # The git wheel replaced by another one of the same name, the manifest updated to match.
    for where in ("git", "build"):
        (cache / where / evil.name).unlink()
    m = json.loads((cache / "manifest.json").read_text())
    m["files"] = [e for e in m["files"] if evil.name not in e["file"]]
    (cache / "manifest.json").write_text(json.dumps(m, indent=2, sort_keys=True) + "\n")
    assert cli("verify-cache", str(cache), "--lock", str(lk), cwd=tmp_path).returncode == 0
    fake = make_wheel(tmp_path / "fake", "mypkg", "1.0")
    assert fake.name == Path(rel).name
    (cache / rel).write_bytes(fake.read_bytes())
    _set_manifest_entry(cache, rel, fake, kind="git-wheel", commit=commits[0], name="mypkg", version="1.0")
    assert cli("verify-cache", str(cache), "--json", cwd=tmp_path).returncode == 0  # the manifest agrees...
    report = cli("verify-cache", str(cache), "--lock", str(lk), "--json", cwd=tmp_path)
    assert report.returncode == 3, report.stdout  # ... the lock does not
    probs = {(p["file"], p["problem"], p["expected"]) for p in json.loads(report.stdout)["problems"]}
    assert (rel, "altered", recorded[rel]) in probs
    fresh = tmp_path / "env2"
    run = _bash(lk / "install-offline.sh", "--prefix", str(fresh), "--cache", str(cache))
    assert run.returncode != 0
    assert rel in run.stderr and recorded[rel] in run.stderr and "nothing was installed" in run.stderr
    assert not fresh.exists()
    # fetch does not take the replaced file as its own either: it rebuilds the recorded one.
    res = fetch(lk, cache, show_progress=False)
    assert res.git[0]["file"] == rel
    assert cli("verify-cache", str(cache), "--lock", str(lk), cwd=tmp_path).returncode == 0


def test_a_lock_whose_name_is_a_path_is_refused_by_every_reader(tmp_path: Path) -> None:
    from fetch_fixture import write_lock

    lk = write_lock(tmp_path / "lk", [], name="../../victim")
    for args in (("render", "lk", "-o", "out"), ("fetch", "lk", "--cache", "c"),
                 ("bundle", "lk", "--cache", "c")):
        proc = cli(*args, cwd=tmp_path)
        assert proc.returncode == 2, (args, proc.stdout, proc.stderr)
        assert "name" in proc.stderr and "victim" in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lk"]
    assert sorted(p.name for p in lk.iterdir()) == ["envbuild.lock.json", "requirements.txt"]
