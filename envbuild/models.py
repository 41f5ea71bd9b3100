"""Frozen records that cross stage boundaries: Profile, Resolution, Lock entries.

Stages import these rather than each other.  Every record has ``to_dict`` for
``--json`` and files, and ``from_dict`` that validates and names the bad field.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from envbuild.errors import ProfileError

__all__ = [
    "PROFILE_SCHEMA",
    "Gpu",
    "LockedArtifact",
    "Profile",
    "Resolution",
    "Toolkit",
    "load_profile",
]

PROFILE_SCHEMA = 1


@dataclass(frozen=True)
class Gpu:
    name: str
    compute_capability: str | None = None
    memory_mib: int | None = None


@dataclass(frozen=True)
class Toolkit:
    version: str
    path: str | None = None
    source: str | None = None


@dataclass(frozen=True)
class Profile:
    """What envbuild knows of a machine: probed, loaded from JSON, or described by flags."""

    os: str = "linux"
    arch: str = "x86_64"
    glibc_version: str | None = None
    python_version: str | None = None
    gpus: tuple[Gpu, ...] = ()
    driver_version: str | None = None
    driver_cuda_version: str | None = None
    cuda_toolkits: tuple[Toolkit, ...] = ()
    gcc_version: str | None = None
    conda: str | None = None
    hostname: str | None = None
    notes: tuple[str, ...] = ()
    schema_version: int = PROFILE_SCHEMA

    @property
    def has_gpu(self) -> bool:
        return bool(self.gpus) or self.driver_version is not None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["gpus"] = [asdict(g) for g in self.gpus]
        d["cuda_toolkits"] = [asdict(t) for t in self.cuda_toolkits]
        d["notes"] = list(self.notes)
        return d

    @classmethod
    def from_dict(cls, data: Any, path: str | None = None) -> Profile:
        """Validate a profile mapping (as written by ``envbuild probe``).

        Raises:
            ProfileError: a field has the wrong type.
        """
        if not isinstance(data, dict):
            raise ProfileError("a profile must be a JSON object.", path=path)

        def opt_str(key: str) -> str | None:
            v = data.get(key)
            if v is None:
                return None
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                return str(v)
            if not isinstance(v, str):
                raise ProfileError(
                    f"expected a string or null, got {type(v).__name__}.",
                    path=path,
                    field=key,
                    hint="Re-run 'envbuild probe -o FILE' on the target machine.",
                )
            return v

        gpus_raw = data.get("gpus") or []
        if not isinstance(gpus_raw, list):
            raise ProfileError("expected a list of GPUs.", path=path, field="gpus")
        gpus: list[Gpu] = []
        for i, g in enumerate(gpus_raw):
            if not isinstance(g, dict) or not isinstance(g.get("name"), str):
                raise ProfileError(
                    "each GPU needs at least a string 'name'.", path=path, field=f"gpus[{i}]"
                )
            mem = g.get("memory_mib")
            cc = g.get("compute_capability")
            gpus.append(
                Gpu(
                    name=g["name"],
                    compute_capability=None if cc is None else str(cc),
                    memory_mib=int(mem) if isinstance(mem, (int, float)) else None,
                )
            )
        tk_raw = data.get("cuda_toolkits") or []
        if not isinstance(tk_raw, list):
            raise ProfileError("expected a list of toolkits.", path=path, field="cuda_toolkits")
        toolkits: list[Toolkit] = []
        for i, t in enumerate(tk_raw):
            if not isinstance(t, dict) or t.get("version") is None:
                raise ProfileError(
                    "each toolkit needs a 'version'.", path=path, field=f"cuda_toolkits[{i}]"
                )
            toolkits.append(
                Toolkit(version=str(t["version"]), path=t.get("path"), source=t.get("source"))
            )
        notes = data.get("notes") or []
        return cls(
            os=opt_str("os") or "linux",
            arch=opt_str("arch") or "x86_64",
            glibc_version=opt_str("glibc_version"),
            python_version=opt_str("python_version"),
            gpus=tuple(gpus),
            driver_version=opt_str("driver_version"),
            driver_cuda_version=opt_str("driver_cuda_version"),
            cuda_toolkits=tuple(toolkits),
            gcc_version=opt_str("gcc_version"),
            conda=opt_str("conda"),
            hostname=opt_str("hostname"),
            notes=tuple(str(n) for n in notes) if isinstance(notes, list) else (),
            schema_version=int(data.get("schema_version", PROFILE_SCHEMA)),
        )


def load_profile(path: str | Path) -> Profile:
    """Read a profile JSON file.

    Raises:
        ProfileError: the file is missing, not JSON, or malformed.
    """
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise ProfileError(
            f"cannot read the profile ({exc.strerror}).",
            path=str(p),
            hint="Write one with 'envbuild probe -o FILE' on the target machine.",
        ) from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ProfileError(
            f"not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}).",
            path=str(p),
            hint="Write one with 'envbuild probe -o FILE' on the target machine.",
        ) from None
    return Profile.from_dict(data, path=str(p))


@dataclass(frozen=True)
class Resolution:
    """What ``resolve`` decided for a target. ``to_dict`` is the ``--json`` contract.

    ``packages`` maps normalised names to pinned versions (torch with its local
    label, e.g. ``1.10.0+cu113``).  ``requirements`` is what the lock engine gets:
    the pins above plus the user's other requirements.  ``source_builds`` are
    packages that must be compiled on the target after torch (mmdet3d 0.17.x).
    """

    ok: bool
    python: str
    cuda: str | None
    packages: dict[str, str] = field(default_factory=dict)
    requirements: list[str] = field(default_factory=list)
    source_builds: list[dict[str, Any]] = field(default_factory=list)
    index_urls: list[str] = field(default_factory=list)
    find_links: list[str] = field(default_factory=list)
    build: dict[str, Any] = field(default_factory=dict)
    reasons: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)
    choices: list[dict[str, Any]] = field(default_factory=list)
    target: dict[str, Any] = field(default_factory=dict)
    # bounds the chosen packages imply (numpy<2 for torch<2.3, numpy<1.24 for mmdet3d 1.4.0), with evidence
    implied: list[dict[str, Any]] = field(default_factory=list)
    # when the facts used were checked: {checked, oldest, newest, age_days, tables, ...}
    knowledge: dict[str, Any] = field(default_factory=dict)
    # the torch build's compatibility verdict: {ok, rule, reason, facts}
    verdict: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Resolution:
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass(frozen=True)
class LockedArtifact:
    """One file a lock needs: a wheel, an sdist, a git checkout or a conda package.

    ``kind`` is ``wheel`` | ``sdist`` | ``git`` | ``conda``; ``build`` is ``source``
    for packages compiled on the target after torch.
    """

    name: str
    version: str
    kind: str
    url: str
    sha256: str
    filename: str
    build: str | None = None
    commit: str | None = None
    subdir: str | None = None
    requires: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["requires"] = list(self.requires)
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LockedArtifact:
        known = {f for f in cls.__dataclass_fields__}
        d = {k: v for k, v in data.items() if k in known}
        d["requires"] = tuple(d.get("requires") or ())
        return cls(**d)
