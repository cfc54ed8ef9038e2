"""GradientMonitor: per-layer weight-gradient norms, update ratios and the divergence stop.

Scalars, every `log_every_n_steps` optimizer steps (step = optimizer steps taken before
this one, so step 0 is the gradient at initialisation):

- `grad_norm/layer_k`: L2 norm of layer k's weight gradient, before clipping/unscaled.
- `grad_norm_bias/layer_k`: L2 norm of its bias gradient (layers with a bias): how fast the
  layer learns, as Nielsen measures it (ch. 5).
- `grad_norm/total`: L2 norm over every parameter's gradient (what clipping would see).
- `grad_norm/first_last_ratio`: `grad_norm/layer_01` / the output layer's.
- `update_ratio/layer_k`: lr * ‖∇W‖ / ‖W‖, the relative size of plain SGD's step.

Histograms `gradients/layer_k` and `weights/layer_k` at step 0 (the gradient at
initialisation) and at the last step of every `histogram_every_n_epochs`-th epoch (its
gradient and the weights it updates); the picture `figures/grad_norm_by_layer` (each
layer's median norm over the epoch's logged steps) at the end of every
`figures_every_n_epochs`-th epoch and of the last one. End-of-epoch values go to the
epoch's last optimizer step (`epoch_end_step`), with every other end-of-epoch value.

Divergence: a NaN/Inf loss or weight-gradient norm stops the run with DivergedError
naming the exact optimizer step and the layers whose gradient norm was not finite (or
"the loss"). Every step keeps a row on the device (each tracked layer's gradient norm and
the loss); the rows travel with the next logged step's transfer, or are read before
validation and at the epoch's end, so no step waits for the host. Up to
`log_every_n_steps` - 1 steps may run on after the bad one, and nothing they compute is
logged: the run stops before the next logged step, validation or end-of-epoch value.
Lightning's `detect_anomaly` is far slower and names no layer.

Cost at other steps: one norm per tracked layer's weight gradient, stacked with the loss,
on the device (about 30 µs on a CPU core for the tutorial's net); at a logged step one
norm per parameter, stacked on the device, and one device-to-host transfer.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable
from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_warn

from gradflow.diagnostics.common import (
    epoch_due,
    epoch_end_step,
    log_histograms,
    log_image,
    log_scalars,
    tensorboard_writers,
    tracked_model,
)
from gradflow.diagnostics.figures import GradNormChart, shared_chart
from gradflow.diagnostics.stats import norms
from gradflow.errors import DivergedError
from gradflow.names import FIRST_LAST_RATIO, GRAD_NORM, GRAD_NORM_BIAS
from gradflow.rules.diagnostics import gradient_monitor_rules

Row = dict[str, Any]


class GradientMonitor(L.Callback):
    """Logs per-layer gradient statistics at logged steps and stops a diverged run.

    Args:
        log_every_n_steps: optimizer steps between logged steps; None: the Trainer's
            `log_every_n_steps`; 0: never.
        histogram_every_n_epochs: gradient/weight histograms at step 0 and at the end of every
            N-th epoch (0: never).
        figures_every_n_epochs: the per-layer bar chart every N epochs and at the last
            (0: never).
    """

    def __init__(
        self,
        log_every_n_steps: int | None = None,
        histogram_every_n_epochs: int = 1,
        figures_every_n_epochs: int = 5,
    ) -> None:
        gradient_monitor_rules(
            log_every_n_steps=log_every_n_steps,
            histogram_every_n_epochs=histogram_every_n_epochs,
            figures_every_n_epochs=figures_every_n_epochs,
        )
        self.log_every_n_steps = log_every_n_steps
        self.histogram_every_n_epochs = histogram_every_n_epochs
        self.figures_every_n_epochs = figures_every_n_epochs
        self.first_row: Row | None = None  # the first logged step's norms (summary.json)
        self.last_row: Row | None = None
        self.diverged_at_step: int | None = None
        self.fetches = 0  # device-to-host transfers, for tests and benchmarks
        # The steps not yet checked for divergence, and their rows on the device: each
        # tracked layer's weight-gradient norm, then the loss.
        self._unchecked_steps: list[int] = []
        self._unchecked_rows: list[torch.Tensor] = []
        self._epoch_rows: list[Row] = []
        self._previous_rows: list[Row] = []
        self._loss: torch.Tensor | None = None
        self._histograms_due = False
        self._chart = shared_chart(GradNormChart)

    # -- set-up -----------------------------------------------------------------------
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        self._layers = tracked_model(pl_module).tracked_layers()
        self._weights = [layer.weight for layer in self._layers.values()]
        self._biases = [
            (n, layer.bias) for n, layer in self._layers.items() if layer.bias is not None
        ]
        self._params = [(n, p) for n, p in pl_module.named_parameters() if p.requires_grad]
        self._unchecked_steps, self._unchecked_rows = [], []

    def state_dict(self) -> dict[str, Any]:
        # Step 0's norms stay the run's first row however often it is resumed.
        return {"first_row": self.first_row}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.first_row = state_dict.get("first_row")

    def interval(self, trainer: L.Trainer) -> int:
        """Optimizer steps between logged steps (0: never)."""
        if self.log_every_n_steps is None:
            return trainer.log_every_n_steps
        return self.log_every_n_steps

    def is_logging_step(self, trainer: L.Trainer) -> bool:
        n = self.interval(trainer)
        return n > 0 and trainer.global_step % n == 0

    # -- hooks --------------------------------------------------------------------------
    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._epoch_rows:
            self._previous_rows = self._epoch_rows
        self._epoch_rows = []

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        every = self.histogram_every_n_epochs
        self._histograms_due = (
            every > 0
            and (trainer.current_epoch + 1) % every == 0
            and batch_idx + 1 >= trainer.num_training_batches  # the epoch's last step
        )

    def on_before_backward(
        self, trainer: L.Trainer, pl_module: L.LightningModule, loss: torch.Tensor
    ) -> None:
        self._loss = loss.detach()  # a reference, no sync: read only with the next fetch

    def on_before_optimizer_step(
        self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        step = trainer.global_step
        if self.is_logging_step(trainer):
            self._log_step(trainer, optimizer)  # watches this step too
        else:
            self._watch(step, norms([w.grad for w in self._weights]))
        if self._histograms_due:  # at the epoch's last step, its end-of-epoch step
            self._log_histograms(trainer, step)

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._stop_if_diverged()  # nothing evaluated on non-finite weights is logged

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.global_step == 0:
            return
        self._stop_if_diverged()  # before any end-of-epoch value (the callbacks' go first)
        step = epoch_end_step(trainer)
        writers = tensorboard_writers(trainer)
        medians = self.epoch_medians()
        if not (writers and medians and epoch_due(trainer, self.figures_every_n_epochs)):
            return
        layers = {name: medians[name] for name in self._layers}
        n = medians["n_steps"]
        title = f"epoch {trainer.current_epoch + 1}: median of {n} logged step{'s' * (n != 1)}"
        log_image(writers, "figures/grad_norm_by_layer", self._chart.draw(layers, title), step)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._stop_if_diverged()  # a max_steps stop mid-epoch

    # -- the logged step ----------------------------------------------------------------
    def _log_step(self, trainer: L.Trainer, optimizer: torch.optim.Optimizer) -> None:
        step = trainer.global_step
        weights = self._weights
        with_grad = [p for _, p in self._params if p.grad is not None]
        grad_norms = norms([p.grad for p in with_grad])
        by_param = {id(p): norm for p, norm in zip(with_grad, grad_norms, strict=True)}
        layer_norms = [by_param.get(id(w)) for w in weights]
        biased = [(n, by_param[id(b)]) for n, b in self._biases if id(b) in by_param]
        self._watch(step, layer_norms)
        total = torch.linalg.vector_norm(torch.stack(grad_norms))
        bias_norms = [norm for _, norm in biased]
        packed = torch.cat(
            [
                torch.stack([*norms(weights), total, *bias_norms]),
                *self._unchecked_rows,  # this step's row last: its norms and loss
            ]
        )
        values = packed.tolist()  # the step's one device-to-host transfer
        self.fetches += 1
        n, b = len(weights), len(biased)
        w_norms, total_norm = values[:n], values[n]
        by_bias = dict(zip((name for name, _ in biased), values[n + 1 : n + 1 + b], strict=True))
        self._diverge_if(values[n + 1 + b :])  # the unchecked steps, this one included
        names = list(self._layers)
        by_layer = dict(zip(names, values[-n - 1 : -1], strict=True))
        lr_of = {id(p): group["lr"] for group in optimizer.param_groups for p in group["params"]}
        updates = {
            name: float(lr_of.get(id(w), 0.0)) * by_layer[name] / w_norm if w_norm else math.inf
            for name, w, w_norm in zip(names, weights, w_norms, strict=True)
        }
        first, last = by_layer[names[0]], by_layer[names[-1]]
        ratio = first / last if last else (math.inf if first else math.nan)
        row: Row = {"step": step, **by_layer, "total": total_norm, "first_last_ratio": ratio}
        row.update({f"{GRAD_NORM_BIAS}/{name}": v for name, v in by_bias.items()})
        self.first_row = self.first_row or row
        self.last_row = row
        self._epoch_rows.append(row)
        metrics = {f"{GRAD_NORM}/{name}": v for name, v in by_layer.items()}
        metrics[f"{GRAD_NORM}/total"] = total_norm
        metrics[FIRST_LAST_RATIO] = ratio
        metrics.update({f"{GRAD_NORM_BIAS}/{name}": v for name, v in by_bias.items()})
        metrics.update({f"update_ratio/{name}": v for name, v in updates.items()})
        log_scalars(trainer, metrics, step)
        if step == 0 and self.histogram_every_n_epochs > 0 and not self._histograms_due:
            self._log_histograms(trainer, step)

    def _log_histograms(self, trainer: L.Trainer, step: int) -> None:
        tensors = {}
        for name, layer in self._layers.items():
            if layer.weight.grad is not None:
                tensors[f"gradients/{name}"] = layer.weight.grad
            tensors[f"weights/{name}"] = layer.weight
        dropped = log_histograms(tensorboard_writers(trainer), tensors, step)
        if dropped:
            rank_zero_warn(
                f"GradientMonitor: {dropped} non-finite values left out of the "
                f"step-{step} histograms"
            )

    # -- divergence ---------------------------------------------------------------------
    def _watch(self, step: int, grad_norms: list[torch.Tensor | None]) -> None:
        """Keep this step's row (each tracked layer's gradient norm, None: no gradient; the
        loss) on the device, to be checked with the next transfer: no host sync."""
        zero = self._weights[0].new_zeros((), dtype=torch.float32)
        loss = self._loss.to(torch.float32) if self._loss is not None else zero
        row = torch.stack([*(zero if g is None else g for g in grad_norms), loss])
        self._unchecked_steps.append(step)
        self._unchecked_rows.append(row)

    def _stop_if_diverged(self) -> None:
        if self._unchecked_rows:
            self._diverge_if(torch.cat(self._unchecked_rows).tolist())  # one transfer
            self.fetches += 1

    def _diverge_if(self, rows: list[float]) -> None:
        """Raise DivergedError at the first unchecked step whose row holds a NaN/Inf; the
        steps are checked either way."""
        width = len(self._layers) + 1
        steps, self._unchecked_steps, self._unchecked_rows = self._unchecked_steps, [], []
        for i, step in enumerate(steps):
            *layer_norms, loss = rows[i * width : (i + 1) * width]
            if math.isfinite(loss) and all(map(math.isfinite, layer_norms)):
                continue
            self.diverged_at_step = step
            what = _what_diverged(self._layers, layer_norms, loss)
            raise DivergedError(
                f"training diverged at step {step}: {what} (loss={loss:.4g}); try a smaller "
                f"optimizer.lr or clip gradients (+trainer.gradient_clip_val=1.0)"
            )

    # -- read-out -----------------------------------------------------------------------
    @property
    def layer_names(self) -> list[str]:
        """The tracked layers' names (empty before the fit starts)."""
        return list(getattr(self, "_layers", {}))

    def epoch_medians(self) -> Row | None:
        """Median of every logged number over the current epoch's logged steps (else over the
        last epoch that logged any), with `n_steps` and the first and last `steps`."""
        rows = self._epoch_rows or self._previous_rows
        if not rows:
            return None
        keys = [k for k in rows[0] if k != "step"]
        medians: Row = {k: statistics.median(r[k] for r in rows) for k in keys}
        medians.update(n_steps=len(rows), steps=[rows[0]["step"], rows[-1]["step"]])
        return medians

    def summary_fields(self) -> dict[str, Any]:
        """Per-layer norms at the first and the last logged step, for summary.json: each row
        keys the weight-gradient norms by layer (`layer_01`), the bias-gradient norms by tag
        (`grad_norm_bias/layer_01`), then `total`, `first_last_ratio` and `step`."""
        return {"grad_norms": {"first_step": self.first_row, "last_step": self.last_row}}


def _what_diverged(layers: Iterable[str], layer_norms: list[float], loss: float) -> str:
    """'the loss is not finite' (a non-finite loss makes every gradient so: name the cause),
    else the layers whose gradient norm is not finite."""
    bad = [name for name, v in zip(layers, layer_norms, strict=True) if not math.isfinite(v)]
    if not math.isfinite(loss) or not bad:
        return "the loss is not finite"
    if len(bad) == 1:
        return f"the gradient norm of {bad[0]} is not finite"
    named = (
        " and ".join(bad) if len(bad) <= 3 else f"{bad[0]}, {bad[1]} and {len(bad) - 2} more layers"
    )
    return f"the gradient norms of {named} are not finite"
