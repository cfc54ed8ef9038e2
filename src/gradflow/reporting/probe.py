"""The init probe's report: per-layer activation std and gradient norm at step 0.

Each job of `scripts/probe.py` (gradflow.training.probe) leaves its rows in `probe.csv`;
this gathers one job or a whole sweep into `probe_init.csv` (long format, one row per
config and layer), `probe_summary.csv` (one row per config) and figures: one panel per
depth of the activation std, the weight-gradient norm and the bias-gradient norm per
layer, and, for a sweep over depth and sigma_w2, a heat map of the backpropagated
signal's ratio (first over last hidden layer). `ProbeReport`
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
BIAS_GRAD_NORM_FILE = "grad_norm_bias_by_layer.png"
SIGNAL_HEATMAP_FILE = "signal_ratio_heatmap.png"


def gather(sweep_dir: Path) -> pd.DataFrame:
    """Every job's rows of a probe sweep, in job order (an empty frame when none finished)."""
    files = sorted(sweep_dir.glob(f"*/{PROBE_JOB_FILE}"), key=lambda p: _job_number(p.parent.name))
    # Sweeps from before the `scaling` column had unit-scaled inputs, the only kind then.
    frames = [pd.read_csv(path).reindex(columns=PROBE_COLUMNS, fill_value="unit") for path in files]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=PROBE_COLUMNS)


def _job_number(name: str) -> int:
    head = name.split("_", 1)[0]
    return int(head) if head.isdigit() else -1


def summarise_probe(records: pd.DataFrame) -> pd.DataFrame:
    """Per config: first- and last-layer gradient norm and their ratio; the backpropagated
    signal's ratio, first over last hidden layer (mean-field theory's chi^depth: under 1 it
    vanishes toward the input, over 1 it explodes); the last hidden layer's activation std;
    the hidden layers' median sigma_w2 and sigma_b2, as measured on the built layers."""
    rows = []
    for key, group in records.groupby(PROBE_CONFIG_COLUMNS, sort=False):
        group = group.sort_values("layer_index")
        first, last = group["grad_norm"].iloc[0], group["grad_norm"].iloc[-1]
        hidden = hidden_layers(group)
        signal = hidden["grad_signal"].to_numpy(dtype=float)
        rows.append(
            {
                **dict(zip(PROBE_CONFIG_COLUMNS, key, strict=True)),
                "grad_first": first,
                "grad_last": last,
                "ratio": _ratio(first, last),
                "signal_ratio": _ratio(signal[0], signal[-1]) if len(signal) else math.nan,
                "act_std_last_hidden": hidden["act_std"].iloc[-1] if len(hidden) else math.nan,
                "sigma_w2": hidden["sigma_w2"].median(),
                "sigma_b2": hidden["sigma_b2"].median(),
            }
        )
    return pd.DataFrame(rows)


def _ratio(first: float, last: float) -> float:
    return first / last if last != 0 else math.nan


def format_summary(summary: pd.DataFrame) -> str:
    """The summary as an aligned text table, numbers in 3 significant digits."""
    return summary.to_string(index=False, float_format=lambda v: f"{v:.3g}")


def hidden_layers(records: pd.DataFrame) -> pd.DataFrame:
    """Rows of hidden layers only: every family tracks `depth` hidden layers, then the output."""
    return records[records["layer_index"] <= records["depth"]]


def short_labels(labels: list[str]) -> dict[str, str]:
    """Each init label without the parts every label shares: `variance_scaling:sigma_w2=0.5:
    distribution=normal:mode=fan_in` and `...sigma_w2=2...` read `sigma_w2=0.5` and
    `sigma_w2=2`; a differing bias part reads `bias std=0.3` (a legend says what differs)."""

    def parts(label: str) -> list[str]:
        weights, _, bias = label.partition(", bias ")
        return weights.split(":") + [f"bias {p}" for p in bias.split(":") if bias]

    split = {label: parts(label) for label in labels}
    shared = set.intersection(*(set(p) for p in split.values())) if len(labels) > 1 else set()
    return {
        label: " ".join(p for p in items if p not in shared) or label
        for label, items in split.items()
    }


def _plot_per_depth(records: pd.DataFrame, column: str, ylabel: str, title: str) -> Figure:
    depths = sorted(records["depth"].unique())
    init_names = short_labels(list(dict.fromkeys(records["init"])))
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
            label = f"{act} · {init_names[init]}"
            label = f"{model} · {label}" if several_models else label
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


