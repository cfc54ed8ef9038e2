"""The activation registry, the init schemes and the three model families."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import get_class
from torch import nn

from gradflow.config import config_dir
from gradflow.errors import ConfigError
from gradflow.nn import ACTIVATIONS, BNMLP, INIT_SCHEMES, MLP, ResMLP
from gradflow.nn.activations import build_activation, derivative, max_abs_derivative
from gradflow.nn.init import init_linear
from gradflow.nn.models import layer_name


def _model_option(name: str) -> Callable[..., nn.Module]:
    """The model group's option `name` as composed (with the options it inherits), its
    class bound to the option's own settings but depth, width and hidden_sizes."""
    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        node = compose("train", overrides=[f"model={name}"]).model
    own = {k: v for k, v in node.items() if k not in ("_target_", "depth", "width", "hidden_sizes")}
    return functools.partial(get_class(node._target_), **own)


# The model families are the model group's options (conf/model/*.yaml).
MODELS = {path.stem: _model_option(path.stem) for path in (config_dir() / "model").glob("*.yaml")}


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
@pytest.mark.parametrize("model_name", sorted(MODELS))
def test_every_model_and_activation_has_shapes_and_tracked_layers(model_name, activation):
    model = MODELS[model_name](activation=activation, init="xavier_uniform", depth=5, width=16)
    logits = model(torch.rand(7, 1, 28, 28))
    assert logits.shape == (7, 10)
    names = model.layer_names
    assert names == [layer_name(k) for k in range(1, 7)]  # 5 hidden + output
    layers = model.tracked_layers()
    assert all(isinstance(layer, nn.Linear) for layer in layers.values())
    assert layers[names[0]].in_features == 784 and layers[names[-1]].out_features == 10
    # every hidden layer has exactly one activation module, keyed by the same name
    assert list(model.activation_modules()) == names[:-1]


def test_hidden_sizes_override_depth_and_width():
    model = MLP("relu", depth=9, width=3, hidden_sizes=[128, 64])
    widths = [layer.out_features for layer in model.tracked_layers().values()]
    assert widths == [128, 64, 10]


def test_bn_mlp_has_no_bias_before_batchnorm_and_takes_keras_settings():
    model = BNMLP("sigmoid", hidden_sizes=[128, 64], bn_momentum=0.01, bn_eps=1e-3)
    hidden = list(model.tracked_layers().values())[:-1]
    assert all(layer.bias is None for layer in hidden)
    norms = list(model.norm_modules().values())
    assert [n.num_features for n in norms] == [128, 64]
    assert norms[0].momentum == 0.01 and norms[0].eps == 1e-3


def test_bn_position_after_normalises_the_activation():
    model = BNMLP("sigmoid", depth=1, width=64, bn_position="after").train()
    hidden = model.hidden[0]
    out = hidden(torch.rand(512, 784))
    # After BatchNorm each unit is standardised over the batch even though sigmoid is > 0.
    assert out.mean(0).abs().max() < 1e-4
    assert (out.std(0, unbiased=False) - 1).abs().max() < 1e-2
    with pytest.raises(ConfigError, match="^bn_position='middle' is not allowed: choose one of"):
        BNMLP("relu", bn_position="middle")


def test_res_mlp_is_the_tutorials_h1_plus_dense_h2():
    model = ResMLP("relu", "xavier_uniform", depth=3, width=128)
    assert len(model.blocks) == 1 and model.layer_names[-1] == "layer_04"
    block = model.blocks[0]
    x = torch.randn(4, 128)
    expected = torch.relu(x + block.outer(torch.relu(block.inner.linear(x))))
    assert torch.allclose(block(x), expected)
    assert list(model.residual_blocks()) == ["layer_03"]
    with pytest.raises(
        ConfigError, match=r"^hidden_sizes=\[128, 64, 32\] is not allowed: .*return"
    ):
        ResMLP("relu", hidden_sizes=[128, 64, 32])


WHOLE = "use a whole number >= 1"
SIZES = "use a non-empty list of whole numbers >= 1"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"depth": 0}, f"depth=0 is not allowed: {WHOLE} (the number of hidden layers)."),
        ({"depth": 2.0}, f"depth=2.0 is not allowed: {WHOLE} (the number of hidden layers)."),
        ({"width": 0}, f"width=0 is not allowed: {WHOLE} (units per hidden layer)."),
        ({"hidden_sizes": []}, f"hidden_sizes=[] is not allowed: {SIZES}."),
        ({"hidden_sizes": [64, -1]}, f"hidden_sizes=[64, -1] is not allowed: {SIZES}."),
        ({"in_features": 0}, f"in_features=0 is not allowed: {WHOLE}."),
    ],
)
def test_bad_sizes_fail_with_the_key_and_value(kwargs, message):
    with pytest.raises(ConfigError) as err:
        MLP("relu", **kwargs)
    assert str(err.value) == message


def test_unknown_names_list_the_valid_ones():
    with pytest.raises(ConfigError) as err:
        build_activation("sigmoidd")
    assert (
        str(err.value) == f"name='sigmoidd' is not allowed: choose one of {', '.join(ACTIVATIONS)}."
    )
    with pytest.raises(ConfigError) as err:
        MLP("relu", init="xavier")
    assert all(name in str(err.value) for name in INIT_SCHEMES)
    with pytest.raises(ConfigError) as err:
        build_activation({"name": "relu", "negative_slope": 0.1})
    assert str(err.value) == (
        "negative_slope=0.1 is not allowed: the 'relu' activation has no such parameter; "
        "it has none."
    )


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("sigmoid", 0.25),
        ("tanh", 1.0),
        ("relu", 1.0),
        ({"name": "leaky_relu", "negative_slope": 2.0}, 2.0),
        ({"name": "elu", "alpha": 1.5}, 1.5),
        ("selu", 1.0507009873554805 * 1.6732632423543772),
        ("identity", 1.0),
    ],
)
def test_max_abs_derivative_matches_the_analytic_value(spec, expected):
    assert max_abs_derivative(spec) == pytest.approx(expected, rel=1e-4)


