"""A real TensorBoard server lists a finished run's scalar, histogram and image tags (slow:
it starts the server in a subprocess)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from gradflow.training.run import run

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


def _tags(payload: dict) -> set[str]:
    """Tags of the one run a plugin's /tags route returns ({run: {tag: ...}})."""
    return {tag for run_tags in payload.values() for tag in run_tags}


@pytest.fixture
def served_run(compose_cfg, tmp_path: Path):
    summary = run(compose_cfg("activation=sigmoid", "checkpoint=none"))
    assert summary["status"] == "completed"
    port = _free_port()
    cmd = [
        sys.executable,
        "-m",
        "tensorboard.main",
        "--logdir",
        str(tmp_path / "run"),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--samples_per_plugin",
        "histograms=0,images=0",
        "--load_fast",
        "false",
    ]
    server = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:  # the server is up once it answers, and has read the run once it lists it
            try:
                if _get(f"{base}/data/runs"):
                    break
            except OSError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"tensorboard did not serve the run: {server.stderr.read()[-2000:]}")
            time.sleep(0.5)
        yield base
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_tensorboard_server_lists_scalar_histogram_and_image_tags(served_run):
    scalars = _tags(_get(f"{served_run}/data/plugin/scalars/tags"))
    for tag in (
        "train/loss",
        "train/acc",
        "val/loss",
        "val/acc",
        "val/acc_best",
        "grad_norm/layer_01",
        "grad_norm/layer_05",
        "grad_norm/total",
        "grad_norm/first_last_ratio",
        "update_ratio/layer_01",
        "act_mean/layer_01",
        "act_std/layer_04",
        "act_saturated/layer_01",
        "act_dead/layer_01",
        "grad_signal/layer_01",
    ):
        assert tag in scalars, f"{tag} missing from {sorted(scalars)}"
    histograms = _tags(_get(f"{served_run}/data/plugin/histograms/tags"))
    for kind in ("activations", "preactivations", "gradients", "weights"):
        assert f"{kind}/layer_01" in histograms, sorted(histograms)
    images = _tags(_get(f"{served_run}/data/plugin/images/tags"))
    assert {"figures/grad_norm_by_layer", "figures/activation_histograms"} <= images
    # The step-0 probe survives: samples_per_plugin=0 keeps every histogram step.
    run_name = next(iter(_get(f"{served_run}/data/plugin/histograms/tags")))
    series = _get(
        f"{served_run}/data/plugin/histograms/histograms?run={run_name}&tag=activations/layer_01"
    )
    assert [point[1] for point in series][0] == 0
