"""A run as the rules read it: its scalars by layer, its lr schedule's phases, its step-0 loss; what a rule saw.

Tags are read through `callbacks.tags` only (step = optimizer updates applied before that forward pass):

    init/loss, init/uniform_loss, train/loss          namegen's module (any module may log them)
    diagnostics/loss, diagnostics/uniform_loss        Diagnostics, for any module: read where namegen's are absent
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

from namegen.callbacks.tags import ACT, ATTN, CALL_MARK, GRAD, LOSS, NORM, TAG, UNIFORM_LOSS, UPDATE_RATIO
from namegen.diagnosis.config import RunConfig
from namegen.diagnosis.thresholds import (
    BOUNDED, FAR_TAIL, FAR_TAIL_BELOW, ONE_SIDED, ONE_SIDED_MEAN_TO_STD, SIGMOID_MEAN, SIGMOID_MEAN_TO_STD,
    SIGMOID_STD_MAX, Thresholds, kind_of,
)
from namegen.events import Scalars

TRAIN_LOSS, INIT_LOSS, INIT_UNIFORM_LOSS = "train/loss", "init/loss", "init/uniform_loss"  # namegen's module's
LOSS_NEEDS = {  # what each loss the rules read is, and the tags that give it, for the coverage line
    "train": f"training loss ({TRAIN_LOSS} or {LOSS})",
    "init": f"step-0 loss ({INIT_LOSS}, or {LOSS} at step 0)",
    "uniform": f"log(output width) ({INIT_UNIFORM_LOSS} or {UNIFORM_LOSS})",
}
LR_PREFIX = "lr-"
LR_EXTRA = ("-momentum", "-weight_decay")  # LearningRateMonitor's other tags: not learning rates
LOSS_SPIKE = 1.5  # a logged train/loss this many times its lowest value so far: one batch's noise is at most 1.2x
LOSS_STALLED = 0.8  # the run's last train losses still above this share of its step-0 loss: it barely learned
LR_JUDGED_LOW = 0.5  # lr too low is judged where the lr is at least this share of its peak (not in a decayed tail)
START = 0  # the step before any update: the lesson's picture
LR_PHASE_STEP = 2.0  # an lr this many times above or below its phase's first value starts a new phase


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
    """The schedule's phases, by its shape: a new phase where any lr- scalar has moved LR_PHASE_STEP-fold from its
    value at the phase's start. A step schedule's drops each start one; a cosine or a warm-up starts one per
    halving, not one per logged point (a phase's median is then over many readings, not one). Without lr tags,
    one phase at the peak. The first phase starts at step 0 whenever its first lr point was logged."""
    points = sorted((s, tag, v) for tag in lr_tags(scalars) for s, v in scalars[tag] if math.isfinite(v))
    if not points:
        return [Phase(0, None, {}, 1.0)]
    starts: list[tuple[int, dict[str, float]]] = []
    current: dict[str, float] = {}
    for step, group in itertools.groupby(points, key=lambda p: p[0]):
        current = {**current, **{tag: v for _, tag, v in group}}
        if not starts or any(moved(starts[-1][1].get(tag), v) for tag, v in current.items()):
            starts.append((step if starts else 0, current))
    peak: dict[str, float] = {}
    for _, tag, v in points:
        peak[tag] = max(peak.get(tag, v), v)
    return [Phase(start, starts[k + 1][0] if k + 1 < len(starts) else None, lr,
                  min(v / peak[t] if peak[t] > 0 else 1.0 for t, v in lr.items()))
            for k, (start, lr) in enumerate(starts)]


def moved(start: float | None, v: float) -> bool:
    """An lr that has left its phase: new, or LR_PHASE_STEP-fold away from the phase's first value (to or from 0)."""
    if start is None:
        return True
    if start <= 0 or v <= 0:
        return not math.isclose(start, v, abs_tol=1e-12)
    return max(v / start, start / v) >= LR_PHASE_STEP * (1 - 1e-6)


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
        # namegen's own loss tags where the module logged them, else what Diagnostics records for any module
        self.loss_tag = TRAIN_LOSS if self.scalars.get(TRAIN_LOSS) or not self.scalars.get(LOSS) else LOSS
        self.loss = list(self.scalars.get(self.loss_tag, []))
        init = self.scalars.get(INIT_LOSS) or [(s, v) for s, v in self.scalars.get(LOSS, [])[:1] if s == START]
        uniform = self.scalars.get(INIT_UNIFORM_LOSS) or self.scalars.get(UNIFORM_LOSS, [])
        self.init_loss = init[0][1] if init else number(self.result.get("init_loss"))
        self.uniform_loss = uniform[0][1] if uniform else number(self.result.get("uniform_loss"))

    def lacks(self, *needs: str) -> str:
        """What the loss rules lack, in words, each with the tags that would give it ("train", "init", "uniform")."""
        have = {"train": bool(self.loss), "init": self.init_loss is not None, "uniform": self.uniform_loss is not None}
        return ", ".join(LOSS_NEEDS[n] for n in needs if not have[n])

    def kind(self, layer: Layer) -> str:
        """The activation's kind: by its type if known, else guessed from its outputs at the first logged step."""
        declared = self.activations.get(layer.name.split(CALL_MARK)[0])  # every call of a module is its kind
        if declared is not None and kind_of(declared) is not None:
            return kind_of(declared)
        mean, std = layer.finite("mean")[:1], layer.finite("std")[:1]
        if not (mean and std and mean[0][1] > 0 and mean[0][1] >= ONE_SIDED_MEAN_TO_STD * std[0][1]):
            return BOUNDED
        m, sd = mean[0][1], std[0][1]
        if SIGMOID_MEAN[0] <= m <= SIGMOID_MEAN[1] and sd <= SIGMOID_STD_MAX and m >= SIGMOID_MEAN_TO_STD * sd:
            return BOUNDED  # a sigmoid: one-sided by its mean, but bounded (flat near 0 and near 1)
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

    def first_nonfinite(self) -> tuple[int, str] | None:
        """(step, layer) of the first activation or gradient the callbacks found non-finite values in (`nonfinite`
        > 0): at the first such step, the lowest layer in forward order; None when every value was finite."""
        hits = [(s, layer.index, layer.name) for family in (self.acts, layers(self.scalars, GRAD))
                for layer in family for s, v in layer.finite("nonfinite") if v > 0]
        return min(hits)[::2] if hits else None

    @property
    def diverged(self) -> bool:
        return self.result.get("status") == "diverged"


def wrong_at_step0(run: Run) -> bool:
    """Step 0, before any update, already looked wrong: a confident start, or a layer saturated or attention
    one-hot. Then the init, not the lr, is the likelier cause of what followed."""
    return confident(run) is not None or any(
        above(layer.finite("saturation")[0][1], limit) for layer, limit in run.judged_acts("saturation")
        if layer.finite("saturation")[0][0] == START) or any(
        above(a.finite("std")[0][1], run.t.attention_std) for a in run.attns if a.finite("std")[0][0] == START)


def confident(run: Run) -> tuple[float, float] | None:
    """(step-0 loss, its limit) when the step-0 loss is above init_loss_ratio x log(V)."""
    if run.init_loss is None or run.uniform_loss is None or not (math.isfinite(run.uniform_loss) and run.uniform_loss > 0):
        return None
    limit = run.t.init_loss_ratio * run.uniform_loss
    return (run.init_loss, limit) if above(run.init_loss, limit) else None
