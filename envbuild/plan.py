"""The one-command journey: spec + target -> resolve -> lock -> render (-> fetch -> bundle).

``plan`` writes one directory a user can read, diff and carry::

    out/NAME/
      plan.json               what was chosen and why, where the files are, what to run
      lock/                   the lock (envbuild.lock.json, requirements.txt, conda.txt, ...)
      install.sh ...          scripts rendered for the spec's manager; they read lock/ (no copy)
      offline_cache/          with --offline: every artifact, hash-checked (envbuild fetch)
      NAME-offline.tar        with --offline: lock + scripts + cache for a server without network
                              (NAME-offline/ with --bundle-format dir: cache files hardlinked)

The cache sits beside the scripts, which is where ``install-offline.sh`` looks by default, and
outside ``lock/`` so that re-locking (which replaces ``lock/`` whole) never discards it.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from envbuild._fs import atomic_write, check_output_dir, claim_output_dir, path_component
from envbuild.models import Profile, Resolution
from envbuild.spec import Spec

__all__ = ["PlanResult", "plan", "present_plan"]

Step = Callable[[str], None]


@dataclass(frozen=True)
class PlanResult:
    """What ``plan`` produced; ``to_dict`` is the ``--json`` output and plan.json."""

    name: str
    out_dir: Path
    resolution: Resolution
    lock_dir: Path
    scripts: tuple[str, ...]
    manager: str
    offline: bool
    cache: Path | None = None
    bundle: Path | None = None
    fetch: dict[str, Any] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    bundle_format: str = "tar"

    def next_steps(self) -> list[str]:
        """What to run on the target, in order."""
        if self.bundle is not None and self.bundle_format == "dir":
            return [
                f"copy {self.bundle.name}/ to the target machine (e.g. rsync -a {self.bundle.name}/ "
                f"server:{self.bundle.name}/)",
                f"bash {self.bundle.name}/install-offline.sh   (no network needed; runs verify.sh after)",
            ]
        if self.bundle is not None:
            top = self.bundle.name.removesuffix(".tar")
            return [
                f"copy {self.bundle.name} to the target machine",
                f"tar -xf {self.bundle.name}",
                f"bash {top}/install-offline.sh   (no network needed; runs verify.sh at the end)",
            ]
        return [f"bash {self.out_dir}/install.sh   (on the target, with network)",
                f"bash {self.out_dir}/verify.sh"]

    def to_dict(self) -> dict[str, Any]:
        res = self.resolution
        return {
            "ok": True,
            "name": self.name,
            "out_dir": str(self.out_dir),
            "lock_dir": str(self.lock_dir),
            "manager": self.manager,
            "python": res.python,
            "cuda": res.cuda,
            "packages": dict(res.packages),
            "reasons": list(res.reasons),
            "warnings": list(res.warnings),
            "build": dict(res.build),
            "scripts": list(self.scripts),
            "offline": self.offline,
            "cache": str(self.cache) if self.cache else None,
            "bundle": str(self.bundle) if self.bundle else None,
            "bundle_format": self.bundle_format if self.bundle else None,
            "fetch": dict(self.fetch),
            "next_steps": self.next_steps(),
            "seconds": {k: round(v, 2) for k, v in self.seconds.items()},
        }


@contextmanager
def _timed(seconds: dict[str, float], name: str, step: Step) -> Iterator[None]:
    step(name)
    t0 = time.perf_counter()
    yield
    seconds[name] = time.perf_counter() - t0


def plan(
    spec: Spec,
    target: Profile,
    out_dir: str | Path,
    *,
    offline: bool = False,
    engine: str = "uv",
    jobs: int = 8,
    step: Step | None = None,
    show_progress: bool = True,
    prefer_pypi: bool = True,
    native_driver_only: bool = False,
    bundle_format: str = "tar",
    today: dt.date | None = None,
) -> PlanResult:
    """Resolve, lock and render ``spec`` for ``target`` into ``out_dir``; with ``offline`` also
    fetch every artifact and bundle it all into one tar.

    Raises:
        ConflictError: no consistent set for the target (nothing is written).
        InputError / FetchError / ToolError: as raised by the stages.
    """
    from envbuild import lock as lock_stage
    from envbuild import render as render_stage

    if offline and bundle_format not in ("tar", "dir"):  # before the slow stages, not after fetch
        from envbuild.errors import InputError

        raise InputError(f"unknown bundle format '{bundle_format}'.", field="--bundle-format",
                         hint="Use tar or dir.")
    say: Step = step or (lambda _s: None)
    seconds: dict[str, float] = {}
    out = Path(out_dir)
    lock_dir = out / "lock"
    # Refused before any work: a foreign --out, or a name that is not one path component.
    path_component(spec.name, field="name", path=spec.path)
    check_output_dir(out, field="--out")
    with _timed(seconds, "resolve", say):
        res = lock_stage.resolve_for_lock(spec, target, spec.indexes, prefer_pypi=prefer_pypi,
                                          native_driver_only=native_driver_only, today=today)
    claim_output_dir(out, field="--out")
    with _timed(seconds, "lock", say):
        # the one read of the lock: its record goes to render, fetch and bundle
        locked = lock_stage.lock(spec, target, out_dir=lock_dir, engine=engine, resolution=res,
                                 command=_command(spec, target, out, offline)).lock
    with _timed(seconds, "render", say):
        # the scripts read lock/ where it is (no copy of the lock beside them)
        rendered = render_stage.render(locked, out)
    cache = bundle_path = None
    fetched: dict[str, Any] = {}
    if offline:
        from envbuild import bundle as bundle_stage
        from envbuild import fetch as fetch_stage

        cache = out / "offline_cache"
        with _timed(seconds, "fetch", say):
            fetched = fetch_stage.fetch(locked, cache, jobs=jobs, show_progress=show_progress).to_dict()
        with _timed(seconds, "bundle", say):
            bundle_path = out / (f"{spec.name}-offline" + (".tar" if bundle_format == "tar" else ""))
            bundle_stage.bundle(locked, cache, bundle_path, fmt=bundle_format, scripts=rendered.texts)
    result = PlanResult(
        name=spec.name, out_dir=out, resolution=res, lock_dir=lock_dir,
        scripts=tuple(f for f in rendered.files if f.endswith((".sh", ".md"))),
        manager=rendered.manager, offline=offline, cache=cache, bundle=bundle_path,
        fetch=fetched, seconds=seconds, bundle_format=bundle_format,
    )
    import json

    atomic_write(out / "plan.json", json.dumps(_stable(result.to_dict()), indent=2, sort_keys=True) + "\n")
    return result


def _stable(d: dict[str, Any]) -> dict[str, Any]:
    """plan.json without timings, so re-planning an unchanged spec rewrites identical bytes."""
    keep = dict(d)
    keep.pop("seconds", None)
    if keep.get("fetch"):
        keep["fetch"] = {k: v for k, v in keep["fetch"].items()
                         if k in ("files", "bytes", "build_requirements", "git", "conda_subdirs")}
    return keep


def _command(spec: Spec, target: Profile, out: Path, offline: bool) -> str:
    parts = ["envbuild plan"]
    if spec.path:
        parts.append(f"--spec {spec.path}")
    parts.append(f"-o {out}")
    if offline:
        parts.append("--offline")
    return " ".join(parts)


def present_plan(result: PlanResult, as_json: bool) -> None:
    """The final summary: chosen set with reasons, files written, what to run on the target."""
    from envbuild.output import console, print_json, styled, table

    if as_json:
        print_json(result.to_dict())
        return
    res = result.resolution
    why = {c.get("package"): c.get("reason", "") for c in res.choices}
    rows = [(name, ver, why.get(name, "")) for name, ver in sorted(res.packages.items())]
    title = f"{result.name}: Python {res.python}, " + (f"CUDA {res.cuda}" if res.cuda else "CPU only")
    console.print(table(title, ["package", "version", "why"], rows))
    for w in res.warnings:
        console.print(styled("warning:", "yellow", w), highlight=False)
    files = [("lock", str(result.lock_dir)), ("scripts", f"{result.out_dir}/ ({', '.join(result.scripts)})")]
    if result.cache:
        f = result.fetch
        files.append(("offline cache", f"{result.cache} ({f.get('files', 0)} files, "
                                        f"{f.get('bytes', 0) / 1e6:.1f} MB)"))
    if result.bundle:
        files.append(("bundle", str(result.bundle)))
    console.print(table("written", ["what", "where"], files))
    console.print(styled("on the target:", "bold"), highlight=False)
    for i, s in enumerate(result.next_steps(), 1):
        console.print(f"  {i}. {s}", highlight=False)
    timing = ", ".join(f"{k} {v:.1f} s" for k, v in result.seconds.items())
    console.print(styled(timing, "dim"), highlight=False)
