"""The compatibility matrix: the ONLY reader of ``envbuild/data/*.json``.

``load_matrix()`` reads and validates every data file once (cached) into frozen
records and offers the queries the resolver, ``envbuild matrix`` and the other
stages need (torch variants, driver minimums, wheel arch lists, GPU names,
mmcv wheels, CuPy packages, NumPy <-> Python).  A malformed file raises
``DataError`` naming the file, the row and the field.
"""

from __future__ import annotations

import difflib
import functools
import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version

from envbuild.errors import DataError
from envbuild.models import Fact  # the one fact record (verdicts and conflicts stand on it)

__all__ = [
    "DATA_DIR",
    "ArchRow",
    "BuildFacts",
    "CupyPackage",
    "CupyRelease",
    "Fact",
    "FindingFamily",
    "GpuDriverRule",
    "GpuModel",
    "Implied",
    "Matrix",
    "MmPackage",
    "MmcvWheels",
    "Names",
    "NumpyMinor",
    "Span",
    "TargetFacts",
    "TorchRelease",
    "Verdict",
    "confidence_level",
    "cuda_of_variant",
    "data_path",
    "default_indexes",
    "digit_version",
    "finding_families",
    "load_doctor_rules",
    "load_matrix",
    "load_names",
    "load_table",
    "major_minor",
    "matrix_table",
    "normalize_gpu_name",
    "user_data_dir",
    "variant_of_cuda",
    "vers",
    "xy",
]

DATA_DIR = Path(__file__).parent / "data"
TABLES = ("torch", "torch_arch", "nvidia", "gpus", "mmcv", "openmmlab", "cupy", "numpy")


def user_data_dir() -> Path:
    """The user knowledge cache written by ``envbuild data update``: $ENVBUILD_DATA_DIR, else
    $XDG_CACHE_HOME/envbuild/data, else ~/.cache/envbuild/data (facts in its ``facts/``)."""
    env = os.environ.get("ENVBUILD_DATA_DIR")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "envbuild" / "data"


def _checked_of(path: Path) -> str | None:
    """The header's ``checked`` date without parsing the whole file (it is within the first lines)."""
    try:
        with path.open("rb") as fh:
            head = fh.read(512).decode("utf-8", "replace")
    except OSError:
        return None
    m = re.search(r'"checked":\s*"(\d{4}-\d\d-\d\d)"', head)
    return m.group(1) if m else None


def data_path(name: str) -> tuple[Path, str]:
    """(file, 'bundled' | 'user cache'): the user cache's copy wins when its ``checked`` date is newer.

    An unreadable user copy is ignored here (the bundled file is used) rather than failing every command.
    """
    bundled = DATA_DIR / f"{name}.json"
    user = user_data_dir() / "facts" / f"{name}.json"
    if user.is_file():
        uc, bc = _checked_of(user), _checked_of(bundled)
        if uc and (bc is None or uc > bc):  # ISO dates compare as strings
            return user, "user cache"
    return bundled, "bundled"


def vers(text: str) -> Version:
    """A Version from text like '470.223.02', '12.4' or '1.10.0+cu113' (local label kept)."""
    return Version(text.strip().lstrip(">= "))


def cuda_of_variant(variant: str) -> str:
    """'cu113' -> '11.3', 'cu92' -> '9.2', 'cu130' -> '13.0'."""
    digits = variant[2:]
    return f"{digits[:-1]}.{digits[-1]}"


def variant_of_cuda(cuda: str) -> str:
    """'11.3' -> 'cu113'."""
    major, minor = cuda.split(".")[:2]
    return f"cu{major}{minor}"


@functools.lru_cache(maxsize=4096)
def _mm(v: str) -> tuple[int, int]:
    parts = [int(x) for x in re.findall(r"\d+", v)[:2]]
    return (parts[0], parts[1] if len(parts) > 1 else 0)


major_minor = _mm  # the one 'X.Y[.Z]' -> (X, Y) converter (resolve and target use it too)


@dataclass(frozen=True)
class Span:
    """An inclusive X.Y range (CUDA versions, Python minors, compute capabilities); patch levels do not
    count.  The one rule for 'is 11.3 within 11.0-11.8', used by every record that carries a range."""

    lo: str
    hi: str

    def covers(self, v: str) -> bool:
        return _mm(self.lo) <= _mm(v) <= _mm(self.hi)

    @property
    def single(self) -> bool:
        """One X.Y only (cupy-cuda113 is, cupy-cuda12x is not)."""
        return self.lo == self.hi


def xy(v: str) -> str:
    """'11.3.1' -> '11.3', '8.6' -> '8.6', '3.10.4' -> '3.10'."""
    a, b = _mm(v)
    return f"{a}.{b}"


_Runtime = tuple[str, str, tuple[str, ...], str]


def confidence_level(text: str | None) -> str:
    """'confirmed', 'inferred', 'secondary' or 'unverified' from a row's free-text ``confidence``."""
    t = (text or "").lower()
    for level in ("unverified", "inferred", "secondary"):
        if t.startswith(level) or f" {level}" in t or f"({level}" in t:
            return level
    return "confirmed"


def digit_version(text: str) -> list[int]:
    """OpenMMLab's own ``digit_version`` (mmdet 2.x / mmseg 0.x ``__init__``): '1.4.0' -> [1, 4, 0],
    '2.0.0rc4' -> [2, 0, -1, 4].  Their mmcv checks compare these lists, not PEP 440 versions."""
    out: list[int] = []
    for x in text.split("+")[0].split("."):
        if x.isdigit():
            out.append(int(x))
        elif "rc" in x:
            head, _, tail = x.partition("rc")
            out.append(int(head or 0) - 1)
            out.append(int(tail or 0))
    return out


@functools.lru_cache(maxsize=8192)
def _digit_contains(spec: str, version: str) -> bool:
    """``version`` in ``spec`` compared the way ``digit_version`` compares (a list compare)."""
    have = digit_version(version)
    ops = {">=": lambda a, b: a >= b, "<=": lambda a, b: a <= b, ">": lambda a, b: a > b,
           "<": lambda a, b: a < b, "==": lambda a, b: a == b, "!=": lambda a, b: a != b}
    for part in (x.strip() for x in spec.split(",") if x.strip()):
        m = re.fullmatch(r"(>=|<=|==|!=|>|<)\s*(\S+)", part)
        if m is None:
            return SpecifierSet(spec).contains(version, prereleases=True)
        if not ops[m.group(1)](have, digit_version(m.group(2))):
            return False
    return True

# --- records -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TorchRelease:
    version: str
    torchvision: str | None
    torchaudio: str | None
    variants: tuple[str, ...]  # confirmed cuXYZ
    unverified: tuple[str, ...]  # believed to exist, no source lists them
    cpu: bool
    python: tuple[str, ...]
    source: str
    confidence: str | None = None
    pypi_cuda: str | None = None  # CUDA of the plain `pip install torch==X` wheel on PyPI (Linux x86_64)
    pypi_source: str | None = None
    # a torch release can pair with more than one torchvision/torchaudio (their Requires-Dist say so)
    torchvision_compatible: tuple[str, ...] = ()
    torchaudio_compatible: tuple[str, ...] = ()
    released: str | None = None
    checked: str | None = None

    def domain_versions(self, package: str) -> tuple[str, ...]:
        """torchvision / torchaudio releases usable with this torch, the paired one first."""
        primary = getattr(self, package)
        extra = self.torchvision_compatible if package == "torchvision" else self.torchaudio_compatible
        return tuple(dict.fromkeys([*([primary] if primary else []), *extra]))

    @property
    def series(self) -> str:
        """'1.10.2' -> '1.10'."""
        v = vers(self.version)
        return f"{v.major}.{v.minor}"

    @property
    def all_variants(self) -> tuple[str, ...]:
        """Confirmed and unverified cuXYZ variants, newest CUDA first."""
        vs = set(self.variants) | set(self.unverified)
        return tuple(sorted(vs, key=lambda s: _mm(cuda_of_variant(s)), reverse=True))


