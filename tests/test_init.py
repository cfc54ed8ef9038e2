"""Weight and bias init: each scheme's empirical variance against its formula, the two set
independently, per layer by fan_in, and the conf/init group composing to the same inits."""

from __future__ import annotations

import math

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from gradflow.config import config_dir
from gradflow.errors import ConfigError
from gradflow.nn import ACTIVATIONS, BIAS_SCHEMES, BNMLP, INIT_SCHEMES, MLP
from gradflow.nn.init import TRUNCATED_STD, init_label, init_linear

# A non-square layer, so fan_in, fan_out and their mean give different variances. 500,000
# draws: a sample variance is within 0.3% of the true one (one std), so 2% can only fail
# when the formula is wrong.
FAN_IN, FAN_OUT = 1000, 500
AVG = (FAN_IN + FAN_OUT) / 2
TOL = 0.02


def _init(spec, activation: str | None = "relu", shape=(FAN_IN, FAN_OUT), seed=0) -> nn.Linear:
    torch.manual_seed(seed)
    layer = nn.Linear(*shape)
    info = ACTIVATIONS[activation] if activation else None
    init_linear(layer, spec, info, activation)
    return layer


def _vs(sigma_w2: float, distribution: str, mode: str = "fan_in") -> dict:
    return {"name": "variance_scaling", "sigma_w2": sigma_w2, "distribution": distribution,
            "mode": mode}  # fmt: skip


WEIGHTS = [
    ("default", "relu", 1 / (3 * FAN_IN)),  # U(±1/sqrt(fan_in))
    ("glorot_standard", "tanh", 1 / (3 * FAN_IN)),  # Glorot & Bengio's eq. 1
    ("glorot_normalized", "tanh", 2 / (FAN_IN + FAN_OUT)),  # their eq. 16
    ("xavier_uniform", "relu", 2 / (FAN_IN + FAN_OUT)),
    ("xavier_normal", "sigmoid", 2 / (FAN_IN + FAN_OUT)),
    ("kaiming_uniform", "relu", 2 / FAN_IN),
    ("kaiming_normal", "relu", 2 / FAN_IN),
    ("kaiming_normal", "tanh", (5 / 3) ** 2 / FAN_IN),
    ("kaiming_normal", None, 1 / FAN_IN),  # the output layer: linear gain
    ("lecun_normal", "selu", 1 / FAN_IN),
    ("lecun_uniform", "selu", 1 / FAN_IN),
    ({"name": "normal", "std": 0.05}, "relu", 0.05**2),
    ({"name": "orthogonal", "gain": 2.0}, "relu", 4 / FAN_IN),  # orthonormal rows of fan_in
    *[(_vs(2.0, d), "relu", 2 / FAN_IN) for d in ("normal", "uniform", "truncated_normal")],
    (_vs(2.0, "normal"), None, 2 / FAN_IN),  # the output layer: the same sigma_w2
    (_vs(0.5, "truncated_normal", "fan_out"), "tanh", 0.5 / FAN_OUT),
    (_vs(3.0, "uniform", "fan_avg"), "tanh", 3.0 / AVG),
]


@pytest.mark.parametrize(("spec", "activation", "expected"), WEIGHTS, ids=str)
def test_weight_variance_matches_its_formula_within_2_percent(spec, activation, expected):
    weight = _init(spec, activation).weight.detach()
    assert float(weight.var()) == pytest.approx(expected, rel=TOL)
    assert abs(float(weight.mean())) < 5 * math.sqrt(expected / weight.numel())


def test_every_weight_scheme_is_tested():
    tested = {spec if isinstance(spec, str) else spec["name"] for spec, _, _ in WEIGHTS}
    assert tested >= set(INIT_SCHEMES)


@pytest.mark.parametrize(
    ("distribution", "cut"), [("uniform", math.sqrt(3)), ("truncated_normal", 2 / TRUNCATED_STD)]
)
def test_variance_scaling_draws_stay_within_their_support(distribution, cut):
    # uniform: U(±sqrt(3) std); truncated normal: cut at 2 of its own (widened) stds.
    weight = _init(_vs(1.0, distribution), "relu").weight.detach()
    bound = cut / math.sqrt(FAN_IN)
    assert float(weight.abs().max()) <= bound
    assert float(weight.abs().max()) > 0.99 * bound  # and fill it


