"""A Hydra callback that checks, before any job starts, that the log directory is writable.

Run and sweep directories live under `paths.log_dir` (conf/hydra/default.yaml and
probe.yaml), and a read-only or impossible place would surface as a long stack of Hydra's
exception formatting when the directory is made. `WritableLogDir` makes `paths.log_dir` and a file
in it first; when it cannot, the command ends with one sentence and exit status 1.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf


def unwritable_reason(directory: Path) -> str | None:
    """Why files cannot be created in `directory` (made if missing), or None when they can."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=directory):
            pass
    except OSError as err:
        return err.strerror or type(err).__name__
    return None


class WritableLogDir(Callback):
    """Ends the command in one sentence when `paths.log_dir` cannot be written."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check(config)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check(config)

    @staticmethod
    def _check(config: DictConfig) -> None:
        log_dir = OmegaConf.select(config, "paths.log_dir")
        if log_dir is None:
            return
        reason = unwritable_reason(Path(log_dir).expanduser())
        if reason is not None:
            sys.exit(
                f"error: paths.log_dir={log_dir} cannot hold the runs ({reason}); choose a "
                f"directory this user can write, e.g. paths.log_dir=$HOME/gradflow-logs."
            )
