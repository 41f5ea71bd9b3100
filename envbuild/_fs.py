"""File-system helpers shared by every stage: atomic writes, hashing, safe extraction."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import re
import shutil
import stat
import tarfile
import tempfile
import unicodedata
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any, cast

from envbuild.errors import HashMismatch, InputError, PackError, UnsafeArchive

__all__ = [
    "OUTPUT_MARKER",
    "ExtractLog",
    "Member",
    "OutputRefused",
    "atomic_dir",
    "atomic_file",
    "atomic_write",
    "check_output_dir",
    "check_output_file",
    "claim_output_dir",
    "file_lock",
    "is_within_directory",
    "iter_members",
    "member_name",
    "one_line",
    "output_dir",
    "path_component",
    "record_output",
    "regular_files",
    "resolve_inside",
    "safe_extract",
    "sha256_file",
    "verify_sha256",
]

_CHUNK = 1 << 20


class OutputRefused(InputError):
    """An output path holds something envbuild did not write; it is refused, never replaced."""


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike[str], mode: int = 0o644) -> Iterator[Path]:
    """A temp file beside ``path`` to write; renamed onto ``path`` when the block ends, removed when
    it raises, so no half file is ever at ``path``."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write(path: str | os.PathLike[str], data: str | bytes, mode: int = 0o644) -> Path:
    """Write ``data`` to ``path`` through a temp file and ``os.replace``, so no half file exists."""
    with atomic_file(path, mode) as tmp:
        tmp.write_bytes(data.encode() if isinstance(data, str) else data)
    return Path(path)


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


def regular_files(root: str | os.PathLike[str], _rel: str = "") -> Iterator[str]:
    """Relative paths of every entry under ``root`` that is neither a directory nor a symlink.

    Like ``os.walk`` without following directory links, but the entry types come from the
    directory listing itself (no stat per file).
    """
    with os.scandir(os.path.join(root, _rel) if _rel else root) as it:
        entries = list(it)
    for e in entries:
        rel = _rel + e.name
        if e.is_symlink():
            continue
        if e.is_dir(follow_symlinks=False):
            yield from regular_files(root, rel + "/")
        else:
            yield rel


# --- safe extraction ---------------------------------------------------------------------------
#
# One routine reads every archive envbuild opens (pack archives, bundles): member names are
# checked as written, and every path is then resolved against what is REALLY on disk in the
# destination after the earlier members, following symlinks ourselves with the kernel's own
# limits. os.path.realpath is not used for this: it gives up silently on paths longer than
# PATH_MAX, which is how the CVE-2025-4517 class (a long symlink chain, then a hardlink) gets
# past tarfile's own filter="tar"/"data" in Python 3.11.7.

_PATH_MAX = 4096  # Linux PATH_MAX
_MAX_LINKS = 40  # Linux MAXSYMLINKS: symlinks followed in one lookup


@dataclasses.dataclass(frozen=True)
class Member:
    """One archive member, its name already checked (relative, no '..')."""

    name: str
    kind: str  # "file" | "dir" | "symlink" | "hardlink"
    mode: int = 0o644
    link: str = ""  # symlink: its target text; hardlink: the (checked) member it links to
    mtime: float | None = None


def _unsafe(archive: str, message: str) -> UnsafeArchive:
    return UnsafeArchive(message, path=archive,
                         hint="The archive is refused whole; nothing from it is left in the destination.")


