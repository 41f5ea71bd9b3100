"""envbuild bundle / verify-cache: carry a lock and its offline cache to a server as one checked .tar.

``verify_cache`` re-hashes every file the manifest lists and, given a lock (``--lock``), checks the
manifest against the lock's hashes and a bundle's own lock files against it; a bundle's own lock
is used instead only when asked (``--trust-bundle-lock``).  A bundle is extracted with
``envbuild._fs.safe_extract`` into a temp directory first, so nothing inside it is trusted by
name.  ``bundle`` verifies the cache, then writes ``NAME-offline/`` (lock, rendered scripts,
cache, README.txt) into a tar atomically.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tarfile
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from envbuild._fs import (
    atomic_file,
    atomic_write,
    check_output_file,
    is_within_directory,
    safe_extract,
    sha256_file,
)
from envbuild.errors import FetchError, InputError
from envbuild.fetch import BUILT_FILE, MANIFEST_FILE, load_manifest, read_built
from envbuild.lockfile import LOCK_FILE, Lock, load_lock
from envbuild.models import CacheManifest, ManifestEntry

__all__ = ["BundleResult", "Problem", "VerifyReport", "bundle", "present_bundle", "present_verify",
           "verify_cache"]

CACHE_DIR = "offline_cache"


@dataclass(frozen=True)
class Problem:
    """One bad file: ``missing``, ``altered``, ``unsafe-path``, ``lock-mismatch``, ``unlisted`` or
    ``lock-differs`` (a bundle's own lock file is not the one given with --lock)."""

    file: str
    problem: str
    expected: str | None = None
    actual: str | None = None
    detail: str | None = None


@dataclass(frozen=True)
class VerifyReport:
    """Result of re-hashing a cache; ``to_dict`` is the ``--json`` output."""

    source: str
    cache: str
    lock: str | None
    checked: int
    bytes: int
    problems: tuple[Problem, ...] = field(default_factory=tuple)
    # "manifest" (no lock: files intact, not proven to be the locked ones), "lock" (the lock the
    # user gave) or "bundle-lock" (the lock inside the bundle, asked for with --trust-bundle-lock)
    checked_against: str = "manifest"

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "source": self.source, "cache": self.cache, "lock": self.lock,
                "checked_against": self.checked_against, "checked": self.checked, "bytes": self.bytes,
                "problems": [asdict(p) for p in self.problems]}


def _escapes(cache: Path, rel: str) -> bool:
    """A manifest entry whose path is absolute, climbs out or resolves outside the cache."""
    return os.path.isabs(rel) or ".." in Path(rel).parts or not is_within_directory(cache, cache / rel)


def _listed(cache: Path, manifest: CacheManifest) -> tuple[list[ManifestEntry], list[Problem]]:
    """The manifest's entries that are safe paths to existing files, and a problem for each other one."""
    present: list[ManifestEntry] = []
    problems: list[Problem] = []
    for e in manifest.files:
        if _escapes(cache, e.file):
            problems.append(Problem(e.file, "unsafe-path", detail="manifest path escapes the cache"))
        elif not (cache / e.file).is_file():
            problems.append(Problem(e.file, "missing", expected=e.sha256))
        else:
            present.append(e)
    return present, problems


def _check_dir(cache: Path, lock: Lock | None) -> tuple[int, int, list[Problem]]:
    manifest = load_manifest(cache)
    present, problems = _listed(cache, manifest)
    for e in present:
        actual = sha256_file(cache / e.file)
        if actual != e.sha256:
            problems.append(Problem(e.file, "altered", expected=e.sha256, actual=actual))
    if lock is not None:
        problems += _check_lock(cache, lock, manifest.by_file())
    return len(present), sum((cache / e.file).stat().st_size for e in present), problems


