"""How much each optimizer step moves each weight matrix, relative to the matrix's own scale."""

from __future__ import annotations

import math
import statistics
from typing import Any, Iterable, Sequence

from .probe import Probe, Step
from .schedule import Due
from .tags import HEALTHY_UPDATE_RATIO, UPDATE_RATIO, UPDATE_RATIO_GUIDE, UPDATE_RATIO_MEDIAN, tag


def schedule_guide(optimizers: Sequence[Any]) -> float | None:
    """HEALTHY_UPDATE_RATIO moved with the learning-rate schedule, log10(lr / initial lr) lower: the first optimizer's
    first group, at the lr of this step (a torch scheduler keeps the one it started from as `initial_lr`)."""
    group = optimizers[0].param_groups[0] if optimizers else None
    if group is None or not group["lr"] > 0:
        return None
    return HEALTHY_UPDATE_RATIO + math.log10(group["lr"] / (group.get("initial_lr") or group["lr"]))


def one_line(ratios: Iterable[float], guide: float | None) -> dict[str, float]:
    """The run's update ratios as one line, the median over the weight matrices, next to the guide."""
    finite = [r for r in ratios if math.isfinite(r)]
    line = {UPDATE_RATIO_MEDIAN: statistics.median(finite)} if finite else {}
    return line | ({UPDATE_RATIO_GUIDE: guide} if guide is not None else {})


class UpdateRatios(Probe):
    """`update_ratio/j.name` = log10(std(update) / std(weight)) for every parameter of 2 or more dimensions
    (j: parameter order), on the scalar steps.

    The update is the parameter's actual change across the optimizer step (snapshot in
    `on_before_optimizer_step`, difference at the batch's end), so it is right for any
    optimizer: SGD's lr * grad, Adam's normalized step, momentum, weight decay, clipping.
    Around -3 is healthy (makemore part 3); far above, the learning rate is too high, far below, too low.
    The run as one line: `update_ratio/median` over the matrices, next to `update_ratio/guide`, -3 at the
    starting learning rate, moved with the schedule (one lower for a tenth of the learning rate).
    """

    key = UPDATE_RATIO
    guide: float | None = None  # this step's, read before the update: the scheduler steps before the batch ends

    def wants_snapshot(self, due: Due) -> bool:
        return due.scalars

    def before_update(self, step: Step) -> None:
        self.guide = schedule_guide(step.optimizers)

    def after_update(self, step: Step) -> None:
        ratios = step.update_ratios()
        per_matrix = {tag(UPDATE_RATIO, j, name): ratios[name] for j, name, _ in step.matrices if name in ratios}
        step.scalars.update({**per_matrix, **one_line(per_matrix.values(), self.guide)})
