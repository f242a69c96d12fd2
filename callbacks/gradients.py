"""Backward-pass statistics: the gradient reaching each activation, and each weight matrix's gradient."""

from __future__ import annotations

import math

from typing import Sequence

import torch.nn as nn

from .base import Want
from .kinds import finite_part, std
from .probe import ModuleProbe, Step, histogram
from .schedule import Due
from .tags import GRAD, GRAD_DATA_RATIO, NONFINITE, WEIGHT_GRAD, tag


class Gradients(ModuleProbe):
    """The gradients of a recording step, before the optimizer uses them.

    Scalars (on the scalar steps):
        grad/i.path/mean, grad/i.path/std   d loss / d (output of activation i: its call, as `Activations`
                                            numbers it), of the finite entries; grad/i.path/nonfinite where not 0
        grad_data_ratio/j.name              grad.std() / weight.std() of every parameter of 2 or more
                                            dimensions (j: parameter order), e.g. `model.hidden.0.linear.weight`
    Histograms (on the histogram steps), to loggers that take them:
        grad/i.path, weight_grad/j.name

    Weight gradients are read in `on_before_optimizer_step`: after backward (and gradient
    accumulation), before clipping and the update, so the ratio compares the gradient with the
    weights it was computed at.

    Args:
        modules, pattern: which modules' output gradients to watch instead of the discovered activations.
    """

    key = GRAD

    def __init__(self, modules: Sequence[str] | None = None, pattern: str | None = None) -> None:
        super().__init__(modules, pattern)

    def active(self, due: Due) -> bool:
        return due.scalars or due.histograms

    def watch(self, due: Due) -> list[tuple[str, nn.Module, Want]]:
        return [(name, m, Want(grads=True)) for name, m in self.watched]

    def before_update(self, step: Step) -> None:
        n, scalars = step.global_step, step.due.scalars
        histograms = step.writers("histogram") if step.due.histograms else []
        for i, series, key in self.series(step):
            g = step.recorder.grads.get(key)
            if g is None:
                continue  # no gradient reached it (a frozen branch)
            if scalars:
                values, bad = finite_part(g)
                step.scalars[tag(GRAD, i, series, "mean")] = values.mean().item() if values.numel() else math.nan
                step.scalars[tag(GRAD, i, series, "std")] = std(values)
                if bad:
                    step.scalars[tag(GRAD, i, series, NONFINITE)] = bad
            for writer in histograms:
                histogram(writer, tag(GRAD, i, series), g, n)
        ratios = step.grad_data_ratios() if scalars else {}
        for j, name, p in step.matrices:
            if p.grad is None:
                continue  # unused this step
            if scalars:
                step.scalars[tag(GRAD_DATA_RATIO, j, name)] = ratios[name]
            for writer in histograms:
                histogram(writer, tag(WEIGHT_GRAD, j, name), p.grad, n)
