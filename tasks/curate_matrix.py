"""Re-derive envbuild/data/*.json from the research snapshot in ../shared/reference/matrix.

This is the script the bundled data was first generated with (2026-11-23); later hand edits to
envbuild/data are recorded in git history. Run from the repository root, then diff:

    python tasks/curate_matrix.py /tmp/data && diff -r /tmp/data envbuild/data

It does not know the facts harvested from PyPI since (tasks/refresh_data.py adds them: run it
after this script when regenerating envbuild/data from the snapshot).
"""
import sys
import json, re
from pathlib import Path

REF = Path(__file__).resolve().parents[2] / "shared" / "reference" / "matrix"
OUT = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[1] / "envbuild" / "data"
OUT.mkdir(parents=True, exist_ok=True)
CHECKED = "2026-11-23"
ref = {n: json.loads((REF / f"{n}.json").read_text()) for n in
       ["torch", "torch_arch", "nvidia", "gpus", "mmcv", "openmmlab", "cupy", "numpy", "numpy_abi"]}

def src(v):
    return v if v else None

def write(name, desc, body):
    data = {"schema_version": 1, "checked": CHECKED, "description": desc,
            "derived_from": f"/work/shared/reference/matrix/{name}.json (research snapshot 2026-11-23; see its SOURCES.md)",
            **body}
    (OUT / f"{name}.json").write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n")

# ---------------- torch ----------------
_OLD = Path(__file__).resolve().parents[1] / "envbuild" / "data" / "torch.json"
_HAND = ({x["torch"]: x.get("pypi_default_wheel_source") for x in json.loads(_OLD.read_text())["releases"]}
         if _OLD.exists() else {})
rels = []
py_prev = None
for r in ref["torch"]["releases"]:
    row = {"torch": r["torch"], "torchvision": r.get("torchvision"), "torchaudio": r.get("torchaudio")}
    conf = list(r.get("cuda_variants_pip_linux") or [])
    unv = [v for v in (r.get("cuda_variants_unverified") or []) if v not in conf]
    if r.get("cuda_variants_unverified") and set(r["cuda_variants_unverified"]) == set(conf):
        unv, conf = conf, []  # 2.14.x: listed only by a secondary copy
    row["cuda_variants_pip_linux"] = conf
    row["cuda_variants_unverified"] = unv
    row["cpu_variant"] = bool(r.get("cpu_variant", True))
    py = r.get("python_pypi_wheels") or py_prev
    row["python"] = py
    py_prev = py
    row["pypi_default_wheel_cuda"] = r.get("pypi_default_wheel_cuda")
    # Curated by hand (which PyPI metadata or page shows the default wheel's CUDA): carried over.
    if _HAND.get(r["torch"]):
        row["pypi_default_wheel_source"] = _HAND[r["torch"]]
    row["source"] = r["cuda_variants_source"]
    row["python_source"] = r.get("python_pypi_wheels_source") if r.get("python_pypi_wheels") else \
        "inferred: same Python set as the previous release (no PyPI wheels listed for this LTS release)"
    row["domain_versions_source"] = r.get("domain_versions_source")
    notes = r.get("notes") or ""
    if r["torch"] == "1.10.0":
        row["torchvision"] = "0.11.1"
        notes += "; envbuild pairs 1.10.0 with torchvision 0.11.1 (0.11.0 has no manylinux wheel on PyPI; 0.11.1 pins torch==1.10.0)"
    if unv:
        row["confidence"] = ("unverified variants: " + ",".join(unv) +
                             (" (widely published on download.pytorch.org/whl/" + unv[-1] + "; OpenMMLab builds mmcv-full against them)"
                              if r["torch"].startswith(("1.10", "1.11", "1.8.0")) else " (secondary source only)"))
    if notes:
        row["notes"] = notes.lstrip("; ")
    rels.append(row)
