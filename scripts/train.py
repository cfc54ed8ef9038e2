"""Train one configuration, or sweep many with -m: `python scripts/train.py activation=sigmoid`.

Exit status: 0 when the run completed (or diverged: a result, recorded in summary.json);
1 when its config was rejected (nothing is left behind) or it failed, with its
one-sentence error as the only output; 130 when interrupted (Ctrl-C) and 143 when
terminated (SIGTERM), either of which also stops a sweep (not a SLURM job array: its
task records the status and returns, for the sweep's report). A sweep prints each job's
status at its end and exits 1 when any job was rejected, failed or was killed:
`resume=<sweep dir>` then runs the failed and killed ones again.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from gradflow.config import config_dir, quote_paths
from gradflow.errors import GradflowError
from gradflow.names import FAILED, INTERRUPTED, TERMINATED
from gradflow.training.console import log
from gradflow.training.orphans import exit_with_sweep_process
from gradflow.training.resume import resume_argv
from gradflow.training.sweep import sweep_failed

# The shell's codes for Ctrl-C and for SIGTERM: either stops a sweep too.
EXIT_CODES = {INTERRUPTED: 130, TERMINATED: 143}
# Launchers that run each job as a task of a scheduler (hydra/launcher=slurm): scancel or a
# time limit ends that task only, and the sweep waits for its result (submitit's result
# file, which an exit would not write) to report it.
SCHEDULER_LAUNCHERS = "hydra_plugins.hydra_submitit_launcher."


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="train")
def main(cfg: DictConfig) -> float:
    exit_with_sweep_process()  # a worker whose sweep was killed stops: no orphans
    # Imported here, not above: Lightning and torchmetrics take seconds to import, and the
    # parent of a parallel sweep only launches the workers, which import them themselves.
    from gradflow.training.run import run
    from gradflow.training.summary import format_summary, objective
    from gradflow.training.sweep import record_rejection

    hydra_cfg = HydraConfig.get()
    is_sweep = hydra_cfg.mode.name == "MULTIRUN"
    try:
        summary = run(cfg)
    except GradflowError as err:  # a rejected config: one sentence, no run left behind
        log.error(str(err))
        if not is_sweep:
            sys.exit(1)
        record_rejection(
            Path(hydra_cfg.sweep.dir), Path(hydra_cfg.runtime.output_dir).name, str(err)
        )
        return math.nan
    if summary["status"] == FAILED and not is_sweep:
        log.error(summary["error"])  # one sentence, no traceback (in train.log too)
        sys.exit(1)
    # A sweep's jobs leave the TensorBoard command to the sweep's end: one, for the sweep.
    log.info(format_summary(summary, cfg.paths.log_dir, view=not is_sweep))
    scheduled = str(hydra_cfg.launcher.get("_target_", "")).startswith(SCHEDULER_LAUNCHERS)
    if summary["status"] in EXIT_CODES and not scheduled:
        sys.exit(EXIT_CODES[summary["status"]])  # a sweep stops too: the signal means stop
    return objective(summary)


if __name__ == "__main__":
    try:
        sys.argv = resume_argv(quote_paths(sys.argv))
    except GradflowError as err:
        sys.exit(f"error: {err}")
    main()
    if sweep_failed():
        sys.exit(1)