def _check_lock(cache: Path, lock: Lock, by_file: dict[str, ManifestEntry]) -> list[Problem]:
    """Every lock artifact must be in the manifest with the lock's own hash (git: at its commit)."""
    out: list[Problem] = []
    for a in lock.artifacts:
        if a.kind == "git":
            if not any(e.commit == a.commit and e.kind.startswith("git") for e in by_file.values()):
                out.append(Problem(f"git:{a.name}", "missing", expected=a.commit,
                                   detail="no file built at the locked commit"))
            continue
        rel = lock.cache_path(a)
        e = by_file.get(rel)
        if e is None:
            path = cache / rel
            actual = sha256_file(path) if path.is_file() else None
            prob = "missing" if actual is None else ("altered" if actual != a.sha256 else "unlisted")
            out.append(Problem(rel, prob, expected=a.sha256, actual=actual,
                               detail="in the lock but not in manifest.json"))
        elif e.sha256 != a.sha256:
            out.append(Problem(rel, "lock-mismatch", expected=a.sha256, actual=e.sha256,
                               detail="manifest.json disagrees with the lock"))
    out += _check_built(cache, lock, by_file)
    return out


def _check_built(cache: Path, lock: Lock, by_file: dict[str, ManifestEntry]) -> list[Problem]:
    """git/, build/ and tools/ against the lock's own record of them (built.sha256), not the manifest's."""
    recorded = read_built(lock.directory)
    out: list[Problem] = []
    for rel, e in sorted(by_file.items()):
        if not rel.startswith(("git/", "build/", "tools/")):
            continue
        want = recorded.get(rel)
        if want is None:
            out.append(Problem(rel, "unrecorded", actual=e.sha256,
                               detail=f"the lock records no sha256 for it ({BUILT_FILE}); run "
                                      "'envbuild fetch'"))
        elif e.sha256 != want:
            out.append(Problem(rel, "lock-mismatch", expected=want, actual=e.sha256,
                               detail=f"manifest.json disagrees with the lock's {BUILT_FILE}"))
    for rel, want in sorted(recorded.items()):
        path = cache / rel
        actual = sha256_file(path) if path.is_file() else None
        if actual != want:
            out.append(Problem(rel, "missing" if actual is None else "altered", expected=want, actual=actual,
                               detail=f"checked against the lock's {BUILT_FILE}"))
    return out


def _find_one(root: Path, patterns: tuple[str, ...], source: Path, what: str) -> Path | None:
    for pat in patterns:
        hits = sorted(root.glob(pat))
        if len(hits) > 1:
            # Which one would a user install from? Refuse rather than pick one for them.
            raise FetchError(f"the bundle holds {len(hits)} {what}s ("
                             + ", ".join(str(h.relative_to(root)) for h in hits[:5]) + ").",
                             path=str(source), hint="Make the bundle again with 'envbuild bundle LOCKDIR'.")
        if hits:
            return hits[0]
    return None


@contextlib.contextmanager
def _opened(source: Path) -> Iterator[tuple[Path, Path | None]]:
    """Yield (cache dir, lock dir found inside or None); a bundle is extracted safely first."""
    if source.is_dir():
        yield source, None
        return
    if not source.is_file():
        raise InputError("no such cache directory or bundle.", path=str(source),
                         hint="Pass the offline_cache directory or a NAME-offline.tar bundle.")
    with tempfile.TemporaryDirectory(prefix="envbuild-verify-") as tmp:
        try:
            safe_extract(source, tmp)
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise FetchError(f"cannot read the bundle ({exc}).", path=str(source),
                             hint="The file is damaged or not a tar; make it again with 'envbuild bundle'."
                             ) from None
        root = Path(tmp)
        manifest = _find_one(root, (MANIFEST_FILE, f"{CACHE_DIR}/{MANIFEST_FILE}",
                                    f"*/{CACHE_DIR}/{MANIFEST_FILE}"), source, "offline cache manifest")
        if manifest is None:
            raise FetchError("the bundle holds no offline_cache/manifest.json.", path=str(source),
                             hint="Make it with 'envbuild bundle LOCKDIR'.")
        lock = _find_one(root, (f"*/lockfiles/*/{LOCK_FILE}", f"lockfiles/*/{LOCK_FILE}"), source, "lock")
        yield manifest.parent, (lock.parent if lock else None)


def _lock_differs(inner: Path, given: Path) -> list[Problem]:
    """The bundle installs from its OWN lock files: each must be the given lock's file, byte for byte."""
    out = []
    for p in sorted(inner.iterdir()):
        if not p.is_file() or p.is_symlink():
            continue
        mine = given / p.name
        theirs = sha256_file(p)
        ours = sha256_file(mine) if mine.is_file() else None
        if ours != theirs:
            out.append(Problem(f"lockfiles/{inner.name}/{p.name}", "lock-differs", expected=ours,
                               actual=theirs,
                               detail=f"the bundle's copy is not {mine}" if ours else f"not in {given}"))
    return out


