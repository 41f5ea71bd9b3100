"""The harvester end to end against stand-in indexes on 127.0.0.1 (PEP 503 HTML, PEP 691 JSON, PEP 658
metadata, Range requests) serving small real wheels built here; one network test reads real PyPI."""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from e2e import envbuild
from packaging.specifiers import SpecifierSet
from pypi_fixture import make_wheel

from envbuild import harvest, matrix
from envbuild.tools.pypi import IndexClient

PEP691 = "application/vnd.pypi.simple.v1+json"
LINUX311 = "cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64"
LINUX38 = "cp38-cp38-manylinux1_x86_64"

# An mmdet 2.x-style __init__: its own list-based digit_version, an INCLUSIVE upper bound.
MMDET_INIT = '''
import mmcv
from .version import __version__

def digit_version(version_str):
    digit_version = []
    for x in version_str.split('.'):
        if x.isdigit():
            digit_version.append(int(x))
        elif x.find('rc') != -1:
            patch_version = x.split('rc')
            digit_version.append(int(patch_version[0]) - 1)
            digit_version.append(int(patch_version[1]))
    return digit_version

mmcv_minimum_version = '{lo}'
mmcv_maximum_version = '{hi}'
mmcv_version = digit_version(mmcv.__version__)

assert (mmcv_version >= digit_version(mmcv_minimum_version)
        and mmcv_version <= digit_version(mmcv_maximum_version)), 'incompatible'
'''
# An mmseg 1.x-style __init__: mmengine's digit_version, an EXCLUSIVE upper bound in a chain.
MMSEG_INIT = '''
import mmcv
import mmengine
from mmengine.utils import digit_version

MMCV_MIN = '2.0.0rc4'
MMCV_MAX = '2.2.0'
MMENGINE_MIN = '0.5.0'
MMENGINE_MAX = '1.0.0'
mmcv_min_version = digit_version(MMCV_MIN)
mmcv_max_version = digit_version(MMCV_MAX)
mmcv_version = digit_version(mmcv.__version__)
mmengine_version = digit_version(mmengine.__version__)
assert (mmcv_min_version <= mmcv_version < mmcv_max_version)
assert (digit_version(MMENGINE_MIN) <= mmengine_version < digit_version(MMENGINE_MAX))
'''
USES_NP_LONG = "import numpy as np\n\n\ndef f(x):\n    return x.astype(np.long)\n"
USES_ALIAS = "import numpy as onp\nimport jax.numpy as np\n\nA = onp.float\nB = np.float\n"


def _add_files(whl: Path, files: dict[str, str]) -> Path:
    """Add or replace modules in a wheel made by make_wheel (RECORD is not used by the harvester)."""
    import zipfile

    with zipfile.ZipFile(whl) as zf:
        old = {n: zf.read(n) for n in zf.namelist() if n not in files}
    with zipfile.ZipFile(whl, "w") as zf:
        for p, data in [*old.items(), *((p, t.encode()) for p, t in files.items())]:
            zf.writestr(p, data)
    return whl


