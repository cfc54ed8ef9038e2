"""VerdictMonitor: applies the verdict to what the other monitors measured, every epoch.

It reads the run's GradientMonitor and ActivationMonitor (found among the Trainer's
callbacks, in any order) and logs the verdict as TensorBoard text (`verdict`) at each
epoch's end: the timeline so far (at initialisation, during the earlier epochs, now) and
this epoch's numbers. `summary_fields()` and `verdict_text()` give it as of now.

Which numbers: at initialisation, step 0's gradient norms and probe (checkpointed by their
monitors, so a resumed run keeps them); at an epoch's end, the gradient ratio and total
norm as the median over the latest epoch's logged steps, so one odd mini-batch cannot flip
the label, and the latest probe on the fixed probe batch. Each epoch's verdict is kept in
the checkpoint, so a resumed run's timeline holds every epoch once.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict
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
from gradflow.diagnostics.verdict import (
    PHASE_WORDS,
    Verdict,
    VerdictThresholds,
    judge,
    timeline,
    timeline_sentence,
)
from gradflow.names import END, VAL_ACC_BEST, VAL_LOSS
from gradflow.rules.diagnostics import verdict_monitor_rules

Record = dict[str, Any]


def _layer_values(probe: Mapping[str, Any] | None, prefix: str) -> dict[str, float] | None:
    if probe is None:
        return None
    return {k.split("/", 1)[1]: v for k, v in probe.items() if k.startswith(f"{prefix}/")}


class VerdictMonitor(L.Callback):
    """Labels the run healthy, vanishing, exploding, saturated, dead_units and/or slow, at
    initialisation, after every epoch and at the end.

    Args:
        thresholds: overrides of VerdictThresholds' fields (a mapping, e.g. from Hydra).
    """

    def __init__(self, thresholds: Mapping[str, Any] | VerdictThresholds | None = None) -> None:
        self.thresholds = verdict_monitor_rules(thresholds=thresholds)
        self.verdict: Verdict | None = None
        # Each finished epoch's verdict record (`epoch`, `step`, `steps_taken`, labels, ...).
        self.epochs: list[Record] = []
        self._gradients: GradientMonitor | None = None
        self._activations: ActivationMonitor | None = None
        self._saturation: str | None = None
        self._trainer: L.Trainer | None = None
        self._num_classes: int | None = None
        self._chance_loss: float | None = None
        self._widths: dict[str, int] = {}

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
        layers = model.tracked_layers()
        self._widths = {name: layer.out_features for name, layer in layers.items()}
        # The task's classes and chance loss (TaskModule's: one sigmoid unit is 2 classes,
        # regression none); a bare module's: its outputs (one output: a sigmoid's 2 classes),
        # and the verdict's ln(classes) as the chance loss.
        task = getattr(pl_module, "task", None)
        outputs = next(reversed(layers.values())).out_features
        self._num_classes = task.num_classes if task is not None else max(outputs, 2)
        self._chance_loss = getattr(pl_module, "chance_loss", None)
        self._trainer = trainer
        self.verdict = None
        self.epochs = []  # a resumed run's come back from the checkpoint, after setup

    def state_dict(self) -> dict[str, Any]:
        return {"epochs": self.epochs}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.epochs = list(state_dict.get("epochs", []))

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._activations is not None:
            self._activations.latest(trainer, pl_module)
        self.verdict = self.current()
        if self.verdict is None:
            return
        epoch, step = trainer.current_epoch + 1, epoch_end_step(trainer)
        self.epochs.append(
            self.verdict.record(epoch=epoch, step=step, steps_taken=trainer.global_step)
        )
        writers = tensorboard_writers(trainer)
        if writers:
            text = self._epoch_text(epoch, step).replace("\n", "  \n")  # Markdown breaks
            log_text(writers, "verdict", text, step)

    # -- the verdicts ---------------------------------------------------------------------
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
        return self._judge(
            grads,
            probe,
            diverged_at_step=diverged,
            basis=basis,
            max_layer_norm=self._max_layer_norm(grads),
            val_loss=self._metric(VAL_LOSS),
            num_classes=self._num_classes,
            reference_loss=self._chance_loss,
            val_acc_best=self._metric(VAL_ACC_BEST),
        )

    def _judge(
        self, grads: Mapping[str, Any] | None, probe: Mapping[str, Any] | None, **numbers: Any
    ) -> Verdict:
        """The verdict on a gradient row (first_last_ratio, total) and a probe, with the
        monitor's thresholds and layer widths and any other of judge's numbers."""
        return judge(
            first_last_ratio=grads["first_last_ratio"] if grads else None,
            total_norm=grads["total"] if grads else None,
            act_saturated=_layer_values(probe, "act_saturated"),
            act_dead=_layer_values(probe, "act_dead"),
            saturation=self._saturation,
            thresholds=self.thresholds,
            layer_widths=self._widths,
            **numbers,
        )

    def initial(self) -> Verdict | None:
        """The verdict on step 0's gradient norms and probe (None if neither was recorded):
        no validation numbers exist yet, so the rules that need them do not apply."""
        row = self._gradients.first_row if self._gradients is not None else None
        probe = self._activations.first_probe if self._activations is not None else None
        row = row if row is not None and row["step"] == 0 else None
        probe = probe if probe is not None and probe["step"] == 0 else None
        if self._saturation is None or (row is None and probe is None):
            return None
        return self._judge(row, probe, basis={"step": 0}, outcome=False)

    def _max_layer_norm(self, grads: Mapping[str, Any] | None) -> float | None:
        if grads is None or self._gradients is None:
            return None
        return max((grads[name] for name in self._gradients.layer_names), default=None)

    def _metric(self, key: str) -> float | None:
        # Validation runs before on_train_epoch_end, so this is the current epoch's.
        value = self._trainer.callback_metrics.get(key) if self._trainer else None
        return float(value) if value is not None else None

    def timeline(self) -> list[Record]:
        """The run's phases: at initialisation, during training (the epochs before the
        end), at the end (the verdict on the latest numbers; the last epoch's when nothing
        was measured since, or when this call trained nothing)."""
        end, taken = self.current(), self._trainer.global_step if self._trainer else None
        earlier = [e for e in self.epochs if taken is None or e["steps_taken"] < taken]
        if end is not None:
            end_record = end.record(step=_latest_step(end))
        elif self.epochs:
            end_record = {k: v for k, v in self.epochs[-1].items() if k != "steps_taken"}
            earlier = self.epochs[:-1]
        else:
            end_record = None
        first = self.initial()
        return timeline(
            first.record(step=0) if first else None,
            [{k: v for k, v in e.items() if k != "steps_taken"} for e in earlier],
            end_record,
        )

    # -- text -----------------------------------------------------------------------------
    def _epoch_text(self, epoch: int, step: int) -> str:
        """The TensorBoard text of an epoch's end: the timeline so far, then each phase's
        reasons."""
        phases = self.timeline()
        lines = [f"after epoch {epoch} (step {step}): {timeline_sentence(phases, 'now')}"]
        lines += _phase_reasons(phases, f"epoch {epoch}")
        return "\n".join(lines)

    def verdict_text(self) -> str:
        """`verdict: <the timeline in a sentence>` and each phase's numbers, for a print."""
        phases = self.timeline()
        if not phases:
            return "verdict: not measured"
        return "\n".join([f"verdict: {timeline_sentence(phases)}", *_phase_reasons(phases)])

    def summary_fields(self) -> dict[str, Any]:
        """`{"verdict": {"labels", "evidence", "thresholds", "text"}}` at the end, with the
        `timeline` (a record per phase), its `sentence` and every epoch's record, for
        summary.json."""
        verdict, phases = self.current(), self.timeline()
        end = next((phase for phase in phases if phase["phase"] == END), None)
        if end is None:
            return {"verdict": None}
        if verdict is not None:
            fields = verdict.as_dict()
        else:  # nothing measured in this call: the last epoch's verdict, from the checkpoint
            fields = {"labels": end["labels"], "evidence": end["evidence"], "text": end["text"]}
            fields["thresholds"] = asdict(self.thresholds)
        fields.update(
            timeline=phases,
            sentence=timeline_sentence(phases),
            epochs=[{k: v for k, v in e.items() if k != "steps_taken"} for e in self.epochs],
        )
        return {"verdict": fields}


def _latest_step(verdict: Verdict) -> int:
    """The last step whose numbers the verdict judged (gradients, probe or divergence)."""
    measured = verdict.evidence["measured"]
    steps = [*(measured.get("gradient_steps") or []), measured.get("probe_step")]
    return max((s for s in [*steps, measured.get("diverged_at_step")] if s is not None), default=0)


def _phase_reasons(phases: list[Record], end_name: str = "at the end") -> list[str]:
    """`at initialisation: exploding: grad_norm/total 6.9e+04 > 1.0e+03`, a line per label."""
    lines = []
    for phase in phases:
        name = PHASE_WORDS.get(phase["phase"], end_name)
        lines += [f"{name}: {line}" for line in phase["text"].splitlines()]
    return lines
