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


@pytest.mark.network
@pytest.mark.slow
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


@pytest.mark.network
@pytest.mark.slow
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


@pytest.mark.network
@pytest.mark.slow
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


# --- issue 12: a git dependency's requirements and a compiled sdist, from local indexes ---------------

PY312 = Path("/root/.pyenv/versions/3.12.1/bin/python3.12")
# The target's Python: 3.12 when this machine has one (the journey), else the host's.
TARGET_PY = PY312 if PY312.exists() else Path(sys.executable)
TARGET_VER = "3.12" if PY312.exists() else PY

CEXT_C = """\
#define PY_SSIZE_T_CLEAN
#include <Python.h>
static PyObject *answer(PyObject *self, PyObject *args) { return PyLong_FromLong(42); }
static PyMethodDef methods[] = {{"answer", answer, METH_NOARGS, "42"}, {NULL, NULL, 0, NULL}};
static struct PyModuleDef mod = {PyModuleDef_HEAD_INIT, "cext", NULL, -1, methods};
PyMODINIT_FUNC PyInit_cext(void) { return PyModule_Create(&mod); }
"""


def compiled_sdist(out_dir: Path) -> Path:
    """cext-1.0.tar.gz: a setuptools C extension (one function returning 42)."""
    import gzip
    import io
    import tarfile

    base = "cext-1.0"
    members = {
        f"{base}/PKG-INFO": b"Metadata-Version: 2.2\nName: cext\nVersion: 1.0\n",
        f"{base}/pyproject.toml": b'[build-system]\nrequires = ["setuptools>=61"]\n'
                                  b'build-backend = "setuptools.build_meta"\n'
                                  b'[project]\nname = "cext"\nversion = "1.0"\n',
        f"{base}/setup.py": b'from setuptools import Extension, setup\n'
                            b'setup(ext_modules=[Extension("cext", ["cext.c"])])\n',
        f"{base}/cext.c": CEXT_C.encode(),
    }
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tf:
        for name, data in members.items():
            ti = tarfile.TarInfo(name)
            ti.size, ti.mtime, ti.mode = len(data), 0, 0o644
            tf.addfile(ti, io.BytesIO(data))
    path = out_dir / f"{base}.tar.gz"
    path.write_bytes(gzip.compress(raw.getvalue(), mtime=0))
    return path


def wheel_of_installed(dist_name: str, out_dir: Path) -> Path:
    """A wheel of a distribution installed here (setuptools, wheel, packaging, uv) with its own tags and
    scripts: what a local index serves, so nothing in the test needs PyPI."""
    import importlib.metadata
    import zipfile

    dist = importlib.metadata.distribution(dist_name)
    site = Path(str(dist.locate_file("")))
    tags = [ln.split(":", 1)[1].strip() for ln in (dist.read_text("WHEEL") or "").splitlines()
            if ln.startswith("Tag:")] or ["py3-none-any"]
    py, abi = tags[0].split("-")[:2]
    plat = ".".join(t.split("-")[2] for t in tags)
    path = out_dir / f"{dist_name}-{dist.version}-{py}-{abi}-{plat}.whl"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for f in dist.files or []:
            rel = str(f)
            if "__pycache__" in rel or rel.endswith(".pyc"):
                continue
            if rel.startswith(".."):
                if "/bin/" not in rel:
                    continue
                arc = f"{dist_name}-{dist.version}.data/scripts/{Path(rel).name}"
            else:
                arc = rel
            zf.write(site / rel, arc)
    return path


def _git_dep(path: Path) -> str:
    """A git package 'gitdep' whose only requirement is six (static pyproject metadata); its commit."""
    from fetch_fixture import _git

    (path / "gitdep").mkdir(parents=True)
    (path / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools>=61"]\nbuild-backend = "setuptools.build_meta"\n\n'
        '[project]\nname = "gitdep"\nversion = "0.3"\ndependencies = ["six>=1.16"]\n\n'
        '[tool.setuptools]\npackages = ["gitdep"]\n')
    (path / "gitdep" / "__init__.py").write_text("import six\n\nSIX = six.__version__\n")
    _git(path, "init", "-q", "-b", "main")
    _git(path, "add", "-A")
    _git(path, "commit", "-q", "-m", "gitdep 0.3")
    return _git(path, "rev-parse", "HEAD")


