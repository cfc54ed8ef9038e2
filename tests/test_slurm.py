"""A sweep on a real SLURM scheduler (hydra/launcher=slurm): a task cancelled mid-training is
recorded as terminated, not as Ctrl-C, and `-m resume=<sweep dir>` finishes it with the
numbers of a run that was never stopped (marked slow).

`slurm_cluster` starts a one-node cluster on this machine from Debian's packages
(slurmctld, slurmd, munge: `.ci/run` installs them) and needs root. Its munge key,
slurm.conf and every state, spool and log file live in a temporary directory that
SLURM_CONF points the daemons and the client commands to: nothing of /etc/slurm or
/etc/munge is used. No cgroups (proctrack/linuxproc, task/none) and no accounting
database: submitit's `sacct` calls fail with a warning, and it reads each task's result
file instead. The fixture ends every process it started, job steps included, and removes
the directory.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from omegaconf import open_dict

from gradflow.training.resume import checkpoint_progress
from gradflow.training.run import run
from gradflow.training.sweep import job_statuses
from tests.helpers import KILLABLE, processes_with, start_train, wait_for

PACKAGES = "slurmctld slurmd munge"
# The daemons, and the client commands that submitit and this test run.
COMMANDS = (
    "munged",
    "slurmctld",
    "slurmd",
    "sbatch",
    "srun",
    "sinfo",
    "squeue",
    "scancel",
    "scontrol",
)
# Seconds from scancel's SIGTERM to its SIGKILL: time enough for the graceful shutdown.
KILL_WAIT_S = 30
TERMINATED_BY_SIGTERM = "terminated by SIGTERM (a scheduler's time limit or scancel)"


class Cluster:
    """The running cluster's client commands, by name: `cluster("squeue", "-h")`."""

    def __init__(self, conf: Path, commands: dict[str, str]) -> None:
        self.conf = conf
        self.commands = commands

    def __call__(self, command: str, *args: str, check: bool = True) -> str:
        done = subprocess.run(
            [self.commands[command], *args], capture_output=True, text=True, timeout=30
        )
        assert done.returncode == 0 or not check, f"{command} {args}: {done.stderr}"
        return done.stdout.strip()


@pytest.fixture(scope="module")
def slurm_cluster() -> Iterator[Cluster]:
    """A one-node SLURM cluster on this machine, its node idle; everything ends after."""
    if os.geteuid() != 0:
        pytest.skip("starts slurmctld and slurmd as root (SlurmUser=root): run as root")
    search = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
    commands = {name: shutil.which(name, path=search) for name in COMMANDS}
    missing = [name for name, path in commands.items() if path is None]
    try:
        munge_user = pwd.getpwnam("munge")
    except KeyError:
        missing.append("the munge user")
    if missing:
        pytest.skip(
            f"needs Debian's {PACKAGES} (apt-get install {PACKAGES}, as .ci/run does): "
            f"no {', '.join(missing)}"
        )
    root = Path(tempfile.mkdtemp(prefix="gradflow-slurm-"))
    cluster = Cluster(root / "slurm.conf", commands)
    daemons: dict[str, subprocess.Popen] = {}
    with pytest.MonkeyPatch.context() as env:
        env.setenv("SLURM_CONF", str(cluster.conf))  # for the daemons, sbatch and the tests
        try:
            daemons["munged"] = _start_munged(root, commands["munged"], munge_user)
            munge_socket = root / "munge" / "munge.socket"
            _until(munge_socket.exists, "munged's socket", daemons, root)
            cluster.conf.write_text(_slurm_conf(root, munge_socket))
            daemons["slurmctld"] = _spawn(root, [commands["slurmctld"], "-D"])
            daemons["slurmd"] = _spawn(root, [commands["slurmd"], "-D", "-N", _host()])

            def node_idle() -> bool:
                return cluster("sinfo", "-h", "-N", "-o", "%t", check=False) == "idle"

            _until(node_idle, "the node to be idle", daemons, root)
            yield cluster
        finally:
            _end_cluster(cluster, daemons)
            shutil.rmtree(root, ignore_errors=True)


