"""File-system helpers shared by every stage: atomic writes, hashing, safe extraction."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tarfile
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

from envbuild.errors import HashMismatch, UnsafeArchive

__all__ = [
    "atomic_dir",
    "atomic_write",
    "is_within_directory",
    "safe_extract",
    "sha256_file",
    "verify_sha256",
]

_CHUNK = 1 << 20


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
    """Yield a temp directory that replaces ``path`` only if the block succeeds.

    A failed lock or render therefore leaves no partial output directory behind,
    and an existing good one is kept until the new one is complete.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    os.chmod(tmp, 0o755)  # mkdtemp makes 0700; a lock or rendered dir is meant to be shared
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        os.replace(target, old)
    os.replace(tmp, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


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
