"""The end of a sweep: what became of each job, and how to run the unfinished ones again.

`SweepReport` is a Hydra callback (conf/train.yaml). Every job records its own fate in
summary.json (a job that raises or diverges does not stop the others), so the report
reads the job directories: that works whichever launcher ran the jobs. It then writes
compare.py's report into `<sweep dir>/report`, a TensorBoard run of its own, so
`tensorboard --logdir <sweep dir>` shows the sweep's tables, figures and HParams table.
"""

from __future__ import annotations

import json
import math
import shlex
import shutil
import sys
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from gradflow.errors import GradflowError
from gradflow.names import (
    FINISHED,
    HYDRA_DIR,
    INCOMPLETE,
    REJECTED,
    REJECTED_FILE,
    SUMMARY_FILE,
    tensorboard_command,
)
from gradflow.training.console import log

_last_report: dict[str, Any] = {}


def discard_run_dir(run_dir: Path) -> None:
    """Remove a run directory that holds only what Hydra writes when a job starts (its
    `.hydra/` and log file): a rejected config's, which nothing should list."""
    entries = list(run_dir.iterdir()) if run_dir.is_dir() else []
    if all(p.name == HYDRA_DIR or p.suffix == ".log" for p in entries):
        shutil.rmtree(run_dir, ignore_errors=True)


def reject_job(err: GradflowError) -> float:
    """A job whose config was rejected before training: its one sentence; exit 1 for a
    single run, and in a sweep a line of its rejected.jsonl and NaN for the sweeper."""
    log.error(str(err))
    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode.name != "MULTIRUN":
        sys.exit(1)
    record_rejection(Path(hydra_cfg.sweep.dir), Path(hydra_cfg.runtime.output_dir).name, str(err))
    return math.nan


def record_rejection(sweep_dir: Path, job: str, error: str) -> None:
    """Note, in the sweep's rejected.jsonl, a job whose config was rejected before training."""
    with open(sweep_dir / REJECTED_FILE, "a") as lines:  # one short line: an atomic append
        lines.write(json.dumps({"job": job, "error": error}) + "\n")


def job_statuses(sweep_dir: Path) -> dict[str, tuple[str, str | None]]:
    """{job name: (status, error)} for every job directory of a sweep and every rejected job
    (the last word on each: a rejected job that later ran is listed by its directory)."""
    jobs = {}
    rejected = sweep_dir / REJECTED_FILE
    for line in rejected.read_text().splitlines() if rejected.is_file() else []:
        entry = json.loads(line)
        jobs[entry["job"]] = (REJECTED, entry["error"])
    for job_dir in sorted(p.parent for p in sweep_dir.glob(f"*/{HYDRA_DIR}")):
        try:
            summary = json.loads((job_dir / SUMMARY_FILE).read_text())
            jobs[job_dir.name] = (str(summary.get("status")), summary.get("error"))
        except (OSError, ValueError):
            jobs[job_dir.name] = (INCOMPLETE, "no summary.json: the job was killed")
    return dict(sorted(jobs.items(), key=lambda job: _number(job[0])))


def _number(job: str) -> int:
    head = job.split("_", 1)[0]
    return int(head) if head.isdigit() else -1


def format_report(sweep_dir: Path, jobs: dict[str, tuple[str, str | None]]) -> str:
    """A few lines: the count per status, each unfinished job's error, the relaunch command."""
    counts: dict[str, int] = {}
    for status, _ in jobs.values():
        counts[status] = counts.get(status, 0) + 1
    lines = [
        f"sweep: {len(jobs)} jobs in {sweep_dir}: "
        + ", ".join(f"{n} {status}" for status, n in counts.items())
    ]
    failing = {name: job for name, job in jobs.items() if job[0] not in FINISHED}
    lines += [f"  {name}: {status} - {error}" for name, (status, error) in failing.items()]
    unfinished = [name for name, (status, _) in failing.items() if status != REJECTED]
    if unfinished:
        lines.append(
            f"run the {len(unfinished)} unfinished job(s) again (finished ones are skipped): "
            f"python scripts/train.py -m {shlex.quote(f'resume={sweep_dir}')}"
        )
    if len(unfinished) < len(failing):
        lines.append("a rejected config fails again until the sweep's arguments change")
    return "\n".join(lines)


def sweep_failed() -> bool:
    """Whether the last sweep of this process left a job unfinished (failed, killed, ...)."""
    return bool(_last_report.get("unfinished"))


class SweepReport(Callback):
    """Prints the sweep's outcome at its end, remembers whether any job is unfinished, and
    (with `compare`) writes the sweep's report for TensorBoard."""

    def __init__(self, compare: bool = True) -> None:
        self.compare = compare

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        jobs = job_statuses(sweep_dir)
        _last_report.update(
            sweep_dir=sweep_dir,
            unfinished=[name for name, (status, _) in jobs.items() if status not in FINISHED],
        )
        print(format_report(sweep_dir, jobs), file=sys.stdout, flush=True)
        if all(status == REJECTED for status, _ in jobs.values()):
            return  # no run to compare or to view
        if self.compare:
            from gradflow.reporting.compare import compare

            try:
                report = compare([sweep_dir]).files["summary.md"].parent
            except Exception as err:  # noqa: BLE001 - the sweep's own outcome is printed above
                print(f"report: not written ({type(err).__name__}: {err})", file=sys.stderr)
            else:
                print(f"report: {report} (tables, figures; shown by tensorboard too)")
        print(f"view: {tensorboard_command(sweep_dir)}", flush=True)
