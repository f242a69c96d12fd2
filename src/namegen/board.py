"""What TensorBoard shows of a namegen run: the Custom Scalars layout (the lesson first), the HParams record,
and the command that opens it all. Light: `namegen.loggers` writes the layout, the sweep prints the command.

TensorBoard's charts ignore outliers by default (their y range is the 5th to 95th percentile of the points
drawn), so a single step-0 point of ~20 next to thousands of losses near 2 is cut off. The lesson's numbers are
therefore also held as flat lines over the run (`init/loss`, `init/uniform_loss`, the update-ratio guide), which
no percentile can clip, and charted apart from the training curves.
"""

from __future__ import annotations

import re
import time
from typing import Any, Iterable, Mapping

from namegen.callbacks.tags import (
    ACT, ATTN, GRAD, GRAD_DATA_RATIO, NORM, UPDATE_RATIO, UPDATE_RATIO_GUIDE, UPDATE_RATIO_MEDIAN, family_regex,
)

# the tab that opens on the lesson; TensorBoard's own landing tab is Time Series, every tag alphabetically
LESSON_URL = "http://localhost:6006/#custom_scalars"


# TensorBoard's Custom Scalars tab: each quantity as one chart across layers and runs, the lesson's first; a chart
# is the regexes of its tags (a line per run and tag). It appears once a run has written one of its tags: no empty
# chart for a model without such layers.
CHARTS: dict[str, dict[str, tuple[str, ...]]] = {
    "1. the lesson": {
        "loss at step 0 (init/loss), held flat, next to log V, a uniform guess's loss (init/uniform_loss)":
            (r"^init/",),
        "train and validation loss (train/loss starts at step 0)": (r"^train/loss$", r"^val/loss$"),
        "saturation: fraction of each activation in its flat region": (family_regex(ACT, "saturation"),),
        "log10 update:data ratio per run, the median over its weight matrices; guide: -3 at the starting "
        "learning rate, one lower for a tenth of it": (f"^{UPDATE_RATIO_MEDIAN}$", f"^{UPDATE_RATIO_GUIDE}$"),
    },
    "2. activations": {
        "activation std by layer": (family_regex(ACT, "std"),),
        "dead units (flat for the whole batch)": (family_regex(ACT, "dead"),),
        "std of each norm's input: the scale it takes out": (family_regex(NORM, "in_std"),),
        "attention logits' std (softmax saturates when large)": (family_regex(ATTN, "std"),),
    },
    "3. gradients": {
        "gradient std reaching each activation": (family_regex(GRAD, "std"),),
        "grad:data ratio of each weight matrix": (family_regex(GRAD_DATA_RATIO),),
        "log10 update:data ratio of each weight matrix (about -3 is healthy)": (family_regex(UPDATE_RATIO),),
    },
    "4. learning rate": {"learning rate": (r"^lr-",)},
}


def layout(tags: Iterable[str], charts: Mapping[str, Mapping[str, tuple[str, ...]]] = CHARTS) -> dict[str, Any]:
    """The Custom Scalars layout of the charts that have data among `tags`, as `SummaryWriter.add_custom_scalars`
    takes it: {category: {chart: ["Multiline", [tag regexes]]}}."""
    tags = set(tags)
    shown = {title: {chart: ["Multiline", list(regexes)] for chart, regexes in entries.items()
                     if any(re.search(regex, tag) for regex in regexes for tag in tags)}
             for title, entries in charts.items()}
    return {title: entries for title, entries in shown.items() if entries}


# -- HParams ------------------------------------------------------------------------------------------------------

# the table's metric columns, in order (TensorBoard shows the first five): each the last value of a tag the run
# writes anyway, so the table fills in as the run goes and no extra scalar is logged for it
METRICS = {
    "init/loss": "loss at step 0",
    "init/uniform_loss": "log V",
    "train/loss": "train loss",
    "val/loss": "val loss",
    "test/loss": "test loss",
}


def hparams_start(tb: Any, values: Mapping[str, Any], swept: Iterable[str]) -> None:
    """The run's row of TensorBoard's HParams table: in a sweep the keys it varies (`swept`), else every choice
    in `values`; then the `METRICS` columns. TensorBoard's table shows five hyperparameters, whatever their
    values: constant ones would push the losses out of sight (the whole record is the run's hparams.yaml)."""
    from tensorboard.plugins.hparams import api_pb2, plugin_data_pb2
    from torch.utils.tensorboard.summary import hparams

    differ = set(swept)
    values = {k: v for k, v in values.items() if k in differ} or values
    # The experiment record by hand: torch's `hparams` writes one too, but with neither the `differs` flag (which
    # hyperparameters a sweep varies) nor the metrics' display names
    infos = [api_pb2.HParamInfo(name=name, type=value_type(value), differs=name in differ)
             for name, value in values.items()]
    metrics = [api_pb2.MetricInfo(name=api_pb2.MetricName(tag=tag), display_name=shown) for tag, shown in METRICS.items()]
    write_hparams_data(tb, plugin_data_pb2.HParamsPluginData(
        experiment=api_pb2.Experiment(hparam_infos=infos, metric_infos=metrics)))
    _, start, _ = hparams(dict(values), dict.fromkeys(METRICS, 0.0))  # the run's values, typed by torch
    tb.experiment.file_writer.add_summary(start)


def hparams_end(tb: Any, ok: bool) -> None:
    # by hand: torch's `hparams` only writes a session end of STATUS_SUCCESS, and a diverged run's is a failure
    from tensorboard.plugins.hparams import api_pb2, plugin_data_pb2

    end = plugin_data_pb2.SessionEndInfo(status=api_pb2.STATUS_SUCCESS if ok else api_pb2.STATUS_FAILURE,
                                         end_time_secs=time.time())
    write_hparams_data(tb, plugin_data_pb2.HParamsPluginData(session_end_info=end))


def write_hparams_data(tb: Any, data) -> None:
    """One record of TensorBoard's HParams plugin, under the tag its reader looks for."""
    from tensorboard.compat.proto.summary_pb2 import Summary
    from tensorboard.plugins.hparams import metadata

    tag = {"experiment": metadata.EXPERIMENT_TAG, "session_end_info": metadata.SESSION_END_INFO_TAG}[data.WhichOneof("data")]
    value = Summary.Value(tag=tag, metadata=metadata.create_summary_metadata(data), tensor=metadata.NULL_TENSOR)
    tb.experiment.file_writer.add_summary(Summary(value=[value]))


def value_type(value: Any) -> int:
    """The type torch's `hparams` gives the value (`training.hparams` makes integers and booleans text)."""
    from tensorboard.plugins.hparams import api_pb2

    return api_pb2.DATA_TYPE_FLOAT64 if isinstance(value, (int, float)) else api_pb2.DATA_TYPE_STRING


def how_to_open(logdir: Any) -> str:
    """The two lines printed when a run or a sweep ends."""
    return f"TensorBoard, the lesson first:\n    tensorboard --logdir {logdir}\n    then open {LESSON_URL}"
