"""``envbuild init``: write a commented envbuild.toml that loads with ``envbuild.spec.load_spec``."""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

from envbuild._fs import atomic_write
from envbuild.errors import InputError, SpecError
from envbuild.spec import Spec, load_spec

__all__ = ["TEMPLATE", "init_spec", "render"]

TEMPLATE = """\
# envbuild.toml: what this project's environment needs, independent of any machine.
#   envbuild probe -o targets/server.json            # on the target machine (or copy probe.py there)
#   envbuild resolve --spec envbuild.toml --target targets/server.json
# Lines starting with '#' are examples; uncomment what you need.

[project]
name = {name}
# Python X.Y of the environment; without it the target's Python is used.
{python_line}
# How the environment is made: conda | mamba | micromamba | venv
manager = {manager}
# PEP 508 requirements. envbuild adds what they imply (torch for mmcv, cupy -> cupy-cudaXXX)
# and pins every package so that they agree with each other and with the target's driver and GPU.
requirements = [
    # "torch",
    # "mmcv-full==1.4.0",
    # "mmdet==2.19.0",
    # "mmsegmentation==0.20.0",
    # "mmdet3d==0.17.3",
    # "cupy",
    # "numpy",
]
# Packages installed from git; the ref (branch, tag or commit) is pinned to a commit at lock time.
git = [
    # "pypcd @ git+https://github.com/klintan/pypcd.git@master",
]

# Conda channels and packages; used only by the conda-like managers.
# [conda]
# channels = ["conda-forge"]
# packages = ["libgl"]

# Default target machine: a profile written by 'envbuild probe -o FILE' (path relative to this file).
# [target]
# profile = "targets/server.json"

# Mirrors of the package indexes (http(s):// or file:// URLs).
# [indexes]
# pypi = "https://pypi.org/simple"
# pytorch = "https://download.pytorch.org/whl"
# openmmlab = "https://download.openmmlab.com/mmcv/dist"
"""


def _toml_str(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _default_name(directory: Path) -> str:
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", directory.resolve().name).strip("-._")
    return name or "env"


def render(name: str, python: str | None = None, manager: str = "venv") -> str:
    """The envbuild.toml text for these values (not yet validated)."""
    python_line = f"python = {_toml_str(python)}" if python else '# python = "3.10"'
    return TEMPLATE.format(name=_toml_str(name), python_line=python_line, manager=_toml_str(manager))


_FLAG_OF = {"project.name": "--name", "project.python": "--python", "project.manager": "--manager"}


def _validate(text: str) -> Spec:
    """Load the rendered text with the real spec reader; a bad flag becomes an error naming the flag."""
    with tempfile.TemporaryDirectory(prefix="envbuild-init-") as tmp:
        probe_file = Path(tmp) / "envbuild.toml"
        probe_file.write_text(text)
        try:
            return load_spec(probe_file)
        except SpecError as exc:
            flag = _FLAG_OF.get(exc.field or "", exc.field)
            raise InputError(exc.message, field=flag, hint=exc.hint) from None


def init_spec(
    path: str | Path | None = None,
    *,
    force: bool = False,
    name: str | None = None,
    python: str | None = None,
    manager: str = "venv",
) -> tuple[Path, Spec]:
    """Write a commented envbuild.toml at ``path`` (a file, or a directory to put one in).

    Raises:
        InputError: the file exists and ``force`` is false, or a value is invalid.
    """
    target = Path(path) if path is not None else Path("envbuild.toml")
    if target.is_dir() or (path is not None and not target.suffix):
        target = target / "envbuild.toml"
    if target.exists() and not force:
        raise InputError(
            "the file already exists.",
            path=str(target),
            hint="Pass --force to overwrite it, or give another PATH.",
        )
    text = render(name or _default_name(target.parent), python, manager)
    _validate(text)
    try:
        atomic_write(target, text)
    except OSError as exc:
        raise InputError(f"cannot write ({exc.strerror}).", path=str(target),
                         hint="Choose a writable PATH.") from None
    return target, load_spec(target)
