"""Pack an env on one machine, unpack it on another, and say what will break there.

``pack`` writes a conda env (through conda-pack) or a venv (envbuild's own packer, see
docs/pack.md for why not venv-pack) into tar.gz / tar.zst / zip, with
``envbuild-manifest.json`` as the FIRST member (so ``inspect`` reads it without decompressing
the rest), ``bin/envbuild-unpack`` (the stdlib-only fix-up, also run by the Slurm script) and
``envbuild-files.sha256`` as the LAST member (sha256 of every member as packed).
``unpack`` extracts safely, verifies the checksums, fixes prefixes, then checks the env
against a target profile.
"""

from __future__ import annotations

import json
import mmap
import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
import tarfile
import time
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from envbuild import __version__, _unpack_fixup
from envbuild._fs import ExtractLog, regular_files, resolve_inside, safe_extract, sha256_file
from envbuild.errors import EnvbuildError, HashMismatch, InputError, PackError, UnsafeArchive
from envbuild.models import Profile

if TYPE_CHECKING:
    from envbuild.doctor import Finding
    from envbuild.matrix import Verdict

__all__ = [
    "CHECKSUMS",
    "MANIFEST",
    "EditableInstall",
    "MissingCondaFiles",
    "PipOverwroteConda",
    "build_manifest",
    "inspect_archive",
    "pack",
    "read_manifest",
    "render_slurm",
    "unpack",
]

MANIFEST = "envbuild-manifest.json"
CHECKSUMS = "envbuild-files.sha256"
FIXUP_SCRIPT = "bin/envbuild-unpack"
MANIFEST_SCHEMA = 1
CONDA_PLACEHOLDER = "/opt/anaconda1anaconda2" "anaconda3"  # split so it never appears in this file
# Members envbuild adds itself; an env that was unpacked from an envbuild archive carries them.
_OWN = (MANIFEST, CHECKSUMS, FIXUP_SCRIPT, ".envbuild-unpacked")
# conda-pack writes these into every archive; an unpacked env carries the old ones.
_CONDA_PACK_OWN = ("bin/conda-unpack", "bin/conda_unpack_progress.py")
_DIST_FILE = re.compile(r"lib/python[^/]+/site-packages/([^/]+)\.dist-info/(METADATA|INSTALLER)")
_CUDA_LOCAL = re.compile(r"\+cu(\d+)$")
_TORCH_CUDA = re.compile(r"""^cuda\s*(?::[^=]*)?=\s*['"]([0-9.]+)['"]""", re.M)


class EditableInstall(PackError):
    """Editable installs (pip install -e, setup.py develop) live outside the env."""


class PipOverwroteConda(PackError):
    """pip replaced or rewrote files a conda package owns."""


class MissingCondaFiles(PackError):
    """Files listed in conda-meta are gone."""


# pack / unpack report doctor's one Finding record; their JSON keeps these keys (see _report)
_FINDING_KEYS = ("family", "severity", "cause", "fix", "evidence")


def _finding(family: str, severity: str, cause: str, fix: str, evidence: str = "") -> Finding:
    from envbuild.doctor import Finding  # doctor's import is heavy: only when a finding is made

    return Finding(family, severity, cause, fix, evidence)


# --- reading an env ----------------------------------------------------------------------------


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


def _site_packages(prefix: Path) -> list[Path]:
    return sorted(p for p in prefix.glob("lib/python3*/site-packages") if p.is_dir())


def _read_text(path: Path) -> str:
    # Regular files only, opened non-blocking: a FIFO named like a config file never hangs a read.
    data = _unpack_fixup.read_regular(str(path))
    return data.decode("utf-8", "replace") if isinstance(data, bytes) else ""


def _meta_field(text: str, key: str) -> str | None:
    m = re.search(rf"^{key}:\s*(.+?)\s*$", text, re.M)
    return m.group(1) if m else None


