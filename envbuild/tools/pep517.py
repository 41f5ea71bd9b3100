"""Ask a source tree's PEP 517 build backend what it adds at build time (``pyproject_hooks``).

``get_requires_for_build_wheel`` is what pip calls after installing ``[build-system] requires``
and before building: setuptools answers with a project's ``setup_requires``, scikit-build-core
with ``cmake``/``ninja`` when this machine has none, meson-python with ``ninja``.  Calling it runs
the project's own code (its backend, its setup.py) -- exactly what pip does when it builds the
sdist -- so it runs here in a throw-away venv, in a temporary directory, with a timeout and an
environment holding none of the user's variables (no tokens, no pip configuration, a scratch HOME).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import tomllib

from envbuild.errors import ToolError
from envbuild.tools._run import redact, run

__all__ = ["HOOK_TIMEOUT", "BuildSystem", "HookFailed", "get_requires_for_build_wheel", "make_build_env",
           "read_build_system"]

HOOK_TIMEOUT = 300.0
# PEP 517: a project without [build-system] (or without build-backend) is built by setuptools' legacy
# backend, with setuptools (>=40.8.0, as pip assumes) and wheel.
_LEGACY_BACKEND = "setuptools.build_meta:__legacy__"
_LEGACY_REQUIRES = ("setuptools>=40.8.0", "wheel")
# What the backend may see of this process's environment: where programs are, the locale, the time.
_KEEP_ENV = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "SOURCE_DATE_EPOCH")
_TAIL = 15


class HookFailed(Exception):
    """The backend could not be imported or its hook raised; ``str()`` is the end of its output."""


@dataclass(frozen=True)
class BuildSystem:
    """A source tree's ``[build-system]`` table, with PEP 517's defaults filled in."""

    requires: tuple[str, ...]
    backend: str
    backend_path: tuple[str, ...]


def read_build_system(src: Path) -> BuildSystem:
    """``[build-system]`` of ``src/pyproject.toml``; the legacy setuptools backend when it has none.

    Raises:
        HookFailed: the file is not TOML, or its table has the wrong types.
    """
    path = src / "pyproject.toml"
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise HookFailed(f"pyproject.toml cannot be read ({exc})") from None
    table = data.get("build-system")
    if not isinstance(table, dict):
        return BuildSystem(_LEGACY_REQUIRES, _LEGACY_BACKEND, ())
    requires = table.get("requires", list(_LEGACY_REQUIRES))
    backend = table.get("build-backend", _LEGACY_BACKEND)
    backend_path = table.get("backend-path", [])
    if not (isinstance(requires, list) and all(isinstance(r, str) for r in requires)
            and isinstance(backend, str)
            and isinstance(backend_path, list) and all(isinstance(p, str) for p in backend_path)):
        raise HookFailed("pyproject.toml's [build-system] requires/backend-path are not lists of strings "
                         "or build-backend is not a string")
    return BuildSystem(tuple(requires), backend, tuple(backend_path))


def make_build_env(work: Path, requires: Sequence[str], find_links: Sequence[Path],
                   index_args: Sequence[str]) -> Path:
    """A venv of this machine's Python in ``work`` holding ``requires``; returns its python.

    Wheels come from ``find_links`` only when they can (the cache fetch just filled); else also from
    ``index_args`` (the lock's indexes), when there are any.

    Raises:
        ToolError: venv or pip failed.
    """
    env_dir = work / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", str(env_dir)], tool="venv")
    python = env_dir / "bin" / "python"
    if not requires:
        return python
    base = [sys.executable, "-m", "pip", "--python", str(python), "install", "--isolated",
            "--disable-pip-version-check", "--no-input", "--quiet", "--only-binary=:all:"]
    for d in find_links:
        base += ["--find-links", str(d)]
    env = {"PIP_CONFIG_FILE": os.devnull}
    try:
        run([*base, "--no-index", *requires], tool="pip", env=env, drop_env=("PIP_",))
    except ToolError:
        if not index_args:
            raise
        # a wheel of the cache is for the target's Python only: this machine's from the index
        run([*base, *index_args, *requires], tool="pip", env=env, drop_env=("PIP_",))
    return python


def get_requires_for_build_wheel(src: Path, bs: BuildSystem, python: Path, work: Path,
                                 timeout: float = HOOK_TIMEOUT) -> list[str]:
    """What ``bs``'s backend, run by ``python`` in ``src``, asks for beyond ``bs.requires``.

    Raises:
        HookFailed: the backend is missing, raised, or ran longer than ``timeout`` seconds.
    """
    from pyproject_hooks import BackendUnavailable, BuildBackendHookCaller

    home = work / "home"
    tmp = work / "tmp"
    home.mkdir(parents=True, exist_ok=True)
    tmp.mkdir(parents=True, exist_ok=True)
    base_env = {k: os.environ[k] for k in _KEEP_ENV if k in os.environ}
    # A scratch HOME hides ~/.netrc, ~/.pypirc and pip.conf; pip called by a backend gets no index.
    base_env.update({"HOME": str(home), "TMPDIR": str(tmp), "PYTHONNOUSERSITE": "1",
                     "PIP_CONFIG_FILE": os.devnull, "PIP_NO_INDEX": "1", "PYTHONDONTWRITEBYTECODE": "1"})

    def runner(cmd: Sequence[str], cwd: str | None = None,
               extra_environ: Mapping[str, str] | None = None) -> None:
        try:
            proc = subprocess.run(list(cmd), cwd=cwd, env={**base_env, **(extra_environ or {})},
                                  capture_output=True, text=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            raise HookFailed(f"the backend did not answer within {timeout:.0f} s") from None
        if proc.returncode != 0:
            lines = (proc.stderr or proc.stdout or "").strip().splitlines()
            raise HookFailed(redact("\n".join(lines[-_TAIL:])) or f"exit code {proc.returncode}")

    caller = BuildBackendHookCaller(str(src), bs.backend, backend_path=list(bs.backend_path) or None,
                                    runner=runner, python_executable=str(python))
    try:
        answer = caller.get_requires_for_build_wheel()
    except BackendUnavailable as exc:
        tail = "\n".join(exc.traceback.strip().splitlines()[-_TAIL:])
        raise HookFailed(f"the backend {bs.backend!r} cannot be imported:\n{redact(tail)}") from None
    except HookFailed:
        raise
    except Exception as exc:  # pyproject_hooks' own checks (a backend-path outside the tree, ...)
        raise HookFailed(f"{type(exc).__name__}: {exc}") from None
    if not isinstance(answer, list) or not all(isinstance(r, str) for r in answer):
        raise HookFailed(f"get_requires_for_build_wheel returned {answer!r}, not a list of strings")
    return list(answer)
