"""Unpack an env archive on another machine, and say what will break there.

``unpack`` extracts safely (nothing outside DEST, the manifest member once and first), verifies
every member against envbuild-files.sha256, fixes prefixes with envbuild's own code (the
archive's scripts never run), then checks the env against a target profile: the manifest alone
(platform, glibc, the torch-vs-driver verdict, a venv's base interpreter; all that
``--check-only`` runs), then the unpacked files and ``envbuild doctor``. ``render_slurm`` writes
the script that does the same on every node of a Slurm allocation.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import sys
import tarfile
import zipfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from envbuild import __version__, _envcheck, _unpack_fixup
from envbuild._fs import ExtractLog, regular_files, resolve_inside, safe_extract, sha256_file
from envbuild.archive import (
    CHECKSUMS,
    FIXUP_SCRIPT,
    MANIFEST,
    _check_archive,
    _checked_manifest,
    _is_squashfs,
    _member,
    _old_prefix_from_unpack,
    read_manifest,
)
from envbuild.errors import EnvbuildError, HashMismatch, InputError, PackError, UnsafeArchive
from envbuild.models import Profile, loose_version
from envbuild.pack import _contains, _is_binary, _source_profile

if TYPE_CHECKING:
    from envbuild.doctor import Finding
    from envbuild.matrix import Verdict

__all__ = [
    "NOT_CHECKED_BEFORE_EXTRACTION",
    "UnpackReport",
    "base_interpreter_findings",
    "link_findings",
    "manifest_findings",
    "prefix_findings",
    "render_slurm",
    "this_machine",
    "torch_findings",
    "unpack",
    "write_slurm",
]

# The torch-vs-driver verdict (Matrix.torch_verdict) as doctor words it and as unpack does.
_DRIVER_VERDICT = ("driver-too-old", "driver")
# unpack reports doctor's one Finding record; its JSON keeps these keys (UnpackReport.to_dict)
_FINDING_KEYS = ("family", "severity", "cause", "fix", "evidence")


@dataclass(frozen=True)
class UnpackReport:
    """What ``unpack`` did and found; ``to_dict`` is the ``--json`` output.

    ``checked``: "manifest" (--check-only, nothing extracted) or "unpacked env". ``fixup``: what the
    prefix fix-up did (its keys depend on the env kind: conda_unpack for conda, links for a venv).
    ``doctor``: whether envbuild doctor ran on the unpacked env. ``unchecked``: what --check-only
    could not check before extraction.
    """

    archive: str
    dest: str
    checked: str
    kind: str
    source: str | None
    source_host: str | None
    target: Profile
    fixup: Mapping[str, Any]
    doctor: bool
    findings: tuple[Finding, ...]
    unchecked: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        """No finding is an error: nothing found that will break on the target."""
        return not any(f.severity == "error" for f in self.findings)

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok, "archive": self.archive, "dest": self.dest, "checked": self.checked,
            "kind": self.kind, "source": self.source, "source_host": self.source_host,
            "target": self.target.to_dict(), "fixup": dict(self.fixup), "doctor": self.doctor,
            "findings": [{k: f.to_dict()[k] for k in _FINDING_KEYS} for f in self.findings],
            "unchecked": list(self.unchecked),
        }


def _finding(family: str, severity: str, cause: str, fix: str, evidence: str = "") -> Finding:
    # doctor's import is heavy: only when a finding is made. Finding checks the family in the registry.
    from envbuild.doctor import Finding

    return Finding(family, severity, cause, fix, evidence)


def _read_text(path: Path) -> str:
    # Regular files only, never through a link: the unpacked files are the archive's.
    return _envcheck.read_text(str(path), follow=False) or ""


def torch_build(prefix: Path) -> dict[str, Any] | None:
    """torch's version and CUDA in the env at ``prefix`` (envbuild._envcheck.torch_build)."""
    return _envcheck.torch_build(str(prefix))


NOT_CHECKED_BEFORE_EXTRACTION = (
    "the sha256 of every member (envbuild-files.sha256 is the archive's last member)",
    "that every member, link and hardlink stays inside DEST and that the manifest member is the only one "
    "(checked while extracting)",
    "files that still name the old prefix after the fix-up (shebangs, configs, binaries)",
    "envbuild doctor on the unpacked env: GPU compute capability against the archs in its .so files, "
    "missing shared libraries, that the env's interpreter starts",
)


def unpack(archive: Path, dest: Path, *, target: Profile | None = None,
           check_only: bool = False, show_progress: bool = False) -> UnpackReport:
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
            pre: list[Finding], step: Callable[[str], None]) -> UnpackReport:
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
    if not any(d.family in _DRIVER_VERDICT for d in doc):
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


def _place(tmp: Path, dest: Path) -> None:
    if dest.exists():
        dest.rmdir()  # empty (checked before extraction)
    os.replace(tmp, dest)


def _report(archive: Path, dest: Path, manifest: dict[str, Any] | None, profile: Profile,
            fix: dict[str, Any], findings: list[Finding], delegated: bool, *, checked: str,
            old: str | None = None, unchecked: list[str] | None = None) -> UnpackReport:
    src = (manifest or {}).get("source") or {}
    return UnpackReport(
        archive=str(archive), dest=str(dest), checked=checked,
        kind=(manifest or {}).get("kind") or ("conda" if (dest / "conda-meta").is_dir() else "venv"),
        source=src.get("prefix") or old, source_host=(src.get("profile") or {}).get("hostname"),
        target=profile, fixup=fix, doctor=delegated, findings=tuple(findings),
        unchecked=tuple(unchecked or ()),
    )


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


# --- what will break on the target -------------------------------------------------------------


def this_machine() -> Profile:
    """Probe this machine (envbuild.probe); a minimal profile when the probe is unavailable."""
    return Profile.from_dict(_source_profile())


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
    sg, tg = loose_version(src.get("glibc_version")), loose_version(profile.glibc_version)
    if sg and tg and tg < sg:
        out.append(_finding("glibc", "warning",
                            f"the target's glibc {profile.glibc_version} is older than the source's "
                            f"{src.get('glibc_version')}: anything compiled on the source machine "
                            "(source-built ops such as mmcv/mmdet3d CUDA extensions) can fail with "
                            "'GLIBC_2.xx not found'.",
                            "Rebuild source-built packages on the target ('envbuild rebuild').",
                            "manifest source.profile.glibc_version"))
    return out + torch_findings(manifest.get("torch"), profile)


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
    return _interpreter_finding(manifest, broken, _envcheck.pyvenv_value(str(dest), "home"))


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
