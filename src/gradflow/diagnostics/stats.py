"""Per-layer statistics as pure tensor functions; each returns 0-d tensors on the input's
device, so a caller can stack many of them and fetch them to the host in one transfer."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from gradflow.nn.activations import saturation_mask

ActivationSpec = str | Mapping[str, Any]


def saturation_stats(
    spec: ActivationSpec, preact: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(act_saturated, act_dead) of a (samples, units) pre-activation.

    act_saturated: fraction of (sample, unit) pairs saturated; act_dead: fraction of units
    saturated on every sample (times the layer's width, the count the verdict also checks).
    """
    mask = saturation_mask(spec, preact.reshape(preact.shape[0], -1))
    return mask.float().mean(), mask.all(dim=0).float().mean()


def rms(values: torch.Tensor) -> torch.Tensor:
    """Root mean square over all entries."""
    return values.float().pow(2).mean().sqrt()


def spread(values: torch.Tensor) -> torch.Tensor:
    """Standard deviation over all entries (the width of the layer's histogram)."""
    return values.float().std(correction=0)


def norms(tensors: list[torch.Tensor | None]) -> list[torch.Tensor | None]:
    """Each tensor's L2 norm, in float32 whatever its dtype, as 0-d tensors on its device
    (None for None: a parameter without a gradient)."""
    return [
        None if t is None else torch.linalg.vector_norm(t, dtype=torch.float32) for t in tensors
    ]
