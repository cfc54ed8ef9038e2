"""The verdict: pure functions from a run's gradient and activation numbers to labels, and
from the labels of each phase of a run to its timeline.

Labels (several may hold; `healthy` only when none of the others does):

- `vanishing`: grad_norm/first_last_ratio < vanishing_ratio, or every layer's gradient
  norm < vanishing_max_norm while val/loss > unfitted_loss_fraction * the task's chance
  loss (`reference_loss`: ln(classes) for softmax, ln 2 for one sigmoid unit, the
  targets' variance for a regression; `gradflow.tasks`; ln(classes) when not given).
- `exploding`: the run diverged (a non-finite loss or gradient), or
  first_last_ratio > exploding_ratio, or grad_norm/total > exploding_total_norm.
- `saturated`: the activation flattens on both sides (sigmoid, tanh) and act_saturated >
  saturated_fraction in more than saturated_layer_share of the hidden layers.
- `dead_units`: some hidden layer has act_dead >= dead_fraction and at least
  dead_min_units dead units (all of them in a layer narrower than that); the count is
  act_dead * the layer's width (its Linear's out_features).
- `slow`: the net learns (val/acc_best >= chance + slow_min_gain * (1 - chance), chance =
  1/classes) but is far from fitted (val/loss > slow_loss_fraction * the chance loss).

Phases (`timeline`): `initialisation` judges step 0's records (summary.json's
`grad_norms.first_step` and `activations.first_probe`, kept in the checkpoint), which have
no validation numbers, so neither the uniform `vanishing` rule nor `slow` applies there;
`training` gathers the verdicts of the epochs before the end, each label with the epochs it
held in (`slow` left out: every net is far from fitted early on); `end` is the verdict on
the latest numbers (the `labels` of summary.json and the HParams column).

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
flagged. A miss: SELU under PyTorch's default init at depth 20 (largest 0.2, val acc 0.17;
now `slow`).

Every net stuck at chance has a ratio under 3.6e-2, every net that learns one over 7.7e-2:
vanishing_ratio 5e-2 sits between them (a factor 1.4 to 1.5 from each side). Exploding
ReLU nets keep the ratio near 0.6 (their forward signal and backward signal grow alike) but
their total norm reaches 5e3 (normal std 0.2, depth 10) up to inf, against 0.1..12 for the
healthy nets above: exploding_total_norm 1e3. The chaotic tanh net (normal std 0.5, depth
10) has ratio 440: exploding_ratio 1e2; tanh with sigma_w^2 = 4 at depth 60 (normal std
0.177, width 128, offline sample, seed 42) has ratio 1.2e4 and total norm 4.0e4 at step 0,
then saturates (38 of 60 layers) and vanishes (ratio 1.6e-6) in its first epoch. Sigmoid
with normal std 5 has act_saturated 0.92..0.94 in every layer, the nets above at most 0.56
(ReLU; sigmoid/tanh nets 0.0). Healthy ReLU nets have at most 37% dead units in a layer after two
epochs (usually under 25%); a layer whose bias is -10 has 100%: dead_fraction 0.5.
dead_min_units 2 is a judgement more than a measurement: one unit can die by chance in a
layer of any width, and in a width-2 layer it is already half of it while the other unit
still carries the signal. Where units do die in narrow layers (XOR's 2-8-8-2 ReLU net,
Adam 0.01, 200 epochs) they go in numbers: 6 and 5 of 8 in one layer for seeds 42 and 43,
none for seed 44, so the count changes nothing there.

Slow (offline sample, 4,000 train images, 3 epochs; val/loss as a fraction of ln(10) and
val/acc_best at the end, seeds 42, 43, 44): the [128, 64] sigmoid net (SGD 0.1, batch 128,
the `batchnorm` experiment's plain net) 0.95..0.96 and 0.24..0.48; ReLU, depth 4, Xavier
(SGD 0.01, batch 32) 0.36..0.42 and 0.75..0.79; ReLU, depth 4, kaiming_normal 0.24..0.28
and 0.79..0.85. slow_loss_fraction 0.65 sits a factor 1.5 from each side. (After one epoch
the ReLU nets are at 0.69..0.92 too: hence no `slow` in the training phase.) Nets stuck
at chance (sigmoid, depth 4, Xavier, SGD 0.01, 10 epochs, seeds 42-44) reach val/acc_best
0.104..0.133 on 10 classes, a gain of at most 0.037 of the way from chance to 1; the
slowest nets that learn (depth 20, 5 epochs, seed 42: ReLU under LeCun init, SELU under
PyTorch's default) reach 0.160 and 0.166, a gain of 0.067..0.073: slow_min_gain 0.05 sits
a factor 1.35 to 1.45 from each side.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from gradflow.names import END, INITIALISATION, TRAINING
from gradflow.rules.diagnostics import VerdictThresholds

LABELS = ("healthy", "vanishing", "exploding", "saturated", "dead_units", "slow")
# How the console and TensorBoard text say each phase (the end's is the caller's: "at the
# end", or "now" for a run still training).
PHASE_WORDS = {INITIALISATION: "at initialisation", TRAINING: "during training"}
# Judged on the outcome only: every net is far from fitted in its first epochs.
OUTCOME_LABELS = ("slow",)
_LAYERS_SHOWN = 6  # a reason names this many layers, then counts the rest


# VerdictThresholds (the numbers above, their defaults and the rule for a config's overrides)
# lives in `gradflow.rules.diagnostics`, so a bad threshold fails before torch loads.


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

    def record(self, **where: Any) -> dict[str, Any]:
        """A phase's or an epoch's entry of the timeline: `where` (e.g. `epoch`, `step`), the
        labels, the numbers that triggered each (not every number measured) and the text."""
        triggered = {k: v for k, v in self.evidence.items() if k in self.labels}
        return {**where, "labels": list(self.labels), "evidence": triggered, "text": self.text()}


def _most_layers_saturated(
    act_saturated: Mapping[str, float], t: VerdictThresholds
) -> dict[str, float] | None:
    over = {k: v for k, v in act_saturated.items() if v > t.saturated_fraction}
    if act_saturated and len(over) > t.saturated_layer_share * len(act_saturated):
        return over
    return None


def dead_layers(
    act_dead: Mapping[str, float],
    widths: Mapping[str, int] | None,
    t: VerdictThresholds,
) -> dict[str, dict[str, float | int | None]]:
    """The layers with dead units by fraction and by count: `{layer: {fraction, count}}`.

    The count is act_dead * width (None, and not checked, where the width is not known).
    """
    out: dict[str, dict[str, float | int | None]] = {}
    for name, fraction in act_dead.items():
        width = (widths or {}).get(name)
        count = round(fraction * width) if width else None
        enough = count is None or count >= min(t.dead_min_units, width)
        if fraction >= t.dead_fraction and enough:
            out[name] = {"fraction": fraction, "count": count}
    return out


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
    layer_widths: Mapping[str, int] | None = None,
    val_acc_best: float | None = None,
    outcome: bool = True,
) -> Verdict:
    """Label a run from its numbers; a number that is None was not measured and is skipped.

    `saturation` is the activation's kind in the registry (`two_sided`, `one_sided`,
    `none`); `basis` says where the numbers come from and is kept in the evidence;
    `layer_widths` (units per hidden layer) turns act_dead into counts; `outcome=False`
    leaves out the labels judged on the outcome only (`slow`).
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
            "val_acc_best": val_acc_best,
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

    if dead := dead_layers(act_dead, layer_widths, t):
        evidence["dead_units"] = {
            "act_dead": {k: v["fraction"] for k, v in dead.items()},
            "dead_count": {k: v["count"] for k, v in dead.items() if v["count"] is not None},
        }
        shown = {
            k: f"{v['fraction']:.2f}"
            + (f" ({v['count']} of {layer_widths[k]})" if v["count"] is not None else "")
            for k, v in dead.items()
        }
        reasons["dead_units"] = (
            f"act_dead >= {t.dead_fraction:g}, at least {t.dead_min_units} units, in "
            + _listed(shown)
        )

    if outcome and (slow := _slow(val_loss, val_acc_best, num_classes, reference_loss, t)):
        evidence["slow"] = {"val_acc_best": val_acc_best, "val_loss": val_loss}
        reasons["slow"] = (
            f"val/acc_best {val_acc_best:.3f} >= {slow['learned']:.3f} (it learns) but val/loss "
            f"{val_loss:.2f} > {slow['unfitted']:.2f} ({t.slow_loss_fraction:g} of the chance "
            f"loss {slow['chance_loss']:.2f})"
        )

    labels = [label for label in LABELS if label in reasons]
    if not labels:
        labels = ["healthy"]
        reasons["healthy"] = _healthy_reason(first_last_ratio, total_norm, act_saturated, act_dead)
    return Verdict(labels, evidence, t, reasons)


