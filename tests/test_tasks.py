"""Tasks beyond MNIST classification: the sigmoid/BCE head, 1-D regression with MSE, and
single units' pre-activation percentiles."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from gradflow.data import RegressionDataModule, XORDataModule
from gradflow.diagnostics import capture_probe, probe_statistics
from gradflow.diagnostics.activations import sample_units
from gradflow.diagnostics.verdict import judge
from gradflow.errors import ConfigError
from gradflow.names import PREACT_PERCENTILES, percentile_tag
from gradflow.nn.models import MLP
from gradflow.tasks import make_task
from gradflow.training.run import run
from gradflow.training.summary import format_summary, objective

QUIET = ("callbacks=none", "logger=none", "checkpoint=none")


def test_binary_head_is_sigmoid_and_bce_by_hand():
    task = make_task("binary", 2)
    logits = torch.tensor([[-3.0], [-0.4], [0.0], [0.7], [5.0]])
    y = torch.tensor([0, 1, 0, 1, 1])
    p = torch.sigmoid(logits.squeeze(1)).double()
    by_hand = -(y * p.log() + (1 - y) * (1 - p).log()).mean()
    assert task.num_outputs == 1
    assert task.loss(logits, y).item() == pytest.approx(by_hand.item(), rel=1e-6)
    assert task.loss(logits, y, "sum").item() == pytest.approx(5 * by_hand.item(), rel=1e-6)
    # sigmoid >= 0.5 <=> logit > 0 (0 itself is class 0): 3 of 5 right.
    assert task.predict(logits).tolist() == [0, 0, 0, 1, 1]
    assert task.chance_loss() == pytest.approx(math.log(2))


def test_one_vs_rest_is_nielsens_cross_entropy_by_hand():
    task = make_task("one_vs_rest", 3)
    logits = torch.tensor([[2.0, -1.0, 0.5], [-0.3, 0.1, 4.0]])
    y = torch.tensor([0, 2])
    a = torch.sigmoid(logits).double()
    one_hot = torch.nn.functional.one_hot(y, 3).double()
    # C = -(1/n) sum_x sum_j [y_j ln a_j + (1 - y_j) ln(1 - a_j)]  (Nielsen, eq. 63)
    by_hand = -(one_hot * a.log() + (1 - one_hot) * (1 - a).log()).sum(1).mean()
    assert task.num_outputs == 3
    assert task.loss(logits, y).item() == pytest.approx(by_hand.item(), rel=1e-6)
    assert task.loss(logits, y, "sum").item() == pytest.approx(2 * by_hand.item(), rel=1e-6)
    assert task.predict(logits).tolist() == [0, 2]
    # All units at 1/3: each sample's loss is 3 binary entropies of 1/3.
    flat = torch.full((2, 3), math.log(0.5))  # sigmoid = 1/3
    assert task.chance_loss() == pytest.approx(task.loss(flat, y).item(), rel=1e-6)


def test_tasks_refuse_what_they_cannot_do():
    with pytest.raises(ConfigError, match=r"task='binary' is not allowed: one sigmoid unit needs"):
        make_task("binary", 10)
    with pytest.raises(ConfigError, match=r"task='ordinal' is not allowed: choose one of"):
        make_task("ordinal", 3)
    with pytest.raises(ConfigError, match=r"task='regression' is not allowed"):
        XORDataModule(task="regression")


def test_xor_with_the_sigmoid_head_reaches_accuracy_one(compose_cfg):
    # Adam 0.05 (faster than the experiment's Keras default 1e-3), 150 full-batch steps.
    cfg = compose_cfg(
        "data=xor", "data.task=binary", "model.hidden_sizes=[8,8]", "activation=tanh",
        "optimizer=adam", "optimizer.lr=0.05", "trainer.max_epochs=150", *QUIET,
    )  # fmt: skip
    summary = run(cfg)
    final = summary["metrics"]["final"]
    assert summary["status"] == "completed"
    assert final["val/acc"] == 1.0 and final["train/acc"] == 1.0
    assert final["val/loss"] < 0.1 * math.log(2)


def test_regression_data_is_the_function_on_the_interval():
    data = RegressionDataModule(function="abs", train_size=500, val_size=2000, noise=0.1)
    data.setup()
    (tx, ty), (vx, vy) = data.train_data, data.val_data
    assert tx.shape == ty.shape == (500, 1) and vx.shape == vy.shape == (2000, 1)
    assert tx.dtype == ty.dtype == torch.float32
    bound = math.sqrt(3)
    assert -bound <= tx.min() and tx.max() <= bound and tx.min() < -1.5 and tx.max() > 1.5
    assert torch.equal(vy, vx.abs())  # validation is noiseless
    assert (ty - tx.abs()).std().item() == pytest.approx(0.1, rel=0.15)
    # Unit-variance inputs; the chance loss is Var|x| = 1 - 3/4 for x ~ U(-sqrt 3, sqrt 3).
    assert tx.var().item() == pytest.approx(1.0, rel=0.1)
    assert data.chance_loss() == pytest.approx(vy.double().var(correction=0).item())
    assert data.chance_loss() == pytest.approx(0.25, rel=0.1)
    assert data.task.num_outputs == 1 and not data.task.classifies
    x, y = data.probe_batch(16)
    assert torch.equal(x, vx[:16]) and torch.equal(y, vy[:16])
    with pytest.raises(ConfigError, match=r"function='cube' is not allowed: choose one of abs"):
        RegressionDataModule(function="cube")


NO_CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA")


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=NO_CUDA)])
def test_regression_run_lowers_mse_on_the_model_device(compose_cfg, device):
    trainer = "trainer=gpu" if device == "cuda" else "trainer=cpu"
    cfg = compose_cfg(
        "data=regression", "data.train_size=256", "data.val_size=128", "model.depth=2",
        "model.width=32", "optimizer=adam", "optimizer.lr=0.01", "trainer.max_epochs=15",
        trainer, "logger=none", "checkpoint=none",
        "callbacks.activation_monitor.percentile_units=2",
        "callbacks.activation_monitor.histograms=false",
        "callbacks.activation_monitor.figures_every_n_epochs=0",
        "callbacks.gradient_monitor.figures_every_n_epochs=0",
    )  # fmt: skip
    summary = run(cfg)
    assert summary["status"] == "completed"
    final, chance = summary["metrics"]["final"], 0.25
    assert set(final) >= {"train/loss", "val/loss"} and "val/acc" not in final
    assert summary["metrics"]["best"]["val/acc_best"] is None
    assert summary["data"]["task"] == "regression"
    first = summary["activations"]["first_probe"]
    # The untrained net is about as far off as predicting the mean; 15 epochs fit |x| well.
    assert final["val/loss"] < 0.1 * chance
    assert objective(summary) == -final["val/loss"]
    assert "val/loss" in format_summary(summary, cfg.paths.log_dir).splitlines()[1]
    assert "val/acc" not in format_summary(summary, cfg.paths.log_dir)
    # Two units per hidden layer, three percentiles each, at every probe; ordered p15 <= p85.
    tags = [t for t in first if t.startswith("preact_p")]
    assert len(tags) == 2 * 2 * len(PREACT_PERCENTILES)
    for tag in (t for t in tags if t.startswith("preact_p15/")):
        assert first[tag] <= first[tag.replace("p15", "p50")] <= first[tag.replace("p15", "p85")]
    assert summary["verdict"]["labels"] == ["healthy"]


def test_verdict_measures_unfitted_against_the_reference_loss():
    small = {"first_last_ratio": 1.0, "total_norm": 1e-2, "max_layer_norm": 1e-2}
    common = {"act_saturated": None, "act_dead": None, "saturation": "one_sided"}
    # A regression at 0.2 MSE of targets with variance 0.25 is far from fitted (> 0.125) ...
    far = judge(**small, **common, val_loss=0.2, reference_loss=0.25)
    assert far.labels == ["vanishing"] and "val/loss 0.20 > 0.12" in far.text()
    # ... at 0.1 it is not, and ln(10) would have called neither far from fitted.
    assert judge(**small, **common, val_loss=0.1, reference_loss=0.25).labels == ["healthy"]
    assert judge(**small, **common, val_loss=0.2, num_classes=10).labels == ["healthy"]


def test_percentiles_are_the_quantiles_of_the_hooked_preactivations():
    torch.manual_seed(0)
    model = MLP("sigmoid", "xavier_uniform", hidden_sizes=[6, 5], in_features=3, num_classes=2)
    x, y = torch.randn(101, 3), torch.randint(0, 2, (101,))
    units = sample_units(model, 3, seed=4)
    assert units == sample_units(model, 3, seed=4) and list(units) == ["layer_01", "layer_02"]
    assert all(len(u) == 3 and u == sorted(set(u)) for u in units.values())
    assert sample_units(model, 9, seed=4)["layer_02"] == [0, 1, 2, 3, 4]  # all of a narrow layer
    stats = probe_statistics(model, capture_probe(model, x, y, backprop=False), units)
    with torch.no_grad():  # the inputs of each sigmoid, computed without hooks
        z1 = model.hidden[0].linear(x)
        z2 = model.hidden[1].linear(torch.sigmoid(z1))
    for name, z in (("layer_01", z1), ("layer_02", z2)):
        for unit in units[name]:
            expected = np.percentile(z[:, unit].numpy(), PREACT_PERCENTILES)  # linear, as torch
            got = [stats[percentile_tag(p, name, unit)].item() for p in PREACT_PERCENTILES]
            np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    assert percentile_tag(85, "layer_02", 7) == "preact_p85/layer_02/unit_007"
