"""The bundled compatibility data: every row sourced, tables consistent with each other, loader strict."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from packaging.specifiers import SpecifierSet
from packaging.version import Version

from envbuild import matrix as mx
from envbuild.errors import DataError
from envbuild.matrix import cuda_of_variant, load_matrix, load_table, normalize_gpu_name


def _clear() -> None:
    for cached in (mx.load_matrix, mx.load_table, mx.load_names, mx._default_indexes):
        cached.cache_clear()


@pytest.fixture
def fresh_cache() -> Iterator[None]:
    _clear()
    yield
    _clear()


def test_every_file_has_a_header() -> None:
    for name in mx.TABLES:
        t = load_table(name)
        assert t["schema_version"] == 1 and t["checked"] and t["description"], name


def _rows(obj: Any, where: str) -> Iterator[tuple[str, dict[str, Any]]]:
    if isinstance(obj, dict):
        for k, v in obj.items():
            if isinstance(v, list) and v and all(isinstance(x, dict) for x in v):
                for i, r in enumerate(v):
                    yield f"{where}.{k}[{i}]", r


def test_no_entry_without_source() -> None:
    missing = [w for name in mx.TABLES for w, r in _rows(load_table(name), name) if not r.get("source")]
    assert not missing, missing[:10]


def test_loading_is_fast(fresh_cache: None) -> None:
    runs = []
    for _ in range(3):  # best of three: a busy CI machine must not make this flaky
        mx.load_matrix.cache_clear()
        mx.load_table.cache_clear()
        t0 = time.perf_counter()
        m = load_matrix()
        runs.append(time.perf_counter() - t0)
    print(f"\nload_matrix (8 files, validated): best {min(runs) * 1000:.1f} ms of {len(runs)}")
    assert min(runs) < 0.1
    assert load_matrix() is m  # cached: loaded once per process


def test_every_torch_cuda_has_a_driver_minimum_and_an_arch_list() -> None:
    m = load_matrix()
    for rel in m.torch:
        for var in rel.all_variants:
            cuda = cuda_of_variant(var)
            assert m.min_driver(cuda), f"torch {rel.version} {var}: CUDA {cuda} not in the driver table"
            assert m.gcc_max(cuda), f"torch {rel.version} {var}: no gcc limit for CUDA {cuda}"
            # an unverified variant ("?" cell) may lack its arch list: the resolver then warns and demotes it
            assert m.arch_row(rel.version, cuda) or var in rel.unverified, (
                f"torch {rel.version} {var}: no arch list")


def test_every_mmcv_row_names_a_torch_build_that_exists() -> None:
    m = load_matrix()
    for w in m.mmcv:
        series = [r for r in m.torch if r.series == w.torch_series]
        assert series, f"{w.package} row names torch {w.torch_series}, unknown to torch.json"
        if w.cuda != "cpu":
            var = "cu" + w.cuda.replace(".", "")
            assert any(var in r.all_variants for r in series), f"{w.package} {var}/torch{w.torch_series}"
            assert m.min_driver(w.cuda)


def test_every_gpu_capability_is_in_the_capability_table() -> None:
    m = load_matrix()
    for g in m.gpus:
        assert g.compute_capability in m.cc_windows, f"{g.name}: {g.compute_capability}"
    keys = [g.key for g in m.gpus]
    assert len(keys) == len(set(keys)), "two GPU rows normalise to the same name"


def test_openmmlab_and_cupy_rows_are_consistent() -> None:
    m = load_matrix()
    for pkg in m.cupy_packages:
        assert m.min_driver(pkg.cuda.lo), pkg.package
        for v in pkg.versions:
            assert v in m.cupy_releases, f"{pkg.package} {v} has no release row (numpy range)"
    d3 = m.mm_package("mmdet3d", "0.17.3")
    assert d3 is not None and d3.numpy == "<1.20.0" and d3.build_from_source and d3.python_max == "3.8"
    for n in m.numpy:
        assert n.latest.startswith(n.minor + ".")


@pytest.mark.parametrize(("driver", "native", "with_compat"), [
    ("470.223.02", "11.4", "11.8"), ("440.33.01", "10.2", "10.2"), ("550.54.14", "12.4", "12.9"),
    ("570.86.10", "12.8", "12.9"), ("418.67", "10.1", "10.1"), ("580.65.06", "13.0", "13.4"),
])
def test_driver_queries(driver: str, native: str, with_compat: str) -> None:
    m = load_matrix()
    assert m.native_cuda(driver) == native
    assert m.max_cuda(driver) == with_compat
    assert m.driver_support(driver, native) == "native"


def test_known_facts() -> None:
    m = load_matrix()
    assert "cu113" in m.variants("1.10.0") and "cu111" in m.variants("1.10.0")
    assert m.min_driver("11.3") == "465.19.01" and m.min_driver("12.8") == "570.26"
    assert m.gcc_max("10.2") == 8 and m.gcc_max("11.3") == 10
    assert "1.4.0" in m.mmcv_wheels("mmcv-full", "11.3", "1.10.0")
    assert "1.4.0" not in m.mmcv_wheels("mmcv-full", "11.3", "1.11.0")
    assert m.mmcv_find_links("https://x/dist", "11.3", "1.10.2") == "https://x/dist/cu113/torch1.10/index.html"
    assert [p.package for p in m.cupy_for_cuda("11.3")] == ["cupy-cuda113", "cupy-cuda11x"]
    row = m.arch_row("1.10.2", "11.3")
    assert row is not None and "8.6" in row.arch_list
    assert Version(m.numpy_for_python("3.7")[0].latest) < Version("1.22")


@pytest.mark.parametrize(("name", "expect"), [
    ("NVIDIA GeForce RTX 4090", "GeForce RTX 4090"), ("Tesla V100-SXM2-32GB", "NVIDIA V100"),
    ("NVIDIA A100-SXM4-40GB", "NVIDIA A100"), ("NVIDIA H100 80GB HBM3", "NVIDIA H100"),
    ("NVIDIA GeForce RTX 3060 Laptop GPU", "GeForce RTX 3060"), ("nvidia h100 pcie", "NVIDIA H100"),
    ("NVIDIA GeForce RTX 4070 Ti SUPER", "GeForce RTX 4070 Ti"), ("Quadro RTX 8000", "Quadro RTX 8000"),
])
def test_gpu_names(name: str, expect: str) -> None:
    g = load_matrix().gpu(name)
    assert g is not None and g.name == expect


def test_gpu_unknown_and_suggestions() -> None:
    m = load_matrix()
    assert m.gpu("Radeon RX 7900") is None
    assert "GeForce RTX 4090" in m.suggest_gpus("RTX 4909")
    assert normalize_gpu_name("NVIDIA A100-SXM4-80GB", m.gpu_ignore) == "a100"


def _broken_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, file: str, edit: Any) -> Path:
    data = tmp_path / "data"
    shutil.copytree(mx.DATA_DIR, data)
    path = data / f"{file}.json"
    doc = json.loads(path.read_text())
    edit(doc)
    path.write_text(json.dumps(doc))
    monkeypatch.setattr(mx, "DATA_DIR", data)
    return path


def test_row_without_source_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                     fresh_cache: None) -> None:
    path = _broken_copy(tmp_path, monkeypatch, "torch", lambda d: d["releases"][3].pop("source"))
    with pytest.raises(DataError) as ei:
        load_matrix()
    assert ei.value.path == str(path) and ei.value.field == "releases[3].source"


def test_bad_field_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fresh_cache: None) -> None:
    def edit(d: dict[str, Any]) -> None:
        d["gpus"][0]["compute_capability"] = "eight"

    path = _broken_copy(tmp_path, monkeypatch, "gpus", edit)
    with pytest.raises(DataError) as ei:
        load_matrix()
    text = ei.value.render()
    assert str(path) in text and "gpus[0].compute_capability" in text and "eight" in text


def test_unparsable_file_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fresh_cache: None) -> None:
    data = tmp_path / "data"
    shutil.copytree(mx.DATA_DIR, data)
    (data / "cupy.json").write_text("{ not json")
    monkeypatch.setattr(mx, "DATA_DIR", data)
    with pytest.raises(DataError) as ei:
        load_matrix()
    assert "cupy.json" in ei.value.render() and "line 1" in ei.value.render()


def test_pypi_default_wheel_facts() -> None:
    m = load_matrix()
    known = {r.version: r.pypi_cuda for r in m.torch if r.pypi_cuda}
    assert known["2.6.0"] == "12.4" and known["2.4.1"] == "12.1" and known["1.13.1"] == "11.7"
    assert "1.10.0" not in known  # no read source states it: never guessed
    for r in m.torch:
        if r.pypi_cuda:
            assert r.pypi_source, r.version
            # the PyPI wheel of a release is one of its CUDA builds (its arch list is that build's)
            assert not r.all_variants or f"cu{r.pypi_cuda.replace('.', '')}" in r.all_variants, r.version


def test_bad_pypi_default_cuda_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                        fresh_cache: None) -> None:
    def edit(d: dict[str, Any]) -> None:
        d["releases"][-3]["pypi_default_wheel_cuda"] = "cu124"

    path = _broken_copy(tmp_path, monkeypatch, "torch", edit)
    with pytest.raises(DataError) as ei:
        load_matrix()
    assert ei.value.path == str(path) and ei.value.field.endswith("].pypi_default_wheel_cuda")
    assert "cu124" in ei.value.render()


def test_digit_version_compares_like_openmmlab() -> None:
    assert mx.digit_version("2.0.0rc4") == [2, 0, -1, 4] and mx.digit_version("1.4.0") == [1, 4, 0]
    m = load_matrix()
    mmdet = m.mm_package("mmdet", "2.14.0")
    assert mmdet is not None and mmdet.compare == "digit_version" and mmdet.checked
    # mmdet 2.14.0's own check: mmcv_version <= digit_version('1.4.0') (inclusive)
    assert mmdet.accepts("mmcv-full", "1.4.0") and mmdet.accepts("mmcv-full", "1.3.8")
    assert not mmdet.accepts("mmcv-full", "1.4.1") and not mmdet.accepts("mmcv-full", "1.3.7")


@pytest.mark.parametrize(("cuda", "arch", "driver", "cc", "native_only", "ok", "rule"), [
    ("12.6", "5.0;6.0;7.0;7.5;8.0;8.6;9.0", "550.54.14", "8.9", False, True, "minor-version-compat"),
    ("12.6", "5.0;6.0;7.0;7.5;8.0;8.6;9.0", "550.54.14", "8.9", True, False, "driver-too-old"),
    ("12.4", "5.0;6.0;7.0;7.5;8.0;8.6;9.0", "550.54.14", "8.9", False, True, "native-driver"),
    ("13.0", "7.5;8.0;8.6;9.0;10.0;12.0+PTX", "550.54.14", "9.0", False, False, "driver-too-old"),
    ("13.2", "7.5;8.0;8.6;9.0;10.0;12.0+PTX", "580.65.06", "9.0", False, True, "minor-version-compat"),
    ("11.8", "3.7;5.0;6.0;7.0;7.5;8.0;8.6;9.0", "450.80.02", "8.0", False, True, "minor-version-compat"),
    ("11.8", "3.7;5.0;6.0;7.0;7.5;8.0;8.6;9.0", "450.51.05", "8.0", False, False, "driver-too-old"),
    # PTX-only support needs the native driver (JIT); minor-version compatibility does not cover it
    ("12.9", "7.5;8.0;8.6;9.0+PTX", "570.86.10", "10.0", False, False, "ptx-needs-native-driver"),
    ("12.8", "7.5;8.0;8.6;9.0+PTX", "570.86.10", "10.0", False, True, "native-driver"),
    ("12.8", "7.5;8.0;8.6;9.0;10.0;12.0", "570.86.10", "7.0", False, False, "no-sass"),
    # the GPU needs a driver branch that knows it (Ada: R520+)
    ("11.8", "3.7;5.0;6.0;7.0;7.5;8.0;8.6;9.0", "515.43.04", "8.9", False, False, "gpu-driver-branch"),
])
def test_verdict_rules(cuda: str, arch: str, driver: str, cc: str, native_only: bool, ok: bool,
                       rule: str) -> None:
    m = load_matrix()
    row = mx.ArchRow("x", cuda, tuple(arch.split(";")), "test")
    v = m.verdict(mx.BuildFacts(cuda, arch=row), mx.TargetFacts(driver=driver, cc=cc),
                  native_only=native_only)
    assert (v.ok, v.rule) == (ok, rule), v.reason
    assert v.reason and all(f.source for f in v.facts)


def test_verdict_for_source_builds_needs_the_target_nvcc() -> None:
    m = load_matrix()
    b = mx.BuildFacts("11.3", source_build=True, label="mmcv-full 1.4.0")
    assert m.verdict(b, mx.TargetFacts(driver="470.57.02", cc="7.0", nvcc="11.3")).ok
    bad = m.verdict(b, mx.TargetFacts(driver="470.57.02", cc="7.0", nvcc="10.2"))
    assert not bad.ok and bad.rule == "nvcc-mismatch"


def test_torch_verdict_for_doctor_and_pack() -> None:
    m = load_matrix()
    # an installed PyPI torch 2.6.0 (CUDA 12.4) on a 12.2 driver: runs through minor-version compatibility
    v = m.torch_verdict("2.6.0", "12.4", mx.TargetFacts(driver="535.104.05", cc="8.0"))
    assert v.ok and v.rule == "minor-version-compat" and v.support == "compat"
    strict = m.torch_verdict("2.6.0", "12.4", mx.TargetFacts(driver="535.104.05", cc="8.0"), native_only=True)
    assert not strict.ok and strict.rule == "driver-too-old"
    assert m.torch_verdict("2.6.0", None, mx.TargetFacts(driver="535.104.05")).rule == "cpu"


def test_mmcv_rows_may_carry_implied_bounds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            fresh_cache: None) -> None:
    """A harvested mmcv row with an `implied` numpy bound reaches the resolution."""
    data = tmp_path / "data"
    shutil.copytree(mx.DATA_DIR, data)
    om = json.loads((data / "openmmlab.json").read_text())
    bound = {"package": "numpy", "spec": "<1.20", "evidence": ["mmcv/x.py:1 np.float"],
             "reason": "test bound", "source": "test", "checked": "2026-12-01"}
    om["mmcv-full"] = [{"version": "1.4.0", "requires": {}, "source": "test", "implied": [bound]}]
    (data / "openmmlab.json").write_text(json.dumps(om))
    monkeypatch.setattr(mx, "DATA_DIR", data)
    from envbuild.resolve import resolve
    from envbuild.target import make_target

    m = mx.load_matrix()
    target = make_target(None, python="3.8", driver="470.57.02", gpu="sm_70", matrix=m)
    res = resolve(["mmcv-full==1.4.0", "torch"], target, m)
    assert res.ok and any(b["spec"] == "<1.20" and b["by"] == "mmcv-full 1.4.0" for b in res.implied)
    bound = SpecifierSet(next(r for r in res.requirements if r.startswith("numpy")).removeprefix("numpy"))
    assert "1.19.5" in bound and "1.20.0" not in bound


def test_names_facts_have_sources_and_dates() -> None:
    raw = json.loads((mx.DATA_DIR / "names.json").read_text())
    rows = [r for key in ("pythons", "conda_to_pypi", "conda_cuda") for r in raw[key]]
    assert rows and all(r.get("source") and r.get("checked") for r in rows)
    names = mx.load_names()
    # the resolver's Python list is the data's, newest first; conda's torch is PyPI's torch
    assert load_matrix().pythons == names.pythons == tuple(r["python"] for r in raw["pythons"])
    assert [Version(p) for p in names.pythons] == sorted((Version(p) for p in names.pythons), reverse=True)
    assert names.conda_to_pypi["pytorch"] == "torch" and names.conda_cuda["cudatoolkit"] is True


def test_a_names_row_without_source_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             fresh_cache: None) -> None:
    path = _broken_copy(tmp_path, monkeypatch, "names", lambda d: d["conda_to_pypi"][1].pop("source"))
    with pytest.raises(DataError) as ei:
        mx.load_names()
    assert ei.value.path == str(path) and ei.value.field == "conda_to_pypi[1].source"


def test_the_default_indexes_are_the_data_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                fresh_cache: None) -> None:
    from envbuild.resolve import resolve
    from envbuild.target import make_target

    def edit(d: dict[str, Any]) -> None:
        d["index_url_default"] = "https://mirror.example/torch-whl"

    _broken_copy(tmp_path, monkeypatch, "torch", edit)
    assert mx.default_indexes()["pytorch"] == "https://mirror.example/torch-whl"
    laptop = make_target(None, python="3.7", driver="470.223.02", gpu="NVIDIA GeForce RTX 3060 Laptop GPU")
    res = resolve(["mmcv-full==1.4.0", "torch"], laptop)
    assert res.ok and res.index_urls and all(u.startswith("https://mirror.example/torch-whl/")
                                             for u in res.index_urls)
    assert res.find_links[0].startswith(mx.default_indexes()["openmmlab"] + "/")
