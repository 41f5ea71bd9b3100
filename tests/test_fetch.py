"""envbuild fetch against a real local index over HTTP: hashes, skips, resume, target tags, git, conda."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from fetch_fixture import git_repo, make_sdist, make_wheel, serve, sha256, wheel_artifact, write_lock

from envbuild.errors import HashMismatch, InputError
from envbuild.fetch import fetch, load_manifest
from envbuild.lockfile import load_lock


def _cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "envbuild", *args], capture_output=True, text=True,
                          cwd=cwd, env={**os.environ, "COLUMNS": "200"}, check=False)


def _file_requests(srv: Any) -> list[dict[str, Any]]:
    return [e for e in srv.log if e["path"].startswith("/files/")]


def test_fetch_downloads_verifies_and_then_skips_without_requests(tmp_path: Path) -> None:
    idx = tmp_path / "idx"
    wheels = [make_wheel(idx, f"pkg{i}", "1.0", payload=20_000 * (i + 1)) for i in range(4)]
    with serve(idx) as srv:
        lock = write_lock(tmp_path / "lock", [wheel_artifact(srv, w) for w in wheels],
                          index_urls=[srv.simple])
        cache = tmp_path / "cache"
        res = fetch(lock, cache, jobs=4, show_progress=False)
        assert (res.downloaded, res.skipped, res.files) == (4, 0, 4)
        manifest = load_manifest(cache)
        assert manifest.lock_name == "demo"
        lock_json = json.loads((lock / "envbuild.lock.json").read_text())
        assert manifest.lock_spec_hash == lock_json["spec_hash"]
        for w in wheels:
            entry = next(e for e in manifest.files if e.file == f"wheels/{w.name}")
            assert entry.sha256 == sha256(w) == sha256(cache / "wheels" / w.name)
            assert entry.size == w.stat().st_size
            assert entry.url == srv.file_url(w.name)
            assert entry.kind == "wheel"
        assert not list(cache.rglob("*.part"))

        before = len(_file_requests(srv))
        out = _cli("fetch", str(lock), "--cache", str(cache), "--json")
        assert out.returncode == 0, out.stderr
        summary = json.loads(out.stdout)
        assert summary["skipped"] == 4 and summary["downloaded"] == 0
        assert {"files", "bytes", "downloaded", "skipped", "seconds", "mb_per_s"} <= summary.keys()
        assert len(_file_requests(srv)) == before, "files already in the cache must not be requested"


def test_wrong_hash_is_refused_and_nothing_lands(tmp_path: Path) -> None:
    idx = tmp_path / "idx"
    good = make_wheel(idx, "good", "1.0")
    bad = make_wheel(idx, "bad", "1.0")
    with serve(idx) as srv:
        wrong = "0" * 64
        lock = write_lock(tmp_path / "lock", [wheel_artifact(srv, good),
                                              wheel_artifact(srv, bad, sha256=wrong)])
        cache = tmp_path / "cache"
        with pytest.raises(HashMismatch) as ei:
            fetch(lock, cache, show_progress=False)
    text = ei.value.render()
    assert bad.name in text and wrong in text and sha256(bad) in text
    assert not (cache / "wheels" / bad.name).exists()
    assert not list(cache.rglob("*.part")), "a refused download leaves no partial file"
    assert not (cache / "manifest.json").exists(), "no manifest for an incomplete cache"
    assert (cache / "wheels" / good.name).exists(), "good files are kept for the next run"


def test_partial_file_is_resumed_with_range_and_corrupt_partial_restarted(tmp_path: Path) -> None:
    idx = tmp_path / "idx"
    a = make_wheel(idx, "alpha", "1.0", payload=300_000)
    b = make_wheel(idx, "beta", "1.0", payload=300_000)
    with serve(idx) as srv:
        lock = write_lock(tmp_path / "lock", [wheel_artifact(srv, a), wheel_artifact(srv, b)])
        cache = tmp_path / "cache"
        (cache / "wheels").mkdir(parents=True)
        (cache / ".envbuild-output").write_text('{"files": []}')  # left by the interrupted fetch
        half = a.stat().st_size // 2
        (cache / "wheels" / f"{a.name}.part").write_bytes(a.read_bytes()[:half])
        (cache / "wheels" / f"{b.name}.part").write_bytes(b"garbage" * 1000)  # not a prefix of b
        res = fetch(lock, cache, show_progress=False)
        ra = srv.requests_for(a.name)
        rb = srv.requests_for(b.name)
    assert [r["range"] for r in ra] == [f"bytes={half}-"], "the good partial is resumed, not restarted"
    assert rb[0]["range"] == "bytes=7000-" and rb[-1]["range"] is None, "a bad partial is started over"
    assert sha256(cache / "wheels" / a.name) == sha256(a)
    assert sha256(cache / "wheels" / b.name) == sha256(b)
    assert res.resumed == 1 and res.downloaded == 2


def test_fetch_killed_midway_does_not_download_finished_files_twice(tmp_path: Path) -> None:
    idx = tmp_path / "idx"
    small = [make_wheel(idx, f"small{i}", "1.0", payload=5_000) for i in range(2)]
    big = make_wheel(idx, "big", "1.0", payload=1_500_000)
    with serve(idx, slow={big.name: 300_000}) as srv:
        lock = write_lock(tmp_path / "lock", [wheel_artifact(srv, w) for w in [*small, big]])
        cache = tmp_path / "cache"
        proc = subprocess.Popen([sys.executable, "-m", "envbuild", "fetch", str(lock), "--cache", str(cache),
                                 "--jobs", "3"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        part = cache / "wheels" / f"{big.name}.part"
        deadline = time.time() + 30
        while time.time() < deadline:
            done = all((cache / "wheels" / w.name).exists() for w in small)
            if done and part.exists() and part.stat().st_size > 0:
                break
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert not (cache / "wheels" / big.name).exists(), "the big file was still downloading"
        assert part.exists() and 0 < part.stat().st_size < big.stat().st_size
        assert not (cache / "manifest.json").exists()
        first_run = len(srv.log)

        srv.slow.clear()
        out = _cli("fetch", str(lock), "--cache", str(cache), "--json")
        assert out.returncode == 0, out.stderr
        second = srv.log[first_run:]
    summary = json.loads(out.stdout)
    assert summary["skipped"] == 2 and summary["downloaded"] == 1
    assert not [e for e in second if any(e["path"].endswith(w.name) for w in small)], \
        "finished files were requested again"
    big_reqs = [e for e in second if e["path"].endswith(big.name)]
    assert len(big_reqs) == 1 and big_reqs[0]["range"] is not None and big_reqs[0]["range"] != "bytes=0-"
    assert summary["resumed"] == 1
    assert sha256(cache / "wheels" / big.name) == sha256(big)
    files = {e.file for e in load_manifest(cache).files}
    assert files == {f"wheels/{w.name}" for w in [*small, big]}


def test_target_python_and_platform_decide_the_files(tmp_path: Path) -> None:
    """A Python 3.8 / manylinux2014 lock gets cp38 wheels, and sdist build requirements for cp38."""
    idx = tmp_path / "idx"
    cp38 = make_wheel(idx, "fastmod", "1.0", "cp38-cp38-manylinux2014_x86_64")
    make_wheel(idx, "fastmod", "1.0", "cp311-cp311-manylinux2014_x86_64")
    sd = make_sdist(idx, "slowpkg", "2.0", build_requires=["setuptools>=59", "backendx"])
    make_wheel(idx, "backendx", "1.0")
    make_wheel(idx, "setuptools", "60.0.0")
    make_wheel(idx, "wheel", "0.40.0")
    make_wheel(idx, "cybuild", "3.0", "cp38-cp38-manylinux2014_x86_64")
    make_wheel(idx, "cybuild", "3.0", "cp311-cp311-manylinux2014_x86_64")
    with serve(idx) as srv:
        arts = [wheel_artifact(srv, cp38), wheel_artifact(srv, sd, requires=["cybuild>=3", "fastmod"])]
        lock = write_lock(tmp_path / "lock", arts, python="3.8", pip_platform="manylinux2014_x86_64",
                          index_urls=[srv.simple])
        cache = tmp_path / "cache"
        res = fetch(lock, cache, show_progress=False)
    wheels = sorted(p.name for p in (cache / "wheels").iterdir())
    assert wheels == sorted([cp38.name, sd.name])
    build = sorted(p.name for p in (cache / "build").iterdir())
    assert build == ["backendx-1.0-py3-none-any.whl", "cybuild-3.0-cp38-cp38-manylinux2014_x86_64.whl",
                     "setuptools-60.0.0-py3-none-any.whl", "wheel-0.40.0-py3-none-any.whl"]
    # The lock's requires and the sdist's own pyproject.toml; fastmod is in the lock already.
    assert list(res.build_requirements) == ["backendx", "cybuild>=3", "setuptools>=59", "wheel"]
    entries = {e.file: e for e in load_manifest(cache).files}
    for name in build:
        e = entries[f"build/{name}"]
        assert e.kind == "build-req" and e.sha256 == sha256(idx / name)
        assert e.url.endswith(name)


def test_git_dependency_built_into_a_wheel_at_the_locked_commit(tmp_path: Path) -> None:
    repo, commits = git_repo(tmp_path / "mypkg")
    url = repo.as_uri()
    lock = write_lock(tmp_path / "lock", [{"name": "mypkg", "version": "1.0", "kind": "git", "url": url,
                                           "commit": commits[0]}])
    cache = tmp_path / "cache"
    res = fetch(lock, cache, show_progress=False)
    whl = cache / "git" / "mypkg-1.0-py3-none-any.whl"
    assert whl.exists()
    import zipfile

    with zipfile.ZipFile(whl) as zf:
        assert "COMMIT_MARK = 'v1.0'" in zf.read("mypkg/__init__.py").decode()
    (entry,) = [e for e in load_manifest(cache).files if e.kind == "git-wheel"]
    assert entry.commit == commits[0] and entry.sha256 == sha256(whl) and entry.url == url
    assert res.git[0]["commit"] == commits[0]
    # Run again: the intact wheel at that commit is reused, not rebuilt.
    mtime = whl.stat().st_mtime_ns
    res2 = fetch(lock, cache, show_progress=False)
    assert res2.skipped == 1 and whl.stat().st_mtime_ns == mtime


def test_git_commit_not_in_repository_fails_clearly(tmp_path: Path) -> None:
    repo, _ = git_repo(tmp_path / "mypkg")
    lock = write_lock(tmp_path / "lock", [{"name": "mypkg", "version": "1.0", "kind": "git",
                                           "url": repo.as_uri(), "commit": "1" * 40}])
    out = _cli("fetch", str(lock), "--cache", str(tmp_path / "cache"), "--json")
    assert out.returncode == 4
    err = json.loads(out.stdout)
    assert err["ok"] is False and "1111111111" in err["message"]


def _conda_package_to_serve(tmp_path: Path) -> tuple[Path, Path]:
    """A real linux-64 .conda package (libdemo 1.2) and a flat directory serving it."""
    from conda_fixture import build_conda_package

    pkg = build_conda_package(tmp_path / "src", "libdemo", "1.2", subdir="linux-64",
                              files={"lib/demo.txt": "x"})
    flat = tmp_path / "idx"
    flat.mkdir()
    (flat / pkg.name).write_bytes(pkg.read_bytes())
    return pkg, flat


def test_conda_packages_land_in_an_indexed_local_channel(tmp_path: Path) -> None:
    pkg, flat = _conda_package_to_serve(tmp_path)
    with serve(flat) as srv:
        lock = write_lock(tmp_path / "lock", [{"name": "libdemo", "version": "1.2", "kind": "conda",
                                               "url": srv.file_url(pkg.name), "sha256": sha256(pkg),
                                               "filename": pkg.name, "subdir": "linux-64"}])
        cache = tmp_path / "cache"
        res = fetch(lock, cache, show_progress=False)
    assert (cache / "conda" / "linux-64" / pkg.name).exists()
    repodata = json.loads((cache / "conda" / "linux-64" / "repodata.json").read_text())
    assert pkg.name in repodata.get("packages.conda", {})
    assert (cache / "conda" / "noarch" / "repodata.json").exists()
    assert set(res.conda_subdirs) == {"linux-64", "noarch"}
    # The channel works for a real conda client: rattler solves against it by file:// URL.
    import asyncio

    import rattler

    recs = asyncio.run(rattler.solve([rattler.Channel((cache / "conda").as_uri())], ["libdemo"],
                                     platforms=["linux-64", "noarch"]))
    assert [str(r.name.normalized) for r in recs] == ["libdemo"]


def test_a_conda_file_without_subdir_is_where_fetch_render_and_verify_all_look(tmp_path: Path) -> None:
    """One rule (LockedArtifact.cache_path): no subdir of its own -> the lock's platform subdir."""
    from envbuild.bundle import verify_cache
    from envbuild.render import render

    pkg, flat = _conda_package_to_serve(tmp_path)
    with serve(flat) as srv:
        lock = write_lock(tmp_path / "lock", [{"name": "libdemo", "version": "1.2", "kind": "conda",
                                               "url": srv.file_url(pkg.name), "sha256": sha256(pkg),
                                               "filename": pkg.name}], conda_subdir="linux-64")
        render(lock, tmp_path / "site", manager="venv")
        cache = tmp_path / "site" / "offline_cache"
        fetch(lock, cache, show_progress=False)
    rel = f"conda/linux-64/{pkg.name}"
    assert (cache / rel).is_file()
    assert {e.file for e in load_manifest(cache).files} == {rel}
    assert f"check {rel} {sha256(pkg)}" in (tmp_path / "site" / "install-offline.sh").read_text()
    report = verify_cache(cache, lock)
    assert report.ok and report.checked == 1, report.problems


