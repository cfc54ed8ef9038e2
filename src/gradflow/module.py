"""ClassifierModule: cross-entropy on a TrackedModel's logits, accuracy, and the optimizer."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import lightning as L
import torch
from torch import nn
from torchmetrics import MaxMetric, MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from gradflow.blocks import Block
from gradflow.nn.models import TrackedModel

Batch = tuple[torch.Tensor, torch.Tensor]
OptimizerFactory = Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]
# Logged with the epoch metrics to set their x-axis (Lightning pops `step`); not results.
AXIS_METRICS = ("step", "epoch")
# Where a checkpoint keeps val/acc_best (the best validation accuracy so far).
ACC_BEST_KEY = "val_acc_best"


def _mean() -> MeanMetric:
    # "disable": no NaN check, which would sync with the host every step.
    return MeanMetric(nan_strategy="disable")


class ClassifierModule(L.LightningModule):
    """Trains `model` with the optimizer that `optimizer(params)` builds.

    A training batch is one (x, y) minibatch or a `Block` of them (gradflow.blocks); each
    minibatch is one optimizer step, through Lightning's manual optimization
    (`manual_backward`, `LightningOptimizer.step`), so the callbacks' backward and
    optimizer hooks and `global_step` still see every step. Gradient clipping, which
    Lightning leaves to the module under manual optimization, is done here with
    Lightning's own `clip_gradients`, after the callbacks' `on_before_optimizer_step` as
    in automatic optimization (train.py passes on `trainer.gradient_clip_val/_algorithm`).

    `train/acc` and `train/loss` are running means over the epoch's batches, as Keras
    reports them (the weights change during the epoch); `val/*` is a fresh evaluation.
    The training sums stay on the device and are logged once, at the epoch's end: a
    torchmetrics update plus a `self.log` per step cost more than a step of these small
    nets (bench/bench_train.py). Epoch metrics are logged at the epoch's last optimizer
    step (global_step - 1, as Lightning does), however many minibatches a block holds.
    """

    def __init__(
        self,
        model: TrackedModel,
        optimizer: OptimizerFactory,
        num_classes: int = 10,
        gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str = "norm",
    ):
        super().__init__()
        # The model is a module (saved in the state dict); the logger gets the full
        # resolved config from train.py instead of these.
        self.save_hyperparameters(ignore=["model"], logger=False)
        self.model = model
        self.criterion = nn.CrossEntropyLoss()
        # The epoch's sum of per-sample losses and of correct predictions, and its sample count.
        self.register_buffer("train_loss_sum", torch.zeros(()), persistent=False)
        self.register_buffer("train_hits", torch.zeros((), dtype=torch.long), persistent=False)
        self.train_count = 0
        self.val_loss = _mean()
        self.val_acc = MulticlassAccuracy(num_classes, average="micro", validate_args=False)
        self.val_acc_best = MaxMetric()
        self._restored_acc_best: torch.Tensor | None = None
        self.automatic_optimization = False
        self.gradient_clip_val = gradient_clip_val
        self.gradient_clip_algorithm = gradient_clip_algorithm

    def __setattr__(self, name: str, value: Any) -> None:
        # Lightning sets `_current_fx_name` around every hook call, some 20 times a step;
        # nn.Module's parameter/module/buffer checks made that ~5% of a tutorial step.
        if name == "_current_fx_name":
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def on_train_start(self) -> None:
        # Forget what a sanity check saw; a resumed run starts from its checkpoint's best.
        self.val_acc_best.reset()
        if self._restored_acc_best is not None:
            self.val_acc_best.update(self._restored_acc_best.to(self.device))

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # MaxMetric's state is not in the state dict: keep the best so far for a resume.
        checkpoint[ACC_BEST_KEY] = self.val_acc_best.max_value.detach().cpu()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        best = checkpoint.get(ACC_BEST_KEY)
        self._restored_acc_best = best if best is not None and torch.isfinite(best) else None

    def _shared_step(self, batch: Batch):
        x, y = batch
        logits = self(x)
        return self.criterion(logits, y), logits.argmax(dim=1), y

    def on_train_epoch_start(self) -> None:
        self.train_loss_sum.zero_()
        self.train_hits.zero_()
        self.train_count = 0

    def training_step(self, batch: Batch | Block, batch_idx: int) -> None:
        optimizer = self.optimizers()
        max_steps = self.trainer.max_steps
        for minibatch in batch if isinstance(batch, Block) else (batch,):
            if 0 <= max_steps <= self.global_step:  # a block may straddle max_steps
                break
            loss, preds, y = self._shared_step(minibatch)
            optimizer.zero_grad(set_to_none=True)
            self.manual_backward(loss)
            optimizer.step()
            # In place on the device: no host sync, nothing logged until the epoch ends.
            self.train_loss_sum.add_(loss.detach(), alpha=y.numel())
            self.train_hits.add_((preds == y).sum())
            self.train_count += y.numel()

    def transfer_batch_to_device(
        self, batch: Any, device: torch.device, dataloader_idx: int
    ) -> Any:
        if isinstance(batch, Block):
            # Lightning's generic walk over a block's nested tuples costs more than the
            # copies (none at all for preloaded data: `.to` returns the tensor itself).
            return Block((x.to(device), y.to(device)) for x, y in batch)
        return super().transfer_batch_to_device(batch, device, dataloader_idx)

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        if self.gradient_clip_val:
            self.clip_gradients(
                optimizer,
                gradient_clip_val=self.gradient_clip_val,
                gradient_clip_algorithm=self.gradient_clip_algorithm,
            )

    def _log_axis(self) -> None:
        # Lightning uses a logged `step` as the x-axis; otherwise it would count batches
        # (blocks), not optimizer steps, and it would add `epoch` itself. The epoch's last
        # step, where Lightning puts epoch metrics, so a resume's purge_step keeps them.
        self.log("step", float(max(self.global_step - 1, 0)))
        self.log("epoch", float(self.current_epoch))

    def on_train_epoch_end(self) -> None:
        if self.train_count:
            self.log("train/loss", self.train_loss_sum / self.train_count)
            self.log("train/acc", self.train_hits / self.train_count)
            self._log_axis()

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        loss, preds, y = self._shared_step(batch)
        self.val_loss.update(loss, weight=y.numel())
        self.val_acc.update(preds, y)
        self.log("val/loss", self.val_loss, on_step=False, on_epoch=True)
        self.log("val/acc", self.val_acc, on_step=False, on_epoch=True, prog_bar=True)

    def on_validation_epoch_end(self) -> None:
        self.val_acc_best.update(self.val_acc.compute())
        self.log("val/acc_best", self.val_acc_best.compute(), prog_bar=True)
        self._log_axis()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return self.hparams.optimizer(self.parameters())
