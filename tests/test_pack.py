"""pack / unpack / inspect / slurm-script on REAL envs: a conda env installed by py-rattler from a
local channel of .conda packages the test builds (a relocatable CPython copied from this
interpreter, a package with prefix placeholders), wheels installed into it by uv, and a venv."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import pytest
from conda_fixture import PLACEHOLDER, install_env, make_channel, python_package_spec
from verdict_cases import VERDICT_CASES, _resolved
from wheels import write_wheel

from envbuild.archive import CHECKSUMS, MANIFEST, inspect_archive, read_manifest
from envbuild.errors import PackError, UnsafeArchive
from envbuild.models import Gpu, Profile
from envbuild.pack import EditableInstall, MissingCondaFiles, PipOverwroteConda, pack
from envbuild.unpack import render_slurm, unpack

PY = f"{sys.version_info.major}.{sys.version_info.minor}"
SP = f"lib/python{PY}/site-packages"
BASE_PYTHON = Path(sys.base_prefix) / "bin" / f"python{PY}"
UV = Path(sys.executable).parent / "uv"
ENVBUILD = [sys.executable, "-m", "envbuild"]


# --- helpers -------------------------------------------------------------------------------


def make_wheel(
    out: Path, name: str, version: str, files: dict[str, str], scripts: dict[str, str] | None = None
) -> Path:
    """A spec-conformant pure wheel; ``scripts`` become console_scripts entry points."""
    eps = None
    if scripts:
        lines = "".join(f"{k} = {v}\n" for k, v in scripts.items())
        eps = {"entry_points.txt": f"[console_scripts]\n{lines}".encode()}
    return write_wheel(out, name, version, {k: v.encode() for k, v in files.items()}, dist_info=eps)


def uv_install(python: Path, *wheels: Path) -> None:
    subprocess.run(
        [UV, "pip", "install", "--python", python, "--no-index", *wheels],
        check=True,
        capture_output=True,
        text=True,
    )


def conda_pkg(name: str, version: str, files: dict[str, str], **kw: object) -> dict[str, object]:
    return dict(name=name, version=version, subdir="noarch", depends=["python"], files=files, **kw)


def dist_info_files(name: str, version: str, module: str, body: str) -> dict[str, str]:
    """A python library as a conda package ships it: module + dist-info with INSTALLER 'conda'."""
    di = f"{SP}/{name}-{version}.dist-info"
    rel = [
        f"{module}.py",
        f"{name}-{version}.dist-info/METADATA",
        f"{name}-{version}.dist-info/INSTALLER",
        f"{name}-{version}.dist-info/RECORD",
    ]
    return {
        f"{SP}/{module}.py": body,
        f"{di}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{di}/INSTALLER": "conda\n",
        f"{di}/RECORD": "".join(f"{r},,\n" for r in rel),
    }


@pytest.fixture(scope="session")
def channel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Built once: relocatable python, a placeholder package, a conda-installed python lib, case twins."""
    root = tmp_path_factory.mktemp("pack-channel")
    return make_channel(
        root / "ch",
        [
            python_package_spec(),
            conda_pkg(
                "greet",
                "1.0",
                {
                    "bin/greet": f"#!{PLACEHOLDER}/bin/python{PY}\n"
                    "import sys\nprint('greet from', sys.prefix)\n",
                    "share/greet/config.txt": f"data_dir = {PLACEHOLDER}/share/greet\n",
                },
                executables=["bin/greet"],
                prefix_files=["bin/greet", "share/greet/config.txt"],
            ),
            conda_pkg("sixish", "1.0", dist_info_files("sixish", "1.0", "sixish", "V = 'conda 1.0'\n")),
            conda_pkg("docs-upper", "1.0", {"share/doc/README.txt": "upper\n"}),
            conda_pkg("docs-lower", "1.0", {"share/doc/readme.txt": "lower\n"}),
        ],
    )


@pytest.fixture(scope="session")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("pack-wheels")
    return {
        "hellopkg": make_wheel(
            out,
            "hellopkg",
            "0.3",
            {"hellopkg/__init__.py": "def main():\n    print('hello')\n"},
            scripts={"hello-cli": "hellopkg:main"},
        ),
        "otherpkg": make_wheel(out, "otherpkg", "1.2", {"otherpkg/__init__.py": "X = 1\n"}),
        "sixish2": make_wheel(out, "sixish", "2.0", {"sixish_new/__init__.py": "V = 'pip 2.0'\n"}),
        "sixfork": make_wheel(out, "sixish-fork", "1.5", {"sixish.py": "V = 'fork'\n"}),
        "torch": make_wheel(
            out,
            "torch",
            "1.10.0+cu113",
            {
                "torch/__init__.py": "from torch.version import __version__\n",
                # torch's own version.py records the CUDA it was built with exactly like this
                "torch/version.py": "__version__ = '1.10.0+cu113'\ndebug = False\ncuda = '11.3'\n"
                "git_version = '36449ea93134574c2a22b87baad3de0bf8d64d42'\nhip = None\n",
            },
        ),
    }


def conda_env(channel: Path, path: Path, *specs: str) -> Path:
    return install_env(channel, path, ["python", *specs])


def make_venv(path: Path, *wheels: Path) -> Path:
    subprocess.run([BASE_PYTHON, "-m", "venv", "--without-pip", path], check=True)
    if wheels:
        uv_install(path / "bin" / "python", *wheels)
    return path


def run(cmd: list[object], **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kw)  # type: ignore[call-overload]


def no_file_names(root: Path, needle: str) -> list[str]:
    """Every non-.pyc file under root that still contains ``needle`` (what a user would grep for)."""
    hits = []
    for p in root.rglob("*"):
        if (
            p.is_file()
            and not p.is_symlink()
            and p.suffix != ".pyc"
            and p.name != "conda-unpack"
            and p.name not in (MANIFEST, CHECKSUMS)
            and needle.encode() in p.read_bytes()
        ):
            hits.append(str(p.relative_to(root)))
    return hits