write("torch", "PyTorch releases (Linux x86_64 pip wheels): CUDA variants on download.pytorch.org/whl/<variant>, "
      "Python minors with wheels, matching torchvision/torchaudio. 'cuda_variants_unverified' are believed to exist but "
      "no read source lists them.",
      {"index_url_pattern": "{pytorch}/{variant}", "index_url_default": "https://download.pytorch.org/whl",
       "index_url_source": "pytorch/pytorch.github.io _get_started/previous-versions.md @e3f009bbc0d7509ed5c85b633313ec72aa2d1a40 "
                           "(pip install ... --index-url https://download.pytorch.org/whl/cu118)",
       "releases": rels})

# ---------------- torch_arch ----------------
def norm_torch(t):
    t = t.split(" ")[0]
    return t

def norm_cuda(c):
    return c.split(" ")[0]

wheels = []
for r in ref["torch_arch"]["wheels"]:
    row = {"torch": norm_torch(r["torch"]), "cuda": norm_cuda(r["cuda"]),
           "TORCH_CUDA_ARCH_LIST": r["TORCH_CUDA_ARCH_LIST"].strip(";"), "source": r["source"],
           "confidence": r.get("confidence")}
    if r.get("notes"):
        row["notes"] = r["notes"]
    wheels.append(row)

def have(tv, cuda):
    ser = ".".join(tv.split(".")[:2]) + ".x"
    return any(w["cuda"] == cuda and w["torch"] in (tv, ser) for w in wheels)

def vkey(v):
    return tuple(int(x) for x in re.findall(r"\d+", v)[:3])

added = []
for r in rels:
    for var in r["cuda_variants_pip_linux"] + r["cuda_variants_unverified"]:
        cuda = f"{var[2:-1]}.{var[-1]}"
        if have(r["torch"], cuda):
            continue
        # nearest earlier torch with the same CUDA (same series preferred)
        cands = [w for w in wheels if w["cuda"] == cuda and vkey(w["torch"].replace("x", "0")) <= vkey(r["torch"])]
        cands.sort(key=lambda w: vkey(w["torch"].replace("x", "99")))
        if not cands:
            cands = sorted([w for w in wheels if w["cuda"] == cuda], key=lambda w: vkey(w["torch"].replace("x", "0")))
        if not cands:
            print("NO ARCH for", r["torch"], cuda)
            continue
        base = cands[-1]
        added.append({"torch": r["torch"], "cuda": cuda, "TORCH_CUDA_ARCH_LIST": base["TORCH_CUDA_ARCH_LIST"],
                      "source": base["source"], "confidence": f"inferred: copied from the torch {base['torch']} cu"
                      f"{cuda.replace('.', '')} row (no build script read for {r['torch']})"})
wheels += added
write("torch_arch", "GPU architectures compiled into official PyTorch pip wheels per (torch, CUDA) (TORCH_CUDA_ARCH_LIST "
      "of the build scripts), plus the SASS/PTX compatibility rules. 'torch' is an exact version or a series 'X.Y.x'.",
      {"compat_rules": ref["torch_arch"]["compat_rules"], "wheels": wheels})

# ---------------- nvidia ----------------
nv = ref["nvidia"]
mins = [{"cuda": r["cuda"], "min_linux_driver": r["min_linux_driver_any_release_of_minor"],
         "min_linux_driver_any_release_of_minor": r["min_linux_driver_any_release_of_minor"], "source": r["source"]}
        for r in nv["driver_min_per_cuda_minor_linux"]]
mvc = []
for r in nv["minor_version_compatibility"]:
    major = r["cuda_major"].split(".")[0]
    m = {"13": "580.65.06", "12": "525.60.13", "11": "450.80.02"}[major]
    mvc.append({"cuda_major": major, "min_driver": m, "as_written": r["min_driver"], "source": r["source"],
                "limits": "no PTX JIT of PTX newer than the driver; some APIs (e.g. torch.compile/triton JIT) may fail"})
