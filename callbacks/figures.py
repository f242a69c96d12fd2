"""makemore part 3's diagnostic plots, as images, for any LightningModule."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
import torch.nn as nn
from lightning.pytorch.utilities import rank_zero_warn
from matplotlib import rc_context

from .base import Want, activation_summary
from .kinds import SATURATION_THRESHOLD, finite_part, std
from .plots import LEGIBLE, THUMBNAIL, distributions, new_axes, render, update_ratios
from .probe import ModuleProbe, Step
from .schedule import Due, Schedule
from .tags import FIGURES, FIGURES_AT_START

BINS = 50


def density(values: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Bin centers and density of the finite values (numpy widens a zero-width range, torch would not)."""
    v = values.detach().flatten().float().cpu().numpy()
    v = v[np.isfinite(v)]
    hist, edges = np.histogram(v, bins=BINS, density=True) if v.size else (np.zeros(BINS), np.linspace(0, 1, BINS + 1))
    return (edges[:-1] + edges[1:]) / 2, hist


class Figures(ModuleProbe):
    """makemore's five diagnostic plots, as images, on the figure steps.

    figures/activations        distribution of each activation's output; legend: layer, std, flat %
    figures/activation_grads   distribution of the gradient of each activation's output; legend: layer, std
    figures/weight_grads       distribution of each weight matrix's gradient; legend: matrix, grad:data ratio
    figures/update_ratios      log10 update:data ratio of each weight matrix over the steps so far, with the
                               -3 guide line, measured on every scalar and figure step (`history`, kept in
                               checkpoints, started afresh by each fit)
    figures/saturation_map     one activation's units x examples, white where the unit is in its flat region

    Step 0's figures (all but update_ratios, which has no history yet) go to `at_step_0/...` instead: the
    picture before any update, in cards of their own, no slider to drag back. Each is drawn at 640 x 480
    with large type, legible in TensorBoard's ~350 px cards.

    Drawing the five costs about half a second (matplotlib), so figure steps should be sparse.

    Args:
        saturation_layer: the activation (in forward order) of the saturation map; negative counts from the last.
        modules, pattern, saturation_threshold: as for `Activations`.
    """

    key = FIGURES

    def __init__(self, saturation_layer: int = 0, modules: Sequence[str] | None = None, pattern: str | None = None,
                 saturation_threshold: float = SATURATION_THRESHOLD) -> None:
        super().__init__(modules, pattern, saturation_threshold)
        if not isinstance(saturation_layer, int) or isinstance(saturation_layer, bool):
            raise ValueError(f"saturation_layer={saturation_layer!r} must be an integer index (negative counts from the last)")
        self.saturation_layer = saturation_layer
        self.history: dict[str, list[tuple[int, float]]] = {}
        self.weight_grads: list[tuple[str, tuple[int, ...], torch.Tensor, float]] = []
        self.warned: set[str] = set()
        self.step: int | None = None  # the step being drawn
        self.recorder = None  # its records, while drawing
        self.drawn: list = []  # (index, series name, record key) of the calls drawn

    def check(self, schedule: Schedule) -> None:
        if schedule.figures_every_n_steps is None:
            raise ValueError("figures_every_n_steps=None draws no figures; give it a number of steps, or leave the "
                             "Figures probe out")

    def reset(self) -> None:
        self.history = {}

    def active(self, due: Due) -> bool:
        return due.scalars or due.figures  # the update-ratio history grows on the scalar steps

    def watch(self, due: Due) -> list[tuple[str, nn.Module, Want]]:
        if not due.figures:
            return []
        return [(name, m, Want(inputs=self.reads_input(name), outputs=True, grads=True)) for name, m in self.watched]

    def wants_snapshot(self, due: Due) -> bool:
        return True

    def before_update(self, step: Step) -> None:
        if step.due.figures:  # copied now: after the update the weights no longer match them
            ratios = step.grad_data_ratios()
            self.weight_grads = [(name, tuple(p.shape), p.grad.detach().clone(), ratios[name])
                                 for _, name, p in step.matrices if p.grad is not None]

    def after_update(self, step: Step) -> None:
        for name, ratio in step.update_ratios().items():
            self.history.setdefault(name, []).append((step.global_step, ratio))
        writers = step.writers("image") if step.due.figures else []
        self.step, self.recorder = step.global_step, step.recorder
        self.drawn = [(i, series, key) for i, series, key in self.series(step) if key in step.recorder.outputs]
        try:
            if writers and self.drawn:
                self.draw(writers)
        finally:
            self.step, self.recorder, self.drawn, self.weight_grads = None, None, [], []

    def draw(self, writers: list[Any]) -> None:
        with rc_context(LEGIBLE):
            figures = {
                "activations": self.activations_figure(),
                "activation_grads": self.activation_grads_figure(),
                "weight_grads": self.weight_grads_figure(),
                "saturation_map": self.saturation_map_figure(),
            }
            if self.step > 0:  # at step 0 there is one point per matrix, no history to draw
                history = {short(name): points for name, points in self.history.items()}
                figures["update_ratios"] = update_ratios(history, f"update:data ratio, steps 0-{self.step}", THUMBNAIL)
            images = {name: render(fig) for name, fig in figures.items()}
        # Rendered here once, then handed to every writer that takes images, rather than SummaryWriter.add_figure:
        # that would fit the "writers that take a kind" scheme (kind "figure"), but it renders once per writer and
        # imports matplotlib.pyplot (a global backend and figure manager) to close each figure; plots.py keeps to
        # the object API, with no global state
        group = FIGURES_AT_START if self.step == 0 else FIGURES
        for name, image in images.items():
            for writer in writers:
                writer.add_image(f"{group}/{name}", image, global_step=self.step, dataformats="HWC")

    def state_dict(self) -> dict[str, Any]:
        return {"history": {name: [list(point) for point in points] for name, points in self.history.items()}}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        history = state_dict.get("history", {})
        self.history = {name: [(int(s), float(r)) for s, r in points] for name, points in history.items()}

    # -- the figures ---------------------------------------------------------------

    def activations_figure(self):
        curves = []
        for i, series, key in self.drawn:
            t = self.recorder.outputs[key]
            s = activation_summary(self.recorder.inputs.get(key), t, self.rule_of[key[0]], self.unit_dim(key[0], t))
            flat = f", {s['saturation']:.0%} flat" if "saturation" in s else ""
            curves.append((f"{i}: std {s['std']:.2f}{flat}", *density(t)))
        return distributions(f"activations, step {self.step}", "output (legend: layer)", curves, THUMBNAIL)

    def activation_grads_figure(self):
        curves = [(f"{i}: std {std(finite_part(g)[0]):.1e}", *density(g))
                  for i, _, key in self.drawn if (g := self.recorder.grads.get(key)) is not None]
        return distributions(f"activation gradients, step {self.step}", "d loss / d output (legend: layer)", curves,
                             THUMBNAIL)

    def weight_grads_figure(self):
        curves = [(f"{short(name)}: {ratio:.0e}", *density(g)) for name, shape, g, ratio in self.weight_grads]
        return distributions(f"weight gradients, step {self.step}", "d loss / d weight (legend: grad:data)", curves,
                             THUMBNAIL)

    def saturation_map_figure(self):
        order = self.drawn
        if not -len(order) <= self.saturation_layer < len(order) and "saturation_layer" not in self.warned:
            self.warned.add("saturation_layer")
            rank_zero_warn(f"{type(self).__name__}: saturation_layer={self.saturation_layer} is out of range for "
                           f"{len(order)} watched modules ({-len(order)}..{len(order) - 1}); drawing the last one")
        _, name, key = order[self.saturation_layer] if -len(order) <= self.saturation_layer < len(order) else order[-1]
        rule, t = self.rule_of[key[0]], self.recorder.outputs[key]
        fig, ax = new_axes(f"{short(name)}, step {self.step}", "example", "unit", THUMBNAIL)
        if rule is None:
            ax.set_title(f"{short(name)}: no flat region defined for {type(dict(self.watched)[key[0]]).__name__}")
            return fig
        flat = rule.flat(t if rule.on == "output" else self.recorder.inputs[key])
        dim = self.unit_dim(key[0], flat)
        flat = flat.movedim(dim, -1).reshape(-1, flat.shape[dim]).T  # (units, examples)
        ax.set_title(f"{short(name)}, step {self.step}: {flat.float().mean().item():.0%} white,\n"
                     f"where {rule.text} (flat)")
        ax.imshow(flat.cpu().numpy(), cmap="gray", vmin=0, vmax=1, interpolation="nearest", aspect="auto")
        fig.tight_layout()
        return fig


def short(name: str) -> str:
    """A module or parameter path for a legend: without a LightningModule's usual `model.` and a trailing `.weight`."""
    return name.removeprefix("model.").removesuffix(".weight")
