"""Every run ends with a diagnosis: what went wrong, where, the evidence, and the lesson's fix.

The diagnosis reads the scalars the diagnostic callbacks log (the tag contract below)
and the run's result.json, applies six rules, and names for each finding the layers,
the steps, the measured value next to its healthy range, and a one-line remedy. A run
with no findings is `healthy`; one where no rule had anything to read is `unknown`.

Tag contract (step = optimizer updates applied before that forward pass; 0 = at init):

    init/loss, init/uniform_loss          loss at step 0, and log(vocab size)
    train/loss, val/loss, test/loss
    lr-<optimizer>[/pg<k>]                Lightning's LearningRateMonitor
    act/<i>.<module path>/<stat>          stat: mean, std, saturation, dead; i = forward order
    grad/<i>.<module path>/<stat>         stat: mean, std (gradient reaching activation i's output)
    grad_data_ratio/<j>.<param name>      std(grad) / std(weight), weight matrices in parameter order
    update_ratio/<j>.<param name>         log10(std(update) / std(weight)) across one optimizer step

Layers are ordered by the number i / j, never by the tag's text.

The rules (thresholds are the fields of `Thresholds`; each rule's docstring has its reasoning):

    diverged             result.json says so, or train/loss stopped being finite
    confident_start      init/loss > 1.5 x log(V)
    saturated            a layer's saturation > 30% (ReLU-like: 75%) at step 0 or at the end
    dead_units           a layer's dead units > 10% at the last logged step
    vanishing_gradients  gradient std at the first activation < 1/10 of the last one's (step 0 or end)
    exploding_gradients  ... > 10 x the last one's
    lr_too_high          in a phase of constant lr, most weight matrices' median update ratio > -2
    lr_too_low           ... < -4 (only judged in phases at the schedule's peak lr)
"""

from __future__ import annotations

import itertools
import json
import math
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from callbacks.tags import ACT, GRAD, GRAD_DATA_RATIO, TAG, UPDATE_RATIO
from namegen.results import EVENT_GLOB, RECORD, RESULT_FILE, is_run, require_runs, write_atomic
from namegen.errors import ConfigError, UserError
from namegen.events import Scalars, read_scalars

MARKDOWN_FILE = "diagnosis.md"
JSON_FILE = "diagnosis.json"

# One regex per tag family. Groups: (index, module path or parameter name[, statistic]).
LR_TAG = re.compile(r"^lr-(?!.*-(?:momentum|weight_decay)$)(.+)$")  # not LearningRateMonitor's momentum/decay tags

# Activations whose flat region is one side of the input (about half the entries at a healthy start).
ONE_SIDED = frozenset(
    {"relu", "relu6", "leakyrelu", "prelu", "rrelu", "elu", "selu", "celu", "gelu", "silu", "mish", "softplus",
     "hardswish", "logsigmoid"}
)
# Without the activation's type, a layer whose mean output at its first logged step is positive and at
# least this fraction of its std is taken as ReLU-like: a ReLU of a centred input has mean/std = 0.68,
# a tanh of one has mean ~ 0 (saturated or not).
ONE_SIDED_MEAN_TO_STD = 0.25


