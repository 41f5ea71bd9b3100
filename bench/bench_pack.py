"""Pack and unpack real envs with envbuild and with the peers and the limit, in one run, alternating.

Real envs, built here:

* a **venv from PyPI** (``uv venv`` + ``uv pip install numpy scipy pandas pyarrow``, a few hundred
  MB of real wheels; needs the network, torch is left out: its PyPI wheel pulls GBs of CUDA libs).
  Rows: ``tar -I 'zstd -T0 -3' -c`` (the limit: plain tar + multi-threaded zstd, no hashing),
  ``envbuild pack`` tar.zst and tar.gz (the CLI, every member hashed into the manifest),
  ``tar -I 'pigz -4'`` (or ``gzip -4`` without pigz) and venv-pack's defaults (tar.gz), and the
  unpack side: ``envbuild unpack`` (extract + every sha256 + checks) vs ``tar -I zstd -x``.
  Pack and unpack rows run in the same rounds (alternating), each unpack from an archive made
  once before the rounds.
* with ``--torch``, a **real torch venv** (``pip install torch==2.14.1``, about 5.5 GB with its
  CUDA libraries; pip may take it from a local wheel cache) with the same tar.zst pack and unpack
  rows (the gzip rows only with ``--gz``: they take minutes on such an env).
* a **conda env** (offline): py-rattler installs, from a local channel built here, a relocatable
  CPython copied from this interpreter plus one conda package holding numpy + scipy (with their
  bundled .libs) from this interpreter's site-packages. Rows: conda-pack's defaults, ``envbuild
  pack`` tar.gz / tar.zst, and the squashfs rows (envbuild's and conda-pack's own, both mksquashfs
  with zstd; "inodes" is what the env costs where it is used: a tar is unpacked into every file,
  an image is mounted as one file; skipped, and said so, without mksquashfs).

    .venv/bin/python bench/bench_pack.py [--rounds 3] [--json] [--keep DIR] [--no-venv] [--no-unpack]
                                         [--no-conda] [--torch [--torch-rounds 1]] [--gz]

Each round runs every row once, in a rotated order; the table shows the medians of the rounds
(wall time, and CPU time of all threads and child processes), the ratios to the row's reference
(the limit, or conda-pack's defaults) and the archive size. The machine may be shared: only
ratios within one run mean anything, and on a loaded machine the CPU ratio is the steadier one.
The ``envbuild`` commands run with their bytecode cached (in the work directory), as an installed
envbuild has it: a session that sets PYTHONDONTWRITEBYTECODE would otherwise time compiling
envbuild's modules on every run, which no user pays. ``goals`` compares the tar.zst rows with
issue 16's targets (pack 1.2x, unpack 1.3x of the limit).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

from conda_fixture import install_env, make_channel, python_package_spec  # noqa: E402

from envbuild.archive import inspect_archive  # noqa: E402
from envbuild.pack import pack  # noqa: E402

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


VENV_PKGS = ("numpy", "scipy", "pandas", "pyarrow")
Row = tuple[str, Callable[[], object], Path | None]  # label, one run, what it writes (its size)


def _bin(name: str) -> str | None:
    here = Path(sys.executable).parent / name
    return str(here) if here.exists() else shutil.which(name)


GOALS = {"pack": 1.2, "unpack": 1.3}
_ENV: dict[str, str] = dict(os.environ)  # envbuild's runs: set in main() (bytecode cache)


def _run(argv: list[str]) -> None:
    proc = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=_ENV)
    if proc.returncode != 0:
        raise RuntimeError(f"{argv[0]} exited {proc.returncode}: {proc.stderr.strip()[-800:]}")


def _fresh(path: Path | None) -> None:
    if path is None:
        return
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


def _cpu() -> float:
    """CPU seconds (user + system) of this process's threads and of its finished children."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def _rounds(rows: list[Row], rounds: int) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Every row once per round, the order rotated each round (no row always runs first).

    Returns wall and CPU seconds per row: on a shared machine the wall time of a CPU-bound run
    mostly measures the other jobs, its CPU time (all threads and child processes) does not.
    """
    times: dict[str, list[float]] = {label: [] for label, _, _ in rows}
    cpus: dict[str, list[float]] = {label: [] for label, _, _ in rows}
    for r in range(rounds):
        k = r % len(rows)
        for label, fn, out in rows[k:] + rows[:k]:
            _fresh(out)
            # The previous round's files (and this removal) reach the disk before the clock starts:
            # otherwise their writeback lands in whichever row runs next.
            os.sync()
            c0, t0 = _cpu(), time.perf_counter()
            fn()
            times[label].append(time.perf_counter() - t0)
            cpus[label].append(_cpu() - c0)
            print(f"  round {r + 1}/{rounds}: {label}: {times[label][-1]:.2f} s wall, "
                  f"{cpus[label][-1]:.2f} s CPU", file=sys.stderr)
    return times, cpus


def _size(path: Path | None) -> int | None:
    if path is None or not path.exists():
        return None
    if path.is_dir():
        return sum(p.lstat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())
    return path.stat().st_size


def _table(rows: list[Row], measured: tuple[dict[str, list[float]], dict[str, list[float]]],
           ref: dict[str, str], inodes: dict[str, int] | None = None) -> list[dict[str, object]]:
    times, cpus = measured
    med = {label: statistics.median(ts) for label, ts in times.items()}
    cmed = {label: statistics.median(ts) for label, ts in cpus.items()}
    out: list[dict[str, object]] = []
    for label, _, path in rows:
        size, base = _size(path), ref.get(label)
        base_size = _size(next((p for lb, _, p in rows if lb == base), None)) if base else None
        row: dict[str, object] = {
            "run": label, "median_s": round(med[label], 2),
            "rounds_s": [round(t, 2) for t in times[label]],
            "size_mb": round(size / 1e6, 1) if size is not None else None,
            "cpu_s": round(cmed[label], 2),
            "vs": base, "time_x": round(med[label] / med[base], 2) if base else None,
            "cpu_x": round(cmed[label] / cmed[base], 2) if base and cmed[base] else None,
            "size_x": round(size / base_size, 2) if base and size and base_size else None,
        }
        if inodes is not None:
            row["inodes_when_used"] = inodes.get(label)
        out.append(row)
    return out


def _print(title: str, table: list[dict[str, object]]) -> None:
    print(f"\n{title}")
    inodes = any("inodes_when_used" in r for r in table)
    print(f"| run | wall s (median) | rounds s | CPU s (median) | size MB | vs | wall x | CPU x | size x |"
          f"{' inodes |' if inodes else ''}")
    print(f"|---|---:|---|---:|---:|---|---:|---:|---:|{'---:|' if inodes else ''}")
    for r in table:
        rounds = " ".join(f"{t}" for t in r["rounds_s"])  # type: ignore[attr-defined]
        extra = f" {r.get('inodes_when_used')} |" if inodes else ""
        size = r["size_mb"] if r["size_mb"] is not None else "—"
        ratios = " | ".join(str(r[k] or "—") for k in ("vs", "time_x", "cpu_x", "size_x"))
        print(f"| {r['run']} | {r['median_s']} | {rounds} | {r['cpu_s']} | {size} | {ratios} |{extra}")


def _venv(work: Path) -> tuple[Path | None, str]:
    """A venv of real PyPI wheels, or None and why not (no uv, no network); reused with --keep."""
    env = work / "venv"
    how = "uv pip install " + " ".join(VENV_PKGS)
    if list(env.glob("lib/python*/site-packages/pyarrow/__init__.py")):
        return env, how + " (reused)"
    uv = _bin("uv")
    if uv is None:
        return None, "skipped: uv is not installed"
    penv = {**os.environ, "PIP_CONFIG_FILE": "/dev/null"}
    try:
        subprocess.run([uv, "venv", "-q", "-p", sys.executable, str(env)], check=True, timeout=300, env=penv,
                       capture_output=True)
        subprocess.run([uv, "pip", "install", "-q", "-p", str(env / "bin" / "python"), *VENV_PKGS],
                       check=True, timeout=1200, env=penv, capture_output=True, text=True)
    except (subprocess.SubprocessError, OSError) as exc:
        return None, f"skipped: could not install {' '.join(VENV_PKGS)} from PyPI ({str(exc)[:200]})"
    return env, how


def _torch_venv(work: Path) -> tuple[Path | None, str]:
    """A real torch venv (pip, this interpreter), or None and why not; kept and reused with --keep."""
    env = work / "torch-venv"
    how = f"python -m venv + pip install {TORCH}"
    if (env / "bin" / "python").exists() and list(env.glob("lib/python*/site-packages/torch/__init__.py")):
        return env, how + " (reused)"
    try:
        subprocess.run([sys.base_prefix + "/bin/python3" if Path(sys.base_prefix, "bin", "python3").exists()
                        else sys.executable, "-m", "venv", str(env)], check=True, timeout=300,
                       capture_output=True)
        subprocess.run([str(env / "bin" / "python"), "-m", "pip", "install", "-q", TORCH], check=True,
                       timeout=3600, capture_output=True, text=True)
    except (subprocess.SubprocessError, OSError) as exc:
        return None, f"skipped: could not pip install {TORCH} ({str(exc)[:200]})"
    return env, how


TORCH = "torch==2.14.1"
UNPACK_LIMIT = "tar -I zstd -x (the limit)"
UNPACK_EB = "envbuild unpack tar.zst (extract + sha256 of all + checks)"


def _env_rows(tag: str, env: Path, work: Path, jobs: int, *, unpack: bool, gz: bool
              ) -> tuple[list[Row], dict[str, str], dict[str, Path]]:
    """Pack rows (+ unpack rows) for one env; the archives the unpack rows read, to make first."""
    eb = _bin("envbuild")
    envbuild = [eb] if eb else [sys.executable, "-m", "envbuild"]
    limit = "tar -I 'zstd -T0 -3' -c (the limit)"
    pigz = shutil.which("pigz")
    gz_tool = f"pigz -4 -p {jobs}" if pigz else "gzip -4"
    gz_ref = f"tar -I '{gz_tool}' -c"
    o = {k: work / f"{tag}-{k}" for k in ("lim.tar.zst", "eb.tar.zst", "gz.tar.gz", "eb.tar.gz", "vp.tar.gz",
                                         "src-lim.tar.zst", "src-eb.tar.zst")}
    eb_zst = "envbuild pack tar.zst (level 3, all CPUs, hashed)"
    rows: list[Row] = [
        (limit, lambda: _run(["tar", "-C", str(env), "-I", "zstd -T0 -3", "-cf", str(o["lim.tar.zst"]), "."]),
         o["lim.tar.zst"]),
        (eb_zst, lambda: _run([*envbuild, "pack", str(env), "-o", str(o["eb.tar.zst"]), "--json"]),
         o["eb.tar.zst"]),
    ]
    ref = {eb_zst: limit}
    if gz:
        eb_gz = "envbuild pack tar.gz (level 4, all CPUs, hashed)"
        rows += [
            (gz_ref, lambda: _run(["tar", "-C", str(env), "-I", gz_tool, "-cf", str(o["gz.tar.gz"]), "."]),
             o["gz.tar.gz"]),
            (eb_gz, lambda: _run([*envbuild, "pack", str(env), "-o", str(o["eb.tar.gz"]), "--json"]),
             o["eb.tar.gz"]),
        ]
        ref.update({gz_ref: limit, eb_gz: limit})
        vp = _bin("venv-pack")
        if vp:
            label = "venv-pack defaults (tar.gz, level 4, 1 thread)"
            rows.append((label, lambda: _run([vp, "-p", str(env), "-o", str(o["vp.tar.gz"]), "-q"]),
                         o["vp.tar.gz"]))
            ref[label] = limit
            ref[eb_gz] = label  # envbuild's tar.gz against the peer that writes the same format
    sources: dict[str, Path] = {}
    if unpack:
        d1, d2 = work / f"{tag}-out-tar", work / f"{tag}-out-eb"
        sources = {"limit": o["src-lim.tar.zst"], "envbuild": o["src-eb.tar.zst"]}

        def untar() -> None:
            d1.mkdir()
            _run(["tar", "-C", str(d1), "-I", "zstd -T0", "-xf", str(sources["limit"])])

        rows += [
            (UNPACK_LIMIT, untar, d1),
            (UNPACK_EB, lambda: _run([*envbuild, "unpack", str(sources["envbuild"]), str(d2), "--json"]), d2),
        ]
        ref[UNPACK_EB] = UNPACK_LIMIT
    return rows, ref, sources


def _prepare(env: Path, sources: dict[str, Path]) -> None:
    """Warm the page cache and envbuild's bytecode cache; write the archives the unpack rows read."""
    _run(["tar", "-C", str(env), "-cf", os.devnull, "."])
    if "limit" in sources:
        _run(["tar", "-C", str(env), "-I", "zstd -T0 -3", "-cf", str(sources["limit"]), "."])
    if "envbuild" in sources:
        eb = _bin("envbuild")
        _run([*([eb] if eb else [sys.executable, "-m", "envbuild"]), "pack", str(env), "-o",
              str(sources["envbuild"]), "--json"])


