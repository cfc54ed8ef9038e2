"""A crash, a kill or Ctrl-C loses nothing: runs continue from last.ckpt, sweeps relaunch.

Fast tests go through `train.run` in-process and the pure helpers; the ones that kill or
interrupt a real `scripts/train.py` process are marked slow (about a minute each here).
"""

from __future__ import annotations

import json
import re
import signal
import time
from pathlib import Path

import lightning as L
import pytest
import torch
from omegaconf import OmegaConf, open_dict
from tensorboard.backend.event_processing import event_accumulator as ea

from gradflow.config import config_dir
from gradflow.errors import ConfigError
from gradflow.nn import MLP
from gradflow.training.module import TaskModule
from gradflow.training.resume import (
    RESUMABLE,
    checkpoint_progress,
    merge_overrides,
    resume_argv,
)
from gradflow.training.run import run
from gradflow.training.summary import format_summary
from gradflow.training.sweep import format_report, job_statuses
from tests.helpers import (
    KILLABLE,
    REPO_ROOT,
    TINY,
    next_second,
    start_train,
    tensorboard_scalars,
    wait_for,
)

# Tags the tiny runs log once per epoch (the module's own; docs/architecture.md).
EPOCH_TAGS = ("train/loss", "train/acc", "val/loss", "val/acc", "val/acc_best")


def _cfg(compose_cfg, run_dir: Path, *overrides: str):
    cfg = compose_cfg("optimizer=adam", "callbacks=none", *overrides)
    with open_dict(cfg):
        cfg.paths.output_dir = str(run_dir)
    return cfg


# ------------------------------------------------------------------------- in-process


def test_extended_run_matches_one_that_ran_straight_through(compose_cfg, tmp_path):
    straight = run(_cfg(compose_cfg, tmp_path / "straight", "trainer.max_epochs=3"))
    first = run(_cfg(compose_cfg, tmp_path / "resumed", "trainer.max_epochs=1"))
    resumed_dir = tmp_path / "resumed"
    assert first["checkpoint"] == str(resumed_dir / "checkpoints" / "last.ckpt")
    assert checkpoint_progress(Path(first["checkpoint"])) == (1, 8)
    ckpt = tmp_path / "epoch1.ckpt"  # kept aside: the resumed run overwrites last.ckpt
    ckpt.write_bytes(Path(first["checkpoint"]).read_bytes())

    next_second()  # the resume's event files sort after the first call's
    resumed = run(_cfg(compose_cfg, resumed_dir, "trainer.max_epochs=3", f"resume={resumed_dir}"))
    assert resumed["status"] == "completed"
    assert resumed["resumed_from"] == {"checkpoint": first["checkpoint"], "epochs": 1, "steps": 8}
    assert "3 epochs (2 in this call, " in format_summary(resumed, tmp_path)
    # Bit-identical on CPU: the same weights, optimizer state and per-epoch batch order.
    assert resumed["metrics"] == straight["metrics"]
    assert (
        (resumed["epochs"], resumed["steps"])
        == (straight["epochs"], straight["steps"])
        == (
            3,
            24,
        )
    )
    assert len(resumed["timing"]["epoch_s"]) == 3  # the first epoch's time came from last.ckpt
    assert resumed["timing"]["epoch_s"][0] == first["timing"]["epoch_s"][0]
    # One point per epoch and tag, as in the straight run, across the two event files.
    shown, expected = tensorboard_scalars(resumed_dir), tensorboard_scalars(tmp_path / "straight")
    for tag in EPOCH_TAGS:
        assert shown[tag] == expected[tag], tag

    # ckpt_path starts a new run (its own directory) from another run's checkpoint.
    branched = run(
        _cfg(compose_cfg, tmp_path / "branch", "trainer.max_epochs=3", f"ckpt_path={ckpt}")
    )
    assert branched["metrics"] == straight["metrics"] and branched["resumed_from"]["epochs"] == 1

    # Resuming a finished run returns its summary and touches nothing.
    before = [(p, p.stat().st_mtime_ns) for p in sorted(resumed_dir.rglob("*"))]
    again = run(_cfg(compose_cfg, resumed_dir, "trainer.max_epochs=3", f"resume={resumed_dir}"))
    assert again == json.loads((resumed_dir / "summary.json").read_text())
    assert [(p, p.stat().st_mtime_ns) for p in sorted(resumed_dir.rglob("*"))] == before


