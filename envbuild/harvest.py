"""Harvest compatibility facts from the packages and indexes themselves (``envbuild data update``).

One module, used two ways: ``envbuild data update`` refreshes the user-level knowledge cache
(``matrix.user_data_dir()/facts``, which overrides a bundled file when its ``checked`` date is
newer), and ``tasks/refresh_data.py`` regenerates the bundled ``envbuild/data`` with the same code.

Sources (each refreshed as a whole or not at all; an unreachable one keeps its old facts):

* ``pypi-torch``: torch / torchvision / torchaudio listings (PEP 691) and PEP 658 metadata: Python
  minors with Linux x86_64 wheels, upload date, Requires-Python, the CUDA of the plain PyPI wheel
  (its nvidia-* / cuda-toolkit pins) and every torchvision/torchaudio whose Requires-Dist admits a
  torch release.
* ``pypi-numpy``: numpy wheel tags per minor, newest patch.
* ``pypi-cupy``: cupy-cuda* versions and Python tags; numpy bounds from each release's metadata.
* ``pypi-openmmlab``: each mmdet / mmsegmentation / mmdet3d release file (downloaded once, cached by
  sha256): the mmcv / mmengine / mmdet / mmseg checks of its ``__init__.py`` read with ``ast``, and
  an ``ast`` scan of its sources for names NumPy removed (an implied numpy bound with file:line).
* ``pytorch-index``: which ``torch-X+cuXYZ`` Linux wheels ``{pytorch}/{variant}/torch/`` lists.
* ``openmmlab-index``: which mmcv(-full) Linux wheels each find-links page lists.

Every fact written keeps its source (URL, and the artifact's sha256 where it came from one) and
the date it was checked.
"""

from __future__ import annotations

import ast
import contextlib
import copy
import datetime as dt
import json
import os
import re
import shutil
import tarfile
import warnings
import zipfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import InvalidWheelFilename, parse_wheel_filename
from packaging.version import InvalidVersion, Version

from envbuild import matrix
from envbuild.errors import FetchError, InputError
from envbuild.tools.pypi import DistFile, IndexClient, Unreachable

__all__ = [
    "SOURCES",
    "Endpoints",
    "SourceResult",
    "UpdateReport",
    "data_status",
    "digit_version_spec",
    "harvest",
    "numpy_use",
    "present_status",
    "present_update",
    "read_version_checks",
    "regenerate_bundled",
    "update",
]

# source -> the data file it refreshes
SOURCES: dict[str, str] = {
    "pypi-torch": "torch",
    "pypi-numpy": "numpy",
    "pypi-cupy": "cupy",
    "pypi-openmmlab": "openmmlab",
    "pytorch-index": "torch",
    "openmmlab-index": "mmcv",
}
_WORKERS = 8
# Bump when the reading of an artifact changes: rows read from the same sha256 by this version are reused.
HARVESTER_VERSION = 2
_MAX_EVIDENCE = 12

Progress = Callable[[str, int, int], None]  # (source, done, total)


@dataclass(frozen=True)
class Endpoints:
    """Where the sources are read: the data's default indexes unless a test or mirror says otherwise."""

    pypi: str = field(default_factory=lambda: matrix.default_indexes()["pypi"])
    pytorch: str = field(default_factory=lambda: matrix.default_indexes()["pytorch"])
    openmmlab: str = field(default_factory=lambda: matrix.default_indexes()["openmmlab"])


@dataclass(frozen=True)
class SourceResult:
    source: str
    file: str
    status: str  # refreshed | unreachable-kept | failed-kept
    checked: str  # date of the facts now in use for this source
    detail: str
    url: str


@dataclass(frozen=True)
class UpdateReport:
    data_dir: str
    results: tuple[SourceResult, ...]
    written: tuple[str, ...]  # files written
    requests: int
    downloaded_bytes: int

    def to_dict(self) -> dict[str, Any]:
        return {"ok": True, "data_dir": self.data_dir, "written": list(self.written),
                "requests": self.requests, "downloaded_bytes": self.downloaded_bytes,
                "sources": [r.__dict__ for r in self.results]}


# --- small helpers --------------------------------------------------------------------------------

def _today() -> str:
    return dt.date.today().isoformat()


def _final(v: str) -> Version | None:
    try:
        ver = Version(v)
    except InvalidVersion:
        return None
    return ver


@dataclass(frozen=True)
class _Wheel:
    file: DistFile
    version: str
    local: str | None
    pythons: frozenset[str]  # "3.10"
    linux_x86_64: bool


def _wheel(f: DistFile) -> _Wheel | None:
    if not f.filename.endswith(".whl"):
        return None
    try:
        _name, ver, _build, tags = parse_wheel_filename(f.filename)
    except (InvalidWheelFilename, InvalidVersion):
        return None
    pys = set()
    linux = False
    for t in tags:
        m = re.fullmatch(r"cp(\d)(\d+)", t.interpreter)
        if m and not t.abi.endswith("t"):  # free-threaded builds are a separate ABI
            pys.add(f"{m.group(1)}.{m.group(2)}")
        if re.fullmatch(r"(manylinux\w*|linux)_x86_64", t.platform):
            linux = True
    return _Wheel(f, ver.public.split("+")[0], ver.local, frozenset(pys), linux)


def _by_version(files: Iterable[DistFile]) -> dict[str, list[_Wheel]]:
    """Linux x86_64 wheels per public version (no local label), yanked files left out."""
    out: dict[str, list[_Wheel]] = {}
    for f in files:
        w = _wheel(f)
        if w and w.linux_x86_64 and not f.yanked and w.local is None:
            out.setdefault(w.version, []).append(w)
    return out


def _yanked(files: Iterable[DistFile]) -> set[str]:
    """Versions whose every file is yanked (PEP 592): installers skip them unless pinned exactly."""
    state: dict[str, bool] = {}
    for f in files:
        v = _dist_version(f.filename) or ((w := _wheel(f)) and w.version)
        if v:
            state[v] = state.get(v, True) and f.yanked
    return {v for v, y in state.items() if y}


def _py_sorted(pys: Iterable[str]) -> list[str]:
    return sorted(set(pys), key=lambda p: tuple(int(x) for x in p.split(".")))


