"""envbuild rebuild: re-target the seed env (built for cu113) to the lab server (driver CUDA 10.2, V100).

The env is a real venv; the ops .so files are real ELF files built with gcc; the resolver is
the real one over the bundled matrix; rebuild.sh is checked with shellcheck and really run
(offline, from a wheelhouse of real wheels).
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from wheels import write_wheel

from envbuild import doctor
from envbuild.models import load_profile
from envbuild.rebuild import rebuild

ENVBUILD = [sys.executable, "-m", "envbuild"]
SHELLCHECK = Path(sys.executable).parent / "shellcheck"
needs_gcc = pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc not installed")


def _dist(
    site: Path, name: str, version: str, files: list[str], direct_url: dict[str, object] | None = None
) -> None:
    """The dist-info pip writes (METADATA, INSTALLER, RECORD, and direct_url.json for local installs)."""
    di = site / f"{name.replace('-', '_')}-{version}.dist-info"
    di.mkdir()
    (di / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    (di / "INSTALLER").write_text("pip\n")
    if direct_url is not None:
        (di / "direct_url.json").write_text(json.dumps(direct_url))
    rows = [*files, *(f"{di.name}/{x}" for x in ("METADATA", "INSTALLER", "RECORD"))]
    (di / "RECORD").write_text("".join(f"{r},,\n" for r in rows))


def make_wheel(out: Path, name: str, version: str, files: dict[str, str]) -> Path:
    """A spec-conformant pure wheel holding ``files`` (pip installs it like any other)."""
    return write_wheel(out, name, version, {k: v.encode() for k, v in files.items()})


def _venv_with_pip(prefix: Path) -> Path:
    """A venv whose pip comes from the interpreter's bundled wheel (uv installs it in a blink)."""
    import ensurepip

    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(prefix)], check=True)
    bundled = next((Path(ensurepip.__file__).parent / "_bundled").glob("pip-*.whl"))
    uv = Path(sys.executable).parent / "uv"
    subprocess.run(
        [
            str(uv),
            "pip",
            "install",
            "-q",
            "--offline",
            "--no-index",
            "--python",
            str(prefix / "bin" / "python"),
            str(bundled),
        ],
        check=True,
    )
    return prefix / "bin" / "python"


def _so(path: Path, tmp: Path, torch_lib: Path | None = None) -> None:
    """A real ELF .so; with ``torch_lib`` it links that dir's libc10.so, as torch ops do."""
    path.parent.mkdir(parents=True, exist_ok=True)
    src = tmp / f"{path.stem.split('.')[0]}.c"
    if torch_lib is None:
        src.write_text("int ops_ready(void) { return 1; }\n")
        link: list[str] = []
    else:
        src.write_text("int c10_fn(void);\nint ops_ready(void) { return c10_fn(); }\n")
        link = [f"-L{torch_lib}", "-lc10"]
    subprocess.run(
        ["gcc", "-shared", "-fPIC", str(src), *link, "-o", str(path)], check=True, capture_output=True
    )


def _libc10(site: Path, tmp: Path) -> Path:
    """torch/lib/libc10.so, a real shared library with the soname torch's has."""
    lib = site / "torch" / "lib"
    lib.mkdir(parents=True, exist_ok=True)
    (tmp / "c10.c").write_text("int c10_fn(void) { return 1; }\n")
    subprocess.run(
        [
            "gcc",
            "-shared",
            "-fPIC",
            "-Wl,-soname,libc10.so",
            str(tmp / "c10.c"),
            "-o",
            str(lib / "libc10.so"),
        ],
        check=True,
        capture_output=True,
    )
    return lib


def _torch_files(site: Path, version: str, cuda: str) -> list[str]:
    (site / "torch").mkdir()
    (site / "torch" / "__init__.py").write_text(
        "from torch import cuda, version\n__version__ = version.__version__\n"
    )
    (site / "torch" / "version.py").write_text(f"__version__ = '{version}'\ncuda = '{cuda}'\n")
    (site / "torch" / "cuda.py").write_text("def is_available():\n    return False\n")
    return ["torch/__init__.py", "torch/version.py", "torch/cuda.py"]


