"""A step-0 run: build the network as training would, push the probe batch through, no step.

`python scripts/probe.py model.depth=50 init=kaiming_normal` (or `-m` over depths, inits,
activations) composes `conf/probe.yaml` from the same config groups as training, builds
the data module and the network with the training run's builders, and measures the
first `probe_size` validation samples with the training callbacks' statistics
(`gradflow.diagnostics`): per tracked layer the activation mean, std and saturation, the
backpropagated signal, the weight- and bias-gradient norms of the mean loss, and the
layer's measured sigma_w2 = fan_in * mean(W²) and sigma_b2 = mean(b²). Each job writes its
rows to `probe.csv`; `gradflow.reporting.probe` turns one job or a sweep into the report.
"""

from __future__ import annotations

import pandas as pd
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from gradflow.diagnostics import capture_probe, probe_statistics
from gradflow.diagnostics.stats import weight_variances
from gradflow.names import PROBE_COLUMNS, PROBE_JOB_FILE, PROBE_STATISTICS
from gradflow.rules.diagnostics import check_probe_size
from gradflow.rules.nn import activation_params, init_label, spec_label, split_spec
from gradflow.training.run import build_network, output_dir, seed_and_threads


def probe(cfg: DictConfig) -> tuple[pd.DataFrame, str]:
    """One row per tracked layer of the network `cfg` builds, at step 0, written to the job's
    `probe.csv`; and a line saying where the probe batch came from."""
    seed_and_threads(cfg)
    datamodule, model = build_network(cfg)
    x, y = datamodule.probe_batch(check_probe_size(cfg.probe_size))
    capture = capture_probe(model, x, y, weight_grads=True, task=datamodule.task)
    stats = probe_statistics(model, capture)
    for name, layer in model.tracked_layers().items():
        stats[f"sigma_w2/{name}"], stats[f"sigma_b2/{name}"] = weight_variances(layer)
    values = dict(zip(stats, torch.stack(list(stats.values())).tolist(), strict=True))
    layers = list(model.tracked_layers())
    activation = model.activation_spec
    config = {
        "depth": len(layers) - 1,  # hidden layers; the output layer is the last tracked one
        "init": init_label(model.init_spec),  # `matched` as resolved
        "activation": spec_label(split_spec(activation)[0], activation_params(activation)),
        "model": _family(cfg),
        "scaling": str(cfg.data.get("scaling", "none")),  # the inputs' scaling
    }
    rows = [
        {**config, "layer": name, "layer_index": index,
         **{stat: values.get(f"{stat}/{name}", float("nan")) for stat in PROBE_STATISTICS}}
        for index, name in enumerate(layers, start=1)
    ]  # fmt: skip
    records = pd.DataFrame(rows, columns=PROBE_COLUMNS)
    run_dir = output_dir(cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    records.to_csv(run_dir / PROBE_JOB_FILE, index=False)
    info = datamodule.source_info or {}
    return records, f"{info.get('description')}: the first {len(y)} validation images"


def _family(cfg: DictConfig) -> str:
    """The model group's option (`mlp`), else the class's name when composed by hand."""
    if HydraConfig.initialized():
        choice = HydraConfig.get().runtime.choices.get("model")
        if choice:
            return str(choice)
    return str(cfg.model._target_).rsplit(".", 1)[-1]
