"""ActivationMonitor: what each hidden layer does to a fixed probe batch.

The probe (the datamodule's `probe_batch(probe_size)`, else the first validation samples)
runs at step 0 (before any update) and after every `every_n_epochs`-th epoch, logged at
the epoch's last optimizer step like every end-of-epoch value (`epoch_end_step`). A
resumed run keeps its step-0 probe (checkpointed) and does not probe again at its start.
Per hidden layer k:

- `act_mean/layer_k`, `act_std/layer_k`: mean and standard deviation of the activations
  over all (sample, unit) pairs.
- `act_saturated/layer_k`, `act_dead/layer_k`: saturation, |f'(z)| < 0.1·max|f'|
  from the activation registry; the fraction of (sample, unit) pairs, and of units
  saturated on every probe sample.
- `grad_signal/layer_k`: RMS of ∂ℓ_i/∂z, each sample's own loss differentiated w.r.t. its
  pre-activation z (the backpropagated signal, independent of the batch size).
- BNMLP and preact ResMLP: `bn_in_std/layer_k` and `bn_out_std/layer_k`, the std of the
  BatchNorm's input and output.
- ResMLP, at the layer whose activation follows a residual sum: `res_skip_std/layer_k`
  (the skip path, the block's input) and `res_branch_std/layer_k` (the residual branch).
- With `percentile_units` n > 0: `preact_p15/layer_k/unit_j`, `preact_p50/...`,
  `preact_p85/...`, the 15th, 50th and 85th percentiles over the probe batch of the input
  of n units per hidden layer (unit j, 0-based, drawn once by `percentile_seed`): how a
  sigmoid's input distribution drifts during training (Ioffe & Szegedy 2015, Fig. 1b, c).
- Histograms `preactivations/layer_k`, `activations/layer_k` at each probe; the picture
  `figures/activation_histograms` (a grid, one panel per hidden layer) at step 0 and every
  `figures_every_n_epochs`-th epoch and the last.

All scalars of one probe reach the host in one transfer.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_warn

from gradflow.diagnostics.common import (
    epoch_due,
    epoch_end_step,
    finite_values,
    log_histograms,
    log_image,
    log_scalars,
    tensorboard_writers,
    tracked_model,
)
from gradflow.diagnostics.figures import ActivationHistogramGrid, shared_chart
from gradflow.diagnostics.probe import (
    DEFAULT_TASK,
    ProbeCapture,
    capture_probe,
    probe_batch,
)
from gradflow.diagnostics.stats import norms, rms, saturation_stats, spread, unit_percentiles
from gradflow.names import GRAD_NORM, GRAD_NORM_BIAS, PREACT_PERCENTILES, percentile_tag
from gradflow.nn.models import TrackedModel
from gradflow.rules.diagnostics import activation_monitor_rules

Stats = dict[str, Any]


def sample_units(model: TrackedModel, n: int, seed: int) -> dict[str, list[int]]:
    """n units of each hidden layer (all of a narrower one), sorted, drawn without
    replacement by one generator seeded by `seed`, layer after layer: the same units
    whenever the model's widths and the seed are."""
    generator = torch.Generator().manual_seed(seed)
    units = {}
    layers = model.tracked_layers()
    for name in model.activation_modules():
        width = layers[name].out_features
        units[name] = sorted(torch.randperm(width, generator=generator)[:n].tolist())
    return units


def probe_statistics(
    model: TrackedModel, capture: ProbeCapture, units: dict[str, list[int]] | None = None
) -> dict[str, torch.Tensor]:
    """Every scalar of one probe as 0-d device tensors, keyed by their TensorBoard tag
    (`grad_norm/layer_k` and `grad_norm_bias/layer_k` too when the capture holds the
    weight and bias gradients, and the percentiles of the pre-activation of `units` per
    hidden layer)."""
    out: dict[str, torch.Tensor] = {}
    for name, z in capture.preacts.items():
        act = capture.acts[name]
        saturated, dead = saturation_stats(model.activation_spec, z)
        out[f"act_mean/{name}"] = act.float().mean()
        out[f"act_std/{name}"] = spread(act)
        out[f"act_saturated/{name}"] = saturated
        out[f"act_dead/{name}"] = dead
        if name in capture.signals:
            out[f"grad_signal/{name}"] = rms(capture.signals[name])
        if units and name in units:
            q = torch.tensor([p / 100 for p in PREACT_PERCENTILES], device=z.device)
            table = unit_percentiles(z, torch.tensor(units[name], device=z.device), q)
            for i, p in enumerate(PREACT_PERCENTILES):
                for j, unit in enumerate(units[name]):
                    out[percentile_tag(p, name, unit)] = table[i, j]
    for kind, tensors in (
        ("bn_in_std", capture.bn_in),
        ("bn_out_std", capture.bn_out),
        ("res_skip_std", capture.res_skip),
        ("res_branch_std", capture.res_branch),
    ):
        out.update({f"{kind}/{name}": spread(t) for name, t in tensors.items()})
    for tag, grads in ((GRAD_NORM, capture.weight_grads), (GRAD_NORM_BIAS, capture.bias_grads)):
        layers = list(grads)
        out.update(
            {f"{tag}/{n}": v for n, v in zip(layers, norms(list(grads.values())), strict=True)}
        )
    return out


