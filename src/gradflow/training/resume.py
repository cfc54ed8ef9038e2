"""Continue a run, or relaunch a sweep, in the directory it already has.

`python scripts/train.py resume=<run dir>` composes the run's saved config
(`<run dir>/.hydra/config.yaml`) plus any command-line overrides, writes into the same
directory and continues from `checkpoints/last.ckpt`. With `-m`, `resume=<sweep dir>`
relaunches the sweep saved in `<sweep dir>/multirun.yaml` into the same job directories:
a job that completed or diverged is skipped (its summary is returned), the others
continue from their checkpoint or start. `resume_argv` turns the command line into the
Hydra arguments that do this; the run asks `resume_point` where to start.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf

from gradflow.config import config_dir, hydra_quote, override_key, write_text_atomic
from gradflow.errors import ConfigError
from gradflow.names import (
    CHECKPOINT_DIR,
    COMPLETED,
    FINISHED,
    HYDRA_DIR,
    LAST_CHECKPOINT,
    SUMMARY_FILE,
    SWEEP_FILE,
)

log = logging.getLogger(__name__)
RESUME_KEY = "resume"
_MULTIRUN_FLAGS = ("-m", "--multirun")
# What a resumed run may change (README, "Continue a killed or interrupted run"): how long it
# trains, what it records and how, where its files are, and the learning rate from the
# resume on. Anything else would make it another run, which `ckpt_path=` starts.
RESUMABLE = (
    "trainer.max_epochs",
    "trainer.max_steps",
    "trainer.log_every_n_steps",
    "trainer.check_val_every_n_epoch",
    "trainer.enable_progress_bar",
    "optimizer.lr",
    "callbacks",
    "checkpoint",
    "logger",
    "progress_bar",
    "torch_threads",
    "paths",
    "data.data_dir",
    "data.download",
    "data.offline_fallback",
    "tags",
    "task_name",
    RESUME_KEY,
)


@dataclass(frozen=True)
class ResumePoint:
    """Where a run starts: a checkpoint to continue from (None: from scratch) and the first
    step TensorBoard should show anew (None: a new run, nothing to hide)."""

    checkpoint: Path | None = None
    purge_step: int | None = None
    # For summary.json: {"checkpoint", "epochs", "steps"} of the checkpoint, or None.
    resumed_from: dict[str, Any] | None = None

    @property
    def steps(self) -> int:
        """Optimizer steps the checkpoint took (0 without one)."""
        return self.resumed_from["steps"] if self.resumed_from else 0


def resume_point(cfg: DictConfig, run_dir: Path) -> ResumePoint:
    """The checkpoint `cfg` continues from: `ckpt_path`, else (with `resume`) the run's last.

    A continued run hides what an earlier attempt logged at or after the checkpoint's step
    (the partial epoch a kill interrupted), so re-run steps are not drawn twice; a resumed
    run without a checkpoint starts over and hides all of it.
    """
    resuming = cfg.get(RESUME_KEY) is not None
    checkpoint = cfg.get("ckpt_path") or (last_checkpoint(run_dir) if resuming else None)
    if checkpoint is None:
        if resuming:
            log.warning("%s has no checkpoint to continue from: starting over.", run_dir)
        return ResumePoint(purge_step=0 if resuming else None)
    key = "ckpt_path" if cfg.get("ckpt_path") else RESUME_KEY
    epochs, steps = checkpoint_progress(Path(checkpoint), key)
    origin = {"checkpoint": str(checkpoint), "epochs": epochs, "steps": steps}
    return ResumePoint(Path(checkpoint), steps, origin)


def last_checkpoint(run_dir: Path) -> Path | None:
    """The run's end-of-epoch checkpoint, if it has one."""
    path = run_dir / CHECKPOINT_DIR / LAST_CHECKPOINT
    return path if path.is_file() else None


