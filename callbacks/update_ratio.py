"""How much each optimizer step moves each weight matrix, relative to the matrix's own scale."""

from __future__ import annotations

import lightning as L
import torch

from callbacks.base import StepDiagnostic, update_ratio, weight_matrices
from callbacks.tags import UPDATE_RATIO, tag


class UpdateRatio(StepDiagnostic):
    """Writes `update_ratio/j.name` = log10(std(update) / std(weight)) for every parameter of 2 or more
    dimensions of any LightningModule (j: parameter order).

    The update is the parameter's actual change across the optimizer step (snapshot in
    `on_before_optimizer_step`, difference at the batch's end), so it is right for any
    optimizer: SGD's lr * grad, Adam's normalized step, momentum, weight decay, clipping.
    Around -3 is healthy (makemore part 3); far above, the learning rate is too high, far below, too low.

    Example::

        trainer = L.Trainer(logger=TensorBoardLogger("runs"), callbacks=[UpdateRatio(every_n_steps=500)])

    Args:
        every_n_steps: measure and write the ratios every this many optimizer steps, at step 0 and at the last step.
    """

    def __init__(self, every_n_steps: int = 500) -> None:
        super().__init__(every_n_steps)
        self.before: dict[str, torch.Tensor] = {}

    def before_update(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.before = {name: p.detach().clone() for _, name, p in weight_matrices(pl_module)}

    def end_step(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.log_scalars(trainer, {tag(UPDATE_RATIO, j, name): update_ratio(p.detach(), self.before[name])
                                   for j, name, p in weight_matrices(pl_module) if name in self.before})

    def release(self) -> None:
        self.before = {}
