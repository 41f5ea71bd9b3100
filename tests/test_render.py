"""envbuild render: the scripts are shellcheck-clean for every manager, quote every value, install
exactly the lock (online against a local index, offline from a real ``envbuild fetch`` cache with
the server stopped), check the cache before installing anything, and change nothing on a second run.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conda_fixture import make_channel
from pypi_fixture import Index, make_wheel, seed_indexes, serving
from test_lock import LAPTOP, seed_resolution, seed_spec
from typer.testing import CliRunner

from envbuild.cli import app
from envbuild.errors import InputError
from envbuild.lock import lock
from envbuild.managers import MANAGERS
from envbuild.models import Profile, Resolution
from envbuild.render import SCRIPTS, render
from envbuild.spec import GitRequirement, Spec

SHELLCHECK = Path(sys.executable).parent / "shellcheck"
HOST = f"{sys.version_info[0]}.{sys.version_info[1]}"
runner = CliRunner()


def _git_repo(path: Path, version: str = "0.1") -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@e", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@e"}
    path.mkdir()
    (path / "pypcd").mkdir()
    (path / "pypcd" / "__init__.py").write_text("")
    (path / "setup.py").write_text("from setuptools import setup\n"
                                   f"setup(name='pypcd', version={version!r}, packages=['pypcd'])\n")
    for args in (["init", "-q", "-b", "master"], ["add", "."], ["commit", "-q", "-m", "one"]):
        subprocess.run(["git", "-C", str(path), *args], check=True, env=env)
    return path.as_uri()


@pytest.fixture(scope="module")
def seed_conda_lock(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The seed-laptop lock with a conda part, a git requirement and a source build."""
    tmp = tmp_path_factory.mktemp("seedlock")
    ch = make_channel(tmp / "channel", [
        dict(name="python", version="3.7.12", subdir="linux-64"),
        dict(name="pip", version="23.0", depends=["python >=3.7"]),
    ])
    idx = seed_indexes(tmp / "www")
    with serving(idx) as url:
        spec = seed_spec(url, manager="conda", conda_channels=(ch.as_uri(),),
                         git=(GitRequirement("pypcd", _git_repo(tmp / "pypcd"), "master"),))
        lock(spec, LAPTOP, out_dir=tmp / "lockfiles" / "echofusion", resolution=seed_resolution(url))
    yield tmp / "lockfiles" / "echofusion"


@pytest.mark.parametrize("manager", MANAGERS)
def test_scripts_are_shellcheck_clean(seed_conda_lock: Path, tmp_path: Path, manager: str) -> None:
    out = tmp_path / manager
    result = runner.invoke(app, ["render", str(seed_conda_lock), "-o", str(out), "--manager", manager,
                                 "--json"])
    assert result.exit_code == 0, result.output
    files = json.loads(result.stdout)["files"]
    assert {"install.sh", "install-offline.sh", "verify.sh", "INSTALL.md", "requirements.txt"} <= set(files)
    for script in SCRIPTS:
        text = (out / script).read_text()
        assert text.startswith("#!/usr/bin/env bash\n") and "set -euo pipefail" in text
        assert os.access(out / script, os.X_OK)
        check = subprocess.run([str(SHELLCHECK), "--severity=style", str(out / script)],
                               capture_output=True, text=True)
        assert check.returncode == 0, f"{manager}/{script}:\n{check.stdout}"
    install = (out / "install.sh").read_text()
    offline = (out / "install-offline.sh").read_text()
    if manager == "venv":
        assert "-m venv" in install and "conda.txt" not in install
    else:
        assert f"CONDA_TOOL={manager}" in install and '--file "$LOCK/conda.txt"' in install
        assert "--offline" in offline and "python-3.7.12-0.conda" in offline
    # Source builds: after torch, no build isolation, the target's arch list, hash-checked.
    assert "env FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST=8.6" in install and "--no-build-isolation" in install
    assert "--no-index" in offline and "--require-hashes" in offline
    md = (out / "INSTALL.md").read_text()
    assert "mmdet3d" in md and "CUDA 11.3" in md


