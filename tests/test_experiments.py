"""Every tutorial experiment composes with its sweep expanded, and a shrunken job of each runs."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.utils import instantiate
from omegaconf import OmegaConf, open_dict

from gradflow.config import config_dir
from gradflow.nn import TrackedModel
from gradflow.train import run
from tests.helpers import TINY

EXPERIMENTS = sorted(p.stem for p in (config_dir() / "experiment").glob("*.yaml"))
# What each experiment must sweep (issue 4), so a config edit cannot quietly drop a variant.
EXPECTED_JOBS = {
    "activation_zoo": 10,
    "batchnorm": 6,
    "depth_sweep": 12,
    "init_sweep": 15,
    "remedies": 18,
    "residual": 6,
    "sigmoid_vs_relu": 6,
    "xor": 6,
}


def _compose(*overrides: str, hydra: bool = False):
    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        return compose("train", overrides=list(overrides), return_hydra_config=hydra)


def sweep_jobs(experiment: str) -> list[list[str]]:
    """The override lists Hydra's basic sweeper would run for `-m experiment=NAME`."""
    params = _compose(f"experiment={experiment}", hydra=True).hydra.sweeper.params
    parsed = OverridesParser.create().parse_overrides([f"{k}={v}" for k, v in params.items()])
    (batch,) = BasicSweeper.split_arguments(parsed, None)
    return batch


def test_every_experiment_is_listed():
    assert set(EXPERIMENTS) == set(EXPECTED_JOBS)


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_composes_for_every_job_of_its_sweep(experiment):
    jobs = sweep_jobs(experiment)
    assert len(jobs) == EXPECTED_JOBS[experiment]
    assert len({tuple(job) for job in jobs}) == len(jobs)
    for job in jobs:
        cfg = _compose(f"experiment={experiment}", *job)
        assert experiment in cfg.tags
        model = instantiate(
            cfg.model,
            activation=OmegaConf.to_container(cfg.activation),
            init=OmegaConf.to_container(cfg.init),
        )
        assert isinstance(model, TrackedModel)


def test_tutorial_settings_are_the_published_ones():
    cfg = _compose("experiment=sigmoid_vs_relu", "activation=sigmoid")
    assert (cfg.model.depth, cfg.model.width, cfg.optimizer.lr) == (4, 128, 0.01)
    assert (cfg.data.batch_size, cfg.data.train_size, cfg.data.subsample_seed) == (32, 5000, 7)
    assert cfg.init.name == "xavier_uniform" and cfg.trainer.max_epochs == 10
    cfg = _compose("experiment=batchnorm", "model=bn_mlp")
    assert list(cfg.model.hidden_sizes) == [128, 64] and cfg.optimizer.lr == 0.1
    assert (cfg.data.batch_size, cfg.trainer.max_epochs) == (128, 3)
    cfg = _compose("experiment=remedies", "remedy=residual")
    assert cfg.model._target_.endswith("ResMLP") and cfg.activation.name == "sigmoid"
    cfg = _compose("experiment=remedies", "remedy=relu_he")
    assert (cfg.activation.name, cfg.init.name, cfg.model.depth) == ("relu", "kaiming_normal", 10)


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_shrunken_experiment_job_runs(experiment, tmp_path: Path):
    job = sweep_jobs(experiment)[-1]
    shrink = ["trainer.max_epochs=1", "trainer.enable_progress_bar=false", "logger=none"]
    if experiment != "xor":  # the XOR data has no subsample sizes
        shrink = [o for o in TINY if o.startswith("data.")] + shrink
    cfg = _compose(f"experiment={experiment}", *job, *shrink)
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path / "run")
        cfg.paths.data_dir = str(tmp_path / "data")
    summary = run(cfg)
    # init_sweep's naive N(0, 1) at depth 20 may diverge: that is a finished, recorded run.
    assert summary["status"] in ("completed", "diverged"), summary["error"]
    assert (tmp_path / "run" / "summary.json").is_file()