def grid_values(values: pd.Series, rtol: float = 0.05) -> pd.Series:
    """Measured variances snapped to the grid a sweep asked for: values within `rtol` of a
    group's smallest share the group's mean, written with the fewest significant digits
    that stay within 1% of it (sigma_w2 measured on a 128-wide layer scatters by about 1%
    around the configured value: 0.497 and 0.503 read 0.5, while 0.125 and 1.75 keep
    their third digit)."""
    snapped, start, members = {}, None, []
    for value in sorted(v for v in values.unique() if np.isfinite(v)):
        if start is not None and value > start * (1 + rtol):
            snapped.update(dict.fromkeys(members, _shortest(float(np.mean(members)))))
            start, members = None, []
        start = value if start is None else start
        members.append(value)
    snapped.update(dict.fromkeys(members, _shortest(float(np.mean(members)))))
    return values.map(snapped)


def _shortest(value: float) -> float:
    """`value` with the fewest significant digits (1 to 3) within 1% of it."""
    for digits in (1, 2):
        rounded = float(f"{value:.{digits}g}")
        if abs(rounded - value) <= 0.01 * abs(value):
            return rounded
    return float(f"{value:.3g}")


def signal_heatmap(summary: pd.DataFrame) -> Figure | None:
    """log10 of the signal ratio on a depth x sigma_w2 grid, one panel per model,
    activation, input scaling and sigma_b2 (None: fewer than two cells to compare)."""
    data = summary.assign(
        sigma_w2=grid_values(summary["sigma_w2"]),
        # A bias vector has few entries (128 here): its measured variance scatters by ~10%.
        sigma_b2=grid_values(summary["sigma_b2"], rtol=0.3),
        log10_ratio=np.log10(summary["signal_ratio"].astype(float).where(lambda r: r > 0)),
    )
    if data.groupby(["depth", "sigma_w2"]).ngroups < 2:
        return None
    panels = list(data.groupby(["model", "activation", "scaling", "sigma_b2"], sort=False))
    fig, axes = new_figure(1, len(panels), panel_size=(5.0, 3.8))
    limit = max(1.0, float(np.nanmax(np.abs(data["log10_ratio"].clip(-12, 12)))))
    for ax, ((model, act, scaling, sigma_b2), group) in zip(axes.flat, panels, strict=False):
        grid = group.pivot_table(
            "log10_ratio", index="depth", columns="sigma_w2", aggfunc="mean", dropna=False
        )
        counts = group.pivot_table(
            "log10_ratio", index="depth", columns="sigma_w2", aggfunc="size", dropna=False
        ).reindex_like(grid)
        image = ax.imshow(
            grid.to_numpy(dtype=float),
            cmap="RdBu_r",
            vmin=-limit,
            vmax=limit,
            aspect="auto",
            origin="lower",
        )
        for (i, j), value in np.ndenumerate(grid.to_numpy(dtype=float)):
            text = "nan" if not np.isfinite(value) else f"{value:.1f}"
            n = counts.iat[i, j]
            text += f" ({int(n)} configs)" if n > 1 else ""  # e.g. Xavier and LeCun: both 1
            dark = np.isfinite(value) and abs(value) > 0.6 * limit  # white on the deep colours
            ax.text(
                j, i, text, ha="center", va="center", fontsize=8, color="white" if dark else "black"
            )
        ax.set_xticks(range(grid.shape[1]), [f"{v:g}" for v in grid.columns])
        ax.set_yticks(range(grid.shape[0]), [str(d) for d in grid.index])
        ax.set_xlabel("σ_w² (fan_in · mean W², measured)")
        ax.set_ylabel("depth (hidden layers)")
        ax.set_title(f"{model} · {act} · inputs {scaling} · σ_b² {sigma_b2:g}", fontsize=9)
    fig.colorbar(image, ax=axes.ravel().tolist(), label="log10 signal ratio (first / last)")
    fig.suptitle(
        "Backpropagated signal at init: first over last hidden layer\n"
        "(blue: vanishes toward the input, red: explodes, white: preserved)"
    )
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
    bias_fig = _plot_per_depth(
        records,
        "grad_norm_bias",
        "‖∂loss/∂b‖₂",
        f"Bias-gradient norm per layer at init: each layer's speed of learning ({model})",
    )
    written = [
        csv,
        summary,
        *save_figure(act_fig, out_dir / ACT_STD_FILE),
        *save_figure(grad_fig, out_dir / GRAD_NORM_FILE),
        *save_figure(bias_fig, out_dir / BIAS_GRAD_NORM_FILE),
    ]
    heatmap = signal_heatmap(summarise_probe(records))
    if heatmap is not None:
        written += save_figure(heatmap, out_dir / SIGNAL_HEATMAP_FILE)
    return written


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
