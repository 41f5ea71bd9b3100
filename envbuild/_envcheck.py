# Run by `envbuild doctor` with the CHECKED env's own interpreter (PREFIX/bin/python), which may
# be as old as Python 3.6: stdlib only, no f-string '=' specifiers, no walrus, no annotations
# syntax beyond 3.6. It never imports the env's packages; it reads files. With --load it dlopens
# the shared objects named on stdin (that runs their initialisers, hence a separate process).
import contextlib
import ctypes
import json
import os
import re
import sys
import sysconfig
from typing import Any  # noqa: F401 (used in the type comments, which 3.6 can parse)


def _norm(name):  # type: (str) -> str
    return re.sub(r"[-_.]+", "-", name).lower()


def _read(path):  # type: (str) -> str | None
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return fh.read()
    except OSError:
        return None


def _metadata_field(text, key):  # type: (str | None, str) -> str | None
    m = re.search(r"^" + key + r":\s*(.+?)\s*$", text or "", re.M)
    return m.group(1) if m else None


def _site_dirs():  # type: () -> list[str]
    out = []
    for key in ("purelib", "platlib"):
        try:
            p = sysconfig.get_paths()[key]
        except KeyError:
            continue
        if p and os.path.isdir(p) and p not in out:
            out.append(p)
    return out


def _conda_meta(prefix):  # type: (str) -> list[dict[str, Any]]
    pkgs = []  # type: list[dict[str, Any]]
    d = os.path.join(prefix, "conda-meta")
    if not os.path.isdir(d):
        return pkgs
    for fn in sorted(os.listdir(d)):
        if not fn.endswith(".json"):
            continue
        try:
            with open(os.path.join(d, fn)) as fh:
                meta = json.load(fh)
        except (OSError, ValueError):
            continue
        pkgs.append(
            {
                "name": meta.get("name"),
                "version": meta.get("version"),
                "build": meta.get("build"),
                "files": meta.get("files") or [],
            }
        )
    return pkgs


def _dists(site, prefix, conda_files):  # type: (str, str, dict[str, Any]) -> list[dict[str, Any]]
    out = []
    for entry in sorted(os.listdir(site)):
        if not (entry.endswith(".dist-info") or entry.endswith(".egg-info")):
            continue
        path = os.path.join(site, entry)
        meta_name = "METADATA" if entry.endswith(".dist-info") else "PKG-INFO"
        meta_path = os.path.join(path, meta_name) if os.path.isdir(path) else path
        text = _read(meta_path)
        name = _metadata_field(text, "Name")
        version = _metadata_field(text, "Version")
        if not name:
            base = entry.rsplit(".", 1)[0]
            name, _, version = base.partition("-")
        installer = (_read(os.path.join(path, "INSTALLER")) or "").strip() or None
        record = os.path.join(path, "RECORD")
        has_record = os.path.isfile(record)
        rel_dir = os.path.relpath(path, prefix)
        conda_owned = os.path.normpath(rel_dir) in conda_files["_dirs"]
        overlap = []
        if has_record and not conda_owned and conda_files.get("_all"):
            for line in (_read(record) or "").splitlines():
                f = line.split(",", 1)[0]
                if not f or f.startswith(".."):
                    continue
                relf = os.path.normpath(os.path.relpath(os.path.join(site, f), prefix))
                owner = conda_files["_all"].get(relf)
                if owner and owner not in overlap:
                    overlap.append(owner)
        direct = _read(os.path.join(path, "direct_url.json")) or ""
        try:
            direct_url = json.loads(direct) if direct else None
        except ValueError:
            direct_url = None
        has_so = False
        top = []  # type: list[str]
        if has_record:
            rec_text = _read(record) or ""
            has_so = bool(re.search(r"\.so[.,]", rec_text))
            for line in rec_text.splitlines():
                first = line.split(",", 1)[0].split("/", 1)[0]
                if first and not first.startswith((".", "__")) and "-" not in first and "." not in first \
                        and first not in top and "/" in line.split(",", 1)[0]:
                    top.append(first)
        out.append(
            {
                "name": _norm(name),
                "version": version,
                "installer": installer,
                "has_record": has_record,
                "dir": path,
                "conda_owned": conda_owned,
                "overwrites_conda": overlap,
                "editable": bool(((direct_url or {}).get("dir_info") or {}).get("editable"))
                if isinstance(direct_url, dict) else False,
                "direct_url": direct_url if isinstance(direct_url, dict) else None,
            "has_so": has_so,
            "top_level": sorted(top),
            "requires": re.findall(r"^Requires-Dist:\s*(.+?)\s*$", text or "", re.M),
            }
        )
    return out


def _torch(site):  # type: (str) -> dict[str, Any] | None
    text = _read(os.path.join(site, "torch", "version.py"))
    if text is None:
        return None
    info = {"path": os.path.join(site, "torch")}  # type: dict[str, Any]
    for key in ("__version__", "cuda", "git_version", "hip"):
        m = re.search(r"^" + key + r"\s*(?::\s*[^=]+)?=\s*['\"]?([^'\"\n]*)['\"]?", text, re.M)
        val = m.group(1).strip() if m else None
        info["version" if key == "__version__" else key] = None if val in (None, "None", "") else val
    return info


