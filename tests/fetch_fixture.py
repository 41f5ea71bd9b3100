"""Real inputs for fetch/bundle tests: wheels and sdists built here, a local PEP 503 index over HTTP
(with Range support, throttling and a request log), local git repositories and lock directories.
"""

from __future__ import annotations

import hashlib
import html
import io
import json
import os
import random
import re
import subprocess
import tarfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from packaging.utils import canonicalize_name, parse_sdist_filename, parse_wheel_filename
from wheels import write_wheel

__all__ = ["IndexServer", "git_repo", "make_sdist", "make_wheel", "serve", "sha256", "write_lock"]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def make_wheel(
    out: Path,
    name: str,
    version: str,
    tag: str = "py3-none-any",
    *,
    payload: int = 0,
    code: str | None = None,
    seed: int = 0,
) -> Path:
    """A valid, installable wheel; ``payload`` adds that many random (incompressible) bytes."""
    mod = canonicalize_name(name).replace("-", "_")
    init = code or f"__version__ = {version!r}\nTAG = {tag!r}\n"
    files: dict[str, bytes] = {f"{mod}/__init__.py": init.encode()}
    if payload:
        files[f"{mod}/blob.bin"] = random.Random(f"{name}{version}{tag}{seed}").randbytes(payload)
    return write_wheel(out, name, version, files, tag=tag, dist=mod)


def make_sdist(out: Path, name: str, version: str, build_requires: Sequence[str] = ()) -> Path:
    """A setuptools sdist (setup.py + PKG-INFO; a pyproject.toml when ``build_requires``)."""
    out.mkdir(parents=True, exist_ok=True)
    mod = canonicalize_name(name).replace("-", "_")
    stem = f"{mod}-{version}"
    members = {
        f"{stem}/PKG-INFO": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{stem}/setup.py": f"from setuptools import setup\nsetup(name={name!r}, version={version!r}, "
        f"packages=[{mod!r}])\n",
        f"{stem}/{mod}/__init__.py": f"__version__ = {version!r}\n",
    }
    if build_requires:
        members[f"{stem}/pyproject.toml"] = (
            f"[build-system]\nrequires = {json.dumps(list(build_requires))}\n"
            'build-backend = "setuptools.build_meta"\n')
    path = out / f"{stem}.tar.gz"
    with tarfile.open(path, "w:gz") as tf:
        for fn, text in members.items():
            data = text.encode()
            info = tarfile.TarInfo(fn)
            info.size = len(data)
            info.mtime = 0
            tf.addfile(info, io.BytesIO(data))
    return path


@dataclass
class IndexServer:
    """A PEP 503 index of ``root/*.whl|*.tar.gz`` on 127.0.0.1; files under /files/, pages under /simple/."""

    root: Path
    port: int = 0
    # filename -> bytes per second (throttled responses), for kill-midway tests
    slow: dict[str, int] = field(default_factory=dict)
    range_support: bool = True
    log: list[dict[str, Any]] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def simple(self) -> str:
        return f"{self.url}/simple/"

    def file_url(self, filename: str) -> str:
        return f"{self.url}/files/{filename}"

    def requests_for(self, filename: str) -> list[dict[str, Any]]:
        return [e for e in self.log if e["path"] == f"/files/{filename}"]

    def start(self) -> IndexServer:
        srv = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                srv.log.append({"path": self.path, "range": self.headers.get("Range"), "t": time.time()})
                if self.path.startswith("/simple/"):
                    self._simple(self.path[len("/simple/"):].strip("/"))
                elif self.path.startswith("/files/"):
                    self._file(self.path[len("/files/"):])
                else:
                    self._send(404, b"not found")

            def _send(self, code: int, body: bytes, ctype: str = "text/plain",
                      extra: Mapping[str, str] | None = None) -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                for k, v in (extra or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)

            def _simple(self, project: str) -> None:
                files = sorted(p for p in srv.root.iterdir() if p.is_file())
                if not project:
                    names = sorted({_project_of(p.name) for p in files} - {""})
                    body = "".join(f'<a href="{n}/">{n}</a>\n' for n in names)
                    self._send(200, f"<html><body>{body}</body></html>".encode(), "text/html")
                    return
                links = [
                    f'<a href="{srv.file_url(p.name)}#sha256={sha256(p)}">{html.escape(p.name)}</a>'
                    for p in files if _project_of(p.name) == canonicalize_name(project)
                ]
                if not links:
                    self._send(404, b"no such project")
                    return
                self._send(200, ("<html><body>\n" + "\n".join(links) + "\n</body></html>").encode(),
                           "text/html")

            def _file(self, name: str) -> None:
                p = srv.root / name
                if "/" in name or not p.is_file():
                    self._send(404, b"not found")
                    return
                data = p.read_bytes()
                start = 0
                rng = self.headers.get("Range")
                m = re.match(r"bytes=(\d+)-$", rng or "")
                if srv.range_support and m:
                    start = int(m.group(1))
                    if start >= len(data):
                        self._send(416, b"", extra={"Content-Range": f"bytes */{len(data)}"})
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(data) - start))
                self.send_header("Accept-Ranges", "bytes" if srv.range_support else "none")
                self.end_headers()
                rate = srv.slow.get(name)
                body = data[start:]
                try:
                    if not rate:
                        self.wfile.write(body)
                        return
                    step = max(1, rate // 20)
                    for i in range(0, len(body), step):
                        self.wfile.write(body[i:i + step])
                        self.wfile.flush()
                        time.sleep(0.05)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


def _project_of(filename: str) -> str:
    try:
        if filename.endswith(".whl"):
            return str(parse_wheel_filename(filename)[0])
        return str(parse_sdist_filename(filename)[0])
    except Exception:
        return ""


@contextmanager
def serve(root: Path, **kw: Any) -> Iterator[IndexServer]:
    srv = IndexServer(root, **kw).start()
    try:
        yield srv
    finally:
        srv.stop()


def _git(cwd: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.invalid",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.invalid"}
    return subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True,
                          text=True).stdout.strip()


