"""envbuild probe: parsers over real recorded tool outputs, and the real probe on this machine.

The recorded outputs (tests/data/recorded/, sources in RECORDED.md) are real nvidia-smi / nvcc /
ldd / gcc outputs.  Where a test needs nvidia-smi on a machine without a GPU, it puts a real
executable named ``nvidia-smi`` on PATH that prints a recorded output (no mocking of the probe).
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from envbuild import probe as P
from envbuild.cli import app
from envbuild.models import Profile, load_profile

REC = Path(__file__).parent / "data" / "recorded"
PROBE_PY = Path(P.__file__)
CUDA = Path("/usr/local/cuda")
HAVE_NVCC = (CUDA / "bin" / "nvcc").exists()


def rec(*parts: str) -> str:
    return (REC.joinpath(*parts)).read_text()


# --------------------------------------------------------------------------- nvidia-smi tables

SMI_TABLES = {
    # file: (driver, driver CUDA, number of GPUs, first GPU name, first GPU memory MiB)
    "laptop-470.223.02-rtx3060-laptop.txt": ("470.223.02", "11.4", 1, "NVIDIA GeForce ...", 5921),
    "server-440.33.01-8x-p100-sxm2.txt": ("440.33.01", "10.2", 8, "Tesla P100-SXM2...", 16280),
    "server-525.105.17-v100-sxm2-32gb.txt": ("525.105.17", "12.0", 1, "Tesla V100-SXM2...", 32768),
    "desktop-550.107.02-rtx4090d.txt": ("550.107.02", "12.4", 1, "NVIDIA GeForce RTX 4090 D", 24564),
    "desktop-550.40.07-rtx4070.txt": ("550.40.07", "12.4", 1, "NVIDIA GeForce RTX 4070", 12282),
    "desktop-575.64.03-rtx5070-cuda-na.txt": ("575.64.03", None, 1, "NVIDIA GeForce RTX 5070", 12227),
}


def test_every_recorded_nvidia_smi_file_is_covered() -> None:
    files = {p.name for p in (REC / "nvidia-smi").iterdir()}
    assert files == set(SMI_TABLES) | {"no-driver.txt"}


@pytest.mark.parametrize("fname", sorted(SMI_TABLES))
def test_parse_nvidia_smi_header(fname: str) -> None:
    driver, cuda, n, name0, mem0 = SMI_TABLES[fname]
    text = rec("nvidia-smi", fname)
    parsed = P.parse_nvidia_smi_header(text)
    assert parsed["driver_version"] == driver
    assert parsed["cuda_version"] == cuda
    assert len(parsed["gpus"]) == n
    assert parsed["gpus"][0]["name"] == name0
    assert parsed["gpus"][0]["memory_mib"] == mem0
    assert parsed["gpus"][0]["truncated"] == name0.endswith("...")
    assert P.nvidia_smi_failure(text) is None


def test_eight_gpu_table_reads_every_row_in_order() -> None:
    gpus = P.parse_nvidia_smi_header(rec("nvidia-smi", "server-440.33.01-8x-p100-sxm2.txt"))["gpus"]
    assert [g["memory_mib"] for g in gpus] == [16280] * 8
    # The process table below the GPU table must not be read as GPUs.
    assert all(g["name"] == "Tesla P100-SXM2..." for g in gpus)


def test_no_driver_message_is_a_failure_not_a_gpu() -> None:
    text = rec("nvidia-smi", "no-driver.txt")
    assert P.nvidia_smi_failure(text) is not None
    assert "couldn't communicate with the NVIDIA driver" in (P.nvidia_smi_failure(text) or "")
    assert P.parse_nvidia_smi_header(text) == {"driver_version": None, "cuda_version": None, "gpus": []}


def test_newer_banner_spellings() -> None:
    # nvidia-smi -q and drivers that print "KMD Version" / "CUDA UMD Version" (recorded banner lines).
    q = ("Driver Version                            : 555.99\n"
         "CUDA Version                              : 12.5\n")
    assert P.parse_nvidia_smi_header(q)["driver_version"] == "555.99"
    assert P.parse_nvidia_smi_header(q)["cuda_version"] == "12.5"
    umd = "| NVIDIA-SMI 616.56      KMD Version: 616.56   CUDA UMD Version: 13.4  |"
    assert P.parse_nvidia_smi_header(umd)["driver_version"] == "616.56"
    assert P.parse_nvidia_smi_header(umd)["cuda_version"] == "13.4"


@pytest.mark.parametrize("garbage", ["", "\n\n", "segmentation fault", "\x00\x01binary", "| 0 x | y |"])
def test_header_parser_survives_garbage(garbage: str) -> None:
    parsed = P.parse_nvidia_smi_header(garbage)
    assert parsed["driver_version"] is None and parsed["gpus"] == []


# --------------------------------------------------------------------------- nvidia-smi --query-gpu


def test_query_with_header_in_any_column_order() -> None:
    gpus = P.parse_nvidia_smi_query(rec("nvidia-smi-query", "570.86.15-titanv-rtx5880-with-header.csv"))
    assert [(g["name"], g["compute_capability"], g["driver_version"]) for g in gpus] == [
        ("NVIDIA TITAN V", "7.0", "570.86.15"),
        ("NVIDIA RTX 5880 Ada Generation", "8.9", "570.86.15"),
    ]


def test_query_old_driver_rejects_compute_cap() -> None:
    text = rec("nvidia-smi-query", "compute-cap-not-valid.txt")
    assert P.parse_nvidia_smi_query(text) == []
    assert "compute_cap" in (P.nvidia_smi_failure(text) or "")


def test_query_without_compute_cap_fields() -> None:
    text = rec("nvidia-smi-query", "laptop-470.223.02-composed.csv")
    gpus = P.parse_nvidia_smi_query(text, P.QUERY_FIELDS_OLD)
    assert gpus == [{"name": "NVIDIA GeForce RTX 3060 Laptop GPU", "compute_capability": None,
                     "memory_mib": 5921, "driver_version": "470.223.02"}]


def test_query_na_and_units() -> None:
    text = "Tesla V100-SXM2-32GB, [N/A], 32510 MiB, 440.33.01\nbroken line\n"
    assert P.parse_nvidia_smi_query(text) == [{"name": "Tesla V100-SXM2-32GB", "compute_capability": None,
                                               "memory_mib": 32510, "driver_version": "440.33.01"}]


# --------------------------------------------------------------------------- nvcc, version files, ldd, gcc

NVCC = {
    "10.0.130.txt": "10.0.130",
    "10.1.243.txt": "10.1.243",
    "11.0.194.txt": "11.0.194",
    "11.1.105.txt": "11.1.105",
    "11.3.58-seed-laptop.txt": "11.3.58",
    "13.0.88-this-machine.txt": "13.0.88",
}


def test_every_recorded_nvcc_file_is_covered() -> None:
    assert {p.name for p in (REC / "nvcc").iterdir()} == set(NVCC)


@pytest.mark.parametrize("fname", sorted(NVCC))
def test_parse_nvcc_version(fname: str) -> None:
    assert P.parse_nvcc_version(rec("nvcc", fname)) == NVCC[fname]


def test_parse_nvcc_garbage() -> None:
    assert P.parse_nvcc_version("nvcc: command not found") is None
    assert P.parse_nvcc_version("") is None


def test_version_files() -> None:
    assert P.parse_cuda_version_json(rec("cuda-version", "11.5.2-version.json")) == "11.5.2"
    # CUDA 11.8+ puts a build date where the patch level was.
    assert P.parse_cuda_version_json(rec("cuda-version", "11.8.20220929-version.json")) == "11.8.20220929"
    assert P.parse_cuda_version_txt(rec("cuda-version", "9.0.176-version.txt")) == "9.0.176"
    assert P.parse_cuda_version_json("{not json") is None
    assert P.parse_cuda_version_json('{"cuda": {"version": 11}}') is None
    assert P.parse_cuda_version_txt("nothing here") is None


def test_ldd_gcc_this_machine_recordings() -> None:
    assert P.parse_ldd_version(rec("ldd", "glibc-2.36-debian12-this-machine.txt")) == "2.36"
    assert P.parse_gcc_version(rec("gcc", "12.2.0-debian12-this-machine.txt")) == "12.2.0"
    assert P.parse_ldd_version("musl libc (x86_64)\nVersion 1.2.4\n") is None
    assert P.parse_gcc_version("clang version 17.0.6") is None
    assert P.parse_gcc_version("") is None


def test_small_helpers() -> None:
    assert P.cuda_version_from_int(11040) == "11.4"
    assert P.cuda_version_from_int(10020) == "10.2"
    assert P.cuda_version_from_int(12080) == "12.8"
    assert P.cuda_version_from_int(0) is None
    line = "NVRM version: NVIDIA UNIX x86_64 Kernel Module  470.223.02  Sat Oct  7 15:39:11 UTC 2023\n"
    assert P.parse_proc_driver_version(line) == "470.223.02"


# --------------------------------------------------------------------------- the real probe


def _path_without(tool: str) -> str:
    return os.pathsep.join(d for d in os.environ["PATH"].split(os.pathsep)
                           if not (Path(d) / tool).exists())


@pytest.mark.skipif(not HAVE_NVCC, reason="needs the CUDA 13 toolkit at /usr/local/cuda")
def test_real_probe_on_this_machine() -> None:
    if shutil.which("nvidia-smi"):
        pytest.skip("this machine has nvidia-smi; the test describes the GPU-less dev machine")
    data = P.probe()
    assert data["schema_version"] == 1
    assert data["os"] == "linux" and data["arch"] == os.uname().machine
    assert data["gpus"] == [] and data["driver_version"] is None and data["driver_cuda_version"] is None
    assert any("nvidia-smi not found" in n for n in data["notes"])
    tks = [t for t in data["cuda_toolkits"] if t["path"] == "/usr/local/cuda"]
    assert len(tks) == 1 and tks[0]["version"] == "13.0"
    assert tks[0]["full_version"] == P.parse_nvcc_version(
        subprocess.run([str(CUDA / "bin" / "nvcc"), "--version"], capture_output=True, text=True).stdout)
    # The same toolkit, reached through /usr/local/cuda-13.0 and nvcc on PATH, is listed once.
    assert len({os.path.realpath(t["path"]) for t in data["cuda_toolkits"]}) == len(data["cuda_toolkits"])
    assert data["gcc_version"] is not None and data["gcc_version"].split(".")[0] == "12"
    assert data["glibc_version"] == os.confstr("CS_GNU_LIBC_VERSION").split()[1]
    assert data["python_version"] == f"{sys.version_info[0]}.{sys.version_info[1]}"


def _fake_smi(bin_dir: Path, table: str, query: str | None, query_error: str | None = None,
              table_rc: int = 0) -> Path:
    """A real executable 'nvidia-smi' that prints recorded outputs, as the real one would per argument."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    q = shlex.quote
    lines = ["#!/bin/sh", 'case "$*" in']
    if query_error is not None:
        lines.append(f"  *compute_cap*) cat {q(query_error)}; exit 2 ;;")
    lines.append(f"  *--query-gpu*) cat {q(query)} ;;" if query else "  *--query-gpu*) exit 9 ;;")
    lines += [f"  *) cat {q(table)}; exit {table_rc} ;;", "esac"]
    smi = bin_dir / "nvidia-smi"
    smi.write_text("\n".join(lines) + "\n")
    smi.chmod(0o755)
    return smi


