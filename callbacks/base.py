"""What the diagnostics callbacks share: tag names, the statistics, the hooks and the step lifecycle.

Every diagnostic watches `pl_module.model.hidden[i].act`, the activation of hidden
layer i, and writes under tags that sort by layer (`layer_00`, `layer_01`, ...).
The statistics are defined here once, so a scalar, a figure legend and the
custom-scalars layout can never disagree about what "saturated" means.
"""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch
import torch.nn as nn
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_warn
from torch.optim import Optimizer
from torch.utils.hooks import RemovableHandle

from namegen.stats import activation_summary, flat_mask  # noqa: F401  (re-exported to the callbacks)

# ---------------------------------------------------------------------------
# tags: other parts of the project read these back; change them nowhere else

ACT, PREACT, GRAD = "act", "preact", "grad"
GRAD_DATA_RATIO, WEIGHT_GRAD, UPDATE_RATIO = "grad_data_ratio", "weight_grad", "update_ratio"
FIGURES = "figures"

# 64 uniform bins: a third of the cost of TensorBoard's default (~1,500 exponential buckets) per
# histogram, and plenty to see a distribution's shape.
HISTOGRAM_BINS = 64


def layer_tag(prefix: str, index: int, stat: str | None = None) -> str:
    """`act/layer_03/std`: two digits so TensorBoard's lexical sort is the layer order up to 100 layers."""
    tag = f"{prefix}/layer_{index:02d}"
    return f"{tag}/{stat}" if stat else tag


def layer_regex(prefix: str, stat: str) -> str:
    """The regex that matches `layer_tag(prefix, i, stat)` for every layer i."""
    return rf"^{prefix}/layer_\d+/{stat}$"


# ---------------------------------------------------------------------------
# the statistics


# flat_mask and activation_summary are namegen.stats', shared with the divergence report


def grad_data_ratio(grad: torch.Tensor, weight: torch.Tensor) -> float:
    """std(grad) / std(weight): how large a step of lr=1 would be next to the weights themselves."""
    return (grad.std() / weight.std()).item()


def update_ratio(new: torch.Tensor, old: torch.Tensor) -> float:
    """log10(std(new - old) / std(old)); about -3 is a healthy learning rate (makemore part 3).

    Not finite when `old` is constant (a freshly initialized bias or norm gain) or nothing moved.
    """
    if old.numel() < 2:
        return math.nan
    with torch.no_grad():
        ratio = ((new - old).std() / old.std()).item()
    return math.log10(ratio) if ratio > 0 and math.isfinite(ratio) else math.nan


