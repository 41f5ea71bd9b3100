"""End to end: lock real PyPI packages + a local git dependency, fetch, bundle, then install the
unpacked bundle under ``unshare -n`` (no network at all); and a one-byte-altered wheel stops the
install before anything is installed.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from e2e import HAS_UNSHARE
from e2e import envbuild as _envbuild
from e2e import offline as _offline
from fetch_fixture import git_repo

from envbuild._fs import safe_extract

pytestmark = [pytest.mark.network, pytest.mark.slow]

PY = f"{sys.version_info.major}.{sys.version_info.minor}"




def _install_cmd(top: Path) -> list[str]:
    return ["bash", str(top / "install-offline.sh")]


@pytest.fixture(scope="module")
def bundle_tar(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    work = tmp_path_factory.mktemp("e2e")
    repo, commits = git_repo(work / "mypkg")
    spec = work / "envbuild.toml"
    spec.write_text(
        '[project]\nname = "e2e"\n'
        f'python = "{PY}"\nmanager = "venv"\n'
        'requirements = ["numpy==2.2.6", "six==1.17.0"]\n'
        f'git = ["mypkg @ git+{repo.as_uri()}@v1.0"]\n'
    )
    _envbuild("lock", "--spec", str(spec), "--cpu", "-o", "lockfiles/e2e", cwd=work)
    lock = json.loads((work / "lockfiles" / "e2e" / "envbuild.lock.json").read_text())
    assert {a["name"] for a in lock["artifacts"]} >= {"numpy", "six", "mypkg"}
    _envbuild("fetch", "lockfiles/e2e", "--cache", "offline_cache", "--json", cwd=work)
    _envbuild("bundle", "lockfiles/e2e", "--cache", "offline_cache", "-o", "e2e-offline.tar", cwd=work)
    return work / "e2e-offline.tar", commits


@pytest.mark.skipif(not HAS_UNSHARE, reason="needs 'unshare -n' (user namespaces)")
def test_bundle_installs_with_no_network(bundle_tar: tuple[Path, list[str]], tmp_path: Path) -> None:
    tar, commits = bundle_tar
    top = safe_extract(tar, tmp_path / "server") / "e2e-offline"
    proc = _offline(_install_cmd(top), cwd=top)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    pythons = sorted(top.glob("**/bin/python"))
    assert pythons, f"no environment was created under {top}"
    env_python = pythons[0]
    check = _offline([str(env_python), "-c",
                      "import numpy, six, mypkg, json; "
                      "print(json.dumps([numpy.__version__, six.__version__, mypkg.COMMIT_MARK, "
                      "float(numpy.arange(4).sum())]))"], cwd=top)
    assert check.returncode == 0, check.stderr
    assert json.loads(check.stdout) == ["2.2.6", "1.17.0", "v1.0", 6.0]
    manifest = json.loads((top / "offline_cache" / "manifest.json").read_text())
    (git_entry,) = [e for e in manifest["files"] if e["kind"].startswith("git")]
    assert git_entry["commit"] == commits[0], "the git dependency is at the locked (tagged) commit"


@pytest.mark.skipif(not HAS_UNSHARE, reason="needs 'unshare -n' (user namespaces)")
def test_one_altered_byte_stops_the_install_before_anything_is_installed(
        bundle_tar: tuple[Path, list[str]], tmp_path: Path) -> None:
    tar, _ = bundle_tar
    top = safe_extract(tar, tmp_path / "server") / "e2e-offline"
    (victim,) = (top / "offline_cache" / "wheels").glob("six-*.whl")
    import hashlib

    good = hashlib.sha256(victim.read_bytes()).hexdigest()
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0x01
    victim.write_bytes(bytes(data))
    bad = hashlib.sha256(bytes(data)).hexdigest()
    before = {p for p in top.rglob("*")}

    proc = _offline(_install_cmd(top), cwd=top)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert victim.name in out and good in out and bad in out, out[-3000:]
    created = {p for p in top.rglob("*")} - before
    assert not [p for p in created if "site-packages" in p.parts], "nothing may be installed"

    report = subprocess.run([sys.executable, "-m", "envbuild", "verify-cache", str(top / "offline_cache"),
                             "--json"], capture_output=True, text=True, check=False)
    assert report.returncode == 3
    (problem,) = json.loads(report.stdout)["problems"]
    assert problem["file"] == f"wheels/{victim.name}" and problem["expected"] == good
    assert problem["actual"] == bad


PY38 = sorted(Path("/root/.pyenv/versions").glob("3.8*/bin/python3.8"))


@pytest.mark.skipif(not HAS_UNSHARE, reason="needs 'unshare -n' (user namespaces)")
def test_lock_for_python38_manylinux2014_fetches_and_installs_the_targets_wheels(tmp_path: Path) -> None:
    """The host is 3.11; a 3.8 target gets cp38 wheels, which a real 3.8 installs with no network."""
    py38 = PY38[0] if PY38 else None
    if py38 is None:
        pytest.skip("no Python 3.8 interpreter here")
    _envbuild("lock", "pyyaml==6.0.1", "markupsafe==2.1.5", "--cpu", "--python", "3.8", "--manager", "venv",
              "--name", "t38", "-o", "lockfiles/t38", cwd=tmp_path)
    _envbuild("fetch", "lockfiles/t38", "--cache", "offline_cache", cwd=tmp_path)
    wheels = sorted(p.name for p in (tmp_path / "offline_cache" / "wheels").iterdir())
    assert len(wheels) == 2 and all("-cp38-cp38-" in w and "manylinux" in w for w in wheels), wheels
    proc = _offline([str(py38), "-m", "pip", "install", "--no-index", "--no-deps", "--target", "site",
                     "--find-links", "offline_cache/wheels", "pyyaml", "markupsafe"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    check = _offline([str(py38), "-c", "import sys; sys.path.insert(0, 'site'); import yaml, markupsafe; "
                      "print(yaml.__with_libyaml__, markupsafe.escape('<'))"], cwd=tmp_path)
    assert check.returncode == 0, check.stderr
    assert check.stdout.split() == ["True", "&lt;"]
