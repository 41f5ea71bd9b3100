"""The one wheel writer of the tests: a spec-conformant wheel (METADATA, WHEEL, RECORD) pip and uv install."""

from __future__ import annotations

import base64
import hashlib
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path


def record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def write_wheel(out: Path, name: str, version: str, files: Mapping[str, bytes], *, tag: str = "py3-none-any",
                dist: str | None = None, metadata: Sequence[str] = (),
                dist_info: Mapping[str, bytes] | None = None, compress: bool = False) -> Path:
    """``{dist}-{version}-{tag}.whl`` in ``out`` holding ``files``; ``metadata`` adds METADATA lines
    (Requires-Dist, ...), ``dist_info`` more files of the .dist-info (entry_points.txt, ...)."""
    dist = dist or name.replace("-", "_")
    di = f"{dist}-{version}.dist-info"
    content = dict(files)
    content[f"{di}/METADATA"] = ("\n".join(["Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}",
                                            *metadata]) + "\n").encode()
    content[f"{di}/WHEEL"] = (f"Wheel-Version: 1.0\nGenerator: envbuild-tests\nRoot-Is-Purelib: "
                              f"{'true' if tag.endswith('-none-any') else 'false'}\nTag: {tag}\n").encode()
    content.update({f"{di}/{k}": v for k, v in (dist_info or {}).items()})
    rows = [f"{p},{record_hash(d)},{len(d)}" for p, d in content.items()] + [f"{di}/RECORD,,"]
    content[f"{di}/RECORD"] = ("\n".join(rows) + "\n").encode()
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{dist}-{version}-{tag}.whl"
    how = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    with zipfile.ZipFile(path, "w", compression=how) as zf:
        for p, d in content.items():
            info = zipfile.ZipInfo(p, date_time=(2020, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            zf.writestr(info, d, compress_type=zf.compression)
    return path
