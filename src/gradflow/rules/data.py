"""The data modules' value rules, without torch: what each data config may say.

Each data module's constructor calls its rules here with its keyword values, and
`gradflow.rules.check` calls the same rules on a composed config before torch loads.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gradflow.checks import number, one_of, whole
from gradflow.errors import ConfigError

TASK_NAMES = ("multiclass", "binary", "one_vs_rest", "regression")  # gradflow.tasks
# The tasks whose output layer has one unit per class.
PER_CLASS = ("multiclass", "one_vs_rest")
XOR_TASKS = ("multiclass", "binary")
SCALINGS = ("unit", "standardize")
REGRESSION_FUNCTIONS = ("abs", "sin", "square")  # gradflow.data.regression.FUNCTIONS


@dataclass(frozen=True)
class DatasetSpec:
    """What differs between MNIST and Fashion-MNIST."""

    label: str  # for people: messages and descriptions
    torchvision_class: str  # in torchvision.datasets; also the folder under data_dir
    mean: float  # of the official training pixels scaled to [0, 1]
    std: float
    train_count: int = 60_000  # images in the official train split
    test_count: int = 10_000  # and in the official test split


DATASETS = {
    "mnist": DatasetSpec("MNIST", "MNIST", 0.1307, 0.3081),
    "fashion_mnist": DatasetSpec("Fashion-MNIST", "FashionMNIST", 0.2860, 0.3530),
}


def data_module_rules(*, batch_size: Any, shuffle_seed: Any, val_batch_size: Any = None) -> None:
    """TensorDataModule's rules; `val_batch_size` None: the module sets it (XOR's 4 points)."""
    whole("batch_size", batch_size)
    if val_batch_size is not None:
        whole("val_batch_size", val_batch_size)
    whole("shuffle_seed", shuffle_seed, minimum=0)


def mnist_rules(
    *, task: Any, dataset: Any, scaling: Any, train_size: Any, val_size: Any, subsample_seed: Any
) -> None:
    """MNISTDataModule's rules beyond TensorDataModule's."""
    one_of("task", task, PER_CLASS)
    spec = DATASETS[one_of("dataset", dataset, DATASETS)]
    one_of("scaling", scaling, SCALINGS)
    for key, size, split, most in (
        ("train_size", train_size, "train", spec.train_count),
        ("val_size", val_size, "test", spec.test_count),
    ):
        if size is not None:
            whole(key, size, maximum=most, what=f"the {spec.label} {split} split", null="for all")
    whole("subsample_seed", subsample_seed, minimum=0)


def xor_rules(*, task: Any, copies: Any, noise: Any, subsample_seed: Any) -> None:
    """XORDataModule's rules beyond TensorDataModule's."""
    one_of("task", task, XOR_TASKS)
    whole("copies", copies)
    number("noise", noise, what="the jitter's standard deviation", or_equal=True)
    whole("subsample_seed", subsample_seed, minimum=0)


def regression_rules(
    *,
    function: Any,
    low: Any,
    high: Any,
    train_size: Any,
    val_size: Any,
    noise: Any,
    subsample_seed: Any,
) -> None:
    """RegressionDataModule's rules beyond TensorDataModule's."""
    one_of("function", function, REGRESSION_FUNCTIONS)
    if not (isinstance(low, int | float) and isinstance(high, int | float) and low < high):
        raise ConfigError("high", high, f"use a number above low ({low})")
    whole("train_size", train_size)
    whole("val_size", val_size, minimum=2, what="a variance needs two")
    number("noise", noise, what="the targets' noise std", or_equal=True)
    whole("subsample_seed", subsample_seed, minimum=0)
