"""The run's own values and the third-party values gradflow relies on, without torch.

`seed` and `torch_threads` are the run's (`training.run.seed_and_threads` uses them); torch's
optimizers and Lightning's Trainer check few of theirs, so the values gradflow relies on
are checked here (`training.preflight` calls these too, when a run is started in-process).
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from gradflow.checks import number, one_of, whole
from gradflow.errors import ConfigError

CLIP_ALGORITHMS = ("norm", "value")


def seed(cfg: DictConfig) -> int:
    """The run's seed: init and batch order."""
    return whole("seed", cfg.seed, minimum=0)


def torch_threads(cfg: DictConfig) -> int | None:
    """torch's CPU threads for the run (None: torch's default)."""
    if cfg.get("torch_threads") is None:
        return None
    return whole("torch_threads", cfg.torch_threads, null="for torch's default")


def optimizer_values(optimizer: DictConfig) -> None:
    """The learning rate, whichever torch optimizer takes it."""
    if "lr" in optimizer:
        number("optimizer.lr", optimizer.lr, what="the learning rate")


def trainer_values(trainer: DictConfig) -> None:
    """How long the Trainer trains and how it clips."""
    epochs = trainer.get("max_epochs")
    if epochs is not None and epochs != -1:
        whole("trainer.max_epochs", epochs, what="or -1 for no limit")
    if trainer.get("gradient_clip_val") is not None:
        number("trainer.gradient_clip_val", trainer.gradient_clip_val, null="for no clipping")
    if trainer.get("gradient_clip_algorithm") is not None:
        one_of("trainer.gradient_clip_algorithm", trainer.gradient_clip_algorithm, CLIP_ALGORITHMS)


def paths_exist(cfg: DictConfig) -> None:
    """The run (or sweep) to resume and the checkpoint to start from exist."""
    if cfg.get("resume") is not None and not Path(cfg.resume).is_dir():
        raise ConfigError("resume", cfg.resume, "it is not a run (or sweep) directory that exists")
    if cfg.get("ckpt_path") is not None and not Path(cfg.ckpt_path).is_file():
        raise ConfigError("ckpt_path", cfg.ckpt_path, "it is not a checkpoint file that exists")