@dataclass(frozen=True)
class Thresholds:
    """The rules' thresholds. Defaults and why (makemore part 3's 5-layer, 100-unit tanh MLP):

    init_loss_ratio = 1.5: a network that knows nothing scores log(V) (3.30 for 27 characters);
        kaiming init with a shrunken output layer starts within a few % of it, naive init near 20
        (6 x). 1.5 x leaves room for a slightly-off but harmless start.
    saturation = 0.30 (bounded activations: tanh, sigmoid, ...): fraction of entries in the flat
        region (|tanh| > 0.97). With kaiming init (gain 5/3) the first tanh layer sits near 21% at
        step 0 (its pre-activations have std 5/3) and the deeper ones near 5%; gain 3 gives ~50% and
        naive init 80-100%. 30% is above the healthy first layer and well below both failures.
        (Measured on the built-in names, kaiming without norm: 23% / 6-10% at step 0, 24% / 11-15%
        after 2,000 steps; with BatchNorm 2-4%; naive init 72-84% at step 0.)
    saturation_one_sided = 0.75 (ReLU-like activations): a healthy ReLU is flat for half its inputs
        (~50%, exactly so after BatchNorm); 75% means the pre-activations have drifted ~0.7 std negative.
    dead = 0.10: fraction of a layer's units flat for every example of the batch at the last logged
        step. Such a unit gets no gradient and never recovers (a white column in the lesson's
        saturation map); a healthy net has ~0, so losing over a tenth of a layer's width is real damage.
    gradient_ratio = 10: the gradient std reaching the first activation vs the last. Kaiming init
        keeps it ~1 across depth; each layer multiplies the backward signal by about its gain (times
        tanh's 1 - t^2), so 10 over 5 layers is a factor 1.8 per layer, clearly off.
    update_ratio_high = -2, update_ratio_low = -4: log10(update std / weight std) per step; the
        lesson's rule of thumb is about -3 (each step changes a weight by ~1/1000 of its size), so a
        decade either way is too fast (unstable) or too slow (barely learning). (Measured: kaiming,
        SGD lr 0.1, first 1,500 steps: medians -2.2 to -3.0, the shrunken output layer -1.6 to -1.8;
        so lr 0.2-0.3 starts to be flagged.)
    update_ratio_share = 0.5: the lr is judged too high / too low when more than this fraction of
        the weight matrices are out of range (one odd matrix, e.g. the shrunken output layer, is not).
    """

    init_loss_ratio: float = 1.5
    saturation: float = 0.30
    saturation_one_sided: float = 0.75
    dead: float = 0.10
    gradient_ratio: float = 10.0
    update_ratio_high: float = -2.0
    update_ratio_low: float = -4.0
    update_ratio_share: float = 0.5

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ConfigError(f"diagnosis threshold {f.name}={value!r} must be a finite number")
        ranges = {
            "init_loss_ratio": (self.init_loss_ratio >= 1, ">= 1"),
            "saturation": (0 <= self.saturation <= 1, "in [0, 1]"),
            "saturation_one_sided": (0 <= self.saturation_one_sided <= 1, "in [0, 1]"),
            "dead": (0 <= self.dead <= 1, "in [0, 1]"),
            "gradient_ratio": (self.gradient_ratio > 1, "> 1"),
            "update_ratio_low": (self.update_ratio_low < self.update_ratio_high,
                                 f"below update_ratio_high={self.update_ratio_high}"),
            "update_ratio_share": (0 <= self.update_ratio_share < 1, "in [0, 1)"),
        }
        for name, (ok, allowed) in ranges.items():
            if not ok:
                raise ConfigError(f"diagnosis threshold {name}={getattr(self, name)!r} must be {allowed}")

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any] | None) -> Thresholds:
        """Defaults overridden by a dict or a YAML/OmegaConf node; an unknown key or a bad value is a ConfigError."""
        if mapping is None:
            return cls()
        valid = [f.name for f in fields(cls)]
        for key in mapping:
            if key not in valid:
                raise ConfigError(f"unknown diagnosis threshold {key!r}; valid ones: {', '.join(valid)}")
        return cls(**{key: mapping[key] for key in mapping})


@dataclass(frozen=True)
class Finding:
    """One thing that went wrong: `name` is the short name used in the health column."""

    name: str
    title: str
    layers: tuple[str, ...]
    steps: tuple[int, ...]
    measured: str
    healthy: str
    remedy: str
    evidence: tuple[dict[str, Any], ...] = ()  # machine-readable: {"layer", "step", "value"}

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(layers=list(self.layers), steps=list(self.steps),
                 evidence=[{k: _json_value(v) for k, v in e.items()} for e in self.evidence])
        return d


# The rules in the order they run and their findings are listed.
RULES = ("diverged", "confident_start", "saturated", "dead_units", "gradients", "learning_rate")