gcc = []
for r in nv["host_gcc_max"]:
    raw = r["max_gcc_major"]
    cudas = ["13.0", "13.1", "13.2"] if r["cuda"] == "13.x" else [r["cuda"]]
    val = re.match(r"\d+", raw).group(0)
    for c in cudas:
        row = {"cuda": c, "max_gcc_major": val, "source": r["source"], "confidence": r.get("confidence")}
        if raw != val:
            row["notes"] = f"reference says: {raw}; envbuild uses the conservative {val}"
        if r["cuda"] == "13.x":
            row["notes"] = "reference gives 15 for one 13.x copy of unknown minor"
        gcc.append(row)
ccs = []
for r in nv["compute_capability_support"]:
    sm = r["sm"][3:]
    cc = f"{sm[:-1]}.{sm[-1]}"
    fc = r["first_cuda"]
    m = re.match(r"^(\d+\.\d+)", fc)
    lc = re.match(r"^(\d+\.\d+)", r["last_cuda"] or "")
    ccs.append({"compute_capability": cc, "sm": r["sm"], "arch": r["arch"],
                "first_cuda": m.group(1) if m else None, "first_cuda_as_written": fc,
                "last_cuda": lc.group(1) if lc else None, "removed_in": r.get("removed_in"),
                "source": r["source"], "confidence": r.get("confidence")})
write("nvidia", "NVIDIA facts: minimum Linux driver per CUDA minor (native support), minor-version compatibility per "
      "CUDA major, maximum host gcc per CUDA (nvcc host_config.h), compute-capability support window per CUDA.",
      {"driver_min_per_cuda_minor_linux": mins, "driver_table": nv["driver_table"], "minor_version_compatibility": mvc,
       "compat_rules": nv["compat_rules"], "driver_branches": nv["driver_branches"],
       "driver_branch_notes": nv["driver_branch_notes"], "host_gcc_max": gcc, "compute_capability_support": ccs})

# ---------------- gpus ----------------
gp = []
for r in ref["gpus"]["gpus"]:
    gp.append({"gpu": r["gpu"], "compute_capability": r["compute_capability"], "architecture": r["architecture"],
               "source": r["source"], "confidence": r.get("confidence")})
EXTRA_SRC = "https://developer.nvidia.com/cuda-gpus (same architecture family as the listed rows)"
extra = [
    ("GeForce RTX 3090 Ti", "8.6", "Ampere"), ("GeForce RTX 3080 Ti", "8.6", "Ampere"), ("GeForce RTX 3070 Ti", "8.6", "Ampere"),
    ("GeForce RTX 3070", "8.6", "Ampere"), ("GeForce RTX 3060 Ti", "8.6", "Ampere"), ("GeForce RTX 3050", "8.6", "Ampere"),
    ("GeForce RTX 2080 Super", "7.5", "Turing"), ("GeForce RTX 2070", "7.5", "Turing"), ("GeForce RTX 2070 Super", "7.5", "Turing"),
    ("GeForce RTX 2060 Super", "7.5", "Turing"), ("GeForce GTX 1660 Ti", "7.5", "Turing"), ("GeForce GTX 1660", "7.5", "Turing"),
    ("GeForce GTX 1650", "7.5", "Turing"), ("NVIDIA TITAN RTX", "7.5", "Turing"), ("GeForce GTX 1050 Ti", "6.1", "Pascal"),
    ("GeForce GTX TITAN Black", "3.5", "Kepler"), ("GeForce GTX TITAN", "3.5", "Kepler"),
    ("Tesla V100S", "7.0", "Volta"), ("NVIDIA A100", "8.0", "Ampere"), ("NVIDIA A800", "8.0", "Ampere"),
    ("NVIDIA A10G", "8.6", "Ampere"), ("NVIDIA H800", "9.0", "Hopper"), ("NVIDIA H20", "9.0", "Hopper"),
    ("NVIDIA RTX A1000", "8.6", "Ampere"), ("GeForce RTX 4080 Super", "8.9", "Ada Lovelace"),
    ("GeForce RTX 4070 Super", "8.9", "Ada Lovelace"),
]
names = {g["gpu"].lower() for g in gp}
for name, cc, arch in extra:
    if name.lower() in names:
        continue
    gp.append({"gpu": name, "compute_capability": cc, "architecture": arch, "source": EXTRA_SRC,
               "confidence": "added by envbuild (not in the reference snapshot): well-known value, same family as sourced rows"})
