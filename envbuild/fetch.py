"""envbuild fetch: download every artifact of a lock into ``offline_cache/``, verified and resumable.

The lock already lists only the target's files, so fetch never resolves anything: it
downloads each URL in parallel to ``<file>.part`` (resuming with an HTTP Range request when
the server allows it), checks the sha256 the lock recorded, and only then renames the file
into place, so a partial or altered download never counts as done.  Git dependencies are
checked out at the locked commit and built into a wheel when pure Python; sdists get their
build requirements (for the target Python and platform) in ``build/``; conda packages land
in a local channel indexed with py-rattler.  ``manifest.json`` is written last, atomically.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import tomllib
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name, parse_wheel_filename

from envbuild._fs import OUTPUT_MARKER, atomic_write, claim_output_dir, file_lock, record_output, sha256_file
from envbuild._http import TIMEOUT, is_timeout
from envbuild.errors import EnvbuildError, FetchError, HashMismatch, InputError, ToolError
from envbuild.lockfile import LOCK_FILE, Lock, TargetPlatform, load_lock
from envbuild.models import (
    CACHE_MANIFEST_SCHEMA,
    CacheManifest,
    LockedArtifact,
    ManifestEntry,
    pip_index_args,
    read_json_file,
)
from envbuild.tools._run import redact, run

__all__ = [
    "BUILT_FILE",
    "LOCK_FILE",
    "MANIFEST_FILE",
    "MANIFEST_SCHEMA",
    "FetchResult",
    "ManifestEntry",
    "fetch",
    "load_manifest",
    "read_built",
]

MANIFEST_FILE = "manifest.json"
MANIFEST_SCHEMA = CACHE_MANIFEST_SCHEMA
_CHUNK = 256 * 1024
# Always needed to build an sdist with --no-build-isolation on a machine without network.
_BASE_BUILD_REQS = ("setuptools", "wheel")
_PURE_TAGS = {("py3", "none", "any"), ("py2.py3", "none", "any")}


# --- manifest ---------------------------------------------------------------------------------


def load_manifest(cache: str | os.PathLike[str]) -> CacheManifest:
    """Read ``cache/manifest.json``.

    Raises:
        FetchError: missing or malformed manifest.
    """
    p = Path(cache) / MANIFEST_FILE
    hint = "Run 'envbuild fetch LOCKDIR --cache DIR' to (re)build the cache."
    if not p.exists():
        raise FetchError("no manifest.json: this is not an offline cache.", path=str(p), hint=hint)
    data = read_json_file(p, error=FetchError, what="manifest", hint=hint)  # the one schema layer
    return CacheManifest.from_dict(data, str(p), error=FetchError)


def _old_entries(cache: Path) -> tuple[ManifestEntry, ...]:
    try:
        return load_manifest(cache).files
    except FetchError:
        return ()


# --- the lock's record of what fetch built -----------------------------------------------------

# Files fetch makes rather than downloads by a locked hash (git wheels and archives) or resolves
# itself (build requirements) get their sha256 recorded in the LOCK directory, in sha256sum's format
# ("HASH  git/FILE").  install-offline.sh and verify-cache --lock check git/, build/ and tools/ against this
# record -- the cache's manifest.json is never the authority -- and install nothing it does not name.
BUILT_FILE = "built.sha256"
_BUILT_LINE = re.compile(r"([0-9a-f]{64})  ((?:git|build|tools)/[A-Za-z0-9][A-Za-z0-9._+-]*)")
_BUILT_KINDS = ("git-wheel", "git-sdist", "build-req", "tool")


def read_built(lock_dir: str | os.PathLike[str]) -> dict[str, str]:
    """``{"git/FILE": sha256, "build/FILE": sha256}`` from ``LOCKDIR/built.sha256`` ({} when absent).

    Raises:
        InputError: a line is not ``SHA256  git/FILE`` or ``SHA256  build/FILE``.
    """
    p = Path(lock_dir) / BUILT_FILE
    if not p.is_file():
        return {}
    out: dict[str, str] = {}
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read the record of built files ({exc}).", path=str(p),
                         hint="Delete it and run 'envbuild fetch' again.") from None
    for i, line in enumerate(lines, 1):
        m = _BUILT_LINE.fullmatch(line)
        if m is None:
            raise InputError(f"line {i} is not 'SHA256  git/FILE' or 'SHA256  build/FILE'.", path=str(p),
                             field=f"line {i}", hint="Delete it and run 'envbuild fetch' again.")
        out[m.group(2)] = m.group(1)
    return out


def _write_built(lock_dir: Path, entries: Sequence[ManifestEntry]) -> None:
    lines = sorted(f"{e.sha256}  {e.file}\n" for e in entries if e.kind in _BUILT_KINDS)
    for ln in lines:
        if not _BUILT_LINE.fullmatch(ln.rstrip("\n")):
            raise FetchError(f"cannot record '{ln.split()[-1]}' in {BUILT_FILE}: unexpected file name.",
                             path=str(lock_dir / BUILT_FILE))
    target = lock_dir / BUILT_FILE
    if not lines and not target.exists():
        return
    text = "".join(lines)
    try:
        if not target.is_file() or target.read_text() != text:
            atomic_write(target, text)
        if (lock_dir / OUTPUT_MARKER).is_file():
            # A re-lock replaces it with the lock (its commits and sdists may change).
            record_output(lock_dir, BUILT_FILE)
    except OSError as exc:
        raise FetchError(f"cannot record the hashes of the built files in the lock directory "
                         f"({exc.strerror}).", path=str(target),
                         hint="fetch writes built.sha256 beside envbuild.lock.json: make the lock directory "
                              "writable and fetch again.") from None


# --- downloads --------------------------------------------------------------------------------


@dataclass
class _Job:
    url: str
    rel: str
    sha256: str
    art: LockedArtifact
    kind: str


@dataclass
class _Stats:
    downloaded: int = 0
    downloaded_bytes: int = 0
    skipped: int = 0
    resumed: int = 0
    download_seconds: float = 0.0
    repaired: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    cancel: threading.Event = field(default_factory=threading.Event)


class _Progress:
    """Byte and file totals on stderr; thread-safe because rich's Progress is."""

    def __init__(self, enabled: bool, nfiles: int) -> None:
        self.enabled = enabled
        self.nfiles = nfiles
        self.done = 0
        self.total = 0
        self._lock = threading.Lock()
        self._p: Any = None
        self._task: Any = None

    def __enter__(self) -> _Progress:
        if self.enabled:
            from envbuild.output import progress

            self._p = progress(transfer=True)
            self._p.__enter__()
            self._task = self._p.add_task(self._desc(), total=None)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._p is not None:
            self._p.__exit__(*exc)

    def _desc(self) -> str:
        return f"fetch {self.done}/{self.nfiles} files"

    def add_total(self, n: int) -> None:
        with self._lock:
            self.total += n
            if self._p is not None:
                self._p.update(self._task, total=self.total)

    def advance(self, n: int) -> None:
        if self._p is not None:
            self._p.advance(self._task, n)

    def file_done(self) -> None:
        with self._lock:
            self.done += 1
            if self._p is not None:
                self._p.update(self._task, description=self._desc())