@dataclass(frozen=True)
class Diagnosis:
    findings: tuple[Finding, ...]
    checked: tuple[str, ...]  # rules that had something to read (see RULES)
    status: str | None = None  # result.json's status, when known
    thresholds: Thresholds = field(default_factory=Thresholds)

    @property
    def health(self) -> str:
        """The sweep summary's health column: the findings' short names joined by ",", else "healthy",
        or "unknown" when no rule had anything to read."""
        if self.findings:
            return ",".join(dict.fromkeys(f.name for f in self.findings))
        return "healthy" if self.checked else "unknown"

    @property
    def not_checked(self) -> tuple[str, ...]:
        return tuple(r for r in RULES if r not in self.checked)

    def to_dict(self) -> dict[str, Any]:
        return {"health": self.health, "status": self.status, "findings": [f.to_dict() for f in self.findings],
                "checked": list(self.checked), "not_checked": list(self.not_checked),
                "thresholds": asdict(self.thresholds)}

    def to_markdown(self, title: str | None = None, level: int = 1) -> str:
        """The diagnosis as Markdown: what is printed at the end of a run and by `namegen diagnose`."""
        h = "#" * level
        status = f" (run status: {self.status})" if self.status and self.status != "ok" else ""
        lines = [f"{h} Diagnosis{': ' + title if title else ''}", "", f"**Health: {self.health}**{status}", ""]
        for n, f in enumerate(self.findings, 1):
            lines += [f"{h}# {n}. {f.name}: {f.title}", ""]
            where = ", ".join(f.layers[:6]) + (f", ... ({len(f.layers)} in all)" if len(f.layers) > 6 else "")
            where = where or "the whole network"
            steps = f" at step{'s' if len(f.steps) > 1 else ''} {', '.join(map(str, f.steps))}" if f.steps else ""
            lines += [f"- **Where**: {where}{steps}", f"- **Measured**: {f.measured}", f"- **Healthy**: {f.healthy}",
                      f"- **Fix**: {f.remedy}", ""]
        if not self.findings and self.checked:
            lines += ["No findings.", ""]
        lines.append(f"Checked: {', '.join(self.checked) or 'nothing'}"
                     + (f"; not checked (not logged): {', '.join(self.not_checked)}" if self.not_checked else "") + ".")
        return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class Phase:
    """A maximal step range [start, end) over which every lr- scalar is constant; end None = to the end."""

    start: int
    end: int | None
    lr: dict[str, float]  # lr tag -> value
    peak: bool  # every lr at its highest value of the run (not a warm-up or a decayed phase)


# -- reading the tags -----------------------------------------------------------------------------------------


@dataclass
class _Layer:
    index: int
    name: str
    stats: dict[str, list[tuple[int, float]]]

    def finite(self, stat: str) -> list[tuple[int, float]]:
        return [(s, v) for s, v in self.stats.get(stat, []) if math.isfinite(v)]


def _layers(scalars: Scalars, family: str) -> list[_Layer]:
    """The layers of one tag family (`callbacks.tags`), ordered by their index; families without a statistic
    store it as "value"."""
    by_index: dict[int, _Layer] = {}
    for tag, series in scalars.items():
        if (m := TAG.match(tag)) and m["family"] == family:
            layer = by_index.setdefault(int(m["index"]), _Layer(int(m["index"]), m["name"], {}))
            layer.stats[m["stat"] or "value"] = series
    return [by_index[i] for i in sorted(by_index)]


def lr_phases(scalars: Scalars) -> list[Phase]:
    """The schedule's phases: a new one starts wherever any lr- scalar changes; without lr tags, one phase.

    The first phase starts at step 0 whenever the first lr point was logged.
    """
    tags = sorted(t for t in scalars if LR_TAG.match(t))
    points = sorted((s, tag, v) for tag in tags for s, v in scalars[tag] if math.isfinite(v))
    if not points:
        return [Phase(0, None, {}, True)]
    starts: list[tuple[int, dict[str, float]]] = []
    current: dict[str, float] = {}
    for step, group in itertools.groupby(points, key=lambda p: p[0]):
        values = {tag: v for _, tag, v in group}
        changed = any(tag not in current or not math.isclose(v, current[tag], rel_tol=1e-6)
                      for tag, v in values.items())
        current = {**current, **values}
        if not starts:
            starts.append((0, current))
        elif changed:
            starts.append((step, current))
    peak: dict[str, float] = {}
    for _, tag, v in points:
        peak[tag] = max(peak.get(tag, v), v)
    return [
        Phase(start, starts[k + 1][0] if k + 1 < len(starts) else None, lr,
              all(v >= peak[t] * (1 - 1e-6) for t, v in lr.items()))
        for k, (start, lr) in enumerate(starts)
    ]


def _above(value: float, limit: float) -> bool:
    """value > limit, beyond float32 rounding: event files store float32, so 10 dead units of 100 read
    0.10000000149, which is not above a 10% threshold."""
    return value - limit > 1e-6 * max(1.0, abs(limit))


