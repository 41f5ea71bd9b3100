"""The user journeys of issue 7, end to end with real parts.

1. Fresh server without internet: ``plan --offline`` -> bundle -> install under ``unshare -n``
   -> verify.sh green.
2. Laptop -> cluster: the env made from that lock is packed, unpacked elsewhere, doctor green.
3. CUDA mismatch: see tests/test_rebuild.py (doctor names it, rebuild yields a plan that fits).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from e2e import HAS_UNSHARE
from e2e import envbuild as _envbuild
from e2e import offline as _offline
from fetch_fixture import git_repo

from envbuild._fs import safe_extract

PY = f"{sys.version_info.major}.{sys.version_info.minor}"




@pytest.fixture(scope="module")
def journey1(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """``plan --offline`` on a small real spec: two PyPI packages and a local git dependency."""
    work = tmp_path_factory.mktemp("journey1")
    repo, commits = git_repo(work / "mypkg")
    (work / "targets").mkdir()
    (work / "targets" / "server.json").write_text(json.dumps(
        {"os": "linux", "arch": "x86_64", "glibc_version": "2.36", "python_version": PY, "gpus": [],
         "driver_version": None, "cuda_toolkits": [], "gcc_version": "12.2.0", "hostname": "lab-server"}))
    (work / "envbuild.toml").write_text(
        '[project]\nname = "j1"\n'
        f'python = "{PY}"\nmanager = "venv"\n'
        'requirements = ["six==1.17.0", "packaging==24.2"]\n'
        f'git = ["mypkg @ git+{repo.as_uri()}@v1.0"]\n\n'
        '[target]\nprofile = "targets/server.json"\n'
    )
    proc = _envbuild("plan", "--spec", "envbuild.toml", "-o", "out/j1", "--offline", "--json", cwd=work)
    return {"work": work, "commits": commits, "result": json.loads(proc.stdout)}


@pytest.mark.network
def test_plan_reports_what_was_written_and_what_to_run(journey1: dict[str, object]) -> None:
    work = journey1["work"]
    assert isinstance(work, Path)
    res = journey1["result"]
    assert isinstance(res, dict)
    assert res["ok"] is True and res["cuda"] is None and res["offline"] is True
    out = work / "out" / "j1"
    assert (out / "lock" / "envbuild.lock.json").is_file()
    assert {"install.sh", "install-offline.sh", "verify.sh", "INSTALL.md"} <= set(os.listdir(out))
    # one lock: the scripts read lock/, no second copy of its files (nor of fetch's built.sha256) in out/
    assert not {"envbuild.lock.json", "requirements.txt", "git.txt", "built.sha256"} & set(os.listdir(out))
    assert (out / "lock" / "built.sha256").is_file()
    assert (work / res["bundle"]).is_file() and res["fetch"]["files"] >= 3
    assert any("install-offline.sh" in s for s in res["next_steps"])
    plan_json = json.loads((out / "plan.json").read_text())
    assert plan_json["bundle"] == res["bundle"]


@pytest.fixture(scope="module")
def installed(journey1: dict[str, object], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundle unpacked in a new directory and installed with no network at all."""
    if not HAS_UNSHARE:
        pytest.skip("needs 'unshare -n'")
    work = journey1["work"]
    assert isinstance(work, Path)
    server = tmp_path_factory.mktemp("server")
    top = safe_extract(work / "out" / "j1" / "j1-offline.tar", server) / "j1-offline"
    proc = _offline(["bash", str(top / "install-offline.sh")], cwd=top)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return top


@pytest.mark.network
def test_journey1_offline_bundle_installs_with_no_network(
        journey1: dict[str, object], installed: Path) -> None:
    top = installed
    commits = journey1["commits"]
    assert isinstance(commits, list)
    # install-offline.sh ends by running verify.sh; running it again on its own must also pass.
    verify = _offline(["bash", str(top / "verify.sh")], cwd=top)
    assert verify.returncode == 0, verify.stdout[-2000:] + verify.stderr[-2000:]
    (py,) = sorted(top.glob("*/bin/python"))[:1]
    check = _offline([str(py), "-c", "import six, packaging, mypkg; print(six.__version__, "
                      "packaging.__version__, mypkg.COMMIT_MARK)"], cwd=top)
    assert check.stdout.split() == ["1.17.0", "24.2", "v1.0"], check.stderr
    manifest = json.loads((top / "offline_cache" / "manifest.json").read_text())
    (git_entry,) = [e for e in manifest["files"] if e["kind"].startswith("git")]
    assert git_entry["commit"] == commits[0]


