"""envbuild lock against real local indexes (PyPI / PyTorch cu113 / OpenMMLab stand-ins on 127.0.0.1).

Offline: uv, pip-compile, git, py-rattler and pip all run for real against servers and
repositories the tests build.  A few small tests marked ``network`` use PyPI.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conda_fixture import make_channel
from pypi_fixture import Index, make_sdist, make_wheel, seed_indexes, serving
from typer.testing import CliRunner

from envbuild.cli import app
from envbuild.errors import ConflictError, InputError
from envbuild.lock import lock, target_platform
from envbuild.lockfile import load_lock
from envbuild.models import Profile, Resolution
from envbuild.spec import GitRequirement, Spec
from envbuild.tools.uv import parse_compiled

PY37 = Path("/root/.pyenv/versions/3.7.16/bin/python")
PY38 = Path("/root/.pyenv/versions/3.8.18/bin/python")
runner = CliRunner()


def sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def req_entries(text: str) -> dict[str, list[str]]:
    """name==version -> hashes, read back with the same parser the engines' output goes through."""
    return {f"{p.name}=={p.version}": list(p.hashes) for p in parse_compiled(text)}


def seed_resolution(url: str) -> Resolution:
    """What the resolver decides for the seed laptop (SCENARIOS.md A): torch 1.10.0+cu113 etc."""
    return Resolution(
        ok=True, python="3.7", cuda="11.3",
        packages={"torch": "1.10.0+cu113", "mmcv-full": "1.4.0", "numpy": "1.19.5", "cupy-cuda113": "10.6.0"},
        requirements=["torch==1.10.0+cu113", "mmcv-full==1.4.0", "mmdet==2.19.0", "mmsegmentation==0.20.0",
                      "cupy-cuda113==10.6.0", "numpy==1.19.5"],
        source_builds=[{"name": "mmdet3d", "version": "0.17.3", "requires": ["numpy<1.20", "plyfile"],
                        "env": {"FORCE_CUDA": "1", "TORCH_CUDA_ARCH_LIST": "8.6"},
                        "reason": "setup.py imports torch"}],
        index_urls=[f"{url}/whl/cu113"], find_links=[f"{url}/mmcv/dist/cu113/torch1.10.0/index.html"],
        build={"nvcc": "11.3", "gcc_max": "10", "torch_cuda_arch_list": "8.6"},
    )


def seed_spec(url: str, **kw: object) -> Spec:
    base: dict[str, object] = dict(
        name="echofusion", python="3.7", manager="venv",
        requirements=("mmcv-full==1.4.0", "mmdet==2.19.0", "mmsegmentation==0.20.0", "mmdet3d==0.17.3",
                      "cupy", "numpy"),
        indexes={"pypi": f"{url}/simple", "pytorch": f"{url}/whl", "openmmlab": f"{url}/mmcv/dist"},
    )
    base.update(kw)
    return Spec(**base)  # type: ignore[arg-type]


LAPTOP = Profile(python_version="3.7", glibc_version="2.31", driver_version="470.223.02",
                 driver_cuda_version="11.4")


@pytest.fixture
def serve() -> Iterator[Callable[[Index], str]]:
    with contextlib.ExitStack() as stack:
        yield lambda index: stack.enter_context(serving(index))


@pytest.fixture
def seed(tmp_path: Path, serve: Callable[[Index], str]) -> tuple[Index, str]:
    idx = seed_indexes(tmp_path / "www")
    return idx, serve(idx)


