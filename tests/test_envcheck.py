"""envbuild/_envcheck.py, the one env reader: a stdlib script doctor runs inside the checked env
(which may be Python 3.6), and the functions pack / unpack / inspect import to read a prefix.

The envs here are real directory trees (the layout pip and conda write), read both ways.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

from envbuild import _envcheck

SCRIPT = Path(_envcheck.__file__)


def test_script_parses_as_python_36_and_imports_only_the_stdlib() -> None:
    tree = ast.parse(SCRIPT.read_text(), feature_version=(3, 6))
    mods = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    mods |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert mods and mods <= set(sys.stdlib_module_names), mods - set(sys.stdlib_module_names)


def _dist(site: Path, name: str, version: str, installer: str | None, record: list[str]) -> Path:
    d = site / f"{name.replace('-', '_')}-{version}.dist-info"
    d.mkdir(parents=True)
    (d / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    if installer:
        (d / "INSTALLER").write_text(installer + "\n")
    (d / "RECORD").write_text("".join(f"{r},sha256=x,1\n" for r in record))
    return d


def test_prefix_is_read_from_its_files_not_from_the_running_interpreter(tmp_path: Path) -> None:
    """A python3.9 layout read by this (other) interpreter: names as written, installers, editables;
    a FIFO named METADATA does not hang the read and a symlinked INSTALLER is not followed."""
    env = tmp_path / "env"
    site = env / "lib" / "python3.9" / "site-packages"
    _dist(site, "PyYAML", "6.0.1", "pip", ["yaml/__init__.py", "../../../bin/yamlx"])
    tricky = _dist(site, "torch", "2.1.0+cu121", None, ["torch/__init__.py"])
    (tricky / "METADATA").unlink()
    os.mkfifo(tricky / "METADATA")  # a reader that blocks on it never returns
    outside = tmp_path / "installer"
    outside.write_text("conda\n")
    (tricky / "INSTALLER").symlink_to(outside)
    src = tmp_path / "checkout"
    src.mkdir()
    (site / "mylib.egg-link").write_text(f"{src}\n.\n")
    (site / "extra.pth").write_text(f"# comment\nimport os\n{tmp_path / 'elsewhere'}\n{site / 'inside'}\n")

    prefix = str(env)
    assert _envcheck.site_packages(prefix) == [str(site)]
    rows = {d["name"]: d for d in _envcheck.dist_infos(prefix)}
    assert rows["PyYAML"]["installer"] == "pip" and rows["PyYAML"]["version"] == "6.0.1"
    assert rows["PyYAML"]["path"] == "lib/python3.9/site-packages/PyYAML-6.0.1.dist-info"
    # no METADATA to read: the name and version come from the directory name; the link is not read
    assert rows["torch"]["version"] == "2.1.0+cu121" and rows["torch"]["installer"] is None
    pkgs = {p["name"]: p for p in _envcheck.packages(prefix, "venv")}
    assert pkgs["torch"]["cuda"] == "12.1" and pkgs["torch"]["installer"] == "unknown"
    record = _envcheck.record_paths(str(env / rows["PyYAML"]["path"]))
    assert record == ["yaml/__init__.py", "../../../bin/yamlx"]
    eds = {e["how"]: e for e in _envcheck.editables(prefix)}
    assert eds["setup.py develop"]["name"] == "mylib" and eds["setup.py develop"]["source"] == str(src)
    assert eds["a .pth path entry"]["source"] == str(tmp_path / "elsewhere")  # the one inside is fine
    assert len(eds) == 2


def test_conda_records_and_torch_build_of_a_conda_layout(tmp_path: Path) -> None:
    meta = tmp_path / "conda-meta"
    meta.mkdir()
    egg = "lib/python3.9/site-packages/torch-1.10.0-py3.9.egg-info"
    (meta / "pytorch-1.10.0-py3.9_cuda11.3_cudnn8.2.0_0.json").write_text(json.dumps(
        {"name": "pytorch", "version": "1.10.0", "build": "py3.9_cuda11.3_cudnn8.2.0_0", "channel": "pytorch",
         "files": [f"{egg}/PKG-INFO", "lib/python3.9/site-packages/torch/version.py"]}))
    (meta / "broken.json").write_text("{not json")
    site = tmp_path / "lib" / "python3.9" / "site-packages"
    (site / "torch").mkdir(parents=True)
    (site / "torch-1.10.0-py3.9.egg-info").mkdir()
    (site / "torch" / "version.py").write_text("__version__ = '1.10.0'\ncuda = '11.3'\n")
    pkgs = _envcheck.packages(str(tmp_path), "conda")
    # the egg-info of conda's own package (listed in its record) is not a second, pip-installed torch
    assert [(p["name"], p["installer"], p["cuda"]) for p in pkgs] == [("pytorch", "conda", "11.3")]
    assert _envcheck.torch_build(str(tmp_path)) == {"version": "1.10.0", "cuda": "11.3",
                                                    "site": "lib/python3.9/site-packages"}


def test_script_and_in_process_reader_agree_on_this_env() -> None:
    """doctor's view (the script, run by the env's interpreter) and pack's (imported) are one reader."""
    out = subprocess.run([sys.executable, str(SCRIPT), sys.prefix], capture_output=True, text=True,
                         check=True, timeout=120)
    script = {(d["name"], d["version"]) for d in json.loads(out.stdout)["dists"]}
    imported = {(_envcheck.norm_name(d["name"]), d["version"]) for d in _envcheck.dist_infos(sys.prefix)}
    assert script and script == imported
