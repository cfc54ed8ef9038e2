"""The networks' value rules, without torch: activation and init specs, the model families.

The activation and init registries are split in two halves joined by name: here, what a
config may say (each name, its parameters and their defaults, what each may be); in
`gradflow.nn.activations` and `gradflow.nn.init`, what torch builds or draws for it.
Each model's constructor calls its rule here with its keyword values, and `gradflow.rules`
calls the same rule on the composed config before torch is imported.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from gradflow.checks import check_params, finite, is_whole, number, one_of, whole
from gradflow.errors import ConfigError

Spec = str | Mapping[str, Any]  # a registry spec: `name` or `{name: ..., **params}`


def split_spec(spec: Spec) -> tuple[Any, dict[str, Any]]:
    """A registry spec, `name` or `{name: ..., **params}`, as (name, params)."""
    if isinstance(spec, str):
        return spec, {}
    params = dict(spec)
    return params.pop("name", None), params


def spec_label(name: str, params: Mapping[str, Any]) -> str:
    """A registry spec as text, every given parameter shown: `normal:std=1`, `tanh`."""
    shown = [f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items()]
    return ":".join([name, *shown])


# ---------------------------------------------------------------------------- activations

# Every activation's parameters and their defaults, in the order messages list them.
ACTIVATION_PARAMS: dict[str, dict[str, Any]] = {
    "sigmoid": {},
    "tanh": {},
    "relu": {},
    "leaky_relu": {"negative_slope": 0.01},
    "elu": {"alpha": 1.0},
    "selu": {},
    "gelu": {},
    "silu": {},
    "softplus": {},
    "identity": {},
}


def activation_name(spec: Spec) -> str:
    """The activation's name, one of ACTIVATION_PARAMS."""
    name, _ = split_spec(spec)
    return one_of("name", name, ACTIVATION_PARAMS)


def activation_params(spec: Spec) -> dict[str, Any]:
    """The activation's parameters, defaults filled in (e.g. leaky_relu's slope)."""
    name, params = activation_name(spec), split_spec(spec)[1]
    defaults = ACTIVATION_PARAMS[name]
    check_params(params, defaults, f"the {name!r} activation")
    return {**defaults, **params}


# ---------------------------------------------------------------------------------- init

BIAS = "bias"  # the key of a weight spec that holds the bias spec
MATCHED = "matched"


@dataclass(frozen=True)
class SchemeParams:
    """An init scheme's parameters with their defaults, and (weight schemes) the bias scheme
    used when the spec names none."""

    defaults: Mapping[str, Any] = field(default_factory=dict)
    bias: str = "zeros"


WEIGHT_SCHEMES: dict[str, SchemeParams] = {
    "default": SchemeParams(bias="default"),
    "glorot_standard": SchemeParams(),
    "xavier_uniform": SchemeParams(),
    "xavier_normal": SchemeParams(),
    "kaiming_uniform": SchemeParams(),
    "kaiming_normal": SchemeParams(),
    "lecun_normal": SchemeParams(),
    "lecun_uniform": SchemeParams(),
    "normal": SchemeParams({"std": 1.0}),
    "orthogonal": SchemeParams({"gain": 1.0}),
    "variance_scaling": SchemeParams({"sigma_w2": 1.0, "distribution": "normal", "mode": "fan_in"}),
}
# Other names for a scheme above, resolved before anything else reads the spec.
ALIASES = {"glorot_normalized": "xavier_uniform"}  # Glorot & Bengio 2010's eq. 16
# variance_scaling's `distribution` (a zero-mean draw) and `mode` (the fan divided by).
DISTRIBUTION_NAMES = ("normal", "uniform", "truncated_normal")
FAN_NAMES = ("fan_in", "fan_out", "fan_avg")

# What each weight parameter may be, for the one-sentence errors.
WEIGHT_RULES: dict[str, Callable[[str, Any], Any]] = {
    "std": lambda key, value: number(key, value, what="the weights' standard deviation"),
    "gain": lambda key, value: number(key, value, what="the weights' scale"),
    "sigma_w2": lambda key, value: number(key, value, what="the weights' variance times the fan"),
    "distribution": lambda key, value: one_of(key, value, DISTRIBUTION_NAMES),
    "mode": lambda key, value: one_of(key, value, FAN_NAMES),
}

BIAS_SCHEME_PARAMS: dict[str, SchemeParams] = {
    "zeros": SchemeParams(),
    "default": SchemeParams(),
    "constant": SchemeParams({"value": 0.01}),
    "normal": SchemeParams({"std": 1.0}),
    "uniform": SchemeParams({"bound": 1.0}),
}

BIAS_RULES: dict[str, Callable[[str, Any], Any]] = {
    "value": lambda key, value: finite(key, value, what="the biases' value"),
    "std": lambda key, value: number(key, value, what="the biases' standard deviation"),
    "bound": lambda key, value: number(key, value, what="the biases' bound, U(-bound, bound)"),
}


def _checked(
    name: str,
    params: dict[str, Any],
    registry: Mapping[str, SchemeParams],
    rules: Mapping[str, Callable[[str, Any], Any]],
    owner: str,
    prefix: str = "",
) -> dict[str, Any]:
    """The parameters with the scheme's defaults filled in, each known and allowed."""
    defaults = registry[name].defaults
    check_params(params, defaults, owner, prefix)
    merged = {**defaults, **params}
    for key, value in merged.items():
        rules[key](prefix + key, value)
    return merged