def _saved_run(compose_cfg, run_dir: Path, *overrides: str) -> dict:
    """A 1-epoch run with its config saved where Hydra keeps it (`.hydra/config.yaml`)."""
    cfg = _cfg(compose_cfg, run_dir, "trainer.max_epochs=1", *overrides)
    (run_dir / ".hydra").mkdir(parents=True)
    OmegaConf.save(cfg, run_dir / ".hydra" / "config.yaml")
    return run(cfg)


def test_a_resume_applies_the_learning_rate_from_its_step_and_records_it(compose_cfg, tmp_path):
    run_dir = tmp_path / "lr"
    _saved_run(compose_cfg, run_dir)
    plain = tmp_path / "plain"
    _saved_run(compose_cfg, plain)
    same = run(_cfg(compose_cfg, plain, "trainer.max_epochs=2", f"resume={plain}"))
    faster = run(
        _cfg(compose_cfg, run_dir, "trainer.max_epochs=2", "optimizer.lr=0.05", f"resume={run_dir}")
    )
    assert same["resume_changes"] == [
        {"key": "trainer.max_epochs", "was": 1, "now": 2, "from_step": 8}
    ]
    assert {"key": "optimizer.lr", "was": 0.001, "now": 0.05, "from_step": 8} in faster[
        "resume_changes"
    ]
    assert faster["metrics"]["final"]["train/loss"] != same["metrics"]["final"]["train/loss"]
    # A later resume keeps the history: it comes from the checkpoint.
    again = run(
        _cfg(compose_cfg, run_dir, "trainer.max_epochs=3", "optimizer.lr=0.05", f"resume={run_dir}")
    )
    assert [c["key"] for c in again["resume_changes"]] == [
        "optimizer.lr", "trainer.max_epochs", "trainer.max_epochs"
    ]  # fmt: skip
    assert again["resume_changes"][-1] == {
        "key": "trainer.max_epochs", "was": 2, "now": 3, "from_step": 16
    }  # fmt: skip


def test_a_resume_refuses_a_change_that_makes_another_run(compose_cfg, tmp_path):
    run_dir = tmp_path / "depth"
    _saved_run(compose_cfg, run_dir)
    before = sorted((p, p.stat().st_mtime_ns) for p in run_dir.rglob("*"))
    with pytest.raises(ConfigError) as refused:
        run(_cfg(compose_cfg, run_dir, "model.depth=6", f"resume={run_dir}"))
    assert sorted((p, p.stat().st_mtime_ns) for p in run_dir.rglob("*")) == before  # untouched
    assert str(refused.value) == (
        "model.depth=6 is not allowed: a resumed run keeps the config it started with "
        f"(model.depth=4); to change it, start a new run from the checkpoint: "
        f"ckpt_path={run_dir}/checkpoints/last.ckpt."
    )


def test_step_0_records_survive_two_resumes(compose_cfg, tmp_path):
    def diagnosed(run_dir: Path, *overrides: str) -> dict:
        cfg = compose_cfg("optimizer=adam", *overrides)
        with open_dict(cfg):
            cfg.paths.output_dir = str(run_dir)
        return run(cfg)

    straight = diagnosed(tmp_path / "straight", "trainer.max_epochs=3")
    resumed_dir = tmp_path / "resumed"
    diagnosed(resumed_dir, "trainer.max_epochs=1")
    diagnosed(resumed_dir, "trainer.max_epochs=2", f"resume={resumed_dir}")
    resumed = diagnosed(resumed_dir, "trainer.max_epochs=3", f"resume={resumed_dir}")
    assert resumed["resumed_from"]["steps"] == 16
    # summary.json (and so compare.py and the HParams column) keep the original step 0.
    assert resumed["grad_norms"]["first_step"]["step"] == 0
    assert resumed["grad_norms"]["first_step"] == straight["grad_norms"]["first_step"]
    assert resumed["activations"]["first_probe"] == straight["activations"]["first_probe"]
    assert resumed["hparams"]["grad_ratio_step0"] == straight["hparams"]["grad_ratio_step0"]
    # The verdict's timeline too: step 0's phase and every epoch's verdict, once each.
    assert [e["epoch"] for e in resumed["verdict"]["epochs"]] == [1, 2, 3]
    assert resumed["verdict"]["timeline"] == straight["verdict"]["timeline"]
    assert resumed["verdict"]["sentence"] == straight["verdict"]["sentence"]
    # TensorBoard: step 0's picture, histograms and scalars once, as the straight run drew them.
    shown, expected = (
        ea.EventAccumulator(str(d), size_guidance={ea.IMAGES: 0, ea.HISTOGRAMS: 0})
        for d in (resumed_dir, tmp_path / "straight")
    )
    shown.Reload()
    expected.Reload()
    for tag in ("figures/activation_histograms", "figures/grad_norm_by_layer"):
        at_0 = [e for e in shown.Images(tag) if e.step == 0]
        if tag == "figures/activation_histograms":
            assert len(at_0) == 1
            (original,) = (e for e in expected.Images(tag) if e.step == 0)
            assert at_0[0].encoded_image_string == original.encoded_image_string
        else:
            assert not at_0  # drawn at epochs' ends only
    for tag in ("activations/layer_01", "gradients/layer_01"):
        assert [e.step for e in shown.Histograms(tag)].count(0) == 1
    scalars = tensorboard_scalars(resumed_dir)
    for tag in ("grad_norm/first_last_ratio", "act_std/layer_01"):
        assert [step for step, _ in scalars[tag]].count(0) == 1
        assert scalars[tag][0] == tensorboard_scalars(tmp_path / "straight")[tag][0]


