#!/usr/bin/env python3
"""Probe a machine: OS, glibc, Python, NVIDIA GPUs and driver, CUDA toolkits, gcc, conda.

This file is also a standalone script for machines without envbuild::

    scp envbuild/probe.py cluster:   &&   ssh cluster python3 probe.py > profile.json

so it imports only the standard library and keeps Python 3.6 syntax (no
``from __future__ import annotations``, no walrus, ``typing`` generics).

Structure: PURE parsers (``parse_*``: text in, values out, never raise) and thin
runners that call a tool, time-box it and turn every failure (tool missing,
garbage output, hung driver) into ``None`` plus a line in ``notes``.

The driver's CUDA (``driver_cuda_version``: the newest CUDA the installed driver
runs, from the nvidia-smi banner or libcuda's ``cuDriverGetVersion``) is kept
apart from installed toolkits (``cuda_toolkits``: nvcc / version.json).  Reading
``/usr/local/cuda/version.json`` for the former is the classic mistake: on a
server with a CUDA 10.2 driver and nvcc 10.1 it reports 10.1, and the
``nvidia_driver`` entry of that file names the driver bundled with the
installer, not the one running.
"""
# ruff: noqa: UP006, UP035, UP045, UP031, B905

import argparse
import contextlib
import ctypes
import glob
import json
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
import tempfile
from typing import Any, Dict, List, Optional, Sequence, Tuple

__all__ = [
    "QUERY_FIELDS",
    "SCHEMA_VERSION",
    "build_toolchain",
    "cuda_version_from_int",
    "main",
    "nvidia_smi_failure",
    "parse_cuda_version_json",
    "parse_cuda_version_txt",
    "parse_gcc_version",
    "parse_ldd_version",
    "parse_nvcc_version",
    "parse_nvidia_smi_header",
    "parse_nvidia_smi_query",
    "parse_proc_driver_version",
    "probe",
]

SCHEMA_VERSION = 1
NVIDIA_SMI_TIMEOUT = 10.0
TOOL_TIMEOUT = 20.0
QUERY_FIELDS = ("name", "compute_cap", "memory.total", "driver_version")
# The conda-kind managers' commands, in the order looked for: envbuild/managers.py is the registry;
# this copy exists because probe.py also runs alone on a machine without envbuild
# (tests/test_managers.py checks the two agree).
CONDA_BINARIES = ("micromamba", "mamba", "conda")
QUERY_FIELDS_OLD = ("name", "memory.total", "driver_version")

_NA = {"", "n/a", "[n/a]", "[not supported]", "not supported", "[unknown error]", "not found"}

Json = Dict[str, Any]


# --------------------------------------------------------------------------- parsers (pure)


def _clean(value: str) -> Optional[str]:
    v = value.strip()
    return None if v.lower() in _NA else v


def _to_int(value: Optional[str]) -> Optional[int]:
    if value is None:
        return None
    m = re.match(r"^\s*(\d+)(?:\.\d+)?\s*(?:MiB)?\s*$", value)
    return int(m.group(1)) if m else None


def _norm_field(header: str) -> str:
    # "memory.total [MiB]" -> "memory.total"; "gpu_name" is an alias of "name".
    h = re.sub(r"\s*\[.*?\]\s*$", "", header.strip().lower())
    return {"gpu_name": "name"}.get(h, h)


