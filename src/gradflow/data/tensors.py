"""Data that fits in memory: load once, keep it where the model is, slice batches there.

`TensorDataModule` is what the MNIST and XOR data modules share: a subclass says how to
`load` its train and validation tensors (on the CPU); the data module moves them, once,
to the device of the model being trained and hands Lightning `PreloadedLoader`s over
them. No workers, no per-sample Python, no host-to-device copy per step.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator
from typing import Any

import lightning as L
import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, TensorDataset

from gradflow.checks import whole
from gradflow.errors import ConfigError
from gradflow.rules.data import data_module_rules
from gradflow.tasks import Task, make_task

log = logging.getLogger(__name__)

Split = tuple[Tensor, Tensor]  # inputs, targets (integer labels, or values to regress)


def epoch_seed(shuffle_seed: int, epoch: int) -> int:
    """A well-mixed seed for one epoch's order, the same whenever (shuffle_seed, epoch) is."""
    return int(np.random.SeedSequence([shuffle_seed, epoch]).generate_state(1, np.uint64)[0])


class PreloadedLoader:
    """Batches sliced out of tensors already on their device.

    One permutation is drawn on the CPU per epoch (seeded by `seed` and the epoch, so a
    resumed run sees the same order) and moved to the device once. `epoch_fn` gives the
    epoch (the trainer's); when it is None or returns None, the loader counts its passes.
    """

    def __init__(
        self,
        x: Tensor,
        y: Tensor,
        batch_size: int,
        *,
        shuffle: bool,
        drop_last: bool = False,
        seed: int = 0,
        epoch_fn: Callable[[], int | None] | None = None,
    ) -> None:
        self.x, self.y = x, y
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.seed = seed
        self.epoch_fn = epoch_fn
        self.passes = 0

    def __len__(self) -> int:
        n = len(self.y)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def __iter__(self) -> Iterator[Split]:
        # A generator: the body (and the pass count) only runs once iteration starts, so
        # Lightning's `iter(loader)` check does not consume an epoch.
        epoch = self.epoch_fn() if self.epoch_fn is not None else None
        epoch = self.passes if epoch is None else epoch
        self.passes += 1
        stop = len(self) * self.batch_size if self.drop_last else len(self.y)
        if not self.shuffle:
            for start in range(0, stop, self.batch_size):
                end = start + self.batch_size
                yield self.x[start:end], self.y[start:end]
            return
        order = self.order(epoch).to(self.y.device)  # one transfer per epoch
        for start in range(0, stop, self.batch_size):
            idx = order[..., start : start + self.batch_size]
            yield self.x[idx], self.y[idx]

    def order(self, epoch: int) -> Tensor:
        """This epoch's order of the samples, drawn on the CPU."""
        return shuffled(len(self.y), self.seed, epoch)


def shuffled(n: int, seed: int, epoch: int) -> Tensor:
    """A permutation of range(n), the same whenever (seed, epoch) is."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(epoch_seed(seed, epoch)))


class PopulationLoader(PreloadedLoader):
    """A population's batches: member m's batch at [m] of (M, B, ...) inputs and (M, B)
    targets, in the order member m's own PreloadedLoader (seeded `seeds[m]`) gives it."""

    def __init__(self, x: Tensor, y: Tensor, batch_size: int, *, seeds: list[int], **kwargs):
        super().__init__(x, y, batch_size, shuffle=True, **kwargs)
        self.seeds = list(seeds)

    def order(self, epoch: int) -> Tensor:
        """(M, N): each member's order for this epoch."""
        return torch.stack([shuffled(len(self.y), seed, epoch) for seed in self.seeds])


