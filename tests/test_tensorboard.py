"""A real TensorBoard server, started with exactly the flags gradflow prints, on a 2-run
sweep and its report: every image is served, step 0 survives, the Custom Scalars layout,
the HParams table and the report are there (slow: the server is a subprocess)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from omegaconf import open_dict

from gradflow.diagnostics import LAYOUT
from gradflow.names import TENSORBOARD_FLAGS
from gradflow.reporting.compare import compare
from gradflow.training.run import run

pytestmark = pytest.mark.slow
RUNS = ("0_model=mlp", "1_model=bn_mlp")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """TensorBoard's HTTP data API on 127.0.0.1."""

    def __init__(self, base: str) -> None:
        self.base = base

    def get(self, path: str, body: dict | None = None, raw: bool = False):
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json", "X-XSRF-Protected": "1"}
        request = urllib.request.Request(self.base + path, data=data, headers=headers)
        with urllib.request.urlopen(request, timeout=20) as response:
            content = response.read()
        return content if raw else json.loads(content)

    def series(self, plugin: str, route: str, run_name: str, tag: str):
        query = urllib.parse.urlencode({"run": run_name, "tag": tag})
        return self.get(f"/data/plugin/{plugin}/{route}?{query}")


def sweep(compose_cfg, root: Path) -> Path:
    """Two runs of a 4-layer sigmoid net, plain and with BatchNorm, and their report."""
    for name in RUNS:
        cfg = compose_cfg(
            "activation=sigmoid", f"model={name.split('=')[1]}", "trainer.max_epochs=2"
        )
        with open_dict(cfg):
            cfg.paths.output_dir = str(root / name)
        assert run(cfg)["status"] == "completed"
    compare([root])
    return root


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from hydra import compose, initialize_config_dir

    from gradflow.config import config_dir
    from tests.helpers import TINY

    root = tmp_path_factory.mktemp("sweep")

    def compose_cfg(*overrides: str):
        with initialize_config_dir(str(config_dir()), version_base="1.3"):
            cfg = compose("train", overrides=[*TINY, *overrides])
        with open_dict(cfg):
            cfg.paths.data_dir = str(root.parent / "data")
        return cfg

    sweep(compose_cfg, root)
    port = _free_port()
    cmd = [sys.executable, "-m", "tensorboard.main", "--logdir", str(root),
           "--host", "127.0.0.1", "--port", str(port), *TENSORBOARD_FLAGS.split()]  # fmt: skip
    process = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    tb = Server(f"http://127.0.0.1:{port}")
    try:
        deadline = time.monotonic() + 90
        while True:  # up once it answers, and has read the runs once it lists them all
            try:
                if len(tb.get("/data/runs")) == len(RUNS) + 1:
                    break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"tensorboard did not serve the runs: {process.stderr.read()[-2000:]}")
            time.sleep(0.5)
        time.sleep(2)  # every plugin's data read
        yield tb
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_every_image_is_served_and_step_0_survives(server):
    images = server.series("images", "images", RUNS[0], "figures/activation_histograms")
    assert [image["step"] for image in images] == [0, 15]  # initialisation and the last epoch
    png = server.get("/data/plugin/images/individualImage?" + images[0]["query"], raw=True)
    assert png.startswith(b"\x89PNG") and len(png) > 5_000
    histograms = server.series("histograms", "histograms", RUNS[0], "activations/layer_01")
    assert [point[1] for point in histograms] == [0, 7, 15]
    scalars = server.series("scalars", "scalars", RUNS[0], "grad_norm/layer_01")
    assert [point[1] for point in scalars][0] == 0


def test_custom_scalars_layout_answers_which_layer_vanishes(server):
    layout = server.get("/data/plugin/custom_scalars/layout")
    assert [c["title"] for c in layout["category"]] == list(LAYOUT)
    chart = layout["category"][0]["chart"][0]
    assert "grad_norm" in chart["title"]
    (pattern,) = chart["multiline"]["tag"]
    query = urllib.parse.urlencode({"run": RUNS[0], "tag": pattern})
    answer = server.get(f"/data/plugin/custom_scalars/scalars?{query}")
    assert answer["regex_valid"]
    lines = answer["tag_to_events"]
    assert sorted(lines) == [f"log10/grad_norm/layer_0{k}" for k in range(1, 6)]
    # The plain sigmoid net's first layer is decades below its output layer at step 0.
    first, last = lines["log10/grad_norm/layer_01"][0], lines["log10/grad_norm/layer_05"][0]
    assert first[1] == last[1] == 0 and first[2] < last[2] - 1


def test_hparams_columns_are_what_a_researcher_varies_and_the_results(server):
    experiment = server.get("/data/plugin/hparams/experiment", {"experimentName": ""})
    columns = {h["name"]: h for h in experiment["hparamInfos"]}
    assert {"model", "depth", "width", "activation", "init", "optimizer", "lr", "batch_size",
            "seed", "train_size", "verdict", "grad_ratio_step0"} <= set(columns)  # fmt: skip
    assert not [c for c in columns if "_target_" in c or c.startswith(("paths", "callbacks"))]
    # Composed by hand, a model is named by its class (through Hydra, by its option).
    assert sorted(columns["model"]["domainDiscrete"]) == ["BNMLP", "MLP"]
    assert set(columns["verdict"]["domainDiscrete"]) <= {"healthy", "vanishing", "saturated"}
    metrics = [m["name"]["tag"] for m in experiment["metricInfos"]]
    assert metrics == ["val/acc", "val/acc_best", "val/loss"]
    groups = server.get(
        "/data/plugin/hparams/session_groups",
        {"experimentName": "", "allowedStatuses": ["STATUS_SUCCESS"], "colParams": [],
         "startIndex": 0, "sliceSize": 10},
    )["sessionGroups"]  # fmt: skip
    assert sorted(g["name"] for g in groups) == list(RUNS)
    for group in groups:
        assert {m["name"]["tag"] for m in group["metricValues"]} == set(metrics)
    tags = [t for per_run in server.get("/data/plugin/scalars/tags").values() for t in per_run]
    assert not [t for t in tags if t.startswith("hp/")]  # no one-point charts at step 0


def test_the_sweep_report_is_a_run_of_its_own(server):
    images = server.get("/data/plugin/images/tags")["report"]
    assert {"report/val_acc", "report/grad_norm_by_layer"} <= set(images)
    text = server.get("/data/plugin/text/tags")["report"]
    assert text == ["report/tables/text_summary"]
