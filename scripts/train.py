"""Train one configuration, or sweep many with -m: `python scripts/train.py activation=sigmoid`."""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from gradflow.config import config_dir
from gradflow.train import format_summary, objective, run


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="train")
def main(cfg: DictConfig) -> float:
    summary = run(cfg)
    print(format_summary(summary, cfg.paths.log_dir))
    is_sweep = hydra.core.hydra_config.HydraConfig.get().mode.name == "MULTIRUN"
    if summary["status"] == "failed" and not is_sweep:
        sys.exit(1)  # the one-sentence error is already printed; no traceback
    return objective(summary)


if __name__ == "__main__":
    main()
