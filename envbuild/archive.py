"""An env archive as a file: its format, its members streamed, its manifest, what it holds.

``envbuild pack`` writes tar.gz / tar.zst / zip / squashfs with ``envbuild-manifest.json`` as the
FIRST member (so ``inspect`` reads it without decompressing the rest), ``bin/envbuild-unpack``
(the stdlib-only fix-up, also run by the Slurm script) and ``envbuild-files.sha256`` as the LAST
member (sha256 of every member as packed). A plain conda-pack archive has none of them: inspect
then reads its conda-meta records and dist-info files as they stream by (envbuild._envcheck's
rules). Reading only: pack.py writes archives, unpack.py extracts them.
"""

from __future__ import annotations

import json
import re
import subprocess
import tarfile
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from functools import partial
from pathlib import Path
from typing import IO, Any

from envbuild import _envcheck
from envbuild.errors import InputError, PackError, UnsafeArchive

__all__ = ["CHECKSUMS", "FIXUP_SCRIPT", "MANIFEST", "MANIFEST_SCHEMA", "inspect_archive", "read_manifest"]

MANIFEST = "envbuild-manifest.json"
CHECKSUMS = "envbuild-files.sha256"
FIXUP_SCRIPT = "bin/envbuild-unpack"
MANIFEST_SCHEMA = 1
CONDA_PLACEHOLDER = "/opt/anaconda1anaconda2" "anaconda3"  # split so it never appears in this file
_CONDA_RECORD = re.compile(r"conda-meta/[^/]+\.json")


def _format_of(output: Path, fmt: str | None) -> str:
    if fmt:
        return fmt
    name = output.name
    if name.endswith((".tar.zst", ".tzst")):
        return "tar.zst"
    if name.endswith(".zip"):
        return "zip"
    if name.endswith((".squashfs", ".sqsh", ".sqfs")):
        return "squashfs"
    return "tar.gz"


def _is_squashfs(archive: Path) -> bool:
    from envbuild.tools import squashfs

    return squashfs.is_image(archive)


@contextmanager
def _open_stream(archive: Path) -> Iterator[tarfile.TarFile | zipfile.ZipFile]:
    name = archive.name
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            yield zf
        return
    if name.endswith((".zst", ".tzst")):
        with open(archive, "rb") as fh:
            stream: IO[bytes]
            try:
                import zstandard

                stream = zstandard.ZstdDecompressor().stream_reader(fh, read_across_frames=True)
                proc = None
            except ImportError:
                proc = subprocess.Popen(["zstd", "-dc"], stdin=fh, stdout=subprocess.PIPE)
                assert proc.stdout is not None
                stream = proc.stdout
            try:
                with tarfile.open(fileobj=stream, mode="r|") as tf:
                    yield tf
            finally:
                if proc is not None:
                    proc.kill()
                    proc.wait()
        return
    with tarfile.open(archive, mode="r|*") as tf:
        yield tf


def _check_archive(archive: Path) -> None:
    if not archive.is_file():
        raise InputError("the archive does not exist.", path=str(archive),
                         hint="Give a file written by 'envbuild pack' or conda-pack.")


def _checked_manifest(raw: bytes, archive: Path) -> dict[str, Any]:
    """Decode, parse and validate the manifest member through the one schema layer (envbuild.models)."""
    from envbuild.models import check_pack_manifest, decode_text, parse_json

    where = f"{archive}!{MANIFEST}"
    # A damaged manifest is the archive's fault: PackError (exit 5), as for the rest of the archive.
    return check_pack_manifest(parse_json(decode_text(raw, path=where, error=PackError), path=where,
                                          error=PackError),
                               where, error=PackError)


