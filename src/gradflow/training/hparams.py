"""TensorBoard's HParams tab: what a researcher varies, and the results to filter runs by.

One row per run. The columns are hyperparameters a researcher sets (the model family by
name, depth and width or the hidden sizes, activation, init, optimizer, learning rate,
batch size, seed, data set and size, remedy and experiment, and every other key the
run's command line set), never paths, `_target_` strings or callback internals; and the
results: the verdict (a discrete value to filter by) and the first/last-layer gradient
ratio at step 0, beside the metrics `val/acc`, `val/acc_best` and `val/loss`, which
TensorBoard reads from those tags' last points (so no extra point is logged anywhere).

A run of its own writes the whole definition; the jobs of a sweep write only their row,
and the sweep's report (`gradflow.reporting.tensorboard`) writes the definition once, with
every value the sweep's jobs took as each column's choices. Lightning's `hparams.yaml`
gets the same row, and summary.json too (`hparams`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from lightning.pytorch.core.saving import save_hparams_to_yaml
from lightning.pytorch.loggers import Logger, TensorBoardLogger
from omegaconf import DictConfig, OmegaConf
from torch.utils.tensorboard.summary import hparams as hparams_summaries
from torch.utils.tensorboard.writer import FileWriter

from gradflow.config import override_key
from gradflow.names import HPARAMS_METRICS, HYDRA_DIR
from gradflow.nn.activations import get_activation_info
from gradflow.nn.init import resolve_matched_init
from gradflow.rules.nn import activation_params, init_label, spec_label, split_spec

# Results that are columns of the table rather than metric tags.
VERDICT, GRAD_RATIO_STEP0 = "verdict", "grad_ratio_step0"
# Keys of the command line that name no hyperparameter.
NOT_HPARAMS = (
    *("paths", "hydra", "resume", "ckpt_path", "tags", "task_name", "progress_bar"),
    *("callbacks", "checkpoint", "logger"),  # what is recorded, not what is trained
    *("data.data_dir", "data.download", "data.offline_fallback"),  # where, not what
    *("torch_threads", "trainer.enable_progress_bar", "hparams_search"),  # how it runs
)
# Keys of the command line a column above already shows (activation.* and init.* are in
# their columns' labels).
SHOWN = {
    "model.depth": "depth",
    "model.width": "width",
    "model.hidden_sizes": "hidden_sizes",
    "optimizer.lr": "lr",
    "data.batch_size": "batch_size",
    "data.train_size": "train_size",
}


def saved_choices(run_dir: Path) -> dict[str, str]:
    """The config groups' options a run was composed with, as Hydra saved them when it
    started (`.hydra/hydra.yaml`): a resumed run is composed from its saved config, which
    names no groups, and a population's member trains under its population's first job."""
    saved = run_dir / HYDRA_DIR / "hydra.yaml"
    if not saved.is_file():
        return {}
    choices = OmegaConf.select(OmegaConf.load(saved), "hydra.runtime.choices", default=None)
    return {} if choices is None else OmegaConf.to_container(choices)


def run_hparams(
    cfg: DictConfig, overrides: list[str], saved: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """The hyperparameter columns of one run, from its resolved config and overrides, with
    its groups' options as it started (`saved`: saved_choices), else as the current Hydra
    job has them."""
    current = dict(HydraConfig.get().runtime.choices) if HydraConfig.initialized() else {}
    choices = {**current, **(saved or {})}
    model, data = cfg.model, cfg.data
    activation = OmegaConf.to_container(cfg.activation)
    init = resolve_matched_init(OmegaConf.to_container(cfg.init), get_activation_info(activation))
    row: dict[str, Any] = {"model": choices.get("model") or _class_name(model)}
    if model.get("hidden_sizes") is not None:
        row["hidden_sizes"] = str(list(model.hidden_sizes))
    else:
        row.update(depth=model.get("depth"), width=model.get("width"))
    row.update(
        activation=spec_label(split_spec(activation)[0], activation_params(activation)),
        init=init_label(init),
        optimizer=choices.get("optimizer") or _class_name(cfg.optimizer),
        lr=cfg.optimizer.get("lr"),
        batch_size=data.get("batch_size"),
        data=choices.get("data") or _class_name(data),
        train_size=data.get("train_size"),
        seed=cfg.get("seed"),
        remedy=choices.get("remedy"),
        experiment=choices.get("experiment"),
    )
    for override in overrides:
        key = override_key(override)
        shown = key in row or key in SHOWN or key.startswith(("activation.", "init."))
        if not shown and not key.startswith(NOT_HPARAMS) and "/" not in key:
            # A group (trainer=gpu) by the option chosen, a key by its value.
            value = choices[key] if key in choices else OmegaConf.select(cfg, key, default=None)
            row[key] = value if isinstance(value, bool | int | float | str) else str(value)
    return {k: v for k, v in row.items() if v is not None}


def result_columns(summary: Mapping[str, Any]) -> dict[str, Any]:
    """The verdict (labels joined with '+') and the step-0 gradient ratio of a summary."""
    verdict = (summary.get("verdict") or {}).get("labels")
    first = (summary.get("grad_norms") or {}).get("first_step") or {}
    columns = {VERDICT: "+".join(verdict) if verdict else summary.get("status")}
    if first.get("first_last_ratio") is not None:
        columns[GRAD_RATIO_STEP0] = float(first["first_last_ratio"])
    return columns


def write_hparams(loggers: list[Logger], row: dict[str, Any], whole: bool) -> None:
    """The run's row in every TensorBoard logger, and the table's definition when `whole`
    (a run of its own; a sweep's report writes it for the sweep); and in hparams.yaml."""
    experiment, start, end = hparams_summaries(row, dict.fromkeys(HPARAMS_METRICS, 0.0))
    for logger in loggers:
        if not isinstance(logger, TensorBoardLogger):
            continue
        # A writer of its own (the fit closed the logger's), as SummaryWriter.add_hparams does.
        writer = FileWriter(logger.log_dir)
        for summary in (experiment, start, end) if whole else (start, end):
            writer.add_summary(summary)
        writer.close()
        save_hparams_to_yaml(Path(logger.log_dir) / logger.NAME_HPARAMS_FILE, row)


def _class_name(node: DictConfig) -> str:
    return str(node.get("_target_", "")).rsplit(".", 1)[-1]