@pytest.mark.skipif(not HAVE_NVCC, reason="needs the CUDA 13 toolkit at /usr/local/cuda")
def test_probe_seed_laptop_keeps_driver_cuda_apart_from_toolkit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Seed laptop: driver 470.223.02 (CUDA 11.4), an old nvidia-smi without compute_cap; this
    # machine's nvcc 13.0 must still be reported as a toolkit, not as the driver's CUDA.
    _fake_smi(tmp_path / "bin",
              str(REC / "nvidia-smi" / "laptop-470.223.02-rtx3060-laptop.txt"),
              str(REC / "nvidia-smi-query" / "laptop-470.223.02-composed.csv"),
              str(REC / "nvidia-smi-query" / "compute-cap-not-valid.txt"))
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    data = P.probe()
    assert data["driver_version"] == "470.223.02"
    assert data["driver_cuda_version"] == "11.4"
    assert data["gpus"] == [{"name": "NVIDIA GeForce RTX 3060 Laptop GPU", "compute_capability": None,
                             "memory_mib": 5921}]
    assert any("compute capability" in n for n in data["notes"])
    assert [t["version"] for t in data["cuda_toolkits"] if t["path"] == "/usr/local/cuda"] == ["13.0"]
    assert Profile.from_dict(data).driver_cuda_version == "11.4"


