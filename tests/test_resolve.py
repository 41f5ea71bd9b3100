"""The resolver against real-world stories (tests/cases/resolve/*.json), plus its CLI.

Every successful resolution is also re-checked against the data by an independent
checker (driver minimum, arch list, prebuilt mmcv wheel, numpy inside every pin), so a
case passes only when the answer is both the expected one and actually consistent.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from packaging.specifiers import SpecifierSet
from packaging.version import Version

from envbuild.errors import InputError, ProfileError
from envbuild.matrix import Matrix, cuda_of_variant, load_matrix
from envbuild.models import Profile, Resolution, load_profile
from envbuild.resolve import resolve
from envbuild.target import make_target

CASES = Path(__file__).parent / "cases" / "resolve"
PROFILES = Path(__file__).parent / "data" / "profiles"
CASE_FILES = sorted(CASES.glob("*.json"))
CONTRACT_KEYS = {"ok", "python", "cuda", "packages", "index_urls", "find_links", "build", "reasons",
                 "warnings", "conflicts", "choices", "requirements", "source_builds", "implied", "knowledge",
                 "verdict"}


def _mm(v: str) -> tuple[int, int]:
    a, b = (int(x) for x in v.split(".")[:2])
    return a, b


def _target(case: dict[str, Any]) -> Profile:
    base = load_profile(PROFILES / case["profile"]) if case.get("profile") else None
    return make_target(base, **case.get("flags", {}))


def _check_consistent(res: Resolution, target: Profile, m: Matrix) -> None:
    """Re-derive every constraint from the data; any violation is a resolver bug."""
    pk = res.packages
    sb = {s.name for s in res.source_builds}
    for name, version in pk.items():
        if name not in sb:
            assert f"{name}=={version}" in res.requirements, f"{name} missing from requirements"
    assert not sb & {r.split("==")[0] for r in res.requirements}, "a source build leaked into requirements"
    if "torch" in pk:
        base, _, label = pk["torch"].partition("+")
        rel = m.torch_release(base)
        assert rel is not None and res.python in rel.python
        if not label:
            # the plain PyPI wheel: only when it is the chosen CUDA build, and then no PyTorch index at all
            assert res.cuda is not None and rel.pypi_cuda == res.cuda
            assert not any("download.pytorch.org" in u for u in res.index_urls)
            assert any(f"default wheel on PyPI is the CUDA {res.cuda} build" in r for r in res.reasons)
            for dom in ("torchvision", "torchaudio"):
                assert "+" not in pk.get(dom, "")
        elif label == "cpu":
            assert res.cuda is None and rel.cpu
        else:
            assert label in rel.all_variants and cuda_of_variant(label) == res.cuda
            assert any(u.endswith(f"/whl/{label}") for u in res.index_urls)
    if res.cuda and target.driver_version:
        drv = Version(target.driver_version)
        native = drv >= Version(m.min_driver(res.cuda) or "9999")
        compat_min = m.compat_min_driver(res.cuda)
        # natively, or (torch's wheels bundle their runtime) through minor-version compatibility, said so
        assert native or (compat_min and drv >= Version(compat_min) and
                          any("minor-version compatibility" in r for r in res.reasons))
        if "torch" in pk and res.verdict:
            assert res.verdict["rule"] == ("native-driver" if native else "minor-version-compat")
    if res.verdict:
        torch_choice = next(c for c in res.choices if c["package"] == "torch")
        assert torch_choice["rule"] == res.verdict["rule"] and res.verdict["ok"] is True
        for f in res.verdict["facts"]:  # an unverified fact is never used silently
            if f["confidence"] != "confirmed":
                assert any(f["text"] in w for w in res.warnings), f"{f} used without a warning"
    if res.cuda and "torch" in pk:
        row = m.arch_row(pk["torch"].split("+")[0], res.cuda)
        assert row is not None
        sass = [_mm(a.removesuffix("+PTX")) for a in row.arch_list]
        for g in target.gpus:
            cc = _mm(g.compute_capability or "0.0")
            assert any(a[0] == cc[0] and a[1] <= cc[1] for a in sass), f"{g.name} not runnable by {row.text}"
    for name in ("mmcv-full", "mmcv"):
        if name in pk and name not in sb:
            assert pk[name] in m.mmcv_wheels(name, res.cuda, pk["torch"].split("+")[0])
            major, minor = pk["torch"].split(".")[:2]
            assert any(f"torch{major}.{minor}/" in u for u in res.find_links)
    cupy = [n for n in pk if n.startswith("cupy-")]
    if cupy:
        pkg = next(p for p in m.cupy_packages if p.package == cupy[0])
        assert res.cuda and pkg.cuda.covers(res.cuda)
        rel_c = m.cupy_releases[pk[cupy[0]]]
        assert res.python in pkg.python_by_version[pk[cupy[0]]]
        if "numpy" in pk:
            assert SpecifierSet(rel_c.numpy).contains(pk["numpy"])
            # CuPy's numpy range is listed among the implied bounds, pinned inside it
            by = f"{cupy[0]} {pk[cupy[0]]}"
            assert any(b["by"] == by and b["pinned"] == pk["numpy"] for b in res.implied)
    for b in res.implied:  # every implied bound is honoured: by the numpy pin or as a requirement
        if b["pinned"]:
            assert SpecifierSet(b["spec"]).contains(b["pinned"], prereleases=True)
        else:
            assert any(r.startswith(b["package"]) and b["spec"] in r for r in res.requirements)
    if "numpy" in pk:
        np_minor = next(n for n in m.numpy if pk["numpy"].startswith(n.minor + "."))
        assert np_minor.python.covers(res.python)
        d3 = m.mm_package("mmdet3d", pk.get("mmdet3d", "")) if "mmdet3d" in pk else None
        if d3 is not None and d3.numpy:
            assert SpecifierSet(d3.numpy).contains(pk["numpy"])


@pytest.mark.parametrize("path", CASE_FILES, ids=[p.stem for p in CASE_FILES])
def test_case(path: Path) -> None:
    case = json.loads(path.read_text())
    assert case.get("#"), "every case names its real-world story"
    exp = case["expected"]
    target = _target(case)
    res = resolve(case["requested"], target, **case.get("options", {}))
    d = res.to_dict()
    assert d.keys() >= CONTRACT_KEYS
    assert res.ok is exp["ok"], res.conflict_texts or res.packages
    if not res.ok:
        assert res.conflicts, "a failure must explain itself"
        text = " ".join(res.conflict_texts)
        for group in exp.get("conflicts_contain", []):
            assert any(all(s in c for s in group) for c in res.conflict_texts), f"{group} not in {text}"
        return
    _check_consistent(res, target, load_matrix())
    if "python" in exp:
        assert res.python == exp["python"]
    if "cuda_in" in exp:
        assert res.cuda in exp["cuda_in"]
    if "cuda_min" in exp:
        assert res.cuda and _mm(exp["cuda_min"]) <= _mm(res.cuda) <= _mm(exp["cuda_max"])
    for name, pattern in exp.get("packages", {}).items():
        assert name in res.packages, f"{name} not chosen: {res.packages}"
        assert re.search(pattern, res.packages[name]), f"{name}={res.packages[name]} !~ {pattern}"
    if exp.get("cupy_matches_cuda"):
        cupy = [n for n in res.packages if n.startswith("cupy-")]
        assert cupy and res.cuda
        flat, major = "cupy-cuda" + res.cuda.replace(".", ""), f"cupy-cuda{res.cuda.split('.')[0]}x"
        assert cupy[0] in (flat, major)
    if "arch_contains" in exp:
        assert exp["arch_contains"] in (res.build["torch_cuda_arch_list"] or "").split(";")
    if "arch_list_equals" in exp:
        assert res.build["torch_cuda_arch_list"] == exp["arch_list_equals"]
    for name in exp.get("absent", []):
        assert name not in res.packages
    if "gcc_max" in exp:
        assert res.build["gcc_max"] == exp["gcc_max"]
    if "source_builds" in exp:
        assert [s.name for s in res.source_builds] == exp["source_builds"]
        for s in res.source_builds:
            assert s.env["FORCE_CUDA"] == "1" and s.env["TORCH_CUDA_ARCH_LIST"] == res.build[
                "torch_cuda_arch_list"]
            assert s.reason and s.source and s.version == res.packages[s.name]
    for group in exp.get("warnings_contain", []):
        assert any(all(s in w for s in group) for w in res.warnings), f"{group} not in {res.warnings}"
    if "find_links_contain" in exp:
        assert any(exp["find_links_contain"] in u for u in res.find_links)
    if "index_urls_contain" in exp:
        assert any(exp["index_urls_contain"] in u for u in res.index_urls)
    if "index_urls_equal" in exp:
        assert res.index_urls == exp["index_urls_equal"]
    for group in exp.get("reasons_contain", []):
        assert any(all(s in r for s in group) for r in res.reasons), f"{group} not in {res.reasons}"
    for r in exp.get("requirements_contain", []):
        assert r in res.requirements
    if "rule" in exp:
        assert res.verdict["rule"] == exp["rule"], res.verdict
    for imp in exp.get("implied_contain", []):
        hit = [b for b in res.implied if b["package"] == imp["package"] and b["spec"] == imp["spec"]]
        assert hit, f"{imp} not in {res.implied}"
        for ev in imp.get("evidence_contains", []):
            assert any(ev in e for b in hit for e in b["evidence"]), hit
        pinned = res.packages.get(imp["package"])
        if pinned:  # the pin honours the bound
            assert SpecifierSet(imp["spec"]).contains(pinned)
        else:  # or the bound itself goes to the lock engine
            assert any(r.startswith(imp["package"]) and imp["spec"] in r for r in res.requirements)
    assert len(res.choices) >= len(res.packages) and all(c["source"] for c in res.choices)


def test_seed_laptop_story_in_detail() -> None:
    """Scenario A end to end: every number a user would check."""
    laptop = make_target(None, python="3.7", driver="470.223.02", gpu="NVIDIA GeForce RTX 3060 Laptop GPU")
    res = resolve(["mmcv-full==1.4.0", "mmdet==2.19.0", "mmsegmentation==0.20.0", "mmdet3d==0.17.3", "cupy",
                   "numpy"], laptop)
    # mmcv wheels are compiled against torch X.Y.0; CUDA 11.3 runs natively on driver 470
    assert res.packages["torch"] == "1.10.0+cu113"
    assert res.packages["cupy-cuda113"] == "10.6.0" and res.packages["numpy"] == "1.19.5"
    assert res.find_links == ["https://download.openmmlab.com/mmcv/dist/cu113/torch1.10/index.html"]
    assert res.index_urls == ["https://download.pytorch.org/whl/cu113"]
    assert "mmdet3d" not in " ".join(res.requirements)
    assert res.source_builds[0].requires and "numpy<1.20.0" in res.source_builds[0].requires
    assert any(r.startswith("numpy 1.19.5") and "mmdet3d 0.17.3" in r for r in res.reasons)


def test_mirrors_are_used() -> None:
    res = resolve(["mmcv-full==1.4.0"], make_target(None, python="3.8", driver="470.223.02", gpu="sm_86"),
                  indexes={"pytorch": "https://mirror.example/torch/", "openmmlab": "https://mirror.example/mm"})
    assert res.index_urls[0].startswith("https://mirror.example/torch/cu11")
    assert res.find_links[0].startswith("https://mirror.example/mm/cu11")


def test_no_python_given_picks_one_that_fits_every_pin() -> None:
    res = resolve(["mmdet3d==0.17.3", "mmcv-full==1.4.0"], make_target(None, driver="470.223.02", gpu="8.6"))
    assert res.ok and res.python == "3.8"  # numba 0.48 (mmdet3d 0.17) has wheels up to cp38


@pytest.mark.parametrize(("gpu", "cc"), [
    ("NVIDIA GeForce RTX 3060 Laptop GPU", "8.6"), ("Tesla V100-SXM2-32GB", "7.0"),
    ("Tesla V100-SXM2-16GB", "7.0"),
    ("NVIDIA GeForce RTX 4090", "8.9"), ("NVIDIA GeForce RTX 5090", "12.0"), ("NVIDIA A100-SXM4-40GB", "8.0"),
    ("NVIDIA H100 80GB HBM3", "9.0"), ("Tesla T4", "7.5"), ("nvidia geforce gtx 1080 ti", "6.1"),
    ("NVIDIA TITAN RTX", "7.5"), ("NVIDIA B200", "10.0"), ("Tesla P100-PCIE-16GB", "6.0"), ("sm_86", "8.6"),
    ("sm120", "12.0"), ("7.5", "7.5"),
])
def test_gpu_flag(gpu: str, cc: str) -> None:
    assert make_target(None, gpu=gpu).gpus[0].compute_capability == cc


def test_unknown_gpu_suggests_names() -> None:
    with pytest.raises(ProfileError) as ei:
        make_target(None, gpu="GeForce RTX 9090")
    text = ei.value.render()
    assert "RTX 9090" in text and "RTX 5090" in text and "sm_86" in text and ei.value.exit_code == 2


@pytest.mark.parametrize(("flags", "field"), [
    ({"driver": "latest"}, "--driver"), ({"python": "three"}, "--python"),
    ({"cuda_toolkit": "11"}, "--cuda-toolkit"),
    ({"cpu": True, "gpu": "sm_86"}, "--cpu"),
])
def test_bad_flags(flags: dict[str, Any], field: str) -> None:
    with pytest.raises(InputError) as ei:
        make_target(None, **flags)
    assert ei.value.field == field


def test_flags_override_profile() -> None:
    base = load_profile(PROFILES / "seed-server.json")
    t = make_target(base, driver="470.223.02", gpu="sm_86", python="3.8")
    assert t.driver_version == "470.223.02" and t.driver_cuda_version == "11.4"
    assert [g.compute_capability for g in t.gpus] == ["8.6"] and t.python_version == "3.8"
    assert t.cuda_toolkits == base.cuda_toolkits and t.gcc_version == "7.5.0"
    cpu = make_target(base, cpu=True)
    assert not cpu.has_gpu and cpu.python_version == "3.7"


def test_bad_requirement() -> None:
    with pytest.raises(InputError) as ei:
        resolve(["torch>=>2"], make_target(None, cpu=True, python="3.11"))
    assert "torch>=>2" in ei.value.render() and "\n" not in ei.value.message


def test_resolving_is_fast() -> None:
    """Data loads once; a scenario resolves well under a second (the measured time is printed)."""
    load_matrix()
    target = make_target(None, python="3.7", driver="440.33.01", gpu="Tesla V100-SXM2-32GB",
                         cuda_toolkit="10.1", gcc="7.5")
    reqs = ["mmcv-full==1.4.0", "mmdet==2.19.0", "mmsegmentation==0.20.0", "mmdet3d==0.17.3", "cupy", "numpy"]
    t0 = time.perf_counter()
    res = resolve(reqs, target)
    ok_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    bad = resolve(["torch>=2.0"], make_target(None, python="3.10", driver="418.67", gpu="sm_70"))
    fail_s = time.perf_counter() - t0
    print(f"\nresolve seed-server-B: {ok_s * 1000:.1f} ms; failing V100/418.67 case: {fail_s * 1000:.1f} ms")
    assert res.ok and not bad.ok
    assert ok_s < 1.0 and fail_s < 1.0


# --- CLI -------------------------------------------------------------------------------------------------


def _cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "250", "NO_COLOR": "1"}
    return subprocess.run([sys.executable, "-m", "envbuild", *args], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=120)


def test_cli_resolve_table_and_json() -> None:
    p = _cli("resolve", "torch", "torchvision", "cupy", "numpy", "--python", "3.11", "--driver", "550.54.14",
             "--gpu", "NVIDIA GeForce RTX 4090")
    assert p.returncode == 0, p.stderr
    assert "cupy-cuda12x" in p.stdout and "TORCH_CUDA_ARCH_LIST" in p.stdout and "8.9" in p.stdout
    p = _cli("resolve", "torch", "numpy", "--python", "3.11", "--cpu", "--json")
    assert p.returncode == 0, p.stderr
    d = json.loads(p.stdout)
    assert d.keys() >= CONTRACT_KEYS and d["ok"] is True and d["cuda"] is None


def test_cli_conflict_exit_1() -> None:
    p = _cli("resolve", "torch>=2.0", "--python", "3.10", "--driver", "418.67", "--gpu",
             "Tesla V100-SXM2-16GB", "--json")
    assert p.returncode == 1
    d = json.loads(p.stdout)
    assert d["ok"] is False and any("418.67" in c for c in d["conflicts"])
    p = _cli("resolve", "torch>=2.0", "--python", "3.10", "--driver", "418.67", "--gpu", "sm_70")
    assert p.returncode == 1 and "418.67" in p.stderr and "Traceback" not in p.stderr


@pytest.mark.parametrize("args", [
    ("resolve", "torch", "--gpu", "GeForce RTX 9090"),
    ("resolve", "torch>=>2", "--cpu"),
    ("resolve", "torch", "--driver", "new"),
    ("resolve",),
    ("matrix", "pandas"),
])
def test_cli_bad_input_exit_2(args: tuple[str, ...]) -> None:
    p = _cli(*args)
    assert p.returncode == 2, p.stderr
    assert "Traceback" not in p.stderr and p.stderr.startswith("error:")
    assert len(p.stderr.strip().splitlines()) == 1


def test_cli_malformed_profile_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "target.json"
    bad.write_text('{"gpus": [{"name": "Tesla V100"}], "driver_version": ')
    p = _cli("resolve", "torch", "--target", str(bad))
    assert p.returncode == 2 and str(bad) in p.stderr and "Traceback" not in p.stderr
    bad.write_text('{"gpus": [{"name": "Quantum Accelerator 9000"}]}')
    p = _cli("resolve", "torch", "--target", str(bad), "--json")
    err = json.loads(p.stdout)
    assert p.returncode == 2 and err["field"] == "gpus[0].name" and err["path"] == str(bad)


def test_cli_spec_file(tmp_path: Path) -> None:
    (tmp_path / "targets").mkdir()
    (tmp_path / "targets" / "server.json").write_text((PROFILES / "seed-server.json").read_text())
    (tmp_path / "envbuild.toml").write_text(
        '[project]\nname = "echofusion"\npython = "3.7"\n'
        'requirements = ["mmcv-full==1.4.0", "mmdet==2.19.0", "mmsegmentation==0.20.0", "mmdet3d==0.17.3", '
        '"cupy", "numpy", "scipy"]\n[target]\nprofile = "targets/server.json"\n'
        '[indexes]\npytorch = "https://mirror.example/whl"\n')
    p = _cli("resolve", "--spec", "envbuild.toml", "--json", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    d = json.loads(p.stdout)
    assert d["cuda"] == "10.2" and d["index_urls"] == ["https://mirror.example/whl/cu102"]
    assert "scipy" in d["requirements"] and d["python"] == "3.7"


@pytest.mark.parametrize("kind", ["torch", "mmcv", "cupy", "driver"])
def test_cli_matrix(kind: str) -> None:
    p = _cli("matrix", kind, "--json")
    assert p.returncode == 0, p.stderr
    d = json.loads(p.stdout)
    assert d["rows"] and all(len(r) == len(d["columns"]) for r in d["rows"])
    if kind == "torch":
        row = next(r for r in d["rows"] if r[0] == "1.10.0")
        assert row[d["columns"].index("cu113")] in ("✓", "?") and row[d["columns"].index("cu111")] == "✓"
    if kind == "mmcv":
        row = next(r for r in d["rows"] if r[0] == "mmcv-full" and r[1] == "1.10")
        assert "1.4" not in row[d["columns"].index("cu113")] or row[d["columns"].index("cu113")]
        assert row[d["columns"].index("cu115")] == ""
    if kind == "driver":
        row = next(r for r in d["rows"] if r[0] == "11.4")
        assert row[1].startswith("470.")
    p = _cli("matrix", kind)
    assert p.returncode == 0 and d["columns"][0] in p.stdout


def test_profile_gpu_without_capability_is_filled_or_refused() -> None:
    base = Profile.from_dict({"python_version": "3.10", "driver_version": "550.54.14",
                              "gpus": [{"name": "NVIDIA GeForce RTX 4090"}]})
    assert make_target(base).gpus[0].compute_capability == "8.9"
    bad = Profile.from_dict({"gpus": [{"name": "Quantum Accelerator 9000"}]})
    with pytest.raises(ProfileError) as ei:
        make_target(bad)
    assert ei.value.field == "gpus[0].name"


def test_newer_legacy_major_build_is_explained() -> None:
    ws = make_target(None, python="3.11", driver="550.54.14", gpu="NVIDIA GeForce RTX 4090")
    res = resolve(["torch"], ws, native_driver_only=True)  # the strict rule: builds the driver runs natively
    assert res.packages["torch"] == "2.6.0"  # CUDA 12.4: the plain PyPI wheel
    assert any("2.7.1+cu118 is newer" in r for r in res.reasons)


def test_conflicts_quote_the_pin_that_blocks() -> None:
    laptop = make_target(None, python="3.7", driver="470.223.02", gpu="sm_86")
    res = resolve(["cupy<5"], laptop)
    assert not res.ok and "cupy<5" in res.conflict_texts[0]
    res = resolve(["mmdet3d==0.17.3", "mmdet==3.0.0"], laptop)
    assert not res.ok and any("mmdet 3.0.0" in c and "mmdet3d 0.17.3" in c for c in res.conflict_texts)
    assert not any("mmsegmentation needs" in c for c in res.conflict_texts)  # implied, not asked for


def test_profile_with_only_the_drivers_cuda() -> None:
    """A profile that knows 'CUDA <= 12.2' but not the driver version (e.g. read from nvidia-smi's header)."""
    base = Profile.from_dict({"python_version": "3.10", "driver_cuda_version": "12.2",
                              "gpus": [{"name": "NVIDIA A100-SXM4-40GB"}]})
    res = resolve(["torch"], make_target(base))
    # a 12.x driver runs any 12.x wheel through minor-version compatibility; natively only <= 12.2
    assert res.ok and res.cuda is not None and _mm(res.cuda)[0] == 12
    assert res.verdict["rule"] == ("native-driver" if _mm(res.cuda) <= (12, 2) else "minor-version-compat")
    strict = resolve(["torch"], make_target(base), native_driver_only=True)
    assert strict.ok and strict.cuda is not None and _mm(strict.cuda) <= (12, 2)
    old = Profile.from_dict({"python_version": "3.10", "driver_cuda_version": "10.1",
                             "gpus": [{"name": "Tesla V100-SXM2-16GB"}]})
    bad = resolve(["torch>=2"], make_target(old))
    assert not bad.ok and "CUDA <= 10.1" in bad.conflict_texts[0]


# --- the plain PyPI wheel vs the PyTorch index ------------------------------------------------------


def test_pypi_default_build_needs_no_pytorch_index() -> None:
    """torch 2.6.0's PyPI wheel is the CUDA 12.4 build: the index path's choice minus label and index."""
    ws = make_target(None, python="3.11", driver="550.54.14", gpu="NVIDIA GeForce RTX 4090")
    reqs = ["torch", "torchvision", "torchaudio", "numpy"]
    # the strict driver rule keeps the CUDA 12.4 choice this test is about
    pypi, index = (resolve(reqs, ws, native_driver_only=True),
                   resolve(reqs, ws, prefer_pypi=False, native_driver_only=True))
    assert pypi.packages == {"torch": "2.6.0", "torchvision": "0.21.0", "torchaudio": "2.6.0",
                             "numpy": index.packages["numpy"]}
    assert pypi.requirements[:3] == ["torch==2.6.0", "torchvision==0.21.0", "torchaudio==2.6.0"]
    assert pypi.index_urls == [] and pypi.find_links == []
    assert index.packages["torch"] == "2.6.0+cu124" and index.packages["torchaudio"] == "2.6.0+cu124"
    assert index.index_urls == ["https://download.pytorch.org/whl/cu124"]
    # the CUDA, the arch list and the driver verdict do not depend on where the wheel comes from
    assert pypi.cuda == index.cuda == "12.4" and pypi.build == index.build
    assert pypi.build["torch_cuda_arch_list"] == "8.9" and pypi.warnings == index.warnings
    line = next(r for r in pypi.reasons if "default wheel on PyPI" in r)
    assert line.startswith("torch 2.6.0's default wheel on PyPI is the CUDA 12.4 build (source: PyPI wheel "
                           "metadata (PEP 658) of torch-2.6.0-") and line.endswith("): no extra index needed")
    assert not any("default wheel on PyPI" in r for r in index.reasons)


@pytest.mark.parametrize(("reqs", "flags", "pin", "index", "why"), [
    # the driver runs 12.6: 2.6.0's newest build is cu126, not the PyPI wheel's 12.4
    (["torch==2.6.0"], {"python": "3.11", "driver": "560.28.03", "gpu": "sm_89"}, "2.6.0+cu126", "cu126",
     "default wheel on PyPI is the CUDA 12.4 build"),
    # a pin naming the label matches only the index's wheel
    (["torch==2.6.0+cu124"], {"python": "3.11", "driver": "550.54.14", "gpu": "sm_89"}, "2.6.0+cu124",
     "cu124", "torch==2.6.0+cu124 names the +cu124 wheel"),
    # the data knows no PyPI default for 1.10 (seed server B): the index path, as before
    (["torch==1.10.0"], {"python": "3.7", "driver": "440.33.01", "gpu": "sm_70"}, "1.10.0+cu102", "cu102",
     None),
    # CPU builds always come from the index (PyPI's wheel is a CUDA build)
    (["torch==2.6.0"], {"python": "3.11", "cpu": True}, "2.6.0+cpu", "cpu", None),
])
def test_other_builds_keep_the_pytorch_index(reqs: list[str], flags: dict[str, Any], pin: str, index: str,
                                             why: str | None) -> None:
    res = resolve(reqs, make_target(None, **flags))
    assert res.packages["torch"] == pin
    assert res.index_urls == [f"https://download.pytorch.org/whl/{index}"]
    if why:
        assert any(why in r for r in res.reasons), res.reasons


def test_old_release_with_a_recorded_pypi_default() -> None:
    """torch 1.8.1's PyPI wheel is the CUDA 10.2 build (previous-versions page): PyPI on a 10.2 driver."""
    srv = make_target(None, python="3.8", driver="440.33.01", gpu="sm_70")
    res = resolve(["torch==1.8.1", "torchvision"], srv)
    assert res.packages["torch"] == "1.8.1" and res.packages["torchvision"] == "0.9.1"
    assert res.cuda == "10.2" and res.index_urls == []
    assert any("previous-versions.md" in r and "no extra index needed" in r for r in res.reasons)


def test_non_x86_target_keeps_the_pytorch_index() -> None:
    ws = make_target(None, python="3.11", driver="550.54.14", gpu="sm_89")
    base = dataclasses.replace(ws, arch="aarch64")
    res = resolve(["torch"], base, native_driver_only=True)
    assert res.packages["torch"] == "2.6.0+cu124" and res.index_urls


def test_cli_pytorch_index_always() -> None:
    args = ("resolve", "torch", "--python", "3.11", "--driver", "550.54.14", "--gpu", "sm_89", "--json",
            "--native-driver-only")
    d = json.loads(_cli(*args).stdout)
    assert d["packages"]["torch"] == "2.6.0" and d["index_urls"] == [] and d["cuda"] == "12.4"
    p = _cli(*args, "--pytorch-index-always")
    assert p.returncode == 0, p.stderr
    d = json.loads(p.stdout)
    assert d["packages"]["torch"] == "2.6.0+cu124" and d["index_urls"] == ["https://download.pytorch.org/whl/cu124"]


# --- the compatibility verdict, unverified facts, implied bounds, knowledge date --------------------


def _newest_passing(m: Matrix, reqs_ok: Any, target: Profile, *, native_only: bool = False) -> Version:
    """Independently: the newest torch in the data with a build the matrix verdict accepts on ``target``."""
    from envbuild.matrix import BuildFacts, TargetFacts

    best = None
    for rel in m.torch:
        if target.python_version not in rel.python or not reqs_ok(rel):
            continue
        for var in rel.variants:  # confirmed builds only
            cuda = cuda_of_variant(var)
            ok = all(m.verdict(BuildFacts(cuda, arch=m.arch_row(rel.version, cuda)),
                               TargetFacts(driver=target.driver_version, cc=g.compute_capability),
                               native_only=native_only).ok for g in target.gpus)
            if ok and (best is None or Version(rel.version) > best):
                best = Version(rel.version)
    assert best is not None
    return best


def test_rtx4090_driver550_gets_the_newest_torch_through_minor_version_compat() -> None:
    ws = make_target(None, python="3.11", driver="550.54.14", gpu="NVIDIA GeForce RTX 4090")
    m = load_matrix()
    res = resolve(["torch", "torchvision"], ws)
    _check_consistent(res, ws, m)
    chosen = Version(res.packages["torch"].split("+")[0])
    assert chosen == _newest_passing(m, lambda r: bool(r.domain_versions("torchvision")), ws)
    assert res.verdict["rule"] == "minor-version-compat"
    assert any("minor-version compatibility" in r and "525.60.13" in r for r in res.reasons)
    # the strict rule gives an older torch, natively supported by the driver
    strict = resolve(["torch", "torchvision"], ws, native_driver_only=True)
    assert strict.verdict["rule"] == "native-driver"
    assert Version(strict.packages["torch"].split("+")[0]) < chosen
    assert strict.cuda is not None and _mm(strict.cuda) <= (12, 4)


def test_v100_torch211_refuses_cu128_for_its_arch_list() -> None:
    from envbuild.matrix import BuildFacts, TargetFacts

    m = load_matrix()
    v = m.verdict(BuildFacts("12.8", arch=m.arch_row("2.11.0", "12.8")),
                  TargetFacts(driver="570.86.10", cc="7.0"))
    assert not v.ok and v.rule == "no-sass" and "7.5;8.0" in v.reason
    res = resolve(["torch==2.11.*"], make_target(None, python="3.11", driver="570.86.10", gpu="sm_70"))
    assert res.cuda == "12.6" and "sm_70" in " ".join(res.reasons)


def test_unverified_build_is_demoted_and_warned() -> None:
    """2.14's cu134 is a '?' cell: a driver that runs 13.4 natively still gets the confirmed cu132."""
    h100 = make_target(None, python="3.12", driver="615.10", gpu="NVIDIA H100 80GB HBM3")
    m = load_matrix()
    rel = m.torch_release("2.14.1")
    assert rel is not None and "cu134" in rel.unverified and "cu132" in rel.variants
    res = resolve(["torch==2.14.1"], h100)
    assert res.packages["torch"].endswith("+cu132") and not any("cu134" in w for w in res.warnings)
    only = resolve(["torch==2.14.1+cu134"], h100)
    assert only.ok and any("cu134 is not confirmed" in w for w in only.warnings)


def test_knowledge_date_and_age() -> None:
    ws = make_target(None, python="3.11", driver="550.54.14", gpu="sm_89")
    fresh = resolve(["torch"], ws, today=dt.date(2026, 12, 1))
    k = fresh.knowledge
    assert k["oldest"] <= k["newest"]
    assert k["age_days"] == (dt.date(2026, 12, 1) - dt.date.fromisoformat(k["oldest"])).days
    stale_msg = "knowledge used here was last checked"
    assert not any(stale_msg in w for w in fresh.warnings) or k["age_days"] > 30
    late = dt.date.fromisoformat(k["oldest"]) + dt.timedelta(days=31)
    stale = resolve(["torch"], ws, today=late)
    assert stale.knowledge["age_days"] == 31
    assert any(stale_msg in w and "envbuild data update" in w for w in stale.warnings)
    bad = resolve(["torch>=2.0"], make_target(None, python="3.10", driver="418.67", gpu="sm_70"), today=late)
    assert not bad.ok and bad.knowledge["age_days"] is not None
    assert any(stale_msg in w for w in bad.warnings)
    assert resolve(["torch"], ws).knowledge["age_days"] is None  # no clock inside the resolver


def test_cli_knowledge_and_native_driver_only() -> None:
    args = ("resolve", "torch", "--python", "3.11", "--driver", "550.54.14", "--gpu", "sm_89")
    d = json.loads(_cli(*args, "--json").stdout)
    assert d["knowledge"]["age_days"] is not None and d["knowledge"]["checked"]
    assert d["verdict"]["rule"] == "minor-version-compat"
    strict = json.loads(_cli(*args, "--json", "--native-driver-only").stdout)
    assert strict["verdict"]["rule"] == "native-driver" and strict["cuda"] == "12.4"
    p = _cli(*args)
    assert p.returncode == 0 and "knowledge: facts checked" in p.stdout


def test_implied_bounds_reach_the_table() -> None:
    p = _cli("resolve", "torch==2.1.0", "mmengine", "--python", "3.11", "--driver", "550.54.14", "--gpu",
             "sm_89")
    assert p.returncode == 0 and "implied: numpy<2 by torch 2.1.0" in p.stdout


def test_preferred_python_is_the_callers_choice() -> None:
    """The resolver reads no host: with no target Python the caller's preference wins when it fits."""
    target = make_target(None, driver="550.54.14", gpu="sm_89")
    newest = resolve(["torch", "numpy"], target)
    for py in ("3.10", "3.11"):
        res = resolve(["torch", "numpy"], target, prefer_python=py)
        assert res.ok and res.python == py
        assert any(r.startswith(f"python {py}: the target does not say; envbuild's own") for r in res.reasons)
    assert newest.ok and not any("envbuild's own" in r for r in newest.reasons)
    rel = load_matrix().torch_release(newest.packages["torch"].split("+")[0])
    assert rel is not None and newest.python == max(rel.python, key=lambda p: _mm(p))


def test_conflicts_are_records_with_sources() -> None:
    """Each conflict keeps its sentence, the facts it rests on (each with a source) and the suggestion."""
    from envbuild.errors import ConflictError
    from envbuild.resolve import check

    bad = resolve(["torch>=2.0"], make_target(None, python="3.10", driver="418.67", gpu="sm_70"))
    assert not bad.ok and bad.conflicts
    c = bad.conflicts[0]
    assert c.suggestion and c.text.endswith(c.suggestion + ".")
    assert any("418.67" in f.text for f in c.facts) and all(f.source for f in c.facts)
    assert any(f.source == "your requirement" and "torch>=2.0" in f.text for f in c.facts)
    d = bad.to_dict()
    assert d["conflicts"] == [x.text for x in bad.conflicts]  # the old key keeps its strings
    assert d["conflict_details"][0]["facts"][0]["source"]
    assert Resolution.from_dict(json.loads(json.dumps(d))).conflicts == bad.conflicts
    with pytest.raises(ConflictError) as info:
        check(bad, path="envbuild.toml")
    assert type(info.value) is ConflictError  # --json names the class in "error"
    assert info.value.exit_code == 1 and info.value.conflicts == d["conflicts"]
    assert info.value.message.startswith("no consistent set of versions exists for this target: ")


def test_source_builds_are_records_that_round_trip_through_json() -> None:
    """A lock's resolution is read back with the same six keys per source build, in the same order."""
    laptop = make_target(None, python="3.7", driver="470.223.02", gpu="NVIDIA GeForce RTX 3060 Laptop GPU")
    res = resolve(["mmcv-full==1.4.0", "mmdet3d==0.17.3"], laptop)
    [sb] = res.source_builds
    d = res.to_dict()["source_builds"]
    assert [list(x) for x in d] == [["name", "version", "requires", "env", "reason", "source"]]
    assert d[0]["env"] == {"FORCE_CUDA": "1", "TORCH_CUDA_ARCH_LIST": res.build["torch_cuda_arch_list"]}
    again = Resolution.from_dict(json.loads(json.dumps(res.to_dict())))
    assert again.source_builds == [sb] and json.dumps(again.to_dict()["source_builds"]) == json.dumps(d)
    bad = {**res.to_dict(), "source_builds": [{**d[0], "env": {"FORCE_CUDA": 1}}]}
    with pytest.raises(InputError) as e:
        Resolution.from_dict(bad, path="r.json")
    assert e.value.field == "source_builds[0].env.FORCE_CUDA"
