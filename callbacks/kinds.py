"""What each activation computes and where it is flat: one table, and the discovery that reads it.

`KINDS` maps a kind's name to what the module computes (a reference function, for classifying a module by its
outputs) and to its flat region (where it passes almost no gradient back). torch's activation classes map to a
kind by type (`TORCH_KINDS`); any other parameter-free module is classified by comparing its output on a probe
tensor with every kind's reference (`classify`), so a Hugging Face `NewGELUActivation` or a `ReLUSquared` of
someone's own is found without a class-name list. A user names any other module's kind
(`Diagnostics(activations={MyAct: "gelu", "model.blocks.0.act": "relu"})`).

Kind names are the lower-cased torch class names where one exists (`gelu`, `relu6`, `leakyrelu`), so
`namegen.diagnosis.thresholds.kind_of` reads them as it reads class names.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import torch
import torch.nn as nn
import torch.nn.functional as F

SATURATION_THRESHOLD = 0.97  # |tanh| above it: tanh' = 1 - t^2 < 0.06, almost no gradient flows back
FAR_BELOW_ZERO = -3.0  # GELU'(-3) = -0.012, SiLU'(-3) = -0.09, ELU'(-3) = 0.05: the smooth units' flat tail


@dataclass(frozen=True)
class FlatRule:
    """Where an activation passes almost no gradient back.

    `on` says which tensor the rule reads ("output" or "input" of the module), `flat` maps that tensor to a
    boolean mask, `text` says it in words for legends.
    """

    on: str
    flat: Callable[[torch.Tensor], torch.Tensor]
    text: str


def bounded(threshold: float, scale: Callable[[torch.Tensor], torch.Tensor] = lambda t: t, name: str = "t") -> FlatRule:
    return FlatRule("output", lambda t: scale(t).abs() > threshold, f"|{name}| > {threshold:g}")


def below(x0: float) -> FlatRule:
    return FlatRule("input", lambda x: x < x0, f"x < {x0:g}")


def outside(low: float, high: float) -> FlatRule:
    return FlatRule("input", lambda x: (x <= low) | (x >= high), f"x <= {low:g} or x >= {high:g}")


# A module's own settings, where its flat region depends on them (torch's attribute names; defaults otherwise)
def attr(module: nn.Module | None, name: str, default: float) -> float:
    value = getattr(module, name, default)
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else default


@dataclass(frozen=True)
class Kind:
    """One kind of activation: `reference(x)` is what it computes (None: not classified by its outputs, such as a
    random or a learned slope), `rule(module, threshold)` its flat region (None: never flat)."""

    reference: Callable[[torch.Tensor], torch.Tensor] | None
    rule: Callable[[nn.Module | None, float], FlatRule | None]


def quick_gelu(x: torch.Tensor) -> torch.Tensor:
    return x * torch.sigmoid(1.702 * x)


# the table: flat regions from each function's derivative (bounded: 1 - t^2 < 0.06; far below zero: < 0.1)
KINDS: dict[str, Kind] = {
    "tanh": Kind(torch.tanh, lambda m, s: bounded(s)),
    # sigmoid is tanh rescaled: s = (1 + tanh(x/2)) / 2, s' = (1 - (2s-1)^2) / 4
    "sigmoid": Kind(torch.sigmoid, lambda m, s: bounded(s, lambda t: 2 * t - 1, "2s - 1")),
    "softsign": Kind(F.softsign, lambda m, s: bounded(s)),  # softsign' = (1 - |s|)^2
    "hardtanh": Kind(F.hardtanh, lambda m, s: outside(attr(m, "min_val", -1.0), attr(m, "max_val", 1.0))),
    "relu6": Kind(F.relu6, lambda m, s: outside(attr(m, "min_val", 0.0), attr(m, "max_val", 6.0))),
    "hardsigmoid": Kind(F.hardsigmoid, lambda m, s: outside(-3.0, 3.0)),
    "relu": Kind(F.relu, lambda m, s: FlatRule("output", lambda t: t <= 0, "t <= 0")),
    "relu2": Kind(lambda x: F.relu(x) ** 2, lambda m, s: FlatRule("output", lambda t: t <= 0, "t <= 0")),
    "threshold": Kind(None, lambda m, s: FlatRule("input", lambda x, x0=attr(m, "threshold", 0.0): x <= x0,
                                                  f"x <= {attr(m, 'threshold', 0.0):g}")),
    "hardswish": Kind(F.hardswish, lambda m, s: FlatRule("input", lambda x: x <= -3, "x <= -3")),
    "gelu": Kind(F.gelu, lambda m, s: below(FAR_BELOW_ZERO)),
    "quick_gelu": Kind(quick_gelu, lambda m, s: below(FAR_BELOW_ZERO)),
    "silu": Kind(F.silu, lambda m, s: below(FAR_BELOW_ZERO)),
    "mish": Kind(F.mish, lambda m, s: below(FAR_BELOW_ZERO)),
    "elu": Kind(F.elu, lambda m, s: below(FAR_BELOW_ZERO)),
    "selu": Kind(F.selu, lambda m, s: below(FAR_BELOW_ZERO)),
    "celu": Kind(F.celu, lambda m, s: below(FAR_BELOW_ZERO * attr(m, "alpha", 1.0))),  # celu' = exp(x / alpha)
    "softplus": Kind(F.softplus, lambda m, s: below(FAR_BELOW_ZERO / attr(m, "beta", 1.0))),  # sigmoid(beta x)
    "logsigmoid": Kind(F.logsigmoid, lambda m, s: FlatRule("input", lambda x: x > -FAR_BELOW_ZERO,
                                                           f"x > {-FAR_BELOW_ZERO:g}")),
    # the shrinks pass no gradient inside [-lambda, lambda]
    "hardshrink": Kind(F.hardshrink, lambda m, s: FlatRule("input", lambda x, l=attr(m, "lambd", 0.5): x.abs() <= l,
                                                           f"|x| <= {attr(m, 'lambd', 0.5):g}")),
    "softshrink": Kind(F.softshrink, lambda m, s: FlatRule("input", lambda x, l=attr(m, "lambd", 0.5): x.abs() <= l,
                                                           f"|x| <= {attr(m, 'lambd', 0.5):g}")),
    # never flat: the negative side keeps a slope (fixed, learned or random), so no unit dies
    "leakyrelu": Kind(lambda x: F.leaky_relu(x, 0.01), lambda m, s: None),
    "prelu": Kind(None, lambda m, s: None),
    "rrelu": Kind(None, lambda m, s: None),
}

TORCH_KINDS: dict[type, str] = {
    nn.Tanh: "tanh", nn.Sigmoid: "sigmoid", nn.Softsign: "softsign", nn.ReLU6: "relu6", nn.Hardtanh: "hardtanh",
    nn.Hardsigmoid: "hardsigmoid", nn.ReLU: "relu", nn.Threshold: "threshold", nn.Hardswish: "hardswish",
    nn.GELU: "gelu", nn.SiLU: "silu", nn.Mish: "mish", nn.ELU: "elu", nn.SELU: "selu", nn.CELU: "celu",
    nn.Softplus: "softplus", nn.LogSigmoid: "logsigmoid", nn.Hardshrink: "hardshrink", nn.Softshrink: "softshrink",
    nn.LeakyReLU: "leakyrelu", nn.PReLU: "prelu", nn.RReLU: "rrelu",
}

# Normalization layers: torch's by type, anyone else's (Llama's LlamaRMSNorm, T5's T5LayerNorm) by a class name
# ending in "Norm" (what they compute needs their parameters and shapes, so a name rule is the honest test)
NORM_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm, nn.InstanceNorm1d, nn.InstanceNorm2d,
              nn.InstanceNorm3d, nn.LayerNorm, nn.GroupNorm, nn.RMSNorm, nn.LocalResponseNorm)
NORM_NAME = re.compile(r"Norm(\dd)?$")

# parameter-free modules that are no activation: never classified, never warned about
NOT_ACTIVATIONS = (nn.Identity, nn.Flatten, nn.Unflatten, nn.Softmax, nn.LogSoftmax, nn.Softmin, nn.Softmax2d, nn.GLU,
                   nn.Tanhshrink, nn.ModuleList, nn.ModuleDict, nn.Sequential, nn.Upsample, nn.ChannelShuffle,
                   nn.PixelShuffle, nn.PixelUnshuffle, nn.ZeroPad2d, nn.ConstantPad2d)
NOT_ACTIVATION_BASES = ("dropout", "pool", "pad", "embedding", "loss")  # torch.nn base-module names to skip

# the probe tensor: both sides of zero, past every flat region's edge (|x| up to 8), a few points near zero
PROBE = torch.linspace(-8.0, 8.0, 161)
MATCH_TOLERANCE = 1e-3  # gelu's tanh approximation (NewGELUActivation) is within 5e-4 of the exact gelu: one kind


def is_norm(module: nn.Module) -> bool:
    return isinstance(module, NORM_TYPES) or bool(NORM_NAME.search(type(module).__name__))


def check_kinds(declared: Any) -> dict[type | str, str | None]:
    """`activations=` as given to Diagnostics: {module type or module name: kind name, or None to leave it out}."""
    if declared is None:
        return {}
    if not isinstance(declared, Mapping):
        raise ValueError(f"activations={declared!r} must map module types or names to kinds, such as "
                         "{MyAct: 'gelu', 'model.blocks.0.act': 'relu'}")
    for key, kind in declared.items():
        if not (isinstance(key, str) or isinstance(key, type) and issubclass(key, nn.Module)):
            raise ValueError(f"activations: {key!r} is neither a module type nor a module name")
        if kind is not None and kind not in KINDS:
            raise ValueError(f"activations: {key!r} -> {kind!r} is not a kind; known kinds: {', '.join(KINDS)} "
                             "(or None to leave the module out)")
    return dict(declared)


def activation_like(module: nn.Module) -> bool:
    """A leaf with no parameters that is not one of torch's known non-activations: a candidate to classify."""
    if next(module.children(), None) is not None or next(module.parameters(recurse=False), None) is not None:
        return False
    if isinstance(module, NOT_ACTIVATIONS + NORM_TYPES):
        return False
    torch_bases = [c.__name__.lower() for c in type(module).__mro__ if c.__module__.startswith("torch.nn")]
    return not any(word in base for base in torch_bases for word in NOT_ACTIVATION_BASES)