def _date(files: Iterable[DistFile]) -> str | None:
    times = [f.upload_time for f in files if f.upload_time]
    return min(times)[:10] if times else None


def _req_spec(meta: Any, package: str) -> tuple[str, str] | None:
    """(specifier, the Requires-Dist line) of ``package`` in core metadata, ignoring extras."""
    for line in meta.get_all("Requires-Dist") or []:
        try:
            r = Requirement(line)
        except InvalidRequirement:
            continue
        if r.name.lower() != package or (r.marker and "extra" in str(r.marker)):
            continue
        return _norm_spec(str(r.specifier)), line
    return None


def _norm_spec(spec: str) -> str:
    """'<1.25,>=1.18' -> '>=1.18,<1.25' (lower bounds first, as the data files write them)."""
    parts = [p.strip() for p in spec.split(",") if p.strip()]
    return ",".join(sorted(parts, key=lambda p: (not p.startswith((">", "==", "~=")), p)))


def _newest_wheel(ws: Sequence[_Wheel]) -> _Wheel:
    """The wheel whose metadata stands for its release: newest CPython, manylinux preferred."""
    return max(ws, key=lambda w: (max((tuple(int(x) for x in p.split(".")) for p in w.pythons), default=(0,)),
                                  "manylinux" in w.file.filename, w.file.filename))


def _pmap(fn: Callable[[Any], Any], items: Sequence[Any], source: str,
          progress: Progress | None) -> list[Any]:
    out = []
    with ThreadPoolExecutor(max_workers=_WORKERS) as pool:
        for i, res in enumerate(pool.map(fn, items), 1):
            out.append(res)
            if progress:
                progress(source, i, len(items))
    return out


def _meta_src(f: DistFile, where: str) -> str:
    return where  # IndexClient.metadata says where it read the metadata (URL, sha256)


# --- pypi-torch -----------------------------------------------------------------------------------

# The CUDA runtime pin names the build best; nvrtc and the 13.x cuda-toolkit meta-package stand in for it.
_CUDA_PINS = (re.compile(r"^nvidia-cuda-runtime(-cu\d+)?$"), re.compile(r"^nvidia-cuda-nvrtc(-cu\d+)?$"),
              re.compile(r"^cuda-toolkit$"))


def _torch_cuda(meta: Any) -> tuple[str, str] | None:
    """CUDA X.Y of a torch wheel from its nvidia-cuda-runtime / cuda-toolkit pin, and the pin."""
    reqs = []
    for line in meta.get_all("Requires-Dist") or []:
        with contextlib.suppress(InvalidRequirement):
            reqs.append((Requirement(line), line.split(";")[0].strip()))
    for pat in _CUDA_PINS:
        for r, text in reqs:
            if not pat.match(r.name.lower()):
                continue
            for s in r.specifier:
                m = re.match(r"(\d+)\.(\d+)", s.version)
                if s.operator == "==" and m:
                    return f"{m.group(1)}.{m.group(2)}", text
    return None


def _domain_specs(client: IndexClient, ep: Endpoints, project: str, progress: Progress | None
                  ) -> dict[str, tuple[SpecifierSet, str]]:
    """torchvision/torchaudio version -> (its torch requirement, source)."""
    wheels = _by_version(client.project(ep.pypi, project))

    def one(item: tuple[str, list[_Wheel]]) -> tuple[str, tuple[SpecifierSet, str] | None]:
        v, ws = item
        w = _newest_wheel(ws)
        got = client.metadata(w.file)
        if got is None:
            return v, None
        hit = _req_spec(got[0], "torch")
        return v, (SpecifierSet(hit[0]), _meta_src(w.file, got[1])) if hit and hit[0] else None

    items = sorted(wheels.items(), key=lambda kv: Version(kv[0]))
    return {v: s for v, s in _pmap(one, items, f"pypi-torch ({project})", progress) if s}


def _series(v: Version) -> tuple[int, int]:
    return (v.major, v.minor)


def _lower(spec: SpecifierSet) -> Version | None:
    lows = [Version(s.version) for s in spec
            if s.operator in (">=", "==", "~=", ">") and "*" not in s.version]
    return min(lows) if lows else None


def _pairs(torch: str, specs: dict[str, tuple[SpecifierSet, str]]) -> list[str]:
    """The torchvision/torchaudio releases whose Requires-Dist admits ``torch``, read as they are used.

    An exact pin pairs with that release.  A range (``torch>=2.14.0``) pairs with the torch series of
    its lower bound, and with a later series only while no release targets that series (so
    torchvision 0.3.0's ``torch>=1.1.0`` does not pair with torch 2.x, but 0.29.2's ``>=2.14.0`` pairs
    with 2.15 until a torchvision for 2.15 appears): the compiled ops are built per torch series.
    """
    tv = Version(torch)
    targets = {d: low for d, (spec, _) in specs.items() if (low := _lower(spec))}
    admitted = [d for d, (spec, _) in specs.items() if spec.contains(tv, prereleases=True) and d in targets]
    same = [d for d in admitted if _series(targets[d]) == _series(tv)]
    if same or any(_series(low) == _series(tv) for low in targets.values()):
        return sorted(same, key=Version)
    older = [d for d in admitted if _series(targets[d]) < _series(tv)]
    if not older:
        return []
    top = max(_series(targets[d]) for d in older)
    return sorted((d for d in older if _series(targets[d]) == top), key=Version)


def _new_torch_rows(table: dict[str, Any], rows: dict[str, dict[str, Any]], versions: Iterable[str],
                    ep: Endpoints) -> None:
    """Releases newer than the data knows become new rows (their CUDA variants are read later)."""
    newest = max(rows, key=Version)
    for v in versions:
        pv = Version(v)
        if v not in rows and not pv.is_prerelease and pv > Version(newest):
            row: dict[str, Any] = {"torch": v, "torchvision": None, "torchaudio": None,
                                   "cuda_variants_pip_linux": [],
                   "cuda_variants_unverified": [], "cpu_variant": True, "python": [],
                   "source": f"PyPI {ep.pypi}/torch/ (new release; CUDA variants not read yet)"}
            table["releases"].append(row)
            rows[v] = row