@dataclass(frozen=True)
class ArchRow:
    torch: str
    cuda: str
    arch_list: tuple[str, ...]  # "7.0", "12.0+PTX"
    source: str
    confidence: str | None = None
    checked: str | None = None

    @property
    def text(self) -> str:
        return ";".join(self.arch_list)


@dataclass(frozen=True)
class GpuModel:
    name: str
    compute_capability: str
    architecture: str
    source: str
    confidence: str | None
    key: str


@dataclass(frozen=True)
class MmcvWheels:
    package: str
    cuda: str  # "11.3" or "cpu"
    torch_series: str  # "1.10"
    versions: tuple[str, ...]
    source: str


@dataclass(frozen=True)
class Implied:
    """A bound a package implies on another one it does not declare (mmdet3d 1.4.0 -> numpy<1.24)."""

    package: str
    spec: str
    reason: str
    source: str
    evidence: tuple[str, ...] = ()  # "path:line name"
    checked: str | None = None


@dataclass(frozen=True)
class MmPackage:
    name: str
    version: str
    requires: Mapping[str, str]
    source: str
    numpy: str | None = None
    python_max: str | None = None
    runtime: tuple[str, ...] = ()
    build_from_source: bool = False
    implied: tuple[Implied, ...] = ()
    compare: str | None = None  # "digit_version": the package's own check compares digit lists
    checked: str | None = None

    def accepts(self, package: str, version: str) -> bool:
        """Does this release's own version check accept ``package==version``?"""
        spec = self.requires.get(package)
        if spec is None:
            return True
        if self.compare == "digit_version":
            return _digit_contains(spec, version)
        return SpecifierSet(spec).contains(version, prereleases=True)


@dataclass(frozen=True)
class CupyPackage:
    """A CuPy wheel package (cupy-cuda113, cupy-cuda12x): the CUDA range it is built for, its releases."""

    package: str
    cuda: Span
    versions: tuple[str, ...]
    python_by_version: Mapping[str, tuple[str, ...]]  # release -> Python minors with a wheel
    source: str


@dataclass(frozen=True)
class CupyRelease:
    """One CuPy release's own requirements (every wheel package of it shares them)."""

    version: str
    numpy: str  # its numpy requirement, a specifier
    requires_python: str | None
    source: str


@dataclass(frozen=True)
class NumpyMinor:
    """A NumPy minor series: the Pythons its releases support and its newest patch."""

    minor: str
    python: Span
    latest: str
    source: str


@dataclass(frozen=True)
class AbiRule:
    """Wheels of ``package`` in ``versions`` were built against NumPy 1.x, so they need ``numpy``."""

    package: str
    versions: str
    numpy: str
    source: str


@dataclass(frozen=True)
class GpuDriverRule:
    """Driver branches that know a GPU generation: ``min_driver`` and/or last branch ``max_branch``."""

    architecture: str
    cc: Span
    min_driver: str | None
    max_branch: int | None
    source: str
    confidence: str | None = None


@dataclass(frozen=True)
class BuildFacts:
    """A package build as the verdict sees it.

    ``bundles_runtime``: the wheel carries its own CUDA runtime (torch's CUDA wheels, cupy-cuda12x),
    so minor-version compatibility applies; ``source_build``: compiled on the target by its nvcc.
    """

    cuda: str | None
    bundles_runtime: bool = True
    arch: ArchRow | None = None
    source_build: bool = False
    label: str = "the build"


@dataclass(frozen=True)
class TargetFacts:
    driver: str | None = None
    driver_cuda: str | None = None  # "CUDA <= X.Y" when only that is known
    cc: str | None = None
    gpu: str | None = None
    nvcc: str | None = None


@dataclass(frozen=True)
class Verdict:
    """Can this build run on that target?  ``rule`` names what decided it.

    Rules: ``cpu`` (no CUDA), ``native-driver`` (the driver supports the build's CUDA itself),
    ``minor-version-compat`` (a bundled runtime on a driver meeting its CUDA major's floor),
    ``source-build`` (compiled by the target's nvcc), ``driver-unknown`` (nothing to check);
    refusals: ``driver-too-old``, ``gpu-driver-branch``, ``cuda-predates-gpu``, ``no-sass``,
    ``ptx-needs-native-driver``, ``nvcc-mismatch``.
    """

    ok: bool
    rule: str
    reason: str
    facts: tuple[Fact, ...] = ()
    arch_note: str | None = None

    @property
    def support(self) -> str | None:
        """'native', 'compat' or None (the resolver's older vocabulary)."""
        return {"native-driver": "native", "minor-version-compat": "compat"}.get(self.rule)

    @property
    def unverified(self) -> tuple[Fact, ...]:
        """Facts the verdict used that no primary source confirms (never to be used silently)."""
        return tuple(f for f in self.facts if f.confidence != "confirmed")

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "rule": self.rule, "reason": self.reason,
                "facts": [f.to_dict() for f in self.facts]}


