"""Pictures for TensorBoard's Images tab, drawn with matplotlib's Agg canvas.

matplotlib is imported only when a picture is first drawn, and never through pyplot (a
Figure on an Agg canvas touches no global state and needs no display). Cheap enough for
one picture per epoch: each chart keeps its figure and updates the data in place, and text
is kept short, since every glyph is laid out and rendered anew at each draw (the largest
cost left). TensorBoard shows the tag and the step above each picture.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

DPI = 80


def _canvas(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    return FigureCanvasAgg(Figure(figsize=(width, height), dpi=DPI))


def _render(canvas) -> np.ndarray:
    from matplotlib import rc_context

    with rc_context({"text.hinting": "no_hinting"}):  # a third cheaper per glyph
        canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


class GradNormChart:
    """Per-layer gradient L2 norm, input to output, as bars on a log axis."""

    def __init__(self) -> None:
        self._canvas = None
        self._names: list[str] = []

    def _build(self, names: list[str]) -> None:
        from matplotlib.ticker import NullLocator

        self._names = names
        self._canvas = _canvas(max(4.0, 0.35 * len(names) + 1.5), 2.6)
        fig = self._canvas.figure
        self._ax = ax = fig.add_subplot()
        self._bars = ax.bar(range(len(names)), np.ones(len(names)), color="tab:blue")
        ax.set_yscale("log")
        ax.yaxis.set_minor_locator(NullLocator())
        ax.set_xticks(range(len(names)), [n.removeprefix("layer_") for n in names])
        ax.tick_params(labelsize=7)
        fig.subplots_adjust(left=0.13, right=0.97, bottom=0.1, top=0.9)

    def draw(self, norms: Mapping[str, float], title: str) -> np.ndarray:
        """(H, W, 3) uint8 image under a short `title`; norms <= 0 or not finite are left out."""
        names = list(norms)
        if names != self._names:
            self._build(names)
        values = np.array([norms[n] for n in names], dtype=float)
        shown = np.isfinite(values) & (values > 0)
        for bar, value, ok in zip(self._bars, values, shown, strict=True):
            bar.set_height(value if ok else np.nan)
        if shown.any():
            low, high = values[shown].min(), values[shown].max()
            self._ax.set_ylim(low / 3, high * 3)
            # Decade ticks as plain text: the log axis' default labels go through mathtext,
            # the slowest part of the drawing.
            decades = np.arange(np.floor(np.log10(low / 3)), np.ceil(np.log10(high * 3)) + 1)
            step = max(1, int(np.ceil(len(decades) / 5)))
            ticks = 10.0 ** decades[::step]
            self._ax.set_yticks(ticks, [f"{t:.0e}" for t in ticks])
        self._ax.set_title(title, fontsize=7)
        return _render(self._canvas)


class ActivationHistogramGrid:
    """One small histogram of each hidden layer's activations, with a note in its title."""

    def __init__(self, bins: int = 50) -> None:
        self.bins = bins
        self._canvas = None
        self._names: list[str] = []

    def _build(self, names: list[str]) -> None:
        self._names = names
        cols = min(4, len(names))
        rows = math.ceil(len(names) / cols)
        self._canvas = _canvas(2.0 * cols, 1.3 * rows + 0.3)
        fig = self._canvas.figure
        axes = fig.subplots(rows, cols, squeeze=False)
        self._axes = list(axes.flat[: len(names)])
        self._steps = []
        for ax in self._axes:
            self._steps.append(
                ax.stairs(
                    np.zeros(self.bins), np.arange(self.bins + 1.0), fill=True, color="tab:orange"
                )
            )
            ax.set_xticks([])
            ax.set_yticks([])
        for ax in axes.flat[len(names) :]:
            ax.set_axis_off()
        fig.subplots_adjust(
            left=0.02,
            right=0.98,
            bottom=0.04,
            top=1 - 0.3 / (1.3 * rows + 0.3),
            hspace=0.55,
            wspace=0.08,
        )

    def draw(
        self, values: Mapping[str, np.ndarray], notes: Mapping[str, str], title: str
    ) -> np.ndarray:
        """(H, W, 3) uint8 image of `values[layer]` (finite numbers) per hidden layer, each
        panel titled with the layer's number, its note and its range; `title` above all."""
        names = list(values)
        if names != self._names:
            self._build(names)
        for ax, patch, name in zip(self._axes, self._steps, names, strict=True):
            data = values[name]
            counts, edges = (
                np.histogram(data, bins=self.bins)
                if data.size
                else (np.zeros(self.bins), np.arange(self.bins + 1.0))
            )
            patch.set_data(counts, edges)
            ax.set_xlim(edges[0], edges[-1])
            ax.set_ylim(0, max(1, counts.max()) * 1.05)
            # The range goes in the title: every tick label would cost a text layout.
            span = f"{edges[0]:.2g}..{edges[-1]:.2g}"
            ax.set_title(f"{name.removeprefix('layer_')}: {span} {notes.get(name, '')}", fontsize=7)
        self._canvas.figure.suptitle(title, fontsize=7)
        return _render(self._canvas)
