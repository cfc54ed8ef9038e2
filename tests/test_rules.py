"""The value rules run before torch loads: the same sentence as at construction, in a second.

`gradflow.rules.check` runs every constructor's rule on a composed config without importing
torch; the constructors call the same rules, so a bad value gets one sentence either way.
"""

from __future__ import annotations

import inspect
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hydra.utils import get_class

from gradflow.errors import ConfigError
from gradflow.rules import RULES, check
from gradflow.training.run import run
from tests.helpers import REPO_ROOT, TINY
from tests.test_config_errors import BAD

# BAD cases no torch-free rule can see: a `_target_`'s kind and a third-party class's
# parameter names need the class imported (`training.preflight`, at the run's start).
LATE = {
    "model._target_=gradflow.nn.models.MPL",
    "optimizer._target_=torch.optim.SDG",
    "+optimizer.momentm=0.9",
}


def _matches(message: str, sentence: str) -> bool:
    if sentence.endswith("..."):
        return message.startswith(sentence.removesuffix("..."))
    return message == sentence


@pytest.mark.parametrize(("overrides", "sentence"), BAD, ids=[" ".join(o) for o, _ in BAD])
def test_each_value_rule_runs_before_torch_with_the_runs_sentence(compose_cfg, overrides, sentence):
    # test_config_errors asserts that run() raises `sentence` for the same overrides.
    cfg = compose_cfg(*overrides)
    if " ".join(overrides) in LATE:
        check(cfg)  # left to preflight, which imports the class
        return
    with pytest.raises(ConfigError) as err:
        check(cfg)
    assert _matches(str(err.value), sentence), str(err.value)


# Rules test_config_errors does not reach: the sentence early must be the constructor's.
MORE = [
    ["data=xor", "data.batch_size=0"],
    ["data=xor", "data.copies=0"],
    ["data=regression", "data.high=-2"],
    ["data=regression", "data.val_size=1"],
    ["data.val_batch_size=0"],
    ["data.task=binary"],
    ["model=bn_mlp", "model.bn_eps=0"],
    ["model=res_mlp", "model.block=identity", "model.branch_init=zero"],
    ["model=res_mlp", "model.hidden_sizes=[32,16,8]"],
    ["init=orthogonal", "init.gain=-1"],
    ["init=matched", "+init.std=1"],
    ["init/bias=constant", "init.bias.value=.inf"],
    ["callbacks.activation_monitor.probe_size=1"],
    ["callbacks.activation_monitor.percentile_units=-1"],
    ["callbacks.gradient_monitor.histogram_every_n_epochs=-1"],
    ["torch_threads=0"],
    ["+trainer.gradient_clip_val=0"],
]


@pytest.mark.parametrize("overrides", MORE, ids=" ".join)
def test_the_early_sentence_is_the_constructors(compose_cfg, overrides, tmp_path):
    cfg = compose_cfg(*overrides)
    with pytest.raises(ConfigError) as early:
        check(cfg)
    with pytest.raises(ConfigError) as built:
        run(cfg)  # the constructors (and preflight) on the same config
    assert str(early.value) == str(built.value)
    assert not (tmp_path / "run").exists()


def test_a_good_config_passes(compose_cfg):
    for overrides in (
        [],
        ["model=preact_res_mlp", "model.branch_init=rezero"],
        ["data=regression", "model=bn_mlp"],
    ):
        check(compose_cfg(*overrides))


def test_each_registered_target_is_a_class_that_takes_its_rules_values():
    # A rule's parameters are keys of the node: each it requires is a parameter of the
    # class (an optional one may be the class's own choice: XOR's val_batch_size).
    for target, rules in RULES.items():
        params = inspect.signature(get_class(target)).parameters
        for rule in rules:
            needed = inspect.signature(rule).parameters.values()
            required = {p.name for p in needed if p.default is p.empty}
            assert required <= set(params), (target, rule)


def test_the_shipped_gradflow_targets_have_rules():
    targets = set()
    for group in ("model", "data", "callbacks"):
        for path in (REPO_ROOT / "conf" / group).glob("*.yaml"):
            text = yaml.safe_load(path.read_text()) or {}
            nodes = [text, *(v for v in text.values() if isinstance(v, dict))]
            targets |= {n["_target_"] for n in nodes if "_target_" in n}
    # The layout has no parameters, hence no rules.
    assert targets - {"gradflow.diagnostics.CustomScalarsLayout"} <= set(RULES)
    assert len(targets) == 10  # three models, three data modules, four callbacks


# torch and Lightning cannot be imported here at all: the check must not need them (Hydra
# may warn about a plugin that does; the script's own path is the slow test's below).
EARLY = """
import sys
from importlib.abc import MetaPathFinder

class Blocked(MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "lightning"):
            raise ImportError(name + " is not allowed before the values are checked")

sys.meta_path.insert(0, Blocked())
from hydra import compose, initialize_config_dir
from gradflow.config import config_dir
from gradflow.errors import ConfigError
from gradflow.rules import check
with initialize_config_dir(str(config_dir()), version_base="1.3"):
    cfg = compose("train", overrides=sys.argv[1:])
try:
    check(cfg)
except ConfigError as err:
    print(err)
print("torch" in sys.modules, "lightning" in sys.modules)
"""


def test_the_early_check_needs_neither_torch_nor_lightning():
    proc = subprocess.run(
        [sys.executable, "-c", EARLY, "model.depth=0"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT / "src")},
    )
    assert proc.stdout.splitlines() == [
        "model.depth=0 is not allowed: use a whole number >= 1 (the number of hidden layers).",
        "False False",
    ], proc.stderr


@pytest.mark.slow
def test_the_script_refuses_a_bad_value_before_importing_torch(tmp_path: Path):
    cmd = [
        sys.executable,
        "-X",
        "importtime",
        str(REPO_ROOT / "scripts" / "train.py"),
        *TINY,
        f"paths.log_dir={tmp_path / 'logs'}",
        "optimizer.lr=-1",
    ]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    lines = proc.stderr.splitlines()
    assert "error: optimizer.lr=-1 is not allowed: use a number > 0 (the learning rate)." in lines
    imported = {line.split("|")[-1].strip() for line in lines if line.startswith("import time:")}
    assert "gradflow.rules" in imported
    assert not {"torch", "lightning"} & imported
    assert not list(tmp_path.rglob(".hydra"))  # no run directory left behind