@dataclass(frozen=True)
class Matrix:
    """Every compatibility fact envbuild knows, validated; query it through the methods."""

    torch: tuple[TorchRelease, ...]
    arch: tuple[ArchRow, ...]
    driver_min: Mapping[str, tuple[str, str]]  # cuda -> (min driver, source)
    compat_min: Mapping[int, tuple[str, str]]  # cuda major -> (min driver, source)
    gcc: Mapping[str, tuple[int, str, str | None]]  # cuda -> (max major, source, confidence)
    cc_windows: Mapping[str, tuple[str | None, str | None, str]]  # cc -> (first cuda, last cuda, source)
    gpus: tuple[GpuModel, ...]
    gpu_ignore: frozenset[str]
    mmcv: tuple[MmcvWheels, ...]
    mm: Mapping[str, tuple[MmPackage, ...]]  # mmdet / mmsegmentation / mmdet3d, oldest first
    cupy_packages: tuple[CupyPackage, ...]
    cupy_releases: Mapping[str, CupyRelease]
    numpy: tuple[NumpyMinor, ...]  # oldest first
    abi: tuple[AbiRule, ...]
    mmcv_runtime: tuple[_Runtime, ...] = ()  # (package, versions, requires, source)
    gpu_driver: tuple[GpuDriverRule, ...] = ()
    sources: Mapping[str, str] = field(default_factory=dict)  # named sources (index patterns, rules)
    pythons: tuple[str, ...] = ()  # tried when the target names no Python, newest first (names.json)
    tables: Mapping[str, Any] = field(default_factory=dict)  # raw JSON per file (read-only use)
    # (torch key, cuda) -> row, built on first use: the resolver asks a few hundred times per answer
    _arch_index: dict[tuple[str, str], ArchRow] = field(default_factory=dict, compare=False, repr=False)

    # torch ---------------------------------------------------------------------------------------
    def torch_releases(self) -> list[TorchRelease]:
        """Every torch release, newest first."""
        return sorted(self.torch, key=lambda r: vers(r.version), reverse=True)

    def torch_release(self, version: str) -> TorchRelease | None:
        base = vers(version).base_version
        for r in self.torch:
            if vers(r.version).base_version == base:
                return r
        return None

    def variants(self, torch: str) -> list[str]:
        """cuXYZ variants of a torch release (confirmed + unverified), newest CUDA first."""
        r = self.torch_release(torch)
        return list(r.all_variants) if r else []

    def arch_row(self, torch: str, cuda: str) -> ArchRow | None:
        """Wheel arch list of (torch version, CUDA X.Y): the exact version row, else its 'X.Y.x' row."""
        if not self._arch_index:
            for a in self.arch:
                self._arch_index.setdefault((a.torch, a.cuda), a)
        v = vers(torch)
        exact, series = v.base_version, f"{v.major}.{v.minor}.x"
        return self._arch_index.get((exact, cuda)) or self._arch_index.get((series, cuda))

    # NVIDIA --------------------------------------------------------------------------------------
    def min_driver(self, cuda: str) -> str | None:
        """Lowest Linux driver that runs CUDA ``X.Y`` natively (None when unknown)."""
        hit = self.driver_min.get(f"{_mm(cuda)[0]}.{_mm(cuda)[1]}")
        return hit[0] if hit else None

    def native_cuda(self, driver: str) -> str | None:
        """Newest CUDA minor the driver supports natively."""
        d = vers(driver)
        ok = [c for c, (m, _) in self.driver_min.items() if vers(m) <= d]
        return max(ok, key=_mm) if ok else None

    def compat_min_driver(self, cuda: str) -> str | None:
        """Driver needed to run any CUDA of this major through minor-version compatibility (11+)."""
        hit = self.compat_min.get(_mm(cuda)[0])
        return hit[0] if hit else None

    def driver_support(self, driver: str, cuda: str) -> str | None:
        """'native', 'compat' (minor-version compatibility) or None: can this driver run CUDA X.Y?"""
        need = self.min_driver(cuda)
        if need is None:
            return None
        d = vers(driver)
        if d >= vers(need):
            return "native"
        cm = self.compat_min_driver(cuda)
        if cm is not None and d >= vers(cm):
            return "compat"
        return None

    def max_cuda(self, driver: str, *, compat: bool = True) -> str | None:
        """Newest CUDA the driver runs: natively, or (compat=True) through minor-version compatibility."""
        best = self.native_cuda(driver)
        if compat:
            d = vers(driver)
            for major, (m, _) in self.compat_min.items():
                if d >= vers(m):
                    top = max((c for c in self.driver_min if _mm(c)[0] == major), key=_mm, default=None)
                    if top and (best is None or _mm(top) > _mm(best)):
                        best = top
        return best

    def gcc_max(self, cuda: str) -> int | None:
        """Newest host gcc major nvcc X.Y accepts."""
        hit = self.gcc.get(f"{_mm(cuda)[0]}.{_mm(cuda)[1]}")
        return hit[0] if hit else None

    def checked(self, table: str) -> str | None:
        """The date a data file was last checked (its header)."""
        t = self.tables.get(table) or {}
        c = t.get("checked")
        return str(c) if c else None

    # the compatibility verdict -------------------------------------------------------------------
    def verdict(self, build: BuildFacts, target: TargetFacts, *, native_only: bool = False) -> Verdict:
        """Does ``build`` run on ``target``?  One rule for resolve, doctor and pack.

        A build that bundles its CUDA runtime runs where the driver meets its CUDA major's
        minor-version-compatibility floor (12.x >= 525.60.13, 13.x >= 580, 11.x >= 450.80.02) and the
        build has SASS for the GPU (same major, minor <= the GPU's); support through PTX only needs
        the native driver for that CUDA (JIT); a source build depends on the target's nvcc.
        ``native_only`` keeps the strict rule (the driver must support the build's CUDA itself).
        """
        facts: list[Fact] = []
        if build.cuda is None:
            return Verdict(True, "cpu", f"{build.label} is a CPU build (no CUDA)")
        cuda = f"{_mm(build.cuda)[0]}.{_mm(build.cuda)[1]}"
        rule, why = self._driver_rule(build, target, cuda, facts, native_only)
        if rule in ("driver-too-old", "nvcc-mismatch"):
            return Verdict(False, rule, why, tuple(facts))
        if target.cc:
            branch = self._branch_check(target, facts)
            if branch:
                return Verdict(False, "gpu-driver-branch", branch, tuple(facts))
            ok, arch_rule, note = self._arch_check(build, target.cc, cuda, rule, facts)
            if not ok:
                return Verdict(False, arch_rule, note, tuple(facts), arch_note=note)
            return Verdict(True, rule, why, tuple(facts), arch_note=note)
        return Verdict(True, rule, why, tuple(facts))

    def _driver_rule(self, build: BuildFacts, target: TargetFacts, cuda: str, facts: list[Fact],
                     native_only: bool) -> tuple[str, str]:
        nv_src = self.driver_min.get(cuda, ("", "envbuild/data/nvidia.json"))[1]
        if build.source_build:
            if target.nvcc is None:
                why = f"{build.label} is compiled on the target: it needs nvcc {cuda} there (none is known)"
                facts.append(Fact(why, "envbuild/data/openmmlab.json source_build_rule"))
                return "source-build", why
            if _mm(target.nvcc)[0] != _mm(cuda)[0]:
                why = (f"{build.label} is compiled on the target by nvcc {target.nvcc}, but torch's CUDA is "
                       f"{cuda}: extensions built by another CUDA major fail to load")
                facts.append(Fact(why, "torch.utils.cpp_extension CUDA version check"))
                return "nvcc-mismatch", why
        need = self.min_driver(cuda)
        compat = self.compat_min_driver(cuda)
        major = _mm(cuda)[0]
        if target.driver:
            d = vers(target.driver)
            if need is not None and d >= vers(need):
                facts.append(Fact(f"CUDA {cuda} needs driver >= {need} natively", nv_src))
                return "native-driver", (f"driver {target.driver} supports CUDA {cuda} natively "
                                         f"(needs >= {need})")
            if (not native_only and build.bundles_runtime and compat is not None and d >= vers(compat)
                    and major >= 11):
                facts.append(Fact(f"CUDA {major}.x runs on driver >= {compat} through minor-version "
                                  "compatibility", self.compat_min[major][1]))
                return "minor-version-compat", (
                    f"{build.label} bundles its CUDA {cuda} runtime; driver {target.driver} meets the CUDA "
                    f"{major}.x minor-version-compatibility minimum (>= {compat}) although CUDA {cuda} "
                    f"natively needs >= {need or 'unknown'} (no PTX JIT under this rule)")
            facts.append(Fact(f"CUDA {cuda} needs driver >= {need or 'unknown'}"
                              + (f" (>= {compat} through minor-version compatibility)" if compat else ""),
                              nv_src))
            return "driver-too-old", (f"driver {target.driver} is too old for CUDA {cuda} (needs >= "
                                      f"{need or 'unknown'}"
                                      + (f"; {compat} through minor-version compatibility"
                                         if compat and not native_only and build.bundles_runtime else "")
                                      + ")")
        if target.driver_cuda:
            dc = _mm(target.driver_cuda)
            if _mm(cuda) <= dc:
                return "native-driver", f"the driver runs CUDA <= {target.driver_cuda}, which covers {cuda}"
            if not native_only and build.bundles_runtime and dc[0] == major >= 11:
                facts.append(Fact(f"CUDA {major}.x runs on any {major}.x driver through minor-version "
                                  "compatibility", self.compat_min[major][1] if major in self.compat_min
                                  else "envbuild/data/nvidia.json"))
                return "minor-version-compat", (
                    f"the driver runs CUDA <= {target.driver_cuda}; {build.label} bundles its CUDA {cuda} "
                    "runtime (minor-version compatibility)")
            return "driver-too-old", f"the driver runs CUDA <= {target.driver_cuda}, older than {cuda}"
        return "driver-unknown", f"the target's driver is unknown: CUDA {cuda} needs driver >= {need}"

    def _branch_check(self, target: TargetFacts, facts: list[Fact]) -> str | None:
        if not target.driver or not target.cc:
            return None
        d = vers(target.driver)
        for rule in self.gpu_driver:
            if not rule.cc.covers(target.cc):
                continue
            conf = confidence_level(rule.confidence)
            if rule.min_driver and d < vers(rule.min_driver):
                facts.append(Fact(f"{rule.architecture} GPUs need driver >= {rule.min_driver}", rule.source,
                                  conf))
                return (f"driver {target.driver} predates {rule.architecture} (compute capability "
                        f"{target.cc}): that GPU needs driver branch R{rule.min_driver} or newer")
            if rule.max_branch is not None and d.major > rule.max_branch:
                facts.append(Fact(f"R{rule.max_branch} is the last branch for {rule.architecture}",
                                  rule.source, conf))
                return (f"driver {target.driver} no longer supports {rule.architecture} (compute capability "
                        f"{target.cc}): R{rule.max_branch} is the last branch for it")
        return None

    def _arch_check(self, build: BuildFacts, cc: str, cuda: str, rule: str,
                    facts: list[Fact]) -> tuple[bool, str, str]:
        fam = [w[0] for c, w in self.cc_windows.items() if _mm(c)[0] == _mm(cc)[0] and w[0]]
        first = min(fam, key=_mm) if fam else None
        if first and _mm(cuda) < _mm(first):
            return False, "cuda-predates-gpu", (
                f"CUDA {cuda} predates compute capability {_mm(cc)[0]}.x (first supported by CUDA {first}), "
                "so neither its kernels nor PTX JIT of its libraries can serve this GPU")
        if build.source_build:
            return True, rule, f"compiled on the target for sm_{cc.replace('.', '')}"
        row = build.arch
        if row is None:
            facts.append(Fact(f"the arch list of {build.label} is not in the data",
                              "envbuild/data/torch_arch.json", "unverified"))
            return True, rule, "the wheel's arch list is not in the data (unchecked)"
        facts.append(Fact(f"{build.label} carries {row.text}", row.source, confidence_level(row.confidence)))
        g = _mm(cc)
        sass = [_mm(a.removesuffix("+PTX")) for a in row.arch_list]
        ptx = [_mm(a.removesuffix("+PTX")) for a in row.arch_list if a.endswith("+PTX")]
        if g in sass:
            return True, rule, f"sm_{g[0]}{g[1]} is in the wheel's arch list ({row.text})"
        same = [a for a in sass if a[0] == g[0] and a[1] <= g[1]]
        if same:
            b = max(same)
            return True, rule, f"runs the wheel's sm_{b[0]}{b[1]} code (same major version; list {row.text})"
        jit = [a for a in ptx if a <= g]
        if jit:
            if rule == "minor-version-compat":
                return False, "ptx-needs-native-driver", (
                    f"only PTX fits ({row.text}), and PTX JIT needs the native driver for CUDA {cuda}; "
                    "minor-version compatibility does not cover it")
            b = max(jit)
            return True, rule, (f"JIT-compiles the wheel's compute_{b[0]}{b[1]} PTX (slow first start; "
                                f"list {row.text})")
        return False, "no-sass", f"not in the wheel's arch list ({row.text}) and no PTX to JIT"

    # GPUs ----------------------------------------------------------------------------------------
    def _key(self, name: str) -> str:
        return normalize_gpu_name(name, self.gpu_ignore)

    def torch_verdict(self, torch: str, cuda: str | None, target: TargetFacts, *,
                      native_only: bool = False) -> Verdict:
        """The verdict for an official torch wheel (``2.6.0``, CUDA ``12.4``) on ``target``: the arch list
        comes from the data; for doctor / pack checking an installed torch against a driver."""
        arch = self.arch_row(torch, cuda) if cuda else None
        label = f"torch {torch}" + (f" (CUDA {cuda})" if cuda else "")
        return self.verdict(BuildFacts(cuda, bundles_runtime=True, arch=arch, label=label), target,
                            native_only=native_only)

    def torch_driver_verdict(self, torch: str, cuda: str, *, driver: str | None, driver_cuda: str | None,
                             cc: str | None = None, gpu: str | None = None) -> Verdict:
        """The driver side of ``torch_verdict`` for an installed or packed torch (doctor, pack / unpack).

        Refuses only for the driver: too old for the build's CUDA (minor-version compatibility
        counted), too old for the GPU, or PTX-only support the driver cannot JIT.  The GPU-arch side
        is left to doctor's check of the ELF files.  The driver's version decides where NVIDIA's table
        knows the CUDA, its reported CUDA otherwise.  ``arch_note`` is set only when the GPU was
        checked against the wheel's arch list (so no PTX JIT is needed).
        """
        c = f"{_mm(cuda)[0]}.{_mm(cuda)[1]}"
        try:
            parsed = bool(driver) and vers(str(driver)) is not None
        except InvalidVersion:
            parsed = False
        table = self.min_driver(c) is not None or self.compat_min_driver(c) is not None
        base = TargetFacts(driver if parsed and table else None, driver_cuda)
        v = self.torch_verdict(torch, c, base)
        if not v.ok or not cc or v.rule == "driver-unknown":
            return v
        full = self.torch_verdict(torch, c, TargetFacts(base.driver, driver_cuda, cc, gpu))
        if full.rule in ("ptx-needs-native-driver", "gpu-driver-branch"):
            return full
        if full.ok and self.arch_row(torch, c) is not None:
            return Verdict(True, v.rule, v.reason, full.facts, arch_note=full.arch_note)
        return v

    def gpu(self, name: str) -> GpuModel | None:
        """The model a name (as nvidia-smi prints it, or as sold) refers to, or None."""
        key = self._key(name)
        if not key:
            return None
        by_key = {g.key: g for g in self.gpus}
        if key in by_key:
            return by_key[key]
        tokens = key.split()
        # "h100 80gb hbm3" -> "h100"; "rtx 4070 ti super" -> "rtx 4070 ti": longest known prefix wins
        for n in range(len(tokens) - 1, 0, -1):
            hit = by_key.get(" ".join(tokens[:n]))
            if hit:
                return hit
        return None

    def suggest_gpus(self, name: str, n: int = 4) -> list[str]:
        """Known GPU names close to ``name`` (for 'did you mean')."""
        keys = {g.key: g.name for g in self.gpus}
        close = difflib.get_close_matches(self._key(name), list(keys), n=n, cutoff=0.5)
        return [keys[k] for k in close]

    # mmcv ----------------------------------------------------------------------------------------
    def mmcv_wheels(self, package: str, cuda: str | None, torch: str) -> list[str]:
        """mmcv(-full) versions with a prebuilt wheel for (CUDA X.Y or None=cpu, torch series), newest 1st."""
        series = ".".join(torch.split("+")[0].split(".")[:2])
        dev = cuda or "cpu"
        for w in self.mmcv:
            if w.package == package and w.cuda == dev and w.torch_series == series:
                return sorted(w.versions, key=vers, reverse=True)
        return []

    def mmcv_versions(self, package: str) -> list[str]:
        """Every mmcv(-full) version the wheel table names, newest first."""
        vs = {v for w in self.mmcv if w.package == package for v in w.versions}
        return sorted(vs, key=vers, reverse=True)

    def mmcv_pairs(self, package: str, version: str) -> list[tuple[str, str]]:
        """(cuda or 'cpu', torch series) pairs that have a prebuilt wheel of this version."""
        return [(w.cuda, w.torch_series) for w in self.mmcv if w.package == package and version in w.versions]

    def mmcv_find_links(self, base: str, cuda: str | None, torch: str) -> str:
        """OpenMMLab find-links URL for (CUDA, torch), e.g. .../cu113/torch1.10/index.html."""
        v = vers(torch)
        dev = variant_of_cuda(cuda) if cuda else "cpu"
        return f"{base.rstrip('/')}/{dev}/torch{v.major}.{v.minor}/index.html"

    def mmcv_requires(self, package: str, version: str) -> tuple[list[str], str | None]:
        """Runtime requirements of an mmcv(-full) release (for building it from source) and their source."""
        for pkg, spec, reqs, source in self.mmcv_runtime:
            if pkg == package and vers(version) in SpecifierSet(spec):
                return list(reqs), source
        return [], None

    def mm_package(self, name: str, version: str) -> MmPackage | None:
        for p in self.mm.get(name, ()):
            if p.version == version:
                return p
        return None

    # CuPy / NumPy --------------------------------------------------------------------------------
    def cupy_for_cuda(self, cuda: str) -> list[CupyPackage]:
        """CuPy packages whose wheels target CUDA X.Y (per-minor package first, then the per-major one)."""
        hits = [p for p in self.cupy_packages if p.cuda.covers(cuda)]
        return sorted(hits, key=lambda p: not p.cuda.single)

    def numpy_for_python(self, python: str) -> list[NumpyMinor]:
        """NumPy minors supporting Python X.Y, newest first."""
        return [n for n in reversed(self.numpy) if n.python.covers(python)]