def _goals(table: list[dict[str, object]]) -> dict[str, object]:
    """The tar.zst rows against issue 16's goals (wall and CPU ratios of the medians)."""
    out: dict[str, object] = {}
    for key, prefix in (("pack", "envbuild pack tar.zst"), ("unpack", "envbuild unpack tar.zst")):
        row = next((r for r in table if str(r["run"]).startswith(prefix)), None)
        if row is not None:
            out[key] = {"wall_x": row["time_x"], "cpu_x": row["cpu_x"], "goal_x": GOALS[key],
                        "met": row["time_x"] is not None and float(row["time_x"]) <= GOALS[key]}  # type: ignore[arg-type]
    return out


def _bench_env(tag: str, env: Path, work: Path, jobs: int, rounds: int, args: argparse.Namespace
               ) -> dict[str, object]:
    rows, ref, sources = _env_rows(tag, env, work, jobs, unpack=not args.no_unpack, gz=args.gz or tag == "v")
    _prepare(env, sources)
    table = _table(rows, _rounds(rows, rounds), ref)
    unpack_rows = [r for r in table if r["run"] in (UNPACK_LIMIT, UNPACK_EB)]
    return {"pack": [r for r in table if r not in unpack_rows], "unpack": unpack_rows, "goals": _goals(table),
            "inspect_seconds": round(_timed(inspect_archive, rows[1][2]), 3)}


