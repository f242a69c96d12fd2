"""makemore part 3's diagnostic plots, as TensorBoard images."""

from __future__ import annotations

import lightning as L
import numpy as np
import torch
from matplotlib.figure import Figure
from lightning.pytorch.utilities import rank_zero_warn

from callbacks.base import (
    FIGURES,
    RecordingCallback,
    activation_summary,
    flat_mask,
    grad_data_ratio,
    weight_matrices,
)
from callbacks.update_ratio import UpdateRatio
from namegen.plots import distributions, new_axes, render, update_ratios

BINS = 50


def density(values: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Bin centers and density of the finite values (numpy widens a zero-width range, torch would not)."""
    v = values.detach().flatten().float().cpu().numpy()
    v = v[np.isfinite(v)]
    hist, edges = np.histogram(v, bins=BINS, density=True) if v.size else (np.zeros(BINS), np.linspace(0, 1, BINS + 1))
    return (edges[:-1] + edges[1:]) / 2, hist


class DiagnosticFigures(RecordingCallback):
    """Writes makemore's five diagnostic plots as TensorBoard images at step 0 and every `every_n_steps`.

    figures/activations        distribution of each hidden layer's activation; legend: mean, std, saturation %
    figures/activation_grads   distribution of the gradient of each hidden activation; legend: mean, std
    figures/weight_grads       distribution of each weight matrix's gradient; legend: shape, std, grad:data ratio
    figures/update_ratios      log10 update:data ratio of each weight matrix over the steps so far, with the
                               -3 guide line; read from the `UpdateRatio` callback's history (skipped without one)
    figures/saturation_map     one layer's units x examples, white where the unit is in its flat region
                               (|t| > saturation_threshold for tanh, t <= 0 for relu)

    Drawing the five costs about half a second (matplotlib), so the default interval is sparse.
    Put `UpdateRatio` before this callback so each update-ratio plot includes its own step.

    Example::

        callbacks = [UpdateRatio(every_n_steps=500), DiagnosticFigures(every_n_steps=10000, saturation_layer=-1)]
        trainer = L.Trainer(logger=TensorBoardLogger("runs"), callbacks=callbacks)

    Args:
        every_n_steps: draw the figures every this many optimizer steps, and at step 0.
        saturation_layer: the hidden layer of the saturation map; negative counts from the last (-1).
        saturation_threshold: |tanh| above this counts as saturated, in (0, 1).
    """

    record = {"outputs": True, "grads": True}

    def __init__(
        self, every_n_steps: int = 10000, saturation_layer: int = 0, saturation_threshold: float = 0.97
    ) -> None:
        super().__init__(every_n_steps)
        if not isinstance(saturation_layer, int) or isinstance(saturation_layer, bool):
            raise ValueError(
                f"saturation_layer={saturation_layer!r} must be an integer layer index (negative counts from the last)"
            )
        if not isinstance(saturation_threshold, (int, float)) or not 0.0 < saturation_threshold < 1.0:
            raise ValueError(f"saturation_threshold={saturation_threshold!r} must be in (0, 1), the range of |tanh|")
        self.saturation_layer = saturation_layer
        self.saturation_threshold = float(saturation_threshold)
        self._update_ratio: UpdateRatio | None = None
        self._weight_grads: list[tuple[str, tuple[int, ...], torch.Tensor, float]] = []

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        if stage != "fit":
            return
        depth = len(pl_module.model.hidden)
        if not -depth <= self.saturation_layer < depth:
            raise ValueError(
                f"saturation_layer={self.saturation_layer} is out of range for {depth} hidden layers;"
                f" choose {-depth}..{depth - 1}"
            )
        self._update_ratio = next((cb for cb in trainer.callbacks if isinstance(cb, UpdateRatio)), None)
        if self._update_ratio is None and self._logger is not None:
            rank_zero_warn(f"{FIGURES}/update_ratios needs the UpdateRatio callback, which this trainer lacks: skipped")

    def before_update(self, trainer: L.Trainer, pl_module: L.LightningModule, step: int) -> None:
        # Copied now: after the update the weights no longer match the gradients.
        self._weight_grads = [
            (name, tuple(p.shape), p.grad.detach().clone(), grad_data_ratio(p.grad, p))
            for name, p in weight_matrices(pl_module.model)
            if p.grad is not None
        ]

    def end_step(self, trainer: L.Trainer, pl_module: L.LightningModule, step: int) -> None:
        if not self.recorder.outputs:
            return  # the step ran no forward pass through the hidden layers
        activation = pl_module.model.cfg.activation
        figures = {
            "activations": self.activations_figure(self.recorder.outputs, activation, step),
            "activation_grads": self.activation_grads_figure(self.recorder.grads, step),
            "weight_grads": self.weight_grads_figure(step),
            "saturation_map": self.saturation_map_figure(self.recorder.outputs, activation, step),
        }
        if self._update_ratio is not None:
            names = [name for name, _ in weight_matrices(pl_module.model)]
            figures["update_ratios"] = self.update_ratios_figure(self._update_ratio.history, names, step)
        for name, fig in figures.items():
            self.writer.add_image(f"{FIGURES}/{name}", render(fig), global_step=step, dataformats="HWC")

    def release(self) -> None:
        super().release()
        self._weight_grads = []

    # -- the figures ---------------------------------------------------------------

    def activations_figure(self, outputs: dict[int, torch.Tensor], activation: str, step: int) -> Figure:
        curves = []
        for i, t in sorted(outputs.items()):
            s = activation_summary(t, activation, self.saturation_threshold)
            label = f"layer {i}: mean {s['mean']:+.2f}, std {s['std']:.2f}, saturated {s['saturation']:.1%}"
            curves.append((label, *density(t)))
        return distributions(f"activation distribution, step {step}", f"{activation} output", curves)

    def activation_grads_figure(self, grads: dict[int, torch.Tensor], step: int) -> Figure:
        curves = [(f"layer {i}: mean {g.mean().item():+.2e}, std {g.std().item():.2e}", *density(g))
                  for i, g in sorted(grads.items())]
        return distributions(f"activation gradient distribution, step {step}", "d loss / d activation", curves)

    def weight_grads_figure(self, step: int) -> Figure:
        curves = [(f"{name} {shape}: std {g.std().item():.2e}, grad:data {ratio:.2e}", *density(g))
                  for name, shape, g, ratio in self._weight_grads]
        return distributions(f"weight gradient distribution, step {step}", "d loss / d weight", curves)

    def update_ratios_figure(self, history: dict[str, list[tuple[int, float]]], names: list[str], step: int) -> Figure:
        series = {name: history[name] for name in names if history.get(name)}
        return update_ratios(series, f"update:data ratio, up to step {step}")

    def saturation_map_figure(self, outputs: dict[int, torch.Tensor], activation: str, step: int) -> Figure:
        layer = self.saturation_layer % len(outputs)
        flat = flat_mask(outputs[layer], activation, self.saturation_threshold).T  # (units, examples)
        rule = f"|t| > {self.saturation_threshold:g}" if activation != "relu" else "t <= 0"
        fig, ax = new_axes(
            f"layer {layer}, step {step}: white where {rule} ({flat.float().mean().item():.1%} of units x examples)",
            "example",
            "unit",
        )
        ax.imshow(flat.cpu().numpy(), cmap="gray", vmin=0, vmax=1, interpolation="nearest", aspect="auto")
        return fig
