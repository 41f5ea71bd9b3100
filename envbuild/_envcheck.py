# Run by `envbuild doctor` with the CHECKED env's own interpreter (PREFIX/bin/python), which may
# be as old as Python 3.6: stdlib only, no f-string '=' specifiers, no walrus, no annotations
# syntax beyond 3.6. It never imports the env's packages; it reads files. With --load it dlopens
# the shared objects named on stdin (that runs their initialisers, hence a separate process).
#
# It is also THE env reader of the host: pack, unpack and inspect import it and call the functions
# that take a prefix (site_packages, conda_records, dist_infos, editables, torch_build, packages).
# Those find the env's layout from its files (lib/python3*/site-packages), never from the running
# interpreter's sysconfig, and never read through a symlink (an unpacked archive is untrusted).
import contextlib
import ctypes
import json
import os
import re
import stat
import sys
import sysconfig
from typing import Any  # noqa: F401 (used in the type comments, which 3.6 can parse)

_CUDA_LOCAL = re.compile(r"\+cu(\d+)$")
# a dist's METADATA / INSTALLER as an archive member (inspect reads them without extracting)
_DIST_MEMBER = re.compile(r"lib/python[^/]+/site-packages/([^/]+)\.dist-info/(METADATA|INSTALLER)")


def norm_name(name):  # type: (str) -> str
    """The PEP 503 normalised form of a distribution name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def read_text(path, follow=True):  # type: (str, bool) -> str | None
    """The text of ``path`` if it is a regular file, else None.

    Opened non-blocking, so a FIFO named like a config file never hangs the read; with
    ``follow=False`` a symlink is not read either.
    """
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | (0 if follow else getattr(os, "O_NOFOLLOW", 0))
    try:
        fd = os.open(path, flags)
    except OSError:
        return None
    try:
        with os.fdopen(fd, "rb") as fh:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                return None
            data = fh.read()
    except OSError:
        return None
    # what text-mode open() gave (universal newlines), without its blocking open
    return data.decode("utf-8", "replace").replace("\r\n", "\n").replace("\r", "\n")


def metadata_field(text, key):  # type: (str | None, str) -> str | None
    """The value of ``Key: value`` in a METADATA / PKG-INFO text."""
    m = re.search(r"^" + key + r":\s*(.+?)\s*$", text or "", re.M)
    return m.group(1) if m else None


def pyvenv_value(prefix, key):  # type: (str, str) -> str | None
    """A ``key = value`` of the env's pyvenv.cfg (None for a conda env or a missing key)."""
    text = read_text(os.path.join(prefix, "pyvenv.cfg"), follow=False) or ""
    return metadata_field(text.replace(" = ", ": "), key)


def cuda_of(version, build=""):  # type: (str, str) -> str | None
    """The CUDA a package was built for, from a ``+cuXXX`` local version or a ``cudaXX.Y`` build string."""
    m = _CUDA_LOCAL.search(version)
    if m:
        digits = m.group(1)
        return digits[:-1] + "." + digits[-1]
    m = re.search(r"cuda(\d+)\.?(\d)", build)
    return m.group(1) + "." + m.group(2) if m else None


def dist_member(path):  # type: (str) -> tuple[str, str] | None
    """(dist-info name, METADATA|INSTALLER) when an archive member path is one of those files."""
    m = _DIST_MEMBER.fullmatch(path)
    return (m.group(1), m.group(2)) if m else None


def site_packages(prefix):  # type: (str) -> list[str]
    """The env's lib/python3*/site-packages directories, found from its files."""
    lib = os.path.join(prefix, "lib")
    try:
        names = os.listdir(lib)
    except OSError:
        return []
    cands = [os.path.join(lib, n, "site-packages") for n in names if n.startswith("python3")]
    return sorted(p for p in cands if os.path.isdir(p))


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


