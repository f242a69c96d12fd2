"""What the diagnostics callbacks share: what to watch, what "flat" means, tag names, the step window.

Nothing here knows namegen: the callbacks find what to watch in any LightningModule's
module tree (activation modules by type, normalization layers by type, every
parameter of 2 or more dimensions) and write to every logger the Trainer has.
Each callback stands alone; any subset can run, in any order.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

import lightning as L
import torch
import torch.nn as nn
from lightning.pytorch.utilities import rank_zero_warn
from torch.utils.hooks import RemovableHandle

# ---------------------------------------------------------------------------
# the flat region of each activation, defined once


@dataclass(frozen=True)
class FlatRule:
    """Where an activation passes almost no gradient back.

    `on` says which tensor the rule reads ("output" or "input" of the module), `flat`
    maps that tensor to a boolean mask, `text` says it in words for legends.
    """

    on: str
    flat: Callable[[torch.Tensor], torch.Tensor]
    text: str


SATURATION_THRESHOLD = 0.97  # |tanh| above it: tanh' = 1 - t^2 < 0.06, almost no gradient flows back
FAR_BELOW_ZERO = -3.0  # GELU'(-3) = -0.012, SiLU'(-3) = -0.09, ELU'(-3) = 0.05: the smooth units' flat tail


def bounded(threshold: float) -> FlatRule:
    return FlatRule("output", lambda t: t.abs() > threshold, f"|t| > {threshold:g}")


def flat_rules(saturation_threshold: float = SATURATION_THRESHOLD) -> dict[type, FlatRule]:
    """Activation type -> its flat region. Sigmoid is tanh rescaled: s = (1 + tanh(x/2)) / 2, s' = (1 - (2s-1)^2) / 4."""
    below = FlatRule("input", lambda x: x < FAR_BELOW_ZERO, f"x < {FAR_BELOW_ZERO:g}")
    return {
        nn.Tanh: bounded(saturation_threshold),
        nn.Hardtanh: FlatRule("input", lambda x: x.abs() >= 1, "|x| >= 1"),
        nn.Sigmoid: FlatRule("output", lambda s: (2 * s - 1).abs() > saturation_threshold,
                             f"|2s - 1| > {saturation_threshold:g}"),
        nn.ReLU: FlatRule("output", lambda t: t <= 0, "t <= 0"),
        nn.LeakyReLU: FlatRule("input", lambda x: x <= 0, "x <= 0 (slope only negative_slope)"),
        nn.GELU: below,
        nn.SiLU: below,
        nn.Mish: below,
        nn.ELU: below,
    }


NORM_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm, nn.InstanceNorm1d, nn.InstanceNorm2d,
              nn.InstanceNorm3d, nn.LayerNorm, nn.GroupNorm, nn.RMSNorm)


def rule_for(module: nn.Module, rules: dict[type, FlatRule]) -> FlatRule | None:
    return next((rule for cls in type(module).__mro__ if (rule := rules.get(cls)) is not None), None)