@pytest.fixture
def seed_env(tmp_path: Path) -> tuple[Path, Path]:
    """The laptop env of SCENARIOS A after step 3, as pip left it: torch 1.10.0+cu113 and friends."""
    prefix = tmp_path / "radar"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(prefix)], check=True)
    site = next((prefix / "lib").glob("python3.*/site-packages"))
    _dist(site, "torch", "1.10.0+cu113", [*_torch_files(site, "1.10.0+cu113", "11.3"), "torch/lib/libc10.so"])
    tlib = _libc10(site, tmp_path)
    _so(site / "mmcv" / "_ext.cpython-37m-x86_64-linux-gnu.so", tmp_path, tlib)
    _dist(site, "mmcv-full", "1.4.0", ["mmcv/_ext.cpython-37m-x86_64-linux-gnu.so"])
    _dist(site, "mmdet", "2.19.0", ["mmdet/__init__.py"])
    _dist(site, "mmsegmentation", "0.20.0", ["mmseg/__init__.py"])
    # numpy ships compiled code too, but links neither torch nor CUDA: it must not be rebuilt
    _so(site / "numpy" / "core" / "_multiarray_umath.cpython-37m-x86_64-linux-gnu.so", tmp_path)
    _dist(
        site,
        "numpy",
        "1.19.5",
        ["numpy/__init__.py", "numpy/core/_multiarray_umath.cpython-37m-x86_64-linux-gnu.so"],
    )
    _dist(site, "cupy-cuda113", "10.6.0", ["cupy/__init__.py"])
    _dist(site, "terminaltables", "3.1.10", ["terminaltables.py"])
    # mmdet3d from `pip install -e .` in its clone, ops compiled in-tree
    src = tmp_path / "mmdetection3d"
    _so(src / "mmdet3d" / "ops" / "iou3d" / "iou3d_cuda.cpython-37m-x86_64-linux-gnu.so", tmp_path, tlib)
    _dist(
        site,
        "mmdet3d",
        "0.17.3",
        ["__editable__.mmdet3d-0.17.3.pth"],
        direct_url={"url": src.as_uri(), "dir_info": {"editable": True}},
    )
    return prefix, src


@needs_gcc
def test_seed_server_rebuild_plan(seed_env: tuple[Path, Path], profiles_dir: Path, tmp_path: Path) -> None:
    prefix, src = seed_env
    server = load_profile(profiles_dir / "seed-server.json")
    before = doctor.check_env(prefix, server)
    assert before[0].family == "driver-too-old"

    out = tmp_path / "plan"
    plan = rebuild(prefix, server, out_dir=out, lock=False)
    d = plan.to_dict()
    # cu102 plan: the newest CUDA the server's driver 440.33.01 runs
    assert d["cuda"] == "10.2" and d["resolution"]["packages"]["torch"] == "1.10.0+cu102"
    assert d["changes"]["torch"] == {"old": "1.10.0+cu113", "new": "1.10.0+cu102"}
    assert d["changes"]["cupy-cuda102"]["new"] == "10.6.0"
    assert "mmcv-full" in d["changes"]  # its ops were compiled for +cu113: reinstall the cu102 build
    mmcv_step = next(s for s in d["steps"] if s["package"] == "mmcv-full")
    assert "_ext.cpython-37m-x86_64-linux-gnu.so links libc10.so" in mmcv_step["reason"]  # the ELF evidence
    assert plan.current.links.keys() == {"mmcv-full", "mmdet3d"}  # numpy's .so links neither torch nor CUDA
    # only what must change: pure-Python pins stay as they are
    for same in ("mmdet", "mmsegmentation", "numpy", "terminaltables"):
        assert same not in d["changes"]
    build = [s for s in d["steps"] if s["kind"] == "build"]
    assert [s["package"] for s in build] == ["mmdet3d"]
    env = build[0]["env"]
    assert env["FORCE_CUDA"] == "1" and env["TORCH_CUDA_ARCH_LIST"] == "7.0"
    # nvcc 10.1 at /usr/local/cuda would link libcudart.so.10.1, absent at run time: need a 10.2 toolkit
    assert env["CUDA_HOME"] == "/usr/local/cuda-10.2" and d["toolkit_found"] is False
    assert "libcudart.so.10.1" in build[0]["reason"]
    assert d["gcc_max"] == 8 and "CC" not in env  # gcc 7.5 is accepted by nvcc 10.2
    assert build[0]["command"][-2:] == ["-e", str(src)]

    script = (out / "rebuild.sh").read_text()
    assert sorted(p.name for p in out.iterdir()) == [".envbuild-output", "plan.json", "rebuild.sh",
                                                     "resolution.json"]
    assert "TORCH_CUDA_ARCH_LIST='7.0'" in script and "FORCE_CUDA='1'" in script
    assert "torch==1.10.0+cu102" in script and "cupy-cuda113" in script
    assert "https://download.pytorch.org/whl/cu102" in script
    assert 'nvcc_release" != 10.2' in script and "(( gcc_major > 8 ))" in script
    assert script.count("# why: ") == len(d["steps"]) and script.count("echo '[") == len(d["steps"])
    subprocess.run([str(SHELLCHECK), str(out / "rebuild.sh")], check=True)
    assert json.loads((out / "plan.json").read_text())["changes"] == d["changes"]


