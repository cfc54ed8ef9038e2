"""Shared test set-up: one torch thread (tiny nets run fastest so, and 2-core CI stays
responsive), non-interactive matplotlib, and in-process composition of conf/train.yaml."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import matplotlib
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, open_dict

from gradflow.config import config_dir
from tests.helpers import TINY

matplotlib.use("Agg")
torch.set_num_threads(1)
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture
def compose_cfg(tmp_path: Path) -> Callable[..., DictConfig]:
    """Compose conf/train.yaml in-process with TINY + overrides, writing under tmp_path
    (the XOR and regression data have no MNIST keys: TINY's data keys are left out for them)."""

    def _compose(*overrides: str, tiny: bool = True) -> DictConfig:
        synthetic = {"data=xor", "data=regression"} & set(overrides)
        shrink = [o for o in TINY if not synthetic or not o.startswith("data.")]
        with initialize_config_dir(str(config_dir()), version_base="1.3"):
            cfg = compose("train", overrides=[*(shrink if tiny else []), *overrides])
        with open_dict(cfg):
            cfg.paths.log_dir = str(tmp_path / "logs")
            cfg.paths.output_dir = str(tmp_path / "run")
            cfg.paths.data_dir = str(tmp_path / "data")
        return cfg

    return _compose