def _torch_metadata_facts(row: dict[str, Any], w: _Wheel, got: Any) -> None:
    """What the newest wheel's metadata says: the CUDA of the plain PyPI wheel, Requires-Python."""
    if w.file.requires_python:
        row["requires_python"] = w.file.requires_python
    if got is None:
        return
    cuda = _torch_cuda(got[0])
    if cuda:
        row["pypi_default_wheel_cuda"] = cuda[0]
        how = "(PEP 658)" if "PEP 658" in got[1] else "(read by HTTP range requests)"
        row["pypi_default_wheel_source"] = (f"PyPI wheel metadata {how} of {w.file.filename}: "
                                            f"Requires-Dist {cuda[1]} [{got[1]}]")
    rp = got[0].get("Requires-Python")
    if rp:
        row["requires_python"] = rp


def harvest_torch(client: IndexClient, ep: Endpoints, table: dict[str, Any], today: str,
                  progress: Progress | None = None) -> str:
    listing = client.project(ep.pypi, "torch")
    torch_w = _by_version(listing)
    rows = {r["torch"]: r for r in table["releases"]}
    for v in _yanked(listing) & set(rows):
        rows[v]["yanked"] = True
    _new_torch_rows(table, rows, torch_w, ep)
    todo = [(v, torch_w[v]) for v in rows if v in torch_w]

    def meta(item: tuple[str, list[_Wheel]]) -> tuple[str, _Wheel, Any]:
        w = _newest_wheel(item[1])
        return item[0], w, client.metadata(w.file)

    metas = _pmap(meta, todo, "pypi-torch (torch)", progress)
    vision = _domain_specs(client, ep, "torchvision", progress)
    audio = _domain_specs(client, ep, "torchaudio", progress)
    src = f"PyPI {ep.pypi}/torch/ (PEP 691 listing: Linux x86_64 wheel tags, upload time)"
    for v, w, got in metas:
        row = rows[v]
        ws = torch_w[v]
        row["python"] = _py_sorted(p for x in ws for p in x.pythons) or row["python"]
        row["python_source"] = src
        released = _date(x.file for x in ws)
        if released:
            row["released"] = released
        _torch_metadata_facts(row, w, got)
        for key, specs in (("torchvision", vision), ("torchaudio", audio)):
            ok = _pairs(v, specs)
            row[f"{key}_compatible"] = ok
            pinned = [d for d in ok if str(specs[d][0]) == f"=={v}"]
            if row.get(key) is None and pinned:
                row[key] = pinned[-1]  # the primary pair only from an exact pin, never from a >= range
        row["compatible_source"] = (f"PyPI {ep.pypi}/torchvision/ and /torchaudio/: Requires-Dist torch of "
                                    "each release's Linux wheel (PEP 658 metadata)")
        row["checked"] = today
    return (f"{len(metas)} torch releases, {len(vision)} torchvision and {len(audio)} torchaudio "
            "requirements "
            "read")


# --- pytorch-index --------------------------------------------------------------------------------

def harvest_pytorch_index(client: IndexClient, ep: Endpoints, table: dict[str, Any], today: str,
                          progress: Progress | None = None) -> str:
    variants = sorted({v for r in table["releases"]
                       for v in r.get("cuda_variants_pip_linux", []) + r.get("cuda_variants_unverified", [])})
    seen: dict[tuple[str, str], set[str]] = {}
    for i, var in enumerate(variants, 1):
        for f in client.project(f"{ep.pytorch.rstrip('/')}/{var}", "torch"):
            w = _wheel(f)
            if w and w.linux_x86_64 and w.local == var:
                seen.setdefault((w.version, var), set()).update(w.pythons)
        if progress:
            progress("pytorch-index", i, len(variants))
    pattern = f"{ep.pytorch.rstrip('/')}/{{variant}}/torch/ (PEP 503 listing)"
    for r in table["releases"]:
        conf = list(r.get("cuda_variants_pip_linux", []))
        unv = list(r.get("cuda_variants_unverified", []))
        found = [v for v in variants if (r["torch"], v) in seen]
        r["cuda_variants_pip_linux"] = sorted(set(conf) | set(found), key=lambda s: int(s[2:]))
        r["cuda_variants_unverified"] = [v for v in unv if v not in found]
        missing = [v for v in conf + unv if v not in found]
        if missing:
            r["cuda_variants_not_on_index"] = missing
        pys = {v: _py_sorted(seen[(r["torch"], v)]) for v in found}
        if pys:
            r["variants_python"] = pys  # Python minors with a Linux wheel, per variant
        r["variants_index_source"] = pattern
        r["variants_index_checked"] = today
    return f"{len(variants)} variant indexes read, {len(seen)} (torch, variant) pairs found"


# --- openmmlab-index ------------------------------------------------------------------------------

def harvest_openmmlab_index(client: IndexClient, ep: Endpoints, table: dict[str, Any], today: str,
                            progress: Progress | None = None) -> str:
    rows = table["wheels"]
    pages = 0
    for i, r in enumerate(rows, 1):
        series = str(r["torch_series"]).removesuffix(".x")
        dev = "cpu" if r["cuda"] == "cpu" else matrix.variant_of_cuda(r["cuda"])
        dist = r["package"].replace("-", "_")
        for spelled in (f"torch{series}", f"torch{series}.0"):  # the docs' and mim's spellings
            url = f"{ep.openmmlab.rstrip('/')}/{dev}/{spelled}/index.html"
            files = client.page(url)
            if files is None:
                continue
            pages += 1
            vs = {w.version for f in files if (w := _wheel(f)) and w.linux_x86_64
                  and f.filename.lower().startswith(dist + "-")}
            if vs:
                r["versions"] = sorted(vs, key=Version)
                r["index_source"] = url
                r["index_checked"] = today
            break
        if progress:
            progress("openmmlab-index", i, len(rows))
    return f"{pages} find-links pages read"


# --- pypi-numpy -----------------------------------------------------------------------------------