# --- conda round trip ----------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["tar.zst", "tar.gz", "zip"])
def test_conda_env_round_trip_relocates(
    channel: Path, wheels: dict[str, Path], tmp_path: Path, fmt: str
) -> None:
    env = conda_env(channel, tmp_path / "src" / "env", "greet")
    uv_install(env / "bin" / "python", wheels["hellopkg"])
    archive = tmp_path / f"env.{fmt}"
    result = pack(env, archive, jobs=2)
    assert result.kind == "conda" and result.format == fmt and archive.stat().st_size == result.size

    manifest = read_manifest(archive)
    assert manifest is not None and manifest["source"]["prefix"] == str(env)
    pkgs = {(p["name"], p["version"], p["installer"]) for p in manifest["packages"]}
    assert {
        ("python", ".".join(map(str, sys.version_info[:3])), "conda"),
        ("greet", "1.0", "conda"),
        ("hellopkg", "0.3", "uv"),
    } <= pkgs
    assert manifest["source"]["profile"]["os"]

    # The source env disappears: nothing in the copy may lean on it.
    env.rename(tmp_path / "src" / "gone")
    dest = tmp_path / "elsewhere" / "copy"
    report = unpack(archive, dest)
    assert report.ok, report.findings
    assert report.fixup["conda_unpack"] is True and report.fixup["verified_files"] > 500

    out = run(
        [dest / "bin" / "python", "-c", "import sys, hellopkg; print(sys.prefix); print(hellopkg.__file__)"]
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [str(dest), str(dest / SP / "hellopkg" / "__init__.py")]
    # console scripts run directly (no activation): pip-made and conda-made, shebangs point at the copy
    cli = run([dest / "bin" / "hello-cli"])
    assert (cli.returncode, cli.stdout) == (0, "hello\n"), cli.stderr
    assert (dest / "bin" / "hello-cli").read_text().splitlines()[0] == f"#!{dest}/bin/python"
    assert run([dest / "bin" / "greet"]).stdout == f"greet from {dest}\n"
    assert (dest / "share/greet/config.txt").read_text() == f"data_dir = {dest}/share/greet\n"
    assert no_file_names(dest, str(env)) == []
    if fmt == "tar.zst":  # an unpacked copy packs and moves again
        pack(dest, tmp_path / "again.tar.zst")
        third = tmp_path / "third"
        assert unpack(tmp_path / "again.tar.zst", third).ok
        assert run([third / "bin" / "hello-cli"]).stdout == "hello\n"
        assert run([third / "bin" / "greet"]).stdout == f"greet from {third}\n"


def test_inspect_reads_manifest_without_unpacking(
    channel: Path, wheels: dict[str, Path], tmp_path: Path
) -> None:
    env = conda_env(channel, tmp_path / "env", "sixish")
    uv_install(env / "bin" / "python", wheels["otherpkg"])
    (env / ".envbuild").mkdir()
    (env / ".envbuild" / "envbuild.lock.json").write_text(json.dumps({"schema_version": 1, "name": "demo"}))
    archive = tmp_path / "env.tar.zst"
    pack(env, archive)
    before = set(tmp_path.iterdir())
    out = run([*ENVBUILD, "inspect", archive, "--json"])
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout)
    assert set(tmp_path.iterdir()) == before
    assert info["has_manifest"] and info["lock"] == "demo" and info["source"]["prefix"] == str(env)
    got = {p["name"]: (p["version"], p["installer"]) for p in info["packages"]}
    assert got["sixish"] == ("1.0", "conda") and got["otherpkg"] == ("1.2", "uv")
    # the table form names the packages too
    table = run([*ENVBUILD, "inspect", archive])
    assert "otherpkg" in table.stdout and str(env) in table.stdout


def test_inspect_plain_conda_pack_archive_lists_conda_meta(
    channel: Path, wheels: dict[str, Path], tmp_path: Path
) -> None:
    import conda_pack

    env = conda_env(channel, tmp_path / "env", "greet", "sixish")
    uv_install(env / "bin" / "python", wheels["otherpkg"])
    archive = Path(conda_pack.pack(prefix=str(env), output=str(tmp_path / "plain.tar.gz")))
    info = inspect_archive(archive)
    assert not info["has_manifest"]
    got = {(p["name"], p["version"], p["installer"]) for p in info["packages"]}
    assert got >= {("greet", "1.0", "conda"), ("python", info["python"], "conda"), ("otherpkg", "1.2", "uv")}
    assert ("sixish", "1.0", "conda") in got and not any(p[0] == "sixish" and p[2] != "conda" for p in got)
    assert info["source"]["prefix"] == str(env)
    # and unpack still fixes it with conda-unpack
    report = unpack(archive, tmp_path / "copy")
    assert report.ok, report.findings
    assert (
        (tmp_path / "copy/share/greet/config.txt").read_text().startswith(f"data_dir = {tmp_path / 'copy'}")
    )


# --- venv round trip -----------------------------------------------------------------------


def test_venv_round_trip(wheels: dict[str, Path], tmp_path: Path) -> None:
    venv = make_venv(tmp_path / "src" / "venv", wheels["hellopkg"], wheels["otherpkg"])
    archive = tmp_path / "venv.tar.gz"
    result = pack(venv, archive)
    assert result.kind == "venv"
    manifest = read_manifest(archive)
    assert manifest is not None
    assert {p["name"] for p in manifest["packages"]} >= {"hellopkg", "otherpkg"}
    assert f"bin/python{PY}" in manifest["fixup"]["python_links"]  # the link to the base interpreter
    with tarfile.open(archive) as tf:  # no member points outside the env
        assert all(not (m.issym() and os.path.isabs(m.linkname)) for m in tf.getmembers())

    venv.rename(tmp_path / "src" / "gone")
    dest = tmp_path / "there" / "venv"
    report = unpack(archive, dest)
    assert report.ok, report.findings
    out = run([dest / "bin" / "python", "-c", "import sys, hellopkg, otherpkg; print(sys.prefix)"])
    assert (out.returncode, out.stdout.strip()) == (0, str(dest)), out.stderr
    assert run([dest / "bin" / "hello-cli"]).stdout == "hello\n"
    assert (
        f'VIRTUAL_ENV="{dest}"' in (dest / "bin" / "activate").read_text()
        or f"VIRTUAL_ENV='{dest}'" in (dest / "bin" / "activate").read_text()
    )
    assert no_file_names(dest, str(venv)) == []
    # and the copy can be packed and moved again
    pack(dest, tmp_path / "again.tar.gz")
    again = unpack(tmp_path / "again.tar.gz", tmp_path / "third" / "venv")
    assert again.ok and run([tmp_path / "third/venv/bin/hello-cli"]).stdout == "hello\n"


def test_venv_zip_keeps_its_links_and_unpacks(wheels: dict[str, Path], tmp_path: Path) -> None:
    """A zip holds the venv's links as links (lib64 -> lib, bin/python -> the base interpreter), as a
    tar does; it held copies of lib/ under lib64/ before, in no checksum list, and unpack refused it."""
    import zipfile

    venv = make_venv(tmp_path / "src" / "venv", wheels["hellopkg"])
    assert (venv / "lib64").is_symlink()  # python -m venv makes it on 64-bit Linux
    archive = tmp_path / "venv.zip"
    pack(venv, archive)
    with zipfile.ZipFile(archive) as zf:
        names = zf.namelist()
        assert "lib64" in names and not any(n.startswith("lib64/") for n in names)
    venv.rename(tmp_path / "src" / "gone")
    dest = tmp_path / "there" / "venv"
    report = unpack(archive, dest)
    assert report.ok, report.findings
    assert os.readlink(dest / "lib64") == "lib"
    out = run([dest / "bin" / "python", "-c", "import sys, hellopkg; print(sys.prefix)"])
    assert (out.returncode, out.stdout.strip()) == (0, str(dest)), out.stderr


def _cli_json_and_record(monkeypatch: pytest.MonkeyPatch, presenter: str, args: list[object]) -> tuple[
        int, dict[str, Any], Any]:
    """Run the CLI in-process; the JSON it printed and the record it handed to ``presenter``."""
    from typer.testing import CliRunner

    from envbuild import output
    from envbuild.cli import app

    seen: list[Any] = []
    real = getattr(output, presenter)

    def keep(record: Any, as_json: bool) -> None:
        seen.append(record)
        real(record, as_json)

    monkeypatch.setattr(output, presenter, keep)
    res = CliRunner().invoke(app, [str(a) for a in args])
    assert len(seen) == 1, res.output
    return res.exit_code, json.loads(res.stdout), seen[0]