def read_manifest(archive: Path) -> dict[str, Any] | None:
    """The embedded envbuild-manifest.json (the first member), or None for a plain conda-pack archive."""
    _check_archive(archive)
    if _is_squashfs(archive):
        return _squashfs_manifest(archive)
    try:
        with _open_stream(archive) as arc:
            if isinstance(arc, zipfile.ZipFile):
                # The same rule as extraction: the manifest is the first file, and there is one.
                infos = [i for i in arc.infolist() if not i.is_dir()]
                hits = [i for i in infos if _member(i.filename) == MANIFEST]
                if len(hits) > 1:
                    raise UnsafeArchive(f"the archive holds '{MANIFEST}' twice; the second would replace "
                                        "the one that was read and checked.", path=str(archive),
                                        hint="The archive is refused whole.")
                if not hits or infos[0] is not hits[0]:
                    return None
                return _checked_manifest(arc.read(hits[0]), archive)
            for m in arc:
                if _member(m.name) == MANIFEST and m.isfile():
                    fh = arc.extractfile(m)
                    return _checked_manifest(fh.read(), archive) if fh else None
                if m.isfile():
                    return None
    except (tarfile.TarError, zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
        raise PackError(f"cannot read the archive ({exc}).", path=str(archive),
                        hint="The file is truncated or not an env archive; pack it again.") from None
    return None


def _member(name: str) -> str:
    return "/".join(p for p in name.split("/") if p not in ("", "."))


def _squashfs_manifest(archive: Path) -> dict[str, Any] | None:
    from envbuild.tools import squashfs

    data = squashfs.cat(archive, MANIFEST)
    if data is None:
        return None
    return _checked_manifest(data, archive)


def _content_keys(manifest: dict[str, Any] | None, fmt: str | None) -> dict[str, Any]:
    """env_files / env_dirs / env_bytes, and the inodes the env costs where it is used.

    A tar or zip is unpacked (every file and directory becomes an inode on the target's
    filesystem); a squashfs image is mounted and stays ONE file (``image_files``: 1).
    """
    content = (manifest or {}).get("content") or {}
    files, dirs = content.get("files"), content.get("dirs")
    squash = fmt == "squashfs"
    inodes = 1 if squash else (files + dirs if files is not None and dirs is not None else None)
    return {"env_files": files, "env_dirs": dirs, "env_bytes": content.get("bytes"),
            "image_files": 1 if squash else None, "inodes_when_used": inodes}


def inspect_archive(archive: Path) -> dict[str, Any]:
    """Packages and origin of an archive, streamed; never extracts to disk."""
    manifest = read_manifest(archive)
    if manifest is not None:
        fmt = "squashfs" if _is_squashfs(archive) else manifest.get("format")
        return {"archive": str(archive), "size": archive.stat().st_size, "has_manifest": True,
                "kind": manifest.get("kind"), "source": manifest.get("source"),
                "python": manifest.get("python"), "torch": manifest.get("torch"),
                "created": manifest.get("created"), "generated_by": manifest.get("generated_by"),
                "lock": (manifest.get("lock") or {}).get("name") if manifest.get("lock") else None,
                "packages": manifest.get("packages", []), "format": fmt,
                **_content_keys(manifest, fmt)}
    if _is_squashfs(archive):
        return _inspect_plain_squashfs(archive)
    return _inspect_plain(archive)


def _plain_info(archive: Path, pkgs: list[dict[str, Any]], prefix: str | None, fmt: str,
                content: dict[str, Any]) -> dict[str, Any]:
    """inspect's answer for an archive without a manifest: what its files tell."""
    return {"archive": str(archive), "size": archive.stat().st_size, "has_manifest": False,
            "kind": "conda" if pkgs else None, "source": {"prefix": prefix, "profile": None},
            "python": next((p["version"] for p in pkgs if p["name"] == "python"), None), "torch": None,
            "created": None, "generated_by": None, "lock": None, "packages": pkgs, "format": fmt, **content}


def _members(arc: tarfile.TarFile | zipfile.ZipFile) -> Iterator[tuple[str, Callable[[], bytes]]]:
    """(name, read) of each file member, in archive order; read before asking for the next one."""
    if isinstance(arc, zipfile.ZipFile):
        for name in arc.namelist():
            yield name, partial(arc.read, name)
        return
    for m in arc:
        if m.isfile():
            yield m.name, partial(_tar_read, arc, m)


def _inspect_plain(archive: Path) -> dict[str, Any]:
    """A plain conda-pack tar/zip: its conda-meta records and dist-info files, streamed."""
    pkgs: list[dict[str, Any]] = []
    prefix = None
    dists: dict[str, dict[str, str]] = {}
    try:
        with _open_stream(archive) as arc:
            for name, read in _members(arc):
                name = name.lstrip("./")
                if _CONDA_RECORD.fullmatch(name):
                    with suppress(ValueError):
                        if isinstance(rec := json.loads(read()), dict):
                            pkgs.append(_envcheck.conda_package(rec))
                elif name == "bin/conda-unpack":
                    prefix = _old_prefix_from_unpack(read().decode("utf-8", "replace"))
                elif hit := _envcheck.dist_member(name):
                    dists.setdefault(hit[0], {})[hit[1]] = read().decode("utf-8", "replace")
    except (tarfile.TarError, zipfile.BadZipFile, OSError, EOFError) as exc:
        raise PackError(f"cannot read the archive ({exc}).", path=str(archive),
                        hint="The file is truncated or not an env archive; pack it again.") from None
    seen = {_envcheck.norm_name(str(p["name"])) for p in pkgs}
    for meta in dists.values():
        installer = meta.get("INSTALLER", "").strip() or None
        dname = _envcheck.metadata_field(meta.get("METADATA"), "Name")
        if installer == "conda" or not dname or _envcheck.norm_name(dname) in seen:
            continue
        seen.add(_envcheck.norm_name(dname))
        pkgs.append(_envcheck.pip_package(dname, _envcheck.metadata_field(meta["METADATA"], "Version") or "",
                                          installer))
    return _plain_info(archive, pkgs, prefix, _format_of(archive, None), _content_keys(None, None))


def _inspect_plain_squashfs(archive: Path) -> dict[str, Any]:
    """A conda-pack squashfs without an envbuild manifest: its conda-meta records, read one by one."""
    from envbuild.tools import squashfs

    entries = squashfs.listing(archive)
    pkgs: list[dict[str, Any]] = []
    for e in entries:
        if e.type == "-" and _CONDA_RECORD.fullmatch(e.path):
            with suppress(json.JSONDecodeError):
                if isinstance(rec := json.loads(squashfs.cat(archive, e.path) or b"{}"), dict):
                    pkgs.append(_envcheck.conda_package(rec))
    unpack_script = squashfs.cat(archive, "bin/conda-unpack") if any(
        e.path == "bin/conda-unpack" for e in entries) else None
    prefix = _old_prefix_from_unpack(unpack_script.decode("utf-8", "replace")) if unpack_script else None
    files = sum(1 for e in entries if e.type != "d")
    return _plain_info(archive, pkgs, prefix, "squashfs", _content_keys(
        {"content": {"files": files, "dirs": len(entries) - files, "bytes": None}}, "squashfs"))


def _tar_read(tf: tarfile.TarFile, m: tarfile.TarInfo) -> bytes:
    fh = tf.extractfile(m)
    return fh.read() if fh else b""


def _old_prefix_from_unpack(script: str) -> str | None:
    counts: dict[str, int] = {}
    for m in re.finditer(r"\('[^']*', '([^']*)', '(?:text|binary)'\)", script):
        if m.group(1) != CONDA_PLACEHOLDER:
            counts[m.group(1)] = counts.get(m.group(1), 0) + 1
    return max(counts, key=lambda k: counts[k]) if counts else None