def parse_nvidia_smi_query(text: str, fields: Sequence[str] = QUERY_FIELDS) -> List[Json]:
    """Parse ``nvidia-smi --query-gpu=... --format=csv[,noheader][,nounits]`` output.

    ``fields`` names the queried columns in order; a header row, when present,
    overrides it (so any column order works).  Rows that do not have the right
    number of cells (error messages, garbage) are skipped.  Returns GPU dicts
    with ``name``, ``compute_capability``, ``memory_mib``, ``driver_version``.
    """
    cols = [_norm_field(f) for f in fields]
    gpus = []  # type: List[Json]
    for raw in text.splitlines():
        if not raw.strip():
            continue
        cells = [c.strip() for c in raw.split(",")]
        normed = [_norm_field(c) for c in cells]
        if "name" in normed and ("driver_version" in normed or "compute_cap" in normed
                                 or "memory.total" in normed):
            cols = normed
            continue
        if len(cells) != len(cols):
            continue
        row = dict(zip(cols, cells))
        name = _clean(row.get("name", ""))
        if not name:
            continue
        cc = _clean(row.get("compute_cap", ""))
        if cc is not None and not re.match(r"^\d+\.\d+$", cc):
            cc = None
        gpus.append({
            "name": name,
            "compute_capability": cc,
            "memory_mib": _to_int(_clean(row.get("memory.total", ""))),
            "driver_version": _clean(row.get("driver_version", "")),
        })
    return gpus


_FAILURE_PATTERNS = (
    "NVIDIA-SMI has failed",
    "Failed to initialize NVML",
    "couldn't communicate with the NVIDIA driver",
    "No devices were found",
    "Unable to determine the device handle",
    "is not a valid field to query",
)


def nvidia_smi_failure(text: str) -> Optional[str]:
    """The first line of a known nvidia-smi failure message in ``text``, or None."""
    for line in text.splitlines():
        if any(p.lower() in line.lower() for p in _FAILURE_PATTERNS):
            return line.strip()
    return None


def parse_nvidia_smi_header(text: str) -> Json:
    """Parse plain ``nvidia-smi`` (or ``nvidia-smi -q``) output.

    Returns ``driver_version`` and ``cuda_version`` (the newest CUDA the driver
    runs; None when it prints N/A) and ``gpus`` from the table rows: ``name`` (the
    table truncates long names with "..."; ``truncated`` says so) and
    ``memory_mib``.
    """
    driver = None  # type: Optional[str]
    cuda = None  # type: Optional[str]
    # Newer drivers print "KMD Version" / "CUDA UMD Version"; -q prints "Driver Version   : x".
    m = re.search(r"(?:Driver|KMD) Version\s*:\s*([0-9][0-9.]*[0-9])", text)
    if m:
        driver = m.group(1)
    m = re.search(r"CUDA (?:UMD )?Version\s*:\s*(\d+\.\d+)", text)
    if m:
        cuda = m.group(1)
    gpus = []  # type: List[Json]
    lines = text.splitlines()
    for i, line in enumerate(lines):
        row = re.match(r"^\|\s+(\d+)\s+(.+?)\s+(?:On|Off|WDDM|TCC)\s+\|\s*[0-9A-Fa-f]{4,8}:[0-9A-Fa-f]{2}:",
                       line)
        if not row:
            continue
        name = row.group(2).strip()
        mem = None  # type: Optional[int]
        for nxt in lines[i + 1:i + 3]:
            mm = re.search(r"(\d+)MiB\s*/\s*(\d+)MiB", nxt)
            if mm:
                mem = int(mm.group(2))
                break
        gpus.append({
            "name": name,
            "compute_capability": None,
            "memory_mib": mem,
            "truncated": name.endswith("..."),
        })
    return {"driver_version": driver, "cuda_version": cuda, "gpus": gpus}


def parse_nvcc_version(text: str) -> Optional[str]:
    """``nvcc --version`` -> full toolkit version ("11.3.58"), or X.Y when no V-number is printed."""
    m = re.search(r"release\s+(\d+\.\d+),\s*V(\d+\.\d+(?:\.\d+)?)", text)
    if m:
        return m.group(2)
    m = re.search(r"release\s+(\d+\.\d+)", text)
    return m.group(1) if m else None


