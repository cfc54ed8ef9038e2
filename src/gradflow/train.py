"""The composed run: instantiate everything from the Hydra config, fit, write summary.json."""

from __future__ import annotations

import json
import logging
import math
import shlex
import signal
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import get_class, instantiate
from lightning.pytorch.loggers import Logger, TensorBoardLogger
from omegaconf import DictConfig, OmegaConf

import gradflow
from gradflow.config import override_key, project_root, write_text_atomic
from gradflow.errors import DivergedError, GradflowError
from gradflow.event_checksums import use_c_checksums
from gradflow.module import AXIS_METRICS, ClassifierModule
from gradflow.resume import (
    RESUME_KEY,
    checkpoint_progress,
    finished_summary,
    last_checkpoint,
    record_resume,
)
from gradflow.validation import validate_config

log = logging.getLogger(__name__)
# Lightning compares log_every_n_steps with its batch count, which counts Blocks
# (gradflow/blocks.py); the diagnostics count optimizer steps, so the advice is wrong here.
warnings.filterwarnings(
    "ignore", message=r"The number of training batches \(\d+\) is smaller than the logging"
)

SUMMARY_FILE = "summary.json"
TENSORBOARD_FLAGS = "--samples_per_plugin histograms=0,images=0"


class RunRecord(L.Callback):
    """Wall time of each epoch (training and its validation) and the latest metrics.

    Both are saved in the checkpoint (Lightning asks callbacks for their state after the
    epoch-end hooks), so a resumed run reports every epoch's time once, and its metrics
    even when the checkpoint left nothing to train.
    """

    def __init__(self) -> None:
        self.epoch_s: list[float] = []
        self.metrics: dict[str, float | None] = {}
        self._start = 0.0

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.epoch_s.append(round(time.perf_counter() - self._start, 4))
        self.metrics = run_metrics(trainer)

    def state_dict(self) -> dict[str, Any]:
        return {"epoch_s": list(self.epoch_s), "metrics": dict(self.metrics)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.epoch_s = list(state_dict.get("epoch_s", []))
        self.metrics = dict(state_dict.get("metrics", {}))


def run_metrics(trainer: L.Trainer) -> dict[str, float | None]:
    """The trainer's latest metrics as numbers, without the x-axis keys (`step`, `epoch`)
    that ClassifierModule logs for the loggers."""
    return {k: _scalar(v) for k, v in trainer.callback_metrics.items() if k not in AXIS_METRICS}


def instantiate_group(group: DictConfig | None) -> list[Any]:
    """Every entry of a group (callbacks, logger) that has a `_target_`, in order."""
    if not group:
        return []
    return [instantiate(node) for node in group.values() if "_target_" in node]


def instantiate_loggers(group: DictConfig | None, purge_step: int | None) -> list[Logger]:
    """The logger group; TensorBoard loggers get `purge_step` when the run is continued.

    TensorBoard then hides what an earlier attempt logged at steps >= purge_step (the
    partial epoch a kill interrupted), so re-run steps are not drawn twice.
    """
    loggers = []
    for node in (group or {}).values():
        if "_target_" not in node:
            continue
        resumes = purge_step is not None and issubclass(get_class(node._target_), TensorBoardLogger)
        loggers.append(instantiate(node, **({"purge_step": purge_step} if resumes else {})))
    return loggers


def watched() -> bool:
    """Whether someone can watch a progress bar: stderr is a terminal and the job runs in
    this process (a parallel launcher's workers share the terminal; SLURM writes to files)."""
    if not sys.stderr.isatty():
        return False
    if HydraConfig.initialized():
        launcher = str(HydraConfig.get().launcher.get("_target_", ""))
        return HydraConfig.get().mode.name != "MULTIRUN" or launcher.endswith("BasicLauncher")
    return True


def progress_bar(cfg: DictConfig) -> tuple[bool, list[L.Callback]]:
    """Whether to show a bar (the trainer enables one and it is watched) and, if so, the
    `cfg.progress_bar` callback (none: Lightning's default bar)."""
    show = bool(cfg.trainer.get("enable_progress_bar", True)) and watched()
    return show, [instantiate(cfg.progress_bar)] if show and cfg.get("progress_bar") else []


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
    write_text_atomic(path, json.dumps(data, indent=2, default=_json_default) + "\n")


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


def _restore_ctrl_c() -> None:
    """Lightning ignores SIGINT after its graceful shutdown; let the next Ctrl-C work again."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.default_int_handler)


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
    resuming = cfg.get(RESUME_KEY) is not None
    finished = finished_summary(run_dir, cfg.trainer.get("max_epochs")) if resuming else None
    if finished is not None:
        log.info("%s already %s: nothing to resume.", run_dir, finished["status"])
        record_resume(run_dir, cfg, _overrides())  # Hydra rewrote .hydra/ for this call
        return finished
    summary: dict[str, Any] = {
        "status": "failed",
        "error": None,
        "run_dir": str(run_dir),
        "overrides": [o for o in _overrides() if override_key(o) != RESUME_KEY],
        "task_name": cfg.get("task_name"),
        "tags": list(cfg.get("tags") or []),
        "config": OmegaConf.to_container(cfg, resolve=True),
        "version": gradflow.__version__,
        "git_commit": git_commit(project_root()),
    }
    record = RunRecord()
    trainer: L.Trainer | None = None
    datamodule = None
    loggers: list[Logger] = []
    callbacks: list[L.Callback] = []
    try:
        validate_config(cfg)
        ckpt_path = cfg.get("ckpt_path") or (last_checkpoint(run_dir) if resuming else None)
        purge_step = None
        if ckpt_path is not None:
            epochs_done, purge_step = checkpoint_progress(Path(ckpt_path))
            summary["resumed_from"] = {
                "checkpoint": str(ckpt_path),
                "epochs": epochs_done,
                "steps": purge_step,
            }
        if resuming:
            summary["overrides"] = record_resume(run_dir, cfg, _overrides())
            if ckpt_path is None:
                log.warning("%s has no checkpoint to continue from: starting over.", run_dir)
            purge_step = purge_step or 0  # no checkpoint: start over, hiding the old events
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
            net,
            instantiate(cfg.optimizer),
            num_classes=cfg.model.num_classes,
            # Under manual optimization the module clips (Lightning refuses the Trainer's).
            gradient_clip_val=cfg.trainer.get("gradient_clip_val"),
            gradient_clip_algorithm=cfg.trainer.get("gradient_clip_algorithm") or "norm",
        )
        callbacks = instantiate_group(cfg.get("callbacks"))
        checkpoints = instantiate_group(cfg.get("checkpoint"))
        use_c_checksums()  # TensorBoard's per-record CRC in C: gradflow/event_checksums.py
        loggers = instantiate_loggers(cfg.get("logger"), purge_step)
        show_bar, bar = progress_bar(cfg)
        trainer = instantiate(
            cfg.trainer,
            callbacks=[*callbacks, *checkpoints, *bar, record],
            logger=loggers or False,
            enable_progress_bar=show_bar,
            gradient_clip_val=None,
            gradient_clip_algorithm=None,
            # The checkpoint group decides; Lightning refuses a ModelCheckpoint otherwise.
            **({"enable_checkpointing": True} if checkpoints else {}),
        )
        summary["timing"] = {"setup_s": round(time.perf_counter() - t_start, 3)}
        # weights_only=False: the checkpoint holds the optimizer partial; it is our own file.
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=False)
        summary["status"] = "completed"
    except (KeyboardInterrupt, SystemExit) as err:
        # Lightning turns Ctrl-C into a graceful shutdown and then exit(1).
        if isinstance(err, SystemExit) and not (trainer is not None and trainer.interrupted):
            raise
        summary.update(status="interrupted", error="interrupted by the user (Ctrl-C)")
        _restore_ctrl_c()
    except Exception as err:  # noqa: BLE001 - recorded; the caller decides the exit code
        cause = _gradflow_cause(err)
        if isinstance(cause, DivergedError):
            summary.update(status="diverged", error=str(cause))
        elif cause is not None:  # a known fault: its one sentence is the whole story
            summary.update(status="failed", error=str(cause))
        else:
            summary.update(status="failed", error=f"{type(err).__name__}: {err}")
            log.exception("run failed")

    current = run_metrics(trainer) if trainer else {}
    metrics = {**record.metrics, **current}  # the checkpoint's, where this call logged none
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
    total_s = round(time.perf_counter() - t_start, 3)
    summary["timing"].update(epoch_s=record.epoch_s, total_s=total_s)
    source = getattr(datamodule, "source_info", None) if datamodule is not None else None
    summary["data"] = source
    checkpoint = last_checkpoint(run_dir)
    summary["checkpoint"] = str(checkpoint) if checkpoint else None
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
    if summary["status"] in ("interrupted", "failed") and summary.get("checkpoint"):
        lines.append(
            f"continue: python scripts/train.py {shlex.quote('resume=' + summary['run_dir'])}"
        )
    return "\n".join(lines)
