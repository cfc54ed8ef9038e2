"""Find finished runs on disk and load what each left behind: summary.json, overrides, events.

A run directory is one that holds `summary.json` (written by train.py) or `.hydra/`
(written by Hydra when the job starts). A run that died before its summary was written
is kept, with status `incomplete`, so a sweep's table never silently loses a row.
"""

from __future__ import annotations

import glob
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from gradflow.config import SEED_KEY, override_key
from gradflow.errors import GradflowError
from gradflow.names import HYDRA_DIR, INCOMPLETE, SUMMARY_FILE, UNKNOWN
from gradflow.reporting.events import HistogramFilter, RunEvents, find_event_files, read_events

MAX_SEARCH_DEPTH = 4  # logs/multiruns/<sweep>/<date>/<job> at most
GLOB_CHARS = re.compile(r"[*?\[]")


@dataclass
class Run:
    """One run directory and everything read from it."""

    path: Path
    summary: dict[str, Any] = field(default_factory=dict)
    status: str = INCOMPLETE
    error: str | None = None
    overrides: list[str] = field(default_factory=list)
    events: RunEvents = field(default_factory=RunEvents)

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def override_map(self) -> dict[str, str]:
        return parse_overrides(self.overrides)

    @property
    def group_key(self) -> tuple[str, ...]:
        """The run's overrides without the seed: runs with equal keys differ only in seed."""
        return tuple(sorted(o for o in self.overrides if override_key(o) != SEED_KEY))

    @property
    def seed(self) -> str | None:
        """The seed from the overrides, else from the resolved config, else None."""
        seed = self.override_map.get(SEED_KEY)
        if seed is None and isinstance(self.summary.get("config"), dict):
            seed = self.summary["config"].get(SEED_KEY)
        return None if seed is None else str(seed)

    def get(self, *keys: str, default: Any = None) -> Any:
        """A nested summary value, `default` where any key on the way is missing."""
        node: Any = self.summary
        for key in keys:
            if not isinstance(node, dict) or key not in node:
                return default
            node = node[key]
        return node


def parse_overrides(overrides: Iterable[str]) -> dict[str, str]:
    """Hydra override strings as key -> value text, in order (`~key` maps to `<deleted>`)."""
    parsed = {}
    for override in overrides:
        key, sep, value = override.partition("=")
        parsed[key.lstrip("+~")] = value if sep else "<deleted>"
    return parsed


def _natural_key(path: Path) -> list:
    # Job folders 0, 1, ..., 10 sort by number, not as text.
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", str(path))]


def is_run_dir(path: Path) -> bool:
    return (path / SUMMARY_FILE).is_file() or (path / HYDRA_DIR).is_dir()


def _search(path: Path, depth: int) -> list[Path]:
    if is_run_dir(path):
        return [path]
    if depth >= MAX_SEARCH_DEPTH:
        return []
    found = []
    for child in sorted(path.iterdir(), key=_natural_key):
        if child.is_dir() and not child.name.startswith("."):
            found += _search(child, depth + 1)
    return found


def _expand(pattern: str) -> list[Path]:
    if GLOB_CHARS.search(pattern):
        matches = sorted((Path(p) for p in glob.glob(pattern)), key=_natural_key)
        if not matches:
            raise GradflowError(f"no path matches '{pattern}'")
        return matches
    path = Path(pattern)
    if not path.exists():
        raise GradflowError(f"'{pattern}' does not exist; give a run or multirun directory")
    return [path]


def discover_runs(paths: Sequence[str | Path]) -> list[Path]:
    """Run directories from run dirs, multirun dirs (searched a few levels down) or globs.

    A directory with event files but no run marker (a bare TensorBoard log dir) counts as
    one run. Each run appears once, in the order given, jobs in numeric order.
    """
    found: dict[Path, None] = {}
    for pattern in paths:
        for path in _expand(str(pattern)):
            if not path.is_dir():
                raise GradflowError(f"'{path}' is not a directory; give a run or multirun dir")
            runs = _search(path, 0)
            if not runs and find_event_files(path):
                runs = [path]
            found.update(dict.fromkeys(run.resolve() for run in runs))
    if not found:
        raise GradflowError(
            f"no runs found under {', '.join(map(str, paths))} (looked for {SUMMARY_FILE}, "
            f"{HYDRA_DIR}/ or TensorBoard event files)"
        )
    return list(found)


def _read_summary(path: Path) -> tuple[dict[str, Any], str | None]:
    try:
        summary = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        return {}, f"{SUMMARY_FILE} could not be read ({error})"
    if not isinstance(summary, dict):
        return {}, f"{SUMMARY_FILE} holds a {type(summary).__name__}, not an object"
    return summary, None


def _overrides_from_dir(run_dir: Path) -> list[str]:
    hydra_file = run_dir / HYDRA_DIR / "overrides.yaml"
    if hydra_file.is_file():
        try:
            loaded = yaml.safe_load(hydra_file.read_text())
        except (OSError, yaml.YAMLError):
            loaded = None
        if isinstance(loaded, list):
            return [str(item) for item in loaded]
    # Last resort: a job folder named like `3_activation=relu,seed=2` (Hydra override_dirname).
    name = re.sub(r"^\d+_", "", run_dir.name)
    if "=" not in name:
        return []
    parts: list[str] = []
    for piece in name.split(","):
        if "=" in piece or not parts:
            parts.append(piece)
        else:
            parts[-1] += "," + piece  # a comma inside a list value, e.g. hidden_sizes=[64,32]
    return parts


def load_run(run_dir: str | Path, keep_histogram: HistogramFilter | None = None) -> Run:
    """Everything one run left behind; missing or broken pieces become status and error."""
    run = Run(path=Path(run_dir))
    summary_path = run.path / SUMMARY_FILE
    if summary_path.is_file():
        run.summary, run.error = _read_summary(summary_path)
        run.status = str(run.summary.get("status") or UNKNOWN)
        run.error = run.error or run.summary.get("error")
    else:
        run.error = f"no {SUMMARY_FILE}: the run is still going or was killed before the end"
    overrides = run.summary.get("overrides")
    if isinstance(overrides, list):
        run.overrides = [str(o) for o in overrides]
    else:
        run.overrides = _overrides_from_dir(run.path)
    run.events = read_events(run.path, keep_histogram)
    return run


def load_runs(
    paths: Sequence[str | Path], keep_histogram: HistogramFilter | None = None
) -> list[Run]:
    """`discover_runs` then `load_run` for each."""
    return [load_run(path, keep_histogram) for path in discover_runs(paths)]


def run_labels(runs: Sequence[Run]) -> dict[Path, str]:
    """Short legend labels: only the overrides that differ between runs, else the folder name."""
    maps = [run.override_map for run in runs]
    keys = list(dict.fromkeys(key for m in maps for key in m))
    varying = [k for k in keys if len({m.get(k) for m in maps}) > 1]
    labels = {}
    for run, overrides in zip(runs, maps, strict=True):
        shown = [f"{k}={overrides[k]}" for k in varying if k in overrides]
        labels[run.path] = " ".join(shown) if shown else run.name
    if len(set(labels.values())) < len(labels):  # ambiguous labels: fall back to folder names
        return {run.path: run.name for run in runs}
    return labels
