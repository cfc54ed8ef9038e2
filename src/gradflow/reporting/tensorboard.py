"""A sweep's report as a TensorBoard run of its own: `tensorboard --logdir <sweep dir>` shows
compare.py's figures (Images), its tables (Text) and the HParams table's definition.

The run is the report folder (`<sweep>/report`); it is rewritten whole each time the
report is. Its HParams definition lists every column the sweep's jobs wrote, with every
value a text column took as its choices, so the verdict filters by checkbox.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from torch.utils.tensorboard import SummaryWriter
from torch.utils.tensorboard.summary import hparams as hparams_summaries

from gradflow.names import HPARAMS_METRICS
from gradflow.reporting.events import find_event_files

REPORT_TAG = "report"


def sweep_definition(rows: list[Mapping[str, Any]]) -> Any:
    """The HParams table's definition (a Summary) for a sweep's rows: every column, each text
    column's values as its choices, the metric tags."""
    columns: dict[str, Any] = {}
    for row in rows:
        for key, value in row.items():
            columns.setdefault(key, value)
    choices = {
        key: sorted({str(row[key]) for row in rows if key in row})
        for key, value in columns.items()
        if isinstance(value, str)
    }
    experiment, _, _ = hparams_summaries(columns, dict.fromkeys(HPARAMS_METRICS, 0.0), choices)
    return experiment


def write_report_run(
    out_dir: Path, pictures: Mapping[str, Path], markdown: str, rows: list[Mapping[str, Any]]
) -> None:
    """The report folder as a TensorBoard run: each PNG as an image, the Markdown as text,
    and, when the runs wrote HParams rows, the table's definition."""
    for old in find_event_files(out_dir):
        if old.parent == out_dir:
            old.unlink()
    with SummaryWriter(log_dir=str(out_dir)) as writer:
        for name, path in pictures.items():
            with Image.open(path) as image:
                pixels = np.asarray(image.convert("RGB"))
            writer.add_image(f"{REPORT_TAG}/{Path(name).stem}", pixels, 0, dataformats="HWC")
        writer.add_text(f"{REPORT_TAG}/tables", markdown, 0)
        if rows:
            writer.file_writer.add_summary(sweep_definition(rows))
