"""The comparison figures: accuracy per epoch, gradient norm per layer, activation histograms.

Runs of one config (equal overrides but the seed) share a colour; a run that did not
complete is drawn dashed and says its status in the legend.
"""

from __future__ import annotations

import math
import re
import textwrap
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from gradflow.names import ACTIVATIONS, COMPLETED, FINISHED, GRAD_NORM
from gradflow.reporting.events import histogram_at, histogram_density, layer_number, layer_values
from gradflow.reporting.events import per_epoch as events_per_epoch
from gradflow.reporting.plotting import hide_unused, new_figure, note_no_data
from gradflow.reporting.runs import Run
from gradflow.reporting.tables import ci95_halfwidth

ACTIVATIONS_PREFIX = f"{ACTIVATIONS}/"
LAST_LAYER = "last"  # in --layers: each run's highest-numbered activation histogram
MAX_HISTOGRAM_COLUMNS = 6
# Characters per line of a legend entry: a config named by many overrides wraps at spaces,
# so the legend beside the panels leaves them their width.
LEGEND_WIDTH = 40


def _palette(n: int) -> list[str]:
    # tab10 while it lasts, then tab20, so configs stay distinguishable in big sweeps.
    if n <= 10:
        return [f"C{i}" for i in range(n)]
    from matplotlib import colormaps

    cmap = colormaps["tab20"]
    return [cmap(i % 20) for i in range(n)]


def run_styles(runs: Sequence[Run]) -> dict[Path, dict]:
    """Line style per run: colour by config (overrides minus seed), dashed unless completed."""
    groups = list(dict.fromkeys(run.group_key for run in runs))
    colors = dict(zip(groups, _palette(len(groups)), strict=True))
    return {
        run.path: {
            "color": colors[run.group_key],
            "linestyle": "-" if run.status == COMPLETED else "--",
        }
        for run in runs
    }


def _legend_label(run: Run, label: str) -> str:
    return label if run.status == COMPLETED else f"{label} ({run.status})"


def _legend(fig: Figure, axes: np.ndarray) -> None:
    handles, labels = [], []
    for ax in axes.flat:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            if label not in labels:
                handles.append(handle)
                labels.append(label)
    if handles:
        ncols = 1 if len(labels) <= 12 else 2
        # Beside the panels, centred: clear of the titles above them.
        wrapped = [textwrap.fill(label, LEGEND_WIDTH) for label in labels]
        fig.legend(handles, wrapped, loc="outside right center", fontsize="small", ncols=ncols)


def metric_per_epoch_figure(
    runs: Sequence[Run], labels: dict[Path, str], tag: str, title: str
) -> Figure:
    """`tag` against epoch, one line per run."""
    fig, axes = new_figure(1, 1, panel_size=(7.0, 4.5))
    ax = axes[0, 0]
    styles = run_styles(runs)
    plotted = 0
    for run in runs:
        series = events_per_epoch(run.events, tag)
        if series.empty:
            continue
        ax.plot(
            series.index, series.to_numpy(), marker=".", label=_legend_label(run, labels[run.path]),
            **styles[run.path],
        )  # fmt: skip
        plotted += 1
    if plotted:
        ax.set_xlabel("epoch")
        ax.set_ylabel(tag)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        _legend(fig, axes)
    else:
        note_no_data(ax, f"no run logged {tag}")
    ax.set_title(f"{title} ({plotted} of {len(runs)} runs logged it)")
    return fig


def metric_across_seeds_figure(
    runs: Sequence[Run], labels: dict[tuple[str, ...], str], tag: str, title: str
) -> Figure | None:
    """`tag` against epoch, one line per config with several seeds: the mean over its
    finished runs and a band for the 95% interval of the mean (None: no such config)."""
    groups: dict[tuple[str, ...], list[pd.Series]] = {}
    for run in runs:
        series = events_per_epoch(run.events, tag)
        if run.status in FINISHED and not series.empty:
            groups.setdefault(run.group_key, []).append(series)
    seeded = {key: curves for key, curves in groups.items() if len(curves) >= 2}
    if not seeded:
        return None
    fig, axes = new_figure(1, 1, panel_size=(7.0, 4.5))
    ax = axes[0, 0]
    colors = dict(zip(seeded, _palette(len(seeded)), strict=True))
    for key, curves in seeded.items():
        table = pd.concat(curves, axis=1)  # epochs x runs; a diverged run's epochs end early
        mean = table.mean(axis=1)
        half = table.apply(ci95_halfwidth, axis=1)
        label = f"{labels[key] or '(no overrides)'} (n={table.shape[1]})"
        ax.plot(mean.index, mean.to_numpy(), marker=".", color=colors[key], label=label)
        low, high = mean - half, mean + half
        if "acc" in tag:  # an accuracy's interval stops where accuracies do
            low, high = low.clip(lower=0.0), high.clip(upper=1.0)
        ax.fill_between(mean.index, low, high, color=colors[key], alpha=0.2)
    ax.set_xlabel("epoch")
    ax.set_ylabel(tag)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    _legend(fig, axes)
    ax.set_title(f"{title}, mean over seeds\n(band: the 95% interval of the mean)")
    return fig


