"""Small REAL wheels and sdists, and PEP 503 indexes served on 127.0.0.1, for offline lock tests.

``make_wheel`` writes a spec-conformant wheel (dist-info with METADATA, WHEEL and a RECORD of
sha256s) that pip really installs; ``serve`` runs ``http.server`` in a thread.  The layout
mimics the real hosts so the same URL shapes are exercised::

    /simple/<project>/                      PyPI (PEP 503 pages, #sha256= fragments)
    /whl/cu113/<project>/                   download.pytorch.org/whl/cu113
    /mmcv/dist/cu113/torch1.10.0/index.html OpenMMLab find-links page (no hashes, like the real one)
    /files/...                              the files themselves

Paths under ``/private/`` need HTTP basic auth ``user:s3cret`` (to test credential handling).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import html
import io
import tarfile
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from packaging.utils import canonicalize_name
from wheels import write_wheel

__all__ = ["Index", "make_sdist", "make_wheel", "seed_indexes", "serve", "serving"]

AUTH = ("user", "s3cret")


def make_wheel(out_dir: Path, name: str, version: str, *, tag: str = "py3-none-any",
               requires: Sequence[str] = (), requires_python: str | None = None,
               module: str | None = None) -> Path:
    """Write ``{name}-{version}-{tag}.whl`` with an importable module that knows its version."""
    mod = module or name.replace("-", "_").lower()
    meta = [f"Requires-Python: {requires_python}"] if requires_python else []
    meta += [f"Requires-Dist: {r}" for r in requires]
    init = {f"{mod}/__init__.py": f"__version__ = {version!r}\n".encode()}
    return write_wheel(out_dir, name, version, init, tag=tag, metadata=meta,
                       dist_info={"top_level.txt": f"{mod}\n".encode()}, compress=True)


def make_sdist(out_dir: Path, name: str, version: str, *, requires: Sequence[str] = ()) -> Path:
    """Write ``{name}-{version}.tar.gz`` with a setuptools ``setup.py`` (deterministic bytes)."""
    base = f"{name.replace('-', '_')}-{version}"
    mod = name.replace("-", "_").lower()
    setup = (f"from setuptools import setup\nsetup(name={name!r}, version={version!r}, "
             f"packages=[{mod!r}], install_requires={list(requires)!r})\n")
    members = {
        f"{base}/setup.py": setup.encode(),
        f"{base}/{mod}/__init__.py": f"__version__ = {version!r}\n".encode(),
        f"{base}/PKG-INFO": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode(),
    }
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tf:
        for p, d in members.items():
            ti = tarfile.TarInfo(p)
            ti.size, ti.mtime, ti.mode = len(d), 0, 0o644
            tf.addfile(ti, io.BytesIO(d))
    import gzip

    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{base}.tar.gz"
    path.write_bytes(gzip.compress(raw.getvalue(), mtime=0))
    return path


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@dataclass
class Index:
    """A document root with PEP 503 indexes and flat find-links pages; ``url`` once served."""

    root: Path
    url: str = ""
    _projects: dict[str, dict[str, list[Path]]] = field(default_factory=dict)

    def add(self, index: str, files: Sequence[Path]) -> None:
        """Publish files (already under ``root/files``) in the PEP 503 index at ``/index/``."""
        proj = self._projects.setdefault(index, {})
        for f in files:
            name = f.name.split("-")[0]
            proj.setdefault(str(canonicalize_name(name)), []).append(f)
        top = self.root / index
        for project, fs in proj.items():
            links = "".join(
                f'<a href="{html.escape(self._href(top / project, f))}#sha256={_sha(f)}">{f.name}</a><br/>\n'
                for f in sorted(fs)
            )
            page = top / project / "index.html"
            page.parent.mkdir(parents=True, exist_ok=True)
            page.write_text(f"<!DOCTYPE html><html><body>\n{links}</body></html>\n")
        listing = "".join(f'<a href="{p}/">{p}</a><br/>\n' for p in sorted(proj))
        (top / "index.html").write_text(f"<!DOCTYPE html><html><body>\n{listing}</body></html>\n")

    def add_find_links(self, page: str, files: Sequence[Path], *, hashes: bool = False) -> None:
        """Write a flat HTML page of links (like OpenMMLab's), hashes omitted unless asked."""
        target = self.root / page
        target.parent.mkdir(parents=True, exist_ok=True)
        links = "".join(
            f'<a href="{html.escape(self._href(target.parent, f))}'
            f'{"#sha256=" + _sha(f) if hashes else ""}">{f.name}</a><br>\n'
            for f in sorted(files)
        )
        target.write_text(f"<html><body>\n{links}</body></html>\n")

    def _href(self, page_dir: Path, f: Path) -> str:
        import os

        return os.path.relpath(f, page_dir)

    def file(self, name: str) -> Path:
        """Where a file to publish should be written."""
        d = self.root / "files"
        d.mkdir(parents=True, exist_ok=True)
        return d / name


class _Handler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # quiet test output
        pass

    def do_GET(self) -> None:
        if self.path.startswith("/private/"):
            want = "Basic " + base64.b64encode(f"{AUTH[0]}:{AUTH[1]}".encode()).decode()
            if self.headers.get("Authorization") != want:
                self.send_response(401)
                self.send_header("WWW-Authenticate", 'Basic realm="test"')
                self.end_headers()
                return
            self.path = self.path[len("/private"):]
        super().do_GET()


@contextlib.contextmanager
def serving(index: Index) -> Iterator[str]:
    """Serve ``index.root`` on 127.0.0.1 (a thread); sets and yields ``index.url``."""
    root = str(index.root)

    class H(_Handler):
        def __init__(self, *a: object, **kw: object) -> None:
            super().__init__(*a, directory=root, **kw)  # type: ignore[arg-type]

    srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    index.url = f"http://127.0.0.1:{srv.server_address[1]}"
    try:
        yield index.url
    finally:
        srv.shutdown()
        srv.server_close()


@pytest.fixture
def serve() -> Iterator[Callable[[Index], str]]:
    """Yield ``start(index) -> base URL``; servers stop at teardown."""
    with contextlib.ExitStack() as stack:
        yield lambda index: stack.enter_context(serving(index))


# The seed-laptop stack (SCENARIOS.md A), in miniature: same names, versions and index shapes.
CP37 = "cp37-cp37m-manylinux_2_17_x86_64.manylinux2014_x86_64"


def seed_indexes(root: Path) -> Index:
    """Build PyPI + PyTorch cu113 + OpenMMLab stand-ins holding the seed stack's packages."""
    idx = Index(root)
    f = idx.file
    d = f("x").parent
    pypi = [
        make_wheel(d, "numpy", "1.19.5", tag="cp37-cp37m-manylinux2010_x86_64"),
        make_wheel(d, "numpy", "1.19.5", tag="cp38-cp38-manylinux2010_x86_64"),
        make_wheel(d, "numpy", "1.19.5", tag="cp37-cp37m-win_amd64"),
        make_wheel(d, "numpy", "1.21.6", tag=CP37),
        make_wheel(d, "six", "1.16.0", tag="py2.py3-none-any"),
        make_wheel(d, "typing_extensions", "4.7.1", tag="py3-none-any"),
        make_wheel(d, "fastrlock", "0.8.2", tag=CP37),
        make_wheel(d, "terminaltables", "3.1.10", tag="py2.py3-none-any"),
        make_wheel(d, "prettytable", "2.5.0", tag="py3-none-any"),
        make_wheel(d, "mmdet", "2.19.0", requires=["numpy", "six", "terminaltables"]),
        make_wheel(d, "mmsegmentation", "0.20.0", requires=["numpy", "prettytable"]),
        make_wheel(d, "cupy_cuda113", "10.6.0", tag=CP37, requires=["numpy<1.25,>=1.18", "fastrlock>=0.5"]),
        make_sdist(d, "mmcv-full", "1.4.0", requires=["addict", "numpy"]),
        make_wheel(d, "addict", "2.4.0"),
        make_wheel(d, "plyfile", "0.7.4", requires=["numpy>=1.11"]),
        make_sdist(d, "mmdet3d", "0.17.3", requires=["numpy<1.20", "plyfile"]),
        # mmdet3d 0.17.3's own runtime requirements (requirements/runtime.txt), as tiny wheels.
        make_wheel(d, "lyft_dataset_sdk", "0.0.8"),
        make_wheel(d, "networkx", "2.2", tag="py2.py3-none-any"),
        make_wheel(d, "numba", "0.48.0", tag="cp37-cp37m-manylinux1_x86_64", requires=["numpy>=1.15"]),
        make_wheel(d, "nuscenes_devkit", "1.1.9"),
        make_wheel(d, "scikit_image", "0.19.3", tag=CP37, requires=["numpy>=1.17.0"], module="skimage"),
        make_wheel(d, "tensorboard", "2.11.2"),
        make_wheel(d, "trimesh", "2.35.39"),
    ]
    torch = [
        make_wheel(d, "torch", "1.10.0+cu113", tag="cp37-cp37m-linux_x86_64", requires=["typing-extensions"]),
        make_wheel(d, "torch", "1.10.0+cu113", tag="cp38-cp38-linux_x86_64", requires=["typing-extensions"]),
        make_wheel(d, "torch", "1.10.0+cu113", tag="cp37-cp37m-win_amd64", requires=["typing-extensions"]),
        # The real PyTorch index also carries some general packages, in fewer versions.
        make_wheel(d, "numpy", "1.21.6", tag=CP37),
    ]
    mmcv = [
        make_wheel(d, "mmcv_full", "1.4.0", tag="cp37-cp37m-manylinux1_x86_64", requires=["addict", "numpy"]),
        make_wheel(d, "mmcv_full", "1.4.0", tag="cp38-cp38-manylinux1_x86_64", requires=["addict", "numpy"]),
    ]
    idx.add("simple", pypi)
    idx.add("whl/cu113", torch)
    idx.add_find_links("mmcv/dist/cu113/torch1.10.0/index.html", mmcv)
    idx.add_find_links("mmcv/dist/cu113/torch1.10/index.html", mmcv)  # both spellings are served
    return idx
