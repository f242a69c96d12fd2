"""Forward-pass statistics of every activation and normalization layer: is the unit saturated, is it dead?"""

from __future__ import annotations

import re
from typing import Sequence

import lightning as L

from callbacks.base import NORM_TYPES, SATURATION_THRESHOLD, ModuleDiagnostic, Recorder, activation_summary, select_modules
from callbacks.tags import (
    ACT, FIGURES, GRAD, GRAD_DATA_RATIO, HISTOGRAM_BINS, NORM, PREACT, UPDATE_RATIO, WEIGHT_GRAD, tag,
)


class ActivationStats(ModuleDiagnostic):
    """Writes, for every activation module i (in forward order) of any LightningModule, statistics of its output
    over the training batch of a logging step, before the optimizer updates the weights.

    Scalars (every `every_n_steps` optimizer steps, at step 0 and at the last step), `{i:02d}.{module path}`:
        act/i.path/mean, act/i.path/std
        act/i.path/saturation   fraction of entries in the activation's flat region (`base.flat_rules`:
                                tanh |t| > saturation_threshold, relu t <= 0, gelu/silu x < -3, ...)
        act/i.path/dead         fraction of units flat for every example of the batch
        norm/i.path/in_std      std of each normalization layer's input: the scale the norm takes out
    Histograms (every `histogram_every_n_steps`; None for none), to loggers that take them:
        act/i.path              the activation values
        preact/i.path           the activation's input

    Activations are found by type (Tanh, Sigmoid, ReLU, LeakyReLU, GELU, SiLU, ...);
    `modules` (names) or `pattern` (a regex on names) choose others instead.

    Example::

        trainer = L.Trainer(logger=TensorBoardLogger("runs"), callbacks=[ActivationStats(every_n_steps=500)])

    Args:
        every_n_steps: write the scalars every this many optimizer steps.
        histogram_every_n_steps: write the histograms every this many steps, or None for none.
        modules: module names to watch instead of the discovered activations.
        pattern: a regex; watch the modules whose names match it instead.
        saturation_threshold: |tanh| (and |2 sigmoid - 1|) above this is flat, in (0, 1).
        family: the tags' first part; a second instance watching other modules (say a Transformer's
            attention logits, `pattern=r"attn\.scores$"`, `family="attn"`) needs its own. Only the
            default family writes the norm/ scalars and the preact/ histograms.
    """

    record = {"inputs": True, "outputs": True}

    def __init__(self, every_n_steps: int = 500, histogram_every_n_steps: int | None = 2000,
                 modules: Sequence[str] | None = None, pattern: str | None = None,
                 saturation_threshold: float = SATURATION_THRESHOLD, family: str = ACT) -> None:
        super().__init__(every_n_steps, histogram_every_n_steps, modules, pattern, saturation_threshold)
        taken = {GRAD, NORM, PREACT, GRAD_DATA_RATIO, UPDATE_RATIO, WEIGHT_GRAD, FIGURES}
        if not isinstance(family, str) or not re.fullmatch(r"[a-z_]+", family) or family in taken:
            raise ValueError(f"family={family!r} must be a tag prefix of lowercase letters and '_', such as 'attn', "
                             f"and none of the other callbacks' ({', '.join(sorted(taken))})")
        self.family = family
        self.norms: Recorder | None = None

    def start_step(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().start_step(trainer, pl_module)
        if self.family == ACT:
            self.norms = Recorder(select_modules(pl_module, lambda m: isinstance(m, NORM_TYPES)), inputs=True)

    def end_step(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        recorder, scalars = self.recorder, {}
        histograms = self.writers(trainer, "histogram") if self.histograms_due(trainer, self.step) else []
        for i, name in recorder.indexed():
            x, t = recorder.inputs.get(name), recorder.outputs[name]
            for stat, value in activation_summary(x, t, self.rule_of[name]).items():
                scalars[tag(self.family, i, name, stat)] = value
            for writer in histograms:
                writer.add_histogram(tag(self.family, i, name), t, global_step=self.step, bins=HISTOGRAM_BINS)
                if x is not None and self.family == ACT:
                    writer.add_histogram(tag(PREACT, i, name), x, global_step=self.step, bins=HISTOGRAM_BINS)
        for i, name in self.norms.indexed() if self.norms is not None else []:
            scalars[tag(NORM, i, name, "in_std")] = self.norms.inputs[name].std().item()
        self.log_scalars(trainer, scalars)

    def release(self) -> None:
        super().release()
        if self.norms is not None:
            self.norms.remove()
            self.norms = None