def _number(v: Any) -> float | None:
    """A result.json value as a number; anything else (missing, null, text) is unknown."""
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def _pct(v: float) -> str:
    return f"{v:.1%}"


def _num(v: float) -> str:
    return f"{v:.3g}"


def _json_value(v: Any) -> Any:
    return None if isinstance(v, float) and not math.isfinite(v) else v


def _weight_layer(param: str) -> str:
    return param.removesuffix(".weight")


@dataclass
class _Run:
    scalars: Scalars
    result: Mapping[str, Any]
    t: Thresholds
    kinds: Mapping[str, str]  # module path -> activation class name, when known

    def __post_init__(self) -> None:
        self.acts = _layers(self.scalars, ACT)
        self.grads = _layers(self.scalars, GRAD)
        self.updates = _layers(self.scalars, UPDATE_RATIO)
        self.weights = self.updates or _layers(self.scalars, GRAD_DATA_RATIO)

    def one_sided(self, layer: _Layer) -> bool:
        """Whether the activation is ReLU-like (flat for negative inputs), by its type if known, else by its outputs."""
        kind = self.kinds.get(layer.name)
        if kind is not None:
            return kind.rsplit(".", 1)[-1].lower() in ONE_SIDED  # "ReLU" or "torch.nn.ReLU"
        mean, std = layer.finite("mean")[:1], layer.finite("std")[:1]
        return bool(mean and std) and mean[0][1] > 0 and mean[0][1] >= ONE_SIDED_MEAN_TO_STD * std[0][1]


# -- the rules: each returns None when it had nothing to read, else its findings ------------------------------


def _diverged(run: _Run) -> list[Finding] | None:
    """diverged: the loss stopped being finite (result.json's status "diverged", or a non-finite train/loss).

    The first layer whose statistics went non-finite or exploded (result.json's diverged_layer) is
    where it started. Usual causes in the lesson: a learning rate too high for the init, or a naive
    init whose huge pre-activations overflow.
    """
    status = run.result.get("status")
    loss = run.scalars.get("train/loss", [])
    bad = next(((s, v) for s, v in loss if not math.isfinite(v)), None)
    if status is None and not loss:
        return None
    if status != "diverged" and bad is None:
        return []
    step = _number(run.result.get("diverged_step"))
    step = int(step) if step is not None else (bad[0] if bad else None)
    layer = run.result.get("diverged_layer") if isinstance(run.result.get("diverged_layer"), str) else None
    error = run.result.get("error")
    if error:
        measured = (str(error).splitlines() or [""])[0]
    else:
        measured = f"train/loss = {bad[1]} at step {bad[0]}" if bad else "status diverged"
    return [Finding(
        "diverged", "the loss stopped being finite",
        (layer,) if layer else (), (step,) if step is not None else (), measured,
        "a finite loss at every step",
        "lower optim.optimizer.lr, use init=kaiming, or normalize (norm=batchnorm or norm=layernorm)",
        ({"layer": layer, "step": step, "value": bad[1] if bad else None},),
    )]


def _confident_start(run: _Run) -> list[Finding] | None:
    """confident_start: init/loss > init_loss_ratio (1.5) x init/uniform_loss (log V).

    At initialization the network should know nothing and spread its probability evenly: loss
    log(V) (3.30 for 27 characters). Far above it, the logits are large and confidently wrong
    (naive init starts near 20), and the first thousands of steps are spent only shrinking them
    (the hockey-stick loss curve). Fix: shrink the output layer and scale weights by gain/sqrt(fan_in).
    """
    init = run.scalars.get("init/loss", [])
    uniform = run.scalars.get("init/uniform_loss", [])
    init_loss = init[0][1] if init else _number(run.result.get("init_loss"))
    uniform_loss = uniform[0][1] if uniform else _number(run.result.get("uniform_loss"))
    if init_loss is None or uniform_loss is None or not (math.isfinite(uniform_loss) and uniform_loss > 0):
        return None
    limit = run.t.init_loss_ratio * uniform_loss
    if not _above(init_loss, limit):
        return []
    step = init[0][0] if init else 0
    out = _weight_layer(run.weights[-1].name) if run.weights else None
    return [Finding(
        "confident_start", "confidently wrong at the start: the first loss is far above log(V), a uniform guess's",
        (out,) if out else (), (step,),
        f"init/loss {_num(init_loss)} = {init_loss / uniform_loss:.1f} x log(V) (log(V) = {_num(uniform_loss)})",
        f"<= {run.t.init_loss_ratio:g} x log(V) = {_num(limit)}; a network that knows nothing scores log(V)",
        "shrink the output layer (init=kaiming, init.output_scale=0.1) and scale weights by gain/sqrt(fan_in)",
        ({"layer": out, "step": step, "value": init_loss},),
    )]


