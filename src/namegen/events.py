"""Reading a run's recorded scalars back from its loggers' files (TensorBoard event files, CSVLogger's
metrics.csv): the one reader for reports and diagnoses. Every value is read as float32, the precision an event
file holds, so a diagnosis says the same whichever logger wrote the run and whether it reads the files or the
values kept in memory (`namegen.loggers.MemoryLogger`).
"""

from __future__ import annotations

import csv
import logging
import re
from pathlib import Path

import numpy as np
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from namegen.callbacks.tags import ACT, TAG
from namegen.results import EVENT_GLOB

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


CSV_FILE = "metrics.csv"  # CSVLogger's, in <save_dir>/<name>/version_<n>/
NOT_SCALARS = frozenset({"epoch", "step"})  # Lightning's epoch counter (batches here are one endless stream), the x axis


def as_recorded(value: float) -> float:
    """A value at the precision an event file keeps it (float32)."""
    return float(np.float32(value))


def read_scalars(run_dir: str | Path) -> Scalars:
    """tag -> [(step, value)] in step order, of a run folder: its TensorBoard event files, or else its CSVLogger
    files; {} for a run that wrote neither."""
    run_dir = Path(run_dir)
    if any(run_dir.glob(EVENT_GLOB)):
        return scalars_of(load(run_dir))
    return csv_scalars(run_dir)


def csv_scalars(run_dir: Path) -> Scalars:
    """The scalars of every metrics.csv under a run folder, version after version: a resume writes the next
    version, whose points replace the earlier ones' (see `continued`)."""
    def version(path: Path) -> int:
        found = re.fullmatch(r"version_(\d+)", path.parent.name)
        return int(found[1]) if found else -1

    scalars: Scalars = {}
    for path in sorted(run_dir.rglob(CSV_FILE), key=version):
        logged: Scalars = {}
        with open(path, newline="") as f:
            for row in csv.DictReader(f):
                for tag, value in row.items():
                    if tag not in NOT_SCALARS and value not in ("", None):
                        logged.setdefault(tag, []).append((int(row["step"]), as_recorded(float(value))))
        scalars = continued(scalars, logged)
    return scalars


def continued(earlier: Scalars, later: Scalars) -> Scalars:
    """A resumed run's record: `earlier`, then `later`, each tag's points from the first step `later` logged it on
    being `later`'s (the steps a killed run logged past the checkpoint it resumed from, logged again, count once)."""
    merged = dict(earlier)
    for tag, points in later.items():
        if not points:
            continue
        start = min(step for step, _ in points)
        merged[tag] = sorted([p for p in earlier.get(tag, []) if p[0] < start] + list(points))
    return merged


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
