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

import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from gradflow.config import config_dir, quote_paths
from gradflow.errors import ConfigError, GradflowError
from gradflow.rules import check as check_values
from gradflow.training.orphans import exit_with_sweep_process
from gradflow.training.resume import resume_argv
from gradflow.training.sweep import discard_run_dir, reject_job, sweep_failed


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="train")
def main(cfg: DictConfig) -> float:
    exit_with_sweep_process()  # a worker whose sweep was killed stops: no orphans
    try:
        # Every value rule first, without torch: a bad value is refused within a second.
        check_values(cfg)
    except ConfigError as err:
        discard_run_dir(Path(HydraConfig.get().runtime.output_dir))
        return reject_job(err)
    # Imported here, not above: Lightning and torchmetrics take seconds to import, and the
    # parent of a parallel sweep only launches the workers, which import them themselves.
    from gradflow.training.run import finish_job, run

    try:
        outcome = run(cfg)
    except GradflowError as err:  # a rejected config: its run directory is gone
        outcome = err
    return finish_job(cfg, outcome)


if __name__ == "__main__":
    try:
        sys.argv = resume_argv(quote_paths(sys.argv))
    except GradflowError as err:
        sys.exit(f"error: {err}")
    main()
    if sweep_failed():
        sys.exit(1)