def _session(jobs: int) -> Any:
    from envbuild._http import http_session

    return http_session(jobs, "envbuild-fetch")


def _download(session: Any, job: _Job, dest: Path, prog: _Progress, stats: _Stats) -> None:
    """Download ``job.url`` into ``dest`` via ``dest.part``; rename only after the hash matches."""
    part = dest.with_name(dest.name + ".part")
    dest.parent.mkdir(parents=True, exist_ok=True)
    if job.url.startswith("file://"):
        src = Path(urllib.request.url2pathname(urllib.parse.urlsplit(job.url).path))
        try:
            shutil.copyfile(src, part)
        except OSError as exc:
            raise FetchError(f"cannot read {src} ({exc.strerror}).", path=job.rel) from None
        _finish(job, part, dest, prog, stats, part.stat().st_size, resumed=False)
        return
    restarted = False
    for attempt in range(4):
        if stats.cancel.is_set():
            raise _Cancelled()
        offset = part.stat().st_size if part.exists() else 0
        try:
            got = _get(session, job, part, offset, prog, stats.cancel)
        except _RangeRefused:
            part.unlink(missing_ok=True)
            continue
        except (FetchError, _Cancelled):
            raise
        except Exception as exc:  # requests' errors: keep the .part for the next attempt or run
            progressed = part.exists() and part.stat().st_size > offset
            # A timeout with no byte received: the host is unreachable or silent, and asking again
            # would only multiply the wait.  Stop every other download too: they use the same index.
            silent = not progressed and is_timeout(exc)
            if attempt == 3 or silent:
                if silent:
                    stats.cancel.set()
                raise FetchError(
                    f"download of {redact(job.url)} failed: {type(exc).__name__}: {redact(str(exc))}.",
                    path=job.rel,
                    hint=(f"The server did not answer within {TIMEOUT[0]:.0f} s (connect) / "
                          f"{TIMEOUT[1]:.0f} s (read): check the index URL and the network, then fetch again."
                          if silent else "The partial file is kept; run 'envbuild fetch' again to resume."),
                ) from None
            time.sleep(0.5 * (attempt + 1))
            continue
        digest, size, resumed = got
        if digest == job.sha256 or restarted or not resumed:
            _finish(job, part, dest, prog, stats, size, resumed=resumed)
            return
        # A resumed file that fails the check may be a stale .part: start over once.
        part.unlink(missing_ok=True)
        restarted = True
    raise FetchError(f"download of {redact(job.url)} did not complete.", path=job.rel,
                     hint="Run 'envbuild fetch' again.")


def _locked_download(session: Any, job: _Job, cache: Path, prog: _Progress, stats: _Stats) -> None:
    """``_download`` under the artifact's lock; a file another fetch completed meanwhile is kept."""
    dest = cache / job.rel
    with file_lock(cache, job.rel):
        if stats.cancel.is_set():
            raise _Cancelled()
        if dest.is_file():
            if job.sha256 and sha256_file(dest) == job.sha256:
                prog.file_done()
                with stats.lock:
                    stats.skipped += 1
                return
            # An altered cached file is never used: drop it and download the locked bytes again.
            if job.sha256:
                with stats.lock:
                    stats.repaired.append(job.rel)
            dest.unlink()
        _download(session, job, dest, prog, stats)


class _RangeRefused(Exception):
    pass


class _Cancelled(Exception):
    """Another download failed or the user pressed Ctrl-C: stop, keeping the .part."""


def _get(session: Any, job: _Job, part: Path, offset: int, prog: _Progress,
         cancel: threading.Event) -> tuple[str, int, bool]:
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    with session.get(job.url, headers=headers, stream=True, timeout=TIMEOUT) as r:
        if offset and r.status_code == 416:
            raise _RangeRefused()
        if r.status_code >= 400:
            raise FetchError(
                f"HTTP {r.status_code} for {redact(job.url)}.",
                path=job.rel,
                hint="Check the index is reachable (and credentials in ~/.netrc), then fetch again.",
            )
        resumed = bool(offset) and r.status_code == 206
        h = hashlib.sha256()
        if resumed:
            with open(part, "rb") as fh:
                while chunk := fh.read(1 << 20):
                    h.update(chunk)
        length = int(r.headers.get("Content-Length") or 0)
        prog.add_total(length)
        size = offset if resumed else 0
        with open(part, "ab" if resumed else "wb") as fh:
            for chunk in r.iter_content(_CHUNK):
                if cancel.is_set():
                    raise _Cancelled()
                fh.write(chunk)
                h.update(chunk)
                size += len(chunk)
                prog.advance(len(chunk))
    return h.hexdigest(), size, resumed