def test_probe_seed_server_driver_10_2_with_nvcc_10_1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Seed server B: driver 440.33.01 (CUDA 10.2), toolkit 10.1 in CUDA_HOME. Reading the toolkit's
    # version file as "the CUDA" gives 10.1; the profile must say 10.2 for the driver.
    _fake_smi(tmp_path / "bin", str(REC / "nvidia-smi" / "server-440.33.01-8x-p100-sxm2.txt"), None)
    cuda = tmp_path / "cuda-10.1"
    cuda.mkdir()
    (cuda / "version.txt").write_text("CUDA Version 10.1.243\n")
    monkeypatch.setenv("CUDA_HOME", str(cuda))
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{_path_without('nvcc')}")
    prof = Profile.from_dict(P.probe())
    assert prof.driver_version == "440.33.01" and prof.driver_cuda_version == "10.2"
    homes = [(t.version, t.path) for t in prof.cuda_toolkits if t.source == "CUDA_HOME"]
    assert homes == [("10.1", str(cuda))]


def test_probe_with_query_support_uses_full_names(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_smi(tmp_path / "bin", str(REC / "nvidia-smi" / "desktop-550.40.07-rtx4070.txt"),
              str(REC / "nvidia-smi-query" / "570.86.15-titanv-rtx5880-with-header.csv"))
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    nv = P.probe_nvidia()
    assert [g["compute_capability"] for g in nv["gpus"]] == ["7.0", "8.9"]
    assert nv["driver_cuda_version"] == "12.4"


def test_probe_falls_back_to_table_names(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_smi(tmp_path / "bin", str(REC / "nvidia-smi" / "server-440.33.01-8x-p100-sxm2.txt"), None)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    nv = P.probe_nvidia()
    assert len(nv["gpus"]) == 8
    assert nv["driver_version"] == "440.33.01" and nv["driver_cuda_version"] == "10.2"
    assert any("truncated" in n for n in nv["notes"])


def test_probe_no_driver(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The real nvidia-smi exits 9 with this message when the kernel module is not loaded.
    _fake_smi(tmp_path / "bin", str(REC / "nvidia-smi" / "no-driver.txt"), None, table_rc=9)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    nv = P.probe_nvidia()
    assert nv["gpus"] == [] and nv["driver_version"] is None and nv["driver_cuda_version"] is None
    assert any("couldn't communicate" in n for n in nv["notes"])


def test_probe_hung_nvidia_smi_times_out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "nvidia-smi").write_text("#!/bin/sh\nexec sleep 30\n")
    (bin_dir / "nvidia-smi").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    nv = P.probe_nvidia(timeout=0.5)
    assert nv["gpus"] == [] and nv["driver_version"] is None
    assert any("timed out" in n and "hung driver" in n for n in nv["notes"])


def test_probe_garbage_nvidia_smi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "nvidia-smi").write_text("#!/bin/sh\necho 'Segmentation fault'\n")
    (bin_dir / "nvidia-smi").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    nv = P.probe_nvidia()
    assert nv["gpus"] == [] and nv["driver_version"] is None
    assert any("not understood" in n for n in nv["notes"])


def test_probe_binary_garbage_from_nvidia_smi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "nvidia-smi").write_text("#!/bin/sh\nprintf '\\377\\376\\000garbage'\nexit 0\n")
    (bin_dir / "nvidia-smi").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    nv = P.probe_nvidia()  # undecodable bytes must not raise
    assert nv["gpus"] == [] and nv["driver_version"] is None


