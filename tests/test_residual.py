"""Deep residual MLPs: the block forms and branch inits that keep depth 50-100 trainable."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from gradflow.diagnostics.activations import probe_statistics
from gradflow.diagnostics.probe import capture_probe
from gradflow.errors import ConfigError
from gradflow.nn import ResMLP
from gradflow.nn.models import layer_name

# The forms that keep the residual stream bounded at init: BatchNorm in the branch, or a
# branch that starts at zero (no normalisation anywhere).
BOUNDED = [("preact", "default"), ("preact", "zero"), ("post", "zero"), ("identity", "rezero")]


def _stream_stds(model: ResMLP, x: torch.Tensor) -> list[float]:
    """The standard deviation of each block's output (the residual stream), in train mode."""
    stds: list[float] = []
    hooks = [
        b.register_forward_hook(lambda _m, _i, out: stds.append(float(out.detach().std())))
        for b in model.blocks
    ]
    with torch.no_grad():
        model.train()(x)
    for hook in hooks:
        hook.remove()
    return stds


def _he_relu(depth: int, block: str = "post", branch_init: str = "default", width: int = 64):
    torch.manual_seed(0)
    return ResMLP("relu", "kaiming_normal", depth, width, block=block, branch_init=branch_init)


@pytest.mark.parametrize("depth", [50, 100])
def test_last_block_stays_within_10x_of_the_first_at_init_while_post_explodes(depth):
    x = torch.rand(256, 1, 28, 28)  # MNIST-like: pixels/255
    post = _stream_stds(_he_relu(depth), x)
    # Measured (width 64 and 128, seeds 0-2): post 1e4..8e4 at depth 50, 4e8..3e9 at 100.
    assert post[-1] / post[0] > 100
    for block, branch_init in BOUNDED:
        stds = _stream_stds(_he_relu(depth, block, branch_init), x)
        # Measured: preact 3.5..4.3 at depth 50, 5.2..6.0 at 100 (each block adds about one
        # unit of variance: growth ~ sqrt(blocks)); zero and rezero branches: exactly 1.
        assert stds[-1] / stds[0] < 10, (block, branch_init)
        if branch_init != "default":
            assert stds[-1] == pytest.approx(stds[0], rel=1e-6)


@pytest.mark.parametrize("depth", [50, 100])
@pytest.mark.parametrize(
    ("block", "branch_init"), [("preact", "default"), ("post", "zero"), ("identity", "rezero")]
)
def test_sgd_steps_at_depth_stay_finite_and_lower_the_loss(depth, block, branch_init):
    model = _he_relu(depth, block, branch_init)
    x, y = torch.rand(64, 1, 28, 28), torch.randint(0, 10, (64,))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    losses = []
    for _ in range(8):
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert all(map(math.isfinite, losses))
    # Measured after 8 steps: -43..-48% (preact), -12..-22% (zero or rezero: at first only
    # the projection, the output layer and W2 or alpha learn).
    assert losses[-1] < 0.95 * losses[0]
    # and every branch learns by now (identity + zero, refused, kept them at 0 for good)
    assert all(layer.weight.grad.norm() > 0 for layer in model.tracked_layers().values())


def test_rezero_gate_alone_gets_a_gradient_at_init():
    model = _he_relu(7, "identity", "rezero", width=16)
    x, y = torch.rand(32, 1, 28, 28), torch.randint(0, 10, (32,))
    nn.functional.cross_entropy(model(x), y).backward()
    for block in model.blocks:
        assert block.gate.item() == 0
        assert block.gate.grad.abs() > 0  # alpha learns first
        assert block.outer.weight.grad.abs().max() == 0  # the branch waits for alpha
    layers = model.tracked_layers()
    assert layers["layer_01"].weight.grad.norm() > 0  # the skip path carries the gradient


@pytest.mark.parametrize("depth", [1, 2, 3, 4, 7, 50, 51])
@pytest.mark.parametrize("block", ["post", "identity", "preact"])
def test_any_depth_builds_with_its_tracked_layers_activations_and_blocks(depth, block):
    model = ResMLP("relu", "kaiming_normal", depth, width=8, block=block)
    names = [layer_name(k) for k in range(1, depth + 2)]
    assert model.layer_names == names
    assert model(torch.rand(5, 1, 28, 28)).shape == (5, 10)
    assert list(model.activation_modules()) == names[:-1]  # one per hidden Linear
    assert len(model.blocks) == depth // 2  # an even depth ends with a one-layer block
    # Each block is keyed by its outer Linear: layers 3, 5, ... and, for an even depth, the last.
    expected = [layer_name(k) for k in range(3, depth + 1, 2)]
    if depth % 2 == 0:
        expected.append(layer_name(depth))
    assert list(model.residual_blocks()) == expected
    assert all(b.outer is model.tracked_layers()[n] for n, b in model.residual_blocks().items())
    norms = list(model.norm_modules())
    assert norms == (names[:-1] if block == "preact" else [])


def test_preact_block_is_he_2016_full_preactivation():
    model = ResMLP("relu", "kaiming_normal", depth=4, width=8, block="preact").train()
    two, one = model.blocks
    x = torch.randn(16, 8)
    inner = two.inner.linear(torch.relu(two.norm_in(x)))
    assert two.inner.linear.bias is None  # BatchNorm's shift follows it
    assert torch.allclose(two(x), x + two.outer(torch.relu(two.inner.norm(inner))))
    assert torch.allclose(one(x), x + one.outer(torch.relu(one.norm_in(x))))
    # Each activation follows the Linear whose output it receives first: W2's is the next
    # block's (through the sum), the last W2's the head's before the output layer.
    acts = model.activation_modules()
    assert acts["layer_01"] is two.act_in and acts["layer_02"] is two.inner.act
    assert acts["layer_03"] is one.act_in and acts["layer_04"] is model.head[1]


def test_zero_branch_starts_as_the_identity_and_its_inner_layer_has_no_gradient():
    model = _he_relu(5, "preact", "zero", width=16)
    x, y = torch.rand(32, 1, 28, 28), torch.randint(0, 10, (32,))
    h = model.projection(x.flatten(1))
    assert torch.equal(model.blocks[0](h), h)
    capture = capture_probe(model, x, y, weight_grads=True)
    stats = probe_statistics(model, capture)
    assert stats["grad_norm/layer_02"] == 0  # W1 sits behind a zero W2
    assert stats["grad_norm/layer_03"] > 0  # W2 itself learns
    assert stats["grad_signal/layer_02"] == 0
    assert stats["res_branch_std/layer_03"] == 0
    assert all(torch.isfinite(v) for v in stats.values())


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"block": "pre"}, "block='pre' is not allowed: choose one of post, identity, preact."),
        (
            {"branch_init": "zeros"},
            "branch_init='zeros' is not allowed: choose one of default, zero, rezero.",
        ),
        (
            {"block": "identity", "branch_init": "zero"},
            "branch_init='zero' is not allowed: with block=identity a zero branch passes through "
            "act, whose slope at 0 (relu's: 0) or value (sigmoid's: 0.5) spoils it; use "
            "branch_init=rezero or block=preact or post.",
        ),
        (
            {"hidden_sizes": [32, 16, 32, 16]},
            "hidden_sizes=[32, 16, 32, 16] is not allowed: res_mlp's hidden layers must return "
            "to the width 32 after every block ([width, inner, width, inner, width, ...]).",
        ),
    ],
)
def test_bad_options_fail_with_one_sentence(kwargs, message):
    with pytest.raises(ConfigError) as err:
        ResMLP("relu", **kwargs)
    assert str(err.value) == message
