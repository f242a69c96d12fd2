"""What the probes share: the statistics, what to watch (`Catalog`), stable names, and the hooks that record a step.

Nothing here knows namegen or Lightning: the catalog finds what to watch in any module tree (activations by
kind, `kinds`; normalization layers; attention modules; every parameter of 2 or more dimensions), and a
`Recorder` holds one forward pass's inputs, outputs and gradients, one record per call of a module.

Units by layout, one rule (`unit_dim`): a tensor of 4 or more dimensions is (N, C, ...) and its units are the
channels, dim 1; a 3-dimensional one is (N, C, L) where the module sits next to a convolution or a
channel norm (a sibling in its parent), else (B, T, C) with the units last; a 2-dimensional one is (B, C).
`Diagnostics(units={name or type: dim})` overrides it per module.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Sequence

import torch
import torch.nn as nn
from torch.utils.hooks import RemovableHandle

from .kinds import FlatRule, finite_part, is_norm, kind_of, std
from .tags import NONFINITE

COMPILED = "_orig_mod"  # the attribute torch.compile's OptimizedModule keeps the original module under
CHANNEL_NEIGHBOURS = (nn.modules.conv._ConvNd, nn.modules.batchnorm._BatchNorm, nn.modules.instancenorm._InstanceNorm,
                      nn.GroupNorm)
ATTENTION_NAME = re.compile(r"(?i)attention")  # GPT2Attention, LlamaAttention, BertSelfAttention, ...


def clean(name: str) -> str:
    """A module or parameter path as the user wrote the model: without torch.compile's `_orig_mod.` level."""
    return ".".join(part for part in name.split(".") if part != COMPILED)


def unit_dim(ndim: int, beside_conv: bool, override: int | None = None) -> int:
    """The dimension that holds the units (see the module docstring)."""
    if override is not None:
        return override
    return 1 if ndim >= 4 or (ndim == 3 and beside_conv) else -1


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
# what to watch


@dataclass
class Catalog:
    """What a module tree holds, found once when a fit starts: every module by its clean name (module-tree order),
    each activation's kind, the normalization layers, the attention modules, each module's unit rule."""

    modules: dict[str, nn.Module]
    kinds: dict[str, str]  # activation name -> kind (`kinds.KINDS`)
    norms: list[str]
    attention: list[str]
    beside_conv: set[str] = field(default_factory=set)
    units: dict[str, int] = field(default_factory=dict)  # declared unit dims
    unknown: list[str] = field(default_factory=list)  # activation-like modules of no known kind
    extracts: dict[str, "Extract"] = field(default_factory=dict)  # how a functional activation is recorded

    @classmethod
    def of(cls, root: nn.Module, declared: Mapping[type | str, str | None] | None = None,
           units: Mapping[type | str, int] | None = None) -> "Catalog":
        from .kinds import activation_like, classify, nonlinear

        declared, units = declared or {}, units or {}
        modules: dict[str, nn.Module] = {}
        for name, m in root.named_modules():
            if clean(name):  # torch.compile's wrapper and the module it wraps share a clean name: the last, the
                modules[clean(name)] = m  # wrapped one, is hooked (it is the one that runs eagerly)
        kinds, unknown = {}, []
        for name, m in modules.items():
            kind, said = kind_of(name, m, declared)
            if kind is not None:
                kinds[name] = kind
            elif not said and activation_like(m) and nonlinear(m):
                unknown.append(name)
        functional = functional_activations(modules)
        for name, (_, fn) in functional.items():
            if (kind := classify(fn)) is not None:
                kinds[name] = kind
        modules = {name: m for host, m in modules.items()  # each after the module it is hooked on, by that module
                   for name in (host, *(f for f, (h, _) in functional.items() if h == host))}
        parents = {name: name.rpartition(".")[0] for name in modules}
        children: dict[str, list[nn.Module]] = {}
        for name, m in modules.items():
            children.setdefault(parents[name], []).append(m)
        beside = {name for name in modules if any(isinstance(s, CHANNEL_NEIGHBOURS) for s in children[parents[name]])}
        norms = [name for name, m in modules.items() if is_norm(m)]
        attention = innermost([name for name, m in modules.items()
                               if isinstance(m, nn.MultiheadAttention) or ATTENTION_NAME.search(type(m).__name__)])
        dims = {}
        for name, m in modules.items():
            for key in (name, *type(m).__mro__):
                if key in units:
                    dims[name] = units[key]
                    break
        extracts = {name: applied(fn) for name, (_, fn) in functional.items()}
        return cls(modules, kinds, norms, attention, beside, dims, unknown, extracts)

    def unit_dim(self, name: str, ndim: int) -> int:
        return unit_dim(ndim, name in self.beside_conv, self.units.get(name))


