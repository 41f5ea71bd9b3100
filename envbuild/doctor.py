"""Diagnose a CUDA deep-learning environment: read error logs, check an installed env.

Two entry points share one vocabulary of *families* (stable ids such as
``driver-too-old`` or ``undefined-symbol``):

- :func:`read_log` matches the regexes of ``envbuild/data/doctor_rules.json``
  against an error log and fills each rule's cause/fix templates with what the
  log, the env and the target profile say (versions, the needed driver, gcc max);
- :func:`check_env` runs ``envbuild/_envcheck.py`` with the env's OWN
  interpreter (nothing of the env is imported here), then reads every compiled
  extension's ELF headers (NEEDED, RPATH, ``.nv_fatbin`` archs) and dlopens them
  in a separate process to catch undefined symbols.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import string
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from packaging.requirements import InvalidRequirement, Requirement
from packaging.version import InvalidVersion, Version

from envbuild import elf
from envbuild.errors import DataError, InputError, ToolError
from envbuild.models import Profile

if TYPE_CHECKING:
    from envbuild.matrix import Matrix, Verdict

__all__ = [
    "FAMILIES",
    "LIB_FAMILY",
    "SEVERITIES",
    "VERDICTS",
    "Finding",
    "Report",
    "check_env",
    "diagnose",
    "dist_extensions",
    "env_info",
    "known",
    "load_rules",
    "read_log",
    "torch_cuda_links",
]

SEVERITIES = ("error", "warning", "info")
FAMILIES = (
    "driver-too-old",
    "no-nvidia-driver",
    "gpu-arch-unsupported",
    "nvcc-arch-unsupported",
    "cuda-toolkit-mismatch",
    "gcc-unsupported",
    "cuda-lib-missing",
    "lib-missing",
    "system-lib-too-old",
    "undefined-symbol",
    "mmcv-ops-missing",
    "mmcv-version-incompatible",
    "numpy-version-conflict",
    "numpy-abi",
    "setuptools-too-new",
    "yapf-too-new",
    "pip-over-conda",
    "conda-pack-blocked",
    "no-prebuilt-wheel",
    "distributed-not-initialized",
    "numerical-instability",
)
# Verdicts are findings too (info), so JSON readers see one list; they are not failure families.
VERDICTS = (
    "healthy",  # an env whose every check ran and found nothing (and a log, if given, with a known cause)
    "incomplete",  # nothing found, but some check did not run (named in the finding)
    "no-known-cause",  # a log none of the rules recognise: envbuild does not know why it failed
)
# library_kind of a missing library -> its family (the NVIDIA/torch ones keep the stable id)
LIB_FAMILY = {
    "nvidia-cuda": "cuda-lib-missing",
    "nvidia-driver": "cuda-lib-missing",
    "torch": "cuda-lib-missing",
    "package": "lib-missing",
    "system": "lib-missing",
    "unknown": "lib-missing",
}
_ENVCHECK = Path(__file__).parent / "_envcheck.py"


def known(value: Any, alt: str = "unknown") -> str:
    """``value`` as text, or ``alt`` when the fact is missing: no 'None' on a user-facing line."""
    return alt if value is None or value == "" else str(value)


# Tests set this: a Finding whose text holds the word None (a missing fact formatted raw) then raises
# instead of being repaired, so every message template is checked with missing facts.
STRICT_TEXT = False
_NONE_WORD = re.compile(r"\bNone\b")


@dataclass(frozen=True)
class Finding:
    """One diagnosis: which family, how bad, the cause in a sentence, the fix, what shows it."""

    family: str
    severity: str
    cause: str
    fix: str
    evidence: str
    source: str | None = None  # an explanation to read (FAQ, upstream issue)
    rule: str | None = None
    weight: int = 50
    # for a missing library: nvidia-cuda|nvidia-driver|torch|package|system|unknown
    library_kind: str | None = None

    def __post_init__(self) -> None:
        for name in ("cause", "fix", "evidence"):
            text = getattr(self, name)
            if _NONE_WORD.search(text):
                if STRICT_TEXT:
                    raise AssertionError(f"'None' in the {name} of a {self.family} finding: {text}")
                object.__setattr__(self, name, _NONE_WORD.sub("unknown", text))

    def to_dict(self) -> dict[str, Any]:
        return {
            "family": self.family,
            "severity": self.severity,
            "cause": self.cause,
            "fix": self.fix,
            "evidence": self.evidence,
            "source": self.source,
            "rule": self.rule,
            "library_kind": self.library_kind,
        }


@dataclass
class Report:
    """What ``envbuild doctor`` prints: findings most likely first, and what was looked at."""

    findings: list[Finding]
    prefix: str | None = None
    log: str | None = None
    checked: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not any(f.severity == "error" for f in self.findings)

    @property
    def verdict(self) -> str:
        """error | warning | one of VERDICTS: what the exit code says."""
        sev = {f.severity for f in self.findings}
        if "error" in sev:
            return "error"
        if "warning" in sev:
            return "warning"
        fams = {f.family for f in self.findings}
        for v in ("no-known-cause", "incomplete"):
            if v in fams:
                return v
        return "healthy"

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "verdict": self.verdict,
            "prefix": self.prefix,
            "log": self.log,
            "checked": self.checked,
            "seconds": round(self.seconds, 3),
            "findings": [f.to_dict() for f in self.findings],
        }


# --- compatibility facts (read through envbuild.matrix) ----------------------------------------


def _ver(text: str | None) -> Version | None:
    if not text:
        return None
    try:
        return Version(str(text).split("+")[0])
    except InvalidVersion:
        return None


def _mm(text: str | None) -> str | None:
    """'11.3.1' -> '11.3'."""
    v = _ver(text)
    return None if v is None else f"{v.major}.{v.minor}"


class _Facts:
    """The few matrix queries doctor needs, None when the data does not say (or cannot be read)."""

    def __init__(self, matrix: Matrix | None = None, *, lazy: bool = False) -> None:
        self._m = matrix
        self._lazy = lazy  # load the matrix on the first query (a healthy env check never asks)

    @property
    def m(self) -> Matrix | None:
        if self._lazy:
            self._lazy = False
            from envbuild.matrix import load_matrix

            try:
                self._m = load_matrix()
            except DataError:  # broken data must not stop a diagnosis; fixes just get less concrete
                self._m = None
        return self._m

    def gcc_max(self, cuda: str | None) -> int | None:
        c = _mm(cuda)
        return None if self.m is None or c is None else self.m.gcc_max(c)

    def min_driver(self, cuda: str | None) -> str | None:
        """Lowest Linux driver that runs CUDA ``cuda`` natively."""
        c = _mm(cuda)
        return None if self.m is None or c is None else self.m.min_driver(c)

    def driver_support(self, driver: str | None, cuda: str | None) -> str | None:
        """'native', 'compat' (minor-version compatibility) or None (too old, or unknown)."""
        c = _mm(cuda)
        if self.m is None or c is None or not driver or _ver(driver) is None:
            return None
        return self.m.driver_support(driver, c)

    def torch_driver_verdict(self, torch: str | None, cuda: str | None, profile: Profile,
                             cc: str | None) -> Verdict | None:
        """``Matrix.torch_driver_verdict`` for a torch build on the profile's driver (None without data)."""
        c = _mm(cuda)
        if self.m is None or c is None:
            return None
        gpu = profile.gpus[0].name if profile.gpus else None
        return self.m.torch_driver_verdict(torch if torch and _ver(torch) else c, c,
                                           driver=profile.driver_version,
                                           driver_cuda=profile.driver_cuda_version, cc=cc, gpu=gpu)

    def torch_variants(self, torch: str | None) -> list[str]:
        """cuXYZ builds of a torch release (confirmed and believed), oldest CUDA first."""
        if self.m is None or not torch or _ver(torch) is None:
            return []
        return list(reversed(self.m.variants(torch)))

    def torch_archs(self, torch: str | None, cuda: str | None) -> list[elf.GpuCode]:
        c = _mm(cuda)
        if self.m is None or not torch or _ver(torch) is None or c is None:
            return []
        row = self.m.arch_row(torch, c)
        return _parse_arch_list(";".join(row.arch_list)) if row else []

    def gpu_cc(self, name: str) -> str | None:
        g = None if self.m is None else self.m.gpu(name)
        return None if g is None else str(g.compute_capability)

    def cupy_package(self, cuda: str | None) -> str | None:
        c = _mm(cuda)
        hits = [] if self.m is None or c is None else self.m.cupy_for_cuda(c)
        return str(hits[0].package) if hits else None