def _canon(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _cuda_of(version: str, build: str = "") -> str | None:
    m = _CUDA_LOCAL.search(version)
    if m:
        digits = m.group(1)
        return f"{digits[:-1]}.{digits[-1]}"
    m = re.search(r"cuda(\d+)\.?(\d)", build)
    return f"{m.group(1)}.{m.group(2)}" if m else None


def _conda_records(prefix: Path) -> list[dict[str, Any]]:
    out = []
    for path in sorted((prefix / "conda-meta").glob("*.json")):
        try:
            out.append(json.loads(path.read_text()))
        except (OSError, json.JSONDecodeError):
            continue
    return out


def _dists(prefix: Path) -> list[dict[str, Any]]:
    """Every *.dist-info / *.egg-info in site-packages: name, version, installer, path."""
    out = []
    for site in _site_packages(prefix):
        for d in sorted(site.glob("*.dist-info")) + sorted(site.glob("*.egg-info")):
            meta = _read_text(d / "METADATA") if d.is_dir() else _read_text(d)
            if d.is_dir() and not meta:
                meta = _read_text(d / "PKG-INFO")
            name = _meta_field(meta, "Name") or d.name.split("-")[0]
            version = _meta_field(meta, "Version") or ""
            installer = _read_text(d / "INSTALLER").strip() if d.is_dir() else ""
            out.append({"name": name, "version": version, "installer": installer or None,
                        "path": d.relative_to(prefix).as_posix(), "site": site})
    return out


def torch_build(prefix: Path) -> dict[str, Any] | None:
    """torch's version and the CUDA it was built for, read from files (torch is never imported)."""
    for site in _site_packages(prefix):
        # conda's pytorch ships an .egg-info, pip's a .dist-info
        infos = sorted(site.glob("torch-*.dist-info")) + sorted(site.glob("torch-*.egg-info"))
        vfile = site / "torch" / "version.py"
        if not infos and not vfile.exists():
            continue
        text = _read_text(vfile)
        vm = re.search(r"""^__version__\s*=\s*['"]([^'"]+)['"]""", text, re.M)
        stem = infos[0].name.removesuffix(".dist-info").removesuffix(".egg-info") if infos else ""
        version = vm.group(1) if vm else (stem.removeprefix("torch-").split("-py")[0] or None)
        m = _TORCH_CUDA.search(text)
        cuda = m.group(1) if m else (_cuda_of(version) if version else None)
        return {"version": version, "cuda": cuda, "site": site.relative_to(prefix).as_posix()}
    return None


def packages(prefix: Path, kind: str) -> list[dict[str, Any]]:
    """conda records and pip dists (name, version, build, installer, cuda), conda ones first."""
    out: list[dict[str, Any]] = []
    conda_names: set[str] = set()
    if kind == "conda":
        for rec in _conda_records(prefix):
            name, ver, build = rec.get("name", ""), str(rec.get("version", "")), str(rec.get("build", ""))
            conda_names.add(_canon(name))
            out.append({"name": name, "version": ver, "build": build, "installer": "conda",
                        "channel": rec.get("channel"), "cuda": _cuda_of(ver, build)})
    for d in _dists(prefix):
        if d["installer"] == "conda" or (d["installer"] is None and _canon(d["name"]) in conda_names):
            continue
        cuda = _cuda_of(d["version"])
        if cuda is None and _canon(d["name"]) == "torch":
            # PyPI's torch carries no +cuXXX label (2.6.0 is the CUDA 12.4 build): torch/version.py says
            cuda = (torch_build(prefix) or {}).get("cuda")
        out.append({"name": d["name"], "version": d["version"], "build": None,
                    "installer": d["installer"] or "unknown", "channel": None, "cuda": cuda})
    return out


def _editables(prefix: Path) -> list[dict[str, str]]:
    """Editable installs: PEP 660 / pip direct_url.json, and legacy ``setup.py develop`` egg-links."""
    found: list[dict[str, str]] = []
    for d in _dists(prefix):
        du = prefix / d["path"] / "direct_url.json"
        if not du.is_file():
            continue
        with suppress(OSError, json.JSONDecodeError, AttributeError):
            data = json.loads(du.read_text())
            if data.get("dir_info", {}).get("editable") is True:
                src = str(data.get("url", "")).removeprefix("file://")
                found.append({"name": d["name"], "version": d["version"], "source": src,
                              "how": "pip install -e", "evidence": f"{d['path']}/direct_url.json"})
    for site in _site_packages(prefix):
        for link in sorted(site.glob("*.egg-link")):
            lines = _read_text(link).splitlines()
            src = lines[0].strip() if lines else "?"
            found.append({"name": link.stem, "version": "", "source": src, "how": "setup.py develop",
                          "evidence": link.relative_to(prefix).as_posix()})
        # Any other .pth path entry outside the env (`conda develop`, hand-made) is the same trap.
        seen = {os.path.normpath(e["source"]) for e in found}
        for pth in sorted(site.glob("*.pth")):
            for line in _read_text(pth).splitlines():
                line = line.strip()
                if not line or line.startswith(("#", "import ", "import\t")):
                    continue
                loc = os.path.normpath(os.path.join(site, line))
                if loc in seen or Path(loc).is_relative_to(prefix):
                    continue
                seen.add(loc)
                found.append({"name": Path(loc).name, "version": "", "source": loc,
                              "how": "a .pth path entry", "evidence": pth.relative_to(prefix).as_posix()})
    return found


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
    for d in _dists(prefix):
        if d["installer"] == "conda":
            continue
        record = prefix / d["path"] / "RECORD"
        site_rel = d["site"].relative_to(prefix)
        for line in _read_text(record).splitlines():
            rel = line.split(",", 1)[0]
            if rel:
                owners[os.path.normpath(site_rel / rel)] = f"{d['name']} {d['version']} ({d['installer']})"
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
    for rec in _conda_records(prefix):
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
    dists = {_canon(d["name"]): d for d in _dists(prefix) if d["installer"] not in (None, "conda")}
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
        elif _canon(name) in dists:
            d = dists[_canon(name)]
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
    pkgs = packages(prefix, kind)
    py = next((p["version"] for p in pkgs if p["name"] == "python"), None)
    if py is None:
        cfg = _read_text(prefix / "pyvenv.cfg")
        py = _meta_field(cfg.replace(" = ", ": "), "version") or _meta_field(cfg.replace(" = ", ": "),
                                                                             "version_info")
    return {
        "schema_version": MANIFEST_SCHEMA,
        "generated_by": f"envbuild {__version__}",
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "kind": kind,
        "format": fmt,
        "source": {"prefix": str(prefix), "profile": profile if profile is not None else _source_profile()},
        "python": py,
        "torch": torch_build(prefix),
        "packages": pkgs,
        "lock": _lock_of(prefix),
        "checksums": CHECKSUMS,
        "fixup": {"kind": kind, "old_prefix": str(prefix)},
    }


# --- pack --------------------------------------------------------------------------------------


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


def _pyvenv_home(prefix: Path) -> str | None:
    return _meta_field(_read_text(prefix / "pyvenv.cfg").replace(" = ", ": "), "home")


def _fixup_source() -> str:
    return (Path(__file__).parent / "_unpack_fixup.py").read_text()


def _add_header(writer: Any, manifest: dict[str, Any]) -> None:
    writer.add_text(MANIFEST, json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    writer.add_text(FIXUP_SCRIPT, "#!/usr/bin/env python3\n" + _fixup_source(), mode=0o755)


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
) -> dict[str, Any]:
    """Pack the env at ``prefix`` into ``output``; return a summary (the ``--json`` result).

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
    result["seconds"] = round(time.monotonic() - t0, 2)
    return result


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
          on_progress: Callable[[int, int], None] | None) -> dict[str, Any]:
    from envbuild.tools import condapack

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
    if kind == "conda":
        state = conda_state(prefix)
        try:
            loaded = condapack.load_env(prefix, ignore_editable=ignore_editable,
                                        ignore_missing=ignore_missing,
                                        exclude=_OWN + _CONDA_PACK_OWN)
        except condapack.CondaPackRefused as exc:
            if exc.kind == "editable":
                _raise_editables(prefix, _editables(prefix), exc.raw)
            if exc.kind == "missing" and state["missing"]:
                raise _explain_missing(prefix, state, exc.raw) from None
            raise PackError(f"conda-pack refused the env: {exc.raw.strip()}", path=str(prefix),
                            hint="See docs/pack.md (conda-pack refusals).") from None
        if not ignore_missing and (changed := _explain_changed(prefix, state)):
            raise changed
        if edited := _unclaimed_changes(prefix, state):
            warnings.append(edited)
        if state["uncached"]:
            warnings.append("not in the package cache (conda-pack packs their files as unmanaged; binary "
                            "files with an embedded prefix are not relocated): "
                            + ", ".join(state["uncached"]))
        manifest["fixup"]["shebangs"] = _shebang_scripts(prefix)
        # The env's own files (conda-pack may read a package-cache copy; the user counts these).
        manifest["content"] = _content([(str(prefix / f.target), f.target) for f in loaded.env.files])
        total = len(loaded.env.files)
        history = prefix / "conda-meta" / "history"
        stamp = history.lstat().st_mtime if history.exists() else None
        with condapack.open_archive(output, fmt, jobs=jobs, level=level, mtime=stamp) as writer:
            _add_header(writer, manifest)
            condapack.pack_env(loaded, _Counting(writer, total, on_progress))
            count = _add_trailer(writer)
    else:
        files, links, text_files, binary = _venv_files(prefix)
        manifest["fixup"].update({"python_links": links, "text_files": text_files,
                                  "home": _pyvenv_home(prefix)})
        if fmt == "squashfs":
            # A mounted image is read-only: it must carry the links to the base interpreter itself
            # (a tar leaves them to the fix-up, which cannot write into a mount).
            files = sorted(files + [rel for rel in links if os.path.lexists(prefix / rel)])
        top = str(prefix) + os.sep
        manifest["content"] = _content([(top + rel, rel) for rel in files])
        if binary:
            warnings.append(f"{len(binary)} binary file(s) name the old prefix and cannot be relocated: "
                            + ", ".join(binary[:5]))
        with condapack.open_archive(output, fmt, jobs=jobs, level=level) as writer:
            _add_header(writer, manifest)
            for i, rel in enumerate(files, 1):
                writer.add(top + rel, rel)
                if on_progress:
                    on_progress(i, len(files))
            count = _add_trailer(writer)
    return {
        "ok": True, "archive": str(output), "format": fmt, "kind": kind, "prefix": str(prefix),
        "members": count + 1, "size": output.stat().st_size,
        "jobs": jobs, "packages": len(manifest["packages"]), "torch": manifest["torch"],
        "python": manifest["python"], "lock": bool(manifest["lock"]), "warnings": warnings,
        **_content_keys(manifest, fmt),
    }


def _content(pairs: list[tuple[str, str]]) -> dict[str, int]:
    """Files (regular + links), directories and bytes of what is packed: the inodes a tar unpacks to."""
    nfiles = nbytes = 0
    dirs: set[str] = set()
    for source, target in pairs:
        with suppress(OSError):
            mode = (st := os.lstat(source)).st_mode
            if stat.S_ISDIR(mode):
                dirs.add(target)
                continue
            nfiles += 1
            if not stat.S_ISLNK(mode):
                nbytes += st.st_size
        parent = os.path.dirname(target)
        while parent and parent not in dirs:
            dirs.add(parent)
            parent = os.path.dirname(parent)
    return {"files": nfiles, "dirs": len(dirs), "bytes": nbytes}


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


def _venv_files(prefix: Path) -> tuple[list[str], dict[str, str], list[str], list[str]]:
    """Files to pack; links leaving the env (to recreate); text / binary files naming the prefix."""
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
            if rel.endswith(".pyc") or not stat.S_ISREG(st.st_mode) or not _contains(path, needle):
                continue
            (binary if _is_binary(path) else text).append(rel)
    return sorted(files), links, sorted(text), sorted(binary)


# --- reading archives --------------------------------------------------------------------------


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

                stream = zstandard.ZstdDecompressor().stream_reader(fh)
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
    pkgs: list[dict[str, Any]] = []
    prefix = None
    dists: dict[str, dict[str, str]] = {}
    try:
        with _open_stream(archive) as arc:
            members: Iterator[tuple[str, Callable[[], bytes]]]
            if isinstance(arc, zipfile.ZipFile):
                zf = arc
                members = ((n, (lambda n=n: zf.read(n))) for n in zf.namelist())  # type: ignore[misc]
            else:
                tf = arc
                members = ((m.name, (lambda m=m: _tar_read(tf, m))) for m in tf if m.isfile())  # type: ignore[misc]
            for name, read in members:
                name = name.lstrip("./")
                if re.fullmatch(r"conda-meta/[^/]+\.json", name):
                    rec = json.loads(read())
                    pkgs.append({"name": rec.get("name"), "version": rec.get("version"),
                                 "build": rec.get("build"), "installer": "conda",
                                 "channel": rec.get("channel"),
                                 "cuda": _cuda_of(str(rec.get("version", "")), str(rec.get("build", "")))})
                elif name == "bin/conda-unpack":
                    prefix = _old_prefix_from_unpack(read().decode("utf-8", "replace"))
                elif m := _DIST_FILE.fullmatch(name):
                    dists.setdefault(m.group(1), {})[m.group(2)] = read().decode("utf-8", "replace")
    except (tarfile.TarError, zipfile.BadZipFile, OSError, EOFError) as exc:
        raise PackError(f"cannot read the archive ({exc}).", path=str(archive),
                        hint="The file is truncated or not an env archive; pack it again.") from None
    for meta in dists.values():
        if meta.get("INSTALLER", "").strip() == "conda" or "METADATA" not in meta:
            continue
        dname, dver = _meta_field(meta["METADATA"], "Name"), _meta_field(meta["METADATA"], "Version") or ""
        if dname and _canon(dname) not in {_canon(str(p["name"])) for p in pkgs}:
            pkgs.append({"name": dname, "version": dver, "build": None, "channel": None,
                         "installer": meta.get("INSTALLER", "").strip() or "unknown", "cuda": _cuda_of(dver)})
    return {"archive": str(archive), "size": archive.stat().st_size, "has_manifest": False,
            "kind": "conda" if pkgs else None, "source": {"prefix": prefix, "profile": None},
            "python": next((p["version"] for p in pkgs if p["name"] == "python"), None), "torch": None,
            "created": None, "generated_by": None, "lock": None, "packages": pkgs,
            "format": _format_of(archive, None), **_content_keys(None, None)}


def _is_squashfs(archive: Path) -> bool:
    from envbuild.tools import squashfs

    return squashfs.is_image(archive)


def _squashfs_manifest(archive: Path) -> dict[str, Any] | None:
    from envbuild.tools import squashfs

    data = squashfs.cat(archive, MANIFEST)
    if data is None:
        return None
    return _checked_manifest(data, archive)


def _inspect_plain_squashfs(archive: Path) -> dict[str, Any]:
    """A conda-pack squashfs without an envbuild manifest: its conda-meta records, read one by one."""
    from envbuild.tools import squashfs

    entries = squashfs.listing(archive)
    pkgs: list[dict[str, Any]] = []
    for e in entries:
        if e.type == "-" and re.fullmatch(r"conda-meta/[^/]+\.json", e.path):
            with suppress(json.JSONDecodeError):
                rec = json.loads(squashfs.cat(archive, e.path) or b"{}")
                pkgs.append({"name": rec.get("name"), "version": rec.get("version"),
                             "build": rec.get("build"), "installer": "conda", "channel": rec.get("channel"),
                             "cuda": _cuda_of(str(rec.get("version", "")), str(rec.get("build", "")))})
    unpack_script = squashfs.cat(archive, "bin/conda-unpack") if any(
        e.path == "bin/conda-unpack" for e in entries) else None
    prefix = _old_prefix_from_unpack(unpack_script.decode("utf-8", "replace")) if unpack_script else None
    files = sum(1 for e in entries if e.type != "d")
    return {"archive": str(archive), "size": archive.stat().st_size, "has_manifest": False,
            "kind": "conda" if pkgs else None, "source": {"prefix": prefix, "profile": None},
            "python": next((p["version"] for p in pkgs if p["name"] == "python"), None), "torch": None,
            "created": None, "generated_by": None, "lock": None, "packages": pkgs, "format": "squashfs",
            **_content_keys({"content": {"files": files, "dirs": len(entries) - files, "bytes": None}},
                            "squashfs")}


def _extract_any(archive: Path, tmp: Path, manifest: dict[str, Any] | None) -> ExtractLog | None:
    """squashfs images through tools/squashfs.py (listing checked first); the rest via safe_extract.

    Returns what extraction saw in each file (sha256, the old prefix; None for squashfs).
    """
    if _is_squashfs(archive):
        from envbuild.tools import squashfs

        links = ((manifest or {}).get("fixup") or {}).get("python_links") or {}
        # Only bin/NAME may point outside (a venv's interpreter links): nothing is ever written
        # through a link there, while a linked directory could steer the fix-up's writes out.
        squashfs.extract(archive, tmp, allowed_links={k for k in links if re.fullmatch(r"bin/[^/]+", k)})
        return None
    old = ((manifest or {}).get("fixup") or {}).get("old_prefix")
    return _extract(archive, tmp, old.encode() if isinstance(old, str) and old else None)


def _tar_read(tf: tarfile.TarFile, m: tarfile.TarInfo) -> bytes:
    fh = tf.extractfile(m)
    return fh.read() if fh else b""


def _old_prefix_from_unpack(script: str) -> str | None:
    counts: dict[str, int] = {}
    for m in re.finditer(r"\('[^']*', '([^']*)', '(?:text|binary)'\)", script):
        if m.group(1) != CONDA_PLACEHOLDER:
            counts[m.group(1)] = counts.get(m.group(1), 0) + 1
    return max(counts, key=lambda k: counts[k]) if counts else None


# --- unpack ------------------------------------------------------------------------------------


def _verify(dest: Path, archive: Path, hashes: dict[tuple[int, int], str] | None = None) -> int:
    """Every file listed in envbuild-files.sha256 is there with its hash, and no file is unlisted.

    ``hashes`` are the ones taken while extracting (by inode: a hard link has its target's);
    a file without one is read and hashed here.
    """
    raw = _unpack_fixup.read_regular(str(dest / CHECKSUMS))
    if not isinstance(raw, bytes):
        return 0
    listed: dict[str, str] = {}
    for i, line in enumerate(raw.decode("utf-8", "replace").splitlines(), 1):
        want, _, rel = line.partition("  ")
        if not rel:
            continue
        if rel.startswith("/") or ".." in rel.split("/") or not re.fullmatch(r"[0-9a-f]{64}", want):
            raise PackError(f"line {i} of {CHECKSUMS} is not 'SHA256  RELATIVE-PATH' inside the env: "
                            f"{line[:200]!r}.", path=str(archive), field=CHECKSUMS,
                            hint="The archive was altered; pack it again.")
        listed[_member(rel)] = want
    n = 0
    top = str(dest) + os.sep
    for rel, want in listed.items():
        path = top + rel
        try:
            st = os.lstat(path)  # the last component is not followed: a link is not a file here
        except OSError:
            st = None
        if st is None or not stat.S_ISREG(st.st_mode):
            raise PackError(f"'{rel}' is listed in {CHECKSUMS} but is not a file in the archive.",
                            path=str(archive), field=CHECKSUMS,
                            hint="The archive is truncated or was altered; pack it again.")
        got = (hashes or {}).get((st.st_dev, st.st_ino)) or sha256_file(path)
        if got != want:
            raise HashMismatch(f"{archive}!{rel}", want, got)
        n += 1
    for rel in regular_files(dest):
        if rel != CHECKSUMS and rel not in listed:
            raise PackError(f"'{rel}' is in the archive but not in {CHECKSUMS}: it was added after "
                            "packing.", path=str(archive), field=CHECKSUMS,
                            hint="The archive was altered; pack it again.")
    return n


def _resolver(dest: Path, archive: Path) -> Callable[[str, str], str]:
    return lambda field, rel: str(resolve_inside(dest, rel, field, str(archive)))


def _fixup_error(archive: Path, exc: _unpack_fixup.FixupError) -> PackError:
    return PackError(f"the archive's {exc.field} holds {exc.value!r}: {exc.why}.", path=str(archive),
                     field=exc.field,
                     hint="The archive was not written by 'envbuild pack' or was altered; nothing outside "
                          "the destination was changed. Pack it again on the source machine.")


def _conda_unpack(dest: Path, archive: Path) -> dict[str, Any]:
    """conda-unpack's work, done here from its records: the archive's script is never run."""
    raw = _unpack_fixup.read_regular(str(dest / "bin" / "conda-unpack"))
    if not isinstance(raw, bytes):
        return {"conda_unpack": False, "python": None}
    try:
        records = _unpack_fixup.conda_records(raw.decode("utf-8", "replace"))
        done = _unpack_fixup.conda_fixup(str(dest), records, _resolver(dest, archive))
    except _unpack_fixup.FixupError as exc:
        raise _fixup_error(archive, exc) from None
    except (SyntaxError, ValueError, RecursionError) as exc:
        raise PackError(f"bin/conda-unpack cannot be read as conda-pack's script ({exc}).",
                        path=str(archive), field="bin/conda-unpack",
                        hint="The archive may be damaged; pack it again on the source machine.") from None
    return {"conda_unpack": True, "python": None, "prefix_records": done["prefix_records"]}


def this_machine() -> Profile:
    """Probe this machine (envbuild.probe); a minimal profile when the probe is unavailable."""
    return Profile.from_dict(_source_profile())


def _ver_tuple(v: str | None) -> tuple[int, ...] | None:
    if not v:
        return None
    nums = re.findall(r"\d+", v)
    return tuple(int(x) for x in nums[:3]) if nums else None


def _torch_verdict(torch: str, cuda: str, profile: Profile) -> Verdict | None:
    """The one torch-vs-driver verdict (``Matrix.torch_driver_verdict``, as resolve and doctor use it)."""
    try:
        from envbuild.matrix import load_matrix

        m = load_matrix()
        gpu = profile.gpus[0] if profile.gpus else None
        cc = gpu and (gpu.compute_capability or (g.compute_capability if (g := m.gpu(gpu.name)) else None))
        return m.torch_driver_verdict(torch, cuda, driver=profile.driver_version,
                                      driver_cuda=profile.driver_cuda_version, cc=cc or None,
                                      gpu=gpu.name if gpu else None)
    except Exception:  # an unparsable version or a data problem: the check says it could not decide
        return None


def torch_findings(torch: dict[str, Any] | None, profile: Profile) -> list[Finding]:
    """Will this torch build's CUDA run with the target's driver?"""
    if not torch or not torch.get("cuda"):
        return []
    tv, cuda = torch.get("version") or "torch", str(torch["cuda"])
    build = f"torch {tv} (built for CUDA {cuda})"
    evidence = f"{torch.get('site', 'site-packages')}/torch/version.py: cuda = '{cuda}'"
    if not profile.has_gpu:
        return [_finding("driver", "warning", f"{build}: the target has no NVIDIA driver/GPU, so torch will "
                         "run CPU-only (torch.cuda.is_available() is False).",
                         "Run on a GPU node, or pack a CPU build of torch.", evidence)]
    drv, dcuda = profile.driver_version, profile.driver_cuda_version
    v = _torch_verdict(str(tv) if torch.get("version") else cuda, cuda, profile)
    shown = f"{drv or '?'}" + (f" (CUDA {dcuda})" if dcuda else "")
    if v is not None:
        evidence += "".join(f"; {f.text} ({f.source})" for f in v.facts)
    if v is not None and not v.ok:
        return [_finding(
            "driver", "error",
            f"will not work here: {build}, but the target's NVIDIA driver {shown} is too old ({v.reason}); "
            "torch.cuda.is_available() will be False ('The NVIDIA driver on your system is too old')."
            if v.rule == "driver-too-old" else f"will not work here: {build} on driver {shown}: {v.reason}.",
            f"Upgrade the driver, or rebuild the env for this machine with a torch built for "
            f"CUDA <= {dcuda or 'what the driver supports'} "
            "('envbuild lock --target PROFILE.json' picks one).",
            evidence)]
    if v is not None and v.rule == "minor-version-compat":
        checked = v.arch_note is not None  # the GPU has SASS in the wheel: no PTX JIT needed
        return [_finding(
            "driver", "info" if checked else "warning",
            f"{build} on driver {shown}: runs through CUDA minor-version compatibility (rule {v.rule}): "
            f"{v.reason}" + (f"; {v.arch_note}." if checked else "; the GPU was not checked against the "
                             "wheel's arch list, and PTX JIT fails under this rule."),
            "" if checked else "Give the target's GPU (probe it) to check the wheel's arch list, or prefer "
            "a driver that supports CUDA " + cuda + " natively.", evidence)]
    if v is None:
        return [_finding("driver", "warning", f"{build}: envbuild could not decide whether driver {shown} "
                         "runs it (its compatibility data or a version could not be read).",
                         "Check 'envbuild data status', then unpack again.", evidence)]
    if v.rule == "driver-unknown":
        return [_finding("driver", "warning", f"{build}: the target's driver version is unknown.",
                         "Probe the target with 'envbuild probe -o PROFILE.json' and pass --target.",
                         evidence)]
    return [_finding("driver", "info", f"{build} fits driver {shown} ({v.reason}).", "", evidence)]


def prefix_findings(dest: Path, old: str | None, only: set[str] | None = None) -> list[Finding]:
    """Files that still name the old prefix after the fix-up (shebangs are errors).

    ``only``: the files that can (those that named it when extracted); otherwise all are read.
    """
    if not old or os.path.abspath(old) == str(dest):
        return []
    needle, skip = old.encode(), str(dest).encode()
    scripts, texts, bins = [], [], []
    ignore = {MANIFEST, CHECKSUMS, FIXUP_SCRIPT, "bin/conda-unpack"}
    for root, dirs, names in os.walk(dest) if only is None else _only(dest, only):
        dirs[:] = [d for d in dirs
                   if d not in ("__pycache__", "conda-meta") and not (Path(root) / d).is_symlink()]
        for n in names:
            path = Path(root) / n
            rel = path.relative_to(dest).as_posix()
            if rel in ignore or n.endswith(".pyc") or path.is_symlink() or not path.is_file():
                continue
            if not _contains(path, needle, skip):
                continue
            with open(path, "rb") as fh:
                first = fh.readline(4096)
            if rel.startswith("bin/") and first.startswith(b"#!") and needle in first:
                scripts.append(rel)
            elif _is_binary(path):
                bins.append(rel)
            else:
                texts.append(rel)
    out = []
    if scripts:
        out.append(_finding("prefix", "error", f"{len(scripts)} script(s) start with '#!{old}/...', "
                            "which does not exist on the target: they fail with 'bad interpreter'.",
                            f"Run them as '{dest}/bin/python SCRIPT', or fix the shebangs: "
                            f"sed -i '1s|{old}|{dest}|' {dest}/bin/NAME", ", ".join(scripts[:10])))
    if texts:
        out.append(_finding("prefix", "warning",
                            f"{len(texts)} text file(s) still name the old prefix {old}.",
                            "Check whether they are read at run time (configs, .pth files); rewrite them "
                            f"with sed 's|{old}|{dest}|g'.", ", ".join(texts[:10])))
    if bins:
        out.append(_finding("prefix", "warning", f"{len(bins)} binary file(s) embed the old prefix {old} "
                            "(RPATH or compiled-in paths); they cannot be rewritten in place.",
                            "If they fail to load on the target, install those packages from conda (which "
                            "pads binary prefixes) instead of copying built files.", ", ".join(bins[:10])))
    return out


def _only(dest: Path, rels: set[str]) -> Iterator[tuple[str, list[str], list[str]]]:
    """``os.walk``'s triples for just these files, skipping those under a directory it would skip."""
    for rel in sorted(rels):
        head, _, name = rel.rpartition("/")
        if not {"__pycache__", "conda-meta"} & set(head.split("/")):
            yield os.path.join(dest, head) if head else str(dest), [], [name]


def link_findings(dest: Path, manifest: dict[str, Any] | None) -> list[Finding]:
    """A venv's links to its base interpreter (outside the env) must resolve on the target."""
    links = ((manifest or {}).get("fixup") or {}).get("python_links") or {}
    broken = sorted(f"{rel} -> {target}" for rel, target in links.items() if not (dest / rel).exists())
    home = _meta_field(_read_text(dest / "pyvenv.cfg").replace(" = ", ": "), "home")
    return _interpreter_finding(manifest, broken, home)


def base_interpreter_findings(manifest: dict[str, Any] | None) -> list[Finding]:
    """Before extraction: the venv's recorded base interpreter must exist on this machine.

    Unpack recreates ``python_links`` as symlinks to these absolute paths and runs them here,
    so their existence HERE (where unpack runs, whatever ``--target`` says) is what decides.
    """
    fx = (manifest or {}).get("fixup") or {}
    if (manifest or {}).get("kind") != "venv":
        return []
    links = fx.get("python_links") or {}
    broken = sorted(f"{rel} -> {t}" for rel, t in links.items()
                    if t.startswith("/") and not os.path.exists(t))
    home = fx.get("home") or next((os.path.dirname(t) for rel, t in sorted(links.items())
                                   if t.startswith("/") and Path(rel).name.startswith("python")), None)
    if not links and home and not os.path.isdir(home):
        broken = [f"pyvenv.cfg home = {home}"]
    return _interpreter_finding(manifest, broken, home)


def _interpreter_finding(manifest: dict[str, Any] | None, broken: list[str],
                         home: str | None) -> list[Finding]:
    if not broken:
        return []
    home = home or "?"
    version = (manifest or {}).get("python") or "the same version"
    return [_finding(
        "interpreter", "error",
        f"will not work here: this venv runs on its base interpreter outside the env ({home}), which does "
        "not exist on this machine; a venv is not self-contained.",
        f"Install Python {version} at {home} (same path) on this machine, or recreate the env here "
        "with 'envbuild lock' + the install script; to move an env between machines, prefer a conda env "
        "(it carries its own interpreter).", "; ".join(broken))]


def _doctor_findings(dest: Path, profile: Profile) -> tuple[list[Finding], bool]:
    from envbuild.doctor import check_env

    try:
        found = check_env(dest, profile)
    except EnvbuildError as exc:  # e.g. the env's python cannot start here: report, do not crash
        return [_finding("doctor", "warning", f"the env check could not run: {exc.render()}",
                         "Fix the errors above, then run 'envbuild doctor --prefix DEST'.")], True
    return list(found), True


def _place(tmp: Path, dest: Path) -> None:
    if dest.exists():
        dest.rmdir()  # empty (checked before extraction)
    os.replace(tmp, dest)


def manifest_findings(manifest: dict[str, Any] | None, profile: Profile) -> list[Finding]:
    """What the manifest alone tells about the target, before extraction: platform, glibc, driver."""
    if not manifest:
        return []
    src = (manifest.get("source") or {}).get("profile") or {}
    out: list[Finding] = []
    for key in ("os", "arch"):
        if src.get(key) and profile.to_dict().get(key) and src[key] != profile.to_dict()[key]:
            out.append(_finding("platform", "error",
                                f"will not work here: the env was packed on {key} {src[key]}, the target is "
                                f"{profile.to_dict()[key]}; its binaries cannot run there.",
                                "Build the env for the target platform ('envbuild lock --target').",
                                f"manifest source.profile.{key}"))
    sg, tg = _ver_tuple(src.get("glibc_version")), _ver_tuple(profile.glibc_version)
    if sg and tg and tg < sg:
        out.append(_finding("glibc", "warning",
                            f"the target's glibc {profile.glibc_version} is older than the source's "
                            f"{src.get('glibc_version')}: anything compiled on the source machine "
                            "(source-built ops such as mmcv/mmdet3d CUDA extensions) can fail with "
                            "'GLIBC_2.xx not found'.",
                            "Rebuild source-built packages on the target ('envbuild rebuild').",
                            "manifest source.profile.glibc_version"))
    return out + torch_findings(manifest.get("torch"), profile)


# What --check-only cannot know before the archive is extracted (it says so in its report).
NOT_CHECKED_BEFORE_EXTRACTION = (
    "the sha256 of every member (envbuild-files.sha256 is the archive's last member)",
    "that every member, link and hardlink stays inside DEST and that the manifest member is the only one "
    "(checked while extracting)",
    "files that still name the old prefix after the fix-up (shebangs, configs, binaries)",
    "envbuild doctor on the unpacked env: GPU compute capability against the archs in its .so files, "
    "missing shared libraries, that the env's interpreter starts",
)


def unpack(archive: Path, dest: Path, *, target: Profile | None = None,
           check_only: bool = False, show_progress: bool = False) -> dict[str, Any]:
    """Extract ``archive`` to ``dest``, fix prefixes, check the env against ``target`` (this machine).

    With ``check_only`` nothing is extracted: every check that needs only the manifest and the
    target runs (platform, glibc, driver, a venv's base interpreter, the fix-up lists), and the
    report's ``unchecked`` names the rest.

    Raises:
        UnsafeArchive: a member or link escapes DEST (nothing is written).
        PackError: a fix-up path of the manifest is not inside DEST (nothing is written).
        HashMismatch: a member differs from envbuild-files.sha256 (DEST is removed).
    """
    archive = Path(archive).resolve()
    _check_archive(archive)
    dest = Path(os.path.abspath(dest))
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise InputError("the destination exists and is not empty.", path=str(dest),
                         hint="Unpack into a new directory (conda-unpack bakes the path into the env).")
    manifest = read_manifest(archive)
    if manifest is not None:
        try:
            _unpack_fixup.validate(manifest)
        except _unpack_fixup.FixupError as exc:
            raise _fixup_error(archive, exc) from None
    profile = target or this_machine()
    pre = manifest_findings(manifest, profile) + base_interpreter_findings(manifest)
    if check_only:
        unchecked = list(NOT_CHECKED_BEFORE_EXTRACTION)
        if manifest is None:
            unchecked.insert(0, "everything the manifest tells: the archive has none (a plain conda-pack "
                                "archive)")
        if (manifest or {}).get("kind", "conda") == "conda":
            unchecked.append("whether DEST is short enough for the prefix placeholders compiled into "
                             "binaries (they are in bin/conda-unpack, read after extraction)")
        unchecked.append("free space at DEST (the manifest records no unpacked size)")
        return _report(archive, dest, manifest, profile, {}, pre, False, checked="manifest",
                       unchecked=unchecked)
    with _steps(show_progress, 4) as step:
        return _unpack(archive, dest, manifest, profile, pre, step)


@contextmanager
def _steps(show: bool, total: int) -> Iterator[Callable[[str], None]]:
    if not show:
        yield lambda _label: None
        return
    from envbuild.output import progress

    with progress() as bar:
        task = bar.add_task("unpack", total=total)
        first = [True]

        def step(label: str) -> None:
            bar.update(task, description=label, advance=0 if first[0] else 1)
            first[0] = False

        yield step
        bar.update(task, description="done", completed=total)


def _unpack(archive: Path, dest: Path, manifest: dict[str, Any] | None, profile: Profile,
            pre: list[Finding], step: Callable[[str], None]) -> dict[str, Any]:
    step("extracting")
    # Remember the first directory we create, so a refused archive leaves no trace at all.
    created = next((p for p in reversed([dest.parent, *dest.parent.parents]) if not p.exists()), None)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.parent / f".{dest.name}.unpack-{os.getpid()}"
    try:
        # One manifest member, and it is the first file: the one read above (and by --check-only).
        log = _extract_any(archive, tmp, manifest)
        on_disk = _unpack_fixup.read_regular(str(tmp / MANIFEST))
        if (manifest is None) != (on_disk is None) or (
                isinstance(on_disk, bytes) and _checked_manifest(on_disk, archive) != manifest):
            raise UnsafeArchive(f"the extracted {MANIFEST} is not the one read from the archive.",
                                path=str(archive), hint="The archive is refused whole.")
        step("verifying sha256")
        verified = _verify(tmp, archive, log.hashes if log else None)
    except BaseException:
        shutil.rmtree(created or tmp, ignore_errors=True)
        raise
    _place(tmp, dest)
    kind = (manifest or {}).get("kind") or ("conda" if (dest / "conda-meta").is_dir() else "venv")
    step("fixing prefixes")
    # Nothing from the archive runs: the fix-up is envbuild's own code, here, on verified files.
    try:
        fix: dict[str, Any] = {"verified_files": verified}
        if kind == "conda":
            fix.update(_conda_unpack(dest, archive))
        if manifest is not None:
            try:
                fix.update(_unpack_fixup.fixup(str(dest), manifest, _resolver(dest, archive)))
            except _unpack_fixup.FixupError as exc:
                raise _fixup_error(archive, exc) from None
    except OSError as exc:
        shutil.rmtree(dest, ignore_errors=True)
        raise PackError(f"the prefix fix-up failed ({exc}); the unpacked env was removed.", path=str(dest),
                        hint="Check free space and permissions of the destination, then unpack again."
                        ) from None
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)
        raise
    old = ((manifest or {}).get("fixup") or {}).get("old_prefix")
    if old is None and (script := _read_text(dest / "bin" / "conda-unpack")):
        old = _old_prefix_from_unpack(script)
    step("checking the env")
    findings = [f for f in pre if f.family not in ("driver", "interpreter")]
    # The files extraction saw naming the old prefix are the only ones that can after the fix-up
    # (it writes only the new prefix): read just those again.
    seen = log.hits if log is not None and old and log.needle == old.encode() else None
    findings += prefix_findings(dest, old, seen) + link_findings(dest, manifest)
    doc, delegated = ([], False) if any(f.family == "interpreter" for f in findings) else \
        _doctor_findings(dest, profile)
    findings += doc
    # doctor owns the driver check when it ran; ours is the fallback (and says the same thing).
    if not any(d.family.startswith("driver") for d in doc):
        findings += torch_findings(torch_build(dest), profile)
    return _report(archive, dest, manifest, profile, fix, findings, delegated, checked="unpacked env",
                   old=old)


def _extract(archive: Path, tmp: Path, needle: bytes | None = None) -> ExtractLog:
    """safe_extract, every file hashed (for _verify) and searched for ``needle`` (for prefix_findings)
    as it is written; refusals stay UnsafeArchive."""
    import zlib

    log = ExtractLog(needle=needle)
    try:
        safe_extract(archive, tmp, unique=(MANIFEST, CHECKSUMS), first=MANIFEST, log=log)
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error, OSError) as exc:
        raise PackError(f"cannot extract the archive ({exc}).", path=str(archive),
                        hint="The file is truncated or damaged, or the destination's disk is full; check "
                             "both and unpack again.") from None
    return log


