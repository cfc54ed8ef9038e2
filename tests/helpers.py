"""What the tests share: a tiny run's overrides and tiny MNIST-shaped IDX files."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]

# A run small enough for a unit test: offline sample, no download attempt, one epoch.
TINY = [
    "data.train_size=256",
    "data.val_size=128",
    "data.download=false",
    "trainer.max_epochs=1",
    "trainer.enable_progress_bar=false",
    "model.width=32",
]
# torchvision's file names for MNIST and Fashion-MNIST: train images and labels, test ones.
IDX_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


def idx_bytes(array: np.ndarray) -> bytes:
    """An array as a uint8 IDX file: magic (0, 0, 8, ndim), big-endian dims, the bytes."""
    header = struct.pack(f">BBBB{array.ndim}I", 0, 0, 8, array.ndim, *array.shape)
    return header + array.astype(np.uint8).tobytes()


def fake_mnist(n_train: int = 60, n_test: int = 20, seed: int = 0) -> dict[str, np.ndarray]:
    """Random 28 x 28 images and labels 0-9, by IDX file name."""
    rng = np.random.default_rng(seed)
    return dict(
        zip(
            IDX_FILES,
            [
                rng.integers(0, 256, (n_train, 28, 28)),
                rng.integers(0, 10, n_train),
                rng.integers(0, 256, (n_test, 28, 28)),
                rng.integers(0, 10, n_test),
            ],
            strict=True,
        )
    )


def write_raw(folder: Path, arrays: dict[str, np.ndarray]) -> Path:
    """The arrays as plain IDX files in `folder` (created); returns it."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, array in arrays.items():
        (folder / name).write_bytes(idx_bytes(array))
    return folder


# The sweep the TensorBoard tests look at: a sigmoid net, plain and with BatchNorm.
SIGMOID_BN_SWEEP = ["model=mlp,bn_mlp", "activation=sigmoid", "trainer.max_epochs=2"]
SIGMOID_BN_JOBS = ["0_model=mlp", "1_model=bn_mlp"]  # its job directories: what varies


def train_sweep(root: Path, *overrides: str) -> Path:
    """`scripts/train.py -m` with TINY sizes (`overrides` win) into <root>/sweep (its jobs
    and, at the end, its report); returns the sweep directory."""
    sweep = root / "sweep"
    cmd = [sys.executable, str(REPO_ROOT / "scripts" / "train.py"), "-m", *TINY, *overrides,
           f"hydra.sweep.dir={sweep}", f"paths.log_dir={root / 'logs'}",
           f"paths.data_dir={root / 'data'}"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return sweep
