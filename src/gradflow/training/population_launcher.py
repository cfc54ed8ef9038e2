"""`hydra/launcher=population`: a sweep's jobs that may be stacked train as one population.

The launcher composes each job's config as Hydra's BasicLauncher does and groups the jobs
whose `population_key` is equal, in the sweep's order, at most `max_members` a group. A
group of one runs exactly as the basic launcher runs it. A larger group is prepared job by
job with Hydra's own `run_job` and a task that only records the member, so each member's
directory is any job's (`.hydra/`, `train.log`, the Hydra callbacks' on_job_start and
on_job_end, which run then, before training); `train_population` then trains the group
once, and each member's summary is reported as scripts/train.py reports a run's.

Hydra instantiates launchers only from the `hydra_plugins` namespace (hydra/core/plugins.py),
so conf/hydra/launcher/population.yaml names this class through
`hydra_plugins.gradflow_population_launcher`. This module stays light to import: Hydra
imports it at every start; Lightning comes in only when a population trains.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import (
    JobReturn,
    JobStatus,
    configure_log,
    filter_overrides,
    run_job,
    setup_globals,
)
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict

from gradflow.checks import whole
from gradflow.errors import GradflowError
from gradflow.training.stacking import Member, population_key

log = logging.getLogger(__name__)


class PopulationLauncher(Launcher):
    """Runs a sweep's jobs in this process, each population of stackable jobs as one model."""

    def __init__(self, max_members: int = 64, torch_threads: int | None = -1) -> None:
        super().__init__()
        self.max_members = whole("hydra.launcher.max_members", max_members)
        if torch_threads is not None and torch_threads != -1:
            whole("hydra.launcher.torch_threads", torch_threads, null="for the jobs' own")
        self.torch_threads = torch_threads
        self.config: DictConfig | None = None
        self.task_function: TaskFunction | None = None
        self.hydra_context: HydraContext | None = None

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        self.config = config
        self.hydra_context = hydra_context
        self.task_function = task_function

    def launch(
        self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
    ) -> Sequence[JobReturn]:
        assert self.config is not None and self.hydra_context is not None
        setup_globals()
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        log.info(f"Launching {len(job_overrides)} jobs locally, in populations")
        jobs = []
        for idx, overrides in enumerate(job_overrides, start=initial_job_idx):
            log.info(f"\t#{idx} : {' '.join(filter_overrides(overrides))}")
            job = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
            with open_dict(job):
                job.hydra.job.id = idx
                job.hydra.job.num = idx
            jobs.append(job)
        returns: list[JobReturn] = []
        for group in populations(jobs, self.max_members):
            returns += self._run_alone(group[0]) if len(group) == 1 else self._run_together(group)
            configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        return sorted(returns, key=lambda ret: ret.hydra_cfg.hydra.job.num)

    def _run_job(self, job: DictConfig, task_function: TaskFunction) -> JobReturn:
        assert self.hydra_context is not None
        return run_job(
            hydra_context=self.hydra_context,
            task_function=task_function,
            config=job,
            job_dir_key="hydra.sweep.dir",
            job_subdir_key="hydra.sweep.subdir",
        )

    def _run_alone(self, job: DictConfig) -> list[JobReturn]:
        """A job of its own, as the basic launcher runs it."""
        assert self.task_function is not None
        return [self._run_job(job, self.task_function)]

    def _run_together(self, jobs: list[DictConfig]) -> list[JobReturn]:
        """Prepare each member as a job, train them as one population, report each."""
        assert self.config is not None
        prepared = [(job, *self._prepare(job)) for job in jobs]
        # A job whose config did not resolve failed as any job does; the others train.
        together = [(job, ret, member) for job, ret, member in prepared if member is not None]
        returns = [ret for _, ret, _ in prepared]
        if not together:
            return returns
        from gradflow.training.population import train_population
        from gradflow.training.run import discard_run_dir, finish_job

        outcomes: list[dict[str, Any] | GradflowError]
        configure_log(
            population_logging([job for job, _, _ in together]), self.config.hydra.verbose
        )
        try:
            # The first job is current: what the members share (the mode, the launcher, the
            # groups' choices); each member's directory and overrides are in its Member.
            with current_job(together[0][0]):
                members = [m for _, _, m in together]
                outcomes = list(train_population(members, self.torch_threads))
        except GradflowError as err:  # the population's config was rejected: every member's
            outcomes = [err] * len(together)
        except Exception as err:  # noqa: BLE001 - each job fails, as run_job records a failure
            for _, ret, _ in together:
                ret.status, ret.return_value = JobStatus.FAILED, err
            return returns
        for (job, ret, member), outcome in zip(together, outcomes, strict=True):
            with current_job(job):
                # Its train.log (a rejected member's directory, gone, comes back until the
                # error is said, as a rejected job's lives until then).
                member.run_dir.mkdir(parents=True, exist_ok=True)
                configure_log(job.hydra.job_logging, job.hydra.verbose)
                ret.return_value = finish_job(member.cfg, outcome)
            if isinstance(outcome, GradflowError):  # as `run` leaves none for a rejected config
                discard_run_dir(member.run_dir)
        return returns

    def _prepare(self, job: DictConfig) -> tuple[JobReturn, Member | None]:
        """Make the job's directory as run_job makes any job's, with a task that only records
        the member the job describes (None when its config did not resolve: the job failed)."""
        members: list[Member] = []
        ret = self._run_job(job, lambda cfg: members.append(current_member(cfg)))
        return ret, (members[0] if members else None)