def verify_cache(
    source: str | os.PathLike[str], lock_dir: str | os.PathLike[str] | None = None, *,
    trust_bundle_lock: bool = False,
) -> VerifyReport:
    """Re-hash every manifest file of a cache dir or bundle .tar, and check it against a lock.

    The lock is ``lock_dir`` when given (for a bundle, its own lock files must then equal those
    of ``lock_dir``, since the bundle's scripts install from them).  A bundle's own lock is used
    only with ``trust_bundle_lock``: it came with the files, so it shows the bundle is
    self-consistent, not that it is the one the user locked.  With neither, only the manifest
    is checked, and ``checked_against`` says so.

    Raises:
        InputError: the path does not exist, the lock is malformed, or both lock options are given.
        FetchError: there is no readable manifest (or, with ``trust_bundle_lock``, no lock inside).
    """
    src = Path(source)
    if lock_dir is not None and trust_bundle_lock:
        raise InputError("give either --lock LOCKDIR or --trust-bundle-lock, not both.",
                         field="--trust-bundle-lock",
                         hint="--lock checks against your lock (the bundle's own lock must then equal it).")
    if trust_bundle_lock and not src.is_file():
        raise InputError("--trust-bundle-lock applies to a bundle .tar, not a cache directory.",
                         path=str(src), field="--trust-bundle-lock", hint="Pass --lock LOCKDIR instead.")
    with _opened(src) as (cache, inner_lock):
        chosen = Path(lock_dir) if lock_dir is not None else inner_lock if trust_bundle_lock else None
        if trust_bundle_lock and chosen is None:
            raise FetchError("the bundle holds no lockfiles/NAME/envbuild.lock.json to trust.", path=str(src),
                             hint="Pass --lock LOCKDIR with the lock the bundle was made from.")
        lock = load_lock(chosen) if chosen is not None else None
        checked, total, problems = _check_dir(cache, lock)
        if lock_dir is not None and inner_lock is not None:
            problems += _lock_differs(inner_lock, Path(lock_dir))
        lock_label = str(lock_dir) if lock_dir is not None else (
            f"{src}:{chosen.relative_to(cache.parent)}" if chosen is not None else None)
    against = "lock" if lock_dir is not None else "bundle-lock" if trust_bundle_lock else "manifest"
    return VerifyReport(source=str(src), cache=str(cache) if src.is_dir() else f"{src}:{CACHE_DIR}",
                        lock=lock_label, checked=checked, bytes=total, problems=tuple(problems),
                        checked_against=against)


def present_verify(report: VerifyReport, as_json: bool) -> None:
    """Print a verify report: JSON, or a table of problems (or one ok line) for people."""
    from envbuild.output import console, err_console, print_json, styled, table

    if as_json:
        print_json(report.to_dict())
        return
    if report.ok:
        bundle_src = report.cache != report.source
        whose = "the bundle's own manifest.json" if bundle_src else "manifest.json"
        against = {
            "lock": f" and the lock {report.lock}",
            "bundle-lock": f" and the lock inside the bundle ({report.lock}; it came with the files, so this "
                           "shows the bundle is self-consistent, not that it is the one you locked)",
            "manifest": "; no lock was given, so this shows the files are intact, not that they are the "
                        "ones your lock names: pass --lock LOCKDIR"
                        + (" (or --trust-bundle-lock to use the lock inside the bundle)"
                           if bundle_src else ""),
        }[report.checked_against]
        console.print(f"ok: {report.checked} files ({report.bytes / 1e6:.1f} MB) in {report.source} match "
                      f"{whose}{against}", highlight=False, markup=False)
        return
    rows = [(p.file, p.problem, p.expected, p.actual, p.detail) for p in report.problems]
    console.print(table(f"verify-cache {report.source}: {len(report.problems)} bad",
                        ["file", "problem", "expected sha256", "actual sha256", "detail"], rows))
    # One plain line per file too, so hashes are never folded by the terminal width.
    for p in report.problems[:20]:
        err_console.print(f"{p.file}: {p.problem}: expected sha256 {p.expected}, got {p.actual}",
                          highlight=False, soft_wrap=True)
    err_console.print(styled("error:", "bold red", "the cache is not usable; delete the bad files and run "
                      "'envbuild fetch' again."), highlight=False)


