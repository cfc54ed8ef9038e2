"""The composed run: build what the Hydra config describes, fit it, write summary.json."""

from __future__ import annotations

import logging
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import get_class, instantiate
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import Logger, TensorBoardLogger
from omegaconf import DictConfig, OmegaConf

from gradflow.config import override_key
from gradflow.data import TensorDataModule
from gradflow.errors import ConfigError, GradflowError, gradflow_cause
from gradflow.names import COMPLETED, FAILED, INTERRUPTED, TERMINATED
from gradflow.nn.models import TrackedModel
from gradflow.rules import training as rules
from gradflow.rules.nn import activation_params, init_params
from gradflow.training import console, preflight
from gradflow.training.module import TaskModule
from gradflow.training.resume import (
    RESUME_KEY,
    ResumePoint,
    finished_summary,
    record_resume,
    resume_changes,
    resume_point,
)
from gradflow.training.summary import RunSummary, format_summary, objective
from gradflow.training.sweep import discard_run_dir, reject_job

log = logging.getLogger(__name__)
# Why a run stopped when it was stopped from outside.
STOP_MESSAGES = {
    INTERRUPTED: "interrupted by the user (Ctrl-C)",
    TERMINATED: "terminated by SIGTERM (a scheduler's time limit or scancel)",
}

# The shell's codes for Ctrl-C and for SIGTERM: either stops a sweep too.
EXIT_CODES = {INTERRUPTED: 130, TERMINATED: 143}
# Launchers that run each job as a task of a scheduler (hydra/launcher=slurm): scancel or a
# time limit ends that task only, and the sweep waits for its result (submitit's result
# file, which an exit would not write) to report it.
SCHEDULER_LAUNCHERS = "hydra_plugins.hydra_submitit_launcher."
# Launchers that run the jobs in this process, one after another, where a progress bar
# can be watched (the population launcher runs a single job as the basic one does).
IN_PROCESS_LAUNCHERS = ("BasicLauncher", "PopulationLauncher")


def run(cfg: DictConfig) -> dict[str, Any]:
    """Build and fit everything `cfg` describes; return (and write) the run's summary.

    A config rejected before training raises its ConfigError and leaves no run behind: the
    directory made for it goes (a resumed run's, which holds more, stays as it was). A
    population of runs trains through `gradflow.training.population` instead.
    """
    console.quiet()
    run_dir = output_dir(cfg)
    overrides = job_overrides()
    run_dir.mkdir(parents=True, exist_ok=True)
    summary = RunSummary(cfg, run_dir, [o for o in overrides if override_key(o) != RESUME_KEY])
    trainer, datamodule, callbacks, loggers = None, None, [], []
    try:
        preflight.check(cfg)
        start, done = start_point(cfg, run_dir, summary, overrides)
        if done:
            return done
        seed_and_threads(cfg)
        datamodule, module, callbacks = build_parts(cfg)
        loggers = build_loggers(cfg, start.purge_step)
        trainer = build_trainer(cfg, [*callbacks, summary.epochs], loggers)
        summary.set_up()
        # weights_only=False: the checkpoint holds the optimizer partial; it is our own file.
        trainer.fit(module, datamodule=datamodule, ckpt_path=start.checkpoint, weights_only=False)
        summary.ended(COMPLETED)
    except (KeyboardInterrupt, SystemExit) as err:
        # Lightning turns Ctrl-C and SIGTERM into a graceful shutdown and then exit(1).
        if isinstance(err, SystemExit) and not (trainer is not None and trainer.interrupted):
            raise
        status = TERMINATED if trainer is not None and trainer.received_sigterm else INTERRUPTED
        summary.ended(status, STOP_MESSAGES[status])
        _restore_ctrl_c()
    except Exception as err:  # noqa: BLE001 - recorded; the caller decides the exit code
        cause = gradflow_cause(err)
        if isinstance(cause, ConfigError) and trainer is None:
            discard_run_dir(run_dir)
            raise cause from None
        if summary.failed(err):
            log.exception("run failed")
    return summary.write(trainer, callbacks, data_record(datamodule), loggers)


