"""squashfs-tools adapter: build an image with ``mksquashfs``, read it with ``unsquashfs``.

An env packed as squashfs is ONE file on a parallel filesystem (instead of tens of thousands),
mounted read-only with ``squashfuse`` (no root). envbuild never mounts it; it lists the image
(``unsquashfs -l`` / ``-lln``), reads single files (``-cat``) and extracts (``-d``) only after
the listing proved every entry lands inside the destination: no absolute or ``..`` path, no
device node, fifo or socket, no link leaving the destination unless the caller allows it.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

from envbuild.errors import ToolError, UnsafeArchive
from envbuild.tools._run import ToolFailed, run

__all__ = [
    "MAGIC",
    "Entry",
    "cat",
    "extract",
    "is_image",
    "listing",
    "mksquashfs",
    "require",
]

MAGIC = b"hsqs"  # the superblock's s_magic 0x73717368, little-endian, at offset 0
_ROOT = "squashfs-root"  # unsquashfs prefixes every listed path with the -d name
_HINT = "Install squashfs-tools (Debian/Ubuntu: apt-get install squashfs-tools; conda: squashfs-tools)."
# -lln: "drwxr-xr-x 0/0   41 2026-12-01 12:00 squashfs-root/bin"; devices show "major, minor".
_LONG = re.compile(r"^(?P<type>[-dlcbps])(?P<perm>[-rwxsStT]{9})\s+\S+\s+(?:\d+|\d+,\s*\d+)\s+"
                   r"\d{4}-\d\d-\d\d \d\d:\d\d (?P<rest>.*)$")


@dataclass(frozen=True)
class Entry:
    """One listed entry: path relative to the image root, type letter (``-dlcbps``), link target."""

    path: str
    type: str
    mode: str
    target: str | None = None


def is_image(path: Path) -> bool:
    """True when the file starts with the squashfs magic (the name is not trusted)."""
    try:
        with open(path, "rb") as fh:
            return fh.read(4) == MAGIC
    except OSError:
        return False


def require(name: str) -> str:
    """The path of ``mksquashfs`` / ``unsquashfs``, or a ToolError saying how to install it."""
    return _exe(name)


def _exe(name: str) -> str:
    exe = shutil.which(name)
    if exe is None:
        raise ToolError(f"'{name}' is not installed or not on PATH.", field=name, hint=_HINT)
    return exe


def mksquashfs(source: Path, image: Path, *, jobs: int, level: int) -> None:
    """Squash ``source`` into ``image`` with conda-pack's choice of compression for ``level``.

    conda-pack maps level 0 to no compression, 9 to xz and anything else to zstd at
    ``level/8*20`` with 256 KiB blocks; envbuild keeps that so both tools' images mount alike.
    Output is captured (conda-pack lets mksquashfs print, which would corrupt ``--json``).
    """
    cmd = [_exe("mksquashfs"), str(source), str(image), "-noappend", "-processors", str(max(1, jobs)),
           "-quiet", "-no-progress"]
    if level == 0:
        cmd += ["-noI", "-noD", "-noF", "-noX"]
    elif level == 9:
        cmd += ["-comp", "xz"]
    else:
        cmd += ["-comp", "zstd", "-Xcompression-level", str(int(level / 8 * 20)), "-b", str(256 * 1024)]
    run(cmd, tool="mksquashfs", hint=_HINT)


def _read_lines(args: list[str], image: Path) -> list[str]:
    try:
        out = run([_exe("unsquashfs"), *args, "-d", _ROOT, str(image)], tool="unsquashfs", hint=_HINT)
    except ToolFailed as exc:
        raise UnsafeArchive(f"unsquashfs cannot read the image: {exc.stderr.strip()[-500:]}",
                            path=str(image), hint="The image is damaged or not squashfs; pack it again.") \
            from None
    return [ln for ln in out.stdout.splitlines() if ln == _ROOT or ln.startswith(_ROOT + "/")
            or _LONG.match(ln)]


def listing(image: Path) -> list[Entry]:
    """Every entry of the image (the root itself excluded), read with ``unsquashfs -l`` and ``-lln``.

    The two listings come in the same order: ``-l`` gives the exact path, ``-lln`` its type and,
    for a symlink, ``path -> target`` (split by the known path length, since names may hold ' -> ').
    """
    names = [ln for ln in _read_lines(["-no-xattrs", "-l"], image) if not _LONG.match(ln)]
    longs = [m for ln in _read_lines(["-no-xattrs", "-lln"], image) if (m := _LONG.match(ln))]
    if len(names) != len(longs):
        raise UnsafeArchive("the image's listings disagree (a file name holds a line break?).",
                            path=str(image), hint="The image is refused whole; nothing was extracted.")
    out: list[Entry] = []
    for name, m in zip(names, longs, strict=True):
        rest = m.group("rest")
        if not rest.startswith(name):
            raise UnsafeArchive(f"cannot parse the image's listing at '{name}'.", path=str(image),
                                hint="The image is refused whole; nothing was extracted.")
        if name == _ROOT:
            continue
        target = rest[len(name) + 4:] if m.group("type") == "l" and rest[len(name):].startswith(" -> ") \
            else None
        out.append(Entry(path=name[len(_ROOT) + 1:], type=m.group("type"), mode=m.group("perm"),
                         target=target))
    return out


def _within(rel: str) -> bool:
    parts = rel.split("/")
    return bool(rel) and not rel.startswith("/") and all(p not in ("", ".", "..") for p in parts) \
        and "\0" not in rel


def check(image: Path, entries: list[Entry], allowed_links: Collection[str] = ()) -> None:
    """Refuse the image unless every entry stays inside the destination it is extracted to.

    ``allowed_links``: paths whose symlink may point outside (a venv's links to its base
    interpreter, which the manifest records); any other link must resolve inside.
    """
    def refuse(msg: str) -> UnsafeArchive:
        return UnsafeArchive(msg, path=str(image), hint="The image is refused whole; nothing was extracted.")

    for e in entries:
        if not _within(e.path):
            raise refuse(f"entry '{e.path}' would be written outside the destination.")
        if e.type in "cbps":
            kind = {"c": "a character device", "b": "a block device", "p": "a fifo", "s": "a socket"}[e.type]
            raise refuse(f"entry '{e.path}' is {kind}; an env image holds files, links and directories only.")
        if e.type == "l":
            t = e.target or ""
            if e.path in allowed_links:
                continue
            joined = os.path.normpath(os.path.join(os.path.dirname(e.path), t))
            if t.startswith("/") or joined == ".." or joined.startswith("../"):
                raise refuse(f"link '{e.path}' -> '{t}' points outside the destination.")


def cat(image: Path, member: str) -> bytes | None:
    """The bytes of one regular file in the image, or None when it has no such file."""
    if not _within(member):
        raise ValueError(member)
    import subprocess

    proc = subprocess.run([_exe("unsquashfs"), "-no-xattrs", "-cat", str(image), member],
                          capture_output=True, check=False)
    if proc.returncode != 0:
        err = proc.stderr.decode("utf-8", "replace")
        if "no matches for" in err or "not found" in err or "No such file" in err:
            return None
        raise UnsafeArchive(f"unsquashfs cannot read '{member}' from the image: {err.strip()[-500:]}",
                            path=str(image), hint="The image is damaged or not squashfs; pack it again.")
    return proc.stdout


def extract(image: Path, dest: Path, allowed_links: Collection[str] = ()) -> list[Entry]:
    """Extract the image into ``dest`` (new or empty) after ``check`` passed on its listing.

    Ownership is the extracting user's and setuid/setgid bits are dropped, as tar's "tar" filter does.
    """
    entries = listing(image)
    check(image, entries, allowed_links)
    dest.mkdir(parents=True, exist_ok=True)
    if any(dest.iterdir()):
        raise UnsafeArchive("the extraction directory is not empty.", path=str(dest),
                            hint="Extract into a new directory.")
    run([_exe("unsquashfs"), "-no-xattrs", "-quiet", "-no-progress", "-f", "-d", str(dest), str(image)],
        tool="unsquashfs", hint=_HINT)
    uid = os.getuid()
    for e in entries:
        path = dest / e.path
        if e.type == "l":
            continue
        st = path.lstat()
        if st.st_mode & (stat.S_ISUID | stat.S_ISGID):
            os.chmod(path, stat.S_IMODE(st.st_mode) & ~(stat.S_ISUID | stat.S_ISGID))
        if uid == 0 and st.st_uid != 0:
            os.lchown(path, 0, 0)
    return entries
