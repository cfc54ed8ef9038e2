"""Populations: a sweep's jobs that differ only in stackable keys, trained as one model.

`gradflow.training.stacking.population_key` says which jobs may be stacked (equal keys:
one population); `train_population(members)` trains them together and leaves, in each member's job
directory, what a run of its own leaves: summary.json (its own config), TensorBoard
events (scalars, histograms, figures, the verdict, HParams).

How it stays inside the Lightning design:

- One Trainer fits one LightningModule, `PopulationModule`, which holds the members' own
  `TaskModule`s. Its training step hands (M, B, ...) batches (member m's own batch order,
  `PopulationLoader`) to the stacked forward (`gradflow.nn.population`), and minimises
  the sum of the members' mean losses, so each member's Parameters get exactly its own
  gradient; one torch optimizer holds two param groups per member (its own learning rate,
  momentum, weight decay...), the way torch gives parameters their own hyperparameters.
- Each member has its own instances of the configured callbacks (GradientMonitor,
  ActivationMonitor, VerdictMonitor, ...) and its own loggers. One Lightning callback,
  `MemberCallbacks`, calls each member's callbacks at every hook with that member's
  `TaskModule` and a `MemberTrainer`: the Trainer as that member sees it (the shared
  epoch and step counters and data; its own loggers, callbacks and metrics). So every
  number a member logs is computed by the same code a run of its own uses.
- A member whose loss or gradient goes NaN/Inf (its GradientMonitor raises DivergedError)
  is marked diverged and frozen (its gradients are dropped before each optimizer step and
  its callbacks no longer called) while the others go on; the population stops when no
  member is left.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import Logger
from lightning.pytorch.plugins import CheckpointIO
from omegaconf import DictConfig

from gradflow.config import override_key
from gradflow.data import TensorDataModule
from gradflow.diagnostics.common import epoch_end_step
from gradflow.errors import ConfigError, DivergedError, GradflowError, gradflow_cause
from gradflow.names import (
    CHECKPOINT_DIR,
    COMPLETED,
    EPOCH,
    INTERRUPTED,
    LAST_CHECKPOINT,
    TERMINATED,
    TRAIN_ACC,
    TRAIN_LOSS,
    VAL_ACC,
    VAL_ACC_BEST,
    VAL_LOSS,
)
from gradflow.nn.population import Stacks, check_members, stacked_forward
from gradflow.training import console, preflight
from gradflow.training.module import ACC_BEST_KEY, DECAYED, TaskModule, configure_groups
from gradflow.training.resume import RESUME_KEY, ResumePoint
from gradflow.training.run import (
    STOP_MESSAGES,
    build,
    build_group,
    build_loggers,
    build_model,
    build_trainer,
    config_node,
    data_record,
    discard_run_dir,
    seed_and_threads,
    start_point,
)
from gradflow.training.stacking import Member
from gradflow.training.summary import RunSummary

log = logging.getLogger(__name__)

# Fraction of the device's free memory a population may plan to use (the estimate leaves
# out the allocator's slack and Lightning's own tensors).
MEMORY_FRACTION = 0.8


# ------------------------------------------------------------------------ member views


class MemberTrainer:
    """The population's Trainer as one member's callbacks see it: the shared counters,
    limits and data, and the member's own loggers, callbacks and latest metrics. After the
    member is frozen (diverged), its counters stay where they were when it stopped, as a
    run of its own would have stopped there."""

    def __init__(self, trainer: L.Trainer, loggers: list[Logger], callbacks: list[L.Callback]):
        self.trainer = trainer
        self.loggers = loggers
        self.callbacks = callbacks
        self.callback_metrics: dict[str, torch.Tensor] = {}
        self.stopped_at: tuple[int, int] | None = None  # (epoch, global step) when frozen

    @property
    def logger(self) -> Logger | None:
        return self.loggers[0] if self.loggers else None

    @property
    def global_step(self) -> int:
        return self.stopped_at[1] if self.stopped_at else self.trainer.global_step

    @property
    def current_epoch(self) -> int:
        return self.stopped_at[0] if self.stopped_at else self.trainer.current_epoch

    # Shared with the population's Trainer, read-only.
    max_epochs = property(lambda self: self.trainer.max_epochs)
    log_every_n_steps = property(lambda self: self.trainer.log_every_n_steps)
    num_training_batches = property(lambda self: self.trainer.num_training_batches)
    sanity_checking = property(lambda self: self.trainer.sanity_checking)
    is_global_zero = property(lambda self: self.trainer.is_global_zero)
    datamodule = property(lambda self: self.trainer.datamodule)
    val_dataloaders = property(lambda self: self.trainer.val_dataloaders)
    train_dataloader = property(lambda self: self.trainer.train_dataloader)
    gradient_clip_val = property(lambda self: self.trainer.gradient_clip_val)
    enable_progress_bar = property(lambda self: self.trainer.enable_progress_bar)
    interrupted = property(lambda self: self.trainer.interrupted)
    received_sigterm = property(lambda self: self.trainer.received_sigterm)


@dataclass
class MemberOptimizer:
    """A member's share of the population's optimizer: its own param groups."""

    param_groups: list[dict[str, Any]]


class MemberRun:
    """One member while the population trains: its module, callbacks, loggers and record."""

    def __init__(self, member: Member, index: int) -> None:
        self.member, self.index = member, index  # its place among the launcher's members
        self.position = index  # its place along the member dimension (set when built)
        self.cfg = member.cfg
        overrides = [o for o in member.overrides if override_key(o) != RESUME_KEY]
        self.summary = RunSummary(member.cfg, member.run_dir, overrides)
        self.start = ResumePoint()
        self.module: TaskModule | None = None
        self.callbacks: list[L.Callback] = []
        self.loggers: list[Logger] = []
        self.view: MemberTrainer | None = None
        self.alive = True

    @property
    def checkpoint_path(self) -> Path:
        """Where its checkpoint goes: `checkpoints/last.ckpt`, as a run of its own keeps it."""
        return self.member.run_dir / CHECKPOINT_DIR / LAST_CHECKPOINT

    def freeze(self, err: BaseException, trainer: L.Trainer) -> None:
        """Stop training this member: record why, and where (a run of its own stops there)."""
        self.summary.failed(err)
        if self.view is not None:
            self.view.stopped_at = (trainer.current_epoch, trainer.global_step)
        self.alive = False
        trainer.lightning_module.alive[self.position] = False


# ----------------------------------------------------------------------- the module


class PopulationModule(L.LightningModule):
    """M `TaskModule`s of one architecture trained as one model (module docstring).

    Per member, on the device: the epoch's training loss sum and hits (as TaskModule keeps
    them), the validation loss sum and hits, and the best validation accuracy so far. They
    reach the members' loggers and metrics once per epoch, in one transfer each.
    """

    def __init__(self, runs: list[MemberRun]) -> None:
        super().__init__()
        self.runs = runs
        self.members = torch.nn.ModuleList([run.module for run in runs])
        self.task = runs[0].module.task
        m = len(runs)
        for name in ("train_loss_sum", "val_loss_sum"):
            self.register_buffer(name, torch.zeros(m), persistent=False)
        for name in ("train_hits", "val_hits"):
            self.register_buffer(name, torch.zeros(m, dtype=torch.long), persistent=False)
        self.register_buffer("val_acc_best", torch.full((m,), -math.inf), persistent=False)
        # Which members still train (a frozen one's loss leaves the sum), kept on the device.
        self.register_buffer("alive", torch.ones(m, dtype=torch.bool), persistent=False)
        self.train_count = self.val_count = 0
        self.member_losses: torch.Tensor | None = None
        self.group_counts: list[int] = []  # optimizer param groups per member, in order
        self._restored_best: list[float | None] | None = None
        self.stacks: Stacks | None = None

    def on_fit_start(self) -> None:
        # Stacked once the members sit on the training device (Lightning has moved them).
        self.stacks = Stacks(self.models())

    def on_train_start(self) -> None:
        # As TaskModule: the best so far from a checkpoint, the optimizer settings as each
        # member's config says (a resumed run may change its learning rate).
        if self._restored_best is not None:
            best = [-math.inf if b is None else b for b in self._restored_best]
            self.val_acc_best = torch.tensor(best, device=self.device)
        groups = self.member_groups(self.trainer.optimizers[0].param_groups)
        for member, own in zip(self.members, groups, strict=True):
            configure_groups(own, member.hparams.optimizer)

    def member_groups(self, groups: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
        """Each member's share of the optimizer's param groups (or of a saved optimizer
        state's), in member order: `configure_optimizers` lays them out so."""
        shares, start = [], 0
        for count in self.group_counts:
            shares.append(groups[start : start + count])
            start += count
        return shares

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[POPULATION_BEST_KEY] = self.val_acc_best.tolist()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self._restored_best = checkpoint.get(POPULATION_BEST_KEY)

    def models(self) -> list[torch.nn.Module]:
        return [member.model for member in self.members]

    def _losses(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Each member's mean loss (M,) and its outputs (M, B, outputs)."""
        outputs = stacked_forward(self.models(), x, self.stacks)
        per_sample = self.task.loss(outputs.flatten(0, 1), y.flatten(), reduction="none")
        return per_sample.view(y.shape[0], -1).mean(1), outputs

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int):
        x, y = batch
        losses, outputs = self._losses(x, y)
        self.member_losses = losses.detach()
        samples = y.shape[1]
        self.train_loss_sum.add_(self.member_losses, alpha=samples)
        if self.task.classifies:
            self.train_hits.add_((self.task.predict(outputs.flatten(0, 1)).view_as(y) == y).sum(1))
        self.train_count += samples
        # A frozen member's loss leaves the sum: its (possibly NaN) graph reaches no one.
        return torch.where(self.alive, losses, 0.0).sum()

    def on_train_epoch_start(self) -> None:
        self.train_loss_sum.zero_()
        self.train_hits.zero_()
        self.train_count = 0

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        for run in self.runs:
            if not run.alive:  # frozen: the optimizer skips parameters without a gradient
                for p in run.module.parameters():
                    p.grad = None

    def on_train_epoch_end(self) -> None:
        if not self.train_count:
            return
        values = {TRAIN_LOSS: self.train_loss_sum / self.train_count}
        if self.task.classifies:
            values[TRAIN_ACC] = self.train_hits / self.train_count
        self._publish(values, epoch=True)

    def on_validation_epoch_start(self) -> None:
        self.val_loss_sum.zero_()
        self.val_hits.zero_()
        self.val_count = 0

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch  # the members share the validation batches
        m = len(self.runs)
        members_y = y.expand(m, *y.shape)
        losses, outputs = self._losses(x.expand(m, *x.shape), members_y)
        self.val_loss_sum.add_(losses, alpha=len(y))
        if self.task.classifies:
            preds = self.task.predict(outputs.flatten(0, 1)).view_as(members_y)
            self.val_hits.add_((preds == members_y).sum(1))
        self.val_count += len(y)

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking or not self.val_count:
            return
        values = {VAL_LOSS: self.val_loss_sum / self.val_count}
        if self.task.classifies:
            acc = self.val_hits / self.val_count
            self.val_acc_best = torch.maximum(self.val_acc_best, acc)
            values.update({VAL_ACC: acc, VAL_ACC_BEST: self.val_acc_best})
        self._publish(values)

    def _publish(self, values: dict[str, torch.Tensor], epoch: bool = False) -> None:
        """Each living member's share of `values` (tag -> (M,) tensor): into its metrics and
        its loggers at the epoch's end step, as `self.log` puts a run's own (the train
        metrics with `epoch`, as Lightning adds it)."""
        tags = list(values)
        rows = torch.stack([values[tag].float() for tag in tags], dim=1).tolist()  # one transfer
        step = epoch_end_step(self.trainer)
        for run, row in zip(self.runs, rows, strict=True):
            if not run.alive:
                continue
            metrics = dict(zip(tags, row, strict=True))
            run.view.callback_metrics.update({k: torch.tensor(v) for k, v in metrics.items()})
            if epoch:
                metrics[EPOCH] = float(self.trainer.current_epoch)
            for logger in run.loggers:
                logger.log_metrics(metrics, step=step)

    def configure_gradient_clipping(
        self,
        optimizer: torch.optim.Optimizer,
        gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str | None = None,
    ) -> None:
        """Clip each member's gradient by itself, as its own run's Trainer would."""
        if not gradient_clip_val:
            return
        for member in self.members:
            params = [p for p in member.parameters() if p.grad is not None]
            if gradient_clip_algorithm == "value":
                torch.nn.utils.clip_grad_value_(params, gradient_clip_val)
            else:
                torch.nn.utils.clip_grad_norm_(params, gradient_clip_val)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        """One optimizer of member 0's class; each member's TaskModule param groups (weight
        decay on weight matrices only) carrying that member's own settings."""
        groups, self.group_counts = [], []
        for member in self.members:
            settings = dict(getattr(member.hparams.optimizer, "keywords", {}))
            own_groups = member.configure_optimizers().param_groups
            for group in own_groups:
                own = {k: v for k, v in group.items() if k in ("params", DECAYED)}
                if not group.get(DECAYED, True):
                    own["weight_decay"] = 0.0
                groups.append({**settings, **own})
            self.group_counts.append(len(own_groups))
        factory = self.members[0].hparams.optimizer
        return factory.func(groups, **factory.keywords)


# -------------------------------------------------------------------- the callbacks


def _member_hook(name: str) -> Callable[..., None]:
    """A Lightning hook that calls `name` on every living member's callbacks."""

    def hook(self: MemberCallbacks, trainer: L.Trainer, pl_module, *args: Any) -> None:
        self.call(name, trainer, lambda run: args)

    hook.__name__ = name
    return hook


class MemberCallbacks(L.Callback):
    """Runs each member's own callbacks at every Lightning hook, with the member's
    `TaskModule` and `MemberTrainer` (module docstring). A member's DivergedError freezes
    that member; the population stops when none is left."""

    def __init__(self, runs: list[MemberRun]) -> None:
        self.runs = runs
        self._optimizers: list[MemberOptimizer] | None = None

    def call(
        self, name: str, trainer: L.Trainer, args: Callable[[MemberRun], tuple[Any, ...]]
    ) -> None:
        for run in self.runs:
            if not run.alive:
                continue
            try:
                for callback in run.callbacks:
                    getattr(callback, name)(run.view, run.module, *args(run))
            except DivergedError as err:
                run.freeze(err, trainer)
        if not any(run.alive for run in self.runs):
            trainer.should_stop = True

    def setup(self, trainer: L.Trainer, pl_module, stage: str) -> None:
        self.call("setup", trainer, lambda run: (stage,))

    def state_dict(self) -> dict[str, Any]:
        """Each member's callbacks' states, keyed (and left out when empty) as a run's own
        checkpoint keys them."""
        states = {}
        for run in self.runs:
            own = {cb.state_key: cb.state_dict() for cb in run.callbacks}
            states[run.position] = {key: state for key, state in own.items() if state}
        return states

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        for run in self.runs:
            states = state_dict.get(run.position, {})
            for callback in run.callbacks:
                if callback.state_key in states:
                    callback.load_state_dict(states[callback.state_key])

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        x, y = batch
        self.call(
            "on_train_batch_start", trainer, lambda r: ((x[r.position], y[r.position]), batch_idx)
        )

    def on_before_backward(self, trainer, pl_module, loss: torch.Tensor) -> None:
        losses = pl_module.member_losses
        self.call("on_before_backward", trainer, lambda run: (losses[run.position],))

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        if self._optimizers is None:  # each member's groups, found once
            shares = pl_module.member_groups(optimizer.param_groups)
            self._optimizers = [MemberOptimizer(groups) for groups in shares]
        views = self._optimizers
        self.call("on_before_optimizer_step", trainer, lambda run: (views[run.position],))

    on_fit_start = _member_hook("on_fit_start")
    on_train_start = _member_hook("on_train_start")
    on_train_epoch_start = _member_hook("on_train_epoch_start")
    on_validation_start = _member_hook("on_validation_start")
    on_validation_epoch_end = _member_hook("on_validation_epoch_end")
    on_train_epoch_end = _member_hook("on_train_epoch_end")
    on_train_end = _member_hook("on_train_end")
    on_fit_end = _member_hook("on_fit_end")


# ---------------------------------------------------------------------- checkpoints

# Where a population's checkpoint keeps each member's best validation accuracy so far.
POPULATION_BEST_KEY = "population_val_acc_best"


class MemberCheckpointIO(CheckpointIO):
    """Lightning's checkpoint of the population, kept as each member's own checkpoint.

    Lightning hands a CheckpointIO plugin the whole checkpoint to store; this one writes, for
    every living member, the checkpoint its own run would have written
    (`<run dir>/checkpoints/last.ckpt`: its TaskModule's weights, its optimizer state, its
    callbacks' states, the loops' progress), so `resume=<member dir>` continues it alone
    and `compare.py` finds it as any run's. Reading, it puts the members' files back
    together. A frozen (diverged) member keeps the checkpoint of its last good epoch, as
    its own run would.
    """

    def __init__(self, module: PopulationModule) -> None:
        self.module = module
        self.runs = module.runs

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any = None
    ) -> None:
        for run in self.runs:
            if run.alive:
                target = run.checkpoint_path
                target.parent.mkdir(parents=True, exist_ok=True)
                tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
                torch.save(member_checkpoint(checkpoint, self.module, run), tmp)
                os.replace(tmp, target)  # whole or not at all, whenever a kill comes

    def load_checkpoint(
        self, path: str | Path, map_location: Any = None, weights_only: bool | None = None
    ) -> dict[str, Any]:
        parts = [
            # Files a gradflow population wrote: they hold the optimizer partial too.
            torch.load(run.checkpoint_path, map_location=map_location, weights_only=False)
            for run in self.runs
        ]
        return population_checkpoint(parts)

    def remove_checkpoint(self, path: str | Path) -> None:
        """Nothing: each member's last.ckpt is replaced in place by the next save."""