def _parse_arch_list(text: str) -> list[elf.GpuCode]:
    out: list[elf.GpuCode] = []
    for part in re.split(r"[;\s]+", text):
        m = re.match(r"(\d+)\.(\d+)(\+PTX)?$", part)
        if m:
            cc = int(m.group(1)) * 10 + int(m.group(2))
            out.append(elf.GpuCode(cc, False))
            if m.group(3):
                out.append(elf.GpuCode(cc, True))
    return out


@lru_cache(maxsize=1)
def _facts() -> _Facts:
    return _Facts(lazy=True)


# --- what a library is, and what packages load lazily (envbuild/data/doctor_libs.json) ---------------


@dataclass(frozen=True)
class LibKind:
    """What a shared library is, from its soname."""

    kind: str  # a key of LIB_FAMILY
    what: str  # "NVIDIA cuTENSOR", "a system library"
    provider: str  # who installs it
    source: str | None = None

    @property
    def family(self) -> str:
        return LIB_FAMILY.get(self.kind, "lib-missing")


@dataclass(frozen=True)
class _Lazy:
    package: str
    glob: str
    feature: str
    source: str


@lru_cache(maxsize=1)
def _libs_data() -> tuple[tuple[tuple[re.Pattern[str], LibKind], ...], tuple[_Lazy, ...]]:
    from envbuild import matrix

    try:
        data = matrix.load_doctor_libs()
    except DataError:  # broken data must not stop a diagnosis: libraries are then 'unknown'
        return (), ()
    kinds = []
    for r in data["library_kinds"]:
        try:
            pat = re.compile(str(r["soname"]))
        except (KeyError, re.error):
            continue
        if r.get("kind") not in LIB_FAMILY:
            continue
        kinds.append(
            (
                pat,
                LibKind(
                    str(r["kind"]),
                    str(r.get("what") or "a library"),
                    str(r.get("provider") or "its package"),
                    _first_source(r.get("source")),
                ),
            )
        )
    lazy = tuple(
        _Lazy(
            str(r.get("package")),
            str(r.get("glob")),
            str(r.get("feature")),
            str(_first_source(r.get("source"))),
        )
        for r in data["lazy_modules"]
        if r.get("glob") and r.get("feature")
    )
    return tuple(kinds), lazy