def checkpoint_progress(path: Path, key: str = "ckpt_path") -> tuple[int, int]:
    """(epochs completed, optimizer steps taken) recorded in a Lightning checkpoint; a
    ConfigError naming `key` when `path` is not one."""
    import torch  # here: scripts/train.py imports this module before torch is needed

    try:
        # A file a gradflow run wrote: it holds the optimizer partial, not only tensors.
        checkpoint = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
        return int(checkpoint["epoch"]) + 1, int(checkpoint["global_step"])
    except Exception:  # noqa: BLE001 - whatever torch.load says, it is not a checkpoint
        raise ConfigError(
            key,
            str(path),
            f"{path.name} is not a Lightning checkpoint (torch.load cannot read one from it); "
            f"give one a gradflow run wrote, such as <run dir>/{CHECKPOINT_DIR}/{LAST_CHECKPOINT}",
        ) from None


def finished_summary(run_dir: Path, max_epochs: int | None) -> dict[str, Any] | None:
    """The run's summary when it needs no more training: diverged, or completed enough epochs."""
    try:
        summary = json.loads((run_dir / SUMMARY_FILE).read_text())
    except (OSError, ValueError):
        return None
    status = summary.get("status")
    if status not in FINISHED:
        return None
    if status == COMPLETED and max_epochs not in (None, -1):
        return summary if summary.get("epochs", 0) >= max_epochs else None
    return summary


def resume_changes(run_dir: Path, cfg: DictConfig, step: int) -> list[dict[str, Any]]:
    """What `cfg` changes of the run saved in `run_dir`, each `{key, was, now, from_step}`;
    a ConfigError names the first change a resumed run may not make (see RESUMABLE)."""
    saved_file = run_dir / HYDRA_DIR / "config.yaml"
    if not saved_file.is_file():
        return []
    was = _flat(OmegaConf.to_container(OmegaConf.load(saved_file), resolve=False))
    now = _flat(OmegaConf.to_container(cfg, resolve=False))
    changes = []
    for key in [*now, *(k for k in was if k not in now)]:
        if was.get(key) == now.get(key) or key == RESUME_KEY:  # how it is called, not what
            continue
        if not key.startswith(RESUMABLE):
            ckpt = last_checkpoint(run_dir) or f"{run_dir}/{CHECKPOINT_DIR}/{LAST_CHECKPOINT}"
            raise ConfigError(
                key,
                now.get(key),
                f"a resumed run keeps the config it started with ({key}={was.get(key)!r}); "
                f"to change it, start a new run from the checkpoint: ckpt_path={ckpt}",
            )
        changes.append({"key": key, "was": was.get(key), "now": now.get(key), "from_step": step})
    return changes


def _flat(node: Any, prefix: str = "") -> dict[str, Any]:
    """A nested config as {dotted key: leaf value}."""
    if not isinstance(node, dict):
        return {prefix: node}
    flat: dict[str, Any] = {}
    for key, value in node.items():
        flat.update(_flat(value, f"{prefix}{key}" if not prefix else f"{prefix}.{key}"))
    return flat


# --------------------------------------------------------------------------- overrides


def merge_overrides(old: Sequence[str], new: Sequence[str]) -> list[str]:
    """`old` with each key that `new` sets replaced in place, then new keys; no `resume`."""
    by_key = {override_key(o): o for o in new if override_key(o) != RESUME_KEY}
    merged = [by_key.pop(override_key(o), o) for o in old if override_key(o) != RESUME_KEY]
    return merged + list(by_key.values())


def record_resume(run_dir: Path, cfg: DictConfig, overrides: Sequence[str]) -> list[str]:
    """Bring `<run dir>/.hydra` up to date for a resumed run; return all its overrides.

    The saved config becomes this run's config (with `resume` cleared), and the saved
    overrides gain the new ones, so the run dir describes the whole run, not the last call.
    """
    hydra_dir = run_dir / HYDRA_DIR
    old: list[str] = []
    if (hydra_dir / "overrides.yaml").is_file():
        old = [str(o) for o in yaml.safe_load((hydra_dir / "overrides.yaml").read_text()) or []]
    merged = merge_overrides(old, overrides)
    if hydra_dir.is_dir():
        config = OmegaConf.to_container(cfg, resolve=False)
        config[RESUME_KEY] = None
        write_text_atomic(hydra_dir / "config.yaml", OmegaConf.to_yaml(OmegaConf.create(config)))
        write_text_atomic(hydra_dir / "overrides.yaml", yaml.safe_dump(merged, sort_keys=False))
    return merged


# ---------------------------------------------------------------------- command line


