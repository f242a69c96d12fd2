"""Backward-pass statistics: the gradient reaching each activation, and each weight matrix's gradient."""

from __future__ import annotations

from typing import Sequence

import lightning as L

from callbacks.base import ModuleDiagnostic, grad_data_ratio, weight_matrices
from callbacks.tags import GRAD, GRAD_DATA_RATIO, HISTOGRAM_BINS, WEIGHT_GRAD, tag


class GradientStats(ModuleDiagnostic):
    """Writes the gradients of a training step, before the optimizer uses them, for any LightningModule.

    Scalars (every `every_n_steps` optimizer steps, at step 0 and at the last step):
        grad/i.path/mean, grad/i.path/std   d loss / d (output of activation module i, in forward order)
        grad_data_ratio/j.name              grad.std() / weight.std() of every parameter of 2 or more
                                            dimensions (j: parameter order), e.g. `model.hidden.0.linear.weight`
    Histograms (every `histogram_every_n_steps`; None for none), to loggers that take them:
        grad/i.path, weight_grad/j.name

    Weight gradients are read in `on_before_optimizer_step`: after backward (and gradient
    accumulation), before clipping and the update, so the ratio compares the gradient with the
    weights it was computed at.

    Example::

        trainer = L.Trainer(logger=TensorBoardLogger("runs"), callbacks=[GradientStats(every_n_steps=500)])

    Args:
        every_n_steps: write the scalars every this many optimizer steps.
        histogram_every_n_steps: write the histograms every this many steps, or None for none.
        modules, pattern: which modules' output gradients to watch instead of the discovered activations.
    """

    record = {"grads": True}

    def __init__(self, every_n_steps: int = 500, histogram_every_n_steps: int | None = 2000,
                 modules: Sequence[str] | None = None, pattern: str | None = None) -> None:
        super().__init__(every_n_steps, histogram_every_n_steps, modules, pattern)

    def before_update(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        scalars = {}
        histograms = self.writers(trainer, "histogram") if self.histograms_due(trainer, self.step) else []
        for i, name in self.recorder.indexed():
            g = self.recorder.grads.get(name)
            if g is None:
                continue  # no gradient reached it (a frozen branch)
            scalars[tag(GRAD, i, name, "mean")] = g.mean().item()
            scalars[tag(GRAD, i, name, "std")] = g.std().item()
            for writer in histograms:
                writer.add_histogram(tag(GRAD, i, name), g, global_step=self.step, bins=HISTOGRAM_BINS)
        for j, name, p in weight_matrices(pl_module):
            if p.grad is None:
                continue  # unused this step
            scalars[tag(GRAD_DATA_RATIO, j, name)] = grad_data_ratio(p.grad, p)
            for writer in histograms:
                writer.add_histogram(tag(WEIGHT_GRAD, j, name), p.grad, global_step=self.step, bins=HISTOGRAM_BINS)
        self.log_scalars(trainer, scalars)
