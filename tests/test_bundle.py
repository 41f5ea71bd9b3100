"""envbuild bundle and verify-cache: a checked tar to carry, and one-byte tampering caught everywhere."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from e2e import HAS_UNSHARE
from e2e import offline as _offline
from fetch_fixture import git_repo, make_wheel, serve, sha256, wheel_artifact, write_lock

from envbuild._fs import safe_extract
from envbuild.bundle import bundle, verify_cache
from envbuild.errors import FetchError
from envbuild.fetch import fetch, load_manifest


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "envbuild", *args], capture_output=True, text=True,
                          env={**os.environ, "COLUMNS": "250"}, check=False)


@pytest.fixture(scope="module")
def _fetched_once(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, list[Path]]:
    """A lock (two wheels + a git dependency) fetched into a cache; the server is gone afterwards."""
    base = tmp_path_factory.mktemp("fetched")
    idx = base / "idx"
    wheels = [make_wheel(idx, "alpha", "1.0", payload=4000), make_wheel(idx, "beta", "2.0", payload=4000)]
    repo, commits = git_repo(base / "mypkg")
    with serve(idx) as srv:
        arts = [wheel_artifact(srv, w) for w in wheels]
        arts.append({"name": "mypkg", "version": "1.0", "kind": "git", "url": repo.as_uri(),
                     "commit": commits[0]})
        lock = write_lock(base / "lockfiles" / "demo", arts)
        (lock / "install-offline.sh").write_text("#!/bin/sh\necho install\n")
        (lock / "install-offline.sh").chmod(0o755)
        cache = base / "offline_cache"
        fetch(lock, cache, show_progress=False)
    return lock, cache, wheels


@pytest.fixture
def fetched(_fetched_once: tuple[Path, Path, list[Path]], tmp_path: Path) -> tuple[Path, Path, list[Path]]:
    """A private copy of the fetched lock and cache (tests alter them)."""
    lock, cache, wheels = _fetched_once
    shutil.copytree(lock, tmp_path / "lockfiles" / "demo")
    shutil.copytree(cache, tmp_path / "offline_cache")
    return tmp_path / "lockfiles" / "demo", tmp_path / "offline_cache", wheels


def _flip_byte(path: Path, offset: int = 100) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def test_bundle_holds_lock_scripts_cache_and_readme_and_verifies(fetched: tuple[Path, Path, list[Path]],
                                                                 tmp_path: Path) -> None:
    lock, cache, wheels = fetched
    out = tmp_path / "demo-offline.tar"
    res = _cli("bundle", str(lock), "--cache", str(cache), "-o", str(out), "--json")
    assert res.returncode == 0, res.stderr
    info = json.loads(res.stdout)
    assert info["output"] == str(out) and info["top"] == "demo-offline"
    assert "install-offline.sh" in info["scripts"]
    assert not list(tmp_path.glob(".demo-offline.tar.*")), "no temp file is left next to the bundle"

    dest = safe_extract(out, tmp_path / "unpacked") / "demo-offline"
    assert (dest / "lockfiles" / "demo" / "envbuild.lock.json").read_bytes() == \
        (lock / "envbuild.lock.json").read_bytes()
    assert os.access(dest / "install-offline.sh", os.X_OK)
    readme = (dest / "README.txt").read_text()
    assert "bash install-offline.sh" in readme and "tar -xf demo-offline.tar" in readme
    manifest = load_manifest(dest / "offline_cache")
    assert {e.file for e in manifest.files} == {
        *(f"wheels/{w.name}" for w in wheels), "git/mypkg-1.0-py3-none-any.whl"}
    for e in manifest.files:
        assert sha256(dest / "offline_cache" / e.file) == e.sha256

    ok = _cli("verify-cache", str(out), "--json")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    report = json.loads(ok.stdout)
    # No lock given: only the bundle's own manifest, and the report says so.
    assert report["ok"] is True and report["checked"] == 3 and report["lock"] is None, report
    assert report["checked_against"] == "manifest"
    said = " ".join(_cli("verify-cache", str(out)).stdout.split())
    assert "no lock was given" in said and "--lock LOCKDIR" in said and "--trust-bundle-lock" in said
    # The bundle's own lock only when asked.
    trusted = json.loads(_cli("verify-cache", str(out), "--trust-bundle-lock", "--json").stdout)
    assert trusted["ok"] and trusted["checked_against"] == "bundle-lock"
    assert trusted["lock"] == f"{out}:lockfiles/demo"
    mine = json.loads(_cli("verify-cache", str(out), "--lock", str(lock), "--json").stdout)
    assert mine["ok"] and mine["checked_against"] == "lock" and mine["lock"] == str(lock)


def test_one_altered_byte_is_reported_refused_by_bundle_and_repaired_by_fetch(
        fetched: tuple[Path, Path, list[Path]], tmp_path: Path) -> None:
    lock, cache, wheels = fetched
    target = cache / "wheels" / wheels[0].name
    good = sha256(target)
    _flip_byte(target)
    bad = sha256(target)

    res = _cli("verify-cache", str(cache), "--lock", str(lock), "--json")
    assert res.returncode == 3
    (problem,) = json.loads(res.stdout)["problems"]
    assert problem == {"file": f"wheels/{wheels[0].name}", "problem": "altered", "expected": good,
                       "actual": bad, "detail": None}
    table = _cli("verify-cache", str(cache))
    assert table.returncode == 3
    assert wheels[0].name in table.stdout and good in table.stdout and bad in table.stdout

    out = tmp_path / "x.tar"
    with pytest.raises(FetchError) as ei:
        bundle(lock, cache, out)
    assert wheels[0].name in ei.value.message and good in ei.value.message and bad in ei.value.message
    assert not out.exists()

    # fetch never trusts the cached copy: it downloads the locked bytes again.
    idx = wheels[0].parent
    with serve(idx) as srv:
        lock_json = json.loads((lock / "envbuild.lock.json").read_text())
        for a in lock_json["artifacts"]:
            if a["kind"] == "wheel":
                a["url"] = srv.file_url(a["filename"])
        (lock / "envbuild.lock.json").write_text(json.dumps(lock_json))
        result = fetch(lock, cache, show_progress=False)
        assert [e["path"] for e in srv.log] == [f"/files/{wheels[0].name}"]
    assert result.repaired == (f"wheels/{wheels[0].name}",)
    assert sha256(target) == good
    assert verify_cache(cache, lock).ok


def test_verify_cache_finds_an_altered_file_inside_a_bundle(fetched: tuple[Path, Path, list[Path]],
                                                            tmp_path: Path) -> None:
    lock, cache, wheels = fetched
    out = tmp_path / "demo-offline.tar"
    bundle(lock, cache, out)
    # Rewrite the tar with one byte of one wheel changed, everything else identical.
    evil = tmp_path / "evil.tar"
    victim = f"demo-offline/offline_cache/wheels/{wheels[1].name}"
    with tarfile.open(out) as src, tarfile.open(evil, "w") as dst:
        for m in src.getmembers():
            data = src.extractfile(m).read() if m.isfile() else None  # type: ignore[union-attr]
            if m.name == victim and data is not None:
                data = data[:50] + bytes([data[50] ^ 1]) + data[51:]
            dst.addfile(m, io.BytesIO(data) if data is not None else None)
    res = _cli("verify-cache", str(evil), "--json")
    assert res.returncode == 3
    (problem,) = json.loads(res.stdout)["problems"]
    assert problem["file"] == f"wheels/{wheels[1].name}" and problem["problem"] == "altered"
    assert problem["expected"] == sha256(wheels[1]) and problem["actual"] != problem["expected"]


def test_verify_cache_refuses_a_bundle_escaping_its_directory(tmp_path: Path) -> None:
    evil = tmp_path / "evil.tar"
    with tarfile.open(evil, "w") as tf:
        m = tarfile.TarInfo("../../escaped.txt")
        m.size = 2
        tf.addfile(m, io.BytesIO(b"hi"))
    res = _cli("verify-cache", str(evil), "--json")
    assert res.returncode == 5
    assert json.loads(res.stdout)["error"] == "UnsafeArchive"
    assert not (tmp_path.parent / "escaped.txt").exists()


def test_verify_cache_checks_the_manifest_against_the_lock(fetched: tuple[Path, Path, list[Path]],
                                                           tmp_path: Path) -> None:
    lock, cache, wheels = fetched
    other = tmp_path / "other"
    other.mkdir()
    data = json.loads((lock / "envbuild.lock.json").read_text())
    wheel_arts = [a for a in data["artifacts"] if a["kind"] == "wheel"]
    wheel_arts[0]["sha256"] = "e" * 64
    wheel_arts[1]["filename"] = "gamma-3.0-py3-none-any.whl"
    (other / "envbuild.lock.json").write_text(json.dumps(data))
    (other / "built.sha256").write_bytes((lock / "built.sha256").read_bytes())  # fetch's record of git/
    report = verify_cache(cache, other)
    probs = {(p.file, p.problem) for p in report.problems}
    assert probs == {(f"wheels/{wheels[0].name}", "lock-mismatch"),
                     ("wheels/gamma-3.0-py3-none-any.whl", "missing")}
    missing_manifest = _cli("verify-cache", str(tmp_path / "nothing-here"), "--json")
    assert missing_manifest.returncode == 2


def _retar(src: Path, dst: Path, edit: dict[str, bytes]) -> None:
    with tarfile.open(src) as tin, tarfile.open(dst, "w") as tout:
        for m in tin.getmembers():
            data = tin.extractfile(m).read() if m.isfile() else None  # type: ignore[union-attr]
            if m.name in edit:
                data = edit[m.name]
                m.size = len(data)
            tout.addfile(m, io.BytesIO(data) if data is not None else None)


def test_verify_cache_checks_a_bundle_against_the_users_lock_not_its_own(
        fetched: tuple[Path, Path, list[Path]], tmp_path: Path) -> None:
    """A swapped wheel with a manifest and lock rewritten to match passes a self-check, never --lock."""
    lock, cache, wheels = fetched
    out = tmp_path / "demo-offline.tar"
    bundle(lock, cache, out)
    top = "demo-offline"
    evil_wheel = make_wheel(tmp_path / "evil-idx", "alpha", "1.0", payload=4100)
    evil_bytes = evil_wheel.read_bytes()
    evil_sha = sha256(evil_wheel)
    with tarfile.open(out) as tf:
        manifest = json.loads(tf.extractfile(f"{top}/offline_cache/manifest.json").read())  # type: ignore[union-attr]
    for e in manifest["files"]:
        if e["file"] == f"wheels/{wheels[0].name}":
            e["sha256"] = evil_sha
    lock_json = json.loads((lock / "envbuild.lock.json").read_text())
    for a in lock_json["artifacts"]:
        if a.get("filename") == wheels[0].name:
            a["sha256"] = evil_sha
    evil = tmp_path / "evil.tar"
    _retar(out, evil, {f"{top}/offline_cache/wheels/{wheels[0].name}": evil_bytes,
                       f"{top}/offline_cache/manifest.json": json.dumps(manifest).encode(),
                       f"{top}/lockfiles/demo/envbuild.lock.json": json.dumps(lock_json).encode()})
    # self-consistent: the manifest-only and the trusted-bundle-lock checks pass (and say what they are)
    assert json.loads(_cli("verify-cache", str(evil), "--json").stdout)["ok"]
    assert json.loads(_cli("verify-cache", str(evil), "--trust-bundle-lock", "--json").stdout)["ok"]
    # against the user's lock it fails: the wheel is not the locked one, and the bundle's lock differs
    res = _cli("verify-cache", str(evil), "--lock", str(lock), "--json")
    assert res.returncode == 3
    probs = {(p["file"], p["problem"]) for p in json.loads(res.stdout)["problems"]}
    assert (f"wheels/{wheels[0].name}", "lock-mismatch") in probs
    assert ("lockfiles/demo/envbuild.lock.json", "lock-differs") in probs
    both = _cli("verify-cache", str(evil), "--lock", str(lock), "--trust-bundle-lock", "--json")
    assert both.returncode == 2


def test_verify_cache_bundle_with_a_path_max_symlink_chain_writes_nothing_outside(tmp_path: Path) -> None:
    """The CVE-2025-4517 shape inside a bundle: refused (exit 5), the victim keeps its bytes."""
    victim = tmp_path / "flag"
    victim.write_text("original\n")
    evil = tmp_path / "evil.tar"
    comp, steps = "d" * 247, "abcdefghijklmnop"

    def add(tf: tarfile.TarFile, name: str, kind: bytes, link: str = "", data: bytes = b"") -> None:
        ti = tarfile.TarInfo(name)
        ti.type, ti.linkname, ti.size = kind, link, len(data)
        tf.addfile(ti, io.BytesIO(data) if kind == tarfile.REGTYPE else None)

    with tarfile.open(evil, "w") as tf:
        path = ""
        for st in steps:
            add(tf, os.path.join(path, comp), tarfile.DIRTYPE)
            add(tf, os.path.join(path, st), tarfile.SYMTYPE, comp)
            path = os.path.join(path, comp)
        linkpath = os.path.join(*steps, "l" * 254)
        add(tf, linkpath, tarfile.SYMTYPE, os.path.join(*[".."] * len(steps)))
        # verify-cache extracts into a temp dir: escape far enough up, then down to the victim
        add(tf, "escape", tarfile.SYMTYPE, os.path.join(linkpath, *[".."] * 12) + str(tmp_path))
        add(tf, "flaglink", tarfile.LNKTYPE, "escape/flag")
        add(tf, "flaglink", tarfile.REGTYPE, data=b"overwritten\n")
    res = _cli("verify-cache", str(evil), "--json")
    assert res.returncode == 5 and json.loads(res.stdout)["error"] == "UnsafeArchive"
    assert victim.read_text() == "original\n"


# --- bundle without a second copy of the cache (issue 16) ---------------------------------------


def _tree(root: Path) -> dict[str, str]:
    """Every regular file under ``root`` by relative path, with its sha256."""
    return {str(p.relative_to(root)): sha256(p) for p in sorted(root.rglob("*")) if p.is_file()}


def _du(*paths: Path) -> int:
    """Bytes on disk as du(1) counts them: every inode once, however many names it has."""
    out = subprocess.run(["du", "-s", "-c", "--block-size=1", *map(str, paths)], capture_output=True,
                         text=True, check=True).stdout
    return int(out.splitlines()[-1].split()[0])


@pytest.mark.parametrize("fmt", ["tar", "dir"])
def test_bundle_refuses_a_file_altered_after_fetch_names_it_and_leaves_nothing(
        fetched: tuple[Path, Path, list[Path]], tmp_path: Path, fmt: str) -> None:
    lock, cache, wheels = fetched
    victim = cache / "wheels" / wheels[1].name
    good = sha256(victim)
    _flip_byte(victim, 3000)
    dest = tmp_path / "dest"
    dest.mkdir()
    out = dest / ("demo-offline.tar" if fmt == "tar" else "demo-offline")
    res = _cli("bundle", str(lock), "--cache", str(cache), "-o", str(out), "--format", fmt, "--json")
    assert res.returncode == 3, res.stdout + res.stderr
    err = json.loads(res.stdout)
    assert wheels[1].name in err["message"] and good in err["message"] and sha256(victim) in err["message"]
    assert list(dest.iterdir()) == [], "no bundle, temp file or staging directory is left behind"


def test_tar_bundle_streams_exactly_the_cache_files_and_tar_reads_it(
        fetched: tuple[Path, Path, list[Path]], tmp_path: Path) -> None:
    lock, cache, _ = fetched
    out = tmp_path / "demo-offline.tar"
    info = bundle(lock, cache, out).to_dict()
    assert info["format"] == "tar" and info["bytes_written"] == out.stat().st_size == info["bytes"]
    members: dict[str, str] = {}
    with tarfile.open(out) as tf:
        for m in tf.getmembers():
            assert m.isfile() and m.uid == 0 and m.uname == ""
            if m.name.startswith("demo-offline/offline_cache/"):
                data = tf.extractfile(m).read()  # type: ignore[union-attr]
                members[m.name.removeprefix("demo-offline/offline_cache/")] = hashlib.sha256(data).hexdigest()
    listed = {e.file for e in load_manifest(cache).files}
    assert set(members) == listed | {"manifest.json"}
    assert members == {rel: sha256(cache / rel) for rel in members}
    # The hand-written archive is a tar as tar(1) sees it: same files, same bytes.
    unpacked = tmp_path / "by-tar"
    unpacked.mkdir()
    subprocess.run(["tar", "-xf", str(out), "-C", str(unpacked)], check=True)
    assert {k.removeprefix("offline_cache/"): v for k, v in _tree(unpacked / "demo-offline").items()
            if k.startswith("offline_cache/")} == members
    assert info["files"] == len(_tree(unpacked / "demo-offline"))


@pytest.mark.slow
@pytest.mark.skipif(not HAS_UNSHARE, reason="needs 'unshare -n' (user namespaces)")
def test_dir_bundle_hardlinks_the_cache_matches_the_tar_layout_and_installs_offline(
        fetched: tuple[Path, Path, list[Path]], tmp_path: Path) -> None:
    lock, cache, _ = fetched
    tar = tmp_path / "demo-offline.tar"
    bundle(lock, cache, tar)
    top = tmp_path / "rsync-me" / "demo-offline"
    res = _cli("bundle", str(lock), "--cache", str(cache), "--format", "dir", "-o", f"{top}/", "--json")
    assert res.returncode == 0, res.stderr
    info = json.loads(res.stdout)
    assert info["format"] == "dir" and info["top"] == "demo-offline"
    cache_files = [p for p in (top / "offline_cache").rglob("*") if p.is_file()]
    assert cache_files and info["hardlinked"] == len(cache_files)
    for p in cache_files:
        assert p.stat().st_ino == (cache / p.relative_to(top / "offline_cache")).stat().st_ino, p
    # Same layout and bytes as the extracted tar, README aside (it says how the bundle travels),
    # plus the marker that makes the directory envbuild's to replace.
    from_tar = _tree(safe_extract(tar, tmp_path / "x") / "demo-offline")
    as_dir = _tree(top)
    assert as_dir.pop(".envbuild-output")
    assert set(from_tar) == set(as_dir)
    assert {k: v for k, v in from_tar.items() if k != "README.txt"} == \
        {k: v for k, v in as_dir.items() if k != "README.txt"}
    assert "rsync" in (top / "README.txt").read_text()
    assert _cli("verify-cache", str(top / "offline_cache"), "--lock", str(top / "lockfiles" / "demo")
                ).returncode == 0

    proc = _offline(["bash", str(top / "install-offline.sh")], cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    check = _offline([str(top / "env" / "bin" / "python"), "-c",
                      "import alpha, beta, mypkg; print(alpha.__version__, beta.__version__)"], cwd=tmp_path)
    assert check.returncode == 0 and check.stdout.split() == ["1.0", "2.0"], check.stderr


@pytest.fixture(scope="module")
def big_cache(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A lock of two 2 MB wheels fetched into a cache: big enough for du to tell one copy from two."""
    base = tmp_path_factory.mktemp("big")
    idx = base / "idx"
    wheels = [make_wheel(idx, "gamma", "1.0", payload=2_000_000),
              make_wheel(idx, "delta", "1.0", payload=2_000_000)]
    with serve(idx) as srv:
        lock = write_lock(base / "lockfiles" / "big", [wheel_artifact(srv, w) for w in wheels], name="big")
        cache = base / "offline_cache"
        fetch(lock, cache, show_progress=False)
    return lock, cache


