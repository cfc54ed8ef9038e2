"""Signal propagation at init, no training: `python scripts/probe.py model.depth=50`.

Composes conf/probe.yaml from the training config groups and measures each tracked layer
at step 0 on the first validation images: activation mean, std and saturation, the
backpropagated signal and the weight-gradient norm. One run writes its report into its
directory; `-m` sweeps (the textbook grid by default: depth 10, 20, 50 x normal, Xavier,
He init x tanh, ReLU) write it into the sweep directory. Exit status 1 with one sentence
for a bad value.
"""

from __future__ import annotations

import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from gradflow.config import config_dir


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="probe")
def main(cfg: DictConfig) -> None:
    # Imported here: torch and Lightning take seconds, and --help needs neither.
    from gradflow.errors import gradflow_cause
    from gradflow.reporting.probe import report
    from gradflow.training.probe import probe
    from gradflow.training.run import output_dir

    try:
        records, source = probe(cfg)
    except Exception as err:
        cause = gradflow_cause(err)
        if cause is None:
            raise
        sys.exit(f"error: {cause}")
    if HydraConfig.get().mode.name != "MULTIRUN":
        print(f"data: {source}")
        print(report(records, output_dir(cfg)))


if __name__ == "__main__":
    main()
