"""conda-pack adapter: load a conda env, write archives (parallel gzip / multi-threaded zstd / zip).

envbuild drives conda-pack's own ``CondaEnv`` and ``Packer`` (so prefix records and the
``conda-unpack`` script are exactly conda-pack's), but opens the archive itself, because it
adds ``envbuild-manifest.json`` first and records the sha256 of every member it writes, and
because conda-pack 0.9's ``tar.zst`` ignores ``n_threads`` and ``compress_level``.
Refusals come back as ``CondaPackRefused`` with the raw text; ``envbuild.pack`` explains them.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import subprocess
import tempfile
import warnings
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from envbuild._fs import sha256_file
from envbuild.errors import PackError, ToolError

__all__ = [
    "FORMATS",
    "ArchiveWriter",
    "CondaPackRefused",
    "LoadedEnv",
    "load_env",
    "open_archive",
    "pack_env",
]

FORMATS = ("tar.gz", "tar.zst", "zip", "squashfs")
_SYNC_HASH_BYTES = 1 << 20
DEFAULT_LEVEL = {"tar.gz": 4, "tar.zst": 3, "zip": 4, "squashfs": 4}


class CondaPackRefused(PackError):
    """conda-pack refused the env; ``kind`` is editable | missing | other, ``raw`` its own text."""

    def __init__(self, kind: str, raw: str, prefix: str) -> None:
        super().__init__(raw.strip(), path=prefix)
        self.kind = kind
        self.raw = raw


@dataclass
class LoadedEnv:
    """A conda env as conda-pack sees it, plus the packages whose package-cache entry is gone."""

    env: Any
    uncached: list[str] = field(default_factory=list)


def _import() -> Any:
    try:
        import conda_pack
    except ImportError:  # pragma: no cover - a declared dependency
        raise ToolError("conda-pack is not installed.", hint="pip install conda-pack") from None
    return conda_pack


def load_env(
    prefix: Path, *, ignore_editable: bool = False, ignore_missing: bool = False,
    exclude: tuple[str, ...] = (),
) -> LoadedEnv:
    """Collect the env's files with conda-pack; its refusals become CondaPackRefused."""
    cp = _import()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            env = cp.CondaEnv.from_prefix(
                str(prefix), ignore_editable_packages=ignore_editable, ignore_missing_files=ignore_missing
            )
        except cp.CondaPackException as exc:
            text = str(exc)
            kind = "other"
            if "editable packages" in text:
                kind = "editable"
            elif "deleted/overwritten" in text:
                kind = "missing"
            raise CondaPackRefused(kind, text, str(prefix)) from None
    for pattern in exclude:
        env = env.exclude(pattern)
    uncached: list[str] = []
    for w in caught:
        text = str(w.message)
        if "without entries in the package cache" in text:
            uncached += [ln[2:].split("=")[0] for ln in text.splitlines() if ln.startswith("- ")]
    return LoadedEnv(env=env, uncached=uncached)