def _host() -> str:
    return socket.gethostname().split(".")[0]


def _spawn(root: Path, cmd: list[str], **kwargs) -> subprocess.Popen:
    """A daemon in the foreground, its output in <root>/<name>.out."""
    with open(root / f"{Path(cmd[0]).name}.out", "w") as out:
        return subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, **kwargs
        )


def _start_munged(root: Path, munged: str, user: pwd.struct_passwd) -> subprocess.Popen:
    """munged as user munge with a key of its own, its files in <root>/munge."""
    home = root / "munge"
    home.mkdir()
    key = home / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o400)
    for path in (home, key):
        os.chown(path, user.pw_uid, user.pw_gid)
    for path in (root, home):
        path.chmod(0o755)  # munged insists that everyone can reach its socket
    cmd = [munged, "--foreground", f"--key-file={key}", f"--socket={home / 'munge.socket'}",
           f"--pid-file={home / 'munged.pid'}", f"--log-file={home / 'munged.log'}",
           f"--seed-file={home / 'munged.seed'}"]  # fmt: skip
    return _spawn(root, cmd, user=user.pw_uid, group=user.pw_gid, extra_groups=[])


def _slurm_conf(root: Path, munge_socket: Path) -> str:
    """One node (this machine, all its CPUs), one partition, state and spool under root."""
    host = _host()
    cpus = len(os.sched_getaffinity(0))
    memory_mb = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 2**20 // 2
    ports = []
    for _ in range(2):  # free now; the daemons bind them a moment later
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            ports.append(probe.getsockname()[1])
    settings = {
        "ClusterName": "gradflowtest",
        "SlurmctldHost": f"{host}(127.0.0.1)",
        "SlurmctldPort": ports[0],
        "SlurmdPort": ports[1],
        "SlurmUser": "root",
        "SlurmdUser": "root",
        "AuthType": "auth/munge",
        "CredType": "cred/munge",
        "AuthInfo": f"socket={munge_socket}",
        "StateSaveLocation": root / "state",
        "SlurmdSpoolDir": root / "spool",
        "SlurmctldPidFile": root / "slurmctld.pid",
        "SlurmdPidFile": root / "slurmd.pid",
        # No cgroups: processes tracked by their parents, tasks not bound to CPUs.
        "ProctrackType": "proctrack/linuxproc",
        "TaskPlugin": "task/none",
        # CPUs are the consumable: one task per CPU, both of the sweep's at once.
        "SelectType": "select/cons_tres",
        "SelectTypeParameters": "CR_CPU",
        "JobAcctGatherType": "jobacct_gather/none",
        "AccountingStorageType": "accounting_storage/none",
        "MpiDefault": "none",
        "MailProg": "/bin/true",
        "ReturnToService": 2,
        "KillWait": KILL_WAIT_S,
    }
    return "\n".join(
        [
            *(f"{key}={value}" for key, value in settings.items()),
            f"NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={memory_mb} State=UNKNOWN",
            "PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP",
            "",
        ]
    )


def _until(condition: Callable[[], bool], what: str, daemons: dict, root: Path) -> None:
    deadline = time.monotonic() + 60
    while not condition():
        if time.monotonic() > deadline or any(d.poll() is not None for d in daemons.values()):
            logs = "\n".join(f"{p.name}:\n{p.read_text()[-2000:]}" for p in root.glob("*.out"))
            raise RuntimeError(f"SLURM's cluster did not start (waited for {what}):\n{logs}")
        time.sleep(0.1)


