"""The package managers an environment can be made with: one entry per manager, defined here only.

Adding a manager is one ``PackageManager`` entry in ``REGISTRY`` and, for a new ``kind``, the
template that creates its environment (``envbuild/templates/_env_<kind>.sh.j2``, included by
``_env.sh.j2``).  A manager of kind ``conda`` reads the lock's conda part (``conda.txt``, the
offline explicit list) with ``<binary> create``; ``venv`` makes a ``python -m venv``.  Everything
else (spec validation, the lock's conda solve, render's ``--manager``) asks this module.

Standard library only: ``probe.py`` keeps a copy of the conda binaries because it also runs as a
standalone script (``tests/test_managers.py`` checks the two agree).
"""

from __future__ import annotations

from dataclasses import dataclass

from envbuild.errors import InputError

__all__ = ["CHOICES", "CONDA_MANAGERS", "MANAGERS", "REGISTRY", "PackageManager", "conda_binaries",
           "get_manager"]


@dataclass(frozen=True)
class PackageManager:
    """One way to create the target's environment."""

    name: str  # as written in envbuild.toml ([project] manager) and --manager
    kind: str  # "conda": installs the lock's conda part; "venv": pip only
    binary: str | None  # the command the install scripts call (None: the target's python -m venv)
    env_template: str  # the template (envbuild/templates/) that creates the environment

    @property
    def conda(self) -> bool:
        """Does this manager install the lock's conda part (and so need one)?"""
        return self.kind == "conda"


REGISTRY: tuple[PackageManager, ...] = (
    PackageManager("conda", "conda", "conda", "_env_conda.sh.j2"),
    PackageManager("mamba", "conda", "mamba", "_env_conda.sh.j2"),
    PackageManager("micromamba", "conda", "micromamba", "_env_conda.sh.j2"),
    PackageManager("venv", "venv", None, "_env_venv.sh.j2"),
)
MANAGERS: tuple[str, ...] = tuple(m.name for m in REGISTRY)
CONDA_MANAGERS: tuple[str, ...] = tuple(m.name for m in REGISTRY if m.conda)
CHOICES = f"{', '.join(MANAGERS[:-1])} or {MANAGERS[-1]}"  # "conda, mamba, micromamba or venv", for messages


def conda_binaries() -> tuple[str, ...]:
    """The commands of the conda-kind managers (what ``probe`` looks for on PATH)."""
    return tuple(m.binary for m in REGISTRY if m.conda and m.binary)


def get_manager(name: object, *, path: str | None = None, field: str = "manager",
                error: type[InputError] = InputError) -> PackageManager:
    """The registry entry named ``name``.

    Raises:
        InputError: no such manager (``error``; ``path`` and ``field`` name where it was written).
    """
    for m in REGISTRY:
        if m.name == name:
            return m
    raise error(f"unknown manager '{name}'.", path=path, field=field,
                     hint=f"Use one of: {', '.join(MANAGERS)}.")