class ActivationMonitor(L.Callback):
    """Probes activations, saturation and the backpropagated signal on a fixed batch.

    Args:
        probe_size: samples in the probe batch.
        every_n_epochs: probe after every N-th epoch (and always at step 0); 0: step 0 only.
        histograms: log `preactivations/` and `activations/` histograms at each probe.
        figures_every_n_epochs: log the `figures/activation_histograms` grid at step 0 and
            at the probes of every N-th epoch and of the last one (0: never).
        backprop_signal: also run one backward pass for `grad_signal/layer_k`.
        percentile_units: units per hidden layer whose pre-activation percentiles are
            logged (`preact_p15/layer_k/unit_j`, ...); 0: none.
        percentile_seed: seeds which units.
    """

    def __init__(
        self,
        probe_size: int = 256,
        every_n_epochs: int = 1,
        histograms: bool = True,
        figures_every_n_epochs: int = 5,
        backprop_signal: bool = True,
        percentile_units: int = 0,
        percentile_seed: int = 0,
    ) -> None:
        activation_monitor_rules(
            probe_size=probe_size,
            every_n_epochs=every_n_epochs,
            figures_every_n_epochs=figures_every_n_epochs,
            percentile_units=percentile_units,
            percentile_seed=percentile_seed,
        )
        self.probe_size, self.every_n_epochs = probe_size, every_n_epochs
        self.histograms = histograms
        self.figures_every_n_epochs = figures_every_n_epochs
        self.backprop_signal = backprop_signal
        self.percentile_units, self.percentile_seed = percentile_units, percentile_seed
        self._units: dict[str, list[int]] = {}
        self.first_probe: Stats | None = None  # {"step": int, tag: value, ...}
        self.last_probe: Stats | None = None
        self._batch: tuple[torch.Tensor, torch.Tensor] | None = None
        self._grid = shared_chart(ActivationHistogramGrid)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._batch = probe_batch(trainer, pl_module, self.probe_size)
        model = tracked_model(pl_module)
        self._activation = model.activation_spec
        if self.percentile_units:
            self._units = sample_units(model, self.percentile_units, self.percentile_seed)
        if trainer.global_step == 0:  # a resumed run probed its start long ago
            self.probe(trainer, pl_module, step=0, figures=self.figures_every_n_epochs > 0)

    def state_dict(self) -> dict[str, Any]:
        return {"first_probe": self.first_probe}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.first_probe = state_dict.get("first_probe")

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.latest(trainer, pl_module)

    def latest(self, trainer: L.Trainer, pl_module: L.LightningModule) -> Stats | None:
        """The newest probe's scalars, probing first if this epoch's end is due one.

        Idempotent within a step, so another callback (the verdict) may call it at epoch end
        whichever of the two Lightning calls first.
        """
        every = self.every_n_epochs
        if every > 0 and (trainer.current_epoch + 1) % every == 0 and self._batch is not None:
            figures = epoch_due(trainer, self.figures_every_n_epochs)
            self.probe(trainer, pl_module, epoch_end_step(trainer), figures=figures)
        return self.last_probe

    def probe(
        self, trainer: L.Trainer, pl_module: L.LightningModule, step: int, figures: bool = False
    ) -> Stats:
        """Run the probe now and log what it saw at `step` (the picture too if `figures`),
        once per step: an epoch of one step ends at step 0, where the start was probed."""
        if self.last_probe is not None and self.last_probe["step"] == step:
            return self.last_probe
        model = tracked_model(pl_module)
        x, y = self._batch
        # The module's task (its loss) when it has one; a bare LightningModule trains MNIST's.
        task = getattr(pl_module, "task", DEFAULT_TASK)
        capture = capture_probe(model, x, y, backprop=self.backprop_signal, task=task)
        tensors = probe_statistics(model, capture, self._units)
        values = torch.stack(list(tensors.values())).tolist()  # the probe's one transfer
        scalars = dict(zip(tensors, values, strict=True))
        log_scalars(trainer, scalars, step)
        self.last_probe = {"step": step, **scalars}
        self.first_probe = self.first_probe or self.last_probe
        writers = tensorboard_writers(trainer)
        if writers and (self.histograms or figures):
            title = f"after epoch {trainer.current_epoch + 1}" if step else "at initialisation"
            self._log_pictures(writers, capture, scalars, step, title if figures else None)
        return self.last_probe

    def _log_pictures(
        self, writers, capture: ProbeCapture, scalars: Stats, step: int, title: str | None
    ) -> None:
        """The histograms (if asked for) and, with a `title`, the histogram grid picture."""
        dropped = 0
        if self.histograms:
            tensors = {f"preactivations/{name}": z for name, z in capture.preacts.items()}
            tensors.update({f"activations/{name}": a for name, a in capture.acts.items()})
            dropped = log_histograms(writers, tensors, step)
        if title is not None:
            values = {name: finite_values(a)[0] for name, a in capture.acts.items()}
            notes = {name: f"sat {scalars[f'act_saturated/{name}']:.2f}" for name in values}
            log_image(
                writers,
                "figures/activation_histograms",
                self._grid.draw(values, notes, title, self._activation),
                step,
            )
        if dropped:
            rank_zero_warn(
                f"ActivationMonitor: {dropped} non-finite values left out of the "
                f"step-{step} histograms"
            )

    def summary_fields(self) -> dict[str, Any]:
        """The first and the last probe's scalars, keyed by TensorBoard tag, for summary.json."""
        return {"activations": {"first_probe": self.first_probe, "last_probe": self.last_probe}}