def harvest_numpy(client: IndexClient, ep: Endpoints, table: dict[str, Any], today: str,
                  progress: Progress | None = None) -> str:
    by_v = _by_version(client.project(ep.pypi, "numpy"))
    minors: dict[str, list[str]] = {}
    for v in by_v:
        pv = Version(v)
        if not pv.is_prerelease and not pv.is_devrelease:
            minors.setdefault(f"{pv.major}.{pv.minor}", []).append(v)
    rows = {r["numpy"]: r for r in table["releases"]}
    newest = max(rows, key=Version)
    src = f"PyPI {ep.pypi}/numpy/ (PEP 691 listing: Linux x86_64 wheel tags of every patch release)"
    for minor, vs in sorted(minors.items(), key=lambda kv: Version(kv[0])):
        if minor not in rows:
            if Version(minor) <= Version(newest):
                continue
            rows[minor] = {"numpy": minor, "source": src}
            table["releases"].append(rows[minor])
        row = rows[minor]
        pys = _py_sorted(p for v in vs for w in by_v[v] for p in w.pythons)
        if not pys:
            continue
        row["latest_patch"] = max(vs, key=Version)
        row["latest_patch_source"] = src
        row["python_wheels"] = pys
        row["python_min"], row["python_max"] = pys[0], pys[-1]
        row["python_wheels_source"] = src
        row["checked"] = today
    if progress:
        progress("pypi-numpy", 1, 1)
    return f"{len(minors)} numpy minors read"


# --- pypi-cupy ------------------------------------------------------------------------------------

def harvest_cupy(client: IndexClient, ep: Endpoints, table: dict[str, Any], today: str,
                 progress: Progress | None = None) -> str:
    pkgs = table["packages"]
    listings = _pmap(lambda p: _by_version(client.project(ep.pypi, p["package"])), pkgs,
                     "pypi-cupy (listings)", progress)
    stand_in: dict[str, _Wheel] = {}  # cupy version -> a wheel whose metadata stands for the release
    for p, by_v in zip(pkgs, listings, strict=True):
        if not by_v:
            continue
        final = {v: ws for v, ws in by_v.items() if not Version(v).is_prerelease}
        p["versions"] = sorted(final, key=Version)
        p["python_by_version"] = {v: _py_sorted(x for w in final[v] for x in w.pythons)
                                  for v in p["versions"]}
        p["versions_source"] = f"PyPI {ep.pypi}/{p['package']}/ (PEP 691 listing: Linux x86_64 wheel tags)"
        p["checked"] = today
        per_major = p["cuda_min"] != p["cuda_max"]
        for v, ws in final.items():
            if v not in stand_in or per_major:
                stand_in[v] = _newest_wheel(ws)
    rels = {r["cupy"]: r for r in table["releases"]}

    def one(item: tuple[str, _Wheel]) -> tuple[str, _Wheel, Any]:
        return item[0], item[1], client.metadata(item[1].file)

    items = sorted(stand_in.items(), key=lambda kv: Version(kv[0]))
    got = _pmap(one, items, "pypi-cupy (metadata)", progress)
    n = 0
    for v, w, meta in got:
        if meta is None:
            continue
        np_req = _req_spec(meta[0], "numpy")
        if not np_req or not np_req[0]:
            continue
        row = rels.get(v)
        if row is None:
            row = {"cupy": v, "source": _meta_src(w.file, meta[1])}
            table["releases"].append(row)
            rels[v] = row
        row["numpy"] = np_req[0]
        rp = meta[0].get("Requires-Python") or w.file.requires_python
        if rp:
            row["requires_python"] = _norm_spec(rp)
        row["requirements_source"] = f"{_meta_src(w.file, meta[1])}: Requires-Dist {np_req[1]}"
        row["checked"] = today
        n += 1
    table["releases"].sort(key=lambda r: Version(r["cupy"]))
    return f"{len(pkgs)} cupy packages listed, numpy bounds of {n} releases read"


# --- OpenMMLab version checks (ast) ---------------------------------------------------------------

_MODULE_PACKAGE = {"mmcv": "mmcv", "mmengine": "mmengine", "mmdet": "mmdet", "mmseg": "mmsegmentation",
                   "mmcls": "mmcls", "mmdet3d": "mmdet3d", "mmpretrain": "mmpretrain"}
_OPS = {ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">="}
_FLIP = {"<": ">", "<=": ">=", ">": "<", ">=": "<="}


@dataclass(frozen=True)
class VersionCheck:
    package: str  # "mmcv", "mmengine", "mmdet", "mmsegmentation"
    op: str  # installed <op> bound
    bound: str
    impl: str  # "local" (the module's own list-based digit_version) or "imported"
    line: int


def _symbols(tree: ast.Module) -> tuple[dict[str, str], dict[str, str]]:
    """(import alias -> OpenMMLab module, NAME -> string constant) of a module."""
    modules: dict[str, str] = {}
    consts: dict[str, str] = {}
    for n in ast.walk(tree):
        if isinstance(n, ast.Import):
            for al in n.names:
                if al.name in _MODULE_PACKAGE:
                    modules[al.asname or al.name] = al.name
        elif (isinstance(n, ast.Assign) and len(n.targets) == 1 and isinstance(n.targets[0], ast.Name)
              and isinstance(n.value, ast.Constant) and isinstance(n.value.value, str)):
            consts[n.targets[0].id] = n.value.value
    return modules, consts


def _is_version_call(e: ast.expr) -> bool:
    return isinstance(e, ast.Call) and bool(e.args) and (
        (isinstance(e.func, ast.Name) and e.func.id in ("digit_version", "parse", "Version"))
        or (isinstance(e.func, ast.Attribute) and e.func.attr in ("digit_version", "parse")))


def _term(e: ast.expr, modules: dict[str, str], consts: dict[str, str],
          names: dict[str, tuple[str, str]]) -> tuple[str, str] | None:
    """('installed', package) for digit_version(mmcv.__version__), ('bound', '1.3.8') for a bound."""
    if isinstance(e, ast.Name):
        return names.get(e.id)
    if not isinstance(e, ast.Call) or not _is_version_call(e):
        return None
    arg = e.args[0]
    if (isinstance(arg, ast.Attribute) and arg.attr == "__version__" and isinstance(arg.value, ast.Name)
            and arg.value.id in modules):
        return ("installed", _MODULE_PACKAGE[modules[arg.value.id]])
    if isinstance(arg, ast.Name) and arg.id in consts:
        return ("bound", consts[arg.id])
    if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
        return ("bound", arg.value)
    return None