@torch.no_grad()
def classify(module: Callable[[torch.Tensor], Any]) -> str | None:
    """The kind whose reference matches what `module` (or a function) computes on the probe tensor; None when none
    does (or it cannot be called on one tensor, or its output is not elementwise)."""
    buffers = module.buffers() if isinstance(module, nn.Module) else iter(())
    x = PROBE.to(next((b.device for b in buffers), PROBE.device)).reshape(1, -1)
    try:
        y = module(x.clone())
    except Exception:  # any module of anyone's: one that needs other arguments is simply no activation
        return None
    if not isinstance(y, torch.Tensor) or y.shape != x.shape or not torch.isfinite(y).all():
        return None
    y = y.float()
    for kind, spec in KINDS.items():
        if spec.reference is not None and torch.allclose(y, spec.reference(x), atol=MATCH_TOLERANCE, rtol=0):
            return kind
    return None


def nonlinear(module: nn.Module) -> bool:
    """Whether the module is worth a warning when it cannot be classified: deterministic and not linear."""
    with torch.no_grad():
        x = PROBE.reshape(1, -1)
        try:
            a, b = module(x.clone()), module(2 * x)
        except Exception:
            return False
    return (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.shape == x.shape
            and bool(torch.isfinite(a).all()) and not torch.allclose(b, 2 * a, atol=MATCH_TOLERANCE))