# --- bundle -------------------------------------------------------------------------------------



FORMATS = ("tar", "dir")
_TAR_OVERHEAD = 3 * tarfile.BLOCKSIZE  # per member: header, a possible pax header, padding


@dataclass(frozen=True)
class BundleResult:
    """What ``bundle`` wrote; ``to_dict`` is the ``--json`` output."""

    output: str
    top: str
    files: int
    bytes: int
    scripts: tuple[str, ...]
    verified: int
    format: str = "tar"
    # Bytes that landed on disk (a hardlink costs none) and how many cache files are hardlinks.
    bytes_written: int = 0
    hardlinked: int = 0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["scripts"] = list(self.scripts)
        d["ok"] = True
        return d


def _render_scripts(lock: Lock, out: Path, texts: Mapping[str, str] | None) -> list[str]:
    """The scripts and INSTALL.md written into ``out``: ``texts`` when the caller rendered them
    already (plan), else rendered from the lock."""
    from envbuild.render import render_texts

    for name, text in (texts if texts is not None else render_texts(lock)).items():
        atomic_write(out / name, text, mode=0o755 if name.endswith(".sh") else 0o644)
    return sorted(p.name for p in out.iterdir())


def _readme(name: str, top: str, scripts: list[str], fmt: str = "tar") -> str:
    install = "install-offline.sh" if "install-offline.sh" in scripts else (scripts[0] if scripts else None)
    what = "archive" if fmt == "tar" else "directory"
    lines = [
        f"envbuild offline bundle: {name}",
        "",
        f"This {what} holds everything needed to create the environment on a machine with NO network:",
        f"  {'lockfiles/' + name + '/':<22}the lock (exact versions and sha256 of every file)",
        f"  {CACHE_DIR + '/':<22}every wheel, sdist, git build and conda package, with manifest.json",
        f"  {'*.sh, INSTALL.md':<22}the install scripts rendered from the lock",
        "",
        "On the server:",
    ]
    if fmt == "tar":
        lines += [f"  tar -xf {top}.tar"]
    else:
        lines += [f"  (copy it over first, e.g. rsync -a {top}/ server:{top}/)"]
    lines += [f"  cd {top}"]
    if install:
        lines += [f"  bash {install}            # options: --prefix DIR (default ./env), --cache DIR", "",
                  "The script checks every file against manifest.json and the lock's sha256 before it",
                  "installs anything, then installs with --no-index from offline_cache/."]
    else:
        lines += ["  (no install script was rendered; run 'envbuild render' on the lock and bundle again)"]
    if fmt == "tar":
        lines += ["",
                  "To check the bundle without unpacking it (on any machine with envbuild), against your own",
                  "copy of the lock (the bundle's own lock proves only that the bundle is self-consistent):",
                  f"  envbuild verify-cache {top}.tar --lock lockfiles/{name}",
                  f"  envbuild verify-cache {top}.tar --trust-bundle-lock   # against the lock inside it", ""]
    else:
        lines += ["", "To check the bundle (on any machine with envbuild), against your own copy of the",
                  "lock:",
                  f"  envbuild verify-cache {top}/{CACHE_DIR} --lock lockfiles/{name}", ""]
    return "\n".join(lines)


def _tar_filter(info: tarfile.TarInfo) -> tarfile.TarInfo:
    # Reproducible, owner-free members; scripts keep their exec bit.
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.mode = 0o755 if info.isdir() or info.mode & stat.S_IXUSR else 0o644
    return info


def _is_bundle(path: Path) -> bool:
    """A tar envbuild's bundle wrote: its members include lockfiles/NAME/envbuild.lock.json."""
    try:
        with tarfile.open(path) as tf:
            return any(m.name.count("/") == 3 and m.name.split("/")[1] == "lockfiles"
                       and m.name.endswith("/" + LOCK_FILE) for m in tf)
    except (tarfile.TarError, OSError, EOFError):
        return False


@dataclass(frozen=True)
class _Member:
    """One file of the bundle: where it is read from, its name under the top, and (cache files) its hash."""

    src: Path
    arcname: str
    size: int
    mode: int
    mtime: float
    sha256: str | None = None