def _chance_loss(num_classes: int | None, reference_loss: float | None) -> float | None:
    """The task's chance loss when given (`Task.chance_loss`), else softmax's ln(classes);
    None when neither is known."""
    if reference_loss is not None:
        return reference_loss
    return math.log(num_classes) if num_classes and num_classes > 1 else None


def _unfitted_loss(
    t: VerdictThresholds, num_classes: int | None, reference_loss: float | None
) -> float | None:
    """The val/loss above which a net is far from fitted: a fraction of the chance loss."""
    chance = _chance_loss(num_classes, reference_loss)
    return None if chance is None else t.unfitted_loss_fraction * chance


def _slow(
    val_loss: float | None,
    val_acc_best: float | None,
    num_classes: int | None,
    reference_loss: float | None,
    t: VerdictThresholds,
) -> dict[str, float] | None:
    """The bounds a slow net is between ({learned, unfitted}), or None if it is not slow.
    `unfitted` is a fraction of the task's chance loss (`reference_loss`), else of
    ln(classes); a task without accuracy (regression) is never judged slow."""
    if not (_finite(val_loss) and _finite(val_acc_best) and num_classes and num_classes > 1):
        return None
    chance = 1.0 / num_classes
    learned = chance + t.slow_min_gain * (1.0 - chance)
    reference = _chance_loss(num_classes, reference_loss)
    unfitted = t.slow_loss_fraction * reference
    if val_acc_best >= learned and val_loss > unfitted:
        return {"learned": learned, "unfitted": unfitted, "chance_loss": reference}
    return None


