"""TensorBoard ``Summary`` protos built without torch: scalars, text, images, histograms,
HParams sessions and custom-scalar layouts.

``torch.utils.tensorboard.summary`` builds the same protos but imports torch (see
``sweep.search.trial._set_threads`` for what that cost a trial process), and a trial of an
analytic family (numpy models) has no other use for torch: its checkpoints are torch-free
too (``sweep.files.checkpoint``). The builders below write what torch's do, field for field
(its ``hparams``, ``histogram``, ``custom_scalars``, ``text`` and ``image``), from
TensorBoard's own protos; TensorBoard and
``EventAccumulator`` read them as before (``tests/test_events.py`` compares them with
torch's).
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
from tensorboard.compat.proto.summary_pb2 import HistogramProto, Summary, SummaryMetadata
from tensorboard.compat.proto.tensor_pb2 import TensorProto
from tensorboard.compat.proto.tensor_shape_pb2 import TensorShapeProto


def scalar_summary(pairs: Iterable[tuple[str, Any]]) -> Summary:
    """The finite numbers among ``(tag, value)`` pairs as scalars of one summary (None, NaN
    and inf are left out: inf would flatten the dashboard's axes)."""
    return Summary(value=[Summary.Value(tag=tag, simple_value=float(value))
                          for tag, value in pairs
                          if isinstance(value, int | float) and math.isfinite(value)])


def image_summary(tag: str, pixels: np.ndarray) -> Summary:
    """An image summary of ``pixels`` (uint8, H x W grey or H x W x 3/4 colour), PNG-encoded,
    as ``torch.utils.tensorboard.summary.image`` writes it."""
    from PIL import Image

    pixels = np.ascontiguousarray(pixels, dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    height, width = pixels.shape[:2]
    channels = pixels.shape[2] if pixels.ndim == 3 else 1
    return Summary(value=[Summary.Value(tag=tag, image=Summary.Image(
        height=height, width=width, colorspace=channels,
        encoded_image_string=buffer.getvalue()))])


def text_summary(tag: str, markdown: str) -> Summary:
    """A text summary under ``<tag>/text_summary`` (TensorBoard's Text tab renders markdown),
    as ``torch.utils.tensorboard.summary.text`` writes it."""
    from tensorboard.plugins.text.plugin_data_pb2 import TextPluginData

    metadata = SummaryMetadata(plugin_data=SummaryMetadata.PluginData(
        plugin_name="text", content=TextPluginData(version=0).SerializeToString()))
    tensor = TensorProto(dtype="DT_STRING", string_val=[markdown.encode("utf_8")],
                         tensor_shape=TensorShapeProto(dim=[TensorShapeProto.Dim(size=1)]))
    return Summary(value=[Summary.Value(tag=f"{tag}/text_summary", metadata=metadata,
                                        tensor=tensor)])


def histogram_summary(tag: str, values: np.ndarray, *, bins: int) -> Summary:
    """A histogram of ``values`` (finite, at least one) in ``bins`` equal bins, as
    ``torch.utils.tensorboard.summary.histogram`` writes it: TensorBoard's legacy
    ``HistogramProto`` with the empty bins at both ends left out but one (it shows only the
    right limit of each bin)."""
    values = np.asarray(values, dtype=np.float64).ravel()
    if not values.size:
        raise ValueError("histogram_summary: no values")
    counts, limits = np.histogram(values, bins=bins)
    nonzero = np.flatnonzero(counts)
    start, end = int(nonzero[0]), int(nonzero[-1]) + 1
    counts = counts[start - 1:end] if start > 0 else np.concatenate([[0], counts[:end]])
    limits = limits[start:end + 1]
    return Summary(value=[Summary.Value(tag=tag, histo=HistogramProto(
        min=values.min(), max=values.max(), num=len(values), sum=values.sum(),
        sum_squares=values.dot(values), bucket_limit=limits.tolist(),
        bucket=counts.tolist()))])


def _hparams_value(content: Any, tag: str) -> Summary:
    """One HParams plugin record (``content``: a field of ``HParamsPluginData``) under ``tag``."""
    from tensorboard.plugins.hparams.metadata import PLUGIN_DATA_VERSION, PLUGIN_NAME
    from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

    data = HParamsPluginData(version=PLUGIN_DATA_VERSION, **content)
    metadata = SummaryMetadata(plugin_data=SummaryMetadata.PluginData(
        plugin_name=PLUGIN_NAME, content=data.SerializeToString()))
    return Summary(value=[Summary.Value(tag=tag, metadata=metadata)])


def hparams_summaries(hparams: Mapping[str, bool | int | float | str | None],
                      metrics: Iterable[str]) -> tuple[Summary, Summary]:
    """The HParams plugin's experiment (the hyperparameters' names and types, the metric
    tags) and session start (this run's values), as ``torch.utils.tensorboard.summary.hparams``
    writes them (a bool counts as a number there, and here)."""
    from tensorboard.plugins.hparams.api_pb2 import (
        DataType,
        Experiment,
        HParamInfo,
        MetricInfo,
        MetricName,
    )
    from tensorboard.plugins.hparams.metadata import EXPERIMENT_TAG, SESSION_START_INFO_TAG
    from tensorboard.plugins.hparams.plugin_data_pb2 import SessionStartInfo

    start = SessionStartInfo()
    infos = []
    for name, value in hparams.items():
        if value is None:
            continue
        if isinstance(value, int | float):
            start.hparams[name].number_value = value
            kind = "DATA_TYPE_FLOAT64"
        elif isinstance(value, str):
            start.hparams[name].string_value = value
            kind = "DATA_TYPE_STRING"
        else:
            raise ValueError(f"hparam {name!r}: {type(value).__name__} is not int, float, "
                             "str or bool")
        infos.append(HParamInfo(name=name, type=DataType.Value(kind)))
    experiment = Experiment(hparam_infos=infos,
                            metric_infos=[MetricInfo(name=MetricName(tag=m)) for m in metrics])
    return (_hparams_value({"experiment": experiment}, EXPERIMENT_TAG),
            _hparams_value({"session_start_info": start}, SESSION_START_INFO_TAG))


def session_end_summary(*, ok: bool) -> Summary:
    """The HParams session's end: STATUS_SUCCESS, or STATUS_FAILURE when not ``ok``."""
    from tensorboard.plugins.hparams.api_pb2 import Status
    from tensorboard.plugins.hparams.metadata import SESSION_END_INFO_TAG
    from tensorboard.plugins.hparams.plugin_data_pb2 import SessionEndInfo

    end = SessionEndInfo(status=Status.Value("STATUS_SUCCESS" if ok else "STATUS_FAILURE"))
    return _hparams_value({"session_end_info": end}, SESSION_END_INFO_TAG)


def margin_chart_summary(category: str, title: str, tags: tuple[str, str, str]) -> Summary:
    """A custom-scalars layout of one margin chart (value, lower, upper tags), as
    ``torch.utils.tensorboard.summary.custom_scalars`` writes ``{category: {title:
    ["Margin", tags]}}``."""
    from tensorboard.plugins.custom_scalar import layout_pb2

    value, lower, upper = tags
    chart = layout_pb2.Chart(title=title, margin=layout_pb2.MarginChartContent(
        series=[layout_pb2.MarginChartContent.Series(value=value, lower=lower, upper=upper)]))
    layout = layout_pb2.Layout(category=[layout_pb2.Category(title=category, chart=[chart])])
    metadata = SummaryMetadata(plugin_data=SummaryMetadata.PluginData(plugin_name="custom_scalars"))
    tensor = TensorProto(dtype="DT_STRING", string_val=[layout.SerializeToString()],
                         tensor_shape=TensorShapeProto())
    return Summary(value=[Summary.Value(tag="custom_scalars__config__", tensor=tensor,
                                        metadata=metadata)])