def test_readme_lists_every_key_a_resume_may_change():
    readme = (REPO_ROOT / "README.md").read_text()
    section = readme[readme.index("**What a resume may change**") :]
    section = section[: section.index("the list")]
    assert sorted(k for k in RESUMABLE if k != "resume") == sorted(
        re.findall(r"`([a-z_.]+)`", section)
    )


def test_checkpoint_keeps_the_best_val_accuracy():
    # MaxMetric's state is not in the state dict, and on_train_start resets it.
    trainer = L.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False)
    module = TaskModule(MLP(depth=1, width=4), torch.optim.SGD)
    module.val_acc_best.update(torch.tensor(0.75))
    checkpoint: dict = {}
    module.on_save_checkpoint(checkpoint)
    restored = TaskModule(MLP(depth=1, width=4), torch.optim.SGD)
    restored.trainer = trainer
    restored.on_load_checkpoint(checkpoint)
    restored.on_train_start()
    restored.val_acc_best.update(torch.tensor(0.5))
    assert restored.val_acc_best.compute().item() == 0.75
    fresh = TaskModule(MLP(depth=1, width=4), torch.optim.SGD)
    fresh.trainer = trainer
    fresh.on_load_checkpoint({})  # a checkpoint from before any validation
    fresh.on_train_start()
    fresh.val_acc_best.update(torch.tensor(0.5))
    assert fresh.val_acc_best.compute().item() == 0.5


def test_checkpoint_none_turns_checkpoints_off(compose_cfg, tmp_path):
    # (callbacks=none keeps them: every other run in this file has both.)
    summary = run(_cfg(compose_cfg, tmp_path / "b", "checkpoint=none"))
    assert summary["status"] == "completed" and summary["checkpoint"] is None
    assert not (tmp_path / "b" / "checkpoints").exists()


# ----------------------------------------------------------------------- command line