def _first_source(src: Any) -> str | None:
    return str(src[0]) if isinstance(src, list) and src else (str(src) if src else None)


def library_kind(soname: str) -> LibKind:
    """What ``soname`` is (NVIDIA CUDA library, torch's, another package's, the system's)."""
    base = os.path.basename(soname)
    for pat, kind in _libs_data()[0]:
        if pat.search(base):
            return kind
    return LibKind("unknown", "a library", "the package that ships it")


def _lazy_module(relpath: str) -> _Lazy | None:
    """The curated entry when ``relpath`` (under site-packages) is a module its package loads lazily."""
    import fnmatch

    for lz in _libs_data()[1]:
        if fnmatch.fnmatch(relpath, lz.glob):
            return lz
    return None


# --- rules ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Rule:
    id: str
    family: str
    severity: str
    weight: int
    pattern: re.Pattern[str]
    anchors: tuple[str, ...]  # every match contains one: the regex runs only around them
    cause: tuple[str, ...]
    fix: tuple[str, ...]
    source: str | None


@lru_cache(maxsize=1)
def load_rules() -> tuple[_Rule, ...]:
    """The log rules of ``envbuild/data/doctor_rules.json``, regexes compiled.

    Raises:
        DataError: the file is missing or a rule is malformed.
    """
    from envbuild import matrix

    data = matrix.load_doctor_rules()
    rules_file = str(matrix.DATA_DIR / "doctor_rules.json")
    families = data.get("families") or {}
    rules: list[_Rule] = []
    for i, r in enumerate(data.get("rules") or []):
        where = f"rules[{i}]"
        fam = r.get("family")
        if fam not in FAMILIES or fam not in families:
            raise DataError(f"unknown family {fam!r}.", path=rules_file, field=where)
        if r.get("severity", "error") not in SEVERITIES:
            raise DataError("severity must be error|warning|info.", path=rules_file, field=where)
        try:
            pat = re.compile(r["pattern"], re.MULTILINE | (re.IGNORECASE if "i" in r.get("flags", "") else 0))
        except (KeyError, re.error) as exc:
            raise DataError(f"bad pattern ({exc}).", path=rules_file, field=where) from None

        def seq(v: Any) -> tuple[str, ...]:
            return tuple(v) if isinstance(v, list) else (str(v),)

        anchors = r.get("anchors")
        if not isinstance(anchors, list) or not anchors or not all(isinstance(a, str) and a for a in anchors):
            raise DataError(
                "anchors must be a non-empty list of the literal strings every match contains.",
                path=rules_file,
                field=where + ".anchors",
            )
        if "i" in r.get("flags", ""):
            anchors = [a.lower() for a in anchors]

        rules.append(
            _Rule(
                id=str(r.get("id") or f"{fam}-{i}"),
                family=fam,
                severity=r.get("severity", "error"),
                weight=int(r.get("weight", 50)),
                pattern=pat,
                anchors=tuple(anchors),
                cause=seq(r.get("cause", "")),
                fix=seq(r.get("fix", "")),
                source=r.get("source") or families[fam].get("source"),
            )
        )
    return tuple(rules)


_FMT = string.Formatter()


def _fill(templates: Sequence[str], ctx: Mapping[str, Any]) -> str:
    """The first template whose every {field} is known in ``ctx``."""
    for t in templates:
        names = [f for _, f, _, _ in _FMT.parse(t) if f]
        if all(ctx.get(n) not in (None, "") for n in names):
            return t.format_map(ctx)
    return templates[-1] if templates else ""


# --- context: what the log, the env and the profile say ---------------------------------------


def _cuda_from_int(v: str) -> str:
    n = int(v)
    return f"{n // 1000}.{(n % 1000) // 10}"


def _tag(cuda: str | None) -> str | None:
    c = _mm(cuda)
    return None if c is None else "cu" + c.replace(".", "")


def _profile_ctx(profile: Profile | None, facts: _Facts) -> dict[str, Any]:
    ctx: dict[str, Any] = {}
    if profile is None:
        return ctx
    ctx["target_driver"] = profile.driver_version
    ctx["target_driver_cuda"] = _mm(profile.driver_cuda_version)
    if profile.gpus:
        g = profile.gpus[0]
        cc = g.compute_capability or facts.gpu_cc(g.name)
        ctx["target_gpu"] = g.name
        if cc:
            ctx["target_cc"] = cc
            ctx["target_sm"] = "sm_" + cc.replace(".", "")
    if profile.cuda_toolkits:
        tk = profile.cuda_toolkits[0]
        ctx["target_toolkit"] = _mm(tk.version)
        ctx["target_toolkit_path"] = tk.path
        gm = facts.gcc_max(tk.version)
        ctx["target_toolkit_gcc_max"] = gm
    if profile.gcc_version:
        ctx["target_gcc"] = profile.gcc_version
    return ctx


