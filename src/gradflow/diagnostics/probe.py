"""The probe: one fixed batch pushed through the model with forward hooks attached.

Hooks exist only inside `capture_probe`. The forward runs in train mode, as the optimizer
sees the model (BatchNorm normalises with the batch's statistics); the running statistics
and every other buffer are restored afterwards, and the RNG state too, so probing leaves
training bit-for-bit unchanged.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field

import lightning as L
import torch
from torch import nn

from gradflow.nn.models import TrackedModel
from gradflow.tasks import Task

# The loss a probe backpropagates when the module names no task: MNIST's.
DEFAULT_TASK = Task("multiclass")


@dataclass
class ProbeCapture:
    """What one probe saw, per hidden layer name; tensors are detached, (samples, units)."""

    preacts: dict[str, torch.Tensor] = field(default_factory=dict)
    acts: dict[str, torch.Tensor] = field(default_factory=dict)
    # ∂ℓ_i/∂z: each sample's own loss w.r.t. its pre-activation (empty without backprop).
    signals: dict[str, torch.Tensor] = field(default_factory=dict)
    # ∂L/∂W and ∂L/∂b of the batch's mean loss, as a training step sees them, per tracked
    # layer (the output layer too; empty unless asked for; no entry for a layer without bias).
    weight_grads: dict[str, torch.Tensor] = field(default_factory=dict)
    bias_grads: dict[str, torch.Tensor] = field(default_factory=dict)
    bn_in: dict[str, torch.Tensor] = field(default_factory=dict)
    bn_out: dict[str, torch.Tensor] = field(default_factory=dict)
    res_skip: dict[str, torch.Tensor] = field(default_factory=dict)
    res_branch: dict[str, torch.Tensor] = field(default_factory=dict)


def probe_batch(
    trainer: L.Trainer, pl_module: L.LightningModule, n: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """n samples on the module's device: the datamodule's `probe_batch(n)` when it has one,
    else the first n of the validation loader, else of the training loader."""
    datamodule = getattr(trainer, "datamodule", None)
    if callable(getattr(datamodule, "probe_batch", None)):
        x, y = datamodule.probe_batch(n)
    else:
        loader = _first_loader(trainer.val_dataloaders)
        if loader is None:
            loader = _first_loader(trainer.train_dataloader)
        if loader is None:
            raise RuntimeError(
                "ActivationMonitor found no probe data: give the datamodule a probe_batch(n) "
                "method, or the Trainer a validation or training dataloader"
            )
        x, y = _first_samples(loader, n)
    # A normal (not inference-mode) tensor of its own: the probe differentiates through it.
    with torch.inference_mode(False):
        return x.to(pl_module.device).clone(), y.to(pl_module.device).clone()


def _first_loader(loaders: object) -> Iterable | None:
    if isinstance(loaders, Mapping):
        loaders = next(iter(loaders.values()), None)
    elif isinstance(loaders, list | tuple):
        loaders = loaders[0] if loaders else None
    return loaders


def _first_samples(loader: Iterable, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys, have = [], [], 0
    with torch.random.fork_rng(devices=[]):  # a shuffled loader must not move training's RNG
        for x, y, *_ in loader:
            xs.append(x)
            ys.append(y)
            have += len(x)
            if have >= n:
                break
    if not xs:
        raise RuntimeError("ActivationMonitor's probe dataloader yielded no batches")
    return torch.cat(xs)[:n], torch.cat(ys)[:n]


@contextmanager
def _probe_state(model: nn.Module, device: torch.device) -> Iterator[None]:
    """Train mode, and afterwards every module's mode, every buffer and the RNG as they were."""
    modes = {m: m.training for m in model.modules()}
    buffers = [(b, b.detach().clone()) for b in model.buffers()]
    rng_devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=rng_devices):
        # Train mode: BatchNorm uses the probe's batch statistics, as training does (eval mode
        # would use running stats, still at their init values at step 0); the buffers it
        # updates are restored below.
        model.train()
        try:
            yield
        finally:
            with torch.no_grad():
                for buffer, saved in buffers:
                    buffer.copy_(saved)
            for module, mode in modes.items():
                module.training = mode


def capture_probe(
    model: TrackedModel,
    x: torch.Tensor,
    y: torch.Tensor,
    backprop: bool = True,
    weight_grads: bool = False,
    task: Task = DEFAULT_TASK,
) -> ProbeCapture:
    """Run the probe batch once; with `backprop`, also ∂ℓ_i/∂z for every hidden layer, and
    with `weight_grads` the tracked layers' weight and bias gradients, from the same
    backward pass of `task`'s loss (the one training minimises).

    The backward uses torch.autograd.grad w.r.t. the captured pre-activations (and weights),
    so no parameter's `.grad` is touched.
    """
    live: dict[str, dict[str, torch.Tensor]] = {
        kind: {} for kind in ("preacts", "acts", "bn_in", "bn_out", "res_skip", "res_branch")
    }

    def keep(kind: str, name: str, take_input: bool):
        def hook(_module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor):
            live[kind][name] = inputs[0] if take_input else output

        return hook

    handles = []
    try:
        for name, act in model.activation_modules().items():
            handles.append(act.register_forward_hook(keep("preacts", name, True)))
            handles.append(act.register_forward_hook(keep("acts", name, False)))
        for name, norm in model.norm_modules().items():
            handles.append(norm.register_forward_hook(keep("bn_in", name, True)))
            handles.append(norm.register_forward_hook(keep("bn_out", name, False)))
        for name, block in model.residual_blocks().items():
            handles.append(block.register_forward_hook(keep("res_skip", name, True)))
            handles.append(block.outer.register_forward_hook(keep("res_branch", name, False)))
        with (
            torch.inference_mode(False),
            _probe_state(model, x.device),
            torch.set_grad_enabled(backprop or weight_grads),
        ):
            logits = model(x)
            signals: dict[str, torch.Tensor] = {}
            weights: dict[str, torch.Tensor] = {}
            biases: dict[str, torch.Tensor] = {}
            if backprop or weight_grads:
                names = list(live["preacts"]) if backprop else []
                layers = model.tracked_layers() if weight_grads else {}
                with_bias = [n for n, layer in layers.items() if layer.bias is not None]
                loss = task.loss(logits, y, reduction="sum")  # sum: per-sample gradients
                inputs = [live["preacts"][n] for n in names]
                params = [w.weight for w in layers.values()] + [layers[n].bias for n in with_bias]
                grads = torch.autograd.grad(loss, inputs + params)
                signals = dict(zip(names, grads[: len(names)], strict=True))
                # The mean loss's gradient, as the optimizer sees it: the sum's, over the batch.
                mean = [g / len(y) for g in grads[len(names) :]]
                weights = dict(zip(layers, mean[: len(layers)], strict=True))
                biases = dict(zip(with_bias, mean[len(layers) :], strict=True))
    finally:
        for handle in handles:
            handle.remove()
    detached = {kind: {n: t.detach() for n, t in d.items()} for kind, d in live.items()}
    return ProbeCapture(**detached, signals=signals, weight_grads=weights, bias_grads=biases)
