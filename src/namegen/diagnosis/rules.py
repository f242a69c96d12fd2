"""The rule table: what each rule reads, when it applies, what it measures; `engine.diagnose` runs them.

Tags are read through `callbacks.tags` only (step = optimizer updates applied before that forward pass):

    init/loss, init/uniform_loss, train/loss          namegen's module (any module may log them)
    lr-<optimizer>[/<group>]                          Lightning's LearningRateMonitor
    act/i.path/{mean,std,saturation,dead}             activations, i = forward order
    norm/i.path/in_std                                the input of each normalization layer
    grad/i.path/std                                   the gradient reaching activation i's output
    update_ratio/j.param                              log10(std(update) / std(weight)), j = parameter order
    attn/i.path/std                                   a Transformer's attention logits

Each rule's judge returns observations. One that names its harm (`harm`) becomes a finding and makes the run
unhealthy; one that only hurts together with another finding names it in `harm_with`; any other is a note.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from namegen.callbacks.tags import ACT, ATTN, GRAD, HEALTHY_UPDATE_RATIO, NORM, TAG, UPDATE_RATIO
from namegen.diagnosis.config import RunConfig
from namegen.diagnosis.thresholds import (
    BOUNDED, FAR_TAIL, FAR_TAIL_BELOW, LEAKY, ONE_SIDED, ONE_SIDED_MEAN_TO_STD, Thresholds, kind_of,
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


# -- the judges ----------------------------------------------------------------------------------------------------


def judge_diverged(run: Run) -> list[Observation]:
    """The loss stopped being finite (result.json's status, or a non-finite train/loss). Ambiguous between a
    bad init and an lr too high: a bad init shows at step 0 (a confident start, saturation), the lr after."""
    bad = next(((s, v) for s, v in run.loss if not math.isfinite(v)), None)
    if not run.diverged and bad is None:
        return []
    step = number(run.result.get("diverged_step"))
    step = int(step) if step is not None else (bad[0] if bad else None)
    layer = run.result.get("diverged_layer") if isinstance(run.result.get("diverged_layer"), str) else None
    error = run.result.get("error")
    measured = (str(error).splitlines() or [""])[0] if error else (
        f"train/loss = {bad[1]} at step {bad[0]}" if bad else "status diverged")
    return [Observation(
        "diverged", "the loss stopped being finite", (layer,) if layer else (), (step,) if step is not None else (),
        measured, "a finite loss at every step", ({"layer": layer, "step": step, "value": bad[1] if bad else None},),
        harm="the run stopped", facts={"init_bad": wrong_at_step0(run)})]


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


def judge_confident_start(run: Run) -> list[Observation]:
    """Step-0 loss far above log(V): large, confidently wrong logits; the first steps only shrink them."""
    hit = confident(run)
    if hit is None:
        return []
    loss, limit = hit
    out = weight_layer(run.updates[-1].name) if run.updates else None
    return [Observation(
        "confident_start", "confidently wrong at the start: the first loss is far above log(V), a uniform guess's",
        (out,) if out else (), (START,),
        f"init/loss {num(loss)} = {loss / run.uniform_loss:.1f} x log(V) (log(V) = {num(run.uniform_loss)})",
        f"<= {run.t.init_loss_ratio:g} x log(V) = {num(limit)}", ({"layer": out, "step": START, "value": loss},),
        harm="at step 0: the first steps are spent shrinking the logits (the hockey-stick loss curve)")]


KIND_TEXT = {BOUNDED: "tanh/sigmoid", ONE_SIDED: "ReLU", FAR_TAIL: "GELU/SiLU/ELU/Mish"}


def judge_saturated(run: Run) -> list[Observation]:
    """A layer's flat fraction above its kind's threshold at step 0 (the lesson's case: a finding) or only at
    the end (drift: a finding only together with dead units or a vanishing gradient, else a note)."""
    start, end = [], []
    for layer, limit in run.judged_acts("saturation"):
        series = layer.finite("saturation")
        (s0, v0), (s1, v1) = series[0], series[-1]
        if s0 == START and above(v0, limit):
            start.append((layer, limit, [(s, v) for s, v in sorted({series[0], series[-1]}) if above(v, limit)]))
        elif s1 != s0 and above(v1, limit):
            end.append((layer, limit, [(s1, v1)]))
    out = []
    for rows, at_start in ((start, True), (end, False)):
        if not rows:
            continue
        kinds = sorted({run.kind(layer) for layer, _, _ in rows})
        out.append(Observation(
            "saturated", "units stuck in the activation's flat region pass back almost no gradient",
            tuple(layer.name for layer, _, _ in rows), tuple(sorted({s for _, _, over in rows for s, _ in over})),
            "; ".join(f"{layer.name} " + ", ".join(f"{pct(v)} at step {s}" for s, v in over) for layer, _, over in rows),
            "; ".join(f"<= {pct(run.t.saturation(k))} ({KIND_TEXT[k]})" for k in kinds),
            tuple({"layer": layer.name, "step": s, "value": v} for layer, _, over in rows for s, v in over),
            harm="at step 0, before any update: the lesson's case" if at_start else None,
            harm_with=() if at_start else ("dead_units", "vanishing_gradients", "lr_too_high"),
            quiet="" if at_start else "it grew during training while the network kept learning (no dead units, "
                                      "no vanishing gradient)",
            facts={"at_start": at_start, "kinds": kinds}))
    return out


def judge_dead_units(run: Run) -> list[Observation]:
    """A layer's share of units flat for every example above `dead` at the last logged step (leaky units never
    die). Such a unit gets no gradient, so it never recovers: lasting lost capacity."""
    rows = []
    for layer, _ in run.judged_acts("dead"):
        series = layer.finite("dead")
        if above(series[-1][1], run.t.dead):
            since = series[-1][0]
            for s, v in reversed(series):
                if not above(v, run.t.dead):
                    break
                since = s
            rows.append((layer, series[-1], since))
    if not rows:
        return []
    at_start = all(since == START for _, _, since in rows)
    return [Observation(
        "dead_units", "units flat for every example get no gradient and never recover",
        tuple(layer.name for layer, _, _ in rows), tuple(sorted({last[0] for _, last, _ in rows})),
        "; ".join(f"{layer.name} {pct(v)} of units dead at step {s}" + (f" (over {pct(run.t.dead)} since step {since})" if since < s else "")
                  for layer, (s, v), since in rows),
        f"<= {pct(run.t.dead)} of a layer's units (healthy: 0)",
        tuple({"layer": layer.name, "step": s, "value": v} for layer, (s, v), _ in rows),
        harm="lost for good: a dead unit never learns again", facts={"at_start": at_start})]


def judge_gradients(run: Run) -> list[Observation]:
    """The gradient std at the first activation over the last one's, at the first and the last step where every
    layer logged it: below 1/gradient_ratio it vanishes toward the input, above gradient_ratio it explodes."""
    by_step = [dict(layer.finite("std")) for layer in run.grads]
    common = sorted(set.intersection(*(set(d) for d in by_step)))
    T = run.t.gradient_ratio
    hits: dict[str, list[tuple[int, list[float], float]]] = {"vanishing_gradients": [], "exploding_gradients": []}
    for step in sorted({common[0], common[-1]}) if common else []:
        g = [d[step] for d in by_step]
        if not g[-1] > 0:
            continue
        ratio = g[0] / g[-1]
        if ratio < 1 / T:
            hits["vanishing_gradients"].append((step, g, ratio))
        elif ratio > T:
            hits["exploding_gradients"].append((step, g, ratio))
    first, last = run.grads[0].name, run.grads[-1].name
    out = []
    for name, rows in hits.items():
        if not rows:
            continue
        vanishing = name == "vanishing_gradients"
        at_start = rows[0][0] == START
        out.append(Observation(
            name, "the early layers receive almost no gradient" if vanishing
            else "the early layers receive a far larger gradient than the late ones",
            (first, last), tuple(step for step, _, _ in rows),
            "; ".join(f"step {step}: {first} {num(g[0])} vs {last} {num(g[-1])} (ratio {ratio:.3g}); by depth "
                      + ", ".join(num(v) for v in g) + trend(g, vanishing) for step, g, ratio in rows),
            f"first/last gradient std between 1/{T:g} and {T:g} (kaiming + norm: 1.1-2.9)",
            tuple({"layer": f"{first}/{last}", "step": step, "value": ratio} for step, _, ratio in rows),
            harm="at step 0: each layer scales the backward signal by its gain" if at_start
            else "the early layers stopped learning", facts={"at_start": at_start}))
    return out


def trend(g: list[float], vanishing: bool) -> str:
    pairs = list(zip(g, g[1:]))
    monotone = all(a <= b for a, b in pairs) if vanishing else all(a >= b for a, b in pairs)
    return (": shrinks" if vanishing else ": grows") + (" at every layer toward the input" if monotone
                                                        else " toward the input, not monotonically")


def phase_medians(run: Run, start: int, end: int | None) -> list[tuple[Layer, float]]:
    """Per weight matrix, its median update ratio over [start, end), step 0 left out (the first update reflects the
    init more than the lr: naive init's huge gradients, Adam's first step of ~lr x sign(grad))."""
    out = []
    for w in run.updates:
        values = [v for s, v in w.finite() if START < s and start <= s and (end is None or s < end)]
        if values:
            out.append((w, float(np.median(values))))
    return out


def norm_growth(run: Run) -> list[tuple[Layer, float, float]]:
    """(norm, its input's first std, its largest) for the norms whose input grew norm_growth-fold: weights that feed
    a norm grow when the lr is too high, and the norm hides it (their update ratios fall instead)."""
    out = []
    for layer in run.norms:
        series = layer.finite("in_std")
        first, peak = series[0][1], max(v for _, v in series)
        if first > 0 and peak / first >= run.t.norm_growth:
            out.append((layer, first, peak))
    return out


def early_ratio(run: Run) -> float | None:
    """The median update ratio at the first logged step after step 0: the lr's effect before any growth."""
    firsts = [next(v for s, v in w.finite() if s > START) for w in run.updates]
    return float(np.median(firsts)) if firsts else None


def judge_learning_rate(run: Run) -> list[Observation]:
    """lr too high: in a phase of the lr schedule more than update_ratio_share of the weight matrices move by more
    than 10^update_ratio_high of their size per step, or the inputs of most norms grew norm_growth-fold (scale-
    invariant weights grow under a too-high lr while their update ratios fall: never read as too low). Harm: loss
    spikes, or dead units / vanishing gradients / divergence with it.
    lr too low: more than update_ratio_share below 10^update_ratio_low, where the lr is at least half its peak,
    without that growth. Harm: the loss barely fell."""
    t = run.t
    grown = norm_growth(run)
    growth = len(grown) > t.update_ratio_share * len(run.norms) if run.norms else False
    high, low = [], []
    for phase in lr_phases(run.scalars):
        medians = phase_medians(run, phase.start, phase.end)
        if not medians:
            continue
        over = [(w, m) for w, m in medians if above(m, t.update_ratio_high)]
        under = [(w, m) for w, m in medians if above(t.update_ratio_low, m)]
        if len(over) > t.update_ratio_share * len(medians):
            high.append((phase, over, medians))
        elif len(under) > t.update_ratio_share * len(medians) and phase.level >= LR_JUDGED_LOW and not growth:
            low.append((phase, under, medians))
    lr = run.config.lr if run.config is not None else None
    early = early_ratio(run)
    out = []
    if high or growth:
        measured, layers_, steps, evidence = [], [], [], []
        for phase, over, medians in high:
            measured.append(phase_text(run, phase, over, medians, "above", t.update_ratio_high))
            layers_ += [weight_layer(w.name) for w, _ in over]
            steps += [s for w, _ in over for s, _ in w.finite() if phase.start <= s and (phase.end is None or s < phase.end)][:1]
            evidence += [{"layer": weight_layer(w.name), "step": phase.start, "value": m} for w, m in over]
        if growth:
            measured.append(f"the inputs of {len(grown)} of {len(run.norms)} norms grew "
                            + ", ".join(f"{layer.name} {num(a)} -> {num(b)}" for layer, a, b in grown[:4])
                            + (", ..." if len(grown) > 4 else "")
                            + " (weights feeding a norm grow under a too-high lr; their update ratios then fall)")
            layers_ += [layer.name for layer, _, _ in grown]
            evidence += [{"layer": layer.name, "step": None, "value": b / a} for layer, a, b in grown]
        spikes = run.spikes()
        if spikes:
            s, v, lowest = spikes[0]
            measured.append(f"train/loss spiked {len(spikes)} time(s), first at step {s}: {num(v)} after {num(lowest)}")
            steps.append(s)
        out.append(Observation(
            "lr_too_high", "each step changes the weights too much for training to stay stable",
            tuple(dict.fromkeys(layers_)), tuple(sorted(set(steps))), "; ".join(measured),
            f"median log10(update/weight) below {t.update_ratio_high:g} for most weight matrices (healthy -3.5 to "
            f"-1.9); norm inputs growing less than {t.norm_growth:g}x (healthy: at most 3.7x)",
            tuple(evidence),
            harm=f"the loss spiked (step {spikes[0][0]})" if spikes else None,
            harm_with=("diverged", "dead_units", "vanishing_gradients"),
            quiet="the steps are large, but the loss fell without spikes",
            facts={"suggest": suggest_lr(lr, early if growth else max((m for _, ms, _ in high for _, m in ms),
                                                                       default=early)),
                   "limit": t.update_ratio_high}))
    if low:
        measured, layers_, steps = [], [], []
        for phase, under, medians in low:
            measured.append(phase_text(run, phase, under, medians, "below", t.update_ratio_low))
            layers_ += [weight_layer(w.name) for w, _ in under]
            steps.append(phase.start)
        stalled = run.stalled()
        ratio = float(np.median([m for _, under, _ in low for _, m in under]))
        out.append(Observation(
            "lr_too_low", "each step changes the weights by too little to learn",
            tuple(dict.fromkeys(layers_)), tuple(steps), "; ".join(measured),
            f"median log10(update/weight) above {t.update_ratio_low:g} for most weight matrices (healthy -3.5 to -1.9)",
            tuple({"layer": w, "step": None, "value": None} for w in dict.fromkeys(layers_)),
            harm=(f"the loss barely fell: {num(stalled[0])} at the end from {num(stalled[1])} at step 0"
                  if stalled else None),
            quiet="the steps are small, but the loss fell",
            facts={"suggest": suggest_lr(lr, ratio), "limit": t.update_ratio_low}))
    return out


def judge_loss_rise(run: Run) -> list[Observation]:
    """Training made the run worse than its start: step 0 looked healthy (no confident start, no layer saturated,
    no one-hot attention), yet the last train losses ended loss_rise x above the step-0 loss. Only the updates
    changed the network in between, so they did the damage: the lr is too high. This holds where the update
    ratios cannot tell (units that saturated or died in the first steps pass back no gradient, so the later
    updates look small)."""
    tail = [(s, v) for s, v in run.loss[-3:] if math.isfinite(v)]
    if not tail or wrong_at_step0(run) or not run.init_loss > 0:
        return []
    end = sum(v for _, v in tail) / len(tail)
    if not above(end, run.t.loss_rise * run.init_loss):
        return []
    lr = run.config.lr if run.config is not None else None
    return [Observation(
        "lr_too_high", "training made the run worse than its start: the updates did the damage",
        (), tuple(s for s, _ in tail),
        f"train/loss {num(end)} over steps {tail[0][0]}-{tail[-1][0]} = {end / run.init_loss:.1f} x the step-0 loss "
        f"{num(run.init_loss)}, after a healthy step 0",
        f"last losses below {run.t.loss_rise:g} x the step-0 loss (healthy runs end at 0.62-0.74 x)",
        tuple({"layer": None, "step": s, "value": v} for s, v in tail),
        harm=f"the loss ended {end / run.init_loss:.1f} x above where it started",
        facts={"suggest": suggest_lr(lr, start_ratio(run)), "rose": True, "limit": run.t.update_ratio_high})]


def start_ratio(run: Run) -> float | None:
    """The median update ratio of the first update (step 0). After a healthy step 0 it is the lr's own effect:
    it scales with the lr (SGD 0.1 on kaiming tanh: -3.24; lr 5: -1.54, log10(50) = 1.7 higher)."""
    firsts = [v for w in run.updates for s, v in w.finite()[:1] if s == START]
    return float(np.median(firsts)) if firsts else None


def suggest_lr(lr: float | None, ratio: float | None) -> float | None:
    """The lr that brings update ratios to about -3 (they scale with the lr), to one significant digit."""
    if lr is None or ratio is None or not math.isfinite(ratio):
        return None
    return float(f"{lr * 10 ** (HEALTHY_UPDATE_RATIO - ratio):.1g}")


def phase_text(run: Run, phase: Phase, hits: list[tuple[Layer, float]], medians: list[tuple[Layer, float]],
               side: str, limit: float) -> str:
    lr = ", ".join(f"{tag.removeprefix(LR_PREFIX)} {v:.3g}" for tag, v in phase.lr.items()) or "lr unknown"
    end = f"{phase.end}" if phase.end is not None else "the end"
    shown = ", ".join(f"{weight_layer(w.name)} {m:.2f}" for w, m in hits[:4]) + (", ..." if len(hits) > 4 else "")
    return (f"steps {phase.start}-{end} ({lr}): {len(hits)} of {len(medians)} weight matrices {side} {limit:g} "
            f"({shown})")


def judge_attention(run: Run) -> list[Observation]:
    """The attention logits' std above attention_std: the softmax is near one-hot, one key takes all the weight and
    the others get no gradient. At step 0 (the init's doing) a finding; grown during training a note."""
    start, end = [], []
    for layer in run.attns:
        series = layer.finite("std")
        (s0, v0), (s1, v1) = series[0], series[-1]
        if s0 == START and above(v0, run.t.attention_std):
            start.append((layer, s0, v0))
        elif s1 != s0 and above(v1, run.t.attention_std):
            end.append((layer, s1, v1))
    out = []
    for rows, at_start in ((start, True), (end, False)):
        if rows:
            out.append(Observation(
                "attention", "the attention softmax is saturated: each query looks at one key",
                tuple(layer.name for layer, _, _ in rows), tuple(sorted({s for _, s, _ in rows})),
                "; ".join(f"{layer.name} logits std {num(v)} at step {s}" for layer, s, v in rows),
                f"logits std <= {run.t.attention_std:g} (kaiming + LayerNorm: 1.0 at step 0, at most 2.5 after 3,000 steps)",
                tuple({"layer": layer.name, "step": s, "value": v} for layer, s, v in rows),
                harm="at step 0, before any update" if at_start else None,
                harm_with=() if at_start else ("diverged",),
                quiet="" if at_start else "it grew during training: sharper attention the network learned",
                facts={"at_start": at_start}))
    return out


# -- the table -----------------------------------------------------------------------------------------------------


def has_attention(run: Run) -> bool:
    """A model with attention: its config says so, or it logged attention logits (someone else's module)."""
    if run.config is not None:
        return run.config.arch == "transformer"
    return bool(run.attns)


@dataclass(frozen=True)
class Rule:
    name: str  # as listed in `Diagnosis.checked`
    reads: str  # what it needs, in words, for the coverage line
    ready: Callable[[Run], bool]  # that was logged
    judge: Callable[[Run], list[Observation]]
    applies: Callable[[Run], bool] = lambda run: True  # the model has what the rule judges


RULES = (
    Rule("diverged", "train/loss or run status", lambda r: "status" in r.result or bool(r.loss), judge_diverged),
    Rule("confident_start", "init/loss", lambda r: r.init_loss is not None and r.uniform_loss is not None,
         judge_confident_start),
    Rule("saturated", "activation statistics", lambda r: bool(r.judged_acts("saturation")) or any(
        a.finite("saturation") for a in r.acts), judge_saturated),
    Rule("dead_units", "activation statistics", lambda r: any(a.finite("dead") for a in r.acts), judge_dead_units),
    Rule("gradients", "gradient statistics", lambda r: len(r.grads) >= 2 and bool(
        set.intersection(*(set(dict(g.finite("std"))) for g in r.grads))), judge_gradients),
    Rule("learning_rate", "update ratios", lambda r: bool(r.updates), judge_learning_rate),
    Rule("attention", "attention logits", lambda r: bool(r.attns), judge_attention, applies=has_attention),
    Rule("loss_rise", "train/loss and init/loss", lambda r: r.init_loss is not None and any(
        math.isfinite(v) for _, v in r.loss), judge_loss_rise),
)
RULE_NAMES = tuple(rule.name for rule in RULES)
