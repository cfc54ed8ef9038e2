"""TensorBoard's dashboards in headless Chromium, on a 2-run sweep made by scripts/train.py:
the Custom Scalars layout's charts, every figure rendered, the HParams table (slow)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gradflow.diagnostics import LAYOUT
from gradflow.reporting.browser import (
    browser_page,
    chromium,
    open_dashboard,
    rendered_images,
    tensorboard,
)
from tests.helpers import SIGMOID_BN_JOBS, SIGMOID_BN_SWEEP, train_sweep

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(chromium() is None, reason="needs Chromium (apt-get install chromium)"),
]
JOBS = SIGMOID_BN_JOBS


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Path:
    sweep = train_sweep(tmp_path_factory.mktemp("browser"), *SIGMOID_BN_SWEEP)
    assert sorted(p.name for p in sweep.iterdir()) == [*JOBS, "multirun.yaml", "report"]
    return sweep


def _drawn(path: Path) -> int:
    """How many distinct colours a picture has: a blank one has one or two."""
    with Image.open(path) as image:
        return len(np.unique(np.asarray(image.convert("RGB")).reshape(-1, 3), axis=0))


def test_dashboards_show_the_layout_the_figures_and_the_table(sweep, tmp_path):
    with tensorboard(sweep, runs=len(JOBS) + 1) as base, browser_page(1400, 2400) as page:
        first_category = next(iter(LAYOUT))
        open_dashboard(page, base, "custom_scalars", first_category)
        for category, charts in LAYOUT.items():
            assert page.get_by_text(category).count() >= 1, category
            for title in charts:
                assert page.get_by_text(title).count() >= 1, title
        page.screenshot(path=tmp_path / "custom_scalars.png")
        charts = page.locator("svg")  # every chart draws its lines as SVG
        assert charts.count() >= sum(len(c) for c in LAYOUT.values())

        open_dashboard(page, base, "images", "figures/grad_norm_by_layer")
        pictures = rendered_images(page)
        assert len(pictures) >= 2 * len(JOBS)  # two figures of each run at least
        for i, picture in enumerate(pictures[:4]):
            picture.screenshot(path=tmp_path / f"image_{i}.png")
            assert _drawn(tmp_path / f"image_{i}.png") > 20, f"image {i} is blank"
        page.screenshot(path=tmp_path / "images.png")

        open_dashboard(page, base, "hparams", "verdict")
        for job in JOBS:
            assert page.get_by_text(job).count() >= 1, job
        page.screenshot(path=tmp_path / "hparams.png")
    for name in ("custom_scalars", "images", "hparams"):
        assert _drawn(tmp_path / f"{name}.png") > 50, name
