"""The verdict: pure functions from a run's gradient and activation numbers to labels.

Labels (several may hold; `healthy` only when none of the others does):

- `vanishing`: grad_norm/first_last_ratio < vanishing_ratio, or every layer's gradient
  norm < vanishing_max_norm while val/loss > unfitted_loss_fraction * ln(classes) (or
  times `reference_loss`, the task's chance loss: ln 2 for one sigmoid unit, the
  targets' variance for a regression; `gradflow.tasks`).
- `exploding`: the run diverged (a non-finite loss or gradient), or
  first_last_ratio > exploding_ratio, or grad_norm/total > exploding_total_norm.
- `saturated`: the activation flattens on both sides (sigmoid, tanh) and act_saturated >
  saturated_fraction in more than saturated_layer_share of the hidden layers.
- `dead_units`: some hidden layer's act_dead >= dead_fraction.

Measured (2 seeds; real MNIST images, 5,000 train; width 128, batch 32, SGD lr 0.01; the
ratio at step 0 and as each epoch's median over logged steps, for 2-10 epochs; inputs as
pixels/255 | standardised):

    net (xavier init)           ratio, pixels/255   ratio, standardised   val acc, epoch 10
    sigmoid, depth 3            3.1e-2 .. 3.6e-2    7.7e-2 .. 1.1e-1      chance | 0.27, rising
    sigmoid, depth 4            5.2e-3 .. 9.0e-3    1.1e-2 .. 2.3e-2      chance | chance
    sigmoid, depth 10           1.0e-6 .. 1.5e-6    2.3e-6 .. 3.9e-6      chance
    residual sigmoid, depth 3   7.6e-2 .. 1.3e-1    1.9e-1 .. 3.2e-1      0.30 | 0.78
    residual sigmoid, depth 11  1.9e-4 .. 3.1e-4                          chance
    BatchNorm sigmoid, depth 4 and 10: 1.0 .. 1.6; tanh, depth 4 and 10: 2.5 .. 5; ReLU with
    kaiming_normal, depth 4 and 10: 0.8 .. 2.6; ReLU, depth 4 and 10: 1.7 .. 3.0 (all learn)

Uniform vanishing (measured on the offline sample, depth 20, width 128, SGD 0.01, the
largest layer's gradient norm as the latest epoch's median): ReLU under Xavier or LeCun
init keeps the ratio at 2..5 while every layer's gradient shrinks (largest 1.1e-2..4.0e-2,
val acc 0.08..0.16); every net that learned, in all the tutorial experiments, has a
largest layer gradient of 0.34 or more (0.83 or more but for [128, 64] sigmoid at lr 0.1).
vanishing_max_norm 0.1 sits between; the rule only counts while val/loss is above
unfitted_loss_fraction * ln(classes), so a converged net's small gradients are not
flagged. A miss: SELU under PyTorch's default init at depth 20 (largest 0.2, val acc 0.17).

Every net stuck at chance has a ratio under 3.6e-2, every net that learns one over 7.7e-2:
vanishing_ratio 5e-2 sits between them (a factor 1.4 to 1.5 from each side). Exploding
ReLU nets keep the ratio near 0.6 (their forward signal and backward signal grow alike) but
their total norm reaches 5e3 (normal std 0.2, depth 10) up to inf, against 0.1..12 for the
healthy nets above: exploding_total_norm 1e3. The chaotic tanh net (normal std 0.5, depth
10) has ratio 440: exploding_ratio 1e2. Sigmoid with normal std 5 has act_saturated
0.92..0.94 in every layer, the nets above at most 0.56 (ReLU; sigmoid/tanh nets 0.0).
Healthy ReLU nets have at most 37% dead units in a layer after two epochs (usually under
25%); a layer whose bias is -10 has 100%: dead_fraction 0.5.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from gradflow.checks import check_params, number

LABELS = ("healthy", "vanishing", "exploding", "saturated", "dead_units")


@dataclass(frozen=True)
class VerdictThresholds:
    """The numbers that separate the verdict's labels (see the module docstring)."""

    vanishing_ratio: float = 5e-2
    vanishing_max_norm: float = 1e-1
    unfitted_loss_fraction: float = 0.5
    exploding_ratio: float = 1e2
    exploding_total_norm: float = 1e3
    saturated_fraction: float = 0.5
    saturated_layer_share: float = 0.5
    dead_fraction: float = 0.5

    @classmethod
    def from_config(cls, values: Mapping[str, Any] | VerdictThresholds | None) -> VerdictThresholds:
        """These defaults with some replaced (a mapping, e.g. from Hydra); each must be a
        threshold's name and a number > 0 (a ConfigError names the key otherwise)."""
        if isinstance(values, VerdictThresholds):
            return values
        check_params(values or {}, [f.name for f in fields(cls)], "the verdict", "thresholds.")
        for key, value in (values or {}).items():
            number(f"thresholds.{key}", value)
        return cls(**{k: float(v) for k, v in (values or {}).items()})


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


