"""Plot every registered activation and its derivative (grid + derivative overlay)."""

from __future__ import annotations

import argparse

from gradflow.reporting.activation_plots import write_activation_plots


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=(
            "Draw f and f' of every activation in the registry: a grid (one panel each, "
            "saturation band |f'| < 0.1*max|f'| shaded) and an overlay of all f'."
        )
    )
    parser.add_argument(
        "--out", default="reports/activations", help="output folder (default: %(default)s)"
    )
    parser.add_argument(
        "--range",
        nargs=2,
        type=float,
        default=(-6.0, 6.0),
        metavar=("LOW", "HIGH"),
        help="z range to draw (default: -6 6)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    plots = write_activation_plots(args.out, tuple(args.range))
    print(plots.grid)
    print(plots.overlay)


if __name__ == "__main__":
    main()
