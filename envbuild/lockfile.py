"""The lock directory as data: ``Lock`` (what ``envbuild.lock.json`` holds) and ``load_lock``.

Every stage after ``lock`` (render, fetch, pack, rebuild) reads a lock through ``load_lock``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from envbuild.errors import InputError
from envbuild.models import LockedArtifact, Profile, Resolution

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
        if not isinstance(data, dict):
            raise LockError("the lock must be a JSON object.", path=path)
        schema = data.get("schema_version")
        if schema != LOCK_SCHEMA:
            raise LockError(f"schema_version {schema!r} is not supported (this envbuild reads "
                            f"{LOCK_SCHEMA}).", path=path, field="schema_version",
                            hint="Re-create the lock with this envbuild: 'envbuild lock'.")
        for key, typ in (("name", str), ("manager", str), ("python", str), ("platform", dict),
                         ("target", dict), ("resolution", dict), ("artifacts", list)):
            if not isinstance(data.get(key), typ):
                raise LockError(f"missing or not a {typ.__name__}.", path=path, field=key,
                                hint="The lock is damaged; re-create it with 'envbuild lock'.")
        # The name becomes lockfiles/NAME/ in bundles and scripts: one path component, checked here.
        from envbuild._fs import path_component

        try:
            path_component(data["name"], field="name", path=path)
        except InputError as exc:
            raise LockError(exc.message, path=path, field="name", hint=exc.hint) from None
        arts = []
        for i, a in enumerate(data["artifacts"]):
            if not isinstance(a, dict) or not all(isinstance(a.get(k), str) for k in
                                                  ("name", "version", "kind", "url", "sha256", "filename")):
                raise LockError("an artifact needs string name, version, kind, url, sha256, filename.",
                                path=path, field=f"artifacts[{i}]",
                                hint="The lock is damaged; re-create it with 'envbuild lock'.")
            arts.append(LockedArtifact.from_dict(a))

        def strs(key: str) -> tuple[str, ...]:
            v = data.get(key) or []
            if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
                raise LockError("expected a list of strings.", path=path, field=key)
            return tuple(v)

        return cls(
            name=data["name"], manager=data["manager"], python=data["python"],
            platform=data["platform"], target=data["target"], resolution=data["resolution"],
            artifacts=tuple(arts), index_urls=strs("index_urls"), find_links=strs("find_links"),
            conda_channels=strs("conda_channels"), spec=data.get("spec") or {},
            spec_hash=str(data.get("spec_hash") or ""), command=str(data.get("command") or ""),
            generated_by=str(data.get("generated_by") or ""), engine=str(data.get("engine") or "uv"),
            schema_version=LOCK_SCHEMA, path=path,
        )


def load_lock(directory: str | Path) -> Lock:
    """Read ``DIR/envbuild.lock.json`` (DIR may also be the JSON file itself).

    Raises:
        LockError: no lock there, or it is not valid.
    """
    p = Path(directory)
    file = p if p.is_file() else p / LOCK_FILE
    try:
        text = file.read_text()
    except OSError as exc:
        raise LockError(f"cannot read the lock ({exc.strerror}).", path=str(file),
                        hint="Point at a directory written by 'envbuild lock' (lockfiles/NAME).") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise LockError(f"not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}).",
                        path=str(file), hint="Re-create it with 'envbuild lock'.") from None
    return Lock.from_dict(data, path=str(file))
