"""py-rattler adapter: the conda part is solved for the TARGET's glibc and driver, not this machine's."""

from __future__ import annotations

from pathlib import Path

import pytest
from conda_fixture import make_channel

from envbuild.errors import ConflictError, FetchError, ToolError
from envbuild.tools.rattler import explicit_lines, solve_conda


def test_virtual_packages_are_the_targets(tmp_path: Path) -> None:
    ch = make_channel(tmp_path / "ch", [
        dict(name="python", version="3.7.12", subdir="linux-64"),
        dict(name="cudatoolkit", version="11.3.1", subdir="linux-64", depends=["__cuda >=11.3"]),
    ])
    cache = tmp_path / "cache"
    recs = solve_conda([ch.as_uri()], ["python 3.7.*", "cudatoolkit"], cuda="11.4", cache_dir=cache)
    assert [(r.name, r.version, r.subdir) for r in recs] == [("cudatoolkit", "11.3.1", "linux-64"),
                                                            ("python", "3.7.12", "linux-64")]
    assert all(line.startswith(ch.as_uri()) and "#" in line for line in explicit_lines(recs))
    # Driver 418 (CUDA 10.1) cannot run the cu113 toolkit; no GPU at all neither.
    for cuda in ("10.1", None):
        with pytest.raises(ConflictError, match="__cuda"):
            solve_conda([ch.as_uri()], ["cudatoolkit"], cuda=cuda, cache_dir=cache)
    with pytest.raises(ToolError, match="repodata"):
        solve_conda([(tmp_path / "nowhere").as_uri()], ["python"], cache_dir=cache)
    # An unreachable channel is a fetch failure (exit 3), not a tool bug.
    with pytest.raises(FetchError, match="unreachable"):
        solve_conda(["http://127.0.0.1:9/conda-forge"], ["python"], cache_dir=cache)