def test_cuda_home_with_version_json_and_old_version_txt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    new = tmp_path / "cuda-11.3"
    (new / "bin").mkdir(parents=True)
    (new / "version.json").write_text(json.dumps({"cuda": {"name": "CUDA SDK", "version": "11.3.1"}}))
    old = tmp_path / "cuda-10.1"
    old.mkdir()
    (old / "version.txt").write_text("CUDA Version 10.1.243\n")
    monkeypatch.setenv("CUDA_HOME", str(new))
    monkeypatch.setenv("CUDA_PATH", str(old))
    monkeypatch.setenv("PATH", _path_without("nvcc"))
    tks = {t["path"]: t for t in P.probe_toolkits([])["cuda_toolkits"]}
    assert tks[str(new)]["version"] == "11.3" and tks[str(new)]["full_version"] == "11.3.1"
    assert tks[str(new)]["source"] == "CUDA_HOME"
    assert tks[str(old)]["version"] == "10.1" and tks[str(old)]["full_version"] == "10.1.243"
    assert tks[str(old)]["source"] == "CUDA_PATH"


def test_cuda_home_symlink_is_deduplicated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = tmp_path / "cuda-11.8"
    real.mkdir()
    (real / "version.json").write_text(rec("cuda-version", "11.8.20220929-version.json"))
    (tmp_path / "cuda").symlink_to(real)
    monkeypatch.setenv("CUDA_HOME", str(tmp_path / "cuda"))
    monkeypatch.setenv("CUDA_PATH", str(real))
    monkeypatch.setenv("PATH", _path_without("nvcc"))
    mine = [t for t in P.probe_toolkits([])["cuda_toolkits"] if str(tmp_path) in t["path"]]
    assert len(mine) == 1 and mine[0]["version"] == "11.8" and mine[0]["source"] == "CUDA_HOME,CUDA_PATH"