def test_pack_and_unpack_json_is_the_records_to_dict(
    wheels: dict[str, Path], tmp_path: Path, profiles_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`pack --json` / `unpack --json` print the PackResult / UnpackReport, and nothing else."""
    from envbuild.pack import PackResult
    from envbuild.unpack import UnpackReport

    venv = make_venv(tmp_path / "venv", wheels["hellopkg"], wheels["torch"])
    (venv / "share").mkdir()
    (venv / "share" / "where.txt").write_text(f"prefix = {venv}/share\n")  # the fix-up rewrites it
    pack_keys = {"ok", "archive", "format", "kind", "prefix", "members", "size", "jobs", "packages", "torch",
                 "python", "lock", "warnings", "env_files", "env_dirs", "env_bytes", "image_files",
                 "inodes_when_used", "seconds"}
    archive = tmp_path / "v.tar.zst"
    code, printed, result = _cli_json_and_record(monkeypatch, "present_pack",
                                                 ["pack", venv, "-o", archive, "-j", "1", "--json"])
    assert code == 0 and isinstance(result, PackResult)
    assert printed == json.loads(json.dumps(result.to_dict())) and set(printed) == pack_keys
    assert result.ok and result.kind == "venv" and result.size == archive.stat().st_size
    assert result.torch == {"version": "1.10.0+cu113", "cuda": "11.3", "site": SP}
    # --slurm-script adds its key (absent above)
    script = tmp_path / "unpack.sh"
    code, printed, result = _cli_json_and_record(
        monkeypatch, "present_pack",
        ["pack", venv, "-o", tmp_path / "v.tar.gz", "--slurm-script", script, "--json"])
    assert code == 0 and printed == json.loads(json.dumps(result.to_dict()))
    assert set(printed) == pack_keys | {"slurm_script"} and result.slurm_script == str(script)
    assert script.is_file()

    old_gpu = profiles_dir / "v100-old-driver.json"  # driver 418.67 (CUDA 10.1): torch cu113 will not run
    for extra in (["--check-only"], []):
        dest = tmp_path / ("never" if extra else "dest")
        code, printed, report = _cli_json_and_record(
            monkeypatch, "present_unpack", ["unpack", archive, dest, "--target", old_gpu, "--json", *extra])
        assert isinstance(report, UnpackReport) and printed == json.loads(json.dumps(report.to_dict()))
        assert set(printed) == {"ok", "archive", "dest", "checked", "kind", "source", "source_host", "target",
                                "fixup", "doctor", "findings", "unchecked"}
        assert all(set(f) == {"family", "severity", "cause", "fix", "evidence"} for f in printed["findings"])
        assert code == 1 and not report.ok and printed["target"] == report.target.to_dict()
        assert report.target.driver_version == "418.67" and report.source == str(venv)
        assert any(f.severity == "error" and f.family.startswith("driver") for f in report.findings)
        assert report.checked == ("manifest" if extra else "unpacked env")
        assert dest.exists() is not bool(extra)
        assert bool(report.unchecked) is bool(extra) and report.doctor is not bool(extra)
    assert report.fixup["verified_files"] > 0 and "share/where.txt" in report.fixup["text_files"]


def test_venv_whose_base_python_is_missing_here_is_an_error(
    channel: Path, wheels: dict[str, Path], tmp_path: Path
) -> None:
    base = conda_env(channel, tmp_path / "base")  # a Python that exists only on the "source" machine
    venv = tmp_path / "venv"
    subprocess.run([base / "bin" / f"python{PY}", "-m", "venv", "--without-pip", venv], check=True)
    uv_install(venv / "bin" / "python", wheels["otherpkg"])
    archive = tmp_path / "v.tar.gz"
    pack(venv, archive)
    shutil.rmtree(base)
    out = run([*ENVBUILD, "unpack", archive, tmp_path / "copy", "--json"])
    report = json.loads(out.stdout)
    assert out.returncode == 1 and not report["ok"]
    (f,) = [f for f in report["findings"] if f["severity"] == "error"]
    assert (
        f["family"] == "interpreter"
        and str(base / "bin") in f["cause"]
        and f"bin/python{PY}" in f["evidence"]
    )
    # --check-only says the same before extracting anything, and names what it could not check
    pre = run([*ENVBUILD, "unpack", archive, tmp_path / "never", "--check-only", "--json"])
    pre_report = json.loads(pre.stdout)
    assert pre.returncode == 1 and not pre_report["ok"] and not (tmp_path / "never").exists()
    (g,) = [g for g in pre_report["findings"] if g["severity"] == "error"]
    assert g["family"] == "interpreter" and str(base / "bin") in g["cause"]
    assert f"bin/python{PY}" in g["evidence"]
    assert any("sha256" in u for u in pre_report["unchecked"])
    assert any("doctor" in u for u in pre_report["unchecked"])
    table = run([*ENVBUILD, "unpack", archive, tmp_path / "never", "--check-only"], env={**os.environ,
                                                                                         "COLUMNS": "200"})
    assert "not checked before extraction" in table.stdout


def test_check_only_passes_a_venv_whose_base_python_is_here(wheels: dict[str, Path], tmp_path: Path) -> None:
    venv = make_venv(tmp_path / "venv", wheels["otherpkg"])
    archive = tmp_path / "v.tar.gz"
    pack(venv, archive)
    manifest = read_manifest(archive)
    assert manifest is not None and manifest["fixup"]["home"] == str(BASE_PYTHON.parent)
    report = unpack(archive, tmp_path / "never", check_only=True)
    assert "interpreter" not in [f.family for f in report.findings], report.findings


# --- conda-pack refusals, explained --------------------------------------------------------


def test_editable_pip_install_refused_with_name_and_source(channel: Path, tmp_path: Path) -> None:
    env = conda_env(channel, tmp_path / "env")
    src = tmp_path / "checkout" / "mmdet3d"
    (src / "mmdet3d").mkdir(parents=True)
    (src / "mmdet3d" / "__init__.py").write_text("")
    # what `pip install -e .` (PEP 660) leaves behind
    di = env / SP / "mmdet3d-0.17.3.dist-info"
    di.mkdir()
    (di / "METADATA").write_text("Metadata-Version: 2.1\nName: mmdet3d\nVersion: 0.17.3\n")
    (di / "INSTALLER").write_text("pip\n")
    (di / "RECORD").write_text("")
    (di / "direct_url.json").write_text(json.dumps({"url": src.as_uri(), "dir_info": {"editable": True}}))
    (env / SP / "__editable__.mmdet3d-0.17.3.pth").write_text(f"{src}\n")
    with pytest.raises(EditableInstall) as ei:
        pack(env, tmp_path / "x.tar.gz")
    text = ei.value.render()
    assert (
        "mmdet3d 0.17.3" in text
        and str(src) in text
        and "pip install" in text
        and "--ignore-editable" in text
    )
    assert "editable packages" in ei.value.conda_pack_said  # type: ignore[attr-defined]  # conda-pack refused
    assert not (tmp_path / "x.tar.gz").exists()
    assert pack(env, tmp_path / "y.tar.gz", ignore_editable=True).ok
    inside = run([*ENVBUILD, "pack", env, "-o", env / "self.tar.gz"])
    assert inside.returncode == 2 and "inside the env" in inside.stderr and not (env / "self.tar.gz").exists()


def test_setup_py_develop_egg_link_refused(channel: Path, tmp_path: Path) -> None:
    env = conda_env(channel, tmp_path / "env")
    src = tmp_path / "mmdetection3d"
    src.mkdir()
    # what `python setup.py develop` (mmdet3d 0.17's install) leaves: an egg-link and easy-install.pth
    (env / SP / "mmdet3d.egg-link").write_text(f"{src}\n.\n")
    (env / SP / "easy-install.pth").write_text(f"{src}\n")
    out = run([*ENVBUILD, "pack", env, "-o", tmp_path / "x.tar.gz"])
    assert out.returncode == 5
    assert "mmdet3d" in out.stderr and "setup.py develop" in out.stderr and str(src) in out.stderr
    assert not (tmp_path / "x.tar.gz").exists()


def test_pth_path_outside_env_refused_in_venv(wheels: dict[str, Path], tmp_path: Path) -> None:
    venv = make_venv(tmp_path / "venv", wheels["otherpkg"])
    src = tmp_path / "work" / "mylib"
    src.mkdir(parents=True)
    (venv / SP / "mylib-dev.pth").write_text(f"import os\n{src}\n")  # what `conda develop` writes
    with pytest.raises(EditableInstall) as ei:
        pack(venv, tmp_path / "v.tar.gz")
    assert str(src) in ei.value.render() and f"{SP}/mylib-dev.pth" in ei.value.render()


def test_pip_replacing_conda_package_is_explained(
    channel: Path, wheels: dict[str, Path], tmp_path: Path
) -> None:
    env = conda_env(channel, tmp_path / "env", "sixish")
    uv_install(env / "bin" / "python", wheels["sixish2"])  # uninstalls conda's sixish 1.0 files
    with pytest.raises(MissingCondaFiles) as ei:
        pack(env, tmp_path / "x.tar.gz")
    text = ei.value.render()
    assert "deleted/overwritten" in ei.value.conda_pack_said  # type: ignore[attr-defined]
    assert "sixish 1.0" in text and "uv replaced it with sixish 2.0" in text
    assert "--force-reinstall sixish" in text


def test_pip_wheel_overwriting_conda_file_is_explained(
    channel: Path, wheels: dict[str, Path], tmp_path: Path
) -> None:
    env = conda_env(channel, tmp_path / "env", "sixish")
    uv_install(env / "bin" / "python", wheels["sixfork"])  # same path: site-packages/sixish.py
    assert run([env / "bin" / "python", "-c", "import sixish; print(sixish.V)"]).stdout == "fork\n"
    with pytest.raises(PipOverwroteConda) as ei:
        pack(env, tmp_path / "x.tar.gz")
    text = ei.value.render()
    assert "sixish-fork 1.5" in text and "conda package sixish 1.0" in text and f"{SP}/sixish.py" in text
    assert "pip uninstall -y sixish-fork" in text


def test_deleted_file_not_blamed_on_pip(channel: Path, tmp_path: Path) -> None:
    env = conda_env(channel, tmp_path / "env", "greet")
    (env / "share/greet/config.txt").unlink()
    with pytest.raises(MissingCondaFiles) as ei:
        pack(env, tmp_path / "x.tar.gz")
    text = ei.value.render()
    assert "greet 1.0" in text and "share/greet/config.txt" in text
    assert "other than pip" in text and "replaced it" not in text
    assert "conda install -p" in text and "--force-reinstall greet" in text


def test_hand_edited_conda_file_is_a_warning(channel: Path, tmp_path: Path) -> None:
    env = conda_env(channel, tmp_path / "env", "sixish")
    target = env / SP / "sixish.py"
    target.unlink()  # a new inode: the package-cache copy stays pristine, as with an editor's save
    target.write_text("V = 'patched by hand'\n")
    result = pack(env, tmp_path / "x.tar.gz")
    (warning,) = [w for w in result.warnings if "edited after install" in w]
    assert f"{SP}/sixish.py" in warning and "NOT in the archive" in warning


def test_case_insensitive_collision_not_blamed_on_pip(channel: Path, tmp_path: Path) -> None:
    env = conda_env(channel, tmp_path / "env", "docs-upper", "docs-lower")
    # On a case-insensitive file system both packages write ONE file; the directory holds one name.
    (env / "share/doc/readme.txt").unlink()
    with pytest.raises(MissingCondaFiles) as ei:
        pack(env, tmp_path / "x.tar.gz")
    text = ei.value.render()
    assert "docs-lower 1.0" in text and "case-insensitive file system" in text and "not pip" in text


def test_missing_package_cache_warns_and_says_so(channel: Path, tmp_path: Path) -> None:
    env = conda_env(channel, tmp_path / "env", "greet")
    shutil.rmtree(tmp_path / ".rattler-cache")  # what `conda clean -p` does to the linked sources
    result = pack(env, tmp_path / "x.tar.gz")
    assert any("package cache" in w and "greet 1.0" in w for w in result.warnings)
    (env / "share/greet/config.txt").unlink()
    with pytest.raises(MissingCondaFiles) as ei:
        pack(env, tmp_path / "y.tar.gz")
    assert "package-cache entry is gone" in ei.value.render() and "replaced it" not in ei.value.render()


# --- unsafe archives -----------------------------------------------------------------------


def _tar_with(path: Path, member: tarfile.TarInfo, data: bytes = b"") -> Path:
    with tarfile.open(path, "w:gz") as tf:
        ok = tarfile.TarInfo("bin/ok")
        ok.size = 2
        tf.addfile(ok, io.BytesIO(b"ok"))
        member.size = len(data)
        tf.addfile(member, io.BytesIO(data))
    return path


@pytest.mark.parametrize("kind", ["dotdot", "symlink"])
def test_escaping_archive_refused_nothing_written(tmp_path: Path, kind: str) -> None:
    if kind == "dotdot":
        m = tarfile.TarInfo("../../evil.txt")
    else:
        m = tarfile.TarInfo("lib/escape")
        m.type = tarfile.SYMTYPE
        m.linkname = "../../../../../etc"
    archive = _tar_with(tmp_path / "bad.tar.gz", m, b"pwned" if kind == "dotdot" else b"")
    dest = tmp_path / "a" / "b" / "dest"
    before = sorted(p for p in tmp_path.rglob("*"))
    with pytest.raises(UnsafeArchive):
        unpack(archive, dest)
    assert sorted(p for p in tmp_path.rglob("*")) == before  # no dest, no temp dir, no evil.txt
    out = run([*ENVBUILD, "unpack", archive, dest, "--json"])
    assert out.returncode == 5 and json.loads(out.stdout)["error"] == "UnsafeArchive"


def _rewrite(src: Path, dst: Path, edit: dict[str, bytes]) -> None:
    """Copy an envbuild tar.gz with members replaced, and envbuild-files.sha256 made to match
    (an attacker controls both, so the checksum file is no defence by itself)."""
    with tarfile.open(src) as tf:
        members = [(m, tf.extractfile(m).read() if m.isfile() else None) for m in tf.getmembers()]  # type: ignore[union-attr]
    sums = {}
    out = []
    for m, data in members:
        if m.name in edit:
            data = edit[m.name]
        if data is not None and m.name != CHECKSUMS:
            sums[m.name] = hashlib.sha256(data).hexdigest()
        out.append((m, data))
    with tarfile.open(dst, "w:gz") as tf:
        for m, data in out:
            if m.name == CHECKSUMS:
                data = "".join(f"{h}  {n}\n" for n, h in sums.items()).encode()
            if data is not None:
                m.size = len(data)
            tf.addfile(m, io.BytesIO(data) if data is not None else None)


def test_the_archives_own_conda_unpack_is_never_run(channel: Path, tmp_path: Path) -> None:
    env = conda_env(channel, tmp_path / "src", "greet")
    good = tmp_path / "env.tar.gz"
    pack(env, good)
    marker = tmp_path / "conda-unpack-ran"
    with tarfile.open(good) as tf:
        script = tf.extractfile("bin/conda-unpack").read()  # type: ignore[union-attr]
    # The records stay, but the script would leave a marker (and could do anything) if run.
    hostile = script.replace(b"if __name__ == '__main__':",
                             f"open({str(marker)!r}, 'w').write('ran')\nif __name__ == '__main__':".encode())
    assert hostile != script
    evil = tmp_path / "evil.tar.gz"
    _rewrite(good, evil, {"bin/conda-unpack": hostile})
    dest = tmp_path / "copy"
    report = unpack(evil, dest)
    assert report.fixup["conda_unpack"] is True and report.fixup["prefix_records"] >= 1
    assert not marker.exists()
    # the records were still applied: the placeholder became the new prefix
    assert (dest / "share/greet/config.txt").read_text() == f"data_dir = {dest}/share/greet\n"
    assert run([dest / "bin" / "greet"]).stdout == f"greet from {dest}\n"
    # The standalone fix-up shipped in the archive (what a node without envbuild runs) does the same
    # from the records, without conda-unpack.
    from envbuild._fs import safe_extract

    node = safe_extract(evil, tmp_path / "node")
    fx = run([sys.executable, "-I", node / "bin" / "envbuild-unpack", node])
    assert fx.returncode == 0 and json.loads(fx.stdout)["prefix_records"] >= 1, fx.stderr
    assert (node / "share/greet/config.txt").read_text() == f"data_dir = {node}/share/greet\n"
    assert not marker.exists()

    # records naming a path outside DEST are refused, and nothing outside is touched
    victim = tmp_path / "victim.txt"
    victim.write_text(f"{PLACEHOLDER}\n")
    bad = script.replace(b"_prefix_records = [\n", b"_prefix_records = [\n('../victim.txt', "
                         + repr(PLACEHOLDER).encode() + b", 'text'),\n", 1)
    assert bad != script
    _rewrite(good, tmp_path / "bad.tar.gz", {"bin/conda-unpack": bad})
    with pytest.raises(PackError, match=r"_prefix_records\[0\]"):
        unpack(tmp_path / "bad.tar.gz", tmp_path / "copy2")
    assert victim.read_text() == f"{PLACEHOLDER}\n" and not (tmp_path / "copy2").exists()


def test_a_member_added_after_packing_is_refused(wheels: dict[str, Path], tmp_path: Path) -> None:
    venv = make_venv(tmp_path / "venv", wheels["otherpkg"])
    good = tmp_path / "v.tar.gz"
    pack(venv, good)
    evil = tmp_path / "evil.tar.gz"
    with tarfile.open(good) as src, tarfile.open(evil, "w:gz") as dst:
        for m in src.getmembers():
            dst.addfile(m, src.extractfile(m) if m.isfile() else None)
        extra = tarfile.TarInfo(f"{SP}/sitecustomize.py")
        extra.size = 4
        dst.addfile(extra, io.BytesIO(b"pass"))
    with pytest.raises(PackError, match=r"not in envbuild-files\.sha256"):
        unpack(evil, tmp_path / "copy")
    assert not (tmp_path / "copy").exists()


# --- target checks -------------------------------------------------------------------------


def test_cu113_torch_on_driver_418_will_not_work(wheels: dict[str, Path], tmp_path: Path) -> None:
    venv = make_venv(tmp_path / "venv", wheels["torch"])
    archive = tmp_path / "torch-env.tar.zst"
    out = run([*ENVBUILD, "pack", venv, "-o", archive, "--json"])
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["torch"] == {"version": "1.10.0+cu113", "cuda": "11.3", "site": SP}
    profile = tmp_path / "old-cluster.json"
    profile.write_text(
        json.dumps(
            {
                "schema_version": 1,
                "os": "linux",
                "arch": "x86_64",
                "hostname": "old-cluster",
                "gpus": [{"name": "Tesla V100-SXM2-32GB", "compute_capability": "7.0", "memory_mib": 32510}],
                "driver_version": "418.67",
                "driver_cuda_version": "10.1",
            }
        )
    )
    res = run(
        [*ENVBUILD, "unpack", archive, tmp_path / "copy", "--target", profile],
        env={**os.environ, "COLUMNS": "200"},
    )
    assert res.returncode == 1, res.stdout + res.stderr
    text = " ".join(res.stdout.split())
    assert (
        "will not work here" in text and "418.67" in text and "1.10.0+cu113" in text and "CUDA 11.3" in text
    )
    js = run([*ENVBUILD, "unpack", archive, tmp_path / "copy2", "--target", profile, "--json"])
    report = json.loads(js.stdout)
    assert js.returncode == 1 and not report["ok"]
    err = [f for f in report["findings"] if f["severity"] == "error" and f["family"].startswith("driver")]
    assert err and "418.67" in err[0]["cause"] and "11.3" in err[0]["cause"]
    # --check-only says the same from the manifest alone, extracting nothing
    pre = run(
        [*ENVBUILD, "unpack", archive, tmp_path / "never", "--target", profile, "--check-only", "--json"]
    )
    pre_report = json.loads(pre.stdout)
    assert pre.returncode == 1 and pre_report["checked"] == "manifest" and not (tmp_path / "never").exists()
    assert any("418.67" in f["cause"] for f in pre_report["findings"] if f["severity"] == "error")
    # a different CPU architecture is refused the same way
    arm = json.loads(profile.read_text()) | {"arch": "aarch64"}
    (tmp_path / "arm.json").write_text(json.dumps(arm))
    arm_res = run(
        [*ENVBUILD, "unpack", archive, tmp_path / "x", "--target", tmp_path / "arm.json", "--check-only"]
    )
    assert arm_res.returncode == 1 and "aarch64" in " ".join(arm_res.stdout.split())
    # the same env against a driver that supports CUDA 11.3 is fine
    profile.write_text(
        json.dumps(
            {
                "os": "linux",
                "gpus": [{"name": "A100", "compute_capability": "8.0"}],
                "driver_version": "470.57.02",
                "driver_cuda_version": "11.4",
            }
        )
    )
    ok = run([*ENVBUILD, "unpack", archive, tmp_path / "copy3", "--target", profile, "--json"])
    assert not [
        f for f in json.loads(ok.stdout)["findings"] if f["family"] == "driver" and f["severity"] == "error"
    ]


@pytest.mark.parametrize("case", VERDICT_CASES, ids=lambda c: f"cu{c[1]}-driver{c[2]}")
def test_unpack_check_only_gives_resolves_verdict(tmp_path: Path, case: tuple[str, ...]) -> None:
    """unpack --check-only, from the archive's manifest, says what resolve says of the same build."""
    prof, res, floor = _resolved(*case)
    torch, cuda = case[0], case[1]
    local = f"{torch}+cu{cuda.replace('.', '')}"
    whl = make_wheel(tmp_path / "whl", "torch", local, {
        "torch/__init__.py": "from torch.version import __version__\n",
        "torch/version.py": f"__version__ = '{local}'\ndebug = False\ncuda = '{cuda}'\n",
    })
    archive = tmp_path / "env.tar.gz"
    pack(make_venv(tmp_path / "venv", whl), archive)
    target = tmp_path / "target.json"
    target.write_text(json.dumps({"os": "linux", **prof.to_dict()}))
    never = tmp_path / "never"
    out = run([*ENVBUILD, "unpack", archive, never, "--target", target, "--check-only", "--json"])
    report = json.loads(out.stdout)
    drv = [f for f in report["findings"] if f["family"] == "driver"]
    assert report["checked"] == "manifest" and not never.exists()
    assert set(drv[0]) == {"family", "severity", "cause", "fix", "evidence"}
    if res.ok:  # runs through minor-version compatibility, as resolve says: no error, the rule named
        assert res.verdict["rule"] == "minor-version-compat"
        assert out.returncode == 0, out.stdout + out.stderr
        assert [f["severity"] for f in drv] == ["info"] and "minor-version-compat" in drv[0]["cause"]
        assert "525.60.13" in drv[0]["evidence"]
    else:
        assert floor in " ".join(res.conflict_texts)
        assert out.returncode == 1 and [f["severity"] for f in drv] == ["error"]
        assert floor in drv[0]["cause"] and case[2] in drv[0]["cause"] and "NVIDIA" in drv[0]["evidence"]


def test_torch_build_read_from_conda_and_new_style_version_files(tmp_path: Path) -> None:
    from envbuild._envcheck import torch_build

    site = tmp_path / "lib/python3.9/site-packages"
    (site / "torch").mkdir(parents=True)
    (site / "torch-1.10.0-py3.9.egg-info").mkdir()  # conda's pytorch package ships an egg-info
    (site / "torch" / "version.py").write_text("__version__ = '1.10.0'\ndebug = False\ncuda = '11.3'\n")
    assert torch_build(str(tmp_path)) == {
        "version": "1.10.0",
        "cuda": "11.3",
        "site": "lib/python3.9/site-packages",
    }
    # torch >= 2.1 annotates the fields
    (site / "torch" / "version.py").write_text(
        "from typing import Optional\n__version__ = '2.1.0+cu121'\ncuda: Optional[str] = '12.1'\n"
    )
    assert torch_build(str(tmp_path))["cuda"] == "12.1"
    (site / "torch" / "version.py").write_text("__version__ = '2.1.0+cpu'\ncuda: Optional[str] = None\n")
    assert torch_build(str(tmp_path))["cuda"] is None


def test_torch_driver_check_without_doctor() -> None:
    from envbuild.unpack import torch_findings

    torch = {"version": "1.10.0+cu113", "cuda": "11.3", "site": SP}
    v100 = (Gpu("Tesla V100-SXM2-32GB", "7.0"),)
    old = torch_findings(torch, Profile(gpus=v100, driver_version="418.67", driver_cuda_version="10.1"))
    assert [f.severity for f in old] == ["error"]
    assert (
        "will not work here" in old[0].cause and "418.67" in old[0].cause and "11.3" in old[0].cause
    )
    # CUDA 11.x minor-version compatibility, and the wheel has sm_70 for the V100: it runs (info)
    minor = torch_findings(torch, Profile(gpus=v100, driver_version="460.32", driver_cuda_version="11.2"))
    assert [f.severity for f in minor] == ["info"] and "minor-version-compat" in minor[0].cause
    # without the GPU's model the arch list is unchecked, and PTX JIT would fail under that rule
    blind = torch_findings(torch, Profile(gpus=(Gpu("Some GPU"),), driver_version="460.32"))
    assert [f.severity for f in blind] == ["warning"] and "PTX" in blind[0].cause
    fine = torch_findings(torch, Profile(gpus=v100, driver_version="470.57", driver_cuda_version="11.4"))
    assert [f.severity for f in fine] == ["info"]
    cpu = torch_findings(torch, Profile())
    assert [f.severity for f in cpu] == ["warning"] and "CPU-only" in cpu[0].cause


def test_old_prefix_left_in_a_script_is_reported(wheels: dict[str, Path], tmp_path: Path) -> None:
    venv = make_venv(tmp_path / "venv", wheels["hellopkg"])
    archive = tmp_path / "v.tar.gz"
    pack(venv, archive)
    # a hand-made script with the prefix TWICE in its shebang line area survives as a finding,
    # checked on a copy whose manifest does not list it (as a plain archive would not)
    dest = tmp_path / "copy"
    unpack(archive, dest)
    script = dest / "bin" / "tool"
    script.write_text(f"#!{venv}/bin/python\nprint(1)\n")
    from envbuild.unpack import prefix_findings

    found = prefix_findings(dest, str(venv))
    assert [f.severity for f in found] == ["error"] and "bin/tool" in found[0].evidence



def test_unpack_reports_a_binary_naming_the_old_prefix_found_while_extracting(wheels: dict[str, Path],
                                                                             tmp_path: Path) -> None:
    """unpack reads again only the files that named the old prefix when extracted: a binary the
    fix-up cannot rewrite is still reported, and a rewritten text file no longer is."""
    venv = make_venv(tmp_path / "venv", wheels["hellopkg"])
    blob = venv / "lib" / "libembed.so"
    blob.write_bytes(b"\x7fELF\0\0" + str(venv).encode() + b"/lib\0" * 3)
    (venv / "share").mkdir()
    (venv / "share" / "paths.cfg").write_text(f"root = {venv}\n")
    archive = tmp_path / "v.tar.zst"
    pack(venv, archive)
    report = unpack(archive, tmp_path / "dest")
    evidence = " ".join(f.evidence for f in report.findings if f.family == "prefix")
    assert "lib/libembed.so" in evidence and "share/paths.cfg" not in evidence
    assert (tmp_path / "dest" / "share" / "paths.cfg").read_text() == f"root = {tmp_path / 'dest'}\n"


# --- Slurm ---------------------------------------------------------------------------------


def test_slurm_script_is_shellcheck_clean_quoted_and_works(channel: Path, tmp_path: Path) -> None:
    env = conda_env(channel, tmp_path / "env", "greet")
    weird = tmp_path / "it's $(touch PWNED) dir"
    weird.mkdir()
    archive = weird / "env.tar.zst"
    pack(env, archive)
    script = tmp_path / "slurm-unpack.sh"
    out = run([*ENVBUILD, "slurm-script", archive, "-o", script, "--dest", str(tmp_path / "node-local/env"),
               "--archive", str(archive)])
    assert out.returncode == 0, out.stderr
    text = script.read_text()
    assert "set -euo pipefail" in text and "sbcast" in text and "--ntasks-per-node=1" in text
    shellcheck = Path(sys.executable).parent / "shellcheck"
    sc = run([shellcheck, "-S", "style", script])
    assert sc.returncode == 0, sc.stdout
    assert render_slurm(archive) != text  # default dest uses $TMPDIR/$USER, not the given one
    both = run(
        [*ENVBUILD, "pack", env, "-o", tmp_path / "b.tar.gz", "--slurm-script", tmp_path / "b.sh", "--json"]
    )
    assert both.returncode == 0 and json.loads(both.stdout)["slurm_script"] == str(tmp_path / "b.sh")
    # stdout is pack's: a script there would be mixed into the JSON (it was, with "slurm_script": "None")
    dash = run([*ENVBUILD, "pack", env, "-o", tmp_path / "c.tar.gz", "--slurm-script", "-", "--json"])
    err = json.loads(dash.stdout)  # --json: the error is the one JSON document on stdout
    assert dash.returncode == 2 and err["ok"] is False and err["field"] == "--slurm-script"
    assert not (tmp_path / "c.tar.gz").exists()
    # the laptop's absolute path is not baked in: the script looks next to itself on the cluster
    b_text = (tmp_path / "b.sh").read_text()
    assert str(tmp_path) not in b_text and "archive_path=b.tar.gz" in b_text

    # Run it for real with stand-ins for the two Slurm commands (one local "node").
    shims = tmp_path / "shims"
    shims.mkdir()
    (shims / "srun").write_text('#!/bin/sh\nwhile [ "${1#--}" != "$1" ]; do shift; done\nexec "$@"\n')
    (shims / "sbcast").write_text('#!/bin/sh\nwhile [ "${1#--}" != "$1" ]; do shift; done\ncp "$1" "$2"\n')
    for s in shims.iterdir():
        s.chmod(0o755)
    env.rename(tmp_path / "gone")
    res = run(
        ["bash", script],
        cwd=tmp_path,
        env={
            **os.environ,
            "PATH": f"{shims}:{os.environ['PATH']}",
            "SLURM_JOB_ID": "1",
            "SLURM_JOB_NUM_NODES": "1",
        },
    )
    assert res.returncode == 0, res.stderr
    dest = tmp_path / "node-local" / "env"
    assert run([dest / "bin" / "greet"]).stdout == f"greet from {dest}\n"
    assert not (tmp_path / "PWNED").exists() and not (weird / "PWNED").exists()
    # a changed archive is refused before anything is copied
    with open(archive, "ab") as fh:
        fh.write(b"x")
    bad = run(
        ["bash", script],
        cwd=tmp_path,
        env={**os.environ, "PATH": f"{shims}:{os.environ['PATH']}", "SLURM_JOB_ID": "1",
             "ENVBUILD_DEST": str(tmp_path / "node-local" / "fresh")},
    )
    assert bad.returncode == 3 and "the archive is altered" in bad.stderr
    assert "does not match the sha256" in bad.stderr


def test_pypi_torch_without_local_label_reports_its_cuda(tmp_path: Path) -> None:
    """PyPI's torch 2.6.0 is the CUDA 12.4 build but its version has no +cu124: version.py says so."""
    from envbuild._envcheck import packages, torch_build

    site = tmp_path / "lib/python3.11/site-packages"
    (site / "torch").mkdir(parents=True)
    (site / "torch" / "version.py").write_text(
        "from typing import Optional\n__version__ = '2.6.0'\ncuda: Optional[str] = '12.4'\n"
    )
    di = site / "torch-2.6.0.dist-info"
    di.mkdir()
    (di / "METADATA").write_text("Metadata-Version: 2.1\nName: torch\nVersion: 2.6.0\n")
    (di / "INSTALLER").write_text("uv\n")
    assert torch_build(str(tmp_path)) == {"version": "2.6.0", "cuda": "12.4",
                                     "site": "lib/python3.11/site-packages"}
    row = next(p for p in packages(str(tmp_path), "venv") if p["name"] == "torch")
    assert (row["version"], row["cuda"]) == ("2.6.0", "12.4")


@pytest.mark.parametrize("fmt", ["tar.zst", "tar.gz"])
def test_streamed_tar_holds_every_member_and_its_hash(tmp_path: Path, fmt: str) -> None:
    """The block-streaming tar writer: the members tarfile.add would write (hard link, symlink,
    long and non-ASCII names, a file bigger than one block), each sha256 taken from the one read."""
    from envbuild.tools.condapack import TarStream, _ustar, open_archive

    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    files = {
        "small.py": b"print('hi')\n",
        "empty": b"",
        "big.bin": os.urandom(9 << 20),  # > the 4 MiB block: written straight through
        "d/" + "n" * 120 + ".txt": b"long name\n",  # > 100 chars: tarfile's PAX header
        "d/caf\u00e9.txt": b"non-ascii\n",
    }
    for rel, data in files.items():
        (src / rel).write_bytes(data)
    os.link(src / "small.py", src / "d" / "twin.py")
    os.symlink("../small.py", src / "d" / "link.py")
    members = [*files, "d/twin.py", "d/link.py", "d"]
    out = tmp_path / f"a.{fmt}"
    with open_archive(out, fmt, jobs=2) as writer:
        for rel in members:
            writer.add(str(src / rel), rel)
        sums = writer.checksums()
    assert sums["d/twin.py"] == sums["small.py"] == hashlib.sha256(files["small.py"]).hexdigest()
    assert sums["d/link.py"] == "symlink:../small.py" and "d" not in sums
    for rel, data in files.items():
        assert sums[rel] == hashlib.sha256(data).hexdigest()
    if fmt == "tar.zst":
        import zstandard

        raw = zstandard.ZstdDecompressor().stream_reader(out.open("rb")).read()
    else:
        import gzip

        raw = gzip.decompress(out.read_bytes())
    assert len(raw) % tarfile.RECORDSIZE == 0
    with tarfile.open(fileobj=io.BytesIO(raw)) as tf:
        got = {m.name: m for m in tf.getmembers()}
        assert sorted(got) == sorted(members)
        for rel, data in files.items():
            f = tf.extractfile(got[rel])
            assert f is not None and f.read() == data
        assert got["d/twin.py"].islnk() and got["d/twin.py"].linkname == "small.py"
        assert got["d/link.py"].issym() and got["d"].isdir()
    # The directly built ustar headers are byte for byte tarfile's own.
    stream = TarStream(io.BytesIO())
    for rel in members:
        info = stream._info(str(src / rel), rel, os.lstat(src / rel))
        assert info is not None
        fast = _ustar(info)
        assert fast is None or fast == info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")
    assert _ustar(stream._info(str(src / "small.py"), "small.py", os.lstat(src / "small.py"))) is not None


# --- the one-pass tar.zst (manifest frame written last, placed first) -------------------------


def _members_of(raw: bytes) -> list[tuple[tarfile.TarInfo, bytes]]:
    with tarfile.open(fileobj=io.BytesIO(raw)) as tf:
        return [(m, (f.read() if m.isreg() and (f := tf.extractfile(m)) else b"")) for m in tf.getmembers()]


def _odd_venv(wheels: dict[str, Path], root: Path) -> Path:
    """A venv with what the prefix search must find: a text file naming the prefix at a 4 MiB read
    boundary, a binary naming it, a hard link to a script, a symlink, a .pyc naming it."""
    venv = make_venv(root / "venv", wheels["hellopkg"])
    needle = str(venv).encode()
    (venv / "share").mkdir()
    (venv / "share" / "straddle.txt").write_bytes(b"a" * ((4 << 20) - 7) + needle + b"\n")
    (venv / "share" / "plain.txt").write_bytes(b"b" * (5 << 20))
    (venv / "lib" / "libembed.so").write_bytes(b"\x7fELF\0\0" + needle + b"/lib\0")
    (venv / "lib" / "cached.pyc").write_bytes(b"\0\0" + needle)
    os.link(venv / "bin" / "hello-cli", venv / "bin" / "hello-twin")
    os.symlink("hello-cli", venv / "bin" / "hello-link")
    return venv


def test_one_pass_tar_zst_holds_the_same_tar_stream_as_before(wheels: dict[str, Path],
                                                               tmp_path: Path) -> None:
    """tar.zst reads each file once and writes the manifest last, as its own zstd frame placed at
    the start; decompressed, it is the tar stream the two-pass writer (kept for tar.gz) writes:
    the same members in the same order, the same bytes, the same manifest (text_files, content
    counts, binary warning)."""
    import gzip

    import zstandard

    venv = _odd_venv(wheels, tmp_path)
    old = pack(venv, tmp_path / "v.tar.gz")
    new = pack(venv, tmp_path / "v.tar.zst")
    zst = tmp_path / "v.tar.zst"
    unzst = subprocess.run(["zstd", "-dc", zst], capture_output=True, check=True).stdout
    raw_old = gzip.decompress((tmp_path / "v.tar.gz").read_bytes())
    assert len(unzst) % tarfile.RECORDSIZE == 0
    a, b = _members_of(raw_old), _members_of(unzst)
    assert [m.name for m, _ in a] == [m.name for m, _ in b] and a[0][0].name == MANIFEST
    generated = {MANIFEST, CHECKSUMS, "bin/envbuild-unpack"}
    for (ma, da), (mb, db) in zip(a, b, strict=True):
        fields = ("type", "mode", "uid", "gid", "uname", "gname", "linkname") + (
            ("mtime",) if ma.name not in generated else ())
        assert [getattr(ma, f) for f in fields] == [getattr(mb, f) for f in fields], ma.name
        if ma.name not in (MANIFEST, CHECKSUMS):
            assert da == db, ma.name
    man_old, man_new = json.loads(a[0][1]), json.loads(b[0][1])
    assert man_new["fixup"]["text_files"] == man_old["fixup"]["text_files"]
    assert "share/straddle.txt" in man_new["fixup"]["text_files"]
    assert "lib/cached.pyc" not in man_new["fixup"]["text_files"] and "bin/hello-twin" in man_new["fixup"][
        "text_files"]
    for key in ("created", "format"):
        man_old.pop(key), man_new.pop(key)
    assert man_new == man_old
    assert new.warnings == old.warnings and "lib/libembed.so" in new.warnings[0]
    assert (new.env_files, new.env_dirs, new.env_bytes, new.members) == (
        old.env_files, old.env_dirs, old.env_bytes, old.members)
    sums = {ma.name: d for ma, d in a}[CHECKSUMS], {mb.name: d for mb, d in b}[CHECKSUMS]
    drop = f"  {MANIFEST}\n"
    assert [ln for ln in sums[0].decode().splitlines(True) if not ln.endswith(drop)] == [
        ln for ln in sums[1].decode().splitlines(True) if not ln.endswith(drop)]
    assert f"{hashlib.sha256(b[0][1]).hexdigest()}  {MANIFEST}\n" in sums[1].decode()
    # The layout: the first frame alone is the manifest member, then a skippable frame.
    data = zst.read_bytes()
    dobj = zstandard.ZstdDecompressor().decompressobj()
    head = dobj.decompress(data)
    assert head == unzst[:len(head)] and _members_of(head + bytes(1024))[0][0].name == MANIFEST
    skip = data[len(data) - len(dobj.unused_data):]
    assert int.from_bytes(skip[:4], "little") == 0x184D2A50


def test_one_pass_tar_zst_is_read_by_every_reader(wheels: dict[str, Path], tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """tar, zstd, python-zstandard, inspect, unpack --check-only and unpack read every frame."""
    import zstandard

    from envbuild._fs import safe_extract

    venv = make_venv(tmp_path / "venv", wheels["hellopkg"])
    zst = tmp_path / "v.tar.zst"
    pack(venv, zst)
    with zst.open("rb") as fh:
        raw = zstandard.ZstdDecompressor().stream_reader(fh, read_across_frames=True).readall()
    assert raw == subprocess.run(["zstd", "-dc", zst], capture_output=True, check=True).stdout
    members = _members_of(raw)
    assert (members[0][0].name, members[-1][0].name) == (MANIFEST, CHECKSUMS)
    assert f"{SP}/hellopkg/__init__.py" in {m.name for m, _ in members}
    (tmp_path / "tar").mkdir()
    subprocess.run(["tar", "-I", "zstd", "-xf", zst, "-C", tmp_path / "tar"], check=True)
    got = {os.path.relpath(os.path.join(root, n), tmp_path / "tar")
           for root, dirs, names in os.walk(tmp_path / "tar") for n in dirs + names}
    parents = {str(p) for m, _ in members for p in Path(m.name).parents} - {"."}
    assert got == {m.name for m, _ in members} | parents
    manifest = read_manifest(zst)
    assert manifest is not None and manifest["format"] == "tar.zst"
    assert inspect_archive(zst)["env_files"] == manifest["content"]["files"]
    check = run([*ENVBUILD, "unpack", zst, tmp_path / "never", "--check-only", "--json"])
    assert check.returncode == 0, check.stdout + check.stderr
    assert unpack(zst, tmp_path / "dest").ok
    assert run([tmp_path / "dest" / "bin" / "hello-cli"]).stdout == "hello\n"
    # without the zstd program: python-zstandard in this process
    monkeypatch.setattr("envbuild._fs.shutil.which", lambda name: None)
    safe_extract(zst, tmp_path / "pyzstd")
    assert (tmp_path / "pyzstd" / CHECKSUMS).read_bytes() == (tmp_path / "tar" / CHECKSUMS).read_bytes()
    # without python-zstandard: inspect reads through `zstd -dc`
    monkeypatch.undo()
    monkeypatch.setitem(sys.modules, "zstandard", None)
    assert read_manifest(zst) == manifest


@pytest.mark.parametrize("compressor", ["python-zstandard", "zstd program"])
@pytest.mark.parametrize("size", ["fits", "outgrows"])
def test_a_manifest_written_last_goes_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, compressor: str,
                                           size: str) -> None:
    """The first member given last lands first, in the room kept for it or, when it outgrows that
    room, with the body moved up; through python-zstandard or, without it, the zstd program."""
    from envbuild.tools.condapack import open_archive

    if compressor == "zstd program":
        monkeypatch.setitem(sys.modules, "zstandard", None)
    src = tmp_path / "f.bin"
    src.write_bytes(os.urandom(3 << 20))
    # random hex compresses to about half: ~100 KB, far over the room an empty estimate gets
    head = os.urandom(100_000).hex() if size == "outgrows" else '{"a": 1}\n'
    out = tmp_path / "a.tar.zst"
    with open_archive(out, "tar.zst", jobs=2, head_hint="{}") as writer:
        writer.add(str(src), "f.bin")
        writer.add_text(MANIFEST, head, head=True)
        sums = writer.checksums()
    raw = subprocess.run(["zstd", "-dc", out], capture_output=True, check=True).stdout
    (m0, d0), (m1, d1) = _members_of(raw)
    assert (m0.name, d0.decode(), m1.name, d1) == (MANIFEST, head, "f.bin", src.read_bytes())
    assert sums[MANIFEST] == hashlib.sha256(head.encode()).hexdigest()
    assert len(raw) % tarfile.RECORDSIZE == 0
    # which way it went: the body right after the room kept (a 4 KiB multiple), or moved up
    # behind an empty skippable frame
    monkeypatch.undo()
    import zstandard

    data = out.read_bytes()
    dobj = zstandard.ZstdDecompressor().decompressobj()
    dobj.decompress(data)
    skip = dobj.unused_data
    pad = int.from_bytes(skip[4:8], "little")
    body_at = len(data) - len(skip) + 8 + pad
    assert int.from_bytes(skip[:4], "little") == 0x184D2A50
    assert (body_at % 4096 == 0 and pad > 0) if size == "fits" else pad == 0


@pytest.mark.parametrize(("source", "target", "warned"), [
    ("2.35", "2.17", True), ("2.17", "2.35", False), ("2.35", "2.35", False), ("2.9", "2.17", False),
])
def test_an_older_target_glibc_is_a_warning_before_extraction(source: str, target: str, warned: bool) -> None:
    from envbuild.unpack import manifest_findings

    manifest = {"source": {"profile": {"os": "linux", "arch": "x86_64", "glibc_version": source}}}
    got = manifest_findings(manifest, Profile(os="linux", arch="x86_64", glibc_version=target))
    glibc = [f for f in got if f.family == "glibc"]
    assert bool(glibc) == warned  # compared as versions: 2.9 is older than 2.17
    if warned:
        assert glibc[0].severity == "warning" and target in glibc[0].cause and source in glibc[0].cause