def resume_argv(argv: Sequence[str]) -> list[str]:
    """Rewrite `resume=<dir>` on a command line into the Hydra arguments that continue it.

    Raises ConfigError when <dir> is not what `resume` needs (a run, or with -m a sweep).
    """
    args = list(argv[1:])
    found = [i for i, a in enumerate(args) if "=" in a and override_key(a) == RESUME_KEY]
    if not found:
        return list(argv)
    raw = args[found[-1]].split("=", 1)[1].strip().strip("'\"")
    rest = [a for i, a in enumerate(args) if i not in found]
    if raw in ("", "null"):
        return [argv[0], *rest]
    target = Path(raw).expanduser().resolve()
    if not target.is_dir():
        raise ConfigError(RESUME_KEY, raw, "there is no such directory")
    if any(flag in rest for flag in _MULTIRUN_FLAGS):
        return [argv[0], *_sweep_args(raw, target, rest)]
    return [argv[0], *_run_args(raw, target, rest)]


def _run_args(raw: str, run_dir: Path, rest: list[str]) -> list[str]:
    if (run_dir / SWEEP_FILE).is_file():
        raise ConfigError(
            RESUME_KEY,
            raw,
            "it is a sweep directory, so add -m to relaunch the sweep, or give one of its job "
            "directories to continue that job",
        )
    if not (run_dir / HYDRA_DIR / "config.yaml").is_file():
        raise ConfigError(
            RESUME_KEY,
            raw,
            f"it is not a run directory (it has no {HYDRA_DIR}/config.yaml); give the "
            "directory of a run, logs/runs/<date>/<run>",
        )
    # Flags first: argparse stops collecting overrides at the first flag after them. The
    # saved config has no defaults list, so Hydra's own settings come from conf/ again
    # (`hydra=default`: gradflow's console and log file, its Hydra callbacks).
    return [
        "--config-path",
        str(run_dir / HYDRA_DIR),
        "--config-name",
        "config",
        "--config-dir",
        str(config_dir()),
        "+hydra=default",
        *rest,
        f"hydra.run.dir={hydra_quote(run_dir)}",
        "hydra.output_subdir=null",  # train.run updates .hydra/ itself, keeping the history
        f"++{RESUME_KEY}={hydra_quote(run_dir)}",
    ]


def _sweep_args(raw: str, sweep_dir: Path, rest: list[str]) -> list[str]:
    saved_file = sweep_dir / SWEEP_FILE
    if not saved_file.is_file():
        raise ConfigError(
            RESUME_KEY,
            raw,
            f"with -m it must be a sweep directory, and this one has no {SWEEP_FILE}; give the "
            "directory the sweep wrote, e.g. logs/multiruns/<date>/<time>",
        )
    saved_hydra = OmegaConf.to_container(OmegaConf.load(saved_file).hydra, resolve=False)
    saved = OmegaConf.create(saved_hydra["overrides"])
    task = [o for o in saved.task if override_key(o) != RESUME_KEY]
    flags = [a for a in rest if a.startswith("-")]
    new_task = [a for a in rest if not a.startswith("-") and not _is_hydra(a)]
    changed = [o for o in new_task if o not in task]
    if changed:
        key, _, value = changed[0].partition("=")
        raise ConfigError(
            key,
            value,
            f"resume={raw} relaunches the sweep with the arguments it was started with "
            f"({' '.join(task)}); start a new sweep instead",
        )
    ignore = {"hydra.sweep.dir", "hydra.sweep.subdir", "hydra.run.dir", "hydra.mode"}
    hydra_saved = [o for o in saved.hydra if override_key(o) not in ignore]
    hydra_new = [a for a in rest if not a.startswith("-") and _is_hydra(a)]
    return [
        *flags,
        *task,
        *merge_overrides(hydra_saved, hydra_new),
        f"hydra.sweep.dir={hydra_quote(sweep_dir)}",
        # The job directories' names as the sweep made them, whatever the config says now.
        f"hydra.sweep.subdir={hydra_quote(saved_hydra['sweep']['subdir'])}",
        f"++{RESUME_KEY}={hydra_quote(sweep_dir)}",
    ]


def _is_hydra(override: str) -> bool:
    key = override_key(override)
    return key.startswith(("hydra.", "hydra/")) or key == "hydra"
