"""Blocks of minibatches (gradflow.blocks) change Lightning's per-batch cost, not the training:
same minibatches, same steps, same weights, same x-axis; clipping and max_steps still per step."""

from __future__ import annotations

from functools import partial

import lightning as L
import pytest
import torch
from omegaconf import OmegaConf

from gradflow.blocks import Block, BlockLoader, in_blocks
from gradflow.errors import ConfigError
from gradflow.module import ClassifierModule
from gradflow.nn import MLP
from gradflow.reporting.events import read_events
from gradflow.train import run
from gradflow.validation import validate_config
from gradflow.xor import XORDataModule


def test_block_loader_groups_consecutive_minibatches():
    batches = [(torch.full((2,), i), torch.tensor([i])) for i in range(7)]
    blocks = BlockLoader(batches, 3)
    assert len(blocks) == 3
    got = list(blocks)
    assert [len(b) for b in got] == [3, 3, 1] and all(isinstance(b, Block) for b in got)
    assert [int(y) for b in got for _, y in b] == list(range(7))  # order unchanged
    assert in_blocks(batches, 1) is batches  # 1: Lightning sees the loader itself


@pytest.mark.parametrize("bad", ["0", "-2", "1.5", "true", "'8'"])
def test_bad_steps_per_block_fails_the_run_with_the_key(compose_cfg, bad):
    summary = run(compose_cfg(f"data.steps_per_block={bad}", "callbacks=none"))
    assert summary["status"] == "failed"
    assert (
        summary["error"].startswith("data.steps_per_block=")
        and "positive integer" in summary["error"]
    )


def test_xor_data_is_blocked_too():
    with pytest.raises(ConfigError, match=r"data\.steps_per_block=0"):
        XORDataModule(steps_per_block=0)
    data = XORDataModule(copies=3, batch_size=4, steps_per_block=2)
    data.setup("fit")
    assert [len(block) for block in data.train_dataloader()] == [2, 1]


def _tiny_run(compose_cfg, tmp_path, name: str, *overrides: str) -> dict:
    cfg = compose_cfg("activation=tanh", "trainer.max_epochs=2", *overrides)
    cfg.paths.output_dir = str(tmp_path / name)
    return run(cfg)


def test_blocks_train_exactly_as_single_minibatches(compose_cfg, tmp_path):
    # 256 images in batches of 32: 8 minibatches an epoch, in blocks of 3, 3 and 2.
    blocked = _tiny_run(compose_cfg, tmp_path, "blocked", "data.steps_per_block=3")
    single = _tiny_run(compose_cfg, tmp_path, "single", "data.steps_per_block=1")
    assert blocked["status"] == single["status"] == "completed"
    assert blocked["steps"] == single["steps"] == 16
    assert blocked["metrics"] == single["metrics"]
    assert blocked["grad_norms"] == single["grad_norms"]
    assert blocked["grad_norms"]["last_step"]["step"] == 10
    # The same TensorBoard x-axis: epoch metrics at each epoch's last optimizer step (7, 15),
    # not at Lightning's batch count (3 blocks an epoch), and per-step norms every 10 steps.
    events = {name: read_events(tmp_path / name) for name in ("blocked", "single")}
    for tag in ("val/acc", "train/loss", "epoch", "grad_norm/layer_01"):
        blocked_points = events["blocked"].scalar(tag).to_dict()
        assert blocked_points == events["single"].scalar(tag).to_dict(), tag
    assert sorted(events["blocked"].scalar("val/acc").index) == [7, 15]
    assert sorted(events["blocked"].scalar("grad_norm/layer_01").index) == [0, 10]
    assert "step" not in blocked["metrics"]["final"]  # the x-axis is not a result


def test_max_steps_stops_inside_a_block(compose_cfg, tmp_path):
    summary = _tiny_run(
        compose_cfg, tmp_path, "capped", "data.steps_per_block=32", "+trainer.max_steps=5"
    )
    assert summary["status"] == "completed" and summary["steps"] == 5


def _one_step_change(clip: float | None) -> float:
    """Norm of the weight change of one SGD step (lr 0.5) with the module clipping at `clip`."""
    torch.manual_seed(0)
    net = MLP("relu", "kaiming_normal", depth=3, width=16, in_features=8, num_classes=3)
    module = ClassifierModule(
        net, partial(torch.optim.SGD, lr=0.5), num_classes=3, gradient_clip_val=clip
    )
    before = [p.detach().clone() for p in net.parameters()]
    x, y = torch.randn(16, 8) * 5, torch.randint(0, 3, (16,))
    trainer = L.Trainer(
        max_steps=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, train_dataloaders=BlockLoader([(x, y)], 2))  # one Block of one
    deltas = [p.detach() - b for p, b in zip(net.parameters(), before, strict=True)]
    return float(torch.linalg.vector_norm(torch.stack([d.norm() for d in deltas])))


def test_gradient_clipping_bounds_the_step():
    # SGD moves by lr * gradient: clipped to total norm 1e-3, the step is at most 5e-4.
    unclipped = _one_step_change(None)
    clipped = _one_step_change(1e-3)
    assert unclipped > 1e-2
    assert clipped == pytest.approx(0.5 * 1e-3, rel=1e-3)


def test_trainer_gradient_clip_val_reaches_the_module(compose_cfg, tmp_path):
    # Lightning refuses the Trainer's clipping under manual optimization; train.py hands it
    # to the module, so the usual override still clips (and changes what is learned).
    plain = _tiny_run(compose_cfg, tmp_path, "plain")
    by_norm = _tiny_run(compose_cfg, tmp_path, "norm", "+trainer.gradient_clip_val=1e-4")
    by_value = _tiny_run(
        compose_cfg,
        tmp_path,
        "value",
        "+trainer.gradient_clip_val=1e-6",
        "+trainer.gradient_clip_algorithm=value",
    )
    assert plain["status"] == by_norm["status"] == by_value["status"] == "completed"
    losses = [s["metrics"]["final"]["train/loss"] for s in (plain, by_norm, by_value)]
    assert len(set(losses)) == 3


def test_unsupported_trainer_options_fail_with_the_key(compose_cfg):
    with pytest.raises(ConfigError, match=r"trainer\.accumulate_grad_batches=2.*batch_size"):
        validate_config(compose_cfg("+trainer.accumulate_grad_batches=2"))
    with pytest.raises(ConfigError, match=r"trainer\.gradient_clip_val=-1"):
        validate_config(compose_cfg("+trainer.gradient_clip_val=-1"))
    with pytest.raises(ConfigError, match=r"trainer\.gradient_clip_algorithm='max'"):
        validate_config(compose_cfg("+trainer.gradient_clip_algorithm=max"))
    assert OmegaConf.select(compose_cfg(), "data.steps_per_block") == 32
