"""The init probe's report: per-layer activation std and gradient norm at step 0.

Each job of `scripts/probe.py` (gradflow.training.probe) leaves its rows in `probe.csv`;
this gathers one job or a whole sweep into `probe_init.csv` (long format, one row per
config and layer), `probe_summary.csv` (one row per config) and two figures, one panel
per depth: the activation std and the weight-gradient norm per layer. `ProbeReport`
does it at the end of a sweep (a Hydra callback in conf/probe.yaml).
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from hydra.experimental.callback import Callback
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from omegaconf import DictConfig

from gradflow.names import PROBE_COLUMNS, PROBE_CONFIG_COLUMNS, PROBE_JOB_FILE
from gradflow.reporting.plotting import new_figure, save_figure

CSV_FILE = "probe_init.csv"
SUMMARY_CSV_FILE = "probe_summary.csv"
ACT_STD_FILE = "act_std_by_layer.png"
GRAD_NORM_FILE = "grad_norm_by_layer.png"


def gather(sweep_dir: Path) -> pd.DataFrame:
    """Every job's rows of a probe sweep, in job order (an empty frame when none finished)."""
    files = sorted(sweep_dir.glob(f"*/{PROBE_JOB_FILE}"), key=lambda p: _job_number(p.parent.name))
    frames = [pd.read_csv(path) for path in files]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=PROBE_COLUMNS)


def _job_number(name: str) -> int:
    head = name.split("_", 1)[0]
    return int(head) if head.isdigit() else -1


def summarise_probe(records: pd.DataFrame) -> pd.DataFrame:
    """Per config: first- and last-layer gradient norm, their ratio, last hidden act std."""
    rows = []
    for key, group in records.groupby(PROBE_CONFIG_COLUMNS, sort=False):
        group = group.sort_values("layer_index")
        first, last = group["grad_norm"].iloc[0], group["grad_norm"].iloc[-1]
        hidden = hidden_layers(group)["act_std"]
        rows.append(
            {
                **dict(zip(PROBE_CONFIG_COLUMNS, key, strict=True)),
                "grad_first": first,
                "grad_last": last,
                "ratio": first / last if last != 0 else math.nan,
                "act_std_last_hidden": hidden.iloc[-1] if len(hidden) else math.nan,
            }
        )
    return pd.DataFrame(rows)


def format_summary(summary: pd.DataFrame) -> str:
    """The summary as an aligned text table, numbers in 3 significant digits."""
    return summary.to_string(index=False, float_format=lambda v: f"{v:.3g}")


def hidden_layers(records: pd.DataFrame) -> pd.DataFrame:
    """Rows of hidden layers only: every family tracks `depth` hidden layers, then the output."""
    return records[records["layer_index"] <= records["depth"]]


def _plot_per_depth(records: pd.DataFrame, column: str, ylabel: str, title: str) -> Figure:
    depths = sorted(records["depth"].unique())
    fig, axes = new_figure(1, len(depths), panel_size=(4.4, 3.4), sharey=True)
    inits = list(dict.fromkeys(records["init"]))
    activations = list(dict.fromkeys(records["activation"]))
    styles = ["-", "--", ":", "-."]
    for ax, depth in zip(axes.flat, depths, strict=False):
        keys = ["model", "init", "activation"]
        configs = records[records["depth"] == depth].groupby(keys, sort=False)
        several_models = records["model"].nunique() > 1
        for (model, init, act), group in configs:
            style = {
                "color": f"C{inits.index(init) % 10}",
                "linestyle": styles[activations.index(act) % len(styles)],
            }
            x = group["layer_index"].to_numpy()
            y = group[column].to_numpy(dtype=float)
            shown = np.isfinite(y) & (y > 0)  # a log axis cannot show 0, inf or NaN
            label = f"{model} · {act} · {init}" if several_models else f"{act} · {init}"
            if several_models:  # the model by the marker: each (init, activation) keeps its line
                style["marker"] = "os^Dv"[list(records["model"].unique()).index(model) % 5]
            ax.plot(x[shown], y[shown], **{"marker": ".", **style}, label=label)
            # Mark what the log axis drops at the panel's edges, so overflow stays visible.
            edge = ax.get_xaxis_transform()
            for mask, height, marker in ((~np.isfinite(y), 0.97, "x"), (y == 0, 0.03, "v")):
                if mask.any():
                    ax.plot(
                        x[mask],
                        [height] * mask.sum(),
                        marker,
                        color=style["color"],
                        transform=edge,
                        clip_on=False,
                    )
        ax.set_yscale("log")
        ax.set_title(f"depth {depth}")
        ax.set_xlabel("layer (input → output)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3, which="major")
    axes[0, 0].set_ylabel(ylabel)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=min(len(labels), 3))
    fig.suptitle(f"{title}\n(× at top: inf/NaN, ▼ at bottom: 0)")
    return fig


def write_probe_report(records: pd.DataFrame, out_dir: Path) -> list[Path]:
    """Write the long CSV, the per-config summary CSV and both per-layer plots; return paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    model = ", ".join(records["model"].unique())
    csv = out_dir / CSV_FILE
    records.to_csv(csv, index=False)
    summary = out_dir / SUMMARY_CSV_FILE
    summarise_probe(records).to_csv(summary, index=False)
    act_fig = _plot_per_depth(
        hidden_layers(records),
        "act_std",
        "activation std",
        f"Activation std per layer at init ({model})",
    )
    grad_fig = _plot_per_depth(
        records, "grad_norm", "‖∂loss/∂W‖₂", f"Weight-gradient norm per layer at init ({model})"
    )
    return [
        csv,
        summary,
        *save_figure(act_fig, out_dir / ACT_STD_FILE),
        *save_figure(grad_fig, out_dir / GRAD_NORM_FILE),
    ]


def report(records: pd.DataFrame, out_dir: Path) -> str:
    """Write the report and return what to print: the per-config table and the files."""
    paths = write_probe_report(records, out_dir)
    return "\n".join([format_summary(summarise_probe(records)), *map(str, paths)])


class ProbeReport(Callback):
    """At the end of a probe sweep: gather the jobs' rows into the sweep directory's report."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        records = gather(sweep_dir)
        if records.empty:
            print(f"probe: no job of {sweep_dir} finished", file=sys.stderr)
            return
        print(report(records, sweep_dir), flush=True)
