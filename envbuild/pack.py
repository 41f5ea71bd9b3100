"""Pack an env into one archive that says what it holds and where it came from.

``pack`` writes a conda env (through conda-pack) or a venv (envbuild's own packer, see
docs/pack.md for why not venv-pack) into tar.gz / tar.zst / zip / squashfs, in the layout
envbuild/archive.py describes (manifest first, checksums last). Before writing it reads the env
(envbuild._envcheck, the one env reader) and refuses what would not survive the move: editable
installs, pip files over conda ones, conda files gone. unpack.py is the other end.
"""

from __future__ import annotations

import json
import mmap
import os
import shlex
import stat
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from envbuild import __version__, _envcheck
from envbuild._fs import sha256_file
from envbuild.archive import (
    CHECKSUMS,
    FIXUP_SCRIPT,
    MANIFEST,
    MANIFEST_SCHEMA,
    _content_keys,
    _format_of,
)
from envbuild.errors import InputError, PackError
from envbuild.models import Profile

__all__ = [
    "EditableInstall",
    "MissingCondaFiles",
    "PackResult",
    "PipOverwroteConda",
    "build_manifest",
    "conda_state",
    "env_kind",
    "pack",
]

# Members envbuild adds itself; an env that was unpacked from an envbuild archive carries them.
_OWN = (MANIFEST, CHECKSUMS, FIXUP_SCRIPT, ".envbuild-unpacked")
# conda-pack writes these into every archive; an unpacked env carries the old ones.
_CONDA_PACK_OWN = ("bin/conda-unpack", "bin/conda_unpack_progress.py")


class EditableInstall(PackError):
    """Editable installs (pip install -e, setup.py develop) live outside the env."""


class PipOverwroteConda(PackError):
    """pip replaced or rewrote files a conda package owns."""


class MissingCondaFiles(PackError):
    """Files listed in conda-meta are gone."""


# --- reading an env (the files are read by envbuild._envcheck) -------------------------------


def env_kind(prefix: Path) -> str:
    """``conda`` (conda-meta/), ``venv`` (pyvenv.cfg), or raise InputError."""
    if (prefix / "conda-meta").is_dir():
        return "conda"
    if (prefix / "pyvenv.cfg").is_file():
        return "venv"
    if not prefix.exists():
        raise InputError("the environment directory does not exist.", path=str(prefix),
                         hint="Give the env's prefix (the directory holding bin/python).")
    raise InputError("not a conda environment (no conda-meta/) nor a venv (no pyvenv.cfg).",
                     path=str(prefix), hint="Give the env's prefix (the directory holding bin/python).")


def _editables(prefix: Path) -> list[dict[str, str]]:
    return _envcheck.editables(str(prefix))


def _raise_editables(prefix: Path, eds: list[dict[str, str]], raw: str | None) -> None:
    names = "; ".join(f"{e['name']} {e['version']}".strip() + f" (source {e['source']}, {e['how']}, "
                      f"{e['evidence']})" for e in eds)
    first = eds[0]
    py = shlex.quote(str(prefix / "bin" / "python"))
    err = EditableInstall(
        "cannot pack: editable installs keep their code in a source checkout outside the env, so the "
        f"archive would not contain it and the package would fail to import on the target: {names}.",
        path=str(prefix),
        hint=(f"Reinstall each as a regular package, e.g. `{py} -m pip uninstall -y {first['name']} && "
              f"cd {shlex.quote(first['source'])} && {py} -m pip install --no-deps --no-build-isolation .` "
              "(`pip install .`, not `-e`; for mmdet3d-style `setup.py develop` installs the same), then "
              "pack again; or pass --ignore-editable-packages to pack without them (they will be missing "
              "on the target)."),
    )
    err.conda_pack_said = raw  # type: ignore[attr-defined]
    raise err


# --- conda consistency: pip over conda, missing files, case collisions, uncached --------------


