"""Every bad value fails the run before training, in one sentence naming its full key.

Each rule lives where the value is used (a constructor, or `preflight` for third-party
classes and what spans nodes); the run names the node (`model.` + `depth`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra.errors import ConfigCompositionException, MissingConfigException

from gradflow.errors import ConfigError
from gradflow.training import preflight
from gradflow.training.run import build_parts, run
from tests.helpers import REPO_ROOT, TINY

ACTIVATIONS = "sigmoid, tanh, relu, leaky_relu, elu, selu, gelu, silu, softplus, identity"
INITS = (
    "default, glorot_standard, xavier_uniform, xavier_normal, kaiming_uniform, kaiming_normal, "
    "lecun_normal, lecun_uniform, normal, orthogonal, variance_scaling, glorot_normalized, matched"
)
BIASES = "zeros, default, constant, normal, uniform"
WHOLE = "use a whole number >= 1"

# (overrides, the whole sentence, or its start when it ends in "...")
BAD = [
    (["model.depth=0"], f"model.depth=0 is not allowed: {WHOLE} (the number of hidden layers)."),
    (["model.depth=2.5"], f"model.depth=2.5 is not allowed: {WHOLE} ..."),
    (["model.width=0"], f"model.width=0 is not allowed: {WHOLE} (units per hidden layer)."),
    (
        ["model.hidden_sizes=[]"],
        "model.hidden_sizes=[] is not allowed: use a non-empty list of whole numbers >= 1.",
    ),
    (["model.hidden_sizes=[64,0]"], "model.hidden_sizes=[64, 0] is not allowed: ..."),
    (["model.hidden_sizes=5"], "model.hidden_sizes=5 is not allowed: use a non-empty list ..."),
    (
        ["data.train_size=0"],
        "data.train_size=0 is not allowed: use a whole number from 1 to "
        "60,000 (the MNIST train split), or null for all.",
    ),
    (
        ["data.val_size=-5"],
        "data.val_size=-5 is not allowed: use a whole number from 1 to "
        "10,000 (the MNIST test split), or null for all.",
    ),
    (["data.train_size=60001"], "data.train_size=60001 is not allowed: ..."),
    (["data.batch_size=0"], f"data.batch_size=0 is not allowed: {WHOLE}."),
    (["data.dataset=kmnist"], "data.dataset='kmnist' is not allowed: choose one of mnist, ..."),
    (["data.scaling=zscore"], "data.scaling='zscore' is not allowed: choose one of unit, ..."),
    (["data=xor", "data.noise=-1"], "data.noise=-1 is not allowed: use a number >= 0 ..."),
    (["optimizer.lr=0"], "optimizer.lr=0 is not allowed: use a number > 0 (the learning rate)."),
    (["optimizer=adam", "optimizer.lr=-0.001"], "optimizer.lr=-0.001 is not allowed: ..."),
    (
        ["init=normal", "init.std=0"],
        "init.std=0 is not allowed: use a number > 0 (the weights' standard deviation).",
    ),
    (
        ["activation.name=sigmoidd"],
        f"activation.name='sigmoidd' is not allowed: choose one of {ACTIVATIONS}.",
    ),
    (["init.name=he"], f"init.name='he' is not allowed: choose one of {INITS}."),
    (
        ["init=variance_scaling", "init.distribution=cauchy"],
        "init.distribution='cauchy' is not allowed: choose one of normal, uniform, "
        "truncated_normal.",
    ),
    (["init.bias.name=gauss"], f"init.bias.name='gauss' is not allowed: choose one of {BIASES}."),
    (
        ["init/bias=normal", "+init.bias.sd=0.2"],
        "init.bias.sd=0.2 is not allowed: the 'normal' bias init has no such parameter; its "
        "parameters are std.",
    ),
    (
        ["init/bias=normal", "init.bias.std=0"],
        "init.bias.std=0 is not allowed: use a number > 0 (the biases' standard deviation).",
    ),
    (
        ["model._target_=gradflow.nn.models.MPL"],
        "model._target_='gradflow.nn.models.MPL' is not allowed: use model=bn_mlp, model=mlp, "
        "model=preact_res_mlp or model=res_mlp, or the path of a TrackedModel class.",
    ),
    (
        ["optimizer._target_=torch.optim.SDG"],
        "optimizer._target_='torch.optim.SDG' is not allowed: use optimizer=adam or "
        "optimizer=sgd, or the path of a torch.optim.Optimizer class such as torch.optim.AdamW.",
    ),
    (
        ["model=bn_mlp", "model.bn_position=middle"],
        "model.bn_position='middle' is not allowed: choose one of before, after.",
    ),
    (
        ["model=res_mlp", "model.block=pre"],
        "model.block='pre' is not allowed: choose one of post, identity, preact.",
    ),
    (
        ["+optimizer.momentm=0.9"],
        "optimizer.momentm=0.9 is not allowed: SGD has no such parameter; its parameters are "
        "lr, momentum, ...",
    ),
    (
        ["activation=leaky_relu", "+activation.slope=0.2"],
        "activation.slope=0.2 is not allowed: the 'leaky_relu' activation has no such "
        "parameter; its parameters are negative_slope.",
    ),
    (
        ["callbacks.gradient_monitor.log_every_n_steps=-1"],
        "callbacks.gradient_monitor.log_every_n_steps=-1 is not allowed: use a whole number "
        ">= 0, or null for the Trainer's.",
    ),
    (
        ["+callbacks.verdict.thresholds.vanish_ratio=0.1"],
        "callbacks.verdict.thresholds.vanish_ratio=0.1 is not allowed: the verdict has no "
        "such parameter; its parameters are vanishing_ratio, ...",
    ),
    (
        ["+callbacks.verdict.thresholds.dead_fraction=-1"],
        "callbacks.verdict.thresholds.dead_fraction=-1 is not allowed: use a number > 0.",
    ),
    (["trainer.max_epochs=0"], f"trainer.max_epochs=0 is not allowed: {WHOLE} (or -1 for ..."),
    (
        ["+trainer.gradient_clip_algorithm=max"],
        "trainer.gradient_clip_algorithm='max' is not allowed: choose one of norm, value.",
    ),
    (["seed=-1"], "seed=-1 is not allowed: use a whole number >= 0."),
    (
        ["resume=/no/such/run"],
        "resume='/no/such/run' is not allowed: it is not a run (or sweep) directory that exists.",
    ),
]


@pytest.mark.parametrize(("overrides", "sentence"), BAD, ids=[" ".join(o) for o, _ in BAD])
def test_bad_value_is_named_in_one_sentence(compose_cfg, overrides, sentence, tmp_path):
    with pytest.raises(ConfigError) as err:
        run(compose_cfg(*overrides))
    assert not (tmp_path / "run").exists()  # a rejected config leaves no run behind
    message = str(err.value)
    if sentence.endswith("..."):
        assert message.startswith(sentence.removesuffix("...")), message
    else:
        assert message == sentence
    assert "\n" not in message and message.endswith(".")


@pytest.mark.skipif(
    __import__("torch").cuda.is_available(), reason="checks the message on a machine without CUDA"
)
def test_gpu_trainer_without_cuda_is_refused(compose_cfg):
    with pytest.raises(ConfigError) as err:
        run(compose_cfg("trainer=gpu"))
    assert str(err.value) == (
        "trainer.accelerator='gpu' is not allowed: this machine has no CUDA GPU that torch "
        "can use, so use trainer=cpu."
    )


@pytest.mark.parametrize(
    "overrides",
    [
        [],
        ["model=bn_mlp", "model.bn_position=after"],
        ["model=res_mlp", "model.hidden_sizes=[32,16,32]"],
        ["init=matched", "activation=selu"],
        ["init=orthogonal", "optimizer=adam", "activation=leaky_relu"],
        ["init=variance_scaling", "init.sigma_w2=2", "init/bias=normal", "init.bias.std=0.2"],
        ["data=fashion_mnist", "data.train_size=null", "data.val_size=null"],
        ["data=xor", "model.hidden_sizes=[8,8]"],
    ],
    ids=lambda o: " ".join(o) or "defaults",
)
def test_shipped_configs_build(compose_cfg, overrides, tmp_path):
    cfg = compose_cfg(*overrides, tiny="data=fashion_mnist" not in overrides)
    preflight.check(cfg)
    if "data=fashion_mnist" in overrides:  # full Fashion-MNIST may not be on this machine
        return
    datamodule, module, callbacks = build_parts(cfg)
    assert module.model.tracked_layers()["layer_01"].in_features == datamodule.in_features
    assert len(callbacks) == 5  # three monitors, the layout and the checkpoint


def test_hydra_itself_lists_the_options_of_a_mistyped_group(compose_cfg):
    # `activation=sigmoidd` never reaches gradflow: Hydra names the group and its options.
    with pytest.raises(MissingConfigException) as err:
        compose_cfg("activation=sigmoidd")
    assert "Could not find 'activation/sigmoidd'" in str(err.value)
    assert "sigmoid" in str(err.value) and "tanh" in str(err.value)
    with pytest.raises(ConfigCompositionException, match="Could not override 'model.depthh'"):
        compose_cfg("model.depthh=3")


def _train(tmp_path: Path, *overrides: str) -> subprocess.CompletedProcess:
    cmd = [
        sys.executable,
        str(REPO_ROOT / "scripts" / "train.py"),
        *TINY,
        f"paths.log_dir={tmp_path / 'logs'}",
        f"paths.data_dir={tmp_path / 'data'}",
        *overrides,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)


USER_ERRORS = {
    "bad value": (
        ["model.depth=0"],
        f"model.depth=0 is not allowed: {WHOLE} (the number of hidden layers).",
    ),
    "missing checkpoint": (
        ["ckpt_path=nowhere.ckpt"],
        "ckpt_path='nowhere.ckpt' is not allowed: it is not a checkpoint file that exists.",
    ),
    "not a checkpoint": (
        ["ckpt_path=notes.txt"],
        "ckpt_path='notes.txt' is not allowed: notes.txt is not a Lightning checkpoint "
        "(torch.load cannot read one from it); give one a gradflow run wrote, such as "
        "<run dir>/checkpoints/last.ckpt.",
    ),
    "unwritable log dir": (
        ["paths.log_dir=notes.txt/logs"],
        "paths.log_dir=notes.txt/logs cannot hold the runs (Not a directory); choose a "
        "directory this user can write, e.g. paths.log_dir=$HOME/gradflow-logs.",
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", USER_ERRORS)
def test_script_prints_one_sentence_and_exits_1(tmp_path, case):
    (tmp_path / "notes.txt").write_text("not a checkpoint\n")
    overrides, sentence = USER_ERRORS[case]
    proc = _train(tmp_path, *overrides)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [f"error: {sentence}"]
    assert proc.stdout.strip() == ""
    assert not list(tmp_path.rglob(".hydra"))  # no run directory left behind


@pytest.mark.slow
def test_a_checkpoint_path_with_equals_and_commas_works_as_printed(tmp_path):
    first = _train(tmp_path, "trainer.max_epochs=1", "model.width=16")
    assert first.returncode == 0, first.stderr[-3000:]
    (run_dir,) = (tmp_path / "logs" / "runs").glob("*/*")
    assert "=" in run_dir.name and "," in run_dir.name  # named after its overrides
    # The command line as a user pastes it, unquoted; a resume's refusal prints it so too.
    checkpoint = run_dir / "checkpoints" / "last.ckpt"
    branch = _train(tmp_path, "trainer.max_epochs=2", "model.width=16", f"ckpt_path={checkpoint}")
    assert branch.returncode == 0, branch.stderr[-3000:]
    summary = json.loads(
        next(
            p for p in (tmp_path / "logs" / "runs").rglob("summary.json") if p.parent != run_dir
        ).read_text()
    )
    assert summary["resumed_from"] == {"checkpoint": str(checkpoint), "epochs": 1, "steps": 8}
    assert summary["epochs"] == 2
