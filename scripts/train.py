"""Train one configuration, or sweep many with -m: `python scripts/train.py activation=sigmoid`.

Exit status: 0 when the run completed (or diverged: a result, recorded in summary.json);
1 when it failed, with its one-sentence error as the only output; 130 when interrupted
(Ctrl-C), which also stops a sweep. A sweep prints each job's status at its end and exits
1 when any job failed or was killed: `resume=<sweep dir>` then runs just those again.
"""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from gradflow.config import config_dir
from gradflow.errors import GradflowError
from gradflow.training.resume import resume_argv
from gradflow.training.sweep import sweep_failed

EXIT_INTERRUPTED = 130  # the shell's code for Ctrl-C


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="train")
def main(cfg: DictConfig) -> float:
    # Imported here, not above: Lightning and torchmetrics take seconds to import, and the
    # parent of a parallel sweep only launches the workers, which import them themselves.
    from gradflow.training.run import run
    from gradflow.training.summary import format_summary, objective

    summary = run(cfg)
    is_sweep = hydra.core.hydra_config.HydraConfig.get().mode.name == "MULTIRUN"
    if summary["status"] == "failed" and not is_sweep:
        sys.exit(f"error: {summary['error']}")  # one sentence, no traceback; exit status 1
    print(format_summary(summary, cfg.paths.log_dir))
    if summary["status"] == "interrupted":
        sys.exit(EXIT_INTERRUPTED)  # a sweep stops too: Ctrl-C means stop
    return objective(summary)


if __name__ == "__main__":
    try:
        sys.argv = resume_argv(sys.argv)
    except GradflowError as err:
        sys.exit(f"error: {err}")
    main()
    if sweep_failed():
        sys.exit(1)