def test_malformed_lock_names_file_and_field(tmp_path: Path) -> None:
    lock = write_lock(tmp_path / "lock", [{"name": "x", "version": "1", "kind": "wheel",
                                           "url": "http://127.0.0.1:9/x-1-py3-none-any.whl",
                                           "sha256": "abc", "filename": "x-1-py3-none-any.whl"}])
    with pytest.raises(InputError) as ei:
        load_lock(lock)
    assert ei.value.field == "artifacts[0].sha256" and "envbuild.lock.json" in str(ei.value.path)
    out = _cli("fetch", str(tmp_path / "nolock"), "--json")
    assert out.returncode == 2 and "cannot read the lock" in json.loads(out.stdout)["message"]
    evil = write_lock(tmp_path / "evil", [{"name": "x", "version": "1", "kind": "wheel",
                                           "url": "http://127.0.0.1:9/x.whl", "sha256": "a" * 64,
                                           "filename": "../../x.whl"}])
    with pytest.raises(InputError, match="unsafe"):
        load_lock(evil)


def test_git_dependency_with_c_extension_is_kept_as_source_with_build_requirements(tmp_path: Path) -> None:
    """Not pure Python: the exact source at the commit (git archive) plus its build requirements."""
    repo, commits = git_repo(tmp_path / "cext", name="cext", versions=("0.1",))
    (repo / "speed.c").write_text(
        "#include <Python.h>\nstatic struct PyModuleDef m = {PyModuleDef_HEAD_INIT, \"speed\", 0, -1, 0};\n"
        "PyMODINIT_FUNC PyInit_speed(void) { return PyModule_Create(&m); }\n")
    (repo / "setup.py").write_text("from setuptools import Extension, setup\n"
                                   "setup(ext_modules=[Extension('speed', ['speed.c'])])\n")
    subprocess.run(["git", "add", "-A"], cwd=repo, check=True)
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@e.invalid", "commit", "-q", "-m", "C"],
                   cwd=repo, check=True)
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True,
                            check=True).stdout.strip()
    idx = tmp_path / "idx"
    make_wheel(idx, "setuptools", "61.0.0")
    make_wheel(idx, "wheel", "0.40.0")
    with serve(idx) as srv:
        lock = write_lock(tmp_path / "lock", [{"name": "cext", "version": "0.1", "kind": "git",
                                               "url": repo.as_uri(), "commit": commit}],
                          index_urls=[srv.simple])
        cache = tmp_path / "cache"
        res = fetch(lock, cache, show_progress=False)
    (entry,) = [e for e in load_manifest(cache).files if e.kind.startswith("git")]
    assert entry.kind == "git-sdist" and entry.commit == commit
    assert entry.file == f"git/cext-0.1-{commit[:12]}.tar.gz"
    import tarfile

    with tarfile.open(cache / entry.file) as tf:
        assert tarfile.TarFile.extractfile(tf, "cext-0.1/speed.c") is not None
    assert not list((cache / "git").glob("*.whl")), "a cp311 wheel built on this host is not kept"
    assert sorted(p.name for p in (cache / "build").iterdir()) == [
        "setuptools-61.0.0-py3-none-any.whl", "wheel-0.40.0-py3-none-any.whl"]
    assert "setuptools>=61" in res.build_requirements
    assert commits[0] != commit