def test_conda_manager_needs_a_conda_part(tmp_path: Path) -> None:
    idx = Index(tmp_path / "www")
    idx.add("simple", [make_wheel(idx.file("x").parent, "six", "1.16.0", tag="py2.py3-none-any")])
    with serving(idx) as url:
        spec = Spec(name="t", python=HOST, requirements=("six",), indexes={"pypi": f"{url}/simple"})
        lock(spec, Profile(python_version=HOST), out_dir=tmp_path / "lk")
    with pytest.raises(InputError, match="no conda part"):
        render(tmp_path / "lk", tmp_path / "out", manager="micromamba")
    result = runner.invoke(app, ["render", str(tmp_path / "nope"), "--json"])
    assert result.exit_code == 2
    assert json.loads(result.stdout)["path"] == str(tmp_path / "nope" / "envbuild.lock.json")


@pytest.fixture
def tiny(tmp_path: Path) -> Iterator[tuple[Index, str]]:
    idx = Index(tmp_path / "www")
    d = idx.file("x").parent
    idx.add("simple", [make_wheel(d, "six", "1.16.0", tag="py2.py3-none-any"),
                       make_wheel(d, "addict", "2.4.0", requires=["six"])])
    with serving(idx) as url:
        yield idx, url


def _freeze(prefix: Path) -> set[str]:
    out = subprocess.run([str(prefix / "bin/python"), "-m", "pip", "freeze", "--all"], capture_output=True,
                         text=True, check=True).stdout.splitlines()
    # "name @ URL" lines (a wheel installed from a file) become "name@".
    lines = {x.split(" @ ")[0] + "@" if " @ " in x else x for x in (ln.strip().lower() for ln in out)}
    return {x for x in lines if x and not x.startswith(("pip==", "setuptools==", "wheel=="))}


def _bash(script: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, "PYTHON": sys.executable, **(env or {})}
    return subprocess.run(["bash", str(script), *args], capture_output=True, text=True, env=full, timeout=300)


def test_install_sh_installs_exactly_the_lock_twice(tiny: tuple[Index, str], tmp_path: Path) -> None:
    _, url = tiny
    spec = Spec(name="tiny", python=HOST, requirements=("addict",), indexes={"pypi": f"{url}/simple"})
    lock(spec, Profile(python_version=HOST), out_dir=tmp_path / "lk")
    site = tmp_path / "site dir"  # a space in the path: every expansion is quoted
    render(tmp_path / "lk", site)
    first = _bash(site / "install.sh")
    assert first.returncode == 0, first.stderr
    prefix = site / "env"  # the default: ./env beside the script
    assert _freeze(prefix) == {"addict==2.4.0", "six==1.16.0"}
    assert "ok: the environment matches the lock" in first.stdout
    second = _bash(site / "install.sh")
    assert second.returncode == 0, second.stderr
    assert "exists; reusing it" in second.stderr
    assert "Successfully installed" not in second.stdout + second.stderr
    assert _freeze(prefix) == {"addict==2.4.0", "six==1.16.0"}
    # verify.sh catches drift from the lock.
    subprocess.run([str(prefix / "bin/python"), "-m", "pip", "uninstall", "-y", "-q", "six"], check=True)
    drift = _bash(site / "verify.sh")
    assert drift.returncode == 1 and "six==1.16.0 is not installed" in drift.stderr


def test_hostile_values_are_never_executed(tiny: tuple[Index, str], tmp_path: Path) -> None:
    _, url = tiny
    pwned = tmp_path / "PWNED"
    evil = f"file:///nonexistent/x'$(touch {pwned})`touch {pwned}`;touch {pwned}"
    spec = Spec(name="evil", python=HOST, requirements=("six",), indexes={"pypi": f"{url}/simple"})
    lock(spec, Profile(python_version=HOST), out_dir=tmp_path / "lk")
    data = json.loads((tmp_path / "lk" / "envbuild.lock.json").read_text())
    data["artifacts"].append({"name": "pypcd", "version": "master", "kind": "git", "url": evil, "sha256": "",
                              "filename": "", "commit": "a" * 40})
    data["resolution"]["warnings"] = [f"$(touch {pwned})"]
    (tmp_path / "lk" / "envbuild.lock.json").write_text(json.dumps(data))
    render(tmp_path / "lk", tmp_path / "site")
    # A ready env (the host's pip, no ensurepip) keeps this fast; the script reuses it.
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", "--system-site-packages",
                    str(tmp_path / "env")], check=True)
    run = _bash(tmp_path / "site" / "install.sh", "--prefix", str(tmp_path / "env"))
    assert run.returncode != 0  # the git URL does not exist...
    assert "installing pypcd from git" in run.stderr
    assert not pwned.exists()  # ...and none of the shell in it ran
    assert subprocess.run([str(SHELLCHECK), str(tmp_path / "site" / "install.sh")]).returncode == 0