def _hydra_run_dir(path: Path, overrides: list[str]) -> Path:
    hydra = path / ".hydra"
    hydra.mkdir(parents=True)
    (hydra / "config.yaml").write_text("seed: 42\n")
    (hydra / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    return path


def test_resume_argv_for_one_run(tmp_path):
    run_dir = _hydra_run_dir(tmp_path / "14-00-00_activation=relu,model.depth=3", [])
    argv = resume_argv(["train.py", f"resume={run_dir}", "trainer.max_epochs=20"])
    assert argv == [
        "train.py",
        "--config-path",
        f"{run_dir}/.hydra",
        "--config-name",
        "config",
        "--config-dir",  # conf/, for Hydra's own settings: `hydra=default`
        str(config_dir()),
        "+hydra=default",
        "trainer.max_epochs=20",
        f"hydra.run.dir='{run_dir}'",  # quoted: the comma and '=' stay part of the path
        "hydra.output_subdir=null",
        f"++resume='{run_dir}'",
    ]
    assert resume_argv(["train.py", "activation=tanh"]) == ["train.py", "activation=tanh"]
    with pytest.raises(ConfigError, match=r"^resume='.*/nowhere' is not allowed: there is no such"):
        resume_argv(["train.py", f"resume={tmp_path / 'nowhere'}"])
    with pytest.raises(ConfigError, match=r"it is not a run directory \(it has no .hydra/config"):
        resume_argv(["train.py", f"resume={tmp_path}"])


def test_resume_argv_for_a_sweep(tmp_path):
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    saved = {
        "hydra": ["hydra.mode=MULTIRUN", "hydra.launcher.n_jobs=2"],
        "task": ["activation=relu,tanh", "callbacks=none", "++resume='/old'"],
    }
    subdir = "${hydra.job.num}_${hydra.job.override_dirname}"  # saved unresolved
    OmegaConf.save(
        {"hydra": {"overrides": saved, "sweep": {"subdir": subdir}}}, sweep / "multirun.yaml"
    )
    argv = resume_argv(["train.py", "-m", f"resume={sweep}", "activation=relu,tanh"])
    assert argv == [
        "train.py",
        "-m",
        "activation=relu,tanh",
        "callbacks=none",
        "hydra.launcher.n_jobs=2",
        f"hydra.sweep.dir='{sweep}'",
        f"hydra.sweep.subdir='{subdir}'",
        f"++resume='{sweep}'",
    ]
    with pytest.raises(ConfigError) as err:
        resume_argv(["train.py", "-m", f"resume={sweep}", "model.depth=5"])
    assert str(err.value) == (
        f"model.depth='5' is not allowed: resume={sweep} relaunches the sweep with the "
        "arguments it was started with (activation=relu,tanh callbacks=none); start a new "
        "sweep instead."
    )
    with pytest.raises(ConfigError, match="it is a sweep directory, so add -m"):
        resume_argv(["train.py", f"resume={sweep}"])
    with pytest.raises(ConfigError, match="sweep directory, and this one has no multirun.yaml"):
        resume_argv(["train.py", "-m", f"resume={tmp_path}"])


def test_merge_overrides_keeps_the_history():
    old = ["activation=sigmoid", "trainer.max_epochs=4", "++resume=/x"]
    new = ["++resume='/x'", "trainer.max_epochs=20", "+trainer.max_time=00:01:00:00"]
    assert merge_overrides(old, new) == [
        "activation=sigmoid",
        "trainer.max_epochs=20",
        "+trainer.max_time=00:01:00:00",
    ]


def test_sweep_report_names_unfinished_jobs(tmp_path):
    for name, summary in (
        ("0_a", {"status": "completed"}),
        ("1_b", {"status": "diverged", "error": "NaN loss at step 3"}),
        ("2_c", {"status": "failed", "error": "model.depth=0 is not allowed: ..."}),
        ("3_d", None),
    ):
        (tmp_path / name / ".hydra").mkdir(parents=True)
        if summary:
            (tmp_path / name / "summary.json").write_text(json.dumps(summary))
    report = format_report(tmp_path, job_statuses(tmp_path))
    assert report.splitlines() == [
        f"sweep: 4 jobs in {tmp_path}: 1 completed, 1 diverged, 1 failed, 1 incomplete",
        "  2_c: failed - model.depth=0 is not allowed: ...",
        "  3_d: incomplete - no summary.json: the job was killed",
        "run the 2 unfinished job(s) again (finished ones are skipped): "
        f"python scripts/train.py -m resume={tmp_path}",
    ]


# ------------------------------------------------------------------- real processes


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_result(compose_cfg, tmp_path):
    epochs = ["trainer.max_epochs=3"]
    run_dir = tmp_path / "logs" / "killed"
    proc = start_train(*KILLABLE, *epochs, f"hydra.run.dir={run_dir}", log_dir=tmp_path / "logs")
    wait_for(run_dir, "checkpoints/last.ckpt", proc)
    time.sleep(0.15)  # into the second epoch
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert not (run_dir / "summary.json").exists()
    done, _ = checkpoint_progress(run_dir / "checkpoints" / "last.ckpt")
    assert 1 <= done < 3, "the kill came after the last epoch"

    resume = start_train(f"resume={run_dir}", log_dir=tmp_path / "logs")
    out, err = resume.communicate(timeout=300)
    assert resume.returncode == 0, err[-3000:]
    resumed = json.loads((run_dir / "summary.json").read_text())

    cfg = compose_cfg(*KILLABLE, *epochs, tiny=False)  # the default diagnostics, as killed
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path / "straight")
    straight = run(cfg)
    assert resumed["status"] == "completed" and resumed["resumed_from"]["epochs"] == done
    # Bit-identical: same weights, optimizer state and batch order from the checkpoint on.
    assert resumed["metrics"] == straight["metrics"]
    # Step 0's records come from the checkpoint, not from the resumed run's first step.
    assert resumed["grad_norms"] == straight["grad_norms"]
    assert resumed["activations"] == straight["activations"]
    assert (resumed["epochs"], resumed["steps"]) == (straight["epochs"], straight["steps"])
    assert len(resumed["timing"]["epoch_s"]) == 3
    # TensorBoard shows each step once: the re-run part of the killed epoch is purged.
    shown, expected = tensorboard_scalars(run_dir), tensorboard_scalars(tmp_path / "straight")
    for tag in (*EPOCH_TAGS, "grad_norm/total", "act_std/layer_01"):
        steps = [step for step, _ in shown[tag]]
        assert steps == sorted(set(steps)), tag
        assert shown[tag] == expected[tag], tag
    saved = OmegaConf.load(run_dir / ".hydra" / "overrides.yaml")
    assert "optimizer=adam" in saved and not [o for o in saved if "resume=" in o]
    # The HParams row names the groups' options as the run started, not their classes.
    assert (resumed["hparams"]["model"], resumed["hparams"]["optimizer"]) == ("mlp", "adam")
    # The resumed run's console is gradflow's: no log-file timestamps, each line once,
    # no notice about the checkpoint directory it continues in.
    assert "][" not in out + err and "exists and is not empty" not in out + err
    assert out.count("status: completed") == 1


