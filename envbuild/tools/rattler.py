"""py-rattler adapter: solve the conda part of an environment for a target subdir without conda."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from envbuild.errors import ConflictError, FetchError, ToolError
from envbuild.tools._run import redact

if TYPE_CHECKING:
    import rattler

__all__ = ["CondaRecord", "explicit_lines", "solve_conda"]


@dataclass(frozen=True)
class CondaRecord:
    """One solved conda package: what conda.txt and the lock need."""

    name: str
    version: str
    build: str
    subdir: str
    url: str
    filename: str
    sha256: str | None
    md5: str | None
    depends: tuple[str, ...] = ()


def _virtual(glibc: str | None, cuda: str | None) -> list[rattler.GenericVirtualPackage]:
    import rattler

    def vp(name: str, version: str) -> rattler.GenericVirtualPackage:
        return rattler.GenericVirtualPackage(rattler.PackageName(name), rattler.Version(version),
                                             rattler.BuildString("0"))

    out = [vp("__unix", "0"), vp("__linux", "5.4"), vp("__glibc", glibc or "2.17")]
    if cuda:
        out.append(vp("__cuda", cuda))
    return out


def solve_conda(
    channels: Sequence[str],
    specs: Sequence[str],
    *,
    subdir: str = "linux-64",
    glibc: str | None = None,
    cuda: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
) -> list[CondaRecord]:
    """Solve ``specs`` (e.g. ``python 3.7.*``) against ``channels`` for ``subdir`` (+ noarch).

    The target's glibc and CUDA driver become virtual packages, so the answer is the target's,
    not this machine's.  Records come back sorted by name.

    Raises:
        ConflictError: the specs cannot be satisfied from those channels.
        ToolError: a channel cannot be read (unreachable, no repodata.json).
    """
    import rattler

    async def _go() -> list[rattler.RepoDataRecord]:
        gateway = rattler.Gateway(cache_dir=Path(cache_dir) if cache_dir else None)
        return await rattler.solve(
            [rattler.Channel(c) for c in channels], list(specs), gateway=gateway,
            platforms=[cast(Any, subdir), "noarch"], virtual_packages=_virtual(glibc, cuda),
            timestamp_policy="allow-missing",  # old mirrors lack timestamps
        )

    try:
        records = asyncio.run(_go())
    except Exception as exc:  # py-rattler raises its own exception types per failure kind
        text = redact(str(exc))
        kind = type(exc).__name__
        if "Solver" in kind or "cannot be installed" in text or "unsolvable" in text.lower():
            raise ConflictError(
                f"the conda packages cannot be solved for {subdir}: {text}",
                conflicts=[text], field="conda.packages",
                hint="Relax a conda package pin or add the channel that has it.",
            ) from None
        if any(w in text for w in ("error sending request", "dns error", "Connect", "timed out")):
            raise FetchError(
                f"a conda channel is unreachable: {text}", field="conda.channels",
                hint="Check the network, or list a reachable mirror of the channel in [conda] channels.",
            ) from None
        raise ToolError(
            f"py-rattler could not solve the conda part ({kind}): {text}",
            field="conda.channels",
            hint="Check that every channel is reachable and has repodata.json for "
                 f"{subdir} and noarch.",
        ) from None
    out = []
    for r in records:
        out.append(CondaRecord(
            name=r.name.normalized, version=str(r.version), build=str(r.build), subdir=r.subdir,
            url=str(r.url), filename=r.file_name,
            sha256=r.sha256.hex() if r.sha256 else None, md5=r.md5.hex() if r.md5 else None,
            depends=tuple(r.depends),
        ))
    return sorted(out, key=lambda c: c.name)


def explicit_lines(records: Sequence[CondaRecord]) -> list[str]:
    """``@EXPLICIT`` body lines ``URL#md5`` (``URL#sha256`` when a channel records no md5).

    The explicit format defines the anchor as an MD5 (conda's text-spec files); every conda,
    mamba and micromamba release reads it, while a sha256 anchor is not understood by older
    conda.  The lock JSON keeps each package's sha256, which fetch and install-offline.sh check.
    """
    lines = []
    for r in records:
        digest = r.md5 or r.sha256
        if not digest:
            raise ToolError(f"the channel gives no hash for {r.filename}.", field="conda.channels",
                            hint="Use a channel whose repodata.json records sha256 or md5.")
        lines.append(f"{redact(r.url)}#{digest}")
    return lines
