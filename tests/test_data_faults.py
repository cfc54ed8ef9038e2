"""Broken data files and folders, and downloads that fail: one clear DataError, no half files.

Offline by construction: the download itself (`gradflow.data._fetch`) is replaced in
every test that gets that far.
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

import gradflow.data as data_mod
from gradflow.data import IDX_FILES, MNISTDataModule
from gradflow.errors import DataError

N_TRAIN, N_TEST = 60, 20


def idx_bytes(array: np.ndarray) -> bytes:
    header = struct.pack(f">BBBB{array.ndim}I", 0, 0, 8, array.ndim, *array.shape)
    return header + array.astype(np.uint8).tobytes()


def fake_mnist() -> dict[str, bytes]:
    """The four IDX files of a small MNIST-shaped dataset, by plain file name."""
    rng = np.random.default_rng(0)
    arrays = [
        rng.integers(0, 256, (N_TRAIN, 28, 28)),
        rng.integers(0, 10, N_TRAIN),
        rng.integers(0, 256, (N_TEST, 28, 28)),
        rng.integers(0, 10, N_TEST),
    ]
    return {name: idx_bytes(a) for name, a in zip(IDX_FILES, arrays, strict=True)}


def write_raw(data_dir: Path, files: dict[str, bytes]) -> Path:
    raw = data_dir / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        (raw / name).write_bytes(content)
    return raw


def setup(data_dir: Path, **kwargs) -> MNISTDataModule:
    dm = MNISTDataModule(data_dir=str(data_dir), train_size=50, val_size=10, **kwargs)
    dm.setup("fit")
    return dm


def test_intact_files_load(tmp_path):
    write_raw(tmp_path, fake_mnist())
    dm = setup(tmp_path, download=False)
    assert dm.source_info["source"] == "torchvision"
    assert (dm.source_info["available_train"], dm.source_info["available_val"]) == (60, 20)


@pytest.mark.parametrize("fallback", [True, False])
def test_truncated_file_is_named_with_the_fix_and_never_replaced_by_other_data(tmp_path, fallback):
    files = fake_mnist()
    name = "train-images-idx3-ubyte"
    files[name] = files[name][:1000]  # a download cut short
    raw = write_raw(tmp_path, files)
    with pytest.raises(DataError) as err:
        setup(tmp_path, offline_fallback=fallback)
    assert str(err.value) == (
        f"{raw / name} is truncated or corrupted: its header promises 47,040 values for "
        "(60, 28, 28) but it holds 984; delete it and run again with data.download=true to "
        "download it again."
    )


def test_corrupted_gzip_is_named(tmp_path):
    files = fake_mnist()
    raw = write_raw(tmp_path, {k: v for k, v in files.items() if k != IDX_FILES[1]})
    (raw / f"{IDX_FILES[1]}.gz").write_bytes(gzip.compress(files[IDX_FILES[1]])[:-12])
    with pytest.raises(DataError, match=rf"Could not read the IDX file {raw}/{IDX_FILES[1]}\.gz"):
        setup(tmp_path)


def test_images_and_labels_of_different_counts(tmp_path):
    files = fake_mnist()
    files["t10k-labels-idx1-ubyte"] = idx_bytes(np.zeros(N_TEST - 1))
    raw = write_raw(tmp_path, files)
    with pytest.raises(DataError) as err:
        setup(tmp_path)
    assert str(err.value).startswith(
        f"{raw}/t10k-images-idx3-ubyte holds 20 images but {raw}/t10k-labels-idx1-ubyte "
        "holds 19 labels; delete it"
    )


def test_data_dir_that_is_a_file(tmp_path):
    not_a_dir = tmp_path / "data"
    not_a_dir.write_text("oops")
    with pytest.raises(DataError, match=r"data\.data_dir=.*/data is a file, not a directory"):
        setup(not_a_dir)


def test_unreadable_data_dir(tmp_path, monkeypatch):
    # Tests run as root, whom chmod does not stop: fail the stat as EACCES would.
    raw = write_raw(tmp_path, fake_mnist())
    real_is_file = Path.is_file

    def is_file(path: Path) -> bool:
        if raw in path.parents:
            raise PermissionError(13, "Permission denied", str(path))
        return real_is_file(path)

    monkeypatch.setattr(Path, "is_file", is_file)
    with pytest.raises(DataError) as err:
        setup(tmp_path)
    assert str(err.value) == (
        f"Permission denied reading {raw / IDX_FILES[0]}: make it readable (chmod u+rwX) for "
        "this user, or point data.data_dir at a directory you can read and write."
    )


def _serve(files: dict[str, bytes], fail_on: str | None = None, cut: bool = False):
    """A stand-in for `_fetch` that 'downloads' `files`; `fail_on` writes half and raises."""
    calls = []

    def fetch(url: str, root: Path, filename: str, md5: str) -> None:
        calls.append(filename)
        plain = filename.removesuffix(".gz")
        content = files[plain]
        if plain == fail_on:
            (Path(root) / plain).write_bytes(content[: len(content) // 2] if cut else b"")
            raise ConnectionResetError("connection reset by peer")
        (Path(root) / plain).write_bytes(content)

    return fetch, calls


def test_download_moves_files_into_place_only_when_all_arrived(tmp_path, monkeypatch):
    files = fake_mnist()
    fetch, calls = _serve(files, fail_on="t10k-images-idx3-ubyte", cut=True)
    monkeypatch.setattr(data_mod, "_fetch", fetch)
    with pytest.raises(DataError, match="connection reset by peer"):
        setup(tmp_path, offline_fallback=False)
    raw = tmp_path / "MNIST" / "raw"
    # Two files arrived and one was cut short, but nothing a later run would trust is there.
    assert calls[:3] == [f"{n}.gz" for n in IDX_FILES[:3]]
    assert sorted(p.name for p in raw.iterdir()) == []

    fetch, calls = _serve(files)
    monkeypatch.setattr(data_mod, "_fetch", fetch)
    dm = setup(tmp_path)
    assert dm.source_info["source"] == "torchvision"
    assert sorted(p.name for p in raw.iterdir()) == sorted(IDX_FILES)
    assert len(calls) == 4  # one call a file: the second mirror only serves when the first fails


def test_only_missing_files_are_downloaded(tmp_path, monkeypatch):
    files = fake_mnist()
    write_raw(tmp_path, {k: v for k, v in files.items() if k != "train-labels-idx1-ubyte"})
    fetch, calls = _serve(files)
    monkeypatch.setattr(data_mod, "_fetch", fetch)
    setup(tmp_path)
    assert calls == ["train-labels-idx1-ubyte.gz"]
