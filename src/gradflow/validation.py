"""Check a composed config before anything is built: one sentence per mistake.

Every check names the key, the value and what is allowed, and raises `ConfigError`.
The allowed names come from the registries (activations, init schemes, datasets, the
model classes) and the config groups in `conf/`, never from a list kept here.
Hydra itself already rejects an unknown group option (`activation=sigmoidd`) or key
(`model.depthh=3`) with the list of choices; this catches what it cannot: values.
"""

from __future__ import annotations

import importlib
import inspect
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NoReturn, get_args

import lightning
import torch
from omegaconf import DictConfig, OmegaConf

from gradflow.config import config_dir
from gradflow.data import DATASETS, SCALINGS, MNISTDataModule
from gradflow.errors import ConfigError
from gradflow.nn import ACTIVATIONS, INIT_SCHEMES
from gradflow.nn.init import MATCHED
from gradflow.nn.models import BNPosition, ResMLP, TrackedModel

CUDA_ACCELERATORS = ("gpu", "cuda")


def validate_config(cfg: DictConfig) -> None:
    """Raise ConfigError, in one sentence, on the first invalid value of `cfg`."""
    _check_run(cfg)
    _check_model(cfg.model)
    _check_activation(cfg.activation)
    _check_init(cfg.init)
    _check_optimizer(cfg.optimizer)
    _check_data(cfg.data, cfg.model)
    _check_trainer(cfg.trainer)


# ------------------------------------------------------------------------------ helpers


def _fail(key: str, value: Any, allowed: str) -> NoReturn:
    shown = OmegaConf.to_container(value) if OmegaConf.is_config(value) else value
    raise ConfigError(f"{key}={shown!r} is not allowed: {allowed}.")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return _is_int(value) or (isinstance(value, float) and math.isfinite(value))


def _positive_int(key: str, value: Any, what: str = "", maximum: int | None = None) -> None:
    if _is_int(value) and value >= 1 and (maximum is None or value <= maximum):
        return
    numbers = ">= 1" if maximum is None else f"from 1 to {maximum:,}"
    _fail(key, value, f"use a whole number {numbers}{what}")


def _positive_number(key: str, value: Any, what: str = "") -> None:
    if not (_is_number(value) and value > 0):
        _fail(key, value, f"use a number > 0{what}")


def group_options(group: str) -> str:
    """The options of a config group (the YAML files in conf/<group>/) as 'g=a, g=b or g=c'."""
    options = [f"{group}={p.stem}" for p in sorted((config_dir() / group).glob("*.yaml"))]
    return ", ".join(options[:-1]) + " or " + options[-1] if len(options) > 1 else "".join(options)


def _choose(options: list[str] | Mapping[str, Any]) -> str:
    return "choose one of " + ", ".join(options)


def _import_path(path: str) -> Any:
    """The object at a dotted path ('torch.optim.SGD'), or None when there is none."""
    parts = path.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attr in parts[cut:]:
            obj = getattr(obj, attr, None)
        return obj
    return None


def _locate(key: str, target: Any, base: type, hint: str) -> type:
    """The class a `_target_` names, which must be a subclass of `base`."""
    cls = _import_path(str(target)) if target else None
    if not (isinstance(cls, type) and issubclass(cls, base)):
        _fail(key, target, hint)
    return cls


def _check_params(group: str, node: DictConfig, cls: type | Callable[..., Any]) -> None:
    """Every key of `node` must be a parameter of `cls` (Hydra passes them all)."""
    params = inspect.signature(cls).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    for key in node:
        if not str(key).startswith("_") and key not in params:
            allowed = ", ".join(p for p in params if p not in ("self", "params"))
            raise ConfigError(
                f"{group}.{key} is not a parameter of {cls.__name__}; its parameters are {allowed}."
            )


# ------------------------------------------------------------------------------- groups


def _check_run(cfg: DictConfig) -> None:
    seed = cfg.get("seed")
    if not (_is_int(seed) and seed >= 0):
        _fail("seed", seed, "use a whole number >= 0")
    threads = cfg.get("torch_threads")
    if threads is not None:
        _positive_int("torch_threads", threads, " (or null for torch's default)")
    for key in ("resume", "ckpt_path"):
        path = cfg.get(key)
        if path is None:
            continue
        is_there = Path(path).is_dir() if key == "resume" else Path(path).is_file()
        if not is_there:
            what = "a run (or sweep) directory" if key == "resume" else "a checkpoint file"
            _fail(key, path, f"it is not {what} that exists")


def _check_model(model: DictConfig) -> None:
    classes = _model_classes()
    hint = (
        f"use {group_options('model')}, or the path of a TrackedModel "
        f"class ({', '.join(f'{c.__module__}.{c.__qualname__}' for c in classes)})"
    )
    cls = _locate("model._target_", model.get("_target_"), TrackedModel, hint)
    # activation and init come from their own groups, not from the model node.
    _check_params("model", model, cls)
    for key in ("in_features", "num_classes"):
        if key in model:
            _positive_int(f"model.{key}", model[key])
    if model.get("hidden_sizes") is not None:
        sizes = model.hidden_sizes
        if not (
            OmegaConf.is_list(sizes)
            and len(sizes) > 0
            and all(_is_int(s) and s >= 1 for s in sizes)
        ):
            _fail("model.hidden_sizes", sizes, "use a non-empty list of whole numbers >= 1")
        n_hidden = len(sizes)
    else:
        _positive_int("model.depth", model.get("depth"), " (the number of hidden layers)")
        _positive_int("model.width", model.get("width"), " (units per hidden layer)")
        n_hidden = model.depth
    if issubclass(cls, ResMLP) and n_hidden % 2 == 0:
        key = "model.depth" if model.get("hidden_sizes") is None else "model.hidden_sizes"
        _fail(
            key,
            model.get("hidden_sizes") or model.depth,
            "res_mlp needs an odd number of hidden layers (the projection + 2 per block), "
            "e.g. depth 3 or 5",
        )
    if "bn_position" in model:
        positions = get_args(BNPosition)
        if model.bn_position not in positions:
            _fail("model.bn_position", model.bn_position, _choose(list(positions)))
    for key in ("bn_momentum", "bn_eps"):
        if key in model:
            _positive_number(f"model.{key}", model[key])


