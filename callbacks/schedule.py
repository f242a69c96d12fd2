"""When the diagnostics record: one schedule for scalars, histograms and figures."""

from __future__ import annotations

from dataclasses import dataclass

from .base import check_interval


@dataclass(frozen=True)
class Due:
    """What is due at one optimizer step."""

    scalars: bool
    histograms: bool
    figures: bool


@dataclass(frozen=True)
class Schedule:
    """Scalars every `every_n_steps` optimizer steps, histograms every `histogram_every_n_steps`, figures every
    `figures_every_n_steps` (None: never), each counted from step 0 (before the first update), and all three at
    `last_step` (the run's last optimizer step, `trainer.max_steps - 1`, known once a fit starts).

    Steps are `trainer.global_step`: the values recorded at step s come from the forward pass that saw s updates.
    A step on which anything is due is a recording step; the diagnostics watch on the union of the three.
    """

    every_n_steps: int = 500
    histogram_every_n_steps: int | None = 2000
    figures_every_n_steps: int | None = 10000
    last_step: int | None = None

    def __post_init__(self) -> None:
        check_interval("every_n_steps", self.every_n_steps)
        check_interval("histogram_every_n_steps", self.histogram_every_n_steps, allow_none=True)
        check_interval("figures_every_n_steps", self.figures_every_n_steps, allow_none=True)

    def due(self, step: int) -> Due | None:
        """What is due at `step`, or None on a step that records nothing (most steps: keep this cheap)."""
        last = step == self.last_step
        scalars = last or step % self.every_n_steps == 0
        histograms = self.histogram_every_n_steps is not None and (last or step % self.histogram_every_n_steps == 0)
        figures = self.figures_every_n_steps is not None and (last or step % self.figures_every_n_steps == 0)
        return Due(scalars, histograms, figures) if scalars or histograms or figures else None