def _pip_owners(prefix: Path) -> dict[str, str]:
    """Path (relative to prefix) -> 'name version' of the non-conda dist whose RECORD lists it."""
    owners: dict[str, str] = {}
    for d in _envcheck.dist_infos(str(prefix)):
        if d["installer"] == "conda":
            continue
        site_rel = os.path.relpath(d["site"], prefix)
        for rel in _envcheck.record_paths(str(prefix / d["path"]), follow=False):
            owners[os.path.normpath(os.path.join(site_rel, rel))] = \
                f"{d['name']} {d['version']} ({d['installer']})"
    return owners


def _same_inode(a: Path, b: Path) -> bool:
    try:
        sa, sb = a.stat(), b.stat()
    except OSError:
        return False
    return (sa.st_ino, sa.st_dev) == (sb.st_ino, sb.st_dev)


def conda_state(prefix: Path) -> dict[str, Any]:
    """Per conda package: files gone, files whose bytes differ from the record, cache presence."""
    missing: dict[str, list[str]] = {}
    changed: dict[str, list[str]] = {}
    uncached: list[str] = []
    for rec in _envcheck.conda_records(str(prefix)):
        key = f"{rec.get('name')} {rec.get('version')}"
        src = (rec.get("link") or {}).get("source") or rec.get("extracted_package_dir") or ""
        if not src or not os.path.isdir(src):
            uncached.append(key)
        for entry in (rec.get("paths_data") or {}).get("paths") or []:
            rel = entry.get("_path")
            if not rel or entry.get("path_type", "hardlink") == "directory":
                continue
            path = prefix / rel
            if not os.path.lexists(path):
                missing.setdefault(key, []).append(rel)
                continue
            if entry.get("path_type") == "softlink" or path.is_symlink():
                continue
            want = entry.get("sha256_in_prefix") if entry.get("prefix_placeholder") else entry.get("sha256")
            if not want:
                continue
            size = entry.get("size_in_bytes")
            if entry.get("prefix_placeholder") is None and size is not None and path.stat().st_size != size:
                changed.setdefault(key, []).append(rel)
            elif src and _same_inode(path, Path(src) / rel):
                continue
            elif sha256_file(path) != want:
                changed.setdefault(key, []).append(rel)
    return {"missing": missing, "changed": changed, "uncached": uncached}


def _case_twin(path: Path) -> str | None:
    with suppress(OSError):
        low = path.name.lower()
        for sibling in os.listdir(path.parent):
            if sibling.lower() == low and sibling != path.name:
                return sibling
    return None


def _explain_missing(prefix: Path, state: dict[str, Any], raw: str | None) -> PackError:
    dists = {_envcheck.norm_name(d["name"]): d for d in _envcheck.dist_infos(str(prefix))
             if d["installer"] not in (None, "conda")}
    parts: list[str] = []
    hints: list[str] = []
    for key, rels in sorted(state["missing"].items()):
        name = key.split(" ")[0]
        sample = ", ".join(rels[:3]) + (f" and {len(rels) - 3} more" if len(rels) > 3 else "")
        twins = [(r, t) for r in rels if (t := _case_twin(prefix / r))]
        uncached = key in state["uncached"]
        if twins:
            r, t = twins[0]
            parts.append(f"conda package {key}: {sample} missing, but '{Path(r).parent / t}' exists with "
                         "different letter case - two packages wrote names that differ only in case on a "
                         "case-insensitive file system (not pip's doing)")
            hints.append("build the env on a case-sensitive file system (Linux ext4/xfs, or a "
                         "case-sensitive APFS volume) and pack it there")
        elif _envcheck.norm_name(name) in dists:
            d = dists[_envcheck.norm_name(name)]
            parts.append(f"conda package {key}: {sample} missing because {d['installer']} replaced it with "
                         f"{d['name']} {d['version']} ({d['path']})")
            hints.append(f"pick one installer for {name}: `{prefix}/bin/python -m pip uninstall -y {name} && "
                         f"conda install -p {prefix} --force-reinstall {name}` (or `conda remove -p {prefix} "
                         f"--force {name}` to keep pip's)")
        else:
            cause = "deleted by something other than pip (no pip-installed distribution claims them)"
            if uncached:
                cause += "; its package-cache entry is gone too (`conda clean -p`), so conda-pack has no " \
                         "pristine copy to fall back on"
            parts.append(f"conda package {key}: {sample} missing, {cause}")
            hints.append(f"restore it: `conda install -p {prefix} --force-reinstall {name}`")
    err = MissingCondaFiles(
        "cannot pack: files that conda installed are missing, so the archive would be incomplete: "
        + "; ".join(parts) + ".",
        path=str(prefix),
        hint="Fix: " + "; ".join(dict.fromkeys(hints)) + ". Or pass --ignore-missing-files to pack anyway.",
    )
    err.conda_pack_said = raw  # type: ignore[attr-defined]
    return err