# torch layers that apply an activation *function* (activation="gelu") between two of their modules: the function's
# input is the first module's output. Recorded as `<layer>.activation`, hooked on that module (no gradient: the
# function's output is not a module's, so no hook can reach its gradient)
FUNCTIONAL = {nn.TransformerEncoderLayer: ("linear1", "activation"), nn.TransformerDecoderLayer: ("linear1", "activation")}


def functional_activations(modules: Mapping[str, nn.Module]) -> dict[str, tuple[str, Callable]]:
    """{`<layer>.activation`: (the module whose output it takes, the function)} of every such layer whose activation
    is a function, not a module (a module is found as itself)."""
    out = {}
    for name, m in modules.items():
        spec = next((FUNCTIONAL[c] for c in type(m).__mro__ if c in FUNCTIONAL), None)
        if spec is not None and callable(fn := getattr(m, spec[1], None)) and not isinstance(fn, nn.Module):
            out[f"{name}.{spec[1]}"] = (f"{name}.{spec[0]}", fn)
    return out


def applied(fn: Callable[[torch.Tensor], torch.Tensor]) -> "Extract":
    """An extract recording (input, output) of `fn` applied to a module's output."""
    def extract(module: nn.Module, args: tuple, kwargs: dict, output: Any):
        with torch.no_grad():
            return output, fn(output)
    return extract


def innermost(names: list[str]) -> list[str]:
    """The names that contain none of the others (BertSelfAttention, not the BertAttention around it)."""
    return [n for n in names if not any(o.startswith(n + ".") for o in names)]


def check_units(units: Any) -> dict[type | str, int]:
    if units is None:
        return {}
    if not isinstance(units, Mapping) or not all(
            (isinstance(k, str) or isinstance(k, type) and issubclass(k, nn.Module))
            and isinstance(v, int) and not isinstance(v, bool) for k, v in units.items()):
        raise ValueError(f"units={units!r} must map module names or types to the units' dimension, such as "
                         "{'model.conv_act': 1, nn.GELU: -1}")
    return dict(units)


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


def select_modules(catalog: Catalog, default: Iterable[str], modules: Sequence[str] | None = None,
                   pattern: str | None = None) -> list[str]:
    """The names to watch, in module-tree order: `default`, or the named ones, or the ones whose name matches
    `pattern`. An unknown name is refused with the activations that exist."""
    if modules is not None:
        missing = [n for n in modules if n not in catalog.modules]
        if missing:
            found = ", ".join(catalog.kinds) or "none of a known kind"
            raise ValueError(f"no module named {', '.join(map(repr, missing))}; activations found: {found}")
        return [n for n in catalog.modules if n in set(modules)]
    if pattern is not None:
        return [n for n in catalog.modules if re.search(pattern, n)]
    wanted = set(default)
    return [n for n in catalog.modules if n in wanted]


def weight_matrices(root: nn.Module) -> list[tuple[int, str, nn.Parameter]]:
    """(index, clean name, parameter) of every trainable parameter of 2 or more dimensions, in parameter order."""
    matrices = [(clean(name), p) for name, p in root.named_parameters() if p.dim() >= 2 and p.requires_grad]
    return [(j, name, p) for j, (name, p) in enumerate(matrices)]


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
                    self.slots[(name, k)] = (i, name if n == 1 else f"{name}@{k}")
                    i += 1
        for name, k in keys:
            if (name, k) not in self.slots:
                self.slots[(name, k)] = (len(self.slots), f"{name}@{k}")
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
