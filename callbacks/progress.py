"""A progress bar out of `trainer.max_steps`."""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.callbacks import TQDMProgressBar


class StepProgressBar(TQDMProgressBar):
    """Lightning's TQDM bar, out of `trainer.max_steps` for an endless stream of batches (Lightning shows `?`).

    A resumed run starts the bar at its step.

    Example::

        trainer = L.Trainer(max_steps=20_000, callbacks=[StepProgressBar(refresh_rate=500)])

    Args:
        refresh_rate: redraw every this many optimizer steps (redrawing costs about as much as a step).
    """

    @property
    def total_train_batches(self) -> int | float:
        max_steps = self.trainer.max_steps
        return max_steps if max_steps > 0 else super().total_train_batches

    def on_train_epoch_start(self, trainer: L.Trainer, *_: Any) -> None:
        super().on_train_epoch_start(trainer)
        bar = self.train_progress_bar
        bar.n = bar.initial = bar.last_print_n = trainer.global_step

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        bar = self.train_progress_bar
        step = trainer.global_step
        if not bar.disable and (step % self.refresh_rate == 0 or step == bar.total):
            bar.n = step
            bar.set_postfix(self.get_metrics(trainer, pl_module))  # and redraws