def test_derivative_is_exact_for_sigmoid():
    z = torch.linspace(-5, 5, 11)
    s = torch.sigmoid(z)
    assert torch.allclose(derivative("sigmoid", z), s * (1 - s))


FAN = 512


def _variance(init: str | dict, activation: str | None = "relu") -> tuple[float, nn.Linear]:
    torch.manual_seed(0)
    layer = nn.Linear(FAN, FAN)
    info = ACTIVATIONS[activation] if activation else None
    init_linear(layer, init, info, activation)
    return float(layer.weight.detach().var()), layer


@pytest.mark.parametrize(
    ("init", "activation", "expected"),
    [
        ("default", "relu", 1 / (3 * FAN)),  # U(+-1/sqrt(fan_in))
        ("xavier_uniform", "relu", 2 / (FAN + FAN)),
        ("xavier_normal", "sigmoid", 2 / (FAN + FAN)),
        ("kaiming_uniform", "relu", 2 / FAN),
        ("kaiming_normal", "relu", 2 / FAN),
        ("kaiming_normal", "tanh", (5 / 3) ** 2 / FAN),
        ("kaiming_normal", None, 1 / FAN),  # output layer: linear gain
        ("lecun_normal", "selu", 1 / FAN),
        ({"name": "normal", "std": 1.0}, "relu", 1.0),
        ({"name": "normal", "std": 0.05}, "relu", 0.05**2),
        ("orthogonal", "relu", 1 / FAN),
    ],
)
def test_init_variance_matches_its_formula_within_10_percent(init, activation, expected):
    var, layer = _variance(init, activation)
    assert var == pytest.approx(expected, rel=0.10)
    if init == "default":
        assert layer.bias.abs().max() > 0  # PyTorch's own bias init is kept
    else:
        assert torch.count_nonzero(layer.bias) == 0


def test_orthogonal_rows_are_orthonormal():
    _, layer = _variance("orthogonal")
    w = layer.weight.detach()
    assert torch.allclose(w @ w.T, torch.eye(FAN), atol=1e-4)


def test_bad_init_parameters_fail_clearly():
    with pytest.raises(
        ConfigError, match=r"^std=-1 is not allowed: use a number > 0 \(the weights'"
    ):
        MLP("relu", init={"name": "normal", "std": -1})
    with pytest.raises(
        ConfigError, match="^std=1 is not allowed: the 'xavier_uniform' init has no"
    ):
        MLP("relu", init={"name": "xavier_uniform", "std": 1})


def _first_last_grad_ratio(activation: str, init: str, depth: int = 10) -> float:
    torch.manual_seed(0)
    model = MLP(activation, init, depth=depth, width=128)
    x, y = torch.rand(256, 1, 28, 28), torch.randint(0, 10, (256,))
    nn.functional.cross_entropy(model(x), y).backward()
    layers = list(model.tracked_layers().values())
    return float(layers[0].weight.grad.norm() / layers[-1].weight.grad.norm())


def test_deep_sigmoid_first_layer_gradient_is_orders_of_magnitude_below_relus():
    sigmoid = _first_last_grad_ratio("sigmoid", "xavier_uniform")
    relu = _first_last_grad_ratio("relu", "kaiming_normal")
    assert sigmoid < 1e-3  # the product of <= 0.25 slopes over 10 layers
    assert 0.1 < relu < 10
    assert relu / sigmoid > 1e3
    assert math.isfinite(sigmoid)


@pytest.mark.parametrize(
    ("activation", "expected"),
    [("sigmoid", "xavier_uniform"), ("relu", "kaiming_normal"), ("selu", "lecun_normal")],
)
def test_matched_init_takes_the_registrys_recommendation(activation, expected):
    model = MLP(activation, init="matched", depth=2, width=512)
    assert model.init_spec == expected == ACTIVATIONS[activation].recommended_init
    if expected == "lecun_normal":
        var = float(model.tracked_layers()["layer_02"].weight.detach().var())
        assert var == pytest.approx(1 / 512, rel=0.1)


def test_identity_skip_block_adds_the_activated_branch_to_x():
    model = ResMLP("sigmoid", depth=3, width=8, block="identity")
    block = model.blocks[0]
    x = torch.randn(4, 8)
    expected = x + torch.sigmoid(block.outer(torch.sigmoid(block.inner.linear(x))))
    assert torch.allclose(block(x), expected)


def _res_ratio(block: str) -> float:
    torch.manual_seed(0)
    model = ResMLP("sigmoid", "xavier_uniform", depth=11, width=128, block=block)
    x, y = torch.rand(256, 1, 28, 28), torch.randint(0, 10, (256,))
    nn.functional.cross_entropy(model(x), y).backward()
    layers = list(model.tracked_layers().values())
    return float(layers[0].weight.grad.norm() / layers[-1].weight.grad.norm())


def test_identity_skip_keeps_the_gradient_that_the_tutorials_form_loses():
    post, identity = _res_ratio("post"), _res_ratio("identity")
    assert post < 1e-2  # sigmoid after each sum: the skip path is squashed too
    assert identity > 10 * post
