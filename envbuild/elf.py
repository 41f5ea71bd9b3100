"""Read what the loader and the CUDA driver need from an ELF shared object, without loading it.

pyelftools parses the dynamic section (NEEDED, RPATH, RUNPATH, SONAME) and the
undefined dynamic symbols; the ``.nv_fatbin`` section is walked by hand because
its container format is NVIDIA's, not ELF's: 16-byte container headers (magic
0xBA55ED50) followed by 64-byte entry headers (kind 1 = PTX, 2 = SASS; the arch at
offset 28). cuobjdump would list the same, but it is often not installed (it is
not on this project's build machine), so envbuild does not depend on it; the tests
check the reader against objects nvcc builds.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import struct
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, BinaryIO, ClassVar

from elftools.common.exceptions import ELFError
from elftools.elf import elffile as _elffile_module
from elftools.elf.dynamic import DynamicSegment
from elftools.elf.elffile import ELFFile
from elftools.elf.sections import SymbolTableSection
from elftools.elf.structs import ELFStructs

from envbuild import cache_home

__all__ = [
    "ElfInfo",
    "GpuCode",
    "arch_runs_on",
    "demangle",
    "ld_cache",
    "read_elf",
    "read_elf_cached",
    "read_elfs",
    "resolve_needed",
]

_FATBIN_MAGIC = 0xBA55ED50


class _SharedStructs(ELFStructs):
    """ELFStructs whose parsers are built once per ELF flavour.

    pyelftools rebuilds ~30k construct objects for every file it opens (85% of the time
    of reading a small .so); they are stateless parse definitions, so files of the same
    class/endianness/type/machine can share them. This keeps ``doctor`` on an env with a
    few hundred extensions well under a second.
    """

    _built: ClassVar[dict[tuple[Any, ...], dict[str, Any]]] = {}

    def _reuse(self, key: tuple[Any, ...], build: Any) -> None:
        hit = self._built.get(key)
        if hit is None:
            build()
            self._built[key] = dict(self.__dict__)
        else:
            self.__dict__.update(hit)

    def create_basic_structs(self) -> None:
        self._reuse(("basic", self.little_endian, self.elfclass), super().create_basic_structs)

    def create_advanced_structs(
        self, e_type: Any = None, e_machine: Any = None, e_ident_osabi: Any = None
    ) -> None:
        self._reuse(
            ("advanced", self.little_endian, self.elfclass, e_type, e_machine, e_ident_osabi),
            lambda: super(_SharedStructs, self).create_advanced_structs(e_type, e_machine, e_ident_osabi),
        )


_elffile_module.ELFStructs = _SharedStructs  # type: ignore[attr-defined,misc,unused-ignore]
_SYSTEM_DIRS = (
    "/lib64",
    "/usr/lib64",
    "/lib",
    "/usr/lib",
    "/lib/x86_64-linux-gnu",
    "/usr/lib/x86_64-linux-gnu",
)


@dataclass(frozen=True)
class GpuCode:
    """One entry of a CUDA fat binary: SASS for ``sm`` or PTX for ``compute`` (``ptx=True``)."""

    cc: int  # 75 for sm_75
    ptx: bool

    @property
    def label(self) -> str:
        return f"compute_{self.cc}" if self.ptx else f"sm_{self.cc}"


@dataclass
class ElfInfo:
    """The loader-relevant facts of one shared object."""

    path: str
    soname: str | None = None
    needed: list[str] = field(default_factory=list)
    rpath: list[str] = field(default_factory=list)
    runpath: list[str] = field(default_factory=list)
    gpu_code: list[GpuCode] = field(default_factory=list)
    has_fatbin: bool = False
    numpy_api: str | None = None  # "1.x" | "2.x" | None (no NumPy C-API import seen)


def _expand(entries: str, origin: str) -> list[str]:
    out = []
    for e in entries.split(":"):
        if not e:
            continue
        out.append(e.replace("$ORIGIN", origin).replace("${ORIGIN}", origin))
    return out


def _fatbin_codes(fh: BinaryIO, offset: int, size: int) -> list[GpuCode]:
    """Walk every fat-binary container of a ``.nv_fatbin`` section by seeking from header to header.

    Only the 16-byte container and 64-byte entry headers are read: torch's section is ~1 GB.
    """
    codes: list[GpuCode] = []
    i = 0
    while i + 16 <= size:
        fh.seek(offset + i)
        magic, _ver, hsz, fsz = struct.unpack("<IHHQ", fh.read(16))
        if magic != _FATBIN_MAGIC or hsz < 16:
            i += 8  # containers are 8-aligned
            continue
        p, end = i + hsz, min(i + hsz + fsz, size)
        while p + 32 <= end:
            fh.seek(offset + p)
            head = fh.read(32)
            kind, _v, ehsz, psz = struct.unpack_from("<HHIQ", head)
            if ehsz < 32 or kind not in (1, 2):
                break
            (sm,) = struct.unpack_from("<I", head, 28)
            code = GpuCode(cc=int(sm), ptx=kind == 1)
            if code not in codes:
                codes.append(code)
            p += ehsz + psz
        i = max(end, i + 8)
    return codes


_NP2 = re.compile(rb"numpy\._core\._multiarray_umath")
_NP1 = re.compile(rb"numpy\.core\.(?:_multiarray_umath|multiarray)")


def _numpy_api(strings: bytes) -> str | None:
    # NumPy's import_array() embeds the module name it imports: headers from NumPy >= 2
    # name numpy._core first; 1.x headers only know numpy.core (which NumPy 2 refuses).
    if b"_ARRAY_API" not in strings and b"_UFUNC_API" not in strings:
        return None
    if _NP2.search(strings):
        return "2.x"
    if _NP1.search(strings):
        return "1.x"
    return None


def _dynamic(seg: DynamicSegment, info: ElfInfo, origin: str) -> None:
    for tag in seg.iter_tags():
        # pyelftools sets needed/rpath/runpath/soname dynamically per tag kind
        t: Any = tag
        if t.entry.d_tag == "DT_NEEDED":
            info.needed.append(str(t.needed))
        elif t.entry.d_tag == "DT_RPATH":
            info.rpath = _expand(str(t.rpath), origin)
        elif t.entry.d_tag == "DT_RUNPATH":
            info.runpath = _expand(str(t.runpath), origin)
        elif t.entry.d_tag == "DT_SONAME":
            info.soname = str(t.soname)


_DT = {1: "needed", 14: "soname", 15: "rpath", 29: "runpath"}


def _read_elf64le(fh: BinaryIO, p: str, numpy_scan: bool) -> ElfInfo | None:
    """The fast path for x86-64/aarch64 (ELF64, little-endian): only headers, read with struct.

    About 30x faster than pyelftools per file (a doctor run reads hundreds); anything unexpected
    returns None and the caller falls back to pyelftools.
    """
    head = fh.read(64)
    if len(head) < 64 or head[:4] != b"\x7fELF" or head[4] != 2 or head[5] != 1:
        return None
    e_phoff, e_shoff = struct.unpack_from("<QQ", head, 32)
    e_phentsize, e_phnum, e_shentsize, e_shnum, e_shstrndx = struct.unpack_from("<HHHHH", head, 54)
    if e_phentsize != 56 or (e_shnum and e_shentsize != 64):
        return None
    fh.seek(e_phoff)
    ph = fh.read(56 * e_phnum)
    loads: list[tuple[int, int, int]] = []  # (vaddr, offset, filesz) to map DT_STRTAB's address
    dyn: tuple[int, int] | None = None
    for i in range(e_phnum):
        p_type, _flags, p_offset, p_vaddr, _paddr, p_filesz = struct.unpack_from("<IIQQQQ", ph, i * 56)
        if p_type == 1:
            loads.append((p_vaddr, p_offset, p_filesz))
        elif p_type == 2:
            dyn = (p_offset, p_filesz)
    info = ElfInfo(path=p)
    if dyn is not None and not _dynamic64le(fh, dyn, loads, info):
        return None
    if e_shnum and e_shstrndx < e_shnum:
        _sections64le(fh, e_shoff, e_shnum, e_shstrndx, info, numpy_scan)
    return info


def _dynamic64le(
    fh: BinaryIO, dyn: tuple[int, int], loads: list[tuple[int, int, int]], info: ElfInfo
) -> bool:
    """NEEDED/SONAME/RPATH/RUNPATH from PT_DYNAMIC; False when DT_STRTAB cannot be placed."""
    origin = os.path.dirname(os.path.abspath(info.path))
    fh.seek(dyn[0])
    raw = fh.read(dyn[1])
    tags = [struct.unpack_from("<qQ", raw, o) for o in range(0, len(raw) - 15, 16)]
    strtab = next((v for t, v in tags if t == 5), None)
    strsz = next((v for t, v in tags if t == 10), 0)
    off = (
        None
        if strtab is None
        else next((o + strtab - va for va, o, sz in loads if va <= strtab < va + sz), None)
    )
    if off is None:
        return False
    fh.seek(off)
    strings = fh.read(strsz)
    for t, v in tags:
        if t == 0:
            break
        kind = _DT.get(t)
        if kind is None:
            continue
        end = strings.find(b"\0", v)
        text = strings[v : end if end != -1 else len(strings)].decode("utf-8", "replace")
        if kind == "needed":
            info.needed.append(text)
        elif kind == "soname":
            info.soname = text
        elif kind == "rpath":
            info.rpath = _expand(text, origin)
        else:
            info.runpath = _expand(text, origin)
    return True


def _sections64le(
    fh: BinaryIO, e_shoff: int, e_shnum: int, e_shstrndx: int, info: ElfInfo, numpy_scan: bool
) -> None:
    """.nv_fatbin's GPU code and (with ``numpy_scan``) the NumPy C-API strings of .rodata."""
    if e_shnum:
        fh.seek(e_shoff)
        sh = fh.read(64 * e_shnum)
        secs = [struct.unpack_from("<IIQQQQ", sh, i * 64) for i in range(e_shnum)]
        _n, _t, _f, _a, str_off, str_size = secs[e_shstrndx]
        fh.seek(str_off)
        names = fh.read(str_size)

        def named(want: bytes) -> tuple[int, int] | None:
            for name_off, sh_type, _fl, _ad, s_off, s_size in secs:
                if names[name_off : name_off + len(want) + 1] == want + b"\0" and sh_type != 8:  # 8: NOBITS
                    return s_off, s_size
            return None

        if b".nv_fatbin" in names:
            fat = named(b".nv_fatbin")
            if fat is not None:
                info.has_fatbin = True
                info.gpu_code = _fatbin_codes(fh, fat[0], fat[1])
        if numpy_scan:
            ro = named(b".rodata")
            if ro is not None:
                fh.seek(ro[0])
                info.numpy_api = _numpy_api(fh.read(ro[1]))