@needs_gcc
def test_rebuild_sh_refuses_a_stale_nvcc_before_changing_anything(
    seed_env: tuple[Path, Path], profiles_dir: Path, tmp_path: Path
) -> None:
    prefix, _ = seed_env
    plan = rebuild(
        prefix, load_profile(profiles_dir / "seed-server.json"), out_dir=tmp_path / "p", lock=False
    )
    site = next((prefix / "lib").glob("python3.*/site-packages"))
    before = sorted(p.name for p in site.iterdir())
    # this machine's toolkit (nvcc 13, or none) is not the CUDA 10.2 the ops must be built with
    env = {**os.environ, "PREFIX": str(prefix), "CUDA_HOME": "/usr/local/cuda"}
    out = subprocess.run(
        ["bash", str(Path(plan.out_dir or "") / "rebuild.sh")], env=env, capture_output=True, text=True
    )
    assert out.returncode == 1
    assert "need nvcc 10.2 at CUDA_HOME=/usr/local/cuda" in out.stderr
    assert "--toolkit --silent" in out.stderr  # how to get one without touching the driver
    assert sorted(p.name for p in site.iterdir()) == before


def test_rebuild_sh_runs_offline_and_doctor_agrees(profiles_dir: Path, tmp_path: Path) -> None:
    """No source builds: torch and CuPy move to cu102 from a local wheelhouse; doctor then agrees."""
    prefix = tmp_path / "env"
    py = _venv_with_pip(prefix)
    wheels = tmp_path / "wheels"
    torch_src = {
        "torch/__init__.py": "from torch import cuda, version\n__version__ = version.__version__\n",
        "torch/cuda.py": "def is_available():\n    return False\n",
    }
    old = [
        make_wheel(
            wheels / "old",
            "torch",
            "1.10.0+cu113",
            {**torch_src, "torch/version.py": "__version__ = '1.10.0+cu113'\ncuda = '11.3'\n"},
        ),
        make_wheel(wheels / "old", "cupy-cuda113", "10.6.0", {"cupy/__init__.py": "CUDA = '11.3'\n"}),
        make_wheel(wheels / "old", "numpy", "1.19.5", {"numpy/__init__.py": "__version__ = '1.19.5'\n"}),
    ]
    subprocess.run(
        [str(py), "-m", "pip", "install", "-q", "--no-index", "--no-deps", *map(str, old)],
        check=True,
        env={**os.environ, "PIP_CONFIG_FILE": os.devnull},
    )
    server = load_profile(profiles_dir / "seed-server.json")
    assert doctor.check_env(prefix, server)[0].family == "driver-too-old"

    plan = rebuild(prefix, server, out_dir=tmp_path / "p", lock=False)
    assert not [s for s in plan.steps if s.kind == "build"]
    house = wheels / "house"
    make_wheel(
        house,
        "torch",
        "1.10.0+cu102",
        {**torch_src, "torch/version.py": "__version__ = '1.10.0+cu102'\ncuda = '10.2'\n"},
    )
    make_wheel(house, "cupy-cuda102", "10.6.0", {"cupy/__init__.py": "CUDA = '10.2'\n"})
    env = {
        **os.environ,
        "PREFIX": str(prefix),
        "ENVBUILD_WHEELHOUSE": str(house),
        "PIP_CONFIG_FILE": os.devnull,
    }
    out = subprocess.run(
        ["bash", str(tmp_path / "p" / "rebuild.sh")], env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "torch 1.10.0+cu102 CUDA 10.2" in out.stdout
    assert "[1/3] uninstall cupy-cuda113" in out.stdout
    after = doctor.check_env(prefix, server)
    # the driver now runs torch's CUDA; what remains is the honest note that building ops there
    # would still need a CUDA 10.2 toolkit (the server only has nvcc 10.1)
    assert [(f.family, f.severity) for f in after] == [("cuda-toolkit-mismatch", "warning")], after
    listed = subprocess.run(
        [str(py), "-m", "pip", "list", "--format=json"],
        capture_output=True,
        text=True,
        env={**os.environ, "PIP_CONFIG_FILE": os.devnull},
        check=True,
    )
    names = {p["name"].lower(): p["version"] for p in json.loads(listed.stdout)}
    assert names["torch"] == "1.10.0+cu102" and "cupy-cuda113" not in names and names["numpy"] == "1.19.5"


def test_cli_rebuild_json_and_bad_input(profiles_dir: Path, tmp_path: Path) -> None:
    prefix = tmp_path / "env"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(prefix)], check=True)
    site = next((prefix / "lib").glob("python3.*/site-packages"))
    _dist(site, "torch", "1.10.0+cu113", _torch_files(site, "1.10.0+cu113", "11.3"))
    target = profiles_dir / "seed-server.json"
    out = subprocess.run(
        [
            *ENVBUILD,
            "rebuild",
            "--prefix",
            str(prefix),
            "--target",
            str(target),
            "-o",
            str(tmp_path / "o"),
            "--no-lock",
            "--json",
        ],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["changes"]["torch"]["new"] == "1.10.0+cu102" and data["out_dir"] == str(tmp_path / "o")
    # the CLI gives the resolver today's date, so the knowledge the answer used carries its age
    know = data["resolution"]["knowledge"]
    assert know["today"] == datetime.date.today().isoformat() and isinstance(know["age_days"], int)
    # neither an env nor a lock: exit 2, nothing written
    bad = subprocess.run(
        [
            *ENVBUILD,
            "rebuild",
            str(tmp_path),
            "--target",
            str(target),
            "-o",
            str(tmp_path / "x"),
            "--no-lock",
            "--json",
        ],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and not (tmp_path / "x").exists()
    assert "envbuild.lock.json" in json.loads(bad.stdout)["message"]
    none = subprocess.run(
        [*ENVBUILD, "rebuild", "--prefix", str(prefix), "--no-lock"], capture_output=True, text=True
    )
    assert none.returncode == 2 and "--target" in none.stderr


def test_rebuild_from_a_lock_directory(profiles_dir: Path, tmp_path: Path) -> None:
    """A lock for the laptop (cu113) re-targeted to the server: same requirements, new pins."""
    from envbuild.lockfile import LOCK_FILE, Lock, TargetPlatform
    from envbuild.resolve import resolve

    laptop = load_profile(profiles_dir / "seed-laptop.json")
    reqs = [
        "torch==1.10.0",
        "mmcv-full==1.4.0",
        "mmdet==2.19.0",
        "mmsegmentation==0.20.0",
        "mmdet3d==0.17.3",
        "cupy",
        "numpy",
    ]
    res = resolve(reqs, laptop)
    assert res.ok and res.packages["torch"].endswith("+cu113")
    lk = Lock(
        name="radar",
        manager="venv",
        python=res.python,
        platform=TargetPlatform.from_dict({"os": "linux"}),
        target=laptop,
        resolution=res,
        artifacts=(),
        spec={"requirements": reqs},
    )
    lock_dir = tmp_path / "lockfiles" / "radar"
    lock_dir.mkdir(parents=True)
    (lock_dir / LOCK_FILE).write_text(lk.dumps())
    plan = rebuild(
        lock_dir, load_profile(profiles_dir / "seed-server.json"), out_dir=tmp_path / "o", lock=False
    )
    d = plan.to_dict()
    assert d["source_kind"] == "lock" and d["requirements"] == reqs
    assert d["changes"]["torch"] == {"old": res.packages["torch"], "new": "1.10.0+cu102"}
    assert [s["package"] for s in d["steps"] if s["kind"] == "build"] == ["mmdet3d"]
    script = (tmp_path / "o" / "rebuild.sh").read_text()
    assert 'PREFIX="${PREFIX:?' in script  # a lock names no env: the user says which one
    subprocess.run([str(SHELLCHECK), str(tmp_path / "o" / "rebuild.sh")], check=True)


def test_script_values_are_quoted(seed_env: tuple[Path, Path], profiles_dir: Path, tmp_path: Path) -> None:
    prefix, _ = seed_env
    weird = tmp_path / "it's $(touch pwned) dir"
    shutil.move(str(prefix), str(weird))
    rebuild(weird, load_profile(profiles_dir / "seed-server.json"), out_dir=tmp_path / "o", lock=False)
    script = tmp_path / "o" / "rebuild.sh"
    subprocess.run([str(SHELLCHECK), str(script)], check=True)
    # the default PREFIX the script computes is the path itself, and nothing in it ran
    head = "".join(ln for ln in script.read_text().splitlines(keepends=True) if "prefix" in ln.lower()[:16])
    out = subprocess.run(
        ["bash", "-c", head + 'printf %s "$PREFIX"'],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={k: v for k, v in os.environ.items() if k != "PREFIX"},
    )
    assert out.stdout == str(weird)
    assert not (tmp_path / "pwned").exists()


def test_rebuild_writes_the_new_lock(seed_env: tuple[Path, Path], profiles_dir: Path, tmp_path: Path) -> None:
    """With mirrors (PyPI/PyTorch/OpenMMLab stand-ins on 127.0.0.1) rebuild also locks for the target."""
    from pypi_fixture import CP37, Index, make_sdist, serving
    from pypi_fixture import make_wheel as index_wheel

    from envbuild.lockfile import load_lock
    from envbuild.resolve import resolve

    server = load_profile(profiles_dir / "seed-server.json")
    idx = Index(tmp_path / "www")
    d = idx.file("x").parent
    res0 = resolve(["mmdet3d==0.17.3"], server)  # what mmdet3d's source build will need on the server
    build_reqs = {str(r).split(";")[0] for sb in res0.source_builds for r in sb.requires}
    pypi = [
        index_wheel(d, "numpy", "1.19.5", tag="cp37-cp37m-manylinux2010_x86_64"),
        index_wheel(d, "typing_extensions", "4.7.1"),
        index_wheel(d, "fastrlock", "0.8.2", tag=CP37),
        index_wheel(d, "addict", "2.4.0"),
        index_wheel(d, "mmdet", "2.19.0", requires=["numpy"]),
        index_wheel(d, "mmsegmentation", "0.20.0", requires=["numpy"]),
        index_wheel(d, "cupy_cuda102", "10.6.0", tag=CP37, requires=["numpy<1.25,>=1.18", "fastrlock>=0.5"]),
        make_sdist(d, "mmdet3d", "0.17.3", requires=["numpy<1.20"]),
    ]
    for req in sorted(build_reqs - {"numpy<1.20.0"}):
        r = Requirement(req)
        pin = next((s.version for s in r.specifier if s.operator in ("==", ">=")), "1.0.0")
        pypi.append(index_wheel(d, r.name.replace("-", "_"), pin))
    idx.add("simple", pypi)
    idx.add(
        "whl/cu102",
        [
            index_wheel(
                d, "torch", "1.10.0+cu102", tag="cp37-cp37m-linux_x86_64", requires=["typing-extensions"]
            )
        ],
    )
    idx.add_find_links(
        "mmcv/dist/cu102/torch1.10/index.html",
        [index_wheel(d, "mmcv_full", "1.4.0", tag="cp37-cp37m-manylinux1_x86_64", requires=["addict"])],
    )
    prefix, _ = seed_env
    with serving(idx) as url:
        out = subprocess.run(
            [
                *ENVBUILD,
                "rebuild",
                "--prefix",
                str(prefix),
                "--target",
                str(profiles_dir / "seed-server.json"),
                "-o",
                str(tmp_path / "o"),
                "--index-url",
                f"{url}/simple",
                "--pytorch-index",
                f"{url}/whl",
                "--openmmlab-index",
                f"{url}/mmcv/dist",
                "--json",
            ],
            capture_output=True,
            text=True,
        )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["lock_dir"] == str(tmp_path / "o" / "lock")
    lk = load_lock(tmp_path / "o" / "lock")
    pins = {a.name: a.version for a in lk.artifacts}
    assert (
        pins["torch"] == "1.10.0+cu102" and pins["cupy-cuda102"] == "10.6.0" and pins["mmcv-full"] == "1.4.0"
    )
    assert [a.name for a in lk.source_builds] == ["mmdet3d"]
    assert all(a.sha256 for a in lk.artifacts if a.kind in ("wheel", "sdist"))
    assert lk.target.hostname == "lab-server"
    # the script installs what the lock pinned
    script = (tmp_path / "o" / "rebuild.sh").read_text()
    assert f"{url}/whl/cu102" in script and "torch==1.10.0+cu102" in script
    # ... and checks each staged wheel against the lock's sha256 before it changes anything
    torch_sha = next(a.sha256 for a in lk.artifacts if a.name == "torch")
    assert f"fetch_wheel torch 1.10.0+cu102 {torch_sha}" in script


def test_failed_lock_leaves_no_output(
    seed_env: tuple[Path, Path], profiles_dir: Path, tmp_path: Path
) -> None:
    from envbuild.errors import EnvbuildError

    prefix, _ = seed_env
    dead = "http://127.0.0.1:9"  # discard port: nothing listens
    indexes = {"pypi": f"{dead}/simple", "pytorch": f"{dead}/whl", "openmmlab": f"{dead}/mmcv/dist"}
    with pytest.raises(EnvbuildError):
        rebuild(
            prefix, load_profile(profiles_dir / "seed-server.json"), out_dir=tmp_path / "o", indexes=indexes
        )
    assert not (tmp_path / "o").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".o.")]


