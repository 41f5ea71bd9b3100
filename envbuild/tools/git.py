"""git adapter: turn a branch or tag into a commit (``git ls-remote``) and check out an exact commit."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path

from envbuild.errors import InputError, ToolError
from envbuild.tools._run import ToolFailed, redact, run, split_credentials

__all__ = ["checkout", "is_full_sha", "pip_git_url", "resolve_ref"]

_FULL_SHA = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")
_SHORT_SHA = re.compile(r"[0-9a-f]{7,39}")
# Never let git stop to ask for a password: a lock must fail, not hang.
_ENV = {"GIT_TERMINAL_PROMPT": "0", "GIT_ASKPASS": "true", "LC_ALL": "C"}
_HINT = "Check the URL and that the ref exists ('git ls-remote URL' shows the refs)."


def is_full_sha(ref: str) -> bool:
    """True for a full 40 (sha1) or 64 (sha256) hex commit id."""
    return bool(_FULL_SHA.fullmatch(ref.lower()))


def pip_git_url(url: str) -> str:
    """The repository URL to write after ``git+`` in a pip requirement ``name @ git+URL@COMMIT``.

    pip's PEP 508 parser rejects ``git+file:///path`` (no host) while git and pip both take
    ``file://localhost/path``; a bare local path becomes that form too.
    """
    if url.startswith("file:///"):
        return "file://localhost/" + url[len("file:///"):]
    if url.startswith("/"):
        return "file://localhost" + url
    return url


def _auth(url: str) -> tuple[str, dict[str, str]]:
    """(URL without credentials, environment giving git them as an HTTP header) -- never on argv."""
    import base64

    clean, user, password = split_credentials(url)
    if user is None or not clean.lower().startswith(("http://", "https://")):
        return url, dict(_ENV)
    from urllib.parse import urlsplit

    token = base64.b64encode(f"{user}:{password or ''}".encode()).decode()
    parts = urlsplit(clean)
    # Scoped to this host: a submodule elsewhere never receives the header.
    return clean, {**_ENV, "GIT_CONFIG_COUNT": "1",
                   "GIT_CONFIG_KEY_0": f"http.{parts.scheme}://{parts.netloc}/.extraHeader",
                   "GIT_CONFIG_VALUE_0": f"Authorization: Basic {token}"}


def _check_url(url: str) -> str:
    if not url or url.startswith("-"):
        raise InputError(f"'{url}' is not a git repository URL.", field="git",
                         hint="Write 'name @ git+https://host/repo.git@REF'.")
    return url


def resolve_ref(url: str, ref: str | None) -> str:
    """Resolve a branch, tag (peeled to its commit) or sha of ``url`` to a full commit sha.

    A full sha passes through untouched (no network).  ``ref=None`` means the remote HEAD.

    Raises:
        ToolError: git failed (unreachable repository) or the ref does not exist.
    """
    _check_url(url)
    if ref and is_full_sha(ref):
        return ref.lower()
    clean, env = _auth(url)
    try:
        proc = run(["git", "ls-remote", clean], env=env, timeout=120, tool="git", hint=_HINT)
    except ToolFailed as exc:
        raise ToolError(f"cannot list the refs of {redact(url)}: {exc.stderr.strip()[-400:]}",
                        field="git", hint=_HINT) from None
    refs: dict[str, str] = {}
    for line in proc.stdout.splitlines():
        sha, _, name = line.partition("\t")
        if sha and name:
            refs[name.strip()] = sha.strip()
    if ref is None:
        if "HEAD" in refs:
            return refs["HEAD"]
        raise ToolError(f"{redact(url)} has no HEAD.", field="git", hint="Name a branch, tag or commit.")
    # A peeled annotated tag names the commit; the plain tag ref names the tag object.
    for name in (f"refs/tags/{ref}^{{}}", f"refs/tags/{ref}", f"refs/heads/{ref}", ref,
                 f"refs/{ref}"):
        if name in refs:
            return refs[name]
    if _SHORT_SHA.fullmatch(ref.lower()):
        return _expand_short_sha(url, ref.lower())
    raise ToolError(f"{redact(url)} has no branch or tag named '{ref}'.", field="git", hint=_HINT)


def _expand_short_sha(url: str, short: str) -> str:
    # ls-remote lists only refs, so an abbreviated commit needs the history.
    tmp = Path(tempfile.mkdtemp(prefix="envbuild-git-"))
    try:
        clean, env = _auth(url)
        run(["git", "clone", "--quiet", "--bare", "--filter=blob:none", clean, str(tmp / "r")],
            env=env, timeout=600, tool="git", hint=_HINT)
        proc = run(["git", "-C", str(tmp / "r"), "rev-parse", "--verify", "--quiet", f"{short}^{{commit}}"],
                   env=_ENV, tool="git", hint=f"'{short}' is not a commit of {redact(url)}.")
        return proc.stdout.strip()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def checkout(url: str, commit: str, dest: str | os.PathLike[str]) -> Path:
    """Clone ``url`` into ``dest`` (must not exist or be empty) at exactly ``commit``.

    Works for https://, file:// and plain local paths; submodules are checked out too.

    Raises:
        ToolError: git failed or HEAD did not end up at ``commit``.
    """
    _check_url(url)
    out = Path(dest)
    if out.exists() and any(out.iterdir()):
        raise ToolError(f"{out} exists and is not empty.", field="git", hint="Remove it first.")
    out.mkdir(parents=True, exist_ok=True)
    git = ["git", "-C", str(out)]
    run([*git, "init", "--quiet"], env=_ENV, tool="git")
    clean, env = _auth(url)
    run([*git, "remote", "add", "origin", clean], env=_ENV, tool="git")
    try:
        # Fetching just the commit is fast on GitHub; servers that refuse a bare sha get a full fetch.
        run([*git, "fetch", "--quiet", "--depth", "1", "origin", commit], env=env, timeout=600, tool="git")
    except ToolFailed:
        run([*git, "fetch", "--quiet", "--tags", "origin", "+refs/heads/*:refs/remotes/origin/*"],
            env=env, timeout=1800, tool="git", hint=_HINT)
    run([*git, "-c", "advice.detachedHead=false", "checkout", "--quiet", "--detach", commit],
        env=_ENV, tool="git", hint=f"Commit {commit} is not in {redact(url)}.")
    head = run([*git, "rev-parse", "HEAD"], env=_ENV, tool="git").stdout.strip()
    if head != commit.lower() and not head.startswith(commit.lower()):
        raise ToolError(f"checked out {head}, expected {commit}.", path=redact(url), field="git")
    if (out / ".gitmodules").exists():
        run([*git, "submodule", "update", "--init", "--recursive", "--depth", "1"], env=env,
            timeout=1800, tool="git")
    return out