def parse_ldd_version(text: str) -> Optional[str]:
    """``ldd --version`` -> glibc version ("2.36"); None for musl or garbage."""
    first = text.splitlines()[0] if text.strip() else ""
    if "musl" in first.lower():
        return None
    m = re.search(r"(?:GLIBC|GNU libc|glibc)[^)\n]*\)?\s+(\d+\.\d+(?:\.\d+)?)\s*$", first, re.IGNORECASE)
    if m:
        return m.group(1)
    m = re.search(r"\s(\d+\.\d+)\s*$", first)
    return m.group(1) if m and first.lower().startswith("ldd") else None


def parse_gcc_version(text: str) -> Optional[str]:
    """``gcc --version`` -> "12.2.0" (the version at the end of the first line)."""
    first = text.splitlines()[0] if text.strip() else ""
    if "gcc" not in first.lower() and "g++" not in first.lower():
        return None
    m = re.search(r"\s(\d+\.\d+(?:\.\d+)?)(?:\s+\d{8})?(?:\s+\(.*\))?\s*$", first)
    return m.group(1) if m else None


def parse_cuda_version_json(text: str) -> Optional[str]:
    """``version.json`` of CUDA >= 11.1 -> ``cuda.version`` ("11.3.1", "11.8.20220929")."""
    try:
        data = json.loads(text)
        v = data["cuda"]["version"]
    except (ValueError, KeyError, TypeError):
        return None
    return v if isinstance(v, str) and re.match(r"^\d+\.\d+", v) else None


def parse_cuda_version_txt(text: str) -> Optional[str]:
    """``version.txt`` of CUDA <= 11.0 ("CUDA Version 10.1.243") -> "10.1.243"."""
    m = re.search(r"CUDA Version\s+(\d+\.\d+(?:\.\d+)?)", text)
    return m.group(1) if m else None


def parse_proc_driver_version(text: str) -> Optional[str]:
    """``/proc/driver/nvidia/version`` -> kernel module version ("470.223.02")."""
    m = re.search(r"Kernel Module(?:\s+for\s+\S+)?\s+(\d+\.\d+(?:\.\d+)?)", text)
    return m.group(1) if m else None


