"""Small matplotlib helpers shared by every reporting figure.

Figures are built with `matplotlib.figure.Figure` directly, not pyplot, so no global
backend or figure registry is touched: safe in scripts, tests and notebooks alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

DPI = 110


def new_figure(
    nrows: int = 1,
    ncols: int = 1,
    panel_size: tuple[float, float] = (4.0, 3.0),
    layout: str | None = "constrained",
    **kwargs,
) -> tuple[Figure, np.ndarray]:
    """A figure with an `nrows` x `ncols` grid of axes (always a 2-D array), sized per panel.

    `layout=None` skips constrained layout, whose cost grows with the number of panels.
    """
    fig = Figure(figsize=(panel_size[0] * ncols, panel_size[1] * nrows), layout=layout)
    axes = fig.subplots(nrows, ncols, squeeze=False, **kwargs)
    return fig, axes


FORMATS = ("png", "svg", "pdf")


def save_figure(fig: Figure, path: str | Path, formats: Sequence[str] = ("png",)) -> list[Path]:
    """Write `fig` as `path` with each suffix of `formats` (parents created); the paths."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    written = []
    for fmt in formats:
        written.append(path.with_suffix(f".{fmt}"))
        # "tight": a legend placed outside the axes is kept whole, however long its labels.
        fig.savefig(written[-1], dpi=DPI, format=fmt, bbox_inches="tight")
    return written


def hide_unused(axes: np.ndarray, used: int) -> None:
    """Switch off the trailing panels of a grid that has more panels than plots."""
    for ax in axes.flat[used:]:
        ax.set_axis_off()


def note_no_data(ax: Axes, message: str) -> None:
    """Write `message` in the middle of an empty panel, so a missing plot says why."""
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes, wrap=True)
    ax.set_xticks([])
    ax.set_yticks([])