def member_checkpoint(
    checkpoint: dict[str, Any], module: PopulationModule, run: MemberRun
) -> dict[str, Any]:
    """The checkpoint `run` would have written on its own, cut out of the population's."""
    prefix = f"members.{run.position}."
    own = {k: v for k, v in checkpoint.items() if k not in ("state_dict", "callbacks")}
    own["state_dict"] = {  # cloned: a view would save the whole population's storage
        k[len(prefix) :]: v.clone()
        for k, v in checkpoint["state_dict"].items()
        if k.startswith(prefix)
    }
    if "optimizer_states" in checkpoint:
        state = checkpoint["optimizer_states"][0]
        groups = module.member_groups(state["param_groups"])[run.position]
        index = {old: new for new, old in enumerate(p for g in groups for p in g["params"])}
        own["optimizer_states"] = [
            {
                "state": {index[k]: v for k, v in state["state"].items() if k in index},
                "param_groups": [{**g, "params": [index[p] for p in g["params"]]} for g in groups],
            }
        ]
    callbacks = checkpoint.get("callbacks", {}).get(MemberCallbacks.__qualname__, {})
    own["callbacks"] = callbacks.get(run.position, {})
    best = checkpoint.get(POPULATION_BEST_KEY)
    own.pop(POPULATION_BEST_KEY, None)
    if best is not None:
        own[ACC_BEST_KEY] = torch.tensor(best[run.position])
    own["hyper_parameters"] = dict(run.module.hparams)
    return own


