"""Every tutorial experiment composes with its sweep expanded, and a shrunken job of each runs."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import open_dict

from gradflow.config import config_dir
from gradflow.training import preflight
from gradflow.training.run import build_parts, run
from tests.helpers import TINY

EXPERIMENTS = sorted(p.stem for p in (config_dir() / "experiment").glob("*.yaml"))


def _compose(*overrides: str, hydra: bool = False):
    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        return compose("train", overrides=list(overrides), return_hydra_config=hydra)


def sweep_jobs(experiment: str) -> list[list[str]]:
    """The override lists `-m experiment=NAME` runs: the product of its sweeper's params."""
    params = _compose(f"experiment={experiment}", hydra=True).hydra.sweeper.params
    parsed = OverridesParser.create().parse_overrides([f"{k}={v}" for k, v in params.items()])
    choices = [
        [f"{o.get_key_element()}={value}" for value in o.sweep_string_iterator()] for o in parsed
    ]
    return [list(job) for job in itertools.product(*choices)]


def _shrunk(experiment: str, job: list[str], tmp_path: Path):
    shrink = ["trainer.max_epochs=1", "trainer.enable_progress_bar=false", "logger=none"]
    if experiment != "xor":  # the XOR data has no subsample sizes
        shrink = [o for o in TINY if o.startswith("data.")] + shrink
    cfg = _compose(f"experiment={experiment}", *job, *shrink)
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path / "run")
        cfg.paths.data_dir = str(tmp_path / "data")
    return cfg


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_job_of_the_sweep_builds(experiment, tmp_path):
    jobs = sweep_jobs(experiment)
    assert len(jobs) >= 2 and len({tuple(job) for job in jobs}) == len(jobs)
    for job in jobs:
        cfg = _shrunk(experiment, job, tmp_path)
        assert experiment in cfg.tags
        preflight.check(cfg)
        build_parts(cfg)


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_shrunken_experiment_job_runs(experiment, tmp_path: Path):
    summary = run(_shrunk(experiment, sweep_jobs(experiment)[-1], tmp_path))
    # init_sweep's naive N(0, 1) at depth 20 may diverge: that is a finished, recorded run.
    assert summary["status"] in ("completed", "diverged"), summary["error"]
    assert (tmp_path / "run" / "summary.json").is_file()
