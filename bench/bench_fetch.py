"""Benchmark: ``envbuild fetch`` vs ``pip download -r requirements.txt`` on the same lock, cold caches.

Needs PyPI.  Builds a lock of ~20-25 real wheels (the full closure of REQUIREMENTS for the
host's Python on manylinux x86_64, resolved once with ``pip install --dry-run --report``),
writes it as an envbuild lock directory (envbuild.lock.json + hashed requirements.txt), then
times both tools into fresh directories with no cache in the same run.

    .venv/bin/python bench/bench_fetch.py [--rounds 1] [--jobs 8] [--keep DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path

from packaging.utils import parse_wheel_filename

# Small-to-medium wheels (one C extension: numpy) whose closure is ~24 files.
REQUIREMENTS = [
    "requests", "rich", "click", "jinja2", "pyyaml", "python-dateutil", "pytz", "attrs", "packaging",
    "pytest", "six", "numpy", "typing-extensions", "tomli", "filelock", "platformdirs", "wrapt",
    "tqdm", "decorator",
]
INDEX = "https://pypi.org/simple"
ENV = {**os.environ, "PIP_CONFIG_FILE": os.devnull, "PIP_DISABLE_PIP_VERSION_CHECK": "1",
       "PIP_NO_CACHE_DIR": "1"}


def resolve(work: Path) -> list[dict[str, str]]:
    """The closure of REQUIREMENTS as (name, version, url, sha256, filename), via pip's dry-run report."""
    report = work / "report.json"
    subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
                    "--only-binary=:all:", "--index-url", INDEX, "--report", str(report), *REQUIREMENTS],
                   check=True, env=ENV)
    arts = []
    for item in json.loads(report.read_text())["install"]:
        url = item["download_info"]["url"]
        fn = Path(urllib.parse.urlsplit(url).path).name
        name, version, _, _ = parse_wheel_filename(fn)
        arts.append({"name": str(name), "version": str(version), "kind": "wheel", "url": url,
                     "sha256": item["download_info"]["archive_info"]["hashes"]["sha256"], "filename": fn,
                     "build": None, "commit": None, "subdir": None, "requires": []})
    return sorted(arts, key=lambda a: a["name"])


def write_lock(lock: Path, arts: list[dict[str, str]]) -> None:
    lock.mkdir(parents=True)
    py = ".".join(platform.python_version_tuple()[:2])
    data = {"schema_version": 1, "name": "bench", "generated_by": "bench/bench_fetch.py",
            "command": "bench", "spec_hash": hashlib.sha256(json.dumps(arts).encode()).hexdigest(),
            "spec": {"requirements": REQUIREMENTS}, "manager": "venv", "python": py,
            "platform": {"os": "linux", "arch": "x86_64", "pip_platform": "manylinux_2_17_x86_64",
                         "conda_subdir": "linux-64"},
            "target": {}, "resolution": {}, "index_urls": [INDEX], "find_links": [], "conda_channels": [],
            "artifacts": arts}
    (lock / "envbuild.lock.json").write_text(json.dumps(data, indent=2))
    lines = [f"--index-url {INDEX}"] + [f"{a['name']}=={a['version']} --hash=sha256:{a['sha256']}"
                                          for a in arts]
    (lock / "requirements.txt").write_text("\n".join(lines) + "\n")


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
        arts = resolve(work)
        lock = work / "lockfiles" / "bench"
        write_lock(lock, arts)
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
