"""Adapter for package indexes over HTTP: PEP 691 JSON / PEP 503 HTML pages, PEP 658 metadata, files.

Only this module talks HTTP for the harvester.  Every request has a connect and a read timeout; a
host that cannot be reached raises ``Unreachable`` (the harvester keeps that source's old facts).
Downloaded artifacts are checked against the index's sha256 and kept in ``artifacts/<sha256>`` so
each release file is fetched once.
"""

from __future__ import annotations

import hashlib
import html.parser
import io
import os
import re
import tempfile
import zipfile
from dataclasses import dataclass
from email.message import Message
from email.parser import HeaderParser
from pathlib import Path
from typing import Any
from urllib.parse import urldefrag, urljoin

from envbuild.errors import FetchError, HashMismatch

__all__ = ["DistFile", "IndexClient", "Unreachable", "parse_links"]

PEP691 = "application/vnd.pypi.simple.v1+json"
TIMEOUT = (5.0, 60.0)  # connect, read (seconds)


class Unreachable(FetchError):
    """An index or file host did not answer (DNS, connect, timeout, 5xx)."""


@dataclass(frozen=True)
class DistFile:
    filename: str
    url: str
    sha256: str | None
    requires_python: str | None = None
    yanked: bool = False
    upload_time: str | None = None  # ISO 8601 (PEP 700), None on HTML pages
    metadata_sha256: str | None = None  # PEP 658/714 hash of the .metadata file, when announced
    size: int | None = None


class _Links(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.anchors: list[dict[str, str | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self.anchors.append(dict(attrs))


def parse_links(text: str, base_url: str) -> list[DistFile]:
    """Files of a PEP 503 page or a flat find-links page (hash from the ``#sha256=`` fragment)."""
    p = _Links()
    p.feed(text)
    out = []
    for a in p.anchors:
        href = a.get("href")
        if not href:
            continue
        url, frag = urldefrag(urljoin(base_url, href))
        name = url.rsplit("/", 1)[-1]
        if not re.search(r"\.(whl|tar\.gz|zip|tar\.bz2)$", name):
            continue
        sha = frag.split("=", 1)[1] if frag.startswith("sha256=") else None
        meta = a.get("data-core-metadata") or a.get("data-dist-info-metadata")
        msha = meta.split("=", 1)[1] if meta and meta.startswith("sha256=") else None
        rp = a.get("data-requires-python")
        out.append(DistFile(name, url, sha, requires_python=html.unescape(rp) if rp else None,
                            yanked="data-yanked" in a, metadata_sha256=msha))
    return out


def _from_json(data: dict[str, Any], base_url: str) -> list[DistFile]:
    out = []
    for f in data.get("files", []):
        meta = f.get("core-metadata", f.get("data-dist-info-metadata"))
        msha = meta.get("sha256") if isinstance(meta, dict) else None
        out.append(DistFile(f["filename"], urljoin(base_url, f["url"]), (f.get("hashes") or {}).get("sha256"),
                            requires_python=f.get("requires-python"), yanked=bool(f.get("yanked")),
                            upload_time=f.get("upload-time"), metadata_sha256=msha,
                            size=f.get("size")))
    return out


class IndexClient:
    """GET pages, metadata and files from one or more index hosts (requests, pooled, with timeouts)."""

    def __init__(self, artifacts: Path | None = None, timeout: tuple[float, float] = TIMEOUT) -> None:
        import requests
        from requests.adapters import HTTPAdapter

        self.timeout = timeout
        self.artifacts = artifacts
        self.session = requests.Session()
        self.session.trust_env = True  # honour the user's proxy settings
        adapter = HTTPAdapter(pool_connections=8, pool_maxsize=16, max_retries=1)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self.requests = 0
        self.downloaded_bytes = 0

    def _get(self, url: str, headers: dict[str, str] | None = None) -> Any:
        import requests

        self.requests += 1
        try:
            r = self.session.get(url, headers=headers or {}, timeout=self.timeout)
        except requests.RequestException as exc:
            raise Unreachable(f"cannot reach {url} ({type(exc).__name__}).",
                              hint="Check the network or proxy; this source's facts are kept.") from None
        if r.status_code >= 500:
            raise Unreachable(f"{url} answered HTTP {r.status_code}.")
        return r

    def project(self, index: str, name: str) -> list[DistFile]:
        """Every file of a project on a PEP 503/691 index (JSON asked for, HTML accepted)."""
        url = f"{index.rstrip('/')}/{name}/"
        r = self._get(url, {"Accept": f"{PEP691}, text/html;q=0.1"})
        if r.status_code == 404:
            return []
        if r.status_code != 200:
            raise Unreachable(f"{url} answered HTTP {r.status_code}.")
        if r.headers.get("Content-Type", "").startswith(PEP691):
            return _from_json(r.json(), r.url)
        return parse_links(r.text, r.url)

    def page(self, url: str) -> list[DistFile] | None:
        """Files linked from a flat find-links page; None when the page does not exist (404)."""
        r = self._get(url)
        if r.status_code == 404:
            return None
        if r.status_code != 200:
            raise Unreachable(f"{url} answered HTTP {r.status_code}.")
        return parse_links(r.text, r.url)

    def metadata(self, f: DistFile) -> tuple[Message, str] | None:
        """The core metadata of a wheel and where it was read (URL and sha256).

        The PEP 658 ``.metadata`` file when the index serves it; else the wheel's ``.dist-info/METADATA``
        read through HTTP range requests (the zip's central directory and that one member, not the
        whole wheel; torch wheels are ~1 GB).
        """
        cached = self._cached_metadata(f)
        if cached is not None:
            return HeaderParser().parsestr(cached[0]), cached[1]
        got = self._fetch_metadata(f)
        if got is None:
            return None
        if self.artifacts is not None and f.sha256:
            d = self.artifacts / "metadata"
            d.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=d, prefix=".part-")
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(got[1] + "\n" + got[0])  # the raw METADATA text, not re-serialised
            os.replace(tmp, d / f.sha256)
        return HeaderParser().parsestr(got[0]), got[1]

    def _cached_metadata(self, f: DistFile) -> tuple[str, str] | None:
        """Metadata text read before for the same file (keyed by the index's sha256 of the wheel)."""
        if self.artifacts is None or not f.sha256:
            return None
        p = self.artifacts / "metadata" / f.sha256
        if not p.is_file():
            return None
        where, _, text = p.read_text(encoding="utf-8").partition("\n")
        return text, where

    def _fetch_metadata(self, f: DistFile) -> tuple[str, str] | None:
        r = self._get(f.url + ".metadata")
        if r.status_code == 200:
            sha = hashlib.sha256(r.content).hexdigest()
            if f.metadata_sha256 and sha != f.metadata_sha256:
                raise HashMismatch(f.url + ".metadata", f.metadata_sha256, sha)
            return r.content.decode("utf-8", "replace"), f"PyPI {f.url}.metadata (PEP 658, sha256 {sha})"
        if not f.filename.endswith(".whl"):
            return None
        try:
            with zipfile.ZipFile(_RangeFile(self, f.url)) as zf:
                name = next((n for n in zf.namelist()
                             if n.count("/") == 1 and n.endswith(".dist-info/METADATA")), None)
                if name is None:
                    return None
                text = zf.read(name).decode("utf-8", "replace")
        except (zipfile.BadZipFile, OSError):
            return None
        return text, f"PyPI {f.url} (wheel sha256 {f.sha256}): {name} read by HTTP range requests"

    def artifact(self, f: DistFile) -> Path:
        """The file itself, downloaded once into ``artifacts/<sha256>`` and checked against its hash."""
        if self.artifacts is None:
            raise FetchError("no artifact cache configured.")
        if f.sha256 and (self.artifacts / f.sha256).is_file():
            return self.artifacts / f.sha256
        r = self._get(f.url)
        if r.status_code != 200:
            raise Unreachable(f"{f.url} answered HTTP {r.status_code}.")
        data = r.content
        self.downloaded_bytes += len(data)
        sha = hashlib.sha256(data).hexdigest()
        if f.sha256 and sha != f.sha256:
            raise HashMismatch(f.url, f.sha256, sha)
        self.artifacts.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.artifacts, prefix=".part-")
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, self.artifacts / sha)
        return self.artifacts / sha


