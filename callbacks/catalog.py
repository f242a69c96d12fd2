"""What to watch in a module tree, found once when a fit starts: `Catalog`.

Every module by its clean name (module-tree order; never torch.compile's `_orig_mod.`), each activation's kind
(`kinds`), the normalization layers, the attention modules, and every parameter of 2 or more dimensions.

Units by layout, one rule (`unit_dim`): a tensor of 4 or more dimensions is (N, C, ...) and its units are the
channels, dim 1; a 3-dimensional one is (N, C, L) where the module sits next to a convolution or a
channel norm (a sibling in its parent), else (B, T, C) with the units last; a 2-dimensional one is (B, C).
`Diagnostics(units={name or type: dim})` overrides it per module.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Sequence

import torch
import torch.nn as nn

from .base import Extract
from .kinds import is_norm, kind_of

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
FUNCTIONAL = {nn.TransformerEncoderLayer: ("linear1", "activation"),
              nn.TransformerDecoderLayer: ("linear1", "activation")}


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