def conda_records(prefix):  # type: (str) -> list[dict[str, Any]]
    """Every conda-meta/*.json record of the env, whole, in file-name order."""
    out = []  # type: list[dict[str, Any]]
    d = os.path.join(prefix, "conda-meta")
    try:
        names = sorted(os.listdir(d))
    except OSError:
        return out
    for fn in names:
        if not fn.endswith(".json") or fn.startswith("."):
            continue
        try:
            meta = json.loads(read_text(os.path.join(d, fn)) or "")
        except ValueError:
            continue
        if isinstance(meta, dict):
            out.append(meta)
    return out


def conda_package(rec):  # type: (dict[str, Any]) -> dict[str, Any]
    """A conda record as one row of the package list (pack's manifest, inspect)."""
    name, ver, build = rec.get("name", ""), str(rec.get("version", "")), str(rec.get("build", ""))
    return {"name": name, "version": ver, "build": build, "installer": "conda",
            "channel": rec.get("channel"), "cuda": cuda_of(ver, build)}


def pip_package(name, version, installer, cuda=None):  # type: (str, str, str | None, str | None) -> dict[str, Any]
    """A non-conda distribution as one row of the package list."""
    return {"name": name, "version": version, "build": None, "installer": installer or "unknown",
            "channel": None, "cuda": cuda or cuda_of(version)}


def _dist_meta(path, entry, follow):  # type: (str, str, bool) -> tuple[str, str | None, str | None, str | None]
    """(name, version, installer, METADATA text) of one .dist-info / .egg-info entry."""
    installer = None
    if os.path.isdir(path):
        dist_info = entry.endswith(".dist-info")
        text = read_text(os.path.join(path, "METADATA" if dist_info else "PKG-INFO"), follow)
        if text is None and dist_info:
            text = read_text(os.path.join(path, "PKG-INFO"), follow)
        installer = (read_text(os.path.join(path, "INSTALLER"), follow) or "").strip() or None
    else:
        text = read_text(path, follow)
    name = metadata_field(text, "Name")
    version = metadata_field(text, "Version")
    if not name:
        name, _, version = entry.rsplit(".", 1)[0].partition("-")
    return name, version, installer, text


def dist_infos(prefix):  # type: (str) -> list[dict[str, Any]]
    """Every *.dist-info, then every *.egg-info, of the env's site-packages.

    Each: name (as its METADATA writes it), version, installer (None when not recorded), path
    (relative to ``prefix``, with '/') and site (the site-packages directory).
    """
    out = []
    for site in site_packages(prefix):
        entries = sorted(os.listdir(site))
        for suffix in (".dist-info", ".egg-info"):
            for entry in entries:
                if not entry.endswith(suffix) or entry.startswith("."):
                    continue
                path = os.path.join(site, entry)
                name, version, installer, _text = _dist_meta(path, entry, False)
                out.append({"name": name, "version": version or "", "installer": installer,
                            "path": os.path.relpath(path, prefix).replace(os.sep, "/"), "site": site})
    return out


def record_paths(dist_dir, follow=True):  # type: (str, bool) -> list[str]
    """The file column of a dist's RECORD (paths relative to its site-packages)."""
    text = read_text(os.path.join(dist_dir, "RECORD"), follow) or ""
    return [p for p in (line.split(",", 1)[0] for line in text.splitlines()) if p]


def _direct_url(dist_dir, follow=True):  # type: (str, bool) -> dict[str, Any] | None
    text = read_text(os.path.join(dist_dir, "direct_url.json"), follow) or ""
    try:
        data = json.loads(text) if text else None
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def _is_editable(direct_url):  # type: (dict[str, Any] | None) -> bool
    info = (direct_url or {}).get("dir_info")
    return isinstance(info, dict) and info.get("editable") is True


def _inside(path, prefix):  # type: (str, str) -> bool
    return path == prefix or path.startswith(prefix.rstrip(os.sep) + os.sep)


