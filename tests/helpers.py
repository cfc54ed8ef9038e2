"""Constants the tests share."""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]

# A run small enough for a unit test: offline sample, no download attempt, one epoch.
TINY = [
    "data.train_size=256",
    "data.val_size=128",
    "data.download=false",
    "trainer.max_epochs=1",
    "trainer.enable_progress_bar=false",
    "model.width=32",
]