def read_elf(path: str | Path, *, numpy_scan: bool = True) -> ElfInfo | None:
    """Parse ``path``; None when it is not an ELF file (a linker script, a truncated file).

    ``numpy_scan`` looks for NumPy C-API imports in .rodata (costly on big libraries; only needed
    when the env has NumPy 2).
    """
    p = str(path)
    try:
        with open(p, "rb") as fh:
            fast = _read_elf64le(fh, p, numpy_scan)
        if fast is not None:
            return fast
    except (OSError, struct.error, ValueError, IndexError):
        pass
    info = ElfInfo(path=p)
    origin = os.path.dirname(os.path.abspath(p))
    try:
        with open(p, "rb") as fh:
            elf = ELFFile(fh)
            # program headers are few; section headers are many: touch sections only when needed
            for seg in elf.iter_segments():
                if isinstance(seg, DynamicSegment):
                    _dynamic(seg, info, origin)
            shstrndx = elf["e_shstrndx"]
            names = elf.get_section(shstrndx).data() if shstrndx else b""
            if b".nv_fatbin" in names:
                sec = elf.get_section_by_name(".nv_fatbin")
                if sec is not None and sec["sh_type"] != "SHT_NOBITS":
                    info.has_fatbin = True
                    info.gpu_code = _fatbin_codes(fh, sec["sh_offset"], sec["sh_size"])
            if numpy_scan:
                ro = elf.get_section_by_name(".rodata")
                if ro is not None and ro["sh_type"] != "SHT_NOBITS":
                    info.numpy_api = _numpy_api(ro.data())
    except (ELFError, OSError, struct.error, ValueError):
        return None
    return info


