"""Run an external tool; a failure becomes a ToolError naming the command and the end of stderr."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from envbuild.errors import ToolError

__all__ = ["ToolFailed", "redact", "run", "split_credentials"]

_TAIL_LINES = 25


class ToolFailed(ToolError):
    """A tool ran and exited non-zero; ``stderr`` and ``returncode`` let callers explain why."""

    def __init__(self, message: str, *, stderr: str, returncode: int, **kw: str | None) -> None:
        super().__init__(message, **kw)
        self.stderr = stderr
        self.returncode = returncode


# ssh URLs keep their user (git@host is an account name, not a secret).
_URL_START = re.compile(r"(?:git\+)?(?:https?|ftp|file)://", re.IGNORECASE)


def redact(text: str) -> str:
    """Drop ``user:password@`` / ``token@`` from every http(s)/ftp/file URL in ``text``.

    The authority of a URL runs to its first ``/``, ``?``, ``#`` or whitespace, and the userinfo to
    the authority's LAST ``@`` -- as ``urllib.parse`` splits it -- so a password holding an unencoded
    ``@``, a quote or any other byte is dropped whole.
    """
    out: list[str] = []
    pos = 0
    for m in _URL_START.finditer(text):
        if m.start() < pos:
            continue
        end = m.end()
        while end < len(text) and text[end] not in "/?#" and not text[end].isspace():
            end += 1
        authority = text[m.end():end]
        out.append(text[pos:m.end()])
        out.append(authority.rpartition("@")[2])
        pos = end
    out.append(text[pos:])
    return "".join(out)


def split_credentials(url: str) -> tuple[str, str | None, str | None]:
    """(the URL without userinfo, user, password), both decoded, parsed with ``urllib.parse``.

    A child process gets the URL without them on its command line and the credentials another
    way (environment variables, a netrc file), so they are never visible in ``ps``.
    """
    from urllib.parse import unquote, urlsplit, urlunsplit

    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url, None, None
    host = parts.netloc.rpartition("@")[2]
    user = unquote(parts.username or "")
    password = unquote(parts.password) if parts.password is not None else None
    return urlunsplit(parts._replace(netloc=host)), user, password


def run(
    cmd: Sequence[str | os.PathLike[str]],
    *,
    cwd: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    input: str | None = None,
    timeout: float | None = None,
    tool: str | None = None,
    hint: str | None = None,
    drop_env: tuple[str, ...] = (),
) -> subprocess.CompletedProcess[str]:
    """Run ``cmd`` capturing text output; raise ToolError (with stderr's tail) when it fails.

    ``env`` entries are added to the current environment, not substituted for it; variables
    starting with a ``drop_env`` prefix are removed first (a user's PIP_* must not leak in).
    """
    args = [os.fspath(c) for c in cmd]
    name = tool or Path(args[0]).name
    full_env = None
    if env is not None or drop_env:
        full_env = {k: v for k, v in os.environ.items() if not (drop_env and k.startswith(drop_env))}
        full_env.update(env or {})
    try:
        proc = subprocess.run(
            args, cwd=cwd, env=full_env, input=input, capture_output=True, text=True, timeout=timeout,
            check=False,
        )
    except FileNotFoundError:
        raise ToolError(f"'{name}' is not installed or not on PATH.", field=name,
                        hint=hint or f"Install {name} and try again.") from None
    except subprocess.TimeoutExpired:
        raise ToolError(f"'{redact(shlex.join(args))}' did not finish within {timeout:.0f} s.",
                        field=name, hint=hint) from None
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout or "").strip().splitlines()[-_TAIL_LINES:])
        raise ToolFailed(
            f"'{redact(shlex.join(args))}' failed with exit code {proc.returncode}:\n{redact(tail)}",
            field=name,
            hint=hint,
            stderr=redact(proc.stderr or ""),
            returncode=proc.returncode,
        )
    return proc