def test_seed_laptop_lock(seed: tuple[Index, str], tmp_path: Path) -> None:
    idx, url = seed
    out = tmp_path / "lockfiles" / "echofusion"
    res = lock(seed_spec(url), LAPTOP, out_dir=out, resolution=seed_resolution(url))
    text = (out / "requirements.txt").read_text()
    lines = text.splitlines()
    assert f"--index-url {url}/simple" in lines
    assert f"--extra-index-url {url}/whl/cu113" in lines
    assert f"--find-links {url}/mmcv/dist/cu113/torch1.10.0/index.html" in lines
    entries = req_entries(text)
    assert all(entries.values()), "every requirement line carries a hash"
    files = idx.root / "files"
    # Only the target's files are hashed: the cp37 Linux wheels, never cp38 or Windows ones.
    assert entries["torch==1.10.0+cu113"] == [sha(files / "torch-1.10.0+cu113-cp37-cp37m-linux_x86_64.whl")]
    assert entries["numpy==1.19.5"] == [sha(files / "numpy-1.19.5-cp37-cp37m-manylinux2010_x86_64.whl")]
    assert entries["mmcv-full==1.4.0"] == [sha(files / "mmcv_full-1.4.0-cp37-cp37m-manylinux1_x86_64.whl")]
    assert "mmdet3d==0.17.3" not in entries  # built on the target, after torch
    assert entries["plyfile==0.7.4"], "a source build's own requirements are locked"
    sb = (out / "source-builds.txt").read_text()
    assert req_entries(sb) == {"mmdet3d==0.17.3": [sha(files / "mmdet3d-0.17.3.tar.gz")]}
    assert "TORCH_CUDA_ARCH_LIST=8.6" in sb

    lk = load_lock(out)
    assert lk.python == "3.7" and lk.cuda == "11.3"
    assert lk.platform.pip_platform == "manylinux_2_31_x86_64"
    assert lk.platform.conda_subdir == "linux-64"
    [mmdet3d] = lk.source_builds
    assert (mmdet3d.kind, mmdet3d.build) == ("sdist", "source")
    assert mmdet3d.url == f"{url}/files/mmdet3d-0.17.3.tar.gz"
    torch = next(a for a in lk.artifacts if a.name == "torch")
    assert torch.filename == "torch-1.10.0+cu113-cp37-cp37m-linux_x86_64.whl"
    assert torch.sha256 == entries["torch==1.10.0+cu113"][0]
    assert [a.kind for a in lk.artifacts] == sorted(a.kind for a in lk.artifacts)
    assert res.to_dict()["counts"] == {"source": 1, "wheel": 13}
    assert not (out / "conda.txt").exists()  # venv manager: no conda part

    # Re-locking the unchanged spec rewrites identical bytes.
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    lock(seed_spec(url), LAPTOP, out_dir=out, resolution=seed_resolution(url))
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before

    # The lock installs, hash-checked, on a real Python 3.7 (what the target runs).
    if not PY37.exists():
        pytest.skip("no Python 3.7 here")
    venv = tmp_path / "venv37"
    # The target's own (bundled) pip: pip >= 25 no longer runs under --python for a 3.7 interpreter.
    subprocess.run([str(PY37), "-m", "venv", str(venv)], check=True)
    subprocess.run([str(venv / "bin/python"), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                    "--require-hashes", "--no-deps", "-r", str(out / "requirements.txt")], check=True)
    got = subprocess.run([str(venv / "bin/python"), "-c", "import torch, numpy, mmcv_full; "
                          "print(torch.__version__, numpy.__version__)"],
                         capture_output=True, text=True, check=True).stdout.split()
    assert got == ["1.10.0+cu113", "1.19.5"]