def _unclaimed_changes(prefix: Path, state: dict[str, Any]) -> str | None:
    owners = _pip_owners(prefix)
    edited = [r for rels in state["changed"].values() for r in rels if os.path.normpath(r) not in owners]
    if not edited:
        return None
    return (f"{len(edited)} conda-managed file(s) were edited after install (no pip package claims them): "
            "conda-pack packs the package-cache copy, so these edits are NOT in the archive: "
            + ", ".join(edited[:5]))


def _explain_changed(prefix: Path, state: dict[str, Any]) -> PackError | None:
    owners = _pip_owners(prefix)
    parts, hints = [], []
    for key, rels in sorted(state["changed"].items()):
        claimed = [(r, owners[os.path.normpath(r)]) for r in rels if os.path.normpath(r) in owners]
        if not claimed:
            continue
        name = key.split(" ")[0]
        dist = claimed[0][1]
        parts.append(f"{dist} overwrote {len(claimed)} file(s) of conda package {key} (e.g. {claimed[0][0]})")
        pip_name = dist.split(" ")[0]
        hints.append(f"`{prefix}/bin/python -m pip uninstall -y {pip_name} && conda install -p {prefix} "
                     f"--force-reinstall {name}` (keeps conda's), or "
                     f"`conda remove -p {prefix} --force {name}` then "
                     f"`pip install --force-reinstall {pip_name}` (keeps pip's)")
    if not parts:
        return None
    return PipOverwroteConda(
        "cannot pack faithfully: pip-installed files sit on top of conda-managed ones. conda-pack takes a "
        "conda file from the package cache, so the archive would silently carry conda's version, not the "
        "one this env runs: " + "; ".join(parts) + ".",
        path=str(prefix),
        hint="Make one installer own each file: " + "; ".join(hints) + ". Or pass --ignore-missing-files "
             "to pack anyway (conda's copy wins).",
    )


# --- the manifest ------------------------------------------------------------------------------


def _source_profile() -> dict[str, Any]:
    try:
        from envbuild import probe

        raw = probe.probe()
        return Profile.from_dict(raw).to_dict()
    except Exception:  # a probe failure must not stop a pack; the minimal profile says less
        import platform

        return Profile(os=sys.platform, arch=platform.machine(), hostname=platform.node(),
                       glibc_version=platform.libc_ver()[1] or None,
                       notes=("probe unavailable; minimal profile",)).to_dict()


def _lock_of(prefix: Path) -> dict[str, Any] | None:
    for cand in (prefix / ".envbuild" / "envbuild.lock.json", prefix / "conda-meta" / "envbuild.lock.json"):
        if cand.is_file():
            with suppress(OSError, json.JSONDecodeError):
                data = json.loads(cand.read_text())
                return data if isinstance(data, dict) else None
    return None