def cuda_version_from_int(value: int) -> Optional[str]:
    """``cuDriverGetVersion`` integer (11040) -> "11.4"."""
    if value <= 0:
        return None
    return "%d.%d" % (value // 1000, (value % 1000) // 10)


def _major_minor(version: Optional[str]) -> Optional[str]:
    if not version:
        return None
    m = re.match(r"^(\d+)\.(\d+)", version)
    return "%s.%s" % (m.group(1), m.group(2)) if m else None


# --------------------------------------------------------------------------- runners


def _run(argv: Sequence[str], timeout: float) -> Tuple[Optional[int], str, str]:
    """Run a tool; (returncode, stdout, stderr).  returncode is None if it could not run or timed out."""
    env = dict(os.environ)
    env["LC_ALL"] = "C"  # parsers expect English messages
    try:
        proc = subprocess.Popen(list(argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                stdin=subprocess.DEVNULL, env=env,
                                universal_newlines=True, encoding="utf-8", errors="replace")
    except OSError as exc:
        return None, "", str(exc.strerror or exc)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        # A process stuck in the kernel (hung driver) cannot be reaped: do not wait for it.
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.communicate(timeout=2)
        return None, "", "timed out after %g s" % timeout
    return proc.returncode, out or "", err or ""


def _read(path: str) -> Optional[str]:
    try:
        with open(path) as fh:
            return fh.read()
    except (OSError, UnicodeDecodeError):
        return None


def _libcuda_driver_version() -> Tuple[Optional[str], Optional[str]]:
    """(CUDA version from cuDriverGetVersion, error)."""
    try:
        lib = ctypes.CDLL("libcuda.so.1")
    except OSError as exc:
        return None, str(exc)
    version = ctypes.c_int(0)
    try:
        rc = lib.cuDriverGetVersion(ctypes.byref(version))
    except AttributeError as exc:
        return None, str(exc)
    if rc != 0:
        return None, "cuDriverGetVersion returned %d" % rc
    return cuda_version_from_int(version.value), None


class _NvmlMemory(ctypes.Structure):
    _fields_ = [("total", ctypes.c_ulonglong), ("free", ctypes.c_ulonglong), ("used", ctypes.c_ulonglong)]


def _from_nvml() -> Tuple[List[Json], Optional[str], Optional[str], Optional[str]]:
    """(gpus, driver version, driver CUDA version, error) from libnvidia-ml, for hosts without nvidia-smi."""
    try:
        nvml = ctypes.CDLL("libnvidia-ml.so.1")
    except OSError as exc:
        return [], None, None, "libnvidia-ml.so.1 not loadable (%s)" % exc
    try:
        init = getattr(nvml, "nvmlInit_v2", None) or nvml.nvmlInit
        if init() != 0:
            return [], None, None, "nvmlInit failed"
        try:
            buf = ctypes.create_string_buffer(96)
            driver = (buf.value.decode("ascii", "replace")
                      if nvml.nvmlSystemGetDriverVersion(buf, ctypes.c_uint(96)) == 0 else None)
            cuda_int = ctypes.c_int(0)
            cuda = (cuda_version_from_int(cuda_int.value)
                    if nvml.nvmlSystemGetCudaDriverVersion(ctypes.byref(cuda_int)) == 0 else None)
            count = ctypes.c_uint(0)
            get_count = getattr(nvml, "nvmlDeviceGetCount_v2", None) or nvml.nvmlDeviceGetCount
            get_handle = (getattr(nvml, "nvmlDeviceGetHandleByIndex_v2", None)
                          or nvml.nvmlDeviceGetHandleByIndex)
            gpus = []  # type: List[Json]
            if get_count(ctypes.byref(count)) == 0:
                for i in range(count.value):
                    handle = ctypes.c_void_p()
                    if get_handle(ctypes.c_uint(i), ctypes.byref(handle)) != 0:
                        continue
                    name = ctypes.create_string_buffer(96)
                    nvml.nvmlDeviceGetName(handle, name, ctypes.c_uint(96))
                    major, minor = ctypes.c_int(0), ctypes.c_int(0)
                    cc_ok = nvml.nvmlDeviceGetCudaComputeCapability(
                        handle, ctypes.byref(major), ctypes.byref(minor)) == 0
                    mem = _NvmlMemory()
                    mem_ok = nvml.nvmlDeviceGetMemoryInfo(handle, ctypes.byref(mem)) == 0
                    gpus.append({
                        "name": name.value.decode("utf-8", "replace"),
                        "compute_capability": "%d.%d" % (major.value, minor.value) if cc_ok else None,
                        "memory_mib": mem.total // (1024 * 1024) if mem_ok else None,
                    })
        finally:
            nvml.nvmlShutdown()
    except AttributeError as exc:  # an NVML too old for one of these calls
        return [], None, None, "NVML call missing (%s)" % exc
    return gpus, driver, cuda, None


def _from_nvidia_smi(smi: str, timeout: float) -> Tuple[List[Json], Optional[str], Optional[str], List[str]]:
    """(gpus, driver version, driver CUDA version, notes) from one nvidia-smi executable."""
    notes = []  # type: List[str]
    rc, out, err = _run([smi], timeout)
    if rc is None:
        hung = " (hung driver?)" if "timed out" in err else ""
        return [], None, None, ["nvidia-smi could not run: %s%s." % (err, hung)]
    failure = nvidia_smi_failure(out + "\n" + err)
    if failure or rc != 0:
        why = failure or (err or out).strip()[:200] or "exit %d" % rc
        return [], None, None, ["nvidia-smi failed: %s" % why]
    header = parse_nvidia_smi_header(out)
    driver = header["driver_version"]  # type: Optional[str]
    driver_cuda = header["cuda_version"]  # type: Optional[str]
    if driver is None:
        notes.append("nvidia-smi output not understood (no 'Driver Version' in it).")
    elif driver_cuda is None:
        notes.append("nvidia-smi prints no CUDA version for driver %s." % driver)
    gpus, qnotes = _query_gpus(smi, timeout)
    notes.extend(qnotes)
    if not gpus and header["gpus"]:
        gpus = [{k: v for k, v in g.items() if k != "truncated"} for g in header["gpus"]]
        if any(g.get("truncated") for g in header["gpus"]):
            notes.append("GPU names come from the nvidia-smi table and are truncated ('...').")
    if driver is None and gpus:
        driver = gpus[0].get("driver_version")
    for g in gpus:
        g.pop("driver_version", None)
    return gpus, driver, driver_cuda, notes


def probe_nvidia(timeout: float = NVIDIA_SMI_TIMEOUT) -> Json:
    """GPUs, driver version and driver CUDA version from nvidia-smi (procfs / libcuda as fallbacks)."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        # Containers often get the driver libraries without nvidia-smi: ask NVML directly.
        gpus, driver, driver_cuda, error = _from_nvml()
        if error is None:
            notes = ["nvidia-smi not found; GPUs and driver read through NVML (libnvidia-ml.so.1)."]
        else:
            notes = ["nvidia-smi not found: no NVIDIA driver visible (gpus empty); %s." % error]
    else:
        gpus, driver, driver_cuda, notes = _from_nvidia_smi(smi, timeout)
    if driver is None:
        proc = _read("/proc/driver/nvidia/version")
        driver = parse_proc_driver_version(proc) if proc else None
        if driver:
            notes.append("driver version %s read from /proc/driver/nvidia/version." % driver)
    if driver_cuda is None and (driver is not None or smi is not None):
        driver_cuda, error = _libcuda_driver_version()
        if driver_cuda:
            notes.append("driver CUDA version %s read with cuDriverGetVersion (libcuda.so.1)." % driver_cuda)
        else:
            notes.append("driver CUDA version unknown: libcuda.so.1 not usable (%s)." % error)
    return {"gpus": gpus, "driver_version": driver, "driver_cuda_version": driver_cuda, "notes": notes}


def _query_gpus(smi: str, timeout: float) -> Tuple[List[Json], List[str]]:
    fmt = "--format=csv,noheader,nounits"
    rc, out, err = _run([smi, "--query-gpu=" + ",".join(QUERY_FIELDS), fmt], timeout)
    if rc == 0:
        gpus = parse_nvidia_smi_query(out, QUERY_FIELDS)
        if gpus:
            return gpus, []
    if rc is None:
        return [], ["nvidia-smi --query-gpu could not run: %s." % err]
    # Drivers before compute_cap existed reject the whole query: ask again without it.
    rc2, out2, err2 = _run([smi, "--query-gpu=" + ",".join(QUERY_FIELDS_OLD), fmt], timeout)
    gpus = parse_nvidia_smi_query(out2, QUERY_FIELDS_OLD) if rc2 == 0 else []
    if gpus:
        why = nvidia_smi_failure(out + "\n" + err) or "no compute_cap column"
        return gpus, ["nvidia-smi cannot report compute capability (%s); it is left null." % why]
    return [], ["nvidia-smi --query-gpu gave no GPUs: %s" % (
        nvidia_smi_failure(out2 + "\n" + err2) or (err2 or out2).strip()[:200] or "empty output")]


def _toolkit_version_in(root: str, timeout: float) -> Optional[str]:
    text = _read(os.path.join(root, "version.json"))
    v = parse_cuda_version_json(text) if text else None
    if v:
        return v
    text = _read(os.path.join(root, "version.txt"))
    v = parse_cuda_version_txt(text) if text else None
    if v:
        return v
    nvcc = os.path.join(root, "bin", "nvcc")
    if os.access(nvcc, os.X_OK):
        rc, out, _ = _run([nvcc, "--version"], timeout)
        v = parse_nvcc_version(out) if rc == 0 else None
        if v:
            return v
    # Toolkits assembled from pip wheels (nvidia-cuda-nvcc) carry only dist-info metadata.
    for info in sorted(glob.glob(os.path.join(root, "*", "nvidia_cuda_nvcc*-*.dist-info"))
                       + glob.glob(os.path.join(root, "nvidia_cuda_nvcc*-*.dist-info"))):
        m = re.search(r"nvidia_cuda_nvcc(?:_cu\d+)?-(\d+\.\d+(?:\.\d+)?)", os.path.basename(info))
        if m:
            return m.group(1)
    return None


def _is_toolkit_root(root: str) -> bool:
    return os.path.isfile(os.path.join(root, "bin", "nvcc")) and any(
        os.path.exists(os.path.join(root, p))
        for p in ("version.json", "version.txt", "nvvm", os.path.join("include", "cuda_runtime.h")))


def _python_info(python_exe: Optional[str]) -> Tuple[Optional[str], List[str], Optional[str]]:
    """(X.Y, site-packages dirs, error) of the interpreter running this file or of ``python_exe``."""
    code = (
        "import sys, json, site, sysconfig\n"
        "paths = list(getattr(site, 'getsitepackages', lambda: [])())\n"
        "try:\n    paths.append(site.getusersitepackages())\nexcept Exception:\n    pass\n"
        "paths.append(sysconfig.get_paths()['purelib'])\n"
        "print(json.dumps({'version': '%d.%d' % sys.version_info[:2], 'paths': paths}))\n"
    )
    if python_exe is None:
        scope = {}  # type: Dict[str, Any]
        import io
        buf = io.StringIO()
        old = sys.stdout
        sys.stdout = buf
        try:
            exec(code, scope)
        finally:
            sys.stdout = old
        data = json.loads(buf.getvalue())
    else:
        rc, out, err = _run([python_exe, "-c", code], TOOL_TIMEOUT)
        try:
            data = json.loads(out.strip().splitlines()[-1]) if rc == 0 else None
        except (ValueError, IndexError):
            data = None
        if not isinstance(data, dict):
            return None, [], "%s did not run: %s" % (python_exe, (err or out).strip()[:200] or "no output")
    paths = []  # type: List[str]
    for p in data.get("paths", []):
        if isinstance(p, str) and p not in paths:
            paths.append(p)
    return str(data.get("version")), paths, None


class _Toolkits:
    """Collects toolkit candidates, de-duplicated by the real path of their root."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.found = []  # type: List[Json]
        self.by_real = {}  # type: Dict[str, Json]
        self.notes = []  # type: List[str]

    def add(self, root: str, source: str, version: Optional[str] = None, nvcc: Optional[str] = None) -> None:
        real = os.path.realpath(root)
        if real in self.by_real:
            entry = self.by_real[real]
            if source not in entry["source"].split(","):
                entry["source"] += "," + source
            return
        v = version or _toolkit_version_in(root, self.timeout)
        if v is None:
            self.notes.append("%s (%s) looks like a CUDA toolkit but its version is unknown."
                              % (root, source))
            return
        nv = nvcc or os.path.join(root, "bin", "nvcc")
        entry = {"version": _major_minor(v), "full_version": v, "path": root, "source": source,
                 "nvcc": nv if os.path.isfile(nv) else None}
        self.by_real[real] = entry
        self.found.append(entry)

    def from_path(self) -> Optional[Json]:
        """Add nvcc on PATH; return it when its root is unknown (a wrapper script) to be matched later."""
        nvcc = shutil.which("nvcc")
        if not nvcc:
            return None
        rc, out, err = _run([nvcc, "--version"], self.timeout)
        v = parse_nvcc_version(out) if rc == 0 else None
        if v is None:
            self.notes.append("nvcc on PATH (%s) did not report a version: %s"
                              % (nvcc, (err or out).strip()[:200]))
            return None
        root = os.path.dirname(os.path.dirname(os.path.realpath(nvcc)))
        if _is_toolkit_root(root):
            self.add(root, "PATH", v, nvcc)
            return None
        return {"version": _major_minor(v), "full_version": v, "path": nvcc, "source": "PATH", "nvcc": nvcc}

    def from_pip(self, site_dir: str) -> None:
        for info in sorted(glob.glob(os.path.join(site_dir, "nvidia_cuda_nvcc*-*.dist-info"))):
            m = re.search(r"nvidia_cuda_nvcc(?:_cu\d+)?-(\d+\.\d+(?:\.\d+)?)", os.path.basename(info))
            if m:
                candidates = [os.path.join(site_dir, "nvidia", d) for d in ("cuda_nvcc", "cu13", "cu12")]
                root = next((c for c in candidates if os.path.isdir(c)), site_dir)
                self.add(root, "pip", m.group(1))

    def merge(self, entry: Json) -> None:
        same = [e for e in self.found if e["full_version"] == entry["full_version"]]
        if not same:
            self.found.append(entry)
            return
        srcs = same[0]["source"].split(",")
        same[0]["source"] = ",".join(["PATH"] + [s for s in srcs if s != "PATH"])
        same[0]["nvcc_on_path"] = entry["nvcc"]


def probe_toolkits(site_dirs: Sequence[str], timeout: float = TOOL_TIMEOUT) -> Json:
    """CUDA toolkits: nvcc on PATH, CUDA_HOME, CUDA_PATH, /usr/local/cuda*, pip nvidia-cuda-nvcc.

    Entries are de-duplicated by the real path of the toolkit root; ``source``
    lists every way it was found, and the one a build picks up (nvcc on PATH) comes first.
    """
    tk = _Toolkits(timeout)
    on_path = tk.from_path()
    for var in ("CUDA_HOME", "CUDA_PATH"):
        root = os.environ.get(var)
        if root and os.path.isdir(root):
            tk.add(root, var)
        elif root:
            tk.notes.append("%s=%s is not a directory." % (var, root))
    for root in ["/usr/local/cuda", *sorted(glob.glob("/usr/local/cuda-*"))]:
        if os.path.isdir(root) and (_is_toolkit_root(root) or any(
                os.path.exists(os.path.join(root, f)) for f in ("version.json", "version.txt"))):
            tk.add(root, "/usr/local")
    for site_dir in site_dirs:
        tk.from_pip(site_dir)
    if on_path is not None:
        tk.merge(on_path)
    tk.found.sort(key=lambda e: 0 if e["source"].startswith("PATH") else 1)
    return {"cuda_toolkits": tk.found, "notes": tk.notes}


def build_toolchain(timeout: float = TOOL_TIMEOUT) -> Json:
    """What a CUDA build on this machine picks up: nvcc on PATH, the toolkit CUDA_HOME names, gcc.

    ``cuda_home`` is $CUDA_HOME (else $CUDA_PATH); without it and without nvcc on PATH, builds use
    /usr/local/cuda.  Versions are X.Y (None when unknown); the same toolkit reached both ways
    (PATH and CUDA_HOME at one real root) has one version.
    """
    tk = _Toolkits(timeout)
    on_path = tk.from_path()
    path_nvcc = shutil.which("nvcc")
    path_entry = on_path or next((e for e in tk.found if e["source"].split(",")[0] == "PATH"), None)
    cuda_home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")
    home = cuda_home
    if home is None and path_nvcc is None and os.path.exists("/usr/local/cuda/bin/nvcc"):
        home = "/usr/local/cuda"
    home_entry = None
    if home and os.path.isdir(home):
        tk.add(home, "CUDA_HOME")
        home_entry = tk.by_real.get(os.path.realpath(home))
    return {
        "cuda_home": cuda_home,
        "path_nvcc": path_nvcc,
        "path_nvcc_version": path_entry["version"] if path_entry else None,
        "home_nvcc": os.path.join(home, "bin", "nvcc") if home else None,
        "home_nvcc_version": home_entry["version"] if home_entry else None,
        "gcc": _gcc_version(timeout)[0],
    }


def _gcc_version(timeout: float) -> Tuple[Optional[str], str]:
    """(gcc's version or None, what gcc wrote on stderr)."""
    rc, out, err = _run(["gcc", "--version"], timeout)
    return (parse_gcc_version(out) if rc == 0 else None), err


def _glibc_version() -> Tuple[Optional[str], Optional[str]]:
    try:
        text = os.confstr("CS_GNU_LIBC_VERSION")
    except (AttributeError, ValueError, OSError):
        text = None
    if text and text.startswith("glibc "):
        return text.split()[1], None
    try:
        fn = ctypes.CDLL(None).gnu_get_libc_version
        fn.restype = ctypes.c_char_p
        raw = fn()
        if raw:
            return raw.decode("ascii", "replace"), None
    except (OSError, AttributeError):
        pass
    _, out, err = _run(["ldd", "--version"], TOOL_TIMEOUT)
    v = parse_ldd_version(out or err)
    return v, None if v else "glibc version unknown (musl libc or no ldd)."


def _conda() -> Optional[str]:
    for var in ("CONDA_EXE", "MAMBA_EXE"):
        exe = os.environ.get(var)
        if exe and os.path.isfile(exe):
            return exe
    for name in CONDA_BINARIES:
        exe = shutil.which(name)
        if exe:
            return exe
    return None


def probe(python_exe: Optional[str] = None, timeout: float = NVIDIA_SMI_TIMEOUT) -> Json:
    """Probe this machine and return the Profile dict (schema_version 1) of docs/CONTRACTS.md."""
    notes = []  # type: List[str]
    system = platform.system().lower() or sys.platform
    machine = platform.machine() or "unknown"
    glibc, gnote = _glibc_version() if system == "linux" else (None, None)
    if gnote:
        notes.append(gnote)
    py, site_dirs, pnote = _python_info(python_exe)
    if pnote:
        notes.append(pnote)
    nv = probe_nvidia(timeout)
    notes.extend(nv["notes"])
    tk = probe_toolkits(site_dirs)
    notes.extend(tk["notes"])
    if not tk["cuda_toolkits"]:
        notes.append("no CUDA toolkit (nvcc) found; CUDA extensions cannot be compiled here.")
    gcc, err = _gcc_version(TOOL_TIMEOUT)
    if gcc is None:
        notes.append("gcc not found or not understood%s." % (": " + err.strip()[:100] if err.strip() else ""))
    conda = _conda()
    return {
        "schema_version": SCHEMA_VERSION,
        "os": system,
        "arch": machine,
        "glibc_version": glibc,
        "python_version": py,
        "gpus": nv["gpus"],
        "driver_version": nv["driver_version"],
        "driver_cuda_version": nv["driver_cuda_version"],
        "cuda_toolkits": tk["cuda_toolkits"],
        "gcc_version": gcc,
        "conda": conda,
        "hostname": socket.gethostname(),
        "notes": notes,
    }


def write_json_atomic(path: str, data: Json) -> None:
    """Write ``data`` as JSON through a temp file and os.replace (no half-written profile)."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".profile.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(json.dumps(data, indent=2, sort_keys=True) + "\n")
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Standalone entry point: print the profile JSON (or write it with -o)."""
    ap = argparse.ArgumentParser(prog="probe.py",
                                 description="Write this machine's envbuild profile as JSON.")
    ap.add_argument("-o", "--output", help="write the profile to this file instead of stdout")
    ap.add_argument("--python-exe", help="probe this Python interpreter instead of the one running probe.py")
    ap.add_argument("--timeout", type=float, default=NVIDIA_SMI_TIMEOUT,
                    help="seconds to wait for nvidia-smi (default 10)")
    args = ap.parse_args(argv)
    data = probe(python_exe=args.python_exe, timeout=args.timeout)
    if args.output:
        write_json_atomic(args.output, data)
    else:
        sys.stdout.write(json.dumps(data, indent=2, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
