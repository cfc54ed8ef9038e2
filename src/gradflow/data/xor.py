"""XORDataModule: the four XOR points, the tutorial's smallest vanishing-gradient toy."""

from __future__ import annotations

from typing import Any

import torch

from gradflow.data.tensors import Split, TensorDataModule
from gradflow.rules.data import xor_rules

XOR_INPUTS = [[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]]
XOR_LABELS = [0, 1, 1, 0]


class XORDataModule(TensorDataModule):
    """Train on `copies` (optionally jittered) copies of the 4 XOR points; validate on the 4
    (also the probe batch).

    Labels are classes 0/1. `task`: `multiclass`, two logits with softmax cross-entropy;
    `binary`, the tutorial's one sigmoid unit with binary cross-entropy. The two are the
    same function class (softmax over two logits is sigmoid of their difference) but not the
    same parametrisation: the output layer differs, so training does too.
    """

    num_classes = 2
    input_shape = (2,)

    def __init__(
        self,
        copies: int = 1,
        noise: float = 0.0,
        batch_size: int = 4,
        shuffle_seed: int = 42,
        subsample_seed: int = 7,
        task: str = "multiclass",
    ) -> None:
        super().__init__(batch_size, len(XOR_LABELS), shuffle_seed)
        xor_rules(task=task, copies=copies, noise=noise, subsample_seed=subsample_seed)
        self.task_name, self.copies, self.noise = task, copies, noise
        self.subsample_seed = subsample_seed

    def load(self) -> tuple[Split, Split]:
        x, y = torch.tensor(XOR_INPUTS), torch.tensor(XOR_LABELS)
        generator = torch.Generator().manual_seed(self.subsample_seed)
        train_x = x.repeat(self.copies, 1)
        train_x = train_x + self.noise * torch.randn(train_x.shape, generator=generator)
        return (train_x, y.repeat(self.copies)), (x, y)

    @property
    def source_info(self) -> dict[str, Any] | None:
        return {
            "source": "synthetic_xor",
            "dataset": "xor",
            "description": f"XOR: {self.copies} cop{'y' if self.copies == 1 else 'ies'} "
            f"of the 4 points, noise std {self.noise}",
            "train_size": len(XOR_LABELS) * self.copies,
            "val_size": len(XOR_LABELS),
        }
