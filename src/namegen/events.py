"""Reading a run's TensorBoard event files back: the one reader for summaries, hparams and reports."""

from __future__ import annotations

import logging
import re
from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

# TensorBoard's reader logs every event file it opens at INFO; that is noise in a training log.
logging.getLogger("tensorboard").setLevel(logging.WARNING)

SATURATION_TAG = re.compile(r"^act/layer_(\d+)/saturation$")


def read_scalars(run_dir: str | Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar of a run folder's event files: tag -> [(step, value)] in step order."""
    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "histograms": 1, "images": 1, "tensors": 1})
    acc.Reload()
    return {tag: sorted((e.step, e.value) for e in acc.Scalars(tag)) for tag in acc.Tags()["scalars"]}


def layer_saturation(scalars: dict[str, list[tuple[int, float]]], at: str) -> list[float]:
    """Per-layer saturation at the first (`at="first"`) or last (`at="last"`) logged step, in layer order."""
    layers = sorted((int(m.group(1)), tag) for tag in scalars if (m := SATURATION_TAG.match(tag)))
    pick = 0 if at == "first" else -1
    return [scalars[tag][pick][1] for _, tag in layers]


def mean_saturation(scalars: dict[str, list[tuple[int, float]]], at: str) -> float | None:
    values = layer_saturation(scalars, at)
    return sum(values) / len(values) if values else None
