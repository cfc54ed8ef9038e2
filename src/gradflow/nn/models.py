"""The three model families: plain MLP, BatchNorm MLP and residual MLP.

Every model owns the naming of its tracked layers: the Linear layers, input to
output, as `layer_01` ... `layer_NN`, the output layer last. Callbacks and reports
only ever ask the model for these names; they never rebuild them.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from gradflow.checks import whole
from gradflow.nn.activations import build_activation, get_activation_info
from gradflow.nn.init import init_linear, init_params, resolve_matched_init
from gradflow.rules.nn import (
    BlockForm,
    BNPosition,
    BranchInit,
    bn_mlp_rules,
    mlp_rules,
    res_mlp_rules,
)

# The families' value rules and options live in `gradflow.rules.nn`, without torch: each
# constructor calls its rule, and `gradflow.rules.check` calls it on a composed config.
ActivationSpec = str | Mapping[str, Any]


def layer_name(index: int) -> str:
    """The one spelling of a tracked layer's name: 1-based, two digits."""
    return f"layer_{index:02d}"


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
    """x plus a branch of one or two Linear layers (W1, W2; W2 alone with one), in three forms:

    - `post`:     act(x + W2(act(W1(x))))  the tutorial's `h1 + Dense(h2)`;
    - `identity`: x + act(W2(act(W1(x))))  an identity skip path: no activation's slope
      shrinks the gradient along it;
    - `preact`:   x + W2(act(BN(W1(act(BN(x))))))  full pre-activation (He et al., 2016,
      "Identity Mappings in Deep Residual Networks", fig. 4e): each branch starts from a
      normalised input, so every block adds about the same variance to the skip path.

    `gate` (ReZero, Bachlechner et al., 2020) multiplies the branch by a learned scalar,
    zero at init, so the block starts as (act of) the identity. `outer` (W2) is the branch's
    last Linear; its output is what the diagnostics call the branch (before the gate).
    """

    def __init__(
        self,
        width: int,
        inner_width: int | None,
        activation: ActivationSpec,
        form: BlockForm = "post",
        gate: bool = False,
    ) -> None:
        super().__init__()
        self.form = form
        if form == "preact":
            self.norm_in = nn.BatchNorm1d(width)
            self.act_in = build_activation(activation)
        self.inner: HiddenLayer | None = None  # W1 and the activation after it
        if inner_width is not None:
            norm = nn.BatchNorm1d(inner_width) if form == "preact" else None
            self.inner = HiddenLayer(width, inner_width, activation, norm)
        self.outer = nn.Linear(inner_width or width, width)  # its output is the branch
        if form != "preact":
            self.act = build_activation(activation)
        self.gate = nn.Parameter(torch.zeros(())) if gate else None

    def path(self) -> list[tuple[str, nn.Module]]:
        """The block's Linear ("linear"), BatchNorm ("norm") and activation ("act") modules
        in the order the input meets them, the skip path left out."""
        inner, preact = self.inner, self.form == "preact"
        steps = [("linear", inner.linear)] if inner else []
        steps += [("norm", inner.norm)] if inner and preact else []
        steps += [("act", inner.act)] if inner else []
        if preact:
            return [("norm", self.norm_in), ("act", self.act_in), *steps, ("linear", self.outer)]
        return [*steps, ("linear", self.outer), ("act", self.act)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.form == "preact":
            h = self.act_in(self.norm_in(x))
            h = self.inner(h) if self.inner is not None else h
            return x + self._gated(self.outer(h))
        h = self.inner(x) if self.inner is not None else x
        branch = self.outer(h)
        if self.form == "post":
            return self.act(x + self._gated(branch))
        return x + self._gated(self.act(branch))

    def _gated(self, branch: torch.Tensor) -> torch.Tensor:
        return branch if self.gate is None else self.gate * branch


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
        sizes = mlp_rules(depth=depth, width=width, hidden_sizes=hidden_sizes)
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
        bn_mlp_rules(bn_position=bn_position, bn_momentum=bn_momentum, bn_eps=bn_eps)
        self.bn_position, self.bn_momentum, self.bn_eps = bn_position, bn_momentum, bn_eps
        super().__init__(activation, init, depth, width, hidden_sizes, in_features, num_classes)

    def _hidden_layer(self, n_in: int, n_out: int) -> HiddenLayer:
        norm = nn.BatchNorm1d(n_out, eps=self.bn_eps, momentum=self.bn_momentum)
        return HiddenLayer(n_in, n_out, self.activation_spec, norm, self.bn_position)

    def norm_modules(self) -> OrderedDict[str, nn.Module]:
        return OrderedDict((layer_name(i + 1), layer.norm) for i, layer in enumerate(self.hidden))


class ResMLP(TrackedModel):
    """Input projection to `width`, residual blocks of two Linear layers, then the output.

    `depth` counts hidden Linear layers, the projection + 2 per block; an even depth ends with
    a block of one Linear layer (depth 1: the projection alone; 3: the tutorial's net; 50:
    the projection, 24 blocks of two and one of one). With `hidden_sizes`, it reads
    [width, inner_1, width, inner_2, width, ...], a trailing `width` being a one-layer block.
    `block` chooses the block form and `branch_init` how its branch starts (see
    ResidualBlock, BranchInit). With `preact` the projection is a bare Linear (the first
    block's BatchNorm and activation follow it) and a BatchNorm and activation precede the
    output layer, as in He et al. (2016); with the other forms the projection is activated.
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
        block: BlockForm = "post",
        branch_init: BranchInit = "default",
    ) -> None:
        super().__init__(activation, init, in_features, num_classes)
        sizes = res_mlp_rules(
            depth=depth,
            width=width,
            hidden_sizes=hidden_sizes,
            block=block,
            branch_init=branch_init,
        )
        self.block, self.branch_init = block, branch_init
        width_, n = sizes[0], len(sizes)
        inner_at = range(1, n - 1, 2)  # two-layer blocks' inner widths; an even n leaves one
        inner_widths: list[int | None] = [sizes[i] for i in inner_at]
        if n % 2 == 0:
            inner_widths.append(None)  # the trailing one-layer block
        if block == "preact":
            self.projection: nn.Module = nn.Linear(in_features, width_)
        else:
            self.projection = HiddenLayer(in_features, width_, activation)
        gate = branch_init == "rezero"
        self.blocks = nn.ModuleList(
            ResidualBlock(width_, inner, activation, block, gate) for inner in inner_widths
        )
        if block == "preact":
            self.head = nn.Sequential(nn.BatchNorm1d(width_), build_activation(activation))
        else:
            self.head = nn.Identity()
        self.output = nn.Linear(width_, num_classes)
        self._initialise()
        if branch_init == "zero":
            with torch.no_grad():
                for b in self.blocks:
                    b.outer.weight.zero_()
                    b.outer.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.projection(x.flatten(1))
        for block in self.blocks:
            x = block(x)
        return self.output(self.head(x))

    def path(self) -> list[tuple[str, nn.Module]]:
        """Every Linear, BatchNorm and activation in the order the input meets them (as
        ResidualBlock.path), input to output."""
        if isinstance(self.projection, HiddenLayer):
            steps = [("linear", self.projection.linear), ("act", self.projection.act)]
        else:
            steps = [("linear", self.projection)]
        for block in self.blocks:
            steps += block.path()
        if isinstance(self.head, nn.Sequential):
            steps += [("norm", self.head[0]), ("act", self.head[1])]
        return [*steps, ("linear", self.output)]

    def tracked_layers(self) -> OrderedDict[str, nn.Linear]:
        linears = [module for kind, module in self.path() if kind == "linear"]
        return OrderedDict((layer_name(i + 1), lin) for i, lin in enumerate(linears))

    def _following(self, kind: str) -> OrderedDict[str, nn.Module]:
        """The modules of `kind` keyed by the Linear layer whose output they receive first
        (through the skip sum: with `preact`, the next block's BatchNorm follows W2)."""
        out: OrderedDict[str, nn.Module] = OrderedDict()
        names = {id(lin): name for name, lin in self.tracked_layers().items()}
        current = None
        for k, module in self.path():
            if k == "linear":
                current = names[id(module)]
            elif k == kind:
                out[current] = module
        return out

    def activation_modules(self) -> OrderedDict[str, nn.Module]:
        return self._following("act")

    def norm_modules(self) -> OrderedDict[str, nn.Module]:
        return self._following("norm")

    def residual_blocks(self) -> OrderedDict[str, ResidualBlock]:
        names = {id(lin): name for name, lin in self.tracked_layers().items()}
        return OrderedDict((names[id(block.outer)], block) for block in self.blocks)
