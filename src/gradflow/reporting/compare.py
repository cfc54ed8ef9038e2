"""Compare finished runs: read them back, write summary tables and figures to one folder."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from gradflow.names import COMPLETED, TRAIN_ACC, TRAIN_LOSS, VAL_ACC, VAL_LOSS
from gradflow.reporting import figures
from gradflow.reporting.events import HistogramFilter
from gradflow.reporting.plotting import save_figure
from gradflow.reporting.runs import Run, load_runs, run_labels
from gradflow.reporting.tables import (
    config_labels,
    layers_markdown,
    layers_table,
    runs_markdown,
    runs_table,
    seeds_markdown,
    seeds_table,
)
from gradflow.reporting.tensorboard import write_report_run

DEFAULT_LAYERS = ("layer_01",)
FALLBACK_OUT = Path("reports/compare")


@dataclass
class Comparison:
    """The runs read, their tables, and every file written (name -> path)."""

    runs: list[Run]
    table: pd.DataFrame
    seeds: pd.DataFrame
    layers: pd.DataFrame
    files: dict[str, Path] = field(default_factory=dict)
    markdown: str = ""


def default_out_dir(paths: Sequence[str | Path]) -> Path:
    """`<PATH>/report` for a single directory argument, else `reports/compare`."""
    if len(paths) == 1 and Path(paths[0]).is_dir():
        return Path(paths[0]) / "report"
    return FALLBACK_OUT


def _histogram_filter(layers: Sequence[str]) -> HistogramFilter:
    if figures.LAST_LAYER in layers:
        return lambda tag: tag.startswith(figures.ACTIVATIONS_PREFIX)
    wanted = {figures.ACTIVATIONS_PREFIX + layer for layer in layers}
    return wanted.__contains__


def _markdown(comparison: Comparison, sources: Sequence[str | Path]) -> str:
    runs, table = comparison.runs, comparison.table
    statuses = ", ".join(f"{n} {s}" for s, n in Counter(table["status"]).items())
    parts = [
        "# Run comparison\n",
        f"Sources: {', '.join(str(s) for s in sources)}  \n{len(runs)} runs: {statuses}.\n",
        "## Runs\n",
        "Grad ratio: first layer / output layer weight-gradient norm "
        "(≪ 1 vanishing, ≫ 1 exploding).\n",
        runs_markdown(table),
        "## Across seeds\n",
    ]
    if comparison.seeds.empty:
        parts.append("No two runs differ only in their seed.\n")
    else:
        parts += [
            "Runs with equal overrides but the seed; mean ± sample std over completed and "
            "diverged runs; gradient ratio as geometric mean ×/÷ geometric std.\n",
            seeds_markdown(comparison.seeds),
        ]
    parts += [
        "## Per layer, at initialisation and at the end\n",
        "Each config's mean over its runs: `init` is step 0 (the probe batch and the first "
        "batch's gradient), `end` the last probe and logged step (summary_layers.csv has "
        "act_mean and act_saturated too).\n",
        layers_markdown(comparison.layers),
    ]
    problems = [r for r in table.to_dict("records") if r["status"] != COMPLETED]
    if problems:
        parts.append("## Runs that did not complete\n")
        parts += [
            f"- `{r['run']}` ({r['status']}): "
            + (r["error"] if isinstance(r["error"], str) else "no error recorded")
            for r in problems
        ]
        parts.append("")
    unreadable = [(run.name, p) for run in runs for p in run.events.problems]
    if unreadable:
        parts.append("## Event files that could not be read\n")
        parts += [f"- `{name}`: {problem}" for name, problem in unreadable]
        parts.append("")
    figure_files = [p for p in comparison.files.values() if p.suffix == ".png"]
    if figure_files:
        parts.append("## Figures\n")
        parts += [f"![{p.stem}]({p.name})" for p in figure_files]
        parts.append("")
    return "\n".join(parts)


def compare(
    paths: Sequence[str | Path],
    out_dir: str | Path | None = None,
    layers: Sequence[str] = DEFAULT_LAYERS,
    formats: Sequence[str] = ("png",),
) -> Comparison:
    """Read every run under `paths`; write summary.md/.csv, summary_seeds.csv,
    summary_layers.csv (per config and layer, at init and at the end) and figures
    (PNG, and SVG or PDF too when `formats` says so), and all of it as a TensorBoard run
    in the output folder."""
    runs = load_runs(paths, _histogram_filter(layers))
    out = Path(out_dir) if out_dir is not None else default_out_dir(paths)
    out.mkdir(parents=True, exist_ok=True)
    table = runs_table(runs)
    comparison = Comparison(
        runs=runs, table=table, seeds=seeds_table(runs, table), layers=layers_table(runs)
    )
    files = comparison.files
    files["summary.csv"] = out / "summary.csv"
    table.to_csv(files["summary.csv"], index=False)
    files["summary_seeds.csv"] = out / "summary_seeds.csv"
    comparison.seeds.to_csv(files["summary_seeds.csv"], index=False)
    files["summary_layers.csv"] = out / "summary_layers.csv"
    comparison.layers.to_csv(files["summary_layers.csv"], index=False)

    labels = run_labels(runs)
    # Regressions log no accuracy: their losses take the accuracy figures' place.
    regression = all(run.events.scalar(VAL_ACC).empty for run in runs) and any(
        not run.events.scalar(VAL_LOSS).empty for run in runs
    )
    metrics = [("val", VAL_ACC, "Validation accuracy"), ("train", TRAIN_ACC, "Training accuracy")]
    if regression:
        metrics = [("val", VAL_LOSS, "Validation loss"), ("train", TRAIN_LOSS, "Training loss")]
    drawn = {
        f"{stage}_{tag.split('/')[1]}.png": figures.metric_per_epoch_figure(
            runs, labels, tag, title
        )
        for stage, tag, title in metrics
    }
    drawn |= {
        "grad_norm_by_layer.png": figures.grad_norm_by_layer_figure(runs, labels),
        "activation_histograms.png": figures.activation_histograms_figure(runs, labels, layers),
    }
    keys = list(dict.fromkeys(run.group_key for run in runs))
    by_config = dict(zip(keys, config_labels(keys), strict=True))
    for stage, tag, title in metrics:
        seeds_fig = figures.metric_across_seeds_figure(runs, by_config, tag, title)
        if seeds_fig is not None:  # configs run with several seeds: their error bands
            drawn[f"{stage}_{tag.split('/')[1]}_seeds.png"] = seeds_fig
    if figures.has_histograms_at(runs, 0):
        drawn["activation_histograms_step0.png"] = figures.activation_histograms_figure(
            runs, labels, layers, which=0
        )
    for name, fig in drawn.items():
        for path in save_figure(fig, out / name, ("png", *(f for f in formats if f != "png"))):
            files[path.name] = path

    files["summary.md"] = out / "summary.md"
    comparison.markdown = _markdown(comparison, paths)
    files["summary.md"].write_text(comparison.markdown)
    rows = [run.summary["hparams"] for run in runs if run.summary.get("hparams")]
    pictures = {name: path for name, path in files.items() if path.suffix == ".png"}
    write_report_run(out, pictures, comparison.markdown, rows)
    return comparison