def _mmcv(site):  # type: (str) -> dict[str, Any] | None
    text = _read(os.path.join(site, "mmcv", "version.py"))
    if text is None:
        return None
    m = re.search(r"^__version__\s*=\s*['\"]([^'\"]+)", text, re.M)
    ext = [f for f in os.listdir(os.path.join(site, "mmcv")) if f.startswith("_ext") and f.endswith(".so")]
    return {"version": m.group(1) if m else None, "has_ext": bool(ext)}


def _extensions(site):  # type: (str) -> list[str]
    out = []
    for root, dirs, files in os.walk(site):
        # tests and bundled data of big packages hold no loadable code worth the walk
        dirs[:] = [d for d in dirs if d not in ("__pycache__", "include", "tests", "test")]
        for f in files:
            if f.endswith(".so") or ".so." in f:
                full = os.path.join(root, f)
                if not os.path.islink(full):
                    out.append(full)
    return sorted(out)


def collect(prefix):  # type: (str) -> dict[str, Any]
    conda = _conda_meta(prefix)
    conda_all = {}
    conda_dirs = set()
    for pkg in conda:
        for f in pkg["files"]:
            conda_all[os.path.normpath(f)] = pkg["name"]
            for marker in (".dist-info", ".egg-info"):
                if marker in f:
                    conda_dirs.add(os.path.normpath(f.split(marker, 1)[0] + marker))
    cf = {"_all": conda_all, "_dirs": conda_dirs}
    sites = _site_dirs()
    dists, exts = [], []
    torch = mmcv = None
    for s in sites:
        dists += _dists(s, prefix, cf)
        exts += _extensions(s)
        torch = torch or _torch(s)
        mmcv = mmcv or _mmcv(s)
    missing_conda = []
    for pkg in conda:
        gone = [f for f in pkg["files"][:2000] if not os.path.lexists(os.path.join(prefix, f))]
        if gone:
            missing_conda.append(
                {"name": pkg["name"], "version": pkg["version"], "missing": gone[:5], "count": len(gone)}
            )
    lib_dirs = [d for d in (os.path.join(prefix, "lib"), os.path.join(prefix, "lib64")) if os.path.isdir(d)]
    return {
        "python": ".".join(str(x) for x in sys.version_info[:3]),
        "executable": sys.executable,
        "prefix": sys.prefix,
        "site_packages": sites,
        "lib_dirs": lib_dirs,
        "dists": dists,
        "conda": [{"name": p["name"], "version": p["version"], "build": p["build"]} for p in conda],
        "conda_missing_files": missing_conda,
        "torch": torch,
        "mmcv": mmcv,
        "extensions": exts,
        "environ": {k: os.environ.get(k) for k in ("LD_LIBRARY_PATH", "CUDA_HOME", "CUDA_PATH", "PATH")},
    }


def load(items):  # type: (list[dict[str, Any]]) -> None
    mode = getattr(os, "RTLD_NOW", 2) | getattr(os, "RTLD_LOCAL", 0)
    for item in items:
        for pre in item.get("preload", []):
            with contextlib.suppress(OSError):
                ctypes.CDLL(pre, mode=getattr(os, "RTLD_NOW", 2) | getattr(os, "RTLD_GLOBAL", 256))
        sys.stdout.write(json.dumps({"start": item["path"]}) + "\n")
        sys.stdout.flush()
        try:
            ctypes.CDLL(item["path"], mode=mode)
            res = {"path": item["path"], "ok": True, "error": None}
        except OSError as exc:
            res = {"path": item["path"], "ok": False, "error": str(exc)}
        sys.stdout.write(json.dumps(res) + "\n")
        sys.stdout.flush()


def imports(modules):  # type: (list[str]) -> None
    """Import each top-level module, then report the shared objects the process has mapped.

    This is the evidence of what a package's import loads (its extension modules and the libraries
    they pull in); what is not mapped afterwards is loaded only when some feature asks for it.
    """
    import importlib

    errors = {}  # type: dict[str, str | None]
    for mod in modules:
        try:
            importlib.import_module(mod)
            errors[mod] = None
        except BaseException as exc:
            errors[mod] = f"{type(exc).__name__}: {exc}"
    mapped = set()
    try:
        with open("/proc/self/maps") as fh:
            for line in fh:
                parts = line.split(None, 5)
                if len(parts) == 6 and ".so" in parts[5]:
                    mapped.add(os.path.realpath(parts[5].strip()))
    except OSError:
        pass
    # the imported packages may print: the report is the last line, after a marker
    report = json.dumps({"errors": errors, "mapped": sorted(mapped)})
    sys.stdout.write("\n@@envbuild-imports@@" + report + "\n")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--load":
        load(json.load(sys.stdin))
    elif len(sys.argv) > 1 and sys.argv[1] == "--imports":
        imports(json.load(sys.stdin))
    else:
        sys.stdout.write(json.dumps(collect(sys.argv[1] if len(sys.argv) > 1 else sys.prefix)))