def _grad_norms(run: Run, which: str) -> tuple[int | None, pd.Series]:
    """Per-layer gradient norms at the first/last logged step: events, else summary.json."""
    step, values = layer_values(run.events, GRAD_NORM, which)
    if len(values):
        return step, values
    logged = run.get("grad_norms", f"{which}_step", default={})
    if not isinstance(logged, dict):
        return None, pd.Series(dtype=float)
    layers = {k: v for k, v in logged.items() if re.fullmatch(r"layer_\d+", k)}
    order = sorted(layers, key=layer_number)
    values = pd.Series([float(layers[k]) for k in order], index=order, dtype=float)
    step = logged.get("step")
    return (int(step) if isinstance(step, int | float) else None), values


def grad_norm_by_layer_figure(runs: Sequence[Run], labels: dict[Path, str]) -> Figure:
    """Gradient L2 norm per layer on a log axis, first and last logged step side by side."""
    fig, axes = new_figure(1, 2, panel_size=(5.0, 4.0), sharey=True)
    styles = run_styles(runs)
    for ax, which in zip(axes.flat, ("first", "last"), strict=True):
        plotted, steps = 0, set()
        for run in runs:
            step, values = _grad_norms(run, which)
            y = values.to_numpy(float)
            keep = np.isfinite(y) & (y > 0)  # a log axis cannot show 0, inf or NaN
            if not keep.any():
                continue
            x = np.array([layer_number(name) for name in values.index])
            label = _legend_label(run, labels[run.path])
            ax.plot(x[keep], y[keep], marker=".", label=label, **styles[run.path])
            # Mark the dropped layers at the panel's edges, as the probe's figures do: inf or
            # NaN at the top, 0 at the bottom, so they are not lost.
            edge, color = ax.get_xaxis_transform(), styles[run.path]["color"]
            for mask, height, marker in ((~np.isfinite(y), 0.97, "x"), (y == 0, 0.03, "v")):
                if mask.any():
                    ax.plot(x[mask], [height] * int(mask.sum()), marker, color=color,
                            transform=edge)  # fmt: skip
            plotted += 1
            steps.add(step)
        if plotted:
            ax.set_yscale("log")
            ax.set_xlabel("layer (input → output)")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.grid(alpha=0.3, which="major")
            shown = sorted(s for s in steps if s is not None)
            at = f"step {shown[0]}" if len(shown) == 1 else "per run"
            ax.set_title(f"{which} logged step ({at})")
        else:
            note_no_data(ax, "no grad_norm/layer_k logged")
    axes[0, 0].set_ylabel("‖∂loss/∂W‖₂")
    _legend(fig, axes)
    fig.suptitle("Weight-gradient norm per layer (× at top: inf/NaN, ▼ at bottom: 0)")
    return fig


def _resolve_layer(run: Run, layer: str) -> str:
    if layer != LAST_LAYER:
        return layer
    names = [t[len(ACTIVATIONS_PREFIX) :] for t in run.events.histogram_tags()]
    names = [n for n in names if re.fullmatch(r"layer_\d+", n)]
    return max(names, key=layer_number) if names else "layer_k"  # none logged at all


def has_histograms_at(runs: Sequence[Run], step: int) -> bool:
    """Whether any run logged an activation histogram at `step`."""
    return any((run.events.histograms["step"] == step).any() for run in runs)


def activation_histograms_figure(
    runs: Sequence[Run], labels: dict[Path, str], layers: Sequence[str], which: str | int = "last"
) -> Figure:
    """Activation histograms of `layers` (rows) for each run (columns), at one step per run."""
    ncols = min(len(runs), MAX_HISTOGRAM_COLUMNS)
    rows_per_layer = math.ceil(len(runs) / ncols)
    nrows = len(layers) * rows_per_layer
    # Fixed margins, not constrained layout: a big sweep makes a grid of dozens of panels.
    fig, axes = new_figure(nrows, ncols, panel_size=(3.0, 2.4), layout=None)
    height, width = fig.get_size_inches()[::-1]
    fig.subplots_adjust(
        left=0.3 / width, right=1 - 0.2 / width, bottom=0.45 / height, top=1 - 0.9 / height,
        wspace=0.15, hspace=0.75,
    )  # fmt: skip
    styles = run_styles(runs)
    for li, layer in enumerate(layers):
        for ri, run in enumerate(runs):
            ax = axes[li * rows_per_layer + ri // ncols, ri % ncols]
            name = _resolve_layer(run, layer)
            row = histogram_at(run.events, ACTIVATIONS_PREFIX + name, which)
            ax.set_title(f"{labels[run.path]}\n{name}", fontsize="small")
            ax.set_yticks([])  # density scale differs per panel; the shape is what compares
            edges, density = (np.array([]), np.array([])) if row is None else histogram_density(row)
            if density.size == 0:
                when = "" if which in ("first", "last") else f"\nat step {which}"
                note_no_data(ax, f"{ACTIVATIONS_PREFIX}{name}\nnot logged{when}")
                continue
            ax.stairs(density, edges, fill=True, alpha=0.6, color=styles[run.path]["color"])
            ax.text(0.98, 0.95, f"step {int(row['step'])}\n{run.status}", ha="right", va="top",
                    transform=ax.transAxes, fontsize="x-small")  # fmt: skip
            ax.tick_params(labelsize="x-small")
        hide_unused(axes[li * rows_per_layer : (li + 1) * rows_per_layer], len(runs))
    at = {"last": "last logged step", "first": "first logged step"}.get(str(which), f"step {which}")
    fig.suptitle(f"Activation histograms (density), {at}")
    return fig
