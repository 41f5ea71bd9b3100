"""What the data says for a diagnosis: matrix queries, library kinds, and the template context.

The context (``ctx``) is the dict every cause/fix template is filled from: ``target_*`` from the
profile, ``env_*`` from the checked env, the log's regex groups, and the fields derived from them
with ``envbuild.matrix`` (the driver a CUDA needs, the gcc nvcc accepts, the torch that fits).
Both the log rules (``rules``) and the env checks (``checks``) build it here.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from packaging.version import Version

from envbuild import elf
from envbuild.errors import DataError
from envbuild.models import Profile, loose_version, loose_xy
from envbuild.probe import cuda_version_from_int

if TYPE_CHECKING:
    from collections.abc import Mapping

    from envbuild.matrix import Matrix, Verdict

# library_kind of a missing library -> its family (the NVIDIA/torch ones keep the stable id)
LIB_FAMILY = {
    "nvidia-cuda": "cuda-lib-missing",
    "nvidia-driver": "cuda-lib-missing",
    "torch": "cuda-lib-missing",
    "package": "lib-missing",
    "system": "lib-missing",
    "unknown": "lib-missing",
}


# --- compatibility facts (read through envbuild.matrix) ----------------------------------------


ver = loose_version
mm = loose_xy


class Facts:
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
        c = mm(cuda)
        return None if self.m is None or c is None else self.m.gcc_max(c)

    def min_driver(self, cuda: str | None) -> str | None:
        """Lowest Linux driver that runs CUDA ``cuda`` natively."""
        c = mm(cuda)
        return None if self.m is None or c is None else self.m.min_driver(c)

    def torch_driver_verdict(self, torch: str | None, cuda: str | None, profile: Profile,
                             cc: str | None) -> Verdict | None:
        """``Matrix.torch_driver_verdict`` for a torch build on the profile's driver (None without data)."""
        c = mm(cuda)
        if self.m is None or c is None:
            return None
        gpu = profile.gpus[0].name if profile.gpus else None
        return self.m.torch_driver_verdict(torch if torch and ver(torch) else c, c,
                                           driver=profile.driver_version,
                                           driver_cuda=profile.driver_cuda_version, cc=cc, gpu=gpu)

    def torch_variants(self, torch: str | None) -> list[str]:
        """cuXYZ builds of a torch release (confirmed and believed), oldest CUDA first."""
        if self.m is None or not torch or ver(torch) is None:
            return []
        return list(reversed(self.m.variants(torch)))

    def torch_archs(self, torch: str | None, cuda: str | None) -> list[elf.GpuCode]:
        c = mm(cuda)
        if self.m is None or not torch or ver(torch) is None or c is None:
            return []
        row = self.m.arch_row(torch, c)
        return _parse_arch_list(";".join(row.arch_list)) if row else []

    def gpu_cc(self, name: str) -> str | None:
        g = None if self.m is None else self.m.gpu(name)
        return None if g is None else str(g.compute_capability)

    def cupy_package(self, cuda: str | None) -> str | None:
        c = mm(cuda)
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
def data_facts() -> Facts:
    return Facts(lazy=True)


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
class LazyModule:
    package: str
    glob: str
    feature: str
    source: str


@lru_cache(maxsize=1)
def _libs_data() -> tuple[tuple[tuple[re.Pattern[str], LibKind], ...], tuple[LazyModule, ...]]:
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
        LazyModule(
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


def lazy_module(relpath: str) -> LazyModule | None:
    """The curated entry when ``relpath`` (under site-packages) is a module its package loads lazily."""
    import fnmatch

    for lz in _libs_data()[1]:
        if fnmatch.fnmatch(relpath, lz.glob):
            return lz
    return None


# --- context: what the log, the env and the profile say ---------------------------------------


def _tag(cuda: str | None) -> str | None:
    from envbuild.matrix import variant_of_cuda  # matrix loads lazily: a healthy env never asks

    c = mm(cuda)
    return None if c is None else variant_of_cuda(c)


def profile_ctx(profile: Profile | None, facts: Facts) -> dict[str, Any]:
    ctx: dict[str, Any] = {}
    if profile is None:
        return ctx
    ctx["target_driver"] = profile.driver_version
    ctx["target_driver_cuda"] = mm(profile.driver_cuda_version)
    if profile.gpus:
        g = profile.gpus[0]
        cc = g.compute_capability or facts.gpu_cc(g.name)
        ctx["target_gpu"] = g.name
        if cc:
            ctx["target_cc"] = cc
            ctx["target_sm"] = "sm_" + cc.replace(".", "")
    if profile.cuda_toolkits:
        tk = profile.cuda_toolkits[0]
        ctx["target_toolkit"] = mm(tk.version)
        ctx["target_toolkit_path"] = tk.path
        gm = facts.gcc_max(tk.version)
        ctx["target_toolkit_gcc_max"] = gm
    if profile.gcc_version:
        ctx["target_gcc"] = profile.gcc_version
    return ctx


def env_ctx(env: Mapping[str, Any] | None) -> dict[str, Any]:
    ctx: dict[str, Any] = {}
    if not env:
        return ctx
    torch = env.get("torch") or {}
    if torch.get("version"):
        ctx["env_torch"] = torch["version"]
        ctx["env_torch_base"] = str(ver(torch["version"]))
    if torch.get("cuda"):
        ctx["env_torch_cuda"] = mm(torch["cuda"])
    for d in env.get("dists") or []:
        if d["name"] in ("numpy", "mmcv", "mmcv-full", "mmdet", "mmdet3d", "yapf", "setuptools"):
            ctx["env_" + d["name"].replace("-", "_")] = d["version"]
        if d["name"].startswith("cupy"):
            ctx["env_cupy"] = f"{d['name']}=={d['version']}"
    return ctx


def derive(ctx: dict[str, Any], facts: Facts) -> None:
    """Fill the derived template fields from the raw ones (log groups win over env/profile)."""
    if ctx.get("driver_cuda_int"):
        ctx.setdefault("driver_cuda", cuda_version_from_int(int(ctx["driver_cuda_int"])))
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
    dc, tc = ver(ctx.get("driver_cuda")), ver(ctx.get("torch_cuda"))
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


def _derive_log(ctx: dict[str, Any], facts: Facts) -> None:
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
        gv = ver(ctx.get("target_gcc"))
        if gv is not None and gv.major > int(ctx["gcc_max_log"]):
            ctx["gcc_too_new"] = ctx["target_gcc"]


def _cu_version(tag: str) -> Version:
    """'cu113' -> 11.3; a tag that names no CUDA ('cpu') sorts first."""
    from envbuild.matrix import cuda_of_variant

    return Version(cuda_of_variant(tag)) if tag[2:].isdigit() and len(tag) >= 4 else Version("0")