def _shebang_scripts(prefix: Path) -> list[str]:
    out = []
    head = b"#!" + str(prefix).encode() + b"/"
    bindir = prefix / "bin"
    if bindir.is_dir():
        for p in sorted(bindir.iterdir()):
            if p.is_file() and not p.is_symlink():
                with suppress(OSError), open(p, "rb") as fh:
                    if fh.read(len(head)) == head:
                        out.append(f"bin/{p.name}")
    return out


def build_manifest(
    prefix: Path, kind: str, fmt: str, profile: dict[str, Any] | None = None
) -> dict[str, Any]:
    """What the archive holds and where it came from (the ``fixup`` section is filled by the packer)."""
    pkgs = _envcheck.packages(str(prefix), kind)
    py = next((p["version"] for p in pkgs if p["name"] == "python"), None)
    if py is None:
        py = _envcheck.pyvenv_value(str(prefix), "version") or _envcheck.pyvenv_value(str(prefix),
                                                                                     "version_info")
    return {
        "schema_version": MANIFEST_SCHEMA,
        "generated_by": f"envbuild {__version__}",
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "kind": kind,
        "format": fmt,
        "source": {"prefix": str(prefix), "profile": profile if profile is not None else _source_profile()},
        "python": py,
        "torch": _envcheck.torch_build(str(prefix)),
        "packages": pkgs,
        "lock": _lock_of(prefix),
        "checksums": CHECKSUMS,
        "fixup": {"kind": kind, "old_prefix": str(prefix)},
    }


# --- pack --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PackResult:
    """What ``pack`` wrote; ``to_dict`` is the ``--json`` output.

    ``env_files`` .. ``inodes_when_used`` are archive._content_keys (what ``inspect`` also says);
    ``slurm_script`` is set by the CLI when it wrote one (the key is absent otherwise).
    """

    archive: str
    format: str
    kind: str
    prefix: str
    members: int
    size: int
    jobs: int
    packages: int
    torch: dict[str, Any] | None
    python: str | None
    lock: bool
    warnings: tuple[str, ...]
    env_files: int | None
    env_dirs: int | None
    env_bytes: int | None
    image_files: int | None
    inodes_when_used: int | None
    seconds: float = 0.0
    slurm_script: str | None = None

    @property
    def ok(self) -> bool:
        """Always True: a pack that cannot be faithful raises instead of returning."""
        return True

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["warnings"] = list(self.warnings)
        d["ok"] = self.ok
        if self.slurm_script is None:
            del d["slurm_script"]
        return d



def _pyvenv_home(prefix: Path) -> str | None:
    return _envcheck.pyvenv_value(str(prefix), "home")


def _fixup_source() -> str:
    return (Path(__file__).parent / "_unpack_fixup.py").read_text()


def _manifest_text(manifest: dict[str, Any]) -> str:
    return json.dumps(manifest, indent=2, sort_keys=True) + "\n"


def _add_fixup(writer: Any) -> None:
    writer.add_text(FIXUP_SCRIPT, "#!/usr/bin/env python3\n" + _fixup_source(), mode=0o755)


def _add_header(writer: Any, manifest: dict[str, Any]) -> None:
    writer.add_text(MANIFEST, _manifest_text(manifest))
    _add_fixup(writer)


def _add_trailer(writer: Any) -> int:
    sums = writer.checksums()
    lines = [f"{h}  {p}" for p, h in sums.items() if not h.startswith("symlink:")]
    writer.add_text(CHECKSUMS, "\n".join(lines) + "\n")
    return len(sums)


