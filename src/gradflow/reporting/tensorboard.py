"""A sweep's report as a TensorBoard run of its own: `tensorboard --logdir <sweep dir>` shows
compare.py's figures (Images), its tables (Text) and the HParams table's definition.

The run is the report folder (`<sweep>/report`); it is rewritten whole each time the
report is. Its HParams definition lists every column the sweep's jobs wrote, with every
value a text column took as its choices (so the verdict filters by checkbox), the
columns that differ across the sweep first.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from google.protobuf import struct_pb2
from PIL import Image
from tensorboard.compat.proto.summary_pb2 import Summary, SummaryMetadata
from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2

from gradflow.names import HPARAMS_METRICS
from gradflow.reporting.events import find_event_files

REPORT_TAG = "report"


def sweep_definition(rows: list[Mapping[str, Any]]) -> Any:
    """The HParams table's definition (a Summary) for a sweep's rows: every column, each text
    column's values as its choices, and the columns whose values differ marked so, which
    TensorBoard lists (and shows) first; the metric tags."""
    columns: dict[str, list[Any]] = {}
    for row in rows:
        for key, value in row.items():
            columns.setdefault(key, []).append(value)
    experiment = api_pb2.Experiment(
        hparam_infos=[_column(name, values) for name, values in columns.items()],
        metric_infos=[api_pb2.MetricInfo(name=api_pb2.MetricName(tag=t)) for t in HPARAMS_METRICS],
    )
    content = plugin_data_pb2.HParamsPluginData(
        experiment=experiment, version=metadata.PLUGIN_DATA_VERSION
    )
    plugin = SummaryMetadata.PluginData(
        plugin_name=metadata.PLUGIN_NAME, content=content.SerializeToString()
    )
    value = Summary.Value(tag=metadata.EXPERIMENT_TAG, metadata=SummaryMetadata(plugin_data=plugin))
    return Summary(value=[value])


def _column(name: str, values: list[Any]) -> Any:
    differs = len({str(v) for v in values}) > 1
    if all(isinstance(v, bool) for v in values):
        return api_pb2.HParamInfo(name=name, type=api_pb2.DATA_TYPE_BOOL, differs=differs)
    if all(isinstance(v, int | float) for v in values):
        return api_pb2.HParamInfo(name=name, type=api_pb2.DATA_TYPE_FLOAT64, differs=differs)
    choices = struct_pb2.ListValue(
        values=[struct_pb2.Value(string_value=v) for v in sorted({str(v) for v in values})]
    )
    return api_pb2.HParamInfo(
        name=name, type=api_pb2.DATA_TYPE_STRING, domain_discrete=choices, differs=differs
    )


def write_report_run(
    out_dir: Path, pictures: Mapping[str, Path], markdown: str, rows: list[Mapping[str, Any]]
) -> None:
    """The report folder as a TensorBoard run: each PNG as an image, the Markdown as text,
    and, when the runs wrote HParams rows, the table's definition."""
    # Here, not at the top: torch takes seconds to import, and compare.py --help needs none.
    from torch.utils.tensorboard import SummaryWriter
    from torch.utils.tensorboard.writer import FileWriter

    for old in find_event_files(out_dir):
        if old.parent == out_dir:
            old.unlink()
    with SummaryWriter(log_dir=str(out_dir)) as writer:
        for name, path in pictures.items():
            with Image.open(path) as image:
                pixels = np.asarray(image.convert("RGB"))
            writer.add_image(f"{REPORT_TAG}/{Path(name).stem}", pixels, 0, dataformats="HWC")
        writer.add_text(f"{REPORT_TAG}/tables", markdown, 0)
    if rows:  # a raw summary: FileWriter's add_summary (SummaryWriter has no public one)
        definition = FileWriter(str(out_dir))
        definition.add_summary(sweep_definition(rows))
        definition.close()
