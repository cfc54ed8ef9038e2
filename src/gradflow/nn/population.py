"""A population: M models of one architecture trained together as one vectorised model.

A sweep's seeds and learning rates are M small nets that each use a CPU core or a GPU
poorly (a 4x128 step is under 1 ms on a CPU core and launch-bound on a GPU).
`Population(members)` runs them as one: `population(x)` takes x of shape (M, B, ...),
member m's batch at x[m], and returns (M, B, outputs), equal to each member's own forward
on its own batch.

Each member is an ordinary TrackedModel built exactly as its separate run builds it (so
its init is bit-identical by construction) and keeps its own nn.Parameters and BatchNorm
buffers; the population holds them in a ModuleList. The forward stacks the members'
weights along a member dimension inside the autograd graph (torch.stack) and runs each
Linear layer as one torch.baddbmm, so backward hands each member's Parameter exactly its
own gradient, and optimizers, callbacks and checkpoints keep working on the members:

- Lightning: a LightningModule holds the Population (or its members), its training_step
  gathers each member's batch into (M, B, ...), calls the population and returns the sum
  of the members' mean losses (each member's gradient is that of its own loss);
- per-member learning rates: one torch optimizer with one param group per member
  (`[{"params": m.parameters(), "lr": lr_m} for m, lr_m in ...]`), the way torch itself
  gives groups of parameters their own hyperparameters;
- a member's checkpoint is its own `state_dict()`.

Why stacked baddbmm rather than torch.func (stack_module_state + functional_call + vmap):
stack_module_state copies the members' parameters into new leaf tensors, so the members'
own Parameters would no longer be the ones trained (the optimizer, the callbacks and the
checkpoints would have to be pointed at the copies and back), and BatchNorm's in-place
running-stat updates under vmap need workarounds. Stacking inside forward keeps the
members' Parameters the leaves, and BatchNorm is one F.batch_norm call over the members'
channels laid side by side, its running stats written back to each member.

The stacked forward mirrors models.py's forwards (MLP, BNMLP, ResMLP with every block form
and branch init); tests/test_population.py pins it to each member's own forward, gradient,
BatchNorm state and SGD trajectory. Forward hooks on the members' modules do not fire
here: diagnostics that hook a member (ActivationMonitor's probe) run the member's own
forward.

Measured (bench/bench_population.py, one CPU thread, the tutorial's 4x128 net): 0.7-0.85x
the speed of M plain loops, the per-step stack of the weights being the difference; on a
CPU a population pays off through what it runs once for M members (Lightning's per-step
hooks, the process start-up), on a GPU also through M times fewer kernel launches.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from gradflow.errors import ConfigError, shown
from gradflow.nn.models import MLP, HiddenLayer, ResidualBlock, ResMLP, TrackedModel

SUPPORTED = (MLP, ResMLP)  # BNMLP is an MLP


def architecture(model: nn.Module) -> dict[str, Any]:
    """What members must share to be stacked: class, activation, block form and branch
    init, BatchNorm settings, device and dtype, every parameter's and buffer's name and shape."""
    first = next(model.parameters())
    arch: dict[str, Any] = {"class": type(model).__name__}
    arch.update(device=str(first.device), dtype=str(first.dtype))
    for key in ("activation_spec", "block", "branch_init", "bn_position"):
        if hasattr(model, key):
            arch[key.removesuffix("_spec")] = getattr(model, key)
    for name, module in model.named_modules():
        if isinstance(module, nn.BatchNorm1d):
            for key in ("momentum", "eps", "affine", "track_running_stats"):
                arch[f"{name}.{key}"] = getattr(module, key)
    for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
        arch[name] = tuple(tensor.shape)
    return arch


def check_members(members: Sequence[nn.Module]) -> None:
    """Raise a one-sentence ConfigError unless every member has member 0's architecture."""
    if len(members) == 0:
        raise ConfigError("members", [], "a population needs at least one member")
    for i, member in enumerate(members):
        if not isinstance(member, SUPPORTED):
            raise ConfigError(
                f"members[{i}]",
                type(member).__name__,
                "a population stacks gradflow's MLP, BNMLP and ResMLP only",
            )
    first = architecture(members[0])
    for i, member in enumerate(members[1:], start=1):
        arch = architecture(member)
        for key in [*first, *(k for k in arch if k not in first)]:
            if arch.get(key) != first.get(key):
                raise ConfigError(
                    f"members[{i}].{key}",
                    arch.get(key),
                    "a population's members must share member 0's architecture "
                    f"({key}={shown(first.get(key))})",
                )