@needs_gcc
def test_env_that_already_fits_needs_no_change(
    seed_env: tuple[Path, Path], profiles_dir: Path, tmp_path: Path
) -> None:
    """The cu113 env re-targeted to the laptop it was built on: nothing to do, and rebuild.sh only checks."""
    prefix, _ = seed_env
    plan = rebuild(
        prefix, load_profile(profiles_dir / "seed-laptop.json"), out_dir=tmp_path / "o", lock=False
    )
    assert plan.steps == [] and plan.cuda == "11.3"
    assert any(n.startswith("Nothing must change") for n in plan.notes)
    script = (tmp_path / "o" / "rebuild.sh").read_text()
    assert " -m pip " not in script and "nvcc_release" not in script
    subprocess.run([str(SHELLCHECK), str(tmp_path / "o" / "rebuild.sh")], check=True)


def test_cli_target_described_by_flags(tmp_path: Path) -> None:
    """No profile file: the server described by --driver/--gpu/--cuda-toolkit/--gcc/--python."""
    prefix = tmp_path / "env"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(prefix)], check=True)
    site = next((prefix / "lib").glob("python3.*/site-packages"))
    _dist(site, "torch", "1.10.0+cu113", _torch_files(site, "1.10.0+cu113", "11.3"))
    args = [
        "--driver",
        "440.33.01",
        "--gpu",
        "Tesla V100-SXM2-32GB",
        "--cuda-toolkit",
        "10.1",
        "--gcc",
        "7.5",
        "--python",
        "3.7",
    ]
    out = subprocess.run(
        [
            *ENVBUILD,
            "rebuild",
            "--prefix",
            str(prefix),
            *args,
            "-o",
            str(tmp_path / "o"),
            "--no-lock",
            "--json",
        ],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["changes"]["torch"]["new"] == "1.10.0+cu102" and data["torch_cuda_arch_list"] == "7.0"
    assert data["gcc_max"] == 8 and data["toolkit_found"] is False


@pytest.mark.parametrize(
    ("installed", "driver", "strict", "change"),
    [
        ("2.6.0", "550.54.14", False, None),  # the plain PyPI wheel already is the CUDA 12.4 build
        ("2.6.0+cu124", "550.54.14", False, None),  # the index's cu124 wheel: the same build as the PyPI pin
        # a CUDA 12.2 driver runs the CUDA 12.4 wheel through minor-version compatibility: nothing changes
        ("2.6.0", "535.104.05", False, None),
        # the strict rule (--native-driver-only): the cu118 build from the index
        ("2.6.0", "535.104.05", True, "2.6.0+cu118"),
    ],
)
def test_pypi_torch_without_local_label(
    tmp_path: Path, installed: str, driver: str, strict: bool, change: str | None
) -> None:
    """An installed PyPI torch has no +cuXXX label; its CUDA comes from torch/version.py."""
    from envbuild.target import make_target

    prefix = tmp_path / "env"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(prefix)], check=True)
    site = next((prefix / "lib").glob("python3.*/site-packages"))
    _dist(site, "torch", installed, _torch_files(site, installed, "12.4"))
    target = make_target(None, python=f"{sys.version_info[0]}.{sys.version_info[1]}", driver=driver,
                         gpu="NVIDIA GeForce RTX 4090")
    plan = rebuild(prefix, target, out_dir=tmp_path / "o", lock=False, native_driver_only=strict)
    assert plan.current.torch_cuda == "12.4"
    if change is None:
        assert plan.resolution.packages["torch"] == "2.6.0" and plan.resolution.index_urls == []
        assert plan.steps == [] and any(n.startswith("Nothing must change") for n in plan.notes)
    else:
        step = next(s for s in plan.steps if s.package == "torch")
        assert (step.old, step.new) == (installed, change) and "built for CUDA 12.4" in step.reason
        assert plan.index_args == ["--extra-index-url", "https://download.pytorch.org/whl/cu118"]