# --- loading -------------------------------------------------------------------------------------


def normalize_gpu_name(name: str, ignore: frozenset[str] | set[str] = frozenset()) -> str:
    """Lower-case, drop vendor/form-factor/memory tokens: 'NVIDIA A100-SXM4-40GB' -> 'a100'."""
    text = name.lower().replace("(r)", " ").replace("(tm)", " ")
    text = re.sub(r"[-_/,]", " ", text)
    out = []
    for t in text.split():
        if t in ignore or re.fullmatch(r"\d+\s*gb|\d+g", t):
            continue
        out.append(t)
    return " ".join(out)


class _Reader:
    """Typed field access that names file/row/field in every error."""

    def __init__(self, name: str, *, bundled: bool = False) -> None:
        self.name = name
        self.path, self.origin = (DATA_DIR / f"{name}.json", "bundled") if bundled else data_path(name)

    def fail(self, where: str, msg: str) -> DataError:
        hint = ("The bundled compatibility data is broken; fix the file or reinstall envbuild."
                if self.origin == "bundled" else
                "The knowledge cache is broken; run 'envbuild data update' again or delete this file.")
        return DataError(msg, path=str(self.path), field=where, hint=hint)

    def load(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise DataError(f"cannot read ({exc.strerror}).", path=str(self.path)) from None
        except json.JSONDecodeError as exc:
            raise DataError(f"not valid JSON (line {exc.lineno}: {exc.msg}).", path=str(self.path)) from None
        if not isinstance(data, dict):
            raise self.fail("<root>", "must be a JSON object.")
        for key in ("schema_version", "checked", "description"):
            if key not in data:
                raise self.fail(key, "missing header field.")
        if data["schema_version"] != 1:
            raise self.fail("schema_version", f"unsupported version {data['schema_version']!r} (expected 1).")
        return data

    def rows(self, data: Mapping[str, Any], key: str) -> list[tuple[str, dict[str, Any]]]:
        rows = data.get(key)
        if not isinstance(rows, list) or not rows:
            raise self.fail(key, "expected a non-empty list of rows.")
        out = []
        for i, r in enumerate(rows):
            where = f"{key}[{i}]"
            if not isinstance(r, dict):
                raise self.fail(where, "each row must be an object.")
            s = r.get("source")
            ok = isinstance(s, str) or (isinstance(s, list) and all(isinstance(x, str) for x in s))
            if not s or not ok:
                raise self.fail(f"{where}.source", "every entry needs a source (URL or repo@commit path).")
            out.append((where, r))
        return out

    def s(self, where: str, r: Mapping[str, Any], key: str, *, optional: bool = False) -> str:
        v = r.get(key)
        if v is None and optional:
            return ""
        if not isinstance(v, str) or not v:
            raise self.fail(f"{where}.{key}", f"expected a non-empty string, got {v!r}.")
        return v

    def ver(self, where: str, r: Mapping[str, Any], key: str) -> str:
        v = self.s(where, r, key)
        try:
            vers(v)
        except InvalidVersion:
            raise self.fail(f"{where}.{key}", f"not a version: {v!r}.") from None
        return v

    def spec(self, where: str, text: str) -> str:
        try:
            SpecifierSet(text)
        except InvalidSpecifier:
            raise self.fail(where, f"not a version specifier: {text!r}.") from None
        return text

    def date(self, where: str, r: Mapping[str, Any], key: str = "checked") -> str | None:
        """An optional ISO date field (when a fact was last checked)."""
        v = r.get(key)
        if v is None:
            return None
        if not isinstance(v, str) or not re.fullmatch(r"\d{4}-\d{2}-\d{2}", v):
            raise self.fail(f"{where}.{key}", f"expected a date YYYY-MM-DD, got {v!r}.")
        return v

    def span(self, where: str, r: Mapping[str, Any], key: str) -> Span:
        """The range a row writes as ``<key>_min`` / ``<key>_max``."""
        return Span(self.s(where, r, f"{key}_min"), self.s(where, r, f"{key}_max"))

    def strs(self, where: str, r: Mapping[str, Any], key: str) -> tuple[str, ...]:
        v = r.get(key) or []
        if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
            raise self.fail(f"{where}.{key}", "expected a list of strings.")
        return tuple(v)


def _src(r: Mapping[str, Any]) -> str:
    s = r["source"]
    return s if isinstance(s, str) else "; ".join(s)


def _load_torch(rd: _Reader, data: dict[str, Any]) -> tuple[TorchRelease, ...]:
    out = []
    for where, r in rd.rows(data, "releases"):
        var = rd.strs(where, r, "cuda_variants_pip_linux")
        unv = rd.strs(where, r, "cuda_variants_unverified")
        for v in var + unv:
            if not re.fullmatch(r"cu\d{2,3}", v):
                raise rd.fail(f"{where}.cuda_variants", f"bad variant {v!r} (expected cuXYZ).")
        py = rd.strs(where, r, "python")
        if not py:
            raise rd.fail(f"{where}.python", "no Python versions.")
        pypi_cuda = rd.s(where, r, "pypi_default_wheel_cuda", optional=True) or None
        if pypi_cuda is not None and not re.fullmatch(r"\d+\.\d+", pypi_cuda):
            raise rd.fail(f"{where}.pypi_default_wheel_cuda",
                          f"expected a CUDA version X.Y, got {pypi_cuda!r}.")
        pypi_src = rd.s(where, r, "pypi_default_wheel_source", optional=pypi_cuda is None) or None
        tvc = rd.strs(where, r, "torchvision_compatible")
        tac = rd.strs(where, r, "torchaudio_compatible")
        for v in tvc + tac:
            try:
                vers(v)
            except InvalidVersion:
                raise rd.fail(f"{where}.torch*_compatible", f"not a version: {v!r}.") from None
        out.append(TorchRelease(
            version=rd.ver(where, r, "torch"), torchvision=r.get("torchvision"),
            torchaudio=r.get("torchaudio"),
            variants=var, unverified=unv, cpu=bool(r.get("cpu_variant", True)), python=py, source=_src(r),
            confidence=r.get("confidence"), pypi_cuda=pypi_cuda, pypi_source=pypi_src,
            torchvision_compatible=tvc, torchaudio_compatible=tac,
            released=rd.s(where, r, "released", optional=True) or None,
            checked=rd.date(where, r)))
    return tuple(out)


def _load_arch(rd: _Reader, data: dict[str, Any]) -> tuple[ArchRow, ...]:
    out = []
    for where, r in rd.rows(data, "wheels"):
        torch = rd.s(where, r, "torch")
        if not re.fullmatch(r"\d+\.\d+\.(\d+|x)", torch):
            raise rd.fail(f"{where}.torch", f"expected X.Y.Z or X.Y.x, got {torch!r}.")
        cuda = rd.s(where, r, "cuda")
        lst = tuple(a for a in rd.s(where, r, "TORCH_CUDA_ARCH_LIST").split(";") if a)
        for a in lst:
            if not re.fullmatch(r"\d+\.\d+(\+PTX)?", a):
                raise rd.fail(f"{where}.TORCH_CUDA_ARCH_LIST", f"bad arch entry {a!r}.")
        out.append(ArchRow(torch, cuda, lst, _src(r), r.get("confidence"), rd.date(where, r)))
    return tuple(out)


def _load_nvidia(rd: _Reader, data: dict[str, Any]) -> tuple[Any, ...]:
    dmin: dict[str, tuple[str, str]] = {}
    for where, r in rd.rows(data, "driver_min_per_cuda_minor_linux"):
        dmin[rd.s(where, r, "cuda")] = (rd.ver(where, r, "min_linux_driver"), _src(r))
    cmin: dict[int, tuple[str, str]] = {}
    for where, r in rd.rows(data, "minor_version_compatibility"):
        cmin[int(rd.s(where, r, "cuda_major"))] = (rd.ver(where, r, "min_driver"), _src(r))
    gcc: dict[str, tuple[int, str, str | None]] = {}
    for where, r in rd.rows(data, "host_gcc_max"):
        g = rd.s(where, r, "max_gcc_major")
        if not g.isdigit():
            raise rd.fail(f"{where}.max_gcc_major", f"expected an integer, got {g!r}.")
        gcc[rd.s(where, r, "cuda")] = (int(g), _src(r), r.get("confidence"))
    ccw: dict[str, tuple[str | None, str | None, str]] = {}
    for where, r in rd.rows(data, "compute_capability_support"):
        ccw[rd.s(where, r, "compute_capability")] = (r.get("first_cuda"), r.get("last_cuda"), _src(r))
    branches = []
    for where, r in (rd.rows(data, "gpu_driver_branches") if data.get("gpu_driver_branches") else []):
        md = rd.ver(where, r, "min_driver") if r.get("min_driver") else None
        mb = r.get("max_driver_branch")
        if mb is not None and not str(mb).isdigit():
            raise rd.fail(f"{where}.max_driver_branch", f"expected a branch number like 580, got {mb!r}.")
        branches.append(GpuDriverRule(rd.s(where, r, "architecture"),
                                      rd.span(where, r, "cc"),
                                      md, int(mb) if mb is not None else None,
                                      _src(r), r.get("confidence")))
    return dmin, cmin, gcc, ccw, tuple(branches)


def _load_gpus(rd: _Reader, data: dict[str, Any]) -> tuple[tuple[GpuModel, ...], frozenset[str]]:
    ignore = frozenset(x.lower() for x in rd.strs("ignore_tokens", data, "ignore_tokens"))
    out = []
    for where, r in rd.rows(data, "gpus"):
        name = rd.s(where, r, "gpu")
        cc = rd.s(where, r, "compute_capability")
        if not re.fullmatch(r"\d+\.\d", cc):
            raise rd.fail(f"{where}.compute_capability", f"expected X.Y, got {cc!r}.")
        out.append(GpuModel(name, cc, r.get("architecture") or "", _src(r), r.get("confidence"),
                            normalize_gpu_name(name, ignore)))
    return tuple(out), ignore


def _load_mmcv(rd: _Reader, data: dict[str, Any]) -> tuple[MmcvWheels, ...]:
    out = []
    for where, r in rd.rows(data, "wheels"):
        pkg = rd.s(where, r, "package")
        if pkg not in ("mmcv-full", "mmcv"):
            raise rd.fail(f"{where}.package", f"expected mmcv-full or mmcv, got {pkg!r}.")
        series = rd.s(where, r, "torch_series")
        vs = rd.strs(where, r, "versions")
        for v in vs:
            vers(v)
        out.append(MmcvWheels(pkg, rd.s(where, r, "cuda"), series.removesuffix(".x"), vs, _src(r)))
    return tuple(out)


def _load_mmcv_runtime(rd: _Reader, data: dict[str, Any]) -> tuple[_Runtime, ...]:
    out = []
    for where, r in rd.rows(data, "runtime_requires"):
        out.append((rd.s(where, r, "package"), rd.spec(f"{where}.versions", rd.s(where, r, "versions")),
                    rd.strs(where, r, "requires"), _src(r)))
    return tuple(out)


def _load_openmmlab(rd: _Reader, data: dict[str, Any]) -> dict[str, tuple[MmPackage, ...]]:
    out: dict[str, tuple[MmPackage, ...]] = {}
    # mmcv / mmcv-full sections are optional (rows carrying only `implied` bounds, e.g. from the harvester)
    keys = ["mmdet", "mmsegmentation", "mmdet3d", *(k for k in ("mmcv", "mmcv-full") if data.get(k))]
    for key in keys:
        pkgs = []
        for where, r in rd.rows(data, key):
            req = r.get("requires") or {}
            if not isinstance(req, dict):
                raise rd.fail(f"{where}.requires", "expected an object {package: specifier}.")
            for k, v in req.items():
                rd.spec(f"{where}.requires.{k}", v)
            np_pin = r.get("numpy")
            if np_pin:
                rd.spec(f"{where}.numpy", np_pin)
            compare = r.get("compare")
            if compare not in (None, "digit_version", "pep440"):
                raise rd.fail(f"{where}.compare", f"expected 'digit_version' or 'pep440', got {compare!r}.")
            pkgs.append(MmPackage(
                key, rd.ver(where, r, "version"), dict(req), _src(r), np_pin or None, r.get("python_max"),
                rd.strs(where, r, "runtime"), bool(r.get("build_from_source", False)),
                _load_implied(rd, where, r), compare, rd.date(where, r)))
        out[key] = tuple(sorted(pkgs, key=lambda p: vers(p.version)))
    return out


def _load_implied(rd: _Reader, where: str, r: Mapping[str, Any]) -> tuple[Implied, ...]:
    rows = r.get("implied") or []
    if not isinstance(rows, list):
        raise rd.fail(f"{where}.implied", "expected a list of {package, spec, reason, source} objects.")
    out = []
    for i, x in enumerate(rows):
        w = f"{where}.implied[{i}]"
        if not isinstance(x, dict) or not x.get("source"):
            raise rd.fail(w, "each implied bound needs package, spec, reason and a source.")
        out.append(Implied(rd.s(w, x, "package"), rd.spec(f"{w}.spec", rd.s(w, x, "spec")),
                           rd.s(w, x, "reason"), _src(x), rd.strs(w, x, "evidence"), rd.date(w, x)))
    return tuple(out)


def _load_cupy(rd: _Reader, data: dict[str, Any]) -> tuple[tuple[CupyPackage, ...], dict[str, CupyRelease]]:
    pk = []
    for where, r in rd.rows(data, "packages"):
        pbv = r.get("python_by_version") or {}
        if not isinstance(pbv, dict):
            raise rd.fail(f"{where}.python_by_version", "expected an object.")
        pk.append(CupyPackage(rd.s(where, r, "package"), rd.span(where, r, "cuda"),
                              rd.strs(where, r, "versions"), {k: tuple(v) for k, v in pbv.items()}, _src(r)))
    rel = {}
    for where, r in rd.rows(data, "releases"):
        v = rd.ver(where, r, "cupy")
        np_spec = rd.spec(f"{where}.numpy", rd.s(where, r, "numpy"))
        rel[v] = CupyRelease(v, np_spec, r.get("requires_python"), _src(r))
    return tuple(pk), rel


def _load_numpy(rd: _Reader, data: dict[str, Any]) -> tuple[tuple[NumpyMinor, ...], tuple[AbiRule, ...]]:
    out = []
    for where, r in rd.rows(data, "releases"):
        latest = rd.ver(where, r, "latest_patch")
        minor = rd.s(where, r, "numpy")
        if not latest.startswith(minor + "."):
            raise rd.fail(f"{where}.latest_patch", f"{latest} is not a {minor}.x release.")
        out.append(NumpyMinor(minor, rd.span(where, r, "python"), latest,
                              _src(r)))
    abi = []
    for where, r in rd.rows(data, "abi_rules"):
        abi.append(AbiRule(rd.s(where, r, "package"),
                           rd.spec(f"{where}.versions", rd.s(where, r, "versions")),
                           rd.spec(f"{where}.numpy", rd.s(where, r, "numpy")), _src(r)))
    return tuple(sorted(out, key=lambda n: _mm(n.minor))), tuple(abi)


@functools.cache
def load_table(name: str, bundled: bool = False) -> dict[str, Any]:
    """The raw JSON of one data file (header checked); prefer ``load_matrix()`` queries.

    The user knowledge cache's copy is read when it is newer than the bundled one (``data_path``);
    ``bundled=True`` reads the shipped file (the data-regeneration task starts from it).
    """
    if name not in TABLES:
        raise DataError(f"no data table {name!r} (known: {', '.join(TABLES)}).", path=str(DATA_DIR))
    return _Reader(name, bundled=bundled).load()


@functools.cache
def load_matrix() -> Matrix:
    """Read and validate every data file once.

    Raises:
        DataError: a file is missing, not JSON, or a row lacks a field or its source.
    """
    readers = {n: _Reader(n) for n in TABLES}
    raw = {n: load_table(n) for n in TABLES}
    dmin, cmin, gcc, ccw, branches = _load_nvidia(readers["nvidia"], raw["nvidia"])
    gpus, ignore = _load_gpus(readers["gpus"], raw["gpus"])
    cpk, crel = _load_cupy(readers["cupy"], raw["cupy"])
    npm, abi = _load_numpy(readers["numpy"], raw["numpy"])
    m = Matrix(
        torch=_load_torch(readers["torch"], raw["torch"]),
        arch=_load_arch(readers["torch_arch"], raw["torch_arch"]),
        driver_min=dmin, compat_min=cmin, gcc=gcc, cc_windows=ccw, gpus=gpus, gpu_ignore=ignore,
        mmcv=_load_mmcv(readers["mmcv"], raw["mmcv"]),
        mm=_load_openmmlab(readers["openmmlab"], raw["openmmlab"]),
        cupy_packages=cpk, cupy_releases=crel, numpy=npm, abi=abi,
        mmcv_runtime=_load_mmcv_runtime(readers["mmcv"], raw["mmcv"]),
        gpu_driver=branches,
        pythons=load_names().pythons,
        sources={
            "pytorch_index": str(raw["torch"].get("index_url_source", "")),
            "pytorch_index_default": default_indexes()["pytorch"],
            "openmmlab_default": default_indexes()["openmmlab"],
            "mmcv_find_links": "; ".join(str(r.get("source")) for r in raw["mmcv"].get("url_rules", [])[:2]),
            "source_build": str((raw["openmmlab"].get("source_build_rule") or {}).get("source", "")),
        },
        tables=raw,
    )
    return m


@dataclass(frozen=True)
class Names:
    """``names.json``: what specs and indexes are read with (lists, not compatibility rules)."""

    pythons: tuple[str, ...]  # the Python minors tried when the target names none, newest first
    conda_to_pypi: Mapping[str, str]  # conda name -> the PyPI package the resolver chooses (pytorch -> torch)
    conda_cuda: Mapping[str, bool]  # conda packages whose version is the CUDA version -> kept in conda.txt


@functools.cache
def load_names() -> Names:
    """Read ``names.json`` once.

    Raises:
        DataError: the file is missing or a row lacks a field or its source.
    """
    rd = _Reader("names")
    data = rd.load()
    pys = tuple(rd.s(w, r, "python") for w, r in rd.rows(data, "pythons"))
    bad = [p for p in pys if not re.fullmatch(r"3\.\d+", p)]
    if bad or list(pys) != sorted(pys, key=_mm, reverse=True):
        raise rd.fail("pythons", "expected Python minors like 3.12, newest first.")
    ctp = {rd.s(w, r, "conda"): rd.s(w, r, "pypi") for w, r in rd.rows(data, "conda_to_pypi")}
    cuda = {rd.s(w, r, "conda"): r.get("keep") is True for w, r in rd.rows(data, "conda_cuda")}
    return Names(pythons=pys, conda_to_pypi=ctp, conda_cuda=cuda)


def default_indexes() -> dict[str, str]:
    """The indexes a spec starts from (a new dict each call): pip's (names.json), the PyTorch wheel index
    (torch.json's ``index_url_default``) and OpenMMLab's mmcv wheel pages (mmcv.json's
    ``find_links_default_base``)."""
    return dict(_default_indexes())


@functools.cache
def _default_indexes() -> dict[str, str]:
    names = _Reader("names")
    return {"pypi": names.s("header", names.load(), "pypi_index_default"),
            "pytorch": _Reader("torch").s("header", load_table("torch"), "index_url_default"),
            "openmmlab": _Reader("mmcv").s("header", load_table("mmcv"), "find_links_default_base")}


def check_cuda_list(values: Sequence[str]) -> list[str]:
    """Sorted unique CUDA X.Y strings (helper for tables)."""
    return sorted(set(values), key=_mm)


@functools.cache
def load_doctor_rules() -> dict[str, Any]:
    """The raw ``doctor_rules.json`` (log patterns per failure family); envbuild.doctor validates them."""
    return _Reader("doctor_rules").load()


@dataclass(frozen=True)
class FindingFamily:
    """One family a Finding may carry: its stable id, what it means, who reports it, where to read more."""

    id: str
    kind: str  # "failure" (something breaks or may break) | "verdict" (doctor's conclusion otherwise)
    meaning: str
    used_by: tuple[str, ...]  # doctor | pack | unpack
    source: str


@functools.cache
def finding_families() -> Mapping[str, FindingFamily]:
    """``finding_families.json``, the one registry of finding families (doctor's, pack's, unpack's).

    Read from the shipped file only: the families are envbuild's vocabulary, not knowledge a data
    update refreshes.

    Raises:
        DataError: the file is missing, or a row lacks its id, kind, meaning or source.
    """
    rd = _Reader("finding_families", bundled=True)
    out: dict[str, FindingFamily] = {}
    for where, r in rd.rows(rd.load(), "families"):
        fid, kind = rd.s(where, r, "id"), rd.s(where, r, "kind")
        if kind not in ("failure", "verdict"):
            raise rd.fail(f"{where}.kind", f"expected 'failure' or 'verdict', got {kind!r}.")
        if fid in out:
            raise rd.fail(f"{where}.id", f"{fid!r} is listed twice.")
        out[fid] = FindingFamily(fid, kind, rd.s(where, r, "meaning"), rd.strs(where, r, "used_by"), _src(r))
    return out


# --- tables for `envbuild matrix` ----------------------------------------------------------------

MATRIX_KINDS = ("torch", "mmcv", "cupy", "driver")


def _span(versions: Sequence[str]) -> str:
    vs = sorted(versions, key=vers)
    return vs[0] if len(vs) == 1 else f"{vs[0]}-{vs[-1]}"


def matrix_table(kind: str, m: Matrix | None = None) -> dict[str, Any]:
    """One data table as forum-style rows (versions) x columns (CUDA variants): title, columns, rows, legend.

    Raises:
        InputError: ``kind`` is not one of torch, mmcv, cupy, driver.
    """
    from envbuild.errors import InputError

    m = m or load_matrix()
    if kind == "torch":
        cudas = check_cuda_list([cuda_of_variant(v) for r in m.torch for v in r.all_variants])
        cols = ["torch", "python", *[variant_of_cuda(c) for c in cudas], "cpu", "torchvision", "torchaudio"]
        rows = []
        for r in m.torch_releases():
            cells = ["✓" if variant_of_cuda(c) in r.variants else "?" if variant_of_cuda(c) in r.unverified
                     else "" for c in cudas]
            rows.append([r.version, _span(r.python), *cells, "✓" if r.cpu else "", r.torchvision or "",
                         r.torchaudio or ""])
        legend = ("✓ wheel on download.pytorch.org/whl/<variant> (sourced); "
                  "? believed to exist, no source read")
        return {"kind": kind, "title": "PyTorch pip wheels (Linux x86_64)", "columns": cols, "rows": rows,
                "legend": legend}
    if kind == "mmcv":
        devs = check_cuda_list([w.cuda for w in m.mmcv if w.cuda != "cpu"])
        cols = ["package", "torch", *[variant_of_cuda(c) for c in devs], "cpu"]
        keys = sorted({(w.package, w.torch_series) for w in m.mmcv},
                      key=lambda k: (k[0] != "mmcv", vers(k[1])), reverse=True)
        rows = []
        for pkg, series in keys:
            by_dev = {w.cuda: w.versions for w in m.mmcv if w.package == pkg and w.torch_series == series}
            rows.append([pkg, series, *[_span(by_dev[c]) if c in by_dev else "" for c in [*devs, "cpu"]]])
        return {"kind": kind, "title": "prebuilt mmcv-full / mmcv wheels on download.openmmlab.com (Linux)",
                "columns": cols, "rows": rows, "legend": "cell: mmcv versions with a wheel for (CUDA, torch "
                                                         "series)"}
    if kind == "cupy":
        pkgs = sorted(m.cupy_packages, key=lambda p: (_mm(p.cuda.lo), not p.cuda.single))
        cols = ["cupy", "numpy", "python", *[p.package.removeprefix("cupy-") for p in pkgs]]
        rows = []
        for v in sorted(m.cupy_releases, key=vers, reverse=True):
            rel = m.cupy_releases[v]
            cells = [_span(p.python_by_version[v]) if v in p.python_by_version else "" for p in pkgs]
            if any(cells):
                rows.append([v, rel.numpy, rel.requires_python or "", *cells])
        return {"kind": kind, "title": "CuPy wheels per CUDA package (cell: Python versions)",
                "columns": cols,
                "rows": rows, "legend": "cupy-cudaXY: one CUDA minor; cupy-cuda11x/12x/13x: the whole major"}
    if kind == "driver":
        cols = ["cuda", "min driver (native)", "min driver (minor-version compat)", "max gcc",
                "GPU archs added"]
        rows = []
        for c in sorted(m.driver_min, key=_mm, reverse=True):
            added = [cc for cc, w in m.cc_windows.items() if w[0] == c]
            rows.append([c, m.driver_min[c][0], m.compat_min_driver(c) or "", str(m.gcc_max(c) or ""),
                         ", ".join(f"sm_{a.replace('.', '')}" for a in sorted(added, key=_mm))])
        return {"kind": kind, "title": "NVIDIA: Linux driver per CUDA, host gcc, new GPU architectures",
                "columns": cols, "rows": rows,
                "legend": "native: driver of the toolkit's GA release; compat: any CUDA of that major "
                          "through minor-version compatibility (no PTX JIT)"}
    raise InputError(f"unknown matrix '{kind}'.", field="KIND",
                     hint=f"Use one of: {', '.join(MATRIX_KINDS)}.")


def load_doctor_libs() -> dict[str, Any]:
    """``doctor_libs.json``: what a library is from its soname, and the modules packages load lazily.

    Raises:
        DataError: the file is missing, or a row has no source.
    """
    rd = _Reader("doctor_libs")
    data = rd.load()
    rd.rows(data, "library_kinds")
    rd.rows(data, "lazy_modules")
    return data