def editables(prefix):  # type: (str) -> list[dict[str, str]]
    """Editable installs: PEP 660 / pip direct_url.json, legacy ``setup.py develop`` egg-links,
    and any other .pth path entry outside the env (``conda develop``, hand-made): the same trap.

    Each: name, version, source (the checkout), how, evidence (the file that says so).
    """
    found = []  # type: list[dict[str, str]]
    for d in dist_infos(prefix):
        data = _direct_url(os.path.join(prefix, d["path"]))
        if data is not None and _is_editable(data):
            src = str(data.get("url", ""))
            found.append({"name": d["name"], "version": d["version"],
                          "source": src[len("file://"):] if src.startswith("file://") else src,
                          "how": "pip install -e", "evidence": d["path"] + "/direct_url.json"})
    for site in site_packages(prefix):
        names = sorted(n for n in os.listdir(site) if not n.startswith("."))
        for n in names:
            if n.endswith(".egg-link"):
                lines = (read_text(os.path.join(site, n), False) or "").splitlines()
                found.append({"name": n[:-len(".egg-link")], "version": "",
                              "source": lines[0].strip() if lines else "?", "how": "setup.py develop",
                              "evidence": os.path.relpath(os.path.join(site, n), prefix)})
        seen = set(os.path.normpath(e["source"]) for e in found)
        found += _pth_entries(prefix, site, [n for n in names if n.endswith(".pth")], seen)
    return found


def _pth_entries(prefix, site, pths, seen):  # type: (str, str, list[str], set[str]) -> list[dict[str, str]]
    out = []
    for pth in pths:
        for line in (read_text(os.path.join(site, pth), False) or "").splitlines():
            line = line.strip()
            if not line or line.startswith(("#", "import ", "import\t")):
                continue
            loc = os.path.normpath(os.path.join(site, line))
            if loc in seen or _inside(loc, prefix):
                continue
            seen.add(loc)
            out.append({"name": os.path.basename(loc), "version": "", "source": loc,
                        "how": "a .pth path entry",
                        "evidence": os.path.relpath(os.path.join(site, pth), prefix)})
    return out


def _conda_overlap(paths, site, prefix, conda_files):  # type: (list[str], str, str, dict[str, Any]) -> list[str]
    """conda packages owning a file this dist's RECORD lists (pip wrote over them)."""
    overlap = []  # type: list[str]
    for f in paths:
        if f.startswith(".."):
            continue
        owner = conda_files["_all"].get(os.path.normpath(os.path.relpath(os.path.join(site, f), prefix)))
        if owner and owner not in overlap:
            overlap.append(owner)
    return overlap


def _top_level(paths):  # type: (list[str]) -> list[str]
    """The importable top-level directories a RECORD installs."""
    top = []  # type: list[str]
    for p in paths:
        first = p.split("/", 1)[0]
        if "/" in p and first and not first.startswith((".", "__")) and "-" not in first \
                and "." not in first and first not in top:
            top.append(first)
    return sorted(top)


def _dists(site, prefix, conda_files):  # type: (str, str, dict[str, Any]) -> list[dict[str, Any]]
    out = []
    for entry in sorted(os.listdir(site)):
        if entry.endswith(".dist-info") or entry.endswith(".egg-info"):
            out.append(_dist(site, entry, prefix, conda_files))
    return out


def _dist(site, entry, prefix, conda_files):  # type: (str, str, str, dict[str, Any]) -> dict[str, Any]
    path = os.path.join(site, entry)
    name, version, installer, text = _dist_meta(path, entry, True)
    has_record = os.path.isfile(os.path.join(path, "RECORD"))
    paths = record_paths(path) if has_record else []
    conda_owned = os.path.normpath(os.path.relpath(path, prefix)) in conda_files["_dirs"]
    direct_url = _direct_url(path)
    return {
        "name": norm_name(name),
        "version": version,
        "installer": installer,
        "has_record": has_record,
        "dir": path,
        "conda_owned": conda_owned,
        "overwrites_conda": _conda_overlap(paths, site, prefix, conda_files)
        if not conda_owned and conda_files.get("_all") else [],
        "editable": _is_editable(direct_url),
        "direct_url": direct_url,
        "has_so": any(re.search(r"\.so(\.|$)", p) for p in paths),
        "top_level": _top_level(paths),
        "requires": re.findall(r"^Requires-Dist:\s*(.+?)\s*$", text or "", re.M),
    }