def test_truncated_normal_needs_its_widening_to_reach_the_variance():
    # Cut at ±2 std without widening, the variance is 0.774 of the asked-for one.
    weight = torch.empty(FAN_OUT, FAN_IN)
    std = math.sqrt(1 / FAN_IN)
    torch.manual_seed(0)
    nn.init.trunc_normal_(weight, std=std, a=-2 * std, b=2 * std)
    assert float(weight.var()) * FAN_IN == pytest.approx(TRUNCATED_STD**2, rel=TOL)
    assert pytest.approx(0.7737, abs=1e-4) == TRUNCATED_STD**2


def test_default_is_exactly_nn_linears_own_init():
    own, layer = nn.Linear(300, 200), nn.Linear(300, 200)
    torch.manual_seed(3)
    own.reset_parameters()
    torch.manual_seed(3)
    init_linear(layer, "default", ACTIVATIONS["relu"], "relu")
    assert torch.equal(layer.weight, own.weight) and torch.equal(layer.bias, own.bias)


@pytest.mark.parametrize("name", sorted(INIT_SCHEMES))
def test_a_schemes_own_bias_given_explicitly_changes_nothing(name):
    # conf/init/*.yaml now name each scheme's own bias: runs keep their exact numbers.
    own = "default" if name == "default" else "zeros"
    bare = _init(name, shape=(64, 32))
    explicit = _init({"name": name, "bias": {"name": own}}, shape=(64, 32))
    assert torch.equal(bare.weight, explicit.weight) and torch.equal(bare.bias, explicit.bias)
    assert (torch.count_nonzero(bare.bias) > 0) == (name == "default")
    assert init_label({"name": name, "bias": own}) == init_label(name)


# A layer with 200,000 biases (fan_in 4: U(±1/2) for `default`): within 0.3% at one std.
BIAS_SHAPE = (4, 200_000)
BIASES = [
    ("default", 0.0, 1 / (3 * 4)),
    ({"name": "normal", "std": math.sqrt(0.05)}, 0.0, 0.05),  # mean-field sigma_b^2 = 0.05
    ({"name": "normal"}, 0.0, 1.0),  # Nielsen's N(0, 1)
    ({"name": "uniform", "bound": 0.5}, 0.0, 0.5**2 / 3),
]


@pytest.mark.parametrize(("bias", "mean", "variance"), BIASES, ids=str)
@pytest.mark.parametrize("weights", ["xavier_uniform", "variance_scaling", "default"])
def test_bias_variance_matches_its_formula_whatever_the_weights(weights, bias, mean, variance):
    layer = _init({"name": weights, "bias": bias}, shape=BIAS_SHAPE)
    b = layer.bias.detach()
    assert float(b.var()) == pytest.approx(variance, rel=TOL)
    assert abs(float(b.mean()) - mean) < 5 * math.sqrt(variance / b.numel())
    alone = _init(weights, shape=BIAS_SHAPE)  # the weights are drawn first, the same
    assert torch.equal(layer.weight, alone.weight)


CONSTANTS = [
    ("zeros", 0.0),
    ({"name": "constant"}, 0.01),
    ({"name": "constant", "value": -0.3}, -0.3),
]


@pytest.mark.parametrize(("bias", "value"), CONSTANTS)
def test_constant_biases_are_that_value(bias, value):
    b = _init({"name": "kaiming_normal", "bias": bias}, shape=(8, 1000)).bias.detach()
    assert torch.all(b == value)


def test_every_bias_scheme_is_tested():
    specs = [b for b, _, _ in BIASES] + ["zeros", {"name": "constant"}]
    assert {b if isinstance(b, str) else b["name"] for b in specs} == set(BIAS_SCHEMES)


def test_mean_field_mlp_has_sigma_w2_over_fan_in_in_every_layer():
    """784-wide input, 1000-wide hidden and output layers: each layer's own fan_in."""
    sigma_w2, sigma_b2 = 1.5, 0.05
    torch.manual_seed(0)
    init = {"name": "variance_scaling", "sigma_w2": sigma_w2,
            "bias": {"name": "normal", "std": math.sqrt(sigma_b2)}}  # fmt: skip
    model = MLP("tanh", init, depth=2, width=1000, in_features=784, num_classes=500)
    layers = list(model.tracked_layers().values())
    assert [layer.in_features for layer in layers] == [784, 1000, 1000]
    for layer in layers:
        var = float(layer.weight.detach().var())
        assert var == pytest.approx(sigma_w2 / layer.in_features, rel=TOL), layer
    biases = torch.cat([layer.bias.detach() for layer in layers])  # 2,500 draws: 3% at one std
    assert float(biases.var()) == pytest.approx(sigma_b2, rel=0.15)