# --- cached reads: a file's identity (device, inode, size, mtime) names its parse -------------------
#
# An env's big libraries (torch's libtorch_cuda.so is ~1 GB, with a .nv_fatbin to walk) do not change
# between two doctor runs; their headers are parsed once and kept, in this process and in
# $ENVBUILD_CACHE_DIR/elf-v1.json (default ~/.cache/envbuild), keyed by what stat() says of the file.

_MEM: dict[tuple[int, int, int, int, bool], ElfInfo | None] = {}
_DISK: dict[str, dict[str, Any]] | None = None
_DISK_DIRTY = False
_CACHE_VERSION = 1


def _cache_file() -> Path:
    return cache_home() / f"elf-v{_CACHE_VERSION}.json"


def _disk() -> dict[str, dict[str, Any]]:
    global _DISK
    if _DISK is None:
        try:
            data = json.loads(_cache_file().read_text())
            _DISK = data if isinstance(data, dict) else {}
        except (OSError, ValueError):
            _DISK = {}
    return _DISK


def _to_json(info: ElfInfo | None) -> dict[str, Any]:
    if info is None:
        return {"none": True}
    return {
        "soname": info.soname,
        "needed": info.needed,
        "rpath": info.rpath,
        "runpath": info.runpath,
        "gpu": [[c.cc, c.ptx] for c in info.gpu_code],
        "fatbin": info.has_fatbin,
        "numpy": info.numpy_api,
    }