def _env_ctx(env: Mapping[str, Any] | None) -> dict[str, Any]:
    ctx: dict[str, Any] = {}
    if not env:
        return ctx
    torch = env.get("torch") or {}
    if torch.get("version"):
        ctx["env_torch"] = torch["version"]
        ctx["env_torch_base"] = str(_ver(torch["version"]))
    if torch.get("cuda"):
        ctx["env_torch_cuda"] = _mm(torch["cuda"])
    for d in env.get("dists") or []:
        if d["name"] in ("numpy", "mmcv", "mmcv-full", "mmdet", "mmdet3d", "yapf", "setuptools"):
            ctx["env_" + d["name"].replace("-", "_")] = d["version"]
        if d["name"].startswith("cupy"):
            ctx["env_cupy"] = f"{d['name']}=={d['version']}"
    return ctx


def _derive(ctx: dict[str, Any], facts: _Facts) -> None:
    """Fill the derived template fields from the raw ones (log groups win over env/profile)."""
    if ctx.get("driver_cuda_int"):
        ctx.setdefault("driver_cuda", _cuda_from_int(ctx["driver_cuda_int"]))
    ctx.setdefault("driver_cuda", ctx.get("target_driver_cuda"))
    ctx.setdefault("torch_cuda", ctx.get("env_torch_cuda"))
    ctx.setdefault("torch_base", ctx.get("env_torch_base"))
    ctx.setdefault("nvcc_cuda", ctx.get("target_toolkit"))
    if ctx.get("nvcc_cuda"):
        ctx.setdefault("gcc_max", facts.gcc_max(ctx["nvcc_cuda"]))
    if ctx.get("torch_cuda"):
        ctx["torch_tag"] = _tag(ctx["torch_cuda"])
        ctx["min_driver"] = facts.min_driver(ctx["torch_cuda"])
        ctx["torch_gcc_max"] = facts.gcc_max(ctx["torch_cuda"])
        ctx["cupy_for_torch"] = facts.cupy_package(ctx["torch_cuda"])
    dc, tc = _ver(ctx.get("driver_cuda")), _ver(ctx.get("torch_cuda"))
    if dc is not None and ctx.get("torch_base") and (tc is None or tc > dc):
        fitting = [t for t in facts.torch_variants(ctx["torch_base"]) if _cu_version(t) <= dc]
        if fitting:
            ctx["torch_for_driver"] = f"{ctx['torch_base']}+{fitting[-1]}"
            ctx["torch_for_driver_cuda"] = str(_cu_version(fitting[-1]))
            ctx["fix_gcc_max"] = facts.gcc_max(ctx["torch_for_driver_cuda"])
    if dc is not None:
        ctx["driver_tag"] = _tag(str(dc))
        ctx["driver_gcc_max"] = facts.gcc_max(str(dc))
        if tc is not None and tc > dc:
            ctx["old_driver_cuda"], ctx["old_driver_tag"] = f"{dc.major}.{dc.minor}", ctx["driver_tag"]
            ctx.setdefault("old_driver_gcc_max", facts.gcc_max(ctx["old_driver_cuda"]))
    _derive_log(ctx, facts)


def _derive_log(ctx: dict[str, Any], facts: _Facts) -> None:
    """Derived fields of log captures: arch numbers, demangled symbols, the CUDA of a library."""
    if ctx.get("arch"):
        m = re.search(r"(\d)(\d+)", ctx["arch"])
        if m:
            ctx["arch_cc"] = f"{m.group(1)}.{m.group(2)}"
            ctx["arch_fallback"] = f"{m.group(1)}.0"
    if ctx.get("symbol"):
        ctx["demangled"] = elf.demangle(ctx["symbol"])
    if ctx.get("block"):
        lines = [ln.strip() for ln in str(ctx["block"]).splitlines() if "depends on" in ln]
        ctx["conflict"] = "; ".join(lines)
    if ctx.get("lib"):
        m = re.match(
            r"lib(cudart|cublas|cublasLt|cufft|curand|cusparse|cusolver|nvrtc|cudnn)\.so\.(\d+(?:\.\d+)?)",
            ctx["lib"],
        )
        if m:
            ctx["lib_cuda"] = m.group(2) if "." in m.group(2) or m.group(1) == "cudnn" else None
            ctx["lib_kind"] = m.group(1)
        lk = library_kind(str(ctx["lib"]))
        ctx["lib_what"], ctx["lib_provider"] = lk.what, lk.provider
    if ctx.get("target_cc"):
        ctx["arch_list"] = ctx["target_cc"]
    if ctx.get("gcc_max_log"):
        # only name the profile's nvcc / gcc when they are the ones the log's limit belongs to
        if ctx.get("nvcc_cuda") and facts.gcc_max(ctx["nvcc_cuda"]) == int(ctx["gcc_max_log"]):
            ctx["nvcc_for_gcc"] = ctx["nvcc_cuda"]
        gv = _ver(ctx.get("target_gcc"))
        if gv is not None and gv.major > int(ctx["gcc_max_log"]):
            ctx["gcc_too_new"] = ctx["target_gcc"]


