"""Every value rule of a run, checked on its composed config before torch is imported.

A rule is a torch-free function of a class's keyword values that raises a one-sentence
ConfigError naming the key (`gradflow.checks`); the class's constructor calls it, so the
rule, its message and its key are written once. `RULES` maps a node's `_target_` to its
class's rules without importing the class, and `check` runs them on a config in the order
a run builds it, naming each key by its node (`model.` + `depth`, as `ConfigError.under`
does for a constructor). `scripts/train.py` calls `check` before it imports torch and
Lightning, so a bad value fails within a second; a node whose `_target_` has no rules here
(torch's optimizers, Lightning's callbacks) is checked when it is built.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from gradflow.errors import ConfigError
from gradflow.rules import training
from gradflow.rules.data import data_module_rules, mnist_rules, regression_rules, xor_rules
from gradflow.rules.diagnostics import (
    activation_monitor_rules,
    gradient_monitor_rules,
    verdict_monitor_rules,
)
from gradflow.rules.nn import activation_params, bn_mlp_rules, init_params, mlp_rules, res_mlp_rules

Rule = Callable[..., Any]


def _at(package: str, module: str, name: str, *rules: Rule) -> dict[str, tuple[Rule, ...]]:
    """The rules of `package.module.name`, by both paths a `_target_` may name it."""
    return {f"{package}.{name}": rules, f"{package}.{module}.{name}": rules}


# A class's rules, in the order its constructor calls them.
RULES: dict[str, tuple[Rule, ...]] = {
    **_at("gradflow.nn", "models", "MLP", mlp_rules),
    **_at("gradflow.nn", "models", "BNMLP", bn_mlp_rules, mlp_rules),
    **_at("gradflow.nn", "models", "ResMLP", res_mlp_rules),
    **_at("gradflow.data", "mnist", "MNISTDataModule", data_module_rules, mnist_rules),
    **_at("gradflow.data", "xor", "XORDataModule", data_module_rules, xor_rules),
    **_at(
        "gradflow.data", "regression", "RegressionDataModule", data_module_rules, regression_rules
    ),
    **_at("gradflow.diagnostics", "gradients", "GradientMonitor", gradient_monitor_rules),
    **_at("gradflow.diagnostics", "activations", "ActivationMonitor", activation_monitor_rules),
    **_at("gradflow.diagnostics", "verdict_monitor", "VerdictMonitor", verdict_monitor_rules),
}
# Groups that hold several nodes, each with its own `_target_`.
COLLECTIONS = ("callbacks", "checkpoint", "logger")


def check(cfg: DictConfig) -> None:
    """Raise the ConfigError the run would raise for a value of `cfg`, the same sentence,
    in the order the run checks them (`training.run.run`), without importing torch."""
    training.optimizer_values(cfg.optimizer)
    training.trainer_values(cfg.trainer)
    training.paths_exist(cfg)
    training.torch_threads(cfg)
    training.seed(cfg)
    check_node("data", cfg.data)
    for key, rule in (("activation", activation_params), ("init", init_params)):
        with named(key):
            rule(OmegaConf.to_container(cfg[key], resolve=True))
    check_node("model", cfg.model)
    for group in COLLECTIONS:
        for name, node in (cfg.get(group) or {}).items():
            check_node(f"{group}.{name}", node)


def check_node(key: str, node: Any) -> None:
    """Run the rules of the class `node._target_` names on the node's values."""
    target = node.get("_target_") if isinstance(node, DictConfig) else None
    for rule in RULES.get(str(target), ()):
        values = _values(rule, node)
        if values is not None:
            with named(key):
                rule(**values)


def _values(rule: Rule, node: DictConfig) -> dict[str, Any] | None:
    """The node's values of the rule's parameters, as plain Python; None when the node
    leaves one to the constructor's default or cannot resolve one (checked when built)."""
    values = {}
    for name, param in inspect.signature(rule).parameters.items():
        if name not in node:
            if param.default is param.empty:
                return None
            continue
        try:
            value = node[name]
        except OmegaConfBaseException:
            return None
        values[name] = (
            OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value
        )
    return values


@contextmanager
def named(key: str) -> Iterator[None]:
    """A ConfigError raised in the block names its key under the node at `key`."""
    try:
        yield
    except ConfigError as err:
        raise err.under(key) from None