def _conda_rows(env: Path, work: Path, jobs: int) -> tuple[list[Row], dict[str, str], dict[str, int]]:
    import conda_pack

    def cp(out: Path, **kw: object) -> Callable[[], object]:
        def run() -> object:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return conda_pack.pack(prefix=str(env), output=str(out), **kw)
        return run

    base = "conda-pack defaults (tar.gz, level 4, 1 thread)"
    o = {k: work / f"c-{k}" for k in ("cp.tar.gz", "cp.tar.zst", "eb.tar.gz", "eb.tar.zst", "cp.squashfs",
                                      "eb.squashfs")}
    rows: list[Row] = [
        (base, cp(o["cp.tar.gz"]), o["cp.tar.gz"]),
        ("conda-pack tar.zst (its default: level 9, 1 thread)", cp(o["cp.tar.zst"]), o["cp.tar.zst"]),
        (f"envbuild pack tar.gz (level 4, {jobs} threads)", lambda: pack(env, o["eb.tar.gz"], jobs=jobs),
         o["eb.tar.gz"]),
        (f"envbuild pack tar.zst (level 3, {jobs} threads)", lambda: pack(env, o["eb.tar.zst"], jobs=jobs),
         o["eb.tar.zst"]),
    ]
    if shutil.which("mksquashfs"):
        rows += [
            (f"conda-pack squashfs (its default: zstd 10, {jobs} threads)",
             cp(o["cp.squashfs"], format="squashfs", n_threads=jobs), o["cp.squashfs"]),
            (f"envbuild pack squashfs (zstd 10, {jobs} threads)",
             lambda: pack(env, o["eb.squashfs"], jobs=jobs), o["eb.squashfs"]),
        ]
    env_inodes = sum(1 for _ in env.rglob("*"))
    inodes = {label: (1 if path is not None and path.suffix == ".squashfs" else env_inodes)
              for label, _, path in rows}
    return rows, {label: base for label, _, _ in rows[1:]}, inodes