def _cu_version(tag: str) -> Version:
    digits = tag[2:]
    return Version(f"{digits[:-1]}.{digits[-1]}") if digits.isdigit() and len(digits) >= 2 else Version("0")


def _snippet(text: str, m: re.Match[str]) -> str:
    # bounded searches: the evidence of a match in a 40 KB line is the window around it
    start = _line_start(text, m.start())
    end = text.find("\n", m.end(), m.end() + _BEFORE)
    end = end if end != -1 else min(len(text), m.end() + _BEFORE)
    if end - start > 300:  # a long line: keep the window around the match
        a, b = max(start, m.start() - 60), min(end, max(m.end(), m.start() + 200) + 40)
        return ("..." if a > start else "") + text[a:b].strip() + ("..." if b < end else "")
    return text[start:end].strip()


# A regex runs only on windows around its rule's anchors: from the anchor's line start (at most
# _BEFORE characters back) to the end of the line _AFTER characters on (multi-line rules such as pip's
# "The conflict is caused by:" block fit in it). Finding anchors is str.find (C speed), so a 20 MB log
# costs a few scans of it, and a 40 KB line costs no more than its windows.
_BEFORE, _AFTER = 4096, 8192


def _line_start(text: str, pos: int) -> int:
    """Where the line holding ``pos`` starts, looking back at most _BEFORE characters."""
    floor = max(0, pos - _BEFORE)
    nl = text.rfind("\n", floor, pos)
    return floor if nl == -1 and floor > 0 else nl + 1


def _windows(text: str, anchors: Sequence[str], lowered: str | None) -> list[tuple[int, int]]:
    hay = text if lowered is None else lowered
    spans: list[tuple[int, int]] = []
    n = len(text)
    for a in anchors:
        pos = hay.find(a)
        while pos != -1:
            lo = _line_start(text, pos)
            end = min(n, pos + len(a) + _AFTER)
            nl = text.find("\n", end)
            hi = n if nl == -1 else nl
            spans.append((lo, hi))
            pos = hay.find(a, max(hi - len(a) + 1, pos + 1))
    spans.sort()
    merged: list[tuple[int, int]] = []
    for lo, hi in spans:
        if merged and lo <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], hi))
        else:
            merged.append((lo, hi))
    return merged


def _matches(
    rule: _Rule, text: str, lowered: str | None, *, anchored: bool = True
) -> Iterable[re.Match[str]]:
    """Every match of ``rule`` in ``text``; ``anchored=False`` scans it all (what tests compare with)."""
    if not anchored:
        yield from rule.pattern.finditer(text)
        return
    for lo, hi in _windows(text, rule.anchors, lowered):
        yield from rule.pattern.finditer(text, lo, hi)


def _line_starts(text: str, m: re.Match[str]) -> list[int]:
    """The offsets of the lines a match touches (bounded: a match is at most a window long)."""
    lo = _line_start(text, m.start())
    out = [lo]
    nl = text.find("\n", lo, m.end())
    while nl != -1:
        out.append(nl + 1)
        nl = text.find("\n", nl + 1, m.end())
    return out


def read_log(
    text: str,
    profile: Profile | None = None,
    env: Mapping[str, Any] | None = None,
    *,
    anchored: bool = True,
) -> list[Finding]:
    """Name the failure families an error log shows, most likely first.

    ``profile`` (the target machine) and ``env`` (from :func:`env_info`) make the
    fixes concrete: versions of torch, the driver needed, the gcc nvcc accepts.
    Linear in the log's size (see ``_windows``); ``anchored=False`` runs every regex on
    the whole text (slower; tests use it to check the anchors).
    """
    facts = _facts()
    base: dict[str, Any] = {**_profile_ctx(profile, facts), **_env_ctx(env)}
    found: dict[tuple[str, str], tuple[Finding, int]] = {}
    claimed: dict[str, set[int]] = {}
    seen: set[tuple[str, tuple[tuple[str, str], ...]]] = set()
    rules = load_rules()
    lowered = text.lower() if any(r.pattern.flags & re.IGNORECASE for r in rules) else None
    for rule in rules:
        low = lowered if rule.pattern.flags & re.IGNORECASE else None
        # the two library families share one claim: a line names one missing library
        lines = claimed.setdefault("lib" if rule.family in LIB_FAMILY.values() else rule.family, set())
        for m in _matches(rule, text, low, anchored=anchored):
            # rules are listed specific-first: a generic rule of the same family that matches the same
            # line adds nothing
            touched = _line_starts(text, m)
            if any(ln in lines for ln in touched):
                continue
            lines.update(touched)
            groups = {k: v for k, v in m.groupdict().items() if v}
            key_groups = (rule.id, tuple(sorted(groups.items())))
            if key_groups in seen:  # the same captures give the same finding: a repeated line costs nothing
                continue
            seen.add(key_groups)
            ctx = dict(base)
            # alternatives in one pattern name their groups x, x2 (a regex name must be unique)
            ctx.update({k.rstrip("2"): v for k, v in groups.items()})
            _derive(ctx, facts)
            family, lib_kind = rule.family, None
            lib = str(ctx.get("lib") or "")
            if rule.family in ("cuda-lib-missing", "lib-missing") and lib:
                if "/" in lib or ".cpython-" in lib:
                    # the module itself cannot be opened: per the mmcv FAQ the CUDA/gcc runtime it was
                    # built with differs from the env's (seed scenario C)
                    family = "cuda-lib-missing"
                else:
                    lk = library_kind(lib)
                    family, lib_kind = lk.family, lk.kind
            f = Finding(
                family=family,
                severity=rule.severity,
                cause=_fill(rule.cause, ctx),
                fix=_fill(rule.fix, ctx),
                evidence=_snippet(text, m),
                source=rule.source,
                rule=rule.id,
                weight=rule.weight,
                library_kind=lib_kind,
            )
            key = (family, f.cause)
            if key not in found:
                found[key] = (f, m.start())
    return _rank([(f, pos) for f, pos in found.values()])


