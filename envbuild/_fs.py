"""File-system helpers shared by every stage: atomic writes, hashing, safe extraction."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import tarfile
import tempfile
import unicodedata
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

from envbuild.errors import HashMismatch, InputError, UnsafeArchive

__all__ = [
    "OUTPUT_MARKER",
    "OutputRefused",
    "atomic_dir",
    "atomic_write",
    "check_output_dir",
    "check_output_file",
    "claim_output_dir",
    "file_lock",
    "is_within_directory",
    "one_line",
    "output_dir",
    "path_component",
    "record_output",
    "safe_extract",
    "sha256_file",
    "verify_sha256",
]

_CHUNK = 1 << 20


class OutputRefused(InputError):
    """An output path holds something envbuild did not write; it is refused, never replaced."""


def atomic_write(path: str | os.PathLike[str], data: str | bytes, mode: int = 0o644) -> Path:
    """Write ``data`` to ``path`` through a temp file and ``os.replace``, so no half file exists."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    raw = data.encode() if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(raw)
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return target


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temp directory that becomes ``path`` only if the block succeeds: ``output_dir``.

    Kept as a name for callers; it no longer renames an existing ``path`` away and deletes it
    (that removed a user's project folder given as ``-o``): a foreign ``path`` is refused.
    """
    with output_dir(path) as tmp:
        yield tmp


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def verify_sha256(path: str | os.PathLike[str], expected: str) -> None:
    """Raise HashMismatch naming the file and both hashes when they differ."""
    actual = sha256_file(path)
    if actual != expected.lower():
        raise HashMismatch(str(path), expected.lower(), actual)


def is_within_directory(directory: str | os.PathLike[str], target: str | os.PathLike[str]) -> bool:
    """True when ``target`` resolves inside ``directory``."""
    base = os.path.realpath(directory)
    dest = os.path.realpath(target)
    return os.path.commonpath([base, dest]) == base


def _check_member(dest: Path, name: str, link: str | None, is_sym: bool, archive: str) -> None:
    if os.path.isabs(name) or not is_within_directory(dest, dest / name):
        raise UnsafeArchive(
            f"member '{name}' would be written outside the destination {dest}.",
            path=archive,
            hint="The archive is refused whole; nothing was extracted.",
        )
    if link is not None:
        base = (dest / name).parent if is_sym else dest
        if os.path.isabs(link) or not is_within_directory(dest, base / link):
            raise UnsafeArchive(
                f"link '{name}' -> '{link}' points outside the destination {dest}.",
                path=archive,
                hint="The archive is refused whole; nothing was extracted.",
            )


def safe_extract(archive: str | os.PathLike[str], dest: str | os.PathLike[str]) -> Path:
    """Extract a tar (gz/bz2/xz/zst) or zip archive, refusing any member or link escaping ``dest``.

    Every member is checked before the first byte is written.

    Raises:
        UnsafeArchive: a member path or link target escapes ``dest``.
    """
    src = str(archive)
    out = Path(dest)
    out.mkdir(parents=True, exist_ok=True)
    # is_zipfile() finds a zip end record near the end of the file, so an uncompressed tar whose
    # last member is a wheel looks like a zip: ask tarfile first, and trust a tar suffix.
    is_tar = src.endswith((".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz", ".zst", ".tzst"))
    if not is_tar and not tarfile.is_tarfile(src) and zipfile.is_zipfile(src):
        with zipfile.ZipFile(src) as zf:
            for info in zf.infolist():
                _check_member(out, info.filename, None, False, src)
            zf.extractall(out)
            # zipfile drops Unix modes; without this bin/python of a zipped env is not executable.
            for info in zf.infolist():
                mode = (info.external_attr >> 16) & 0o777
                if mode and not info.is_dir():
                    os.chmod(out / info.filename, mode)
        return out
    with _open_tar(src) as tf:
        members = tf.getmembers()
        for m in members:
            link = m.linkname if (m.issym() or m.islnk()) else None
            _check_member(out, m.name, link, m.issym(), src)
        tf.extractall(out, members=members, filter="tar")
    return out


@contextlib.contextmanager
def _open_tar(src: str) -> Iterator[tarfile.TarFile]:
    if src.endswith((".zst", ".tzst", ".tar.zst")):
        import subprocess

        proc = subprocess.Popen(["zstd", "-dc", src], stdout=subprocess.PIPE)
        assert proc.stdout is not None
        tmp = tempfile.TemporaryFile()  # noqa: SIM115 - closed after the tar is read, below
        shutil.copyfileobj(proc.stdout, tmp)
        proc.wait()
        tmp.seek(0)
        with tarfile.open(fileobj=tmp, mode="r:") as tf:
            yield tf
        tmp.close()
        return
    with tarfile.open(src, mode="r:*") as tf:
        yield tf


# --- outputs that never destroy what the user had ---------------------------------------------

OUTPUT_MARKER = ".envbuild-output"
# The spec's name rule: starts with a letter or digit, then letters, digits, '.', '_', '-'.
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
# A lock or cache written by an envbuild from before the marker: recognised by its own files.
_LEGACY = {"envbuild.lock.json": "generated_by", "manifest.json": "lock_spec_hash", "plan.json": "next_steps",
           "envbuild-manifest.json": "envbuild"}


def path_component(name: str, *, field: str, path: str | None = None) -> str:
    """``name`` when it can be one directory name: letters, digits, ``._-``, starting with a letter or
    digit (as spec names are), so no separator, ``..``, leading dot, space or control character.

    Raises:
        InputError: anything else (``../../victim``, ``a/b``, ``x\\ny``, empty).
    """
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise InputError(f"the name {one_line(repr(name))} cannot be a directory name.", path=path,
                         field=field, hint="Use letters, digits, '.', '_' and '-' only, starting with a "
                                           "letter or digit (e.g. 'radar-env').")
    return name


def one_line(text: object) -> str:
    """``text`` with every control character (newline, CR, ESC, DEL, U+2028 ...) shown as an escape,
    so user text written into a comment line or a one-line record cannot start a new line."""
    out = []
    for ch in str(text):
        if unicodedata.category(ch) in ("Cc", "Zl", "Zp"):
            out.append(ch.encode("unicode_escape").decode("ascii"))
        else:
            out.append(ch)
    return "".join(out)


def _marker_files(directory: Path) -> list[str] | None:
    """The files envbuild recorded writing in ``directory``; None when it is not envbuild's."""
    marker = directory / OUTPUT_MARKER
    if marker.is_file() and not marker.is_symlink():
        try:
            data = json.loads(marker.read_text())
        except (OSError, ValueError):
            data = {}
        files = data.get("files") if isinstance(data, dict) else None
        return [f for f in files if isinstance(f, str)] if isinstance(files, list) else []
    for fname, key in _LEGACY.items():
        f = directory / fname
        try:
            data = json.loads(f.read_text()) if f.is_file() and not f.is_symlink() else None
        except (OSError, ValueError):
            data = None
        if isinstance(data, dict) and key in data:
            return []
    return None


def check_output_dir(path: str | os.PathLike[str], *, field: str = "--output") -> bool:
    """True when ``path`` exists and is envbuild's, False when it is new or an empty directory.

    Raises:
        OutputRefused: it is a file, or a directory envbuild did not make that is not empty.
    """
    target = Path(path)
    if not target.exists() and not target.is_symlink():
        return False
    if target.is_symlink() or not target.is_dir():
        kind = "a symlink" if target.is_symlink() else "a file"
        raise OutputRefused(
            f"{target} is {kind}, not a directory envbuild made; envbuild writes its output only into a new "
            "directory or one it made before, so nothing was written.", path=str(target), field=field,
            hint=f"Pass {field} with a new directory name, or move the existing file away.")
    if _marker_files(target) is not None:
        return True
    entries = sorted(p.name for p in target.iterdir())
    if not entries:
        return False
    shown = ", ".join(entries[:5]) + (f" and {len(entries) - 5} more" if len(entries) > 5 else "")
    raise OutputRefused(
        f"{target} already holds files envbuild did not write ({shown}) and has no {OUTPUT_MARKER} "
        "marker, so envbuild will not write into it (it never replaces or removes files it did not make); "
        "nothing was written.", path=str(target), field=field,
        hint=f"Pass {field} with a new or empty directory (e.g. {target / 'envbuild'}), or move those "
             "files away.")


def claim_output_dir(path: str | os.PathLike[str], *, field: str = "--output") -> Path:
    """Make ``path`` (new, empty or envbuild's) and mark it as envbuild's, for stages that add files to it.

    Raises:
        OutputRefused: see ``check_output_dir``.
    """
    target = Path(path)
    ours = check_output_dir(target, field=field)
    target.mkdir(parents=True, exist_ok=True)
    if not ours or not (target / OUTPUT_MARKER).is_file():
        atomic_write(target / OUTPUT_MARKER, _marker_text(_marker_files(target) or []))
    return target


def record_output(directory: str | os.PathLike[str], *names: str) -> None:
    """Add ``names`` (relative paths) to the files envbuild records writing in ``directory``."""
    d = Path(directory)
    files = set(_marker_files(d) or []) | set(names)
    atomic_write(d / OUTPUT_MARKER, _marker_text(sorted(files)))


def _marker_text(files: list[str]) -> str:
    # No time or host in it: re-writing unchanged output gives identical bytes.
    return json.dumps({"written_by": "envbuild", "files": sorted(files)}, indent=1) + "\n"


def _tree_files(root: Path) -> list[str]:
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for fn in [*filenames, *(d for d in dirnames if os.path.islink(os.path.join(dirpath, d)))]:
            rel = os.path.relpath(os.path.join(dirpath, fn), root)
            if rel != OUTPUT_MARKER:
                out.append(rel)
    return sorted(out)


@contextlib.contextmanager
def output_dir(path: str | os.PathLike[str], *, field: str = "--output") -> Iterator[Path]:
    """Yield a temp directory whose files become ``path`` only if the block succeeds.

    ``path`` must be new, empty, or a directory envbuild made (its ``.envbuild-output`` marker lists
    the files it wrote); anything else is refused before any work.  A new ``path`` appears whole
    (one rename).  In an existing one the new files replace the old ones by name and files envbuild
    wrote last time but not now are removed; files envbuild did not write are never touched.

    Raises:
        OutputRefused: ``path`` is a file or a foreign non-empty directory.
    """
    target = Path(path)
    check_output_dir(target, field=field)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    os.chmod(tmp, 0o755)  # mkdtemp makes 0700; a lock or rendered dir is meant to be shared
    try:
        yield tmp
        new = _tree_files(tmp)
        (tmp / OUTPUT_MARKER).write_text(_marker_text(new))
        # Checked again: the directory may have been filled while the work ran.
        if not check_output_dir(target, field=field):
            with contextlib.suppress(FileNotFoundError, OSError):
                target.rmdir()  # empty: replaced by the complete new directory in one rename
            if not target.exists():
                os.replace(tmp, target)
                return
        _merge_into(tmp, target, new, field)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _merge_into(tmp: Path, target: Path, new: list[str], field: str) -> None:
    old = _marker_files(target) or []
    for rel in new:
        dst = target / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        if dst.is_dir() and not dst.is_symlink():
            if any(dst.iterdir()):
                raise OutputRefused(f"{dst} is a directory with files envbuild did not write, where envbuild "
                                    "writes a file.", path=str(target), field=field,
                                    hint="Move that directory away and run again.")
            dst.rmdir()
        os.replace(tmp / rel, dst)
    keep = set(new)
    for rel in old:
        p = target / rel
        if rel in keep or os.path.isabs(rel) or ".." in Path(rel).parts:
            continue
        if p.is_symlink() or p.is_file():
            p.unlink()
            # Empty directories left behind are envbuild's (they held only its files).
            parent = p.parent
            while parent != target and is_within_directory(target, parent):
                try:
                    parent.rmdir()
                except OSError:
                    break
                parent = parent.parent
    os.replace(tmp / OUTPUT_MARKER, target / OUTPUT_MARKER)


def check_output_file(path: str | os.PathLike[str], is_ours: Callable[[Path], bool], *,
                      field: str = "--output") -> None:
    """Refuse to overwrite ``path`` unless it is absent or a file ``is_ours`` recognises as envbuild's.

    Raises:
        OutputRefused: ``path`` is a directory, or a file envbuild did not write.
    """
    p = Path(path)
    if not p.exists() and not p.is_symlink():
        return
    if p.is_file() and not p.is_symlink() and is_ours(p):
        return
    raise OutputRefused(
        f"{p} already exists and is not a file envbuild wrote, so envbuild will not replace it; nothing "
        "was written.", path=str(p), field=field, hint=f"Pass {field} with a new file name, or move it away.")


@contextlib.contextmanager
def file_lock(root: str | os.PathLike[str], key: str) -> Iterator[None]:
    """Hold an exclusive ``fcntl.flock`` on ``root/.locks/KEY.lock`` (processes and threads alike).

    Two ``fetch`` runs into one cache take the same lock per artifact, so one of them writes the
    file and the other then finds it complete instead of writing into the same ``.part``.
    """
    import fcntl

    d = Path(root) / ".locks"
    d.mkdir(parents=True, exist_ok=True)
    # Named by a digest of the key: any key is one plain file name, and none looks like an artifact.
    safe = hashlib.sha256(key.encode()).hexdigest()[:24]
    with open(d / f"{safe}.lock", "a+b") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
