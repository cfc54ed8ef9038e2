"""Blocks of minibatches: Lightning's per-batch machinery once per block, not once per step.

Each batch Lightning fetches costs hooks, bookkeeping and logger checks on top of the step
itself: about 0.5 ms on a CPU core, 40% of a step of the tutorial's 4x128 MLP
(bench/bench_train.py). Like Keras's `steps_per_execution`, `BlockLoader` hands Lightning
`steps_per_block` consecutive minibatches as one `Block`, and `ClassifierModule` (manual
optimization) takes one optimizer step per minibatch of it. The minibatches, their order
and the weights are exactly those of `steps_per_block=1`.

Per minibatch, as before: `trainer.global_step`, the optimizer hooks (`on_before_backward`,
`on_after_backward`, `on_before_optimizer_step`: GradientMonitor sees every step),
gradient clipping, `max_steps`. Per block: `on_train_batch_start/end`, the progress bar,
and what Lightning counts in batches: `limit_train_batches` and an integer
`val_check_interval`. `steps_per_block=1` gives Lightning's one-minibatch-per-batch loop.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sized
from typing import Any


class Block(list):
    """Consecutive training minibatches that Lightning passes on as one batch."""


class BlockLoader:
    """Groups the minibatches of `loader` into `Block`s of `steps_per_block` (the last one
    may be shorter). Iterating it iterates `loader` once, so its shuffling is unchanged."""

    def __init__(self, loader: Iterable[Any], steps_per_block: int) -> None:
        self.loader = loader
        self.steps_per_block = steps_per_block

    def __len__(self) -> int:
        if not isinstance(self.loader, Sized):
            raise TypeError(f"{type(self.loader).__name__} has no length")
        return math.ceil(len(self.loader) / self.steps_per_block)

    def __iter__(self) -> Iterator[Block]:
        block = Block()
        for batch in self.loader:
            block.append(batch)
            if len(block) == self.steps_per_block:
                yield block
                block = Block()
        if block:
            yield block


def in_blocks(loader: Iterable[Any], steps_per_block: int) -> Iterable[Any]:
    """`loader` as Lightning should see it: unchanged for 1, else a BlockLoader."""
    return loader if steps_per_block == 1 else BlockLoader(loader, steps_per_block)
