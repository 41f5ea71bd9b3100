"""git adapter against real repositories made by the test (local path and file:// URLs)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from envbuild.errors import ToolError
from envbuild.tools.git import checkout, resolve_ref

ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@e", "GIT_COMMITTER_NAME": "t",
       "GIT_COMMITTER_EMAIL": "t@e", "HOME": "/nonexistent", "GIT_CONFIG_NOSYSTEM": "1"}


def git(repo: Path, *args: str) -> str:
    import os

    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True,
                          env={**os.environ, **ENV}).stdout.strip()


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    r = tmp_path_factory.mktemp("git") / "pypcd"
    r.mkdir()
    git(r, "init", "--quiet", "-b", "master")
    shas: dict[str, str] = {}
    for i in range(3):
        (r / "setup.py").write_text(f"# version {i}\n")
        git(r, "add", "setup.py")
        git(r, "commit", "--quiet", "-m", f"c{i}")
        shas[f"c{i}"] = git(r, "rev-parse", "HEAD")
        if i == 0:
            git(r, "tag", "-a", "v0.1", "-m", "annotated")
        if i == 1:
            git(r, "tag", "light")
            git(r, "branch", "dev")
    return r, shas


def test_refs_resolve_to_commits(repo: tuple[Path, dict[str, str]]) -> None:
    path, shas = repo
    url = path.as_uri()
    assert resolve_ref(url, "master") == shas["c2"]
    assert resolve_ref(str(path), "dev") == shas["c1"]
    # An annotated tag is peeled to the commit, not the tag object.
    assert resolve_ref(url, "v0.1") == shas["c0"]
    assert git(path, "rev-parse", "v0.1") != shas["c0"]
    assert resolve_ref(url, "light") == shas["c1"]
    assert resolve_ref(url, None) == shas["c2"]
    assert resolve_ref(url, shas["c0"][:10]) == shas["c0"]
    # A full sha needs no lookup at all, even for a repository that does not exist.
    assert resolve_ref("file:///does/not/exist", shas["c1"].upper()) == shas["c1"]


def test_unknown_ref_and_repo_fail_clearly(repo: tuple[Path, dict[str, str]], tmp_path: Path) -> None:
    path, _ = repo
    with pytest.raises(ToolError, match="no branch or tag named 'nope'"):
        resolve_ref(path.as_uri(), "nope")
    with pytest.raises(ToolError, match="cannot list the refs"):
        resolve_ref((tmp_path / "missing").as_uri(), "master")


@pytest.mark.parametrize("as_uri", [True, False])
def test_checkout_exact_commit(repo: tuple[Path, dict[str, str]], tmp_path: Path, as_uri: bool) -> None:
    path, shas = repo
    url = path.as_uri() if as_uri else str(path)
    dest = checkout(url, shas["c1"], tmp_path / "co")
    assert git(dest, "rev-parse", "HEAD") == shas["c1"]
    assert (dest / "setup.py").read_text() == "# version 1\n"
    with pytest.raises(ToolError, match="not empty"):
        checkout(url, shas["c0"], dest)


def test_pip_git_url_spelling() -> None:
    from envbuild.tools.git import pip_git_url

    assert pip_git_url("file:///srv/repo") == "file://localhost/srv/repo"
    assert pip_git_url("/srv/repo") == "file://localhost/srv/repo"
    assert pip_git_url("https://github.com/klintan/pypcd.git") == "https://github.com/klintan/pypcd.git"
