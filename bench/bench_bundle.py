"""Benchmark: ``envbuild bundle`` (tar and dir) against plain ``tar -cf`` / ``cp -al`` of the same cache.

Needs PyPI once: ``envbuild lock`` + ``envbuild fetch`` of examples/cpu's spec (numpy, scipy,
opencv-python-headless, mmengine, numba and their closure: real wheels, ~200 MB) build the cache;
``--cache DIR --lock DIR`` reuse one already fetched.  Then, in the same run, alternating, each
command ``--rounds`` times on the warm page cache (every output deleted between runs, untimed):

* ``envbuild bundle LOCK`` (tar: every cache file streamed into the tar, its sha256 checked on the way)
  vs ``tar -cf`` of the same cache (the physical limit: the same bytes read and written, no hashing);
* ``envbuild bundle LOCK --format dir`` (hardlinks, every file hashed) vs ``cp -al`` (links only) and
  vs ``cp -al`` + ``openssl dgst -sha256`` of every file (the limit for links that are checked; the
  tar likewise against ``tar -cf`` + that hash; coreutils' sha256sum if there is no openssl);
* with ``--baseline REF`` also the bundle of git REF (e.g. ``main``), for before/after.

Prints medians, the ratios and the bytes each output adds on disk (du, a hardlink counted once).

    .venv/bin/python bench/bench_bundle.py [--rounds 3] [--cache DIR --lock DIR] [--baseline main]
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SPEC = ROOT / "examples" / "cpu" / "envbuild.toml"
# The fastest sha256 here is the limit: OpenSSL's (SHA-NI; hashlib uses it too), ~6x coreutils'.
HASHER = "openssl" if shutil.which("openssl") else "sha256sum"
HASH_CMD = "openssl dgst -sha256" if HASHER == "openssl" else "sha256sum"
ENV = {**os.environ, "PIP_CONFIG_FILE": os.devnull, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}


def run(cmd: list[str], env: dict[str, str] = ENV) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{proc.stdout[-1500:]}\n{proc.stderr[-1500:]}")


def make_cache(work: Path) -> tuple[Path, Path]:
    """examples/cpu's spec locked for the host's Python and fetched from PyPI."""
    py = ".".join(platform.python_version_tuple()[:2])
    lock = work / "lockfiles" / "cpu"
    cache = work / "offline_cache"
    print(f"locking {SPEC.relative_to(ROOT)} (Python {py}, CPU) and fetching it from PyPI ...", flush=True)
    run([sys.executable, "-m", "envbuild", "lock", "--spec", str(SPEC), "--cpu", "--python", py,
         "-o", str(lock), "--json"])
    run([sys.executable, "-m", "envbuild", "fetch", str(lock), "--cache", str(cache), "--json"])
    return lock, cache


def du(*paths: Path) -> int:
    out = subprocess.run(["du", "-s", "-c", "--block-size=1", *map(str, paths)], capture_output=True,
                         text=True, check=True).stdout
    return int(out.splitlines()[-1].split()[0])


def baseline_tree(ref: str, work: Path) -> Path:
    """envbuild at git ``ref`` (just the package, from ``git archive``) to run with PYTHONPATH."""
    dest = work / f"baseline-{ref.replace('/', '_')}"
    dest.mkdir()
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", ref, "envbuild"], capture_output=True,
                             check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return dest


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--cache", type=Path, help="an offline cache fetched already (with --lock)")
    ap.add_argument("--lock", type=Path, help="the lock directory of --cache")
    ap.add_argument("--baseline", help="also time the bundle of this git ref (e.g. main)")
    args = ap.parse_args()
    # Outputs go beside the cache, on its file system, so that hardlinks are possible for both.
    work = Path(tempfile.mkdtemp(prefix="bench-bundle-", dir=args.cache.parent if args.cache else None))
    try:
        if args.cache and args.lock:
            lock, cache = args.lock.resolve(), args.cache.resolve()
        else:
            lock, cache = make_cache(work)
        files = [p for p in cache.rglob("*") if p.is_file()]
        size = sum(p.stat().st_size for p in files)
        print(f"cache: {len(files)} files, {size / 1e6:.1f} MB ({cache})", flush=True)
        out = work / "out"
        env_cmd = [sys.executable, "-m", "envbuild", "bundle", str(lock), "--cache", str(cache), "--json"]
        cmds: dict[str, list[str]] = {
            "envbuild bundle (tar)": [*env_cmd, "-o", str(out / "b.tar")],
            "tar -cf": ["tar", "-cf", str(out / "t.tar"), "-C", str(cache.parent), cache.name],
            f"tar -cf + {HASHER}": ["sh", "-c", f'tar -cf "$1" -C "$2" "$3" && find "$2/$3" -type f -exec '
                                    f'{HASH_CMD} {{}} + >/dev/null', "sh", str(out / "h.tar"),
                                    str(cache.parent), cache.name],
            "envbuild bundle --format dir": [*env_cmd, "--format", "dir", "-o", str(out / "b-dir")],
            "cp -al": ["cp", "-al", str(cache), str(out / "c-dir")],
            f"cp -al + {HASHER}": ["sh", "-c", f'cp -al "$1" "$2" && find "$2" -type f -exec {HASH_CMD} '
                                   '{} + >/dev/null', "sh", str(cache), str(out / "h-dir")],
        }
        envs: dict[str, dict[str, str]] = {}
        if args.baseline:
            tree = baseline_tree(args.baseline, work)
            name = f"bundle at {args.baseline} (tar)"
            cmds[name] = [*env_cmd, "-o", str(out / "base.tar")]
            envs[name] = {**ENV, "PYTHONPATH": str(tree)}
        times: dict[str, list[float]] = {k: [] for k in cmds}
        cpu: dict[str, list[float]] = {k: [] for k in cmds}
        disk: dict[str, int] = {}
        for r in range(args.rounds):
            order = list(cmds) if r % 2 == 0 else list(reversed(cmds))  # alternate: no fixed second place
            for name in order:
                out.mkdir()
                t0, r0 = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
                run(cmds[name], env=envs.get(name, ENV))
                r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
                times[name].append(time.perf_counter() - t0)
                # CPU time too: on a shared box wall time includes other people's work.
                cpu[name].append(r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime)
                disk[name] = du(cache, out) - du(cache)
                shutil.rmtree(out)
            print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in times.items()), flush=True)
        med: Callable[[str], float] = lambda k: statistics.median(times[k])  # noqa: E731
        mcpu: Callable[[str], float] = lambda k: statistics.median(cpu[k])  # noqa: E731
        rows = [
            ("envbuild bundle (tar)", "tar -cf"),
            ("envbuild bundle (tar)", f"tar -cf + {HASHER}"),
            ("envbuild bundle --format dir", "cp -al"),
            ("envbuild bundle --format dir", f"cp -al + {HASHER}"),
        ]
        if args.baseline:
            rows.append(("envbuild bundle (tar)", f"bundle at {args.baseline} (tar)"))
        print(f"\nbundle of {len(files)} files, {size / 1e6:.1f} MB; medians of {args.rounds} alternating"
              " runs")
        head = (f"| {'envbuild':<28} | {'wall s':>6} | {'cpu s':>6} | {'adds on disk':>12} | "
                f"{'peer / limit':<26} | {'wall s':>6} | {'cpu s':>6} | {'adds on disk':>12} | "
                f"{'wall ratio':>10} | {'cpu ratio':>9} |")
        print(head)
        print("|" + "|".join("-" * len(c) for c in head.split("|")[1:-1]) + "|")
        for mine, peer in rows:
            print(f"| {mine:<28} | {med(mine):6.2f} | {mcpu(mine):6.2f} | {disk[mine] / 1e6:9.1f} MB | "
                  f"{peer:<26} | {med(peer):6.2f} | {mcpu(peer):6.2f} | {disk[peer] / 1e6:9.1f} MB | "
                  f"{med(mine) / med(peer):9.2f}x | {mcpu(mine) / max(mcpu(peer), 1e-3):8.2f}x |")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