def _env_stats(env: Path) -> dict[str, object]:
    files = list(env.rglob("*"))
    size = sum(p.lstat().st_size for p in files if p.is_file() and not p.is_symlink())
    return {"path": str(env), "mb": round(size / 1e6, 1), "files": len(files)}


def _built_env(result: dict[str, object], key: str, built: tuple[Path | None, str], tag: str, work: Path,
               jobs: int, rounds: int, args: argparse.Namespace) -> dict[str, object] | None:
    """Record how the env was built (and its size); bench it when it could be built."""
    env, how = built
    result[key] = {"built_with": how, **(_env_stats(env) if env is not None else {})}
    return _bench_env(tag, env, work, jobs, rounds, args) if env is not None else None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds per row (median shown)")
    ap.add_argument("--keep", type=Path, help="work directory to keep (default: a temp dir, removed)")
    ap.add_argument("--no-venv", action="store_true", help="skip the PyPI venv (needs the network)")
    ap.add_argument("--no-conda", action="store_true", help="skip the conda env rows")
    ap.add_argument("--no-unpack", action="store_true", help="skip the unpack rows")
    ap.add_argument("--torch", action="store_true", help=f"also a real torch venv ({TORCH}, ~5.5 GB, pip)")
    ap.add_argument("--torch-rounds", type=int, default=1, help="rounds for the torch env (default 1)")
    ap.add_argument("--gz", action="store_true", help="tar.gz rows for the torch env too")
    args = ap.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="bench-pack-"))
    work.mkdir(parents=True, exist_ok=True)
    jobs = os.cpu_count() or 1
    _ENV.pop("PYTHONDONTWRITEBYTECODE", None)
    _ENV["PYTHONPYCACHEPREFIX"] = str(work / "pycache")
    result: dict[str, object] = {"cpus": jobs, "rounds": args.rounds,
                                 "load_average_at_start": [round(x, 1) for x in os.getloadavg()]}
    try:
        if not args.no_venv and (res := _built_env(result, "venv", _venv(work), "v", work, jobs,
                                                    args.rounds, args)):
            result["venv_pack"], result["inspect_seconds"] = res["pack"], res["inspect_seconds"]
            if res["unpack"]:
                result["venv_unpack"] = res["unpack"]
            result["venv_goals"] = res["goals"]
        if args.torch and (res := _built_env(result, "torch", _torch_venv(work), "t", work, jobs,
                                             args.torch_rounds, args)):
            result["torch_pack"], result["torch_unpack"] = res["pack"], res["unpack"]
            result["torch_goals"] = res["goals"]
        if not args.no_conda:
            ch = make_channel(work / "ch", [python_package_spec(), _bulk_spec()])
            cenv = install_env(ch, work / "envs" / "bench", ["python", "scistack"])
            result["conda"] = {"built_with": "py-rattler from a local channel (CPython + numpy + scipy)",
                               **_env_stats(cenv)}
            crows, cref, inodes = _conda_rows(cenv, work, jobs)
            ctab = _table(crows, _rounds(crows, args.rounds), cref, inodes)
            result["conda_pack"] = ctab
            sq = [r for r in ctab if str(r["run"]).startswith("envbuild pack squashfs")]
            zst = next(r for r in ctab if str(r["run"]).startswith("envbuild pack tar.zst"))
            result["squashfs_vs_tar_zst"] = (
                {"time": round(float(sq[0]["median_s"]) / float(zst["median_s"]), 2),  # type: ignore[arg-type]
                 "size": round(float(sq[0]["size_mb"]) / float(zst["size_mb"]), 2),  # type: ignore[arg-type]
                 "inodes": f"1 vs {zst['inodes_when_used']}"}
                if sq else "skipped: mksquashfs is not installed")
        result["load_average_at_end"] = [round(x, 1) for x in os.getloadavg()]
        if args.json:
            print(json.dumps(result, indent=2))
            return 0
        print(f"{jobs} CPUs, {args.rounds} alternating rounds ({args.torch_rounds} for the torch env), "
              "load average "
              f"{result['load_average_at_start']} at start, {result['load_average_at_end']} at end")
        for tag, title in (("venv", "the PyPI venv"), ("torch", "the torch venv")):
            info = result.get(tag)
            if isinstance(info, dict):
                print(f"\n{tag}: {info.get('built_with')}" + (f" -> {info['mb']} MB, {info['files']} files"
                                                             if "mb" in info else ""))
            for part in ("pack", "unpack"):
                if f"{tag}_{part}" in result:
                    _print(f"{part} {title}", result[f"{tag}_{part}"])  # type: ignore[arg-type]
            if tag == "venv" and "inspect_seconds" in result:
                print(f"envbuild inspect (manifest only): {result['inspect_seconds']} s")
            goals = result.get(f"{tag}_goals")
            if isinstance(goals, dict):
                for key, g in goals.items():
                    print(f"{tag} {key}: wall x{g['wall_x']} (CPU x{g['cpu_x']}) of the limit, goal "
                          f"x{g['goal_x']}: {'met' if g['met'] else 'NOT met'}")
        if "conda_pack" in result:
            conda = result["conda"]
            print(f"\nconda env: {conda['built_with']} -> {conda['mb']} MB, {conda['files']} files")  # type: ignore[index]
            _print("pack the conda env", result["conda_pack"])  # type: ignore[arg-type]
            sq_vs = result["squashfs_vs_tar_zst"]
            if isinstance(sq_vs, dict):
                print(f"envbuild squashfs vs envbuild tar.zst: time x{sq_vs['time']}, size x{sq_vs['size']}, "
                      f"inodes where used {sq_vs['inodes']}")
            else:
                print(f"squashfs: {sq_vs}")
        return 0
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)


def _timed(fn: Callable[..., object], *args: object) -> float:
    t0 = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t0


if __name__ == "__main__":
    sys.exit(main())