def test_pip_nvcc_in_site_packages(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    site = tmp_path / "site-packages"
    (site / "nvidia_cuda_nvcc_cu12-12.4.131.dist-info").mkdir(parents=True)
    (site / "nvidia" / "cuda_nvcc" / "bin").mkdir(parents=True)
    monkeypatch.setenv("PATH", _path_without("nvcc"))
    tks = [t for t in P.probe_toolkits([str(site)])["cuda_toolkits"] if t["source"] == "pip"]
    assert tks == [{"version": "12.4", "full_version": "12.4.131", "path": str(site / "nvidia" / "cuda_nvcc"),
                    "source": "pip", "nvcc": None}]


def test_missing_cuda_home_is_a_note(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CUDA_HOME", str(tmp_path / "nope"))
    res = P.probe_toolkits([])
    assert any("CUDA_HOME" in n and "not a directory" in n for n in res["notes"])


def test_conda_from_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    exe = tmp_path / "micromamba"
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    monkeypatch.setenv("MAMBA_EXE", str(exe))
    assert P.probe(timeout=1)["conda"] == str(exe)


# --------------------------------------------------------------------------- standalone script

@pytest.mark.parametrize("version", ["3.6.15", "3.7.16"])
def test_probe_py_runs_standalone_on_old_python(version: str, tmp_path: Path) -> None:
    py = Path(f"/root/.pyenv/versions/{version}/bin/python")
    if not py.exists():
        pytest.skip(f"no Python {version} here")
    # Copied alone, as to a cluster: it must not import envbuild.
    script = tmp_path / "probe.py"
    shutil.copy(PROBE_PY, script)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run([str(py), "-I", str(script)], capture_output=True, text=True, cwd=tmp_path,
                         env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["python_version"] == version.rsplit(".", 1)[0]
    assert data["schema_version"] == 1 and isinstance(data["notes"], list)
    # -o writes the same profile atomically.
    out2 = subprocess.run([str(py), "-I", str(script), "-o", str(tmp_path / "p.json")], capture_output=True,
                          text=True, env=env, timeout=60)
    assert out2.returncode == 0 and out2.stdout == ""
    assert load_profile(tmp_path / "p.json").python_version == version.rsplit(".", 1)[0]


def test_python_exe_probes_another_interpreter() -> None:
    py = Path("/root/.pyenv/versions/3.7.16/bin/python")
    if not py.exists():
        pytest.skip("no Python 3.7 here")
    assert P.probe(python_exe=str(py), timeout=1)["python_version"] == "3.7"
    bad = P.probe(python_exe="/nonexistent/python", timeout=1)
    assert bad["python_version"] is None and any("/nonexistent/python" in n for n in bad["notes"])


# --------------------------------------------------------------------------- CLI

runner = CliRunner()


def test_cli_probe_json() -> None:
    res = runner.invoke(app, ["probe", "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["schema_version"] == 1 and "cuda_toolkits" in data and "driver_cuda_version" in data


def test_cli_probe_output_file_loads(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "profile.json"
    res = runner.invoke(app, ["probe", "-o", str(target)])
    assert res.exit_code == 0, res.output
    prof = load_profile(target)
    assert prof.os == "linux" and prof.schema_version == 1
    assert [p.name for p in target.parent.iterdir()] == ["profile.json"]  # no temp file left behind
    # Table output for people names the sections.
    assert "machine" in res.stdout and "CUDA toolkits" in res.stdout


def test_cli_probe_unwritable_output(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    res = runner.invoke(app, ["probe", "-o", str(blocker / "profile.json"), "--json"])
    assert res.exit_code == 2
    err = json.loads(res.stdout)
    assert err["path"] == str(blocker / "profile.json") and "cannot write" in err["message"]


def test_cli_probe_table_with_gpu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_smi(tmp_path / "bin", str(REC / "nvidia-smi" / "desktop-550.107.02-rtx4090d.txt"), None)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    res = runner.invoke(app, ["probe"])
    assert res.exit_code == 0, res.output
    assert "NVIDIA GeForce RTX 4090 D" in res.stdout and "550.107.02" in res.stdout and "12.4" in res.stdout
