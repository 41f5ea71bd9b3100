"""Benchmark: the offline install of one bundle with uv vs with pip, same files, same run.

Needs PyPI once (``envbuild plan --offline`` fetches the example's lock into a bundle; examples/modern
is torch 2.x + CuPy, ~3.2 GB).  Then, with the network no longer used, the bundle's
``install-offline.sh`` runs into fresh environments with ``ENVBUILD_INSTALLER=uv`` (the bundle's
uv wheel) and ``ENVBUILD_INSTALLER=pip`` (pip's fallback path), alternating the order each round.
The whole script is timed (cache check + venv + install + verify.sh, what a user waits for) and,
separately, the install step alone: the same hash-checked ``--no-deps --no-index`` install of the
lock's requirements.txt from the bundle with each tool into a fresh venv.

    .venv/bin/python bench/bench_install.py [--example modern|cpu] [--rounds 1] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "PIP_CONFIG_FILE": os.devnull, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}


def run(cmd: list[str], *, env: dict[str, str] | None = None, cwd: Path | None = None) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env or ENV, cwd=cwd, check=False)
    dt = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{proc.stdout[-1500:]}\n{proc.stderr[-2500:]}")
    return dt


def python_for(version: str) -> str:
    """An interpreter of the lock's Python on this machine (the 'target' here)."""
    for cand in (shutil.which(f"python{version}"), *map(str, sorted(Path("/root/.pyenv/versions").glob(
            f"{version}.*/bin/python{version}")))):
        if cand and Path(cand).exists():
            return cand
    sys.exit(f"no Python {version} on this machine")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--example", default="modern", help="examples/NAME to bundle (default modern)")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--keep", type=Path, help="work directory to keep (reused: the bundle is fetched once)")
    args = ap.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="bench-install-"))
    work.mkdir(parents=True, exist_ok=True)
    spec = ROOT / "examples" / args.example / "envbuild.toml"
    out = work / "out"
    t_plan = 0.0
    if not (out / "plan.json").exists():
        t_plan = run([sys.executable, "-m", "envbuild", "plan", "--spec", str(spec), "-o", str(out),
                      "--offline", "--json"])
    plan = json.loads((out / "plan.json").read_text())
    bundle = out / Path(plan["bundle"]).name
    top = work / "server"
    if not (top / "install-offline.sh").exists():
        with tarfile.open(bundle) as tf:
            tf.extractall(work / "unpacked", filter="data")
        shutil.rmtree(top, ignore_errors=True)
        next((work / "unpacked").iterdir()).rename(top)
    lock = json.loads(next(top.glob("lockfiles/*/envbuild.lock.json")).read_text())
    pyver = lock["python"]
    base_py = python_for(pyver)
    cache = top / "offline_cache"
    uv_whl = sorted((cache / "tools").glob("uv-*.whl"))
    if not uv_whl:
        sys.exit("the bundle has no tools/uv-*.whl: fetch found no uv wheel for the target")
    files = [p for p in cache.rglob("*") if p.is_file()]
    size = sum(p.stat().st_size for p in files)
    n_wheels = len(list((cache / "wheels").glob("*.whl")))
    # The uv binary out of the bundle's wheel, for the install-step comparison.
    import zipfile

    uv_bin = work / "uv"
    with zipfile.ZipFile(uv_whl[0]) as zf:
        uv_bin.write_bytes(zf.read(next(n for n in zf.namelist() if n.endswith(".data/scripts/uv"))))
    uv_bin.chmod(0o755)
    reqs = work / "requirements.txt"
    lockdir = next(top.glob("lockfiles/*"))
    reqs.write_text("".join(ln for ln in (lockdir / "requirements.txt").read_text().splitlines(True)
                            if not ln.startswith("--")))
    for p in files:  # read every file once so both tools start from a warm page cache
        with p.open("rb") as fh:
            while fh.read(1 << 24):
                pass

    script: dict[str, list[float]] = {"uv": [], "pip": []}
    step: dict[str, list[float]] = {"uv": [], "pip": []}
    for r in range(args.rounds):
        order = ["uv", "pip"] if r % 2 == 0 else ["pip", "uv"]
        for tool in order:
            prefix = work / f"env-{tool}"
            shutil.rmtree(prefix, ignore_errors=True)
            env = {**ENV, "ENVBUILD_INSTALLER": tool, "PYTHON": base_py}
            script[tool].append(run(["bash", str(top / "install-offline.sh"), "--prefix", str(prefix)],
                                    env=env, cwd=top))
            shutil.rmtree(prefix)
            venv = work / f"venv-{tool}"
            shutil.rmtree(venv, ignore_errors=True)
            run([base_py, "-m", "venv", str(venv)])
            common = ["--no-index", "--find-links", str(cache / "wheels"), "--require-hashes", "--no-deps",
                      "-r", str(reqs)]
            if tool == "uv":
                cmd = [str(uv_bin), "pip", "install", "--python", str(venv / "bin" / "python"), "--offline",
                       *common]
                # as install-offline.sh does: a fresh cache in the environment, files hard-linked
                tenv = {**ENV, "UV_NO_CONFIG": "1", "UV_CACHE_DIR": str(venv / ".uv-cache"),
                        "UV_LINK_MODE": "hardlink"}
            else:
                cmd = [str(venv / "bin" / "python"), "-m", "pip", "install", "--no-cache-dir", *common]
                tenv = ENV
            step[tool].append(run(cmd, env=tenv))
            shutil.rmtree(venv)

    def best(x: list[float]) -> float:
        return min(x)

    rows = [
        ("install-offline.sh (whole script)", best(script["pip"]), best(script["uv"])),
        ("install step alone (requirements.txt)", best(step["pip"]), best(step["uv"])),
    ]
    print(f"example {args.example}: {n_wheels} wheels, {size / 1e9:.2f} GB bundle cache, Python {pyver}, "
          f"{os.cpu_count()} cores, best of {args.rounds} round(s)"
          + (f"; plan --offline took {t_plan:.0f} s" if t_plan else ""))
    print(f"{'':40} {'pip s':>8} {'uv s':>8} {'pip/uv':>8}")
    for label, p, u in rows:
        print(f"{label:40} {p:8.1f} {u:8.1f} {p / u:7.1f}x")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
