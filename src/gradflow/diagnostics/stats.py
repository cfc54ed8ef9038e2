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
    saturated on every sample (the verdict turns it into a count with the layer's width).
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


def weight_variances(layer: torch.nn.Linear) -> tuple[torch.Tensor, torch.Tensor]:
    """(sigma_w2, sigma_b2) of a built layer, as mean-field theory writes its init: fan_in *
    mean(W²) and mean(b²) (0 without a bias). Measured, so any scheme reads the same way:
    He init gives sigma_w2 ≈ 2, Glorot's "standard" U(±1/√fan_in) gives 1/3."""
    sigma_w2 = layer.weight.detach().float().pow(2).mean() * layer.in_features
    bias = layer.bias
    sigma_b2 = bias.detach().float().pow(2).mean() if bias is not None else sigma_w2.new_zeros(())
    return sigma_w2, sigma_b2


def unit_percentiles(preact: torch.Tensor, units: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """The `q` quantiles (fractions, on the input's device) of each of `units` over the
    samples of a (samples, units) pre-activation: a (len(q), len(units)) tensor, linear
    interpolation between samples as torch.quantile does."""
    return torch.quantile(preact.reshape(preact.shape[0], -1)[:, units].float(), q, dim=0)
