"""Build real ``.conda`` packages and a local channel, for tests that need conda without a network.

A ``.conda`` file is a stored zip holding ``metadata.json`` and two zstd tarballs,
``info-*.tar.zst`` (index.json, paths.json, files) and ``pkg-*.tar.zst`` (the payload).
py-rattler indexes the channel (``repodata.json`` per subdir) and installs from it.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import tarfile
import time
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import zstandard

# conda's classic placeholder; rattler rewrites it to the real prefix at install time.
PLACEHOLDER = "/opt/anaconda1anaconda2anaconda3"

__all__ = [
    "PLACEHOLDER", "build_conda_package", "install_env", "make_channel", "python_package_files",
    "python_package_spec",
]


def _tar_zst(members: Mapping[str, tuple[bytes, int]]) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tf:
        for name in sorted(members):
            data, mode = members[name]
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = mode
            info.mtime = 0
            tf.addfile(info, io.BytesIO(data))
    return zstandard.ZstdCompressor(level=3).compress(raw.getvalue())


def build_conda_package(
    out_dir: Path,
    name: str,
    version: str,
    *,
    build: str = "0",
    build_number: int = 0,
    subdir: str = "noarch",
    depends: Sequence[str] = (),
    files: Mapping[str, bytes | str] | None = None,
    executables: Sequence[str] = (),
    prefix_files: Sequence[str] = (),
    noarch: str | None = None,
) -> Path:
    """Write ``{name}-{version}-{build}.conda`` into ``out_dir/subdir`` and return its path.

    ``files`` maps paths relative to the prefix to contents; paths listed in
    ``prefix_files`` are text files whose ``PLACEHOLDER`` occurrences get the
    install prefix; ``executables`` get mode 0o755.
    """
    files = dict(files or {})
    payload: dict[str, tuple[bytes, int]] = {}
    paths = []
    for rel, content in sorted(files.items()):
        data = content.encode() if isinstance(content, str) else content
        mode = 0o755 if rel in executables else 0o644
        payload[rel] = (data, mode)
        entry: dict[str, object] = {
            "_path": rel,
            "path_type": "hardlink",
            "sha256": hashlib.sha256(data).hexdigest(),
            "size_in_bytes": len(data),
        }
        if rel in prefix_files:
            entry["prefix_placeholder"] = PLACEHOLDER
            entry["file_mode"] = "text"
        paths.append(entry)
    index: dict[str, object] = {
        "name": name,
        "version": version,
        "build": build,
        "build_number": build_number,
        "depends": list(depends),
        "license": "MIT",
        "subdir": subdir,
        "timestamp": int(time.time() * 1000),
    }
    if noarch or subdir == "noarch":
        index["noarch"] = noarch or "generic"
    if subdir != "noarch":
        index["platform"], _, arch = subdir.partition("-")
        index["arch"] = {"64": "x86_64", "aarch64": "aarch64"}.get(arch, arch)
    info = {
        "info/index.json": (json.dumps(index, indent=2).encode(), 0o644),
        "info/paths.json": (json.dumps({"paths": paths, "paths_version": 1}, indent=2).encode(), 0o644),
        "info/files": (("\n".join(sorted(files)) + "\n").encode(), 0o644),
    }
    if prefix_files:
        lines = [f"{PLACEHOLDER} text {p}" for p in prefix_files]
        info["info/has_prefix"] = ("\n".join(lines) + "\n").encode(), 0o644
    stem = f"{name}-{version}-{build}"
    target = out_dir / subdir / f"{stem}.conda"
    target.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_STORED) as zf:
        zf.writestr("metadata.json", json.dumps({"conda_pkg_format_version": 2}))
        zf.writestr(f"info-{stem}.tar.zst", _tar_zst(info))
        zf.writestr(f"pkg-{stem}.tar.zst", _tar_zst(payload))
    return target


def make_channel(root: Path, packages: Sequence[Mapping[str, object]] = ()) -> Path:
    """Build each package spec (kwargs of build_conda_package) into ``root`` and index it.

    Always writes ``noarch/repodata.json`` (conda clients need it even when empty).
    """
    root.mkdir(parents=True, exist_ok=True)
    (root / "noarch").mkdir(exist_ok=True)
    for spec in packages:
        build_conda_package(root, **spec)  # type: ignore[arg-type]
    from rattler.index import index_fs

    asyncio.run(index_fs(root, write_zst=False, write_shards=False))
    return root


def install_env(channel: Path, prefix: Path, specs: Sequence[str], *, platform: str = "linux-64") -> Path:
    """Solve ``specs`` against the local channel and install them into ``prefix`` with py-rattler."""
    import rattler

    async def _go() -> None:
        records = await rattler.solve(
            [rattler.Channel(channel.as_uri())], list(specs), platforms=[platform, "noarch"]
        )
        await rattler.install(records, prefix, cache_dir=prefix.parent / ".rattler-cache",
                              show_progress=False)

    asyncio.run(_go())
    return prefix


# --- relocatable Python package (added for the pack tests) ------------------------------------

# Stdlib parts no test needs; dropping them keeps the package small and the suite fast.
_STDLIB_SKIP = frozenset({
    "test", "site-packages", "idlelib", "tkinter", "turtledemo", "ensurepip", "lib2to3",
    "pydoc_data", "__pycache__", "unittest", "distutils",
})


def python_package_files(base: Path | None = None) -> tuple[dict[str, bytes], list[str]]:
    """Files of a relocatable CPython made from a pyenv build: binary, libpython, stdlib.

    The copied binary's RUNPATH becomes ``$ORIGIN/../lib`` (patchelf) so it finds the
    copied libpython wherever the prefix lands; debug info is stripped to keep it small.
    Returns ``(files, executables)`` for ``build_conda_package``.
    """
    import shutil
    import subprocess
    import sys
    import sysconfig
    import tempfile

    base = base or Path(sys.base_prefix)
    ver = f"{sys.version_info.major}.{sys.version_info.minor}"
    if not sysconfig.get_config_var("Py_ENABLE_SHARED"):
        raise RuntimeError(f"{base} is not a shared-libpython build; cannot make a relocatable copy")
    files: dict[str, bytes] = {}
    with tempfile.TemporaryDirectory() as tmp:
        exe = Path(tmp) / f"python{ver}"
        shutil.copy2(base / "bin" / f"python{ver}", exe)
        patchelf = shutil.which("patchelf") or str(Path(sys.executable).parent / "patchelf")
        subprocess.run([patchelf, "--set-rpath", "$ORIGIN/../lib", str(exe)], check=True)
        lib = Path(tmp) / f"libpython{ver}.so.1.0"
        subprocess.run(["strip", "--strip-debug", "-o", str(lib), str(base / "lib" / lib.name)], check=True)
        binary = exe.read_bytes()
        files[f"lib/{lib.name}"] = lib.read_bytes()
    for name in ("python", "python3", f"python{ver}"):
        files[f"bin/{name}"] = binary
    stdlib = base / "lib" / f"python{ver}"
    for path in stdlib.rglob("*"):
        rel = path.relative_to(stdlib)
        if rel.parts[0] in _STDLIB_SKIP or rel.parts[0].startswith("config-") or "__pycache__" in rel.parts:
            continue
        if path.is_file() and not path.is_symlink():
            files[f"lib/python{ver}/{rel.as_posix()}"] = path.read_bytes()
    # CPython ships this file; it also makes site-packages exist before anything is installed.
    files[f"lib/python{ver}/site-packages/README.txt"] = (
        b"This directory exists so that 3rd party packages can be installed here.\n")
    executables = [f"bin/{n}" for n in ("python", "python3", f"python{ver}")]
    executables += [k for k in files if k.endswith(".so") or ".so." in k]
    return files, executables


def python_package_spec(version: str | None = None) -> dict[str, object]:
    """A ``make_channel`` spec for the relocatable ``python`` package of this interpreter."""
    import sys

    files, executables = python_package_files()
    ver = version or ".".join(str(v) for v in sys.version_info[:3])
    return dict(name="python", version=ver, build="0_envbuild", subdir="linux-64",
                files=files, executables=executables)
