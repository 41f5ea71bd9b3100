"""The lock directory as data: ``Lock`` (what ``envbuild.lock.json`` holds) and ``load_lock``.

Every stage after ``lock`` (render, fetch, pack, rebuild) reads a lock through ``load_lock``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from envbuild.errors import InputError
from envbuild.managers import CHOICES, MANAGERS
from envbuild.models import NAME, PYTHON_XY, URL, Fields, LockedArtifact, Profile, Resolution, read_json_file

__all__ = ["LOCK_FILE", "LOCK_SCHEMA", "Lock", "LockError", "load_lock"]

LOCK_SCHEMA = 1
LOCK_FILE = "envbuild.lock.json"


class LockError(InputError):
    """A lock directory that is missing, malformed or from an incompatible envbuild."""


@dataclass(frozen=True)
class Lock:
    """A locked environment for one target: pins, artifacts with hashes, indexes, conda part."""

    name: str
    manager: str
    python: str
    platform: dict[str, Any]
    target: dict[str, Any]
    resolution: dict[str, Any]
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
        v = self.resolution.get("cuda")
        return str(v) if v else None

    @property
    def profile(self) -> Profile:
        return Profile.from_dict(self.target, path=self.path)

    def to_resolution(self) -> Resolution:
        return Resolution.from_dict(self.resolution)

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
            "platform": self.platform,
            "target": self.target,
            "resolution": self.resolution,
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
        arts = tuple(LockedArtifact.from_dict(a, path=path, where=f"artifacts[{i}]", error=LockError)
                     for i, a in enumerate(data["artifacts"]))
        Profile.from_dict(data["target"], path=path, where="target", error=LockError)
        Resolution.from_dict(data["resolution"], path=path, where="resolution", error=LockError)
        plat = f.sub("platform")
        for key in plat.data:
            plat.text(key, pattern=_PLATFORM_WORD, wanted="a platform tag")
        return cls(
            name=f.req("name", pattern=NAME, wanted="a lock name (letters, digits, '.', '_', '-')"),
            manager=f.req("manager", pattern=_MANAGER, wanted=CHOICES),
            python=f.req("python", pattern=PYTHON_XY, wanted='a Python version X.Y such as "3.10"'),
            platform=data["platform"], target=data["target"], resolution=data["resolution"],
            artifacts=arts,
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


def load_lock(directory: str | Path) -> Lock:
    """Read ``DIR/envbuild.lock.json`` (DIR may also be the JSON file itself).

    Raises:
        LockError: no lock there, or it is not valid.
    """
    p = Path(directory)
    file = p if p.is_file() else p / LOCK_FILE
    data = read_json_file(file, error=LockError, what="lock",
                          hint="Point at a directory written by 'envbuild lock' (lockfiles/NAME).")
    return Lock.from_dict(data, path=str(file))