def kind_of(name: str, module: nn.Module, declared: Mapping[type | str, str | None]) -> tuple[str | None, bool]:
    """(the module's kind, whether it was declared): declared by name, else by type (the user's table, then
    torch's), else by what it computes."""
    if name in declared:
        return declared[name], True
    for cls in type(module).__mro__:
        if cls in declared:
            return declared[cls], True
    for cls in type(module).__mro__:
        if cls in TORCH_KINDS:
            return TORCH_KINDS[cls], False
    return (classify(module) if activation_like(module) else None), False


def flat_rule(kind: str | None, module: nn.Module | None, threshold: float = SATURATION_THRESHOLD) -> FlatRule | None:
    return KINDS[kind].rule(module, threshold) if kind is not None else None


def check_threshold(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < value < 1.0:
        raise ValueError(f"saturation_threshold={value!r} must be in (0, 1): |tanh| (and |2 sigmoid - 1|) above it is flat")
    return float(value)


def finite_part(t: torch.Tensor) -> tuple[torch.Tensor, float]:
    """(the finite entries, the fraction that is not finite): the statistics of a run blowing up."""
    finite = torch.isfinite(t)
    if bool(finite.all()):
        return t, 0.0
    return t[finite], 1.0 - finite.float().mean().item()


def std(t: torch.Tensor) -> float:
    return t.std().item() if t.numel() > 1 else (0.0 if t.numel() else math.nan)
