"""The diagnostics callbacks' value rules, without torch: what each callback's config may say.

Each callback's constructor calls its rule here with its keyword values, and
`gradflow.rules.check` calls the same rule on a composed config before torch loads.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from gradflow.checks import check_params, number, whole

_WHOLE_THRESHOLDS = ("dead_min_units",)


@dataclass(frozen=True)
class VerdictThresholds:
    """The numbers that separate the verdict's labels (see the module docstring)."""

    vanishing_ratio: float = 5e-2
    vanishing_max_norm: float = 1e-1
    unfitted_loss_fraction: float = 0.5
    exploding_ratio: float = 1e2
    exploding_total_norm: float = 1e3
    saturated_fraction: float = 0.5
    saturated_layer_share: float = 0.5
    dead_fraction: float = 0.5
    dead_min_units: int = 2
    slow_min_gain: float = 0.05
    slow_loss_fraction: float = 0.65

    @classmethod
    def from_config(cls, values: Mapping[str, Any] | VerdictThresholds | None) -> VerdictThresholds:
        """These defaults with some replaced (a mapping, e.g. from Hydra); each must be a
        threshold's name and a number > 0, a whole one for a count (a ConfigError names the
        key otherwise)."""
        if isinstance(values, VerdictThresholds):
            return values
        check_params(values or {}, [f.name for f in fields(cls)], "the verdict", "thresholds.")
        checked = {}
        for key, value in (values or {}).items():
            if key in _WHOLE_THRESHOLDS:
                checked[key] = whole(f"thresholds.{key}", value, minimum=1)
            else:
                checked[key] = float(number(f"thresholds.{key}", value))
        return cls(**checked)


def check_probe_size(n: Any) -> int:
    """The probe batch's size: two samples at least, as a standard deviation needs."""
    return whole("probe_size", n, minimum=2, what="samples in the probe batch")


def gradient_monitor_rules(
    *, log_every_n_steps: Any, histogram_every_n_epochs: Any, figures_every_n_epochs: Any
) -> None:
    """GradientMonitor's rules."""
    if log_every_n_steps is not None:
        whole("log_every_n_steps", log_every_n_steps, minimum=0, null="for the Trainer's")
    whole("histogram_every_n_epochs", histogram_every_n_epochs, minimum=0)
    whole("figures_every_n_epochs", figures_every_n_epochs, minimum=0)


def activation_monitor_rules(
    *,
    probe_size: Any,
    every_n_epochs: Any,
    figures_every_n_epochs: Any,
    percentile_units: Any,
    percentile_seed: Any,
) -> None:
    """ActivationMonitor's rules."""
    check_probe_size(probe_size)
    whole("every_n_epochs", every_n_epochs, minimum=0)
    whole("figures_every_n_epochs", figures_every_n_epochs, minimum=0)
    whole("percentile_units", percentile_units, minimum=0)
    whole("percentile_seed", percentile_seed, minimum=0)


def verdict_monitor_rules(*, thresholds: Any) -> VerdictThresholds:
    """VerdictMonitor's rule: the thresholds, the config's overrides checked."""
    return VerdictThresholds.from_config(thresholds)
