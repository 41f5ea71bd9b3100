"""Every module imports, and the CLI answers --version and --help."""

from __future__ import annotations

import importlib
import pkgutil
import subprocess
import sys

import envbuild


def test_every_module_imports() -> None:
    for mod in pkgutil.walk_packages(envbuild.__path__, "envbuild."):
        importlib.import_module(mod.name)


def test_python_dash_m_version() -> None:
    out = subprocess.run([sys.executable, "-m", "envbuild", "--version"], capture_output=True,
                         text=True, check=True)
    assert out.stdout.strip() == f"envbuild {envbuild.__version__}"


def test_user_text_with_markup_and_bad_bytes_reaches_the_user_verbatim() -> None:
    """The real entry point: '[/]' and '[bold]' print as typed; non-UTF-8 argv is exit 2, not a crash."""
    for req in ("numpy[/]", "x[bold]y"):
        out = subprocess.run([sys.executable, "-m", "envbuild", "resolve", req, "--python", "3.11", "--cpu"],
                             capture_output=True, text=True)
        assert out.returncode == 2 and req in out.stderr and "Traceback" not in out.stderr
    out = subprocess.run([sys.executable.encode(), b"-m", b"envbuild", b"resolve", b"caf\xe9", b"--cpu"],
                         capture_output=True)
    assert out.returncode == 2 and b"Traceback" not in out.stderr and b"UTF-8" in out.stderr


def test_debug_flag_is_global() -> None:
    out = subprocess.run([sys.executable, "-m", "envbuild", "--debug", "matrix", "nosuch"],
                         capture_output=True, text=True)
    assert out.returncode == 2 and "Traceback" not in out.stderr
