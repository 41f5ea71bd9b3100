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
import stat
import struct
import subprocess
import tarfile
import tempfile
import warnings
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from envbuild._fs import atomic_file, sha256_file
from envbuild.errors import PackError, ToolError

__all__ = [
    "FORMATS",
    "Added",
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


_BLOCK = 4 << 20  # bytes handed to the compressor per write: few calls, full compressor jobs


_USTAR_MAX = 8 ** 11


def _ustar(info: tarfile.TarInfo) -> bytes | None:
    """The header ``info.tobuf(PAX_FORMAT)`` writes when it needs no PAX record, built directly.

    tarfile spends most of its per-member time deciding that; None (the caller falls back to
    tarfile) when a name is not ASCII or too long, a number too big, or the member is a device.
    """
    name = info.name + "/" if info.type == tarfile.DIRTYPE and not info.name.endswith("/") else info.name
    if (len(name) > 100 or len(info.linkname) > 100 or len(info.uname) > 32 or len(info.gname) > 32
            or not (name.isascii() and info.linkname.isascii() and info.uname.isascii()
                    and info.gname.isascii())
            or info.type in (tarfile.CHRTYPE, tarfile.BLKTYPE)
            or not (0 <= info.uid < 8 ** 7 and 0 <= info.gid < 8 ** 7 and 0 <= info.size < _USTAR_MAX
                    and isinstance(info.mtime, int) and 0 <= info.mtime < _USTAR_MAX)
            or info.pax_headers):
        return None
    buf = b"".join((
        name.encode("ascii").ljust(100, b"\0"),
        b"%07o\0%07o\0%07o\0%011o\0%011o\0" % (info.mode & 0o7777, info.uid, info.gid, info.size,
                                                info.mtime),
        b"        ", info.type, info.linkname.encode("ascii").ljust(100, b"\0"), tarfile.POSIX_MAGIC,
        info.uname.encode("ascii").ljust(32, b"\0"), info.gname.encode("ascii").ljust(32, b"\0"),
    )).ljust(tarfile.BLOCKSIZE, b"\0")
    chksum = 256 + sum(buf[:148]) + sum(buf[156:])
    return buf[:148] + b"%06o\0" % chksum + buf[155:]


def _header_bytes(info: tarfile.TarInfo) -> bytes:
    return _ustar(info) or info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


@dataclass(frozen=True)
class Added:
    """What ``TarStream.add`` wrote: the member's sha256 (``symlink:TARGET``; None for a directory,
    fifo or device), the source's lstat, and, for a regular file searched for a needle, whether its
    bytes hold it (``hit``) and whether its first 8 KiB hold a NUL (``binary``, only with a hit)."""

    digest: str | None
    st: os.stat_result
    hit: bool = False
    binary: bool = False


class TarStream:
    """A tar stream (tarfile's PAX format) written in large blocks; every file is hashed as it streams.

    conda-pack's ``TarArchive`` goes through ``tarfile.add`` (16 KiB copies, a uid/gid name lookup
    and a PAX header for the float mtime on every member) and the hash needs a second read: for a
    19k-file env that per-member work, not the compressor, set the pace. Here each file is read
    once, in blocks of up to 4 MiB, into the hash and the compressor; small members are batched
    into one write. Members are the ones ``tarfile.add(recursive=False)`` writes (hard links of an
    already written inode become link members), with whole-second mtimes like GNU tar.
    """

    def __init__(self, out: IO[bytes] | Any, mtime: float | None = None) -> None:
        self._out = out
        self._mtime = mtime
        self._pending: list[bytes] = []
        self._pending_len = 0
        self._inodes: dict[tuple[int, int], tuple[str, str, bool, bool]] = {}
        self._users: dict[int, str] = {}
        self._groups: dict[int, str] = {}
        self._written = 0

    def _emit(self, data: bytes) -> None:
        self._pending.append(data)
        self._pending_len += len(data)
        if self._pending_len >= _BLOCK:
            self._flush()

    def _flush(self) -> None:
        if self._pending:
            self._out.write(b"".join(self._pending))
            self._written += self._pending_len
            self._pending, self._pending_len = [], 0

    def _names(self, uid: int, gid: int) -> tuple[str, str]:
        if uid not in self._users:
            try:
                import pwd

                self._users[uid] = pwd.getpwuid(uid).pw_name
            except (ImportError, KeyError):
                self._users[uid] = ""
        if gid not in self._groups:
            try:
                import grp

                self._groups[gid] = grp.getgrgid(gid).gr_name
            except (ImportError, KeyError):
                self._groups[gid] = ""
        return self._users[uid], self._groups[gid]

    def _header(self, info: tarfile.TarInfo) -> None:
        self._emit(_header_bytes(info))

    def _info(self, source: str, target: str, st: os.stat_result) -> tarfile.TarInfo | None:
        info = tarfile.TarInfo(target)
        mode = st.st_mode
        info.mode = stat.S_IMODE(mode)
        info.uid, info.gid = st.st_uid, st.st_gid
        info.uname, info.gname = self._names(st.st_uid, st.st_gid)
        info.mtime = int(self._mtime if self._mtime is not None and target == "bin/conda-unpack"
                         else st.st_mtime)
        if stat.S_ISREG(mode):
            key = (st.st_ino, st.st_dev)
            if st.st_nlink > 1 and key in self._inodes:
                info.type, info.linkname = tarfile.LNKTYPE, self._inodes[key][0]
            else:
                info.type, info.size = tarfile.REGTYPE, st.st_size
        elif stat.S_ISDIR(mode):
            info.type = tarfile.DIRTYPE
        elif stat.S_ISLNK(mode):
            info.type, info.linkname = tarfile.SYMTYPE, os.readlink(source)
        elif stat.S_ISFIFO(mode):
            info.type = tarfile.FIFOTYPE
        elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
            info.type = tarfile.CHRTYPE if stat.S_ISCHR(mode) else tarfile.BLKTYPE
            info.devmajor, info.devminor = os.major(st.st_rdev), os.minor(st.st_rdev)
        else:  # a socket: tarfile skips it too
            return None
        return info

    def add(self, source: str, target: str, needle: bytes | None = None) -> Added:
        """Write ``source`` as ``target``: its sha256 (``symlink:TARGET``, None for a directory), its
        lstat, and for a regular file asked with ``needle``, whether its bytes hold it."""
        st = os.lstat(source)
        info = self._info(source, target, st)
        if info is None:
            return Added(None, st)
        if info.type == tarfile.SYMTYPE:
            self._header(info)
            return Added("symlink:" + info.linkname, st)
        if info.type == tarfile.LNKTYPE:
            self._header(info)
            first = self._inodes[(st.st_ino, st.st_dev)]
            return Added(first[1], st, first[2], first[3])
        if info.type != tarfile.REGTYPE:
            self._header(info)
            return Added(None, st)
        with open(source, "rb", buffering=0) as fh:
            self._header(info)
            digest, hit, head = self._copy(fh, source, info.size, needle)
        self._pad(info.size)
        binary = hit and b"\0" in head
        if st.st_nlink > 1:
            self._inodes[(st.st_ino, st.st_dev)] = (target, digest, hit, binary)
        return Added(digest, st, hit, binary)

    def _copy(self, fh: Any, source: str, size: int, needle: bytes | None) -> tuple[str, bool, bytes]:
        """Stream ``size`` bytes of ``fh`` out: (sha256, whether ``needle`` occurs, the first 8 KiB)."""
        h = hashlib.sha256()
        hit, head, tail = False, b"", b""
        keep = max(len(needle) - 1, 1) if needle else 0
        left = size
        while left > 0:
            chunk = fh.read(min(left, _BLOCK))
            if not chunk:
                raise OSError(f"{source} shrank while it was being packed")
            h.update(chunk)
            if needle and left == size:
                head = chunk[:8192]
            if needle and not hit:
                # an occurrence may straddle two reads: the end of the last one is searched with this one
                hit = needle in chunk or (bool(tail) and needle in tail + chunk[:keep])
                tail = chunk[-keep:]
            left -= len(chunk)
            if len(chunk) >= _BLOCK // 4:
                self._flush()
                self._out.write(chunk)
                self._written += len(chunk)
            else:
                self._emit(chunk)
        return h.hexdigest(), hit, head

    def add_bytes(self, source: str, data: bytes, target: str) -> str:
        """Write ``data`` as ``target`` with ``source``'s mode and owner; return its sha256."""
        self._emit(self.member(source, data, target))
        return hashlib.sha256(data).hexdigest()

    def member(self, source: str, data: bytes, target: str) -> bytes:
        """The bytes of member ``target`` holding ``data`` (header, data, padding), not written."""
        info = self._info(source, target, os.stat(source))
        assert info is not None
        info.type, info.size, info.linkname = tarfile.REGTYPE, len(data), ""
        pad = -len(data) % tarfile.BLOCKSIZE
        return _header_bytes(info) + data + tarfile.NUL * pad

    def count_head(self, size: int) -> None:
        """``size`` bytes written before this stream (a member placed at the start later)."""
        self._written += size

    def _pad(self, size: int) -> None:
        if rest := size % tarfile.BLOCKSIZE:
            self._emit(tarfile.NUL * (tarfile.BLOCKSIZE - rest))

    def close(self) -> None:
        """End the archive the way tarfile does (two zero blocks, padded to a 10 KiB record)."""
        self._emit(tarfile.NUL * (2 * tarfile.BLOCKSIZE))
        total = self._written + self._pending_len
        if rest := total % tarfile.RECORDSIZE:
            self._emit(tarfile.NUL * (tarfile.RECORDSIZE - rest))
        self._flush()


class _Handoff:
    """Writes to ``out`` from a second thread, so reading + hashing the next files overlaps feeding
    the compressor (both release the GIL), as ``tar | zstd`` overlaps in two processes."""

    def __init__(self, out: Any, depth: int = 8) -> None:
        import queue
        import threading

        self._out = out
        self._q: queue.Queue[bytes | None] = queue.Queue(depth)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="envbuild-pack-writer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (block := self._q.get()) is not None:
            if self._error is None:
                try:
                    self._out.write(block)
                except BaseException as exc:  # re-raised in the packing thread
                    self._error = exc

    def write(self, block: bytes) -> None:
        if self._error is not None:
            raise self._error
        self._q.put(block)

    def close(self) -> None:
        """Wait until every block is written; raise the writer's error, if any."""
        if self._thread.is_alive():
            self._q.put(None)
            self._thread.join()
        if self._error is not None:
            raise self._error


class ArchiveWriter:
    """conda-pack's archive interface (``add``/``add_bytes``) that also hashes every member."""

    def __init__(self, arc: Any, pool: ThreadPoolExecutor, *, deferred: bool = False) -> None:
        self._arc = arc
        self._pool = pool
        self._hashes: dict[str, Future[str] | str] = {}
        self._deferred = deferred
        self.head: bytes | None = None  # the first member, given last (open_archive's head_hint)

    def add(self, source: str, target: str, needle: bytes | None = None) -> Added | None:
        """Add a file, link or directory from disk under ``target``.

        A tar stream says what it wrote (``Added``: hash, lstat, and whether a regular file holds
        ``needle``, found in the same read); the other formats return None.
        """
        if isinstance(self._arc, TarStream):
            # One read per file: the tar stream hashes (and searches) what it writes.
            added = self._arc.add(source, target, needle)
            if added.digest is not None:
                self._hashes[target] = added.digest
            return added
        self._arc.add(source, target)
        if os.path.islink(source):
            self._hashes[target] = "symlink:" + os.readlink(source)
        elif os.path.isfile(source):
            # conda-pack deletes its small generated temp files right after add(): hash those now.
            if os.path.getsize(source) < _SYNC_HASH_BYTES:
                self._hashes[target] = sha256_file(source)
            else:
                self._hashes[target] = self._pool.submit(sha256_file, source)
        return None

    def add_bytes(self, source: str, data: bytes, target: str) -> None:
        """Add ``data`` under ``target`` with ``source``'s mode and owner."""
        if isinstance(self._arc, TarStream):
            self._hashes[target] = self._arc.add_bytes(source, data, target)
            return
        self._arc.add_bytes(source, data, target)
        self._hashes[target] = hashlib.sha256(data).hexdigest()

    def add_text(self, target: str, text: str, mode: int = 0o644, *, head: bool = False) -> None:
        """Add generated text (the manifest, the checksum list, the fix-up script).

        ``head``: this is the archive's first member, given after the others (only in an archive
        opened with ``head_hint``); it is placed at the start when the archive is closed.
        """
        fd, tmp = tempfile.mkstemp(prefix=".envbuild-", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(text)
            os.chmod(tmp, mode)
            data = text.encode()
            if not head:
                self.add_bytes(tmp, data, target)
                return
            assert self._deferred and self.head is None, "a head member needs open_archive(head_hint=...)"
            self.head = self._arc.member(tmp, data, target)
            self._arc.count_head(len(self.head))
            self._hashes[target] = hashlib.sha256(data).hexdigest()
        finally:
            os.unlink(tmp)

    def checksums(self) -> dict[str, str]:
        """sha256 (or ``symlink:TARGET``) of every member written so far, by archive path."""
        return {k: (v if isinstance(v, str) else v.result()) for k, v in sorted(self._hashes.items())}

    # conda-pack's Packer only calls add/add_bytes, but checks the class for squashfs.
    def __getattr__(self, name: str) -> Any:
        return getattr(self._arc, name)


@contextlib.contextmanager
def _piped(argv: list[str], fh: IO[bytes], what: str) -> Iterator[IO[bytes]]:
    """A compressor program as a filter: envbuild writes the tar into its stdin, it writes ``fh``."""
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=fh)
    assert proc.stdin is not None
    try:
        yield proc.stdin
    finally:
        proc.stdin.close()
        rc = proc.wait()
    if rc != 0:
        raise ToolError(f"{what} exited with {rc} while compressing.")


def _zstd_exe() -> str:
    """The ``zstd`` program, for when python-zstandard is not installed."""
    exe = shutil.which("zstd")
    if exe is None:
        raise ToolError("tar.zst needs the 'zstandard' module or the 'zstd' program.",
                        hint="pip install zstandard, or choose --format tar.gz.")
    return exe


@contextlib.contextmanager
def _zstd_stream(fh: IO[bytes], level: int, jobs: int) -> Iterator[IO[bytes]]:
    try:
        import zstandard
    except ImportError:
        with _piped([_zstd_exe(), f"-{level}", f"-T{jobs}", "-q", "-c"], fh, "zstd") as pipe:
            yield pipe
        return
    # zstd's own worker threads compress (as `zstd -T`); the writes release the GIL.
    cctx = zstandard.ZstdCompressor(level=level, threads=jobs if jobs > 1 else 0)
    with cctx.stream_writer(fh, closefd=False, write_size=1 << 20) as writer:
        yield writer  # leaving the block ends the zstd frame


def _zstd_frame(data: bytes, level: int) -> bytes:
    """``data`` as one zstd frame."""
    try:
        import zstandard
    except ImportError:
        return subprocess.run([_zstd_exe(), f"-{level}", "-q", "-c"], input=data, capture_output=True,
                              check=True).stdout
    return bytes(zstandard.ZstdCompressor(level=level).compress(data))


# A tar.zst whose first member is written last (docs/pack.md, "frame layout"): the body streams
# into the file from ``reserve`` on while the start is left empty; at the end the first member
# goes there as its own frame, followed by a zstd skippable frame (magic 0x184D2A50, 4-byte
# little-endian length) that spans exactly the rest of the reservation. Decompressors skip it.
_SKIPPABLE = 0x184D2A50
_SKIP_HEADER = 8
_HEAD_ROOM = 32 << 10  # for what the estimate lacks: the manifest's text_files, thousands of names


def _reserve(hint: str, level: int) -> int:
    """Bytes kept at the start for the first member's frame: the estimate compressed, with room."""
    est = len(_zstd_frame(hint.encode() + bytes(tarfile.BLOCKSIZE * 2), level))
    return -(-(est + _SKIP_HEADER + _HEAD_ROOM) // 4096) * 4096


def _place_head(fh: IO[bytes], head: bytes | None, level: int, reserve: int) -> None:
    """Write the first member's frame (and the skippable padding frame) into the reserved start."""
    if head is None:
        raise PackError("internal error: the archive's first member was never given.")
    frame = _zstd_frame(head, level)
    need = len(frame) + _SKIP_HEADER
    fh.flush()
    end = fh.seek(0, os.SEEK_END)
    if need > reserve:  # it does not fit: move the body up (correct, one more copy of the archive)
        with open(fh.name, "rb", buffering=0) as rd:  # fh is write-only
            pos = end
            while pos > reserve:
                n = min(_BLOCK, pos - reserve)
                pos -= n
                os.pwrite(fh.fileno(), os.pread(rd.fileno(), n, pos), pos + need - reserve)
        reserve = need
    fh.seek(0)
    fh.write(frame + struct.pack("<II", _SKIPPABLE, reserve - need))
    fh.flush()


@contextlib.contextmanager
def _tar_archive(fh: IO[bytes], fmt: str, lvl: int, jobs: int, stamp: int, pool: ThreadPoolExecutor,
                 head_hint: str | None) -> Iterator[ArchiveWriter]:
    """tar.gz / tar.zst through the one TarStream; a tar.zst with ``head_hint`` gets its first
    member last (the manifest, complete only once every file has been read)."""
    deferred = fmt == "tar.zst" and head_hint is not None
    reserve = _reserve(head_hint or "", lvl) if deferred else 0
    fh.seek(reserve)
    with (_zstd_stream(fh, lvl, jobs) if fmt == "tar.zst" else _gzip_stream(fh, lvl, jobs, stamp)) as zfh:
        handoff = _Handoff(zfh)
        try:
            tar = TarStream(handoff, mtime=stamp)
            writer = ArchiveWriter(tar, pool, deferred=deferred)
            yield writer
            tar.close()
        finally:
            handoff.close()
    if deferred:
        _place_head(fh, writer.head, lvl, reserve)


@contextlib.contextmanager
def _gzip_stream(fh: IO[bytes], level: int, jobs: int, mtime: int) -> Iterator[Any]:
    """gzip with ``jobs`` threads: pigz when it is on PATH, else conda-pack's block-parallel zlib.

    Both write one standard gzip stream (``gzip -d`` / tarfile read either).
    """
    exe = shutil.which("pigz")
    if exe is not None and jobs > 1:
        with _piped([exe, f"-{level}", "-p", str(jobs), "-c"], fh, "pigz") as pipe:
            yield pipe
        return
    import gzip

    from conda_pack.formats import ParallelGzipFileWriter

    gz: Any = (ParallelGzipFileWriter(fh, compresslevel=level, n_threads=jobs, mtime=mtime) if jobs > 1
               else gzip.GzipFile(fileobj=fh, mode="wb", compresslevel=level, mtime=mtime))
    try:
        yield gz
    finally:
        gz.close()


@contextlib.contextmanager
def open_archive(
    output: Path, fmt: str, *, jobs: int, level: int | None = None, mtime: float | None = None,
    head_hint: str | None = None,
) -> Iterator[ArchiveWriter]:
    """Write an archive at ``output`` through a temp file; it appears only when the block succeeds.

    ``mtime`` stamps the generated conda-unpack script (conda-pack uses conda-meta/history's).
    ``head_hint`` (tar.zst): the first member is given last, with ``add_text(..., head=True)``, and
    is about this text (room is kept for it at the start); other formats ignore it.
    """
    import time

    if fmt not in FORMATS:
        raise PackError(f"unknown archive format '{fmt}'.", field="--format",
                        hint="Use one of: " + ", ".join(FORMATS) + ".")
    lvl = DEFAULT_LEVEL[fmt] if level is None else level
    stamp = int(mtime if mtime is not None else time.time())
    # the archive appears at ``output`` only when the block succeeds (atomic_file renames it)
    with atomic_file(output) as tmp_path, open(tmp_path, "wb") as fh, \
            ThreadPoolExecutor(max(1, jobs)) as pool:
        tmp = str(tmp_path)
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
        elif fmt in ("tar.zst", "tar.gz"):
            with _tar_archive(fh, fmt, lvl, jobs, stamp, pool, head_hint) as writer:
                yield writer
        else:
            from conda_pack.formats import archive

            # Links stay links, as in a tar: followed (conda-pack's default, for Windows unzip), a
            # venv's lib64 -> lib became a second copy of lib/ that is in no checksum list, and its
            # bin/python a copy of the base interpreter.
            with archive(fh, tmp, "", fmt, compress_level=lvl, n_threads=jobs, mtime=stamp,
                         zip_symlinks=True) as arc:
                yield ArchiveWriter(arc, pool)


def pack_env(loaded: LoadedEnv, writer: Any) -> None:
    """Add the conda env's files through conda-pack's Packer (prefix records, conda-unpack)."""
    from conda_pack.core import Packer

    packer = Packer(loaded.env.prefix, writer, None, None)
    for f in loaded.env.files:
        packer.add(f)
    packer.finish()