def _from_json(path: str, d: dict[str, Any]) -> ElfInfo | None:
    if d.get("none"):
        return None
    return ElfInfo(
        path=path,
        soname=d.get("soname"),
        needed=list(d.get("needed") or []),
        rpath=list(d.get("rpath") or []),
        runpath=list(d.get("runpath") or []),
        gpu_code=[GpuCode(int(cc), bool(ptx)) for cc, ptx in d.get("gpu") or []],
        has_fatbin=bool(d.get("fatbin")),
        numpy_api=d.get("numpy"),
    )


def read_elf_cached(path: str | Path, *, numpy_scan: bool = True) -> ElfInfo | None:
    """:func:`read_elf`, parsed once per file identity (dev, inode, size, mtime) and kept on disk."""
    global _DISK_DIRTY
    p = str(path)
    try:
        st = os.stat(p)
    except OSError:
        return None
    key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, numpy_scan)
    if key in _MEM:
        hit = _MEM[key]
        return None if hit is None else dataclasses.replace(hit, path=p)
    dkey = ":".join(str(int(k)) for k in key)
    got = _disk().get(dkey)
    if isinstance(got, dict):
        info = _from_json(p, got)
    else:
        info = read_elf(p, numpy_scan=numpy_scan)
        _disk()[dkey] = _to_json(info)
        _DISK_DIRTY = True
    _MEM[key] = info
    return info


def read_elfs(paths: Sequence[str], *, numpy_scan: bool = True, jobs: int | None = None) -> list[ElfInfo]:
    """Read many files in parallel threads (file reads and pyelftools' seeks release the GIL on I/O),
    cached by identity; the order of ``paths`` is kept and non-ELF files are left out."""
    from concurrent.futures import ThreadPoolExecutor

    if not paths:
        return []
    _disk()  # load once, before the threads share it
    workers = jobs or min(8, (os.cpu_count() or 2) * 2, len(paths))
    if workers <= 1:
        got = [read_elf_cached(p, numpy_scan=numpy_scan) for p in paths]
    else:
        with ThreadPoolExecutor(max_workers=workers) as ex:
            got = list(ex.map(lambda q: read_elf_cached(q, numpy_scan=numpy_scan), paths))
    save_cache()
    return [e for e in got if e is not None]


