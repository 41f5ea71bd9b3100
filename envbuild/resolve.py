"""Pick the newest consistent torch / CUDA / mmcv / CuPy / NumPy set for a target machine.

Pure: no subprocess, no network, no clock, no host (the caller passes ``today`` and
``prefer_python``), no files or flags (``envbuild.target`` builds the target), no printing
(``envbuild.output`` presents the result).  Every fact comes from ``envbuild.matrix`` (the
bundled data).  The search is an
ordered walk: torch releases (newest first) x CUDA variants x Python x mmcv
versions x OpenMMLab packages x CuPy releases x NumPy minors; the first
complete set wins.  Whether a build runs is ``Matrix.verdict``: natively, or
(torch's wheels bundle their CUDA runtime) through minor-version
compatibility; within one release native builds come first.  Builds resting
on an unverified fact come after every confirmed one and are warned about.
When nothing fits, ``conflicts`` explains the closest miss: each a ``Conflict`` record (the
sentence, the facts with their sources, the suggestion); ``check`` raises the ``ConflictError``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from envbuild.errors import ConflictError, InputError, ProfileError
from envbuild.matrix import (
    ArchRow,
    BuildFacts,
    CupyPackage,
    Matrix,
    MmPackage,
    TargetFacts,
    TorchRelease,
    Verdict,
    cuda_of_variant,
    load_matrix,
    vers,
)
from envbuild.matrix import major_minor as _mm
from envbuild.matrix import xy as _xy
from envbuild.models import Conflict, Fact, Profile, Resolution, SourceBuild, Toolkit

__all__ = ["check", "resolve"]

MM = ("mmdet", "mmsegmentation", "mmdet3d")
KNOWN = {"torch", "torchvision", "torchaudio", "mmcv-full", "mmcv", "numpy", "cupy", *MM}
STAGES = ("torch", "python", "driver", "arch", "domain", "mmcv", "mm", "cupy", "numpy")
STALE_DAYS = 30  # older knowledge gets a warning naming `envbuild data update`


# --- target ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Facts:
    python: str | None
    driver: str | None
    gpus: tuple[tuple[str, str], ...]  # (name, cc)
    cpu: bool
    toolkits: tuple[Toolkit, ...]
    gcc: str | None
    driver_cuda: str | None = None  # only used when the driver version itself is unknown
    prefer_python: str | None = None  # the caller's choice when the target does not say (not the host's)
    cuda_spec: str | None = None  # the spec's CUDA constraint (a conda cudatoolkit=11.8 -> ==11.8.*)

    def cuda_ok(self, cuda: str | None) -> bool:
        return self.cuda_spec is None or cuda is None or _in(self.cuda_spec, cuda)

    @classmethod
    def of(cls, p: Profile, prefer_python: str | None = None) -> _Facts:
        py = _xy(p.python_version) if p.python_version else None
        gpus = tuple(dict.fromkeys((g.name, _xy(g.compute_capability))
                                   for g in p.gpus if g.compute_capability))
        if p.driver_version:
            try:
                vers(p.driver_version)
            except InvalidVersion:
                raise ProfileError(f"'{p.driver_version}' is not a driver version.", field="driver_version",
                                   hint="Write it like 470.223.02.") from None
        dcuda = None
        if p.driver_cuda_version and re.fullmatch(r"\d+\.\d+(\.\d+)?", p.driver_cuda_version.strip()):
            dcuda = _xy(p.driver_cuda_version)
        return cls(py, p.driver_version, gpus, not p.has_gpu, p.cuda_toolkits, p.gcc_version, dcuda,
                   _xy(prefer_python) if prefer_python else None)

    @property
    def ccs(self) -> list[str]:
        return sorted({cc for _, cc in self.gpus}, key=_mm)


# --- requirements ----------------------------------------------------------------------------------


@dataclass
class _Want:
    name: str
    spec: SpecifierSet
    text: str
    extras: tuple[str, ...] = ()

    @property
    def pinned(self) -> str | None:
        for s in self.spec:
            if s.operator in ("==", "===") and "*" not in s.version:
                return s.version
        return None


def _parse(requirements: Sequence[str]) -> tuple[dict[str, _Want], list[str]]:
    wants: dict[str, _Want] = {}
    passthrough: list[str] = []
    for text in requirements:
        try:
            r = Requirement(text)
        except InvalidRequirement as exc:
            why = str(exc).splitlines()[0] if str(exc) else "unparsable"
            raise InputError(f"'{text}' is not a valid PEP 508 requirement ({why}).", field="requirements",
                             hint="Write it like 'numpy<1.20', 'mmcv-full==1.4.0' or 'torch>=2'.") from None
        name = str(canonicalize_name(r.name))
        if r.url or r.marker is not None or not (name in KNOWN or name.startswith("cupy-cuda")):
            passthrough.append(text)
            continue
        if name in wants:
            wants[name].spec &= r.specifier
            wants[name].text += f", {text}"
        else:
            wants[name] = _Want(name, SpecifierSet(str(r.specifier)), text, tuple(sorted(r.extras)))
    if "mmcv" in wants and "mmcv-full" in wants:
        raise InputError("both 'mmcv' and 'mmcv-full' are requested; they install the same module.",
                         field="requirements", hint="Keep one: mmcv-full for the 1.x series, mmcv for 2.x.")
    return wants, passthrough


def _extras(w: _Want | None) -> str:
    return f"[{','.join(w.extras)}]" if w is not None and w.extras else ""


@functools.lru_cache(maxsize=65536)
def _contains(spec: SpecifierSet, version: str) -> bool:
    return spec.contains(version, prereleases=True) if version else False


@functools.lru_cache(maxsize=65536)
def _in(spec: str, version: str) -> bool:
    """``version in spec`` for specifier text (cached: keyed on strings, cheap to hash)."""
    return _sp(spec).contains(version, prereleases=True) if version else False


@functools.lru_cache(maxsize=8192)
def _is_pre(version: str) -> bool:
    return Version(version).is_prerelease


@functools.lru_cache(maxsize=4096)
def _sp(text: str) -> SpecifierSet:
    """A parsed (and cached) specifier: the search asks the same few thousand questions many times."""
    return SpecifierSet(text)


# --- search ----------------------------------------------------------------------------------------


_MmSet = tuple[dict[str, MmPackage], dict[str, str]]


@dataclass
class _Log:
    """Why candidates were dropped, per stage: turned into conflict sentences when nothing fits."""

    records: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def add(self, stage: str, **info: Any) -> None:
        self.records.setdefault(stage, []).append(info)

    def deepest(self) -> str | None:
        hit = [s for s in STAGES if s in self.records]
        return hit[-1] if hit else None


@dataclass
class _Pick:
    python: str
    torch: TorchRelease | None = None
    variant: str | None = None  # cuXYZ; None = cpu build or no torch
    cuda: str | None = None
    support: str | None = None  # native | compat | None (unknown driver / cpu)
    verdict: Verdict | None = None  # the torch build's verdict (first GPU's; all GPUs passed)
    domains: dict[str, str] = field(default_factory=dict)  # torchvision / torchaudio chosen
    arch_notes: list[str] = field(default_factory=list)
    arch_row: ArchRow | None = None
    mmcv: tuple[str, str, bool] | None = None  # (name, version, prebuilt)
    mm: dict[str, MmPackage] = field(default_factory=dict)
    mm_unknown: dict[str, str] = field(default_factory=dict)
    cupy: tuple[CupyPackage, str] | None = None
    numpy: str | None = None
    numpy_specs: list[tuple[str, str]] = field(default_factory=list)
    implied: list[dict[str, Any]] = field(default_factory=list)  # bounds nobody asked for, with evidence


@dataclass(frozen=True)
class _Mode:
    compat: bool
    mmcv_source: bool
    pypi: bool = False  # the plain PyPI wheel is usable (prefer_pypi and a Linux x86_64 target)


class _Search:
    def __init__(self, wants: dict[str, _Want], t: _Facts, m: Matrix, mode: _Mode, log: _Log,
                 shared: dict[str, Any] | None = None) -> None:
        self.w, self.t, self.m, self.mode, self.log = wants, t, m, mode, log
        self.shared: dict[str, Any] = {} if shared is None else shared  # memos valid across passes
        mm_needed = [n for n in MM if n in wants]
        if "mmdet3d" in wants:
            mm_needed = list(dict.fromkeys([*mm_needed, "mmdet", "mmsegmentation"]))
        self.mm_needed = mm_needed
        self.need_mmcv = bool(mm_needed) or "mmcv" in wants or "mmcv-full" in wants
        self.need_torch = self.need_mmcv or any(n in wants for n in ("torch", "torchvision", "torchaudio"))
        self.cupy_wants = [w for n, w in wants.items() if n == "cupy" or n.startswith("cupy-cuda")]
        self.need_numpy = "numpy" in wants or bool(self.cupy_wants) or "mmdet3d" in mm_needed
        # The CuPy/NumPy answer depends only on (CUDA, Python, numpy pins): memoised, since every mmcv /
        # OpenMMLab combination of one torch build asks the same question.
        self._numeric_memo: dict[tuple[Any, ...], Any] = self.shared.setdefault("numeric", {})
        self._mm_memo: dict[str, tuple[list[MmPackage], str | None]] = self.shared.setdefault("mm", {})
        self._accepts_memo: dict[str, bool] = self.shared.setdefault("accepts", {})
        self._sets_memo: dict[str, Any] = self.shared.setdefault("sets", {})
        self._np_py: dict[str, list[Any]] = self.shared.setdefault("np_py", {})
        self._mmcv_known: dict[str, list[str]] = self.shared.setdefault("mmcv_known", {})
        self._replayed: set[tuple[Any, ...]] = set()  # failed numeric memo keys already in this pass's log

    # entry ---------------------------------------------------------------------------------------
    def run(self) -> _Pick | None:
        if self.need_torch:
            return self._torch_walk()
        for cuda, support in self._bare_cudas():
            for py in self._pythons(None):
                pick = _Pick(python=py, cuda=cuda, support=support)
                got = self._rest(pick)
                if got:
                    return got
        return None

    def _pythons(self, rel: TorchRelease | None) -> list[str]:
        if self.t.python:
            return [self.t.python]
        pys = sorted(rel.python, key=_mm, reverse=True) if rel else list(self.m.pythons)
        # No target Python: the caller's preferred one first when it fits (the CLI passes envbuild's own, so
        # the lock engines can run for it), else the newest the packages support.
        return sorted(pys, key=lambda p: p != self.t.prefer_python)

    def _bare_cudas(self) -> list[tuple[str | None, str | None]]:
        """CUDA candidates when no torch is involved (only CuPy needs one)."""
        if not self.cupy_wants or self.t.cpu:
            return [(None, None)]
        out: list[tuple[str | None, str | None]] = []
        for cuda in sorted(self.m.driver_min, key=_mm, reverse=True):
            if not self.m.cupy_for_cuda(cuda) or not self.t.cuda_ok(cuda):
                continue
            sup = self._driver(cuda)
            if sup:
                out.append((cuda, sup if sup != "unknown" else None))
        # without torch the CUDA only says which toolkit CuPy is paired with: the driver's own CUDA first
        return sorted(out, key=lambda c: c[1] == "compat")

    def _driver(self, cuda: str) -> str | None:
        if not self.t.driver:
            dc = self.t.driver_cuda
            if dc is None:
                return "unknown"
            # only "CUDA <= X.Y" is known (a profile without the driver version): same rules by CUDA
            if _mm(cuda) <= _mm(dc):
                return "native"
            if self.mode.compat and _mm(cuda)[0] == _mm(dc)[0] >= 11:
                return "compat"
            return None
        sup = self.m.driver_support(self.t.driver, cuda)
        if sup == "native" or (sup == "compat" and self.mode.compat):
            return sup
        return None

    # torch ---------------------------------------------------------------------------------------
    def _torch_walk(self) -> _Pick | None:
        tw = self.w.get("torch")
        spec = tw.spec if tw else SpecifierSet()
        any_rel = False
        cands: list[tuple[tuple[Any, ...], TorchRelease, str | None]] = []
        # Builds of the driver's own CUDA major come first (a 12.x driver gets a cu12x build even when a
        # newer torch also ships a legacy cu118 one).
        native = self.m.native_cuda(self.t.driver) if self.t.driver else self.t.driver_cuda
        major = _mm(native)[0] if native else None
        for ri, rel in enumerate(self.m.torch_releases()):
            variants: list[str | None] = (
                ([None] if rel.cpu else []) if self.t.cpu else list(rel.all_variants))
            for vi, var in enumerate(variants):
                if var and not self.t.cuda_ok(cuda_of_variant(var)):
                    continue
                if not _contains(spec, f"{rel.version}+{var or 'cpu'}"):
                    continue
                v = self._verdicts(rel, var)[0]
                tier = 0 if major is None or var is None or _mm(cuda_of_variant(var))[0] >= major else 1
                # a build resting on an unverified fact ("?" cell, unknown arch list) comes after every
                # confirmed one: it is used only when nothing confirmed fits (and then with a warning)
                demoted = int(var is not None and (var in rel.unverified or self._arch_unknown(rel, var)))
                rank = {"native-driver": 0, "minor-version-compat": 1}.get(v.rule, 0 if v.ok else 2)
                # under minor-version compatibility every build of the major is equal to the driver: the
                # plain PyPI wheel (no extra index) first; natively, the newest CUDA first
                plain = int(not (rank == 1 and self.mode.pypi and var is not None
                                 and rel.pypi_cuda == cuda_of_variant(var)))
                mm_key: tuple[Any, ...] = ()
                if self.need_mmcv:
                    # mmcv wheels are compiled against torch X.Y.0 only: prefer that patch within a series
                    ver = Version(rel.version)
                    mm_key = (-ver.major, -ver.minor, ver.micro != 0)
                cands.append(((tier, demoted, *mm_key, ri, rank, plain, vi), rel, var))
        cands.sort(key=lambda c: c[0])
        for _, rel, var in cands:
            any_rel = True
            got = self._torch_candidate(rel, var)
            if got:
                return got
        if not any_rel:
            self.log.add("torch", spec=str(spec), cpu=self.t.cpu, cuda_spec=self.t.cuda_spec)
        return None

    def _arch_unknown(self, rel: TorchRelease, var: str) -> bool:
        if not self.t.gpus:
            return False
        memo: dict[tuple[str, str], bool] = self.shared.setdefault("arch_unknown", {})
        key = (rel.version, var)
        if key not in memo:
            memo[key] = self.m.arch_row(rel.version, cuda_of_variant(var)) is None
        return memo[key]

    def _verdicts(self, rel: TorchRelease, var: str | None) -> list[Verdict]:
        """The verdict for this build on each target GPU (one entry when the GPU is unknown)."""
        key = ("verdict", rel.version, var, self.mode.compat)
        memo: dict[Any, list[Verdict]] = self.shared.setdefault("verdicts", {})
        if key not in memo:
            cuda = cuda_of_variant(var) if var else None
            build = BuildFacts(cuda, bundles_runtime=True,
                               arch=self.m.arch_row(rel.version, cuda) if cuda else None,
                               label=f"torch {rel.version}+{var or 'cpu'}")
            ccs: list[tuple[str | None, str | None]] = list(self.t.gpus) or [(None, None)]
            memo[key] = [self.m.verdict(build, TargetFacts(self.t.driver, self.t.driver_cuda, cc, name),
                                        native_only=not self.mode.compat) for name, cc in ccs]
        return memo[key]

    def _torch_candidate(self, rel: TorchRelease, var: str | None) -> _Pick | None:
        t = self.t
        pys = [p for p in self._pythons(rel) if p in rel.python]
        if not pys:
            self.log.add("python", torch=rel, variant=var, python=t.python)
            return None
        cuda = cuda_of_variant(var) if var else None
        verdicts = self._verdicts(rel, var)
        first = verdicts[0]
        if cuda and first.rule == "driver-too-old":
            self.log.add("driver", torch=rel, variant=var, cuda=cuda)
            return None
        row = self.m.arch_row(rel.version, cuda) if cuda else None
        notes: list[str] = []
        for (name, cc), v in zip(t.gpus if cuda else (), verdicts, strict=False):
            if not v.ok:
                self.log.add("arch", torch=rel, variant=var, cuda=cuda, gpu=name, cc=cc, row=row,
                             why=v.reason, rule=v.rule)
                return None
            notes.append(f"{name} (sm_{cc.replace('.', '')}): {v.arch_note}")
        if cuda and not first.ok:
            self.log.add("driver", torch=rel, variant=var, cuda=cuda)
            return None
        support = first.support
        domains: dict[str, str] = {}
        for dom in ("torchvision", "torchaudio"):
            w = self.w.get(dom)
            if w is None:
                continue
            have = rel.domain_versions(dom)
            fit = [d for d in have if _contains(w.spec, d)]
            if not fit:
                self.log.add("domain", torch=rel, variant=var, package=dom, have=have[0] if have else None,
                             spec=str(w.spec))
                return None
            domains[dom] = fit[0]  # the release's own pair when it fits, else a compatible one
        for py in pys:
            pick = _Pick(python=py, torch=rel, variant=var, cuda=cuda, support=support, arch_notes=notes,
                         arch_row=row, verdict=first if cuda else None, domains=domains)
            got = self._rest(pick)
            if got:
                return got
        return None

    # mmcv + OpenMMLab ----------------------------------------------------------------------------
    def _rest(self, pick: _Pick) -> _Pick | None:
        if not self.need_mmcv:
            return self._numeric(pick)
        assert pick.torch is not None
        names = [n for n in ("mmcv-full", "mmcv") if n in self.w] or self._mmcv_names()
        for name in names:
            for version, prebuilt in self._mmcv_versions(name, pick):
                for mm, unknown in self._mm_sets(name, version, pick):
                    cand = dataclasses.replace(pick, mmcv=(name, version, prebuilt), mm=mm,
                                               mm_unknown=unknown)
                    got = self._numeric(cand)
                    if got:
                        return got
        return None

    def _mmcv_names(self) -> list[str]:
        """mmcv packages the requested OpenMMLab releases use (mmcv-full for the 1.x era, mmcv for 2.x)."""
        used = {k for n in self.mm_needed if n in self.w for p in self._mm_cands(n)[0] for k in p.requires}
        return [n for n in ("mmcv", "mmcv-full") if n in used] or ["mmcv", "mmcv-full"]

    def _mm_cands(self, name: str) -> tuple[list[MmPackage], str | None]:
        if name not in self._mm_memo:
            self._mm_memo[name] = self._mm_cands_uncached(name)
        return self._mm_memo[name]

    def _mm_cands_uncached(self, name: str) -> tuple[list[MmPackage], str | None]:
        w = self.w.get(name)
        rows = list(reversed(self.m.mm.get(name, ())))
        if w is None:
            return rows, None
        hits = [p for p in rows if _contains(w.spec, p.version) and (not Version(p.version).is_prerelease
                                                                      or w.pinned == p.version)]
        if not hits and w.pinned:
            return [], w.pinned  # a release the data does not know: passes unchecked
        return hits, None

    def _mmcv_versions(self, name: str, pick: _Pick) -> Iterator[tuple[str, bool]]:
        assert pick.torch is not None
        w = self.w.get(name)
        if name not in self._mmcv_known:
            self._mmcv_known[name] = self.m.mmcv_versions(name)
        known = self._mmcv_known[name]
        if w is not None and w.pinned and w.pinned not in known:
            known = [w.pinned, *known]
        wanted = [v for v in known if w is None or _contains(w.spec, v)]
        if w is None or not w.pinned:
            wanted = [v for v in wanted if not _is_pre(v)]
        # versions some combination of the requested OpenMMLab packages accepts
        allowed = [v for v in wanted if self._mm_accepts_any(name, v)]
        if not allowed:
            self.log.add("mm", mmcv=name, wanted=[w.text] if w else [], mm=self.mm_needed, torch=pick.torch)
            return
        prebuilt = set(self.m.mmcv_wheels(name, pick.cuda, pick.torch.version))
        yielded = False
        for v in allowed:
            if v in prebuilt:
                yielded = True
                yield v, True
        if self.mode.mmcv_source and pick.cuda:
            for v in allowed:
                if v not in prebuilt:
                    yielded = True
                    yield v, False
        if not yielded:
            self.log.add("mmcv", mmcv=name, versions=allowed, torch=pick.torch, variant=pick.variant,
                         cuda=pick.cuda)

    def _mm_accepts_any(self, mmcv_name: str, v: str) -> bool:
        key = f"{mmcv_name}=={v}"
        if key not in self._accepts_memo:
            self._accepts_memo[key] = self._mm_accepts_any_uncached(mmcv_name, v)
        return self._accepts_memo[key]

    def _mm_accepts_any_uncached(self, mmcv_name: str, v: str) -> bool:
        # only what was asked for; packages mmdet3d implies are checked against the chosen mmdet3d
        for name in [n for n in self.mm_needed if n in self.w]:
            cands, unknown = self._mm_cands(name)
            if unknown:
                continue
            if not any(_accepts(p, mmcv_name, v) for p in cands):
                return False
        return True

    def _mm_sets(self, mmcv_name: str, v: str, pick: _Pick) -> Iterator[_MmSet]:
        if not self.mm_needed:
            yield {}, {}
            return
        key = f"{mmcv_name}=={v}"
        if key not in self._sets_memo:
            cands_: dict[str, list[MmPackage]] = {}
            unknown_: dict[str, str] = {}
            for name in self.mm_needed:
                c, unk = self._mm_cands(name)
                if unk:
                    unknown_[name] = unk
                cands_[name] = [p for p in c if _accepts(p, mmcv_name, v)]
            self._sets_memo[key] = (cands_, unknown_)
        cands, unknown = self._sets_memo[key]
        d3s: list[MmPackage | None] = list(cands.get("mmdet3d", [])) if "mmdet3d" in cands else [None]
        for d3 in d3s:
            if d3 is not None and d3.python_max and _mm(pick.python) > _mm(d3.python_max):
                self.log.add("mm", python=pick.python, mmdet3d=d3, torch=pick.torch)
                continue
            chosen: dict[str, MmPackage] = {} if d3 is None else {"mmdet3d": d3}
            ok = True
            for name in ("mmdet", "mmsegmentation"):
                if name not in cands or name in unknown:
                    continue
                if name not in self.w and (d3 is None or name not in d3.requires):
                    continue  # implied only by an mmdet3d release that does not use it (1.x has no mmseg)
                req = d3.requires.get(name) if d3 else None
                fit = [p for p in cands[name] if req is None or _in(req, p.version)]
                if not fit:
                    self.log.add("mm", package=name, within=req, mmdet3d=d3, mmcv=(mmcv_name, v))
                    ok = False
                    break
                chosen[name] = fit[0]
            if ok:
                yield chosen, unknown

    # CuPy + NumPy --------------------------------------------------------------------------------
    def _numeric(self, pick: _Pick) -> _Pick | None:
        specs = self._numpy_specs(pick)
        key = (pick.cuda, pick.python, tuple(specs))
        if key not in self._numeric_memo:
            before = {k: len(v) for k, v in self.log.records.items()}
            got = self._numeric_solve(pick, specs)
            if got is None:  # keep the failure's log records: a later pass must explain itself too
                added = [(k, r) for k, v in self.log.records.items() for r in v[before.get(k, 0):]]
                self._numeric_memo[key] = ("fail", added)
                self._replayed.add(key)
            else:
                self._numeric_memo[key] = ("ok", (got.cupy, got.numpy, got.numpy_specs))
        kind, hit = self._numeric_memo[key]
        if kind == "fail":
            if key not in self._replayed:  # once per pass (comparing the records themselves is quadratic)
                self._replayed.add(key)
                for stage, rec in hit:
                    self.log.add(stage, **rec)
            return None
        return dataclasses.replace(pick, cupy=hit[0], numpy=hit[1], numpy_specs=hit[2])

    def _numeric_solve(self, pick: _Pick, specs: list[tuple[str, str]]) -> _Pick | None:
        if not self.cupy_wants:
            if not self.need_numpy:
                # numpy is not asked for, but a chosen package implies a bound on it: the bound is pinned
                # (as a requirement) only if some numpy release for this Python satisfies it
                if specs and self._numpy(pick.python, specs) is None:
                    self.log.add("numpy", python=pick.python, specs=specs, cupy=[], torch=pick.torch)
                    return None
                return dataclasses.replace(pick, numpy_specs=specs)
            np = self._numpy(pick.python, specs)
            if np is None:
                self.log.add("numpy", python=pick.python, specs=specs, cupy=[], torch=pick.torch)
                return None
            return dataclasses.replace(pick, numpy=np, numpy_specs=specs)
        if pick.cuda is None:
            self.log.add("cupy", why="cpu", torch=pick.torch)
            return None
        tried: list[tuple[CupyPackage, str, str]] = []
        cands = self._cupy_cands(pick)
        if not cands:
            self.log.add("cupy", why="none", cuda=pick.cuda, python=pick.python, torch=pick.torch,
                         variant=pick.variant)
            return None
        for pkg, ver in cands:
            rel = self.m.cupy_releases.get(ver)
            cspecs = list(specs)
            if rel is not None:
                cspecs.append((f"{pkg.package} {ver}", rel.numpy))
            np = self._numpy(pick.python, cspecs) if self.need_numpy else None
            if np is not None or not self.need_numpy:
                return dataclasses.replace(pick, cupy=(pkg, ver), numpy=np, numpy_specs=cspecs)
            tried.append((pkg, ver, rel.numpy if rel else ""))
        self.log.add("numpy", python=pick.python, specs=specs, cupy=tried, torch=pick.torch,
                     variant=pick.variant,
                     cuda=pick.cuda)
        return None

    def _cupy_cands(self, pick: _Pick) -> list[tuple[CupyPackage, str]]:
        assert pick.cuda is not None
        out: list[tuple[CupyPackage, str]] = []
        for pkg in self.m.cupy_for_cuda(pick.cuda):
            for w in self.cupy_wants:
                if w.name != "cupy" and w.name != pkg.package:
                    continue
                for ver in pkg.versions:
                    if not _contains(w.spec, ver) or Version(ver).is_prerelease:
                        continue
                    if pick.python not in pkg.python_by_version.get(ver, ()):
                        continue
                    out.append((pkg, ver))
        # newest CuPy first; for equal versions the per-minor package (exact CUDA) first
        out.sort(key=lambda pv: (Version(pv[1]), pv[0].cuda.single), reverse=True)
        unique: dict[tuple[str, str], tuple[CupyPackage, str]] = {}
        for pv in out:
            unique.setdefault((pv[0].package, pv[1]), pv)
        return list(unique.values())

    def _numpy_specs(self, pick: _Pick) -> list[tuple[str, str]]:
        specs: list[tuple[str, str]] = []
        w = self.w.get("numpy")
        if w is not None and str(w.spec):
            specs.append(("your requirement", str(w.spec)))
        d3 = pick.mm.get("mmdet3d")
        if d3 is not None and d3.numpy:
            specs.append((f"mmdet3d {d3.version}", d3.numpy))
        specs += [(b["by"], b["spec"]) for b in _implied_bounds(pick, self.w, self.m)
                  if b["package"] == "numpy"]
        return specs

    def _numpy(self, python: str, specs: Sequence[tuple[str, str]]) -> str | None:
        w = self.w.get("numpy")
        if python not in self._np_py:
            self._np_py[python] = self.m.numpy_for_python(python)
        for minor in self._np_py[python]:
            cands: list[str] = [minor.latest]
            if w is not None and w.pinned and w.pinned.startswith(minor.minor + "."):
                cands = [w.pinned]
            for v in cands:
                if all(_in(s, v) for _, s in specs):
                    return v
        return None


def _accepts(p: MmPackage, mmcv_name: str, v: str) -> bool:
    other = "mmcv" if mmcv_name == "mmcv-full" else "mmcv-full"
    spec = p.requires.get(mmcv_name)
    if spec is None:
        return other not in p.requires
    # the package's own check compares digit lists (digit_version), not PEP 440 versions
    return p.accepts(mmcv_name, v) if p.compare == "digit_version" else _in(spec, v)


def _implied_bounds(pick: _Pick, wants: Mapping[str, _Want], m: Matrix) -> list[dict[str, Any]]:
    """Bounds the chosen packages imply on packages the user may not have named, each with its evidence.

    torch / torchvision built against NumPy 1.x -> numpy<2 (ABI); OpenMMLab releases that use names NumPy
    removed -> numpy below that release (``implied`` rows, file:line evidence).  CuPy's own numpy range is
    handled with CuPy (it is part of CuPy's metadata).
    """
    out: list[dict[str, Any]] = []
    for rule in m.abi:
        have = None
        if rule.package == "torch" and pick.torch is not None:
            have = pick.torch.version
        elif rule.package == "torchvision" and pick.torch is not None and "torchvision" in wants:
            have = pick.domains.get("torchvision") or pick.torch.torchvision
        if have and _in(rule.versions, have):
            why = (f"{rule.package} {have}'s C extensions were compiled against NumPy 1.x; under NumPy 2 "
                   "they fail to import ('_ARRAY_API not found')")
            out.append({"package": "numpy", "spec": rule.numpy, "by": f"{rule.package} {have} (built against "
                        "NumPy 1.x)", "reason": why, "evidence": [], "source": rule.source})
    mmcv_row = m.mm_package(pick.mmcv[0], pick.mmcv[1]) if pick.mmcv else None
    chosen = [(n, pick.mm.get(n)) for n in MM] + ([(mmcv_row.name, mmcv_row)] if mmcv_row else [])
    for name, pkg in chosen:
        for imp in pkg.implied if pkg is not None else ():
            by = f"{name} {pkg.version if pkg else ''}"
            out.append({"package": imp.package, "spec": imp.spec, "by": by,
                        "reason": imp.reason, "evidence": list(imp.evidence), "source": imp.source})
    return out


def _runs_on(m: Matrix, rel: TorchRelease, cuda: str, cc: str) -> bool:
    """Does the (torch, CUDA) wheel have code for this GPU (driver aside)?  The matrix's verdict decides."""
    v = m.verdict(BuildFacts(cuda, arch=m.arch_row(rel.version, cuda)), TargetFacts(cc=cc))
    return v.ok


# --- explanations ----------------------------------------------------------------------------------


def _torch_desc(wants: Mapping[str, _Want], t: _Facts) -> str:
    tw = wants.get("torch")
    desc = f"torch{tw.spec}" if tw and str(tw.spec) else "torch"
    return desc + (f" with CUDA {t.cuda_spec} (the spec's CUDA constraint)" if t.cuda_spec else "")


NV_SRC = "envbuild/data/nvidia.json (NVIDIA CUDA Toolkit Release Notes, Table 3)"
YOURS = "your requirement"


def _c(claim: str, suggestion: str | None, *facts: Fact, sep: str = ": ") -> Conflict:
    """A conflict whose sentence is ``claim: suggestion.`` (the text ``conflicts`` has always listed)."""
    return Conflict(f"{claim}{sep}{suggestion}." if suggestion else claim, tuple(facts), suggestion)


def _mmcv_src(m: Matrix, name: str) -> str:
    return next((w.source for w in m.mmcv if w.package == name), "envbuild/data/mmcv.json")


def _explain(log: _Log, wants: dict[str, _Want], t: _Facts, m: Matrix) -> list[Conflict]:
    stage = log.deepest()
    recs = log.records.get(stage or "", [])
    tw = wants.get("torch")
    torch_desc = _torch_desc(wants, t)
    asked = [Fact(f"you asked {tw.text}", YOURS)] if tw and str(tw.spec) else []
    out: list[Conflict] = []
    if stage is None:
        return [Conflict("no candidate set was found (no requirement the data knows).")]
    if stage == "torch":
        known = m.torch_releases()
        span = f"known: {known[-1].version} ... {known[0].version}"
        out.append(_c(f"no torch release known to envbuild matches '{torch_desc}'"
                      + (" with a CPU build" if t.cpu else "") + f" ({span})",
                      "relax the torch requirement", *asked, Fact(f"torch releases {span}", known[0].source)))
    elif stage == "python":
        pys = sorted({p for r in recs for p in r["torch"].python}, key=_mm)
        vs = sorted({r["torch"].version for r in recs}, key=Version)
        have = f"releases {vs[0]}..{vs[-1]} have wheels for Python {pys[0]}-{pys[-1]}"
        out.append(_c(f"Python {t.python} is not supported by {torch_desc} ({have})",
                      "use --python in that range or relax torch", Fact(f"the target's Python is {t.python}",
                                                                       "the target"),
                      Fact(f"torch {have}", recs[0]["torch"].source), *asked))
    elif stage == "driver":
        cudas = sorted({r["cuda"] for r in recs}, key=_mm)
        low = cudas[0]
        oldest = min((r for r in recs if r["cuda"] == low), key=lambda r: Version(r["torch"].version))
        native = m.native_cuda(t.driver) if t.driver else t.driver_cuda
        need = m.min_driver(low)
        cm = m.compat_min_driver(low)
        compat_txt = (f" (or >= {cm} to run CUDA {_mm(low)[0]}.x through minor-version compatibility)"
                      if cm and (not t.driver or vers(t.driver) < vers(cm)) else "")
        drv = f"driver {t.driver or '(version unknown)'} supports CUDA <= {native or 'unknown'}"
        needs = (f"{torch_desc} needs CUDA >= {low} (oldest fitting build: torch {oldest['torch'].version}+"
                 f"{oldest['variant']})")
        out.append(_c(f"{drv}; {needs}", f"upgrade the driver to >= {need}{compat_txt} or relax torch",
                      Fact(drv, NV_SRC), Fact(needs, oldest["torch"].source),
                      Fact(f"CUDA {low} needs driver >= {need}", NV_SRC), *asked))
    elif stage == "arch" and all(r.get("rule") == "gpu-driver-branch" for r in recs):
        r0 = recs[0]
        gpu = m.gpu(r0["gpu"])
        out.append(_c(f"GPU {r0['gpu']} (compute capability {r0['cc']}): {r0['why']}",
                      "upgrade the NVIDIA driver (no torch build can lift this)",
                      Fact(r0["why"], gpu.source if gpu is not None else NV_SRC)))
    elif stage == "arch":
        out.append(_explain_arch(recs, torch_desc, t, m, asked))
    elif stage == "domain":
        r0 = recs[0]
        pair = f"torch {r0['torch'].version} pairs with {r0['package']} {r0['have']}"
        out.append(_c(f"{r0['package']}{r0['spec']} is not paired with any {torch_desc} build that fits "
                      f"this target ({pair})", "relax one of them",
                      Fact(f"you asked {r0['package']}{r0['spec']}", YOURS), Fact(pair, r0["torch"].source),
                      *asked))
    elif stage == "mmcv":
        r0 = recs[0]
        name, versions = r0["mmcv"], r0["versions"]
        v = versions[0]
        pairs = m.mmcv_pairs(name, v)
        gpu_pairs = [f"cu{c.replace('.', '')}/torch{s}" if c != "cpu" else f"cpu/torch{s}" for c, s in pairs]
        tried = ", ".join(dict.fromkeys(f"{r['torch'].version}+{r['variant'] or 'cpu'}" for r in recs[:5]))
        wheels = f"{name} {v} has prebuilt wheels only for {', '.join(gpu_pairs) or 'no (CUDA, torch) pair'}"
        out.append(_c(f"{wheels}; none matches a torch build this target can use ({tried})",
                      "pick a torch/CUDA pair from that list (upgrade the driver if needed) or another "
                      f"{name} version", Fact(wheels, _mmcv_src(m, name)),
                      Fact(f"torch builds this target can use: {tried}", recs[0]["torch"].source)))
    elif stage == "mm":
        out.extend(_explain_mm(recs, wants, m))
    elif stage == "cupy":
        out.append(_explain_cupy(recs[0], wants, m))
    elif stage == "numpy":
        out.extend(_explain_numpy(recs, m))
    return list({c.text: c for c in out}.values())[:6]


def _explain_arch(recs: list[dict[str, Any]], torch_desc: str, t: _Facts, m: Matrix,
                  asked: list[Fact]) -> Conflict:
    r0 = recs[0]
    gpu, cc = r0["gpu"], r0["cc"]
    fits = _builds_with_arch(m, cc)
    lift = ""
    facts = [Fact(r0["why"], r0["row"].source if r0.get("row") is not None else r0["torch"].source)]
    if fits:
        low = min(fits, key=lambda x: (_mm(x[1]), Version(x[0])))
        lift = (f"; the first torch wheels that run sm_{cc.replace('.', '')} are CUDA {low[1]} builds "
                f"(torch {low[0]}+cu{low[1].replace('.', '')}, driver >= {m.min_driver(low[1])})")
        row = m.arch_row(low[0], low[1])
        facts.append(Fact(lift.removeprefix("; "), row.source if row is not None else NV_SRC))
        need = m.min_driver(low[1])
        if t.driver and need and vers(t.driver) >= vers(need):
            fix = f"relax torch to allow torch >= {low[0]}"
        else:
            fix = f"upgrade the driver to >= {need} and allow torch >= {low[0]}"
    else:
        fix = "choose another GPU target"
    tried = ", ".join(dict.fromkeys(f"{r['torch'].version}+{r['variant']}" for r in recs[:4]))
    return _c(f"GPU {gpu} (compute capability {cc}) cannot run the {torch_desc} builds this driver "
              f"allows ({tried}): {r0['why']}{lift}", fix, *facts, *asked)


def _explain_cupy(r0: dict[str, Any], wants: dict[str, _Want], m: Matrix) -> Conflict:
    if r0["why"] == "cpu":
        return _c("cupy needs an NVIDIA GPU and CUDA; the target is CPU-only (--cpu or no driver)",
                  "drop cupy or plan for a GPU machine (--driver/--gpu)",
                  Fact("CuPy wheels are built for CUDA only", "envbuild/data/cupy.json"),
                  Fact("the target has no GPU or driver", "the target"))
    pkgs = m.cupy_for_cuda(r0["cuda"])
    pk = ", ".join(p.package for p in pkgs) or "no CuPy package"
    asked = [w.text for n, w in wants.items() if (n == "cupy" or n.startswith("cupy-cuda")) and str(w.spec)]
    spec_txt = f" matching {', '.join(asked)}" if asked else ""
    claim = f"no CuPy wheel{spec_txt} for CUDA {r0['cuda']} ({pk}) supports Python {r0['python']}"
    return _c(claim, "use another --python, relax the CuPy pin or a torch build with another CUDA",
              Fact(claim, pkgs[0].source if pkgs else "envbuild/data/cupy.json"),
              *(Fact(f"you asked {a}", YOURS) for a in asked))


def _builds_with_arch(m: Matrix, cc: str) -> list[tuple[str, str]]:
    out = []
    for rel in m.torch_releases():
        for var in rel.all_variants:
            cuda = cuda_of_variant(var)
            if _runs_on(m, rel, cuda, cc) and m.arch_row(rel.version, cuda) is not None:
                out.append((rel.version, cuda))
    return out


def _explain_mm(recs: list[dict[str, Any]], wants: dict[str, _Want], m: Matrix) -> list[Conflict]:
    out = []
    for r in recs:
        if "python" in r:
            d3 = r["mmdet3d"]
            needs = (f"mmdet3d {d3.version} needs Python <= {d3.python_max} (it pins "
                     f"{', '.join(x for x in d3.runtime if x.startswith('numba'))})")
            out.append(_c(f"{needs}; the target has Python {r['python']}",
                          f"use --python {d3.python_max} or a newer mmdet3d", Fact(needs, d3.source),
                          Fact(f"the target's Python is {r['python']}", "the target")))
        elif "package" in r:
            d3 = r["mmdet3d"]
            w = wants.get(r["package"])
            asked = f" you asked {w.text}" if w else f" no {r['package']} release fits"
            needs = f"mmdet3d {d3.version} needs {r['package']}{r['within']}"
            out.append(_c(f"{needs};{asked} (with {r['mmcv'][0]} {r['mmcv'][1]})", "change one of the pins",
                          Fact(needs, d3.source), Fact(asked.strip(), YOURS if w else d3.source)))
        else:
            name = r["mmcv"]
            sides = [f"you asked {t}" for t in r["wanted"]]
            facts = [Fact(side, YOURS) for side in sides]
            for pkg in [n for n in r["mm"] if n in wants]:
                w = wants.get(pkg)
                rows = [p for p in m.mm.get(pkg, ()) if w is None or _contains(w.spec, p.version)]
                specs = sorted({p.requires.get(name, "") for p in rows if p.requires.get(name)})
                label = f"{pkg} {w.pinned}" if w and w.pinned else pkg
                side = (f"{label} needs {name}{' or '.join(specs[:3])}" if specs
                        else f"{label} does not use {name}")
                sides.append(side)
                facts.append(Fact(side, rows[0].source if rows else "envbuild/data/openmmlab.json"))
            out.append(_c("; ".join(sides) + f": no {name} version satisfies all of them",
                          "change one of the pins", *facts, sep="; "))
    return out


def _explain_numpy(recs: list[dict[str, Any]], m: Matrix) -> list[Conflict]:
    out = []
    for r in recs:
        py = r["python"]
        specs: list[tuple[str, str]] = r["specs"]
        tried: list[tuple[CupyPackage, str, str]] = r["cupy"]
        np_py = m.numpy_for_python(py)
        py_range = f"numpy {np_py[-1].minor}-{np_py[0].minor}" if np_py else "no numpy"
        np_fact = Fact(f"Python {py} allows {py_range}",
                       np_py[0].source if np_py else "envbuild/data/numpy.json")
        if tried:
            by_pkg: dict[str, list[tuple[str, str]]] = {}
            for pkg, ver, s in tried:
                by_pkg.setdefault(pkg.package, []).append((ver, s))
            cupy_side = "; ".join(
                f"{pkg} {min((v for v, _ in vs), key=Version)}..{max((v for v, _ in vs), key=Version)} "
                f"(every release for CUDA {r.get('cuda')} and Python {py}) "
                f"needs numpy{_loosest([s for _, s in vs])}"
                for pkg, vs in by_pkg.items())
            cupy_specs = [s for _, _, s in tried if s]
            blocking = [(label, s) for label, s in specs
                        if not any(_numpy_fits(m, py, [s, c]) for c in cupy_specs)] or specs
            others = ("; ".join(f"{label} needs numpy{s}" for label, s in blocking)
                      or f"Python {py} allows {py_range}")
            facts = [*(Fact(f"{label} needs numpy{s}", _numpy_src(label, m)) for label, s in blocking),
                     Fact(cupy_side, tried[0][0].source), np_fact]
            out.append(_c(f"{others}; {cupy_side}: no numpy release satisfies both",
                          "Lift it with a torch build whose CUDA still has a CuPy 10.x package "
                          "(cupy-cuda1xx 10.6.0 accepts numpy>=1.18,<1.25), or a newer release of the "
                          "package that caps numpy",
                          *facts, sep=". "))
        else:
            sides = "; ".join(f"{label} needs numpy{s}" for label, s in specs)
            facts = [*(Fact(f"{label} needs numpy{s}", _numpy_src(label, m)) for label, s in specs), np_fact]
            out.append(_c(f"{sides}; Python {py} allows {py_range}: no numpy release satisfies all of them",
                          "change --python or one of the pins", *facts, sep="; "))
    return out


def _numpy_src(label: str, m: Matrix) -> str:
    """Where a numpy pin came from: the user's requirement, or the data row of the package that pins it."""
    if label.startswith(("you", "your", "numpy")):
        return YOURS
    name, _, version = label.partition(" ")
    for p in m.mm.get(name, ()):
        if p.version == version:
            return p.source
    rel = m.torch_release(version) if name == "torch" else None
    return rel.source if rel is not None else "envbuild/data"


def _numpy_fits(m: Matrix, python: str, specs: Sequence[str]) -> bool:
    return any(all(_in(s, n.latest) for s in specs) for n in m.numpy_for_python(python))


def _loosest(specs: Sequence[str]) -> str:
    """The most permissive lower bound among CuPy numpy requirements (for one summary phrase)."""
    lows = []
    for s in specs:
        for sp in SpecifierSet(s):
            if sp.operator == ">=":
                lows.append(sp.version)
    return f">={min(lows, key=Version)}" if lows else "(unknown)"


# --- result ----------------------------------------------------------------------------------------


def _indexes(indexes: Mapping[str, str] | None, m: Matrix) -> tuple[str, str]:
    """The PyTorch and OpenMMLab bases: the spec's, else the data's defaults."""
    idx = dict(indexes or {})
    pytorch = (idx.get("pytorch") or m.sources["pytorch_index_default"]).rstrip("/")
    return pytorch, (idx.get("openmmlab") or m.sources["openmmlab_default"]).rstrip("/")


def _arch_list(pick: _Pick, t: _Facts, m: Matrix, reasons: list[str]) -> str | None:
    if pick.cuda is None:
        return None
    out = []
    for cc in t.ccs:
        window = m.cc_windows.get(cc)
        first = window[0] if window else None
        if first and _mm(first) > _mm(pick.cuda):
            # nvcc X.Y does not know this GPU yet: build the newest same-major arch it knows (runs as SASS)
            # prefer the archs torch itself ships (8.6, not the Jetson-only 8.7)
            shipped = [a.removesuffix("+PTX") for a in (pick.arch_row.arch_list if pick.arch_row else ())]
            pool = shipped or list(m.cc_windows)
            known = [c for c in pool if _mm(c)[0] == _mm(cc)[0] and _mm(c) < _mm(cc)
                     and (m.cc_windows.get(c, (None,))[0] is None
                          or _mm(m.cc_windows[c][0] or "0.0") <= _mm(pick.cuda))]
            if known:
                best = max(known, key=_mm)
                reasons.append(f"TORCH_CUDA_ARCH_LIST {best} for sm_{cc.replace('.', '')}: nvcc {pick.cuda} "
                               f"predates compute capability {cc} (first in CUDA {first}) "
                               f"[{window[2] if window else ''}]")
                out.append(best)
                continue
        out.append(cc)
    if out:
        return ";".join(dict.fromkeys(out))
    return pick.arch_row.text if pick.arch_row else None


def _req_ok(text: str) -> bool:
    try:
        Requirement(text)
    except InvalidRequirement:
        return False
    return True


def _dates_used(pick: _Pick) -> list[tuple[str, str | None]]:
    """(table, the row's checked date or None for the file's) for each fact the pick stands on."""
    out: list[tuple[str, str | None]] = []
    if pick.torch is not None:
        out.append(("torch", pick.torch.checked))
    if pick.cuda:
        out.append(("nvidia", None))
        if pick.arch_row is not None:
            out.append(("torch_arch", pick.arch_row.checked))
    if pick.verdict is not None and pick.verdict.arch_note:
        out.append(("gpus", None))
    if pick.mmcv is not None:
        out.append(("mmcv", None))
    out += [("openmmlab", pkg.checked) for pkg in pick.mm.values()]
    if pick.cupy is not None:
        out.append(("cupy", None))
    if pick.numpy is not None or pick.numpy_specs:
        out.append(("numpy", None))
    return out


def _knowledge(m: Matrix, pick: _Pick | None, today: dt.date | None) -> dict[str, Any]:
    """When the facts this answer stands on were last checked: per table, oldest, newest, age in days."""
    used: dict[str, list[str]] = {}
    # no pick (a conflict): every table was consulted; a pick with no table of its own stands on torch's
    wanted = ([(name, None) for name in m.tables] if pick is None
              else _dates_used(pick) or [("torch", None)])
    for table, row_date in wanted:
        d = row_date or m.checked(table)
        if d:
            used.setdefault(table, []).append(d)
    tables = {k: min(v) for k, v in sorted(used.items())}
    dates = [d for v in used.values() for d in v]
    oldest, newest = (min(dates), max(dates)) if dates else (None, None)
    age = (today - dt.date.fromisoformat(oldest)).days if today and oldest else None
    return {"checked": oldest, "oldest": oldest, "newest": newest, "age_days": age, "tables": tables,
            "today": today.isoformat() if today else None, "stale_after_days": STALE_DAYS}


def _stale_warning(knowledge: Mapping[str, Any], warnings: list[str]) -> None:
    age = knowledge.get("age_days")
    if age is not None and age > STALE_DAYS:
        warnings.append(f"envbuild's compatibility knowledge used here was last checked "
                        f"{knowledge['oldest']} ({age} days ago): newer releases or fixes may be missing; "
                        "run "
                        "`envbuild data update` to refresh it.")


class _Builder:
    """Turns a pick into a Resolution: pins, reasons citing sources, warnings, source builds."""

    NV_SRC = NV_SRC

    def __init__(self, pick: _Pick, wants: dict[str, _Want], t: _Facts, m: Matrix,
                 indexes: Mapping[str, str] | None, *, prefer_pypi: bool = True,
                 today: dt.date | None = None) -> None:
        self.p, self.w, self.t, self.m = pick, wants, t, m
        self.prefer_pypi = prefer_pypi
        self.target: Profile | None = None
        self.pytorch, self.openmmlab = _indexes(indexes, m)
        self.packages: dict[str, str] = {}
        self.choices: list[dict[str, Any]] = []
        self.reasons: list[str] = []
        self.warnings: list[str] = []
        self.source_builds: list[SourceBuild] = []
        self.index_urls: list[str] = []
        self.find_links: list[str] = []
        self.implied: list[dict[str, Any]] = []
        self.today = today

    def choose(self, pkg: str, version: str, reason: str, source: str, *, pin: bool = True) -> None:
        if pin:
            self.packages[pkg] = version
        self.choices.append({"package": pkg, "version": version, "reason": reason, "source": source})
        self.reasons.append(f"{pkg} {version}: {reason} [{source}]")

    def build(self, target: Profile, passthrough: list[str]) -> Resolution:
        self.target = target
        self._python_cuda(target)
        self._torch()
        self._mmcv()
        for name in MM:
            self._mm(name)
        self._cupy_numpy()
        arch = _arch_list(self.p, self.t, self.m, self.reasons)
        gcc_max = self.m.gcc_max(self.p.cuda) if self.p.cuda else None
        for sb in self.source_builds:
            if arch:
                sb.env["TORCH_CUDA_ARCH_LIST"] = arch
            if self.p.cuda is None:
                sb.env.pop("FORCE_CUDA", None)
        self._toolchain_warnings(gcc_max)
        sb_names = {sb.name for sb in self.source_builds}
        for sb in self.source_builds:
            self.packages[sb.name] = sb.version
        reqs = [f"{k}{_extras(self.w.get(k))}=={v}" for k, v in self.packages.items() if k not in sb_names]
        reqs += self._implied(passthrough)
        reqs += list(passthrough)
        knowledge = _knowledge(self.m, self.p, self.today)
        _stale_warning(knowledge, self.warnings)
        return Resolution(
            ok=True, python=self.p.python, cuda=self.p.cuda, packages=self.packages, requirements=reqs,
            source_builds=self.source_builds, index_urls=self.index_urls, find_links=self.find_links,
            build={"nvcc": self.p.cuda, "gcc_max": gcc_max, "torch_cuda_arch_list": arch},
            reasons=self.reasons, warnings=self.warnings, conflicts=[], choices=self.choices,
            target=target.to_dict(), implied=self.implied, knowledge=knowledge,
            verdict=self.p.verdict.to_dict() if self.p.verdict else {})

    def _implied(self, passthrough: Sequence[str]) -> list[str]:
        """Bounds the chosen packages imply: reasons + ``implied`` entries; requirements for unpinned ones."""
        bounds = _implied_bounds(self.p, self.w, self.m)
        if self.p.cupy is not None:  # CuPy's own numpy range (its metadata): already inside the numpy pin
            cpkg, cv = self.p.cupy
            crel = self.m.cupy_releases.get(cv)
            if crel is not None:
                bounds.append({"package": "numpy", "spec": crel.numpy, "by": f"{cpkg.package} {cv}",
                               "reason": f"{cpkg.package} {cv} declares numpy{crel.numpy} (install_requires)",
                               "evidence": [], "source": crel.source})
        extra: dict[str, list[str]] = {}
        for b in bounds:
            pinned = self.packages.get(b["package"])
            ev = f"; evidence: {', '.join(b['evidence'])}" if b["evidence"] else ""
            self.reasons.append(f"{b['package']}{b['spec']}: implied by {b['by']}: {b['reason']}{ev} "
                                f"[{b['source']}]")
            entry = {k: b[k] for k in ("package", "spec", "by", "reason", "evidence", "source")}
            entry["pinned"] = pinned
            self.implied.append(entry)
            if pinned is None:
                extra.setdefault(b["package"], []).append(b["spec"])
        named = {str(canonicalize_name(Requirement(r).name)) for r in passthrough if _req_ok(r)}
        out = []
        for pkg, specs in extra.items():
            spec = ",".join(dict.fromkeys(specs))
            if pkg in named:
                self.warnings.append(f"{pkg} is in your requirements without a version the data checks; the "
                                     f"chosen packages need {pkg}{spec} (see implied)")
            out.append(f"{pkg}{spec}")
        return out

    def _python_cuda(self, target: Profile) -> None:
        p, t, m = self.p, self.t, self.m
        if t.python and target.python_version:
            py_why = "the target's Python"
        elif t.prefer_python is not None and p.python == t.prefer_python:
            py_why = "the target does not say; envbuild's own Python fits every pin"
        else:
            py_why = "the target does not say; newest Python the chosen packages all support"
        self.reasons.append(f"python {p.python}: {py_why}")
        v = p.verdict
        rule = f" (rule: {v.rule})" if v is not None else ""
        if p.cuda and t.driver:
            how = ("natively" if p.support == "native"
                   else f"through minor-version compatibility (>= {m.compat_min_driver(p.cuda)}; torch's "
                        "CUDA wheels bundle their runtime, so the CUDA major's floor is what counts; "
                        "no PTX JIT)")
            self.reasons.append(
                f"CUDA {p.cuda}: driver {t.driver} runs CUDA <= {m.native_cuda(t.driver)} natively; CUDA "
                f"{p.cuda} needs >= {m.min_driver(p.cuda)}, so it runs {how}{rule} [{self.NV_SRC}]")
        elif p.cuda and t.driver_cuda:
            self.reasons.append(f"CUDA {p.cuda}: the profile says the driver runs CUDA <= {t.driver_cuda} "
                                f"(its version is unknown; CUDA {p.cuda} needs >= {m.min_driver(p.cuda)}) "
                                f"[{self.NV_SRC}]")
        elif p.cuda:
            self.warnings.append(f"the target's driver is unknown: CUDA {p.cuda} needs driver >= "
                                 f"{m.min_driver(p.cuda)}; check with nvidia-smi (or pass --driver).")
        if v is not None:
            self._unverified_warnings(v)

    def _unverified_warnings(self, v: Verdict) -> None:
        """An unverified fact is never used silently (it is only chosen when nothing confirmed fits)."""
        p, rel = self.p, self.p.torch
        if rel is not None and p.variant in rel.unverified:
            self.warnings.append(
                f"torch {rel.version}+{p.variant} is not confirmed by a read source "
                f"({rel.confidence or 'a ? cell'}); "
                "no confirmed build fits this target and your pins: check that the wheel exists on "
                f"{self.pytorch}/{p.variant} before relying on it.")
        for f in v.unverified:
            self.warnings.append(f"{f.text}: this fact is {f.confidence} [{f.source}]; "
                                 "`envbuild data update` may confirm it.")

    def _pypi_default(self) -> tuple[bool, str | None]:
        """Whether the chosen CUDA build is the plain PyPI wheel (and why not, when that matters)."""
        p, rel, target = self.p, self.p.torch, self.target
        if rel is None or p.variant is None or rel.pypi_cuda is None or not self.prefer_pypi:
            return False, None
        if rel.pypi_cuda != p.cuda:
            return False, (f"torch {rel.version}'s default wheel on PyPI is the CUDA {rel.pypi_cuda} build "
                           f"[{rel.pypi_source}]: the {p.variant} build comes from the PyTorch index")
        if target is not None and (target.os, target.arch) != ("linux", "x86_64"):
            return False, None  # the data describes the Linux x86_64 wheels only
        for dom, ver in (("torch", rel.version),
                         ("torchvision", p.domains.get("torchvision", rel.torchvision)),
                         ("torchaudio", p.domains.get("torchaudio", rel.torchaudio))):
            w = self.w.get(dom)
            if w is not None and ver and not _contains(w.spec, ver):
                # a pin naming the local label (torch==2.6.0+cu124) matches only the index's wheel
                return False, (f"{w.text} names the +{p.variant} wheel: taken from the PyTorch index "
                               f"although the plain PyPI wheel is the same CUDA {p.cuda} build")
        return True, None

    def _torch(self) -> None:
        p, rel = self.p, self.p.torch
        if rel is None:
            return
        label = p.variant or "cpu"
        kind = f"CUDA {p.cuda}" if p.cuda else "CPU"
        why = f"newest torch release with a {kind} build that fits the target and every requirement"
        v = p.verdict
        if v is not None:
            why += f"; {v.reason} (rule: {v.rule})"
        if p.variant in rel.unverified:
            why += f" ({label} for {rel.version} is not confirmed by a read source: see warnings)"
        from_pypi, note = self._pypi_default()
        suffix = "" if from_pypi else f"+{label}"
        if from_pypi:
            why += f"; the plain PyPI wheel is this CUDA {p.cuda} build (no extra index)"
        self.choose("torch", f"{rel.version}{suffix}", why, rel.source)
        if v is not None:
            self.choices[-1]["rule"] = v.rule
            self.choices[-1]["verdict"] = v.to_dict()
        newer = self._newer_legacy_build()
        if newer:
            self.reasons.append(f"torch {newer} is newer but built for an older CUDA major than the "
                                "driver's; builds of the driver's own CUDA major come first")
        if from_pypi:
            self.reasons.append(f"torch {rel.version}'s default wheel on PyPI is the CUDA {p.cuda} build "
                                f"(source: {rel.pypi_source}): no extra index needed")
        else:
            self.index_urls.append(f"{self.pytorch}/{label}")
            if note:
                self.reasons.append(note)
        arch_src = p.arch_row.source if p.arch_row else "envbuild/data/torch_arch.json"
        for note in p.arch_notes:
            self.reasons.append(f"GPU {note} [{arch_src}]")
        for dom in ("torchvision", "torchaudio"):
            have = p.domains.get(dom) or getattr(rel, dom)
            if dom in self.w and have:
                where = "; its PyPI wheel is built against that torch" if from_pypi else ""
                paired = have == getattr(rel, dom)
                what = (f"the release paired with torch {rel.version}" if paired
                        else f"a release whose Requires-Dist accepts torch {rel.version} (also usable: "
                             f"{', '.join(rel.domain_versions(dom))})")
                self.choose(dom, f"{have}{suffix}", what + where, rel.source)

    def _newer_legacy_build(self) -> str | None:
        """A newer torch only runnable as an older-CUDA-major build (2.7.1+cu118 on a 12.4 driver)."""
        p, t, m = self.p, self.t, self.m
        only_torch = set(self.w) <= {"torch", "torchvision", "torchaudio", "numpy"}
        if p.torch is None or p.cuda is None or not t.driver or not only_torch:
            return None
        for rel in m.torch_releases():
            if Version(rel.version) <= Version(p.torch.version):
                return None
            for var in rel.all_variants:
                cuda = cuda_of_variant(var)
                tw = self.w.get("torch")
                fits = (_mm(cuda)[0] < _mm(p.cuda)[0] and m.driver_support(t.driver, cuda) == "native"
                        and p.python in rel.python
                        and (tw is None or _contains(tw.spec, f"{rel.version}+{var}"))
                        and all(_runs_on(m, rel, cuda, cc) for cc in t.ccs))
                if fits:
                    return f"{rel.version}+{var}"
        return None

    def _mmcv(self) -> None:
        p, m, rel = self.p, self.m, self.p.torch
        if p.mmcv is None or rel is None:
            return
        name, mv, prebuilt = p.mmcv
        src = next((w.source for w in m.mmcv if w.package == name), "envbuild/data/mmcv.json")
        dev = p.variant or "cpu"
        if prebuilt:
            fl = m.mmcv_find_links(self.openmmlab, p.cuda, rel.version)
            self.find_links.append(fl)
            self.choose(name, mv, f"newest {name} with a prebuilt wheel for {dev}/torch{rel.series} ({fl}) "
                                  "that the OpenMMLab pins accept", src)
            self.reasons.append(f"torch {rel.version} rather than a later {rel.series}.x: OpenMMLab "
                                f"compiles its wheels against torch {rel.series}.0 only "
                                f"[{m.sources.get('mmcv_find_links', '')}]")
            return
        reqs, rsrc = m.mmcv_requires(name, mv)
        pairs = ", ".join(f"cu{c.replace('.', '')}/torch{s}" for c, s in m.mmcv_pairs(name, mv) if c != "cpu")
        why = (f"no prebuilt {name} {mv} wheel for {dev}/torch{rel.series} (prebuilt: {pairs or 'none'}): "
               "it is compiled on the target after torch")
        self.choose(name, mv, why, src, pin=False)
        self.warnings.append(
            f"{name} {mv} has no prebuilt wheel for torch {rel.series} + {dev}: it will be built from "
            f"source on the target (slow; needs nvcc {p.cuda} and gcc <= {m.gcc_max(p.cuda or '')}). "
            f"Prebuilt wheels exist for: {pairs or 'none'}.")
        self.source_builds.append(SourceBuild(name, mv, list(reqs), {"FORCE_CUDA": "1", "MMCV_WITH_OPS": "1"},
                                              why, rsrc or src))

    def _mm(self, name: str) -> None:
        p = self.p
        pkg = p.mm.get(name)
        if pkg is None:
            if name in p.mm_unknown:
                v = p.mm_unknown[name]
                self.choose(name, v, "your pin (not in the data: its mmcv range is unchecked)",
                            "your requirement")
                self.warnings.append(
                    f"{name} {v} is not in envbuild's data: its mmcv/numpy pins were not checked.")
            return
        mmcv_txt = f"{p.mmcv[0]} {p.mmcv[1]}" if p.mmcv else "mmcv"
        req_txt = ", ".join(f"{k}{v}" for k, v in pkg.requires.items())
        pinned = name in self.w and self.w[name].pinned
        why = (("your pin" if pinned else f"newest {name} that accepts {mmcv_txt}")
               + f" (needs {req_txt})")
        if not pkg.build_from_source:
            self.choose(name, pkg.version, why, pkg.source)
            return
        why += "; its setup.py imports torch and compiles CUDA ops, so it is built on the target after torch"
        self.choose(name, pkg.version, why, pkg.source, pin=False)
        self.source_builds.append(SourceBuild(name, pkg.version, list(pkg.runtime), {"FORCE_CUDA": "1"},
                                              why, pkg.source))

    def _cupy_numpy(self) -> None:
        p, m = self.p, self.m
        if p.cupy is not None:
            pkg, cv = p.cupy
            crel = m.cupy_releases.get(cv)
            nps = f"; its numpy range {crel.numpy}" if crel else ""
            others = [f"{lab} {s}" for lab, s in p.numpy_specs if not lab.startswith(pkg.package)]
            fit = f" fits {', '.join(others)}" if others and crel else ""
            self.choose(pkg.package, cv,
                        f"newest CuPy wheel for CUDA {p.cuda} and Python {p.python}{nps}{fit}",
                        pkg.source)
            if _mm(pkg.cuda.lo)[0] <= 11:
                self.reasons.append(
                    f"{pkg.package} loads the CUDA {p.cuda} runtime from the system or a conda cudatoolkit="
                    f"{p.cuda}; another libcudart gives 'undefined symbol: cudaMemPoolCreate'")
        if p.numpy is not None:
            minor = next(n for n in m.numpy if p.numpy.startswith(n.minor + "."))
            pins = "; ".join(f"{lab}: numpy{s}" for lab, s in p.numpy_specs) or "no pins"
            self.choose("numpy", p.numpy, f"newest numpy for Python {p.python} (numpy {minor.minor} supports "
                        f"{minor.python.lo}-{minor.python.hi}) inside every pin ({pins})", minor.source)

    def _toolchain_warnings(self, gcc_max: int | None) -> None:
        p, t = self.p, self.t
        if p.cuda and t.toolkits:
            tks = [tk.version for tk in t.toolkits]
            if not any(_xy(v) == p.cuda for v in tks):
                built = ", ".join(sb.name for sb in self.source_builds) or "mmcv/mmdet3d-style extensions"
                where = next((tk.path for tk in t.toolkits if tk.path), None)
                self.warnings.append(
                    f"target nvcc {', '.join(tks)}{' at ' + where if where else ''} differs from torch's "
                    f"CUDA {p.cuda}: CUDA ops built there ({built}) will fail to load (e.g. "
                    f"'libcudart.so.{tks[0]}: cannot open shared object file') or be refused; install a "
                    f"CUDA {p.cuda} toolkit and point CUDA_HOME at it before building.")
        elif p.cuda and self.source_builds:
            self.warnings.append(f"source builds need nvcc {p.cuda} on the target; the target lists no CUDA "
                                 "toolkit (install one and set CUDA_HOME).")
        if gcc_max is not None and t.gcc and self.source_builds:
            m = re.match(r"\d+", t.gcc)
            if m and int(m.group(0)) > gcc_max:
                self.warnings.append(
                    f"target gcc {t.gcc} is newer than nvcc {p.cuda} accepts (gcc <= {gcc_max}): "
                    f"install gcc-{gcc_max} and export CC/CXX for the source builds.")


def resolve(requirements: Sequence[str], target: Profile, matrix: Matrix | None = None,
            *, indexes: Mapping[str, str] | None = None, prefer_pypi: bool = True,
            native_driver_only: bool = False, today: dt.date | None = None,
            cuda: str | None = None, prefer_python: str | None = None) -> Resolution:
    """Pick the newest consistent set for ``target`` (``ok=False`` + ``conflicts`` when none exists).

    With ``prefer_pypi`` a CUDA build that is the release's plain PyPI wheel (torch 2.6.0 = CUDA 12.4) is
    pinned without its local label and needs no PyTorch index; otherwise ``torch==X+cuYYY`` + index.
    ``native_driver_only`` refuses builds that run only through minor-version compatibility (the strict
    rule).  ``today`` (from the caller: the resolver reads no clock) dates the answer's ``knowledge``.
    ``cuda`` is a PEP 440 specifier the chosen CUDA must satisfy (a spec's conda ``cudatoolkit=11.8``).
    ``prefer_python`` (from the caller: the resolver reads no host) is tried first when the target names
    no Python; callers that lock pass envbuild's own (``envbuild.target.host_python``).
    Use ``check`` to turn ``ok=False`` into the one conflict error.

    Raises:
        InputError: a requirement is not PEP 508.
        ProfileError: the target's driver version is malformed.
    """
    m = matrix or load_matrix()
    wants, passthrough = _parse(requirements)
    t = dataclasses.replace(_Facts.of(target, prefer_python), cuda_spec=cuda or None)
    compat = not native_driver_only
    pypi = prefer_pypi and (target.os, target.arch) == ("linux", "x86_64")
    modes = [_Mode(compat, False, pypi)]
    if any(n in wants for n in ("mmcv-full", "mmcv", *MM)):
        modes += [_Mode(compat, True, pypi)]
    logs: list[_Log] = []
    shared: dict[str, Any] = {}
    for mode in modes:
        log = _Log()
        pick = _Search(wants, t, m, mode, log, shared).run()
        if pick is not None:
            return _Builder(pick, wants, t, m, indexes, prefer_pypi=prefer_pypi,
                            today=today).build(target, passthrough)
        logs.append(log)
    # Explain with the prebuilt-wheel pass (those are the answers users expect).
    best = logs[0]
    conflicts = _explain(best, wants, t, m)
    knowledge = _knowledge(m, None, today)
    warnings: list[str] = []
    _stale_warning(knowledge, warnings)
    return Resolution(ok=False, python=t.python or "", cuda=None, requirements=list(requirements),
                      conflicts=conflicts, target=target.to_dict(), warnings=warnings, knowledge=knowledge,
                      reasons=[f"searched {len(m.torch)} torch releases x CUDA variants x CuPy x NumPy; "
                               "nothing satisfies every requirement on this target"])


# --- the conflict error --------------------------------------------------------------------------


def check(res: Resolution, *, path: str | None = None, hint: str | None = None) -> Resolution:
    """``res`` when it is consistent: the one place the no-consistent-set error is worded.

    Raises:
        ConflictError: ``res.ok`` is false (its conflict sentences attached; ``path``/``hint`` name the
            input).  The class stays ConflictError: ``--json`` names it in ``error``.
    """
    if not res.ok:
        texts = res.conflict_texts
        raise ConflictError("no consistent set of versions exists for this target: " + " ".join(texts),
                            conflicts=texts, path=path, hint=hint)
    return res