def pack(
    prefix: Path,
    output: Path,
    *,
    fmt: str | None = None,
    jobs: int | None = None,
    level: int | None = None,
    ignore_editable: bool = False,
    ignore_missing: bool = False,
    show_progress: bool = False,
) -> PackResult:
    """Pack the env at ``prefix`` into ``output``; return what it wrote (``to_dict``: the ``--json``).

    Raises:
        InputError: not an env. EditableInstall / PipOverwroteConda / MissingCondaFiles: the env
        cannot be packed faithfully (each names the package and what to run).
    """
    t0 = time.monotonic()
    prefix = Path(os.path.abspath(prefix))
    from envbuild.tools.condapack import FORMATS

    if fmt is not None and fmt not in FORMATS:
        raise InputError(f"unknown archive format '{fmt}'.", field="--format",
                         hint="Use one of: " + ", ".join(FORMATS) + ".")
    if Path(os.path.abspath(output)).is_relative_to(prefix):
        raise InputError("the archive would be written inside the env it packs.", path=str(output),
                         field="--output", hint=f"Write it outside {prefix}.")
    with _progress(show_progress, f"packing {prefix.name}") as on_progress:
        result = _pack(prefix, Path(output), fmt, jobs, level, ignore_editable, ignore_missing, on_progress)
    return replace(result, seconds=round(time.monotonic() - t0, 2))


@contextmanager
def _progress(show: bool, label: str) -> Iterator[Callable[[int, int], None] | None]:
    if not show:
        yield None
        return
    from envbuild.output import progress

    with progress() as bar:
        task = bar.add_task(label, total=None)

        def tick(done: int, total: int) -> None:
            if done % 200 == 0 or done == total:
                bar.update(task, completed=done, total=total)

        yield tick


def _pack(prefix: Path, output: Path, fmt: str | None, jobs: int | None, level: int | None,
          ignore_editable: bool, ignore_missing: bool,
          on_progress: Callable[[int, int], None] | None) -> PackResult:
    kind = env_kind(prefix)
    fmt = _format_of(output, fmt)
    jobs = jobs or os.cpu_count() or 1
    warnings: list[str] = []
    if not ignore_editable:
        # conda-pack itself only detects the pip ones (direct_url.json), so it explains those.
        eds = [e for e in _editables(prefix) if kind == "venv" or e["how"] != "pip install -e"]
        if eds:
            _raise_editables(prefix, eds, None)
    manifest = build_manifest(prefix, kind, fmt)
    write = _pack_conda if kind == "conda" else _pack_venv
    count = write(prefix, output, fmt, _Opts(jobs, level, ignore_editable, ignore_missing, on_progress),
                  manifest, warnings)
    return PackResult(
        archive=str(output), format=fmt, kind=kind, prefix=str(prefix), members=count + 1,
        size=output.stat().st_size, jobs=jobs, packages=len(manifest["packages"]), torch=manifest["torch"],
        python=manifest["python"], lock=bool(manifest["lock"]), warnings=tuple(warnings),
        **_content_keys(manifest, fmt),
    )


@dataclass(frozen=True)
class _Opts:
    jobs: int
    level: int | None
    ignore_editable: bool
    ignore_missing: bool
    on_progress: Callable[[int, int], None] | None


def _pack_conda(prefix: Path, output: Path, fmt: str, o: _Opts, manifest: dict[str, Any],
                warnings: list[str]) -> int:
    """A conda env through conda-pack's file list (refusals explained); the members written."""
    from envbuild.tools import condapack

    state = conda_state(prefix)
    try:
        loaded = condapack.load_env(prefix, ignore_editable=o.ignore_editable,
                                    ignore_missing=o.ignore_missing, exclude=_OWN + _CONDA_PACK_OWN)
    except condapack.CondaPackRefused as exc:
        if exc.kind == "editable":
            _raise_editables(prefix, _editables(prefix), exc.raw)
        if exc.kind == "missing" and state["missing"]:
            raise _explain_missing(prefix, state, exc.raw) from None
        raise PackError(f"conda-pack refused the env: {exc.raw.strip()}", path=str(prefix),
                        hint="See docs/pack.md (conda-pack refusals).") from None
    if not o.ignore_missing and (changed := _explain_changed(prefix, state)):
        raise changed
    if edited := _unclaimed_changes(prefix, state):
        warnings.append(edited)
    if state["uncached"]:
        warnings.append("not in the package cache (conda-pack packs their files as unmanaged; binary "
                        "files with an embedded prefix are not relocated): " + ", ".join(state["uncached"]))
    manifest["fixup"]["shebangs"] = _shebang_scripts(prefix)
    # The env's own files (conda-pack may read a package-cache copy; the user counts these).
    manifest["content"] = _content([(str(prefix / f.target), f.target) for f in loaded.env.files])
    history = prefix / "conda-meta" / "history"
    stamp = history.lstat().st_mtime if history.exists() else None
    with condapack.open_archive(output, fmt, jobs=o.jobs, level=o.level, mtime=stamp) as writer:
        _add_header(writer, manifest)
        condapack.pack_env(loaded, _Counting(writer, len(loaded.env.files), o.on_progress))
        return _add_trailer(writer)


