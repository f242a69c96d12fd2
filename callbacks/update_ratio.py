"""How much each optimizer step moves each parameter, relative to the parameter's own scale."""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch

from callbacks.base import UPDATE_RATIO, DiagnosticCallback, update_ratio


class UpdateRatio(DiagnosticCallback):
    """Writes `update_ratio/{name}` = log10(std(update) / std(param)) for every parameter of `pl_module.model`.

    The update is the parameter's actual change across the optimizer step of a
    logging step (snapshot just before the update, difference right after it, see
    `DiagnosticCallback`), so it is right for any optimizer: SGD's lr * grad,
    Adam's normalized step, momentum, weight decay, clipping. Around -3 is
    healthy (makemore part 3); far above, the learning rate is too high, far below, too low.
    A parameter whose values are all equal (a zero-initialized bias, a norm's unit
    gain at step 0) or that did not move has no finite ratio and is skipped that step.

    `history` keeps every written value, `{name: [(step, ratio), ...]}`, for
    `DiagnosticFigures`' update-ratio plot; it is saved in checkpoints so a resumed run keeps its curve.

    Example::

        trainer = L.Trainer(logger=TensorBoardLogger("runs"), callbacks=[UpdateRatio(every_n_steps=500)])

    Args:
        every_n_steps: measure and write the ratios every this many optimizer steps, and at step 0.
    """

    charts = {"updates": {"log10 update:data ratio (about -3 is healthy)": ["Multiline", [rf"^{UPDATE_RATIO}/"]]}}

    def __init__(self, every_n_steps: int = 500) -> None:
        super().__init__(every_n_steps)
        self.history: dict[str, list[tuple[int, float]]] = {}
        self._before: dict[str, torch.Tensor] = {}

    def before_update(self, trainer: L.Trainer, pl_module: L.LightningModule, step: int) -> None:
        self._before = {name: p.detach().clone() for name, p in pl_module.model.named_parameters()}

    def end_step(self, trainer: L.Trainer, pl_module: L.LightningModule, step: int) -> None:
        writer = self.writer
        for name, p in pl_module.model.named_parameters():
            if name not in self._before:
                continue
            ratio = update_ratio(p.detach(), self._before[name])
            if math.isfinite(ratio):
                writer.add_scalar(f"{UPDATE_RATIO}/{name}", ratio, global_step=step)
                self.history.setdefault(name, []).append((step, ratio))

    def release(self) -> None:
        self._before = {}

    def state_dict(self) -> dict[str, Any]:
        return {"history": {name: [list(point) for point in points] for name, points in self.history.items()}}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        history = state_dict.get("history", {})
        self.history = {name: [(int(s), float(r)) for s, r in points] for name, points in history.items()}
