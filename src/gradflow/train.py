"""The composed run: instantiate everything from the Hydra config, fit, write summary.json."""

from __future__ import annotations

import json
import logging
import math
import os
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from lightning.pytorch.loggers import Logger, TensorBoardLogger
from omegaconf import DictConfig, OmegaConf

import gradflow
from gradflow.config import project_root
from gradflow.errors import DivergedError, GradflowError
from gradflow.module import ClassifierModule

log = logging.getLogger(__name__)

SUMMARY_FILE = "summary.json"
TENSORBOARD_FLAGS = "--samples_per_plugin histograms=0,images=0"


class EpochTimer(L.Callback):
    """Wall time of each epoch (training and its validation), for summary.json."""

    def __init__(self) -> None:
        self.epoch_s: list[float] = []
        self._start = 0.0

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.epoch_s.append(round(time.perf_counter() - self._start, 4))


def instantiate_group(group: DictConfig | None) -> list[Any]:
    """Every entry of a group (callbacks, logger) that has a `_target_`, in order."""
    if not group:
        return []
    return [instantiate(node) for node in group.values() if "_target_" in node]


def git_commit(root: Path) -> str | None:
    """The checkout's commit, with '-dirty' when it has uncommitted changes; None outside git."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return commit + ("-dirty" if dirty else "")


def write_json_atomic(path: Path, data: Mapping[str, Any]) -> None:
    """Write to a temporary file and rename it, so a reader never sees half a file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=_json_default, allow_nan=True) + "\n")
    os.replace(tmp, path)


