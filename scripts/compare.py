"""Compare finished runs: summary tables (Markdown + CSV) and PNG figures in one folder."""

from __future__ import annotations

import argparse
import sys

from gradflow.errors import GradflowError
from gradflow.reporting.compare import DEFAULT_LAYERS, compare
from gradflow.reporting.plotting import FORMATS


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=(
            "Read finished runs (summary.json + TensorBoard events) and write summary.md, "
            "summary.csv (one row per run), summary_seeds.csv (mean ± std over seeds and the "
            "95% interval of the mean), summary_layers.csv (per config and layer, at init and "
            "at the end), figures (val_acc, train_acc, their *_seeds bands, "
            "grad_norm_by_layer, activation_histograms) and all "
            "of it as a TensorBoard run, so `tensorboard --logdir <sweep>` shows the report."
        )
    )
    parser.add_argument(
        "paths",
        nargs="+",
        metavar="PATH",
        help="a multirun dir (its job dirs are found), run dirs, or quoted globs",
    )
    parser.add_argument(
        "--out",
        default=None,
        help="output folder (default: PATH/report for one directory, else reports/compare)",
    )
    parser.add_argument(
        "--layers",
        nargs="+",
        default=list(DEFAULT_LAYERS),
        help="layers whose activation histograms to draw; 'last' means each run's last "
        f"hidden layer (default: {' '.join(DEFAULT_LAYERS)})",
    )
    parser.add_argument(
        "--format",
        nargs="+",
        default=["png"],
        choices=list(FORMATS),
        help="figure formats besides the PNGs TensorBoard shows (default: png)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        comparison = compare(args.paths, args.out, args.layers, args.format)
    except GradflowError as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    print(comparison.markdown)
    for path in comparison.files.values():
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