def _model_classes() -> list[type]:
    """TrackedModel and every subclass, depth first: the models gradflow knows."""
    found, stack = [], list(TrackedModel.__subclasses__())
    while stack:
        cls = stack.pop(0)
        found.append(cls)
        stack[:0] = cls.__subclasses__()
    return found


def _check_activation(activation: DictConfig) -> None:
    name = activation.get("name")
    if name not in ACTIVATIONS:
        _fail("activation.name", name, _choose(ACTIVATIONS))
    _check_registry_params("activation", name, activation, ACTIVATIONS[name].defaults)


def _check_registry_params(group: str, name: str, node: DictConfig, known: Mapping) -> None:
    """Every key but `name` must be a parameter the registry lists for `name`."""
    for key in node:
        if key != "name" and key not in known:
            raise ConfigError(
                f"{group}.{key} is not a parameter of the {name!r} {group}; its parameters "
                f"are: {', '.join(known) or 'none'}."
            )


def _check_init(init: DictConfig) -> None:
    name = init.get("name")
    if name not in INIT_SCHEMES and name != MATCHED:
        _fail("init.name", name, _choose([*INIT_SCHEMES, MATCHED]))
    _check_registry_params("init", name, init, INIT_SCHEMES[name][1] if name != MATCHED else {})
    if "std" in init:
        _positive_number("init.std", init.std, " (the weights' standard deviation)")


def _check_optimizer(optimizer: DictConfig) -> None:
    hint = (
        f"use {group_options('optimizer')}, or the path of a "
        "torch.optim.Optimizer class such as torch.optim.AdamW"
    )
    cls = _locate("optimizer._target_", optimizer.get("_target_"), torch.optim.Optimizer, hint)
    _check_params("optimizer", optimizer, cls)
    if "lr" in optimizer:
        _positive_number("optimizer.lr", optimizer.lr, " (the learning rate)")


def _check_data(data: DictConfig, model: DictConfig) -> None:
    hint = f"use {group_options('data')}, or the path of a LightningDataModule class"
    cls = _locate("data._target_", data.get("_target_"), lightning.LightningDataModule, hint)
    _check_params("data", data, cls)
    limit = None
    if issubclass(cls, MNISTDataModule):
        dataset = data.get("dataset", "mnist")
        if dataset not in DATASETS:
            _fail("data.dataset", dataset, _choose(DATASETS))
        if data.get("scaling", "unit") not in SCALINGS:
            _fail("data.scaling", data.scaling, _choose(list(SCALINGS)))
        limit = DATASETS[dataset]
    for key, split in (("train_size", "train"), ("val_size", "test")):
        if data.get(key) is not None:
            most = getattr(limit, f"{split}_count", None)
            what = f" (the {limit.label} {split} split), or null for all" if most else ""
            _positive_int(f"data.{key}", data[key], what, most)
    for key in ("batch_size", "val_batch_size"):
        if key in data:
            _positive_int(f"data.{key}", data[key])
    _check_shapes(cls, model)


def _check_shapes(data_cls: type, model: DictConfig) -> None:
    """The model's input and output sizes must fit the data module's samples and classes."""
    shape, classes = getattr(data_cls, "input_shape", None), getattr(data_cls, "num_classes", None)
    features = math.prod(shape) if shape else None
    for key, needed in (("in_features", features), ("num_classes", classes)):
        if needed is not None and key in model and model[key] != needed:
            raise ConfigError(
                f"model.{key}={model[key]} does not fit the data ({data_cls.__name__} has "
                f"{needed} {'classes' if key == 'num_classes' else 'input features'}); "
                f"set model.{key}={needed}."
            )


def _check_trainer(trainer: DictConfig) -> None:
    accelerator = str(trainer.get("accelerator", "auto")).lower()
    if accelerator in CUDA_ACCELERATORS and not torch.cuda.is_available():
        _fail(
            "trainer.accelerator",
            trainer.accelerator,
            "this machine has no CUDA GPU that torch can use, so use trainer=cpu",
        )
    if accelerator == "mps" and not torch.backends.mps.is_available():
        _fail("trainer.accelerator", trainer.accelerator, "MPS is not available, use trainer=cpu")
    epochs = trainer.get("max_epochs")
    if epochs is not None and epochs != -1:
        _positive_int("trainer.max_epochs", epochs, " (or -1 for no limit)")
    accumulate = trainer.get("accumulate_grad_batches", 1)
    if accumulate != 1:
        _fail(
            "trainer.accumulate_grad_batches",
            accumulate,
            "ClassifierModule steps the optimizer once per minibatch (manual optimization, "
            "gradflow/blocks.py); for larger steps raise data.batch_size instead",
        )
    clip = trainer.get("gradient_clip_val")
    if clip is not None:
        _positive_number("trainer.gradient_clip_val", clip, " (or null for no clipping)")
    algorithm = trainer.get("gradient_clip_algorithm")
    if algorithm is not None and str(algorithm).lower() not in ("norm", "value"):
        _fail("trainer.gradient_clip_algorithm", algorithm, "use norm or value")
