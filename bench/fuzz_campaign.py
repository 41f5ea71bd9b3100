"""A long fuzz campaign: the generators of tests/test_fuzz.py, 10k inputs by default, tallied per kind.

    .venv/bin/python bench/fuzz_campaign.py [--inputs 10000] [--seed 1] [--kinds profile,lock] [--json]

For every input kind (spec, requirements, environment.yml, profile, lock, pack manifest, cache manifest,
archive, log, flags) it runs the real CLI in-process on generated and mutated inputs and counts

- tracebacks: an exception escaped, or the internal-error net caught one (exit 70),
- partial outputs: a failed command left a file or directory behind,
- unclear messages: a refusal (exit 2) that does not name the file, or names no field of a JSON object,
- undocumented exit codes (anything but 0-5).

It prints one table (and the first example of each problem), and exits 1 when any count is non-zero.
Archives with hostile members are counted like the rest, although test_fuzz.py only asserts "no
traceback" for them (extraction safety has its own tests).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import test_fuzz
from hypothesis import HealthCheck, Phase, given, seed, settings


def campaign(kind: str, n: int, seed_value: int) -> dict[str, Any]:
    strategy, case = test_fuzz.KINDS[kind]
    tally: dict[str, Any] = {"kind": kind, "inputs": 0, "tracebacks": 0, "partial": 0, "unclear": 0,
                             "undocumented": 0, "exits": collections.Counter(), "examples": {}}

    @seed(seed_value)
    @settings(max_examples=n, deadline=None, database=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(strategy)
    def run(value: Any) -> None:
        o = case(value)
        tally["inputs"] += 1
        tally["exits"][o.exit_code] += 1
        hits = (("tracebacks", o.traceback), ("partial", bool(o.partial)), ("unclear", bool(o.unclear)),
                ("undocumented", o.exit_code not in test_fuzz.DOCUMENTED_EXITS))
        for key, hit in hits:
            if hit:
                tally[key] += 1
                tally["examples"].setdefault(key, {"argv": o.argv, "input": repr(value)[:300],
                                                   "problem": o.problems(), "output": o.output[-600:]})

    t0 = time.monotonic()
    run()
    tally["seconds"] = round(time.monotonic() - t0, 1)
    tally["exits"] = dict(sorted(tally["exits"].items()))
    return tally


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--inputs", type=int, default=10_000, help="total inputs, split evenly over the kinds")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--kinds", default=",".join(test_fuzz.KINDS), help="comma-separated subset")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    kinds = [k for k in args.kinds.split(",") if k]
    unknown = [k for k in kinds if k not in test_fuzz.KINDS]
    if unknown:
        ap.error(f"unknown kinds {unknown}; choose from {list(test_fuzz.KINDS)}")
    per_kind = max(1, args.inputs // len(kinds))
    logs = tempfile.mkdtemp(prefix="envbuild-fuzz-logs-")
    os.environ["ENVBUILD_LOG_DIR"] = logs
    os.environ["PIP_CONFIG_FILE"] = os.devnull
    results = []
    for k in kinds:
        results.append(campaign(k, per_kind, args.seed))
        if not args.json:
            r = results[-1]
            print(f"  {k}: {r['inputs']} inputs in {r['seconds']} s", file=sys.stderr, flush=True)
    crash_logs = len(list(Path(logs).glob("crash-*.log")))
    if args.json:
        print(json.dumps({"seed": args.seed, "results": results, "crash_logs": crash_logs}, indent=2))
    else:
        from rich.console import Console

        from envbuild.output import table

        console = Console(width=max(Console().width, 120), markup=False, highlight=False)

        cols = ["kind", "inputs", "tracebacks", "partial outputs", "unclear messages", "bad exit code",
                "exit codes (code:count)", "seconds"]
        rows = [[r["kind"], r["inputs"], r["tracebacks"], r["partial"], r["unclear"], r["undocumented"],
                 " ".join(f"{c}:{n}" for c, n in r["exits"].items()), r["seconds"]] for r in results]
        total = {key: sum(r[key] for r in results) for key in ("inputs", "tracebacks", "partial", "unclear",
                                                              "undocumented")}
        rows.append(["total", total["inputs"], total["tracebacks"], total["partial"], total["unclear"],
                     total["undocumented"], "", round(sum(r["seconds"] for r in results), 1)])
        title = f"fuzz campaign (seed {args.seed}; crash logs written: {crash_logs})"
        console.print(table(title, cols, rows))
        for r in results:
            for key, ex in r["examples"].items():
                console.print(f"{r['kind']} / {key}: {ex['argv']}\n  input: {ex['input']}\n  "
                              f"problem: {ex['problem']}\n  output: {ex['output']!r}")
    bad = sum(r[k] for r in results for k in ("tracebacks", "partial", "unclear", "undocumented"))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
