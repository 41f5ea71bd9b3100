"""Read a project's ``envbuild.toml`` (and, as a convenience, requirements.txt / environment.yml).

Layout of ``envbuild.toml``::

    [project]
    name = "echofusion"
    python = "3.7"
    manager = "conda"            # conda | mamba | micromamba | venv
    requirements = ["mmcv-full==1.4.0", "mmdet==2.19.0", "cupy", "numpy"]
    git = ["pypcd @ git+https://github.com/klintan/pypcd.git@master"]

    [conda]                      # optional; only for conda-like managers
    channels = ["conda-forge"]
    packages = ["libgl"]

    [target]                     # optional default target
    profile = "targets/server.json"

    [indexes]                    # optional mirrors
    pypi = "https://pypi.org/simple"
    pytorch = "https://download.pytorch.org/whl"
    openmmlab = "https://download.openmmlab.com/mmcv/dist"
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

import tomllib
from packaging.requirements import InvalidRequirement, Requirement

from envbuild.errors import SpecError
from envbuild.models import decode_text, deep_line

__all__ = [
    "DEFAULT_INDEXES",
    "MANAGERS",
    "GitRequirement",
    "Manager",
    "Spec",
    "load_spec",
    "parse_requirement",
    "spec_from_requirements",
]

Manager = Literal["conda", "mamba", "micromamba", "venv"]
MANAGERS: tuple[str, ...] = ("conda", "mamba", "micromamba", "venv")

DEFAULT_INDEXES: dict[str, str] = {
    "pypi": "https://pypi.org/simple",
    "pytorch": "https://download.pytorch.org/whl",
    "openmmlab": "https://download.openmmlab.com/mmcv/dist",
}

_TOP_KEYS = {"project", "conda", "target", "indexes"}
_PROJECT_KEYS = {"name", "python", "manager", "requirements", "git"}
_CONDA_KEYS = {"channels", "packages"}
_TARGET_KEYS = {"profile"}


@dataclass(frozen=True)
class GitRequirement:
    """``name @ git+URL@REF``; REF is a branch, tag or commit (resolved to a commit at lock)."""

    name: str
    url: str
    ref: str | None

    def __str__(self) -> str:
        return f"{self.name} @ git+{self.url}" + (f"@{self.ref}" if self.ref else "")


@dataclass(frozen=True)
class Spec:
    """A project's environment request, independent of any machine."""

    name: str = "env"
    python: str | None = None
    manager: Manager = "venv"
    requirements: tuple[str, ...] = ()
    git: tuple[GitRequirement, ...] = ()
    conda_channels: tuple[str, ...] = ("conda-forge",)
    conda_packages: tuple[str, ...] = ()
    target_profile: str | None = None
    indexes: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_INDEXES))
    path: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "python": self.python,
            "manager": self.manager,
            "requirements": list(self.requirements),
            "git": [str(g) for g in self.git],
            "conda_channels": list(self.conda_channels),
            "conda_packages": list(self.conda_packages),
            "target_profile": self.target_profile,
            "indexes": dict(sorted(self.indexes.items())),
        }

    def digest(self) -> str:
        """sha256 over the canonical JSON of the spec: equal specs lock identically."""
        blob = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()


def parse_requirement(text: str, *, path: str | None = None, field: str | None = None) -> Requirement:
    """Parse one PEP 508 requirement.

    Raises:
        SpecError: the text is not a valid requirement.
    """
    try:
        return Requirement(text)
    except InvalidRequirement as exc:
        raise SpecError(
            f"'{text}' is not a valid PEP 508 requirement ({exc}).",
            path=path,
            field=field,
            hint="Write it like 'numpy<1.20' or 'mmcv-full==1.4.0'.",
        ) from None


