"""Benchmark: ``envbuild lock`` vs raw ``uv pip compile`` vs ``pip-compile`` on the same spec, same run.

Needs PyPI.  Each tool gets its own fresh cache for the cold run and reuses it (and its own
previous output, as a re-lock does) for the warm runs, which are interleaved.  All three lock
for this host's Python (pip-compile cannot target another one) with hashes.  The uv row runs the
command ``envbuild lock`` runs (the same target flags: ``--format pylock.toml --only-binary :all:``
for manylinux_2_17), so the ratio is envbuild's own cost.  Python writes its bytecode caches on the
cold run and reads them on the warm ones, as in an installed envbuild (``PYTHONDONTWRITEBYTECODE``
is dropped).

    .venv/bin/python bench/bench_lock.py [--warm 3] [--no-pip-compile] [--json] [REQ ...]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SPEC = ["numpy<2", "scipy", "opencv-python-headless", "mmengine", "numba"]
HOST = f"{sys.version_info[0]}.{sys.version_info[1]}"
BIN = Path(sys.executable).parent
INDEX = "https://pypi.org/simple"


def _clean_env(cache: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PIP_", "UV_")) and k != "PYTHONDONTWRITEBYTECODE"}
    env.update({"PIP_CONFIG_FILE": os.devnull, "PIP_DISABLE_PIP_VERSION_CHECK": "1",
                "UV_CACHE_DIR": str(cache / "uv"), "ENVBUILD_CACHE_DIR": str(cache / "envbuild"),
                "UV_NO_CONFIG": "1"})
    if "PIP_CERT" in os.environ:
        env["PIP_CERT"] = os.environ["PIP_CERT"]
    return env


def _time(cmd: list[str], env: dict[str, str], cwd: Path) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the command and its children: uv's included)."""
    c0, t0 = os.times(), time.perf_counter()
    proc = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True)
    dt, c1 = time.perf_counter() - t0, os.times()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-2000:]}")
    return dt, (c1.children_user - c0.children_user) + (c1.children_system - c0.children_system)


def commands(reqs: list[str], work: Path, cache: Path) -> dict[str, list[str]]:
    req_in = work / "requirements.in"
    req_in.write_text("\n".join(reqs) + "\n")
    from uv import find_uv_bin

    return {
        "envbuild lock": [str(BIN / "envbuild"), "lock", *reqs, "--python", HOST, "-o", str(work / "lk"),
                          "--json"],
        # What envbuild.tools.uv runs for this lock (pylock.toml carries the target's files and hashes).
        "uv pip compile": [str(find_uv_bin()), "pip", "compile", str(req_in), "--format", "pylock.toml",
                           "-o", str(work / "pylock.toml"), "--no-header", "--quiet", "--color", "never",
                           "--no-strip-markers", "--python-version", HOST, "--python-platform",
                           "x86_64-manylinux_2_17", "--index-url", INDEX, "--only-binary", ":all:"],
        "pip-compile": [str(BIN / "pip-compile"), str(req_in), "--generate-hashes", "--quiet", "--index-url",
                        INDEX, "--cache-dir", str(cache / "pip"), "-o", str(work / "pt.txt")],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("reqs", nargs="*", default=SPEC)
    ap.add_argument("--warm", type=int, default=3, help="warm runs per tool (median reported)")
    ap.add_argument("--no-pip-compile", action="store_true", help="skip pip-compile (slow cold)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    results: dict[str, dict[str, float]] = {}
    root = Path(tempfile.mkdtemp(prefix="bench-lock-"))
    tools = [t for t in ("uv pip compile", "envbuild lock", "pip-compile")
             if not (t == "pip-compile" and args.no_pip_compile)]
    try:
        runs: dict[str, tuple[list[str], dict[str, str], Path]] = {}
        for tool in tools:
            work = root / tool.replace(" ", "-")
            cache = work / "cache"
            work.mkdir(parents=True)
            runs[tool] = (commands(list(args.reqs), work, cache)[tool], _clean_env(cache), work)
        cold = {tool: _time(*runs[tool])[0] for tool in tools}
        # Warm runs interleaved, so a slow minute of the network hits every tool alike.  Each tool
        # re-locks over its own previous output (uv and pip-compile read it as pin preferences).
        # On a shared machine the wall ratio follows the load; the CPU ratio is envbuild's own work.
        warm: dict[str, list[tuple[float, float]]] = {tool: [] for tool in tools}
        for _ in range(args.warm):
            for tool in tools:
                warm[tool].append(_time(*runs[tool]))
        for tool in tools:
            results[tool] = {"cold_s": round(cold[tool], 2),
                             "warm_s": round(statistics.median(w for w, _ in warm[tool]), 2),
                             "warm_cpu_s": round(statistics.median(c for _, c in warm[tool]), 2)}
    finally:
        shutil.rmtree(root, ignore_errors=True)
    base = results["uv pip compile"]
    for r in results.values():
        r["cold_vs_uv"] = round(r["cold_s"] / base["cold_s"], 2)
        r["warm_vs_uv"] = round(r["warm_s"] / base["warm_s"], 2)
        r["warm_cpu_vs_uv"] = round(r["warm_cpu_s"] / max(base["warm_cpu_s"], 0.01), 2)
    if args.json:
        print(json.dumps({"spec": args.reqs, "python": HOST, "results": results}, indent=2))
        return
    print(f"spec: {' '.join(args.reqs)}   (Python {HOST}, hashes, PyPI)")
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(f"{'tool':<16}{'cold s':>9}{'warm s':>9}{'cold/uv':>9}{'warm/uv':>9}{'warm cpu':>10}{'cpu/uv':>8}")
    for tool, r in results.items():
        print(f"{tool:<16}{r['cold_s']:>9.2f}{r['warm_s']:>9.2f}{r['cold_vs_uv']:>9.2f}{r['warm_vs_uv']:>9.2f}"
              f"{r['warm_cpu_s']:>10.2f}{r['warm_cpu_vs_uv']:>8.2f}")


if __name__ == "__main__":
    main()
