"""Every tutorial experiment composes with its sweep expanded, and a shrunken job of each runs;
README's four tutorial tables sweep 10 seeds each, trained as populations."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf, open_dict

from gradflow.config import config_dir, sweep_grid
from gradflow.training import preflight
from gradflow.training.population_launcher import PopulationLauncher, populations
from gradflow.training.run import build_parts, run
from tests.helpers import TINY

EXPERIMENTS = sorted(p.stem for p in (config_dir() / "experiment").glob("*.yaml"))
# README's "Reproducing the tutorials" tables: experiment -> its configs (without the seed)
# per population; remedies' relu and relu_he differ only in init, which stacks.
TUTORIALS = {
    "sigmoid_vs_relu": [1, 1],
    "batchnorm": [1, 1],
    "residual": [1, 1],
    "remedies": [1, 1, 1, 1, 2],
}
TUTORIAL_SEEDS = [str(seed) for seed in range(42, 52)]


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


def configs_of(jobs: list[list[str]]) -> list[list[str]]:
    """The first job of each config: seeds only reseed a build that is otherwise the same."""
    firsts: dict[tuple[str, ...], list[str]] = {}
    for job in jobs:
        firsts.setdefault(tuple(o for o in job if not o.startswith("seed=")), job)
    return list(firsts.values())


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
    for job in configs_of(jobs):
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


@pytest.mark.parametrize(("experiment", "per_population"), TUTORIALS.items())
def test_tutorial_sweeps_ten_seeds_per_config_as_populations(experiment, per_population, tmp_path):
    configs = sum(per_population)
    jobs = sweep_jobs(experiment)
    seeds = [o.split("=")[1] for job in jobs for o in job if o.startswith("seed=")]
    assert len(jobs) == configs * 10 and sorted(seeds) == sorted(TUTORIAL_SEEDS * configs)
    hydra = _compose(f"experiment={experiment}", hydra=True).hydra
    assert hydra.launcher._target_.endswith(PopulationLauncher.__name__)
    # Job directories are numbered for the whole sweep (00_..59_): sweep_grid counts range().
    OmegaConf.save(
        {"hydra": {"overrides": {"task": [f"experiment={experiment}"]}, "sweeper": hydra.sweeper}},
        tmp_path / "multirun.yaml",
    )
    varying, size = sweep_grid(tmp_path / "multirun.yaml")
    assert size == configs * 10 and "seed" in varying and len(varying) == 2
    # The launcher trains each config's seeds together (composing two seeds of each is
    # enough to see the grouping, and the cap leaves 10 seeds of every population whole).
    two_seeds = [job for job in jobs if {"seed=42", "seed=43"} & set(job)]
    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        composed = [compose("train", [f"experiment={experiment}", *job]) for job in two_seeds]
    groups = populations(composed, hydra.launcher.max_members)
    assert [len(group) for group in groups] == [2 * n for n in per_population]
    assert hydra.launcher.max_members >= 10 * max(per_population)


def test_the_command_line_launcher_wins_over_the_experiments():
    for launcher, target in (("basic", "BasicLauncher"), ("parallel", "JoblibLauncher")):
        cfg = _compose("experiment=sigmoid_vs_relu", f"hydra/launcher={launcher}", hydra=True)
        assert cfg.hydra.launcher._target_.endswith(target)
        cfg = _compose(f"hydra/launcher={launcher}", "experiment=sigmoid_vs_relu", hydra=True)
        assert cfg.hydra.launcher._target_.endswith(target)