@dataclass
class Verdict:
    """The labels, the numbers that triggered each (`evidence`) and the thresholds used."""

    labels: list[str]
    evidence: dict[str, Any]
    thresholds: VerdictThresholds
    reasons: dict[str, str] = field(default_factory=dict)

    def text(self) -> str:
        """One line per label: `vanishing: grad_norm/first_last_ratio 6.3e-03 < 4.0e-02`."""
        return "\n".join(f"{label}: {self.reasons.get(label, '')}" for label in self.labels)

    def as_dict(self) -> dict[str, Any]:
        """JSON-serialisable, for summary.json."""
        return {
            "labels": list(self.labels),
            "evidence": self.evidence,
            "thresholds": asdict(self.thresholds),
            "text": self.text(),
        }


def _most_layers_saturated(
    act_saturated: Mapping[str, float], t: VerdictThresholds
) -> dict[str, float] | None:
    over = {k: v for k, v in act_saturated.items() if v > t.saturated_fraction}
    if act_saturated and len(over) > t.saturated_layer_share * len(act_saturated):
        return over
    return None


def judge(
    *,
    first_last_ratio: float | None,
    total_norm: float | None,
    act_saturated: Mapping[str, float] | None,
    act_dead: Mapping[str, float] | None,
    saturation: str,
    thresholds: VerdictThresholds | None = None,
    diverged_at_step: int | None = None,
    basis: Mapping[str, Any] | None = None,
    max_layer_norm: float | None = None,
    val_loss: float | None = None,
    num_classes: int | None = None,
    reference_loss: float | None = None,
) -> Verdict:
    """Label a run from its numbers; a number that is None was not measured and is skipped.

    `saturation` is the activation's kind in the registry (`two_sided`, `one_sided`,
    `none`); `basis` says where the numbers come from and is kept in the evidence.
    """
    t = thresholds or VerdictThresholds()
    act_saturated = dict(act_saturated or {})
    act_dead = dict(act_dead or {})
    evidence: dict[str, Any] = {
        "measured": {
            "first_last_ratio": first_last_ratio,
            "total_norm": total_norm,
            "act_saturated": act_saturated,
            "act_dead": act_dead,
            "activation_saturation": saturation,
            "diverged_at_step": diverged_at_step,
            "max_layer_grad_norm": max_layer_norm,
            "val_loss": val_loss,
            **(basis or {}),
        }
    }
    reasons: dict[str, str] = {}

    vanishing: dict[str, Any] = {}
    if _finite(first_last_ratio) and first_last_ratio < t.vanishing_ratio:
        vanishing["first_last_ratio"] = first_last_ratio
    # Uniform vanishing: every layer's gradient is small (the ratio can look fine) while the
    # loss is still far from fitted, so a converged net's small gradients do not count.
    unfitted_loss = _unfitted_loss(t, num_classes, reference_loss)
    if (
        _finite(max_layer_norm)
        and max_layer_norm < t.vanishing_max_norm
        and _finite(val_loss)
        and unfitted_loss is not None
        and val_loss > unfitted_loss
    ):
        vanishing.update(max_layer_grad_norm=max_layer_norm, val_loss=val_loss)
    if vanishing:
        evidence["vanishing"] = vanishing
        parts = []
        if "first_last_ratio" in vanishing:
            parts.append(
                f"grad_norm/first_last_ratio {first_last_ratio:.1e} < {t.vanishing_ratio:.1e}"
            )
        if "max_layer_grad_norm" in vanishing:
            parts.append(
                f"every layer's grad_norm <= {max_layer_norm:.1e} < {t.vanishing_max_norm:.1e} "
                f"while val/loss {val_loss:.2f} > {unfitted_loss:.2f}"
            )
        reasons["vanishing"] = "; ".join(parts)

    exploding: dict[str, Any] = {}
    if diverged_at_step is not None:
        exploding["diverged_at_step"] = diverged_at_step
    if _finite(first_last_ratio) and first_last_ratio > t.exploding_ratio:
        exploding["first_last_ratio"] = first_last_ratio
    if total_norm is not None and not total_norm <= t.exploding_total_norm:  # NaN/inf count
        exploding["total_norm"] = total_norm
    if exploding:
        evidence["exploding"] = exploding
        parts = {
            "diverged_at_step": lambda v: f"a non-finite loss or gradient at step {v}",
            "first_last_ratio": lambda v: (
                f"grad_norm/first_last_ratio {v:.1e} > {t.exploding_ratio:.1e}"
            ),
            "total_norm": lambda v: f"grad_norm/total {v:.1e} > {t.exploding_total_norm:.1e}",
        }
        reasons["exploding"] = "; ".join(parts[k](v) for k, v in exploding.items())

    if saturation == "two_sided" and (over := _most_layers_saturated(act_saturated, t)):
        evidence["saturated"] = {"act_saturated": over}
        reasons["saturated"] = (
            f"act_saturated > {t.saturated_fraction:g} in {len(over)} of "
            f"{len(act_saturated)} hidden layers ({_layer_list(over)})"
        )

    dead = {k: v for k, v in act_dead.items() if v >= t.dead_fraction}
    if dead:
        evidence["dead_units"] = {"act_dead": dead}
        reasons["dead_units"] = f"act_dead >= {t.dead_fraction:g} in {_layer_list(dead)}"

    labels = [label for label in LABELS if label in reasons]
    if not labels:
        labels = ["healthy"]
        reasons["healthy"] = _healthy_reason(first_last_ratio, total_norm, act_saturated, act_dead)
    return Verdict(labels, evidence, t, reasons)


def _unfitted_loss(
    t: VerdictThresholds, num_classes: int | None, reference_loss: float | None
) -> float | None:
    """The val/loss above which a net is far from fitted: a fraction of the reference loss
    (the task's chance loss), else of ln(classes); None when neither is known."""
    if reference_loss is not None:
        return t.unfitted_loss_fraction * reference_loss
    return t.unfitted_loss_fraction * math.log(num_classes) if num_classes else None


def _layer_list(values: Mapping[str, float]) -> str:
    return ", ".join(f"{k} {v:.2f}" for k, v in values.items())


def _healthy_reason(
    ratio: float | None,
    total: float | None,
    act_saturated: Mapping[str, float],
    act_dead: Mapping[str, float],
) -> str:
    parts = []
    if ratio is not None:
        parts.append(f"grad_norm/first_last_ratio {ratio:.1e}")
    if total is not None:
        parts.append(f"grad_norm/total {total:.1e}")
    if act_saturated:
        parts.append(f"max act_saturated {max(act_saturated.values()):.2f}")
    if act_dead:
        parts.append(f"max act_dead {max(act_dead.values()):.2f}")
    return ", ".join(parts) or "nothing measured"