def data_record(datamodule: TensorDataModule | None) -> dict[str, Any] | None:
    """summary.json's `data`: where the data came from, how it was batched and what the
    outputs mean (None when it was never loaded)."""
    if datamodule is None or datamodule.source_info is None:
        return None
    return {
        **datamodule.source_info,
        **(datamodule.usage() or {}),
        "task": datamodule.task.name,  # what the outputs mean (`gradflow.tasks`)
    }


def start_point(
    cfg: DictConfig, run_dir: Path, summary: RunSummary, overrides: list[str]
) -> tuple[ResumePoint, dict[str, Any] | None]:
    """Where the run starts (`resume_point`), noted in its summary; and, for a resumed run
    that needs no more training, its finished summary (then there is nothing to do)."""
    start = resume_point(cfg, run_dir)
    if cfg.get(RESUME_KEY) is not None:
        summary.epochs.pending_changes = resume_changes(run_dir, cfg, start.steps)
        if done := finished_summary(run_dir, cfg.trainer.get("max_epochs")):
            log.info("%s already %s: nothing to resume.", run_dir, done["status"])
            record_resume(run_dir, cfg, overrides)  # Hydra rewrote .hydra/
            return start, done
        summary.data["overrides"] = record_resume(run_dir, cfg, overrides)
    if start.resumed_from:
        summary.data["resumed_from"] = start.resumed_from
    return start, None


def finish_job(cfg: DictConfig, outcome: dict[str, Any] | GradflowError) -> float:
    """What a job does with its run's summary, or with the error that rejected its config,
    under its Hydra job: print it, note a rejection in the sweep, exit where the command
    must stop (a rejected or failed single run: 1; a Ctrl-C or SIGTERM: 130 or 143, which
    stops a sweep too); return the objective a sweeper maximises (NaN when rejected)."""
    hydra_cfg = HydraConfig.get()
    is_sweep = hydra_cfg.mode.name == "MULTIRUN"
    if isinstance(outcome, GradflowError):  # a rejected config: one sentence, no run left
        return reject_job(outcome)
    if outcome["status"] == FAILED and not is_sweep:
        console.log.error(outcome["error"])  # one sentence, no traceback (in train.log too)
        sys.exit(1)
    # A sweep's jobs leave the TensorBoard command to the sweep's end: one, for the sweep.
    console.log.info(format_summary(outcome, cfg.paths.log_dir, view=not is_sweep))
    scheduled = str(hydra_cfg.launcher.get("_target_", "")).startswith(SCHEDULER_LAUNCHERS)
    if outcome["status"] in EXIT_CODES and not scheduled:
        sys.exit(EXIT_CODES[outcome["status"]])  # a sweep stops too: the signal means stop
    return objective(outcome)


# --------------------------------------------------------------------------- building


def seed_and_threads(cfg: DictConfig) -> None:
    """torch's CPU threads (`torch_threads`, null: torch's default) and every RNG (`seed`)."""
    if (threads := rules.torch_threads(cfg)) is not None:
        torch.set_num_threads(threads)
    L.seed_everything(rules.seed(cfg), workers=True, verbose=False)


@contextmanager
def config_node(key: str) -> Iterator[None]:
    """Name a ConfigError raised while building the node at `key` by its full key.

    Constructors name the keys of their own parameters (`depth`); the config knows where
    the node sits (`model`), so the user reads `model.depth=0 is not allowed: ...`. Other
    gradflow errors are unwrapped from Hydra's InstantiationException.
    """
    try:
        yield
    except Exception as err:
        cause = gradflow_cause(err)
        if isinstance(cause, ConfigError):
            raise cause.under(key) from None
        if cause is not None and cause is not err:
            raise cause from None
        raise


def build(key: str, node: DictConfig, **kwargs: Any) -> Any:
    """`instantiate(node, **kwargs)`, its errors named by the node's key."""
    with config_node(key):
        return instantiate(node, **kwargs)


def build_parts(cfg: DictConfig) -> tuple[TensorDataModule, TaskModule, list[L.Callback]]:
    """The data (loaded), the LightningModule and the callbacks (checkpointing included)."""
    datamodule, model = build_network(cfg)
    module = TaskModule(
        model,
        build("optimizer", cfg.optimizer),
        datamodule.num_classes,
        datamodule.task.name,
        datamodule.chance_loss(),
    )
    return datamodule, module, [*build_group(cfg, "callbacks"), *build_group(cfg, "checkpoint")]