def _member(src: Path, arcname: str, sha: str | None = None) -> _Member:
    st = src.stat()
    return _Member(src, arcname, st.st_size, 0o755 if st.st_mode & stat.S_IXUSR else 0o644, st.st_mtime, sha)


def _refuse(problems: list[Problem], cache: Path) -> FetchError:
    first = problems[0]
    return FetchError(
        f"the cache does not match the lock: {len(problems)} bad file(s), first {first.file} "
        f"({first.problem}; expected {first.expected}, got {first.actual}).",
        path=str(cache),
        hint="Run 'envbuild fetch LOCKDIR --cache DIR' again (it re-downloads bad files), then bundle.",
    )


def _cache_members(cache: Path, lock: Lock) -> list[_Member]:
    """Every file the manifest lists (with its sha256) plus the manifest and channel indexes.

    Checked here without reading any file: paths, presence, and the manifest against the lock.
    The hashes are checked while the bytes are streamed into the bundle.

    Raises:
        FetchError: a file is missing, unsafe, or the manifest disagrees with the lock.
    """
    manifest = load_manifest(cache)
    present, problems = _listed(cache, manifest)
    problems += _check_lock(cache, lock, manifest.by_file())
    if problems:
        raise _refuse(problems, cache)
    hashed = {e.file: e.sha256 for e in present}
    # Only what the manifest lists (plus the channel index) goes in: no stale or .part files.
    rels = set(hashed) | {MANIFEST_FILE}
    conda = cache / "conda"
    if conda.is_dir():
        rels |= {str(p.relative_to(cache)) for p in conda.glob("*/repodata.json")}
    return [_member(cache / rel, f"{CACHE_DIR}/{rel}", hashed.get(rel)) for rel in sorted(rels)]


def _copy_hashed(src: Path, dst: Any, size: int, buf: bytearray, hasher: Any) -> str:
    """Copy ``size`` bytes of ``src`` into the open binary file ``dst``, hashing the same bytes.

    The hash of a block runs in ``hasher`` (one thread) while the block is written: both drop the
    GIL, so hashing and writing overlap.  ``buf`` is _fs's 1 MiB chunk: per-block Python work is
    far below the copy's cost, and the block stays in the CPU cache between hashing and writing
    (4 MiB blocks measured 2x slower here).
    """
    import hashlib

    h = hashlib.sha256()
    view = memoryview(buf)
    left = size
    with open(src, "rb", buffering=0) as fh:
        while left > 0:
            n = fh.readinto(view[: min(len(buf), left)])
            if not n:
                raise FetchError(f"the file shrank while it was bundled ({left} bytes short).", path=str(src),
                                 hint="Something else is writing the cache; wait for it, then bundle again.")
            block = view[:n]
            done = hasher.submit(h.update, block)
            if dst is not None:
                dst.write(block)
            done.result()
            left -= n
    return h.hexdigest()


def _check_space(where: Path, need: int) -> None:
    """Refuse up front when ``need`` bytes cannot fit in ``where``'s file system."""
    import shutil

    free = shutil.disk_usage(where).free
    if need > free:
        raise FetchError(
            f"not enough free space for the bundle: it needs {need / 1e6:.1f} MB, the file system of "
            f"{where} has {free / 1e6:.1f} MB free.",
            path=str(where),
            hint="Free some space, write the bundle elsewhere with -o, or use '--format dir' on the "
                 "cache's own file system (its cache files are hardlinks and take no space).",
        )