def init_params(spec: Spec) -> tuple[str, dict[str, Any]]:
    """The weight scheme's name (an alias resolved) and parameters, defaults filled in;
    checks the whole spec, the bias too."""
    name, params = split_spec(spec)
    params.pop(BIAS, None)
    one_of("name", name, [*WEIGHT_SCHEMES, *ALIASES, MATCHED])
    name = ALIASES.get(name, name)
    bias_params(spec)
    if name == MATCHED:  # resolved against the activation by the model
        check_params(params, {}, f"the {name!r} init")
        return name, {}
    return name, _checked(name, params, WEIGHT_SCHEMES, WEIGHT_RULES, f"the {name!r} init")


def own_bias(name: str) -> str:
    """The bias scheme a weight scheme brings; `matched` becomes a scheme that brings zeros."""
    scheme = WEIGHT_SCHEMES.get(ALIASES.get(name, name))
    return scheme.bias if scheme is not None else "zeros"


def bias_params(spec: Spec) -> tuple[str, dict[str, Any]]:
    """The bias scheme's name and parameters, defaults filled in: the spec's `bias`, else
    its weight scheme's own (zeros for all but `default`)."""
    name, params = split_spec(spec)
    bias = params.get(BIAS)
    if bias is None:
        return own_bias(name), {}
    if isinstance(bias, Mapping):
        bias_name, given = split_spec(bias)
        one_of(f"{BIAS}.name", bias_name, BIAS_SCHEME_PARAMS)
    else:
        bias_name, given = one_of(BIAS, bias, BIAS_SCHEME_PARAMS), {}
    owner = f"the {bias_name!r} bias init"
    return bias_name, _checked(bias_name, given, BIAS_SCHEME_PARAMS, BIAS_RULES, owner, f"{BIAS}.")


def init_label(spec: Spec) -> str:
    """The init as text, every parameter shown: `normal:std=1`, and the bias when it is not
    the scheme's own: `variance_scaling:sigma_w2=2:distribution=normal:mode=fan_in, bias
    normal:std=0.2`."""
    name, params = init_params(spec)
    label = spec_label(name, params)
    bias_name, bias = bias_params(spec)
    if (bias_name, bias) != (own_bias(name), {}):
        label += f", bias {spec_label(bias_name, bias)}"
    return label


# -------------------------------------------------------------------------------- models

BNPosition = Literal["before", "after"]
BN_POSITIONS = get_args(BNPosition)
BlockForm = Literal["post", "identity", "preact"]
BLOCK_FORMS = get_args(BlockForm)
# default: the branch's Linear layers are initialised by `init` like every other layer;
# zero: its last Linear's weight and bias are zeros (Fixup, SkipInit); rezero: a scalar gate
# alpha = 0 multiplies the branch (ReZero). With zero or rezero every block starts as the
# identity (or act of it, for `post`), whatever the depth.
BranchInit = Literal["default", "zero", "rezero"]
BRANCH_INITS = get_args(BranchInit)


def resolve_hidden_sizes(
    depth: int | None, width: int | None, hidden_sizes: Sequence[int] | None
) -> list[int]:
    """`hidden_sizes` wins when given; otherwise `depth` layers of `width` units."""
    if hidden_sizes is not None:
        listed = isinstance(hidden_sizes, Sequence) and not isinstance(hidden_sizes, str)
        sizes = list(hidden_sizes) if listed else []
        if not sizes or not all(is_whole(s) and s >= 1 for s in sizes):
            raise ConfigError(
                "hidden_sizes", hidden_sizes, "use a non-empty list of whole numbers >= 1"
            )
        return sizes
    depth = whole("depth", depth, what="the number of hidden layers")
    return [whole("width", width, what="units per hidden layer")] * depth


def mlp_rules(*, depth: Any, width: Any, hidden_sizes: Any) -> list[int]:
    """MLP's rules; the hidden layers' sizes."""
    return resolve_hidden_sizes(depth, width, hidden_sizes)


def bn_mlp_rules(*, bn_position: Any, bn_momentum: Any, bn_eps: Any) -> None:
    """BNMLP's rules beyond MLP's."""
    one_of("bn_position", bn_position, BN_POSITIONS)
    number("bn_momentum", bn_momentum)
    number("bn_eps", bn_eps)


def res_mlp_rules(
    *, depth: Any, width: Any, hidden_sizes: Any, block: Any, branch_init: Any
) -> list[int]:
    """ResMLP's rules; the hidden layers' sizes ([width, inner, width, inner, width, ...])."""
    one_of("block", block, BLOCK_FORMS)
    one_of("branch_init", branch_init, BRANCH_INITS)
    if block == "identity" and branch_init == "zero":
        # Measured at depth 51 (relu, He): every branch still had zero gradient after 3
        # epochs, the net a 2-layer one (val acc 0.80, verdict dead_units).
        raise ConfigError(
            "branch_init",
            branch_init,
            "with block=identity a zero branch passes through act, whose slope at 0 "
            "(relu's: 0) or value (sigmoid's: 0.5) spoils it; use branch_init=rezero or "
            "block=preact or post",
        )
    sizes = resolve_hidden_sizes(depth, width, hidden_sizes)
    n = len(sizes)
    returns = [i + 1 for i in range(1, n - 1, 2)] + ([n - 1] if n % 2 == 0 else [])
    if any(sizes[i] != sizes[0] for i in returns):
        key, value = ("depth", depth) if hidden_sizes is None else ("hidden_sizes", sizes)
        raise ConfigError(
            key,
            value,
            f"res_mlp's hidden layers must return to the width {sizes[0]} after every block "
            "([width, inner, width, inner, width, ...])",
        )
    return sizes
