"""A real one-node Slurm cluster (munged + slurmctld + slurmd, as root) for one test session.

Debian's ``slurm-wlm`` and ``munge`` packages (installed by .ci/run) give the daemons; this
module writes a munge key, a slurm.conf with this host's name and CPU count, free ports and
temporary state/spool directories, starts the three daemons in the foreground (so their pids
are ours) and stops each by its pid. Clients find the cluster through ``SLURM_CONF``.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("salloc", "srun", "sbcast", "sinfo", "scontrol")


def missing_tools() -> list[str]:
    """What is missing to run a cluster here (empty when a test can start one)."""
    out = [t for t in (*DAEMONS, *CLIENTS) if shutil.which(t) is None
           and not Path("/usr/sbin", t).exists()]
    if os.geteuid() != 0:
        out.append("root (slurmd runs jobs as their user)")
    return out


def _exe(name: str) -> str:
    return shutil.which(name) or str(Path("/usr/sbin", name))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Cluster:
    root: Path
    conf: Path
    node: str
    cpus: int
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def env(self) -> dict[str, str]:
        """The environment for clients (salloc/srun/sbcast) of this cluster."""
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    def logs(self) -> str:
        parts = []
        for name in ("munged.log", "slurmctld.log", "slurmd.log"):
            p = self.root / name
            if p.exists():
                parts.append(f"--- {name}\n" + "\n".join(p.read_text(errors="replace").splitlines()[-30:]))
        return "\n".join(parts)


def _conf(root: Path, node: str, cpus: int, socket_path: Path) -> str:
    ctl, slurmd = _free_port(), _free_port()
    return "\n".join([
        "ClusterName=envbuildtest",
        f"SlurmctldHost={node}(127.0.0.1)",
        f"SlurmctldPort={ctl}",
        f"SlurmdPort={slurmd}",
        "AuthType=auth/munge",
        "CredType=cred/munge",
        f"AuthInfo=socket={socket_path}",
        "SlurmUser=root",
        "SlurmdUser=root",
        "ProctrackType=proctrack/linuxproc",
        "TaskPlugin=task/none",
        "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_CPU",
        "SchedulerType=sched/backfill",
        "MpiDefault=none",
        "ReturnToService=2",
        "JobCompType=jobcomp/none",
        "AccountingStorageType=accounting_storage/none",
        "JobAcctGatherType=jobacct_gather/none",
        "MailProg=/bin/true",
        "SlurmctldTimeout=30",
        "SlurmdTimeout=30",
        "InactiveLimit=0",
        "KillWait=5",
        f"StateSaveLocation={root / 'state'}",
        f"SlurmdSpoolDir={root / 'spool'}",
        f"SlurmctldPidFile={root / 'slurmctld.pid'}",
        f"SlurmdPidFile={root / 'slurmd.pid'}",
        f"SlurmctldLogFile={root / 'slurmctld.log'}",
        f"SlurmdLogFile={root / 'slurmd.log'}",
        "SlurmctldDebug=info",
        "SlurmdDebug=info",
        f"NodeName={node} NodeAddr=127.0.0.1 CPUs={cpus} State=UNKNOWN",
        f"PartitionName=debug Nodes={node} Default=YES MaxTime=INFINITE State=UP",
        "",
    ])


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    os.kill(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def _start(cmd: list[str], err: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    with open(err, "wb") as fh:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=fh)


@contextmanager
def one_node_cluster(root: Path, timeout: float = 60) -> Iterator[Cluster]:
    """Start munged, slurmctld and slurmd under ``root``; wait until the node is idle; stop all."""
    node = subprocess.run(["hostname", "-s"], capture_output=True, text=True, check=True).stdout.strip()
    cpus = os.cpu_count() or 1
    for d in ("state", "spool", "munge"):
        (root / d).mkdir(parents=True, exist_ok=True)
    os.chmod(root / "munge", 0o700)
    key = root / "munge" / "munge.key"
    key.write_bytes(os.urandom(1024))
    os.chmod(key, 0o400)
    sock = root / "munge" / "munge.socket"
    conf = root / "slurm.conf"
    conf.write_text(_conf(root, node, cpus, sock))
    cluster = Cluster(root=root, conf=conf, node=node, cpus=cpus)
    try:
        cluster.procs["munged"] = _start(
            [_exe("munged"), "--foreground", "--force", f"--key-file={key}", f"--socket={sock}",
             f"--pid-file={root / 'munge' / 'munged.pid'}", f"--log-file={root / 'munged.log'}",
             f"--seed-file={root / 'munge' / 'munged.seed'}"], root / "munged.err")
        deadline = time.monotonic() + timeout
        while not sock.exists():
            if cluster.procs["munged"].poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("munged did not start:\n" + (root / "munged.err").read_text()
                                   + cluster.logs())
            time.sleep(0.1)
        cluster.procs["slurmctld"] = _start([_exe("slurmctld"), "-D", "-i", "-f", str(conf)],
                                            root / "slurmctld.err", cluster.env)
        cluster.procs["slurmd"] = _start([_exe("slurmd"), "-D", "-f", str(conf)], root / "slurmd.err",
                                         cluster.env)
        while True:
            for name, p in cluster.procs.items():
                if p.poll() is not None:
                    raise RuntimeError(f"{name} exited with {p.returncode}:\n"
                                       + (root / f"{name}.err").read_text(errors="replace") + cluster.logs())
            state = subprocess.run([_exe("sinfo"), "-h", "-N", "-o", "%T"], capture_output=True, text=True,
                                   env=cluster.env, check=False).stdout.strip()
            if state == "idle":
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"the node did not become idle (state {state!r}):\n{cluster.logs()}")
            time.sleep(0.5)
        yield cluster
    finally:
        for name in reversed(DAEMONS):
            if name in cluster.procs:
                _stop(cluster.procs[name])
