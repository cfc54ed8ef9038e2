"""The verdict over time: phases, the slow rule, dead units by count; and one real run whose
timeline lands in summary.json, the TensorBoard text and the console line."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from gradflow.diagnostics import VerdictThresholds, judge
from gradflow.diagnostics.verdict import timeline, timeline_sentence
from gradflow.errors import ConfigError
from gradflow.training.summary import format_summary
from tests.helpers import judge_healthy_but

LN10 = math.log(10)


# ------------------------------------------------------------------------- the timeline
def test_step_0_explosion_then_saturation_reads_as_a_timeline():
    # tanh, sigma_w^2 = 4, depth 60 (offline sample): step 0's ratio 1.2e4 and total norm
    # 4.0e4, then the gradient ratio collapses as 38 of 60 layers saturate.
    at_init = judge_healthy_but(
        first_last_ratio=1.2e4, total_norm=4.0e4, act_saturated={"layer_01": 0.28}
    )
    saturated = {f"layer_{k:02d}": 0.9 for k in (1, 2, 3)}
    later = judge_healthy_but(first_last_ratio=1.6e-6, total_norm=0.2, act_saturated=saturated)
    assert at_init.labels == ["exploding"]
    assert later.labels == ["vanishing", "saturated"]
    epochs = [later.record(epoch=1, step=31), later.record(epoch=2, step=63)]
    phases = timeline(at_init.record(step=0), epochs, later.record(step=95))
    assert [p["phase"] for p in phases] == ["initialisation", "training", "end"]
    assert phases[0]["evidence"] == {
        "exploding": {"first_last_ratio": 1.2e4, "total_norm": 4.0e4}
    }  # the numbers that triggered it, not everything measured
    assert phases[1]["epochs"] == [1, 2] and phases[1]["steps"] == [31, 63]
    assert phases[1]["label_epochs"] == {"vanishing": [1, 2], "saturated": [1, 2]}
    assert phases[1]["evidence"]["vanishing"] == {"first_last_ratio": 1.6e-6}
    assert phases[1]["text"].startswith("epoch 1: vanishing: grad_norm/first_last_ratio 1.6e-06")
    assert timeline_sentence(phases) == (
        "exploding at initialisation, then vanishing and saturated during training "
        "(epochs 1-2) and at the end"
    )
    # Saturation from epoch 2 only: the training phase says when, so it stands apart.
    first = judge_healthy_but(first_last_ratio=1e-3).record(epoch=1, step=31)
    phases = timeline(at_init.record(step=0), [first, epochs[1]], later.record(step=95))
    assert timeline_sentence(phases, "now") == (
        "exploding at initialisation, then vanishing and saturated (from epoch 2) during "
        "training (epochs 1-2), then vanishing and saturated now"
    )


def test_a_long_run_names_its_epochs_as_ranges():
    # Nielsen's 500 full-batch epochs: vanishing in epochs 1-14 and 50-499 (validation, which
    # the every-layer rule needs, runs every 50 epochs), healthy in between.
    vanishing, healthy = judge_healthy_but(first_last_ratio=1e-3), judge_healthy_but()
    epochs = [
        (vanishing if e < 15 or e >= 50 else healthy).record(epoch=e, step=e - 1)
        for e in range(1, 500)
    ]
    phases = timeline(vanishing.record(step=0), epochs, vanishing.record(step=499))
    assert timeline_sentence(phases) == (
        "vanishing at initialisation, then vanishing (epochs 1-14, 50-499) during training "
        "(epochs 1-499), then vanishing at the end"
    )


def test_a_one_epoch_run_has_no_training_phase_and_healthy_runs_read_short():
    healthy = judge_healthy_but().record(step=0)
    assert timeline_sentence(timeline(healthy, [], healthy)) == (
        "healthy at initialisation and at the end"
    )
    epochs = [judge_healthy_but().record(epoch=e, step=e * 10) for e in (1, 2)]
    phases = timeline(healthy, epochs, judge_healthy_but().record(step=30))
    assert phases[1]["labels"] == ["healthy"] and phases[1]["label_epochs"] == {}
    assert timeline_sentence(phases) == (
        "healthy at initialisation, during training (epochs 1-2) and at the end"
    )


# ------------------------------------------------------------------------------- slow
def test_slow_is_a_net_that_learns_but_stays_far_from_fitted():
    # The [128, 64] sigmoid net after 3 epochs (seed 42): val/loss 2.18 (0.95 ln 10),
    # val/acc_best 0.235.
    sigmoid = judge_healthy_but(val_loss=2.184, val_acc_best=0.235)
    assert sigmoid.labels == ["slow"]
    assert sigmoid.evidence["slow"] == {"val_acc_best": 0.235, "val_loss": 2.184}
    assert sigmoid.text() == (
        "slow: val/acc_best 0.235 >= 0.145 (it learns) but val/loss 2.18 > 1.50 (0.65 of the "
        "chance loss 2.30)"
    )
    # ReLU, depth 4, Xavier, 3 epochs: 0.96 (0.42 ln 10), 0.756.
    assert judge_healthy_but(val_loss=0.96, val_acc_best=0.756).labels == ["healthy"]
    # Stuck at chance (sigmoid 4x128, 10 epochs): not learning, so not slow.
    assert judge_healthy_but(val_loss=2.30, val_acc_best=0.114).labels == ["healthy"]
    # The bounds: chance + 0.05 of the way to 1, and 0.65 of ln(classes).
    assert judge_healthy_but(val_loss=0.66 * LN10, val_acc_best=0.146).labels == ["slow"]
    assert judge_healthy_but(val_loss=0.64 * LN10, val_acc_best=0.5).labels == ["healthy"]
    assert judge_healthy_but(val_loss=2.0, val_acc_best=0.14).labels == ["healthy"]
    # XOR's 2 classes: chance 0.5, so 0.75 learns; ln 2 = 0.69.
    assert judge_healthy_but(val_loss=0.6, val_acc_best=0.75, num_classes=2).labels == ["slow"]
    # Not at initialisation (no validation yet) and not without validation numbers.
    assert judge_healthy_but(val_loss=2.184, val_acc_best=0.235, outcome=False).labels == [
        "healthy"
    ]
    assert judge_healthy_but(val_loss=None, val_acc_best=0.235).labels == ["healthy"]


def test_slow_measures_the_loss_against_the_tasks_chance_loss():
    # One sigmoid unit on XOR: 2 classes, chance loss ln 2; stuck at 3 of 4 points.
    base = dict(first_last_ratio=1.0, total_norm=1.0, act_saturated={}, act_dead={},
                saturation="one_sided", val_acc_best=0.75, num_classes=2)  # fmt: skip
    slow = judge(**base, val_loss=0.6, reference_loss=math.log(2))
    assert slow.labels == ["slow"] and "chance loss 0.69" in slow.text()
    assert judge(**base, val_loss=0.4, reference_loss=math.log(2)).labels == ["healthy"]
    # Regression has no accuracy: never slow, whatever its loss.
    regression = {**base, "val_acc_best": None, "num_classes": None}
    assert judge(**regression, val_loss=5.0, reference_loss=0.25).labels == ["healthy"]


def test_slow_is_left_out_of_the_training_phase():
    # Every net is far from fitted after its first epoch (ReLU depth 4: 0.69..0.92 ln 10).
    early = judge_healthy_but(val_loss=0.9 * LN10, val_acc_best=0.4).record(epoch=1, step=124)
    assert early["labels"] == ["slow"]
    end = judge_healthy_but(val_loss=0.3 * LN10, val_acc_best=0.85).record(step=374)
    phases = timeline(None, [early], end)
    assert phases[0]["labels"] == ["healthy"]
    assert timeline_sentence(phases) == "healthy during training (epoch 1) and at the end"


# ------------------------------------------------------------------------ dead units
def test_dead_units_are_judged_by_count_as_well_as_fraction():
    def dead(act_dead, widths):
        return judge_healthy_but(act_dead=act_dead, layer_widths=widths, saturation="one_sided")

    # One dead unit of 2 is half the layer, but one unit: not dead_units.
    assert dead({"layer_01": 0.5}, {"layer_01": 2}).labels == ["healthy"]
    both = dead({"layer_01": 1.0}, {"layer_01": 2})
    assert both.labels == ["dead_units"]
    assert both.evidence["dead_units"] == {
        "act_dead": {"layer_01": 1.0},
        "dead_count": {"layer_01": 2},
    }
    assert "layer_01 1.00 (2 of 2)" in both.text()
    # Half of 128 units is 64 units: dead; 0.45 of them is below the fraction.
    assert dead({"layer_01": 0.5}, {"layer_01": 128}).labels == ["dead_units"]
    assert dead({"layer_01": 0.45}, {"layer_01": 128}).labels == ["healthy"]
    # A layer narrower than dead_min_units counts when all of it is dead.
    assert dead({"layer_01": 1.0}, {"layer_01": 1}).labels == ["dead_units"]
    # Widths unknown: the fraction alone, as before.
    assert dead({"layer_01": 0.5}, None).labels == ["dead_units"]
    three = VerdictThresholds.from_config({"dead_min_units": 3})
    assert three.dead_min_units == 3
    assert judge(
        first_last_ratio=1.0,
        total_norm=1.0,
        act_saturated={},
        act_dead={"layer_01": 0.5},
        saturation="one_sided",
        layer_widths={"layer_01": 4},
        thresholds=three,
    ).labels == ["healthy"]  # 2 of 4 dead, 3 needed


def test_new_thresholds_are_checked_like_the_others():
    with pytest.raises(ConfigError, match=r"^thresholds.dead_min_units=1.5 is not allowed: use a"):
        VerdictThresholds.from_config({"dead_min_units": 1.5})
    assert VerdictThresholds.from_config({"slow_loss_fraction": 0.8}).slow_loss_fraction == 0.8


# ------------------------------------------------------------------------- a real run
def test_timeline_reaches_summary_tensorboard_and_the_console(compose_cfg, tmp_path):
    from gradflow.training.run import run

    # tanh with sigma_w^2 = 9 at depth 20, width 32: step 0's ratio is near 1e3.
    cfg = compose_cfg(
        "activation=tanh",
        "init=normal",
        "init.std=0.53",
        "model.depth=20",
        "trainer.max_epochs=2",
    )
    summary = run(cfg)
    assert summary["status"] == "completed", summary["error"]
    verdict = summary["verdict"]
    phases = verdict["timeline"]
    assert [p["phase"] for p in phases] == ["initialisation", "training", "end"]
    init = phases[0]
    assert init["step"] == 0 and "exploding" in init["labels"]
    ratio = summary["grad_norms"]["first_step"]["first_last_ratio"]
    assert ratio > 100 and init["evidence"]["exploding"]["first_last_ratio"] == ratio
    assert phases[1]["epochs"] == [1, 1]
    assert phases[-1]["labels"] == verdict["labels"]  # the end is what HParams shows
    assert [e["epoch"] for e in verdict["epochs"]] == [1, 2]
    assert verdict["sentence"] == timeline_sentence(phases)
    assert verdict["sentence"].startswith("exploding")
    assert f"verdict: {verdict['sentence']}" in format_summary(summary, Path(cfg.paths.log_dir))
    events = EventAccumulator(cfg.paths.output_dir, size_guidance={"tensors": 0})
    events.Reload()
    texts = [e.tensor_proto.string_val[0].decode() for e in events.Tensors("verdict/text_summary")]
    assert len(texts) == 2
    assert texts[0].startswith("after epoch 1 (step 7): exploding at initialisation")
    assert "at initialisation: exploding: grad_norm/first_last_ratio" in texts[1]
    assert texts[1].split("  \n")[0].endswith("now")
