"""Pack the same conda env with plain conda-pack (its defaults) and with `envbuild pack`, in one run.

The env is real and offline: py-rattler installs, from a local channel built here, a relocatable
CPython copied from this interpreter plus one conda package holding numpy + scipy (with their
bundled .libs) taken from this interpreter's site-packages: ~250 MB of real .py/.so files.

    .venv/bin/python bench/bench_pack.py [--json] [--keep DIR]

Prints wall time, archive size and the ratios against conda-pack's defaults (tar.gz, level 4,
one thread). envbuild also hashes every member and embeds the manifest; that cost is included.
The squashfs rows (envbuild's and conda-pack's own, both mksquashfs with zstd) stand beside
tar.zst: same env, same run; "inodes" is what the env costs on the filesystem where it is used
(a tar is unpacked into every file, an image is mounted as one file). They are skipped, and say
so, when mksquashfs is not installed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

from conda_fixture import install_env, make_channel, python_package_spec  # noqa: E402

from envbuild.pack import inspect_archive, pack, unpack  # noqa: E402

BULK = ("numpy", "numpy.libs", "scipy", "scipy.libs")


def _bulk_spec() -> dict[str, object]:
    site = (
        Path(sys.base_prefix)
        / "lib"
        / f"python{sys.version_info.major}.{sys.version_info.minor}"
        / "site-packages"
    )
    files: dict[str, bytes] = {}
    for top in BULK:
        for p in (site / top).rglob("*"):
            if p.is_file() and not p.is_symlink() and "__pycache__" not in p.parts:
                files[
                    f"{site.relative_to(Path(sys.base_prefix)).as_posix()}/{p.relative_to(site).as_posix()}"
                ] = p.read_bytes()
    return dict(name="scistack", version="1.0", subdir="linux-64", depends=["python"], files=files)


def _timed(label: str, fn, *args, **kw):  # type: ignore[no-untyped-def]
    t0 = time.perf_counter()
    out = fn(*args, **kw)
    return label, time.perf_counter() - t0, out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--keep", type=Path, help="work directory to keep (default: a temp dir, removed)")
    args = ap.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="bench-pack-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        t0 = time.perf_counter()
        ch = make_channel(work / "ch", [python_package_spec(), _bulk_spec()])
        env = install_env(ch, work / "envs" / "bench", ["python", "scistack"])
        env_bytes = sum(p.stat().st_size for p in env.rglob("*") if p.is_file() and not p.is_symlink())
        setup = time.perf_counter() - t0

        import conda_pack

        jobs = os.cpu_count() or 1
        runs = []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            runs.append(
                _timed(
                    "conda-pack defaults (tar.gz, level 4, 1 thread)",
                    conda_pack.pack,
                    prefix=str(env),
                    output=str(work / "cp-default.tar.gz"),
                )
            )
            runs.append(
                _timed(
                    "conda-pack tar.zst (its default: level 9, 1 thread)",
                    conda_pack.pack,
                    prefix=str(env),
                    output=str(work / "cp.tar.zst"),
                )
            )
        runs.append(
            _timed(
                f"envbuild pack tar.gz (level 4, {jobs} threads)", pack, env, work / "eb.tar.gz", jobs=jobs
            )
        )
        runs.append(
            _timed(
                f"envbuild pack tar.zst (level 3, {jobs} threads)", pack, env, work / "eb.tar.zst", jobs=jobs
            )
        )
        paths = [work / "cp-default.tar.gz", work / "cp.tar.zst", work / "eb.tar.gz", work / "eb.tar.zst"]
        squash = shutil.which("mksquashfs") is not None
        if squash:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                runs.append(
                    _timed(
                        f"conda-pack squashfs (its default: zstd 10, {jobs} threads)",
                        conda_pack.pack,
                        prefix=str(env),
                        output=str(work / "cp.squashfs"),
                        format="squashfs",
                        n_threads=jobs,
                    )
                )
            runs.append(
                _timed(
                    f"envbuild pack squashfs (zstd 10, {jobs} threads)",
                    pack,
                    env,
                    work / "eb.squashfs",
                    jobs=jobs,
                )
            )
            paths += [work / "cp.squashfs", work / "eb.squashfs"]
        env_inodes = sum(1 for _ in env.rglob("*"))
        base_t, base_s = runs[0][1], paths[0].stat().st_size
        rows = []
        for (label, secs, _), path in zip(runs, paths, strict=True):
            size = path.stat().st_size
            rows.append(
                {
                    "run": label,
                    "seconds": round(secs, 2),
                    "size_mb": round(size / 1e6, 1),
                    "time_vs_conda_pack": round(secs / base_t, 2),
                    "size_vs_conda_pack": round(size / base_s, 2),
                    "inodes_when_used": 1 if path.suffix == ".squashfs" else env_inodes,
                }
            )
        _, insp_t, _ = _timed("inspect", inspect_archive, work / "eb.tar.zst")
        _, unp_zst, _ = _timed("unpack zst", unpack, work / "eb.tar.zst", work / "out-zst")
        _, unp_gz, _ = _timed("unpack gz", unpack, work / "eb.tar.gz", work / "out-gz")
        result = {
            "env_mb": round(env_bytes / 1e6, 1),
            "files": sum(1 for _ in env.rglob("*")),
            "cpus": jobs,
            "setup_seconds": round(setup, 1),
            "runs": rows,
            "inspect_seconds": round(insp_t, 3),
            "unpack_seconds": {"tar.zst": round(unp_zst, 2), "tar.gz": round(unp_gz, 2)},
        }
        if squash:
            zst = next(r for r in rows if r["run"].startswith("envbuild pack tar.zst"))
            sq = rows[-1]
            result["squashfs_vs_tar_zst"] = {
                "time": round(sq["seconds"] / zst["seconds"], 2),
                "size": round(sq["size_mb"] / zst["size_mb"], 2),
                "inodes": f"1 vs {env_inodes}",
            }
        else:
            result["squashfs_vs_tar_zst"] = "skipped: mksquashfs is not installed"
        if args.json:
            print(json.dumps(result, indent=2))
        else:
            print(f"env: {result['env_mb']} MB, {result['files']} files, {jobs} CPUs")
            print(f"{'run':<52} {'time s':>7} {'size MB':>8} {'time x':>7} {'size x':>7} {'inodes':>7}")
            for r in rows:
                print(
                    f"{r['run']:<52} {r['seconds']:>7} {r['size_mb']:>8} {r['time_vs_conda_pack']:>7} "
                    f"{r['size_vs_conda_pack']:>7} {r['inodes_when_used']:>7}"
                )
            sq_vs = result["squashfs_vs_tar_zst"]
            if isinstance(sq_vs, dict):
                print(
                    f"envbuild squashfs vs envbuild tar.zst: time x{sq_vs['time']}, size x{sq_vs['size']}, "
                    f"inodes where used {sq_vs['inodes']}"
                )
            else:
                print(f"squashfs: {sq_vs}")
            print(
                f"envbuild inspect (manifest only): {insp_t:.3f} s; envbuild unpack (extract + verify + "
                f"conda-unpack + checks): tar.zst {unp_zst:.1f} s, tar.gz {unp_gz:.1f} s"
            )
        return 0
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
