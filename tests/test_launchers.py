"""Parallel sweeps, SLURM and the Optuna search: the configs compose and behave, and a tiny
joblib multirun and a 2-trial search run through scripts/train.py (marked slow)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra.utils import get_class
from lightning.pytorch.callbacks import TQDMProgressBar
from omegaconf import DictConfig

from gradflow.config import config_dir
from gradflow.training import run as run_module
from gradflow.training.run import build_trainer
from tests.helpers import REPO_ROOT, TINY

SCRIPT = REPO_ROOT / "scripts" / "train.py"
# conf/hydra/launcher/joblib.yaml shares the plugin schema's name, which Hydra merges it
# over (schema-checked values) with a deprecation notice.
pytestmark = pytest.mark.filterwarnings("ignore:(?s).*validated against ConfigStore schema")


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
    launcher = _compose_hydra(tmp_path, "hydra/launcher=joblib").hydra.launcher
    assert get_class(launcher._target_).__name__ == "JoblibLauncher"
    assert launcher.n_jobs == -1  # joblib: every usable core
    monkeypatch.setenv("GRADFLOW_N_JOBS", "3")
    assert _compose_hydra(tmp_path, "hydra/launcher=joblib").hydra.launcher.n_jobs == 3


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
        "hydra/launcher=joblib",
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