def _pack_venv(prefix: Path, output: Path, fmt: str, o: _Opts, manifest: dict[str, Any],
               warnings: list[str]) -> int:
    """A venv by envbuild itself (its links to the base interpreter left to the fix-up)."""
    from envbuild.tools import condapack

    one_pass = fmt == "tar.zst"
    files, links, text_files, binary = _venv_files(prefix, scan=not one_pass)
    manifest["fixup"].update({"python_links": links, "text_files": text_files, "home": _pyvenv_home(prefix)})
    if one_pass:
        return _pack_venv_one_pass(prefix, output, files, o, manifest, warnings)
    if fmt == "squashfs":
        # A mounted image is read-only: it must carry the links to the base interpreter itself
        # (a tar leaves them to the fix-up, which cannot write into a mount).
        files = sorted(files + [rel for rel in links if os.path.lexists(prefix / rel)])
    top = str(prefix) + os.sep
    manifest["content"] = _content([(top + rel, rel) for rel in files])
    _warn_binary(binary, warnings)
    with condapack.open_archive(output, fmt, jobs=o.jobs, level=o.level) as writer:
        _add_header(writer, manifest)
        for i, rel in enumerate(files, 1):
            writer.add(top + rel, rel)
            if o.on_progress:
                o.on_progress(i, len(files))
        return _add_trailer(writer)


def _pack_venv_one_pass(prefix: Path, output: Path, files: list[str], o: _Opts, manifest: dict[str, Any],
                        warnings: list[str]) -> int:
    """tar.zst: every file read once (hashed, searched for the old prefix, written) while the
    compressor runs; the manifest, complete only then, is placed first (docs/pack.md, frame layout)."""
    from envbuild.tools import condapack

    top = str(prefix) + os.sep
    needle = str(prefix).encode()
    text: list[str] = []
    binary: list[str] = []
    stats: list[tuple[str, os.stat_result | None]] = []
    n = len(files)
    hint = _manifest_text({**manifest, "content": {"files": n, "dirs": n, "bytes": 1 << 40}})
    with condapack.open_archive(output, "tar.zst", jobs=o.jobs, level=o.level, head_hint=hint) as writer:
        _add_fixup(writer)
        for i, rel in enumerate(files, 1):
            added = writer.add(top + rel, rel, None if rel.endswith(".pyc") else needle)
            assert added is not None  # a tar stream says what it wrote
            stats.append((rel, added.st))
            if added.hit:
                (binary if added.binary else text).append(rel)
            if o.on_progress:
                o.on_progress(i, len(files))
        manifest["fixup"]["text_files"] = sorted(text)
        manifest["content"] = _count(stats)
        writer.add_text(MANIFEST, _manifest_text(manifest), head=True)
        _warn_binary(sorted(binary), warnings)
        return _add_trailer(writer)


def _warn_binary(binary: list[str], warnings: list[str]) -> None:
    if binary:
        warnings.append(f"{len(binary)} binary file(s) name the old prefix and cannot be relocated: "
                        + ", ".join(binary[:5]))


def _lstat(path: str) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except OSError:
        return None


def _content(pairs: list[tuple[str, str]]) -> dict[str, int]:
    """Files (regular + links), directories and bytes of what is packed: the inodes a tar unpacks to."""
    return _count([(target, _lstat(source)) for source, target in pairs])