def _rank(items: Iterable[tuple[Finding, int]]) -> list[Finding]:
    sev = {s: i for i, s in enumerate(SEVERITIES)}
    return [f for f, _ in sorted(items, key=lambda fp: (sev[fp[0].severity], -fp[0].weight, fp[1]))]


# --- env checks --------------------------------------------------------------------------------


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
    return diagnose(prefix=prefix, profile=profile, load=load).findings


def _env_findings(
    prefix: Path,
    info: Mapping[str, Any],
    profile: Profile | None,
    load: bool,
    checks: list[str] | None = None,
) -> list[Finding]:
    """Every env check; the name of each check that ran is appended to ``checks``."""
    checks = [] if checks is None else checks
    facts = _facts()
    out: list[Finding] = []
    sites: list[str] = list(info.get("site_packages") or [])
    torch = info.get("torch") or {}
    torch_cuda = _mm(torch.get("cuda"))
    dists = {d["name"]: d for d in info.get("dists") or []}
    pctx = _profile_ctx(profile, facts)
    ctx: dict[str, Any] = {**pctx, **_env_ctx(info)}
    _derive(ctx, facts)

    out += _torch_driver(torch, torch_cuda, ctx, profile)
    if profile is not None:
        checks.append("torch-driver")
    exts = list(info.get("extensions") or [])
    np_d = dists.get("numpy")
    np2 = np_d is not None and (_ver(np_d["version"]) or Version("0")) >= Version("2")
    # headers only, in parallel threads, cached by file identity (see elf.read_elf_cached)
    elfs = elf.read_elfs(exts, numpy_scan=np2)
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


