"""A progress bar out of `trainer.max_steps`, or one line every so many steps when several jobs share a console."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import TQDMProgressBar

from .base import check_interval


class StepProgressBar(TQDMProgressBar):
    """Lightning's TQDM bar, out of `trainer.max_steps` for an endless stream of batches (Lightning shows `?`).

    With `lines=True` (namegen sets it for sweep jobs, whose bars would interleave in one
    console) it draws no bar and prints one line every `refresh_rate` steps instead:
    `init=naive,norm=none  step 2000/20000  train/loss=2.31 val/loss=2.40`, labelled by the
    run folder (`trainer.default_root_dir`). A resumed run starts at its step.

    Example::

        trainer = L.Trainer(max_steps=20_000, callbacks=[StepProgressBar(refresh_rate=500)])

    Args:
        refresh_rate: redraw every this many optimizer steps (redrawing costs about as much as a step).
        lines: one printed line per refresh instead of a bar.
    """

    def __init__(self, refresh_rate: int = 500, lines: bool = False) -> None:
        check_interval("refresh_rate", refresh_rate)
        if not isinstance(lines, bool):
            raise ValueError(f"lines={lines!r} must be true or false")
        super().__init__(refresh_rate=refresh_rate)
        self.lines = lines

    @property
    def total_train_batches(self) -> int | float:
        max_steps = self.trainer.max_steps
        return max_steps if max_steps > 0 else super().total_train_batches

    @property
    def is_enabled(self) -> bool:
        return super().is_enabled and not self.lines  # every bar is created disabled; the lines are printed instead

    def on_train_epoch_start(self, trainer: L.Trainer, *_: Any) -> None:
        super().on_train_epoch_start(trainer)
        if self.train_progress_bar is not None:
            bar = self.train_progress_bar
            bar.n = bar.initial = bar.last_print_n = trainer.global_step

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        step = trainer.global_step
        if step % self.refresh_rate and step != trainer.max_steps:
            return
        if self.lines:
            if trainer.is_global_zero:
                metrics = " ".join(f"{k}={float(v):.3f}" for k, v in self.get_metrics(trainer, pl_module).items()
                                   if k != "v_num")
                label = Path(trainer.default_root_dir).name
                total = f"/{trainer.max_steps}" if trainer.max_steps > 0 else ""
                print(f"{label}  step {step}{total}  {metrics}", file=sys.stderr, flush=True)
            return
        bar = self.train_progress_bar
        if bar is not None and not bar.disable:
            bar.n = step
            bar.set_postfix(self.get_metrics(trainer, pl_module))  # and redraws