def member_name(raw: str, archive: str, what: str = "member") -> str:
    """An archive path as a relative POSIX path; UnsafeArchive for absolute, '..', NUL."""
    if "\0" in raw:
        raise _unsafe(archive, f"{what} {raw!r} has a NUL byte in its name.")
    if raw.startswith("/"):
        raise _unsafe(archive, f"{what} '{raw}' is an absolute path; it would be written outside the "
                               "destination.")
    parts = [p for p in raw.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise _unsafe(archive, f"{what} '{raw}' contains '..'; it could be written outside the destination.")
    return "/".join(parts)


def _tar_kind(ti: tarfile.TarInfo) -> str | None:
    if ti.isreg():
        return "file"
    if ti.isdir():
        return "dir"
    if ti.issym():
        return "symlink"
    if ti.islnk():
        return "hardlink"
    return None


def _node_name(mode_or_type: int | bytes) -> str:
    names = {tarfile.CHRTYPE: "a character device", tarfile.BLKTYPE: "a block device",
             tarfile.FIFOTYPE: "a FIFO", stat.S_IFCHR: "a character device",
             stat.S_IFBLK: "a block device", stat.S_IFIFO: "a FIFO", stat.S_IFSOCK: "a socket"}
    return names.get(mode_or_type, f"an unsupported member type ({mode_or_type!r})")


def iter_members(archive: str | os.PathLike[str]) -> Iterator[tuple[Member, IO[bytes] | None]]:
    """Every member of a tar (gz/bz2/xz/zst) or zip archive, in archive order, checked by name.

    Device nodes, FIFOs and sockets are refused (an env or a bundle never holds them).  The
    stream of a ``file`` member is only valid until the next member is asked for.

    Raises:
        UnsafeArchive: an absolute or '..' name, or a member that is not a file, directory or link.
    """
    src = str(archive)
    # is_zipfile() finds a zip end record near the end of the file, so an uncompressed tar whose
    # last member is a wheel looks like a zip: ask tarfile first, and trust a tar suffix.
    is_tar = src.endswith((".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz", ".zst", ".tzst"))
    if not is_tar and not tarfile.is_tarfile(src) and zipfile.is_zipfile(src):
        with zipfile.ZipFile(src) as zf:
            for zi in zf.infolist():
                mode = zi.external_attr >> 16
                fmt = stat.S_IFMT(mode)
                name = member_name(zi.filename, src)
                if zi.is_dir() or fmt == stat.S_IFDIR:
                    yield Member(name, "dir", mode & 0o7777 or 0o755), None
                elif fmt == stat.S_IFLNK:
                    yield Member(name, "symlink", 0o777, zf.read(zi).decode("utf-8", "surrogateescape")), None
                elif fmt in (0, stat.S_IFREG):
                    with zf.open(zi) as fh:
                        # zipfile drops Unix modes unless asked: bin/python of a zipped env must stay
                        # executable.
                        yield Member(name, "file", mode & 0o7777 or 0o644), fh
                else:
                    raise _unsafe(src, f"member '{zi.filename}' is {_node_name(fmt)}; archives envbuild "
                                       "reads hold only files, directories and links.")
        return
    with _open_tar(src) as tf:
        for ti in tf:
            kind = _tar_kind(ti)
            if kind is None:
                raise _unsafe(src, f"member '{ti.name}' is {_node_name(ti.type)}; archives envbuild reads "
                                   "hold only files, directories and links.")
            name = member_name(ti.name, src)
            link = ti.linkname if kind == "symlink" else \
                member_name(ti.linkname, src, f"hardlink '{ti.name}' ->") if kind == "hardlink" else ""
            m = Member(name, kind, ti.mode, link, float(ti.mtime))
            if kind != "file":
                yield m, None
            elif ti.sparse is None and tf.fileobj is not None:
                # read() like a raw file's (may be short), all safe_extract needs of the stream
                yield m, cast(IO[bytes], _MemberData(tf.fileobj, ti.offset_data, ti.size))  # type: ignore[arg-type]
            else:
                yield m, tf.extractfile(ti)


@dataclasses.dataclass
class ExtractLog:
    """What ``safe_extract`` saw in each file as it wrote it, so later checks need not read it again.

    An extracted file is never written again by the extraction (a later member of the same name
    replaces the file, a new inode), so these stay true until something else changes the tree.
    """

    needle: bytes | None = None  # looked for in every file as it is written
    hashes: dict[tuple[int, int], str] = dataclasses.field(default_factory=dict)  # sha256 by (dev, ino)
    hits: set[str] = dataclasses.field(default_factory=set)  # paths (links resolved) of files with needle


class _Job:
    """One file member to write: its data as a list (small files) or fed through a queue."""

    __slots__ = ("chunks", "full", "hit", "mode", "mtime", "rel")

    def __init__(self, full: str, rel: str, mode: int, mtime: float | None, chunks: Any) -> None:
        self.full, self.rel, self.mode, self.mtime, self.chunks = full, rel, mode, mtime, chunks
        self.hit = False  # the needle is in the file (known once every chunk was read)


class _Writers:
    """Threads that create, write, hash and close file members, beside the archive's reader.

    Creating a file costs the kernel far more than its bytes do (on ext4 about 0.3-1 ms an inode,
    most of an unpack of small files), and creations in several threads run side by side: the
    single-threaded ``tar -x`` waits for each in turn. Only that work is moved here; every name
    check, directory, link and replacement stays on the reading thread, in archive order (see
    ``_Tree.pending``). A file is opened with O_EXCL|O_NOFOLLOW here as it was there, so a name
    that became something else in between is an error, never a write through it.
    """

    def __init__(self, log: ExtractLog | None, hit_inodes: set[tuple[int, int]], threads: int) -> None:
        import queue
        import threading

        self._log = log
        self._hit_inodes = hit_inodes
        # Bounded: at most this many small files (each under _STREAMED) are held in memory.
        self._q: queue.Queue[_Job | None] = queue.Queue(maxsize=8 * threads)
        self._cv = threading.Condition()
        self._open = 0  # jobs submitted and not yet done
        self.error: BaseException | None = None
        self.done: list[str] = []  # full paths written since the last collect()
        self._threads = [threading.Thread(target=self._run, name=f"envbuild-write-{i}", daemon=True)
                         for i in range(threads)]
        for t in self._threads:
            t.start()

    def submit(self, job: _Job) -> None:
        if self.error is not None:
            self.wait()  # raises it
        with self._cv:
            self._open += 1
        self._q.put(job)

    def _run(self) -> None:
        while (job := self._q.get()) is not None:
            try:
                if self.error is not None:
                    raise self.error
                self._write(job)
            except BaseException as exc:  # handed to the reading thread
                if self.error is None:
                    self.error = exc
                if isinstance(job.chunks, _Feed):
                    job.chunks.abandon()
            finally:
                with self._cv:
                    self._open -= 1
                    self.done.append(job.full)
                    self._cv.notify_all()

    def _write(self, job: _Job) -> None:
        log = self._log
        h = hashlib.sha256() if log is not None else None
        fd = os.open(job.full, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            for chunk in job.chunks:
                if h is not None:
                    h.update(chunk)
                view = memoryview(chunk)
                while view:
                    view = view[os.write(fd, view):]
            # No set-uid/set-gid/sticky bits from an archive; the owner can always rewrite (fix-up).
            os.fchmod(fd, (job.mode & 0o777) | 0o600)
            if job.mtime is not None:
                os.utime(fd, (job.mtime, job.mtime))
            if log is not None and h is not None:
                st = os.fstat(fd)
                # Recorded before the close: the inode number cannot be reused while it is open.
                log.hashes[(st.st_dev, st.st_ino)] = h.hexdigest()
                if job.hit:
                    log.hits.add(job.rel)
                    self._hit_inodes.add((st.st_dev, st.st_ino))
        finally:
            os.close(fd)

    def collect(self) -> list[str]:
        """The full paths written since the last call (their jobs are done)."""
        with self._cv:
            out, self.done = self.done, []
        return out

    def wait(self) -> None:
        """Until every submitted file is written; raises the first error a thread met."""
        with self._cv:
            while self._open:
                self._cv.wait()
        if self.error is not None:
            raise self.error

    def close(self) -> None:
        """Stop the threads (after the files already submitted); errors are left to wait()."""
        for _ in self._threads:
            self._q.put(None)
        for t in self._threads:
            t.join()


class _Feed:
    """The chunks of one large file, handed from the reader to the thread writing it."""

    def __init__(self) -> None:
        import queue

        self._q: queue.Queue[bytes | None] = queue.Queue(maxsize=16)  # at most 16 chunks in memory
        self._gone = False

    def put(self, chunk: bytes | None) -> None:
        if not self._gone:
            self._q.put(chunk)

    def abandon(self) -> None:
        """The writer failed: the reader's puts no longer block, and it meets the error later."""
        self._gone = True
        with contextlib.suppress(Exception):
            while True:
                self._q.get_nowait()

    def __iter__(self) -> Iterator[bytes]:
        while (chunk := self._q.get()) is not None:
            yield chunk


# Files at least this large are fed to their writer chunk by chunk; smaller ones are read whole.
_STREAMED = 4 << 20


class _Stopped(Exception):
    """The writer threads are told to skip what is queued: the extraction failed."""


def _writer_threads() -> int:
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    # Two even on one CPU: a creation waiting on the disk leaves the CPU to the other.
    return max(2, min(4, cpus))


class _Tree:
    """Writes members under ``root``; every path is resolved against the disk, confined to root."""

    def __init__(self, root: Path, archive: str, log: ExtractLog | None = None, *,
                 fresh: bool = False) -> None:
        self.root = os.path.realpath(root)  # the destination itself is the caller's, trusted
        self.archive = archive
        self.links: list[str] = []
        self.dirs: dict[str, tuple[int, float | None]] = {}
        self.created: set[str] = set()  # top-level names we made, removed again on failure
        # Paths whose every component is a real directory (lstat, no link). Nothing can turn one
        # into anything else later (_clear refuses to replace a directory, nothing removes one),
        # so a member below one needs no lstat of each component again.
        self.real: set[str] = set()
        self.log = log
        self._hit_inodes: set[tuple[int, int]] = set()
        # An empty destination holds only what this extraction made (every name in self.made),
        # so a new name needs no lstat to know that nothing is in its way.
        self.fresh = fresh
        self.made: set[str] = set()  # full paths made so far (files, links, directories)
        # Files handed to the writer threads and maybe not on disk yet: before anything else is
        # done at such a name, or below it, those writes are waited for (_settle).
        self.pending: set[str] = set()
        self.writers: _Writers | None = None  # started with the first file
        self.feed: _Feed | None = None  # the large file being read, if any

    def path(self, parts: list[str]) -> str:
        return os.path.join(self.root, *parts)

    def resolve(self, rel: str, what: str, *, follow_last: bool = True) -> list[str]:
        """Symlink-free components of ``rel`` under root after following what is on disk now."""
        todo = list(reversed(rel.split("/")))
        out: list[str] = []
        hops = 0
        while todo:
            c = todo.pop()
            if c in ("", "."):
                continue
            if c == "..":
                if not out:
                    raise _unsafe(self.archive, f"{what} points outside the destination.")
                out.pop()
                continue
            out.append(c)
            full = self.path(out)
            if len(full.encode("utf-8", "surrogateescape")) >= _PATH_MAX:
                raise _unsafe(self.archive, f"{what} resolves to a path longer than PATH_MAX "
                                            f"({_PATH_MAX} bytes) (a symlink chain built to defeat checks).")
            if not todo and not follow_last:
                break
            if "/".join(out) in self.real:  # a real directory is no link: no lstat needed
                continue
            try:
                st = os.lstat(full)
            except OSError:  # not there yet (or under a file): the rest is created as written
                continue
            if stat.S_ISLNK(st.st_mode):
                hops += 1
                if hops > _MAX_LINKS:
                    raise _unsafe(self.archive, f"{what} follows more than {_MAX_LINKS} symlinks.")
                target = os.readlink(full)
                out.pop()
                if target.startswith("/"):
                    via = "/".join([*out, c])
                    raise _unsafe(self.archive, f"{what} goes through the symlink '{via}' -> '{target}', "
                                                "outside the destination.")
                todo.extend(reversed(target.split("/")))
        return out

    def _parent(self, m: Member) -> list[str]:
        head, _, _ = m.name.rpartition("/")
        if not head:
            return []
        if head in self.real:
            return head.split("/")
        parts = self.resolve(head, f"member '{m.name}'")
        for i in range(len(parts)):
            if "/".join(parts[: i + 1]) in self.real:
                continue
            d = self.path(parts[: i + 1])
            self._settle(d)
            try:
                st = os.lstat(d)
            except FileNotFoundError:
                os.mkdir(d, 0o755)
                self.made.add(d)
                self.created.add(parts[0])
                continue
            if not stat.S_ISDIR(st.st_mode):
                raise PackError(f"member '{m.name}' needs '{'/'.join(parts[: i + 1])}' to be a directory, "
                                "but the archive made it a file.", path=self.archive,
                                hint="The archive is damaged; make it again.")
        for i in range(len(parts)):  # each one was just found to be (or made) a real directory
            self.real.add("/".join(parts[: i + 1]))
        return parts

    def _clear(self, parts: list[str], m: Member) -> None:
        """Remove what an earlier member left at this exact name (never following a link)."""
        full = self.path(parts)
        try:
            st = os.lstat(full)
        except FileNotFoundError:
            return
        if stat.S_ISDIR(st.st_mode):
            if m.kind == "dir":
                return
            raise PackError(f"member '{m.name}' would replace a directory of the same name.",
                            path=self.archive, hint="The archive is damaged; make it again.")
        os.unlink(full)

    def add(self, m: Member, data: IO[bytes] | None) -> None:
        if not m.name:  # the archive's "./" entry is the destination itself
            return
        parent = self._parent(m)
        parts = [*parent, m.name.rpartition("/")[2]]
        full = self.path(parts)
        if len(full.encode("utf-8", "surrogateescape")) >= _PATH_MAX:
            raise _unsafe(self.archive, f"member '{m.name}' lands at a path longer than PATH_MAX "
                                        f"({_PATH_MAX} bytes) (a symlink chain built to defeat checks).")
        self.created.add(parts[0])
        self._settle(full)
        if m.kind == "file":
            assert data is not None
            self._file(parts, full, m, data)
            self.made.add(full)
            return
        self.made.add(full)
        if m.kind == "dir":
            try:
                os.mkdir(full, 0o755)
                # made here, in a real directory (what _parent returns is one): members below it
                # need no lstat of their path
                self.real.add("/".join(parts))
            except FileExistsError:  # a directory stays; anything else there is cleared first
                self._clear(parts, m)
                with contextlib.suppress(FileExistsError):
                    os.mkdir(full, 0o755)
            self.dirs["/".join(parts)] = (m.mode, m.mtime)
            return
        self._clear(parts, m)
        if m.kind == "symlink":
            if not m.link or "\0" in m.link or m.link.startswith("/"):
                raise _unsafe(self.archive, f"symlink '{m.name}' -> '{m.link}' points outside the "
                                            "destination (absolute or empty target).")
            self.resolve("/".join([*parent, m.link]), f"symlink '{m.name}' -> '{m.link}'")
            os.symlink(m.link, full)
            self.links.append("/".join(parts))
            return
        src = self.resolve(m.link, f"hardlink '{m.name}' -> '{m.link}'")
        self._settle(self.path(src))
        try:
            st = os.lstat(self.path(src))
        except OSError:  # not there, or under a file (ENOTDIR)
            st = None
        if st is None or not stat.S_ISREG(st.st_mode):
            raise _unsafe(self.archive, f"hardlink '{m.name}' -> '{m.link}' does not name a file "
                                        "extracted before it.")
        os.link(self.path(src), full, follow_symlinks=False)
        if self.log is not None and (st.st_dev, st.st_ino) in self._hit_inodes:
            self.log.hits.add("/".join(parts))

    def _settle(self, full: str) -> None:
        """Wait for the writer threads when ``full`` is a file they may not have written yet."""
        if full in self.pending and self.writers is not None:
            self.pending.difference_update(self.writers.collect())
            if full in self.pending:
                self.writers.wait()
                self.pending.clear()
                self.writers.collect()

    def _file(self, parts: list[str], full: str, m: Member, data: IO[bytes]) -> None:
        """Write one file member (hashed as it is written when asked), never through a link."""
        if not self.fresh or full in self.made:
            self._clear(parts, m)  # an earlier member of that name: cleared as tar does, then written
        if self.writers is None:
            self.writers = _Writers(self.log, self._hit_inodes, _writer_threads())
        needle = self.log.needle if self.log is not None else None
        size = getattr(data, "size", None)
        feed = _Feed() if size is None or size >= _STREAMED else None
        job = _Job(full, "/".join(parts), m.mode, m.mtime, feed if feed is not None else [])
        if feed is not None:
            self.feed = feed
            self.writers.submit(job)  # written while it is read, a few chunks behind
        hit, tail = False, b""
        while chunk := data.read(_CHUNK):
            if needle and not hit:  # also across two chunks: the previous one's tail
                hit = needle in chunk or (bool(tail) and needle in tail + chunk[:len(needle) - 1])
                tail = chunk[1 - len(needle):] if len(needle) > 1 else b""
            if feed is not None:
                feed.put(chunk)
            else:
                job.chunks.append(chunk)
        job.hit = hit  # read by the writer only after the end of its chunks
        if feed is not None:
            feed.put(None)
            self.feed = None
        else:
            self.writers.submit(job)
        self.pending.add(full)

    def finish(self) -> None:
        if self.writers is not None:
            self.writers.wait()  # every file written, every digest in log.hashes
            self.writers.close()
            self.pending.clear()
        # A symlink checked when it was made can be turned outward by later members (a name it
        # passes through became a link): check every one again against the final tree.
        for rel in self.links:
            self.resolve(rel, f"symlink '{rel}'")
        for rel, (mode, mtime) in sorted(self.dirs.items(), reverse=True):
            os.chmod(self.path(rel.split("/")), (mode & 0o777) | 0o700)
            if mtime is not None:
                os.utime(self.path(rel.split("/")), (mtime, mtime), follow_symlinks=False)

    def stop(self) -> None:
        """After an error: the writer threads end (skipping what is queued) before anything is removed."""
        if self.writers is not None:
            if self.writers.error is None:
                self.writers.error = _Stopped("extraction stopped")
            if self.feed is not None:
                self.feed.put(None)  # the writer of a half-read file stops waiting for the rest
            self.writers.close()

    def remove_created(self) -> None:
        for top in self.created:
            full = os.path.join(self.root, top)
            if os.path.isdir(full) and not os.path.islink(full):
                shutil.rmtree(full, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    os.unlink(full)


def resolve_inside(root: str | os.PathLike[str], rel: str, what: str, archive: str) -> Path:
    """The path ``rel`` names under ``root`` after following the links on disk, never outside it.

    Raises:
        UnsafeArchive: ``rel`` is absolute, has '..', or resolves outside ``root``.
    """
    member_name(rel, archive, what)
    tree = _Tree(Path(root), archive)
    return Path(tree.path(tree.resolve(rel, f"{what} '{rel}'")))


def safe_extract(archive: str | os.PathLike[str], dest: str | os.PathLike[str], *,
                 unique: tuple[str, ...] = (), first: str | None = None,
                 log: ExtractLog | None = None) -> Path:
    """Extract a tar (gz/bz2/xz/zst) or zip archive into ``dest``; nothing can land outside it.

    Member names must be relative without '..'; symlink and hardlink targets are resolved against
    the files already extracted and must stay inside ``dest``; device nodes and FIFOs are refused.
    Each name in ``unique`` may occur once; ``first``, when present, must be the first file.  On
    any error every file this call wrote is removed again (``dest`` too, if it made it).
    ``log``, when given, receives the sha256 of every file written and the files holding
    ``log.needle``, taken while each is written (see ExtractLog), so checks after extraction
    need no second read.

    Raises:
        UnsafeArchive: a member or link escapes ``dest``, or is a device/FIFO, or repeats.
    """
    src = str(archive)
    out = Path(dest)
    made = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    with os.scandir(out) as entries:
        empty = next(entries, None) is None
    tree = _Tree(out, src, log, fresh=empty)
    seen: set[str] = set()
    files = 0
    try:
        for m, data in iter_members(src):
            if m.name in unique:
                if m.name in seen:
                    raise _unsafe(src, f"the archive holds '{m.name}' twice; the second would replace the "
                                       "one that was read and checked.")
                seen.add(m.name)
            if m.kind == "file":
                files += 1
                if first is not None and m.name == first and files != 1:
                    raise _unsafe(src, f"'{first}' is member #{files}, not the first file; envbuild writes "
                                       "it first, and reads only that one.")
            tree.add(m, data)
        tree.finish()
    except BaseException:
        tree.stop()
        if made:
            shutil.rmtree(out, ignore_errors=True)
        else:
            tree.remove_created()
        raise
    return out


class _Forward:
    """A forward-only, seekable-looking view of a pipe, for tarfile's ``r:`` mode.

    tarfile's stream mode (``r|``) copies its whole read buffer on every small read; its ``r:``
    mode only ever seeks forward while members are read in order, so this view serves it
    straight from large pipe reads (a backward seek is refused, never silently wrong).
    """

    def __init__(self, raw: IO[bytes]) -> None:
        self._raw = raw
        self._buf = b""
        self._at = 0  # index of the next unread byte in _buf
        self._pos = 0  # stream offset of _buf[_at]

    def tell(self) -> int:
        return self._pos

    def seekable(self) -> bool:
        return True

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        avail = len(self._buf) - self._at
        if 0 <= n <= avail:
            out = self._buf[self._at:self._at + n]
            self._at += n
            self._pos += n
            return out
        parts = [self._buf[self._at:]] if avail else []
        need = n - avail if n >= 0 else -1
        self._buf, self._at = b"", 0
        while need != 0:
            chunk = self._raw.read(max(need, _CHUNK) if need > 0 else _CHUNK)
            if not chunk:
                break
            if 0 < need < len(chunk):
                parts.append(chunk[:need])
                self._buf, self._at = chunk, need
                break
            parts.append(chunk)
            need -= len(chunk) if need > 0 else 0
        out = parts[0] if len(parts) == 1 else b"".join(parts)
        self._pos += len(out)
        return out

    def read_some(self, n: int) -> bytes:
        """Up to ``n`` (> 0) bytes, fewer when that saves a copy; b"" only at the end."""
        avail = len(self._buf) - self._at
        if avail:
            out = self._buf if self._at == 0 and n >= avail else self._buf[self._at:self._at + n]
            self._at += len(out)
        elif n >= _CHUNK:
            out = self._raw.read(n)  # straight from the pipe, no buffer in between
        else:
            self._buf, self._at = self._raw.read(_CHUNK), 0
            out = self._buf[:n]
            self._at = len(out)
        self._pos += len(out)
        return out

    def seek(self, pos: int, whence: int = 0) -> int:
        target = pos + (self._pos if whence == 1 else 0)
        if whence == 2 or target < self._pos:
            raise OSError("backward seek in a compressed tar stream")
        while self._pos < target:
            if not self.read(min(target - self._pos, 16 * _CHUNK)):
                break  # past the end: the next read returns nothing, tarfile reports the truncation
        return self._pos


class _MemberData:
    """The data of one (non-sparse) tar member, read from the archive stream without tarfile's
    per-member buffered reader. ``read(n)`` may return fewer than ``n`` bytes (as a raw file's
    read does); b"" means the member is done."""

    def __init__(self, stream: IO[bytes] | _Forward, offset: int, size: int) -> None:
        self._f, self._pos, self._end = stream, offset, offset + size
        self.size = size

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            parts = []
            while part := self.read(_CHUNK):
                parts.append(part)
            return b"".join(parts)
        left = self._end - self._pos
        if left <= 0 or n == 0:
            return b""
        if self._f.tell() != self._pos:
            self._f.seek(self._pos)
        f = self._f
        out = f.read_some(min(n, left)) if isinstance(f, _Forward) else f.read(min(n, left))
        if not out:
            raise tarfile.ReadError("unexpected end of data")
        self._pos += len(out)
        return out


def _zstd_pipe(fh: IO[bytes]) -> tuple[IO[bytes], Callable[[], None]]:
    """A readable stream of the decompressed tar and a function that ends it.

    The ``zstd`` program runs beside envbuild (as ``tar -I zstd`` does: decompression on its own
    core, no temp copy); without it, python-zstandard decompresses in this process.
    """
    import subprocess

    exe = shutil.which("zstd")
    if exe is None:
        import zstandard

        reader = zstandard.ZstdDecompressor().stream_reader(fh, read_size=_CHUNK, read_across_frames=True)
        return reader, reader.close
    proc = subprocess.Popen([exe, "-dcq"], stdin=fh, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            bufsize=0)
    assert proc.stdout is not None and proc.stderr is not None
    with contextlib.suppress(OSError, AttributeError):
        import fcntl

        fcntl.fcntl(proc.stdout.fileno(), fcntl.F_SETPIPE_SZ, _CHUNK)  # fewer, larger reads

    def end() -> None:
        if proc.poll() is None:
            proc.kill()
        err = proc.stderr.read().decode("utf-8", "replace").strip() if proc.stderr else ""
        proc.wait()
        proc.stdout.close()  # type: ignore[union-attr]
        proc.stderr.close()  # type: ignore[union-attr]
        if proc.returncode not in (0, -9):
            raise tarfile.ReadError(f"zstd -d exited with {proc.returncode}: {err[-300:]}")

    return proc.stdout, end


@contextlib.contextmanager
def _open_tar(src: str) -> Iterator[tarfile.TarFile]:
    if src.endswith((".zst", ".tzst", ".tar.zst")):
        with open(src, "rb") as fh:
            stream, end = _zstd_pipe(fh)
            ok = False
            try:
                with tarfile.open(fileobj=_Forward(stream), mode="r:") as tf:  # type: ignore[call-overload]
                    yield tf
                ok = True
            finally:
                if ok:
                    end()
                else:
                    with contextlib.suppress(tarfile.ReadError):
                        end()
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
