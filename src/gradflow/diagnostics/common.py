"""What the diagnostics callbacks share: the model lookup and where their numbers go.

Scalars go to every logger of the run (`trainer.loggers`, possibly none); histograms,
images and text only to TensorBoard writers, and only on rank zero.

TensorBoard gets each call's scalars (or histograms) as ONE event holding many values:
its writer thread wakes once per event, and one event per value (SummaryWriter.add_scalar,
TensorBoardLogger.log_metrics) made the GIL hand-offs cost more than the statistics.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import lightning as L
import numpy as np
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from tensorboard.compat.proto.summary_pb2 import HistogramProto, Summary
from torch.utils.tensorboard import SummaryWriter

from gradflow.nn.models import TrackedModel


def tracked_model(pl_module: L.LightningModule) -> TrackedModel:
    """The module's `model` attribute, which must be a gradflow TrackedModel."""
    model = getattr(pl_module, "model", None)
    if not isinstance(model, TrackedModel):
        raise TypeError(
            f"gradflow diagnostics need `pl_module.model` to be a TrackedModel (MLP, BNMLP, "
            f"ResMLP); {type(pl_module).__name__}.model is {type(model).__name__}"
        )
    return model


def check_int(owner: str, name: str, value: object, minimum: int, optional: bool = False) -> None:
    """A constructor argument must be an int >= minimum (or None when optional)."""
    if optional and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{owner}.{name} must be an int >= {minimum}, got {value!r}")


def epoch_due(trainer: L.Trainer, every: int) -> bool:
    """Whether the epoch now ending is every `every`-th one or the run's last (0: never)."""
    epoch = trainer.current_epoch + 1
    return every > 0 and (epoch % every == 0 or epoch == trainer.max_epochs)


def tensorboard_writers(trainer: L.Trainer) -> list[SummaryWriter]:
    """The SummaryWriters of the run's TensorBoard loggers (empty off rank zero or without one)."""
    if not trainer.is_global_zero:
        return []
    return [lg.experiment for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)]


def _write(writers: Iterable[SummaryWriter], values: list[Summary.Value], step: int) -> None:
    if values:
        for writer in writers:
            # The FileWriter every SummaryWriter.add_* method writes through.
            writer._get_file_writer().add_summary(Summary(value=values), step)


def log_scalars(trainer: L.Trainer, metrics: Mapping[str, float], step: int) -> None:
    """Send scalars to every logger the run has, at `step` (optimizer steps taken so far)."""
    for logger in trainer.loggers:
        if not isinstance(logger, TensorBoardLogger):
            logger.log_metrics(dict(metrics), step=step)
        elif trainer.is_global_zero:
            prefix = f"{logger._prefix}{logger.LOGGER_JOIN_CHAR}" if logger._prefix else ""
            values = [Summary.Value(tag=prefix + k, simple_value=v) for k, v in metrics.items()]
            _write([logger.experiment], values, step)


def finite_values(values: torch.Tensor) -> tuple[np.ndarray, int]:
    """A tensor's finite entries as a flat float32 array on the host, and how many were not."""
    flat = values.detach().float().cpu().numpy().ravel()
    finite = np.isfinite(flat)
    if finite.all():  # the usual case, without a copy
        return flat, 0
    return flat[finite], int(flat.size - finite.sum())


def bin_counts(values: np.ndarray, low: float, high: float, bins: int) -> np.ndarray:
    """Counts of `values` (all within [low, high], high > low) in `bins` equal bins.

    np.histogram's counts, 4-6x faster: the bin index is computed in float32 arithmetic
    and counted with bincount, without numpy's float64 pass and edge corrections, so a
    value within float32 rounding of an inner edge may be counted in the bin beside it.
    """
    scale = np.float32(bins / (high - low))
    index = ((values.astype(np.float32, copy=False) - np.float32(low)) * scale).astype(np.intp)
    np.clip(index, 0, bins - 1, out=index)
    return np.bincount(index, minlength=bins)


def _histogram(kept: np.ndarray, bins: int) -> HistogramProto:
    # Equal bins computed here: TensorBoard's own binning costs ten times more, and its
    # dashboard shows about 30 bins anyway.
    low, high = float(kept.min()), float(kept.max())
    low, high = (low, high) if high > low else (low - 0.5, high + 0.5)
    counts = bin_counts(kept, low, high, bins)
    edges = np.linspace(low, high, bins + 1)
    wide = kept.astype(np.float64)
    return HistogramProto(
        min=low,
        max=high,
        num=int(kept.size),
        sum=float(wide.sum()),
        sum_squares=float(np.einsum("i,i->", wide, wide)),  # not BLAS: it spins up threads
        bucket_limit=edges[1:].tolist(),
        bucket=counts.tolist(),
    )


def log_histograms(
    writers: list[SummaryWriter], tensors: Mapping[str, torch.Tensor], step: int, bins: int = 64
) -> int:
    """Histograms of each tensor's finite entries (none finite: that tag is skipped) in one
    event; returns how many non-finite entries were left out."""
    if not writers:
        return 0
    values, dropped = [], 0
    for tag, tensor in tensors.items():
        kept, n_bad = finite_values(tensor)
        dropped += n_bad
        if kept.size:
            values.append(Summary.Value(tag=tag, histo=_histogram(kept, bins)))
    _write(writers, values, step)
    return dropped


def log_image(writers: list[SummaryWriter], tag: str, image: np.ndarray, step: int) -> None:
    """An (H, W, 3) uint8 picture in TensorBoard's Images tab."""
    for writer in writers:
        writer.add_image(tag, image, global_step=step, dataformats="HWC")


def log_text(writers: list[SummaryWriter], tag: str, text: str, step: int) -> None:
    """Markdown text in TensorBoard's Text tab."""
    for writer in writers:
        writer.add_text(tag, text, global_step=step)
