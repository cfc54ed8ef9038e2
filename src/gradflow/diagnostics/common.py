"""What the diagnostics callbacks share: the model lookup and where their numbers go.

Scalars go to every logger of the run (`Logger.log_metrics`, possibly none); histograms,
images and text only to TensorBoard's `SummaryWriter`s, through its public `add_*`
methods, and only on rank zero. Each scalar of a family that spans decades goes out twice:
as itself and as its base-10 logarithm, `log10/<tag>`, which the Custom Scalars layout
charts (a linear axis draws 1e-6 on the zero line).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import lightning as L
import numpy as np
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from torch.utils.tensorboard import SummaryWriter

from gradflow.names import GRAD_NORM, GRAD_NORM_BIAS
from gradflow.nn.models import TrackedModel

LOG10 = "log10"
# The tag families (first path component) that get a log10 twin.
LOG10_FAMILIES = (GRAD_NORM, GRAD_NORM_BIAS, "grad_signal", "update_ratio", "act_std")


def tracked_model(pl_module: L.LightningModule) -> TrackedModel:
    """The module's `model` attribute, which must be a gradflow TrackedModel."""
    model = getattr(pl_module, "model", None)
    if not isinstance(model, TrackedModel):
        raise TypeError(
            f"gradflow diagnostics need `pl_module.model` to be a TrackedModel (MLP, BNMLP, "
            f"ResMLP); {type(pl_module).__name__}.model is {type(model).__name__}"
        )
    return model


def epoch_end_step(trainer: L.Trainer) -> int:
    """The step every end-of-epoch value is logged at: the epoch's last optimizer step, where
    Lightning logs epoch metrics (so a resumed run's purge step, its first new step, keeps
    them). Step 0 holds the values at initialisation."""
    return max(trainer.global_step - 1, 0)


def epoch_due(trainer: L.Trainer, every: int) -> bool:
    """Whether the epoch now ending is every `every`-th one or the run's last (0: never)."""
    epoch = trainer.current_epoch + 1
    return every > 0 and (epoch % every == 0 or epoch == trainer.max_epochs)


def tensorboard_writers(trainer: L.Trainer) -> list[SummaryWriter]:
    """The SummaryWriters of the run's TensorBoard loggers (empty off rank zero or without one)."""
    if not trainer.is_global_zero:
        return []
    return [lg.experiment for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)]


def log10_twins(metrics: Mapping[str, float]) -> dict[str, float]:
    """`log10/<tag>` for each of `metrics` whose family spans decades; NaN (which TensorBoard
    leaves out of a line) where the value is 0, negative or not finite."""
    return {
        f"{LOG10}/{tag}": math.log10(value) if math.isfinite(value) and value > 0 else math.nan
        for tag, value in metrics.items()
        if tag.split("/", 1)[0] in LOG10_FAMILIES
    }


def log_scalars(trainer: L.Trainer, metrics: Mapping[str, float], step: int) -> None:
    """Send scalars, and their log10 twins, to every logger the run has, at `step`."""
    values = {**metrics, **log10_twins(metrics)}
    for logger in trainer.loggers:
        logger.log_metrics(values, step=step)


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


def log_histograms(
    writers: list[SummaryWriter], tensors: Mapping[str, torch.Tensor], step: int, bins: int = 64
) -> int:
    """Histograms of each tensor's finite entries (none finite: that tag is skipped); returns
    how many non-finite entries were left out.

    Equal bins computed here and written with `add_histogram_raw`: TensorBoard's own binning
    (`add_histogram`) costs ten times more, and its dashboard shows about 30 bins anyway.
    """
    if not writers:
        return 0
    dropped = 0
    for tag, tensor in tensors.items():
        kept, n_bad = finite_values(tensor)
        dropped += n_bad
        if not kept.size:
            continue
        low, high = float(kept.min()), float(kept.max())
        low, high = (low, high) if high > low else (low - 0.5, high + 0.5)
        wide = kept.astype(np.float64)
        histogram = {
            "min": low,
            "max": high,
            "num": int(kept.size),
            "sum": float(wide.sum()),
            "sum_squares": float(np.einsum("i,i->", wide, wide)),  # not BLAS: no thread spin-up
            "bucket_limits": np.linspace(low, high, bins + 1)[1:].tolist(),
            "bucket_counts": bin_counts(kept, low, high, bins).tolist(),
        }
        for writer in writers:
            writer.add_histogram_raw(tag, **histogram, global_step=step)
    return dropped


def log_image(writers: list[SummaryWriter], tag: str, image: np.ndarray, step: int) -> None:
    """An (H, W, 3) uint8 picture in TensorBoard's Images tab."""
    for writer in writers:
        writer.add_image(tag, image, global_step=step, dataformats="HWC")


def log_text(writers: list[SummaryWriter], tag: str, text: str, step: int) -> None:
    """Markdown text in TensorBoard's Text tab."""
    for writer in writers:
        writer.add_text(tag, text, global_step=step)