# --- rebuild.sh is transactional ------------------------------------------------------------------

_TORCH_SRC = {
    "torch/__init__.py": "from torch import cuda, version\n__version__ = version.__version__\n",
    "torch/cuda.py": "def is_available():\n    return False\n",
}


def _pip_env(tmp_path: Path, profiles_dir: Path) -> tuple[Path, Path, Path, dict[str, str]]:
    """A real pip venv with torch cu113 + CuPy, its rebuild plan for the server, and a wheelhouse."""
    prefix = tmp_path / "env"
    py = _venv_with_pip(prefix)
    old = [
        make_wheel(
            tmp_path / "old",
            "torch",
            "1.10.0+cu113",
            {**_TORCH_SRC, "torch/version.py": "__version__ = '1.10.0+cu113'\ncuda = '11.3'\n"},
        ),
        make_wheel(tmp_path / "old", "cupy-cuda113", "10.6.0", {"cupy/__init__.py": "CUDA = '11.3'\n"}),
    ]
    pip_env = {**os.environ, "PIP_CONFIG_FILE": os.devnull}
    subprocess.run(
        [str(py), "-m", "pip", "install", "-q", "--no-index", "--no-deps", *map(str, old)],
        check=True,
        env=pip_env,
    )
    rebuild(prefix, load_profile(profiles_dir / "seed-server.json"), out_dir=tmp_path / "p", lock=False)
    house = tmp_path / "house"
    make_wheel(
        house,
        "torch",
        "1.10.0+cu102",
        {**_TORCH_SRC, "torch/version.py": "__version__ = '1.10.0+cu102'\ncuda = '10.2'\n"},
    )
    make_wheel(house, "cupy-cuda102", "10.6.0", {"cupy/__init__.py": "CUDA = '10.2'\n"})
    env = {**pip_env, "PREFIX": str(prefix), "ENVBUILD_WHEELHOUSE": str(house)}
    return prefix, py, house, env