@pytest.mark.network
def test_journey2_env_from_lock_packed_unpacked_elsewhere_doctor_green(
        journey1: dict[str, object], installed: Path, tmp_path: Path) -> None:
    work = journey1["work"]
    assert isinstance(work, Path)
    (env_python,) = sorted(installed.glob("*/bin/python"))[:1]
    env = env_python.parent.parent
    archive = tmp_path / "j1-env.tar.gz"
    _envbuild("pack", str(env), "-o", str(archive), "--json", cwd=tmp_path)
    moved = env.with_name("gone")
    env.rename(moved)  # the laptop copy is out of the way: the cluster copy must stand on its own
    try:
        dest = tmp_path / "cluster" / "envs" / "j1"
        unpacked = _envbuild("unpack", str(archive), str(dest), "--target",
                             str(work / "targets" / "server.json"), "--json", cwd=tmp_path)
        assert json.loads(unpacked.stdout)["ok"] is True
        doctor = _envbuild("doctor", "--prefix", str(dest), "--target",
                           str(work / "targets" / "server.json"), "--json", cwd=tmp_path)
        report = json.loads(doctor.stdout)
        assert not [f for f in report["findings"] if f["severity"] == "error"], report
        run = subprocess.run([str(dest / "bin" / "python"), "-c", "import mypkg; print(mypkg.COMMIT_MARK)"],
                             capture_output=True, text=True, check=False)
        assert run.stdout.strip() == "v1.0", run.stderr
    finally:
        moved.rename(env)


def test_plan_conflict_writes_nothing(tmp_path: Path) -> None:
    (tmp_path / "envbuild.toml").write_text(
        '[project]\nname = "old"\npython = "3.10"\nrequirements = ["torch>=2.0"]\n')
    proc = _envbuild("plan", "--spec", "envbuild.toml", "--driver", "418.67", "--gpu", "Tesla V100-SXM2-16GB",
                     "-o", "out/old", "--json", cwd=tmp_path, ok=False)
    assert proc.returncode == 1
    err = json.loads(proc.stdout)
    assert err["ok"] is False and "418" in err["message"]
    assert not (tmp_path / "out").exists()


