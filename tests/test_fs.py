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


# --- files are written by threads beside the reader: what must still happen in archive order ----


def _member_tar(path: Path, members: list[tuple[str, bytes, bytes | str]]) -> Path:
    """A plain tar of (name, type, data for a file / link target) in this order."""
    with tarfile.open(path, "w") as tf:
        for name, kind, what in members:
            ti = tarfile.TarInfo(name)
            ti.type = kind
            if kind == tarfile.REGTYPE:
                assert isinstance(what, bytes)
                ti.size = len(what)
                tf.addfile(ti, io.BytesIO(what))
            else:
                ti.linkname = str(what)
                tf.addfile(ti)
    return path


BIG = 5 << 20  # past the size from which a file is fed to its writer while it is read


def _hashes_agree(dest: Path, log: object) -> None:
    import hashlib
    import os

    for dirpath, _dirs, files in os.walk(dest):
        for fn in files:
            p = Path(dirpath) / fn
            if p.is_symlink():
                continue
            st = p.stat()
            want = hashlib.sha256(p.read_bytes()).hexdigest()
            assert log.hashes[(st.st_dev, st.st_ino)] == want, p  # type: ignore[attr-defined]


def test_a_name_written_again_keeps_the_last_file_and_its_hash(tmp_path: Path) -> None:
    """The same name three times (small, large, small) and twice (small, large): one file each,
    with the last member's bytes and that file's sha256 in the log, as tar leaves it."""
    from envbuild._fs import ExtractLog

    big = bytes(range(256)) * (BIG // 256)
    arc = _member_tar(tmp_path / "a.tar", [
        ("d/x", tarfile.REGTYPE, b"first"), ("d/x", tarfile.REGTYPE, big), ("d/x", tarfile.REGTYPE, b"third"),
        ("d/y", tarfile.REGTYPE, b"small"), ("d/y", tarfile.REGTYPE, big),
    ])
    for _ in range(5):  # the threads' timing differs from run to run
        log = ExtractLog()
        dest = safe_extract(arc, tmp_path / "out", log=log)
        assert (dest / "d" / "x").read_bytes() == b"third"
        assert (dest / "d" / "y").read_bytes() == big
        assert sorted(p.name for p in (dest / "d").iterdir()) == ["x", "y"]
        _hashes_agree(dest, log)
        import shutil

        shutil.rmtree(dest)


def test_a_directory_replaces_a_file_of_its_name_and_holds_what_follows(tmp_path: Path) -> None:
    arc = _member_tar(tmp_path / "a.tar", [
        ("x", tarfile.REGTYPE, bytes(BIG)), ("x", tarfile.DIRTYPE, ""), ("x/y", tarfile.REGTYPE, b"y"),
    ])
    dest = safe_extract(arc, tmp_path / "out")
    assert (dest / "x").is_dir() and (dest / "x" / "y").read_bytes() == b"y"


@pytest.mark.parametrize("size", [3, BIG])
def test_a_member_below_a_file_is_refused_and_nothing_is_left(tmp_path: Path, size: int) -> None:
    from envbuild.errors import PackError

    arc = _member_tar(tmp_path / "a.tar", [("x", tarfile.REGTYPE, bytes(size)),
                                           ("x/y", tarfile.REGTYPE, b"y")])
    with pytest.raises(PackError, match="needs 'x' to be a directory"):
        safe_extract(arc, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_hardlinks_to_files_still_being_written_share_their_bytes_hash_and_needle(tmp_path: Path) -> None:
    from envbuild._fs import ExtractLog

    needle = b"/old/env"
    big = b"z" * (BIG - 100) + needle + b"z" * 92
    arc = _member_tar(tmp_path / "a.tar", [
        ("lib/big.so", tarfile.REGTYPE, big), ("lib/big-link.so", tarfile.LNKTYPE, "lib/big.so"),
        ("bin/tool", tarfile.REGTYPE, b"#!" + needle + b"/bin/python\n"),
        ("bin/tool2", tarfile.LNKTYPE, "bin/tool"), ("bin/plain", tarfile.REGTYPE, b"plain"),
    ])
    log = ExtractLog(needle=needle)
    dest = safe_extract(arc, tmp_path / "out", log=log)
    assert (dest / "lib" / "big-link.so").read_bytes() == big
    assert (dest / "lib" / "big-link.so").stat().st_ino == (dest / "lib" / "big.so").stat().st_ino
    assert log.hits == {"lib/big.so", "lib/big-link.so", "bin/tool", "bin/tool2"}
    _hashes_agree(dest, log)


_LIMITED = """
import resource, signal, sys
from envbuild._fs import safe_extract
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
try:
    safe_extract(sys.argv[1], sys.argv[2])
except OSError as exc:
    print("refused", exc.errno)
else:
    print("extracted")
"""


@pytest.mark.parametrize(("size", "after"), [(2 << 20, 300), (BIG, 300), (2 << 20, 0)])
def test_a_write_that_fails_in_a_writer_thread_fails_the_extraction_and_leaves_nothing(
        tmp_path: Path, size: int, after: int) -> None:
    """A file the disk cannot take (here: past RLIMIT_FSIZE, EFBIG), among hundreds or last: the
    error reaches the caller, the threads stop (no hang) and the new destination is removed."""
    import errno
    import subprocess
    import sys

    members: list[tuple[str, bytes, bytes | str]] = [(f"a/{i}", tarfile.REGTYPE, b"ok") for i in range(200)]
    members.append(("b/too-big", tarfile.REGTYPE, bytes(size)))
    members += [(f"c/{i}", tarfile.REGTYPE, b"after") for i in range(after)]
    arc = _member_tar(tmp_path / "a.tar", members)
    out = subprocess.run([sys.executable, "-c", _LIMITED, str(arc), str(tmp_path / "out")],
                         capture_output=True, text=True, timeout=120)
    assert out.stdout.split() == ["refused", str(errno.EFBIG)], out.stderr
    assert not (tmp_path / "out").exists()


def test_an_archive_cut_inside_a_large_file_is_an_error_not_a_hang(tmp_path: Path) -> None:
    import os

    arc = _member_tar(tmp_path / "a.tar", [("a", tarfile.REGTYPE, b"x"),
                                           ("big", tarfile.REGTYPE, os.urandom(BIG))])
    cut = tmp_path / "cut.tar"
    cut.write_bytes(arc.read_bytes()[: 3 << 20])
    with pytest.raises((tarfile.TarError, OSError)):
        safe_extract(cut, tmp_path / "out")
    assert not (tmp_path / "out").exists()
