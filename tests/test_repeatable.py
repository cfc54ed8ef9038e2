"""Every run can be repeated and none overwrites another: same seed, same numbers; own dir."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

import gradflow
from gradflow.config import project_root
from gradflow.training.run import run
from gradflow.training.summary import git_commit
from tests.helpers import REPO_ROOT, TINY


@pytest.mark.slow
def test_two_runs_started_together_get_their_own_directories(tmp_path):
    # Both ask for the same directory name, as two runs started in the same second do
    # (the name is the start time): `unique_dir` creates it atomically, so one gets `_2`.
    base = tmp_path / "logs" / "runs" / "same-second"
    cmd = [
        sys.executable,
        str(REPO_ROOT / "scripts" / "train.py"),
        *TINY,
        "callbacks=none",
        "logger=none",
        f"paths.log_dir={tmp_path / 'logs'}",
        f"paths.data_dir={tmp_path / 'data'}",
        f"hydra.run.dir='${{unique_dir:{base}}}'",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [
        subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs[0][1][-2000:] + outputs[1][1][-2000:]
    run_dirs = sorted(p.parent for p in base.parent.glob("*/summary.json"))
    assert [d.name for d in run_dirs] == ["same-second", "same-second_2"]
    summaries = [json.loads((d / "summary.json").read_text()) for d in run_dirs]
    assert [s["run_dir"] for s in summaries] == [str(d) for d in run_dirs]
    assert all(s["status"] == "completed" for s in summaries)
    assert summaries[0]["metrics"] == summaries[1]["metrics"]  # and the same numbers


def test_deterministic_trainer_repeats_bit_for_bit_and_records_provenance(compose_cfg):
    overrides = ("trainer.deterministic=true", "callbacks=none", "logger=none")
    first, second = run(compose_cfg(*overrides)), run(compose_cfg(*overrides))
    assert first["status"] == second["status"] == "completed"
    assert first["metrics"] == second["metrics"]
    assert first["config"]["trainer"]["deterministic"] is True
    assert first["config"]["seed"] == 42 and first["config"]["data"]["subsample_seed"] == 7
    assert first["version"] == gradflow.__version__
    assert first["git_commit"] == git_commit(project_root())
    if first["git_commit"] is not None:  # a checkout: HEAD, '-dirty' when files changed
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True
        ).stdout.strip()
        assert first["git_commit"].removesuffix("-dirty") == head
