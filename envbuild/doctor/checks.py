"""Check an installed env: what its own interpreter reports, its ELF files, and a dlopen of each.

:func:`env_info` runs ``envbuild/_envcheck.py`` with the env's OWN interpreter (nothing of the env
is imported here); the checks then read every compiled extension's ELF headers (NEEDED, RPATH,
``.nv_fatbin`` archs) and dlopen them in a separate process to catch undefined symbols.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from packaging.requirements import InvalidRequirement, Requirement
from packaging.version import Version

from envbuild import elf
from envbuild.doctor.facts import (
    Facts,
    LazyModule,
    data_facts,
    derive,
    env_ctx,
    lazy_module,
    library_kind,
    mm,
    profile_ctx,
    ver,
)
from envbuild.doctor.report import Finding, conclude, dedupe, rank
from envbuild.doctor.rules import fill, read_log
from envbuild.errors import InputError, ToolError
from envbuild.models import Profile, known
from envbuild.probe import build_toolchain

__all__ = ["check_env", "check_prefix", "dist_extensions", "env_info", "torch_cuda_links"]

_ENVCHECK = Path(__file__).resolve().parent.parent / "_envcheck.py"



def _env_python(prefix: Path) -> Path:
    for cand in (prefix / "bin" / "python", prefix / "bin" / "python3"):
        if cand.exists():
            return cand
    raise InputError(
        f"no Python interpreter in {prefix}/bin.",
        path=str(prefix),
        field="--prefix",
        hint="Pass the root of a venv or conda env (the directory holding bin/python).",
    )


def env_info(prefix: Path) -> dict[str, Any]:
    """What ``_envcheck.py`` reports when run by the env's own interpreter (nothing imported here).

    Raises:
        InputError: ``prefix`` holds no interpreter.
        ToolError: the interpreter failed.
    """
    py = _env_python(prefix)
    try:
        proc = subprocess.run(
            [str(py), "-I", str(_ENVCHECK), str(prefix)],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        raise ToolError(f"cannot run {py} ({exc}).", path=str(py)) from None
    if proc.returncode != 0:
        raise ToolError(
            f"{py} failed while listing the env: {proc.stderr.strip()[-500:]}",
            path=str(py),
            hint="Check that the interpreter runs: '{py} -c pass'.",
        )
    data: dict[str, Any] = json.loads(proc.stdout)
    return data


def _owner(path: str, sites: Sequence[str]) -> str:
    for s in sites:
        if path.startswith(s.rstrip("/") + "/"):
            return path[len(s.rstrip("/")) + 1 :]
    return path


_NOT_LOADED = "<not loaded>"  # key of _load_check's result: how many files the check could not reach


def _load_check(py: str, items: list[dict[str, Any]]) -> dict[str, str]:
    """dlopen each .so in a child process of the env's python; path -> error for failures.

    When the child hangs, the files it did not reach are counted under ``_NOT_LOADED``.
    """
    errors: dict[str, str] = {}
    todo = list(items)
    for _ in range(5):  # a crashing initialiser costs one restart, not the whole check
        if not todo:
            break
        try:
            proc = subprocess.run(
                [py, "-I", str(_ENVCHECK), "--load"],
                input=json.dumps(todo),
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
        except subprocess.TimeoutExpired:
            break
        done: set[str] = set()
        started: str | None = None
        for line in proc.stdout.splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if "start" in rec:
                started = rec["start"]
                continue
            done.add(rec["path"])
            started = None
            if not rec["ok"]:
                errors[rec["path"]] = rec["error"]
        if started is not None:
            errors[started] = f"loading it killed the process (exit {proc.returncode})"
            done.add(started)
        todo = [i for i in todo if i["path"] not in done]
        if proc.returncode == 0:
            break
    if todo:
        errors[_NOT_LOADED] = f"{len(todo)} of {len(items)} files not checked"
    return errors


def check_env(prefix: Path, profile: Profile | None = None, *, load: bool = True) -> list[Finding]:
    """Check an installed env against itself and the target ``profile``; most likely first.

    A healthy env yields one ``info`` finding named ``healthy``.
    """
    found, _info, checked = check_prefix(Path(prefix), profile, load=load)
    ranked = rank([(f, i) for i, f in enumerate(dedupe(found))])
    return conclude(ranked, checked, prefix=Path(prefix), log_given=False, log_explained=False,
                    targeted=profile is not None)


def check_prefix(
    prefix: Path, profile: Profile | None, *, load: bool = True
) -> tuple[list[Finding], dict[str, Any], dict[str, Any]]:
    """Every env check on ``prefix``: (findings in check order, env_info, what was checked).

    Raises:
        InputError: ``prefix`` is not a directory or holds no interpreter.
        ToolError: the env's interpreter failed.
    """
    if not prefix.is_dir():
        raise InputError(
            "no such directory.",
            path=str(prefix),
            field="--prefix",
            hint="Pass the root of a venv or conda env.",
        )
    info = env_info(prefix)
    checks: list[str] = []
    findings = _env_findings(prefix, info, profile, load, checks)
    skipped: dict[str, str] = {}
    if not load:
        skipped["undefined-symbols"] = "--no-load: the extensions were not dlopened"
    if profile is None:
        skipped["driver-and-gpu"] = "no --target profile: the driver and GPU checks need one"
    for c in checks:
        if "(partial" in c:
            skipped[c.split()[0]] = c
    torch = info.get("torch") or {}
    checked = {
        "python": info.get("python"),
        "packages": len(info.get("dists") or []),
        "extensions": len(info.get("extensions") or []),
        "torch": torch.get("version"),
        "torch_cuda": torch.get("cuda"),
        "checks": checks,
        "skipped": skipped,
    }
    return findings, info, checked


def _env_findings(
    prefix: Path,
    info: Mapping[str, Any],
    profile: Profile | None,
    load: bool,
    checks: list[str] | None = None,
) -> list[Finding]:
    """Every env check; the name of each check that ran is appended to ``checks``."""
    checks = [] if checks is None else checks
    facts = data_facts()
    out: list[Finding] = []
    sites: list[str] = list(info.get("site_packages") or [])
    torch = info.get("torch") or {}
    torch_cuda = mm(torch.get("cuda"))
    dists = {d["name"]: d for d in info.get("dists") or []}
    pctx = profile_ctx(profile, facts)
    ctx: dict[str, Any] = {**pctx, **env_ctx(info)}
    derive(ctx, facts)

    out += _torch_driver(torch, torch_cuda, ctx, profile)
    if profile is not None:
        checks.append("torch-driver")
    exts = list(info.get("extensions") or [])
    np_d = dists.get("numpy")
    np2 = np_d is not None and (ver(np_d["version"]) or Version("0")) >= Version("2")
    # headers only, in parallel threads, cached by file identity (see elf.read_elf_cached)
    elfs = elf.read_elfs(exts, numpy_scan=np2)
    missing_by_file, preload = _resolve_needed(elfs, info)
    evidence = _import_evidence(prefix, missing_by_file, info, sites) if load and missing_by_file else None
    checks.append("import-evidence" if evidence is not None else "lazy-module-list")
    out += _missing_lib_findings(missing_by_file, sites, ctx, elfs, info, evidence)
    checks.append("needed-libraries")
    out += _cudart_mismatch(elfs, torch_cuda, sites, ctx)
    out += _arch_findings(elfs, torch, ctx, sites, facts)
    if ctx.get("target_cc"):
        checks.append("gpu-arch")
    out += _numpy_findings(elfs, dists, sites)
    checks += ["cudart-vs-torch", "numpy-abi"]
    if load:
        items = [
            {"path": e.path, "preload": preload.get(e.path, [])}
            for e in elfs
            if e.path not in missing_by_file
        ]
        py = str(_env_python(prefix))
        errors = _load_check(py, items)
        unchecked = errors.pop(_NOT_LOADED, None)
        out += _load_findings(errors, sites, ctx)
        checks.append("undefined-symbols" if not unchecked else f"undefined-symbols (partial: {unchecked})")
    out += _cupy_findings(dists, torch_cuda, profile)
    out += _conda_findings(info, dists)
    out += _mmcv_findings(info, dists)
    out += _build_findings(torch_cuda, ctx, profile, info)
    checks += ["cupy", "pip-over-conda", "mmcv-ops", "build-toolchain"]
    return out


def _resolve_needed(
    elfs: Sequence[elf.ElfInfo], info: Mapping[str, Any]
) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """(file -> the NEEDED libraries the loader cannot find, file -> the env's files it links)."""
    provided: dict[str, str] = {}
    for e in elfs:
        provided.setdefault(os.path.basename(e.path), e.path)
        if e.soname:
            provided.setdefault(e.soname, e.path)
    ld_path = [p for p in str((info.get("environ") or {}).get("LD_LIBRARY_PATH") or "").split(":") if p]
    lib_dirs = list(info.get("lib_dirs") or [])
    missing_by_file: dict[str, list[str]] = {}
    preload: dict[str, list[str]] = {}
    in_env = set(provided.values())
    for e in elfs:
        res = elf.resolve_needed(e, env_lib_dirs=lib_dirs, ld_library_path=ld_path, provided=provided)
        miss = [lib for lib, hit in res.items() if hit is None]
        if miss:
            missing_by_file[e.path] = miss
        # a library another package ships (torch/lib/libc10.so) is loaded by that package's import
        preload[e.path] = [hit for hit in res.values() if hit in in_env]
    return missing_by_file, preload


def _torch_driver(
    torch: Mapping[str, Any], torch_cuda: str | None, ctx: Mapping[str, Any], profile: Profile | None
) -> list[Finding]:
    if not torch_cuda or profile is None or (profile.driver_version is None and not profile.gpus):
        return []
    # the one verdict resolve and pack use (envbuild.matrix): minor-version compatibility counted
    v = data_facts().torch_driver_verdict(torch.get("version"), torch_cuda, profile, ctx.get("target_cc"))
    if v is None or v.rule in ("native-driver", "driver-unknown", "cpu"):
        return []
    evidence = (
        f"torch {known(torch.get('version'))} (torch/version.py cuda='{known(torch.get('cuda'))}') vs "
        f"driver {known(profile.driver_version)} (CUDA {known(profile.driver_cuda_version)})"
        + "".join(f"; {f.text} ({f.source})" for f in v.facts)
    )
    drv = known(profile.driver_version, "")
    if v.ok:  # runs through minor-version compatibility
        checked = v.arch_note is not None  # the GPU has SASS in the wheel: no PTX JIT needed
        return [
            Finding(
                "driver-too-old",
                "info" if checked else "warning",
                f"torch is built for CUDA {torch_cuda}; the driver {drv} supports CUDA "
                f"{known(profile.driver_cuda_version, 'older releases')} natively, and torch runs through "
                f"CUDA minor-version compatibility (rule {v.rule}): {v.reason}"
                + (f"; {v.arch_note}." if checked else "; the GPU was not checked against the wheel's arch "
                   "list, and PTX JIT fails under this rule."),
                fill(["Nothing to fix; a driver >= {min_driver} would run CUDA {torch_cuda} natively "
                       "(PTX JIT too).", "Nothing to fix."], ctx),
                evidence,
                rule="env-torch-driver",
                weight=20 if checked else 80,
            )
        ]
    fix = fill(
        [
            "Install torch=={torch_for_driver} (built for CUDA {torch_for_driver_cuda}, which driver "
            "{target_driver} runs) with 'envbuild rebuild --target PROFILE', or upgrade the NVIDIA driver to "
            ">= {min_driver} for CUDA {torch_cuda}.",
            "Install a torch built for CUDA {driver_cuda} or older ('envbuild rebuild --target PROFILE'), or "
            "upgrade the NVIDIA driver to >= {min_driver} for CUDA {torch_cuda}.",
            "Install a torch built for CUDA {driver_cuda} or older ('envbuild rebuild --target PROFILE'), or "
            "upgrade the NVIDIA driver.",
        ],
        ctx,
    )
    return [
        Finding(
            "driver-too-old",
            "error",
            f"torch is built for CUDA {torch_cuda} but the driver {drv} supports only CUDA "
            f"{known(profile.driver_cuda_version, 'older releases')} ({v.reason}): torch.cuda will "
            "fail with 'The NVIDIA driver on your system is too old'."
            if v.rule == "driver-too-old"
            else f"torch is built for CUDA {torch_cuda} and will not run on driver {drv} here: {v.reason}.",
            fix,
            evidence,
            rule="env-torch-driver",
            weight=95,
        )
    ]


@dataclass
class _ImportEvidence:
    """What importing the owning packages in the env showed: module -> error, and the mapped files."""

    errors: dict[str, str | None]
    mapped: set[str]


def _top_levels(path: str, info: Mapping[str, Any], sites: Sequence[str]) -> list[str]:
    """The import names of the dist owning ``path`` (all its top-level packages: cupy, cupyx, ...)."""
    rel = _owner(path, sites)
    first = rel.split("/", 1)[0]
    for d in info.get("dists") or []:
        top = list(d.get("top_level") or [])
        if first in top:
            return [t for t in top if t.isidentifier()]
    return [first] if first.isidentifier() else []


def _import_evidence(
    prefix: Path, missing: Mapping[str, list[str]], info: Mapping[str, Any], sites: Sequence[str]
) -> _ImportEvidence | None:
    """Import the packages that own files with missing libraries, in the env's own interpreter.

    Run only when a library is missing (a healthy env costs nothing); None when the child could not
    report (it crashed or hung): doctor then falls back to the curated list of lazy modules.
    """
    mods = sorted({m for p in missing for m in _top_levels(p, info, sites)})
    if not mods:
        return None
    try:
        proc = subprocess.run(
            [str(_env_python(prefix)), "-I", str(_ENVCHECK), "--imports"],
            input=json.dumps(mods),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            cwd=str(prefix),
        )
    except (OSError, subprocess.SubprocessError):
        return None
    marker = "@@envbuild-imports@@"
    if marker not in proc.stdout:
        return None
    try:
        data = json.loads(proc.stdout.rsplit(marker, 1)[1])
    except json.JSONDecodeError:
        return None
    return _ImportEvidence(dict(data.get("errors") or {}), set(data.get("mapped") or []))


_MISSING_LIB_FIXES = [
    "Rebuild the package that owns {file} against the installed torch with CUDA_HOME at a "
    "CUDA {torch_cuda} toolkit (e.g. CUDA_HOME=/usr/local/cuda-{torch_cuda} FORCE_CUDA=1 "
    "pip install --no-build-isolation --no-deps --force-reinstall ...), or "
    "'envbuild rebuild --target PROFILE'.",
    "Rebuild the package that owns {file} with CUDA_HOME at a toolkit of the CUDA version "
    "torch uses (python -c 'import torch; print(torch.version.cuda)') and FORCE_CUDA=1, so "
    "it links the runtime torch ships, or install a CUDA {lib_cuda} runtime into the env.",
    "Install {lib_provider} into the env (or add the directory holding {lib} to "
    "LD_LIBRARY_PATH), or rebuild {file} against the libraries that are installed.",
]


def dist_extensions(info: Mapping[str, Any]) -> dict[str, list[str]]:
    """Canonical dist name -> the compiled files under its top-level packages (from env_info)."""
    sites = list(info.get("site_packages") or [])
    owner: dict[str, str] = {}
    for d in info.get("dists") or []:
        for t in d.get("top_level") or []:
            owner.setdefault(t, d["name"])
    out: dict[str, list[str]] = {}
    for path in info.get("extensions") or []:
        first = _owner(path, sites).split("/", 1)[0]
        if first in owner:
            out.setdefault(owner[first], []).append(path)
    return out


_TORCH_LIB = re.compile(r"^lib(?:c10|torch|caffe2|shm)\w*\.so")
_TORCH_SYM = re.compile(r"^_ZN\w*?(?:2at|3c10|5torch|6caffe2)")


def torch_cuda_links(paths: Iterable[str]) -> str | None:
    """Why files built against torch or CUDA would break when torch or CUDA changes, or None.

    Evidence read from the ELF files: a NEEDED torch library (libc10, libtorch*), a NEEDED NVIDIA CUDA
    library (libcudart.so.X.Y ...), or undefined symbols of torch's C++ API (ops that rely on
    'import torch' having loaded libc10 first link nothing by name).
    """
    for p in paths:
        e = elf.read_elf_cached(p)
        if e is None:
            continue
        rel = os.path.basename(p)
        for n in e.needed:
            if _TORCH_LIB.match(n):
                return f"{rel} links {n}"
            if library_kind(n).kind == "nvidia-cuda":
                return f"{rel} links {n}"
        syms = [s for s in elf.undefined_symbols(p) if _TORCH_SYM.match(s)]
        if syms:
            return f"{rel} uses torch's C++ API ({syms[0]})"
    return None


@dataclass(frozen=True)
class _Owner:
    """A file with missing libraries: where it is and what loads it."""

    path: str
    rel: str  # under site-packages
    tops: list[str]  # import names of the dist owning it
    torch_ops: bool  # compiled ops linking torch
    own: bool  # built from source in this env
    lazy: LazyModule | None  # the curated entry when its package loads it only for one feature


def _missing_lib_findings(
    missing: Mapping[str, list[str]],
    sites: Sequence[str],
    ctx: Mapping[str, Any],
    elfs: Sequence[elf.ElfInfo] = (),
    info: Mapping[str, Any] | None = None,
    evidence: _ImportEvidence | None = None,
) -> list[Finding]:
    """One finding per missing library, as bad as the evidence of harm says.

    error: the package's import loads the file (it is mapped after the import, or the import fails
    naming the library), or the file is ops linking torch / built from source (the user's code loads
    them). info: a module the package loads only for one feature (import evidence, or the curated
    list in doctor_libs.json). warning: not loaded by the import and not known: only code that loads
    that file fails.
    """
    info = info or {}
    by_path = {e.path: e for e in elfs}
    source_built = {
        str(d.get("dir")): d
        for d in info.get("dists") or []
        if d.get("editable") or (d.get("direct_url") or {}).get("dir_info") is not None
    }
    out: list[Finding] = []
    for path, libs in sorted(missing.items()):
        e = by_path.get(path)
        tops = _top_levels(path, info, sites)
        rel = _owner(path, sites)
        torch_ops = e is not None and any(n.startswith(("libc10", "libtorch")) for n in e.needed)
        owner = _Owner(path, rel, tops, torch_ops=torch_ops, own=_user_ops(path, tops, info, source_built),
                       lazy=lazy_module(rel))
        out += [_missing_lib_finding(owner, lib, ctx, evidence) for lib in libs]
    return out


def _harm(owner: _Owner, lib: str, evidence: _ImportEvidence | None) -> tuple[str, int, str]:
    """(severity, weight, why) of ``lib`` missing for ``owner``: who loads the file."""
    imported_by, loaded = "", False
    if evidence is not None:
        failed = [m for m in owner.tops if (evidence.errors.get(m) or "").find(lib) != -1]
        if os.path.realpath(owner.path) in evidence.mapped or failed:
            loaded = True
            imported_by = ", ".join(failed or [m for m in owner.tops if evidence.errors.get(m) is None])
    if loaded:
        return "error", 85, (f"'import {imported_by}' loads it" if imported_by
                             else "the package's import loads it")
    if owner.torch_ops:
        return "error", 85, "it holds compiled ops that link torch (your code loads them)"
    if owner.own:
        return "error", 85, "it is built from source in this env (your code loads it)"
    if owner.lazy is not None:
        return "info", 20, f"{owner.lazy.package} loads it only for {owner.lazy.feature}"
    if evidence is not None:
        return "info", 20, (f"'import {', '.join(owner.tops) or owner.rel}' does not load it: only code that "
                            "uses it fails")
    return "warning", 40, "whether the package's import loads it was not checked (--no-load)"


_MISSING_LIB_CAUSES = [
    "{file} was compiled with CUDA {lib_cuda} (it needs {lib}) but no CUDA "
    "{lib_cuda} runtime is on the loader path; torch here ships CUDA {torch_cuda}.",
    "{file} was compiled with CUDA {lib_cuda} (it needs {lib}) but no CUDA {lib_cuda} "
    "runtime is on the loader path.",
    "{file} needs {lib} ({lib_what}), which the loader cannot find (RPATH/RUNPATH, the env's "
    "lib dirs, LD_LIBRARY_PATH, the ld.so cache).",
]


def _missing_lib_finding(
    owner: _Owner, lib: str, ctx: Mapping[str, Any], evidence: _ImportEvidence | None
) -> Finding:
    lk = library_kind(lib)
    c = {**ctx, "lib": lib, "file": owner.rel}
    derive(c, data_facts())
    c["lib_what"] = lk.what
    severity, weight, why = _harm(owner, lib, evidence)
    cause = fill(_MISSING_LIB_CAUSES, c).rstrip(".") + f"; {why}."
    lazy = owner.lazy
    if severity == "info":
        fix = (
            f"Nothing to do unless you need {lazy.feature if lazy else 'what ' + owner.rel + ' provides'}; "
            f"then install {lk.provider}."
        )
    else:
        fix = fill(_MISSING_LIB_FIXES, {**c, "lib_provider": lk.provider}
                   if c.get("lib_cuda") else {**c, "torch_cuda": None, "lib_provider": lk.provider})
    return Finding(
        lk.family,
        severity,
        cause,
        fix,
        f"{owner.path}: NEEDED {lib} not found",
        source=lazy.source if lazy is not None and severity == "info" else lk.source,
        rule="env-needed",
        weight=weight,
        library_kind=lk.kind,
    )


def _user_ops(
    path: str, tops: Sequence[str], info: Mapping[str, Any], source_built: Mapping[str, Any]
) -> bool:
    """True when ``path`` belongs to a dist built from a local source tree or installed editable."""
    return any(any(t in (d.get("top_level") or []) for t in tops) for d in source_built.values())


def _cudart_mismatch(
    elfs: Sequence[elf.ElfInfo], torch_cuda: str | None, sites: Sequence[str], ctx: Mapping[str, Any]
) -> list[Finding]:
    out: list[Finding] = []
    if not torch_cuda:
        return out
    for e in elfs:
        if not any(n.startswith(("libc10", "libtorch")) for n in e.needed):
            continue
        for n in e.needed:
            m = re.match(r"libcudart\.so\.(\d+\.\d+)$", n)
            if m and m.group(1) != torch_cuda:
                f = _owner(e.path, sites)
                out.append(
                    Finding(
                        "cuda-toolkit-mismatch",
                        "error",
                        f"{f} was compiled with nvcc {m.group(1)} (it links {n}) while torch uses "
                        f"CUDA {torch_cuda}; "
                        "two CUDA runtimes in one process break at import or at the first kernel.",
                        f"Rebuild it with CUDA_HOME at a CUDA {torch_cuda} toolkit and FORCE_CUDA=1 "
                        "('envbuild rebuild --target PROFILE' writes the commands).",
                        f"{e.path}: NEEDED {n}",
                        rule="env-cudart",
                        weight=84,
                    )
                )
    return out


def _arch_findings(
    elfs: Sequence[elf.ElfInfo],
    torch: Mapping[str, Any],
    ctx: Mapping[str, Any],
    sites: Sequence[str],
    facts: Facts,
) -> list[Finding]:
    cc_text = ctx.get("target_cc")
    if not cc_text:
        return []
    m = re.match(r"(\d+)\.(\d+)", str(cc_text))
    if not m:
        return []
    cc = int(m.group(1)) * 10 + int(m.group(2))
    out: list[Finding] = []
    gpu = ctx.get("target_gpu") or f"sm_{cc}"
    tarch = facts.torch_archs(torch.get("version"), torch.get("cuda"))
    if tarch and not elf.arch_runs_on(tarch, cc):
        labels = " ".join(c.label for c in tarch)
        out.append(
            Finding(
                "gpu-arch-unsupported",
                "error",
                f"torch {torch.get('version')} is compiled for {labels}, none of which runs on the {gpu} "
                f"(compute capability {cc_text}).",
                f"Install a torch build whose arch list includes sm_{cc} (a newer CUDA build), "
                "'envbuild rebuild --target PROFILE' picks one.",
                f"torch {torch.get('version')} CUDA {torch.get('cuda')}: {labels}",
                rule="env-arch-torch",
                weight=88,
            )
        )
    for e in elfs:
        if not e.gpu_code or elf.arch_runs_on(e.gpu_code, cc):
            continue
        labels = " ".join(c.label for c in e.gpu_code)
        f = _owner(e.path, sites)
        out.append(
            Finding(
                "gpu-arch-unsupported",
                "error",
                f"{f} holds GPU code only for {labels}; the {gpu} (sm_{cc}) cannot run it: "
                "kernels fail with 'no kernel image is available for execution on the device'.",
                f'Rebuild it with TORCH_CUDA_ARCH_LIST="{cc_text}" (add +PTX for newer GPUs) '
                "and FORCE_CUDA=1, or install a wheel built for this GPU.",
                f"{e.path}: .nv_fatbin has {labels}",
                rule="env-arch-ext",
                weight=87,
            )
        )
    return out


def _numpy_findings(
    elfs: Sequence[elf.ElfInfo], dists: Mapping[str, Any], sites: Sequence[str]
) -> list[Finding]:
    out: list[Finding] = []
    np_d = dists.get("numpy")
    npv = ver(np_d["version"]) if np_d else None
    if npv is not None and npv.major >= 2:
        for e in elfs:
            if e.numpy_api == "1.x" and "/numpy/" not in e.path:
                f = _owner(e.path, sites)
                out.append(
                    Finding(
                        "numpy-abi",
                        "error",
                        f"{f} was compiled against NumPy 1.x but NumPy {npv} is installed: importing "
                        "it raises "
                        "'A module that was compiled using NumPy 1.x cannot be run in NumPy 2'.",
                        "Install 'numpy<2' (e.g. numpy==1.26.4) or a release of that package built "
                        "for NumPy 2.",
                        f"{e.path}: imports numpy.core C-API (NumPy 1.x headers)",
                        rule="env-numpy-abi",
                        weight=82,
                    )
                )
    for d in dists.values():
        for req_text in d.get("requires") or []:
            try:
                req = Requirement(req_text)
            except InvalidRequirement:
                continue
            if req.name.lower() != "numpy" or req.marker is not None or npv is None or not req.specifier:
                continue
            if not req.specifier.contains(npv, prereleases=True):
                out.append(
                    Finding(
                        "numpy-version-conflict",
                        "error",
                        f"{d['name']} {d['version']} requires numpy{req.specifier} but numpy {npv} is "
                        "installed.",
                        f"Pin numpy to a version satisfying every requirer (numpy{req.specifier}); if "
                        "another "
                        "package needs the other side, choose releases of it that agree ('envbuild resolve' "
                        "explains the choice).",
                        f"{d['dir']}: Requires-Dist: {req_text}",
                        rule="env-numpy-req",
                        weight=70,
                    )
                )
    return out


def _load_findings(errors: Mapping[str, str], sites: Sequence[str], ctx: Mapping[str, Any]) -> list[Finding]:
    out: list[Finding] = []
    for path, err in sorted(errors.items()):
        f = _owner(path, sites)
        for fnd in read_log(err, None, None):
            c = dict(ctx)
            m = re.search(r"undefined symbol: (\S+?)(?:, version (\S+))?$", err)
            if fnd.family == "undefined-symbol" and m:
                sym = m.group(1)
                dem = elf.demangle(sym)
                torchy = re.match(r"_ZN\w*(?:2at|3c10|5torch|6caffe2)", sym) is not None
                cause = (
                    f"{f} needs the symbol {sym}" + (f" ({dem})" if dem else "") + " that no loaded library "
                    "defines"
                    + (
                        "; it was compiled against another torch than the installed "
                        f"{c.get('env_torch', 'one')}."
                        if torchy
                        else "."
                    )
                )
                fix = (
                    f"Rebuild the package that owns {f} against the installed torch "
                    f"{c.get('env_torch', '')} (pip install --no-build-isolation --no-deps "
                    "--force-reinstall, "
                    "FORCE_CUDA=1), or install its wheel built for this torch."
                    if torchy
                    else fnd.fix
                )
                out.append(
                    Finding(
                        "undefined-symbol",
                        "error",
                        cause,
                        fix,
                        f"{path}: {err}",
                        source=fnd.source,
                        rule="env-dlopen",
                        weight=86,
                    )
                )
            else:
                out.append(
                    Finding(
                        fnd.family,
                        fnd.severity,
                        f"{f}: {fnd.cause}",
                        fnd.fix,
                        f"{path}: {err}",
                        source=fnd.source,
                        rule="env-dlopen",
                        weight=fnd.weight,
                    )
                )
            break
        else:
            out.append(
                Finding(
                    "cuda-lib-missing" if "cannot open" in err else "undefined-symbol",
                    "error",
                    f"{f} cannot be loaded: {err}",
                    "Reinstall the package that owns it.",
                    f"{path}: {err}",
                    rule="env-dlopen",
                    weight=60,
                )
            )
    return out


def _cupy_findings(
    dists: Mapping[str, Any], torch_cuda: str | None, profile: Profile | None
) -> list[Finding]:
    """cupy-cudaXYZ names its CUDA: it must match torch's runtime and run on the driver."""
    out: list[Finding] = []
    for name, d in sorted(dists.items()):
        m = re.fullmatch(r"cupy-cuda(\d+?)(\d|x)", name)
        if not m:
            continue
        cupy_cuda = f"{m.group(1)}.{m.group(2)}"
        want = data_facts().cupy_package(torch_cuda) if torch_cuda else None
        if torch_cuda and m.group(2) != "x" and cupy_cuda != torch_cuda:
            out.append(
                Finding(
                    "cuda-toolkit-mismatch",
                    "error",
                    f"{name} {d['version']} is built for CUDA {cupy_cuda} but torch uses CUDA {torch_cuda}; "
                    "one process then loads two CUDA runtimes "
                    "('undefined symbol: cuda..., version libcudart.so...').",
                    f"Install {want or 'the cupy-cudaXXX package for CUDA ' + torch_cuda} instead of {name}.",
                    f"{d['dir']}",
                    rule="env-cupy-cuda",
                    weight=83,
                )
            )
        dc = ver(profile.driver_cuda_version) if profile is not None else None
        cupy_for_driver = data_facts().cupy_package(str(dc)) or f"the cupy-cudaXXX package for CUDA {dc}"
        if dc is not None and m.group(2) != "x" and (ver(cupy_cuda) or dc) > dc:
            out.append(
                Finding(
                    "driver-too-old",
                    "error",
                    f"{name} needs CUDA {cupy_cuda} but the driver "
                    f"{known(profile.driver_version if profile else None, '')} supports only CUDA {dc}.",
                    f"Install {cupy_for_driver} (with a torch built for the same CUDA).",
                    f"{d['dir']}",
                    rule="env-cupy-driver",
                    weight=80,
                )
            )
    return out


def _conda_findings(info: Mapping[str, Any], dists: Mapping[str, Any]) -> list[Finding]:
    """pip and conda managing one env: duplicate dists, pip over conda's files, what blocks conda-pack."""
    conda_names = {c["name"] for c in info.get("conda") or []}
    out = _duplicate_dists(info)
    for d in info.get("dists") or []:
        out += _dist_conda_findings(d, conda_names, bool(info.get("conda")))
    return out + _conda_missing_files(info)


def _duplicate_dists(info: Mapping[str, Any]) -> list[Finding]:
    out: list[Finding] = []
    by_name: dict[str, list[Mapping[str, Any]]] = {}
    for d in info.get("dists") or []:
        by_name.setdefault(d["name"], []).append(d)
    for name, ds in sorted(by_name.items()):
        if len(ds) > 1:
            vers = ", ".join(f"{d['version']} ({d.get('installer') or 'unknown installer'})" for d in ds)
            out.append(
                Finding(
                    "pip-over-conda",
                    "error",
                    f"{name} is installed {len(ds)} times ({vers}); Python imports one, pip and conda each "
                    "believe theirs.",
                    f"Remove the extra copy: 'conda remove --force {name}' for the conda one, or "
                    "delete the stale "
                    f"dist-info, then reinstall one {name} with a single tool.",
                    "; ".join(d["dir"] for d in ds),
                    rule="env-dup-dist",
                    weight=75,
                )
            )
    return out


def _dist_conda_findings(d: Mapping[str, Any], conda_names: set[str], conda_env: bool) -> list[Finding]:
    out: list[Finding] = []
    if d.get("overwrites_conda"):
        owners = ", ".join(d["overwrites_conda"])
        out.append(
            Finding(
                "pip-over-conda",
                "warning",
                f"{d['name']} {d['version']} was installed by {d.get('installer') or 'pip'} over "
                "files that "
                f"conda's {owners} manages; conda no longer knows what is on disk.",
                f"Install {d['name']} with one tool: 'pip uninstall {d['name']}' then "
                f"'conda install --force-reinstall {owners}', or remove the conda package first.",
                d["dir"],
                rule="env-overwrite",
                weight=65,
            )
        )
    elif not d.get("has_record") and not d.get("conda_owned") and d["name"] in conda_names:
        out.append(
            Finding(
                "pip-over-conda",
                "warning",
                f"{d['name']} {d['version']} has no RECORD file, so pip cannot uninstall or upgrade it "
                "('Cannot uninstall ..., RECORD file not found').",
                f"Change it with conda ('conda install {d['name']}=VERSION') or "
                f"'pip install --ignore-installed {d['name']}==VERSION'.",
                d["dir"],
                rule="env-no-record",
                weight=55,
            )
        )
    if d.get("editable") and conda_env:
        out.append(
            Finding(
                "conda-pack-blocked",
                "warning",
                f"{d['name']} is an editable install; conda-pack refuses envs with editable packages.",
                f"Install it normally before packing ('pip install --no-deps {d['name']}' from "
                "its source), "
                "or pack with --ignore-editable-packages and ship it separately.",
                d["dir"],
                rule="env-editable",
                weight=50,
            )
        )
    return out


def _conda_missing_files(info: Mapping[str, Any]) -> list[Finding]:
    out: list[Finding] = []
    for c in info.get("conda_missing_files") or []:
        out.append(
            Finding(
                "conda-pack-blocked",
                "warning",
                f"{c['count']} file(s) of conda's {c['name']} {c['version']} were deleted or "
                "overwritten (usually by "
                "pip); conda-pack stops with 'Files managed by conda were found to have been "
                "deleted/overwritten'.",
                "Reinstall it with conda ('conda install --force-reinstall "
                f"{c['name']}={c['version']}') or pack "
                "with --ignore-missing-files.",
                ", ".join(c["missing"]),
                rule="env-conda-missing",
                weight=50,
            )
        )
    return out


def _mmcv_findings(info: Mapping[str, Any], dists: Mapping[str, Any]) -> list[Finding]:
    mm = info.get("mmcv")
    if not mm or mm.get("has_ext"):
        return []
    users = [n for n in ("mmdet", "mmdet3d", "mmsegmentation") if n in dists]
    if not users and "mmcv-full" not in dists:
        return []
    return [
        Finding(
            "mmcv-ops-missing",
            "error" if "mmdet3d" in dists or "mmcv-full" in dists else "warning",
            f"mmcv {known(mm.get('version'), '')} has no compiled ops (mmcv/_ext*.so); "
            f"{', '.join(users) or 'mmcv-full'} import them: 'No module named mmcv._ext'.",
            "Uninstall plain mmcv and install "
            + (f"mmcv-full=={mm['version']}" if mm.get("version") else "mmcv-full")
            + " built for this torch/CUDA "
            "(OpenMMLab find-links index) or build it with MMCV_WITH_OPS=1 FORCE_CUDA=1.",
            f"mmcv/version.py: {known(mm.get('version'), 'no __version__')}; no mmcv/_ext*.so",
            rule="env-mmcv-ext",
            weight=78,
        )
    ]



def _build_findings(
    torch_cuda: str | None, ctx: Mapping[str, Any], profile: Profile | None, info: Mapping[str, Any]
) -> list[Finding]:
    """Would building CUDA ops (mmcv-full, mmdet3d) work with this toolchain?"""
    out: list[Finding] = []
    if not torch_cuda:
        return out
    facts = data_facts()
    if profile is not None and profile.cuda_toolkits:
        nvcc: str | None = mm(profile.cuda_toolkits[0].version)
        where: str | None = profile.cuda_toolkits[0].path or "the target"
        gcc = profile.gcc_version
    elif profile is None:
        tc = build_toolchain()
        nvcc, where, gcc = tc.get("home_nvcc_version"), tc.get("home_nvcc"), tc.get("gcc")
        if (
            tc.get("path_nvcc")
            and tc.get("home_nvcc")
            and tc.get("path_nvcc_version") != tc.get("home_nvcc_version")
        ):
            out.append(
                Finding(
                    "cuda-toolkit-mismatch",
                    "warning",
                    f"CUDA_HOME points at nvcc {known(tc.get('home_nvcc_version'))} but PATH finds "
                    f"{tc['path_nvcc']} "
                    f"(nvcc {known(tc.get('path_nvcc_version'))}); builds mix the two.",
                    f"Use one toolkit: export CUDA_HOME=/usr/local/cuda-{torch_cuda} "
                    "PATH=$CUDA_HOME/bin:$PATH.",
                    f"CUDA_HOME={known(tc.get('cuda_home'), '(unset)')}; which nvcc -> {tc['path_nvcc']}",
                    rule="env-stale-nvcc",
                    weight=45,
                )
            )
    else:
        return out
    # when the driver cannot run torch's CUDA, ops will be built for the torch that replaces it
    want = ctx.get("torch_for_driver_cuda") or torch_cuda
    uses = (
        f"torch is built with CUDA {want}"
        if want == torch_cuda
        else f"torch will use CUDA {want} once replaced as the driver-too-old finding says"
    )
    if nvcc and mm(nvcc) != want:
        out.append(
            Finding(
                "cuda-toolkit-mismatch",
                "warning",
                f"building CUDA ops here would use nvcc {nvcc} ({where}) but {uses}: "
                f"torch.utils.cpp_extension refuses ('The detected CUDA version ({nvcc}) "
                f"mismatches ...') or the ops link libcudart.so.{nvcc}, which torch does not ship.",
                f"Build ops with CUDA_HOME at a CUDA {want} toolkit (/usr/local/cuda-{want}: the NVIDIA "
                "runfile installs one with '--toolkit --silent' and no driver change); 'envbuild rebuild "
                "--target PROFILE' writes the steps.",
                f"nvcc {nvcc} at {where}; torch cuda={torch_cuda}",
                rule="env-nvcc-torch",
                weight=40,
            )
        )
    torch_cuda = want
    gmax = facts.gcc_max(torch_cuda)
    gv = ver(gcc)
    if gmax is not None and gv is not None and gv.major > gmax:
        out.append(
            Finding(
                "gcc-unsupported",
                "warning",
                f"gcc {gcc} is newer than CUDA {torch_cuda}'s nvcc accepts (gcc <= {gmax}): building "
                "ops fails with "
                "'unsupported GNU version'.",
                f"Build with gcc-{gmax} (CC=gcc-{gmax} CXX=g++-{gmax}, or conda 'gxx_linux-64={gmax}').",
                f"gcc {gcc}; CUDA {torch_cuda} accepts gcc <= {gmax}",
                rule="env-gcc",
                weight=40,
            )
        )
    return out


