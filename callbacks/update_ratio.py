"""How much each optimizer step moves each weight matrix, relative to the matrix's own scale."""

from __future__ import annotations

from callbacks.diagnostics import Diagnostics
from callbacks.probe import Probe, Step
from callbacks.schedule import Due
from callbacks.tags import UPDATE_RATIO, tag


class UpdateRatios(Probe):
    """`update_ratio/j.name` = log10(std(update) / std(weight)) for every parameter of 2 or more dimensions
    (j: parameter order), on the scalar steps.

    The update is the parameter's actual change across the optimizer step (snapshot in
    `on_before_optimizer_step`, difference at the batch's end), so it is right for any
    optimizer: SGD's lr * grad, Adam's normalized step, momentum, weight decay, clipping.
    Around -3 is healthy (makemore part 3); far above, the learning rate is too high, far below, too low.
    """

    key = UPDATE_RATIO

    def wants_snapshot(self, due: Due) -> bool:
        return due.scalars

    def after_update(self, step: Step) -> None:
        ratios = step.update_ratios()
        step.scalars.update({tag(UPDATE_RATIO, j, name): ratios[name] for j, name, _ in step.matrices if name in ratios})


class UpdateRatio(Diagnostics):
    """`Diagnostics` with the `UpdateRatios` probe alone.

    Example::

        trainer = L.Trainer(logger=TensorBoardLogger("runs"), callbacks=[UpdateRatio(every_n_steps=500)])

    Args:
        every_n_steps: measure and write the ratios every this many optimizer steps, at step 0 and at the last step.
    """

    def __init__(self, every_n_steps: int = 500) -> None:
        super().__init__(every_n_steps, None, None, [UpdateRatios()])