def read_version_checks(text: str, filename: str = "__init__.py") -> list[VersionCheck]:
    """The ``installed <op> bound`` comparisons an OpenMMLab ``__init__.py`` asserts, read with ``ast``.

    Understands the shapes the releases use: ``X_minimum_version = '1.3.8'`` / ``MMCV_MIN = ...``
    string constants, ``v = digit_version(mmcv.__version__)``, ``digit_version(CONST)`` inline or
    bound to a name, and comparison chains (``a <= v <= b``) joined by ``and``.
    """
    tree = ast.parse(text, filename)
    local = any(isinstance(n, ast.FunctionDef) and n.name == "digit_version" for n in tree.body)
    impl = "local" if local else "imported"
    modules, consts = _symbols(tree)
    names: dict[str, tuple[str, str]] = {}
    for n in ast.walk(tree):
        if isinstance(n, ast.Assign) and len(n.targets) == 1 and isinstance(n.targets[0], ast.Name):
            t = _term(n.value, modules, consts, names)
            if t:
                names[n.targets[0].id] = t
    out: list[VersionCheck] = []
    for n in ast.walk(tree):
        if not isinstance(n, ast.Compare):
            continue
        chain = [n.left, *n.comparators]
        for x, op, y in zip(chain, n.ops, chain[1:], strict=False):
            sym = _OPS.get(type(op))
            tx, ty = _term(x, modules, consts, names), _term(y, modules, consts, names)
            if not sym or not tx or not ty:
                continue
            if tx[0] == "installed" and ty[0] == "bound":
                out.append(VersionCheck(tx[1], sym, ty[1], impl, n.lineno))
            elif tx[0] == "bound" and ty[0] == "installed":
                out.append(VersionCheck(ty[1], _FLIP[sym], tx[1], impl, n.lineno))
    return list(dict.fromkeys(out))


def digit_version_spec(op: str, bound: str, impl: str) -> str:
    """A PEP 440 specifier that accepts what ``installed <op> digit_version(bound)`` accepts.

    The packages' own ``digit_version`` (impl "local") compares lists of ints: '1.8' -> [1, 8] sorts
    BELOW '1.8.0' -> [1, 8, 0], so ``<= '1.8'`` rejects 1.8.0 (PEP 440 would accept it) and ``> '1.8'``
    accepts it.  Three-part bounds and rc bounds ('2.0.0rc4' -> [2, 0, -1, 4]) order as PEP 440 does
    for released mmcv versions.  mmcv's/mmengine's digit_version ("imported") pads to 4 parts.
    """
    two_part = bool(re.fullmatch(r"\d+\.\d+", bound))
    if impl == "local" and two_part and op in ("<=", ">"):
        return ("<" if op == "<=" else ">=") + bound
    return op + bound


def _requires_from_checks(checks: Sequence[VersionCheck], old: dict[str, str]) -> dict[str, str]:
    by_pkg: dict[str, list[str]] = {}
    for c in checks:
        by_pkg.setdefault(c.package, []).append(digit_version_spec(c.op, c.bound, c.impl))
    out = dict(old)
    for pkg, specs in by_pkg.items():
        key = pkg
        if pkg == "mmcv":
            if "mmcv-full" in old and "mmcv" not in old:
                key = "mmcv-full"
            elif "mmcv" not in old:
                lows = [s for s in specs if s.startswith(">")]
                key = "mmcv" if lows and Version(lows[0].lstrip(">=")).major >= 2 else "mmcv-full"
        out[key] = _norm_spec(",".join(dict.fromkeys(specs)))
    return out


# --- NumPy API use (ast) --------------------------------------------------------------------------

# name -> (NumPy release that removed it, release that brought it back or None)
REMOVED_NUMPY: dict[str, tuple[str, str | None]] = {
    **{n: ("1.24", None) for n in ("int", "float", "object", "str", "complex")},
    # np.bool and np.long came back in NumPy 2.0 (as np.bool_ and the C long type)
    "bool": ("1.24", "2.0"), "long": ("1.24", "2.0"),
    **{n: ("2.0", None) for n in (
        "NaN", "Inf", "Infinity", "infty", "NINF", "PINF", "NZERO", "PZERO", "float_", "complex_",
        "cfloat", "longfloat", "singlecomplex", "clongfloat", "longcomplex", "string_", "unicode_",
        "product", "cumproduct", "alltrue", "sometrue", "asfarray", "find_common_type", "round_", "msort",
        "issubclass_", "issctype", "maximum_sctype", "obj2sctype", "sctype2char", "sctypes", "issubsctype",
        "mat", "recfromcsv", "recfromtxt", "deprecate", "deprecate_with_doc", "disp", "who", "lookfor",
        "safe_eval", "cast", "set_string_function", "fastCopyAndTranspose", "byte_bounds")},
}
REMOVED_NUMPY_SOURCE = ("NumPy 1.24.0 release notes (expired deprecations: np.int, np.float, np.bool, "
                        "np.object, np.long, np.str, np.complex) and the NumPy 2.0 migration guide "
                        "(https://numpy.org/devdocs/numpy_2_0_migration_guide.html, removed members); "
                        "np.bool and "
                        "np.long are back in 2.0 (https://github.com/numpy/numpy/pull/24922)")


@dataclass(frozen=True)
class NumpyUse:
    spec: str | None  # numpy specifier the sources need, None when they use no removed name
    evidence: tuple[str, ...]  # "pkg/file.py:12 np.long"
    reason: str
    unparsed: tuple[str, ...] = ()


def _numpy_uses(text: str, path: str) -> Iterator[tuple[int, str]]:
    with warnings.catch_warnings():  # old releases' invalid escapes are not our concern
        warnings.simplefilter("ignore")
        tree = ast.parse(text, path)
    aliases = set()
    for n in ast.walk(tree):
        if isinstance(n, ast.Import):
            aliases |= {a.asname or a.name for a in n.names if a.name == "numpy"}
        elif isinstance(n, ast.ImportFrom) and n.module == "numpy" and n.level == 0:
            for a in n.names:
                if a.name in REMOVED_NUMPY:
                    yield n.lineno, f"from numpy import {a.name}"
    if not aliases:
        return
    for n in ast.walk(tree):
        if (isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name) and n.value.id in aliases
                and n.attr in REMOVED_NUMPY):
            yield n.lineno, f"{n.value.id}.{n.attr}"