def test_dir_bundle_takes_the_cache_size_on_disk_once_the_tar_twice(big_cache: tuple[Path, Path]) -> None:
    lock, cache = big_cache
    side = cache.parent
    as_dir = bundle(lock, cache, side / "big-offline", fmt="dir")
    as_tar = bundle(lock, cache, side / "big-offline.tar")
    try:
        cache_du = _du(cache)
        apparent = sum(p.stat().st_size for p in (side / "big-offline" / "offline_cache").rglob("*")
                       if p.is_file())
        assert apparent >= 4_000_000, "the directory shows every cache byte"
        # du counts the hardlinks once: cache + dir bundle is one cache plus the scripts.
        assert _du(cache, side / "big-offline") < cache_du * 1.1
        assert as_dir.bytes_written < 200_000 and as_dir.hardlinked == 3
        # The tar is the second copy the dir avoids (and proves this measure can tell).
        assert _du(cache, side / "big-offline.tar") > cache_du * 1.9
        assert as_tar.bytes_written >= apparent
    finally:
        shutil.rmtree(side / "big-offline")
        (side / "big-offline.tar").unlink()


@pytest.mark.skipif(not HAS_UNSHARE, reason="needs 'unshare' (user and mount namespaces)")
@pytest.mark.parametrize("fmt", ["tar", "dir"])
def test_bundle_that_cannot_fit_is_refused_before_writing(big_cache: tuple[Path, Path], tmp_path: Path,
                                                         fmt: str) -> None:
    """A real 1 MB tmpfs (another file system: the dir format must copy) cannot hold a 4 MB bundle."""
    lock, cache = big_cache
    small = tmp_path / "small"
    small.mkdir()
    out = small / ("big-offline.tar" if fmt == "tar" else "big-offline")
    script = (f'mount -t tmpfs -o size=1m tmpfs "$1" && "$2" -m envbuild bundle "$3" --cache "$4" '
              f'--format {fmt} -o "$5" --json; rc=$?; ls -A "$1"; exit $rc')
    proc = subprocess.run(["unshare", "-rm", "sh", "-c", script, "sh", str(small), sys.executable, str(lock),
                           str(cache), str(out)], capture_output=True, text=True, check=False)
    if "mount" in proc.stderr and proc.returncode != 3:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
    assert proc.returncode == 3, proc.stdout + proc.stderr
    text, _, listing = proc.stdout.rpartition("}")
    err = json.loads(text + "}")
    assert "not enough free space" in err["message"] and str(small) in err["message"]
    assert listing.strip() == "", "nothing was written into the full file system"


