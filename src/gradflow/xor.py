"""XORDataModule: the four XOR points, the tutorial's smallest vanishing-gradient toy."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import lightning
import torch
from torch import Tensor

from gradflow.blocks import in_blocks
from gradflow.data import PreloadedLoader, ProbeBatchMixin, check_positive
from gradflow.errors import ConfigError

XOR_INPUTS = [[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]]
XOR_LABELS = [0, 1, 1, 0]


class XORDataModule(ProbeBatchMixin, lightning.LightningDataModule):
    """Train on `copies` (optionally jittered) copies of the 4 XOR points; validate on the 4
    (also the probe batch).

    Labels are classes 0/1 for a 2-logit cross-entropy head, equivalent to the tutorial's
    single sigmoid unit with binary cross-entropy.
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
        steps_per_block: int = 32,
    ) -> None:
        super().__init__()
        if copies < 1:
            raise ConfigError(f"data.copies={copies} must be >= 1.")
        if noise < 0:
            raise ConfigError(f"data.noise={noise} must be >= 0.")
        if batch_size < 1:
            raise ConfigError(f"data.batch_size={batch_size} must be >= 1.")
        self.copies, self.noise, self.batch_size = copies, noise, batch_size
        self.shuffle_seed, self.subsample_seed = shuffle_seed, subsample_seed
        check_positive("steps_per_block", steps_per_block)
        self.steps_per_block = steps_per_block
        self.train_data: tuple[Tensor, Tensor] | None = None
        self.val_data: tuple[Tensor, Tensor] | None = None

    def setup(self, stage: str | None = None) -> None:
        device = self.trainer.strategy.root_device if self.trainer is not None else "cpu"
        if self.train_data is not None and self.train_data[0].device == torch.device(device):
            return
        x = torch.tensor(XOR_INPUTS)
        y = torch.tensor(XOR_LABELS)
        generator = torch.Generator().manual_seed(self.subsample_seed)
        train_x = x.repeat(self.copies, 1)
        train_x = train_x + self.noise * torch.randn(train_x.shape, generator=generator)
        self.train_data = (train_x.to(device), y.repeat(self.copies).to(device))
        self.val_data = (x.to(device), y.to(device))

    def train_dataloader(self) -> Iterable[Any]:
        x, y = self.train_data
        epoch_fn = (lambda: self.trainer.current_epoch) if self.trainer is not None else None
        loader = PreloadedLoader(
            x, y, self.batch_size, shuffle=True, seed=self.shuffle_seed, epoch_fn=epoch_fn
        )
        return in_blocks(loader, self.steps_per_block)

    def val_dataloader(self) -> PreloadedLoader:
        x, y = self.val_data
        return PreloadedLoader(x, y, len(y), shuffle=False)

    @property
    def source_info(self) -> dict[str, Any]:
        n_train = 4 * self.copies
        return {
            "source": "synthetic_xor",
            "dataset": "xor",
            "description": f"XOR: {self.copies} cop{'y' if self.copies == 1 else 'ies'} "
            f"of the 4 points, noise std {self.noise}",
            "train_size": n_train,
            "val_size": 4,
        }