def _finish(job: _Job, part: Path, dest: Path, prog: _Progress, stats: _Stats,
            size: int, *, resumed: bool) -> None:
    # The hash of the bytes on disk, not of the bytes received: what is renamed into place is what
    # was checked (the caller holds the artifact's lock, so no other fetch writes this .part).
    digest = sha256_file(part)
    if job.sha256 and digest != job.sha256:
        part.unlink(missing_ok=True)
        raise HashMismatch(f"{job.rel} (from {redact(job.url)})", job.sha256, digest)
    os.replace(part, dest)
    job.sha256 = digest  # fills in a build requirement whose index gave no hash
    prog.file_done()
    with stats.lock:
        stats.downloaded += 1
        stats.downloaded_bytes += size
        stats.resumed += int(resumed)


def _run_downloads(cache: Path, todo: Sequence[_Job], jobs: int, prog: _Progress, stats: _Stats) -> None:
    if not todo:
        return
    session = _session(jobs)
    errors: list[EnvbuildError] = []
    pool = ThreadPoolExecutor(max_workers=max(1, jobs), thread_name_prefix="fetch")
    try:
        futs = {pool.submit(_locked_download, session, j, cache, prog, stats): j for j in todo}
        for fut in as_completed(futs):
            exc = fut.exception()
            if isinstance(exc, EnvbuildError):
                errors.append(exc)
            elif exc is not None and not isinstance(exc, _Cancelled):
                raise exc
    except BaseException:
        # Ctrl-C or a bug: stop every download now; their .part files are resumed next time.
        stats.cancel.set()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        session.close()
    if errors:
        # A hash mismatch is the most important thing to tell; other failures are listed after it.
        errors.sort(key=lambda e: not isinstance(e, HashMismatch))
        first = errors[0]
        if len(errors) > 1:
            others = "; ".join(e.render() for e in errors[1:4])
            first.hint = (first.hint or "") + f" {len(errors) - 1} more failed: {others}"
        raise first


# --- build requirements -------------------------------------------------------------------------


def _build_requirements(lock: Lock, extra: Iterable[str]) -> list[str]:
    """setuptools + wheel + each sdist's declared ``requires`` that the lock itself does not hold."""
    locked = {canonicalize_name(a.name) for a in lock.artifacts}
    out: dict[str, Requirement] = {}
    reqs: list[str] = list(_BASE_BUILD_REQS)
    for a in lock.artifacts:
        if a.kind == "sdist" or a.build == "source":
            reqs.extend(a.requires)
    reqs.extend(extra)
    env = _target_markers(lock)
    for line in reqs:
        try:
            r = Requirement(line)
        except InvalidRequirement:
            raise InputError(f"build requirement '{line}' is not a PEP 508 requirement.",
                             path=str(lock.path), field="artifacts[].requires") from None
        key = canonicalize_name(r.name)
        # A marker is the TARGET's question ("ninja; sys_platform != 'win32'"): pip on this machine
        # would answer it for this machine's Python, so it is evaluated here and dropped.
        if key in locked or r.url or (r.marker is not None and not r.marker.evaluate(env)):
            continue
        # "setuptools" (always needed) and a project's "setuptools>=61" become one requirement.
        spec = out[key].specifier & r.specifier if key in out else r.specifier
        out[key] = Requirement(f"{r.name}{spec}")
    return sorted(str(r) for r in out.values())


def _target_markers(lock: Lock) -> dict[str, str]:
    """PEP 508 marker values of the target (its Python and OS); others are this machine's."""
    env = {"python_version": lock.python_xy, "python_full_version": f"{lock.python_xy}.0",
           "implementation_name": "cpython", "platform_python_implementation": "CPython", "extra": ""}
    if lock.platform.os == "linux":
        env.update({"os_name": "posix", "sys_platform": "linux", "platform_system": "Linux"})
        if lock.platform.arch:
            env["platform_machine"] = lock.platform.arch
    return env


def _pip_platforms(pip_platform: str | None) -> list[str]:
    """Every platform tag the target accepts, best first: pip takes ``--platform manylinux_2_35_x86_64``
    literally (no older levels), so a wheel tagged manylinux_2_17 (uv's, setuptools' C parts) was missed."""
    m = re.fullmatch(r"manylinux_2_(\d+)_(\w+)", pip_platform or "")
    if not m:
        return [pip_platform] if pip_platform else []
    return TargetPlatform(os="linux", arch=m.group(2), glibc=f"2.{m.group(1)}",
                          pip_platform=pip_platform or "", uv_platform="", conda_subdir="").platforms()


def _resolve_build_reqs(lock: Lock, reqs: Sequence[str], work: Path) -> list[tuple[str, str, str]]:
    """Ask pip which wheels (url, sha256, filename) ``reqs`` need on the TARGET python and platform.

    ``pip install --dry-run --report`` resolves without installing; fetch then downloads the
    chosen files itself, in parallel and hash-checked like every other artifact.
    """
    report = work / "build-report.json"
    cmd: list[str] = [sys.executable, "-m", "pip", "--isolated", "install", "--dry-run", "--ignore-installed",
                      "--timeout", f"{TIMEOUT[1]:.0f}", "--retries", "1",
                      "--disable-pip-version-check", "--quiet", "--only-binary=:all:",
                      "--python-version", lock.python_xy, "--implementation", "cp",
                      "--target", str(work / "target"), "--report", str(report)]
    for plat in _pip_platforms(lock.platform.pip_platform):
        cmd += ["--platform", plat]
    cmd += pip_index_args(lock.index_urls, lock.find_links)
    if not lock.index_urls:
        cmd.append("--no-index")
    run([*cmd, *reqs], tool="pip", env={"PIP_CONFIG_FILE": os.devnull},
        hint="Build requirements of sdists are downloaded for the target Python and platform; "
             "check the lock's index_urls are reachable.")
    out: list[tuple[str, str, str]] = []
    for item in json.loads(report.read_text()).get("install", []):
        info = item.get("download_info") or {}
        url = str(info.get("url") or "")
        sha = str(((info.get("archive_info") or {}).get("hashes") or {}).get("sha256") or "")
        out.append((url, sha.lower(), Path(urllib.parse.urlsplit(url).path).name))
    return out