def build_network(cfg: DictConfig) -> tuple[TensorDataModule, TrackedModel]:
    """The data module (loaded) and the network sized to its samples and task."""
    with config_node("data"):
        datamodule = instantiate(cfg.data)
    model = build_model(cfg, datamodule)
    with config_node("data"):
        datamodule.setup("fit")
    return datamodule, model


def build_model(cfg: DictConfig, datamodule: TensorDataModule) -> TrackedModel:
    """The model group's network, with the activation and init groups' choices, sized to the
    data module's samples and task."""
    activation, init = (OmegaConf.to_container(cfg[key]) for key in ("activation", "init"))
    with config_node("activation"):
        activation_params(activation)
    with config_node("init"):
        init_params(init)
    return build(
        "model",
        cfg.model,
        activation=activation,
        init=init,
        in_features=datamodule.in_features,
        # The output layer's units: the task's (one for a sigmoid head or a regression).
        num_classes=datamodule.task.num_outputs,
    )


def build_group(cfg: DictConfig, group: str) -> list[Any]:
    """Every entry of a group (callbacks, checkpoint) that has a `_target_`, in order."""
    nodes = cfg.get(group) or {}
    return [build(f"{group}.{name}", node) for name, node in nodes.items() if "_target_" in node]


def build_loggers(cfg: DictConfig, purge_step: int | None) -> list[Logger]:
    """The logger group; TensorBoard loggers get `purge_step` when the run is continued.

    TensorBoard then hides what an earlier attempt logged at steps >= purge_step (the
    partial epoch a kill interrupted), so re-run steps are not drawn twice.
    """
    loggers = []
    for name, node in (cfg.get("logger") or {}).items():
        if "_target_" not in node:
            continue
        purges = purge_step is not None and issubclass(get_class(node._target_), TensorBoardLogger)
        kwargs = {"purge_step": purge_step} if purges else {}
        loggers.append(build(f"logger.{name}", node, **kwargs))
    return loggers


def build_trainer(
    cfg: DictConfig, callbacks: list[L.Callback], loggers: list[Logger], **kwargs: Any
) -> L.Trainer:
    """The Trainer, with the progress bar only when someone can watch it (`kwargs`: more
    Trainer arguments, such as plugins)."""
    show_bar = bool(cfg.trainer.get("enable_progress_bar", True)) and watched()
    bar = [instantiate(cfg.progress_bar)] if show_bar and cfg.get("progress_bar") else []
    checkpoints = any(isinstance(c, ModelCheckpoint) for c in callbacks)
    return build(
        "trainer",
        cfg.trainer,
        callbacks=[*callbacks, *bar],
        logger=loggers or False,
        enable_progress_bar=show_bar,
        # The checkpoint group decides; Lightning refuses a ModelCheckpoint otherwise.
        **({"enable_checkpointing": True} if checkpoints else {}),
        **kwargs,
    )


def watched() -> bool:
    """Whether someone can watch a progress bar: stderr is a terminal and the job runs in
    this process (a parallel launcher's workers share the terminal; SLURM writes to files)."""
    if not sys.stderr.isatty():
        return False
    if HydraConfig.initialized():
        launcher = str(HydraConfig.get().launcher.get("_target_", ""))
        in_process = launcher.endswith(IN_PROCESS_LAUNCHERS)
        return HydraConfig.get().mode.name != "MULTIRUN" or in_process
    return True


# ------------------------------------------------------------------------------ context


def output_dir(cfg: DictConfig) -> Path:
    """The run's directory: Hydra's output dir, or paths.output_dir when composed by hand."""
    if HydraConfig.initialized():
        return Path(HydraConfig.get().runtime.output_dir)
    return Path(cfg.paths.output_dir)


def job_overrides() -> list[str]:
    """The command-line overrides of this job (none when composed by hand)."""
    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


def _restore_ctrl_c() -> None:
    """Lightning ignores SIGINT after its graceful shutdown; let the next Ctrl-C work again."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.default_int_handler)