@pytest.mark.skipif(not HAS_UNSHARE, reason="needs 'unshare' (user and mount namespaces)")
def test_dir_bundle_on_another_file_system_copies_the_checked_bytes(
        fetched: tuple[Path, Path, list[Path]], tmp_path: Path) -> None:
    lock, cache, _ = fetched
    other = tmp_path / "other-fs"
    other.mkdir()
    top = other / "demo-offline"
    script = ('mount -t tmpfs -o size=64m tmpfs "$1" && "$2" -m envbuild bundle "$3" --cache "$4" '
              '--format dir -o "$5" --json && echo "---" && cd "$5" && find . -type f -exec sha256sum {} +')
    proc = subprocess.run(["unshare", "-rm", "sh", "-c", script, "sh", str(other), sys.executable, str(lock),
                           str(cache), str(top)], capture_output=True, text=True, check=False)
    if "mount" in proc.stderr and proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    text, _, sums = proc.stdout.partition("---")
    info = json.loads(text)
    assert info["hardlinked"] == 0, "no hardlink across file systems: every file is a copy"
    copied = {line.split(maxsplit=1)[1].removeprefix("./offline_cache/"): line.split()[0]
              for line in sums.strip().splitlines() if "./offline_cache/" in line}
    assert copied == {rel: sha256(cache / rel) for rel in copied}
    assert set(copied) == {e.file for e in load_manifest(cache).files} | {"manifest.json"}
    assert info["bytes_written"] >= sum((cache / rel).stat().st_size for rel in copied)


def test_dir_bundle_replaces_only_its_own_directory(fetched: tuple[Path, Path, list[Path]],
                                                    tmp_path: Path) -> None:
    lock, cache, _ = fetched
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    res = _cli("bundle", str(lock), "--cache", str(cache), "--format", "dir", "-o", str(foreign), "--json")
    assert res.returncode == 2, res.stdout + res.stderr
    assert sorted(p.name for p in foreign.iterdir()) == ["notes.txt"]
    assert (foreign / "notes.txt").read_text() == "keep me"
    top = tmp_path / "demo-offline"
    first = bundle(lock, cache, top, fmt="dir")
    again = bundle(lock, cache, top, fmt="dir")  # envbuild's own directory: replaced, same content
    assert first.files == again.files and (top / "install-offline.sh").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "no temp directory left"
