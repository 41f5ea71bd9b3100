"""The conda test fixture builds packages that py-rattler really installs, placeholders rewritten."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from conda_fixture import PLACEHOLDER, install_env, make_channel


def test_local_channel_installs_with_prefix_rewrite(tmp_path: Path) -> None:
    ch = make_channel(
        tmp_path / "ch",
        [
            dict(name="hello", version="1.0", subdir="linux-64", depends=["dep >=1"],
                 files={"bin/hello": f"#!/bin/sh\necho hi from {PLACEHOLDER}\n"},
                 executables=["bin/hello"], prefix_files=["bin/hello"]),
            dict(name="dep", version="1.2", files={"share/dep.txt": "x"}),
        ],
    )
    repodata = json.loads((ch / "linux-64" / "repodata.json").read_text())
    assert "hello-1.0-0.conda" in repodata["packages.conda"]
    prefix = install_env(ch, tmp_path / "env", ["hello"])
    out = subprocess.run([prefix / "bin" / "hello"], capture_output=True, text=True, check=True).stdout
    assert out.strip() == f"hi from {prefix}"
    assert (prefix / "conda-meta" / "dep-1.2-0.json").exists()