def git_repo(path: Path, name: str = "mypkg", versions: Sequence[str] = ("1.0", "2.0"),
             tag_first: str = "v1.0") -> tuple[Path, list[str]]:
    """A setuptools project with one commit per version; the first carries ``tag_first``.

    The module's ``COMMIT_MARK`` names the version, so a test can tell which commit was built.
    """
    path.mkdir(parents=True)
    mod = canonicalize_name(name).replace("-", "_")
    _git(path, "init", "-q", "-b", "main")
    commits = []
    for i, v in enumerate(versions):
        (path / "pyproject.toml").write_text(
            '[build-system]\nrequires = ["setuptools>=61"]\nbuild-backend = "setuptools.build_meta"\n\n'
            f'[project]\nname = "{name}"\nversion = "{v}"\n\n[tool.setuptools]\npackages = ["{mod}"]\n'
        )
        (path / mod).mkdir(exist_ok=True)
        (path / mod / "__init__.py").write_text(f"__version__ = {v!r}\nCOMMIT_MARK = 'v{v}'\n")
        _git(path, "add", "-A")
        _git(path, "commit", "-q", "-m", f"version {v}")
        commits.append(_git(path, "rev-parse", "HEAD"))
        if i == 0 and tag_first:
            _git(path, "tag", tag_first)
    return path, commits


def write_lock(
    lock_dir: Path,
    artifacts: Sequence[Mapping[str, Any]],
    *,
    name: str = "demo",
    python: str = "3.11",
    pip_platform: str = "manylinux_2_17_x86_64",
    index_urls: Sequence[str] = (),
    conda_subdir: str = "linux-64",
) -> Path:
    """A lock directory in the CONTRACTS format (envbuild.lock.json + requirements.txt)."""
    lock_dir.mkdir(parents=True, exist_ok=True)
    arts = []
    for a in artifacts:
        d = {"build": None, "commit": None, "subdir": None, "requires": [], "sha256": "", "filename": "", **a}
        arts.append(d)
    arts.sort(key=lambda d: (d["kind"], d["name"]))
    data = {
        "schema_version": 1,
        "name": name,
        "generated_by": "tests",
        "command": "tests",
        "spec_hash": hashlib.sha256(json.dumps(arts, sort_keys=True).encode()).hexdigest(),
        "spec": {},
        "manager": "venv",
        "python": python,
        "platform": {"os": "linux", "arch": "x86_64", "pip_platform": pip_platform,
                     "conda_subdir": conda_subdir},
        "target": {},
        "resolution": {},
        "index_urls": list(index_urls),
        "find_links": [],
        "conda_channels": [],
        "artifacts": arts,
    }
    (lock_dir / "envbuild.lock.json").write_text(json.dumps(data, indent=2))
    lines = [f"{a['name']}=={a['version']} --hash=sha256:{a['sha256']}" for a in arts
             if a["kind"] in ("wheel", "sdist")]
    (lock_dir / "requirements.txt").write_text("".join(f"{x}\n" for x in lines))
    return lock_dir


def wheel_artifact(srv: IndexServer, path: Path, **extra: Any) -> dict[str, Any]:
    """The lock entry for a file served by ``srv``."""
    if path.name.endswith(".whl"):
        n, v, _, _ = parse_wheel_filename(path.name)
        kind = "wheel"
    else:
        n, v = parse_sdist_filename(path.name)
        kind = "sdist"
    return {"name": str(n), "version": str(v), "kind": kind, "url": srv.file_url(path.name),
            "sha256": sha256(path), "filename": path.name, **extra}