write("gpus", "GPU model -> CUDA compute capability. Names are matched after normalisation (case, 'NVIDIA'/'Tesla'/"
      "'GeForce' prefixes, 'Laptop GPU', memory sizes like 32GB, form factors SXM2/PCIe/HBM3 are ignored).",
      {"ignore_tokens": ["nvidia", "tesla", "geforce", "laptop", "gpu", "mobile", "max-q", "design", "with", "pcie",
                         "sxm", "sxm2", "sxm3", "sxm4", "sxm5", "nvl", "hbm2", "hbm2e", "hbm3", "hbm3e", "dgx", "oem"],
       "gpus": gp})

# ---------------- mmcv ----------------
mm = ref["mmcv"]
mw = []
for r in mm["wheels"]:
    if r["os"] != "Linux":
        continue
    if vkey(r["torch_series"].replace("x", "0")) < (1, 5, 0):
        continue  # envbuild's torch data starts at 1.5
    mw.append({"package": r["package"], "cuda": r["cuda"], "torch_series": r["torch_series"],
               "versions": r["mmcv_versions_with_prebuilt_wheels"], "find_links": r["find_links"][0], "source": r["source"]})
write("mmcv", "Prebuilt mmcv-full 1.x / mmcv 2.x wheels on the OpenMMLab index per (CUDA, torch series), Linux; the "
      "find-links URL is {openmmlab}/{cu|cpu}/torch{major}.{minor}/index.html. PyPI has only sdists (compiled on install).",
      {"find_links_pattern": "{openmmlab}/{device}/torch{torch_major_minor}/index.html",
       "find_links_default_base": "https://download.openmmlab.com/mmcv/dist",
       "url_rules": mm["url_rules"], "gaps": mm["gaps"],
       "runtime_requires": [
           {"package": "mmcv-full", "versions": ">=1.0,<2", "requires": ["addict", "numpy", "packaging", "Pillow",
                                                                        "pyyaml", "yapf<=0.40.1"],
            "source": "PyPI sdist mmcv-full-1.4.0.tar.gz requirements/runtime.txt (addict numpy packaging Pillow pyyaml "
                      "yapf), read by envbuild 2026-11-23; yapf cap: https://github.com/google/yapf/issues/1118 "
                      "(FormatCode() lost 'verify' in yapf 0.40.2, mmcv 1.x Config.pretty_text calls it)",
            "confidence": "requires: read from the sdist; yapf cap: medium (issue thread + many install scripts pin 0.40.1)"}],
       "wheels": mw})

# ---------------- openmmlab ----------------
om = ref["openmmlab"]
def parse_req(s):
    m = re.match(r"^\s*([A-Za-z0-9_.-]+)\s*(.*)$", s)
    return m.group(1), m.group(2).replace(" ", "")

def rng(d, pkg):
    lo, hi, inc = d["min"], d["max"], d.get("max_inclusive", True)
    return f">={lo},{'<=' if inc else '<'}{hi}"

mmdet = []
for r in om["mmdet"]:
    pkg, spec = parse_req(r["mmcv_requirement"])
    row = {"version": r["mmdet"], "requires": {pkg: spec}, "source": r["source"]}
    if r.get("mmengine_requirement"):
        row["requires"]["mmengine"] = parse_req(r["mmengine_requirement"])[1]
    mmdet.append(row)
