"""Benchmark: ``envbuild fetch`` vs ``pip download -r requirements.txt`` on the same lock, cold caches.

Needs PyPI.  ``envbuild lock`` pins the closure of REQUIREMENTS (~30 real wheels) for the
host's Python on manylinux x86_64 (envbuild.lock.json + hashed requirements.txt); then both
tools download that lock into fresh directories with no cache, in the same run.

    .venv/bin/python bench/bench_fetch.py [--rounds 1] [--jobs 8] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# Small-to-medium wheels (C extensions: numpy, pyyaml, markupsafe, wrapt); closure ~30 files.
# numpy 2.2.6 is the last with manylinux2014 wheels (the lock targets manylinux_2_17).
REQUIREMENTS = [
    "requests", "rich", "click", "jinja2", "pyyaml", "python-dateutil", "pytz", "attrs", "packaging",
    "pytest", "six", "numpy==2.2.6", "typing-extensions", "tomli", "filelock", "platformdirs", "wrapt",
    "tqdm", "decorator",
]
INDEX = "https://pypi.org/simple"
ENV = {**os.environ, "PIP_CONFIG_FILE": os.devnull, "PIP_DISABLE_PIP_VERSION_CHECK": "1",
       "PIP_NO_CACHE_DIR": "1"}


def make_lock(work: Path) -> Path:
    """``envbuild lock`` of REQUIREMENTS for the host's Python (CPU target): the lock both tools use."""
    py = ".".join(platform.python_version_tuple()[:2])
    out = work / "lockfiles" / "bench"
    subprocess.run([sys.executable, "-m", "envbuild", "lock", *REQUIREMENTS, "--cpu", "--python", py,
                    "--manager", "venv", "--name", "bench", "--index-url", INDEX, "-o", str(out), "--json"],
                   check=True, env=ENV, stdout=subprocess.DEVNULL)
    return out


def timed(cmd: list[str]) -> tuple[float, subprocess.CompletedProcess[str]]:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=ENV, check=False)
    dt = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{proc.stderr[-2000:]}")
    return dt, proc


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--jobs", type=int, default=8)
    ap.add_argument("--keep", type=Path, help="keep the work directory here")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-fetch-"))
    try:
        lock = make_lock(work)
        arts = [a for a in json.loads((lock / "envbuild.lock.json").read_text())["artifacts"]]
        print(f"lock: {len(arts)} wheels from PyPI ({', '.join(a['name'] for a in arts)})")
        results = []
        for r in range(args.rounds):
            cache = work / f"cache{r}"
            dest = work / f"pipdl{r}"
            # envbuild first: if a CDN edge warms up, pip (second) gets the benefit, not us.
            t_env, proc = timed([sys.executable, "-m", "envbuild", "fetch", str(lock), "--cache", str(cache),
                                 "--jobs", str(args.jobs), "--json"])
            summary = json.loads(proc.stdout)
            t_pip, _ = timed([sys.executable, "-m", "pip", "download", "--no-cache-dir", "-r",
                              str(lock / "requirements.txt"), "-d", str(dest)])
            nbytes = summary["downloaded_bytes"]
            pip_bytes = sum(p.stat().st_size for p in dest.iterdir())
            same = summary["downloaded"] == len(arts) == len(list(dest.iterdir()))
            assert same, "both tools fetch the same files"
            results.append((t_env, t_pip, nbytes, pip_bytes))
            print(f"round {r + 1}: envbuild fetch {t_env:6.2f} s ({nbytes / 1e6 / t_env:6.1f} MB/s) | "
                  f"pip download {t_pip:6.2f} s ({pip_bytes / 1e6 / t_pip:6.1f} MB/s) | "
                  f"{len(arts)} files, {nbytes / 1e6:.1f} MB | ratio {t_pip / t_env:.2f}x")
        best_env = min(r[0] for r in results)
        best_pip = min(r[1] for r in results)
        print(f"summary: files={len(arts)} MB={results[0][2] / 1e6:.1f} envbuild={best_env:.2f}s "
              f"pip={best_pip:.2f}s ratio={best_pip / best_env:.2f}x "
              f"envbuild_MBps={results[0][2] / 1e6 / best_env:.1f} "
              f"pip_MBps={results[0][3] / 1e6 / best_pip:.1f}")
    finally:
        if args.keep:
            shutil.copytree(work, args.keep, dirs_exist_ok=True)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
