"""ClassifierModule: cross-entropy on a TrackedModel's logits, accuracy, and the optimizer."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import lightning as L
import torch
from torch import nn
from torchmetrics import MaxMetric, MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from gradflow.nn.models import TrackedModel

OptimizerFactory = Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]
# Where a checkpoint keeps val/acc_best (the best validation accuracy so far).
ACC_BEST_KEY = "val_acc_best"


def _mean() -> MeanMetric:
    # "disable": no NaN check, which would sync with the host every step.
    return MeanMetric(nan_strategy="disable")


class ClassifierModule(L.LightningModule):
    """Trains `model` with the optimizer that `optimizer(params)` builds.

    `train/acc` and `train/loss` are running means over the epoch's batches, as Keras
    reports them (the weights change during the epoch); `val/*` is a fresh evaluation.
    The training sums stay on the device and are logged once, at the epoch's end: a
    torchmetrics update plus a `self.log` per step cost more than a step of these small
    nets (bench/bench_train.py).
    """

    def __init__(self, model: TrackedModel, optimizer: OptimizerFactory, num_classes: int = 10):
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

    def _shared_step(self, batch: tuple[torch.Tensor, torch.Tensor]):
        x, y = batch
        logits = self(x)
        return self.criterion(logits, y), logits.argmax(dim=1), y

    def on_train_epoch_start(self) -> None:
        self.train_loss_sum.zero_()
        self.train_hits.zero_()
        self.train_count = 0

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int):
        loss, preds, y = self._shared_step(batch)
        # In place on the device: no host sync, nothing logged until the epoch ends.
        self.train_loss_sum.add_(loss.detach(), alpha=y.numel())
        self.train_hits.add_((preds == y).sum())
        self.train_count += y.numel()
        return loss

    def on_train_epoch_end(self) -> None:
        if self.train_count:
            self.log("train/loss", self.train_loss_sum / self.train_count)
            self.log("train/acc", self.train_hits / self.train_count)

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        loss, preds, y = self._shared_step(batch)
        self.val_loss.update(loss, weight=y.numel())
        self.val_acc.update(preds, y)
        self.log("val/loss", self.val_loss, on_step=False, on_epoch=True)
        self.log("val/acc", self.val_acc, on_step=False, on_epoch=True, prog_bar=True)

    def on_validation_epoch_end(self) -> None:
        self.val_acc_best.update(self.val_acc.compute())
        self.log("val/acc_best", self.val_acc_best.compute(), prog_bar=True)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return self.hparams.optimizer(self.parameters())