def _write_tar(part: Path, top: str, members: list[_Member], cache: Path) -> tuple[int, list[Problem]]:
    """Stream ``members`` into the tar ``part``; the cache files' hashes are checked on the way.

    The first altered file stops the writing; the rest are still hashed, to name every bad file.
    """
    from concurrent.futures import ThreadPoolExecutor

    from envbuild._fs import _CHUNK

    problems: list[Problem] = []
    buf = bytearray(_CHUNK)
    nfiles = 0
    # The tar is written by hand (tarfile's own headers, our data loop): tarfile's addfile copies
    # through small reads, and there is no hook to hash what it copies.
    with ThreadPoolExecutor(1) as hasher, open(part, "wb") as out:
        for m in members:
            info = tarfile.TarInfo(f"{top}/{m.arcname}")
            info.size, info.mode, info.mtime = m.size, m.mode, int(m.mtime)
            info = _tar_filter(info)
            if problems:  # the bundle is refused already: only hash, to name every bad file
                actual = _copy_hashed(m.src, None, m.size, buf, hasher)
            else:
                out.write(info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape"))
                actual = _copy_hashed(m.src, out, m.size, buf, hasher)
                out.write(bytes(-m.size % tarfile.BLOCKSIZE))
                nfiles += 1
            if m.sha256 is not None and actual != m.sha256:
                problems.append(Problem(str(m.src.relative_to(cache)), "altered", expected=m.sha256,
                                        actual=actual))
        # End of archive: two zero blocks, padded to a whole record as tar(1) writes it.
        out.write(bytes(2 * tarfile.BLOCKSIZE))
        out.write(bytes(-out.tell() % tarfile.RECORDSIZE))
    return nfiles, problems


def _write_dir(dest: Path, members: list[_Member], cache: Path) -> tuple[int, int, list[Problem]]:
    """Hardlink (same file system) or copy ``members`` into ``dest``, hashing what landed there.

    A hardlink shares the cache's inode, so hashing the link checks exactly the bundled bytes.
    Returns (hardlinked, bytes copied, problems).
    """
    import errno
    from concurrent.futures import ThreadPoolExecutor

    from envbuild._fs import _CHUNK

    problems: list[Problem] = []
    linked = copied = 0
    buf = bytearray(_CHUNK)
    with ThreadPoolExecutor(1) as hasher:
        for m in members:
            target = dest / m.arcname
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(m.src, target)
            except OSError as exc:
                if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP, errno.EACCES):
                    raise
                # Only when no link was made: writing through a link would overwrite the cache.
                with open(target, "xb") as fh:
                    actual = _copy_hashed(m.src, fh, m.size, buf, hasher)
                os.chmod(target, m.mode)
                copied += m.size
            else:
                linked += 1
                actual = _copy_hashed(target, None, m.size, buf, hasher)
            if m.sha256 is not None and actual != m.sha256:
                problems.append(Problem(str(m.src.relative_to(cache)), "altered", expected=m.sha256,
                                        actual=actual))
    return linked, copied, problems


def _same_fs(a: Path, b: Path) -> bool:
    return a.stat().st_dev == b.stat().st_dev


def _output(lock: Lock, output: str | os.PathLike[str] | None, fmt: str) -> tuple[Path, str]:
    """The bundle's path and its top directory name; refused before any work when it would replace
    anything but a bundle envbuild wrote."""
    from envbuild._fs import check_output_dir

    top = f"{lock.name}-offline"
    out = Path(output) if output is not None else Path(f"{top}.tar") if fmt == "tar" else Path(top)
    if fmt == "tar" and out.name.endswith(".tar"):
        top = out.name[: -len(".tar")]
    elif fmt == "dir":
        top = out.name
    if fmt == "tar":
        check_output_file(out, _is_bundle)
    else:
        check_output_dir(out)
    return out, top


def _bundle_dir(out: Path, top: str, members: list[_Member], cache_members: list[_Member], cache: Path,
                scripts: list[str]) -> BundleResult:
    """``--format dir``: the small files copied, the cache files hardlinked (copied across file systems)."""
    import shutil

    from envbuild._fs import output_dir

    small_members = members[: len(members) - len(cache_members)]
    small = sum(m.size for m in small_members)
    cache_bytes = sum(m.size for m in cache_members)
    # Hardlinks need no space on the cache's file system; elsewhere every byte is copied.
    _check_space(out.parent, small + (0 if _same_fs(cache, out.parent) else cache_bytes))
    with output_dir(out) as dest:
        for m in small_members:
            (dest / m.arcname).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(m.src, dest / m.arcname)
            os.chmod(dest / m.arcname, m.mode)
        linked, copied, problems = _write_dir(dest, cache_members, cache)
        if problems:
            raise _refuse(problems, cache)
    return BundleResult(output=str(out), top=top, files=len(members), bytes=small + cache_bytes,
                        scripts=tuple(scripts), verified=sum(1 for m in cache_members if m.sha256),
                        format="dir", bytes_written=small + copied, hardlinked=linked)


