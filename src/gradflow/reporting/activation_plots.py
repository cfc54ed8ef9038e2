"""Figures of every registered activation f and its derivative f'.

Everything is drawn from the registry, so a newly registered activation appears
without touching this file. The shaded band is where a unit counts as saturated:
|f'(z)| < 0.1 * max|f'|, the diagnostics' own rule (gradflow.nn.activations).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure

from gradflow.nn.activations import (
    ACTIVATIONS,
    SATURATION_SLOPE,
    build_activation,
    derivative,
    saturation_mask,
)
from gradflow.reporting.plotting import hide_unused, new_figure, save_figure

GRID_FILE = "activations_grid.png"
OVERLAY_FILE = "derivatives_overlay.png"


@dataclass(frozen=True)
class ActivationCurve:
    """f and f' of one activation sampled on a grid, with its saturation mask."""

    name: str
    z: np.ndarray
    value: np.ndarray
    slope: np.ndarray
    saturated: np.ndarray  # bool per z: |f'(z)| < 0.1 * max|f'|


@dataclass(frozen=True)
class ActivationPlots:
    """The PNGs written and the activations they cover (registry order)."""

    grid: Path
    overlay: Path
    activations: list[str]


def activation_curve(name: str, z_range: tuple[float, float], points: int = 801) -> ActivationCurve:
    """Sample f and f' of the registered activation `name` on `points` values of z."""
    z = torch.linspace(z_range[0], z_range[1], points, dtype=torch.float64)
    with torch.no_grad():
        value = build_activation(name)(z)
    return ActivationCurve(
        name=name,
        z=z.numpy(),
        value=value.numpy(),
        slope=derivative(name, z).numpy(),
        saturated=saturation_mask(name, z).numpy(),
    )


def activation_grid_figure(curves: Sequence[ActivationCurve], ncols: int = 5) -> Figure:
    """One panel per activation: f (solid), f' (dashed), saturation band shaded."""
    ncols = min(ncols, len(curves))
    nrows = math.ceil(len(curves) / ncols)
    fig, axes = new_figure(nrows, ncols, panel_size=(3.2, 2.6))
    for ax, curve in zip(axes.flat, curves, strict=False):
        ax.plot(curve.z, curve.value, color="C0", label="f(z)")
        ax.plot(curve.z, curve.slope, color="C1", linestyle="--", label="f'(z)")
        ax.fill_between(
            curve.z,
            0,
            1,
            where=curve.saturated,
            transform=ax.get_xaxis_transform(),
            color="grey",
            alpha=0.2,
            linewidth=0,
            label=f"|f'| < {SATURATION_SLOPE:g}·max|f'|",
        )
        ax.axhline(0, color="black", linewidth=0.5)
        ax.set_title(f"{curve.name} ({ACTIVATIONS[curve.name].saturation.replace('_', '-')})")
        ax.set_xlabel("z")
        ax.grid(alpha=0.3)
    hide_unused(axes, len(curves))
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=3)
    fig.suptitle("Activations f and derivatives f' (shaded: saturated)")
    return fig


def derivative_overlay_figure(curves: Sequence[ActivationCurve]) -> Figure:
    """Every f' on one axis, so the slopes that feed backpropagation compare directly."""
    fig, axes = new_figure(1, 1, panel_size=(8.0, 5.0))
    ax = axes[0, 0]
    for i, curve in enumerate(curves):
        # Ten distinct colours run out; a second linestyle keeps later curves apart.
        style = "-" if i < 10 else "--"
        ax.plot(curve.z, curve.slope, linestyle=style, label=curve.name)
    ax.axhline(0, color="black", linewidth=0.5)
    ax.set_xlabel("z")
    ax.set_ylabel("f'(z)")
    ax.set_title("Activation derivatives: the per-layer factor in backpropagation")
    ax.grid(alpha=0.3)
    fig.legend(loc="outside right upper")
    return fig


def write_activation_plots(
    out_dir: str | Path = "reports/activations", z_range: tuple[float, float] = (-6.0, 6.0)
) -> ActivationPlots:
    """Draw the grid and the overlay for every registered activation into `out_dir`."""
    low, high = z_range
    if not low < high:
        raise ValueError(f"--range needs LOW < HIGH, got {low} {high}")
    names = list(ACTIVATIONS)
    curves = [activation_curve(name, (low, high)) for name in names]
    out_dir = Path(out_dir)
    (grid,) = save_figure(activation_grid_figure(curves), out_dir / GRID_FILE)
    (overlay,) = save_figure(derivative_overlay_figure(curves), out_dir / OVERLAY_FILE)
    return ActivationPlots(grid=grid, overlay=overlay, activations=names)
