"""A run as the rules read it: its scalars by layer, its lr schedule's phases, its step-0 loss; what a rule saw.

Tags are read through `callbacks.tags` only (step = optimizer updates applied before that forward pass):

    init/loss, init/uniform_loss, train/loss          namegen's module (any module may log them)
    lr-<optimizer>[/<group>]                          Lightning's LearningRateMonitor
    act/i.path/{mean,std,saturation,dead}             activations, i = forward order
    norm/i.path/in_std                                the input of each normalization layer
    grad/i.path/std                                   the gradient reaching activation i's output
    update_ratio/j.param                              log10(std(update) / std(weight)), j = parameter order
    attn/i.path/std                                   a Transformer's attention logits
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from namegen.callbacks.tags import ACT, ATTN, GRAD, NORM, TAG, UPDATE_RATIO
from namegen.diagnosis.config import RunConfig
from namegen.diagnosis.thresholds import (
    BOUNDED, FAR_TAIL, FAR_TAIL_BELOW, ONE_SIDED, ONE_SIDED_MEAN_TO_STD, Thresholds, kind_of,
)
from namegen.events import Scalars

LR_PREFIX = "lr-"
LR_EXTRA = ("-momentum", "-weight_decay")  # LearningRateMonitor's other tags: not learning rates
LOSS_SPIKE = 1.5  # a logged train/loss this many times its lowest value so far: one batch's noise is at most 1.2x
LOSS_STALLED = 0.8  # the run's last train losses still above this share of its step-0 loss: it barely learned
LR_JUDGED_LOW = 0.5  # lr too low is judged where the lr is at least this share of its peak (not in a decayed tail)
START = 0  # the step before any update: the lesson's picture


@dataclass
class Layer:
    index: int
    name: str
    stats: dict[str, list[tuple[int, float]]]

    def finite(self, stat: str = "value") -> list[tuple[int, float]]:
        return [(s, v) for s, v in self.stats.get(stat, []) if math.isfinite(v)]


def layers(scalars: Scalars, family: str) -> list[Layer]:
    """The layers of one tag family, by index (never by the tag's text); a family without a statistic keeps it
    as "value"."""
    by_index: dict[int, Layer] = {}
    for tag, series in scalars.items():
        if (m := TAG.match(tag)) and m["family"] == family:
            layer = by_index.setdefault(int(m["index"]), Layer(int(m["index"]), m["name"], {}))
            layer.stats[m["stat"] or "value"] = series
    return [by_index[i] for i in sorted(by_index)]


@dataclass(frozen=True)
class Phase:
    """A maximal step range [start, end) over which every lr- scalar is constant; end None = to the end."""

    start: int
    end: int | None
    lr: dict[str, float]
    level: float  # the lowest of its lrs as a share of that lr's peak: 1 at the peak, 0.1 after SGD's decay

    @property
    def peak(self) -> bool:
        return self.level >= 1 - 1e-6


def lr_tags(scalars: Scalars) -> list[str]:
    return sorted(t for t in scalars if t.startswith(LR_PREFIX) and not t.endswith(LR_EXTRA))


def lr_phases(scalars: Scalars) -> list[Phase]:
    """The schedule's phases: a new one wherever any lr- scalar changes; without lr tags, one phase at the peak.
    The first phase starts at step 0 whenever its first lr point was logged."""
    points = sorted((s, tag, v) for tag in lr_tags(scalars) for s, v in scalars[tag] if math.isfinite(v))
    if not points:
        return [Phase(0, None, {}, 1.0)]
    starts: list[tuple[int, dict[str, float]]] = []
    current: dict[str, float] = {}
    for step, group in itertools.groupby(points, key=lambda p: p[0]):
        values = {tag: v for _, tag, v in group}
        changed = any(tag not in current or not math.isclose(v, current[tag], rel_tol=1e-6) for tag, v in values.items())
        current = {**current, **values}
        if not starts or changed:
            starts.append((step if starts else 0, current))
    peak: dict[str, float] = {}
    for _, tag, v in points:
        peak[tag] = max(peak.get(tag, v), v)
    return [Phase(start, starts[k + 1][0] if k + 1 < len(starts) else None, lr,
                  min(v / peak[t] if peak[t] > 0 else 1.0 for t, v in lr.items()))
            for k, (start, lr) in enumerate(starts)]


def above(value: float, limit: float) -> bool:
    """value > limit beyond float32 rounding: event files store float32, so 10 dead units of 100 read
    0.10000000149, which is not above a 10% threshold."""
    return value - limit > 1e-6 * max(1.0, abs(limit))


def number(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def pct(v: float) -> str:
    return f"{v:.1%}"


def num(v: float) -> str:
    return f"{v:.3g}"


def weight_layer(param: str) -> str:
    return param.removesuffix(".weight")


@dataclass
class Seen:
    """What a rule saw, as a finding and a note show it."""

    name: str  # the finding's short name, as in the health column
    title: str
    layers: tuple[str, ...]
    steps: tuple[int, ...]
    measured: str
    healthy: str


@dataclass
class Observation(Seen):
    """What a rule saw. `harm` says why it hurt the run (a finding); else `harm_with` names the findings that make
    it hurt, and `quiet` says why it is only a note. `facts` are what the remedy is computed from."""

    evidence: tuple[dict[str, Any], ...] = ()
    harm: str | None = None
    harm_with: tuple[str, ...] = ()
    quiet: str = ""
    facts: dict[str, Any] = field(default_factory=dict)


@dataclass
class Run:
    """One run's scalars, result.json, thresholds, activation types and config, as the judges read them."""

    scalars: Scalars
    result: Mapping[str, Any]
    t: Thresholds
    activations: Mapping[str, str]  # module path -> activation class name, when known
    config: RunConfig | None

    def __post_init__(self) -> None:
        self.acts = layers(self.scalars, ACT)
        self.grads = [g for g in layers(self.scalars, GRAD) if g.finite("std")]
        self.updates = [u for u in layers(self.scalars, UPDATE_RATIO) if any(s > START for s, _ in u.finite())]
        self.norms = [n for n in layers(self.scalars, NORM) if n.finite("in_std")]
        self.attns = [a for a in layers(self.scalars, ATTN) if a.finite("std")]
        self.loss = [(s, v) for s, v in self.scalars.get("train/loss", [])]
        init = self.scalars.get("init/loss", [])
        uniform = self.scalars.get("init/uniform_loss", [])
        self.init_loss = init[0][1] if init else number(self.result.get("init_loss"))
        self.uniform_loss = uniform[0][1] if uniform else number(self.result.get("uniform_loss"))

    def kind(self, layer: Layer) -> str:
        """The activation's kind: by its type if known, else guessed from its outputs at the first logged step."""
        declared = self.activations.get(layer.name)
        if declared is not None and kind_of(declared) is not None:
            return kind_of(declared)
        mean, std = layer.finite("mean")[:1], layer.finite("std")[:1]
        if not (mean and std and mean[0][1] > 0 and mean[0][1] >= ONE_SIDED_MEAN_TO_STD * std[0][1]):
            return BOUNDED
        flat = layer.finite("saturation")[:1]
        return FAR_TAIL if flat and flat[0][1] < FAR_TAIL_BELOW else ONE_SIDED

    def judged_acts(self, stat: str) -> list[tuple[Layer, float]]:
        """(layer, its flat-fraction threshold) of the activations with `stat` logged whose kind can be flat."""
        out = []
        for layer in self.acts:
            limit = self.t.saturation(self.kind(layer))
            if layer.finite(stat) and limit is not None:
                out.append((layer, limit))
        return out

    def spikes(self) -> list[tuple[int, float, float]]:
        """(step, loss, lowest loss before) where train/loss jumped to LOSS_SPIKE x its lowest value so far
        (or stopped being finite)."""
        out, low = [], math.inf
        for s, v in self.loss:
            if not math.isfinite(v) or v > LOSS_SPIKE * low:
                out.append((s, v, low))
            if math.isfinite(v):
                low = min(low, v)
        return out

    def stalled(self) -> tuple[float, float] | None:
        """(last losses' mean, step-0 loss) when the run's last three logged train losses are still above
        LOSS_STALLED x its step-0 loss; None when it learned, or when that is unknown."""
        tail = [v for _, v in self.loss[-3:] if math.isfinite(v)]
        if not tail or self.init_loss is None:
            return None
        mean = sum(tail) / len(tail)
        return (mean, self.init_loss) if mean > LOSS_STALLED * self.init_loss else None

    @property
    def diverged(self) -> bool:
        return self.result.get("status") == "diverged"