def test_seed_laptop_through_the_resolver_and_cli(seed: tuple[Index, str], tmp_path: Path,
                                                  profiles_dir: Path) -> None:
    """`envbuild lock --spec` with the seed laptop profile: the real resolver picks the stack."""
    _, url = seed
    spec = tmp_path / "proj" / "envbuild.toml"
    spec.parent.mkdir()
    spec.write_text(
        "[project]\nname = 'echofusion'\npython = '3.7'\nmanager = 'venv'\n"
        "requirements = ['mmcv-full==1.4.0', 'mmdet==2.19.0', 'mmsegmentation==0.20.0', "
        "'mmdet3d==0.17.3', 'cupy', 'numpy']\n"
    )
    out = tmp_path / "lockfiles" / "echofusion"
    args = ["lock", "--spec", str(spec), "--target", str(profiles_dir / "seed-laptop.json"),
            "--index-url", f"{url}/simple", "--pytorch-index", f"{url}/whl",
            "--openmmlab-index", f"{url}/mmcv/dist", "-o", str(out), "--json"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    got = json.loads(result.stdout)
    assert got["cuda"] == "11.3" and got["python"] == "3.7"
    assert got["packages"]["torch"] == "1.10.0+cu113" and got["packages"]["cupy-cuda113"] == "10.6.0"
    text = (out / "requirements.txt").read_text()
    lines = text.splitlines()
    assert f"--extra-index-url {url}/whl/cu113" in lines
    assert any(ln.startswith(f"--find-links {url}/mmcv/dist/cu113/torch1.10") for ln in lines)
    entries = req_entries(text)
    assert all(entries.values()) and "mmdet3d==0.17.3" not in entries
    assert entries["numba==0.48.0"], "mmdet3d's own requirements are locked for the target"
    assert "mmdet3d==0.17.3" in req_entries((out / "source-builds.txt").read_text())
    # The header's command regenerates the same bytes.
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert f"envbuild lock --spec {spec}" in text
    assert runner.invoke(app, args).exit_code == 0
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_credentials_never_written(tmp_path: Path, serve: Callable[[Index], str]) -> None:
    idx = Index(tmp_path / "www")
    idx.add("simple", [make_wheel(idx.file("x").parent, "six", "1.16.0", tag="py2.py3-none-any")])
    url = serve(idx)
    secret_url = url.replace("http://", "http://user:s3cret@") + "/private/simple"
    out = tmp_path / "lk"
    result = runner.invoke(app, ["lock", "six", "--python", "3.11", "--index-url", secret_url,
                                 "-o", str(out)])
    assert result.exit_code == 0, result.output
    # The index needs the password (HTTP 401 without it): uv got it, no file did.
    for f in out.iterdir():
        text = f.read_text()
        assert "s3cret" not in text and "user:" not in text, f.name
    assert f"--index-url {url}/private/simple" in (out / "requirements.txt").read_text().splitlines()
    assert load_lock(out).index_urls == (f"{url}/private/simple",)


def test_bad_spec_exit_2_and_no_partial_dir(tmp_path: Path) -> None:
    cases = {
        "[project]\nname = 'x'\nrequirments = ['six']\n": "project.requirments",
        "[project]\nname = 'x'\nmanager = 'pixi'\n": "project.manager",
        "[project]\nname = 'x'\nrequirements = ['six>=']\n": "project.requirements[0]",
    }
    for i, (toml, fld) in enumerate(cases.items()):
        spec = tmp_path / f"s{i}" / "envbuild.toml"
        spec.parent.mkdir()
        spec.write_text(toml)
        out = tmp_path / f"out{i}"
        result = runner.invoke(app, ["lock", "--spec", str(spec), "-o", str(out), "--json"])
        assert result.exit_code == 2, result.output
        err = json.loads(result.stdout)
        assert err["path"] == str(spec) and err["field"] == fld
        assert not out.exists()
    result = runner.invoke(app, ["lock", "six", "--manager", "pixi", "-o", str(tmp_path / "o")])
    assert result.exit_code == 2 and "pixi" in result.output


def test_unsatisfiable_exit_1_with_explanation(seed: tuple[Index, str], tmp_path: Path) -> None:
    _, url = seed
    out = tmp_path / "lk"
    out.mkdir()
    (out / "keep").write_text("old lock")
    (out / ".envbuild-output").write_text('{"files": ["keep"]}')  # an earlier lock's directory
    result = runner.invoke(app, ["lock", "numpy==1.21.6", "numpy<1.20",
                                 "--python", "3.7", "--index-url", f"{url}/simple", "-o", str(out), "--json"])
    assert result.exit_code == 1, result.output
    err = json.loads(result.stdout)
    assert err["error"] == "ConflictError" and "numpy" in err["message"]
    # A failed lock leaves the previous directory as it was, and no temp dirs beside it.
    assert sorted(p.name for p in out.iterdir()) == [".envbuild-output", "keep"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lk", "www"]
    with pytest.raises(ConflictError):
        lock(seed_spec(url), LAPTOP, out_dir=tmp_path / "x",
             resolution=Resolution(ok=False, python="3.7", cuda=None, conflicts=["mmdet3d needs numpy<1.20"]))
    assert not (tmp_path / "x").exists()


def test_pip_tools_engine_gives_the_same_pins(tmp_path: Path, serve: Callable[[Index], str]) -> None:
    idx = Index(tmp_path / "www")
    d = idx.file("x").parent
    idx.add("simple", [
        make_wheel(d, "six", "1.16.0", tag="py2.py3-none-any"), make_wheel(d, "six", "1.15.0"),
        make_wheel(d, "addict", "2.4.0"), make_wheel(d, "prettytable", "2.5.0", requires=["wcwidth"]),
        make_wheel(d, "wcwidth", "0.2.6"), make_wheel(d, "wcwidth", "0.2.5"),
        make_wheel(d, "terminaltables", "3.1.10", requires=["six<1.16"]),
    ])
    url = serve(idx)
    host = f"{sys.version_info[0]}.{sys.version_info[1]}"
    spec = Spec(name="t", python=host, requirements=("addict", "prettytable", "terminaltables"),
                indexes={"pypi": f"{url}/simple", "pytorch": f"{url}/whl", "openmmlab": f"{url}/dist"})
    prof = Profile(python_version=host)
    a = lock(spec, prof, out_dir=tmp_path / "uv", engine="uv")
    b = lock(spec, prof, out_dir=tmp_path / "pt", engine="pip-tools")
    ra, rb = ((tmp_path / d / "requirements.txt").read_text() for d in ("uv", "pt"))
    assert req_entries(ra) == req_entries(rb)
    assert req_entries(ra)["six==1.15.0"] and len(req_entries(ra)) == 5
    assert a.lock.artifacts == b.lock.artifacts
    # pip-tools only resolves for the interpreter it runs in: it must refuse another Python.
    with pytest.raises(InputError, match="pip-tools resolves only"):
        lock(spec, Profile(python_version="3.7"), out_dir=tmp_path / "p37", engine="pip-tools",
             resolution=Resolution(ok=True, python="3.7", cuda=None, requirements=["six"]))
    assert not (tmp_path / "p37").exists()


def test_both_engines_lock_wheels_only_past_a_newer_sdist_only_release(
        tmp_path: Path, serve: Callable[[Index], str]) -> None:
    """addict 2.5.0 is only an sdist, 2.4.0 a wheel: uv and pip-tools both pin the wheel (the target
    installs wheels only; pip-tools used to take the sdist and fail or lock what cannot install)."""
    idx = Index(tmp_path / "www")
    d = idx.file("x").parent
    idx.add("simple", [make_wheel(d, "addict", "2.4.0"), make_sdist(d, "addict", "2.5.0"),
                       make_wheel(d, "six", "1.16.0", tag="py2.py3-none-any")])
    url = serve(idx)
    host = f"{sys.version_info[0]}.{sys.version_info[1]}"
    spec = Spec(name="w", python=host, requirements=("addict", "six"), indexes={"pypi": f"{url}/simple"})
    got = {}
    for engine in ("uv", "pip-tools"):
        lock(spec, Profile(python_version=host), out_dir=tmp_path / engine, engine=engine)
        got[engine] = req_entries((tmp_path / engine / "requirements.txt").read_text())
    assert got["uv"] == got["pip-tools"]
    assert set(got["pip-tools"]) == {"addict==2.4.0", "six==1.16.0"}


def _git(repo: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@e", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@e"}
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True,
                          env=env).stdout.strip()


def test_conda_part_and_git_commit(tmp_path: Path, serve: Callable[[Index], str]) -> None:
    ch = make_channel(tmp_path / "channel", [
        dict(name="python", version="3.7.12", subdir="linux-64", depends=["libzlib >=1.2"]),
        dict(name="python", version="3.8.10", subdir="linux-64"),
        dict(name="libzlib", version="1.2.13", subdir="linux-64"),
        dict(name="pip", version="23.0", depends=["python >=3.7"]),
        dict(name="libgl", version="1.0", subdir="linux-64", depends=["__glibc >=2.17"]),
    ])
    repo = tmp_path / "pypcd"
    repo.mkdir()
    _git(repo, "init", "-q", "-b", "master")
    (repo / "setup.py").write_text("from setuptools import setup\nsetup(name='pypcd')\n")
    _git(repo, "add", ".")
    _git(repo, "commit", "-q", "-m", "one")
    head = _git(repo, "rev-parse", "HEAD")

    idx = Index(tmp_path / "www")
    idx.add("simple", [make_wheel(idx.file("x").parent, "six", "1.16.0", tag="py2.py3-none-any")])
    url = serve(idx)
    spec = Spec(name="c", python="3.7", manager="conda", requirements=("six",),
                git=(GitRequirement("pypcd", repo.as_uri(), "master"),),
                conda_channels=(ch.as_uri(),), conda_packages=("libgl",),
                indexes={"pypi": f"{url}/simple", "pytorch": f"{url}/whl", "openmmlab": f"{url}/dist"})
    out = tmp_path / "lk"
    lock(spec, LAPTOP, out_dir=out)
    conda = (out / "conda.txt").read_text().splitlines()
    body = conda[conda.index("@EXPLICIT") + 1:]
    files = [ch / "linux-64" / "python-3.7.12-0.conda", ch / "linux-64" / "libzlib-1.2.13-0.conda",
             ch / "noarch" / "pip-23.0-0.conda", ch / "linux-64" / "libgl-1.0-0.conda"]
    # The explicit format's anchor is the MD5 every conda client reads; the lock keeps sha256.
    assert set(body) == {f"{f.as_uri()}#{hashlib.md5(f.read_bytes()).hexdigest()}" for f in files}
    lk = load_lock(out)
    assert {a.name for a in lk.conda} == {"python", "libzlib", "pip", "libgl"}
    assert {a.sha256 for a in lk.conda} == {sha(f) for f in files}
    assert lk.conda_channels == (ch.as_uri(),)
    [g] = lk.git
    assert (g.name, g.commit, g.url) == ("pypcd", head, repo.as_uri())
    # git.txt is pip input: pip's parser wants file://localhost/ rather than file:///.
    assert f"pypcd @ git+file://localhost{repo}@{head}" in (out / "git.txt").read_text().splitlines()
    # A glibc too old for a conda package is a conflict for that target, not this machine.
    old = Profile(python_version="3.7", glibc_version="2.12")
    with pytest.raises(ConflictError, match="__glibc"):
        lock(spec, old, out_dir=tmp_path / "old")
    assert not (tmp_path / "old").exists()


def test_target_platform_names() -> None:
    p = target_platform(Profile(glibc_version="2.31"))
    assert (p.pip_platform, p.uv_platform, p.conda_subdir) == (
        "manylinux_2_31_x86_64", "x86_64-manylinux_2_31", "linux-64")
    # glibc 2.27 (Ubuntu 18.04) cannot run manylinux_2_28 wheels: uv is asked for 2_17.
    assert target_platform(Profile(glibc_version="2.27")).uv_platform == "x86_64-manylinux_2_17"
    tags = {str(t) for t in p.tags("3.8")}
    assert "cp38-cp38-manylinux2014_x86_64" in tags and "cp38-cp38-manylinux_2_31_x86_64" in tags
    assert "cp38-cp38-manylinux_2_32_x86_64" not in tags and "cp37-cp37m-manylinux1_x86_64" not in tags
    with pytest.raises(InputError):
        target_platform(Profile(os="windows"))


# --- PyPI (few, small) -----------------------------------------------------------------------------


@pytest.mark.network
def test_pypi_pins_equal_uv_pip_compile(tmp_path: Path) -> None:
    reqs = ["numpy<2", "scipy", "opencv-python-headless", "mmengine", "numba"]
    out = tmp_path / "lk"
    result = runner.invoke(app, ["lock", *reqs, "--python", "3.11", "-o", str(out), "--json"])
    assert result.exit_code == 0, result.output
    ours = req_entries((out / "requirements.txt").read_text())
    assert all(ours.values())
    (tmp_path / "r.in").write_text("\n".join(reqs) + "\n")
    from envbuild.tools.uv import uv_bin

    raw = subprocess.run([uv_bin(), "pip", "compile", str(tmp_path / "r.in"), "--python-version", "3.11",
                          "--python-platform", "x86_64-manylinux_2_17", "--generate-hashes", "-q",
                          # wheels only for the target, as envbuild locks (issue 12: a newer sdist-only
                          # or glibc-2.28-only release is not installable on a glibc 2.17 target)
                          "--only-binary", ":all:", "--index-url", "https://pypi.org/simple"],
                         capture_output=True, text=True, check=True).stdout
    theirs = req_entries(raw)
    assert set(ours) == set(theirs)
    for pin, hashes in ours.items():
        # Ours keep only the target's files: a subset of uv's every-platform hash list.
        assert set(hashes) <= set(theirs[pin]), pin
    assert len(ours["numpy==1.26.4"]) == 1


@pytest.mark.network
def test_python38_lock_differs_and_installs(tmp_path: Path) -> None:
    out = tmp_path / "lk"
    result = runner.invoke(app, ["lock", "numpy<2", "six", "--python", "3.8", "-o", str(out)])
    assert result.exit_code == 0, result.output
    entries = req_entries((out / "requirements.txt").read_text())
    [numpy] = [k for k in entries if k.startswith("numpy==")]
    assert numpy.startswith("numpy==1.24."), numpy
    if not PY38.exists():
        pytest.skip("no Python 3.8 here")
    venv = tmp_path / "v38"
    subprocess.run([str(PY38), "-m", "venv", str(venv)], check=True)
    subprocess.run([str(venv / "bin/python"), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                    "--require-hashes", "--no-deps", "-r", str(out / "requirements.txt")], check=True)
    v = subprocess.run([str(venv / "bin/python"), "-c", "import numpy; print(numpy.__version__)"],
                       capture_output=True, text=True, check=True).stdout.strip()
    assert f"numpy=={v}" == numpy


@pytest.mark.network
def test_pip_tools_same_pins_on_pypi(tmp_path: Path) -> None:
    a, b = tmp_path / "uv", tmp_path / "pt"
    for out, engine in ((a, "uv"), (b, "pip-tools")):
        result = runner.invoke(app, ["lock", "six", "packaging<25", "--engine", engine, "-o", str(out)])
        assert result.exit_code == 0, result.output
    ra, rb = (req_entries((d / "requirements.txt").read_text()) for d in (a, b))
    assert ra == rb and ra["packaging==24.2"]


def test_relock_keeps_pins_until_upgrade(tmp_path: Path, serve: Callable[[Index], str]) -> None:
    idx = Index(tmp_path / "www")
    d = idx.file("x").parent
    idx.add("simple", [make_wheel(d, "six", "1.15.0")])
    url = serve(idx)
    out = tmp_path / "lk"
    args = ["lock", "six", "--python", "3.8", "--index-url", f"{url}/simple", "-o", str(out), "--json"]
    assert runner.invoke(app, args).exit_code == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert "pylock.toml" in before
    idx.add("simple", [make_wheel(d, "six", "1.16.0")])  # a new release appears
    assert runner.invoke(app, args).exit_code == 0
    # Like pip-compile with an existing output: the unchanged spec keeps its pins, byte for byte.
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    result = runner.invoke(app, [*args, "--upgrade"])
    assert result.exit_code == 0 and json.loads(result.stdout)["packages"] == {"six": "1.16.0"}


def test_find_links_without_hashes_are_hashed_for_the_target(tmp_path: Path,
                                                            serve: Callable[[Index], str]) -> None:
    """OpenMMLab's pages list no hashes: the target's file is downloaded once and hashed."""
    idx = Index(tmp_path / "www")
    d = idx.file("x").parent
    tag = f"cp{sys.version_info[0]}{sys.version_info[1]}"
    mine = make_wheel(d, "mmcv_full", "1.4.0", tag=f"{tag}-{tag}-manylinux1_x86_64", requires=["addict"])
    other = make_wheel(d, "mmcv_full", "1.4.0", tag="cp37-cp37m-manylinux1_x86_64", requires=["addict"])
    idx.add("simple", [make_wheel(d, "addict", "2.4.0")])
    idx.add_find_links("mmcv/dist/cu113/torch1.10.0/index.html", [mine, other])
    url = serve(idx)
    host = f"{sys.version_info[0]}.{sys.version_info[1]}"
    res = Resolution(ok=True, python=host, cuda="11.3", requirements=["mmcv-full==1.4.0"],
                     find_links=[f"{url}/mmcv/dist/cu113/torch1.10.0/index.html"])
    spec = Spec(name="fl", python=host, requirements=("mmcv-full==1.4.0",), indexes={"pypi": f"{url}/simple"})
    entries = {}
    for engine in ("uv", "pip-tools"):
        lock(spec, Profile(python_version=host), out_dir=tmp_path / engine, engine=engine, resolution=res)
        entries[engine] = req_entries((tmp_path / engine / "requirements.txt").read_text())
    assert entries["uv"] == entries["pip-tools"]
    assert entries["uv"]["mmcv-full==1.4.0"] == [sha(mine)]
    cache = json.loads((Path(os.environ["ENVBUILD_CACHE_DIR"]) / "url-sha256.json").read_text())
    assert cache[f"{url}/files/{mine.name}"] == sha(mine)


def test_resolver_conflict_exit_1_no_dir(tmp_path: Path) -> None:
    out = tmp_path / "lk"
    result = runner.invoke(app, ["lock", "torch==1.10.0", "--python", "3.7", "--driver", "384.81", "--gpu",
                                 "V100", "-o", str(out), "--json"])
    assert result.exit_code == 1, result.output
    err = json.loads(result.stdout)
    # The resolver's own words: what the driver allows, what torch needs, what to do.
    assert err["error"] == "ConflictError" and "384.81" in err["message"] and "torch" in err["message"]
    assert any("440.33" in c for c in err["conflicts"])
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_pytorch_index_always_takes_the_labelled_build_from_the_pytorch_index(tmp_path: Path) -> None:
    """RTX 4090 / driver 550, strict driver rule: torch 2.6.0 (CUDA 12.4) comes from PyPI by default; the flag
    keeps the cu124 index.  (Without --native-driver-only a newer torch runs via minor-version compat.)"""
    from pypi_fixture import Index, serving
    from pypi_fixture import make_wheel as index_wheel

    idx = Index(tmp_path / "www")
    d = idx.file("x").parent
    idx.add("simple", [index_wheel(d, "six", "1.17.0")])
    idx.add("whl/cu124", [index_wheel(d, "torch", "2.6.0+cu124", tag="cp311-cp311-linux_x86_64",
                                      requires=["six"])])
    out = tmp_path / "lk"
    with serving(idx) as url:
        result = runner.invoke(app, ["lock", "torch", "--python", "3.11", "--driver", "550.54.14", "--gpu",
                                     "NVIDIA GeForce RTX 4090", "--pytorch-index-always",
                                     "--native-driver-only",
                                     "--index-url", f"{url}/simple", "--pytorch-index", f"{url}/whl",
                                     "-o", str(out), "--json"])
    assert result.exit_code == 0, result.output
    text = (out / "requirements.txt").read_text()
    assert f"--extra-index-url {url}/whl/cu124" in text
    assert "torch==2.6.0+cu124" in text and "six==1.17.0" in text
