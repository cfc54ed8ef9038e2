"""A population: M models of one architecture trained together as one vectorised model.

A sweep's seeds and learning rates are M small nets that each use a CPU core or a GPU
poorly (a 4x128 step is under 1 ms on a CPU core and launch-bound on a GPU).
`Population(members)` runs them as one: `population(x)` takes x of shape (M, B, ...),
member m's batch at x[m], and returns (M, B, outputs), equal to each member's own forward
on its own batch.

Each member is an ordinary TrackedModel built exactly as its separate run builds it (so
its init is bit-identical by construction) and keeps its own nn.Parameters and BatchNorm
buffers, so optimizers, callbacks and checkpoints keep working on the members. `Stacks`
lays each of them out as one slice of an (M, ...) tensor: member m's Parameter is set
(`Tensor.set_`) to view slice m, so the members' values live in the stacked tensors and
nothing is copied per step. The forward runs each Linear layer as one torch.baddbmm on the
stacked weights, BatchNorm as one F.batch_norm over the members' channels side by side
(updating the stacked running stats, which are the members' own), and the ReZero gates as
one stacked tensor. Backward fills the stacked tensors' gradients, and a post-accumulate
hook hands each member's Parameter its slice as its `.grad` (a view, added to one it
already has), so each member gets exactly its own gradient:

- Lightning: a LightningModule holds the members, its training_step gathers each
  member's batch into (M, B, ...), calls the stacked forward and returns the sum of the
  members' mean losses (each member's gradient is that of its own loss);
- per-member learning rates: one torch optimizer with one param group per member
  (`[{"params": m.parameters(), "lr": lr_m} for m, lr_m in ...]`), the way torch itself
  gives groups of parameters their own hyperparameters; its in-place updates of a
  member's Parameter are updates of the stacked tensor;
- a member's checkpoint is its own `state_dict()` (cloned: its tensors are views).

Stacks are built once the members sit on their device: `Module.to` gives a Parameter new
storage, so moving the members afterwards needs new Stacks.

Why not torch.func (stack_module_state + functional_call + vmap): stack_module_state copies
the members' parameters into new leaf tensors, so the members' own Parameters would no
longer be the ones trained (the optimizer, the callbacks and the checkpoints would have to
be pointed at the copies and back), and BatchNorm's in-place running-stat updates under
vmap need workarounds.

The stacked forward mirrors models.py's forwards (MLP, BNMLP, ResMLP with every block form
and branch init); tests/test_population.py pins it to each member's own forward, gradient,
BatchNorm state and SGD trajectory. Forward hooks on the members' modules do not fire
here: diagnostics that hook a member (ActivationMonitor's probe) run the member's own
forward.

Measured (bench/bench_population.py --parts engine, the tutorial's 4x128 net, one CPU
thread): 1.12x (8 members) and 1.24x (16) the speed of as many plain PyTorch loops, per
member; stacking the weights with torch.stack in every forward instead was 0.71-0.85x.
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


class Stacks:
    """Every parameter and buffer of M same-shaped members as one (M, ...) tensor, each
    member's own tensor set to view its slice (module docstring). `stacks[t]` is the
    stacked tensor whose slice 0 is member 0's tensor `t`."""

    def __init__(self, members: Sequence[nn.Module]) -> None:
        self._by_first: dict[int, torch.Tensor] = {}
        with torch.no_grad():
            for named in zip(*(m.named_parameters() for m in members), strict=True):
                params = [p for _, p in named]
                stacked = torch.stack([p.detach() for p in params]).requires_grad_()
                self._share(stacked, params)
                stacked.register_post_accumulate_grad_hook(self._hand_out(params))
            for named in zip(*(m.named_buffers() for m in members), strict=True):
                buffers = [b for _, b in named]
                self._share(torch.stack(buffers), buffers)

    def _share(self, stacked: torch.Tensor, tensors: list[torch.Tensor]) -> None:
        for i, tensor in enumerate(tensors):
            tensor.set_(stacked.detach()[i])  # the member's own tensor, now a slice
        self._by_first[id(tensors[0])] = stacked

    @staticmethod
    def _hand_out(params: list[nn.Parameter]):
        """After backward: member m's `.grad` is slice m of the stacked gradient."""

        def hook(stacked: torch.Tensor) -> None:
            grad, stacked.grad = stacked.grad, None
            for i, param in enumerate(params):
                if param.grad is None:
                    param.grad = grad[i]
                else:  # accumulating over batches, as autograd would
                    param.grad.add_(grad[i])

        return hook

    def __getitem__(self, first: torch.Tensor) -> torch.Tensor:
        return self._by_first[id(first)]