@pytest.mark.network
@pytest.mark.slow
def test_journey1_glibc217_python312_scientific_stack_git_dep_and_compiled_sdist(tmp_path: Path) -> None:
    """Issue 12's journey: numpy, scipy, pandas from PyPI, a git package requiring six and a compiled
    sdist (a setuptools C extension on a local index), for a glibc 2.17 target; plan --offline, the
    bundle copied to a new directory and installed under unshare -n, verify.sh green, the second run
    installs nothing."""
    if not HAS_UNSHARE:
        pytest.skip("needs 'unshare -n'")
    from pypi_fixture import Index, serving
    from test_offline_install import TARGET_PY, TARGET_VER, _git_dep, compiled_sdist, wheel_of_installed

    idx = Index(tmp_path / "www")
    d = idx.file("x").parent
    idx.add("simple", [compiled_sdist(d), wheel_of_installed("setuptools", d)])
    commit = _git_dep(tmp_path / "gitdep")
    work = tmp_path / "work"
    work.mkdir()
    (work / "server.json").write_text(json.dumps(
        {"os": "linux", "arch": "x86_64", "glibc_version": "2.17", "python_version": TARGET_VER,
         "gpus": [], "driver_version": None, "cuda_toolkits": [], "gcc_version": "4.8.5"}))
    with serving(idx) as url:
        (work / "requirements.txt").write_text(
            f"--extra-index-url {url}/simple\nnumpy\nscipy\npandas\ncext==1.0\n"
            f"git+{(tmp_path / 'gitdep').as_uri()}@main#egg=gitdep\n")
        proc = _envbuild("plan", "--spec", "requirements.txt", "--target", "server.json", "--python",
                         TARGET_VER, "--allow-sdist", "cext", "-o", "out/j", "--offline", "--json", cwd=work)
    res = json.loads(proc.stdout)
    lock = json.loads((work / "out" / "j" / "lock" / "envbuild.lock.json").read_text())
    kinds = {a["name"]: a["kind"] for a in lock["artifacts"]}
    # wheels for the target except the one sdist accepted knowingly; six comes with the git package
    assert kinds["cext"] == "sdist" and kinds["gitdep"] == "git" and kinds["six"] == "wheel"
    assert all(k == "wheel" for n, k in kinds.items() if n not in ("cext", "gitdep")), kinds
    assert all("manylinux_2_17" in a["filename"] or "manylinux2014" in a["filename"]
               or a["filename"].endswith("-none-any.whl")
               for a in lock["artifacts"] if a["kind"] == "wheel")
    assert res["fetch"]["uv"]

    top = safe_extract(work / res["bundle"], tmp_path / "server")
    top = next(top.glob("*-offline")) if not (top / "install-offline.sh").exists() else top
    cmd = ["env", f"PYTHON={TARGET_PY}", "bash", str(top / "install-offline.sh")]
    first = _offline(cmd, cwd=top)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert "from the cache with uv" in first.stderr
    assert _offline(["bash", str(top / "verify.sh")], cwd=top).returncode == 0
    py = top / "env" / "bin" / "python"
    check = _offline([str(py), "-c", "import numpy, scipy.linalg, pandas, cext, gitdep; "
                      "print(cext.answer(), gitdep.SIX, int(scipy.linalg.det(numpy.eye(3))), "
                      "len(pandas.DataFrame({'a': [1, 2]})))"], cwd=top)
    assert check.returncode == 0, check.stderr
    assert check.stdout.split()[0] == "42" and check.stdout.split()[2:] == ["1", "2"]
    assert next(a for a in lock["artifacts"] if a["name"] == "gitdep")["commit"] == commit
    site = sorted((top / "env" / "lib").glob("python*/site-packages"))[0]
    before = {p: p.stat().st_mtime_ns for p in site.rglob("*")}
    second = _offline(cmd, cwd=top)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert {p: p.stat().st_mtime_ns for p in site.rglob("*")} == before, "the second run changed the env"


def _du(*args: str) -> int:
    """Bytes on disk as du(1) counts them (a hardlinked inode once)."""
    out = subprocess.run(["du", "-s", "-c", "--block-size=1", *args], capture_output=True, text=True,
                         check=True).stdout
    return int(out.splitlines()[-1].split()[0])


@pytest.mark.network
@pytest.mark.slow
def test_plan_offline_dir_bundle_needs_the_cache_size_on_disk_once(tmp_path: Path) -> None:
    (tmp_path / "envbuild.toml").write_text(
        '[project]\nname = "j1d"\n'
        f'python = "{PY}"\nmanager = "venv"\n'
        'requirements = ["six==1.17.0", "numpy==2.2.6"]\n')
    proc = _envbuild("plan", "--spec", "envbuild.toml", "--cpu", "-o", "out/j1d", "--offline",
                     "--bundle-format", "dir", "--json", cwd=tmp_path)
    res = json.loads(proc.stdout)
    out = tmp_path / "out" / "j1d"
    top = tmp_path / res["bundle"]
    assert res["bundle_format"] == "dir" and top == out / "j1d-offline" and top.is_dir()
    assert any("rsync" in s for s in res["next_steps"])
    assert any(s.startswith("bash j1d-offline/install-offline.sh") for s in res["next_steps"])
    bundled = [p for p in (top / "offline_cache").rglob("*") if p.is_file()]
    assert len(bundled) >= 3
    for p in bundled:
        assert p.stat().st_ino == (out / "offline_cache" / p.relative_to(top / "offline_cache")).stat().st_ino
    cache = _du(str(out / "offline_cache"))
    assert cache > 5_000_000, "numpy's wheel makes the cache big enough to measure"
    rest = _du("--exclude=offline_cache", str(out))  # lock, scripts, the bundle's non-cache files
    # One cache on disk, not two: the whole out dir is the cache plus the small files.
    assert _du(str(out)) < cache * 1.05 + rest