# mmdet 2.19.0: __init__ (runtime assertion) differs from the FAQ table
for row in mmdet:
    if row["version"] == "2.19.0":
        row["requires"] = {"mmcv-full": ">=1.3.8,<=1.5.0"}
        row["source"] = ("PyPI wheel mmdet-2.19.0-py3-none-any.whl: mmdet/__init__.py mmcv_minimum_version='1.3.8', "
                         "mmcv_maximum_version='1.5.0' (assert <=); checked by envbuild 2026-11-23")
        row["notes"] = "docs/en/faq.md table says mmcv-full>=1.3.17,<1.5.0; the __init__ assertion is what runs"
mmseg = []
for r in om["mmseg"]:
    pkg, spec = parse_req(r["mmcv_requirement"])
    row = {"version": r["mmseg"], "requires": {pkg: spec}, "source": r["source"]}
    if r.get("mmengine_requirement"):
        row["requires"]["mmengine"] = parse_req(r["mmengine_requirement"])[1]
    mmseg.append(row)
mmseg.append({"version": "0.20.0", "requires": {"mmcv-full": ">=1.3.13,<=1.5.0"},
              "source": "PyPI wheel mmsegmentation-0.20.0-py3-none-any.whl: mmseg/__init__.py MMCV_MIN='1.3.13', "
                        "MMCV_MAX='1.5.0' (assert min <= v <= max); checked by envbuild 2026-11-23"})
mmseg.sort(key=lambda r: vkey(r["version"]))
numba = {p["version"]: p for p in om["related_pins"]}
d3 = []
seen = set()
for r in om["mmdet3d"]:
    if r["mmdet3d"] in seen:
        continue
    seen.add(r["mmdet3d"])
    a = r.get("asserted_ranges_in___init__") or {}
    req = {}
    for k, name in (("mmcv", None), ("mmdet", "mmdet"), ("mmseg", "mmsegmentation"), ("mmengine", "mmengine")):
        if k in a:
            if k == "mmcv":
                name = "mmcv" if a[k]["min"].startswith("2.") else "mmcv-full"
            req[name] = rng(a[k], k)
    runtime = [x for x in (r.get("requirements_runtime") or []) if not x.startswith("#")]
    runtime = [x.split("#")[0].strip() for x in runtime]
    row = {"version": r["mmdet3d"], "commit": r.get("commit"), "requires": req, "runtime": runtime,
           "mminstall": r.get("requirements_mminstall"), "source": r["source"]}
    np_pins = [x[len("numpy"):] for x in runtime if re.match(r"numpy[<>=!~]", x)]
    if np_pins:
        row["numpy"] = np_pins[0]
    if "numba==0.48.0" in runtime:
        row["python_max"] = "3.8"
        row["python_max_source"] = numba["0.48.0"]["source"] + " (numba 0.48.0 wheels only for cp36-cp38)"
    if "numba==0.53.0" in runtime:
        row["python_max"] = "3.9"
        row["python_max_source"] = numba["0.53.0"]["source"]
    # mmdet3d < 1.1 compiles its own CUDA ops in setup.py (imports torch) -> source build on the target
    row["build_from_source"] = vkey(r["mmdet3d"]) < (1, 1, 0)
    d3.append(row)
d3.sort(key=lambda r: vkey(r["version"]) + ((0,) if "rc" in r["version"] else (1,)))
write("openmmlab", "OpenMMLab coupling: mmdet / mmsegmentation / mmdet3d -> allowed mmcv(-full) range (the version "
      "assertion in the package's __init__ where read, else the FAQ table), mmdet3d runtime pins (numpy, numba -> Python) "
      "and whether the package must be compiled on the target (its setup.py imports torch and builds CUDA ops).",
      {"notes": om["notes"], "source_build_rule": {
          "fact": "mmdet3d < 1.1.0 builds CUDA ops in setup.py (imports torch): install it after torch with "
                  "--no-build-isolation, FORCE_CUDA=1 and TORCH_CUDA_ARCH_LIST set",
          "source": "open-mmlab/mmdetection3d setup.py at the v0.17.3 tag (@940e429438b535a09466dc330849f33b230d183b) and "
                    "docs/en/getting_started.md; ops moved to mmcv in 1.1.0"},
       "mmdet": mmdet, "mmsegmentation": mmseg, "mmdet3d": d3})

