"""The activation figures are drawn from the registry: every entry, and nothing hard-coded."""

from __future__ import annotations

import runpy
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from torch import nn

from gradflow.nn.activations import ACTIVATIONS, ActivationInfo
from gradflow.reporting.activation_plots import (
    GRID_FILE,
    OVERLAY_FILE,
    activation_curve,
    activation_grid_figure,
    derivative_overlay_figure,
)
from gradflow.rules.nn import ACTIVATION_PARAMS
from tests.helpers import REPO_ROOT


def _titles(fig) -> list[str]:
    return [ax.get_title().split(" ")[0] for ax in fig.axes if ax.get_title()]


def test_script_writes_grid_and_overlay_covering_the_registry(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    # In-process through the script's own main: the CLI path without a second torch import.
    script = runpy.run_path(str(REPO_ROOT / "scripts" / "plot_activations.py"), run_name="cli")
    script["main"](["--out", str(tmp_path), "--range", "-4", "4"])
    assert capsys.readouterr().out.split() == [
        str(tmp_path / GRID_FILE),
        str(tmp_path / OVERLAY_FILE),
    ]
    for name in (GRID_FILE, OVERLAY_FILE):
        with Image.open(tmp_path / name) as image:
            assert image.format == "PNG" and image.mode == "RGBA" and image.width > 600
            pixels = np.asarray(image.convert("L"))
        assert (tmp_path / name).stat().st_size > 20_000 and len(np.unique(pixels)) > 20


def test_figures_follow_the_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    # A new registry entry (both halves: what torch builds, what a config may say) appears
    # in both figures without touching the plotting code.
    extra = ActivationInfo("hardtanh_test", nn.Hardtanh, "two_sided", "tanh", "xavier_uniform")
    monkeypatch.setitem(ACTIVATIONS, extra.name, extra)
    monkeypatch.setitem(ACTIVATION_PARAMS, extra.name, {})
    curves = [activation_curve(name, (-3.0, 3.0), points=61) for name in ACTIVATIONS]
    assert _titles(activation_grid_figure(curves)) == list(ACTIVATIONS)
    overlay = derivative_overlay_figure(curves)
    legend = [t.get_text() for t in overlay.legends[0].get_texts()]
    assert legend == list(ACTIVATIONS)


def test_saturation_band_is_where_the_slope_is_small() -> None:
    z_at = {-5.0: 0, 1.0: 60, 5.0: 100}  # indexes into a 101-point grid on [-5, 5]
    sigmoid = activation_curve("sigmoid", (-5.0, 5.0), points=101)
    assert [bool(sigmoid.saturated[i]) for i in z_at.values()] == [True, False, True]
    relu = activation_curve("relu", (-5.0, 5.0), points=101)
    assert [bool(relu.saturated[i]) for i in z_at.values()] == [True, False, False]
    assert not activation_curve("identity", (-5.0, 5.0), points=101).saturated.any()
    assert np.allclose(sigmoid.slope, sigmoid.value * (1 - sigmoid.value))
