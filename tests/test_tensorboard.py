"""A real TensorBoard server, started with exactly the flags gradflow prints
(`gradflow.reporting.browser.tensorboard`), on a 2-job sweep and its report: every image
is served, step 0 survives, the Custom Scalars layout, the HParams table and the report
are there (slow: the sweep and the server are subprocesses)."""

from __future__ import annotations

import json
import time
import urllib.parse
import urllib.request

import numpy as np
import pytest
from torch.utils.tensorboard import SummaryWriter

from gradflow.diagnostics import LAYOUT
from gradflow.reporting.browser import tensorboard
from tests.helpers import SIGMOID_BN_JOBS, SIGMOID_BN_SWEEP, train_sweep

pytestmark = pytest.mark.slow
RUNS = SIGMOID_BN_JOBS
# A run with more points per tag than TensorBoard keeps by default (10 images, 1,000
# scalars): only the printed flags serve all of them. (The histograms route draws 51 of
# whatever is kept, whatever the flags.)
LONG_RUN, LONG = "long_run", {"images": 12, "scalars": 1_500}


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


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A 2-job sweep of a 4-layer sigmoid net, plain and with BatchNorm, made by
    scripts/train.py (its jobs, and its report at the end), served by TensorBoard."""
    sweep = train_sweep(tmp_path_factory.mktemp("tensorboard"), *SIGMOID_BN_SWEEP)
    with SummaryWriter(sweep / LONG_RUN) as writer:
        for step in range(LONG["scalars"]):
            writer.add_scalar("long/scalar", step, step)
        for step in range(LONG["images"]):
            writer.add_image("long/image", np.full((3, 4, 4), step / 20), step)
    with tensorboard(sweep, runs=len(RUNS) + 2) as base:
        time.sleep(2)  # every plugin's data read
        yield Server(base)


def test_the_printed_flags_serve_every_point(server):
    served = {
        "images": server.series("images", "images", LONG_RUN, "long/image"),
        "scalars": server.series("scalars", "scalars", LONG_RUN, "long/scalar"),
    }
    assert {kind: len(points) for kind, points in served.items()} == LONG


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
    assert sorted(columns["model"]["domainDiscrete"]) == ["bn_mlp", "mlp"]
    assert set(columns["verdict"]["domainDiscrete"]) <= {
        "healthy",
        "vanishing",
        "saturated",
        "slow",
    }
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