def _torch_of(py: Path) -> str:
    out = subprocess.run(
        [str(py), "-c", "import torch; print(torch.__version__)"], capture_output=True, text=True, check=True
    )
    return out.stdout.strip()


def _run(script: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(script), *args], env=env, capture_output=True, text=True)


def test_rebuild_sh_with_a_wheel_missing_changes_nothing(profiles_dir: Path, tmp_path: Path) -> None:
    prefix, py, house, env = _pip_env(tmp_path, profiles_dir)
    next(house.glob("torch-*.whl")).unlink()  # the wheelhouse lacks the new torch
    site = next((prefix / "lib").glob("python3.*/site-packages"))
    before = sorted(p.name for p in site.iterdir())
    out = _run(tmp_path / "p" / "rebuild.sh", env)
    assert out.returncode == 1, out.stdout + out.stderr
    assert "the wheel torch==1.10.0+cu102 is not available in " + str(house) in out.stderr
    assert "nothing was changed" in out.stderr
    assert "uninstall" not in out.stdout  # stopped before the first step, not half-way (cupy first)
    assert sorted(p.name for p in site.iterdir()) == before and _torch_of(py) == "1.10.0+cu113"
    assert not (tmp_path / "env.envbuild-new").exists() and not (tmp_path / "env.envbuild-old").exists()