class Population(nn.Module):
    """M members of one architecture run as one model; see the module docstring. Build it
    once the members are on their device."""

    def __init__(self, members: Sequence[TrackedModel]) -> None:
        super().__init__()
        check_members(members)
        self.members = nn.ModuleList(members)
        self.stacks = Stacks(members)

    def __len__(self) -> int:
        return len(self.members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(M, B, ...) inputs, member m's batch at x[m] -> (M, B, outputs)."""
        return stacked_forward(list(self.members), x, self.stacks)


def stacked_forward(
    members: Sequence[TrackedModel], x: torch.Tensor, stacks: Stacks
) -> torch.Tensor:
    """Every member's forward on its own batch: (M, B, ...) inputs, member m's at x[m], to
    (M, B, outputs), with the members' tensors stacked in `stacks`."""
    if x.dim() < 3 or x.shape[0] != len(members):
        raise ValueError(
            f"a population of {len(members)} takes inputs of shape "
            f"({len(members)}, batch, ...), not {tuple(x.shape)}"
        )
    h = x.flatten(2).transpose(1, 2)  # (M, features, B): see `linear`
    first = members[0]
    if isinstance(first, ResMLP):
        if isinstance(first.projection, HiddenLayer):
            h = hidden_layer(first.projection, h, stacks)
        else:
            h = linear(first.projection, h, stacks)
        for block in first.blocks:
            h = residual_block(block, h, stacks)
        if isinstance(first.head, nn.Sequential):
            h = first.head[1](batch_norm(first.head[0], h, stacks))
    else:
        for layer in first.hidden:
            h = hidden_layer(layer, h, stacks)
    return linear(first.output, h, stacks).transpose(1, 2)


def linear(layer: nn.Linear, h: torch.Tensor, stacks: Stacks) -> torch.Tensor:
    """Member m's W_m @ h[m] + b_m for all m at once: one bmm on the stacked weights
    (`layer` is member 0's; the others' are the other slices).

    Activations are feature-major, (M, features, B), so each member's weight gradient comes
    out of bmm as a contiguous (out, in) slice; with (M, B, features) it is a transposed one
    that every step copies into .grad's layout (measured: 2.1 ms against 1.5 ms for a
    784->128 layer's forward and backward, 8 members, one CPU thread).
    """
    if layer.bias is None:
        return torch.bmm(stacks[layer.weight], h)
    return torch.baddbmm(stacks[layer.bias].unsqueeze(2), stacks[layer.weight], h)


def batch_norm(norm: nn.Module, h: torch.Tensor, stacks: Stacks) -> torch.Tensor:
    """Each member's BatchNorm1d on its own batch, as one F.batch_norm over the members'
    channels side by side ((B, M*C)); it updates the stacked running stats in place,
    which are the members' own."""
    if isinstance(norm, nn.Identity):
        return h
    m, c, b = h.shape
    tracked = norm.running_mean is not None
    use_batch_stats = norm.training or not tracked
    momentum = norm.momentum
    if norm.training and tracked:
        stacks[norm.num_batches_tracked].add_(1)
        if momentum is None:  # a cumulative average, as _BatchNorm computes it
            momentum = 1.0 / float(norm.num_batches_tracked)
    out = F.batch_norm(
        h.reshape(m * c, b).T,
        stacks[norm.running_mean].view(-1) if tracked else None,
        stacks[norm.running_var].view(-1) if tracked else None,
        stacks[norm.weight].view(-1) if norm.affine else None,
        stacks[norm.bias].view(-1) if norm.affine else None,
        use_batch_stats,
        momentum or 0.0,
        norm.eps,
    )
    return out.T.reshape(m, c, b)


def hidden_layer(layer: HiddenLayer, h: torch.Tensor, stacks: Stacks) -> torch.Tensor:
    """HiddenLayer.forward for all members: Linear -> [BatchNorm] -> act -> [BatchNorm]."""
    z = linear(layer.linear, h, stacks)
    if layer.bn_position == "before":
        return layer.act(batch_norm(layer.norm, z, stacks))
    return batch_norm(layer.norm, layer.act(z), stacks)


def residual_block(block: ResidualBlock, x: torch.Tensor, stacks: Stacks) -> torch.Tensor:
    """ResidualBlock.forward for all members, in its three forms, gated or not."""
    if block.form == "preact":
        h = block.act_in(batch_norm(block.norm_in, x, stacks))
        h = hidden_layer(block.inner, h, stacks) if block.inner is not None else h
        return x + gated(block, linear(block.outer, h, stacks), stacks)
    h = hidden_layer(block.inner, x, stacks) if block.inner is not None else x
    branch = linear(block.outer, h, stacks)
    if block.form == "post":
        return block.act(x + gated(block, branch, stacks))
    return x + gated(block, block.act(branch), stacks)


def gated(block: ResidualBlock, branch: torch.Tensor, stacks: Stacks) -> torch.Tensor:
    """The branch times each member's own ReZero gate (a 0-d Parameter), when gated."""
    if block.gate is None:
        return branch
    return stacks[block.gate].view(-1, 1, 1) * branch
