"""TensorBoard's Custom Scalars tab as gradflow's front page: one chart per question.

The per-layer numbers a vanishing gradient shows in span decades (a 10-layer sigmoid
net's first layer gets 1e-6 of the output layer's gradient), which a linear axis draws on
the zero line; the layout charts their `log10/<tag>` twins instead (`log_scalars` writes
them): each layer one line, every run's lines in the same chart, the gradient story first.
"""

from __future__ import annotations

import math

import lightning as L

from gradflow.diagnostics.common import LOG10, tensorboard_writers
from gradflow.diagnostics.verdict import VerdictThresholds
from gradflow.names import (
    FIRST_LAST_RATIO,
    GRAD_NORM,
    GRAD_NORM_BIAS,
    TRAIN_ACC,
    TRAIN_LOSS,
    VAL_ACC,
    VAL_LOSS,
)

PER_LAYER = r"/layer_\d+$"


def _lines(*patterns: str) -> list:
    """A multi-line chart of every tag matching one of the (anchored) regular expressions."""
    return ["Multiline", list(patterns)]


def _log10(tag: str) -> str:
    return f"^{LOG10}/{tag}"


# The verdict's vanishing threshold on the chart's log10 axis.
VANISHING_LOG10 = math.log10(VerdictThresholds().vanishing_ratio)
LAYOUT = {
    "1. gradients: which layer's gradient vanishes?": {
        "log10 weight-gradient norm per layer, grad_norm/layer_k": _lines(
            _log10(GRAD_NORM) + PER_LAYER
        ),
        "log10 bias-gradient norm per layer (its speed of learning), grad_norm_bias/layer_k": (
            _lines(_log10(GRAD_NORM_BIAS) + PER_LAYER)
        ),
        "log10 backpropagated signal per hidden layer, grad_signal/layer_k": _lines(
            _log10("grad_signal") + PER_LAYER
        ),
        "log10 update ratio lr·|grad|/|W| per layer, update_ratio/layer_k": _lines(
            _log10("update_ratio") + PER_LAYER
        ),
    },
    "2. runs side by side: does the fix help?": {
        f"log10 first / last layer gradient (0: balanced, below {VANISHING_LOG10:.1f}: "
        "vanishing)": _lines(_log10(FIRST_LAST_RATIO) + "$"),
        "validation accuracy": _lines(f"^{VAL_ACC}$"),
    },
    "3. activations per hidden layer": {
        "log10 activation std, act_std/layer_k": _lines(_log10("act_std") + PER_LAYER),
        "saturated fraction (|f'| < 0.1 max|f'|), act_saturated/layer_k": _lines(
            r"^act_saturated" + PER_LAYER
        ),
        "dead units (flat on every probe sample), act_dead/layer_k": _lines(
            r"^act_dead" + PER_LAYER
        ),
    },
    "4. loss and accuracy": {
        "loss": _lines(f"^{TRAIN_LOSS}$", f"^{VAL_LOSS}$"),
        "accuracy": _lines(f"^{TRAIN_ACC}$", f"^{VAL_ACC}$"),
    },
}


class CustomScalarsLayout(L.Callback):
    """Writes `LAYOUT` into each TensorBoard run once, when the fit starts."""

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        for writer in tensorboard_writers(trainer):
            writer.add_custom_scalars(LAYOUT)
