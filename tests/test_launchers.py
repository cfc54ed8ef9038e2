"""Parallel sweeps, SLURM and the Optuna search: their configs compose, a tiny joblib
multirun and a 2-trial search run through scripts/train.py (no cluster is needed)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.utils import get_class
from hydra_plugins.hydra_optuna_sweeper._impl import create_optuna_distribution_from_override
from omegaconf import DictConfig
from optuna.distributions import CategoricalDistribution, LogUniformDistribution

from gradflow.config import config_dir
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


def test_joblib_launcher_runs_one_process_per_core_by_default(tmp_path, monkeypatch):
    monkeypatch.delenv("GRADFLOW_N_JOBS", raising=False)
    launcher = _compose_hydra(tmp_path, "hydra/launcher=joblib").hydra.launcher
    assert get_class(launcher._target_).__name__ == "JoblibLauncher"
    assert launcher.n_jobs == -1  # joblib: every usable core
    assert launcher.backend == "loky" and launcher.prefer == "processes"
    assert int(launcher.batch_size) == 1
    monkeypatch.setenv("GRADFLOW_N_JOBS", "3")
    assert _compose_hydra(tmp_path, "hydra/launcher=joblib").hydra.launcher.n_jobs == 3
    # One torch thread per job is what lets n_jobs jobs share n_jobs cores.
    assert _compose_hydra(tmp_path, "hydra/launcher=joblib").torch_threads == 1


def test_slurm_launcher_config_has_the_usual_knobs(tmp_path):
    cfg = _compose_hydra(
        tmp_path,
        "hydra/launcher=slurm",
        "hydra.launcher.partition=gpu",
        "hydra.launcher.gpus_per_node=1",
    )
    launcher = cfg.hydra.launcher
    assert get_class(launcher._target_).__name__ == "SlurmLauncher"
    assert (launcher.partition, launcher.gpus_per_node) == ("gpu", 1)
    assert launcher.cpus_per_task == 2 and launcher.mem_gb == 8
    assert launcher.timeout_min == 60 and launcher.array_parallelism == 64
    assert launcher.max_num_timeout == 0 and launcher.name.startswith("gradflow-")
    # submitit's scripts and logs live in the sweep directory, under the log root.
    sweep_dir = Path(cfg.hydra.sweep.dir)
    assert launcher.submitit_folder == f"{sweep_dir}/.submitit/%j"
    assert sweep_dir.is_relative_to(tmp_path / "logs")


def test_optuna_search_maximises_best_val_acc_over_lr_init_and_depth(tmp_path):
    cfg = _compose_hydra(tmp_path, "hparams_search=optuna")
    sweeper = cfg.hydra.sweeper
    assert get_class(sweeper._target_).__name__ == "OptunaSweeper"
    assert sweeper.direction == "maximize" and cfg.hydra.mode.name == "MULTIRUN"
    assert sweeper.sampler._target_ == "optuna.samplers.TPESampler"
    parser = OverridesParser.create()
    space = {
        key: create_optuna_distribution_from_override(parser.parse_override(f"{key}={value}"))
        for key, value in sweeper.params.items()
    }
    assert set(space) == {"optimizer.lr", "init", "model.depth"}
    assert isinstance(space["optimizer.lr"], LogUniformDistribution)
    assert isinstance(space["init"], CategoricalDistribution)
    inits = {p.stem for p in (config_dir() / "init").glob("*.yaml")}
    assert set(space["init"].choices) <= inits  # every choice is an init option
    assert all(isinstance(d, int) and d > 0 for d in space["model.depth"].choices)


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


def test_progress_bar_only_when_someone_watches(compose_cfg, monkeypatch):
    from lightning.pytorch.callbacks import TQDMProgressBar

    from gradflow.train import progress_bar

    cfg = compose_cfg("trainer.enable_progress_bar=true")
    assert progress_bar(cfg) == (False, [])  # a log file (pytest captures stderr)
    monkeypatch.setattr(sys, "stderr", _Terminal())
    show, (bar,) = progress_bar(cfg)
    assert show and isinstance(bar, TQDMProgressBar) and bar.refresh_rate == 1  # once per Block
    assert progress_bar(compose_cfg("trainer.enable_progress_bar=false")) == (False, [])
    assert progress_bar(compose_cfg("trainer.enable_progress_bar=true", "progress_bar=null")) == (
        True,
        [],
    )  # Lightning's default bar
