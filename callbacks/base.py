"""What the probes share: the statistics, stable names, and the hooks that record a step.

Nothing here knows namegen or Lightning: a `Recorder` holds one forward pass's inputs, outputs and gradients,
one record per call of a module, and `Numbering` gives each call's series its fixed NN. What to watch is
`catalog.Catalog`'s.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

import torch
import torch.nn as nn
from torch.utils.hooks import RemovableHandle

from .kinds import FlatRule, finite_part, std
from .tags import CALL_MARK, NONFINITE

def activation_summary(x: torch.Tensor | None, t: torch.Tensor, rule: FlatRule | None, dim: int = -1,
                       ) -> dict[str, float]:
    """mean and std of the output `t`'s finite entries, `nonfinite` (their complement's share) where it is not 0;
    with a rule, saturation (fraction of finite entries in the flat region) and dead (fraction of units flat for
    every example: `dim` is the units' dimension, every other one an example)."""
    values, bad = finite_part(t)
    summary = {"mean": values.mean().item() if values.numel() else math.nan, "std": std(values)}
    if bad:
        summary[NONFINITE] = bad
    if rule is not None and (rule.on == "output" or x is not None):
        read = t if rule.on == "output" else x
        flat = rule.flat(read) & torch.isfinite(read) if bad or rule.on == "input" else rule.flat(read)
        summary["saturation"] = flat.float().mean().item()
        summary["dead"] = (flat.movedim(dim, -1).reshape(-1, flat.shape[dim]).all(dim=0).float().mean().item()
                           if flat.dim() else 0.0)
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
# stable names


class Numbering:
    """The NN of one tag family's series, the same on every step of a fit.

    The watched modules are numbered in module-tree order; a module called k > 1 times per forward pass
    takes k consecutive numbers, its series named `name@1` ... `name@k` (`tags.py`). The counts are those of
    the first recorded step; a call first seen later is numbered after every other, and a module that does not
    run on a step leaves a gap: no series is ever renamed.
    """

    def __init__(self, names: Sequence[str]) -> None:
        self.names = list(names)
        self.slots: dict[tuple[str, int], tuple[int, str]] = {}

    def number(self, keys: Iterable[tuple[str, int]]) -> list[tuple[int, str, tuple[str, int]]]:
        """(index, series name, record key) of the records `keys` ((module name, call)), in index order."""
        keys = list(keys)
        if not self.slots:
            calls: dict[str, int] = {}
            for name, k in keys:
                calls[name] = max(calls.get(name, 0), k)
            i = 0
            for name in self.names:
                n = calls.get(name, 1)
                for k in range(1, n + 1):
                    self.slots[(name, k)] = (i, name if n == 1 else f"{name}{CALL_MARK}{k}")
                    i += 1
        for name, k in keys:
            if (name, k) not in self.slots:
                self.slots[(name, k)] = (len(self.slots), f"{name}{CALL_MARK}{k}")
        return sorted((*self.slots[key], key) for key in keys)


# ---------------------------------------------------------------------------
# the hooks


@dataclass(frozen=True)
class Want:
    """What a `Recorder` keeps of each call of one module in a forward pass."""

    inputs: bool = False
    outputs: bool = False
    grads: bool = False

    def __or__(self, other: "Want") -> "Want":
        return Want(self.inputs or other.inputs, self.outputs or other.outputs, self.grads or other.grads)


def keep_positions(t: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor | None:
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


Key = tuple[str, int]  # (module name, call number from 1 within one forward pass)
Extract = Callable[[nn.Module, tuple, dict, Any], "torch.Tensor | None"]


def first_tensor(output: Any) -> torch.Tensor | None:
    """A module's output tensor: itself, or the first tensor of a tuple (a module that returns extras)."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)):
        return next((o for o in output if isinstance(o, torch.Tensor)), None)
    return None


class Recorder:
    """Hooks on watched modules, for one forward pass: every call's input, output and output gradient.

    Each call of a module is its own record, keyed (name, call): a module called twice per forward pass
    (torchvision's BasicBlock's one ReLU) gives two. `close()` ends the forward pass being recorded: the
    next micro-batches of a step (gradient accumulation) are other forward passes, not more calls. The
    input is read in a forward *pre*-hook, before the module runs, so an in-place activation cannot have
    overwritten it; the output and its gradient in a forward hook (the first tensor of a tuple output, or
    what an `extract` function makes of the call: the attention logits; where it finds none, the call is
    listed in `hidden`). With a `mask` over the batch's positions, only the positions it keeps are
    recorded (`keep_positions`); the modules whose tensors it cannot apply to are listed in `unmasked`.
    `remove()` detaches every hook.
    """

    def __init__(self, mask: torch.Tensor | None = None):
        self.order: list[Key] = []
        self.inputs: dict[Key, torch.Tensor] = {}
        self.outputs: dict[Key, torch.Tensor] = {}
        self.grads: dict[Key, torch.Tensor] = {}
        self.hidden: set[Key] = set()
        self.unmasked: set[str] = set()
        self.mask = mask
        self.open = True
        self.calls: dict[str, int] = {}
        self.pending: dict[str, list[torch.Tensor | None]] = {}
        self.want: dict[str, Want] = {}
        self.extract: dict[str, Extract] = {}
        self.handles: list[RemovableHandle] = []

    def attach(self, modules: Iterable[tuple[str, nn.Module]], want: Want, extract: Extract | None = None) -> None:
        """Record `want` of these modules too (a module attached twice is hooked once, with both wants)."""
        for name, module in modules:
            had = self.want.get(name)
            self.want[name] = want if had is None else had | want
            if extract is not None:
                self.extract[name] = extract
            if had is None:
                self.handles.append(module.register_forward_pre_hook(self.pre_hook(name), with_kwargs=True))
                self.handles.append(module.register_forward_hook(self.forward_hook(name), with_kwargs=True))

    def close(self) -> None:
        self.open = False

    def kept(self, name: str, t: torch.Tensor) -> torch.Tensor:
        kept = keep_positions(t, self.mask)
        if kept is None:
            self.unmasked.add(name)
            return t
        return kept

    def pre_hook(self, name: str):
        def hook(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            if not self.open:
                return
            x = args[0] if args else next(iter(kwargs.values()), None)  # the input, however it was passed
            keep = self.want[name].inputs and isinstance(x, torch.Tensor)
            # copied: an in-place module (or a later in-place op) overwrites the tensor itself
            self.pending.setdefault(name, []).append(self.kept(name, x.detach()).clone() if keep else None)

        return hook

    def forward_hook(self, name: str):
        def hook(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> None:
            if not self.open:
                return
            x = self.pending[name].pop() if self.pending.get(name) else None
            extract = self.extract.get(name)
            t = extract(module, args, kwargs, output) if extract is not None else first_tensor(output)
            if isinstance(t, tuple):  # a function's (input, output): a functional activation
                preact, t = t
                x = self.kept(name, preact.detach()) if self.want[name].inputs else None
            self.calls[name] = k = self.calls.get(name, 0) + 1
            key = (name, k)
            self.order.append(key)
            if t is None:
                self.hidden.add(key)
                return
            want = self.want[name]
            if x is not None:
                self.inputs[key] = x
            if want.outputs:
                self.outputs[key] = self.kept(name, t.detach())
            if want.grads and t.requires_grad:
                self.handles.append(t.register_hook(lambda g: self.grads.__setitem__(key, self.kept(name, g.detach()))))

        return hook

    def view(self, names: Iterable[str]) -> "Records":
        """The records of the modules `names` alone."""
        return Records(self, set(names))

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles.clear()


class Records:
    """One probe's share of a `Recorder`: the same tensors, its own modules' calls in forward order."""

    def __init__(self, recorder: Recorder, names: set[str]):
        self.order = [key for key in recorder.order if key[0] in names]
        self.inputs, self.outputs, self.grads = recorder.inputs, recorder.outputs, recorder.grads
        self.hidden = recorder.hidden


# ---------------------------------------------------------------------------
# arguments


def check_interval(name: str, value: Any, allow_none: bool = False) -> None:
    """The callbacks' one positive-integer rule."""
    if value is None and allow_none:
        return
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        extra = " or null to turn it off" if allow_none else ""
        raise ValueError(f"{name}={value!r} must be a positive integer (a number of optimizer steps){extra}")
