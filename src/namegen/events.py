"""Reading a run's TensorBoard event files back: the one reader for summaries, hparams, reports and diagnoses."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from namegen.callbacks.tags import ACT, TAG

# TensorBoard's reader logs every event file it opens at INFO; that is noise in a training log.
logging.getLogger("tensorboard").setLevel(logging.WARNING)

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


def family(tags, name: str, stat: str | None = None) -> list[tuple[int, str, str]]:
    """(index, module or parameter name, tag) of every `callbacks.tags.tag(name, i, ..., stat)` among `tags`,
    in index order (forward order for activations, parameter order for weights); see `callbacks.tags`."""
    found = []
    for t in tags:
        m = TAG.match(t)
        if m and m["family"] == name and m["stat"] == stat:
            found.append((int(m["index"]), m["name"], t))
    return sorted(found)


def layer_saturation(scalars: Scalars, at: str) -> list[float]:
    """Per-activation saturation at the first (`at="first"`) or last (`at="last"`) logged step, in forward order."""
    pick = 0 if at == "first" else -1
    return [scalars[t][pick][1] for _, _, t in family(scalars, ACT, "saturation")]


def mean_saturation(scalars: Scalars, at: str) -> float | None:
    values = layer_saturation(scalars, at)
    return sum(values) / len(values) if values else None


def histogram_density(acc: EventAccumulator, tag: str, at: str = "first") -> tuple[int, np.ndarray, np.ndarray]:
    """(step, bin centers, density) of a logged histogram at its first or last step, on the bins it was written with.

    A histogram summary holds each bucket's right edge (`bucket_limit`) and count; the first
    bucket is the empty one left of the data, so bucket i spans (limit[i-1], limit[i]].
    """
    events = sorted(acc.Histograms(tag), key=lambda e: e.step)
    event = events[0 if at == "first" else -1]
    h = event.histogram_value
    limits = np.asarray(h.bucket_limit, dtype=float)
    counts = np.asarray(h.bucket, dtype=float)
    total = max(counts.sum(), 1.0)
    if len(limits) < 2 or not h.max > h.min:  # every value equal: one spike
        return event.step, np.array([float(h.min)]), np.array([1.0])
    left, right = limits[:-1], limits[1:]
    return event.step, (left + right) / 2, counts[1:] / total / (right - left)
