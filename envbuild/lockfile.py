"""The lock directory as data: ``Lock`` (what ``envbuild.lock.json`` holds) and ``load_lock``.

Every stage after ``lock`` (render, fetch, bundle, pack, rebuild) reads a lock through ``load_lock``
once and passes the record on; its parts are records too: ``TargetPlatform`` (where it installs),
``Profile`` (the target it was locked for), ``Resolution`` and ``LockedArtifact`` (each validated
where it is read, so no later stage re-checks a field).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from packaging.tags import Tag, compatible_tags, cpython_tags

from envbuild.errors import InputError
from envbuild.managers import CHOICES, MANAGERS
from envbuild.models import (
    GLIBC,
    NAME,
    PYTHON_XY,
    URL,
    Fields,
    LockedArtifact,
    Profile,
    Resolution,
    read_json_file,
)

__all__ = ["LOCK_FILE", "LOCK_SCHEMA", "Lock", "LockError", "TargetPlatform", "load_lock"]

LOCK_SCHEMA = 1
LOCK_FILE = "envbuild.lock.json"


class LockError(InputError):
    """A lock directory that is missing, malformed or from an incompatible envbuild."""


_LEGACY = {17: "manylinux2014", 12: "manylinux2010", 5: "manylinux1"}


@dataclass(frozen=True)
class TargetPlatform:
    """Where the lock will be installed: pip/uv platform names and the conda subdir (a lock's
    ``platform``).  Locks written by hand or by old tests may lack the glibc and uv names."""

    os: str
    arch: str
    glibc: str
    pip_platform: str
    uv_platform: str
    conda_subdir: str

    def to_dict(self) -> dict[str, str]:
        d = {"os": self.os, "arch": self.arch, "glibc": self.glibc, "pip_platform": self.pip_platform,
             "uv_platform": self.uv_platform, "conda_subdir": self.conda_subdir}
        return {k: v for k, v in d.items() if v}  # a name the lock did not record stays absent

    def platforms(self) -> list[str]:
        """pip's platform tags for this target, best first (manylinux_2_N ... manylinux1, linux)."""
        minor = int((self.glibc or "2.17").split(".")[1])  # unknown: manylinux2014, as lock assumes
        out = []
        for m in range(minor, 4, -1):
            out.append(f"manylinux_2_{m}_{self.arch}")
            if m in _LEGACY:
                out.append(f"{_LEGACY[m]}_{self.arch}")
        out.append(f"linux_{self.arch}")
        return out

    def tags(self, python: str) -> list[Tag]:
        """Every tag pip on the target accepts, in pip's order of preference."""
        major, minor = (int(p) for p in python.split(".")[:2])
        plats = self.platforms()
        return [*cpython_tags((major, minor), platforms=plats),
                *compatible_tags((major, minor), interpreter=f"cp{major}{minor}", platforms=plats)]

    @classmethod
    def from_dict(cls, data: Any, path: str | None = None) -> TargetPlatform:
        """Validate a lock's ``platform``.

        Raises:
            LockError: a value is not a platform word.
        """
        f = Fields(data, path=path, error=LockError, where="platform", what="a platform object",
                   hint="The lock is damaged; re-create it with 'envbuild lock'.")
        for key in f.data:
            f.text(key, pattern=_PLATFORM_WORD, wanted="a platform tag")
        return cls(os=f.text("os") or "", arch=f.text("arch") or "",
                   glibc=f.text("glibc", pattern=GLIBC, wanted='a glibc version such as "2.31"') or "",
                   pip_platform=f.text("pip_platform") or "", uv_platform=f.text("uv_platform") or "",
                   conda_subdir=f.text("conda_subdir") or "")