def weight_matrices(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """The 2-D parameters (embedding, hidden linears, head), as `named_parameters` names them."""
    return [(name, p) for name, p in model.named_parameters() if p.ndim == 2]


# ---------------------------------------------------------------------------
# hooks


class LayerRecorder:
    """Forward hooks on each `block.act` that keep its input, output and the gradient of its output.

    Only the first forward of the step is kept: with gradient accumulation or a
    closure optimizer the later ones would mix other batches or updated weights in.
    Call `remove()` to detach every hook; the recorder holds no reference to the model after it.
    """

    def __init__(self, blocks: nn.ModuleList, inputs: bool = False, outputs: bool = False, grads: bool = False):
        self.inputs: dict[int, torch.Tensor] = {}
        self.outputs: dict[int, torch.Tensor] = {}
        self.grads: dict[int, torch.Tensor] = {}
        self._want_inputs, self._want_outputs, self._want_grads = inputs, outputs, grads
        self._seen: set[int] = set()
        self._handles: list[RemovableHandle] = [
            block.act.register_forward_hook(self._forward_hook(i)) for i, block in enumerate(blocks)
        ]

    def _forward_hook(self, index: int):
        def hook(module: nn.Module, args: tuple[Any, ...], output: torch.Tensor) -> None:
            if index in self._seen:
                return
            self._seen.add(index)
            # clone: an in-place activation (ReLU(inplace=True)) would overwrite its input with the output
            if self._want_inputs:
                self.inputs[index] = args[0].detach().clone()
            if self._want_outputs:
                self.outputs[index] = output.detach()
            if self._want_grads and output.requires_grad:
                self._handles.append(output.register_hook(self._grad_hook(index)))

        return hook

    def _grad_hook(self, index: int):
        def hook(grad: torch.Tensor) -> None:
            self.grads[index] = grad.detach()

        return hook

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()


# ---------------------------------------------------------------------------
# callbacks


def check_interval(name: str, value: Any, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        extra = " or null to turn it off" if allow_none else ""
        raise ValueError(f"{name}={value!r} must be a positive integer (a number of optimizer steps){extra}")


class TensorBoardCallback(L.Callback):
    """Finds the TensorBoardLogger in `setup`; without one it warns once and stays idle."""

    def __init__(self) -> None:
        self._logger: TensorBoardLogger | None = None
        self._warned = False

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        hidden = getattr(getattr(pl_module, "model", None), "hidden", None)
        if not isinstance(hidden, nn.ModuleList) or not all(isinstance(getattr(b, "act", None), nn.Module) for b in hidden):
            raise TypeError(
                f"{type(self).__name__} watches `pl_module.model.hidden[i].act`;"
                f" {type(pl_module).__name__} has no such layers"
            )
        self._logger = next((lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)), None)
        if self._logger is None and not self._warned:
            self._warned = True
            found = ", ".join(type(lg).__name__ for lg in trainer.loggers) or "none"
            rank_zero_warn(
                f"{type(self).__name__} writes to TensorBoard but the trainer has no TensorBoardLogger"
                f" (loggers: {found}); it does nothing in this run. Use logger=tensorboard to see the diagnostics."
            )

    @property
    def writer(self) -> Any:
        """The logger's `SummaryWriter`; only touch it on rank zero."""
        assert self._logger is not None
        return self._logger.experiment


Chart = list  # ["Multiline", [tag regex, ...]], as SummaryWriter.add_custom_scalars takes it


class DiagnosticCallback(TensorBoardCallback):
    """The step lifecycle of a diagnostic that writes every `every_n_steps` optimizer steps, step 0 included.

    On a logging step (and only then, after one modulo check in `on_train_batch_start`):
    `start_step` runs before the step's forward pass; `before_update` once its
    gradients are final and the weights not yet changed; `end_step` right after the
    optimizer's update; then `release` drops every hook and tensor. Subclasses
    override those four; all but `start_step` run under `torch.no_grad()`.

    The update is seen through the torch optimizer's own step hooks, registered for
    the logging step only: `end_step` runs in its post-step hook. `before_update` runs
    in its pre-step hook when the optimizer is stepped without a closure (a module
    that steps it itself, as namegen's does), else in Lightning's
    `on_before_optimizer_step`, which follows the closure's backward. Either way it
    sees exactly one step, also when a module takes several optimizer steps per
    batch (`pl_module.steps_per_batch`, as namegen's `NameGen` does): the logging
    step must then begin a batch, so `every_n_steps` must be a multiple of it.
    Validation and the sanity check run outside that window, so they never reach the statistics.

    `charts` are the diagnostic's TensorBoard custom-scalars charts (category -> title -> chart).
    At fit start the first diagnostic in `trainer.callbacks` writes one layout with the charts
    of all of them, so each quantity is one multi-line chart across layers in the Custom Scalars tab
    and no extra callback runs on every step for it.
    """

    charts: dict[str, dict[str, Chart]] = {}

    def __init__(self, every_n_steps: int, histogram_every_n_steps: int | None = None) -> None:
        super().__init__()
        check_interval("every_n_steps", every_n_steps)
        check_interval("histogram_every_n_steps", histogram_every_n_steps, allow_none=True)
        if histogram_every_n_steps is not None and histogram_every_n_steps % every_n_steps:
            raise ValueError(
                f"histogram_every_n_steps={histogram_every_n_steps} must be a multiple of every_n_steps={every_n_steps}"
                " (histograms are written on a subset of the logging steps)"
            )
        self.every_n_steps = every_n_steps
        self.histogram_every_n_steps = histogram_every_n_steps
        self._step: int | None = None  # the logging step in progress
        self._last_step: int | None = None
        self._updated = False  # before_update has run for self._step
        self._context: tuple[L.Trainer, L.LightningModule] | None = None  # for the optimizer's hooks
        self._optimizer_hooks: list[RemovableHandle] = []

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        self._step = self._last_step = None
        k = getattr(pl_module, "steps_per_batch", 1)
        if stage == "fit" and self.every_n_steps % k:
            raise ValueError(
                f"{type(self).__name__}: every_n_steps={self.every_n_steps} is not a multiple of the module's "
                f"steps_per_batch={k}, so its logging steps would fall inside a batch; make it a multiple of {k}"
            )

    def histograms_due(self, step: int) -> bool:
        return self.histogram_every_n_steps is not None and step % self.histogram_every_n_steps == 0

    # -- what subclasses fill in ---------------------------------------------------

    def start_step(self, trainer: L.Trainer, pl_module: L.LightningModule, step: int) -> None:
        """Attach hooks / take snapshots before the forward pass of a logging step."""

    def before_update(self, trainer: L.Trainer, pl_module: L.LightningModule, step: int) -> None:
        """Gradients are final and the weights are still those the forward pass used."""

    def end_step(self, trainer: L.Trainer, pl_module: L.LightningModule, step: int) -> None:
        """The optimizer has stepped; write what was recorded."""

    def release(self) -> None:
        """Drop every hook and tensor of the step; also called on teardown and on an exception."""

    # -- Lightning hooks -----------------------------------------------------------

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if len(trainer.optimizers) > 1:  # the step ends at the first optimizer's update: later ones would go unseen
            raise ValueError(f"{type(self).__name__} watches one optimizer; this module has {len(trainer.optimizers)}")
        if self._logger is None or not trainer.is_global_zero:
            return
        diagnostics = [cb for cb in trainer.callbacks if isinstance(cb, DiagnosticCallback)]
        if diagnostics[0] is not self:
            return
        layout: dict[str, dict[str, Chart]] = {}
        for cb in diagnostics:
            for category, charts in cb.charts.items():
                layout.setdefault(category, {}).update(charts)
        if layout:
            self.writer.add_custom_scalars(layout)

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        step = trainer.global_step
        if step % self.every_n_steps or self._step is not None or step == self._last_step:
            return  # not a logging step, or a later micro-batch of one (gradient accumulation)
        if self._logger is None or not trainer.is_global_zero:
            return
        self._step = self._last_step = step
        self._updated = False
        self._context = (trainer, pl_module)
        self.start_step(trainer, pl_module, step)
        for optimizer in trainer.optimizers:
            self._optimizer_hooks.append(optimizer.register_step_pre_hook(self._on_optimizer_pre_step))
            self._optimizer_hooks.append(optimizer.register_step_post_hook(self._on_optimizer_post_step))

    def _on_optimizer_pre_step(self, optimizer: Optimizer, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        # args[0] is the optimizer; a closure (the next argument) would run the backward after this hook
        if len(args) < 2 and kwargs.get("closure") is None:
            self._before_update()

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: Optimizer) -> None:
        self._before_update()

    def _before_update(self) -> None:
        if self._step is None or self._updated:
            return
        self._updated = True
        with torch.no_grad():
            self.before_update(*self._context, self._step)

    def _on_optimizer_post_step(self, optimizer: Optimizer, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        if self._step is None:
            return  # a later step of the batch: this hook goes at the batch's end
        try:
            with torch.no_grad():
                self.end_step(*self._context, self._step)
        finally:
            self._end_step()

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if self._step is None:  # torch forbids removing an optimizer hook from inside one, so it goes here
            self._remove_optimizer_hooks()

    def _end_step(self) -> None:
        self._step, self._context = None, None
        self.release()

    def _remove_optimizer_hooks(self) -> None:
        for handle in self._optimizer_hooks:
            handle.remove()
        self._optimizer_hooks.clear()

    def _finish(self) -> None:
        self._remove_optimizer_hooks()
        self._end_step()

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._finish()

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self._finish()

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._finish()


class RecordingCallback(DiagnosticCallback):
    """A diagnostic that records hidden-layer tensors through a `LayerRecorder` on its logging steps."""

    record: dict[str, bool] = {}  # LayerRecorder flags: inputs, outputs, grads

    def __init__(self, every_n_steps: int, histogram_every_n_steps: int | None = None) -> None:
        super().__init__(every_n_steps, histogram_every_n_steps)
        self.recorder: LayerRecorder | None = None

    def start_step(self, trainer: L.Trainer, pl_module: L.LightningModule, step: int) -> None:
        self.recorder = LayerRecorder(pl_module.model.hidden, **self.record)

    def release(self) -> None:
        if self.recorder is not None:
            self.recorder.remove()
            self.recorder = None
