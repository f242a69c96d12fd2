"""Backward-pass statistics: the gradient reaching each hidden activation, and each weight matrix's gradient."""

from __future__ import annotations

import lightning as L

from callbacks.base import (
    GRAD,
    GRAD_DATA_RATIO,
    HISTOGRAM_BINS,
    WEIGHT_GRAD,
    RecordingCallback,
    grad_data_ratio,
    layer_regex,
    layer_tag,
    weight_matrices,
)


class GradientStats(RecordingCallback):
    """Writes the gradients of a training step, before the optimizer uses them.

    Scalars (every `every_n_steps` optimizer steps and at step 0):
        grad/layer_{i:02d}/mean, grad/layer_{i:02d}/std   d loss / d (output of hidden layer i's activation)
        grad_data_ratio/{name}                            grad.std() / weight.std() of every weight matrix (2-D
                                                          parameter: `wte.weight`, `hidden.0.linear.weight`, ..., `head.weight`)
    Histograms (every `histogram_every_n_steps`, a multiple of `every_n_steps`; None for none):
        grad/layer_{i:02d}, weight_grad/{name}

    Weight gradients are read just before the optimizer's update (see `DiagnosticCallback`):
    after backward (and gradient accumulation), before clipping and the update, so the ratio compares the
    gradient with the weights it was computed at.

    Example::

        trainer = L.Trainer(logger=TensorBoardLogger("runs"), callbacks=[GradientStats(every_n_steps=500)])

    Args:
        every_n_steps: write the scalars every this many optimizer steps.
        histogram_every_n_steps: write the histograms every this many steps, or None for none.
    """

    record = {"grads": True}
    charts = {
        "gradients": {
            "activation gradient std": ["Multiline", [layer_regex(GRAD, "std")]],
            "activation gradient mean": ["Multiline", [layer_regex(GRAD, "mean")]],
            "grad:data ratio of the weight matrices": ["Multiline", [rf"^{GRAD_DATA_RATIO}/"]],
        }
    }

    def __init__(self, every_n_steps: int = 500, histogram_every_n_steps: int | None = 2000) -> None:
        super().__init__(every_n_steps, histogram_every_n_steps)

    def before_update(self, trainer: L.Trainer, pl_module: L.LightningModule, step: int) -> None:
        writer, histograms = self.writer, self.histograms_due(step)
        for i, g in sorted(self.recorder.grads.items()):
            writer.add_scalar(layer_tag(GRAD, i, "mean"), g.mean().item(), global_step=step)
            writer.add_scalar(layer_tag(GRAD, i, "std"), g.std().item(), global_step=step)
            if histograms:
                writer.add_histogram(layer_tag(GRAD, i), g, global_step=step, bins=HISTOGRAM_BINS)
        for name, p in weight_matrices(pl_module.model):
            if p.grad is None:
                continue  # frozen or unused this step
            writer.add_scalar(f"{GRAD_DATA_RATIO}/{name}", grad_data_ratio(p.grad, p), global_step=step)
            if histograms:
                writer.add_histogram(f"{WEIGHT_GRAD}/{name}", p.grad, global_step=step, bins=HISTOGRAM_BINS)