def _end_cluster(cluster: Cluster, daemons: dict[str, subprocess.Popen]) -> None:
    """Cancel every job, stop the daemons, then kill any process left with this cluster's
    SLURM_CONF in its environment (job steps, a test's sweep)."""
    if "slurmd" in daemons and daemons["slurmctld"].poll() is None:  # it can end the jobs
        cluster("scancel", "--user=root", check=False)
        deadline = time.monotonic() + KILL_WAIT_S + 10
        while cluster("squeue", "-h", check=False) and time.monotonic() < deadline:
            time.sleep(0.2)
    for daemon in reversed(daemons.values()):
        daemon.terminate()
        try:
            daemon.wait(timeout=30)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait()
    for pid in processes_with(f"SLURM_CONF={cluster.conf}"):
        os.kill(pid, signal.SIGKILL)


@pytest.mark.slow
def test_cancelled_task_is_terminated_and_resume_finishes_it(slurm_cluster, compose_cfg, tmp_path):
    logs = tmp_path / "logs"
    sweep = logs / "sweep"
    epochs = ["trainer.max_epochs=3"]
    launcher = ["hydra/launcher=slurm", "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=1"]
    args = ["-m", *launcher, "activation=relu,tanh", *KILLABLE, *epochs, f"hydra.sweep.dir={sweep}"]
    proc = start_train(*args, log_dir=logs)
    job1 = wait_for(sweep, "1_*/checkpoints/last.ckpt", proc).parents[1]  # epoch 1 done
    (task,) = [p.name for p in (sweep / ".submitit").glob("*_1")]  # <array job>_<index>
    assert slurm_cluster("squeue", "-h", "-j", task, "-o", "%T") == "RUNNING"
    # SLURM sends the task's processes SIGCONT and SIGTERM (SIGKILL KillWait seconds later):
    # Lightning stops at the next step, the run writes summary.json and returns its result.
    slurm_cluster("scancel", task)
    out, err = proc.communicate(timeout=240)

    # The sweep waited for both tasks and reports the cancelled one; SLURM has it cancelled.
    assert proc.returncode == 1, err[-3000:]
    job0 = sweep / "0_activation=relu"
    assert job_statuses(sweep) == {
        job0.name: ("completed", None),
        job1.name: ("terminated", TERMINATED_BY_SIGTERM),
    }
    assert f"sweep: 2 jobs in {sweep}: 1 completed, 1 terminated" in out
    assert f"  {job1.name}: terminated - {TERMINATED_BY_SIGTERM}" in out
    assert f"python scripts/train.py -m resume={sweep}" in out
    assert "JobState=CANCELLED" in slurm_cluster("scontrol", "-o", "show", "job", task)
    terminated = json.loads((job1 / "summary.json").read_text())
    assert terminated["checkpoint"] == str(job1 / "checkpoints" / "last.ckpt")
    done, _ = checkpoint_progress(job1 / "checkpoints" / "last.ckpt")
    assert 1 <= done < 3, "the scancel came after the last epoch"

    # The relaunch (a new job array) skips the completed job and continues the other.
    before = (job0 / "summary.json").stat().st_mtime_ns
    again = start_train("-m", f"resume={sweep}", log_dir=logs)
    out, err = again.communicate(timeout=240)
    assert again.returncode == 0, err[-3000:]
    assert f"sweep: 2 jobs in {sweep}: 2 completed" in out
    assert (job0 / "summary.json").stat().st_mtime_ns == before
    assert len(list((sweep / ".submitit").glob("*_1"))) == 2
    assert slurm_cluster("squeue", "-h") == ""
    resumed = json.loads((job1 / "summary.json").read_text())
    assert resumed["status"] == "completed" and resumed["resumed_from"]["epochs"] == done

    cfg = compose_cfg(*KILLABLE, *epochs, "activation=tanh", tiny=False)  # as the sweep ran it
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path / "straight")
    straight = run(cfg)
    # Bit-identical: same weights, optimizer state and batch order from the checkpoint on.
    assert resumed["metrics"] == straight["metrics"]
    assert (resumed["epochs"], resumed["steps"]) == (straight["epochs"], straight["steps"])
    assert (resumed["epochs"], resumed["steps"]) == (3, 750)
