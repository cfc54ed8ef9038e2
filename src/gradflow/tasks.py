"""Tasks: what the network's outputs mean, the loss they are trained on, and how they score.

A data module names its task (`TensorDataModule.task`); the run sizes the model's output
layer by it, the LightningModule trains on its loss and the probe backpropagates the same
loss. Four tasks:

- `multiclass`: one logit per class, softmax cross-entropy; accuracy by the largest logit.
- `binary`: one logit for two classes, binary cross-entropy on sigmoid(logit) (computed
  as BCE-with-logits, the same function without sigmoid's rounding to 0 or 1); accuracy by
  the logit's sign (sigmoid >= 0.5). The tutorial's XOR head.
- `one_vs_rest`: one sigmoid unit per class, each a binary cross-entropy against its
  one-hot target, summed over the units and averaged over samples: Nielsen's
  "cross-entropy cost" with sigmoid output neurons (network2, ch. 3 and 5); accuracy by
  the largest logit.
- `regression`: one output per sample, mean squared error; no accuracy.

`chance_loss` is the loss of the best prediction that ignores the input, the yardstick
the verdict measures "far from fitted" against: ln(classes) for uniform class
probabilities (the classes here are balanced), ln 2 for a sigmoid at 0.5, classes x the
binary entropy of 1/classes for one_vs_rest (3.25 for 10 classes), and the targets'
variance for regression (the mean squared error of predicting their mean).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from gradflow.checks import one_of
from gradflow.errors import ConfigError
from gradflow.rules.data import PER_CLASS, TASK_NAMES

# The task names (and PER_CLASS, the tasks with an output unit per class) live without torch
# in `gradflow.rules.data`, where the data modules' rules check a config's `task`.


@dataclass(frozen=True)
class Task:
    """One of TASK_NAMES; `num_classes` for the classification tasks (None for regression)."""

    name: str
    num_classes: int | None = None

    @property
    def classifies(self) -> bool:
        """Whether outputs are class scores (accuracy applies)."""
        return self.name != "regression"

    @property
    def num_outputs(self) -> int:
        """Units of the model's output layer."""
        return self.num_classes if self.name in PER_CLASS else 1

    def loss(
        self, outputs: torch.Tensor, targets: torch.Tensor, reduction: str = "mean"
    ) -> torch.Tensor:
        """The training loss, averaged over samples (`reduction="sum"`: summed, so each
        sample's gradient is its own loss's; "none": each sample's)."""
        if self.name == "multiclass":
            return F.cross_entropy(outputs, targets, reduction=reduction)
        if self.name == "binary":
            return F.binary_cross_entropy_with_logits(
                outputs.squeeze(1), targets.to(outputs.dtype), reduction=reduction
            )
        if self.name == "one_vs_rest":
            one_hot = F.one_hot(targets, outputs.shape[1]).to(outputs.dtype)
            per_sample = F.binary_cross_entropy_with_logits(outputs, one_hot, reduction="none")
            per_sample = per_sample.sum(dim=1)
            if reduction == "none":
                return per_sample
            return per_sample.sum() if reduction == "sum" else per_sample.mean()
        return F.mse_loss(outputs, targets.view_as(outputs), reduction=reduction)

    def predict(self, outputs: torch.Tensor) -> torch.Tensor:
        """Predicted class labels (classification tasks only)."""
        if self.name in PER_CLASS:
            return outputs.argmax(dim=1)
        return (outputs.squeeze(1) > 0).long()

    def chance_loss(self, targets: torch.Tensor | None = None) -> float | None:
        """The loss of the best input-blind prediction on `targets` (module docstring);
        regression needs the targets (None without them)."""
        if self.name == "multiclass":
            return math.log(self.num_classes)
        if self.name == "binary":
            return math.log(2)
        if self.name == "one_vs_rest":
            p = 1 / self.num_classes
            return -self.num_classes * (p * math.log(p) + (1 - p) * math.log(1 - p))
        return None if targets is None else float(targets.double().var(correction=0))


def make_task(name: str, num_classes: int | None = None) -> Task:
    """The task `name` for data of `num_classes` classes; a ConfigError (key `task`) for a
    name not in TASK_NAMES or a binary head on data that has other than two classes."""
    one_of("task", name, TASK_NAMES)
    if name == "binary" and num_classes != 2:
        raise ConfigError(
            "task", name, f"one sigmoid unit needs 2 classes and this data has {num_classes}"
        )
    return Task(name, num_classes if name != "regression" else None)
