"""hydra/launcher=population: which jobs train together, and that each member's job
directory is a job's; scripts/train.py runs in this process. (That members equal their
own runs is tests/test_population_training.py's.)"""

from __future__ import annotations

import json
import runpy
import sys
from pathlib import Path

import pytest
import torch
import yaml
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, open_dict

from gradflow.config import config_dir
from gradflow.errors import ConfigError
from gradflow.training import population
from gradflow.training.population_launcher import PopulationLauncher, populations
from gradflow.training.stacking import Member
from tests.helpers import KILLABLE, REPO_ROOT, TINY, start_train, wait_for

# Nothing that costs time and is not looked at: no diagnostics, checkpoint or events.
QUICK = [*TINY, "model.width=16", "callbacks=none", "checkpoint=none", "logger=none"]


class Trained(list):
    """The populations the launcher handed to the engine, in order; `threads`: the torch
    threads it asked for each, and `during`: torch's threads while each trained."""

    def __init__(self) -> None:
        super().__init__()
        self.threads: list[int | None] = []
        self.during: list[int] = []


@pytest.fixture
def trained(monkeypatch) -> Trained:
    """The populations the launcher hands to the engine, in order (then trained by it)."""
    groups = Trained()
    train_population = population.train_population
    on_train_start = population.PopulationModule.on_train_start

    def spy(members: list[Member], torch_threads: int | None = None) -> list[dict]:
        groups.append(members)
        groups.threads.append(torch_threads)
        return train_population(members, torch_threads)

    def counting_start(module: population.PopulationModule) -> None:
        groups.during.append(torch.get_num_threads())
        on_train_start(module)

    monkeypatch.setattr(population.PopulationModule, "on_train_start", counting_start)
    monkeypatch.setattr(population, "train_population", spy)
    return groups


def _sweep(tmp_path: Path, monkeypatch, *overrides: str) -> Path:
    """scripts/train.py -m hydra/launcher=population with QUICK sizes, in this process;
    returns the sweep directory."""
    sweep = tmp_path / "sweep"
    argv = ["train.py", "-m", "hydra/launcher=population", *QUICK, *overrides,
            f"hydra.sweep.dir={sweep}", f"paths.log_dir={tmp_path / 'logs'}",
            f"paths.data_dir={tmp_path / 'data'}",
            "hydra.callbacks.sweep_report.compare=false"]  # fmt: skip
    monkeypatch.setattr(sys, "argv", argv)
    runpy.run_path(str(REPO_ROOT / "scripts" / "train.py"), run_name="train")["main"]()
    return sweep


def test_a_population_trains_on_every_core_unless_told(tmp_path, monkeypatch, trained):
    before = torch.get_num_threads()
    try:
        _sweep(tmp_path / "default", monkeypatch, "seed=0,1")
        _sweep(tmp_path / "one", monkeypatch, "seed=0,1", "hydra.launcher.torch_threads=1")
    finally:
        torch.set_num_threads(before)
    # The jobs' own torch_threads is 1 (train.yaml); the launcher's default, every core.
    assert trained.threads == [-1, 1]
    assert trained.during == [population.cores(), 1]


def _jobs(group: list[Member]) -> list[str]:
    return [member.run_dir.name for member in group]


def test_seeds_of_each_depth_train_as_one_population(tmp_path, monkeypatch, capsys, trained):
    sweep = _sweep(tmp_path, monkeypatch, "seed=0,1,2", "model.depth=1,2")
    # Hydra's order: the last key varies fastest; jobs are named by what varies, seed last.
    assert [_jobs(group) for group in trained] == [
        ["0_model.depth=1,seed=0", "2_model.depth=1,seed=1", "4_model.depth=1,seed=2"],
        ["1_model.depth=2,seed=0", "3_model.depth=2,seed=1", "5_model.depth=2,seed=2"],
    ]
    for group in trained:
        for member in group:
            run_dir = member.run_dir
            assert run_dir.parent == sweep
            saved = yaml.safe_load((run_dir / ".hydra" / "config.yaml").read_text())
            seed = int(run_dir.name.rsplit("=", 1)[1])
            assert saved["seed"] == member.cfg.seed == seed
            # Resolved while the member's job was current: its own directory, not the sweep's.
            assert member.cfg.paths.output_dir == str(run_dir)
            assert f"seed={seed}" in member.overrides
            summary = json.loads((run_dir / "summary.json").read_text())
            assert summary["status"] == "completed" and summary["config"]["seed"] == seed
            assert summary["overrides"] == member.overrides
            # Trained under its population's Hydra job: the model group's option, not a class.
            assert summary["hparams"]["model"] == "mlp"
            assert summary["hparams"]["depth"] == member.cfg.model.depth
            assert summary["population"]["members"] == 3
            assert summary["population"]["run_dirs"] == _jobs(group)
            # Its train.log: what the population logged while it trained (one Trainer for
            # the three), then its own summary.
            log = (run_dir / "train.log").read_text()
            assert log.count("GPU available") == 1
            assert log.count("status: completed") == 1 and str(run_dir) in log
    # Two seeds of one population start from different weights: different losses.
    losses = {
        json.loads((m.run_dir / "summary.json").read_text())["metrics"]["final"]["val/loss"]
        for m in trained[0]
    }
    assert len(losses) == 3
    out = capsys.readouterr().out
    assert f"sweep: 6 jobs in {sweep}: 6 completed" in out
    assert out.count("status: completed") == 6  # each member's summary, as a job prints it
    assert out.count("(a population of 3)") == 6  # whose time it is


