"""VerdictMonitor: applies the verdict to what the other monitors measured, every epoch.

It reads the run's GradientMonitor and ActivationMonitor (found among the Trainer's
callbacks, in any order) and logs the verdict as TensorBoard text (`verdict`) at each
epoch's end; `summary_fields()` and `verdict_text()` give the verdict as of now.

Which numbers: the gradient ratio and total norm are the median over the logged steps of
the latest epoch, so one odd mini-batch cannot flip the label and the verdict describes
the network as it is now (step 0 stays in summary.json's `grad_norms.first_step`); the
activation numbers come from the latest probe, on the fixed probe batch.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import lightning as L

from gradflow.diagnostics.activations import ActivationMonitor
from gradflow.diagnostics.common import (
    epoch_end_step,
    log_text,
    tensorboard_writers,
    tracked_model,
)
from gradflow.diagnostics.gradients import GradientMonitor
from gradflow.diagnostics.verdict import Verdict, VerdictThresholds, judge
from gradflow.names import VAL_LOSS


def _layer_values(probe: Mapping[str, Any] | None, prefix: str) -> dict[str, float] | None:
    if probe is None:
        return None
    return {k.split("/", 1)[1]: v for k, v in probe.items() if k.startswith(f"{prefix}/")}


class VerdictMonitor(L.Callback):
    """Labels the run healthy, vanishing, exploding, saturated and/or dead_units.

    Args:
        thresholds: overrides of VerdictThresholds' fields (a mapping, e.g. from Hydra).
    """

    def __init__(self, thresholds: Mapping[str, Any] | VerdictThresholds | None = None) -> None:
        self.thresholds = VerdictThresholds.from_config(thresholds)
        self.verdict: Verdict | None = None
        self._gradients: GradientMonitor | None = None
        self._activations: ActivationMonitor | None = None
        self._saturation: str | None = None
        self._trainer: L.Trainer | None = None
        self._num_classes: int | None = None
        self._chance_loss: float | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        self._gradients = next(
            (c for c in trainer.callbacks if isinstance(c, GradientMonitor)), None
        )
        self._activations = next(
            (c for c in trainer.callbacks if isinstance(c, ActivationMonitor)), None
        )
        model = tracked_model(pl_module)
        self._saturation = model.activation_info.saturation
        self._num_classes = next(reversed(model.tracked_layers().values())).out_features
        # The task's chance loss (TaskModule's); a bare module's: ln(outputs), as cross-entropy.
        self._chance_loss = getattr(pl_module, "chance_loss", None)
        self._trainer = trainer
        self.verdict = None

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._activations is not None:
            self._activations.latest(trainer, pl_module)
        self.verdict = self.current()
        writers = tensorboard_writers(trainer)
        if self.verdict is not None and writers:
            text = self.verdict_text().replace("\n", "  \n")  # Markdown line breaks
            log_text(writers, "verdict", text, epoch_end_step(trainer))

    def current(self) -> Verdict | None:
        """The verdict from the numbers measured so far (None before anything was measured)."""
        grads = self._gradients.epoch_medians() if self._gradients is not None else None
        probe = self._activations.last_probe if self._activations is not None else None
        diverged = self._gradients.diverged_at_step if self._gradients is not None else None
        if self._saturation is None or (grads is None and probe is None and diverged is None):
            return None
        basis: dict[str, Any] = {}
        if grads is not None:
            basis["gradient_steps"] = grads["steps"]
            basis["gradient_logged_steps"] = grads["n_steps"]
        if probe is not None:
            basis["probe_step"] = probe["step"]
        return judge(
            first_last_ratio=grads["first_last_ratio"] if grads else None,
            total_norm=grads["total"] if grads else None,
            act_saturated=_layer_values(probe, "act_saturated"),
            act_dead=_layer_values(probe, "act_dead"),
            saturation=self._saturation,
            thresholds=self.thresholds,
            diverged_at_step=diverged,
            basis=basis,
            max_layer_norm=self._max_layer_norm(grads),
            val_loss=self._val_loss(),
            num_classes=self._num_classes,
            reference_loss=self._chance_loss,
        )

    def _max_layer_norm(self, grads: Mapping[str, Any] | None) -> float | None:
        if grads is None or self._gradients is None:
            return None
        return max((grads[name] for name in self._gradients.layer_names), default=None)

    def _val_loss(self) -> float | None:
        # Validation runs before on_train_epoch_end, so this is the current epoch's.
        value = self._trainer.callback_metrics.get(VAL_LOSS) if self._trainer else None
        return float(value) if value is not None else None

    def verdict_text(self) -> str:
        """`verdict: vanishing` and one line of numbers per label, for the end-of-run print."""
        verdict = self.current()
        if verdict is None:
            return "verdict: not measured"
        return f"verdict: {', '.join(verdict.labels)}\n{verdict.text()}"

    def summary_fields(self) -> dict[str, Any]:
        """`{"verdict": {"labels", "evidence", "thresholds", "text"}}` for summary.json."""
        verdict = self.current()
        return {"verdict": verdict.as_dict() if verdict is not None else None}
