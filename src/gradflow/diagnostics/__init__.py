"""Per-layer statistics and the Lightning callbacks that log them (names: docs/architecture.md).

- GradientMonitor: `grad_norm/*`, `update_ratio/*`, gradient/weight histograms, the
  per-layer bar chart, and the DivergedError stop on a NaN/Inf.
- ActivationMonitor: `act_*`, `grad_signal/*`, `bn_*_std/*`, `res_*_std/*` and histograms
  on a fixed probe batch, plus the activation histogram grid.
- VerdictMonitor: healthy / vanishing / exploding / saturated / dead_units / slow, with
  evidence, at initialisation, during training and at the end (a timeline).
- CustomScalarsLayout: TensorBoard's Custom Scalars tab, one multi-line chart per question.
"""

from gradflow.diagnostics.activations import ActivationMonitor, probe_statistics
from gradflow.diagnostics.gradients import GradientMonitor
from gradflow.diagnostics.layout import LAYOUT, CustomScalarsLayout
from gradflow.diagnostics.probe import ProbeCapture, capture_probe, probe_batch
from gradflow.diagnostics.stats import saturation_stats
from gradflow.diagnostics.verdict import LABELS, Verdict, VerdictThresholds, judge
from gradflow.diagnostics.verdict_monitor import VerdictMonitor

__all__ = [
    "LABELS",
    "LAYOUT",
    "CustomScalarsLayout",
    "ActivationMonitor",
    "GradientMonitor",
    "ProbeCapture",
    "Verdict",
    "VerdictMonitor",
    "VerdictThresholds",
    "capture_probe",
    "judge",
    "probe_batch",
    "probe_statistics",
    "saturation_stats",
]