def test_install_offline_from_a_real_fetch(tiny: tuple[Index, str], tmp_path: Path) -> None:
    from envbuild.fetch import fetch

    idx, url = tiny
    # A git requirement too: fetch builds it at the locked commit into offline_cache/git/.
    repo = _git_repo(tmp_path / "pypcd", version="0.1.1")
    spec = Spec(name="tiny", python=HOST, requirements=("addict",), indexes={"pypi": f"{url}/simple"},
                git=(GitRequirement("pypcd", repo, "master"),))
    lock(spec, Profile(python_version=HOST), out_dir=tmp_path / "lk")
    site = tmp_path / "site"
    render(tmp_path / "lk", site)
    fetch(tmp_path / "lk", site / "offline_cache", show_progress=False)
    assert [p.name for p in (site / "offline_cache" / "git").iterdir()] == ["pypcd-0.1.1-py3-none-any.whl"]
    # The scripts check git/ and build/ against the lock's record of them, which fetch writes into
    # the lock directory: rendered before the fetch, the copy beside the scripts lacks it.
    early = _bash(site / "install-offline.sh", "--prefix", str(tmp_path / "early"))
    assert early.returncode != 0 and "built.sha256" in early.stderr and "envbuild render" in early.stderr
    assert not (tmp_path / "early" / "bin" / "pip").exists()
    render(tmp_path / "lk", site)
    # No network from here on: the index is gone.
    with contextlib.suppress(Exception):
        (idx.root / "simple").rename(idx.root / "gone")
    prefix = tmp_path / "env"
    first = _bash(site / "install-offline.sh", "--prefix", str(prefix))
    assert first.returncode == 0, first.stderr
    assert "cache verified" in first.stderr
    assert _freeze(prefix) == {"addict==2.4.0", "six==1.16.0", "pypcd@"}
    got = subprocess.run([str(prefix / "bin/python"), "-c", "import pypcd; print(pypcd.__file__)"],
                         capture_output=True, text=True, check=True).stdout
    assert str(prefix) in got
    second = _bash(site / "install-offline.sh", "--prefix", str(prefix))
    assert second.returncode == 0 and "Successfully installed" not in second.stdout + second.stderr
    assert "pypcd 0.1.1 is installed" in second.stderr

    # An altered file stops the script before anything is installed, naming it and both hashes.
    wheel = site / "offline_cache" / "wheels" / "six-1.16.0-py2.py3-none-any.whl"
    good = hashlib.sha256(wheel.read_bytes()).hexdigest()
    wheel.write_bytes(wheel.read_bytes() + b"x")
    bad = hashlib.sha256(wheel.read_bytes()).hexdigest()
    fresh = tmp_path / "env2"
    run = _bash(site / "install-offline.sh", "--prefix", str(fresh))
    assert run.returncode != 0
    name = "wheels/six-1.16.0-py2.py3-none-any.whl"
    assert f"{name}: sha256 is {bad} but manifest.json records {good}" in run.stderr
    assert "but the lock records" in run.stderr and "nothing was installed" in run.stderr
    assert not fresh.exists()
    # --cache / ENVBUILD_CACHE point elsewhere; a missing cache is a clear error.
    moved = _bash(site / "install-offline.sh", "--prefix", str(fresh),
                  env={"ENVBUILD_CACHE": str(tmp_path / "no")})
    assert moved.returncode != 0 and "no offline cache at" in moved.stderr