def _json_default(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.item() if value.numel() == 1 else value.tolist()
    if isinstance(value, Path):
        return str(value)
    return str(value)


def _scalar(value: Any) -> float | None:
    if value is None:
        return None
    number = float(value.item() if isinstance(value, torch.Tensor) else value)
    return number


def _gradflow_cause(err: BaseException) -> GradflowError | None:
    """The GradflowError behind `err`: Hydra wraps errors raised while instantiating."""
    while err is not None:
        if isinstance(err, GradflowError):
            return err
        err = err.__cause__ or err.__context__
    return None


def output_dir(cfg: DictConfig) -> Path:
    """The run's directory: Hydra's output dir, or paths.output_dir when composed by hand."""
    if HydraConfig.initialized():
        return Path(HydraConfig.get().runtime.output_dir)
    return Path(cfg.paths.output_dir)


def _overrides() -> list[str]:
    if HydraConfig.initialized():
        return list(HydraConfig.get().overrides.task)
    return []


def _log_hparams(loggers: list[Logger], cfg: DictConfig, metrics: Mapping[str, Any]) -> None:
    """Flattened config + the final metrics in TensorBoard's HParams tab."""
    hp_metrics = {f"hp/{k.replace('/', '_')}": v for k, v in metrics.items() if v is not None}
    params = OmegaConf.to_container(cfg, resolve=True)
    params.pop("paths", None)
    for logger in loggers:
        if isinstance(logger, TensorBoardLogger):
            logger.log_hyperparams(params, hp_metrics)
            logger.finalize("success")


def run(cfg: DictConfig) -> dict[str, Any]:
    """Build and fit everything `cfg` describes; return (and write) the run's summary."""
    t_start = time.perf_counter()
    run_dir = output_dir(cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    summary: dict[str, Any] = {
        "status": "failed",
        "error": None,
        "run_dir": str(run_dir),
        "overrides": _overrides(),
        "task_name": cfg.get("task_name"),
        "tags": list(cfg.get("tags") or []),
        "config": OmegaConf.to_container(cfg, resolve=True),
        "version": gradflow.__version__,
        "git_commit": git_commit(project_root()),
    }
    timer = EpochTimer()
    trainer: L.Trainer | None = None
    datamodule = None
    loggers: list[Logger] = []
    callbacks: list[L.Callback] = []
    try:
        if cfg.get("torch_threads"):
            torch.set_num_threads(int(cfg.torch_threads))
        L.seed_everything(cfg.seed, workers=True, verbose=False)
        datamodule = instantiate(cfg.data)
        net = instantiate(
            cfg.model,
            activation=OmegaConf.to_container(cfg.activation),
            init=OmegaConf.to_container(cfg.init),
        )
        module = ClassifierModule(
            net, instantiate(cfg.optimizer), num_classes=cfg.model.num_classes
        )
        callbacks = instantiate_group(cfg.get("callbacks"))
        loggers = instantiate_group(cfg.get("logger"))
        trainer = instantiate(cfg.trainer, callbacks=[*callbacks, timer], logger=loggers or False)
        summary["timing"] = {"setup_s": round(time.perf_counter() - t_start, 3)}
        trainer.fit(module, datamodule=datamodule)
        summary["status"] = "completed"
    except (KeyboardInterrupt, SystemExit) as err:
        # Lightning turns Ctrl-C into a graceful shutdown and then exit(1).
        if isinstance(err, SystemExit) and not (trainer is not None and trainer.interrupted):
            raise
        summary.update(status="interrupted", error="interrupted by the user (Ctrl-C)")
    except Exception as err:  # noqa: BLE001 - recorded; the caller decides the exit code
        cause = _gradflow_cause(err)
        if isinstance(cause, DivergedError):
            summary.update(status="diverged", error=str(cause))
        elif cause is not None:  # a known fault: its one sentence is the whole story
            summary.update(status="failed", error=str(cause))
        else:
            summary.update(status="failed", error=f"{type(err).__name__}: {err}")
            log.exception("run failed")

    metrics = {k: _scalar(v) for k, v in (trainer.callback_metrics if trainer else {}).items()}
    summary["metrics"] = {
        "final": {k: v for k, v in metrics.items() if k != "val/acc_best"},
        "best": {"val/acc_best": metrics.get("val/acc_best")},
    }
    for callback in callbacks:
        if hasattr(callback, "summary_fields"):
            summary.update(callback.summary_fields())
    summary["epochs"] = trainer.current_epoch if trainer else 0
    summary["steps"] = trainer.global_step if trainer else 0
    summary.setdefault("timing", {})
    summary["timing"].update(epoch_s=timer.epoch_s, total_s=round(time.perf_counter() - t_start, 3))
    source = getattr(datamodule, "source_info", None) if datamodule is not None else None
    summary["data"] = source
    write_json_atomic(run_dir / SUMMARY_FILE, summary)
    _log_hparams(loggers, cfg, {**summary["metrics"]["final"], **summary["metrics"]["best"]})
    return summary


def objective(summary: Mapping[str, Any]) -> float:
    """The number a sweeper maximises: best val accuracy (NaN for a run that did not finish)."""
    best = summary.get("metrics", {}).get("best", {}).get("val/acc_best")
    return float(best) if summary.get("status") == "completed" and best is not None else math.nan


def format_summary(summary: Mapping[str, Any], log_root: Path) -> str:
    """The few lines a run ends with: status, accuracy, loss, verdict, where the logs are."""
    final = summary.get("metrics", {}).get("final", {})
    best = summary.get("metrics", {}).get("best", {}).get("val/acc_best")

    def fmt(v: Any) -> str:
        return "n/a" if v is None else f"{v:.4f}"

    lines = [
        f"status: {summary['status']}" + (f" - {summary['error']}" if summary.get("error") else ""),
        f"val/acc {fmt(final.get('val/acc'))} (best {fmt(best)}), "
        f"val/loss {fmt(final.get('val/loss'))}, "
        f"train/acc {fmt(final.get('train/acc'))}, {summary.get('epochs', 0)} epochs "
        f"in {summary.get('timing', {}).get('total_s', 0):.1f} s",
    ]
    verdict = summary.get("verdict")
    if verdict:
        lines.append(f"verdict: {', '.join(verdict.get('labels', []))}")
    data = summary.get("data") or {}
    if data:
        lines.append(
            f"data: {data.get('description', data.get('source'))} "
            f"({data.get('train_size')} train / {data.get('val_size')} val)"
        )
    lines += [
        f"logs: {summary['run_dir']}",
        f"view: tensorboard --logdir {log_root} {TENSORBOARD_FLAGS}",
    ]
    return "\n".join(lines)