@pytest.mark.slow
@pytest.mark.skipif(not HAS_UNSHARE, reason="needs 'unshare -n' (user namespaces)")
@pytest.mark.parametrize("installer", ["uv", "pip"])
def test_git_requirements_and_a_compiled_sdist_install_offline(tmp_path: Path, installer: str) -> None:
    """Local index (six, setuptools, wheel, uv, a C-extension sdist) and a local git package requiring
    six: plan --offline for a glibc 2.17 target, the bundle copied elsewhere and installed under
    unshare -n with the bundle's uv (or pip, forced), the sdist compiled there with setuptools from the
    bundle; verify.sh green; a second run installs nothing."""
    from pypi_fixture import Index, make_wheel, serving

    idx = Index(tmp_path / "www")
    d = idx.file("x").parent
    idx.add("simple", [make_wheel(d, "six", "1.17.0", tag="py2.py3-none-any"), compiled_sdist(d),
                       *(wheel_of_installed(n, d) for n in ("setuptools", "wheel", "packaging", "uv"))])
    commit = _git_dep(tmp_path / "gitdep")
    work = tmp_path / "work"
    work.mkdir()
    (work / "server.json").write_text(json.dumps(
        {"os": "linux", "arch": "x86_64", "glibc_version": "2.17", "python_version": TARGET_VER,
         "gpus": [], "driver_version": None, "cuda_toolkits": [], "gcc_version": "12.2.0"}))
    with serving(idx) as url:
        (work / "requirements.txt").write_text(
            f"--index-url {url}/simple\n--no-binary cext\ncext==1.0\n"
            f"gitdep @ git+{(tmp_path / 'gitdep').as_uri()}@main\n")
        proc = _envbuild("plan", "--spec", "requirements.txt", "--target", "server.json", "--python",
                         TARGET_VER, "-o", "out/j", "--offline", "--json", cwd=work)
    res = json.loads(proc.stdout)
    lock = json.loads((work / "out" / "j" / "lock" / "envbuild.lock.json").read_text())
    kinds = {a["name"]: a["kind"] for a in lock["artifacts"]}
    # six is locked (with its hash) because the git package requires it
    assert kinds == {"six": "wheel", "cext": "sdist", "gitdep": "git"}, kinds
    assert "six==1.17.0" in (work / "out" / "j" / "lock" / "requirements.txt").read_text()
    assert next(a for a in lock["artifacts"] if a["name"] == "gitdep")["commit"] == commit

    # the bundle copied to a new directory; the index is gone (and so is the network)
    server = tmp_path / "server"
    top = safe_extract(work / res["bundle"], server)
    top = next(top.glob("*-offline")) if not (top / "install-offline.sh").exists() else top
    assert res["fetch"]["uv"].startswith("tools/uv-"), res["fetch"]  # the uv wheel for the target
    cmd = ["env", f"PYTHON={TARGET_PY}", f"ENVBUILD_INSTALLER={installer}", "bash",
           str(top / "install-offline.sh")]
    first = _offline(cmd, cwd=top)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert f"from the cache with {installer}" in first.stderr
    py = top / "env" / "bin" / "python"
    check = _offline([str(py), "-c", "import sys, cext, gitdep; print(sys.version_info[:2] >= (3, 0), "
                      "cext.answer(), gitdep.SIX, '%d.%d' % sys.version_info[:2])"], cwd=top)
    assert check.returncode == 0, check.stderr
    assert check.stdout.split() == ["True", "42", "1.17.0", TARGET_VER]
    assert _offline(["bash", str(top / "verify.sh")], cwd=top).returncode == 0

    site = sorted((top / "env" / "lib").glob("python*/site-packages"))[0]
    before = {p: p.stat().st_mtime_ns for p in site.rglob("*")}
    second = _offline(cmd, cwd=top)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert {p: p.stat().st_mtime_ns for p in site.rglob("*")} == before, "the second run changed the env"
    assert "Successfully installed" not in second.stdout + second.stderr
