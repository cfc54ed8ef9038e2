"""Parallel sweeps, SLURM and the Optuna search: the configs compose and behave, and a tiny
joblib multirun and a 2-trial search run through scripts/train.py, and a killed sweep leaves
no worker behind (marked slow)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra.utils import get_class
from lightning.pytorch.callbacks import TQDMProgressBar
from omegaconf import DictConfig

from gradflow.config import config_dir
from gradflow.training import orphans
from gradflow.training import run as run_module
from gradflow.training.resume import checkpoint_progress
from gradflow.training.run import build_trainer
from tests.helpers import REPO_ROOT, TINY, processes_with

SCRIPT = REPO_ROOT / "scripts" / "train.py"


def _compose_hydra(tmp_path: Path, *overrides: str) -> DictConfig:
    """conf/train.yaml with its hydra node, the sweep directory under tmp_path."""
    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        return compose(
            "train",
            overrides=[*overrides, f"paths.log_dir={tmp_path / 'logs'}"],
            return_hydra_config=True,
        )


def _train(*args: str, tmp_path: Path, timeout: int, env: dict[str, str] | None = None):
    """scripts/train.py with TINY sizes; flags such as -m go first."""
    log_dir = tmp_path / "logs"
    cmd = [
        sys.executable,
        str(SCRIPT),
        *args,
        *TINY,
        "callbacks=none",
        "checkpoint=none",
        f"paths.log_dir={log_dir}",
        f"paths.data_dir={tmp_path / 'data'}",
    ]
    run_env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    proc = subprocess.run(
        cmd, cwd=tmp_path, env=run_env, capture_output=True, text=True, timeout=timeout
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return log_dir


def test_joblib_jobs_follow_gradflow_n_jobs(tmp_path, monkeypatch):
    monkeypatch.delenv("GRADFLOW_N_JOBS", raising=False)
    launcher = _compose_hydra(tmp_path, "hydra/launcher=parallel").hydra.launcher
    assert get_class(launcher._target_).__name__ == "JoblibLauncher"
    assert launcher.n_jobs == -1  # joblib: every usable core
    monkeypatch.setenv("GRADFLOW_N_JOBS", "3")
    assert _compose_hydra(tmp_path, "hydra/launcher=parallel").hydra.launcher.n_jobs == 3


def test_slurm_tasks_write_into_the_sweep_directory(tmp_path):
    cfg = _compose_hydra(tmp_path, "hydra/launcher=slurm", "hydra.launcher.partition=gpu")
    launcher = cfg.hydra.launcher
    assert get_class(launcher._target_).__name__ == "SlurmLauncher"
    # submitit's scripts and logs live in the sweep directory, under the log root.
    sweep_dir = Path(cfg.hydra.sweep.dir)
    assert launcher.submitit_folder == f"{sweep_dir}/.submitit/%j"
    assert sweep_dir.is_relative_to(tmp_path / "logs")


@pytest.mark.slow
def test_two_job_joblib_multirun(tmp_path):
    log_dir = _train(
        "-m",
        "hydra/launcher=parallel",
        "activation=sigmoid,relu",
        tmp_path=tmp_path,
        timeout=240,
        env={"GRADFLOW_N_JOBS": "2"},
    )
    (sweep_dir,) = log_dir.glob("multiruns/*/*")  # both jobs in one sweep directory
    summaries = sorted(sweep_dir.glob("*/summary.json"))
    assert [p.parent.name[:2] for p in summaries] == ["0_", "1_"]
    statuses = [json.loads(p.read_text())["status"] for p in summaries]
    assert statuses == ["completed", "completed"]
    assert "activation=relu" in summaries[1].parent.name


@pytest.mark.slow
def test_two_trial_optuna_search_writes_its_results(tmp_path):
    log_dir = _train(
        "hparams_search=optuna",
        "hydra.sweeper.n_trials=2",
        "logger=none",
        tmp_path=tmp_path,
        timeout=240,
    )
    (results_path,) = log_dir.glob("multiruns/*/*/optimization_results.yaml")
    results = yaml.safe_load(results_path.read_text())
    assert set(results["best_params"]) == {"optimizer.lr", "init", "model.depth"}
    assert 0.0 <= results["best_value"] <= 1.0
    summaries = list(results_path.parent.glob("*/summary.json"))
    assert len(summaries) == 2
    best = max(json.loads(p.read_text())["metrics"]["best"]["val/acc_best"] for p in summaries)
    assert results["best_value"] == pytest.approx(best)


class _Exited(Exception):
    pass


def _exit(pid: int) -> None:
    raise _Exited(pid)


def test_only_a_worker_of_a_sweep_on_this_machine_watches_it(monkeypatch):
    watchers = []
    monkeypatch.setattr(orphans, "_watching_pid", None)
    monkeypatch.setattr(orphans, "_exit_orphaned", _exit)
    monkeypatch.setattr(
        orphans.threading,
        "Thread",
        lambda **kwargs: watchers.append(kwargs) or SimpleNamespace(start=lambda: None),
    )
    here, group, live = orphans._machine(), os.getpgrp(), os.getppid()

    def job_starts(marker: str | None) -> None:
        if marker is None:
            monkeypatch.delenv(orphans.SWEEP_PROCESS_ENV, raising=False)
        else:
            monkeypatch.setenv(orphans.SWEEP_PROCESS_ENV, marker)
        orphans.exit_with_sweep_process()

    job_starts(None)  # a run outside scripts/train.py
    job_starts(f"{here}/{os.getpid()}/{group}/t")  # the basic launcher: in the sweep's process
    job_starts(f"other-host/pid:[1]/{live}/{group}/t")  # SLURM: another machine
    job_starts(f"{here}/{live}/{group + 1}/t")  # another process group (a SLURM task here)
    assert watchers == []
    with pytest.raises(_Exited):  # its sweep died before the job began
        job_starts(f"{here}/{2**22 + 1}/{group}/t")  # above any pid_max: no such process
    job_starts(f"{here}/{live}/{group}/t")  # a worker: watches, once per process
    job_starts(f"{here}/{live}/{group}/t")
    assert [(w["target"], w["args"], w["daemon"]) for w in watchers] == [
        (orphans._watch, (live,), True)
    ]


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
def test_a_dead_process_is_not_alive_before_it_is_reaped():
    child = subprocess.Popen([sys.executable, "-c", ""])
    try:
        assert _poll(lambda: not orphans._alive(child.pid), timeout=30)
        os.kill(child.pid, 0)  # a zombie: its parent has not reaped it yet
    finally:
        child.wait()
    assert not orphans._alive(child.pid)


# Jobs that train until killed (800 samples in batches of 8: 100 steps an epoch).
ENDLESS = [
    "data.train_size=800",
    "data.val_size=200",
    "data.batch_size=8",
    "data.download=false",
    "trainer.enable_progress_bar=false",
    "trainer.max_epochs=100",
    "model.width=32",
    "callbacks=none",
    "logger=none",
]
SWEEP_TAG = "GRADFLOW_TEST_SWEEP"  # in the environment of every process of the test's sweep


def _tagged(tag: str) -> dict[int, str]:
    """{pid: command line} of the sweep's process and every process it started."""
    return processes_with(f"{SWEEP_TAG}={tag}")


