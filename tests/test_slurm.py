"""The generated Slurm script on a REAL one-node Slurm (munged + slurmctld + slurmd started here):
real salloc / sbcast / srun spread a packed venv and a packed conda env to node-local storage,
the env's python runs there, a re-run does no work, and missing / altered archives and a failing
node each get their own message. Skipped where Debian's slurm-wlm and munge are not installed
(.ci/run installs them)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conda_fixture import PLACEHOLDER, install_env, make_channel, python_package_spec
from slurm_fixture import Cluster, missing_tools, one_node_cluster
from test_pack import PY, conda_pkg, make_venv, make_wheel, run

from envbuild.pack import pack

ENVBUILD = [str(Path(sys.executable).parent / "envbuild")]
SHELLCHECK = Path(sys.executable).parent / "shellcheck"
WHO = "import sys, hellopkg; print(sys.prefix, hellopkg.WHO)"

pytestmark = [
    pytest.mark.slurm,
    pytest.mark.slow,
    pytest.mark.skipif(bool(missing_tools()), reason="no one-node Slurm here: missing "
                       + ", ".join(missing_tools()) + " (apt-get install slurm-wlm munge; see .ci/run)"),
]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with one_node_cluster(tmp_path_factory.mktemp("slurm")) as c:
        yield c


@pytest.fixture(scope="module")
def greet_channel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("slurm-channel")
    return make_channel(root / "ch", [
        python_package_spec(),
        conda_pkg("greet", "1.0",
                  {"bin/greet": f"#!{PLACEHOLDER}/bin/python{PY}\n"
                   "import sys\nprint('greet from', sys.prefix)\n"},
                  executables=["bin/greet"], prefix_files=["bin/greet"]),
    ])


def salloc(cluster: Cluster, *cmd: object, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["salloc", "-N1", "--quiet", *map(str, cmd)], capture_output=True, text=True,
                          env={**cluster.env, **env}, timeout=240, check=False)


def on_node(cluster: Cluster, *cmd: object) -> subprocess.CompletedProcess[str]:
    """Run a command as a job step on the node (srun inside its own allocation)."""
    return salloc(cluster, "srun", "--ntasks=1", *cmd)


def _snapshot(dest: Path) -> dict[str, int]:
    return {str(p): p.lstat().st_mtime_ns for p in [dest, *dest.rglob("*")]}


def _ship(archive: Path, script: Path, to: Path) -> tuple[Path, Path]:
    """Copy the archive and the script to the 'cluster' (another directory), as a user would."""
    to.mkdir()
    return Path(shutil.copy2(archive, to)), Path(shutil.copy2(script, to))


def test_venv_spread_runs_from_node_local_storage_and_rerun_does_no_work(
    cluster: Cluster, tmp_path: Path
) -> None:
    wheel = make_wheel(tmp_path / "wheels", "hellopkg", "0.3", {"hellopkg/__init__.py": "WHO = 'hello'\n"})
    venv = make_venv(tmp_path / "laptop" / "venv", wheel)
    archive, script = tmp_path / "laptop" / "venv.tar.zst", tmp_path / "laptop" / "unpack.sh"
    out = run([*ENVBUILD, "pack", venv, "-o", archive, "--slurm-script", script, "--json"])
    assert out.returncode == 0, out.stderr
    assert str(tmp_path) not in script.read_text()  # no laptop path baked in
    assert run([SHELLCHECK, "-S", "style", script]).returncode == 0
    archive, script = _ship(archive, script, tmp_path / "cluster home")
    venv.rename(tmp_path / "laptop" / "gone")  # only the node-local copy can answer
    dest = tmp_path / "node-local" / "venv"

    first = salloc(cluster, "bash", script, ENVBUILD_DEST=str(dest))
    assert first.returncode == 0, first.stdout + first.stderr + cluster.logs()
    assert f"envbuild-node {cluster.node} ok: unpacked into {dest}" in first.stdout
    assert f"Activate with: source {dest}/bin/activate" in first.stdout
    ran = on_node(cluster, dest / "bin" / "python", "-c", WHO)
    assert ran.returncode == 0 and ran.stdout.split() == [str(dest), "hello"], ran.stderr
    assert str(tmp_path / "laptop") not in (dest / "bin" / "activate").read_text()  # prefix fixed

    before = _snapshot(dest)
    again = salloc(cluster, "bash", script, ENVBUILD_DEST=str(dest))
    assert again.returncode == 0, again.stderr
    assert "nothing to do" in again.stdout and "unpacked into" not in again.stdout
    assert _snapshot(dest) == before  # not a file touched
    assert not Path(f"{dest}.incoming").exists()


def test_missing_and_altered_archives_are_told_apart(cluster: Cluster, tmp_path: Path) -> None:
    venv = make_venv(tmp_path / "venv")
    archive = tmp_path / "env.tar.gz"
    pack(venv, archive)
    script = tmp_path / "it's a $dir" / "unpack.sh"
    script.parent.mkdir()
    out = run([*ENVBUILD, "slurm-script", archive, "-o", script])
    assert out.returncode == 0, out.stderr
    fresh = {"ENVBUILD_DEST": str(tmp_path / "node" / "env")}

    missing = salloc(cluster, "bash", script, **fresh)  # the archive was not copied next to it
    assert missing.returncode == 2, missing.stdout + missing.stderr
    assert "the archive is missing: env.tar.gz is not at" in missing.stderr
    assert str(script.parent / "env.tar.gz") in missing.stderr and "is altered" not in missing.stderr

    altered = script.parent / "env.tar.gz"
    altered.write_bytes(archive.read_bytes()[:-100])  # truncated in transfer
    bad = salloc(cluster, "bash", script, **fresh)
    assert bad.returncode == 3, bad.stdout + bad.stderr
    assert "the archive is altered" in bad.stderr and "is missing" not in bad.stderr
    assert not (tmp_path / "node" / "env").exists()  # refused before anything was copied

    shutil.copy2(archive, altered)
    good = salloc(cluster, "bash", script, **fresh)
    assert good.returncode == 0, good.stdout + good.stderr


def test_sbatch_of_the_script_itself_finds_the_archive_in_the_submit_dir(
    cluster: Cluster, tmp_path: Path
) -> None:
    venv = make_venv(tmp_path / "venv")
    submit = tmp_path / "submit dir"
    submit.mkdir()
    archive = submit / "env.tar.gz"
    pack(venv, archive)
    script = submit / "unpack.sh"
    assert run([*ENVBUILD, "slurm-script", archive, "-o", script]).returncode == 0
    dest, log = tmp_path / "node" / "env", submit / "job.out"
    # sbatch runs a copy from slurmd's spool directory, not from next to the archive
    res = subprocess.run(["sbatch", "--wait", "--quiet", f"--output={log}",
                          f"--export=ALL,ENVBUILD_DEST={dest}", str(script)], cwd=submit,
                         capture_output=True, text=True, env=cluster.env, timeout=240, check=False)
    out = log.read_text() if log.exists() else ""
    assert res.returncode == 0, res.stderr + out
    assert f"ok: unpacked into {dest}" in out and (dest / "bin" / "python").exists()


def test_conda_env_spread_and_prefix_fixed_on_the_node(
    cluster: Cluster, greet_channel: Path, tmp_path: Path
) -> None:
    laptop = tmp_path / "laptop"
    env = install_env(greet_channel, laptop / "env", ["python", "greet"])
    archive = tmp_path / "lap top $HOME" / "env.tar.zst"  # every value is quoted in the script
    pack(env, archive)
    # (no blank in the node-local prefix: the kernel would split a "#!" line there)
    dest = tmp_path / "node-local" / "conda-env"
    script = tmp_path / "unpack.sh"
    out = run([*ENVBUILD, "slurm-script", archive, "--archive", str(archive), "--dest", str(dest), "-o", "-"],
              cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert not (tmp_path / "-").exists()  # '-o -' is stdout, not a file named '-'
    script.write_text(out.stdout)  # stdout is the script itself
    default = run([*ENVBUILD, "slurm-script", archive, "--archive", str(archive), "--dest", str(dest)])
    assert default.stdout == out.stdout  # no -o: stdout too
    env.rename(laptop / "gone")
    res = salloc(cluster, "bash", script)
    assert res.returncode == 0, res.stdout + res.stderr + cluster.logs()
    greet = on_node(cluster, dest / "bin" / "greet")  # its shebang now names the node-local prefix
    assert greet.returncode == 0 and greet.stdout == f"greet from {dest}\n", greet.stderr
    py = on_node(cluster, dest / "bin" / "python", "-c", "import sys; print(sys.prefix)")
    assert py.stdout.strip() == str(dest)


def test_a_failing_node_is_named(cluster: Cluster, tmp_path: Path) -> None:
    venv = make_venv(tmp_path / "venv")
    archive = tmp_path / "env.tar.gz"
    script = tmp_path / "unpack.sh"
    pack(venv, archive)
    assert run([*ENVBUILD, "slurm-script", archive, "-o", script]).returncode == 0
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the node-local directory should be\n")
    res = salloc(cluster, "bash", script, ENVBUILD_DEST=str(blocker / "env"))
    assert res.returncode == 1, res.stdout + res.stderr
    assert "not ready on 1 of 1 node(s)" in res.stderr
    assert f"    {cluster.node} (cannot create {blocker} on this node)" in res.stderr
    # a DEST holding someone's files is never wiped: the node says so and fails
    mine = tmp_path / "my-scratch"
    mine.mkdir()
    (mine / "results.csv").write_text("precious\n")
    res = salloc(cluster, "bash", script, ENVBUILD_DEST=str(mine))
    assert res.returncode == 1 and f"{cluster.node} ({mine} exists and is not an env" in res.stderr
    assert (mine / "results.csv").read_text() == "precious\n"


@pytest.mark.skipif(not (Path("/dev/fuse").exists() and shutil.which("squashfuse")
                         and shutil.which("mksquashfs")), reason="needs /dev/fuse, squashfuse and mksquashfs")
def test_squashfs_image_is_mounted_on_the_node_instead_of_extracted(cluster: Cluster, tmp_path: Path) -> None:
    wheel = make_wheel(tmp_path / "wheels", "hellopkg", "0.3", {"hellopkg/__init__.py": "WHO = 'sq'\n"})
    venv = make_venv(tmp_path / "venv", wheel)
    image = tmp_path / "env.squashfs"
    pack(venv, image)
    script = tmp_path / "unpack.sh"
    assert run([*ENVBUILD, "slurm-script", image, "--squashfs", "-o", script]).returncode == 0
    assert run([SHELLCHECK, "-S", "style", script]).returncode == 0
    dest = tmp_path / "node-local" / "env"
    try:
        res = salloc(cluster, "bash", script, ENVBUILD_DEST=str(dest))
        assert res.returncode == 0, res.stdout + res.stderr
        assert f"ok: mounted {dest}" in res.stdout
        assert run(["mountpoint", "-q", dest]).returncode == 0
        assert not any(dest.parent.glob("*.incoming"))
        ran = on_node(cluster, dest / "bin" / "python", "-c", WHO)
        assert ran.stdout.split() == [str(dest), "sq"], ran.stderr
        again = salloc(cluster, "bash", script, ENVBUILD_DEST=str(dest))
        assert again.returncode == 0 and "nothing to do" in again.stdout
    finally:
        if run(["mountpoint", "-q", dest]).returncode == 0:
            # unmounting ends the squashfuse process the script started
            subprocess.run(["umount", str(dest)], check=False)


@pytest.mark.skipif(not (Path("/dev/fuse").exists() and shutil.which("squashfuse")
                         and shutil.which("mksquashfs")), reason="needs /dev/fuse, squashfuse and mksquashfs")
def test_conda_squashfs_mounted_on_the_node_activates_in_place(
    cluster: Cluster, greet_channel: Path, tmp_path: Path
) -> None:
    env = install_env(greet_channel, tmp_path / "laptop" / "env", ["python", "greet"])
    image = tmp_path / "env.squashfs"
    pack(env, image)
    script = tmp_path / "mount.sh"
    assert run([*ENVBUILD, "slurm-script", image, "--squashfs", "-o", script]).returncode == 0
    env.rename(tmp_path / "laptop" / "gone")
    dest = tmp_path / "node-local" / "env"
    try:
        res = salloc(cluster, "bash", script, ENVBUILD_DEST=str(dest))
        assert res.returncode == 0, res.stdout + res.stderr
        assert f"Activate with: source {dest}/bin/activate" in res.stdout
        # read-only, not relocated: conda-pack's activate finds the mount point itself
        greet = on_node(cluster, "bash", "-c", 'source "$1/bin/activate" && greet', "x", dest)
        assert greet.returncode == 0 and greet.stdout == f"greet from {dest}\n", greet.stderr
    finally:
        if run(["mountpoint", "-q", dest]).returncode == 0:
            subprocess.run(["umount", str(dest)], check=False)
