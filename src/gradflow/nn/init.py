"""Weight initialisation schemes, by name, matched to the activation that follows.

Each scheme sets a Linear layer's weight; biases are zeroed (as Keras does) except
under `default`, which keeps PyTorch's own U(±1/sqrt(fan_in)) weights and biases.
The output layer, which no activation follows, gets the scheme with a linear gain.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from torch import nn

from gradflow.checks import check_params, number, one_of
from gradflow.nn.activations import ActivationInfo, activation_params, split_spec

WeightInit = Callable[[nn.Linear, str, float, dict[str, Any]], None]


def _default(layer: nn.Linear, nonlinearity: str, slope: float, _: dict[str, Any]) -> None:
    layer.reset_parameters()


def _xavier_uniform(layer: nn.Linear, *_: Any) -> None:
    nn.init.xavier_uniform_(layer.weight)


def _xavier_normal(layer: nn.Linear, *_: Any) -> None:
    nn.init.xavier_normal_(layer.weight)


def _kaiming_uniform(layer: nn.Linear, nonlinearity: str, slope: float, _: Any) -> None:
    nn.init.kaiming_uniform_(layer.weight, a=slope, nonlinearity=nonlinearity)


def _kaiming_normal(layer: nn.Linear, nonlinearity: str, slope: float, _: Any) -> None:
    nn.init.kaiming_normal_(layer.weight, a=slope, nonlinearity=nonlinearity)


def _lecun_normal(layer: nn.Linear, *_: Any) -> None:
    nn.init.normal_(layer.weight, std=1.0 / math.sqrt(layer.in_features))


def _normal(layer: nn.Linear, _n: str, _s: float, params: dict[str, Any]) -> None:
    nn.init.normal_(layer.weight, mean=0.0, std=params["std"])


def _orthogonal(layer: nn.Linear, _n: str, _s: float, params: dict[str, Any]) -> None:
    nn.init.orthogonal_(layer.weight, gain=params["gain"])


# name -> (weight initialiser, its parameters with defaults)
INIT_SCHEMES: dict[str, tuple[WeightInit, dict[str, Any]]] = {
    "default": (_default, {}),
    "xavier_uniform": (_xavier_uniform, {}),
    "xavier_normal": (_xavier_normal, {}),
    "kaiming_uniform": (_kaiming_uniform, {}),
    "kaiming_normal": (_kaiming_normal, {}),
    "lecun_normal": (_lecun_normal, {}),
    "normal": (_normal, {"std": 1.0}),
    "orthogonal": (_orthogonal, {"gain": 1.0}),
}


MATCHED = "matched"


# What the parameters of the schemes above mean, for the one-sentence errors.
PARAMETER_MEANINGS = {"std": "the weights' standard deviation", "gain": "the weights' scale"}


def resolve_matched_init(
    spec: str | Mapping[str, Any], activation: ActivationInfo
) -> str | Mapping[str, Any]:
    """`matched` means the activation's recommended init (the registry says which)."""
    name, _ = split_spec(spec)
    return activation.recommended_init if name == MATCHED else spec


def init_params(spec: str | Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """Split `{name: ..., **params}` (or a bare name) and fill in defaults; checks both."""
    name, params = split_spec(spec)
    one_of("name", name, [*INIT_SCHEMES, MATCHED])
    if name == MATCHED:  # resolved against the activation by the model
        check_params(params, {}, f"the {name!r} init")
        return name, {}
    defaults = INIT_SCHEMES[name][1]
    check_params(params, defaults, f"the {name!r} init")
    merged = {**defaults, **params}
    for key, meaning in PARAMETER_MEANINGS.items():
        if key in merged:
            number(key, merged[key], what=meaning)
    return name, merged


def init_linear(
    layer: nn.Linear,
    spec: str | Mapping[str, Any],
    activation: ActivationInfo | None,
    activation_spec: str | Mapping[str, Any] | None = None,
) -> None:
    """Initialise one Linear layer; `activation` is the one that follows it (None: none)."""
    name, params = init_params(spec)
    fn = INIT_SCHEMES[name][0]
    nonlinearity = activation.kaiming_nonlinearity if activation is not None else "linear"
    slope = 0.0
    if nonlinearity == "leaky_relu" and activation_spec is not None:
        slope = float(activation_params(activation_spec)["negative_slope"])
    fn(layer, nonlinearity, slope, params)
    if name != "default" and layer.bias is not None:
        nn.init.zeros_(layer.bias)
