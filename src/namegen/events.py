"""Reading a run's TensorBoard event files back: the one reader for summaries, hparams and reports."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

# TensorBoard's reader logs every event file it opens at INFO; that is noise in a training log.
logging.getLogger("tensorboard").setLevel(logging.WARNING)

SATURATION_TAG = re.compile(r"^act/layer_(\d+)/saturation$")

Scalars = dict[str, list[tuple[int, float]]]


def load(run_dir: str | Path, histograms: bool = False) -> EventAccumulator:
    """Every scalar (and, if asked, every histogram) of a run folder's event files."""
    guidance = {"scalars": 0, "histograms": 0 if histograms else 1, "images": 1, "tensors": 1}
    acc = EventAccumulator(str(run_dir), size_guidance=guidance)
    acc.Reload()
    return acc


def scalars_of(acc: EventAccumulator) -> Scalars:
    """tag -> [(step, value)] in step order, of loaded event files."""
    return {tag: sorted((e.step, e.value) for e in acc.Scalars(tag)) for tag in acc.Tags()["scalars"]}


def read_scalars(run_dir: str | Path) -> Scalars:
    """tag -> [(step, value)] in step order, of a run folder."""
    return scalars_of(load(run_dir))


def layer_saturation(scalars: Scalars, at: str) -> list[float]:
    """Per-layer saturation at the first (`at="first"`) or last (`at="last"`) logged step, in layer order."""
    layers = sorted((int(m.group(1)), tag) for tag in scalars if (m := SATURATION_TAG.match(tag)))
    pick = 0 if at == "first" else -1
    return [scalars[tag][pick][1] for _, tag in layers]


def mean_saturation(scalars: Scalars, at: str) -> float | None:
    values = layer_saturation(scalars, at)
    return sum(values) / len(values) if values else None


def histogram_density(
    acc: EventAccumulator, tag: str, at: str = "first", bins: int = 50
) -> tuple[int, np.ndarray, np.ndarray]:
    """(step, bin centers, density) of a logged histogram at its first or last step, on `bins` even bins.

    TensorBoard's buckets grow exponentially away from zero; drawn as they are, the
    fine buckets near zero turn a smooth distribution into spikes. Each bucket's
    count goes to the even bin that holds the bucket's center.
    """
    events = sorted(acc.Histograms(tag), key=lambda e: e.step)
    event = events[0 if at == "first" else -1]
    h = event.histogram_value
    limits = np.asarray(h.bucket_limit, dtype=float)
    counts = np.asarray(h.bucket, dtype=float)
    lo, hi = float(h.min), float(h.max)
    if not hi > lo:  # every value equal: one spike
        return event.step, np.array([lo]), np.array([1.0])
    left = np.concatenate([[lo], limits[:-1]])
    centers = (np.clip(left, lo, hi) + np.clip(limits, lo, hi)) / 2
    edges = np.linspace(lo, hi, bins + 1)
    rebinned, _ = np.histogram(centers, bins=edges, weights=counts)
    return event.step, (edges[:-1] + edges[1:]) / 2, rebinned / max(counts.sum(), 1) / (edges[1] - edges[0])