class _Host:
    """A document root served with PEP 691 negotiation, PEP 658 .metadata and HTTP Range."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.projects: dict[str, dict[str, list[Path]]] = {}
        self.url = ""
        self.hits: list[str] = []
        self.flat: dict[str, list[Path]] = {}  # find-links pages (no hashes, like OpenMMLab's)
        self.yanked: set[str] = set()  # file names served with PEP 592 "yanked"

    def publish(self, index: str, files: list[Path], *, metadata: bool = True) -> None:
        for f in files:
            name = re.sub(r"[-_.]+", "-", f.name.split("-")[0]).lower()
            self.projects.setdefault(index, {}).setdefault(name, []).append(f)
            if metadata:  # PEP 658: the wheel's METADATA next to it
                import zipfile

                with zipfile.ZipFile(f) as zf:
                    meta = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
                    (f.parent / (f.name + ".metadata")).write_bytes(zf.read(meta))

    def page(self, path: str, want_json: bool) -> tuple[bytes, str] | None:
        if path in self.flat:
            links = "".join(f'<a href="/files/{f.name}">{f.name}</a><br>\n' for f in self.flat[path])
            return f"<html><body>{links}</body></html>".encode(), "text/html"
        parts = path.strip("/").split("/")
        index, project = "/".join(parts[:-1]), parts[-1]
        files = self.projects.get(index, {}).get(project)
        if files is None:
            return None
        if want_json:
            body = {"meta": {"api-version": "1.1"}, "name": project, "files": [
                {"filename": f.name, "url": f"/files/{f.name}",
                 "hashes": {"sha256": hashlib.sha256(f.read_bytes()).hexdigest()},
                 "upload-time": "2024-01-02T03:04:05Z", "size": f.stat().st_size,
                 "yanked": f.name in self.yanked}
                for f in files]}
            return json.dumps(body).encode(), PEP691
        links = "".join(f'<a href="/files/{f.name}#sha256={hashlib.sha256(f.read_bytes()).hexdigest()}">'
                        f"{f.name}</a>\n" for f in files)
        return f"<html><body>{links}</body></html>".encode(), "text/html"


@contextlib.contextmanager
def _serving(host: _Host) -> Iterator[str]:
    class H(BaseHTTPRequestHandler):
        def log_message(self, *a: Any) -> None:
            pass

        def do_GET(self) -> None:
            host.hits.append(self.path)
            if self.path.startswith("/files/"):
                f = host.root / self.path[len("/files/"):]
                if not f.is_file():
                    return self._send(404, b"", "text/plain")
                data = f.read_bytes()
                rng = self.headers.get("Range")
                if rng:
                    m = re.fullmatch(r"bytes=(\d*)-(\d*)", rng)
                    assert m
                    lo, hi = m.groups()
                    start = len(data) - int(hi) if not lo else int(lo)
                    end = len(data) - 1 if not lo or not hi else int(hi)
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
                    body = data[start:end + 1]
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return None
                return self._send(200, data, "application/octet-stream")
            got = host.page(self.path, PEP691 in self.headers.get("Accept", "").split(",")[0])
            if got is None:
                return self._send(404, b"", "text/plain")
            return self._send(200, *got)

        def _send(self, code: int, body: bytes, ctype: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    host.url = f"http://127.0.0.1:{srv.server_address[1]}"
    try:
        yield host.url
    finally:
        srv.shutdown()
        srv.server_close()


@pytest.fixture
def stand_in(tmp_path: Path) -> Iterator[_Host]:
    files = tmp_path / "files"
    h = _Host(files)
    w = lambda *a, **kw: make_wheel(files, *a, **kw)  # noqa: E731
    mmdet = _add_files(w("mmdet", "2.14.0"), {
        "mmdet/__init__.py": MMDET_INIT.format(lo="1.3.8", hi="1.4.0"),
        "mmdet/datasets/dbsampler.py": USES_NP_LONG, "mmdet/core/alias.py": USES_ALIAS})
    mmdet_two_part = _add_files(w("mmdet", "2.4.0"), {
        "mmdet/__init__.py": MMDET_INIT.format(lo="1.1.1", hi="1.2")})
    mmseg = _add_files(w("mmsegmentation", "1.2.2", module="mmseg"), {"mmseg/__init__.py": MMSEG_INIT})
    h.publish("simple", [mmdet, mmdet_two_part, mmseg])
    h.publish("simple", [
        w("torch", "1.7.0", tag=LINUX38, requires=["typing-extensions"]),
        w("torch", "2.1.0", tag=LINUX311,
          requires=['nvidia-cuda-runtime-cu12==12.1.105; platform_system == "Linux"', "filelock"]),
        w("torch", "2.1.0", tag="cp311-cp311-win_amd64"),
        yanked := w("torch", "1.8.1", tag=LINUX38),
    ])
    h.yanked.add(yanked.name)
    # torchvision without PEP 658 files: their metadata is read from the wheel by Range requests
    h.publish("simple", [w("torchvision", "0.8.0", tag=LINUX38, requires=["torch==1.7.0"]),
                         w("torchvision", "0.8.1", tag=LINUX38, requires=["torch==1.7.0", "numpy"]),
                         w("torchvision", "0.16.0", tag=LINUX311, requires=["torch==2.1.0"])], metadata=False)
    h.publish("simple", [w("torchaudio", "0.7.0", tag=LINUX38, requires=["torch==1.7.0"])])
    h.publish("simple", [w("numpy", "1.26.3", tag=LINUX311), w("numpy", "1.26.4", tag=LINUX311),
                         w("numpy", "1.26.4", tag="cp312-cp312-manylinux_2_17_x86_64")])
    h.publish("simple", [w("cupy_cuda12x", "13.0.0", tag=LINUX311,
                           requires=["numpy<1.29,>=1.22", "fastrlock"],
                           requires_python=">=3.9")])
    # download.pytorch.org/whl/cu113 stand-in: the unverified 1.10.0 cu113 build exists
    h.publish("whl/cu113", [w("torch", "1.10.0+cu113", tag="cp38-cp38-linux_x86_64")])
    # download.openmmlab.com stand-in: one find-links page, in mim's torchX.Y.0 spelling
    h.flat["/mmcv/dist/cu113/torch1.10.0/index.html"] = [
        w("mmcv_full", "1.4.0", tag="cp38-cp38-manylinux1_x86_64"),
        w("mmcv_full", "1.4.1", tag="cp38-cp38-manylinux1_x86_64"),
        w("mmcv_full", "1.4.1", tag="cp38-cp38-win_amd64"), w("mmcv", "1.4.1", tag=LINUX38)]
    with _serving(h):
        yield h


def _endpoints(h: _Host) -> harvest.Endpoints:
    return harvest.Endpoints(pypi=f"{h.url}/simple", pytorch=f"{h.url}/whl",
                             openmmlab=f"{h.url}/mmcv/dist")


def _digit_version_of(init: str) -> Any:
    ns: dict[str, Any] = {}
    src = init.split("def digit_version", 1)[1].split("\nmmcv_minimum_version")[0]
    exec("def digit_version" + src, ns)
    return ns["digit_version"]


def test_update_end_to_end_offline(stand_in: _Host, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ddir = tmp_path / "knowledge"
    monkeypatch.setenv("ENVBUILD_DATA_DIR", str(ddir))
    seen: list[str] = []
    real_get = IndexClient._get
    monkeypatch.setattr(IndexClient, "_get", lambda self, url, headers=None: (
        seen.append(url), real_get(self, url, headers))[1])
    # a day after the bundled data was checked: the cache is newer, so it is read
    bundled_day = max(matrix.load_table(n, bundled=True)["checked"] for n in matrix.TABLES)
    today = (dt.date.fromisoformat(bundled_day) + dt.timedelta(days=1)).isoformat()
    rep = harvest.update(endpoints=_endpoints(stand_in), today=today)
    # no request left 127.0.0.1
    assert seen and all(u.startswith(stand_in.url) for u in seen)
    status = {r.source: r.status for r in rep.results}
    assert status == dict.fromkeys(harvest.SOURCES, "refreshed")

    matrix.load_table.cache_clear()
    matrix.load_matrix.cache_clear()
    try:
        m = matrix.load_matrix()
        om = matrix.load_table("openmmlab")
        assert matrix.data_path("openmmlab") == (ddir / "facts" / "openmmlab.json", "user cache")
        # inclusive bound read from the package: mmcv-full 1.4.0 is accepted, 1.4.1 is not
        row = next(r for r in om["mmdet"] if r["version"] == "2.14.0")
        spec = SpecifierSet(m.mm_package("mmdet", "2.14.0").requires["mmcv-full"])  # type: ignore[union-attr]
        assert "1.4.0" in spec and "1.4.1" not in spec and "1.3.7" not in spec
        assert row["compare"] == "digit_version" and row["checked"] == today
        assert row["sha256"] in matrix._src(row).split("; ")[0]
        (imp,) = row["implied"]
        assert imp["package"] == "numpy" and "1.24.0" not in SpecifierSet(imp["spec"])
        assert "mmdet/datasets/dbsampler.py:5 np.long" in imp["evidence"]
        assert "mmdet/core/alias.py:4 onp.float" in imp["evidence"]
        assert not any("alias.py:5" in e for e in imp["evidence"])  # jax.numpy's np.float is not numpy
        # two-part maximum: the package's own digit_version rejects 1.2.0; the written spec agrees
        own = _digit_version_of(MMDET_INIT)
        two = SpecifierSet(m.mm_package("mmdet", "2.4.0").requires["mmcv-full"])  # type: ignore[union-attr]
        for v in ("1.1.1", "1.1.5", "1.2.0", "1.2.1", "1.3.0"):
            assert (v in two) == (own("1.1.1") <= own(v) <= own("1.2")), v
        # exclusive bound, chain compare, mmengine bound too
        seg = m.mm_package("mmsegmentation", "1.2.2")
        assert seg is not None and SpecifierSet(seg.requires["mmcv"]) == SpecifierSet(">=2.0.0rc4,<2.2.0")
        assert SpecifierSet(seg.requires["mmengine"]) == SpecifierSet(">=0.5.0,<1.0.0")

        t17 = m.torch_release("1.7.0")
        assert t17 is not None
        raw17 = next(r for r in matrix.load_table("torch")["releases"] if r["torch"] == "1.7.0")
        assert raw17["torchvision_compatible"] == ["0.8.0", "0.8.1"]
        assert raw17["torchaudio_compatible"] == ["0.7.0"]
        assert "range requests" in raw17["compatible_source"] or "PEP 658" in raw17["compatible_source"]
        raw21 = next(r for r in matrix.load_table("torch")["releases"] if r["torch"] == "2.1.0")
        assert raw21["pypi_default_wheel_cuda"] == "12.1" and raw21["python"] == ["3.11"]
        assert "nvidia-cuda-runtime-cu12==12.1.105" in raw21["pypi_default_wheel_source"]
        raw181 = next(r for r in matrix.load_table("torch")["releases"] if r["torch"] == "1.8.1")
        assert raw181.get("yanked") is True and "yanked" not in raw17
        t110 = m.torch_release("1.10.0")
        assert t110 is not None and "cu113" in t110.variants and "cu113" not in t110.unverified
        raw110 = next(r for r in matrix.load_table("torch")["releases"] if r["torch"] == "1.10.0")
        assert raw110["variants_python"] == {"cu113": ["3.8"]}

        assert m.mmcv_wheels("mmcv-full", "11.3", "1.10.0") == ["1.4.1", "1.4.0"]
        raw_mmcv = next(r for r in matrix.load_table("mmcv")["wheels"]
                        if (r["package"], r["cuda"], r["torch_series"]) == ("mmcv-full", "11.3", "1.10.x"))
        assert raw_mmcv["index_source"].endswith("/mmcv/dist/cu113/torch1.10.0/index.html")
        np126 = next(r for r in matrix.load_table("numpy")["releases"] if r["numpy"] == "1.26")
        assert np126["latest_patch"] == "1.26.4" and np126["python_wheels"] == ["3.11", "3.12"]
        cu = next(r for r in matrix.load_table("cupy")["releases"] if r["cupy"] == "13.0.0")
        assert SpecifierSet(cu["numpy"]) == SpecifierSet(">=1.22,<1.29") and cu["checked"] == today
    finally:
        matrix.load_table.cache_clear()
        matrix.load_matrix.cache_clear()

    # the CLI sees the user cache; bundled files it did not refresh stay bundled
    st = json.loads(envbuild("data", "status", "--json", cwd=tmp_path).stdout)
    origin = {r["file"]: r["origin"] for r in st["rows"] if r["source"] == "(file)"}
    assert origin["openmmlab.json"] == "user cache" and origin["nvidia.json"] == "bundled"
    srcs = {r["source"]: r for r in st["rows"]}
    assert srcs["pypi-openmmlab"]["checked"] == today
    assert srcs["pypi-openmmlab"]["status"] == "refreshed"


def test_second_update_reuses_artifacts(stand_in: _Host, tmp_path: Path) -> None:
    ep = _endpoints(stand_in)
    ddir = tmp_path / "k"
    harvest.update(["pypi-openmmlab"], endpoints=ep, data_dir=ddir)
    n_files = sum(1 for p in stand_in.hits if p.startswith("/files/"))
    assert len(list((ddir / "artifacts").iterdir())) == 3
    stand_in.hits.clear()
    harvest.update(["pypi-openmmlab"], endpoints=ep, data_dir=ddir)
    assert n_files == 3 and not [p for p in stand_in.hits if p.startswith("/files/")]
    # wheel metadata (PEP 658 or range-read) is kept by the wheel's sha256 too
    harvest.update(["pypi-torch"], endpoints=ep, data_dir=ddir)
    assert [p for p in stand_in.hits if p.startswith("/files/")]
    stand_in.hits.clear()
    harvest.update(["pypi-torch"], endpoints=ep, data_dir=ddir)
    assert not [p for p in stand_in.hits if p.startswith("/files/")]


def test_unreachable_source_keeps_old_facts(stand_in: _Host, tmp_path: Path) -> None:
    ep = harvest.Endpoints(pypi=f"{stand_in.url}/simple", pytorch="http://127.0.0.1:9/whl",
                           openmmlab="http://127.0.0.1:9/mmcv/dist")
    ddir = tmp_path / "k"
    rep = harvest.update(["pypi-torch", "pytorch-index", "openmmlab-index"], endpoints=ep, data_dir=ddir)
    by = {r.source: r for r in rep.results}
    assert by["pypi-torch"].status == "refreshed"
    assert by["pytorch-index"].status == by["openmmlab-index"].status == "unreachable-kept"
    assert "127.0.0.1:9" in by["pytorch-index"].detail
    torch = json.loads((ddir / "facts" / "torch.json").read_text())
    bundled = matrix.load_table("torch", bundled=True)
    # the index's facts are the bundled ones, untouched; the PyPI facts are new
    known = [b["torch"] for b in bundled["releases"]]
    assert [r["cuda_variants_pip_linux"] for r in torch["releases"] if r["torch"] in known] == [
        b["cuda_variants_pip_linux"] for b in bundled["releases"]]
    assert torch["harvested"]["pytorch-index"]["status"] == "unreachable-kept"
    assert not (ddir / "facts" / "mmcv.json").exists()  # nothing refreshed for it: bundled stays in use

    # nothing reachable: exit 3 and the cache is left exactly as it was
    before = {p.name: p.read_bytes() for p in (ddir / "facts").iterdir()}
    dead = harvest.Endpoints(pypi="http://127.0.0.1:9/simple", pytorch=ep.pytorch, openmmlab=ep.openmmlab)
    with pytest.raises(harvest.Unreachable):
        harvest.update(["pypi-numpy", "pytorch-index"], endpoints=dead, data_dir=ddir)
    assert {p.name: p.read_bytes() for p in (ddir / "facts").iterdir()} == before
    assert not [p for p in ddir.iterdir() if p.name.startswith(".")]  # no temp dir left behind


def test_cli_rejects_unknown_source(tmp_path: Path) -> None:
    proc = envbuild("data", "update", "--only", "pypi-everything", cwd=tmp_path, ok=False)
    assert proc.returncode == 2 and "--only" in proc.stderr and "pypi-torch" in proc.stderr


def test_numpy_scan_bounds() -> None:
    only_bool = harvest.numpy_use([("p/a.py", "import numpy\nx = numpy.bool\n")])
    assert only_bool.spec is not None
    s = SpecifierSet(only_bool.spec)
    assert "1.23.5" in s and "1.24.0" not in s and "1.26.4" not in s
    assert "2.0.0" in s  # np.bool is back in 2.0
    two = harvest.numpy_use([("p/b.py", "import numpy as np\nnp.asfarray([1])\nnp.NaN\n")])
    assert two.spec == "<2.0" and two.evidence == ("p/b.py:2 np.asfarray", "p/b.py:3 np.NaN")
    assert harvest.numpy_use([("p/c.py", "import numpy as np\nnp.nan\n")]).spec is None


@pytest.mark.network
@pytest.mark.slow
def test_real_openmmlab_wheels_from_pypi(tmp_path: Path) -> None:
    """The BEVFormer stack's own checks, read from PyPI: all three accept mmcv-full 1.4.0."""
    bundled = matrix.load_table("openmmlab", bundled=True)
    table = {k: [r for r in bundled[k] if r["version"] == v] for k, v in (
        ("mmdet", "2.14.0"), ("mmsegmentation", "0.14.1"), ("mmdet3d", "0.17.1"))}
    client = IndexClient(artifacts=tmp_path / "artifacts")
    harvest.harvest_openmmlab(client, harvest.Endpoints(), table, "2026-12-01", new_releases=False)
    for key in ("mmdet", "mmsegmentation", "mmdet3d"):
        (row,) = table[key]
        assert "1.4.0" in SpecifierSet(row["requires"]["mmcv-full"]), (key, row["requires"])
        assert matrix._src(row).startswith("PyPI https://files.pythonhosted.org/")
    d3 = table["mmdet3d"][0]
    assert "2.14.0" in SpecifierSet(d3["requires"]["mmdet"]) and "0.14.1" in SpecifierSet(
        d3["requires"]["mmsegmentation"])
    (imp,) = d3["implied"]
    assert "1.24.0" not in SpecifierSet(imp["spec"])
    assert re.match(r"mmdet3d/\S+\.py:\d+ np\.\w+", imp["evidence"][0])


def test_older_cache_does_not_override_bundled(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENVBUILD_DATA_DIR", str(tmp_path))
    bundled = matrix.load_table("numpy", bundled=True)
    facts = tmp_path / "facts"
    facts.mkdir()
    stale = {**bundled, "checked": "2020-01-01", "releases": bundled["releases"][:1]}
    (facts / "numpy.json").write_text(json.dumps(stale, indent=1))
    assert matrix.data_path("numpy")[1] == "bundled"
    newer = {**stale, "checked": "2999-01-01"}
    (facts / "numpy.json").write_text(json.dumps(newer, indent=1))
    assert matrix.data_path("numpy") == (facts / "numpy.json", "user cache")
    (facts / "numpy.json").write_text('{"schema_version": 1, "checked": "2999-01-01", "description": "x"}')
    matrix.load_table.cache_clear()
    matrix.load_matrix.cache_clear()
    try:
        with pytest.raises(matrix.DataError) as exc:
            matrix.load_matrix()
        text = exc.value.render()
        assert str(facts / "numpy.json") in text and "envbuild data update" in text
    finally:
        matrix.load_table.cache_clear()
        matrix.load_matrix.cache_clear()