def test_scripts_read_a_lock_inside_their_directory_uncopied(tiny: tuple[Index, str], tmp_path: Path) -> None:
    """plan's layout (out/NAME/lock/ beside the scripts): nothing is copied, and the git wheel fetch
    records after the render is found without rendering again."""
    from envbuild._fs import claim_output_dir
    from envbuild.fetch import fetch

    idx, url = tiny
    repo = _git_repo(tmp_path / "pypcd", version="0.1.1")
    spec = Spec(name="tiny", python=HOST, requirements=("addict",), indexes={"pypi": f"{url}/simple"},
                git=(GitRequirement("pypcd", repo, "master"),))
    out = tmp_path / "out"
    claim_output_dir(out)  # as plan does: out/ is envbuild's, lock/ inside it
    lock(spec, Profile(python_version=HOST), out_dir=out / "lock")
    result = render(out / "lock", out)
    assert set(result.files) == {*SCRIPTS, "INSTALL.md"}
    assert not (out / "envbuild.lock.json").exists() and not (out / "requirements.txt").exists()
    fetch(out / "lock", out / "offline_cache", show_progress=False)
    with contextlib.suppress(Exception):
        (idx.root / "simple").rename(idx.root / "gone")
    prefix = tmp_path / "env"
    run = _bash(out / "install-offline.sh", "--prefix", str(prefix))
    assert run.returncode == 0, run.stderr
    assert _freeze(prefix) == {"addict==2.4.0", "six==1.16.0", "pypcd@"}
    # the directory moves as a whole: the scripts find lock/ relative to themselves
    moved = tmp_path / "elsewhere"
    out.rename(moved)
    check = _bash(moved / "verify.sh", "--prefix", str(prefix))
    assert check.returncode == 0, check.stderr


@pytest.mark.network
def test_install_sh_from_pypi_matches_the_lock(tmp_path: Path) -> None:
    lk = tmp_path / "lockfiles" / "tiny"
    repo = _git_repo(tmp_path / "pypcd", version="0.1.1")
    result = runner.invoke(app, ["lock", "six", "packaging", f"pypcd @ git+{repo}@master", "--python", HOST,
                                 "-o", str(lk)])
    assert result.exit_code == 0, result.output
    render(lk)
    first = _bash(lk / "install.sh")
    assert first.returncode == 0, first.stderr
    arts = json.loads((lk / "envbuild.lock.json").read_text())["artifacts"]
    pins = {f"{a['name']}=={a['version']}" for a in arts if a["kind"] == "wheel"} | {"pypcd@"}
    assert _freeze(lk / "env") == pins
    [git] = [a for a in arts if a["kind"] == "git"]
    direct = subprocess.run([str(lk / "env/bin/python"), "-m", "pip", "freeze"], capture_output=True,
                            text=True, check=True).stdout
    # pip records the locked commit (the URL in pip's file://localhost/ spelling).
    assert f"pypcd @ git+file://localhost{repo[len('file://'):]}@{git['commit']}" in direct.splitlines()
    second = _bash(lk / "install.sh")
    assert second.returncode == 0 and "Successfully installed" not in second.stdout + second.stderr
    assert f"pypcd is installed at {git['commit'][:12]}" in second.stderr
    assert _freeze(lk / "env") == pins


def test_resolution_without_cuda_renders_no_build_env(tmp_path: Path) -> None:
    res = Resolution(ok=True, python=HOST, cuda=None, requirements=["six"])
    idx = Index(tmp_path / "www")
    idx.add("simple", [make_wheel(idx.file("x").parent, "six", "1.16.0", tag="py2.py3-none-any")])
    with serving(idx) as url:
        spec = Spec(name="cpu", python=HOST, requirements=("six",), indexes={"pypi": f"{url}/simple"})
        lock(spec, Profile(python_version=HOST), out_dir=tmp_path / "lk", resolution=res)
    render(tmp_path / "lk")
    text = (tmp_path / "lk" / "install.sh").read_text()
    assert "FORCE_CUDA" not in text and "git+" not in text
