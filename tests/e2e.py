"""Helpers for end-to-end tests: run the CLI in a subprocess, run a command with no network."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

__all__ = ["HAS_UNSHARE", "envbuild", "offline"]

HAS_UNSHARE = shutil.which("unshare") is not None and subprocess.run(
    ["unshare", "-n", "true"], capture_output=True, check=False).returncode == 0


def envbuild(*args: str, cwd: Path, ok: bool = True) -> subprocess.CompletedProcess[str]:
    """``python -m envbuild ARGS`` in ``cwd``; with ``ok`` a non-zero exit fails the test."""
    proc = subprocess.run([sys.executable, "-m", "envbuild", *args], capture_output=True, text=True,
                          cwd=cwd, env={**os.environ, "COLUMNS": "200"}, check=False)
    if ok:
        assert proc.returncode == 0, f"envbuild {' '.join(args)}:\n{proc.stdout}\n{proc.stderr}"
    return proc


def offline(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run ``cmd`` in a new network namespace: not even loopback is up."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "UV_", "VIRTUAL_ENV"))}
    env["PIP_CONFIG_FILE"] = os.devnull
    return subprocess.run(["unshare", "-n", *cmd], capture_output=True, text=True, cwd=cwd, env=env,
                          check=False, timeout=600)
