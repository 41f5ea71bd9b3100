from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from envbuild._fs import atomic_dir, atomic_write, safe_extract, sha256_file, verify_sha256
from envbuild.errors import HashMismatch, UnsafeArchive


def _tar_with(path: Path, members: list[tarfile.TarInfo], payload: bytes = b"x") -> None:
    with tarfile.open(path, "w:gz") as tf:
        for m in members:
            if m.isreg():
                m.size = len(payload)
                tf.addfile(m, io.BytesIO(payload))
            else:
                tf.addfile(m)


def test_safe_extract_refuses_dotdot(tmp_path: Path) -> None:
    arc = tmp_path / "bad.tar.gz"
    good = tarfile.TarInfo("ok.txt")
    evil = tarfile.TarInfo("../evil.txt")
    _tar_with(arc, [good, evil])
    dest = tmp_path / "dest"
    with pytest.raises(UnsafeArchive, match=r"\.\./evil\.txt"):
        safe_extract(arc, dest)
    assert not (tmp_path / "evil.txt").exists()
    assert not (dest / "ok.txt").exists(), "nothing is written when one member is bad"


def test_safe_extract_refuses_escaping_symlink(tmp_path: Path) -> None:
    arc = tmp_path / "link.tar.gz"
    link = tarfile.TarInfo("lib/escape")
    link.type = tarfile.SYMTYPE
    link.linkname = "../../../etc/passwd"
    _tar_with(arc, [link])
    with pytest.raises(UnsafeArchive, match="points outside"):
        safe_extract(arc, tmp_path / "dest")


def test_safe_extract_keeps_inner_symlink(tmp_path: Path) -> None:
    arc = tmp_path / "ok.tar.gz"
    f = tarfile.TarInfo("lib/libfoo.so.1")
    link = tarfile.TarInfo("lib/libfoo.so")
    link.type = tarfile.SYMTYPE
    link.linkname = "libfoo.so.1"
    _tar_with(arc, [f, link])
    dest = safe_extract(arc, tmp_path / "dest")
    assert (dest / "lib" / "libfoo.so").read_bytes() == b"x"


def test_atomic_write_and_hash(tmp_path: Path) -> None:
    p = atomic_write(tmp_path / "a" / "f.txt", "hello")
    assert p.read_text() == "hello"
    assert sha256_file(p) == "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
    with pytest.raises(HashMismatch) as ei:
        verify_sha256(p, "0" * 64)
    assert "0" * 64 in ei.value.render() and str(p) in ei.value.render()


def test_atomic_dir_leaves_nothing_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "lock"
    with pytest.raises(RuntimeError), atomic_dir(target) as d:
        (d / "half.txt").write_text("x")
        raise RuntimeError("boom")
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []


def test_extract_log_hashes_and_finds_a_needle_across_the_read_boundary(tmp_path: Path) -> None:
    """safe_extract's one read of each file gives the sha256 and the files naming a needle, a hard
    link included, with the needle split across two 1 MiB reads (checked against the files)."""
    import hashlib
    import os
    import subprocess

    from envbuild._fs import ExtractLog

    needle = b"/old/prefix/of/the/env"
    big = b"a" * ((1 << 20) - 5) + needle + b"b" * 100  # the needle straddles the first 1 MiB
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    (src / "d" / "big.bin").write_bytes(big)
    (src / "d" / "plain.txt").write_bytes(b"nothing here\n")
    os.link(src / "d" / "big.bin", src / "d" / "again.bin")
    for arc in (tmp_path / "a.tar.zst", tmp_path / "a.tar.gz"):
        comp = "zstd" if arc.suffix == ".zst" else "gzip"
        subprocess.run(["tar", "-C", str(src), "-I", comp, "-cf", str(arc), "."], check=True)
        log = ExtractLog(needle=needle)
        dest = safe_extract(arc, tmp_path / f"out-{comp}", log=log)
        assert log.hits == {"d/big.bin", "d/again.bin"}
        for rel in ("d/big.bin", "d/plain.txt", "d/again.bin"):
            st = (dest / rel).stat()
            assert log.hashes[(st.st_dev, st.st_ino)] == hashlib.sha256((dest / rel).read_bytes()).hexdigest()


def test_a_corrupt_zstd_archive_is_refused_and_leaves_nothing(tmp_path: Path) -> None:
    import subprocess

    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_bytes(bytes(range(256)) * 20000)
    arc = tmp_path / "a.tar.zst"
    subprocess.run(["tar", "-C", str(src), "-I", "zstd", "-cf", str(arc), "."], check=True)
    data = bytearray(arc.read_bytes())
    data[len(data) // 2] ^= 0xFF
    arc.write_bytes(bytes(data))
    with pytest.raises((tarfile.TarError, OSError)):
        safe_extract(arc, tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("reader", ["zstd", "python-zstandard"])
def test_safe_extract_reads_every_frame_of_a_multi_frame_tar_zst(tmp_path: Path, reader: str,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """pack's venv tar.zst: a first frame written last, a skippable frame, then the body frame;
    extraction (through the zstd program, or python-zstandard without it) reads all of them."""
    import hashlib
    import os

    from envbuild._fs import ExtractLog
    from envbuild.tools.condapack import open_archive

    needle = b"/old/prefix"
    src = tmp_path / "big.bin"
    src.write_bytes(os.urandom(5 << 20) + needle)
    arc = tmp_path / "a.tar.zst"
    with open_archive(arc, "tar.zst", jobs=2, head_hint="first") as writer:
        writer.add(str(src), "big.bin")
        writer.add_text("first.txt", "first\n", head=True)
    assert int.from_bytes(arc.read_bytes()[:4], "little") == 0xFD2FB528  # a zstd frame comes first
    if reader == "python-zstandard":
        monkeypatch.setattr("envbuild._fs.shutil.which", lambda name: None)
    log = ExtractLog(needle=needle)
    dest = safe_extract(arc, tmp_path / "out", first="first.txt", log=log)
    assert (dest / "first.txt").read_text() == "first\n" and log.hits == {"big.bin"}
    st = (dest / "big.bin").stat()
    assert log.hashes[(st.st_dev, st.st_ino)] == hashlib.sha256(src.read_bytes()).hexdigest()