def _saturated(run: _Run) -> list[Finding] | None:
    """saturated: a layer's saturation above `saturation` (30%; ReLU-like: `saturation_one_sided`, 75%)
    at its first logged step (step 0) or its last.

    Saturation is the fraction of entries in the activation's flat region (|tanh| > 0.97), where the
    local gradient (1 - t^2 for tanh) is near 0: those entries pass almost nothing back, so the
    layer and everything before it learn slowly. makemore part 3: naive init saturates 80-100% at
    step 0, kaiming ~5% (~20% in the first layer), BatchNorm ~4%. A ReLU is flat for half its inputs
    when healthy, hence its own threshold.
    """
    layers = [layer for layer in run.acts if layer.finite("saturation")]
    if not layers:
        return None
    rows = []
    for layer in layers:
        series = layer.finite("saturation")
        limit = run.t.saturation_one_sided if run.one_sided(layer) else run.t.saturation
        over = [(s, v) for s, v in sorted({series[0], series[-1]}) if _above(v, limit)]
        if over:
            rows.append((layer, limit, over))
    if not rows:
        return []
    healthy = []
    if any(not run.one_sided(layer) for layer, _, _ in rows):
        healthy.append(f"<= {_pct(run.t.saturation)} of entries (tanh-like; kaiming ~5%, its first layer ~20%)")
    if any(run.one_sided(layer) for layer, _, _ in rows):
        healthy.append(f"<= {_pct(run.t.saturation_one_sided)} (ReLU-like: ~50% is normal)")
    return [Finding(
        "saturated", "units stuck in the activation's flat region pass back almost no gradient",
        tuple(layer.name for layer, _, _ in rows), tuple(sorted({s for _, _, over in rows for s, _ in over})),
        "; ".join(f"{layer.name} " + ", ".join(f"{_pct(v)} at step {s}" for s, v in over) for layer, _, over in rows),
        "; ".join(healthy),
        "scale weights by gain/sqrt(fan_in) (init=kaiming), or normalize (norm=batchnorm or norm=layernorm)",
        tuple({"layer": layer.name, "step": s, "value": v} for layer, _, over in rows for s, v in over),
    )]


def _dead_units(run: _Run) -> list[Finding] | None:
    """dead_units: a layer's fraction of dead units above `dead` (10%) at its last logged step.

    A dead unit is flat for every example (a ReLU that never fires, a tanh stuck at +-1: a white
    column in the lesson's saturation map); it gets no gradient, so it never recovers. Judged at the
    end, where the damage is lasting (step 0's flat units are `saturated`); the finding says since
    when the layer has been over the threshold. Causes: too large an init gain or lr knocking units
    into the flat region, or pre-activations drifting there without normalization.
    """
    layers = [layer for layer in run.acts if layer.finite("dead")]
    if not layers:
        return None
    rows = []
    for layer in layers:
        series = layer.finite("dead")
        if _above(series[-1][1], run.t.dead):
            since = series[-1][0]
            for s, v in reversed(series):
                if not _above(v, run.t.dead):
                    break
                since = s
            rows.append((layer, series[-1], since))
    if not rows:
        return []
    leaky = ", or a leaky activation (LeakyReLU)" if any(run.one_sided(layer) for layer, _, _ in rows) else ""
    return [Finding(
        "dead_units", "units flat for every example get no gradient and never recover",
        tuple(layer.name for layer, _, _ in rows), tuple(sorted({last[0] for _, last, _ in rows})),
        "; ".join(f"{layer.name} {_pct(v)} of units dead at step {s}"
                  + (f" (over {_pct(run.t.dead)} since step {since})" if since < s else "")
                  for layer, (s, v), since in rows),
        f"<= {_pct(run.t.dead)} of a layer's units (a healthy net has ~0)",
        f"scale weights by gain/sqrt(fan_in) (init=kaiming, a smaller init.gain), lower optim.optimizer.lr, "
        f"or normalize (norm=batchnorm){leaky}",
        tuple({"layer": layer.name, "step": s, "value": v} for layer, (s, v), _ in rows),
    )]