# --- git dependencies -------------------------------------------------------------------------


def _git_checkout(url: str, commit: str, dest: Path) -> None:
    """Check out ``commit`` of ``url`` in ``dest``; HEAD must then be exactly that commit."""
    from envbuild.tools.git import checkout

    checkout(url, commit, dest)
    head = run(["git", "rev-parse", "HEAD"], cwd=dest, tool="git").stdout.strip()
    if head != commit:
        raise FetchError(f"checkout of {redact(url)} is at {head}, not the locked commit {commit}.",
                         path=redact(url), hint="The repository was rewritten; run 'envbuild lock' again.")


def _cached(cache: Path, rel: str, url: str, name: str, version: str, kind: str,
            commit: str) -> ManifestEntry:
    """The manifest entry of a file fetch made in the cache (hashed as it lies there)."""
    return ManifestEntry(file=rel, sha256=sha256_file(cache / rel), size=(cache / rel).stat().st_size,
                         url=url, name=name, version=version, kind=kind, commit=commit)


def _build_git(
    art: LockedArtifact, cache: Path, work: Path, lock: Lock
) -> tuple[ManifestEntry, list[str]]:
    """Build ``art`` at its commit: a pure wheel into git/, else a ``git archive`` sdist + its requires."""
    assert art.commit is not None
    src = work / "src"
    # A lock written by hand may keep pip's "git+" scheme prefix; git itself does not take it.
    _git_checkout(art.url.removeprefix("git+"), art.commit, src)
    epoch = run(["git", "log", "-1", "--format=%ct"], cwd=src, tool="git").stdout.strip()
    # A git artifact's subdir is the package's directory in the repository (pip's #subdirectory=).
    pkg = src / art.subdir if art.subdir else src
    out = work / "wheel"
    # SOURCE_DATE_EPOCH makes the zip timestamps (and so the hash) depend on the commit only.
    env = {"SOURCE_DATE_EPOCH": epoch or "315532800", "PIP_CONFIG_FILE": os.devnull}
    base = [sys.executable, "-m", "pip", "--isolated", "wheel", "--no-deps", "--disable-pip-version-check",
            "--no-cache-dir", "-w", str(out)]
    wheel: Path | None = None
    try:
        run([*base, "--no-build-isolation", str(pkg)], tool="pip", env=env)
    except ToolError:
        # The host lacks the project's build backend: let pip fetch it from the lock's index.
        with contextlib.suppress(ToolError):
            run([*base, *pip_index_args(lock.index_urls), str(pkg)], tool="pip", env=env)
    built = sorted(out.glob("*.whl")) if out.exists() else []
    if built:
        _, _, _, tags = parse_wheel_filename(built[0].name)
        if all((t.interpreter, t.abi, t.platform) in _PURE_TAGS or
               (t.interpreter in ("py3", "py2") and t.abi == "none" and t.platform == "any") for t in tags):
            wheel = built[0]
    if wheel is not None:
        rel = f"git/{wheel.name}"
        name, version = _wheel_name_version(wheel.name)
        (cache / "git").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(wheel, cache / rel)
        return _cached(cache, rel, art.url, name, version, "git-wheel", art.commit), []
    # Not pure Python (or not buildable here): keep the exact source and what building it needs.
    stem = f"{canonicalize_name(art.name).replace('-', '_')}-{art.version}"
    rel = f"git/{stem}-{art.commit[:12]}.tar.gz"
    (cache / "git").mkdir(parents=True, exist_ok=True)
    tmp = cache / (rel + ".part")
    tree = f"{art.commit}:{art.subdir}" if art.subdir else art.commit
    run(["git", "archive", "--format=tar.gz", f"--prefix={stem}/", "-o", str(tmp), tree],
        cwd=src, tool="git", env={"SOURCE_DATE_EPOCH": epoch})
    os.replace(tmp, cache / rel)
    requires = list(art.requires) or _pyproject_requires(pkg)
    return _cached(cache, rel, art.url, art.name, art.version, "git-sdist", art.commit), requires