class ArchiveWriter:
    """conda-pack's archive interface (``add``/``add_bytes``) that also hashes every member."""

    def __init__(self, arc: Any, pool: ThreadPoolExecutor) -> None:
        self._arc = arc
        self._pool = pool
        self._hashes: dict[str, Future[str] | str] = {}

    def add(self, source: str, target: str) -> None:
        """Add a file, link or directory from disk under ``target``."""
        self._arc.add(source, target)
        if os.path.islink(source):
            self._hashes[target] = "symlink:" + os.readlink(source)
        elif os.path.isfile(source):
            # conda-pack deletes its small generated temp files right after add(): hash those now.
            if os.path.getsize(source) < _SYNC_HASH_BYTES:
                self._hashes[target] = sha256_file(source)
            else:
                self._hashes[target] = self._pool.submit(sha256_file, source)

    def add_bytes(self, source: str, data: bytes, target: str) -> None:
        """Add ``data`` under ``target`` with ``source``'s mode and owner."""
        self._arc.add_bytes(source, data, target)
        self._hashes[target] = hashlib.sha256(data).hexdigest()

    def add_text(self, target: str, text: str, mode: int = 0o644) -> None:
        """Add generated text (the manifest, the checksum list, the fix-up script)."""
        fd, tmp = tempfile.mkstemp(prefix=".envbuild-", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(text)
            os.chmod(tmp, mode)
            self.add_bytes(tmp, text.encode(), target)
        finally:
            os.unlink(tmp)

    def checksums(self) -> dict[str, str]:
        """sha256 (or ``symlink:TARGET``) of every member written so far, by archive path."""
        return {k: (v if isinstance(v, str) else v.result()) for k, v in sorted(self._hashes.items())}

    # conda-pack's Packer only calls add/add_bytes, but checks the class for squashfs.
    def __getattr__(self, name: str) -> Any:
        return getattr(self._arc, name)


@contextlib.contextmanager
def _zstd_stream(fh: IO[bytes], level: int, jobs: int) -> Iterator[IO[bytes]]:
    try:
        import zstandard
    except ImportError:
        exe = shutil.which("zstd")
        if exe is None:
            raise ToolError("tar.zst needs the 'zstandard' module or the 'zstd' program.",
                            hint="pip install zstandard, or choose --format tar.gz.") from None
        proc = subprocess.Popen([exe, f"-{level}", f"-T{jobs}", "-q", "-c"], stdin=subprocess.PIPE, stdout=fh)
        assert proc.stdin is not None
        yield proc.stdin
        proc.stdin.close()
        if proc.wait() != 0:
            raise ToolError(f"zstd exited with {proc.returncode} while compressing.") from None
        return
    cctx = zstandard.ZstdCompressor(level=level, threads=jobs if jobs > 1 else 0)
    writer = cctx.stream_writer(fh, closefd=False)
    yield writer
    # TarArchive closes the writer, which ends the zstd frame.


@contextlib.contextmanager
def open_archive(
    output: Path, fmt: str, *, jobs: int, level: int | None = None, mtime: float | None = None
) -> Iterator[ArchiveWriter]:
    """Write an archive at ``output`` through a temp file; it appears only when the block succeeds.

    ``mtime`` stamps the generated conda-unpack script (conda-pack uses conda-meta/history's).
    """
    import time

    from conda_pack.formats import TarArchive, archive

    if fmt not in FORMATS:
        raise PackError(f"unknown archive format '{fmt}'.", field="--format",
                        hint="Use one of: " + ", ".join(FORMATS) + ".")
    lvl = DEFAULT_LEVEL[fmt] if level is None else level
    stamp = int(mtime if mtime is not None else time.time())
    output.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{output.name}.", suffix=".tmp", dir=output.parent)
    try:
        with os.fdopen(fd, "wb") as fh, ThreadPoolExecutor(max(1, jobs)) as pool:
            if fmt == "squashfs":
                # conda-pack's own staging (hard links where it can, copies otherwise); envbuild
                # runs mksquashfs itself after the trailer is added (see tools/squashfs.py).
                from conda_pack.formats import SquashFSArchive

                from envbuild.tools import squashfs

                squashfs.require("mksquashfs")
                with SquashFSArchive(None, tmp, "", jobs, compress_level=lvl) as sq:
                    writer = ArchiveWriter(sq, pool)
                    yield writer
                    writer.checksums()
                    squashfs.mksquashfs(Path(sq._staging_dir), Path(tmp), jobs=jobs, level=lvl)
            elif fmt == "tar.zst":
                with _zstd_stream(fh, lvl, jobs) as zfh, \
                        TarArchive(zfh, "", close_file=True, mode="w", mtime=stamp) as arc:
                    yield ArchiveWriter(arc, pool)
            else:
                with archive(fh, tmp, "", fmt, compress_level=lvl, n_threads=jobs,
                         mtime=stamp) as arc:
                    yield ArchiveWriter(arc, pool)
        os.chmod(tmp, 0o644)
        os.replace(tmp, output)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def pack_env(loaded: LoadedEnv, writer: Any) -> None:
    """Add the conda env's files through conda-pack's Packer (prefix records, conda-unpack)."""
    from conda_pack.core import Packer

    packer = Packer(loaded.env.prefix, writer, None, None)
    for f in loaded.env.files:
        packer.add(f)
    packer.finish()