def test_rebuild_sh_checks_the_lock_hash_of_each_wheel(profiles_dir: Path, tmp_path: Path) -> None:
    """A wheel whose sha256 the lock does not list is refused before anything changes."""
    from envbuild.rebuild import render_script

    prefix, py, _, env = _pip_env(tmp_path, profiles_dir)
    plan = rebuild(
        prefix, load_profile(profiles_dir / "seed-server.json"), out_dir=tmp_path / "q", lock=False
    )
    script = tmp_path / "q" / "rebuild.sh"
    script.write_text(render_script(plan, {"torch": ["0" * 64]}))
    out = _run(script, env)
    assert out.returncode == 1 and "which the lock does not list for torch==1.10.0+cu102" in out.stderr
    assert _torch_of(py) == "1.10.0+cu113"


def test_rebuild_sh_swaps_keeps_the_old_env_and_rolls_back(profiles_dir: Path, tmp_path: Path) -> None:
    prefix, py, _, env = _pip_env(tmp_path, profiles_dir)
    script = tmp_path / "p" / "rebuild.sh"
    out = _run(script, env)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "verifying the new env" in out.stdout and "--rollback" in out.stdout
    assert _torch_of(py) == "1.10.0+cu102"
    old = tmp_path / "env.envbuild-old"
    assert _torch_of(old / "bin" / "python") == "1.10.0+cu113"
    assert not (tmp_path / "env.envbuild-new").exists()
    # pip's own entry point in the swapped env names the env's path, not the copy's
    assert (prefix / "bin" / "pip").read_text().splitlines()[0] == f"#!{prefix}/bin/python"
    back = _run(script, env, "--rollback")
    assert back.returncode == 0, back.stderr
    assert _torch_of(py) == "1.10.0+cu113" and not old.exists()


