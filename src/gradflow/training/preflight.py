"""The checks no constructor of gradflow's can make, run on the composed config first.

Every value rule of gradflow's own classes is a torch-free function in `gradflow.rules`,
called by their constructors (and by `scripts/train.py` before torch loads); Hydra rejects
an unknown group option (`activation=sigmoidd`) or key (`model.depthh=3`) itself. What is
left is checked here, each in one sentence (`ConfigError`):

- what spans a node: each `_target_` names a class of the kind its group needs, and every
  key of the node is one of its parameters (Hydra would pass them all): this needs the
  class imported;
- the machine: the accelerator asked for is there;
- the values gradflow relies on from third-party constructors (torch's optimizers,
  Lightning's Trainer) and the disk (the run or checkpoint to continue from exists): their
  rules are in `gradflow.rules.training`, run here again for a run started in-process.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any

import torch
from omegaconf import DictConfig

from gradflow.config import config_dir
from gradflow.data import TensorDataModule
from gradflow.errors import ConfigError
from gradflow.nn.models import TrackedModel
from gradflow.rules.training import optimizer_values, paths_exist, trainer_values

CUDA_ACCELERATORS = ("gpu", "cuda")
# The kind of class each group's `_target_` must name, and how to say it.
TARGET_KINDS = {
    "model": (TrackedModel, "a TrackedModel class"),
    "data": (TensorDataModule, "a TensorDataModule class"),
    "optimizer": (torch.optim.Optimizer, "a torch.optim.Optimizer class such as torch.optim.AdamW"),
}


def check(cfg: DictConfig) -> None:
    """Raise ConfigError, in one sentence, on the first problem the constructors cannot see."""
    for group, (base, kind) in TARGET_KINDS.items():
        _check_node(group, cfg[group], base, kind)
    optimizer_values(cfg.optimizer)
    _check_accelerator(cfg.trainer)
    trainer_values(cfg.trainer)
    paths_exist(cfg)


def group_options(group: str) -> str:
    """The options of a config group (the YAML files in conf/<group>/) as 'g=a, g=b or g=c'."""
    options = [f"{group}={p.stem}" for p in sorted((config_dir() / group).glob("*.yaml"))]
    return ", ".join(options[:-1]) + " or " + options[-1] if len(options) > 1 else "".join(options)


def _import_path(path: str) -> Any:
    """The object at a dotted path ('torch.optim.SGD'), or None when there is none."""
    parts = path.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attr in parts[cut:]:
            obj = getattr(obj, attr, None)
        return obj
    return None


def _check_node(group: str, node: DictConfig, base: type, kind: str) -> None:
    target = node.get("_target_")
    cls = _import_path(str(target)) if target else None
    if not (isinstance(cls, type) and issubclass(cls, base)):
        raise ConfigError(
            f"{group}._target_", target, f"use {group_options(group)}, or the path of {kind}"
        )
    params = inspect.signature(cls).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    for key, value in node.items():
        if not str(key).startswith("_") and key not in params:
            names = ", ".join(p for p in params if p not in ("self", "params"))
            raise ConfigError(
                f"{group}.{key}",
                value,
                f"{cls.__name__} has no such parameter; its parameters are {names}",
            )


def _check_accelerator(trainer: DictConfig) -> None:
    accelerator = str(trainer.get("accelerator", "auto")).lower()
    if accelerator in CUDA_ACCELERATORS and not torch.cuda.is_available():
        raise ConfigError(
            "trainer.accelerator",
            trainer.accelerator,
            "this machine has no CUDA GPU that torch can use, so use trainer=cpu",
        )
    if accelerator == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(
            "trainer.accelerator", trainer.accelerator, "MPS is not available, use trainer=cpu"
        )