def test_the_cap_splits_a_population_and_a_rest_of_one_runs_alone(
    tmp_path, monkeypatch, capsys, trained
):
    sweep = _sweep(tmp_path, monkeypatch, "seed=0,1,2", "hydra.launcher.max_members=2")
    assert [_jobs(group) for group in trained] == [["0_seed=0", "1_seed=1"]]
    alone = sweep / "2_seed=2"  # the basic way: run_job with scripts/train.py's main
    assert json.loads((alone / "summary.json").read_text())["status"] == "completed"
    assert (alone / ".hydra" / "overrides.yaml").is_file()
    assert "sweep: 3 jobs" in capsys.readouterr().out


def test_a_rejected_population_is_rejected_for_each_member(tmp_path, monkeypatch, capsys):
    sweep = _sweep(tmp_path, monkeypatch, "seed=0,1", "optimizer.lr=-1")
    rejected = [json.loads(line) for line in (sweep / "rejected.jsonl").read_text().splitlines()]
    assert [entry["job"] for entry in rejected] == ["0_seed=0", "1_seed=1"]
    assert rejected[0]["error"].startswith("optimizer.lr=-1 is not allowed: ")
    assert not list(sweep.glob("*/.hydra"))  # no run left behind, as for a rejected job
    said = capsys.readouterr()
    assert "sweep: 2 jobs" in said.out
    # Nothing to compare or to view: no report attempted, no TensorBoard command.
    assert "view:" not in said.out and "report" not in said.err


def _job_configs(tmp_path: Path, *sweeps: str) -> list[DictConfig]:
    """Every job's config (hydra node included) of a sweep over `sweeps` ("key=a,b")."""
    from itertools import product

    values = [[f"{s.split('=')[0]}={v}" for v in s.split("=")[1].split(",")] for s in sweeps]
    jobs = []
    for overrides in product(*values):
        with initialize_config_dir(str(config_dir()), version_base="1.3"):
            job = compose(
                "train",
                overrides=[*overrides, f"paths.log_dir={tmp_path}"],
                return_hydra_config=True,
            )
        with open_dict(job):
            job.hydra.job.num = len(jobs)
        jobs.append(job)
    return jobs


def _groups(jobs: list[DictConfig], max_members: int = 64) -> list[list[int]]:
    return [[job.hydra.job.num for job in group] for group in populations(jobs, max_members)]


def test_only_stackable_keys_may_differ_within_a_population(tmp_path):
    # seed, learning rate and init stack; the width and the optimizer's class do not.
    jobs = _job_configs(tmp_path, "seed=0,1", "optimizer.lr=0.1,0.01", "init=xavier_uniform,normal")
    assert _groups(jobs) == [list(range(8))]
    assert _groups(jobs, max_members=3) == [[0, 1, 2], [3, 4, 5], [6, 7]]
    assert _groups(_job_configs(tmp_path, "model.width=16,32", "seed=0,1")) == [[0, 1], [2, 3]]
    assert _groups(_job_configs(tmp_path, "optimizer=sgd,adam", "seed=0,1")) == [[0, 1], [2, 3]]


def test_the_cap_is_a_whole_number_of_members():
    assert PopulationLauncher(max_members=2).max_members == 2
    with pytest.raises(ConfigError, match=r"^hydra.launcher.max_members=0 is not allowed"):
        PopulationLauncher(max_members=0)


@pytest.mark.slow
def test_killed_population_sweep_relaunch_continues_its_members(tmp_path):
    logs = tmp_path / "logs"
    sweep = logs / "sweep"
    args = ["-m", "hydra/launcher=population", "seed=0,1", *KILLABLE, "trainer.max_epochs=2"]
    proc = start_train(*args, "callbacks=none", f"hydra.sweep.dir={sweep}", log_dir=logs)
    wait_for(sweep, "1_*/checkpoints/last.ckpt", proc)  # both members saved epoch 1
    proc.kill()
    proc.communicate(timeout=60)
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir())
    assert len(jobs) == 2 and not any((job / "summary.json").exists() for job in jobs)

    again = start_train("-m", f"resume={sweep}", log_dir=logs)
    out, err = again.communicate(timeout=300)
    assert again.returncode == 0, err[-3000:]
    for position, job in enumerate(jobs):
        summary = json.loads((job / "summary.json").read_text())
        assert summary["status"] == "completed" and summary["epochs"] == 2
        assert summary["resumed_from"]["epochs"] == 1
        assert summary["population"]["members"] == 2
        assert summary["population"]["position"] == position
    assert f"sweep: 2 jobs in {sweep}: 2 completed" in out