@dataclass(frozen=True)
class Lock:
    """A locked environment for one target: pins, artifacts with hashes, indexes, conda part."""

    name: str
    manager: str
    python: str
    platform: TargetPlatform
    target: Profile
    resolution: Resolution
    artifacts: tuple[LockedArtifact, ...]
    index_urls: tuple[str, ...] = ()
    find_links: tuple[str, ...] = ()
    conda_channels: tuple[str, ...] = ()
    spec: dict[str, Any] = field(default_factory=dict)
    spec_hash: str = ""
    command: str = ""
    generated_by: str = ""
    engine: str = "uv"
    schema_version: int = LOCK_SCHEMA
    path: str | None = None

    # Views the later stages need, so none of them re-derives them differently.
    @property
    def directory(self) -> Path:
        """The lock directory (where ``built.sha256`` and the other lock texts sit)."""
        return Path(self.path).parent if self.path else Path(".")

    @property
    def wheels(self) -> list[LockedArtifact]:
        """Artifacts of requirements.txt (wheels and plain sdists; not source builds)."""
        return [a for a in self.artifacts if a.kind in ("wheel", "sdist") and a.build != "source"]

    @property
    def source_builds(self) -> list[LockedArtifact]:
        """Packages compiled on the target after torch (``build: source``)."""
        return [a for a in self.artifacts if a.build == "source"]

    @property
    def git(self) -> list[LockedArtifact]:
        return [a for a in self.artifacts if a.kind == "git"]

    @property
    def conda(self) -> list[LockedArtifact]:
        return [a for a in self.artifacts if a.kind == "conda"]

    @property
    def pins(self) -> dict[str, str]:
        """name -> version of every pip-installed package (requirements, source builds, git)."""
        return {a.name: a.version for a in self.artifacts if a.kind != "conda"}

    @property
    def cuda(self) -> str | None:
        return self.resolution.cuda or None

    @property
    def python_xy(self) -> str:
        """The lock's Python as X.Y (what pip's --python-version and the cache's manifest take)."""
        return ".".join(self.python.split(".")[:2])

    def cache_path(self, art: LockedArtifact) -> str:
        """Where ``art`` lives in ``offline_cache/`` (``LockedArtifact.cache_path`` with this platform)."""
        return art.cache_path(self.platform.conda_subdir)

    def to_dict(self) -> dict[str, Any]:
        """The JSON of ``envbuild.lock.json`` (no ``path``: a lock is relocatable)."""
        return {
            "schema_version": self.schema_version,
            "name": self.name,
            "generated_by": self.generated_by,
            "command": self.command,
            "engine": self.engine,
            "spec_hash": self.spec_hash,
            "spec": self.spec,
            "manager": self.manager,
            "python": self.python,
            "platform": self.platform.to_dict(),
            "target": self.target.to_dict(),
            "resolution": self.resolution.to_dict(),
            "index_urls": list(self.index_urls),
            "find_links": list(self.find_links),
            "conda_channels": list(self.conda_channels),
            "artifacts": [a.to_dict() for a in self.artifacts],
        }

    def dumps(self) -> str:
        """Canonical text: sorted keys, 2-space indent, trailing newline (byte-stable)."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_dict(cls, data: Any, path: str | None = None) -> Lock:
        """Validate a lock mapping, naming the bad field.

        Raises:
            LockError: a required field is missing or has the wrong type.
        """
        hint = "The lock is damaged; re-create it with 'envbuild lock'."
        f = Fields(data, path=path, error=LockError, hint=hint, what="a lock object")
        schema = data.get("schema_version")
        if schema != LOCK_SCHEMA:
            raise LockError(f"schema_version {schema!r} is not supported (this envbuild reads "
                            f"{LOCK_SCHEMA}).", path=path, field="schema_version",
                            hint="Re-create the lock with this envbuild: 'envbuild lock'.")
        for key, typ in (("name", str), ("manager", str), ("python", str), ("platform", dict),
                         ("target", dict), ("resolution", dict), ("artifacts", list)):
            if not isinstance(data.get(key), typ):
                f.fail(key, data.get(key), f"{'an object' if typ is dict else 'a ' + typ.__name__}")
        # The name becomes lockfiles/NAME/ in bundles and scripts: one path component, checked here.
        from envbuild._fs import path_component

        try:
            path_component(data["name"], field="name", path=path)
        except InputError as exc:
            raise LockError(exc.message, path=path, field="name", hint=exc.hint) from None
        # one schema layer (envbuild.models.Fields): the nested records validate themselves, so
        # every later stage gets typed, well-formed values
        return cls(
            name=f.req("name", pattern=NAME, wanted="a lock name (letters, digits, '.', '_', '-')"),
            manager=f.req("manager", pattern=_MANAGER, wanted=CHOICES),
            python=f.req("python", pattern=PYTHON_XY, wanted='a Python version X.Y such as "3.10"'),
            platform=TargetPlatform.from_dict(data["platform"], path=path),
            target=Profile.from_dict(data["target"], path=path, where="target", error=LockError),
            resolution=Resolution.from_dict(data["resolution"], path=path, where="resolution",
                                            error=LockError),
            artifacts=tuple(LockedArtifact.from_dict(a, path=path, where=f"artifacts[{i}]", error=LockError)
                            for i, a in enumerate(data["artifacts"])),
            index_urls=f.strs("index_urls", pattern=URL, wanted="an index URL"),
            find_links=f.strs("find_links", pattern=URL, wanted="a find-links URL"),
            conda_channels=f.strs("conda_channels", wanted="a conda channel name or URL"),
            spec=f.obj("spec"),
            spec_hash=f.text("spec_hash", default="", wanted="a hash") or "",
            command=f.text("command", default="", wanted="a command line") or "",
            generated_by=f.text("generated_by", default="", wanted="a program name") or "",
            engine=f.text("engine", default="uv", pattern=_KIND_WORD, wanted="uv or pip-tools") or "uv",
            schema_version=LOCK_SCHEMA, path=path,
        )


_MANAGER = re.compile("|".join(map(re.escape, MANAGERS)))
_KIND_WORD = re.compile(r"[a-z][a-z0-9-]{0,31}")
_PLATFORM_WORD = re.compile(r"[A-Za-z0-9_.+-]{1,64}")


def load_lock(directory: str | os.PathLike[str]) -> Lock:
    """Read ``DIR/envbuild.lock.json`` (DIR may also be the JSON file itself).

    Raises:
        LockError: no lock there, or it is not valid.
    """
    p = Path(directory)
    file = p if p.is_file() else p / LOCK_FILE
    data = read_json_file(file, error=LockError, what="lock",
                          hint="Point at a directory written by 'envbuild lock' (lockfiles/NAME).")
    return Lock.from_dict(data, path=str(file))
