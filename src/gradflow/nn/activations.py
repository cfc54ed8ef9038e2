"""The activation registry: one source of truth for every activation gradflow knows.

Its names and parameters (what a config may say) live in `gradflow.rules.nn`, without
torch, so a bad value fails before torch loads; this half adds what torch builds.

Models build their nonlinearities from it, the diagnostics read each activation's
maximum slope from it (saturation is |f'(z)| < 0.1 * max|f'|), the init schemes read
the matching Kaiming nonlinearity, and the plots draw f and f' from it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Any, Literal

import torch
from torch import nn

from gradflow.checks import joined
from gradflow.rules.nn import ACTIVATION_PARAMS, activation_name, activation_params, split_spec

# How an activation flattens: on both sides (sigmoid, tanh: a unit can be stuck high
# or low), on one side (ReLU family: a flat unit is merely inactive), or never.
Saturation = Literal["two_sided", "one_sided", "none"]


@dataclass(frozen=True)
class ActivationInfo:
    """What the rest of gradflow needs to know about one activation."""

    name: str
    factory: Callable[..., nn.Module]
    saturation: Saturation
    kaiming_nonlinearity: str  # torch.nn.init.calculate_gain name for He init
    recommended_init: str  # the init scheme that keeps signals stable for it
    defaults: Mapping[str, Any] = field(default_factory=dict)

    def build(self, **params: Any) -> nn.Module:
        return self.factory(**{**self.defaults, **params})


def _register(*infos: ActivationInfo) -> dict[str, ActivationInfo]:
    """The registry, each activation's parameters and defaults from `ACTIVATION_PARAMS`."""
    registry = {info.name: replace(info, defaults=ACTIVATION_PARAMS[info.name]) for info in infos}
    joined(registry, ACTIVATION_PARAMS, "the activation registry")
    return registry


ACTIVATIONS: dict[str, ActivationInfo] = _register(
    ActivationInfo("sigmoid", nn.Sigmoid, "two_sided", "sigmoid", "xavier_uniform"),
    ActivationInfo("tanh", nn.Tanh, "two_sided", "tanh", "xavier_uniform"),
    ActivationInfo("relu", nn.ReLU, "one_sided", "relu", "kaiming_normal"),
    ActivationInfo("leaky_relu", nn.LeakyReLU, "one_sided", "leaky_relu", "kaiming_normal"),
    ActivationInfo("elu", nn.ELU, "one_sided", "relu", "kaiming_normal"),
    ActivationInfo("selu", nn.SELU, "one_sided", "linear", "lecun_normal"),
    ActivationInfo("gelu", nn.GELU, "one_sided", "relu", "kaiming_normal"),
    ActivationInfo("silu", nn.SiLU, "one_sided", "relu", "kaiming_normal"),
    ActivationInfo("softplus", nn.Softplus, "one_sided", "relu", "kaiming_normal"),
    ActivationInfo("identity", nn.Identity, "none", "linear", "xavier_uniform"),
)


def get_activation_info(spec: str | Mapping[str, Any]) -> ActivationInfo:
    """Look up an activation by name (or by a `{name: ..., **params}` mapping)."""
    return ACTIVATIONS[activation_name(spec)]


def build_activation(spec: str | Mapping[str, Any]) -> nn.Module:
    """A fresh activation module from a name or `{name: ..., **params}` mapping."""
    name, _ = split_spec(spec)
    return get_activation_info(name).build(**activation_params(spec))


@lru_cache(maxsize=64)
def _max_abs_derivative(name: str, frozen_params: tuple[tuple[str, Any], ...]) -> float:
    module = build_activation({"name": name, **dict(frozen_params)})
    # A dense grid that contains 0 exactly, where several maxima (sigmoid, ELU) sit.
    z = torch.linspace(-30.0, 30.0, 600_001, dtype=torch.float64, requires_grad=True)
    (slope,) = torch.autograd.grad(module(z).sum(), z)
    return float(slope.abs().max())


def max_abs_derivative(spec: str | Mapping[str, Any]) -> float:
    """max over z of |f'(z)|, measured once on a fine grid (0.25 for sigmoid)."""
    name, _ = split_spec(spec)
    params = activation_params(spec)
    return _max_abs_derivative(name, tuple(sorted(params.items())))


ActivationSpec = str | Mapping[str, Any]


@lru_cache(maxsize=64)
def _output_bounds(name: str, frozen_params: tuple[tuple[str, Any], ...]) -> tuple[float, float]:
    module = build_activation({"name": name, **dict(frozen_params)})
    with torch.no_grad():
        out = module(torch.linspace(-30.0, 30.0, 60_001, dtype=torch.float64))
    low, high = float(out.min()), float(out.max())
    # Still growing at the grid's end (beyond 20 in size): unbounded on that side.
    return (-math.inf if low < -20 else low), (math.inf if high > 20 else high)


def output_bounds(spec: ActivationSpec) -> tuple[float, float]:
    """The activation's range of outputs: (0, 1) for sigmoid, (0, inf) for ReLU."""
    name, _ = split_spec(spec)
    return _output_bounds(name, tuple(sorted(activation_params(spec).items())))


def derivative(spec: str | Mapping[str, Any], z: torch.Tensor) -> torch.Tensor:
    """f'(z) elementwise, through autograd so it is exact for every registered f."""
    module = build_activation(spec)
    z = z.detach().requires_grad_(True)
    (slope,) = torch.autograd.grad(module(z).sum(), z)
    return slope


# A unit is saturated on a sample when |f'(z)| < SATURATION_SLOPE * max|f'|: the diagnostics'
# act_saturated and act_dead, and the shaded band of the activation plots.
SATURATION_SLOPE = 0.1


def saturation_mask(spec: str | Mapping[str, Any], z: torch.Tensor) -> torch.Tensor:
    """True where the activation's slope at z is under SATURATION_SLOPE of its maximum."""
    with torch.enable_grad():  # the registry's f' goes through autograd
        slope = derivative(spec, z)
    return slope.abs() < SATURATION_SLOPE * max_abs_derivative(spec)