def numpy_use(files: Iterable[tuple[str, str]]) -> NumpyUse:
    """Scan (path, source) pairs for NumPy names that were removed; the numpy bound they imply."""
    evidence: list[tuple[str, str]] = []  # (where, name)
    unparsed = []
    for path, text in files:
        try:
            for line, what in _numpy_uses(text, path):
                evidence.append((f"{path}:{line} {what}", what.rsplit(".", 1)[-1].split()[-1]))
        except (SyntaxError, ValueError):
            unparsed.append(path)
    if not evidence:
        return NumpyUse(None, (), "", tuple(unparsed))
    used = {name for _, name in evidence}
    forever = [REMOVED_NUMPY[n][0] for n in used if REMOVED_NUMPY[n][1] is None]
    hole = any(REMOVED_NUMPY[n][1] for n in used)
    upper = min(forever, key=Version) if forever else None
    if upper and (Version(upper) <= Version("1.24") or hole):
        spec = "<1.24" if hole else f"<{upper}"
    elif upper:
        spec = f"<{upper}"
    else:
        spec = "!=1.24.*,!=1.25.*,!=1.26.*"  # only names NumPy 2.0 brought back
    removed_in = sorted({REMOVED_NUMPY[n][0] for n in used}, key=Version)
    names = ", ".join(f"np.{n}" for n in sorted(used))
    reason = f"uses names NumPy {' / '.join(removed_in)} removed ({names})"
    def where(e: tuple[str, str]) -> tuple[bool, str, int]:
        path, _, rest = e[0].rpartition(":")
        return REMOVED_NUMPY[e[1]][0] != "1.24", path, int(rest.split()[0])

    ordered = sorted(evidence, key=where)
    return NumpyUse(spec, tuple(e for e, _ in ordered), reason, tuple(unparsed))


# --- pypi-openmmlab -------------------------------------------------------------------------------

_TOP = {"mmdet": "mmdet", "mmsegmentation": "mmseg", "mmdet3d": "mmdet3d",
        "mmcv-full": "mmcv", "mmcv": "mmcv"}
# mmcv(-full) rows (NumPy API use of the ops package itself) start with the releases envbuild pairs:
# mmcv-full 1.x and mmcv 2.x (mmcv < 2 is the ops-less "lite" package).
_FIRST = {"mmcv-full": "1.0.0", "mmcv": "2.0.0rc1"}


def _sources_of(path: Path, filename: str, top: str) -> dict[str, str]:
    """{'mmdet/__init__.py': text, ...}: the package's .py files in a wheel or sdist (no configs/tests)."""
    out: dict[str, str] = {}

    def take(name: str, read: Callable[[], bytes]) -> None:
        parts = name.split("/")
        if parts and parts[0] != top:  # sdist: base-version/pkg/...
            parts = parts[1:]
        if len(parts) < 2 or parts[0] != top or not name.endswith(".py") or ".mim" in parts:
            return
        out["/".join(parts)] = read().decode("utf-8", "replace")

    if filename.endswith((".whl", ".zip")):
        with zipfile.ZipFile(path) as zf:
            for i in zf.infolist():
                take(i.filename, lambda i=i: zf.read(i))  # type: ignore[misc]
    else:
        with tarfile.open(path) as tf:
            for m in tf.getmembers():
                if m.isfile():
                    take(m.name, lambda m=m: tf.extractfile(m).read())  # type: ignore[misc,union-attr]
    return out


def _pick_artifact(files: Sequence[DistFile], version: str) -> DistFile | None:
    """The smallest wheel or sdist of a release (both hold __init__.py and the sources)."""
    cands = []
    for f in files:
        if f.yanked or not f.sha256:
            continue
        w = _wheel(f)
        if w is not None:
            if w.version == version and f.filename.endswith("-none-any.whl"):
                cands.append(f)
            continue
        m = re.match(r"^(.+)-([^-]+)\.(tar\.gz|zip)$", f.filename)
        if m and _final(m.group(2)) == _final(version):
            cands.append(f)
    if not cands:
        return None
    return min(cands, key=lambda f: (f.size or 0, f.filename.endswith((".tar.gz", ".zip"))))


def _artifact_facts(client: IndexClient, f: DistFile, top: str) -> tuple[list[VersionCheck], NumpyUse]:
    path = client.artifact(f)
    try:
        srcs = _sources_of(path, f.filename, top)
    except (zipfile.BadZipFile, tarfile.TarError, OSError) as exc:
        raise FetchError(f"cannot read {f.filename} ({exc}).", path=str(path)) from None
    init = srcs.get(f"{top}/__init__.py", "")
    try:
        checks = read_version_checks(init, f"{top}/__init__.py") if init else []
    except SyntaxError:
        checks = []
    return checks, numpy_use(sorted(srcs.items()))


def _openmmlab_todo(by_v: dict[str, dict[str, Any]], files: Sequence[DistFile], today: str
                    ) -> list[tuple[str, DistFile]]:
    """The releases whose artifact must be read: not read before, or read from another file or reader."""
    todo = []
    for v, row in by_v.items():
        a = _pick_artifact(files, v)
        if a is None:
            continue
        if row.get("sha256") == a.sha256 and row.get("harvester") == HARVESTER_VERSION:
            row["checked"] = today  # same artifact, same reader: its facts still hold
            for imp in row.get("implied", []):
                imp["checked"] = today
            continue
        todo.append((v, a))
    return todo