def _sdist_build_requires(path: Path) -> list[str]:
    """``[build-system] requires`` of an sdist's top-level pyproject.toml, read without extracting."""
    import tarfile
    import zipfile

    text: str | None = None
    try:
        if path.name.endswith(".zip"):
            with zipfile.ZipFile(path) as zf:
                names = [n for n in zf.namelist() if n.count("/") == 1 and n.endswith("/pyproject.toml")]
                text = zf.read(names[0]).decode() if names else None
        else:
            with tarfile.open(path) as tf:
                for m in tf:
                    if m.isfile() and m.name.count("/") == 1 and m.name.endswith("/pyproject.toml"):
                        fh = tf.extractfile(m)
                        text = fh.read().decode() if fh is not None else None
                        break
        data = tomllib.loads(text) if text else {}
    except (OSError, tarfile.TarError, zipfile.BadZipFile, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return []
    reqs = data.get("build-system", {}).get("requires", [])
    return [str(r) for r in reqs] if isinstance(reqs, list) else []


def _pyproject_requires(src: Path) -> list[str]:
    try:
        data = tomllib.loads((src / "pyproject.toml").read_text())
    except (OSError, tomllib.TOMLDecodeError):
        return []
    reqs = data.get("build-system", {}).get("requires", [])
    return [str(r) for r in reqs] if isinstance(reqs, list) else []


def _wheel_name_version(filename: str) -> tuple[str, str]:
    name, version, _, _ = parse_wheel_filename(filename)
    return str(name), str(version)


# --- what build backends add at build time (PEP 517 get_requires_for_build_wheel) ---------------


@dataclass(frozen=True)
class _Source:
    """A source archive in the cache that the target builds."""

    file: str       # relative to the cache
    isolated: bool  # built in the installer's isolated env (else --no-build-isolation, after the lock)


@dataclass
class _Asked:
    answers: list[dict[str, Any]] = field(default_factory=list)   # {"file", "requires"} per source
    warnings: list[str] = field(default_factory=list)

    @property
    def requires(self) -> list[str]:
        return [r for a in self.answers for r in a["requires"]]


def _hook_sources(lock: Lock, entries: Sequence[ManifestEntry]) -> list[_Source]:
    out = [_Source(lock.cache_path(a), a.build != "source") for a in lock.artifacts if a.kind == "sdist"]
    return out + [_Source(e.file, False) for e in entries if e.kind == "git-sdist"]


def _source_tree(archive: Path, dest: Path) -> Path:
    """Unpack an sdist (or git archive) into ``dest``; its one top-level directory is the tree."""
    from envbuild._fs import safe_extract

    safe_extract(archive, dest)
    tops = list(dest.iterdir())
    return tops[0] if len(tops) == 1 and tops[0].is_dir() else dest


def _backend_index_args(lock: Lock) -> list[str]:
    if lock.index_urls:
        return pip_index_args(lock.index_urls, lock.find_links)
    return [*pip_index_args([], lock.find_links), "--no-index"] if lock.find_links else []


def _ask_one(root: Path, lock: Lock, src: _Source, work: Path,
             envs: dict[tuple[str, ...], Path]) -> list[str]:
    """The requirements ``src``'s backend adds to its static ones (raises HookFailed or ToolError)."""
    from envbuild.tools import pep517

    tree = _source_tree(root / src.file, work / "src")
    bs = pep517.read_build_system(tree)
    key = tuple(sorted(bs.requires))
    if key not in envs:  # one venv per set of static requirements, shared by the sources naming it
        envs[key] = pep517.make_build_env(work / "env", bs.requires, [root / "build", root / "wheels"],
                                          _backend_index_args(lock))
    answer = pep517.get_requires_for_build_wheel(tree, bs, envs[key], work)
    for line in answer:
        try:
            Requirement(line)
        except InvalidRequirement:
            raise pep517.HookFailed(f"it asked for {line!r}, which is not a PEP 508 requirement") from None
    static = set(bs.requires)
    return sorted({r for r in answer if r not in static})


def _ask_backends(root: Path, lock: Lock, sources: Sequence[_Source], show: bool) -> _Asked:
    """Ask each source's build backend what it adds at build time, in throw-away venvs of this machine."""
    from envbuild.output import err_console
    from envbuild.tools import pep517

    asked = _Asked()
    envs: dict[tuple[str, ...], Path] = {}
    with tempfile.TemporaryDirectory(prefix="envbuild-backend-") as tmp:
        for i, src in enumerate(sources):
            if show:
                err_console.print(f"asking the build backend of {src.file} what it needs at build time "
                                  f"({i + 1}/{len(sources)})", markup=False, highlight=False)
            try:
                reqs = _ask_one(root, lock, src, Path(tmp) / str(i), envs)
            except (pep517.HookFailed, ToolError) as exc:
                asked.warnings.append(_hook_problem(root, lock, src, exc, isinstance(exc, pep517.HookFailed)))
                continue
            asked.answers.append({"file": src.file, "requires": reqs})
    return asked


def _hook_problem(root: Path, lock: Lock, src: _Source, exc: Exception, hook_ran: bool) -> str:
    """The warning for a backend that could not be asked; raises when that is evidence of a failure.

    The target builds an sdist of requirements.txt in an isolated env from build/, as this venv was
    made: when its hook fails here on the target's Python, it fails there too -- an error.  Anything
    else proves nothing about the target (a warning): the venv could not be made here, the hook ran on
    another Python or OS, or the target builds it with --no-build-isolation beside the lock's packages
    (torch, ...), which this venv lacks.
    """
    why = (exc.message if isinstance(exc, ToolError) else str(exc)).strip() or "no output"
    host = f"{sys.version_info[0]}.{sys.version_info[1]} on {sys.platform}"
    target = f"{lock.python_xy} on {lock.platform.os or sys.platform}"
    if hook_ran and src.isolated and host == target:
        tail = "\n".join(why.splitlines()[-3:])  # the raising line and the exception
        raise ToolError(
            f"the build backend of {src.file} failed when asked which requirements it adds at build time "
            f"(PEP 517 get_requires_for_build_wheel, run here in an isolated venv as pip runs it before "
            f"building):\n{tail}", path=str(root / src.file), field="get_requires_for_build_wheel",
            hint="pip asks the same when it builds this sdist on the target, so the offline install would "
                 "stop there.  Check that it builds here ('pip wheel --no-deps FILE'); if it builds only on "
                 "a machine like the target, build a wheel there and lock that wheel instead "
                 "(--find-links DIR).") from None
    if not src.isolated:
        because = ("it is built on the target with --no-build-isolation, beside the lock's packages, "
                   "which this check's venv lacks")
    elif hook_ran:
        because = f"asked with this machine's Python {host}, the target has Python {target}"
    else:
        because = "its build requirements could not be installed here for this machine's Python"
    return (f"{src.file}: could not ask its build backend what it adds at build time "
            f"({why.splitlines()[-1][:300]}); only its static build requirements are in build/ ({because})")


# --- conda channel ------------------------------------------------------------------------------


def _index_channel(channel: Path) -> None:
    """Write repodata.json for every subdir (and noarch) of a local conda channel with py-rattler."""
    (channel / "noarch").mkdir(parents=True, exist_ok=True)
    try:
        from rattler.index import index_fs
    except ImportError:  # pragma: no cover - py-rattler is a dependency
        raise ToolError("py-rattler is not installed; it indexes the local conda channel.",
                        hint="pip install py-rattler") from None
    try:
        asyncio.run(index_fs(channel, write_zst=False, write_shards=False, force=True))
        # rattler leaves its scratch directory behind; it is not part of the channel.
        shutil.rmtree(channel / ".tmp", ignore_errors=True)
    except Exception as exc:
        raise ToolError(f"indexing the conda channel failed: {exc}.", path=str(channel),
                        field="rattler") from None


# --- the stage --------------------------------------------------------------------------------


@dataclass(frozen=True)
class FetchResult:
    """What ``fetch`` did; ``to_dict`` is the ``--json`` summary."""

    cache: str
    manifest: str
    files: int
    bytes: int
    downloaded: int
    downloaded_bytes: int
    skipped: int
    resumed: int
    repaired: tuple[str, ...]
    build_requirements: tuple[str, ...]
    git: tuple[dict[str, Any], ...]
    conda_subdirs: tuple[str, ...]
    seconds: float
    download_seconds: float
    uv: str | None = None          # tools/uv-*.whl: install-offline.sh installs with it (pip if absent)
    uv_note: str | None = None     # why the bundle has no uv (then install-offline.sh uses pip)
    # what each sdist's / git source's backend asked for at build time ({"file", "requires"})
    backend_requires: tuple[dict[str, Any], ...] = ()
    warnings: tuple[str, ...] = ()

    @property
    def mb_per_s(self) -> float:
        """Download throughput: bytes received over the time spent downloading (not building)."""
        t = self.download_seconds
        return round(self.downloaded_bytes / 1e6 / t, 2) if t > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["mb_per_s"] = self.mb_per_s
        d["ok"] = True
        for k in ("repaired", "build_requirements", "git", "conda_subdirs", "backend_requires", "warnings"):
            d[k] = list(d[k])
        return d


def _plan(cache: Path, jobs: Sequence[_Job], stats: _Stats, lock_file: Path,
          workers: int = 4) -> tuple[list[_Job], list[_Job]]:
    """Split files into already-good (no request needed) and to-download."""
    unique: list[_Job] = []
    seen: dict[str, str] = {}
    for job in jobs:
        if job.rel in seen:
            if seen[job.rel] != job.sha256:
                raise InputError(f"two artifacts share the file name {job.rel} with different hashes.",
                                 path=str(lock_file), field="artifacts")
            continue
        seen[job.rel] = job.sha256
        unique.append(job)
    present = [j for j in unique if j.sha256 and (cache / j.rel).is_file()]
    # Re-hashing a warm cache (torch alone is 2 GB) is I/O bound and hashlib drops the GIL.
    with ThreadPoolExecutor(max_workers=workers) as pool:
        digests = dict(zip((j.rel for j in present), pool.map(lambda j: sha256_file(cache / j.rel), present),
                           strict=True))
    have: list[_Job] = []
    todo: list[_Job] = []
    for job in unique:
        if job.rel in digests and digests[job.rel] == job.sha256:
            have.append(job)
            stats.skipped += 1
            continue
        # Missing or altered: re-checked, repaired and downloaded under the artifact's lock.
        todo.append(job)
    return have, todo


def _download_round(root: Path, jobs: Sequence[_Job], stats: _Stats, n_jobs: int, show: bool,
                    lock_file: Path) -> list[ManifestEntry]:
    have, todo = _plan(root, jobs, stats, lock_file)
    t0 = time.monotonic()
    with _Progress(show and bool(todo), len(have) + len(todo)) as prog:
        prog.done = len(have)
        _run_downloads(root, todo, n_jobs, prog, stats)
    stats.download_seconds += time.monotonic() - t0 if todo else 0.0
    return [ManifestEntry(file=j.rel, sha256=j.sha256, size=(root / j.rel).stat().st_size,
                          url=redact(j.url), commit=None, name=j.art.name, version=j.art.version, kind=j.kind)
            for j in have + todo]


def _reuse(cache: Path, old: Sequence[ManifestEntry], kinds: set[str],
           match: Callable[[ManifestEntry], bool], recorded: dict[str, str]) -> list[ManifestEntry] | None:
    """Old manifest entries of ``kinds`` passing ``match`` whose files still have the hash the LOCK
    recorded for them (``built.sha256``), else None.  The manifest's own hashes are not trusted: it
    lives in the cache, next to the files it describes."""
    picked = [e for e in old if e.kind in kinds and match(e)]
    if not picked:
        return None
    for e in picked:
        p = cache / e.file
        if e.file not in recorded or not p.is_file() or sha256_file(p) != recorded[e.file]:
            return None
    return [dataclasses.replace(e, sha256=recorded[e.file], build_key=None) for e in picked]


def _git_round(root: Path, lock: Lock, old: Sequence[ManifestEntry], stats: _Stats,
               recorded: dict[str, str]) -> tuple[list[ManifestEntry], list[dict[str, Any]], list[str]]:
    entries: list[ManifestEntry] = []
    info: list[dict[str, Any]] = []
    extra_reqs: list[str] = []
    for art in lock.artifacts:
        if art.kind != "git":
            continue
        def same(e: ManifestEntry, a: LockedArtifact = art) -> bool:
            return e.commit == a.commit and e.url == redact(a.url)

        # One build per commit at a time, also across fetch processes sharing the cache.
        with file_lock(root, f"git-{art.commit}"):
            reuse = _reuse(root, old, {"git-wheel", "git-sdist"}, same, recorded)
            if reuse:
                ent = reuse[0]
                stats.skipped += 1
                if ent.kind == "git-sdist":  # what the build that made it returned
                    extra_reqs.extend(list(art.requires) or _sdist_build_requires(root / ent.file))
            else:
                with tempfile.TemporaryDirectory(prefix="envbuild-git-") as tmp:
                    ent, reqs = _build_git(art, root, Path(tmp), lock)
                extra_reqs.extend(reqs)
                if ent.file in recorded and recorded[ent.file] != ent.sha256:
                    raise HashMismatch(
                        f"{ent.file} (built from {redact(art.url)} at {art.commit}; the lock's "
                        f"{BUILT_FILE} records another build)", recorded[ent.file], ent.sha256)
        entries.append(ent)
        info.append({"name": art.name, "commit": art.commit, "file": ent.file, "kind": ent.kind})
    return entries, info, extra_reqs


def _build_round(root: Path, lock: Lock, reqs: Sequence[str], old: Sequence[ManifestEntry],
                 stats: _Stats, jobs: int, show: bool, recorded: dict[str, str]) -> list[ManifestEntry]:
    key = _build_key(lock, reqs)
    reuse = _reuse(root, old, {"build-req"}, lambda e: e.build_key == key, recorded)
    if reuse and {e.build_key for e in old if e.kind == "build-req"} == {key}:
        stats.skipped += len(reuse)
        return reuse
    with tempfile.TemporaryDirectory(prefix="envbuild-buildreq-") as tmp:
        chosen = _resolve_build_reqs(lock, reqs, Path(tmp))
    todo = []
    for url, sha, fn in chosen:
        name, version = _wheel_name_version(fn)
        art = LockedArtifact(name=name, version=version, kind="build-req", url=url, sha256=sha, filename=fn)
        todo.append(_Job(url, f"build/{fn}", sha, art, "build-req"))
    return _download_round(root, todo, stats, jobs, show, Path(lock.path or LOCK_FILE))


def _uv_round(root: Path, lock: Lock, old: Sequence[ManifestEntry], stats: _Stats, jobs: int,
              show: bool, recorded: dict[str, str]) -> tuple[list[ManifestEntry], str | None]:
    """The uv wheel for the TARGET's platform (uv ships one static binary per platform), the version
    this machine locked with; install-offline.sh installs with it. Not found: pip is used, said."""
    import importlib.metadata

    version = importlib.metadata.version("uv")
    reuse = _reuse(root, old, {"tool"}, lambda e: e.name == "uv" and e.version == version
                   and f"|{lock.platform.pip_platform}" in (e.build_key or ""), recorded)
    if reuse:
        stats.skipped += len(reuse)
        return reuse, None
    try:
        with tempfile.TemporaryDirectory(prefix="envbuild-uv-") as tmp:
            chosen = _resolve_build_reqs(lock, [f"uv=={version}"], Path(tmp))
    except ToolError as exc:
        return [], (f"no uv {version} wheel for {lock.platform.pip_platform} on the lock's indexes: "
                    f"install-offline.sh will install with pip ({exc.message.splitlines()[-1][:200]})")
    todo = [_Job(url, f"tools/{fn}", sha, LockedArtifact(name="uv", version=version, kind="tool", url=url,
                                                          sha256=sha, filename=fn), "tool")
            for url, sha, fn in chosen if fn.startswith("uv-")]
    return _download_round(root, todo, stats, jobs, show, Path(lock.path or LOCK_FILE)), None


def _build_key(lock: Lock, reqs: Sequence[str]) -> str:
    return f"{lock.python_xy}|{lock.platform.pip_platform}|" + ",".join(reqs)


def _as_lock(lock: str | os.PathLike[str] | Lock) -> Lock:
    return lock if isinstance(lock, Lock) else load_lock(lock)


def _fetch_files(root: Path, lock: Lock, old: Sequence[ManifestEntry], stats: _Stats, jobs: int,
                 show: bool
                 ) -> tuple[list[ManifestEntry], list[dict[str, Any]], list[str], str | None, _Asked]:
    """Every download and build of the lock: its files, git builds, build requirements and uv.

    Returns (entries, git info, the build requirements, why there is no uv or None, the backends' answers).
    """
    files = [_Job(a.url, lock.cache_path(a), a.sha256, a, a.kind) for a in lock.artifacts if a.kind != "git"]
    entries = _download_round(root, files, stats, jobs, show, Path(lock.path or LOCK_FILE))
    recorded = read_built(lock.directory)
    git_entries, git_info, extra_reqs = _git_round(root, lock, old, stats, recorded)
    entries += git_entries
    # An sdist's own pyproject.toml names its build backend (meson-python, scikit-build, ...).
    for art in lock.artifacts:
        if art.kind == "sdist":
            extra_reqs += _sdist_build_requires(root / lock.cache_path(art))
    build_reqs: list[str] = []
    asked = _Asked()
    if extra_reqs or any(a.kind == "sdist" or a.build == "source" for a in lock.artifacts):
        build_entries, build_reqs, asked = _build_reqs_round(root, lock, extra_reqs, git_entries, old, stats,
                                                             jobs, show, recorded)
        entries += build_entries
    uv_entries, uv_note = _uv_round(root, lock, old, stats, jobs, show, recorded)
    entries += uv_entries
    return entries, git_info, build_reqs, uv_note, asked


def _build_reqs_round(root: Path, lock: Lock, extra_reqs: Sequence[str], git_entries: Sequence[ManifestEntry],
                      old: Sequence[ManifestEntry], stats: _Stats, jobs: int, show: bool,
                      recorded: dict[str, str]) -> tuple[list[ManifestEntry], list[str], _Asked]:
    """The static build requirements, then what each source's backend adds, resolved for the target."""
    static = _build_requirements(lock, extra_reqs)
    sources = _hook_sources(lock, git_entries)
    if not sources:
        return _build_round(root, lock, static, old, stats, jobs, show, recorded), static, _Asked()
    first: list[ManifestEntry] | None = None
    if _reuse(root, old, {"build-req"}, lambda e: True, recorded) is None:
        # Nothing in build/ yet: the backends are installed from the files this fetches for the target.
        first = _build_round(root, lock, static, old, stats, jobs, show, recorded)
    asked = _ask_backends(root, lock, sources, show)
    reqs = _build_requirements(lock, [*extra_reqs, *asked.requires])
    if first is not None and reqs == static:
        return first, reqs, asked
    again = _Stats()
    entries = _build_round(root, lock, reqs, old, again, jobs, show, recorded)
    # The files of the first round are not counted twice (downloaded there, found here).
    stats.skipped += again.skipped - len({e.file for e in first or ()} & {e.file for e in entries})
    stats.downloaded += again.downloaded
    stats.downloaded_bytes += again.downloaded_bytes
    stats.resumed += again.resumed
    stats.repaired += again.repaired
    stats.download_seconds += again.download_seconds
    return entries, reqs, asked


def fetch(
    lock_dir: str | os.PathLike[str] | Lock,
    cache: str | os.PathLike[str] = "offline_cache",
    *,
    jobs: int = 8,
    show_progress: bool = True,
) -> FetchResult:
    """Download, build and index everything the lock needs into ``cache``; write manifest.json.

    ``lock_dir`` is a lock directory or the ``Lock`` a caller already read.

    Raises:
        InputError: the lock is missing or malformed.
        HashMismatch: a downloaded file differs from the lock's sha256 (nothing is renamed into place).
        FetchError: a download failed (partial files are kept and resumed next time).
        ToolError: pip, git or py-rattler failed.
    """
    if jobs < 1:
        raise InputError("--jobs must be at least 1.", field="jobs")
    t0 = time.monotonic()
    lock = _as_lock(lock_dir)
    # A new directory or a cache envbuild made: fetch repairs files in it, so never the user's folder.
    root = claim_output_dir(cache, field="--cache")
    stats = _Stats()
    entries, git_info, build_reqs, uv_note, asked = _fetch_files(root, lock, _old_entries(root), stats, jobs,
                                                                 show_progress)
    uv = next((e.file for e in entries if e.kind == "tool"), None)
    subdirs: list[str] = []
    if any(a.kind == "conda" for a in lock.artifacts):
        _index_channel(root / "conda")
        subdirs = sorted(p.parent.name for p in (root / "conda").glob("*/repodata.json")
                         if not p.parent.name.startswith("."))
    key = _build_key(lock, build_reqs)
    manifest = CacheManifest(
        lock_name=lock.name, lock_spec_hash=lock.spec_hash, python=lock.python_xy,
        platform=lock.platform.pip_platform or None,
        files=tuple(sorted((dataclasses.replace(e, build_key=key if e.kind in ("build-req", "tool") else None)
                            for e in entries), key=lambda e: e.file)))
    _write_built(lock.directory, manifest.files)
    # install-offline.sh reads this with awk (no python needed on the server): dumps keeps one key
    # per line and sorted keys, so "file" precedes "sha256" in every entry.
    atomic_write(root / MANIFEST_FILE, manifest.dumps())
    return FetchResult(
        cache=str(root), manifest=str(root / MANIFEST_FILE), files=len(entries),
        bytes=sum(e.size for e in entries), downloaded=stats.downloaded,
        downloaded_bytes=stats.downloaded_bytes, skipped=stats.skipped, resumed=stats.resumed,
        repaired=tuple(stats.repaired), build_requirements=tuple(build_reqs), git=tuple(git_info),
        conda_subdirs=tuple(subdirs), seconds=round(time.monotonic() - t0, 3),
        download_seconds=round(stats.download_seconds, 3), uv=uv, uv_note=uv_note,
        backend_requires=tuple(asked.answers), warnings=tuple(asked.warnings),
    )


def present_fetch(result: FetchResult, as_json: bool) -> None:
    """Print the fetch summary: JSON, or a short table for people."""
    from envbuild.output import console, print_json, styled, table

    if as_json:
        print_json(result.to_dict())
        return
    rows = [
        ("cache", result.cache),
        ("files", f"{result.files} ({result.bytes / 1e6:.1f} MB)"),
        ("downloaded",
         f"{result.downloaded} ({result.downloaded_bytes / 1e6:.1f} MB, {result.mb_per_s} MB/s)"),
        ("already cached", result.skipped),
        ("resumed", result.resumed),
        ("replaced (altered in cache)", ", ".join(result.repaired) or None),
        ("build requirements", ", ".join(result.build_requirements) or None),
        ("git", ", ".join(f"{g['name']}@{str(g['commit'])[:12]} -> {g['file']}" for g in result.git) or None),
        ("asked of build backends", "; ".join(f"{a['file']}: {', '.join(a['requires']) or 'nothing more'}"
                                              for a in result.backend_requires) or None),
        ("conda subdirs", ", ".join(result.conda_subdirs) or None),
        ("installer", f"uv ({result.uv})" if result.uv else f"pip ({result.uv_note})"),
        ("seconds", result.seconds),
    ]
    console.print(table("envbuild fetch", ["", "value"], rows))
    for w in result.warnings:
        console.print(styled("warning:", "yellow", w), highlight=False)
