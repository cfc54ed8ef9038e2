"""The comparison tables: one row per run, and one row per config aggregated over seeds."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from gradflow.config import override_key
from gradflow.names import (
    FINISHED,
    FIRST_LAST_RATIO,
    GRAD_NORM,
    GRAD_NORM_BIAS,
    INITIALISATION,
    TRAIN_ACC,
    TRAIN_LOSS,
    VAL_ACC,
    VAL_ACC_BEST,
    VAL_LOSS,
)
from gradflow.reporting.events import layer_number, layer_values
from gradflow.reporting.runs import SEED_KEY, Run, run_labels

RUN_COLUMNS = [
    "run",
    "label",
    "status",
    "overrides",
    "seed",
    "val_acc_final",
    "val_acc_best",
    "train_acc_final",
    "val_loss_final",
    "train_loss_final",
    "grad_ratio_first",
    "grad_ratio_last",
    "verdict_init",
    "verdict",
    "epochs",
    "steps",
    "total_s",
    "data_source",
    "error",
    "run_dir",
]
AGGREGATED_METRICS = ["val_acc_final", "val_acc_best", "train_acc_final"]


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _final(run: Run, tag: str) -> float:
    """The summary's final value of `tag`, else the last value in the event files."""
    value = _number(run.get("metrics", "final", tag))
    if math.isnan(value):
        series = run.events.scalar(tag)
        value = float(series.iloc[-1]) if len(series) else math.nan
    return value


def _best_val_acc(run: Run) -> float:
    value = _number(run.get("metrics", "best", VAL_ACC_BEST))
    if math.isnan(value):
        best = run.events.scalar(VAL_ACC_BEST)
        value = float(best.iloc[-1]) if len(best) else math.nan
    if math.isnan(value):
        val = run.events.scalar(VAL_ACC)
        value = float(val.max()) if len(val) else math.nan
    return value


def _grad_ratio(run: Run, which: str) -> float:
    """first/output layer gradient ratio at the first or last logged step: summary, else events."""
    value = _number(run.get("grad_norms", f"{which}_step", "first_last_ratio"))
    if not math.isnan(value):
        return value
    ratio = run.events.scalar(FIRST_LAST_RATIO)
    if len(ratio):
        return float(ratio.iloc[0] if which == "first" else ratio.iloc[-1])
    _, layers = layer_values(run.events, GRAD_NORM, which)
    if len(layers) >= 2 and layers.iloc[-1] != 0:
        return float(layers.iloc[0] / layers.iloc[-1])
    return math.nan


def _verdict_at_init(run: Run) -> str:
    """The labels of the verdict's initialisation phase (step 0), joined by '+'; empty for a
    summary without a timeline."""
    phases = run.get("verdict", "timeline")
    if not isinstance(phases, list):
        return ""
    first = next((p for p in phases if p.get("phase") == INITIALISATION), None)
    return "+".join(map(str, first.get("labels", []))) if first else ""


def _verdict(run: Run) -> str:
    labels = run.get("verdict", "labels")
    if isinstance(labels, str):
        return labels
    return "+".join(map(str, labels)) if isinstance(labels, list) else ""


def run_row(run: Run, label: str) -> dict[str, Any]:
    """One run's row: identity, status, final/best metrics, gradient ratios, verdict, cost."""
    return {
        "run": run.name,
        "label": label,
        "status": run.status,
        "overrides": " ".join(run.overrides),
        "seed": run.seed,
        "val_acc_final": _final(run, VAL_ACC),
        "val_acc_best": _best_val_acc(run),
        "train_acc_final": _final(run, TRAIN_ACC),
        "val_loss_final": _final(run, VAL_LOSS),
        "train_loss_final": _final(run, TRAIN_LOSS),
        "grad_ratio_first": _grad_ratio(run, "first"),
        "grad_ratio_last": _grad_ratio(run, "last"),
        "verdict_init": _verdict_at_init(run),
        "verdict": _verdict(run),
        "epochs": run.get("epochs"),
        "steps": run.get("steps"),
        "total_s": _number(run.get("timing", "total_s")),
        "data_source": run.get("data", "source"),
        "error": run.error,
        "run_dir": str(run.path),
    }


def runs_table(runs: Sequence[Run]) -> pd.DataFrame:
    """One row per run, plus one column per override key (its value, empty where unset)."""
    labels = run_labels(runs)
    table = pd.DataFrame([run_row(run, labels[run.path]) for run in runs], columns=RUN_COLUMNS)
    for column in ("epochs", "steps"):  # whole numbers, blank where a run never got there
        table[column] = pd.to_numeric(table[column], errors="coerce").round().astype("Int64")
    keys = list(dict.fromkeys(k for run in runs for k in run.override_map if k != SEED_KEY))
    position = RUN_COLUMNS.index("seed")
    for key in keys:
        column = key if key not in table.columns else f"override.{key}"
        values = [run.override_map.get(key) for run in runs]
        table.insert(position, column, values)
        position += 1
    return table