# ---------------- cupy ----------------
cp = ref["cupy"]
pk = []
for r in cp["packages"]:
    name = r["package"]
    if name == "cupy-cuda11x":
        lo, hi = "11.2", "11.8"
    elif name == "cupy-cuda12x":
        lo, hi = "12.0", "12.9"
    elif name == "cupy-cuda13x":
        lo, hi = "13.0", "13.9"
    else:
        lo = hi = r["cuda"]
    known = {x["cupy"] for x in cp["releases"]}
    # CuPy < 6 has no release row (numpy/Python requirements): envbuild only offers versions it can check
    vs = [v for v in r["versions"] if v in known]
    pk.append({"package": name, "cuda_min": lo, "cuda_max": hi, "versions": vs,
               "python_by_version": {k: v for k, v in r["python_by_version"].items() if k in known},
               "source": r["source"],
               **({"notes": "cupy-cuda11x supports CUDA 11.2-11.8 (one wheel through minor-version compatibility)"}
                  if name == "cupy-cuda11x" else {})})
crel = [{"cupy": r["cupy"], "numpy": r["numpy_requirement"].replace("numpy", "", 1), "requires_python": r["requires_python"],
         "source": r["source"]} for r in cp["releases"]]
write("cupy", "CuPy binary wheels: package per CUDA (cupy-cudaXY for one CUDA minor, cupy-cuda11x/12x/13x per major), "
      "versions with Python wheels, and per-release NumPy / Python requirements (install_requires).",
      {"notes": cp["notes"], "packages": pk, "releases": crel, "docs_requirements": cp["docs_requirements"]})

# ---------------- numpy ----------------
LATEST = {"1.16": "1.16.6", "1.17": "1.17.5", "1.18": "1.18.5", "1.19": "1.19.5", "1.20": "1.20.3", "1.21": "1.21.6",
          "1.22": "1.22.4", "1.23": "1.23.5", "1.24": "1.24.4", "1.25": "1.25.2", "1.26": "1.26.4", "2.0": "2.0.2",
          "2.1": "2.1.3", "2.2": "2.2.6", "2.3": "2.3.5", "2.4": "2.4.6", "2.5": "2.5.5"}
LSRC = ("PyPI `pip index versions numpy --python-version 3.7|3.9|3.12` (PIP_CONFIG_FILE=/dev/null), run by envbuild "
        "2026-11-23: newest patch of each minor")
nr = []
for r in ref["numpy"]["releases"]:
    nr.append({"numpy": r["numpy"], "python_min": r["python_min"], "python_max": r["python_max"],
               "latest_patch": LATEST[r["numpy"]], "latest_patch_source": LSRC,
               "python_supported_release_notes": r["python_supported_release_notes"], "source": r["source"]})
abi = []
for r in ref["numpy_abi"]["rules"]:
    if "numpy_lt_2_for" in r:
        abi.append({"package": r["package"], "versions": r["numpy_lt_2_for"], "numpy": "<2",
                    "fact": r["fact"], "source": r["source"], "confidence": r.get("confidence")})
write("numpy", "NumPy minor -> supported Python (release notes), the newest patch of each minor on PyPI, and the "
      "NumPy-2 ABI rules (wheels built against NumPy 1.x need numpy<2).",
      {"notes": ref["numpy"]["notes"], "releases": nr, "abi_rules": abi})
print("done")
