"""Wheels first for the target (issue 12): the lock takes wheels for the target's Python, platform and
glibc; a requirement with no such wheel takes the newest version that has one, or stops naming it."""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from pypi_fixture import Index, make_wheel, serving
from typer.testing import CliRunner

from envbuild.cli import app
from envbuild.lockfile import load_lock

runner = CliRunner()
HOST = f"{sys.version_info[0]}.{sys.version_info[1]}"
CP = f"cp{sys.version_info[0]}{sys.version_info[1]}"


def static_sdist(out_dir: Path, name: str, version: str) -> Path:
    """An sdist whose PKG-INFO (metadata 2.2, nothing dynamic) a resolver reads without building it."""
    base = f"{name}-{version}"
    members = {
        f"{base}/PKG-INFO": f"Metadata-Version: 2.2\nName: {name}\nVersion: {version}\n".encode(),
        f"{base}/pyproject.toml": ('[build-system]\nrequires = ["setuptools>=61"]\n'
                                   'build-backend = "setuptools.build_meta"\n'
                                   f'[project]\nname = "{name}"\nversion = "{version}"\n').encode(),
        f"{base}/{name}/__init__.py": b"",
    }
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tf:
        for p, d in members.items():
            ti = tarfile.TarInfo(p)
            ti.size, ti.mtime, ti.mode = len(d), 0, 0o644
            tf.addfile(ti, io.BytesIO(d))
    path = out_dir / f"{base}.tar.gz"
    path.write_bytes(gzip.compress(raw.getvalue(), mtime=0))
    return path


@pytest.fixture
def index(tmp_path: Path) -> Iterator[str]:
    """fastpkg: 1.0 wheel, 2.0 sdist only (the newest); cext: 1.0 manylinux2014, 2.0 manylinux_2_28 only."""
    idx = Index(tmp_path / "www")
    d = idx.file("x").parent
    idx.add("simple", [
        make_wheel(d, "fastpkg", "1.0"), static_sdist(d, "fastpkg", "2.0"),
        make_wheel(d, "cext", "1.0", tag=f"{CP}-{CP}-manylinux_2_17_x86_64.manylinux2014_x86_64"),
        make_wheel(d, "cext", "2.0", tag=f"{CP}-{CP}-manylinux_2_28_x86_64"),
    ])
    with contextlib.ExitStack() as stack:
        yield stack.enter_context(serving(idx)) + "/simple"


def profile(tmp_path: Path, glibc: str | None) -> Path:
    p = tmp_path / f"target-{glibc}.json"
    data = {"os": "linux", "arch": "x86_64", "python_version": HOST, "has_gpu": False}
    if glibc:
        data["glibc_version"] = glibc
    p.write_text(json.dumps(data))
    return p


def run_lock(args: list[str]) -> tuple[int, dict[str, object]]:
    r = runner.invoke(app, ["lock", *args, "--json"])
    return r.exit_code, json.loads(r.stdout)


@pytest.mark.parametrize(("glibc", "cext"), [("2.17", "1.0"), ("2.31", "2.0")])
def test_unpinned_takes_the_newest_version_with_a_wheel(tmp_path: Path, index: str, glibc: str,
                                                       cext: str) -> None:
    out = tmp_path / "lk"
    code, res = run_lock(["fastpkg", "cext", "--index-url", index, "--target", str(profile(tmp_path, glibc)),
                          "-o", str(out)])
    assert code == 0, res
    # fastpkg 2.0 has only an sdist: 1.0 (its newest wheel) is taken; cext follows the target's glibc
    assert res["packages"] == {"fastpkg": "1.0", "cext": cext}
    assert {a.kind for a in load_lock(out).artifacts} == {"wheel"}
    assert not any("glibc is unknown" in w for w in res["warnings"])  # type: ignore[union-attr]


def test_pinned_without_wheel_is_one_paragraph_error(tmp_path: Path, index: str) -> None:
    out = tmp_path / "lk"
    code, res = run_lock(["fastpkg==2.0", "--index-url", index, "--target", str(profile(tmp_path, "2.17")),
                          "-o", str(out)])
    assert code == 2 and not out.exists()
    assert res["error"] == "InputError"
    msg = str(res["message"])
    # names the package, the target's tags and the newest version with a wheel, and the way out
    assert "fastpkg==2.0" in msg and f"{CP}-{CP}-manylinux_2_17_x86_64" in msg and "1.0" in msg
    assert "--allow-sdist fastpkg" in msg


def test_allow_sdist_accepts_it_knowingly(tmp_path: Path, index: str) -> None:
    out = tmp_path / "lk"
    code, res = run_lock(["fastpkg==2.0", "cext", "--allow-sdist", "fastpkg", "--index-url", index,
                          "--target", str(profile(tmp_path, "2.17")), "-o", str(out)])
    assert code == 0, res
    kinds = {a.name: a.kind for a in load_lock(out).artifacts}
    assert kinds == {"fastpkg": "sdist", "cext": "wheel"}
    assert "--allow-sdist fastpkg" in (out / "requirements.txt").read_text()  # the re-lock command keeps it


def test_unknown_glibc_is_said(tmp_path: Path, index: str) -> None:
    code, res = run_lock(["cext", "--index-url", index, "--target", str(profile(tmp_path, None)),
                          "-o", str(tmp_path / "lk")])
    assert code == 0 and res["packages"] == {"cext": "1.0"}
    assert any("glibc is unknown" in w and "2.17" in w for w in res["warnings"])  # type: ignore[union-attr]


def test_resolver_pin_without_wheel_relaxes_to_newest_wheel(tmp_path: Path) -> None:
    """numpy is pinned by the resolver (not the user): its pick without a wheel gives way to the newest
    numpy that has one for the target, said in the warnings."""
    from envbuild.lock import lock
    from envbuild.models import Profile
    from envbuild.resolve import resolve
    from envbuild.spec import Spec

    target = Profile(python_version=HOST, glibc_version="2.17")
    pick = resolve(["numpy"], target).packages["numpy"]
    older = "1.0.0"
    idx = Index(tmp_path / "www")
    d = idx.file("x").parent
    idx.add("simple", [static_sdist(d, "numpy", pick), make_wheel(d, "numpy", older)])
    with serving(idx) as url:
        spec = Spec(requirements=("numpy",), indexes={"pypi": f"{url}/simple", "pytorch": f"{url}/whl",
                                                       "openmmlab": f"{url}/mm"})
        result = lock(spec, target, out_dir=tmp_path / "lk")
    assert result.to_dict()["packages"] == {"numpy": older}
    assert any(f"numpy {pick} (the resolver's pick) has no wheel" in w for w in result.warnings)
    assert result.lock.resolution.packages["numpy"] == older
