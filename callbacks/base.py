"""What the probes share: what "flat" means, the statistics, what to watch, and the hooks that record it.

Nothing here knows namegen or Lightning: the probes find what to watch in any module tree
(activation modules by type, normalization layers by type, every parameter of 2 or more
dimensions), and a `Recorder` holds one step's inputs, outputs and gradients of them.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

import torch
import torch.nn as nn
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


@dataclass(frozen=True)
class Want:
    """What a `Recorder` keeps of one module's first call in a step."""

    inputs: bool = False
    outputs: bool = False
    grads: bool = False

    def __or__(self, other: "Want") -> "Want":
        return Want(self.inputs or other.inputs, self.outputs or other.outputs, self.grads or other.grads)


def keep_positions(t: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """The entries of `t` at the positions `mask` keeps (a boolean tensor over the batch's positions, say (B, T)).

    A tensor shaped (*mask.shape, units), such as a sequence model's (B, T, C) activations, keeps
    its counted positions: (N, units). A tensor of position pairs (B, heads, T, T), such as the
    attention logits, keeps the pairs whose two positions both count (flat). Any other shape is
    kept whole: `None` says the mask does not apply to it.
    """
    if mask is None:
        return t
    if t.dim() == mask.dim() + 1 and t.shape[:-1] == mask.shape:
        return t[mask]
    if mask.dim() == 2 and t.dim() == 4 and t.shape[0] == mask.shape[0] and t.shape[2:] == (mask.shape[1],) * 2:
        return t[(mask[:, None, :, None] & mask[:, None, None, :]).expand_as(t)]
    return None


class Recorder:
    """Hooks on watched modules, for one step: each module's first input, output and output gradient.

    The input is read in a forward *pre*-hook, before the module runs, so an in-place activation
    (`LeakyReLU(inplace=True)`) cannot have overwritten it; the output and its gradient in a
    forward hook. The order in which the modules first run is the forward order (`order`). Only
    the first call of each module is kept: a module called twice, or several forward passes in a
    step (gradient accumulation), would mix other inputs in. With a `mask` over the batch's
    positions, only the positions it keeps are recorded (`keep_positions`); the modules whose
    tensors it cannot apply to are listed in `unmasked`. `remove()` detaches every hook.
    """

    def __init__(self, modules: Iterable[tuple[str, nn.Module]] = (), inputs: bool = False, outputs: bool = False,
                 grads: bool = False, mask: torch.Tensor | None = None):
        self.order: list[str] = []
        self.inputs: dict[str, torch.Tensor] = {}
        self.outputs: dict[str, torch.Tensor] = {}
        self.grads: dict[str, torch.Tensor] = {}
        self.unmasked: set[str] = set()
        self.mask = mask
        self.want: dict[str, Want] = {}
        self.handles: list[RemovableHandle] = []
        self.attach(modules, Want(inputs, outputs, grads))

    def attach(self, modules: Iterable[tuple[str, nn.Module]], want: Want) -> None:
        """Record `want` of these modules too (a module attached twice is hooked once, with both wants)."""
        for name, module in modules:
            had = self.want.get(name)
            self.want[name] = want if had is None else had | want
            if had is None:
                self.handles.append(module.register_forward_hook(self.forward_hook(name)))
            if want.inputs and not (had and had.inputs):
                self.handles.append(module.register_forward_pre_hook(self.pre_hook(name), with_kwargs=True))

    def kept(self, name: str, t: torch.Tensor) -> torch.Tensor:
        kept = keep_positions(t, self.mask)
        if kept is None:
            self.unmasked.add(name)
            return t
        return kept

    def pre_hook(self, name: str):
        def hook(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            x = args[0] if args else next(iter(kwargs.values()), None)  # the input, however it was passed
            if name not in self.inputs and isinstance(x, torch.Tensor):
                # copied: an in-place module (or a later in-place op) overwrites the tensor itself
                self.inputs[name] = self.kept(name, x.detach()).clone()

        return hook

    def forward_hook(self, name: str):
        def hook(module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
            if name in self.order or not isinstance(output, torch.Tensor):
                return
            self.order.append(name)
            want = self.want[name]
            if want.outputs:
                self.outputs[name] = self.kept(name, output.detach())
            if want.grads and output.requires_grad:
                self.handles.append(output.register_hook(
                    lambda g: self.grads.__setitem__(name, self.kept(name, g.detach()))))

        return hook

    def view(self, names: Iterable[str]) -> "Records":
        """The records of `names` alone, indexed by their own forward order."""
        return Records(self, set(names))

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles.clear()


class Records:
    """One probe's share of a `Recorder`: the same tensors, its own modules' forward order."""

    def __init__(self, recorder: Recorder, names: set[str]):
        self.order = [name for name in recorder.order if name in names]
        self.inputs, self.outputs, self.grads = recorder.inputs, recorder.outputs, recorder.grads

    def indexed(self) -> list[tuple[int, str]]:
        """(forward index, name) of every module of this view that ran."""
        return list(enumerate(self.order))


# ---------------------------------------------------------------------------
# arguments


def check_interval(name: str, value: Any, allow_none: bool = False) -> None:
    """The callbacks' one positive-integer rule."""
    if value is None and allow_none:
        return
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        extra = " or null to turn it off" if allow_none else ""
        raise ValueError(f"{name}={value!r} must be a positive integer (a number of optimizer steps){extra}")