class Population(nn.Module):
    """M members of one architecture run as one model; see the module docstring."""

    def __init__(self, members: Sequence[TrackedModel]) -> None:
        super().__init__()
        check_members(members)
        self.members = nn.ModuleList(members)

    def __len__(self) -> int:
        return len(self.members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(M, B, ...) inputs, member m's batch at x[m] -> (M, B, outputs)."""
        return stacked_forward(list(self.members), x)


def stacked_forward(members: Sequence[TrackedModel], x: torch.Tensor) -> torch.Tensor:
    """Every member's forward on its own batch: (M, B, ...) inputs, member m's at x[m], to
    (M, B, outputs). The members must share an architecture (`check_members`)."""
    if x.dim() < 3 or x.shape[0] != len(members):
        raise ValueError(
            f"a population of {len(members)} takes inputs of shape "
            f"({len(members)}, batch, ...), not {tuple(x.shape)}"
        )
    h = x.flatten(2).transpose(1, 2)  # (M, features, B): see `linear`
    members = list(members)
    if isinstance(members[0], ResMLP):
        projections = [m.projection for m in members]
        if isinstance(projections[0], HiddenLayer):
            h = hidden_layer(projections, h)
        else:
            h = linear(projections, h)
        for blocks in zip(*(m.blocks for m in members), strict=True):
            h = residual_block(list(blocks), h)
        if isinstance(members[0].head, nn.Sequential):
            h = members[0].head[1](batch_norm([m.head[0] for m in members], h))
    else:
        for layers in zip(*(m.hidden for m in members), strict=True):
            h = hidden_layer(list(layers), h)
    return linear([m.output for m in members], h).transpose(1, 2)


def linear(layers: Sequence[nn.Linear], h: torch.Tensor) -> torch.Tensor:
    """Member m's W_m @ h[m] + b_m for all m at once: one bmm on the stacked weights.

    Activations are feature-major, (M, features, B), so each member's weight gradient comes
    out of bmm as a contiguous (out, in) slice; with (M, B, features) it is a transposed one
    that every step copies into .grad's layout (measured: 2.1 ms against 1.5 ms for a
    784->128 layer's forward and backward, 8 members, one CPU thread).
    """
    weight = torch.stack([layer.weight for layer in layers])
    if layers[0].bias is None:
        return torch.bmm(weight, h)
    bias = torch.stack([layer.bias for layer in layers]).unsqueeze(2)
    return torch.baddbmm(bias, weight, h)


def batch_norm(norms: Sequence[nn.Module], h: torch.Tensor) -> torch.Tensor:
    """Each member's BatchNorm1d on its own batch, as one F.batch_norm over the members'
    channels side by side ((B, M*C)); the updated running stats go back to each member."""
    if isinstance(norms[0], nn.Identity):
        return h
    first, (m, c, b) = norms[0], h.shape
    if any(norm.training != first.training for norm in norms):
        raise ValueError("a population's members must all be in train mode or all in eval mode")
    tracked = first.running_mean is not None
    use_batch_stats = first.training or not tracked
    momentum = first.momentum
    if first.training and tracked:
        for norm in norms:
            norm.num_batches_tracked.add_(1)
        if momentum is None:  # a cumulative average, as _BatchNorm computes it
            momentum = 1.0 / float(first.num_batches_tracked)
    running_mean = torch.cat([n.running_mean for n in norms]) if tracked else None
    running_var = torch.cat([n.running_var for n in norms]) if tracked else None
    weight = torch.cat([n.weight for n in norms]) if first.affine else None
    bias = torch.cat([n.bias for n in norms]) if first.affine else None
    side_by_side = h.reshape(m * c, b).T
    out = F.batch_norm(
        side_by_side,
        running_mean,
        running_var,
        weight,
        bias,
        use_batch_stats,
        momentum or 0.0,
        first.eps,
    )
    if first.training and tracked:
        with torch.no_grad():
            for norm, mean, var in zip(
                norms, running_mean.split(c), running_var.split(c), strict=True
            ):
                norm.running_mean.copy_(mean)
                norm.running_var.copy_(var)
    return out.T.reshape(m, c, b)


def hidden_layer(layers: Sequence[HiddenLayer], h: torch.Tensor) -> torch.Tensor:
    """HiddenLayer.forward for all members: Linear -> [BatchNorm] -> act -> [BatchNorm]."""
    first = layers[0]
    z = linear([layer.linear for layer in layers], h)
    norms = [layer.norm for layer in layers]
    if first.bn_position == "before":
        return first.act(batch_norm(norms, z))
    return batch_norm(norms, first.act(z))


def residual_block(blocks: Sequence[ResidualBlock], x: torch.Tensor) -> torch.Tensor:
    """ResidualBlock.forward for all members, in its three forms, gated or not."""
    first = blocks[0]
    inner = [block.inner for block in blocks] if first.inner is not None else None
    outer = [block.outer for block in blocks]
    if first.form == "preact":
        h = first.act_in(batch_norm([block.norm_in for block in blocks], x))
        h = hidden_layer(inner, h) if inner else h
        return x + gated(blocks, linear(outer, h))
    h = hidden_layer(inner, x) if inner else x
    branch = linear(outer, h)
    if first.form == "post":
        return first.act(x + gated(blocks, branch))
    return x + gated(blocks, first.act(branch))


def gated(blocks: Sequence[ResidualBlock], branch: torch.Tensor) -> torch.Tensor:
    """The branch times each member's own ReZero gate (a 0-d Parameter), when gated."""
    if blocks[0].gate is None:
        return branch
    return torch.stack([block.gate for block in blocks]).view(-1, 1, 1) * branch
