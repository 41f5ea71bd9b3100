"""`envbuild doctor --prefix` on a large env, against a plain stat walk of the same env, in one run.

The env is a real venv built here: 100 installed packages (dist-info with METADATA/RECORD), each
with Python files and real ELF extension modules compiled by gcc (a torch-like package links a
libc10/libtorch of its own, mmcv-like ops link those), one 256 MB shared library, and big data
files (sparse, so the run needs little disk) bringing the env to --size-gb (default 5 GB).

    .venv/bin/python bench/bench_doctor.py [--size-gb 5] [--packages 100] [--rounds 3] [--json]

Prints the wall time of `find ENV -type f -printf '%s'` (every file stat'ed: the floor any env
check that looks at the files pays), of doctor with an empty ELF cache (cold) and with the cache
its first run wrote (warm), and the ratios doctor/walk. doctor reads ELF headers only (never the
data files), in parallel threads, cached by file identity (device, inode, size, mtime).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ENVBUILD = [sys.executable, "-m", "envbuild"]


def _gcc(args: list[str], cwd: Path) -> None:
    subprocess.run(["gcc", *args], cwd=cwd, check=True, capture_output=True)


def _dist(site: Path, name: str, version: str, files: list[str]) -> None:
    di = site / f"{name.replace('-', '_')}-{version}.dist-info"
    di.mkdir()
    (di / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    (di / "INSTALLER").write_text("pip\n")
    rows = [*files, *(f"{di.name}/{x}" for x in ("METADATA", "INSTALLER", "RECORD"))]
    (di / "RECORD").write_text("".join(f"{r},,\n" for r in rows))


def build_env(root: Path, packages: int, size_gb: float) -> Path:
    prefix = root / "env"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(prefix)], check=True)
    site = next((prefix / "lib").glob("python3.*/site-packages"))
    build = root / "build"
    build.mkdir()
    # torch-like: libc10/libtorch with their sonames, one big library, version.py
    tlib = site / "torch" / "lib"
    tlib.mkdir(parents=True)
    (build / "c10.c").write_text("int c10_fn(void) { return 10; }\n")
    _gcc(["-shared", "-fPIC", "-Wl,-soname,libc10.so", "c10.c", "-o", str(tlib / "libc10.so")], build)
    (build / "t.c").write_text("int c10_fn(void);\nint torch_fn(void) { return c10_fn(); }\n")
    _gcc(["-shared", "-fPIC", "-Wl,-soname,libtorch.so", "t.c", f"-L{tlib}", "-lc10", "-Wl,-rpath,$ORIGIN",
          "-o", str(tlib / "libtorch.so")], build)
    pad = build / "pad.bin"
    with open(pad, "wb") as fh:  # 256 MB of real bytes in a section doctor never reads
        chunk = os.urandom(1 << 20)
        for _ in range(256):
            fh.write(chunk)
    (build / "big.c").write_text("int big_fn(void) { return 2; }\n")
    _gcc(["-shared", "-fPIC", "big.c", "-o", "big0.so"], build)
    subprocess.run(["objcopy", "--add-section", f".envbuild_pad={pad}", "big0.so",
                    str(tlib / "libtorch_cuda.so")], cwd=build, check=True)
    pad.unlink()
    (site / "torch" / "__init__.py").write_text("")
    (site / "torch" / "version.py").write_text("__version__ = '2.6.0'\ncuda = '12.4'\n")
    _dist(site, "torch", "2.6.0", ["torch/__init__.py", "torch/version.py"])
    # one extension module per kind, copied (each copy is its own file, inode and cache entry)
    (build / "ext.c").write_text("int ext_fn(void) { return 1; }\n")
    _gcc(["-shared", "-fPIC", "ext.c", "-o", "ext.so"], build)
    (build / "ops.c").write_text("int torch_fn(void);\nint ops(void) { return torch_fn(); }\n")
    _gcc(["-shared", "-fPIC", "ops.c", f"-L{tlib}", "-ltorch", "-o", "ops.so"], build)
    data_files = []
    for i in range(packages - 1):
        name = f"pkg{i:03d}"
        pkg = site / name
        pkg.mkdir()
        files = []
        for j in range(20):
            (pkg / f"mod{j}.py").write_text(f"X = {j}\n" * 50)
            files.append(f"{name}/mod{j}.py")
        for j in range(3):
            so = pkg / f"_ext{j}.cpython-311-x86_64-linux-gnu.so"
            shutil.copyfile(build / ("ops.so" if i % 10 == 0 and j == 0 else "ext.so"), so)
            files.append(f"{name}/{so.name}")
        data = pkg / "data.bin"
        data_files.append(data)
        files.append(f"{name}/data.bin")
        _dist(site, name, "1.0", files)
    # big data files: sparse, to the requested total size
    used = sum(f.stat().st_size for f in prefix.rglob("*") if f.is_file())
    each = max(0, int(size_gb * (1 << 30) - used) // len(data_files))
    for f in data_files:
        with open(f, "wb") as fh:
            fh.truncate(each)
    return prefix


def _time(cmd: list[str], env: dict[str, str] | None = None) -> float:
    """Wall seconds of ``cmd``; CPU seconds (it and its children) are added to _CPU[cmd[0]]."""
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    took = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    _CPU.append((r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime))
    if out.returncode not in (0, 1):
        raise SystemExit(f"{cmd[:4]} failed ({out.returncode}): {out.stderr[-500:]}")
    return took


_CPU: list[float] = []


def _timed(cmd: list[str], rounds: int, env: dict[str, str] | None = None) -> tuple[float, float]:
    """(best wall, best CPU) of ``rounds`` runs: on a shared machine waiting for a core is not the cost."""
    walls, cpus = [], []
    for _ in range(rounds):
        walls.append(_time(cmd, env))
        cpus.append(_CPU[-1])
    return min(walls), min(cpus)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-gb", type=float, default=5.0)
    ap.add_argument("--packages", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-doctor-") as tmp:
        root = Path(tmp)
        prefix = build_env(root, args.packages, args.size_gb)
        files = [f for f in prefix.rglob("*") if f.is_file()]
        size = sum(f.stat().st_size for f in files)
        elfs = sum(1 for f in files if f.name.endswith(".so"))
        walk, walk_cpu = _timed(["find", str(prefix), "-type", "f", "-printf", "%s\n"], args.rounds)
        doctor = [*ENVBUILD, "doctor", "--prefix", str(prefix), "--json"]
        colds = []
        for r in range(args.rounds):  # each cold run gets an empty cache of its own
            env = {**os.environ, "ENVBUILD_CACHE_DIR": str(root / f"cache-cold-{r}")}
            colds.append(_timed(doctor, 1, env))
        cold, cold_cpu = min(c[0] for c in colds), min(c[1] for c in colds)
        warm_env = {**os.environ, "ENVBUILD_CACHE_DIR": str(root / "cache-cold-0")}
        warm, warm_cpu = _timed(doctor, args.rounds, warm_env)
        start, start_cpu = _timed([sys.executable, "-c", "import envbuild.cli"], args.rounds)
        result = {
            "env_gb": round(size / (1 << 30), 2),
            "files": len(files),
            "elf_files": elfs,
            "packages": args.packages,
            "walk_s": round(walk, 3),
            "doctor_cold_s": round(cold, 3),
            "doctor_cold_cpu_s": round(cold_cpu, 3),
            "doctor_warm_s": round(warm, 3),
            "doctor_warm_cpu_s": round(warm_cpu, 3),
            "python_import_envbuild_cli_s": round(start, 3),
            "ratio_cold_to_walk": round(cold / walk, 1),
            "ratio_warm_to_walk": round(warm / walk, 1),
        }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"env: {result['env_gb']} GB, {result['files']} files ({elfs} ELF), {args.packages} packages")
    print(f"{'what':<38}{'wall s':>10}{'CPU s':>10}{'wall x walk':>13}")
    rows = [
        ("find -type f -printf %s (stat walk)", walk, walk_cpu),
        ("envbuild doctor, empty ELF cache", cold, cold_cpu),
        ("envbuild doctor, warm ELF cache", warm, warm_cpu),
        ("python -c 'import envbuild.cli'", start, start_cpu),
    ]
    for what, wall, cpu in rows:
        print(f"{what:<38}{wall:>10.3f}{cpu:>10.3f}{wall / walk:>13.1f}")


if __name__ == "__main__":
    main()