def _gradients(run: _Run) -> list[Finding] | None:
    """vanishing_gradients / exploding_gradients: the gradient std reaching the first activation layer
    over the one reaching the last, at the first and the last step where every layer logged it.

    Below 1/`gradient_ratio` (1/10) the gradient vanishes toward the input: the early layers barely
    learn. Above `gradient_ratio` (10) it explodes toward the input. Each layer scales the backward
    signal by about its weights' gain (and tanh's 1 - t^2), so a gain too small, or saturation,
    shrinks it layer after layer, and a gain too large grows it; kaiming's gain (5/3 for tanh) or
    normalization keeps it level. The finding lists the std across depth and whether it changes
    monotonically.
    """
    layers = [layer for layer in run.grads if layer.finite("std")]
    if len(layers) < 2:
        return None
    by_step = [dict(layer.finite("std")) for layer in layers]
    common = sorted(set.intersection(*(set(d) for d in by_step)))
    if not common:
        return None
    T = run.t.gradient_ratio
    hits: dict[str, list[tuple[int, list[float], float]]] = {"vanishing_gradients": [], "exploding_gradients": []}
    for step in sorted({common[0], common[-1]}):
        g = [d[step] for d in by_step]
        if not g[-1] > 0:
            continue
        ratio = g[0] / g[-1]
        if ratio < 1 / T:
            hits["vanishing_gradients"].append((step, g, ratio))
        elif ratio > T:
            hits["exploding_gradients"].append((step, g, ratio))
    first, last = layers[0].name, layers[-1].name
    findings = []
    for name, rows in hits.items():
        if not rows:
            continue
        vanishing = name == "vanishing_gradients"
        measured = []
        for step, g, ratio in rows:
            pairs = list(zip(g, g[1:]))
            monotone = all(a <= b for a, b in pairs) if vanishing else all(a >= b for a, b in pairs)
            trend = ("shrinks" if vanishing else "grows") + (" at every layer toward the input" if monotone
                                                             else " toward the input, not monotonically")
            measured.append(f"step {step}: {first} {_num(g[0])} vs {last} {_num(g[-1])} (ratio {ratio:.4g}); "
                            f"by depth {', '.join(_num(v) for v in g)}: {trend}")
        findings.append(Finding(
            name,
            "the early layers receive almost no gradient" if vanishing
            else "the early layers receive a far larger gradient than the late ones",
            (first, last), tuple(step for step, _, _ in rows), "; ".join(measured),
            f"first/last gradient std between 1/{T:g} and {T:g} (kaiming: ~1)",
            "raise the init gain (init=kaiming, init.gain) if activations shrink with depth, lower it if they "
            "saturate, or normalize (norm=batchnorm)" if vanishing
            else "lower the init gain (init=kaiming, or a smaller init.gain), or normalize "
                 "(norm=batchnorm or norm=layernorm)",
            tuple({"layer": f"{first}/{last}", "step": step, "value": ratio} for step, _, ratio in rows),
        ))
    return findings


def _phase_medians(run: _Run, start: int, end: int | None) -> list[tuple[_Layer, float, list[int]]]:
    """Per weight matrix: the median update ratio over its logged steps in [start, end), and those steps.

    Step 0 is left out: the first update reflects the init more than the lr (naive init's huge
    gradients give update ratios near 0 whatever the lr; Adam's first step is ~lr x sign(grad))."""
    out = []
    for w in run.updates:
        points = [(s, v) for s, v in w.stats["value"]
                  if 0 < s and start <= s and (end is None or s < end) and not math.isnan(v)]
        if points:
            out.append((w, float(np.median([v for _, v in points])), [s for s, _ in points]))
    return out