def _torch_driver(
    torch: Mapping[str, Any], torch_cuda: str | None, ctx: Mapping[str, Any], profile: Profile | None
) -> list[Finding]:
    if not torch_cuda or profile is None or (profile.driver_version is None and not profile.gpus):
        return []
    # the one verdict resolve and pack use (envbuild.matrix): minor-version compatibility counted
    v = _facts().torch_driver_verdict(torch.get("version"), torch_cuda, profile, ctx.get("target_cc"))
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
                _fill(["Nothing to fix; a driver >= {min_driver} would run CUDA {torch_cuda} natively "
                       "(PTX JIT too).", "Nothing to fix."], ctx),
                evidence,
                rule="env-torch-driver",
                weight=20 if checked else 80,
            )
        ]
    fix = _fill(
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
    out: list[Finding] = []
    info = info or {}
    by_path = {e.path: e for e in elfs}
    source_built = {
        str(d.get("dir")): d
        for d in info.get("dists") or []
        if d.get("editable") or (d.get("direct_url") or {}).get("dir_info") is not None
    }
    for path, libs in sorted(missing.items()):
        rel = _owner(path, sites)
        e = by_path.get(path)
        torch_ops = e is not None and any(n.startswith(("libc10", "libtorch")) for n in e.needed)
        tops = _top_levels(path, info, sites)
        own = _user_ops(path, tops, info, source_built)
        lazy = _lazy_module(rel)
        for lib in libs:
            lk = library_kind(lib)
            c = dict(ctx)
            c["lib"] = lib
            c["file"] = rel
            _derive(c, _facts())
            c["lib_what"] = lk.what
            imported_by = ""
            loaded = False
            if evidence is not None:
                real = os.path.realpath(path)
                failed = [m for m in tops if (evidence.errors.get(m) or "").find(lib) != -1]
                if real in evidence.mapped or failed:
                    loaded = True
                    imported_by = ", ".join(failed or [m for m in tops if evidence.errors.get(m) is None])
            if loaded or torch_ops or own:
                severity, weight = "error", 85
                why = (
                    f"'import {imported_by}' loads it"
                    if loaded and imported_by
                    else "the package's import loads it"
                    if loaded
                    else "it holds compiled ops that link torch (your code loads them)"
                    if torch_ops
                    else "it is built from source in this env (your code loads it)"
                )
            elif lazy is not None or evidence is not None:
                severity, weight = "info", 20
                why = (
                    f"{lazy.package} loads it only for {lazy.feature}"
                    if lazy is not None
                    else f"'import {', '.join(tops) or rel}' does not load it: only code that uses it fails"
                )
            else:
                severity, weight = "warning", 40
                why = "whether the package's import loads it was not checked (--no-load)"
            cause = _fill(
                [
                    "{file} was compiled with CUDA {lib_cuda} (it needs {lib}) but no CUDA "
                    "{lib_cuda} runtime is on the loader path; torch here ships CUDA {torch_cuda}.",
                    "{file} was compiled with CUDA {lib_cuda} (it needs {lib}) but no CUDA {lib_cuda} "
                    "runtime is on the loader path.",
                    "{file} needs {lib} ({lib_what}), which the loader cannot find (RPATH/RUNPATH, the env's "
                    "lib dirs, LD_LIBRARY_PATH, the ld.so cache).",
                ],
                c,
            )
            cause = cause.rstrip(".") + f"; {why}."
            if severity == "info":
                fix = (
                    f"Nothing to do unless you need {lazy.feature if lazy else 'what ' + rel + ' provides'}; "
                    f"then install {lk.provider}."
                )
            else:
                fix = _fill(
                    _MISSING_LIB_FIXES,
                    {**c, "lib_provider": lk.provider}
                    if c.get("lib_cuda")
                    else {**c, "torch_cuda": None, "lib_provider": lk.provider},
                )
            out.append(
                Finding(
                    lk.family,
                    severity,
                    cause,
                    fix,
                    f"{path}: NEEDED {lib} not found",
                    source=lazy.source if lazy is not None and severity == "info" else lk.source,
                    rule="env-needed",
                    weight=weight,
                    library_kind=lk.kind,
                )
            )
    return out


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
    facts: _Facts,
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
    npv = _ver(np_d["version"]) if np_d else None
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
        want = _facts().cupy_package(torch_cuda) if torch_cuda else None
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
        dc = _ver(profile.driver_cuda_version) if profile is not None else None
        cupy_for_driver = _facts().cupy_package(str(dc)) or f"the cupy-cudaXXX package for CUDA {dc}"
        if dc is not None and m.group(2) != "x" and (_ver(cupy_cuda) or dc) > dc:
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
    out: list[Finding] = []
    conda_names = {c["name"] for c in info.get("conda") or []}
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
    for d in info.get("dists") or []:
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
        if d.get("editable") and info.get("conda"):
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


def _local_toolchain() -> dict[str, Any]:
    out: dict[str, Any] = {}
    cuda_home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")
    path_nvcc = shutil.which("nvcc")
    home_nvcc = os.path.join(cuda_home, "bin", "nvcc") if cuda_home else None
    if home_nvcc is None and path_nvcc is None and os.path.exists("/usr/local/cuda/bin/nvcc"):
        home_nvcc = "/usr/local/cuda/bin/nvcc"
    out["cuda_home"], out["path_nvcc"], out["home_nvcc"] = cuda_home, path_nvcc, home_nvcc
    for key, exe in (("home_nvcc_version", home_nvcc), ("path_nvcc_version", path_nvcc)):
        if exe and os.path.exists(exe):
            out[key] = _nvcc_version(exe)
    gcc = shutil.which("gcc")
    if gcc:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out["gcc"] = subprocess.run(
                [gcc, "-dumpfullversion", "-dumpversion"],
                capture_output=True,
                text=True,
                timeout=10,
                check=False,
            ).stdout.strip()
    return out


@lru_cache(maxsize=8)
def _nvcc_version(exe: str) -> str | None:
    try:
        text = subprocess.run(
            [exe, "--version"], capture_output=True, text=True, timeout=20, check=False
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    m = re.search(r"release (\d+\.\d+)", text)
    return m.group(1) if m else None


def _build_findings(
    torch_cuda: str | None, ctx: Mapping[str, Any], profile: Profile | None, info: Mapping[str, Any]
) -> list[Finding]:
    """Would building CUDA ops (mmcv-full, mmdet3d) work with this toolchain?"""
    out: list[Finding] = []
    if not torch_cuda:
        return out
    facts = _facts()
    if profile is not None and profile.cuda_toolkits:
        nvcc: str | None = _mm(profile.cuda_toolkits[0].version)
        where: str | None = profile.cuda_toolkits[0].path or "the target"
        gcc = profile.gcc_version
    elif profile is None:
        tc = _local_toolchain()
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
    if nvcc and _mm(nvcc) != want:
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
    gv = _ver(gcc)
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


def diagnose(
    prefix: Path | None = None,
    profile: Profile | None = None,
    log_text: str | None = None,
    *,
    log_name: str | None = None,
    load: bool = True,
) -> Report:
    """Run the env checks (when ``prefix``) and read the log (when ``log_text``)."""
    t0 = time.perf_counter()
    findings: list[Finding] = []
    info: dict[str, Any] | None = None
    checked: dict[str, Any] = {}
    if prefix is not None:
        prefix = Path(prefix)
        if not prefix.is_dir():
            raise InputError(
                "no such directory.",
                path=str(prefix),
                field="--prefix",
                hint="Pass the root of a venv or conda env.",
            )
        info = env_info(prefix)
        checks: list[str] = []
        findings += _env_findings(prefix, info, profile, load, checks)
        skipped: dict[str, str] = {}
        if not load:
            skipped["undefined-symbols"] = "--no-load: the extensions were not dlopened"
        if profile is None:
            skipped["driver-and-gpu"] = "no --target profile: the driver and GPU checks need one"
        for c in checks:
            if "(partial" in c:
                skipped[c.split()[0]] = c
        checked.update(
            {
                "python": info.get("python"),
                "packages": len(info.get("dists") or []),
                "extensions": len(info.get("extensions") or []),
                "torch": (info.get("torch") or {}).get("version"),
                "torch_cuda": (info.get("torch") or {}).get("cuda"),
                "checks": checks,
                "skipped": skipped,
            }
        )
    log_findings: list[Finding] = []
    if log_text is not None:
        log_findings = read_log(log_text, profile, info)
        findings += log_findings
        rules = load_rules()
        checked["log_lines"] = log_text.count("\n") + 1
        checked["log_rules"] = len(rules)
        checked["log_families"] = sorted({r.family for r in rules})
    ranked = _rank([(f, i) for i, f in enumerate(_dedupe(findings))])
    problems = any(f.severity in ("error", "warning") for f in ranked)
    if log_text is not None and not log_findings:
        fams = checked["log_families"]
        ranked.append(
            Finding(
                "no-known-cause",
                "info",
                f"No known cause found in the log ({checked['log_lines']} lines): none of the "
                f"{checked['log_rules']} rules of {len(fams)} failure families matched, so envbuild cannot "
                "say why it failed.",
                "Look at the last error in the log; if it is an environment problem envbuild should know, "
                "run 'envbuild doctor --prefix ENV' on the env, or report the text so a rule can be added.",
                "checked families: " + ", ".join(fams),
                rule="no-known-cause",
                weight=0,
            )
        )
    elif not problems and prefix is not None:
        what = (
            f"{checked.get('packages')} packages and {checked.get('extensions')} compiled extensions "
            f"in {prefix}"
        )
        skipped = checked.get("skipped") or {}
        # the driver/GPU checks need a target; without one, 'healthy' is about this machine
        missing = {k: v for k, v in skipped.items() if k != "driver-and-gpu"}
        if missing:
            ranked.append(
                Finding(
                    "incomplete",
                    "info",
                    f"No problem found in {what} by the checks that ran; not run: "
                    + "; ".join(f"{k} ({v})" for k, v in missing.items())
                    + ".",
                    "Run without the option that skipped them for a full check.",
                    "ran: " + ", ".join(checked.get("checks") or []),
                    rule="incomplete",
                    weight=0,
                )
            )
        else:
            ranked.append(
                Finding(
                    "healthy",
                    "info",
                    f"No known problem found in {what}"
                    + (" for the target" if profile is not None else " (no --target: driver/GPU not checked)")
                    + ".",
                    "Nothing to fix.",
                    "ran: " + ", ".join(checked.get("checks") or []),
                    rule="healthy",
                    weight=0,
                )
            )
    return Report(
        findings=ranked,
        prefix=None if prefix is None else str(prefix),
        log=log_name,
        checked=checked,
        seconds=time.perf_counter() - t0,
    )


def _dedupe(findings: Iterable[Finding]) -> list[Finding]:
    seen: set[tuple[str, str]] = set()
    out = []
    for f in findings:
        k = (f.family, f.cause)
        if k not in seen:
            seen.add(k)
            out.append(f)
    return out


def read_log_file(path: str) -> tuple[str, str]:
    """The text of ``--log FILE`` (``-`` is stdin) and the name to show for it.

    Raises:
        InputError: the file cannot be read.
    """
    if path == "-":
        return sys.stdin.read(), "<stdin>"
    try:
        return Path(path).read_text(errors="replace"), path
    except OSError as exc:
        raise InputError(
            f"cannot read the log ({exc.strerror}).",
            path=path,
            field="--log",
            hint="Pass a text file with the error output, or '-' for stdin.",
        ) from None


def present_report(report: Report, as_json: bool) -> None:
    """Print the findings: JSON (``findings`` most likely first) or a table plus one paragraph each."""
    from envbuild.output import console, print_json, styled, table

    if as_json:
        print_json(report.to_dict())
        return
    console.print(
        table(
            "envbuild doctor"
            + (f": {report.prefix}" if report.prefix else "")
            + (f" + {report.log}" if report.log else ""),
            ["#", "severity", "family", "cause"],
            [(i + 1, f.severity, f.family, f.cause) for i, f in enumerate(report.findings)],
        )
    )
    for i, f in enumerate(report.findings):
        if f.family in VERDICTS:
            if f.family != "healthy":
                console.print(f"{i + 1}. {f.family}: {f.fix}", markup=False, highlight=False)
                console.print(f"   {f.evidence}", markup=False, highlight=False)
            continue
        console.print(styled(f"{i + 1}. {f.family}", "bold", f"({f.severity})"), highlight=False)
        console.print(f"   fix: {f.fix}", markup=False, highlight=False)
        console.print(f"   evidence: {f.evidence}", markup=False, highlight=False)
        if f.source:
            console.print(f"   read: {f.source}", markup=False, highlight=False)
    console.print(f"checked in {report.seconds:.2f} s", markup=False, highlight=False)