def harvest_openmmlab(client: IndexClient, ep: Endpoints, table: dict[str, Any], today: str,
                      progress: Progress | None = None, *, new_releases: bool = True) -> str:
    """Read the listed releases (and, with ``new_releases``, those newer than the newest listed)."""
    counts = []
    for key, top in _TOP.items():
        files = client.project(ep.pypi, key)
        rows = table.setdefault(key, [])
        yanked = _yanked(files)
        for r in rows:
            if r["version"] in yanked:
                r["yanked"] = True
        listed = {v for f in files for v in [_dist_version(f.filename)] if v}
        if not rows and key in _FIRST and new_releases:
            rows += [{"version": v, "requires": {}} for v in sorted(listed, key=Version)
                     if Version(v) >= Version(_FIRST[key]) and _pick_artifact(files, v)]
        by_v = {r["version"]: r for r in rows}
        if not by_v:
            continue
        newest = max(by_v, key=Version)
        for v in sorted(listed, key=Version):
            if (new_releases and v not in by_v and Version(v) > Version(newest)
                    and not Version(v).is_prerelease):
                by_v[v] = {"version": v, "requires": {}}
                rows.append(by_v[v])
        todo = _openmmlab_todo(by_v, files, today)
        # downloads in threads; parsing in this thread (CPython 3.11's ast is not safe to run in
        # several threads at once: "AST constructor recursion depth mismatch")
        _pmap(lambda item: client.artifact(item[1]), todo, f"pypi-openmmlab ({key})", progress)
        for v, f in todo:
            checks, use = _artifact_facts(client, f, top)
            _apply_openmmlab(by_v[v], f, checks, use, today)
        rows.sort(key=lambda r: Version(r["version"]))
        counts.append(f"{key} {len(todo)} read, {len(by_v) - len(todo)} unchanged or not on PyPI")
    return "release files: " + ", ".join(counts)


def _dist_version(filename: str) -> str | None:
    """Version of a pure wheel or an sdist file name ('mmcv-full-1.4.0.tar.gz' -> '1.4.0')."""
    w = _wheel(DistFile(filename, "", None))
    if w is not None:
        return w.version if filename.endswith("-none-any.whl") else None
    m = re.match(r"^.+-([^-]+)\.(tar\.gz|zip)$", filename)
    return m.group(1) if m and _final(m.group(1)) else None


_CURATED = ("numpy", "python_max", "runtime", "mminstall", "build_from_source", "commit")


def _apply_openmmlab(row: dict[str, Any], f: DistFile, checks: Sequence[VersionCheck], use: NumpyUse,
                     today: str) -> None:
    art = f"PyPI {f.url} (sha256 {f.sha256})"
    old = row.get("source")
    old_list = [] if old is None else [old] if isinstance(old, str) else list(old)
    old_list = [re.sub(r"^curated fields( \([^)]*\))?: ", "", s) for s in old_list
                if not s.startswith("PyPI https://files.pythonhosted.org/")]
    if checks:
        row["requires"] = _requires_from_checks(checks, dict(row.get("requires") or {}))
        row["version_checks"] = [{"package": c.package, "op": c.op, "bound": c.bound, "digit_version": c.impl,
                                  "line": c.line} for c in checks]
        row["compare"] = "digit_version"
    # the old source stays only for the fields still curated (the harvested ones replace the rest)
    curated = [k for k in _CURATED if k in row]
    if not checks:
        curated.insert(0, "requires")
    label = f"curated fields ({', '.join(curated)}): "
    row["source"] = [f"{art}: __init__.py version checks (ast) and NumPy API scan",
                     *[label + s for s in old_list if curated]]
    row["sha256"] = f.sha256
    row["harvester"] = HARVESTER_VERSION
    row["checked"] = today
    row["implied"] = [] if use.spec is None else [{
        "package": "numpy", "spec": use.spec, "evidence": list(use.evidence[:_MAX_EVIDENCE]),
        "evidence_count": len(use.evidence), "reason": use.reason,
        "source": f"{art}; removed names per {REMOVED_NUMPY_SOURCE}", "checked": today}]
    if len(row["source"]) == 1:
        row["source"] = row["source"][0]


# --- orchestration --------------------------------------------------------------------------------

_HARVESTERS: dict[str, Callable[..., str]] = {
    "pypi-torch": harvest_torch, "pypi-numpy": harvest_numpy, "pypi-cupy": harvest_cupy,
    "pypi-openmmlab": harvest_openmmlab, "pytorch-index": harvest_pytorch_index,
    "openmmlab-index": harvest_openmmlab_index,
}


def _url(source: str, ep: Endpoints) -> str:
    if source.startswith("pypi-"):
        return ep.pypi
    return ep.pytorch if source == "pytorch-index" else ep.openmmlab


def harvest(tables: dict[str, dict[str, Any]], sources: Sequence[str], client: IndexClient, ep: Endpoints,
            today: str | None = None, progress: Progress | None = None
            ) -> tuple[dict[str, dict[str, Any]], list[SourceResult]]:
    """Apply each source to a copy of the tables; a source that fails leaves its facts untouched."""
    today = today or _today()
    out = {k: copy.deepcopy(v) for k, v in tables.items()}
    results = []
    for src in sources:
        name = SOURCES[src]
        work = copy.deepcopy(out[name])
        url = _url(src, ep)
        prev = (work.get("harvested") or {}).get(src, {})
        kept = prev.get("checked") or tables[name].get("checked", "")  # the facts in use before this run
        try:
            detail = _HARVESTERS[src](client, ep, work, today, progress)
        except (Unreachable, FetchError) as exc:
            status = "unreachable-kept" if isinstance(exc, Unreachable) else "failed-kept"
            h = out[name].setdefault("harvested", {})
            h[src] = {**prev, "checked": kept, "url": url, "status": status,
                      "last_attempt": today, "error": exc.message}
            results.append(SourceResult(src, f"{name}.json", status, kept, exc.message, url))
            continue
        work.setdefault("harvested", {})[src] = {"checked": today, "url": url, "status": "refreshed",
                                                 "detail": detail}
        work["checked"] = today
        out[name] = work
        results.append(SourceResult(src, f"{name}.json", "refreshed", today, detail, url))
    return out, results


def _dump(data: dict[str, Any]) -> str:
    return json.dumps(data, indent=1, ensure_ascii=False) + "\n"