@pytest.mark.slow
def test_ctrl_c_ends_the_run_cleanly_with_a_checkpoint(tmp_path):
    run_dir = tmp_path / "logs" / "interrupted"
    args = [*KILLABLE, "trainer.max_epochs=3", "callbacks=none", f"hydra.run.dir={run_dir}"]
    proc = start_train(*args, log_dir=tmp_path / "logs")
    wait_for(run_dir, "checkpoints/last.ckpt", proc)
    time.sleep(0.15)  # into the second epoch
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-3000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "interrupted"
    assert summary["error"] == "interrupted by the user (Ctrl-C)"
    assert summary["checkpoint"] == str(run_dir / "checkpoints" / "last.ckpt")
    assert summary["epochs"] >= 1 and summary["metrics"]["final"]["val/acc"] is not None
    assert f"continue: python scripts/train.py resume={run_dir}" in out
    assert "Traceback" not in err


@pytest.mark.slow
def test_sweep_survives_a_rejected_job_and_relaunch_skips_finished_ones(tmp_path):
    logs = tmp_path / "logs"
    sweep = logs / "sweep"
    args = ["-m", "model.depth=0,2", *TINY, "callbacks=none", f"hydra.sweep.dir={sweep}"]
    proc = start_train(*args, log_dir=logs)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 1, err[-3000:]  # a job was rejected: the sweep says so
    jobs = job_statuses(sweep)
    assert [status for status, _ in jobs.values()] == ["rejected", "completed"]
    rejected, completed_job = jobs
    assert jobs[rejected][1].startswith("model.depth=0 is not allowed")
    assert f"sweep: 2 jobs in {sweep}: 1 rejected, 1 completed" in out
    # A rejected config cannot pass by running again: no relaunch is proposed for it.
    assert "resume=" not in out
    assert "a rejected config fails again until the sweep's arguments change" in out
    # It left no job directory that TensorBoard or compare.py would list.
    assert not (sweep / rejected).exists()

    completed = sweep / completed_job / "summary.json"
    before = completed.stat().st_mtime_ns
    again = start_train("-m", f"resume={sweep}", log_dir=logs)
    out, err = again.communicate(timeout=300)
    assert again.returncode == 1, err[-3000:]  # the bad value is still bad
    assert "already completed: nothing to resume" in out + err
    assert completed.stat().st_mtime_ns == before
    # The same job directory, none added, beside the sweep's files and its report.
    assert sorted(p.name for p in sweep.iterdir()) == sorted(
        [completed_job, "multirun.yaml", "rejected.jsonl", "report"]
    )


@pytest.mark.slow
def test_killed_sweep_relaunch_continues_the_unfinished_job(tmp_path):
    logs = tmp_path / "logs"
    sweep = logs / "sweep"
    args = ["-m", "activation=relu,tanh", *KILLABLE, "trainer.max_epochs=2", "callbacks=none"]
    proc = start_train(*args, f"hydra.sweep.dir={sweep}", log_dir=logs)
    wait_for(sweep, "1_*/checkpoints/last.ckpt", proc)
    proc.kill()
    proc.communicate(timeout=60)
    job0, job1 = sorted(p for p in sweep.iterdir() if p.is_dir())
    assert json.loads((job0 / "summary.json").read_text())["status"] == "completed"
    assert not (job1 / "summary.json").exists()
    before = (job0 / "summary.json").stat().st_mtime_ns

    again = start_train("-m", f"resume={sweep}", log_dir=logs)
    out, err = again.communicate(timeout=300)
    assert again.returncode == 0, err[-3000:]
    assert (job0 / "summary.json").stat().st_mtime_ns == before
    resumed = json.loads((job1 / "summary.json").read_text())
    assert resumed["status"] == "completed" and resumed["epochs"] == 2
    assert resumed["resumed_from"]["epochs"] == 1
    assert "activation=tanh" in resumed["overrides"]
    assert f"sweep: 2 jobs in {sweep}: 2 completed" in out