class _RangeFile(io.RawIOBase):
    """A read-only, seekable view of a remote file through HTTP Range requests (64 KiB blocks)."""

    BLOCK = 1 << 16

    def __init__(self, client: IndexClient, url: str) -> None:
        super().__init__()
        self.client, self.url, self.pos = client, url, 0
        self.blocks: dict[int, bytes] = {}
        r = client._get(url, {"Range": f"bytes=-{self.BLOCK}"})
        total = r.headers.get("Content-Range", "").rpartition("/")[2]
        if r.status_code != 206 or not total.isdigit():
            raise OSError(f"{url}: no range support (HTTP {r.status_code})")
        self.size = int(total)
        start = self.size - len(r.content)
        self._store(start, r.content)

    def _store(self, start: int, data: bytes) -> None:
        # keep whole aligned blocks only; the tail block may be short
        for b in range(start // self.BLOCK, (start + len(data) - 1) // self.BLOCK + 1):
            lo, hi = b * self.BLOCK, min((b + 1) * self.BLOCK, self.size)
            if lo >= start and hi <= start + len(data):
                self.blocks[b] = data[lo - start:hi - start]

    def _block(self, b: int) -> bytes:
        if b not in self.blocks:
            lo, hi = b * self.BLOCK, min((b + 1) * self.BLOCK, self.size) - 1
            r = self.client._get(self.url, {"Range": f"bytes={lo}-{hi}"})
            if r.status_code != 206:
                raise OSError(f"{self.url}: range request answered HTTP {r.status_code}")
            self.client.downloaded_bytes += len(r.content)
            self.blocks[b] = r.content
        return self.blocks[b]

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = 0) -> int:
        self.pos = offset if whence == 0 else self.pos + offset if whence == 1 else self.size + offset
        return self.pos

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            n = self.size - self.pos
        n = max(0, min(n, self.size - self.pos))
        out = bytearray()
        while len(out) < n:
            b, off = divmod(self.pos + len(out), self.BLOCK)
            out += self._block(b)[off:off + n - len(out)]
        self.pos += n
        return bytes(out)

    def readinto(self, buf: Any) -> int:
        data = self.read(len(buf))
        buf[:len(data)] = data
        return len(data)
