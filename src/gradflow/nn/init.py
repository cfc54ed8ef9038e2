"""Weight and bias initialisation, set independently by config: one registry for each.

An init spec is a weight scheme's name or `{name: ..., **its parameters, bias: ...}`, and
`bias` is a bias scheme's name or `{name: ..., **its parameters}`. Without `bias` a weight
scheme brings its own: zeros (as Keras does) for every scheme but `default`, whose
PyTorch biases U(±1/sqrt(fan_in)) make it exactly nn.Linear's own init. From the command
line: `init=variance_scaling init.sigma_w2=2 init/bias=normal init.bias.std=0.2` (the bias
options are conf/init/bias/). A normal bias takes its std, not its variance: mean-field
papers' sigma_b^2 = 0.05 is std 0.2236.

Every scale is per layer, through the layer's own fan (784 for MNIST's input layer), so
`variance_scaling` is the mean-field parametrisation W ~ N(0, sigma_w2/fan_in). The output
layer, which no activation follows: a scheme whose gain comes from the activation
(kaiming_*) uses the linear gain there; a scheme with an explicit scale (normal's std,
orthogonal's gain, variance_scaling's sigma_w2) uses that scale there too, as mean-field
papers do (Poole et al. 2016, Schoenholz et al. 2017: one sigma_w^2 for every layer).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from gradflow.checks import joined
from gradflow.nn.activations import ActivationInfo
from gradflow.rules.nn import (
    BIAS,
    BIAS_SCHEME_PARAMS,
    DISTRIBUTION_NAMES,
    FAN_NAMES,
    MATCHED,
    WEIGHT_SCHEMES,
    SchemeParams,
    activation_params,
    bias_params,
    init_label,  # noqa: F401 - its callers import it from here too
    init_params,
    split_spec,
)

InitSpec = str | Mapping[str, Any]


@dataclass(frozen=True)
class Scheme:
    """A registry entry: the function that draws the values, its parameters with their
    defaults, and (weight schemes) the bias scheme used when the spec names none (the last
    two from `gradflow.rules.nn`, where a config's values are checked without torch)."""

    draw: Callable[..., None]
    defaults: Mapping[str, Any] = field(default_factory=dict)
    bias: str = "zeros"


def _schemes(
    draws: Mapping[str, Callable[..., None]], params: Mapping[str, SchemeParams]
) -> dict[str, Scheme]:
    """The registry: each scheme's draw joined by name to its parameters and bias."""
    joined(draws, params, "an init registry")
    return {
        name: Scheme(draw, params[name].defaults, params[name].bias) for name, draw in draws.items()
    }


# --- weights: draw(layer, kaiming nonlinearity, its slope, params) ---


def _pytorch_uniform(layer: nn.Linear, *_: Any) -> None:
    # nn.Linear's own draw (its reset_parameters): gain sqrt(1/3) makes the bound 1/sqrt(fan_in).
    nn.init.kaiming_uniform_(layer.weight, a=math.sqrt(5))


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


def _lecun_uniform(layer: nn.Linear, *_: Any) -> None:
    bound = math.sqrt(3.0 / layer.in_features)  # variance bound^2/3 = 1/fan_in
    nn.init.uniform_(layer.weight, -bound, bound)


def _normal(layer: nn.Linear, _n: str, _s: float, params: dict[str, Any]) -> None:
    nn.init.normal_(layer.weight, mean=0.0, std=params["std"])


def _orthogonal(layer: nn.Linear, _n: str, _s: float, params: dict[str, Any]) -> None:
    nn.init.orthogonal_(layer.weight, gain=params["gain"])


# N(0, 1) cut at ±2 has std 0.8796...; dividing by it gives the truncated draw the variance
# asked for, as Keras's and JAX's variance_scaling do (trunc_normal_ cuts at absolute a, b).
TRUNCATED_STD = 0.87962566103423978


def _truncated_normal(weight: torch.Tensor, std: float) -> None:
    wide = std / TRUNCATED_STD
    nn.init.trunc_normal_(weight, std=wide, a=-2.0 * wide, b=2.0 * wide)


def _uniform(weight: torch.Tensor, std: float) -> None:
    bound = math.sqrt(3.0) * std  # U(±b) has variance b^2/3
    nn.init.uniform_(weight, -bound, bound)


# variance_scaling's `distribution`: a zero-mean draw with the given std.
DISTRIBUTIONS: dict[str, Callable[[torch.Tensor, float], None]] = {
    "normal": lambda weight, std: nn.init.normal_(weight, std=std),
    "uniform": _uniform,
    "truncated_normal": _truncated_normal,
}
# variance_scaling's `mode`: the fan the variance is divided by.
FANS: dict[str, Callable[[nn.Linear], float]] = {
    "fan_in": lambda layer: layer.in_features,
    "fan_out": lambda layer: layer.out_features,
    "fan_avg": lambda layer: (layer.in_features + layer.out_features) / 2,
}
joined(DISTRIBUTIONS, DISTRIBUTION_NAMES, "variance_scaling's distributions")
joined(FANS, FAN_NAMES, "variance_scaling's modes")


def _variance_scaling(layer: nn.Linear, _n: str, _s: float, params: dict[str, Any]) -> None:
    std = math.sqrt(params["sigma_w2"] / FANS[params["mode"]](layer))
    DISTRIBUTIONS[params["distribution"]](layer.weight, std)


INIT_SCHEMES: dict[str, Scheme] = _schemes(
    {
        "default": _pytorch_uniform,
        # Glorot & Bengio 2010's "standard" init, eq. 1: U(±1/sqrt(fan_in)), variance
        # 1/(3 fan_in).
        "glorot_standard": _pytorch_uniform,
        "xavier_uniform": _xavier_uniform,
        "xavier_normal": _xavier_normal,
        "kaiming_uniform": _kaiming_uniform,
        "kaiming_normal": _kaiming_normal,
        "lecun_normal": _lecun_normal,
        "lecun_uniform": _lecun_uniform,
        "normal": _normal,
        "orthogonal": _orthogonal,
        "variance_scaling": _variance_scaling,
    },
    WEIGHT_SCHEMES,
)


# --- biases: draw(bias, fan_in, params) ---


def _pytorch_bias(bias: torch.Tensor, fan_in: int, _: Any) -> None:
    bound = 1.0 / math.sqrt(fan_in)  # nn.Linear's own bias draw
    nn.init.uniform_(bias, -bound, bound)


BIAS_SCHEMES: dict[str, Scheme] = _schemes(
    {
        "zeros": lambda bias, *_: nn.init.zeros_(bias),
        "default": _pytorch_bias,
        # cs231n's "small constant such as 0.01", so every ReLU unit starts active.
        "constant": lambda bias, _, p: nn.init.constant_(bias, p["value"]),
        # N(0, 1) is Nielsen's (ch. 5); mean-field papers' sigma_b^2 = 0.05 is std 0.2236.
        "normal": lambda bias, _, p: nn.init.normal_(bias, std=p["std"]),
        "uniform": lambda bias, _, p: nn.init.uniform_(bias, -p["bound"], p["bound"]),
    },
    BIAS_SCHEME_PARAMS,
)


def resolve_matched_init(spec: InitSpec, activation: ActivationInfo) -> InitSpec:
    """`matched` means the activation's recommended init (the registry says which); a bias
    given with it is kept."""
    name, params = split_spec(spec)
    if name != MATCHED:
        return spec
    if BIAS in params:
        return {"name": activation.recommended_init, BIAS: params[BIAS]}
    return activation.recommended_init


def init_linear(
    layer: nn.Linear,
    spec: InitSpec,
    activation: ActivationInfo | None,
    activation_spec: InitSpec | None = None,
) -> None:
    """Initialise one Linear layer, weights then bias; `activation` is the one that follows
    it (None: none, the output layer)."""
    name, params = init_params(spec)
    nonlinearity = activation.kaiming_nonlinearity if activation is not None else "linear"
    slope = 0.0
    if nonlinearity == "leaky_relu" and activation_spec is not None:
        slope = float(activation_params(activation_spec)["negative_slope"])
    INIT_SCHEMES[name].draw(layer, nonlinearity, slope, params)
    if layer.bias is not None:
        bias_name, bias = bias_params(spec)
        BIAS_SCHEMES[bias_name].draw(layer.bias, layer.in_features, bias)