def _report(archive: Path, dest: Path, manifest: dict[str, Any] | None, profile: Profile,
            fix: dict[str, Any], findings: list[Finding], delegated: bool, *, checked: str,
            old: str | None = None, unchecked: list[str] | None = None) -> dict[str, Any]:
    errors = [f for f in findings if f.severity == "error"]
    src = (manifest or {}).get("source") or {}
    return {
        "ok": not errors, "archive": str(archive), "dest": str(dest), "checked": checked,
        "kind": (manifest or {}).get("kind") or ("conda" if (dest / "conda-meta").is_dir() else "venv"),
        "source": src.get("prefix") or old, "source_host": (src.get("profile") or {}).get("hostname"),
        "target": profile.to_dict(), "fixup": fix, "doctor": delegated,
        "findings": [{k: f.to_dict()[k] for k in _FINDING_KEYS} for f in findings],
        "unchecked": list(unchecked or []),
    }


# --- Slurm -------------------------------------------------------------------------------------


def render_slurm(archive: Path, dest: str | None = None, *, archive_path: str | None = None,
                 mount: bool = False) -> str:
    """A bash script that sbcasts ``archive`` to every node of the allocation and unpacks it there.

    ``archive`` is read here (sha256, manifest); ``archive_path`` is where the archive is ON THE
    CLUSTER: absolute, or relative to the script's directory (default: the archive's file name,
    i.e. copied next to the script). ``mount``: squashfuse-mount a squashfs image on each node
    instead of extracting it.
    """
    from envbuild.render import template_environment

    archive = Path(os.path.abspath(archive))
    _check_archive(archive)
    manifest = read_manifest(archive)
    kind = (manifest or {}).get("kind") or "conda"
    name = archive.name
    squash = _is_squashfs(archive)
    fmt = "squashfs" if squash else "zip" if name.endswith(".zip") \
        else "tar.zst" if name.endswith((".zst", ".tzst")) else "tar.gz"
    if mount and not squash:
        raise InputError("--squashfs mounts a squashfs image, but this archive is a " + fmt + ".",
                         path=str(archive), field="--squashfs",
                         hint="Pack with 'envbuild pack --format squashfs', or drop --squashfs to unpack it.")
    if dest is not None and not dest.startswith("/"):
        raise InputError(f"the node-local destination must be an absolute path, not '{dest}'.",
                         field="--dest", hint="e.g. --dest /tmp/envs/NAME (the same path on every node).")
    where = archive_path if archive_path else name
    stem = re.sub(r"[^A-Za-z0-9._-]", "_",
                  re.sub(r"(\.tar\.gz|\.tgz|\.tar\.zst|\.tzst|\.zip|\.squashfs|\.sqsh|\.sqfs)$", "", name))
    env = template_environment(trim=False)
    return env.get_template("slurm-unpack.sh.j2").render(
        version=__version__, archive=where, archive_abs=where.startswith("/"), name=name,
        sha256=sha256_file(archive), fmt=fmt, kind=kind, dest=dest, stem=stem,
        has_fixup=manifest is not None, mount=mount,
    )