def check_threshold(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < value < 1.0:
        raise ValueError(f"saturation_threshold={value!r} must be in (0, 1): |tanh| (and |2 sigmoid - 1|) above it is flat")
    return float(value)


def activation_summary(x: torch.Tensor, t: torch.Tensor, rule: FlatRule | None) -> dict[str, float]:
    """mean and std of the output `t`; with a rule, saturation (fraction of flat entries) and dead (fraction of
    units flat for every example: the last dimension is the unit, every other one an example)."""
    summary = {"mean": t.mean().item(), "std": t.std().item() if t.numel() > 1 else 0.0}
    if rule is not None and (rule.on == "output" or x is not None):
        flat = rule.flat(t if rule.on == "output" else x)
        summary["saturation"] = flat.float().mean().item()
        summary["dead"] = flat.reshape(-1, flat.shape[-1]).all(dim=0).float().mean().item() if flat.dim() else 0.0
    return summary


def grad_data_ratio(grad: torch.Tensor, weight: torch.Tensor) -> float:
    """std(grad) / std(weight): how large a step of lr=1 would be next to the weights themselves."""
    return (grad.std() / weight.std()).item()


def update_ratio(new: torch.Tensor, old: torch.Tensor) -> float:
    """log10(std(new - old) / std(old)); about -3 is a healthy learning rate (makemore part 3).

    Not finite when `old` is constant or nothing moved.
    """
    ratio = ((new - old).std() / old.std()).item()
    return math.log10(ratio) if ratio > 0 and math.isfinite(ratio) else math.nan


# ---------------------------------------------------------------------------
# what to watch


def check_selection(modules: Sequence[str] | None, pattern: str | None) -> None:
    if modules is not None and pattern is not None:
        raise ValueError("give modules (a list of names) or pattern (a regex), not both")
    if modules is not None and (isinstance(modules, str) or not all(isinstance(m, str) for m in modules)):
        raise ValueError(f"modules={modules!r} must be a list of module names, such as ['model.hidden.0.act']")
    if pattern is not None:
        try:
            re.compile(pattern)
        except re.error as e:
            raise ValueError(f"pattern={pattern!r} is not a regular expression ({e})") from None


def select_modules(
    root: nn.Module, want: Callable[[nn.Module], bool], modules: Sequence[str] | None = None, pattern: str | None = None
) -> list[tuple[str, nn.Module]]:
    """(name, module) pairs to watch, in registration order: those `want` accepts, or the named ones, or the
    ones whose name matches `pattern`. An unknown name is refused with the names that exist."""
    named = [(name, m) for name, m in root.named_modules() if name]
    if modules is not None:
        index = dict(named)
        missing = [n for n in modules if n not in index]
        if missing:
            found = ", ".join(n for n, m in named if want(m)) or "none of the known types"
            raise ValueError(f"no module named {', '.join(map(repr, missing))} in {type(root).__name__}; "
                             f"activations found: {found}")
        return [(n, index[n]) for n in modules]
    if pattern is not None:
        return [(n, m) for n, m in named if re.search(pattern, n)]
    return [(n, m) for n, m in named if want(m)]


def weight_matrices(root: nn.Module) -> list[tuple[int, str, nn.Parameter]]:
    """(index, name, parameter) of every trainable parameter of 2 or more dimensions, in parameter order."""
    matrices = [(name, p) for name, p in root.named_parameters() if p.dim() >= 2 and p.requires_grad]
    return [(j, name, p) for j, (name, p) in enumerate(matrices)]


class Recorder:
    """Forward hooks on the watched modules, for one step: each module's first input, output and output gradient.

    The order in which the modules first run is the forward order (`order`). Only the first
    call of each module is kept: a module called twice, or several forward passes in a step
    (gradient accumulation), would mix other inputs in. `remove()` detaches every hook.
    """

    def __init__(self, modules: Iterable[tuple[str, nn.Module]], inputs: bool = False, outputs: bool = False,
                 grads: bool = False):
        self.order: list[str] = []
        self.inputs: dict[str, torch.Tensor] = {}
        self.outputs: dict[str, torch.Tensor] = {}
        self.grads: dict[str, torch.Tensor] = {}
        self.want = (inputs, outputs, grads)
        self.handles: list[RemovableHandle] = [m.register_forward_hook(self.forward_hook(n), with_kwargs=True)
                                               for n, m in modules]

    def forward_hook(self, name: str):
        def hook(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> None:
            if name in self.order or not isinstance(output, torch.Tensor):
                return
            self.order.append(name)
            inputs, outputs, grads = self.want
            x = args[0] if args else next(iter(kwargs.values()), None)  # the input, however it was passed
            if inputs and isinstance(x, torch.Tensor):
                self.inputs[name] = x.detach().clone()  # an in-place activation would overwrite it
            if outputs:
                self.outputs[name] = output.detach()
            if grads and output.requires_grad:
                self.handles.append(output.register_hook(lambda g: self.grads.__setitem__(name, g.detach())))

        return hook

    def indexed(self) -> list[tuple[int, str]]:
        """(forward index, name) of every module that ran."""
        return list(enumerate(self.order))

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles.clear()


# ---------------------------------------------------------------------------
# the callbacks' skeleton


def check_interval(name: str, value: Any, allow_none: bool = False) -> None:
    """The callbacks' one positive-integer rule."""
    if value is None and allow_none:
        return
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        extra = " or null to turn it off" if allow_none else ""
        raise ValueError(f"{name}={value!r} must be a positive integer (a number of optimizer steps){extra}")


class StepDiagnostic(L.Callback):
    """A diagnostic that looks at one optimizer step every `every_n_steps` (step 0 and the last step included).

    Steps are counted by `trainer.global_step`: the values written at step s come from the
    forward pass that saw s updates. Through Lightning's public hooks only, on rank zero:

    - `on_train_batch_start`: `start_step` (attach forward hooks, snapshots);
    - `on_before_optimizer_step`: `before_update`: gradients final, weights not yet changed;
    - `on_train_batch_end`, once `global_step` has moved (after gradient accumulation): `end_step`,
      then `release` drops every hook and tensor.

    A module that steps its optimizer several times in one batch (manual optimization) is
    seen at its first step's gradients; the update then spans the batch.
    """

    def __init__(self, every_n_steps: int, histogram_every_n_steps: int | None = None) -> None:
        check_interval("every_n_steps", every_n_steps)
        check_interval("histogram_every_n_steps", histogram_every_n_steps, allow_none=True)
        self.every_n_steps = every_n_steps
        self.histogram_every_n_steps = histogram_every_n_steps
        self.step: int | None = None  # the step being watched
        self.fit_trainer: L.Trainer | None = None
        self.updated = False
        self.warned: set[str] = set()

    # -- what subclasses fill in ---------------------------------------------------

    def start_step(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Attach hooks / take snapshots before the forward pass."""

    def before_update(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Gradients are final and the weights are still those the forward pass used."""

    def end_step(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """The optimizer has stepped; write what was recorded."""

    def release(self) -> None:
        """Drop every hook and tensor of the step; also called on teardown and on an exception."""

    # -- scheduling ------------------------------------------------------------------

    def records_at(self, step: int) -> bool:
        """True on the steps this diagnostic hooks the model: a module that compiles its training steps runs those
        eagerly (a compiled step would run without the hooks)."""
        return self.fit_trainer is not None and self.due(self.fit_trainer, step)

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.fit_trainer = trainer if trainer.is_global_zero and trainer.loggers else None  # where it records

    def due(self, trainer: L.Trainer, step: int) -> bool:
        return step % self.every_n_steps == 0 or step == trainer.max_steps - 1

    def histograms_due(self, trainer: L.Trainer, step: int) -> bool:
        every = self.histogram_every_n_steps
        return every is not None and (step % every == 0 or step == trainer.max_steps - 1)

    # -- writing -------------------------------------------------------------------

    def log_scalars(self, trainer: L.Trainer, metrics: dict[str, float]) -> None:
        """To every logger, in one call each, at the watched step."""
        finite = {k: v for k, v in metrics.items() if math.isfinite(v)}
        for logger in trainer.loggers:
            logger.log_metrics(finite, step=self.step)

    def writers(self, trainer: L.Trainer, kind: str) -> list[Any]:
        """The experiments of the loggers that take `kind` (histogram, image): TensorBoard's SummaryWriter and
        alike. Warns once per kind about the loggers that can't."""
        method = f"add_{kind}"
        able = [lg.experiment for lg in trainer.loggers if hasattr(lg.experiment, method)]
        unable = [type(lg).__name__ for lg in trainer.loggers if not hasattr(lg.experiment, method)]
        if unable and kind not in self.warned:
            self.warned.add(kind)
            rank_zero_warn(f"{type(self).__name__}: {', '.join(unable)} cannot hold {kind}s; they are skipped there "
                           "(scalars still go to every logger)")
        return able

    # -- Lightning hooks -----------------------------------------------------------

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int) -> None:
        step = trainer.global_step
        if self.step is not None or not trainer.is_global_zero or not trainer.loggers or not self.due(trainer, step):
            return
        self.step, self.updated = step, False
        self.start_step(trainer, pl_module)

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: Any) -> None:
        if self.step is None or self.updated:
            return
        self.updated = True
        with torch.no_grad():
            self.before_update(trainer, pl_module)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if self.step is None or trainer.global_step == self.step:
            return  # not watching, or no update yet (gradient accumulation)
        try:
            with torch.no_grad():
                self.end_step(trainer, pl_module)
        finally:
            self.finish()

    def finish(self) -> None:
        self.step = None
        self.release()

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.finish()

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self.finish()

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.finish()


class ModuleDiagnostic(StepDiagnostic):
    """A diagnostic that records the watched modules (activations, or `modules` / `pattern`) through a `Recorder`."""

    record: dict[str, bool] = {}  # Recorder flags: inputs, outputs, grads

    def __init__(self, every_n_steps: int, histogram_every_n_steps: int | None = None,
                 modules: Sequence[str] | None = None, pattern: str | None = None,
                 saturation_threshold: float = SATURATION_THRESHOLD) -> None:
        super().__init__(every_n_steps, histogram_every_n_steps)
        check_selection(modules, pattern)
        self.modules = list(modules) if modules is not None else None
        self.pattern = pattern
        self.saturation_threshold = check_threshold(saturation_threshold)
        self.rules = flat_rules(self.saturation_threshold)
        self.watched: list[tuple[str, nn.Module]] = []
        self.rule_of: dict[str, FlatRule | None] = {}  # each watched module's flat region, None for a non-activation
        self.recorder: Recorder | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        self.watched = select_modules(pl_module, lambda m: rule_for(m, self.rules) is not None, self.modules, self.pattern)
        self.rule_of = {name: rule_for(m, self.rules) for name, m in self.watched}
        if not self.watched:
            what = (f"no module of {type(pl_module).__name__} matches pattern={self.pattern!r}"
                    if self.pattern is not None else
                    f"{type(pl_module).__name__} has no activation modules of a known type "
                    f"({', '.join(t.__name__ for t in self.rules)}); give modules=[...] or pattern=... to watch")
            rank_zero_warn(f"{type(self).__name__}: {what}")

    def start_step(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.recorder = Recorder(self.watched, **self.record)

    def release(self) -> None:
        if self.recorder is not None:
            self.recorder.remove()
            self.recorder = None