def _torch(site, follow=True):  # type: (str, bool) -> dict[str, Any] | None
    text = read_text(os.path.join(site, "torch", "version.py"), follow)
    if text is None:
        return None
    info = {"path": os.path.join(site, "torch")}  # type: dict[str, Any]
    for key in ("__version__", "cuda", "git_version", "hip"):
        m = re.search(r"^" + key + r"\s*(?::\s*[^=]+)?=\s*['\"]?([^'\"\n]*)['\"]?", text, re.M)
        val = m.group(1).strip() if m else None
        info["version" if key == "__version__" else key] = None if val in (None, "None", "") else val
    return info


def torch_build(prefix):  # type: (str) -> dict[str, Any] | None
    """torch's version and the CUDA it was built for, read from files (torch is never imported).

    Returns version, cuda and site (relative to ``prefix``), or None without torch.
    """
    for site in site_packages(prefix):
        # conda's pytorch ships an .egg-info, pip's a .dist-info
        entries = sorted(os.listdir(site))
        infos = [e for s in (".dist-info", ".egg-info") for e in entries
                 if e.startswith("torch-") and e.endswith(s)]
        if not infos and not os.path.exists(os.path.join(site, "torch", "version.py")):
            continue
        parsed = _torch(site, follow=False) or {}
        stem = infos[0].rsplit(".", 1)[0] if infos else ""
        version = parsed.get("version") or (stem[len("torch-"):].split("-py")[0] or None)
        cuda = parsed.get("cuda") or (cuda_of(version) if version else None)
        return {"version": version, "cuda": cuda, "site": os.path.relpath(site, prefix).replace(os.sep, "/")}
    return None


def _conda_dist_dirs(records):  # type: (list[dict[str, Any]]) -> set[str]
    """The .dist-info / .egg-info directories conda records list as theirs (relative to the prefix)."""
    dirs = set()
    for rec in records:
        for f in rec.get("files") or []:
            for marker in (".dist-info", ".egg-info"):
                if marker in f:
                    dirs.add(os.path.normpath(f.split(marker, 1)[0] + marker))
    return dirs


def packages(prefix, kind):  # type: (str, str) -> list[dict[str, Any]]
    """conda records and pip dists (name, version, build, installer, channel, cuda), conda ones first."""
    out = []  # type: list[dict[str, Any]]
    conda_names = set()
    records = conda_records(prefix) if kind == "conda" else []
    for rec in records:
        out.append(conda_package(rec))
        conda_names.add(norm_name(out[-1]["name"]))
    # conda's pytorch ships torch-*.egg-info, named unlike the package and with no INSTALLER
    conda_dirs = _conda_dist_dirs(records)
    for d in dist_infos(prefix):
        if d["installer"] == "conda" or os.path.normpath(d["path"]) in conda_dirs or (
                d["installer"] is None and norm_name(d["name"]) in conda_names):
            continue
        cuda = cuda_of(d["version"])
        if cuda is None and norm_name(d["name"]) == "torch":
            # PyPI's torch carries no +cuXXX label (2.6.0 is the CUDA 12.4 build): torch/version.py says
            cuda = (torch_build(prefix) or {}).get("cuda")
        out.append(pip_package(d["name"], d["version"], d["installer"], cuda))
    return out


def _conda_meta(prefix):  # type: (str) -> list[dict[str, Any]]
    return [{"name": m.get("name"), "version": m.get("version"), "build": m.get("build"),
             "files": m.get("files") or []} for m in conda_records(prefix)]


def _mmcv(site):  # type: (str) -> dict[str, Any] | None
    text = read_text(os.path.join(site, "mmcv", "version.py"))
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
    for pkg in conda:
        for f in pkg["files"]:
            conda_all[os.path.normpath(f)] = pkg["name"]
    cf = {"_all": conda_all, "_dirs": _conda_dist_dirs(conda)}
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