def populations(jobs: list[DictConfig], max_members: int) -> list[list[DictConfig]]:
    """The jobs grouped by `population_key` (a job without one alone), each group split into
    runs of at most `max_members`, in the order of their first job."""
    groups: dict[Any, list[DictConfig]] = {}
    for job in jobs:
        key = population_key(job)
        groups.setdefault(key if key is not None else id(job), []).append(job)
    return [
        group[start : start + max_members]
        for group in groups.values()
        for start in range(0, len(group), max_members)
    ]


def population_logging(jobs: list[DictConfig]) -> DictConfig:
    """The jobs' logging, with every job's file handlers: each member's log file (train.log)
    gets what is logged while the population trains, as a job's gets what its run logs."""
    logging_cfg = OmegaConf.to_container(jobs[0].hydra.job_logging, resolve=True)
    handlers, root = logging_cfg["handlers"], logging_cfg["root"]
    files = [name for name, handler in handlers.items() if "filename" in handler]
    for num, job in enumerate(jobs[1:], start=1):
        own = OmegaConf.to_container(job.hydra.job_logging.handlers, resolve=True)
        for name in files:
            handlers[f"{name}_{num}"] = own[name]
            root["handlers"].append(f"{name}_{num}")
    return OmegaConf.create(logging_cfg)


def current_member(cfg: DictConfig) -> Member:
    """The member the current Hydra job describes: its config resolved while it is the
    current job (so `${hydra:runtime.output_dir}` is its own directory), that directory
    and its command-line overrides."""
    hydra_cfg = HydraConfig.get()
    resolved = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    run_dir = Path(hydra_cfg.runtime.output_dir)
    composed = OmegaConf.create(OmegaConf.to_container(cfg, resolve=False))
    overrides = list(hydra_cfg.overrides.task)
    return Member(cfg=resolved, run_dir=run_dir, overrides=overrides, composed=composed)


@contextmanager
def current_job(job: DictConfig) -> Iterator[None]:
    """`job` (a config with its hydra node) as Hydra's current job meanwhile."""
    before = HydraConfig.instance().cfg
    HydraConfig.instance().set_config(job)
    try:
        yield
    finally:
        HydraConfig.instance().cfg = before
