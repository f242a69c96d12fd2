"""A progress bar that counts optimizer steps."""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.callbacks import TQDMProgressBar


class StepProgressBar(TQDMProgressBar):
    """Lightning's TQDM bar, counting optimizer steps out of `trainer.max_steps` instead of batches.

    A module that takes several optimizer steps per batch (namegen's `steps_per_batch`)
    would otherwise show a count of batches and a rate in batches per second.
    A resumed run starts the bar at its step.

    Example::

        trainer = L.Trainer(max_steps=20_000, callbacks=[StepProgressBar(refresh_rate=500)])

    Args:
        refresh_rate: redraw every this many optimizer steps (redrawing costs about as much as a step).
    """

    def on_train_epoch_start(self, trainer: L.Trainer, *_: Any) -> None:
        super().on_train_epoch_start(trainer)
        bar = self.train_progress_bar
        if trainer.max_steps > 0:
            bar.total = trainer.max_steps
        bar.n = bar.initial = bar.last_print_n = trainer.global_step

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        bar = self.train_progress_bar
        if bar is None or bar.disable:
            return
        step = trainer.global_step
        if step // self.refresh_rate > bar.n // self.refresh_rate or step == bar.total:
            bar.n = step
            bar.set_postfix(self.get_metrics(trainer, pl_module))  # and redraws
