"""Read runs back (summary.json, TensorBoard events), compare them, and draw the figures.

Submodules: `runs` (find and load run dirs), `events` (scalars and histograms),
`tables`, `figures`, `compare` (all of it into one folder), `probe` (the init probe's
report) and `activation_plots` (the registry's f and f').
"""

from gradflow.reporting.compare import Comparison, compare, default_out_dir
from gradflow.reporting.events import RunEvents, read_events
from gradflow.reporting.runs import Run, discover_runs, load_run, load_runs

__all__ = [
    "Comparison",
    "Run",
    "RunEvents",
    "compare",
    "default_out_dir",
    "discover_runs",
    "load_run",
    "load_runs",
    "read_events",
]