def save_cache() -> None:
    """Write the on-disk cache when new files were parsed (atomically; a failure only costs speed)."""
    global _DISK_DIRTY
    if not _DISK_DIRTY or _DISK is None:
        return
    f = _cache_file()
    try:
        f.parent.mkdir(parents=True, exist_ok=True)
        if len(_DISK) > 200_000:  # bounded: drop the oldest half (dict order is insertion order)
            for k in list(_DISK)[: len(_DISK) // 2]:
                del _DISK[k]
        tmp = f.with_name(f".{f.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(_DISK, separators=(",", ":")))
        os.replace(tmp, f)
        _DISK_DIRTY = False
    except OSError:
        pass


def undefined_symbols(path: str | Path) -> list[str]:
    """Undefined, non-weak dynamic symbols of ``path`` (what the loader must find elsewhere)."""
    out: list[str] = []
    try:
        with open(path, "rb") as fh:
            elf = ELFFile(fh)
            sec = elf.get_section_by_name(".dynsym")
            if not isinstance(sec, SymbolTableSection):
                return out
            for sym in sec.iter_symbols():
                if sym["st_shndx"] == "SHN_UNDEF" and sym.name and sym["st_info"]["bind"] != "STB_WEAK":
                    out.append(sym.name)
    except (ELFError, OSError):
        pass
    return out


@lru_cache(maxsize=1)
def ld_cache() -> Mapping[str, str]:
    """The ld.so cache (``ldconfig -p``): soname -> path for this machine's x86-64 libraries."""
    out: dict[str, str] = {}
    for exe in ("/sbin/ldconfig", "/usr/sbin/ldconfig", "ldconfig"):
        try:
            text = subprocess.run([exe, "-p"], capture_output=True, text=True, timeout=10, check=False).stdout
        except (OSError, subprocess.SubprocessError):
            continue
        for line in text.splitlines():
            m = re.match(r"\s+(\S+) \(([^)]*)\) => (\S+)", line)
            if m and ("x86-64" in m.group(2) or "64bit" in m.group(2)):
                out.setdefault(m.group(1), m.group(3))
        break
    return out


def resolve_needed(
    info: ElfInfo,
    *,
    env_lib_dirs: Sequence[str] = (),
    ld_library_path: Sequence[str] = (),
    provided: Mapping[str, str] | None = None,
) -> dict[str, str | None]:
    """Find each NEEDED library the way ld.so would; None for those it cannot find.

    Order: DT_RPATH (when there is no RUNPATH), LD_LIBRARY_PATH, DT_RUNPATH, the ld.so
    cache, the default dirs; then ``env_lib_dirs`` and ``provided`` (libraries another
    package of the env loads first, e.g. torch/lib/libc10.so once ``import torch`` ran).
    """
    cache = ld_cache()
    dirs: list[str] = []
    if not info.runpath:
        dirs += info.rpath
    dirs += list(ld_library_path)
    dirs += info.runpath
    found: dict[str, str | None] = {}
    for lib in info.needed:
        hit: str | None = None
        if "/" in lib:
            hit = lib if os.path.exists(lib) else None
        else:
            for d in _chain(dirs, None):
                cand = os.path.join(d, lib)
                if os.path.exists(cand):
                    hit = cand
                    break
            if hit is None:
                hit = cache.get(lib)
            if hit is None:
                for d in _chain(_SYSTEM_DIRS, env_lib_dirs):
                    cand = os.path.join(d, lib)
                    if os.path.exists(cand):
                        hit = cand
                        break
            if hit is None and provided:
                hit = provided.get(lib)
        found[lib] = hit
    return found


def _chain(a: Iterable[str], b: Iterable[str] | None) -> Iterable[str]:
    yield from a
    if b is not None:
        yield from b


def arch_runs_on(codes: Sequence[GpuCode], cc: int) -> bool:
    """True when a device of compute capability ``cc`` (86 for 8.6) can run one of ``codes``.

    SASS for sm_XY runs on the same major with minor >= Y; PTX for compute_XY is
    JIT-compiled by the driver for any cc >= XY (NVIDIA binary/PTX compatibility).
    """
    for c in codes:
        if c.ptx and cc >= c.cc:
            return True
        if not c.ptx and cc // 10 == c.cc // 10 and cc >= c.cc:
            return True
    return False


@lru_cache(maxsize=256)
def demangle(symbol: str) -> str | None:
    """The C++ name of a mangled symbol: c++filt (binutils) when present, else a small built-in demangler.

    None when the symbol is not C++ or neither can read it.
    """
    if not symbol.startswith("_Z"):
        return None
    if shutil.which("c++filt"):
        try:
            out = subprocess.run(
                ["c++filt", symbol], capture_output=True, text=True, timeout=10, check=False
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            out = ""
        if out and out != symbol:
            return out
    return demangle_builtin(symbol)


_BUILTIN = {
    "v": "void",
    "b": "bool",
    "c": "char",
    "a": "signed char",
    "h": "unsigned char",
    "s": "short",
    "t": "unsigned short",
    "i": "int",
    "j": "unsigned int",
    "l": "long",
    "m": "unsigned long",
    "x": "long long",
    "y": "unsigned long long",
    "f": "float",
    "d": "double",
    "e": "long double",
    "w": "wchar_t",
    "z": "...",
}


class _Unsupported(Exception):
    pass


class _Demangler:
    """The subset of the Itanium C++ ABI that torch/mmcv symbols use: nested names, templates of
    types, substitutions (S_, S0_, St), template parameters (T_), const/pointer/reference types.
    Constructors, operators, literals and lambdas raise _Unsupported."""

    def __init__(self, text: str) -> None:
        self.s, self.i = text, 0
        self.subs: list[str] = []
        self.targs: list[str] = []

    def peek(self, n: int = 1) -> str:
        return self.s[self.i : self.i + n]

    def take(self, n: int = 1) -> str:
        out = self.s[self.i : self.i + n]
        if len(out) < n:
            raise _Unsupported
        self.i += n
        return out

    def number(self) -> int:
        j = self.i
        while self.peek().isdigit():
            self.i += 1
        if j == self.i:
            raise _Unsupported
        return int(self.s[j : self.i])

    def source_name(self) -> str:
        return self.take(self.number())

    def subst(self) -> str:
        self.take()  # S
        if self.peek() == "t":
            self.take()
            return "std"
        seq = ""
        while self.peek() != "_":
            seq += self.take()
        self.take()
        idx = 0 if not seq else int(seq, 36) + 1
        if idx >= len(self.subs):
            raise _Unsupported
        return self.subs[idx]

    def template_args(self) -> list[str]:
        self.take()  # I
        args = []
        while self.peek() != "E":
            args.append(self.type())
        self.take()
        return args

    @staticmethod
    def fmt(args: list[str]) -> str:
        inner = ", ".join(args)
        return "<" + inner + (" >" if inner.endswith(">") else ">")  # c++filt never writes ">>"

    def name(self, *, entity: bool) -> tuple[str, bool, bool]:
        """(qualified name, is a template, const method); prefixes become substitutions."""
        if self.peek() != "N":
            return self.unscoped_name(entity=entity)
        self.take()  # N
        const = False
        if self.peek() == "K":
            self.take()
            const = True
        parts = ""
        pending: str | None = None  # the prefix so far, a substitution candidate once extended
        is_template = False
        while self.peek() != "E":
            c = self.peek()
            if pending is not None:
                self.subs.append(pending)
                pending = None
            if c == "S":
                comp = self.subst()  # a reference (or std::) is not a new candidate
                parts = comp if not parts else parts + "::" + comp
                is_template = False
            elif c == "I":
                targs = self.template_args()
                if entity:
                    self.targs = targs
                parts += self.fmt(targs)
                pending, is_template = parts, True
            elif c.isdigit():
                comp = self.source_name()
                parts = comp if not parts else parts + "::" + comp
                pending, is_template = parts, False
            else:
                raise _Unsupported
        if pending is not None and not entity:
            self.subs.append(pending)
        self.take()  # E
        return parts, is_template, const

    def unscoped_name(self, *, entity: bool) -> tuple[str, bool, bool]:
        """A name outside N...E: ``St`` + source name (std::), or a source name, with template args."""
        if self.peek(2) == "St":
            self.take(2)
            base = "std::" + self.source_name()
        else:
            base = self.source_name()
        if self.peek() == "I":
            self.subs.append(base)  # the template name
            targs = self.template_args()
            if entity:
                self.targs = targs
            else:
                self.subs.append(base + self.fmt(targs))
            return base + self.fmt(targs), True, False
        if not entity:
            self.subs.append(base)
        return base, False, False

    def type(self) -> str:
        c = self.peek()
        if c in _BUILTIN:
            self.take()
            return _BUILTIN[c]
        if c in "PRO":
            self.take()
            inner = self.type()
            out = inner + {"P": "*", "R": "&", "O": "&&"}[c]
        elif c == "K":
            self.take()
            out = self.type() + " const"
        elif c == "T":
            self.take()
            seq = ""
            while self.peek() != "_":
                seq += self.take()
            self.take()
            idx = 0 if not seq else int(seq) + 1
            if idx >= len(self.targs):
                raise _Unsupported
            out = self.targs[idx]
        elif c == "S" and self.peek(2) != "St":
            out = self.subst()
            if self.peek() == "I":
                out += self.fmt(self.template_args())
            else:
                return out
        elif c == "N" or c.isdigit() or self.peek(2) == "St":
            out, _, _ = self.name(entity=False)
            return out
        else:
            raise _Unsupported
        self.subs.append(out)
        return out

    def encoding(self) -> str:
        self.take(2)  # _Z
        name, is_template, const = self.name(entity=True)
        if self.i >= len(self.s):
            return name
        ret = self.type() + " " if is_template else ""
        params = []
        while self.i < len(self.s):
            params.append(self.type())
        plist = "" if params == ["void"] else ", ".join(params)
        return f"{ret}{name}({plist})" + (" const" if const else "")


def demangle_builtin(symbol: str) -> str | None:
    """Demangle the common torch/mmcv symbol shapes without binutils; None for anything else."""
    try:
        return _Demangler(symbol.split("@")[0]).encoding()
    except (_Unsupported, ValueError, IndexError):
        return None
