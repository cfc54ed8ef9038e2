"""The three model families: plain MLP, BatchNorm MLP and residual MLP.

Every model owns the naming of its tracked layers: the Linear layers, input to
output, as `layer_01` ... `layer_NN`, the output layer last. Callbacks and reports
only ever ask the model for these names; they never rebuild them.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any, Literal, get_args

import torch
from torch import nn

from gradflow.checks import is_whole, number, one_of, whole
from gradflow.errors import ConfigError
from gradflow.nn.activations import build_activation, get_activation_info
from gradflow.nn.init import init_linear, init_params, resolve_matched_init

ActivationSpec = str | Mapping[str, Any]
BNPosition = Literal["before", "after"]
BN_POSITIONS = get_args(BNPosition)


def layer_name(index: int) -> str:
    """The one spelling of a tracked layer's name: 1-based, two digits."""
    return f"layer_{index:02d}"


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


class HiddenLayer(nn.Module):
    """Linear -> [BatchNorm] -> activation -> [BatchNorm]; `act`'s input is the pre-activation."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        activation: ActivationSpec,
        norm: nn.Module | None = None,
        bn_position: BNPosition = "before",
    ) -> None:
        super().__init__()
        self.linear = nn.Linear(in_features, out_features, bias=norm is None)
        self.norm = norm if norm is not None else nn.Identity()
        self.act = build_activation(activation)
        self.bn_position = bn_position

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.linear(x)
        if self.bn_position == "before":
            return self.act(self.norm(z))
        return self.norm(self.act(z))


class ResidualBlock(nn.Module):
    """act(x + Linear(act(Linear(x)))): the tutorial's `h1 + Dense(h2)` pattern.

    With `act_after_add=False` it is x + act(Linear(act(Linear(x)))): the skip path is an
    identity, so no activation's slope shrinks the gradient along it (He et al., 2016).
    """

    def __init__(
        self, width: int, inner_width: int, activation: ActivationSpec, act_after_add: bool = True
    ) -> None:
        super().__init__()
        self.inner = HiddenLayer(width, inner_width, activation)
        self.outer = nn.Linear(inner_width, width)  # its output is the residual branch
        self.act = build_activation(activation)
        self.act_after_add = act_after_add

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branch = self.outer(self.inner(x))
        return self.act(x + branch) if self.act_after_add else x + self.act(branch)


class TrackedModel(nn.Module):
    """Base class: a classifier whose Linear layers are named and ordered for diagnostics."""

    def __init__(
        self,
        activation: ActivationSpec,
        init: str | Mapping[str, Any],
        in_features: int,
        num_classes: int,
    ) -> None:
        super().__init__()
        whole("in_features", in_features)
        whole("num_classes", num_classes)
        self.activation_spec = activation
        self.activation_info = get_activation_info(activation)
        self.init_spec = resolve_matched_init(init, self.activation_info)
        init_params(self.init_spec)  # fail on a bad init before building anything

    def tracked_layers(self) -> OrderedDict[str, nn.Linear]:
        """Every Linear layer, input to output, the output layer last."""
        raise NotImplementedError

    def activation_modules(self) -> OrderedDict[str, nn.Module]:
        """The activation applied after each hidden Linear layer, keyed by that layer's name.

        A forward hook on one sees the pre-activation as input and the activation as output.
        """
        raise NotImplementedError

    def norm_modules(self) -> OrderedDict[str, nn.Module]:
        """BatchNorm modules keyed by the layer they normalise (empty without BatchNorm)."""
        return OrderedDict()

    def residual_blocks(self) -> OrderedDict[str, ResidualBlock]:
        """Residual blocks keyed by the layer of their outer Linear (else empty).

        A block's input is the skip path; its `outer` Linear's output is the branch.
        """
        return OrderedDict()

    @property
    def layer_names(self) -> list[str]:
        return list(self.tracked_layers())

    def _initialise(self) -> None:
        layers = list(self.tracked_layers().values())
        for layer in layers[:-1]:
            init_linear(layer, self.init_spec, self.activation_info, self.activation_spec)
        init_linear(layers[-1], self.init_spec, None)


class MLP(TrackedModel):
    """Plain (optionally BatchNorm) MLP: `depth` hidden layers of `width`, or `hidden_sizes`.

    `in_features` and `num_classes` come from the data module (the run passes them).
    """

    def __init__(
        self,
        activation: ActivationSpec = "relu",
        init: str | Mapping[str, Any] = "xavier_uniform",
        depth: int | None = 4,
        width: int | None = 128,
        hidden_sizes: Sequence[int] | None = None,
        in_features: int = 784,
        num_classes: int = 10,
    ) -> None:
        super().__init__(activation, init, in_features, num_classes)
        sizes = resolve_hidden_sizes(depth, width, hidden_sizes)
        fan_ins = [in_features, *sizes[:-1]]
        self.hidden = nn.ModuleList(
            self._hidden_layer(n_in, n_out) for n_in, n_out in zip(fan_ins, sizes, strict=True)
        )
        self.output = nn.Linear(sizes[-1], num_classes)
        self._initialise()

    def _hidden_layer(self, n_in: int, n_out: int) -> HiddenLayer:
        return HiddenLayer(n_in, n_out, self.activation_spec)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)
        for layer in self.hidden:
            x = layer(x)
        return self.output(x)

    def tracked_layers(self) -> OrderedDict[str, nn.Linear]:
        linears = [layer.linear for layer in self.hidden] + [self.output]
        return OrderedDict((layer_name(i + 1), lin) for i, lin in enumerate(linears))

    def activation_modules(self) -> OrderedDict[str, nn.Module]:
        return OrderedDict((layer_name(i + 1), layer.act) for i, layer in enumerate(self.hidden))


class BNMLP(MLP):
    """MLP with Linear (no bias) -> BatchNorm1d -> activation, or BatchNorm after it.

    Keras's BatchNormalization(momentum=0.99, epsilon=1e-3) is torch's momentum=0.01, eps=1e-3.
    """

    def __init__(
        self,
        activation: ActivationSpec = "relu",
        init: str | Mapping[str, Any] = "xavier_uniform",
        depth: int | None = 4,
        width: int | None = 128,
        hidden_sizes: Sequence[int] | None = None,
        in_features: int = 784,
        num_classes: int = 10,
        bn_position: BNPosition = "before",
        bn_momentum: float = 0.1,
        bn_eps: float = 1e-5,
    ) -> None:
        self.bn_position = one_of("bn_position", bn_position, BN_POSITIONS)
        self.bn_momentum = number("bn_momentum", bn_momentum)
        self.bn_eps = number("bn_eps", bn_eps)
        super().__init__(activation, init, depth, width, hidden_sizes, in_features, num_classes)

    def _hidden_layer(self, n_in: int, n_out: int) -> HiddenLayer:
        norm = nn.BatchNorm1d(n_out, eps=self.bn_eps, momentum=self.bn_momentum)
        return HiddenLayer(n_in, n_out, self.activation_spec, norm, self.bn_position)

    def norm_modules(self) -> OrderedDict[str, nn.Module]:
        return OrderedDict((layer_name(i + 1), layer.norm) for i, layer in enumerate(self.hidden))


class ResMLP(TrackedModel):
    """Input projection to `width`, then residual blocks of two Linear layers each.

    `depth` counts hidden Linear layers, so it is 1 + 2 * blocks (the tutorial's net: 3).
    With `hidden_sizes`, it reads [width, inner_1, width, inner_2, width, ...].
    `act_after_add` chooses the block form (see ResidualBlock); True is the tutorial's.
    """

    def __init__(
        self,
        activation: ActivationSpec = "relu",
        init: str | Mapping[str, Any] = "xavier_uniform",
        depth: int | None = 3,
        width: int | None = 128,
        hidden_sizes: Sequence[int] | None = None,
        in_features: int = 784,
        num_classes: int = 10,
        act_after_add: bool = True,
    ) -> None:
        super().__init__(activation, init, in_features, num_classes)
        sizes = resolve_hidden_sizes(depth, width, hidden_sizes)
        key, value = ("depth", depth) if hidden_sizes is None else ("hidden_sizes", sizes)
        if len(sizes) % 2 == 0:
            raise ConfigError(
                key,
                value,
                "res_mlp needs an odd number of hidden layers (the projection + 2 per block), "
                "e.g. depth 3 or 5",
            )
        width_ = sizes[0]
        if any(s != width_ for s in sizes[2::2]):
            raise ConfigError(
                key,
                value,
                f"res_mlp's hidden layers must return to the width {width_} after every block "
                "([width, inner, width, inner, width, ...])",
            )
        self.projection = HiddenLayer(in_features, width_, activation)
        self.blocks = nn.ModuleList(
            ResidualBlock(width_, inner, activation, act_after_add) for inner in sizes[1::2]
        )
        self.output = nn.Linear(width_, num_classes)
        self._initialise()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.projection(x.flatten(1))
        for block in self.blocks:
            x = block(x)
        return self.output(x)

    def tracked_layers(self) -> OrderedDict[str, nn.Linear]:
        linears = [self.projection.linear]
        for block in self.blocks:
            linears += [block.inner.linear, block.outer]
        linears.append(self.output)
        return OrderedDict((layer_name(i + 1), lin) for i, lin in enumerate(linears))

    def activation_modules(self) -> OrderedDict[str, nn.Module]:
        acts = [self.projection.act]
        for block in self.blocks:
            acts += [block.inner.act, block.act]
        return OrderedDict((layer_name(i + 1), act) for i, act in enumerate(acts))

    def residual_blocks(self) -> OrderedDict[str, ResidualBlock]:
        # Block b's outer Linear is layer 2b + 3 (after the projection and b blocks).
        return OrderedDict((layer_name(2 * b + 3), block) for b, block in enumerate(self.blocks))