def _count(entries: list[tuple[str, os.stat_result | None]]) -> dict[str, int]:
    """``_content`` from each target's lstat (None: it could not be read, only its parents count)."""
    nfiles = nbytes = 0
    dirs: set[str] = set()
    for target, st in entries:
        if st is not None:
            if stat.S_ISDIR(st.st_mode):
                dirs.add(target)
                continue
            nfiles += 1
            if not stat.S_ISLNK(st.st_mode):
                nbytes += st.st_size
        parent = os.path.dirname(target)
        while parent and parent not in dirs:
            dirs.add(parent)
            parent = os.path.dirname(parent)
    return {"files": nfiles, "dirs": len(dirs), "bytes": nbytes}


class _Counting:
    """Forwards to the writer and reports progress once per added env file."""

    def __init__(self, writer: Any, total: int, cb: Callable[[int, int], None] | None) -> None:
        self._w, self._total, self._cb, self._n = writer, total, cb, 0

    def add(self, source: str, target: str) -> None:
        self._w.add(source, target)
        self._tick()

    def add_bytes(self, source: str, data: bytes, target: str) -> None:
        self._w.add_bytes(source, data, target)
        self._tick()

    def _tick(self) -> None:
        self._n += 1
        if self._cb:
            self._cb(min(self._n, self._total), self._total)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._w, name)


_SMALL = 256 << 10


def _is_binary(path: str | Path) -> bool:
    with open(path, "rb") as fh:
        return b"\0" in fh.read(8192)


def _contains(path: str | Path, needle: bytes, skip: bytes | None = None) -> bool:
    """True when ``needle`` occurs in the file, ignoring occurrences that are part of ``skip``."""
    try:
        with open(path, "rb", buffering=0) as fh:
            size = os.fstat(fh.fileno()).st_size
            if size == 0:
                return False
            if size <= _SMALL and not skip:  # one read beats setting up a map for most files
                return needle in fh.read()
            with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
                i = mm.find(needle)
                while i != -1:
                    if not (skip and mm[i:i + len(skip)] == skip):
                        return True
                    i = mm.find(needle, i + 1)
    except (OSError, ValueError):
        return False
    return False


def _venv_files(prefix: Path, scan: bool = True) -> tuple[list[str], dict[str, str], list[str], list[str]]:
    """Files to pack; links leaving the env (to recreate); text / binary files naming the prefix
    (only with ``scan``: the one-pass tar.zst finds those while it writes them)."""
    # Plain strings and os.path, not Path objects: this runs once per file of a 19k-file env.
    files: list[str] = []
    links: dict[str, str] = {}
    text: list[str] = []
    binary: list[str] = []
    top = str(prefix)
    needle = top.encode()
    inside = top + os.sep
    for root, dirs, names in os.walk(top):
        for d in list(dirs):
            if os.path.islink(os.path.join(root, d)):
                dirs.remove(d)
                names.append(d)
        base = os.path.relpath(root, top).replace(os.sep, "/")
        base = "" if base == "." else base + "/"
        for n in sorted(names):
            path = os.path.join(root, n)
            rel = base + n
            if rel in _OWN:
                continue
            try:
                st = os.lstat(path)
            except OSError:
                continue
            if stat.S_ISLNK(st.st_mode):
                target = os.readlink(path)
                resolved = os.path.normpath(os.path.join(root, target))
                if os.path.isabs(target) or not resolved.startswith(inside):
                    links[rel] = target if os.path.isabs(target) else os.path.realpath(path)
                    continue
                files.append(rel)
                continue
            files.append(rel)
            if not scan or rel.endswith(".pyc") or not stat.S_ISREG(st.st_mode) \
                    or not _contains(path, needle):
                continue
            (binary if _is_binary(path) else text).append(rel)
    return sorted(files), links, sorted(text), sorted(binary)