def _learning_rate(run: _Run) -> list[Finding] | None:
    """lr_too_high / lr_too_low: per phase of the lr schedule (a step range of constant lr- scalars; one
    phase without lr tags), the median update ratio of each weight matrix over the phase's logged steps.

    More than `update_ratio_share` (half) of the matrices above `update_ratio_high` (-2) = lr too high;
    below `update_ratio_low` (-4) = too low. The lesson's rule of thumb: log10(update std / weight std)
    near -3, each step changing a weight by about a thousandth of its size. "Too low" is only judged
    in phases at the schedule's peak lr: a warm-up or a decayed tail (SGD's lr x 0.1) is slow on purpose.
    Step 0 is left out (see `_phase_medians`). A phase starts at the first step the new lr was
    logged at. Consecutive phases with the same verdict are reported as one step range.
    """
    if not any(s > 0 for w in run.updates for s, _ in w.stats["value"]):
        return None
    t = run.t
    verdicts: list[tuple[Phase, str]] = []
    for phase in lr_phases(run.scalars):
        medians = _phase_medians(run, phase.start, phase.end)
        if not medians:
            continue
        high = sum(_above(m, t.update_ratio_high) for _, m, _ in medians)
        low = sum(_above(t.update_ratio_low, m) for _, m, _ in medians)
        if high > t.update_ratio_share * len(medians):
            verdicts.append((phase, "lr_too_high"))
        elif phase.peak and low > t.update_ratio_share * len(medians):
            verdicts.append((phase, "lr_too_low"))
        else:
            verdicts.append((phase, "ok"))
    findings: dict[str, dict[str, list]] = {}
    for verdict, group in itertools.groupby(verdicts, key=lambda pv: pv[1]):
        if verdict == "ok":
            continue
        phases = [p for p, _ in group]
        start, end = phases[0].start, phases[-1].end
        medians = _phase_medians(run, start, end)
        high = verdict == "lr_too_high"
        out = [(w, m) for w, m, _ in medians
               if (_above(m, t.update_ratio_high) if high else _above(t.update_ratio_low, m))]
        steps = sorted({s for _, _, ss in medians for s in ss})
        lrs = {json.dumps(p.lr, sort_keys=True) for p in phases}
        lr = phases[0].lr
        span = f"step {steps[0]}" if steps[0] == steps[-1] else f"steps {steps[0]}-{steps[-1]}"
        lr_text = ", ".join(f"{tag.removeprefix('lr-')} {v:.3g}" for tag, v in lr.items())
        lr_text = lr_text if len(lrs) == 1 else "varying lr"
        overall = float(np.median([m for _, m, _ in medians]))
        shown = ", ".join(f"{_weight_layer(w.name)} {m:.2f}" for w, m in out[:8]) + (", ..." if len(out) > 8 else "")
        acc = findings.setdefault(verdict, {"layers": [], "steps": [], "measured": [], "evidence": [], "suggest": []})
        acc["layers"] += [_weight_layer(w.name) for w, _ in out if _weight_layer(w.name) not in acc["layers"]]
        acc["steps"] += [steps[0], steps[-1]]
        acc["measured"].append(
            f"{span} ({lr_text}): {len(out)} of {len(medians)} weight matrices "
            f"{'above' if high else 'below'} {t.update_ratio_high if high else t.update_ratio_low:g} "
            f"(median update ratio {overall:.2f}; {shown})")
        acc["evidence"] += [{"layer": _weight_layer(w.name), "step": steps[0], "value": m} for w, m in out]
        if len(lrs) == 1 and len(lr) == 1:
            (value,) = lr.values()
            acc["suggest"].append(f"{value:.3g} -> ~{value * 10 ** (-3 - overall):.1g}")
    result = []
    for verdict, acc in findings.items():
        high = verdict == "lr_too_high"
        suggest = f" (about {'; '.join(acc['suggest'])}: update ratios scale with the lr)" if acc["suggest"] else ""
        result.append(Finding(
            verdict,
            "each step changes the weights by over 1% of their size" if high
            else "each step changes the weights by under 0.01% of their size",
            tuple(acc["layers"]), tuple(sorted(set(acc["steps"]))), "; ".join(acc["measured"]),
            f"median log10(update std / weight std) between {t.update_ratio_low:g} and {t.update_ratio_high:g} "
            "for most weight matrices (about -3)",
            f"{'lower' if high else 'raise'} optim.optimizer.lr{suggest}",
            tuple(acc["evidence"]),
        ))
    return sorted(result, key=lambda f: f.name)


_RULE_FUNCTIONS = {"diverged": _diverged, "confident_start": _confident_start, "saturated": _saturated,
                   "dead_units": _dead_units, "gradients": _gradients, "learning_rate": _learning_rate}


