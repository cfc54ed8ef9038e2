"""Which jobs of a sweep can train as one population, and what the launcher hands over.

Light to import (no torch, no Lightning): Hydra imports the population launcher, which
uses this, at every start. The training itself is `gradflow.training.population`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

# What members of one population may differ in: each member builds its own network
# (seed, init), follows its own batch order (data.shuffle_seed) and has its own optimizer
# param groups, so every optimizer setting but its class is per member. Where each run
# writes (paths) and how it is labelled (task_name, tags) differ freely too.
STACKABLE_KEYS = ("seed", "data.shuffle_seed", "init", "optimizer", "paths", "task_name", "tags")
# ...except these, the same for all: one optimizer class for the population.
SHARED_WITHIN_STACKABLE = ("optimizer._target_", "optimizer._partial_")


@dataclass
class Member:
    """One job of a population: its resolved config (no `hydra` node), its run directory,
    its command-line overrides (as summary.json records them) and, from a launcher, its
    config as composed (interpolations kept): what a resumed run compares with the config
    it saved, and saves again."""

    cfg: DictConfig
    run_dir: Path
    overrides: list[str] = field(default_factory=list)
    composed: DictConfig | None = None


def population_key(cfg: DictConfig) -> str | None:
    """A string equal for two configs exactly when their jobs can train as one population:
    the config with the stackable keys taken out (unresolved, so paths do not matter).
    None for a job that trains alone: one that starts from a checkpoint of its own run
    (`ckpt_path`), or whose data is not kept on the device (`data.preload=false`: a
    population slices every member's batch out of the same tensors)."""
    if cfg.get("ckpt_path") is not None or not cfg.data.get("preload", True):
        return None
    container: dict[str, Any] = OmegaConf.to_container(cfg, resolve=False)
    container.pop("hydra", None)
    kept = {key: _get(container, key) for key in SHARED_WITHIN_STACKABLE}
    for key in STACKABLE_KEYS:
        _pop(container, key)
    container["__shared__"] = kept
    return json.dumps(container, sort_keys=True, default=str)


def _get(tree: dict[str, Any], dotted: str) -> Any:
    node: Any = tree
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _pop(tree: dict[str, Any], dotted: str) -> None:
    *parents, last = dotted.split(".")
    node: Any = tree
    for part in parents:
        if not isinstance(node, dict) or part not in node:
            return
        node = node[part]
    if isinstance(node, dict):
        node.pop(last, None)
