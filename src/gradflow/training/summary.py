"""What a run leaves behind for people and for the reporting side: summary.json and HParams.

`RunSummary` gathers the record while the run goes on (what was asked, how it ended) and
writes it once at the end; `EpochRecord` is the Lightning callback that times the epochs
and keeps the latest metrics in the checkpoint, so a resumed run reports every epoch once.
The keys of summary.json are listed in docs/architecture.md.
"""

from __future__ import annotations

import json
import math
import shlex
import subprocess
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from lightning.pytorch.loggers import Logger
from omegaconf import DictConfig, OmegaConf

import gradflow
from gradflow.config import project_root, write_text_atomic
from gradflow.errors import ConfigError, DivergedError, gradflow_cause
from gradflow.names import (
    COMPLETED,
    DIVERGED,
    FAILED,
    INTERRUPTED,
    SUMMARY_FILE,
    TERMINATED,
    TRAIN_ACC,
    TRAIN_LOSS,
    VAL_ACC,
    VAL_ACC_BEST,
    VAL_LOSS,
    tensorboard_command,
)
from gradflow.training.hparams import result_columns, run_hparams, saved_choices, write_hparams
from gradflow.training.module import AXIS_METRICS
from gradflow.training.resume import last_checkpoint


class EpochRecord(L.Callback):
    """Wall time of each epoch (training and its validation), the latest metrics, and what
    each resume changed of the config (`resume_changes`: key, was, now, from_step).

    All are saved in the checkpoint (Lightning asks callbacks for their state after the
    epoch-end hooks), so a resumed run reports every epoch's time once, its metrics even
    when the checkpoint left nothing to train, and every resume's changes.
    """

    def __init__(self) -> None:
        self.epoch_s: list[float] = []
        self.metrics: dict[str, float | None] = {}
        self.changes: list[dict[str, Any]] = []
        self.pending_changes: list[dict[str, Any]] = []  # this call's, kept from the train start
        # Each population the run trained in (`members`, `position`, `run_dirs`, `from_epoch`):
        # a member continued alone keeps the record of its epochs in a population.
        self.populations: list[dict[str, Any]] = []
        self.pending_population: dict[str, Any] | None = None
        self._start = 0.0

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.changes += self.pending_changes
        self.pending_changes = []
        if self.pending_population is not None:
            entry = {**self.pending_population, "from_epoch": trainer.current_epoch}
            last = self.populations[-1] if self.populations else {}
            same = ("members", "position", "run_dirs")
            if any(last.get(key) != entry[key] for key in same):  # not a resumed population
                self.populations.append(entry)
            self.pending_population = None

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.epoch_s.append(round(time.perf_counter() - self._start, 4))
        self.metrics = run_metrics(trainer)

    def state_dict(self) -> dict[str, Any]:
        return {
            "epoch_s": self.epoch_s,
            "metrics": self.metrics,
            "changes": self.changes,
            "populations": self.populations,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.epoch_s = list(state_dict.get("epoch_s", []))
        self.metrics = dict(state_dict.get("metrics", {}))
        self.changes = list(state_dict.get("changes", []))
        self.populations = list(state_dict.get("populations", []))


def run_metrics(trainer: L.Trainer) -> dict[str, float | None]:
    """The trainer's latest metrics as numbers, without the x-axis keys (`step`, `epoch`)."""
    return {
        key: None if value is None else float(value)
        for key, value in trainer.callback_metrics.items()
        if key not in AXIS_METRICS
    }


def git_commit(root: Path) -> str | None:
    """The checkout's commit, with '-dirty' when it has uncommitted changes; None outside git."""
    try:
        commit, dirty = (
            subprocess.run(
                args, cwd=root, capture_output=True, text=True, check=True
            ).stdout.strip()
            for args in (
                ["git", "rev-parse", "HEAD"],
                ["git", "status", "--porcelain", "--untracked-files=no"],
            )
        )
    except (OSError, subprocess.CalledProcessError):
        return None
    return commit + ("-dirty" if dirty else "")


def _json_default(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.item() if value.numel() == 1 else value.tolist()
    return str(value)


class RunSummary:
    """summary.json under construction: set up from the config, finished by `write`."""

    def __init__(self, cfg: DictConfig, run_dir: Path, overrides: list[str]) -> None:
        self.started = time.perf_counter()
        self.cfg = cfg
        self.run_dir = run_dir
        self.epochs = EpochRecord()
        self.data: dict[str, Any] = {
            "status": FAILED,
            "error": None,
            "run_dir": str(run_dir),
            "overrides": overrides,
            "task_name": cfg.get("task_name"),
            "tags": list(cfg.get("tags") or []),
            "config": OmegaConf.to_container(cfg, resolve=True),
            "version": gradflow.__version__,
            "git_commit": git_commit(project_root()),
            "timing": {},
        }

    def set_up(self) -> None:
        """Everything is built: the time so far is set-up time."""
        self.data["timing"]["setup_s"] = round(time.perf_counter() - self.started, 3)

    def ended(self, status: str, error: str | None = None) -> None:
        self.data.update(status=status, error=error)

    def failed(self, err: BaseException) -> bool:
        """Record why the run stopped; whether it is an unknown fault (worth a traceback)."""
        cause = gradflow_cause(err)
        if isinstance(cause, DivergedError):
            self.ended(DIVERGED, str(cause))
        elif cause is not None:  # a known fault: its one sentence is the whole story
            self.ended(FAILED, str(cause))
        else:
            self.ended(FAILED, f"{type(err).__name__}: {err}")
        return cause is None

    def write(
        self,
        trainer: L.Trainer | None,
        callbacks: Iterable[L.Callback],
        data_info: dict[str, Any] | None,
        loggers: list[Logger],
    ) -> dict[str, Any]:
        """Fill in the outcome, write the HParams and then summary.json; return the summary."""
        # The checkpoint's metrics where this call logged none (nothing left to train).
        metrics = {**self.epochs.metrics, **(run_metrics(trainer) if trainer else {})}
        self.data["metrics"] = {
            "final": {k: v for k, v in metrics.items() if k != VAL_ACC_BEST},
            "best": {VAL_ACC_BEST: metrics.get(VAL_ACC_BEST)},
        }
        for callback in callbacks:
            if hasattr(callback, "summary_fields"):
                self.data.update(callback.summary_fields())
        self.data["epochs"] = trainer.current_epoch if trainer else 0
        self.data["steps"] = trainer.global_step if trainer else 0
        total_s = round(time.perf_counter() - self.started, 3)
        self.data["timing"].update(epoch_s=self.epochs.epoch_s, total_s=total_s)
        self.data["data"] = data_info
        self.data["resume_changes"] = self.epochs.changes + self.epochs.pending_changes
        if self.epochs.populations:
            self.data["populations"] = self.epochs.populations
        checkpoint = last_checkpoint(self.run_dir)
        self.data["checkpoint"] = str(checkpoint) if checkpoint else None
        try:
            self.data["hparams"] = {
                **run_hparams(self.cfg, self.data["overrides"], saved_choices(self.run_dir)),
                **result_columns(self.data),
            }
        except ConfigError:  # a value no model could be built from: no table row either
            self.data["hparams"] = None
        if self.data["hparams"] and loggers:
            in_sweep = HydraConfig.initialized() and HydraConfig.get().mode.name == "MULTIRUN"
            write_hparams(loggers, self.data["hparams"], whole=not in_sweep)
        # Last, and whole or not at all: a run with a summary.json has all its records.
        text = json.dumps(self.data, indent=2, default=_json_default) + "\n"
        write_text_atomic(self.run_dir / SUMMARY_FILE, text)
        return self.data


def objective(summary: Mapping[str, Any]) -> float:
    """The number a sweeper maximises: best val accuracy, or for a regression (no accuracy)
    minus the final val/loss; NaN for a run that did not finish."""
    metrics = summary.get("metrics", {})
    best = metrics.get("best", {}).get(VAL_ACC_BEST)
    if best is None and metrics.get("final", {}).get(VAL_LOSS) is not None:
        best = -metrics["final"][VAL_LOSS]
    return float(best) if summary.get("status") == COMPLETED and best is not None else math.nan


def format_summary(summary: Mapping[str, Any], log_root: Path, view: bool = True) -> str:
    """The few lines a run ends with: status, accuracy, loss, verdict, where the logs are,
    and (with `view`) the TensorBoard command; a sweep's jobs leave it to the sweep's end."""
    final = summary.get("metrics", {}).get("final", {})
    best = summary.get("metrics", {}).get("best", {}).get(VAL_ACC_BEST)
    epochs = summary.get("epochs", 0)
    population = summary.get("population")  # its time is the population's, shared
    # The time is this call's: a resumed run says how many of its epochs that covers.
    total_s = summary.get("timing", {}).get("total_s", 0)
    took = f"in {total_s:.1f} s"
    if resumed := summary.get("resumed_from"):
        took = f"({epochs - resumed.get('epochs', 0)} in this call, {total_s:.1f} s)"

    def fmt(v: Any) -> str:
        return "n/a" if v is None else f"{v:.4f}"

    # A regression logs no accuracy: its losses instead (a summary without its task: a
    # classification unless it logged no accuracy).
    task = (summary.get("data") or {}).get("task")
    logged_acc = VAL_ACC in final or TRAIN_ACC in final or best is not None
    classifies = task != "regression" if task else logged_acc
    lines = [
        f"status: {summary['status']}" + (f" - {summary['error']}" if summary.get("error") else ""),
        (
            f"val/acc {fmt(final.get(VAL_ACC))} (best {fmt(best)}), "
            f"val/loss {fmt(final.get(VAL_LOSS))}, train/acc {fmt(final.get(TRAIN_ACC))}, "
            if classifies
            else f"val/loss {fmt(final.get(VAL_LOSS))}, train/loss {fmt(final.get(TRAIN_LOSS))}, "
        )
        + f"{epochs} epoch{'s' * (epochs != 1)} {took}"
        + (f" (a population of {population['members']})" if population else ""),
    ]
    verdict = summary.get("verdict")
    if verdict:  # the timeline in a sentence; a summary written before it had labels only
        lines.append(f"verdict: {verdict.get('sentence') or ', '.join(verdict.get('labels', []))}")
    data = summary.get("data") or {}
    if data:
        lines.append(
            f"data: {data.get('description', data.get('source'))}: "
            f"{data.get('train_size'):,} train / {data.get('val_size'):,} val"
        )
    lines.append(f"logs: {summary['run_dir']}")
    if view:
        lines.append(f"view: {tensorboard_command(log_root)}")
    if summary["status"] in (INTERRUPTED, TERMINATED, FAILED) and summary.get("checkpoint"):
        lines.append(
            f"continue: python scripts/train.py {shlex.quote('resume=' + summary['run_dir'])}"
        )
    return "\n".join(lines)