def test_batchnorm_layers_without_biases_take_any_bias_init():
    model = BNMLP("relu", {"name": "kaiming_normal", "bias": "normal"}, depth=2, width=16)
    layers = list(model.tracked_layers().values())
    assert layers[0].bias is None  # BatchNorm's shift is the bias
    assert layers[-1].bias is not None and float(layers[-1].bias.detach().std()) > 0.5


@pytest.mark.parametrize(
    ("bias", "sentence"),
    [
        ("gauss", "bias='gauss' is not allowed: choose one of zeros, default, constant, normal, "
                  "uniform."),
        ({"name": "gauss"}, "bias.name='gauss' is not allowed: choose one of zeros, ..."),
        ({"name": "normal", "sigma_b2": 0.05}, "bias.sigma_b2=0.05 is not allowed: the 'normal' "
                                               "bias init has no such parameter; its parameters "
                                               "are std."),
        ({"name": "normal", "std": -1}, "bias.std=-1 is not allowed: use a number > 0 (the "
                                        "biases' standard deviation)."),
        ({"name": "constant", "value": "x"}, "bias.value='x' is not allowed: use a finite "
                                             "number (the biases' value)."),
        ({"name": "zeros", "value": 1}, "bias.value=1 is not allowed: the 'zeros' bias init "
                                        "has no such parameter; it has none."),
    ],
)  # fmt: skip
def test_a_bad_bias_fails_with_one_sentence_naming_its_key(bias, sentence):
    with pytest.raises(ConfigError) as err:
        MLP("relu", {"name": "xavier_uniform", "bias": bias}, depth=1, width=4)
    if sentence.endswith("..."):
        assert str(err.value).startswith(sentence.removesuffix("..."))
    else:
        assert str(err.value) == sentence


def test_bad_variance_scaling_values_fail_with_one_sentence():
    with pytest.raises(ConfigError, match=r"^sigma_w2=0 is not allowed: use a number > 0 \("):
        MLP("relu", {"name": "variance_scaling", "sigma_w2": 0}, depth=1, width=4)
    with pytest.raises(ConfigError, match="^mode='fan' is not allowed: choose one of fan_in, "):
        MLP("relu", {"name": "variance_scaling", "mode": "fan"}, depth=1, width=4)


def test_labels_show_the_bias_only_when_it_is_not_the_schemes_own():
    assert init_label("xavier_uniform") == "xavier_uniform"
    assert init_label("glorot_normalized") == "xavier_uniform"  # one scheme, one label
    assert init_label({"name": "default", "bias": "zeros"}) == "default, bias zeros"
    spec = {"name": "variance_scaling", "sigma_w2": 2.0, "bias": {"name": "normal", "std": 0.2}}
    assert init_label(spec) == (
        "variance_scaling:sigma_w2=2:distribution=normal:mode=fan_in, bias normal:std=0.2"
    )


def test_matched_keeps_a_bias_given_with_it():
    model = MLP("selu", {"name": "matched", "bias": {"name": "constant", "value": 0.5}},
                depth=1, width=8)  # fmt: skip
    assert init_label(model.init_spec) == "lecun_normal, bias constant:value=0.5"
    assert torch.all(model.tracked_layers()["layer_01"].bias == 0.5)


@pytest.mark.parametrize("option", sorted(p.stem for p in (config_dir() / "init").glob("*.yaml")))
def test_each_init_option_brings_its_schemes_own_bias(compose_cfg, option):
    # So every existing `init=<name>` run keeps its numbers and its label.
    cfg = compose_cfg(f"init={option}")
    assert ", bias" not in init_label(OmegaConf.to_container(cfg.init))


def test_the_command_line_sets_weights_and_biases_apart(compose_cfg):
    cfg = compose_cfg("init=variance_scaling", "init.sigma_w2=2", "init/bias=normal",
                      "init.bias.std=0.2")  # fmt: skip
    assert init_label(OmegaConf.to_container(cfg.init)).endswith(
        ":mode=fan_in, bias normal:std=0.2"
    )
