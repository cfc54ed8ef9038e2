"""Networks: the activation registry, weight and bias init schemes and the tracked MLP families."""

from gradflow.nn.activations import (
    ACTIVATIONS,
    ActivationInfo,
    build_activation,
    get_activation_info,
    max_abs_derivative,
)
from gradflow.nn.init import BIAS_SCHEMES, INIT_SCHEMES, init_linear
from gradflow.nn.models import BNMLP, MLP, ResMLP, TrackedModel, layer_name
from gradflow.nn.population import Population

__all__ = [
    "ACTIVATIONS",
    "BIAS_SCHEMES",
    "BNMLP",
    "INIT_SCHEMES",
    "MLP",
    "Population",
    "ActivationInfo",
    "ResMLP",
    "TrackedModel",
    "build_activation",
    "get_activation_info",
    "init_linear",
    "layer_name",
    "max_abs_derivative",
]
