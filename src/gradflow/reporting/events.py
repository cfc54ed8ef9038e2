"""Read a run's TensorBoard event files back: every scalar and histogram, nothing sampled away.

All `events.out.tfevents.*` files under a run directory are read (a resumed run has
several); where one tag has several values at one step, the last written wins.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from tensorboard.backend.event_processing import event_accumulator as ea

from gradflow.names import EPOCH

EVENT_GLOB = "events.out.tfevents.*"
# 0 keeps every event of a kind; 1 keeps one, for kinds the reports never read.
SIZE_GUIDANCE = {
    ea.SCALARS: 0,
    ea.HISTOGRAMS: 0,
    ea.COMPRESSED_HISTOGRAMS: 1,
    ea.TENSORS: 1,
    ea.IMAGES: 1,
    ea.AUDIO: 1,
}
SCALAR_COLUMNS = ["tag", "step", "wall_time", "value"]
HistogramFilter = Callable[[str], bool]
HISTOGRAM_COLUMNS = ["tag", "step", "wall_time", "min", "max", "num", "limits", "counts"]

log = logging.getLogger(__name__)


@dataclass
class RunEvents:
    """Scalars and histograms of one run in long format, and any file that could not be read."""

    scalars: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=SCALAR_COLUMNS))
    histograms: pd.DataFrame = field(
        default_factory=lambda: pd.DataFrame(columns=HISTOGRAM_COLUMNS)
    )
    files: list[Path] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def scalar(self, tag: str) -> pd.Series:
        """One scalar tag as a Series of values indexed by step (empty when never logged)."""
        rows = self.scalars[self.scalars["tag"] == tag]
        return pd.Series(rows["value"].to_numpy(float), index=rows["step"].to_numpy(int), name=tag)

    def histogram_tags(self) -> list[str]:
        return sorted(self.histograms["tag"].unique())


def find_event_files(run_dir: str | Path) -> list[Path]:
    """Every TensorBoard event file under `run_dir`, at any depth, in path order."""
    return sorted(path for path in Path(run_dir).rglob(EVENT_GLOB) if path.is_file())


def _read_file(path: Path, keep_histogram: HistogramFilter | None) -> tuple[list, list]:
    acc = ea.EventAccumulator(str(path), size_guidance=SIZE_GUIDANCE)
    acc.Reload()
    tags = acc.Tags()
    scalars = [
        (tag, e.step, e.wall_time, e.value) for tag in tags["scalars"] for e in acc.Scalars(tag)
    ]
    histograms = []
    for tag in tags["histograms"]:
        if keep_histogram is not None and not keep_histogram(tag):
            continue
        for e in acc.Histograms(tag):
            h = e.histogram_value
            histograms.append(
                (tag, e.step, e.wall_time, h.min, h.max, h.num,
                 np.asarray(h.bucket_limit, float), np.asarray(h.bucket, float))
            )  # fmt: skip
    return scalars, histograms


def read_events(run_dir: str | Path, keep_histogram: HistogramFilter | None = None) -> RunEvents:
    """All scalars of one run, and the histograms whose tag `keep_histogram` accepts (None: all)."""
    events = RunEvents(files=find_event_files(run_dir))
    scalars: list = []
    histograms: list = []
    for path in events.files:
        try:
            file_scalars, file_histograms = _read_file(path, keep_histogram)
        except Exception as error:  # a half-written file must not hide the other runs
            events.problems.append(f"could not read {path.name}: {error}")
            log.warning("could not read %s: %s", path, error)
            continue
        scalars += file_scalars
        histograms += file_histograms
    if scalars:
        frame = pd.DataFrame(scalars, columns=SCALAR_COLUMNS)
        events.scalars = _last_per_step(frame)
    if histograms:
        frame = pd.DataFrame(histograms, columns=HISTOGRAM_COLUMNS)
        events.histograms = _last_per_step(frame)
    return events


def _last_per_step(frame: pd.DataFrame) -> pd.DataFrame:
    # Stable sort keeps file order among equal wall times; the last write at a step wins.
    frame = frame.sort_values(["tag", "step", "wall_time"], kind="stable")
    return frame.drop_duplicates(["tag", "step"], keep="last").reset_index(drop=True)


def per_epoch(events: RunEvents, tag: str) -> pd.Series:
    """`tag` per epoch (1-based), averaged where it was logged several times in one epoch.

    Lightning logs an `epoch` scalar with every logging step; it maps steps to epochs.
    Without it, each logged value counts as one epoch. Falls back to `<tag>_epoch`.
    """
    values = events.scalar(tag)
    if values.empty:
        values = events.scalar(f"{tag}_epoch")
    if values.empty:
        return pd.Series(dtype=float, name=tag)
    epochs = events.scalar(EPOCH)
    if epochs.empty:
        index = np.arange(1, len(values) + 1)
        return pd.Series(values.to_numpy(), index=pd.Index(index, name="epoch"), name=tag)
    # The epoch logged at the same step or, failing that, the closest one before it.
    known = epochs.sort_index()
    position = np.searchsorted(known.index.to_numpy(), values.index.to_numpy(), side="right") - 1
    epoch_of = known.to_numpy()[np.clip(position, 0, None)] + 1
    grouped = pd.Series(values.to_numpy(), index=epoch_of.astype(int)).groupby(level=0).mean()
    grouped.index.name = "epoch"
    return grouped.rename(tag)


def layer_values(events: RunEvents, prefix: str, which: str = "last") -> tuple[int, pd.Series]:
    """Per-layer scalars `<prefix>/layer_k` at the first or last step any of them was logged.

    Returns the step and a Series indexed by layer name in layer order (empty: none logged).
    """
    tags = events.scalars["tag"]
    rows = events.scalars[tags.str.match(rf"^{re.escape(prefix)}/layer_\d+$")]
    if rows.empty:
        return -1, pd.Series(dtype=float)
    step = int(rows["step"].min() if which == "first" else rows["step"].max())
    at_step = rows[rows["step"] == step]
    layers = at_step["tag"].str.slice(len(prefix) + 1)
    series = pd.Series(at_step["value"].to_numpy(float), index=layers.to_numpy())
    return step, series.iloc[np.argsort([layer_number(name) for name in series.index])]


def layer_number(name: str) -> int:
    """1-based index of a tracked layer name (`layer_07` -> 7); numeric, so 100 follows 99."""
    return int(name.rsplit("_", 1)[1])


def histogram_at(events: RunEvents, tag: str, which: str | int = "last") -> pd.Series | None:
    """The histogram row of `tag` at its first or last step, or at step `which`; else None."""
    rows = events.histograms[events.histograms["tag"] == tag]
    if rows.empty:
        return None
    if which == "first":
        return rows.loc[rows["step"].idxmin()]
    if which == "last":
        return rows.loc[rows["step"].idxmax()]
    exact = rows[rows["step"] == which]
    return None if exact.empty else exact.iloc[-1]


def histogram_density(row: pd.Series, bins: int = 60) -> tuple[np.ndarray, np.ndarray]:
    """Edges and probability density of a TensorBoard histogram on `bins` equal buckets.

    TensorBoard stores right bucket edges only (the first bucket starts at the minimum),
    on buckets that shrink toward 0; re-binning the cumulative counts onto equal buckets
    removes the spikes those tiny buckets draw. Empty tails are trimmed first.
    """
    limits = np.asarray(row["limits"], float)
    counts = np.asarray(row["counts"], float)
    if counts.size == 0 or counts.sum() <= 0:
        return np.array([]), np.array([])
    first_left = min(float(row["min"]), limits[0])
    if first_left >= limits[0]:
        first_left = limits[0] - (limits[1] - limits[0] if limits.size > 1 else 1.0)
    edges = np.concatenate([[first_left], limits])
    nonzero = np.flatnonzero(counts)
    start, stop = nonzero[0], nonzero[-1] + 1
    edges, counts = edges[start : stop + 1], counts[start:stop]
    if not np.isfinite(edges).all() or edges[-1] <= edges[0]:
        return np.array([]), np.array([])
    cumulative = np.concatenate([[0.0], np.cumsum(counts)])
    even = np.linspace(edges[0], edges[-1], bins + 1)
    mass = np.diff(np.interp(even, edges, cumulative)) / cumulative[-1]
    return even, mass / np.diff(even)