def _listed(items: Mapping[str, str]) -> str:
    """`layer_01 0.80, layer_02 0.96, ... and 37 more`: a reason stays one readable line."""
    shown = [f"{k} {v}" for k, v in list(items.items())[:_LAYERS_SHOWN]]
    rest = len(items) - len(shown)
    return ", ".join(shown) + (f" and {rest} more" if rest else "")


def _layer_list(values: Mapping[str, float]) -> str:
    return _listed({k: f"{v:.2f}" for k, v in values.items()})


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


# -------------------------------------------------------------------------- the timeline
def timeline(
    initial: Mapping[str, Any] | None,
    epochs: Sequence[Mapping[str, Any]],
    end: Mapping[str, Any] | None,
) -> list[dict[str, Any]]:
    """The run's phases in order, each `{"phase", where, "labels", "evidence", "text"}`.

    `initial` and `end` are `Verdict.record`s (None: not measured), `epochs` the records of
    the epochs before the end (`epoch`, `step`). The training phase holds every label that
    held in any of them (`healthy` only if none did; the outcome labels left out), the
    epochs each held in (`label_epochs`) and the evidence of the first epoch it held in.
    """
    phases: list[dict[str, Any]] = []
    if initial is not None:
        phases.append({"phase": INITIALISATION, **initial})
    if epochs:
        label_epochs: dict[str, list[int]] = {}
        evidence: dict[str, Any] = {}
        lines: list[str] = []
        for record in epochs:
            for label in record["labels"]:
                if label in OUTCOME_LABELS or label == "healthy":
                    continue
                if label not in label_epochs:
                    evidence[label] = record["evidence"].get(label)
                    lines += [
                        f"epoch {record['epoch']}: {line}"
                        for line in record["text"].splitlines()
                        if line.startswith(f"{label}:")
                    ]
                label_epochs.setdefault(label, []).append(record["epoch"])
        labels = [label for label in LABELS if label in label_epochs] or ["healthy"]
        phases.append(
            {
                "phase": TRAINING,
                "epochs": [epochs[0]["epoch"], epochs[-1]["epoch"]],
                "steps": [epochs[0]["step"], epochs[-1]["step"]],
                "labels": labels,
                "label_epochs": label_epochs,
                "evidence": evidence,
                "text": "\n".join(lines),
            }
        )
    if end is not None:
        phases.append({"phase": END, **end})
    return phases


def _epoch_span(epochs: Sequence[int]) -> str:
    """`epoch 2`, `epochs 1-3`, `epochs 1-14, 50-499`: consecutive epochs as one range."""
    if len(epochs) == 1:
        return f"epoch {epochs[0]}"
    runs: list[list[int]] = []
    for epoch in epochs:
        if runs and epoch == runs[-1][-1] + 1:
            runs[-1].append(epoch)
        else:
            runs.append([epoch])
    return "epochs " + ", ".join(str(r[0]) if len(r) == 1 else f"{r[0]}-{r[-1]}" for r in runs)


def _held_span(held: Sequence[int], epochs: Sequence[int]) -> str:
    """`from epoch 3` for a label that held from then on, else its epochs."""
    if list(held) == list(range(held[0], epochs[-1] + 1)):
        return f"from epoch {held[0]}"
    return _epoch_span(held)


def _and(words: Sequence[str]) -> str:
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def timeline_sentence(phases: Sequence[Mapping[str, Any]], end_name: str = "at the end") -> str:
    """One line: `exploding at initialisation, then vanishing and saturated during training
    (epochs 1-2) and at the end`; a phase with the same labels as the one before joins it,
    and a label that held in some training epochs only names them."""
    groups: list[tuple[list[str], list[str]]] = []  # (label words, phase words)
    for phase in phases:
        kind = phase["phase"]
        labels = list(phase["labels"])
        words = list(labels)
        if kind == TRAINING:
            all_epochs = list(range(phase["epochs"][0], phase["epochs"][1] + 1))
            where = f"{PHASE_WORDS[TRAINING]} ({_epoch_span(all_epochs)})"
            held = phase.get("label_epochs", {})
            words = [
                f"{label} ({_held_span(held[label], all_epochs)})"
                if label in held and held[label] != all_epochs
                else label
                for label in labels
            ]
        else:
            where = PHASE_WORDS.get(kind, end_name)
        if groups and groups[-1][0] == words:
            groups[-1][1].append(where)
        else:
            groups.append((words, [where]))
    return ", then ".join(f"{_and(words)} {_and(where)}" for words, where in groups)
