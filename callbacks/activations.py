"""Forward-pass statistics of every activation and normalization layer: is the unit saturated, is it dead?"""

from __future__ import annotations

import re
from typing import Sequence

import torch.nn as nn

from .base import Numbering, Want, activation_summary
from .catalog import Catalog
from .kinds import SATURATION_THRESHOLD, finite_part, std
from .probe import ModuleProbe, Step, histogram
from .schedule import Due
from .tags import (
    ACT, FIGURES, GRAD, GRAD_DATA_RATIO, NORM, PREACT, UPDATE_RATIO, WEIGHT_GRAD, tag,
)


class Activations(ModuleProbe):
    """Statistics of every activation module i (in forward order) over the training batch of a recording step.

    Scalars (on the scalar steps), `{i:02d}.{module path}` (`path@k` for the k-th call of a module called
    several times per forward pass; i in module-tree order, fixed for the fit: `tags.py`):
        act/i.path/mean, act/i.path/std   of the finite entries
        act/i.path/nonfinite    share of entries that are NaN or infinite, where it is not 0: where a run blew up
        act/i.path/saturation   fraction of entries in the activation's flat region (`kinds.KINDS`:
                                tanh |t| > saturation_threshold, relu t <= 0, relu6 x <= 0 or x >= 6,
                                gelu/silu x < -3, ...; none for the leaky kinds, which are never flat)
        act/i.path/dead         fraction of units flat for every example of the batch (units by layout:
                                channels of a conv activation, the last dimension of (B, T, C); `base`)
        norm/i.path/in_std      std of each normalization layer's input: the scale the norm takes out
    Histograms (on the histogram steps), to loggers that take them:
        act/i.path              the activation values
        preact/i.path           the activation's input (read before the module runs: in-place activations too)

    Activations are found by `Diagnostics`: torch's by type, anyone else's by what they compute (`kinds`);
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
        self.norm_numbering = Numbering([])

    def setup(self, root: nn.Module, catalog: Catalog) -> None:
        super().setup(root, catalog)
        if self.family == ACT:
            self.norms = [(name, catalog.modules[name]) for name in catalog.norms]
            self.norm_numbering = Numbering(catalog.norms)

    def active(self, due: Due) -> bool:
        return due.scalars or due.histograms

    def watch(self, due: Due) -> list[tuple[str, nn.Module, Want]]:
        preact = due.histograms and self.family == ACT
        watch = [(name, m, Want(inputs=preact or self.reads_input(name), outputs=True)) for name, m in self.watched]
        return watch + [(name, m, Want(inputs=True)) for name, m in self.norms] if due.scalars else watch

    def after_update(self, step: Step) -> None:
        records, n = step.recorder, step.global_step
        histograms = step.writers("histogram") if step.due.histograms else []
        for i, series, key in self.series(step):
            x, t = records.inputs.get(key), records.outputs.get(key)
            if t is None:
                continue  # a call whose output is no tensor
            if step.due.scalars:
                summary = activation_summary(x, t, self.rule_of[key[0]], self.unit_dim(key[0], t))
                for stat, value in summary.items():
                    step.scalars[tag(self.family, i, series, stat)] = value
            for writer in histograms:
                histogram(writer, tag(self.family, i, series), t, n)
                if x is not None and self.family == ACT:
                    histogram(writer, tag(PREACT, i, series), x, n)
        if step.due.scalars and self.norms:
            keys = step.recorder.view(name for name, _ in self.norms).order
            for i, series, key in self.norm_numbering.number(keys):
                if key in records.inputs:
                    values, _ = finite_part(records.inputs[key])
                    step.scalars[tag(NORM, i, series, "in_std")] = std(values)
