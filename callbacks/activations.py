"""Forward-pass statistics of every activation and normalization layer: is the unit saturated, is it dead?"""

from __future__ import annotations

import re
from typing import Any, Callable, Sequence

import torch
import torch.nn as nn

from .base import NORM_TYPES, SATURATION_THRESHOLD, Want, activation_summary, select_modules
from .probe import ModuleProbe, Step
from .schedule import Due
from .tags import (
    ACT, FIGURES, GRAD, GRAD_DATA_RATIO, HISTOGRAM_BINS, NORM, PREACT, UPDATE_RATIO, WEIGHT_GRAD, tag,
)


class Activations(ModuleProbe):
    """Statistics of every activation module i (in forward order) over the training batch of a recording step.

    Scalars (on the scalar steps), `{i:02d}.{module path}`:
        act/i.path/mean, act/i.path/std
        act/i.path/saturation   fraction of entries in the activation's flat region (`base.flat_rules`:
                                tanh |t| > saturation_threshold, relu t <= 0, gelu/silu x < -3, ...)
        act/i.path/dead         fraction of units flat for every example of the batch
        norm/i.path/in_std      std of each normalization layer's input: the scale the norm takes out
    Histograms (on the histogram steps), to loggers that take them:
        act/i.path              the activation values
        preact/i.path           the activation's input (read before the module runs: in-place activations too)

    Activations are found by type (Tanh, Sigmoid, ReLU, LeakyReLU, GELU, SiLU, ...);
    `modules` (names) or `pattern` (a regex on names) choose others instead.

    Args:
        modules: module names to watch instead of the discovered activations.
        pattern: a regex; watch the modules whose names match it instead.
        saturation_threshold: |tanh| (and |2 sigmoid - 1|) above this is flat, in (0, 1).
        family: the tags' first part; a second probe watching other modules (say a Transformer's
            attention logits, `pattern=r"attn\\.scores$"`, `family="attn"`) needs its own. Only the
            default family writes the norm/ scalars and the preact/ histograms.
    """

    def __init__(self, modules: Sequence[str] | None = None, pattern: str | None = None,
                 saturation_threshold: float = SATURATION_THRESHOLD, family: str = ACT) -> None:
        super().__init__(modules, pattern, saturation_threshold)
        taken = {GRAD, NORM, PREACT, GRAD_DATA_RATIO, UPDATE_RATIO, WEIGHT_GRAD, FIGURES}
        if not isinstance(family, str) or not re.fullmatch(r"[a-z_]+", family) or family in taken:
            raise ValueError(f"family={family!r} must be a tag prefix of lowercase letters and '_', such as 'attn', "
                             f"and none of the other probes' ({', '.join(sorted(taken))})")
        self.family = self.key = family
        self.norms: list[tuple[str, nn.Module]] = []

    def setup(self, root: nn.Module) -> None:
        super().setup(root)
        if self.family == ACT:
            self.norms = select_modules(root, lambda m: isinstance(m, NORM_TYPES))

    def active(self, due: Due) -> bool:
        return due.scalars or due.histograms

    def watch(self, due: Due) -> list[tuple[str, nn.Module, Want]]:
        preact = due.histograms and self.family == ACT
        watch = [(name, m, Want(inputs=preact or self.reads_input(name), outputs=True)) for name, m in self.watched]
        return watch + [(name, m, Want(inputs=True)) for name, m in self.norms] if due.scalars else watch

    def after_update(self, step: Step) -> None:
        records, n = self.records(step), step.global_step
        histograms = step.writers("histogram") if step.due.histograms else []
        for i, name in records.indexed():
            x, t = records.inputs.get(name), records.outputs[name]
            if step.due.scalars:
                for stat, value in activation_summary(x, t, self.rule_of[name]).items():
                    step.scalars[tag(self.family, i, name, stat)] = value
            for writer in histograms:
                writer.add_histogram(tag(self.family, i, name), t, global_step=n, bins=HISTOGRAM_BINS)
                if x is not None and self.family == ACT:
                    writer.add_histogram(tag(PREACT, i, name), x, global_step=n, bins=HISTOGRAM_BINS)
        if step.due.scalars:
            norms = step.recorder.view(name for name, _ in self.norms)
            for i, name in norms.indexed():
                step.scalars[tag(NORM, i, name, "in_std")] = norms.inputs[name].std().item()
