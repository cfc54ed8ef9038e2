"""Signal propagation at initialisation: activation std and gradient norm per layer.

No training: each configuration is built, sees one batch forward and backward
(cross-entropy), and its tracked layers are measured. This is the textbook
vanishing/exploding-gradient exercise, run for a grid of depths, inits and activations.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from torch import nn
from torch.nn import functional as F

from gradflow.nn.activations import activation_params
from gradflow.nn.init import init_params
from gradflow.nn.models import BNMLP, MLP, ResMLP, TrackedModel
from gradflow.reporting.plotting import new_figure, save_figure
from gradflow.reporting.probe_data import ProbeBatch, load_probe_batch

Spec = str | dict[str, Any]

MODEL_FAMILIES: dict[str, type[TrackedModel]] = {"mlp": MLP, "bn_mlp": BNMLP, "res_mlp": ResMLP}
RECORD_COLUMNS = [
    "depth",
    "init",
    "activation",
    "model",
    "layer",
    "layer_index",
    "act_std",
    "grad_norm",
]
CONFIG_COLUMNS = ["depth", "init", "activation", "model"]
DEFAULT_DEPTHS = (10, 20, 50)
DEFAULT_INITS = ("normal:std=1.0", "xavier_uniform", "kaiming_normal")
DEFAULT_ACTIVATIONS = ("tanh", "relu")
CSV_FILE = "probe_init.csv"
SUMMARY_FILE = "probe_summary.csv"
ACT_STD_FILE = "act_std_by_layer.png"
GRAD_NORM_FILE = "grad_norm_by_layer.png"


@dataclass(frozen=True)
class ProbeResult:
    """Per-layer records (long format), the per-config summary, and the batch's source."""

    records: pd.DataFrame
    summary: pd.DataFrame
    source: str
    description: str


def _parse_value(text: str) -> Any:
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(text.lower(), text)


def parse_spec(text: str) -> Spec:
    """`name` or `name:key=value[:key=value...]` -> the registry spec (a name or a mapping)."""
    name, *pairs = text.strip().split(":")
    if not name:
        raise ValueError(f"empty name in spec '{text}'; write NAME or NAME:KEY=VALUE")
    params: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key or not value:
            raise ValueError(f"bad parameter '{pair}' in spec '{text}'; write NAME:KEY=VALUE")
        params[key] = _parse_value(value)
    return {"name": name, **params} if params else name


def split_list(values: Iterable[str]) -> list[str]:
    """Flatten command-line values that may also be comma-separated: ['a,b', 'c'] -> [a, b, c]."""
    return [item.strip() for value in values for item in str(value).split(",") if item.strip()]


def spec_label(name: str, params: Mapping[str, Any]) -> str:
    """The canonical text of a spec, every parameter shown: `normal:std=1`, `tanh`."""
    shown = [f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items()]
    return ":".join([name, *shown])


def init_label(spec: Spec) -> str:
    return spec_label(*init_params(spec))


def activation_label(spec: Spec) -> str:
    name = spec if isinstance(spec, str) else spec["name"]
    return spec_label(name, activation_params(spec))


def build_model(model: str, depth: int, width: int, init: Spec, activation: Spec) -> TrackedModel:
    """A freshly initialised model of the family `model` with `depth` hidden layers of `width`."""
    if model not in MODEL_FAMILIES:
        raise ValueError(f"unknown model '{model}'; choose one of: {', '.join(MODEL_FAMILIES)}")
    return MODEL_FAMILIES[model](activation=activation, init=init, depth=depth, width=width)


def probe_model(model: TrackedModel, x: torch.Tensor, y: torch.Tensor) -> pd.DataFrame:
    """One forward/backward pass; per tracked layer: activation std and weight-gradient L2 norm."""
    act_std: dict[str, float] = {}

    def recorder(name: str) -> Callable[..., None]:
        def hook(_module: nn.Module, _inputs: Any, output: torch.Tensor) -> None:
            # float64: a float32 sum of squares overflows once entries pass ~1e19.
            act_std[name] = float(output.detach().double().std())

        return hook

    handles = [
        module.register_forward_hook(recorder(name))
        for name, module in model.activation_modules().items()
    ]
    try:
        model.train()  # BatchNorm normalises with batch statistics, as in the first training step
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
    finally:
        for handle in handles:
            handle.remove()
    rows = []
    for index, (name, layer) in enumerate(model.tracked_layers().items(), start=1):
        grad = layer.weight.grad
        rows.append(
            {
                "layer": name,
                "layer_index": index,
                "act_std": act_std.get(name, math.nan),  # the output layer has no activation
                "grad_norm": float(grad.double().norm()) if grad is not None else math.nan,
            }
        )
    return pd.DataFrame(rows)


def _check_depths(model: str, depths: Sequence[int]) -> None:
    bad = [d for d in depths if d < 1 or (model == "res_mlp" and d % 2 == 0)]
    if bad:
        rule = (
            "odd and >= 1 for res_mlp (projection + 2 per block)" if model == "res_mlp" else ">= 1"
        )
        raise ValueError(f"depths must be {rule}; got {', '.join(map(str, bad))}")


@contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Run the block with `threads` intra-op threads (None: leave as is), then restore."""
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def run_probe(
    depths: Sequence[int] = DEFAULT_DEPTHS,
    inits: Sequence[str | Spec] = DEFAULT_INITS,
    activations: Sequence[str | Spec] = DEFAULT_ACTIVATIONS,
    model: str = "mlp",
    width: int = 128,
    batch: int = 256,
    seed: int = 0,
    data_dir: str | Path = "data/MNIST/raw",
    probe_batch: ProbeBatch | None = None,
    threads: int | None = 1,
) -> ProbeResult:
    """Probe every depth x init x activation at init; specs may be text (`normal:std=1.0`).

    One thread by default: the matrices are small, and on a busy machine extra intra-op
    threads spin-wait on each other (measured 50x slower on 2 loaded cores).
    """
    init_specs = [parse_spec(s) if isinstance(s, str) else s for s in inits]
    act_specs = [parse_spec(s) if isinstance(s, str) else s for s in activations]
    # Validate everything before any model is built, so a typo costs no work.
    init_labels = [init_label(s) for s in init_specs]
    act_labels = [activation_label(s) for s in act_specs]
    if model not in MODEL_FAMILIES:
        raise ValueError(f"unknown model '{model}'; choose one of: {', '.join(MODEL_FAMILIES)}")
    _check_depths(model, depths)
    if width < 1:
        raise ValueError(f"width must be >= 1, got {width}")
    data = probe_batch or load_probe_batch(batch, data_dir, seed)

    frames = []
    grid = itertools.product(
        depths, zip(init_specs, init_labels, strict=True), zip(act_specs, act_labels, strict=True)
    )
    with torch_threads(threads):
        for depth, (init, i_label), (act, a_label) in grid:
            torch.manual_seed(seed)  # each config's weights depend on the seed only, not order
            net = build_model(model, depth, width, init, act)
            frame = probe_model(net, data.x, data.y)
            frame.insert(0, "depth", depth)
            frame.insert(1, "init", i_label)
            frame.insert(2, "activation", a_label)
            frame.insert(3, "model", model)
            frames.append(frame)
    records = pd.concat(frames, ignore_index=True)[RECORD_COLUMNS]
    return ProbeResult(records, summarise_probe(records), data.source, data.description)


def summarise_probe(records: pd.DataFrame) -> pd.DataFrame:
    """Per config: first- and last-layer gradient norm, their ratio, last hidden act std."""
    rows = []
    for key, group in records.groupby(CONFIG_COLUMNS, sort=False):
        group = group.sort_values("layer_index")
        first, last = group["grad_norm"].iloc[0], group["grad_norm"].iloc[-1]
        hidden = hidden_layers(group)["act_std"]
        rows.append(
            {
                **dict(zip(CONFIG_COLUMNS, key, strict=True)),
                "grad_first": first,
                "grad_last": last,
                "ratio": first / last if last != 0 else math.nan,
                "act_std_last_hidden": hidden.iloc[-1] if len(hidden) else math.nan,
            }
        )
    return pd.DataFrame(rows)


def format_summary(summary: pd.DataFrame) -> str:
    """The summary as an aligned text table, numbers in 3 significant digits."""
    return summary.to_string(index=False, float_format=lambda v: f"{v:.3g}")


def hidden_layers(records: pd.DataFrame) -> pd.DataFrame:
    """Rows of hidden layers only: every family tracks `depth` hidden layers, then the output."""
    return records[records["layer_index"] <= records["depth"]]


def _plot_per_depth(records: pd.DataFrame, column: str, ylabel: str, title: str) -> Figure:
    depths = sorted(records["depth"].unique())
    fig, axes = new_figure(1, len(depths), panel_size=(4.4, 3.4), sharey=True)
    inits = list(dict.fromkeys(records["init"]))
    activations = list(dict.fromkeys(records["activation"]))
    styles = ["-", "--", ":", "-."]
    for ax, depth in zip(axes.flat, depths, strict=False):
        configs = records[records["depth"] == depth].groupby(["init", "activation"], sort=False)
        for (init, act), group in configs:
            style = {
                "color": f"C{inits.index(init) % 10}",
                "linestyle": styles[activations.index(act) % len(styles)],
            }
            x = group["layer_index"].to_numpy()
            y = group[column].to_numpy(dtype=float)
            shown = np.isfinite(y) & (y > 0)  # a log axis cannot show 0, inf or NaN
            ax.plot(x[shown], y[shown], marker=".", label=f"{act} · {init}", **style)
            # Mark what the log axis drops at the panel's edges, so overflow stays visible.
            edge = ax.get_xaxis_transform()
            for mask, height, marker in ((~np.isfinite(y), 0.97, "x"), (y == 0, 0.03, "v")):
                if mask.any():
                    ax.plot(
                        x[mask],
                        [height] * mask.sum(),
                        marker,
                        color=style["color"],
                        transform=edge,
                        clip_on=False,
                    )
        ax.set_yscale("log")
        ax.set_title(f"depth {depth}")
        ax.set_xlabel("layer (input → output)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3, which="major")
    axes[0, 0].set_ylabel(ylabel)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=min(len(labels), 3))
    fig.suptitle(f"{title}\n(× at top: inf/NaN, ▼ at bottom: 0)")
    return fig


def write_probe_report(
    result: ProbeResult, out_dir: str | Path = "reports/probe_init"
) -> list[Path]:
    """Write the long CSV, the per-config summary CSV and both per-layer plots; return paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model = ", ".join(result.records["model"].unique())
    csv = out_dir / CSV_FILE
    result.records.to_csv(csv, index=False)
    summary = out_dir / SUMMARY_FILE
    result.summary.to_csv(summary, index=False)
    act_fig = _plot_per_depth(
        hidden_layers(result.records),
        "act_std",
        "activation std",
        f"Activation std per layer at init ({model}; {result.source})",
    )
    grad_fig = _plot_per_depth(
        result.records,
        "grad_norm",
        "‖∂loss/∂W‖₂",
        f"Weight-gradient norm per layer at init ({model}; {result.source})",
    )
    return [
        csv,
        summary,
        save_figure(act_fig, out_dir / ACT_STD_FILE),
        save_figure(grad_fig, out_dir / GRAD_NORM_FILE),
    ]