def test_rebuild_sh_verify_failure_leaves_the_old_env(profiles_dir: Path, tmp_path: Path) -> None:
    prefix, py, _, env = _pip_env(tmp_path, profiles_dir)
    out = _run(tmp_path / "p" / "rebuild.sh", {**env, "ENVBUILD_VERIFY": 'test "$PREFIX" = /nowhere'})
    assert out.returncode != 0
    assert "[1/3] uninstall cupy-cuda113" in out.stdout  # it did build the new env ...
    assert "the old env at " + str(prefix) + " is unchanged" in out.stderr  # ... and threw it away
    assert _torch_of(py) == "1.10.0+cu113"
    assert not (tmp_path / "env.envbuild-new").exists() and not (tmp_path / "env.envbuild-old").exists()


# --- no None on a user-facing line ------------------------------------------------------------------


def test_cpu_target_plan_names_no_missing_fact(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A CPU env re-targeted to a CPU machine: no 'CUDA None', 'nvcc None accepts <= None'."""
    import re as _re

    monkeypatch.setattr(doctor.report, "STRICT_TEXT", True)
    prefix = tmp_path / "env"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(prefix)], check=True)
    site = next((prefix / "lib").glob("python3.*/site-packages"))
    _dist(site, "torch", "2.1.0+cpu", _torch_files(site, "2.1.0+cpu", "None"))
    (site / "torch" / "version.py").write_text("__version__ = '2.1.0+cpu'\ncuda = None\n")
    _dist(site, "numpy", "1.26.4", ["numpy/__init__.py"])
    py = f"{sys.version_info[0]}.{sys.version_info[1]}"
    out = subprocess.run(
        [
            *ENVBUILD,
            "rebuild",
            "--prefix",
            str(prefix),
            "--python",
            py,
            "-o",
            str(tmp_path / "o"),
            "--no-lock",
        ],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    assert "CPU target" in out.stdout
    script = (tmp_path / "o" / "rebuild.sh").read_text()
    plan = json.loads((tmp_path / "o" / "plan.json").read_text())
    texts = [out.stdout, script, *plan["notes"], *(s["reason"] for s in plan["steps"])]
    assert not [t for t in texts if _re.search(r"\bNone\b", t)], texts
    subprocess.run([str(SHELLCHECK), str(tmp_path / "o" / "rebuild.sh")], check=True)