def parse_git(text: str, *, path: str | None = None, field: str | None = None) -> GitRequirement:
    """Parse ``name @ git+URL[@REF]``.

    Raises:
        SpecError: the text is not of that form.
    """
    m = re.match(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*@\s*git\+(\S+)\s*$", text)
    bare = re.match(r"^\s*git\+(\S+?)(?:#egg=([A-Za-z0-9][A-Za-z0-9._-]*))?\s*$", text)
    if not m and bare:
        # pip's bare form 'git+URL[@REF][#egg=NAME]': the name is the egg or the repository's name.
        url_part = bare.group(1)
        repo = re.sub(r"@[^/@]*$", "", url_part).rstrip("/").rsplit("/", 1)[-1].removesuffix(".git")
        name = bare.group(2) or repo
        if re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
            m = re.match(r"^(.*) @ git\+(\S+)$", f"{name} @ git+{url_part}")
    if not m:
        raise SpecError(
            f"'{text}' is not a git requirement.",
            path=path,
            field=field,
            hint="Write it as 'name @ git+https://host/repo.git@TAG' (or git+file:///path@REF).",
        )
    name, rest = m.group(1), m.group(2)
    url, ref = rest, None
    # The ref is whatever follows the last '@' after the scheme and host part.
    scheme_end = rest.find("://")
    tail_start = scheme_end + 3 if scheme_end >= 0 else 0
    at = rest.rfind("@")
    if at > tail_start and "/" in rest[tail_start:at]:
        url, ref = rest[:at], rest[at + 1 :]
    return GitRequirement(name=name, url=url, ref=ref or None)


def _str_list(value: Any, path: str, fld: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise SpecError("expected a list of strings.", path=path, field=fld)
    return tuple(value)


def _check_keys(table: dict[str, Any], allowed: set[str], path: str, prefix: str) -> None:
    for key in table:
        if key not in allowed:
            raise SpecError(
                f"unknown key '{key}'.",
                path=path,
                field=f"{prefix}{key}",
                hint=f"Allowed here: {', '.join(sorted(allowed))}. "
                "See 'envbuild init' for a commented example.",
            )


def _table(data: dict[str, Any], key: str, path: str) -> dict[str, Any]:
    value = data.get(key, {})
    if not isinstance(value, dict):
        raise SpecError("expected a table.", path=path, field=key, hint=f"Write it as a [{key}] section.")
    return value


def _read_toml(p: Path) -> dict[str, Any]:
    ps = str(p)
    try:
        text = decode_text(p.read_bytes(), path=ps, error=SpecError)
    except OSError as exc:
        raise SpecError(f"cannot read the spec ({exc.strerror}).", path=ps,
                        hint="Create one with 'envbuild init'.") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(f"not valid TOML ({exc}).", path=ps) from None
    except RecursionError:
        raise SpecError("nested too deeply to read.", path=ps, field=deep_line(text)) from None


def load_spec(path: str | Path) -> Spec:
    """Read ``envbuild.toml`` (or a ``requirements.txt`` / ``environment.yml``).

    Raises:
        SpecError: unreadable file, unknown key, bad requirement, unknown manager.
    """
    p = Path(path)
    ps = str(p)
    if p.name.endswith(".txt"):
        return _from_requirements_txt(p)
    if p.suffix in (".yml", ".yaml"):
        return _from_environment_yml(p)
    data = _read_toml(p)
    _check_keys(data, _TOP_KEYS, ps, "")
    project = data.get("project", {})
    if not isinstance(project, dict):
        raise SpecError("expected a table.", path=ps, field="project")
    _check_keys(project, _PROJECT_KEYS, ps, "project.")
    manager = project.get("manager", "venv")
    if manager not in MANAGERS:
        raise SpecError(
            f"unknown manager '{manager}'.",
            path=ps,
            field="project.manager",
            hint=f"Use one of: {', '.join(MANAGERS)}.",
        )
    python = project.get("python")
    if isinstance(python, float):
        # TOML reads python = 3.10 as the float 3.1: ask for a string instead of guessing.
        raise SpecError(f"{python!r} is a number; Python versions must be quoted.", path=ps,
                        field="project.python", hint='Write it as python = "3.10".')
    if python is not None:
        python = str(python)
        if not re.fullmatch(r"3\.\d{1,2}", python):
            raise SpecError(f"'{python}' is not a Python version like '3.10'.", path=ps,
                            field="project.python")
    reqs = _str_list(project.get("requirements", []), ps, "project.requirements")
    for i, r in enumerate(reqs):
        parse_requirement(r, path=ps, field=f"project.requirements[{i}]")
    gits = tuple(
        parse_git(g, path=ps, field=f"project.git[{i}]")
        for i, g in enumerate(_str_list(project.get("git", []), ps, "project.git"))
    )
    conda = _table(data, "conda", ps)
    _check_keys(conda, _CONDA_KEYS, ps, "conda.")
    target = _table(data, "target", ps)
    _check_keys(target, _TARGET_KEYS, ps, "target.")
    indexes = dict(DEFAULT_INDEXES)
    raw_idx = _table(data, "indexes", ps)
    _check_keys(raw_idx, set(DEFAULT_INDEXES), ps, "indexes.")
    for k, v in raw_idx.items():
        if not isinstance(v, str) or not re.match(r"^(https?|file)://", v):
            raise SpecError("expected an http(s):// or file:// URL.", path=ps, field=f"indexes.{k}")
        indexes[k] = v.rstrip("/")
    profile = target.get("profile")
    if profile is not None:
        profile = str(p.parent / profile) if not Path(profile).is_absolute() else profile
    default_name = re.sub(r"[^A-Za-z0-9._-]+", "-", p.resolve().parent.name).strip("-._") or "env"
    name = project.get("name", default_name)
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
        raise SpecError(f"'{name}' is not a usable name (letters, digits, . _ -).", path=ps,
                        field="project.name")
    return Spec(
        name=name,
        python=python,
        manager=cast(Manager, manager),
        requirements=reqs,
        git=gits,
        conda_channels=_str_list(conda.get("channels", ["conda-forge"]), ps, "conda.channels"),
        conda_packages=_str_list(conda.get("packages", []), ps, "conda.packages"),
        target_profile=profile,
        indexes=indexes,
        path=ps,
    )


def spec_from_requirements(
    reqs: list[str], *, name: str = "env", python: str | None = None, manager: str = "venv"
) -> Spec:
    """Build a spec from bare command-line requirements (git ones included).

    Raises:
        SpecError: a requirement does not parse or the manager is unknown.
    """
    if manager not in MANAGERS:
        raise SpecError(f"unknown manager '{manager}'.", field="--manager",
                        hint=f"Use one of: {', '.join(MANAGERS)}.")
    plain: list[str] = []
    gits: list[GitRequirement] = []
    for r in reqs:
        if "git+" in r:
            gits.append(parse_git(r, field="REQ"))
        else:
            parse_requirement(r, field="REQ")
            plain.append(r)
    return Spec(name=name, python=python, manager=cast(Manager, manager),
                requirements=tuple(plain), git=tuple(gits))


def _from_requirements_txt(p: Path) -> Spec:
    try:
        lines = decode_text(p.read_bytes(), path=str(p), error=SpecError).splitlines()
    except OSError as exc:
        raise SpecError(f"cannot read ({exc.strerror}).", path=str(p)) from None
    reqs: list[str] = []
    for i, line in enumerate(lines, 1):
        line = line.split(" #")[0].strip()
        if not line or line.startswith(("#", "-")):
            continue
        # Check here so that an error names the file and the line.
        if "git+" in line:
            parse_git(line, path=str(p), field=f"line {i}")
        else:
            parse_requirement(line, path=str(p), field=f"line {i}")
        reqs.append(line)
    spec = spec_from_requirements(reqs, name=p.resolve().parent.name or "env")
    return Spec(**{**spec.__dict__, "path": str(p)})


def _from_environment_yml(p: Path) -> Spec:
    """A small reader for the common environment.yml shape (name, channels, dependencies, pip)."""
    try:
        text = decode_text(p.read_bytes(), path=str(p), error=SpecError)
    except OSError as exc:
        raise SpecError(f"cannot read ({exc.strerror}).", path=str(p)) from None
    name, channels, conda_pkgs, pip_reqs = "env", [], [], []
    section, in_pip, pip_indent = "", False, 0
    python: str | None = None
    for raw in text.splitlines():
        line = raw.split("#")[0].rstrip()
        if not line.strip():
            continue
        indent = len(line) - len(line.lstrip())
        item = line.strip()
        if indent == 0 and not item.startswith("- "):  # a top-level key; lists may sit flush under it
            in_pip = False
            key, _, val = item.partition(":")
            section = key.strip()
            if section == "name":
                name = val.strip().strip("'\"")
            continue
        if not item.startswith("- "):
            continue
        value = item[2:].strip().strip("'\"")
        if section == "channels":
            channels.append(value)
        elif section == "dependencies":
            if value.startswith("pip:"):
                in_pip, pip_indent = True, indent
                continue
            # pip entries are nested deeper than their '- pip:' line, at whatever indent the file uses.
            if in_pip and indent > pip_indent:
                pip_reqs.append(value)
                continue
            in_pip = False
            if re.match(r"python(?:\s*[<>=!~ ]|$)", value):
                m = re.search(r"3\.\d+", value)
                python = m.group(0) if m else None
            elif value != "pip":
                conda_pkgs.append(value)
    try:
        spec = spec_from_requirements(pip_reqs, name=name, python=python, manager="conda")
    except SpecError as exc:
        raise SpecError(exc.message, path=str(p), field="dependencies.pip", hint=exc.hint) from None
    return Spec(**{**spec.__dict__, "conda_channels": tuple(channels or ["conda-forge"]),
                   "conda_packages": tuple(conda_pkgs), "path": str(p)})