def _write_dir_atomic(dest: Path, files: dict[str, dict[str, Any]]) -> None:
    """Replace ``dest`` by a directory holding exactly ``files``: built aside, swapped in by rename."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.parent / f".{dest.name}.tmp-{os.getpid()}"
    old = dest.parent / f".{dest.name}.old-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    for name, data in files.items():
        (tmp / f"{name}.json").write_text(_dump(data), encoding="utf-8")
    if dest.exists():
        os.replace(dest, old)
    os.replace(tmp, dest)
    shutil.rmtree(old, ignore_errors=True)


def _check_sources(only: Sequence[str] | None) -> list[str]:
    if not only:
        return list(SOURCES)
    bad = [s for s in only if s not in SOURCES]
    if bad:
        raise InputError(f"unknown source {', '.join(bad)}.", field="--only",
                         hint=f"Use one of: {', '.join(SOURCES)}.")
    return list(dict.fromkeys(only))


def update(only: Sequence[str] | None = None, *, offline_ok: bool = False, endpoints: Endpoints | None = None,
           data_dir: Path | None = None, today: str | None = None, progress: Progress | None = None
           ) -> UpdateReport:
    """Refresh the user knowledge cache (``data_dir/facts``) from the sources; artifacts kept by sha256.

    Raises:
        InputError: an unknown ``--only`` source.
        FetchError: no source could be reached (unless ``offline_ok``).
    """
    sources = _check_sources(only)
    ddir = data_dir or matrix.user_data_dir()
    ep = endpoints or Endpoints()
    matrix.load_table.cache_clear()
    base = {n: matrix.load_table(n) for n in matrix.TABLES}
    client = IndexClient(artifacts=ddir / "artifacts")
    new, results = harvest(base, sources, client, ep, today, progress)
    if not any(r.status == "refreshed" for r in results) and not offline_ok:
        raise Unreachable("no source could be reached: " + "; ".join(r.detail for r in results),
                          hint="Check the network (or a proxy), or pass --offline-ok to keep the "
                               "current data.")
    facts = ddir / "facts"
    fresh = {SOURCES[r.source] for r in results if r.status == "refreshed"}
    keep = {n: new[n] for n in matrix.TABLES if n in fresh or (facts / f"{n}.json").exists()}
    _write_dir_atomic(facts, keep)
    matrix.load_table.cache_clear()
    matrix.load_matrix.cache_clear()
    return UpdateReport(str(facts), tuple(results), tuple(f"{n}.json" for n in keep), client.requests,
                        client.downloaded_bytes)


def regenerate_bundled(only: Sequence[str] | None = None, *, out_dir: Path | None = None,
                       artifacts: Path | None = None, endpoints: Endpoints | None = None,
                       progress: Progress | None = None) -> UpdateReport:
    """The project's own task (tasks/refresh_data.py): harvest onto the bundled files, rewrite them."""
    sources = _check_sources(only)
    out = out_dir or matrix.DATA_DIR
    ep = endpoints or Endpoints()
    base = {n: matrix.load_table(n, bundled=True) for n in matrix.TABLES}
    client = IndexClient(artifacts=artifacts or matrix.user_data_dir() / "artifacts")
    new, results = harvest(base, sources, client, ep, None, progress)
    written = []
    for n in sorted({SOURCES[s] for s in sources}):
        if new[n] != base[n]:
            tmp = out / f".{n}.json.tmp-{os.getpid()}"
            tmp.write_text(_dump(new[n]), encoding="utf-8")
            os.replace(tmp, out / f"{n}.json")
            written.append(f"{n}.json")
    return UpdateReport(str(out), tuple(results), tuple(written), client.requests, client.downloaded_bytes)


# --- status ---------------------------------------------------------------------------------------

def _age(checked: str, today: str) -> int | None:
    try:
        return (dt.date.fromisoformat(today) - dt.date.fromisoformat(checked)).days
    except ValueError:
        return None


def data_status(today: str | None = None) -> dict[str, Any]:
    """Each data file and harvested source: checked date, age in days, bundled or user cache."""
    today = today or _today()
    matrix.load_table.cache_clear()
    rows = []
    for n in matrix.TABLES:
        path, origin = matrix.data_path(n)
        t = matrix.load_table(n)
        rows.append({"file": f"{n}.json", "source": "(file)", "checked": t["checked"],
                     "age_days": _age(t["checked"], today), "origin": origin, "status": "",
                     "path": str(path)})
        for src, h in sorted((t.get("harvested") or {}).items()):
            rows.append({"file": f"{n}.json", "source": src, "checked": h.get("checked", ""),
                         "age_days": _age(h.get("checked", ""), today), "origin": origin,
                         "status": h.get("status", ""), "path": str(path)})
    return {"ok": True, "user_data_dir": str(matrix.user_data_dir()), "today": today, "rows": rows}


def present_status(st: dict[str, Any], as_json: bool) -> None:
    from envbuild.output import console, print_json, table

    if as_json:
        print_json(st)
        return
    console.print(table("envbuild knowledge: where each fact comes from and how old it is",
                        ["file", "source", "checked", "age (days)", "from", "status"],
                        [[r["file"], r["source"], r["checked"], r["age_days"], r["origin"], r["status"]]
                         for r in st["rows"]]))
    console.print(f"user cache: {st['user_data_dir']}/facts (refresh with `envbuild data update`)")


def present_update(rep: UpdateReport, as_json: bool) -> None:
    from envbuild.output import console, print_json, table

    if as_json:
        print_json(rep.to_dict())
        return
    console.print(table("envbuild data update", ["source", "file", "status", "facts checked", "detail"],
                        [[r.source, r.file, r.status, r.checked, r.detail] for r in rep.results]))
    kept = [r.source for r in rep.results if r.status != "refreshed"]
    if kept:
        console.print(f"not reachable, old facts kept: {', '.join(kept)}")
    mb = rep.downloaded_bytes / 1e6
    console.print(f"wrote {', '.join(rep.written) or 'nothing'} to {rep.data_dir} "
                  f"({rep.requests} requests, {mb:.1f} MB downloaded)")


@dataclass
class _Bar:
    """A rich progress display fed by the harvester's (source, done, total) callbacks."""

    tasks: dict[str, Any] = field(default_factory=dict)
    prog: Any = None

    def __call__(self, source: str, done: int, total: int) -> None:
        if source not in self.tasks:
            self.tasks[source] = self.prog.add_task(source, total=total)
        self.prog.update(self.tasks[source], completed=done, total=total)


def update_cli(only: Sequence[str] | None, offline_ok: bool, as_json: bool) -> None:
    from envbuild.output import progress

    with progress() as prog:
        rep = update(only, offline_ok=offline_ok, progress=_Bar(prog=prog))
    present_update(rep, as_json)