# -- the API ---------------------------------------------------------------------------------------------------


def diagnose(
    scalars: Scalars,
    result: Mapping[str, Any] | None = None,
    thresholds: Thresholds = Thresholds(),
    activations: Mapping[str, str] | None = None,
) -> Diagnosis:
    """Apply every rule to a run's scalars ({tag: [(step, value)]}) and its result.json (missing keys = unknown).

    `activations` maps module paths to activation class names ({"model.hidden.0.act": "ReLU"}), read
    from result.json's "activations" when not given; without it a layer's kind is inferred from its
    outputs (see `ONE_SIDED_MEAN_TO_STD`).
    """
    result = dict(result or {})
    if activations is None:
        activations = result.get("activations") if isinstance(result.get("activations"), Mapping) else {}
    run = _Run(scalars, result, thresholds, activations)
    findings: list[Finding] = []
    checked = []
    for name in RULES:
        found = _RULE_FUNCTIONS[name](run)
        if found is not None:
            checked.append(name)
            findings += found
    status = result.get("status")
    return Diagnosis(tuple(findings), tuple(checked), status if isinstance(status, str) else None, thresholds)


def _read_result(run_dir: Path) -> dict[str, Any]:
    try:
        result = json.loads((run_dir / RESULT_FILE).read_text())
    except (OSError, ValueError):  # absent or unreadable: every key unknown
        return {}
    return result if isinstance(result, dict) else {}


def run_thresholds(run_dir: Path) -> Thresholds:
    """The thresholds the run was configured with (its record's `diagnosis`); the defaults for a run without a
    record (one trained in someone else's project). An unreadable record is a UserError, not a silent default."""
    config = run_dir / RECORD
    if not config.is_file():
        return Thresholds()
    from omegaconf import OmegaConf

    try:
        node = OmegaConf.load(config).get("diagnosis")
    except Exception as e:  # YAML and OmegaConf raise several types on a damaged file
        raise UserError(f"{config}: unreadable ({type(e).__name__}); restore it or delete it to use the default "
                        "thresholds") from None
    return Thresholds.from_mapping(node)


def diagnose_run(run_dir: str | Path, thresholds: Thresholds | None = None,
                 activations: Mapping[str, str] | None = None) -> Diagnosis:
    """The diagnosis of one run folder: its event files' scalars and its result.json, with the run's own
    thresholds unless `thresholds` is given."""
    run_dir = Path(run_dir)
    scalars = read_scalars(run_dir) if any(run_dir.glob(EVENT_GLOB)) else {}
    return diagnose(scalars, _read_result(run_dir), thresholds or run_thresholds(run_dir), activations)


def diagnose_path(path: str | Path, thresholds: Thresholds | None = None) -> list[tuple[str, Diagnosis]]:
    """(run name, diagnosis) for a run folder, or for each run folder of a sweep folder, by name."""
    return [(p.name, diagnose_run(p, thresholds)) for p in require_runs(Path(path))]


def write_diagnosis(run_dir: str | Path, diagnosis: Diagnosis, title: str | None = None) -> None:
    """Write diagnosis.md and diagnosis.json into the run folder, each atomically (temp file, then rename)."""
    run_dir = Path(run_dir)
    write_atomic(run_dir / MARKDOWN_FILE, diagnosis.to_markdown(title or run_dir.name))
    write_atomic(run_dir / JSON_FILE, json.dumps(diagnosis.to_dict(), indent=2, allow_nan=False) + "\n")


def cmd_diagnose(path: str | Path, thresholds: Thresholds | None = None, write: bool = False) -> str:
    """The text `namegen diagnose PATH` prints: each run's diagnosis, after a health line per run for a sweep.

    With `write`, each run folder also gets its diagnosis.md and diagnosis.json.
    """
    path = Path(path)
    diagnoses = diagnose_path(path, thresholds)
    if write:
        for name, d in diagnoses:
            write_diagnosis(path if is_run(path) else path / name, d, name)
    if is_run(path):
        name, d = diagnoses[0]
        return d.to_markdown(name)
    width = max(len(name) for name, _ in diagnoses)
    parts = [f"# Diagnosis: {path.name}", ""] + [f"- {name.ljust(width)}  {d.health}" for name, d in diagnoses] + [""]
    return "\n".join(parts + [d.to_markdown(name, level=2) for name, d in diagnoses])