def _bundle_tar(out: Path, top: str, members: list[_Member], cache_members: list[_Member], cache: Path,
                scripts: list[str]) -> BundleResult:
    _check_space(out.parent, sum(m.size + _TAR_OVERHEAD for m in members) + tarfile.RECORDSIZE)
    with atomic_file(out) as part:
        nfiles, problems = _write_tar(part, top, members, cache)
        if problems:
            raise _refuse(problems, cache)
    size = out.stat().st_size
    return BundleResult(output=str(out), top=top, files=nfiles, bytes=size, scripts=tuple(scripts),
                        verified=sum(1 for m in cache_members if m.sha256), format="tar",
                        bytes_written=size, hardlinked=0)


def bundle(lock_dir: str | os.PathLike[str] | Lock, cache: str | os.PathLike[str] = CACHE_DIR,
           output: str | os.PathLike[str] | None = None, *, fmt: str = "tar",
           scripts: Mapping[str, str] | None = None) -> BundleResult:
    """Write lock + scripts + cache + README as one tar (``fmt="tar"``) or one directory (``"dir"``).

    ``lock_dir`` is a lock directory or the ``Lock`` a caller already read; ``scripts`` the
    rendered scripts (``RenderResult.texts``) when the caller has them, else they are rendered here.
    The cache is never copied to a staging area: its files stream straight into the tar (or are
    hardlinked into the directory, copied when it is on another file system), each one's sha256
    checked against manifest.json (itself checked against the lock) on the way.  The output
    appears only when complete and correct (temp file or directory beside it, then rename).

    Raises:
        InputError: the lock is missing or malformed, or ``fmt`` is unknown.
        FetchError: the cache has missing or altered files, or the bundle would not fit on disk
            (nothing is written).
    """
    if fmt not in FORMATS:
        raise InputError(f"unknown bundle format '{fmt}'.", field="--format",
                         hint=f"Use one of: {', '.join(FORMATS)}.")
    lock = lock_dir if isinstance(lock_dir, Lock) else load_lock(lock_dir)
    cache_dir = Path(cache)
    if not cache_dir.is_dir():
        raise InputError("no such cache directory.", path=str(cache_dir),
                         hint="Run 'envbuild fetch LOCKDIR --cache DIR' first.")
    out, top = _output(lock, output, fmt)
    out.parent.mkdir(parents=True, exist_ok=True)
    cache_members = _cache_members(cache_dir, lock)
    with tempfile.TemporaryDirectory(prefix=".bundle-", dir=out.parent) as tmp:
        stage = Path(tmp) / "stage"
        stage.mkdir()
        names = _render_scripts(lock, stage, scripts)
        (stage / "README.txt").write_text(_readme(lock.name, top, names, fmt))
        # Only the scripts and the README at the top: the lock lives under lockfiles/NAME/.
        members = [_member(stage / n, n) for n in sorted({*names, "README.txt"})]
        members += [_member(p, f"lockfiles/{lock.name}/{p.name}") for p in sorted(lock.directory.iterdir())
                    if p.is_file()]
        members += cache_members
        write = _bundle_tar if fmt == "tar" else _bundle_dir
        return write(out, top, members, cache_members, cache_dir, names)


def present_bundle(result: BundleResult, as_json: bool) -> None:
    """Print what bundle wrote."""
    from envbuild.output import console, print_json

    if as_json:
        print_json(result.to_dict())
        return
    verified = f"{result.verified} cache files verified"
    if result.format == "dir":
        console.print(
            f"wrote {result.output}/ ({result.bytes / 1e6:.1f} MB in {result.files} files, "
            f"{result.bytes_written / 1e6:.1f} MB written; {result.hardlinked} cache files hardlinked; "
            f"{verified}; scripts: {', '.join(result.scripts) or 'none'})\n"
            f"copy it with: rsync -a {result.output.rstrip('/')}/ server:{result.top}/ ; "
            f"on the server: bash {result.top}/install-offline.sh",
            highlight=False,
        )
        return
    console.print(
        f"wrote {result.output} ({result.bytes / 1e6:.1f} MB, {result.files} files, "
        f"{verified}; scripts: {', '.join(result.scripts) or 'none'})\n"
        f"on the server: tar -xf {Path(result.output).name} && cd {result.top} && cat README.txt",
        highlight=False,
    )
