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