def _shared_memory(pid: int) -> list[Path]:
    """What joblib and loky keep in /dev/shm for the sweep's process `pid`: memmapping
    folders and semaphores, named by its pid."""
    return sorted(Path("/dev/shm").glob(f"*[_-]{pid}[_-]*"))  # none without /dev/shm


def _poll(condition, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="finds processes in /proc")
@pytest.mark.parametrize(
    ("launcher", "sig", "when"),
    [
        ("parallel", signal.SIGKILL, "training"),
        ("parallel", signal.SIGTERM, "training"),
        ("parallel", signal.SIGINT, "training"),
        # The workers have started, their first jobs are on the way: one may wait forever
        # for the rest of a job the dead process was sending.
        ("parallel", signal.SIGKILL, "starting"),
        ("basic", signal.SIGKILL, "training"),
    ],
    ids=lambda v: v.name if isinstance(v, signal.Signals) else v,
)
def test_a_killed_sweep_leaves_no_process_behind(tmp_path, launcher, sig, when):
    sweep = tmp_path / "sweep"
    tag = uuid.uuid4().hex
    cmd = [sys.executable, str(SCRIPT), "-m", f"hydra/launcher={launcher}",
           "activation=relu,tanh,sigmoid,elu", *ENDLESS, f"hydra.sweep.dir={sweep}",
           f"paths.log_dir={tmp_path / 'logs'}", f"paths.data_dir={tmp_path / 'data'}"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GRADFLOW_N_JOBS": "2", SWEEP_TAG: tag}
    with open(tmp_path / "sweep.out", "w") as out:  # a file: nobody has to read a pipe
        proc = subprocess.Popen(
            cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )

    def ready() -> bool:
        if when == "starting":  # both loky workers exist, no job has begun
            workers = [c for c in _tagged(tag).values() if "popen_loky" in c]
            return len(workers) == 2 and not list(sweep.glob("*/.hydra"))
        # Every job running at once has finished an epoch.
        return len(list(sweep.glob("*/checkpoints/last.ckpt"))) == (launcher == "parallel") + 1

    try:
        assert _poll(lambda: ready() or proc.poll() is not None, timeout=240)
        assert proc.poll() is None, (tmp_path / "sweep.out").read_text()[-3000:]
        proc.send_signal(sig)  # the sweep's process only, as `kill` would
        proc.wait(timeout=30)
        assert _poll(lambda: not _tagged(tag), timeout=6), f"left behind: {_tagged(tag)}"
        # Nobody wrote a result after the kill: every job stays unfinished, to be resumed
        # from a whole checkpoint.
        assert not list(sweep.glob("*/summary.json"))
        for checkpoint in sweep.glob("*/checkpoints/last.ckpt"):
            assert checkpoint_progress(checkpoint)[0] >= 1
        # loky's resource trackers were left to free the sweep's shared memory.
        assert not _shared_memory(proc.pid)
    finally:
        for pid in _tagged(tag):
            os.kill(pid, signal.SIGKILL)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for leftover in _shared_memory(proc.pid):  # what killed trackers could not free
            if leftover.is_dir():
                shutil.rmtree(leftover)
            else:
                leftover.unlink()


class _Terminal:
    """A stand-in for sys.stderr that says it is a terminal."""

    def isatty(self) -> bool:
        return True

    def write(self, text: str) -> int:
        return len(text)

    def flush(self) -> None:
        pass


def _bars(trainer) -> list:
    return [c for c in trainer.callbacks if isinstance(c, TQDMProgressBar)]


def test_progress_bar_only_when_someone_watches(compose_cfg, monkeypatch):
    cfg = compose_cfg("trainer.enable_progress_bar=true")
    assert not build_trainer(cfg, [], []).progress_bar_callback  # a log file (pytest)
    monkeypatch.setattr(sys, "stderr", _Terminal())
    assert run_module.watched()
    (bar,) = _bars(build_trainer(cfg, [], []))
    assert bar.refresh_rate == cfg.progress_bar.refresh_rate
    off = build_trainer(compose_cfg("trainer.enable_progress_bar=false"), [], [])
    assert not off.progress_bar_callback