def population_checkpoint(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """The population's checkpoint put back together from its members' (`member_checkpoint`)."""
    first = parts[0]
    whole = {k: v for k, v in first.items() if k not in ("state_dict", "callbacks", ACC_BEST_KEY)}
    whole["state_dict"] = {
        f"members.{i}.{k}": v for i, part in enumerate(parts) for k, v in part["state_dict"].items()
    }
    if "optimizer_states" in first:
        state: dict[str, Any] = {"state": {}, "param_groups": []}
        offset = 0
        for part in parts:
            own = part["optimizer_states"][0]
            state["state"].update({k + offset: v for k, v in own["state"].items()})
            for group in own["param_groups"]:
                state["param_groups"].append(
                    {**group, "params": [p + offset for p in group["params"]]}
                )
            offset += sum(len(g["params"]) for g in own["param_groups"])
        whole["optimizer_states"] = [state]
    whole["callbacks"] = {
        MemberCallbacks.__qualname__: {i: part.get("callbacks", {}) for i, part in enumerate(parts)}
    }
    best = [part.get(ACC_BEST_KEY) for part in parts]
    whole[POPULATION_BEST_KEY] = [None if b is None else float(b) for b in best]
    return whole


# ------------------------------------------------------------------------ training


def estimate_bytes(model: torch.nn.Module, members: int, batch: int, optimizer_states: int) -> int:
    """Bytes a population of `members` copies of `model` needs: per member its parameters,
    their gradients, the optimizer's state per parameter and the per-step stacked copy of
    the weights (and its gradient), plus each layer's activations for forward and backward
    (about three tensors of batch x width per Linear layer)."""
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    widths = sum(m.out_features for m in model.modules() if isinstance(m, torch.nn.Linear))
    activations = 3 * batch * widths * 4
    return members * (params * (4 + optimizer_states) + activations)


def free_bytes(device: torch.device) -> int:
    """Memory free on `device` now: the GPU's, or the machine's available memory."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def cores() -> int:
    """The cores this process may use (its CPU affinity: a container's or SLURM's share)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def optimizer_states(cfg: DictConfig) -> int:
    """Tensors the optimizer keeps per parameter (Adam 2, SGD with momentum 1, else 0)."""
    target = str(cfg.optimizer.get("_target_", ""))
    if target.endswith(("Adam", "AdamW", "NAdam", "RAdam", "Adamax")):
        return 2
    return 1 if float(cfg.optimizer.get("momentum", 0) or 0) else 0


def split_sizes(total: int, fits: int) -> list[int]:
    """`total` members in the fewest populations of at most `fits`, as even as can be."""
    parts = math.ceil(total / max(fits, 1))
    return [total // parts + (i < total % parts) for i in range(parts)]


def train_population(
    members: list[Member], torch_threads: int | None = None
) -> list[dict[str, Any] | GradflowError]:
    """Train `members` (one population_key) as one model; for each member its summary (as
    `gradflow.training.run.run` returns it), or the ConfigError that rejected its config
    before training (its run directory is removed, as a rejected run's is).

    `torch_threads`: torch's CPU threads while the population trains (None: the members'
    own `torch_threads`; -1: every core this process may use).

    Resumed members (`resume`) that need no more training return their summary; the others
    continue from their checkpoints, members saved at the same step as one population.
    """
    console.quiet()
    results: dict[int, dict[str, Any] | GradflowError] = {}
    by_start: dict[int, list[MemberRun]] = {}
    for i, member in enumerate(members):
        member.run_dir.mkdir(parents=True, exist_ok=True)
        run = MemberRun(member, i)
        try:
            preflight.check(member.cfg)
            composed = member.composed if member.composed is not None else member.cfg
            run.start, done = start_point(
                composed, member.run_dir, run.summary, list(member.overrides)
            )
        except ConfigError as err:
            discard_run_dir(member.run_dir)
            results[i] = err
            continue
        if done:
            results[i] = done
        else:
            by_start.setdefault(run.start.steps, []).append(run)
    for runs in by_start.values():
        for chunk in _chunks(runs):
            results.update(_train(chunk, torch_threads))
    return [results[i] for i in range(len(members))]


def _chunks(runs: list[MemberRun]) -> list[list[MemberRun]]:
    """The population, split when the memory estimate says it would not fit its device."""
    cfg = runs[0].cfg
    with torch.device("meta"):  # shapes only: nothing is allocated
        probe_model = _meta_model(cfg)
    if probe_model is None:
        return [runs]
    device = torch.device(
        "cuda" if str(cfg.trainer.get("accelerator")) in ("gpu", "cuda") else "cpu"
    )
    if device.type == "cuda" and not torch.cuda.is_available():
        return [runs]
    batch = int(cfg.data.batch_size)
    need = estimate_bytes(probe_model, 1, batch, optimizer_states(cfg))
    fits = int(free_bytes(device) * MEMORY_FRACTION // max(need, 1))
    if fits >= len(runs):
        return [runs]
    sizes = split_sizes(len(runs), fits)
    log.warning(
        f"A population of {len(runs)} needs about {need * len(runs) / 2**30:.2f} GiB and "
        f"{device.type} has {free_bytes(device) / 2**30:.2f} GiB free: trained as "
        f"{len(sizes)} populations of {', '.join(map(str, sizes))}, one after another."
    )
    chunks, start = [], 0
    for size in sizes:
        chunks.append(runs[start : start + size])
        start += size
    return chunks


def _meta_model(cfg: DictConfig) -> torch.nn.Module | None:
    """The member architecture on the meta device (for its sizes), or None if it cannot be
    built without its data (the data decides its input and output sizes)."""
    try:
        with config_node("data"):
            datamodule = instantiate(cfg.data)
    except Exception:  # noqa: BLE001 - the real build reports it, with its key
        return None
    return build_model(cfg, datamodule)


def _train(
    runs: list[MemberRun], torch_threads: int | None = None
) -> dict[int, dict[str, Any] | GradflowError]:
    """Build every member as its own run builds it, fit them as one (from their checkpoints
    when they continue), write each record; {member index: summary or rejection}."""
    cfg = runs[0].cfg
    trainer, datamodule = None, None
    results: dict[int, dict[str, Any] | GradflowError] = {}
    try:
        seed_and_threads(cfg)
        with config_node("data"):
            datamodule: TensorDataModule = instantiate(cfg.data)
        for run in list(runs):
            try:
                _build_member(run, datamodule)
            except ConfigError as err:
                discard_run_dir(run.member.run_dir)
                results[run.index] = err
                runs.remove(run)
        if not runs:
            return results
        check_members([run.module.model for run in runs])
        with config_node("data"):
            datamodule.setup("fit")
            datamodule.stack([int(run.cfg.data.shuffle_seed) for run in runs])
        for position, run in enumerate(runs):
            run.position = position
        if torch_threads is not None:  # after the members' own seeding and threads
            torch.set_num_threads(cores() if torch_threads == -1 else torch_threads)
        module = PopulationModule(runs)
        checkpoints = build_group(cfg, "checkpoint")
        saves = any(isinstance(c, ModelCheckpoint) for c in checkpoints)
        plugins = {"plugins": [MemberCheckpointIO(module)]} if saves else {}
        trainer = build_trainer(cfg, [MemberCallbacks(runs), *checkpoints], [], **plugins)
        for run in runs:
            run.view = MemberTrainer(trainer, run.loggers, [*run.callbacks])
            run.summary.data["population"] = {
                "members": len(runs),
                "position": run.position,
                "run_dirs": [r.member.run_dir.name for r in runs],
            }
            run.summary.epochs.pending_population = dict(run.summary.data["population"])
            run.summary.set_up()
        resumed = runs[0].start.checkpoint is not None
        # weights_only=False: the members' checkpoints hold their optimizer partials.
        ckpt_path = runs[0].checkpoint_path if resumed else None
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=False)
        for run in runs:
            if run.alive:
                run.summary.ended(COMPLETED)
    except (KeyboardInterrupt, SystemExit) as err:
        if isinstance(err, SystemExit) and not (trainer is not None and trainer.interrupted):
            raise
        status = TERMINATED if trainer is not None and trainer.received_sigterm else INTERRUPTED
        for run in runs:
            if run.alive:
                run.summary.ended(status, STOP_MESSAGES[status])
    except Exception as err:  # noqa: BLE001 - recorded per member, as run() records a run's
        cause = gradflow_cause(err)
        if isinstance(cause, ConfigError) and trainer is None:
            for run in runs:
                discard_run_dir(run.member.run_dir)
                results[run.index] = cause
            return results
        unknown = [run.summary.failed(err) for run in runs if run.alive]
        if any(unknown):  # an unknown fault: its traceback once, for the population
            log.exception("population failed")
    data = data_record(datamodule)
    for run in runs:
        results[run.index] = run.summary.write(run.view, run.callbacks, data, run.loggers)
        for logger in run.loggers:
            logger.finalize("success")
    return results


def _build_member(run: MemberRun, datamodule: TensorDataModule) -> None:
    """The member's network, module, callbacks and loggers, seeded as its own run seeds."""
    cfg = run.cfg
    seed_and_threads(cfg)
    model = build_model(cfg, datamodule)
    run.module = TaskModule(
        model,
        build("optimizer", cfg.optimizer),
        datamodule.num_classes,
        datamodule.task.name,
        datamodule.chance_loss(),
    )
    run.callbacks = [*build_group(cfg, "callbacks"), run.summary.epochs]
    run.loggers = build_loggers(cfg, run.start.purge_step)
