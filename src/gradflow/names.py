"""Names other code and people rely on, defined once (docs/architecture.md lists them all).

Imports nothing heavy: the reporting side and the command line read these too.
"""

from __future__ import annotations

# A run directory (logs/runs/<date>/<run>, or a sweep's job directory).
SUMMARY_FILE = "summary.json"
HYDRA_DIR = ".hydra"  # Hydra's config.yaml and overrides.yaml of the run
CHECKPOINT_DIR = "checkpoints"
LAST_CHECKPOINT = "last.ckpt"
# A sweep directory (logs/multiruns/<date>/<time>) holds this beside its job directories,
# and one line per job whose config was rejected before training (no job directory).
SWEEP_FILE = "multirun.yaml"
REJECTED_FILE = "rejected.jsonl"

# A run's status in summary.json.
COMPLETED = "completed"
DIVERGED = "diverged"  # a NaN/Inf loss or gradient stopped it: a result, not a fault
FAILED = "failed"
INTERRUPTED = "interrupted"  # Ctrl-C
TERMINATED = "terminated"  # SIGTERM: a scheduler's time limit or scancel, or kill
# A sweep's job whose config was rejected before training: it left no run, only a line in
# the sweep's rejected.jsonl, and running it again cannot pass.
REJECTED = "rejected"
# Read back by the reporting side, never written: no summary.json (killed, or still running),
# or one without a readable status.
INCOMPLETE = "incomplete"
UNKNOWN = "unknown"
# Runs that need no more training: a resumed sweep skips them, and their numbers are
# outcomes of the config (the others stopped for reasons outside it).
FINISHED = (COMPLETED, DIVERGED)

# The phases of summary.json's verdict timeline, in order.
INITIALISATION, TRAINING, END = "initialisation", "training", "end"

# TensorBoard tags the reporting side reads back (the full list: docs/architecture.md).
TRAIN_LOSS, TRAIN_ACC = "train/loss", "train/acc"
VAL_LOSS, VAL_ACC, VAL_ACC_BEST = "val/loss", "val/acc", "val/acc_best"
EPOCH = "epoch"
GRAD_NORM = "grad_norm"  # grad_norm/layer_k, grad_norm/total, grad_norm/first_last_ratio
FIRST_LAST_RATIO = f"{GRAD_NORM}/first_last_ratio"
# grad_norm_bias/layer_k: the norm of ∂L/∂b, each layer's "speed of learning" (Nielsen, ch. 5);
# layers without a bias (Linear before BatchNorm) have none.
GRAD_NORM_BIAS = "grad_norm_bias"
ACTIVATIONS = "activations"  # histograms activations/layer_k
# ActivationMonitor's percentiles of single units' pre-activations over the probe batch
# (Ioffe & Szegedy 2015, Fig. 1b, c): preact_p15/layer_k/unit_j, ...
PREACT_PERCENTILES = (15, 50, 85)


def percentile_tag(percentile: int, layer: str, unit: int) -> str:
    """`preact_p15/layer_02/unit_007`: a percentile of unit `unit` (0-based) of `layer`."""
    return f"preact_p{percentile}/{layer}/unit_{unit:03d}"


# The metrics of TensorBoard's HParams table: each tag's last point.
HPARAMS_METRICS = (VAL_ACC, VAL_ACC_BEST, VAL_LOSS)

# The init probe (scripts/probe.py): each job's rows, one per tracked layer, in this file.
PROBE_JOB_FILE = "probe.csv"
PROBE_CONFIG_COLUMNS = ["depth", "init", "activation", "model", "scaling"]
# sigma_w2 and sigma_b2 are measured on the built layer: fan_in * mean(W²) and mean(b²), the
# variances of mean-field theory whatever scheme set them (He: sigma_w2 = 2).
PROBE_STATISTICS = [
    "act_mean",
    "act_std",
    "act_saturated",
    "act_dead",
    "grad_signal",
    "grad_norm",
    "grad_norm_bias",
    "sigma_w2",
    "sigma_b2",
]
PROBE_COLUMNS = [*PROBE_CONFIG_COLUMNS, "layer", "layer_index", *PROBE_STATISTICS]

# `tensorboard --logdir ... <flags>`: keep (and serve) every scalar, histogram and image of
# a run, far more than any run here logs; without it TensorBoard samples them at random
# (the step-0 probe may go) and serves 10 images per tag. A count, not 0: the plugins
# serve at most that many, and 0 serves none.
TENSORBOARD_FLAGS = "--samples_per_plugin scalars=100000,histograms=100000,images=100000"


def tensorboard_command(log_dir: object) -> str:
    """The command that shows every record under `log_dir`, as each run and sweep prints it."""
    return f"tensorboard --logdir {log_dir} {TENSORBOARD_FLAGS}"