def ci95_halfwidth(values: pd.Series | np.ndarray) -> float:
    """Half the width of the 95% confidence interval of the mean of the finite `values`:
    Student's t quantile (n - 1 degrees of freedom) times the standard error; NaN for
    fewer than 2 values. Seeds are few (3 to 10), so t, not the normal's 1.96: 4.30 for 3."""
    finite = np.asarray(values, dtype=float)
    finite = finite[np.isfinite(finite)]
    n = finite.size
    if n < 2:
        return math.nan
    return float(stats.t.ppf(0.975, n - 1) * finite.std(ddof=1) / math.sqrt(n))


def _geometric(values: pd.Series) -> tuple[float, float]:
    """Geometric mean and std factor of the positive finite values (ratios span decades)."""
    logs = np.log(values[np.isfinite(values) & (values > 0)].to_numpy(float))
    if logs.size == 0:
        return math.nan, math.nan
    spread = math.exp(logs.std(ddof=1)) if logs.size > 1 else math.nan
    return math.exp(logs.mean()), spread


def _count_text(items: Sequence[str]) -> str:
    return ", ".join(f"{count} {item}" for item, count in Counter(items).items())


def config_labels(groups: Sequence[tuple[str, ...]]) -> list[str]:
    """Per group, its overrides that not every group shares: a short name for a config."""
    shared = set.intersection(*(set(g) for g in groups)) if groups else set()
    names = [" ".join(o for o in g if o not in shared) for g in groups]
    return names if all(names) and len(set(names)) == len(names) else [" ".join(g) for g in groups]


def seeds_table(runs: Sequence[Run], table: pd.DataFrame) -> pd.DataFrame:
    """One row per config that was run with several seeds: mean ± std (sample std) and the
    95% confidence interval of the mean (`_ci95`: its half-width) per metric.

    Means use completed and diverged runs (outcomes of the config); the other statuses are
    counted in `statuses` but left out. `n_seeds` is the number of runs the means use.
    """
    groups: dict[tuple[str, ...], list[int]] = {}
    for i, run in enumerate(runs):
        groups.setdefault(run.group_key, []).append(i)
    seeded = {key: members for key, members in groups.items() if len(members) >= 2}
    rows = []
    for (key, members), label in zip(seeded.items(), config_labels(list(seeded)), strict=True):
        rows_of = table.iloc[members]
        # Finished runs only: the others stopped for reasons outside the config.
        used = rows_of[rows_of["status"].isin(FINISHED)]
        row: dict[str, Any] = {
            "config": " ".join(key) or "(no overrides)",
            "label": label or "(no overrides)",
            **{override_key(o): o.split("=", 1)[1] for o in key if "=" in o},
            "n_seeds": len(used),
            "seeds": ",".join(str(s) for s in used["seed"] if pd.notna(s)),
            "statuses": _count_text(list(rows_of["status"])),
        }
        for metric in AGGREGATED_METRICS:
            values = used[metric].astype(float)
            row[f"{metric}_mean"] = values.mean()
            row[f"{metric}_std"] = values.std(ddof=1)
            row[f"{metric}_ci95"] = ci95_halfwidth(values)
        for which in ("first", "last"):
            mean, spread = _geometric(used[f"grad_ratio_{which}"].astype(float))
            row[f"grad_ratio_{which}_gmean"] = mean
            row[f"grad_ratio_{which}_gstd"] = spread
        verdicts = [v for v in used["verdict"] if v]
        row["verdicts"] = _count_text(verdicts)
        rows.append(row)
    return pd.DataFrame(rows)


def _fmt(value: Any, spec: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return format(value, spec) if isinstance(value, int | float) else str(value)


def _pm(mean: float, std: float, spec: str, ci95: float = math.nan) -> str:
    """`mean ± std`, and `[low, high]` (the 95% interval of the mean) when known."""
    if math.isnan(mean):
        return "—"
    text = _fmt(mean, spec) + ("" if math.isnan(std) else " ± " + _fmt(std, spec))
    if not math.isnan(ci95):
        text += f" [{_fmt(mean - ci95, spec)}, {_fmt(mean + ci95, spec)}]"
    return text


def _times(gmean: float, factor: float) -> str:
    if math.isnan(gmean):
        return "—"
    return _fmt(gmean, ".2e") + ("" if math.isnan(factor) else f" ×/÷ {factor:.3g}")


def _shorten(text: str, limit: int = 32) -> str:
    # Hydra job folders can hold every override; the label column already says what varies.
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def markdown_table(rows: Sequence[dict[str, str]]) -> str:
    """A GitHub-flavoured Markdown table from rows of already formatted text."""
    if not rows:
        return "_none_\n"
    header = list(rows[0])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(row[h]) for h in header) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def runs_markdown(table: pd.DataFrame) -> str:
    rows = [
        {
            "run": _shorten(r["run"]),
            "overrides": r["label"],
            "status": r["status"],
            "val acc (final)": _fmt(r["val_acc_final"], ".4f"),
            "val acc (best)": _fmt(r["val_acc_best"], ".4f"),
            "train acc (final)": _fmt(r["train_acc_final"], ".4f"),
            "grad ratio first step": _fmt(r["grad_ratio_first"], ".2e"),
            "grad ratio last step": _fmt(r["grad_ratio_last"], ".2e"),
            "verdict at init": r["verdict_init"] or "—",
            "verdict": r["verdict"] or "—",
        }
        for r in table.to_dict("records")
    ]
    return markdown_table(rows)