def test_missing_file_on_the_server_fails_naming_it(tmp_path: Path) -> None:
    idx = tmp_path / "idx"
    w = make_wheel(idx, "gone", "1.0")
    with serve(idx) as srv:
        art = wheel_artifact(srv, w)
        w.unlink()
        lock = write_lock(tmp_path / "lock", [art])
        out = _cli("fetch", str(lock), "--cache", str(tmp_path / "cache"), "--json")
        assert len(srv.requests_for(w.name)) == 1, "a 404 is not retried"
    assert out.returncode == 3
    err = json.loads(out.stdout)
    assert err["error"] == "FetchError" and "HTTP 404" in err["message"] and w.name in err["path"]


def test_ctrl_c_stops_downloads_promptly_and_keeps_the_partial_file(tmp_path: Path) -> None:
    idx = tmp_path / "idx"
    big = make_wheel(idx, "big", "1.0", payload=2_000_000)
    with serve(idx, slow={big.name: 200_000}) as srv:
        lock = write_lock(tmp_path / "lock", [wheel_artifact(srv, big)])
        cache = tmp_path / "cache"
        proc = subprocess.Popen([sys.executable, "-m", "envbuild", "fetch", str(lock), "--cache", str(cache)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        part = cache / "wheels" / f"{big.name}.part"
        deadline = time.time() + 20
        while time.time() < deadline and not (part.exists() and part.stat().st_size > 0):
            time.sleep(0.05)
        t0 = time.time()
        proc.send_signal(signal.SIGINT)
        rc = proc.wait(timeout=30)
        stopped_in = time.time() - t0
    assert rc != 0
    assert stopped_in < 3, f"took {stopped_in:.1f} s to stop; the file alone needs ~10 s"
    assert part.exists() and not (cache / "wheels" / big.name).exists()


def test_file_urls_from_a_local_find_links_directory_are_copied_and_checked(tmp_path: Path) -> None:
    w = make_wheel(tmp_path / "links", "localpkg", "0.3")
    art = {"name": "localpkg", "version": "0.3", "kind": "wheel", "url": w.as_uri(), "sha256": sha256(w),
           "filename": w.name}
    res = fetch(write_lock(tmp_path / "lock", [art]), tmp_path / "cache", show_progress=False)
    assert res.downloaded == 1 and sha256(tmp_path / "cache" / "wheels" / w.name) == sha256(w)
    bad = write_lock(tmp_path / "lock2", [{**art, "sha256": "f" * 64}])
    with pytest.raises(HashMismatch):
        fetch(bad, tmp_path / "cache2", show_progress=False)
    assert not list((tmp_path / "cache2").rglob("*.whl*"))


def test_a_silent_index_fails_fetch_within_ten_seconds(tmp_path: Path) -> None:
    """A port that accepts connections and never answers: fetch gives up within the bound, exit 3."""
    import socket
    import threading

    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(64)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(srv.accept()[0])  # never read from, never answered
            except OSError:
                continue

    threading.Thread(target=accept, daemon=True).start()
    port = srv.getsockname()[1]
    arts = [{"name": f"pkg{i}", "version": "1.0", "kind": "wheel", "sha256": "ab" * 32,
             "filename": f"pkg{i}-1.0-py3-none-any.whl",
             "url": f"http://127.0.0.1:{port}/files/pkg{i}-1.0-py3-none-any.whl"} for i in range(12)]
    lock = write_lock(tmp_path / "lock", arts, index_urls=[f"http://127.0.0.1:{port}/simple"])
    from envbuild.errors import FetchError

    try:
        t0 = time.monotonic()
        # In-process, so the bound is the network wait's, not the interpreter start-up's on a loaded box.
        with pytest.raises(FetchError) as info:
            fetch(lock, tmp_path / "cache", jobs=4, show_progress=False)
        took = time.monotonic() - t0
    finally:
        stop.set()
        for c in held:
            c.close()
        srv.close()
    assert info.value.exit_code == 3
    assert "did not answer" in (info.value.hint or "")
    print(f"silent index: fetch failed after {took:.1f} s")
    # 12 files over 4 workers: the others are not tried one after another against the silent server.
    assert took <= 10, took


def test_two_concurrent_fetches_into_one_cache_download_each_file_once(tmp_path: Path) -> None:
    """Two real ``envbuild fetch`` processes, one cache: one lock per artifact, so each file is
    downloaded by one of them, the other finds it complete, and both succeed with intact files."""
    idx = tmp_path / "idx"
    wheels = [make_wheel(idx, f"pkg{i}", "1.0", payload=200_000) for i in range(4)]
    # Throttled (about 1.5 s a file), so the two runs overlap on every file.
    with serve(idx, slow={w.name: 150_000 for w in wheels}) as srv:
        lock = write_lock(tmp_path / "lock", [wheel_artifact(srv, w) for w in wheels])
        cache = tmp_path / "cache"
        cmd = [sys.executable, "-m", "envbuild", "fetch", str(lock), "--cache", str(cache), "--jobs", "2",
               "--json"]
        procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for _ in range(2)]
        outs = [p.communicate(timeout=120) for p in procs]
        gets = {w.name: srv.requests_for(w.name) for w in wheels}
    for p, (out, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, out + err
    results = [json.loads(out) for out, _ in outs]
    assert sum(r["downloaded"] for r in results) == 4
    assert sum(r["skipped"] for r in results) == 4
    assert all(len(g) == 1 for g in gets.values()), {k: len(v) for k, v in gets.items()}
    for w in wheels:
        assert sha256(cache / "wheels" / w.name) == sha256(w)
    assert not list(cache.rglob("*.part"))
    assert {e.file for e in load_manifest(cache).files} == {f"wheels/{w.name}" for w in wheels}
