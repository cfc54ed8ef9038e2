"""No orphans: when a sweep's process dies, the worker processes running its jobs stop too.

A parallel launcher (hydra/launcher=parallel: loky) runs the jobs in worker processes. When
the sweep's process is killed (SIGKILL, or SIGTERM, which Python does not catch), nothing
stops its workers: each would finish its job, write summary.json, take the jobs already
queued to it and idle for minutes; a worker whose sweep died while sending it its first
job waits forever for the rest of it. The dead process cannot clean up, so the others do:

- `mark_sweep_process()`, called by the Hydra callback `SweepGuard` when a sweep starts
  (conf/hydra/common.yaml; single runs need no guard), before any job is launched, names
  the sweep's process in the environment, which every process it starts inherits, and
  starts a small guard process (`python -m gradflow.training.orphans`, Linux only);
- `exit_with_sweep_process()`, called as each job starts, does nothing in the sweep's
  process itself (the basic launcher runs the jobs there: its death is theirs), on another
  machine or in another process group (SLURM's tasks); in a worker it starts, once per
  process, a daemon thread that checks twice a second that the sweep's process is there.
  When it is gone (or already was when the job started), the worker exits at once
  (os._exit): no summary.json, no further checkpoint, no next job.
- The guard ignores Ctrl-C, SIGTERM and hang-ups and waits for the sweep's process to
  end. It then gives the processes that carry the sweep's name in its process group 2 s
  to exit by themselves (the workers above; loky's resource trackers, which free the
  shared memory once no worker holds their pipe), SIGTERMs those still there (a worker
  that never started a job), and SIGKILLs what is left 2 s later. After a sweep that
  ended normally it finds nothing to do.

A killed sweep's jobs stay unfinished, as in a killed single run, and `resume=<sweep dir>`
continues them from their last checkpoint (Lightning writes checkpoints through a
temporary file; summary.json is written whole or not at all).

Processes are watched by pid, whichever launcher made them, with public calls only.
PR_SET_PDEATHSIG would need ctypes, fires on the death of the parent *thread* (loky may
start a worker from a thread that ends before the sweep does), and could be set only once
a job starts: too late for a worker whose sweep died while it was starting up.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

log = logging.getLogger(__name__)

# The sweep's process: "<host>/<pid namespace>/<pid>/<process group>/<token>".
SWEEP_PROCESS_ENV = "GRADFLOW_SWEEP_PROCESS"
# Seconds between two checks: the longest an orphaned worker goes on training.
POLL_S = 0.5
# Seconds the guard gives the sweep's processes to exit after each step (none, SIGTERM).
GRACE_S = 2.0
# An orphaned worker's exit status (nobody is left to read it).
ORPHAN_EXIT = 1

_guard: subprocess.Popen | None = None  # this process's guard: kept, never waited for
_watching_pid: int | None = None  # the process whose watcher runs (a fork has none)


def mark_sweep_process() -> None:
    """Name this process as the sweep's for the processes it starts, and start the guard
    that ends them if it dies (Linux: the guard finds them in /proc)."""
    global _guard
    if os.name != "posix":
        return
    marker = f"{_machine()}/{os.getpid()}/{os.getpgrp()}/{secrets.token_hex(4)}"
    os.environ[SWEEP_PROCESS_ENV] = marker
    if Path("/proc/self/environ").is_file():
        _guard = subprocess.Popen(
            [sys.executable, "-m", __name__, marker],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,  # holds no pipe of the sweep's caller open
            stderr=subprocess.DEVNULL,
        )


class SweepGuard(Callback):
    """Marks the sweep's process and starts its guard when a multirun starts (`-m`, or a
    config that sets hydra.mode=MULTIRUN, such as hparams_search=optuna)."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        mark_sweep_process()


def exit_with_sweep_process() -> None:
    """In a worker of a sweep on this machine: exit this process as soon as the sweep's
    process is gone (now, if it already is)."""
    global _watching_pid
    sweep = _parse(os.environ.get(SWEEP_PROCESS_ENV, ""))
    if sweep is None or _watching_pid == os.getpid():
        return
    pid, group = sweep
    if pid == os.getpid() or group != os.getpgrp():
        return
    if not _alive(pid):
        _exit_orphaned(pid)
    _watching_pid = os.getpid()
    threading.Thread(target=_watch, args=(pid,), name="gradflow-orphans", daemon=True).start()


def _parse(marker: str) -> tuple[int, int] | None:
    """(pid, process group) of the sweep's process named by `marker`, when it runs on this
    machine; None when unmarked or elsewhere."""
    parts = marker.rsplit("/", 3)  # the host and namespace, the pid, the group, the token
    if os.name != "posix" or len(parts) != 4 or parts[0] != _machine():
        return None
    pid, group = parts[1:3]
    return (int(pid), int(group)) if pid.isdigit() and group.isdigit() else None


def _machine() -> str:
    """This host and its pid namespace: where a pid names the same process (a container
    has its own pids; every host's first namespace has the same inode)."""
    try:
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:  # no /proc (macOS)
        namespace = ""
    return f"{socket.gethostname()}/{namespace}"


def _alive(pid: int) -> bool:
    """Whether process `pid` runs: a killed one stays a zombie until its parent reaps it."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: it exists
        return True
    if not Path("/proc/self").is_dir():  # no /proc (macOS): its parent reaps it promptly
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:  # reaped since
        return False
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")  # the state after the name


def _watch(pid: int) -> None:
    while _alive(pid):
        time.sleep(POLL_S)
    _exit_orphaned(pid)


def _exit_orphaned(pid: int) -> None:
    log.warning(
        "the sweep's process %d is gone: this worker stops (`resume=<sweep dir>` continues "
        "its unfinished jobs)",
        pid,
    )
    os._exit(ORPHAN_EXIT)


# ------------------------------------------------------------------------------- guard


def _marked(marker: str, group: int) -> list[int]:
    """The live processes, but this one, of process group `group` whose environment names
    the sweep `marker` (a SLURM task started on this machine has a group of its own)."""
    entry = f"{SWEEP_PROCESS_ENV}={marker}".encode()
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            environ = (proc / "environ").read_bytes().split(b"\0")
            state, _, pgrp = (proc / "stat").read_text().rpartition(")")[2].split()[:3]
        except (OSError, ValueError):  # gone, or someone else's
            continue
        if entry in environ and state not in ("Z", "X") and pgrp == str(group):
            found.append(int(proc.name))
    return found


def _guard_main(marker: str) -> None:
    """Wait for the sweep's process to end, then for its processes, ending those that stay."""
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):  # Ctrl-C, scancel, hang-up
        signal.signal(sig, signal.SIG_IGN)
    sweep = _parse(marker)
    if sweep is None:
        return
    pid, group = sweep
    while os.getppid() == pid:  # this guard's parent: the sweep's process
        time.sleep(POLL_S)
    for sig in (None, signal.SIGTERM, signal.SIGKILL):
        for left in _marked(marker, group) if sig else []:
            with contextlib.suppress(OSError):  # gone since
                os.kill(left, sig)
        if _all_gone(marker, group, GRACE_S):
            return


def _all_gone(marker: str, group: int, timeout: float) -> bool:
    """Whether the sweep's processes are all gone within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while _marked(marker, group):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


if __name__ == "__main__":
    _guard_main(sys.argv[1])
