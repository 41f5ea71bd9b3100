"""What a build backend asks for at build time (PEP 517 ``get_requires_for_build_wheel``) is fetched.

Real parts: an sdist built here whose in-tree backend (``backend-path = ["_backend"]``) wraps
setuptools.build_meta and asks for ``dynhelper``, a real wheel of dynhelper, a wheel of the
installed setuptools and wheel, all served by the local index; fetch runs the hook in a throw-away
venv, and the sdist is then built with nothing but ``offline_cache/build`` (under ``unshare -n``
when this machine allows it).
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from e2e import HAS_UNSHARE, offline
from fetch_fixture import make_wheel, serve, sha256, wheel_artifact, write_lock
from test_offline_install import wheel_of_installed

from envbuild.fetch import fetch, load_manifest, read_built

PY = f"{sys.version_info.major}.{sys.version_info.minor}"

GOOD_BACKEND = '''\
import json
import os

from setuptools import build_meta as _orig
from setuptools.build_meta import *  # noqa: F403  (every other hook is setuptools')

ENV_OUT = {env_out!r}


def get_requires_for_build_wheel(config_settings=None):
    if not os.path.exists(ENV_OUT):  # what the first caller (fetch) let the backend see
        with open(ENV_OUT, "w") as fh:
            json.dump(dict(os.environ), fh)
    return [*_orig.get_requires_for_build_wheel(config_settings), "dynhelper>=1.0",
            "winonly>=1; sys_platform == 'win32'"]


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    import dynhelper  # the build really needs what the hook asked for

    return _orig.build_wheel(wheel_directory, config_settings, metadata_directory)
'''

BAD_BACKEND = '''\
from setuptools.build_meta import *  # noqa: F403


def get_requires_for_build_wheel(config_settings=None):
    raise RuntimeError("BOOM: cannot work out what this build needs")
'''


def backend_sdist(out: Path, name: str, backend: str) -> Path:
    """NAME-1.0.tar.gz: a setuptools project built by the in-tree backend ``_backend/dynback.py``."""
    out.mkdir(parents=True, exist_ok=True)
    stem = f"{name}-1.0"
    members = {
        f"{stem}/PKG-INFO": f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n",
        f"{stem}/pyproject.toml": (
            '[build-system]\nrequires = ["setuptools>=61"]\nbuild-backend = "dynback"\n'
            'backend-path = ["_backend"]\n\n'
            f'[project]\nname = "{name}"\nversion = "1.0"\n\n[tool.setuptools]\npackages = ["{name}"]\n'),
        f"{stem}/_backend/dynback.py": backend,
        f"{stem}/{name}/__init__.py": "ANSWER = 42\n",
    }
    path = out / f"{stem}.tar.gz"
    with tarfile.open(path, "w:gz") as tf:
        for fn, text in members.items():
            data = text.encode()
            info = tarfile.TarInfo(fn)
            info.size, info.mtime, info.mode = len(data), 0, 0o644
            tf.addfile(info, io.BytesIO(data))
    return path


def _index(tmp_path: Path, name: str, backend: str) -> tuple[Path, Path]:
    idx = tmp_path / "idx"
    sd = backend_sdist(idx, name, backend)
    make_wheel(idx, "dynhelper", "1.0")
    for dist in ("setuptools", "wheel", "packaging"):
        wheel_of_installed(dist, idx)
    return idx, sd


def _run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    if HAS_UNSHARE:
        return offline(cmd, cwd)
    env = {**os.environ, "PIP_CONFIG_FILE": os.devnull}
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, check=False, timeout=600)


@pytest.mark.slow
def test_what_the_backend_asks_for_is_fetched_and_the_sdist_builds_offline(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen = tmp_path / "backend-env.json"
    idx, sd = _index(tmp_path, "dyndemo", GOOD_BACKEND.format(env_out=str(seen)))
    helper = idx / "dynhelper-1.0-py3-none-any.whl"
    monkeypatch.setenv("PYPI_TOKEN", "s3cret-token")
    with serve(idx) as srv:
        lock = write_lock(tmp_path / "lock", [wheel_artifact(srv, sd)], python=PY, index_urls=[srv.simple])
        cache = tmp_path / "cache"
        res = fetch(lock, cache, show_progress=False)
        # A second fetch asks again (same answer, same key) and requests nothing of build/ again.
        before = len(srv.requests_for(helper.name))
        again = fetch(lock, cache, show_progress=False)
        assert again.downloaded == 0 and len(srv.requests_for(helper.name)) == before
        assert again.backend_requires == res.backend_requires
    build = cache / "build"
    assert (build / helper.name).is_file(), sorted(p.name for p in build.iterdir())
    assert "dynhelper>=1.0" in res.build_requirements
    asked = ["dynhelper>=1.0", "winonly>=1; sys_platform == 'win32'"]
    assert list(res.backend_requires) == [{"file": f"wheels/{sd.name}", "requires": asked}]
    assert not res.warnings
    # The marker is the target's (Linux): winonly is not resolved (the index has none: it would fail).
    assert not [r for r in res.build_requirements if "winonly" in r]
    # The backend ran without the user's variables or HOME.
    env = json.loads(seen.read_text())
    assert "PYPI_TOKEN" not in env and "s3cret" not in seen.read_text()
    assert env["HOME"] != os.environ.get("HOME") and env.get("PIP_NO_INDEX") == "1"
    entry = load_manifest(cache).by_file()[f"build/{helper.name}"]
    assert entry.kind == "build-req" and entry.sha256 == sha256(helper) == sha256(build / helper.name)
    assert "dynhelper>=1.0" in (entry.build_key or "")  # a changed answer is another key: fetched again
    assert read_built(lock)[f"build/{helper.name}"] == sha256(helper)

    # The offline machine: build/ installed into a fresh venv (as install-offline.sh does), then the
    # sdist built from it alone, no index, no network.
    venv = tmp_path / "server-env"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True)
    py = str(venv / "bin" / "python")
    wheels = [str(w) for w in sorted(build.glob("*.whl"))]
    inst = _run([py, "-m", "pip", "install", "--no-index", "--no-deps", *wheels], tmp_path)
    assert inst.returncode == 0, inst.stderr[-2000:]
    built = _run([py, "-m", "pip", "wheel", "--no-index", "--find-links", str(build), "--no-build-isolation",
                  "--no-deps", "-w", str(tmp_path / "out"), str(cache / "wheels" / sd.name)], tmp_path)
    assert built.returncode == 0, built.stdout[-2000:] + built.stderr[-2000:]
    assert (tmp_path / "out" / "dyndemo-1.0-py3-none-any.whl").is_file()

    # What the installer does for an sdist of requirements.txt (an isolated build from build/) fails
    # exactly as the old fetch left it when dynhelper is not there, and works with fetch's build/.
    without = tmp_path / "build-without"
    without.mkdir()
    for w in build.glob("*.whl"):
        if w.name != helper.name:
            (without / w.name).symlink_to(w)
    for links, ok in ((without, False), (build, True)):
        iso = _run([py, "-m", "pip", "wheel", "--no-index", "--find-links", str(links), "--no-deps", "-w",
                    str(tmp_path / f"iso-{ok}"), str(cache / "wheels" / sd.name)], tmp_path)
        assert (iso.returncode == 0) is ok, iso.stdout[-2000:] + iso.stderr[-2000:]
        if not ok:
            assert "dynhelper" in iso.stdout + iso.stderr


@pytest.mark.slow
def test_a_backend_whose_hook_raises_stops_fetch_clearly_with_nothing_recorded(tmp_path: Path) -> None:
    idx, sd = _index(tmp_path, "baddemo", BAD_BACKEND)
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    with serve(idx) as srv:
        art = wheel_artifact(srv, sd)
        lock = write_lock(tmp_path / "lock", [art], python=PY, index_urls=[srv.simple])
        cache = tmp_path / "cache"
        out = subprocess.run([sys.executable, "-m", "envbuild", "fetch", str(lock), "--cache", str(cache),
                              "--json"], capture_output=True, text=True, check=False,
                             env={**os.environ, "TMPDIR": str(scratch)})
        assert out.returncode == 4, out.stdout + out.stderr
        err = json.loads(out.stdout)
        assert err["ok"] is False and err["field"] == "get_requires_for_build_wheel"
        assert f"wheels/{sd.name}" in err["message"] and "BOOM" in err["message"]
        assert err["path"].endswith(sd.name) and "lock that wheel" in err["hint"]
        assert not (cache / "manifest.json").exists(), "no manifest for a cache that cannot build offline"
        assert not (lock / "built.sha256").exists()
        assert not list(cache.rglob("*.part")) and not list(scratch.iterdir()), "temporary files left"

        # Built on the target with --no-build-isolation beside the lock's packages: this venv's failure
        # is no evidence, so fetch succeeds and says what it could not ask.
        src_lock = write_lock(tmp_path / "lock2", [{**art, "build": "source"}], python=PY,
                              index_urls=[srv.simple])
        res = fetch(src_lock, tmp_path / "cache2", show_progress=False)
    (warning,) = res.warnings
    assert sd.name in warning and "BOOM" in warning and "no-build-isolation" in warning
    assert not res.backend_requires
    assert (tmp_path / "cache2" / "manifest.json").is_file()


def test_a_backend_that_hangs_is_stopped_at_the_timeout(tmp_path: Path) -> None:
    from envbuild.tools.pep517 import HookFailed, get_requires_for_build_wheel, read_build_system

    src = tmp_path / "src"
    (src / "_backend").mkdir(parents=True)
    (src / "pyproject.toml").write_text('[build-system]\nrequires = []\nbuild-backend = "sleepy"\n'
                                        'backend-path = ["_backend"]\n')
    (src / "_backend" / "sleepy.py").write_text(
        "import time\n\ndef get_requires_for_build_wheel(config_settings=None):\n    time.sleep(60)\n")
    bs = read_build_system(src)
    assert (bs.backend, bs.backend_path, bs.requires) == ("sleepy", ("_backend",), ())
    import time

    t0 = time.monotonic()
    with pytest.raises(HookFailed, match="did not answer within 2 s"):
        get_requires_for_build_wheel(src, bs, Path(sys.executable), tmp_path / "work", timeout=2)
    assert time.monotonic() - t0 < 15
    # No [build-system]: setuptools' legacy backend, as pip assumes.
    (src / "pyproject.toml").write_text('[project]\nname = "x"\n')
    assert read_build_system(src).backend == "setuptools.build_meta:__legacy__"


@pytest.mark.slow
def test_a_git_source_kept_as_an_archive_gets_what_its_backend_asks_for(tmp_path: Path) -> None:
    """A git dependency with a C extension is kept as a ``git archive`` source: its in-tree backend is
    asked too, and dynhelper lands in build/ for the --no-build-isolation build on the target."""
    from fetch_fixture import _git

    repo = tmp_path / "gdyn"
    (repo / "_backend").mkdir(parents=True)
    (repo / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools>=61"]\nbuild-backend = "dynback"\n'
        'backend-path = ["_backend"]\n\n[project]\nname = "gdyn"\nversion = "0.1"\n')
    (repo / "_backend" / "dynback.py").write_text(
        "from setuptools import build_meta as _orig\nfrom setuptools.build_meta import *  # noqa: F403\n\n"
        "def get_requires_for_build_wheel(config_settings=None):\n"
        "    return [*_orig.get_requires_for_build_wheel(config_settings), 'dynhelper>=1.0']\n")
    (repo / "speed.c").write_text(
        "#include <Python.h>\nstatic struct PyModuleDef m = {PyModuleDef_HEAD_INIT, \"speed\", 0, -1, 0};\n"
        "PyMODINIT_FUNC PyInit_speed(void) { return PyModule_Create(&m); }\n")
    (repo / "setup.py").write_text("from setuptools import Extension, setup\n"
                                   "setup(ext_modules=[Extension('speed', ['speed.c'])])\n")
    _git(repo, "init", "-q", "-b", "main")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", "gdyn 0.1")
    commit = _git(repo, "rev-parse", "HEAD")
    idx = tmp_path / "idx"
    idx.mkdir()
    helper = make_wheel(idx, "dynhelper", "1.0")
    for dist in ("setuptools", "wheel", "packaging"):
        wheel_of_installed(dist, idx)
    with serve(idx) as srv:
        lock = write_lock(tmp_path / "lock", [{"name": "gdyn", "version": "0.1", "kind": "git",
                                               "url": repo.as_uri(), "commit": commit}],
                          python=PY, index_urls=[srv.simple])
        res = fetch(lock, tmp_path / "cache", show_progress=False)
    (entry,) = [e for e in load_manifest(tmp_path / "cache").files if e.kind.startswith("git")]
    assert entry.kind == "git-sdist"
    assert (tmp_path / "cache" / "build" / helper.name).is_file()
    assert sha256(tmp_path / "cache" / "build" / helper.name) == sha256(helper)
    assert list(res.backend_requires) == [{"file": entry.file, "requires": ["dynhelper>=1.0"]}]
    assert read_built(lock)[f"build/{helper.name}"] == sha256(helper)
