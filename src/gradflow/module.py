"""ClassifierModule: cross-entropy on a TrackedModel's logits, accuracy, and the optimizer."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import lightning as L
import torch
from torch import nn
from torchmetrics import MaxMetric, MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from gradflow.nn.models import TrackedModel

OptimizerFactory = Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]


def _mean() -> MeanMetric:
    # "disable": no NaN check, which would sync with the host every step.
    return MeanMetric(nan_strategy="disable")


class ClassifierModule(L.LightningModule):
    """Trains `model` with the optimizer that `optimizer(params)` builds.

    `train/acc` and `train/loss` are running means over the epoch's batches, as Keras
    reports them (the weights change during the epoch); `val/*` is a fresh evaluation.
    """

    def __init__(self, model: TrackedModel, optimizer: OptimizerFactory, num_classes: int = 10):
        super().__init__()
        # The model is a module (saved in the state dict); the logger gets the full
        # resolved config from train.py instead of these.
        self.save_hyperparameters(ignore=["model"], logger=False)
        self.model = model
        self.criterion = nn.CrossEntropyLoss()
        self.train_loss, self.val_loss = _mean(), _mean()
        self.train_acc = MulticlassAccuracy(num_classes, average="micro", validate_args=False)
        self.val_acc = MulticlassAccuracy(num_classes, average="micro", validate_args=False)
        self.val_acc_best = MaxMetric()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def on_train_start(self) -> None:
        self.val_acc_best.reset()

    def _shared_step(self, batch: tuple[torch.Tensor, torch.Tensor]):
        x, y = batch
        logits = self(x)
        return self.criterion(logits, y), logits.argmax(dim=1), y

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int):
        loss, preds, y = self._shared_step(batch)
        self.train_loss.update(loss.detach(), weight=y.numel())
        self.train_acc.update(preds, y)
        self.log("train/loss", self.train_loss, on_step=False, on_epoch=True)
        self.log("train/acc", self.train_acc, on_step=False, on_epoch=True)
        return loss

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
