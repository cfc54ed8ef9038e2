"""TaskModule: a TrackedModel trained on its task's loss, with accuracy when it classifies."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import lightning as L
import torch
from torch import nn
from torchmetrics import MaxMetric, MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from gradflow.diagnostics.common import epoch_end_step
from gradflow.names import EPOCH, TRAIN_ACC, TRAIN_LOSS, VAL_ACC, VAL_ACC_BEST, VAL_LOSS
from gradflow.nn.models import TrackedModel
from gradflow.tasks import Task, make_task

Batch = tuple[torch.Tensor, torch.Tensor]
OptimizerFactory = Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]
# Logged to set the x-axis (Lightning pops `step`, and adds `epoch` to the train metrics):
# not results.
AXIS_METRICS = ("step", EPOCH)
# The key that marks the optimizer's parameter group that weight decay leaves alone.
DECAYED = "decayed"
# Where a checkpoint keeps val/acc_best (the best validation accuracy so far).
ACC_BEST_KEY = "val_acc_best"


def configure_groups(groups: list[dict[str, Any]], optimizer: OptimizerFactory) -> None:
    """Set `groups`' numeric settings (lr, momentum, ...) to the optimizer partial's, weight
    decay left at 0 where it is off (`DECAYED`)."""
    settings = getattr(optimizer, "keywords", {})
    numbers = {k: v for k, v in settings.items() if isinstance(v, int | float)}
    for group in groups:
        update = {key: value for key, value in numbers.items() if key in group}
        if not group.get(DECAYED, True):
            update.pop("weight_decay", None)
        group.update(update)


class TaskModule(L.LightningModule):
    """Trains `model` on `task`'s loss (`gradflow.tasks`: `multiclass`, `binary`,
    `one_vs_rest`, `regression`) with the optimizer that `optimizer(params)` builds (a Hydra
    partial); its weight decay applies to the weight matrices only (`configure_optimizers`).

    `train/acc` and `train/loss` are running means over the epoch's batches, as Keras
    reports them (the weights change during the epoch); `val/*` is a fresh evaluation.
    The training sums stay on the device and are logged once, at the epoch's end: a
    torchmetrics update plus a `self.log` per step would cost more than a step of these
    small nets, and a host sync each. Train and validation metrics share one x-axis with
    every end-of-epoch value of the diagnostics: the epoch's last optimizer step
    (`epoch_end_step`). A regression task logs the losses only (no accuracy tags).
    `chance_loss` (the data module's) is kept for the verdict.
    """

    def __init__(
        self,
        model: TrackedModel,
        optimizer: OptimizerFactory,
        num_classes: int | None = 10,
        task: str = "multiclass",
        chance_loss: float | None = None,
    ):
        super().__init__()
        # The model is a module (saved in the state dict); the logger gets the full
        # resolved config from the run instead of these.
        self.save_hyperparameters(ignore=["model"], logger=False)
        self.model = model
        self.task: Task = make_task(task, num_classes)
        self.chance_loss = chance_loss if chance_loss is not None else self.task.chance_loss()
        # The epoch's sum of per-sample losses and of correct predictions, and its sample count.
        self.register_buffer("train_loss_sum", torch.zeros(()), persistent=False)
        self.register_buffer("train_hits", torch.zeros((), dtype=torch.long), persistent=False)
        self.train_count = 0
        # nan_strategy="disable": no NaN check, which would sync with the host every batch.
        self.val_loss = MeanMetric(nan_strategy="disable")
        # Classes as labels for both heads (binary: the logit's sign), so one metric counts
        # them; a regression never updates it.
        classes = num_classes if self.task.classifies else 2
        self.val_acc = MulticlassAccuracy(classes, average="micro", validate_args=False)
        self.val_acc_best = MaxMetric()
        self._restored_acc_best: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def on_train_start(self) -> None:
        # Forget what a sanity check saw; a resumed run starts from its checkpoint's best.
        self.val_acc_best.reset()
        if self._restored_acc_best is not None:
            self.val_acc_best.update(self._restored_acc_best.to(self.device))
        # The optimizer as configured: a checkpoint's state (restored by now) brings back the
        # learning rate it was saved with, and a resumed run may change it (RESUMABLE).
        for optimizer in self.trainer.optimizers:
            configure_groups(optimizer.param_groups, self.hparams.optimizer)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # MaxMetric's state is not in the state dict: keep the best so far for a resume.
        checkpoint[ACC_BEST_KEY] = self.val_acc_best.max_value.detach().cpu()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        best = checkpoint.get(ACC_BEST_KEY)
        self._restored_acc_best = best if best is not None and torch.isfinite(best) else None

    def _shared_step(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        x, y = batch
        outputs = self(x)
        preds = self.task.predict(outputs) if self.task.classifies else None
        return self.task.loss(outputs, y), preds, y

    def on_train_epoch_start(self) -> None:
        self.train_loss_sum.zero_()
        self.train_hits.zero_()
        self.train_count = 0

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        loss, preds, y = self._shared_step(batch)
        # In place on the device: no host sync, nothing logged until the epoch ends.
        samples = len(y)
        self.train_loss_sum.add_(loss.detach(), alpha=samples)
        if preds is not None:
            self.train_hits.add_((preds == y).sum())
        self.train_count += samples
        return loss

    def on_train_epoch_end(self) -> None:
        if self.train_count:
            self.log(TRAIN_LOSS, self.train_loss_sum / self.train_count)
            if self.task.classifies:
                self.log(TRAIN_ACC, self.train_hits / self.train_count)

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        loss, preds, y = self._shared_step(batch)
        self.val_loss.update(loss, weight=len(y))
        self.log(VAL_LOSS, self.val_loss, on_step=False, on_epoch=True)
        if preds is not None:
            self.val_acc.update(preds, y)
            self.log(VAL_ACC, self.val_acc, on_step=False, on_epoch=True, prog_bar=True)

    def on_validation_epoch_end(self) -> None:
        if self.task.classifies:
            self.val_acc_best.update(self.val_acc.compute())
            self.log(VAL_ACC_BEST, self.val_acc_best.compute(), prog_bar=True)
        # Lightning would log validation at the step after the epoch's last; put it on the
        # train metrics' step instead (a logged `step` sets the loggers' x-axis). `epoch` is
        # logged once, with the train metrics, by Lightning itself.
        self.log("step", float(epoch_end_step(self.trainer)))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        # Weight decay on weight matrices only, as nanoGPT and timm's optimizer factory do:
        # biases, BatchNorm's scale and shift and ReZero gates (fewer than 2 dimensions) keep
        # their values (Nielsen's L2, too, is on the weights). Without decay it changes nothing.
        params = [p for p in self.parameters() if p.requires_grad]
        groups = [
            {"params": [p for p in params if p.ndim >= 2]},
            {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0, DECAYED: False},
        ]
        return self.hparams.optimizer([group for group in groups if group["params"]])