class TensorDataModule(L.LightningDataModule):
    """Train and validation tensors loaded once by `load()`, batched by `PreloadedLoader`.

    With `preload` (the default) the tensors move to the device of the model being trained
    (`trainer.lightning_module.device`, where Lightning has put the model by the time it
    asks for a loader) and stay there; without it, a torch DataLoader serves them from the
    CPU and Lightning copies each batch. Subclasses set `input_shape`, `task_name` (a
    `gradflow.tasks` name) and, when they classify, `num_classes` (the model's input and
    output sizes come from them), and implement `load`.
    """

    num_classes: int | None = None
    input_shape: tuple[int, ...]
    task_name: str = "multiclass"

    def __init__(
        self,
        batch_size: int,
        val_batch_size: int,
        shuffle_seed: int,
        drop_last: bool = False,
        preload: bool = True,
    ) -> None:
        super().__init__()
        data_module_rules(
            batch_size=batch_size, shuffle_seed=shuffle_seed, val_batch_size=val_batch_size
        )
        self.batch_size, self.val_batch_size = batch_size, val_batch_size
        self.shuffle_seed = shuffle_seed
        self.drop_last, self.preload = drop_last, preload
        self.train_data: Split | None = None
        self.val_data: Split | None = None
        # A population's batch orders, one shuffle seed per member (`stack`); None: one run.
        self.member_seeds: list[int] | None = None

    def stack(self, shuffle_seeds: list[int]) -> None:
        """Serve a population: each training batch holds every member's own batch, member m
        in the order its own run (shuffle_seed = shuffle_seeds[m]) would see."""
        if not self.preload:
            raise ConfigError(
                "preload", self.preload, "a population slices its batches on the device"
            )
        self.member_seeds = [whole("shuffle_seed", s, minimum=0) for s in shuffle_seeds]

    @property
    def in_features(self) -> int:
        """Inputs per sample, flattened: what the model's first layer takes."""
        return math.prod(self.input_shape)

    @property
    def task(self) -> Task:
        """What the targets are, hence the model's output size and the loss."""
        return make_task(self.task_name, self.num_classes)

    def chance_loss(self) -> float | None:
        """The task's loss of the best input-blind prediction on the validation targets."""
        self.setup()
        return self.task.chance_loss(self.val_data[1])

    def load(self) -> tuple[Split, Split]:
        """(train, validation) tensors on the CPU; called once, by the first `setup`."""
        raise NotImplementedError

    def setup(self, stage: str | None = None) -> None:
        if self.train_data is None:
            self.train_data, self.val_data = self.load()
            self._check_batch_size(len(self.train_data[1]))

    def _check_batch_size(self, n: int) -> None:
        if self.batch_size <= n:
            return
        if self.drop_last:
            raise ConfigError(
                "batch_size",
                self.batch_size,
                f"the training set holds {n:,} samples and drop_last leaves no full batch; "
                f"use at most {n:,}",
            )
        log.warning(
            f"The batch size ({self.batch_size:,}) is larger than the {n:,} training samples, "
            f"so each epoch is one full-batch step of {n:,}."
        )

    def usage(self) -> dict[str, int] | None:
        """How the training set is batched, for summary.json (None: not loaded)."""
        if self.train_data is None:
            return None
        n = len(self.train_data[1])
        batch = min(self.batch_size, n)
        steps = n // batch if self.drop_last else math.ceil(n / batch)
        return {"batch_size": batch, "steps_per_epoch": steps}

    def _placed(self, which: str) -> Split:
        """The split on the model's device (moved there once; `.to` is free afterwards)."""
        self.setup()
        device = torch.device("cpu")
        if self.preload and self.trainer is not None and self.trainer.lightning_module is not None:
            device = self.trainer.lightning_module.device
        x, y = getattr(self, which)
        placed = x.to(device), y.to(device)
        setattr(self, which, placed)
        return placed

    def _epoch(self) -> int | None:
        return self.trainer.current_epoch if self.trainer is not None else None

    def train_dataloader(self) -> PreloadedLoader | DataLoader:
        x, y = self._placed("train_data")
        if self.member_seeds is not None:
            return PopulationLoader(
                x,
                y,
                self.batch_size,
                seeds=self.member_seeds,
                drop_last=self.drop_last,
                epoch_fn=self._epoch,
            )
        if not self.preload:
            # Seeded once per loader: epoch e's order depends on the epochs before it, so
            # only preload=True gives a resumed run the same order.
            generator = torch.Generator().manual_seed(self.shuffle_seed)
            return DataLoader(
                TensorDataset(x, y),
                self.batch_size,
                shuffle=True,
                drop_last=self.drop_last,
                generator=generator,
            )
        return PreloadedLoader(
            x,
            y,
            self.batch_size,
            shuffle=True,
            drop_last=self.drop_last,
            seed=self.shuffle_seed,
            epoch_fn=self._epoch,
        )

    def val_dataloader(self) -> PreloadedLoader | DataLoader:
        x, y = self._placed("val_data")
        if not self.preload:
            return DataLoader(TensorDataset(x, y), self.val_batch_size, shuffle=False)
        return PreloadedLoader(x, y, self.val_batch_size, shuffle=False)

    def probe_batch(self, n: int = 256) -> Split:
        """The first n validation samples (fewer if validation is smaller), the same every call."""
        x, y = self._placed("val_data")
        return x[:n], y[:n]

    @property
    def source_info(self) -> dict[str, Any] | None:
        """Where the data came from and how much was used, for summary.json (None: not loaded)."""
        raise NotImplementedError