def write_slurm(archive: Path, output: Path | None, dest: str | None = None, *,
                archive_path: str | None = None, mount: bool = False) -> Path | None:
    """Render the Slurm script for ``archive`` into ``output`` (mode 755); ``None`` or ``-``: stdout."""
    from envbuild._fs import atomic_write

    text = render_slurm(archive, dest, archive_path=archive_path, mount=mount)
    if output is None or str(output) == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
        return None
    return atomic_write(output, text, mode=0o755)


# --- presentation ------------------------------------------------------------------------------


def _size(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 1e5 else f"{n / 1e3:.1f} kB"


def present_pack(result: dict[str, Any], as_json: bool) -> None:
    """Print a pack summary (or JSON)."""
    from envbuild.output import console, err_console, print_json, styled

    if as_json:
        print_json(result)
        return
    torch = result.get("torch") or {}
    extra = f", torch {torch.get('version')} (CUDA {torch.get('cuda')})" if torch.get("version") else ""
    console.print(f"packed {result['kind']} env {result['prefix']} -> {result['archive']} "
                  f"({result['format']}, {_size(result['size'])}, {result['members']} members, "
                  f"{result['packages']} packages{extra}) in {result['seconds']} s with {result['jobs']} "
                  "thread(s)", highlight=False)
    if (line := _inode_line(result)) is not None:
        console.print(line, highlight=False)
    for w in result.get("warnings", []):
        err_console.print(styled("warning:", "yellow", w), highlight=False)
    if result.get("slurm_script"):
        console.print(f"Slurm unpack script: {result['slurm_script']}", highlight=False)


def _inode_line(info: dict[str, Any]) -> str | None:
    """'env: N files, D dirs, B; squashfs image: 1 file when mounted' - the inode saving at a glance."""
    files, dirs, nbytes = info.get("env_files"), info.get("env_dirs"), info.get("env_bytes")
    if files is None:
        return None
    what = f"env: {files:,} files in {dirs or 0:,} directories" + (f", {_size(nbytes)}" if nbytes else "")
    if info.get("image_files") == 1:
        return (f"{what}; as a squashfs image it is 1 file of {_size(info['size'])} (mounted with "
                f"squashfuse: 1 inode on the shared filesystem instead of {files + (dirs or 0):,})")
    return f"{what}; unpacking creates {info.get('inodes_when_used') or files:,} inodes on the target"


def present_unpack(report: dict[str, Any], as_json: bool) -> None:
    """Print the findings table of an unpack (or JSON)."""
    from envbuild.output import console, print_json, styled, table

    if as_json:
        print_json(report)
        return
    tgt = report["target"]
    what = "checked the archive's manifest (nothing extracted) for" if report.get("checked") == "manifest" \
        else "unpacked"
    console.print(f"{what} {report['kind']} env into {report['dest']} (packed from "
                  f"{report.get('source') or '?'} on {report.get('source_host') or '?'}); checked against "
                  f"{tgt.get('hostname') or 'the given profile'}: "
                  f"driver {tgt.get('driver_version') or 'none'}, "
                  f"GPUs {', '.join(g['name'] for g in tgt.get('gpus', [])) or 'none'}", highlight=False)
    rows = [(f["severity"], f["family"], f["cause"], f["fix"], f["evidence"]) for f in report["findings"]
            if f["severity"] != "info"]
    if rows:
        console.print(table("What will break here", ["severity", "check", "cause", "fix", "evidence"], rows))
    if report["ok"] and rows:
        console.print(styled("ok:", "green", "no errors; read the warnings above before running jobs."))
    elif report["ok"]:
        console.print(styled("ok:", "green", "nothing found that will break on this target."))
    else:
        console.print(styled("will not work here:", "bold red", "fix the errors above before running jobs."))
    if report.get("unchecked"):
        console.print("not checked before extraction (the real unpack checks them):", highlight=False)
        for item in report["unchecked"]:
            console.print(f"  - {item}", highlight=False, markup=False)


def present_inspect(info: dict[str, Any], as_json: bool) -> None:
    """Print an archive's origin and package table (or JSON)."""
    from envbuild.output import console, print_json, table

    if as_json:
        print_json(info)
        return
    src = info.get("source") or {}
    prof = src.get("profile") or {}
    console.print(f"{info['archive']} ({_size(info['size'])}): {info.get('kind') or '?'} env from "
                  f"{src.get('prefix') or '?'} on {prof.get('hostname') or '?'} "
                  f"(driver {prof.get('driver_version') or '-'}), created {info.get('created') or '?'}"
                  + ("" if info["has_manifest"] else "; no envbuild manifest (plain conda-pack archive)"),
                  highlight=False)
    if (line := _inode_line(info)) is not None:
        console.print(line, highlight=False)
    rows = [(p["name"], p["version"], p.get("build"), p.get("installer"), p.get("cuda"))
            for p in info["packages"]]
    console.print(table("Packages", ["name", "version", "build", "installer", "cuda"], rows))
