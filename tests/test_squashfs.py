"""pack --format squashfs on REAL envs: the image is built with mksquashfs, listed and extracted
with unsquashfs, mounted with squashfuse where /dev/fuse exists; inspect and unpack read it and
report the inode saving; unsafe images (device nodes, links or paths leaving the destination)
are refused before anything is written. Skipped where squashfs-tools is not installed."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conda_fixture import PLACEHOLDER, install_env, make_channel, python_package_spec
from test_pack import PY, conda_pkg, make_venv, make_wheel, run

from envbuild.archive import MANIFEST, inspect_archive, read_manifest
from envbuild.errors import HashMismatch, UnsafeArchive
from envbuild.pack import pack
from envbuild.tools import squashfs
from envbuild.unpack import unpack

ENVBUILD = [str(Path(sys.executable).parent / "envbuild")]
HAVE_FUSE = Path("/dev/fuse").exists() and shutil.which("squashfuse") is not None and os.geteuid() == 0

pytestmark = [
    pytest.mark.squashfs,
    pytest.mark.skipif(not (shutil.which("mksquashfs") and shutil.which("unsquashfs")),
                       reason="no squashfs-tools (apt-get install squashfs-tools; see .ci/run)"),
]


@pytest.fixture(scope="module")
def channel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("sq-channel")
    return make_channel(root / "ch", [
        python_package_spec(),
        conda_pkg("greet", "1.0", {"bin/greet": f"#!{PLACEHOLDER}/bin/python{PY}\n"
                                   "import sys\nprint('greet from', sys.prefix)\n"},
                  executables=["bin/greet"], prefix_files=["bin/greet"]),
    ])


@pytest.fixture(scope="module")
def hello_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("sq-venv")
    wheel = make_wheel(root / "wheels", "hellopkg", "0.3", {"hellopkg/__init__.py": "WHO = 'sq'\n"})
    return make_venv(root / "venv", wheel)


def _listing(image: Path) -> list[str]:
    out = run(["unsquashfs", "-l", "-d", "R", image])
    assert out.returncode == 0, out.stderr
    return [ln[2:] for ln in out.stdout.splitlines() if ln.startswith("R/")]


def test_conda_env_squashfs_is_one_file_listed_inspected_and_unpacked(channel: Path, tmp_path: Path) -> None:
    env = install_env(channel, tmp_path / "src" / "env", ["python", "greet"])
    image = tmp_path / "env.squashfs"
    res = run([*ENVBUILD, "pack", env, "-o", image, "--json"])
    assert res.returncode == 0, res.stderr
    result = json.loads(res.stdout)  # mksquashfs printed nothing into the JSON
    with open(image, "rb") as fh:
        assert fh.read(4) == b"hsqs"
    names = _listing(image)
    assert MANIFEST in names and "bin/conda-unpack" in names and "bin/greet" in names
    on_disk = [p for p in env.rglob("*") if not p.is_dir()]
    assert result["format"] == "squashfs" and result["image_files"] == 1 and result["inodes_when_used"] == 1
    # every env file is in the image, and the count the user is shown is the env's, not a guess
    assert result["env_files"] == len(on_disk)
    assert result["env_bytes"] == sum(p.lstat().st_size for p in on_disk if not p.is_symlink())

    info = json.loads(run([*ENVBUILD, "inspect", image, "--json"]).stdout)
    assert info["format"] == "squashfs" and info["has_manifest"] and info["kind"] == "conda"
    assert {p["name"] for p in info["packages"]} >= {"python", "greet"}
    assert (info["env_files"], info["image_files"]) == (result["env_files"], 1)
    table = run([*ENVBUILD, "inspect", image]).stdout
    assert "1 file" in table and f"{result['env_files']:,} files" in table
    # the same env as tar.zst: same files, but every one of them (and each directory) is unpacked
    tar = pack(env, tmp_path / "env.tar.zst")
    assert (tar.env_files, tar.env_bytes) == (result["env_files"], result["env_bytes"])
    assert tar.image_files is None and tar.inodes_when_used == (tar.env_files or 0) + (tar.env_dirs or 0)
    assert inspect_archive(tmp_path / "env.tar.zst")["inodes_when_used"] == tar.inodes_when_used

    dest = tmp_path / "unpacked" / "env"
    report = unpack(image, dest)
    assert report.fixup["verified_files"] > 0
    assert run([dest / "bin" / "greet"]).stdout == f"greet from {dest}\n"  # prefix fixed
    # unsquashfs extracted exactly what it listed
    assert sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*")
                  if p.name != ".envbuild-unpacked" and "__pycache__" not in p.parts) \
        >= sorted(n for n in names if "__pycache__" not in n)


def test_venv_squashfs_mounts_with_squashfuse_and_unpacks(hello_venv: Path, tmp_path: Path) -> None:
    image = tmp_path / "venv.sqsh"
    result = pack(hello_venv, image)
    assert result.format == "squashfs"
    assert "bin/python" in _listing(image)  # a read-only mount cannot recreate the interpreter link
    assert read_manifest(image)["kind"] == "venv"  # type: ignore[index]
    dest = tmp_path / "out"
    unpack(image, dest)
    ran = run([dest / "bin" / "python", "-c", "import sys, hellopkg; print(sys.prefix, hellopkg.WHO)"])
    assert ran.stdout.split() == [str(dest), "sq"], ran.stderr
    if not HAVE_FUSE:
        pytest.skip("no /dev/fuse or squashfuse: the mount part is not run here")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    assert run(["squashfuse", image, mnt]).returncode == 0
    try:
        ran = run([mnt / "bin" / "python", "-c", "import sys, hellopkg; print(sys.prefix, hellopkg.WHO)"])
        assert ran.stdout.split() == [str(mnt), "sq"], ran.stderr
        assert (mnt / "envbuild-manifest.json").is_file()
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


def test_plain_conda_pack_squashfs_is_inspected(channel: Path, tmp_path: Path) -> None:
    import conda_pack

    env = install_env(channel, tmp_path / "env", ["python", "greet"])
    image = tmp_path / "cp.squashfs"
    conda_pack.pack(prefix=str(env), output=str(image), format="squashfs")
    info = inspect_archive(image)
    assert not info["has_manifest"] and info["format"] == "squashfs"
    assert {p["name"] for p in info["packages"]} >= {"python", "greet"}
    assert info["source"]["prefix"] == str(env)
    dest = tmp_path / "out"
    assert unpack(image, dest).fixup["conda_unpack"] is True
    # (conda-pack leaves its scripts on '#!/usr/bin/env python'; the interpreter is relocated)
    ran = run([dest / "bin" / "python", "-c", "import sys; print(sys.prefix)"])
    assert ran.stdout.strip() == str(dest), ran.stderr


def _image(tmp_path: Path, *pseudo: str, link: tuple[str, str] | None = None) -> Path:
    src = tmp_path / "src"
    (src / "bin").mkdir(parents=True)
    (src / "bin" / "ok").write_text("ok\n")
    (src / MANIFEST).write_text(json.dumps({"kind": "venv", "fixup": {"kind": "venv"}}))
    if link:
        os.symlink(link[1], src / link[0])
    image = tmp_path / "evil.squashfs"
    args = [a for p in pseudo for a in ("-p", p)]
    out = run(["mksquashfs", src, image, "-noappend", "-quiet", "-no-progress", *args])
    assert out.returncode == 0, out.stderr
    return image


@pytest.mark.parametrize(("pseudo", "link", "says"), [
    (("null c 644 0 0 1 3",), None, "is a character device"),
    (("pipe i 644 0 0 f",), None, "is a fifo"),
    ((), ("etc", "/etc"), "points outside"),
    ((), ("up", "../../.."), "points outside"),
])
def test_unsafe_images_are_refused_before_writing(
    tmp_path: Path, pseudo: tuple[str, ...], link: tuple[str, str] | None, says: str
) -> None:
    image = _image(tmp_path, *pseudo, link=link)
    dest = tmp_path / "dest"
    with pytest.raises(UnsafeArchive, match=says):
        unpack(image, dest)
    assert not dest.exists() and not list(tmp_path.glob(".dest.unpack-*"))


def test_listing_paths_leaving_the_destination_are_refused(tmp_path: Path) -> None:
    image = tmp_path / "x.squashfs"
    for bad in ("/etc/passwd", "a/../../b", "..", "a//b"):
        with pytest.raises(UnsafeArchive, match="outside the destination"):
            squashfs.check(image, [squashfs.Entry(path=bad, type="-", mode="rw-r--r--")])
    # a venv's recorded interpreter link may leave the env, a linked directory may not
    squashfs.check(image, [squashfs.Entry("bin/python", "l", "rwxrwxrwx", "/usr/bin/python3")],
                   allowed_links={"bin/python"})


def test_an_altered_file_inside_the_image_is_caught(hello_venv: Path, tmp_path: Path) -> None:
    image = tmp_path / "v.squashfs"
    pack(hello_venv, image)
    staging = tmp_path / "staging"
    assert run(["unsquashfs", "-q", "-d", staging, image]).returncode == 0
    init = next(staging.glob("lib/python*/site-packages/hellopkg/__init__.py"))
    init.write_text("WHO = 'tampered'\n")
    assert run(["mksquashfs", staging, image, "-noappend", "-quiet", "-no-progress"]).returncode == 0
    with pytest.raises(HashMismatch):
        unpack(image, tmp_path / "dest")
    assert not (tmp_path / "dest").exists()
