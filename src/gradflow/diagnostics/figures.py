"""Pictures for TensorBoard's Images tab, drawn with matplotlib's Agg canvas.

Comparable across runs: every axis has fixed limits, so equal heights mean equal values
in every run of a sweep (the gradient norm's log axis spans `NORM_RANGE`; an activation
histogram spans the activation's output range and a fraction from 0 to 1). Readable at
TensorBoard's card size: under 480 pixels wide (the Images tab's card in a 1400-pixel
window), labelled axes, 11-pixel text.

matplotlib is imported only when a picture is first drawn, and never through pyplot (a
Figure on an Agg canvas touches no global state and needs no display). Each chart keeps
its figure and updates the data in place; text is the largest cost left, since every
glyph is laid out anew at each draw.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping

import numpy as np

from gradflow.nn.activations import ActivationSpec, output_bounds

DPI = 90
FONT = 9  # points: 11 to 12 pixels at DPI
# The gradient-norm chart's fixed log axis: from a 20-layer sigmoid net's first layer at
# init (about 1e-13 is below it, drawn at the floor) to an exploding net's 1e4 and beyond.
NORM_RANGE = (1e-12, 1e4)
# An activation that is unbounded on a side is drawn to this value on that side.
UNBOUNDED_EDGE = 3.0


def _canvas(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    return FigureCanvasAgg(Figure(figsize=(width, height), dpi=DPI))


def _render(canvas) -> np.ndarray:
    from matplotlib import rc_context

    with rc_context({"text.hinting": "no_hinting"}):  # a third cheaper per glyph
        canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


@functools.cache
def shared_chart(chart: type, *args: object):
    """One chart of this class and arguments per process. Building a figure's layout costs
    more than a draw, and every draw sets all a chart shows (data, labels, title), so the
    runs trained in one process (a population's members, a sweep worker's jobs) draw on
    one figure, one after another."""
    return chart(*args)


class GradNormChart:
    """Per-layer gradient L2 norm, input to output, as bars on a fixed log axis."""

    def __init__(self, value_range: tuple[float, float] = NORM_RANGE) -> None:
        self.low, self.high = value_range
        self._canvas = None
        self._names: list[str] = []

    def _build(self, names: list[str]) -> None:
        from matplotlib.ticker import NullLocator

        self._names = names
        self._canvas = _canvas(5.2, 2.7)
        fig = self._canvas.figure
        self._ax = ax = fig.add_subplot()
        self._bars = ax.bar(range(len(names)), np.ones(len(names)), color="tab:blue")
        ax.set_yscale("log")
        ax.set_ylim(self.low, self.high)
        ax.yaxis.set_minor_locator(NullLocator())
        # Decade ticks as plain text: the log axis' default labels go through mathtext,
        # the slowest part of the drawing.
        decades = np.arange(math.log10(self.low), math.log10(self.high) + 1)
        ticks = 10.0 ** decades[:: max(1, math.ceil(len(decades) / 9))]
        ax.set_yticks(ticks, [f"1e{round(math.log10(t))}" for t in ticks])
        step = max(1, math.ceil(len(names) / 25))  # at most 25 layer labels
        ax.set_xticks(range(0, len(names), step), [n.removeprefix("layer_") for n in names][::step])
        ax.set_xlabel("layer (input → output)", fontsize=FONT)
        ax.set_ylabel("|dloss/dW|", fontsize=FONT)
        ax.tick_params(labelsize=FONT)
        ax.grid(axis="y", alpha=0.3)
        fig.subplots_adjust(left=0.15, right=0.98, bottom=0.19, top=0.89)

    def draw(self, norms: Mapping[str, float], title: str) -> np.ndarray:
        """(H, W, 3) uint8 image under `title`; a norm outside the axis is drawn at its edge
        (0 and NaN at the floor, inf at the top) in red."""
        names = list(norms)
        if names != self._names:
            self._build(names)
        for bar, name in zip(self._bars, names, strict=True):
            value = norms[name]
            inside = math.isfinite(value) and self.low <= value <= self.high
            shown = value if inside else (self.high if value > self.high else self.low)
            bar.set_height(shown)
            bar.set_color("tab:blue" if inside else "tab:red")
        self._ax.set_title(title, fontsize=FONT + 1)
        return _render(self._canvas)


class ActivationHistogramGrid:
    """One histogram of each hidden layer's activations, on the activation's own fixed
    range, as the fraction of (sample, unit) pairs per bin; a note in each panel's title."""

    def __init__(self, bins: int = 25) -> None:
        self.bins = bins
        self._canvas = None
        self._key: tuple = ()

    def _build(self, names: list[str], bounds: tuple[float, float]) -> None:
        self._key = (tuple(names), bounds)
        self._edges = np.linspace(*bounds, self.bins + 1)
        cols = min(3, len(names))
        rows = math.ceil(len(names) / cols)
        width, height = 1.55 * cols + 0.55, 1.45 * rows + 0.45
        self._canvas = _canvas(width, height)
        fig = self._canvas.figure
        axes = fig.subplots(rows, cols, squeeze=False, sharex=True, sharey=True)
        self._axes = list(axes.flat[: len(names)])
        self._steps = []
        for ax in self._axes:
            self._steps.append(
                ax.stairs(np.zeros(self.bins), self._edges, fill=True, color="tab:orange")
            )
            ax.set_xlim(*bounds)
            ax.set_ylim(0, 1)
            ax.set_xticks([bounds[0], (bounds[0] + bounds[1]) / 2, bounds[1]])
            ax.set_yticks([0, 0.5, 1])
            ax.tick_params(labelsize=FONT - 1)
        for ax in axes.flat[len(names) :]:
            ax.set_axis_off()
        for ax in axes[:, 0]:
            ax.set_ylabel("fraction", fontsize=FONT - 1)
        fig.subplots_adjust(
            left=0.5 / width,
            right=0.97,
            bottom=0.3 / height,
            top=1 - 0.45 / height,
            hspace=0.5,
            wspace=0.3,  # the edge ticks' labels of neighbouring panels clear of each other
        )

    def draw(
        self,
        values: Mapping[str, np.ndarray],
        notes: Mapping[str, str],
        title: str,
        activation: ActivationSpec,
    ) -> np.ndarray:
        """(H, W, 3) uint8 image of `values[layer]` (finite numbers) per hidden layer, each
        panel titled with the layer's number and its note; `title` above all. Values beyond
        the range are counted in its edge bins."""
        low, high = np.clip(output_bounds(activation), -UNBOUNDED_EDGE, UNBOUNDED_EDGE)
        bounds = (math.floor(low * 100) / 100, math.ceil(high * 100) / 100)  # readable ticks
        names = list(values)
        if (tuple(names), bounds) != self._key:
            self._build(names, bounds)
        for ax, patch, name in zip(self._axes, self._steps, names, strict=True):
            data = np.clip(values[name], *bounds)
            counts, _ = np.histogram(data, bins=self._edges)
            patch.set_data(counts / max(1, data.size), self._edges)
            ax.set_title(
                f"layer {name.removeprefix('layer_')} · {notes.get(name, '')}", fontsize=FONT
            )
        self._canvas.figure.suptitle(title, fontsize=FONT + 1)
        return _render(self._canvas)