def seeds_markdown(seeds: pd.DataFrame) -> str:
    rows = [
        {
            "config": r["label"],
            "seeds": f"{r['n_seeds']} ({r['seeds']})" if r["seeds"] else str(r["n_seeds"]),
            "statuses": r["statuses"],
            **{
                name: _pm(r[f"{m}_mean"], r[f"{m}_std"], ".4f", r[f"{m}_ci95"])
                for name, m in (
                    ("val acc (final)", "val_acc_final"),
                    ("val acc (best)", "val_acc_best"),
                    ("train acc (final)", "train_acc_final"),
                )
            },
            "grad ratio first step": _times(
                r["grad_ratio_first_gmean"], r["grad_ratio_first_gstd"]
            ),
            "verdicts": r["verdicts"] or "—",
        }
        for r in seeds.to_dict("records")
    ]
    return markdown_table(rows)


# The per-layer statistics summary.json keeps for the first and the last probe/logged step:
# the probe's (activations.first_probe / last_probe) and GradientMonitor's
# (grad_norms.first_step / last_step; the weight-gradient norm under the layer's name).
LAYER_STATISTICS = [
    "act_mean",
    "act_std",
    "act_saturated",
    "grad_signal",
    GRAD_NORM,
    GRAD_NORM_BIAS,
]
# The ones markdown shows (the CSV has them all).
LAYER_MARKDOWN_STATISTICS = ["act_std", "grad_signal", GRAD_NORM, GRAD_NORM_BIAS]
WHEN = {"init": "first", "end": "last"}


def _layer_stats(run: Run, which: str) -> dict[str, dict[str, float]]:
    """{layer: {statistic: value}} at the run's first or last probe and logged step."""
    out: dict[str, dict[str, float]] = {}
    probe = run.get("activations", f"{which}_probe") or {}
    grads = run.get("grad_norms", f"{which}_step") or {}
    for key, value in [*probe.items(), *grads.items()]:
        stat, _, layer = key.rpartition("/")
        if not layer.startswith("layer_"):
            continue
        stat = stat or GRAD_NORM  # GradientMonitor's rows key the weight norm by layer alone
        if stat in LAYER_STATISTICS:
            out.setdefault(layer, {})[stat] = _number(value)
    return out


def layers_table(runs: Sequence[Run]) -> pd.DataFrame:
    """One row per config, moment (`init`: step 0, `end`: the last probe and logged step) and
    tracked layer: each statistic's mean over the config's finished runs (all of its runs
    when none finished), and how many runs it averages."""
    groups: dict[tuple[str, ...], list[Run]] = {}
    for run in runs:
        groups.setdefault(run.group_key, []).append(run)
    rows = []
    for members, label in zip(groups.values(), config_labels(list(groups)), strict=True):
        finished = [r for r in members if r.status in FINISHED] or members
        label = label or "(no overrides)"
        for when, which in WHEN.items():
            stats = [_layer_stats(run, which) for run in finished]
            layers = sorted({name for s in stats for name in s}, key=layer_number)
            for layer in layers:
                row: dict[str, Any] = {"config": label, "when": when, "layer": layer}
                for stat in LAYER_STATISTICS:
                    values = [s.get(layer, {}).get(stat, math.nan) for s in stats]
                    row[stat] = float(np.nanmean(values)) if np.isfinite(values).any() else math.nan
                row["n_runs"] = len(stats)
                rows.append(row)
    return pd.DataFrame(rows, columns=["config", "when", "layer", *LAYER_STATISTICS, "n_runs"])


def layers_markdown(layers: pd.DataFrame) -> str:
    """Per statistic, a table of layers × (config, moment), in 2 significant digits."""
    if layers.empty:
        return "No run recorded per-layer statistics.\n"
    parts = []
    for stat in LAYER_MARKDOWN_STATISTICS:
        wide = layers.pivot_table(stat, index="layer", columns=["config", "when"], sort=False)
        if wide.isna().all().all():
            continue
        order = sorted(wide.index, key=layer_number)
        rows = [
            {
                "layer": layer,
                **{f"{c} ({w})": _fmt(wide.loc[layer, (c, w)], ".2g") for c, w in wide},
            }
            for layer in order
        ]
        parts += [f"**{stat}**\n", markdown_table(rows)]
    return "\n".join(parts)
