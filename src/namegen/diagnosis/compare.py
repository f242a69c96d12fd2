"""Why a run is behind, in a sweep: for each run clearly behind the best (by more than the spread of the healthy
runs), the settings it differs in and the statistics that differ most, said as the lesson says it:

    why init=naive,norm=batchnorm is 0.102 behind init=kaiming,norm=batchnorm (val 2.0923 vs 1.9905): updates ~20x
    smaller than init=kaiming,norm=batchnorm's: BatchNorm divides each update by the naive weights' scale (its
    inputs 5.6-6.8x unit scale, against 0.6-2.2x); it differs in init.scheme=naive (the best: kaiming); try
    init.scheme=kaiming, or a higher lr

The statistics are a table (STATS): how each is read from a run's scalars, how far apart two runs must be for it
to count, and the sentence. Step 0's loss and saturation, the dead units and the gradient spread at the end, the
update ratio over the run.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from namegen.callbacks.tags import ACT, GRAD, NORM, UPDATE_RATIO
from namegen.diagnosis.config import RunConfig
from namegen.diagnosis.observe import INIT_LOSS, START, layers
from namegen.events import Scalars

BEHIND_FLOOR = 0.01  # behind by more than 1% of the best val loss (~0.02 nats on names), however alike the others
BEHIND_SPREAD = 3.0  # ... and by more than 3x the other healthy runs' spread (median absolute deviation of val loss)
MOST = 2  # the statistics shown per run: the ones that differ most
NORM_NAMES = {"batchnorm": "BatchNorm", "layernorm": "LayerNorm"}


@dataclass
class Sweep:
    """One run of a sweep as the comparison reads it."""

    name: str
    result: Mapping[str, Any]
    scalars: Scalars
    config: RunConfig | None
    health: str

    @property
    def val(self) -> float | None:
        v = self.result.get("val_loss")
        return float(v) if isinstance(v, (int, float)) and math.isfinite(v) else None


def first(series: list[tuple[int, float]]) -> float | None:
    return series[0][1] if series and series[0][0] == START and math.isfinite(series[0][1]) else None


def mean_of(scalars: Scalars, family: str, stat: str, at: Callable[[list[tuple[int, float]]], float | None]) -> float | None:
    values = [v for layer in layers(scalars, family) if (v := at(layer.finite(stat))) is not None]
    return float(np.mean(values)) if values else None


def last(series: list[tuple[int, float]]) -> float | None:
    return series[-1][1] if series else None


def update_ratio(scalars: Scalars) -> float | None:
    """The median over the weight matrices of each one's median log10 update ratio over the run (step 0 left out)."""
    medians = [float(np.median(v)) for w in layers(scalars, UPDATE_RATIO)
               if (v := [x for s, x in w.finite() if s > START])]
    return float(np.median(medians)) if medians else None


def grad_spread(scalars: Scalars) -> float | None:
    """The gradient std at the first activation over the last one's, at the last logged step."""
    grads = [g.finite("std") for g in layers(scalars, GRAD)]
    ends = [g[-1][1] for g in grads if g]
    return ends[0] / ends[-1] if len(ends) >= 2 and ends[-1] > 0 else None


def norm_scale(scalars: Scalars) -> tuple[float, float] | None:
    """The smallest and largest std of the norms' inputs over their first and last logged steps."""
    values = [v for n in layers(scalars, NORM) if (s := n.finite("in_std")) for v in (s[0][1], s[-1][1])]
    return (min(values), max(values)) if values else None


def step0_loss(scalars: Scalars, result: Mapping[str, Any]) -> float | None:
    from namegen.callbacks.tags import LOSS

    for tag in (INIT_LOSS, LOSS):
        if (v := first(scalars.get(tag, []))) is not None:
            return v
    v = result.get("init_loss")
    return float(v) if isinstance(v, (int, float)) else None


@dataclass(frozen=True)
class Stat:
    """A statistic two runs are compared by: `read` from a run; `apart` how far two values are, in units where 1
    is clearly different (None: not comparable); `say` the sentence (this run, the best, the best's name)."""

    name: str
    read: Callable[[Sweep], float | None]
    apart: Callable[[float, float], float]
    say: Callable[[Sweep, float, float, Sweep], str]


def say_updates(run: Sweep, a: float, b: float, best: Sweep) -> str:
    factor = 10 ** abs(a - b)
    text = f"updates ~{factor:.0f}x {'smaller' if a < b else 'larger'} than {best.name}'s (median log10 ratio " \
           f"{a:.1f} vs {b:.1f})"
    mine, theirs = norm_scale(run.scalars), norm_scale(best.scalars)
    norm = NORM_NAMES.get(str(run.config.norm)) if run.config is not None else None
    if a < b and mine and norm and (theirs is None or mine[0] > theirs[1]):
        scheme = f"the {run.config.scheme} weights'" if run.config.scheme else "the weights'"
        text += (f": {norm} divides each update by {scheme} scale (its inputs {mine[0]:.1f}-{mine[1]:.1f}x unit scale"
                 + (f", against {theirs[0]:.1f}-{theirs[1]:.1f}x" if theirs else "") + ")")
    return text


STATS = (
    Stat("step-0 loss", lambda r: step0_loss(r.scalars, r.result),
         lambda a, b: abs(math.log(a / b)) / math.log(1.2) if a > 0 and b > 0 else 0.0,
         lambda r, a, b, best: f"step-0 loss {a:.2f} vs {b:.2f}: {'confidently wrong' if a > b else 'closer to log(V)'} "
                               "at the start"),
    Stat("saturation at step 0", lambda r: mean_of(r.scalars, ACT, "saturation", first),
         lambda a, b: abs(a - b) / 0.15,
         lambda r, a, b, best: f"{a:.0%} of units saturated at step 0 vs {b:.0%}"),
    Stat("dead units", lambda r: mean_of(r.scalars, ACT, "dead", last),
         lambda a, b: abs(a - b) / 0.05,
         lambda r, a, b, best: f"{a:.0%} of units dead at the end vs {b:.0%}"),
    Stat("update ratio", lambda r: update_ratio(r.scalars),
         lambda a, b: abs(a - b) / 0.5,  # half a decade: ~3x
         say_updates),
    Stat("gradient spread", lambda r: grad_spread(r.scalars),
         lambda a, b: abs(math.log10(a / b)) / math.log10(3) if a > 0 and b > 0 else 0.0,
         lambda r, a, b, best: f"the first layer's gradient {a:.2g}x the last one's vs {b:.2g}x"),
)


NORM_KEY = "model.norm"


def settings(run: Sweep, best: Sweep) -> list[tuple[str, Any, Any]]:
    """(key, this run's value, the best's) for each config value that differs, where the run writes left out."""
    from namegen.checks import flatten
    from omegaconf import OmegaConf

    if run.config is None or best.config is None:
        return []
    a, b = (flatten(OmegaConf.to_container(r.config.cfg, resolve=False)) for r in (run, best))
    return [(k, a.get(k), b.get(k)) for k in sorted(a.keys() | b.keys())
            if a.get(k) != b.get(k) and not k.startswith(("run_dir", "resume"))]


def threshold(runs: list[Sweep], run: Sweep, best: float) -> float:
    """How far behind the best `run` may be and still be within the spread of the other healthy runs (their median
    absolute deviation, so one run far behind does not widen it), and never less than BEHIND_FLOOR."""
    healthy = [r.val for r in runs if r is not run and r.val is not None and r.health.startswith("healthy")]
    spread = float(np.median(np.abs(np.array(healthy) - np.median(healthy)))) if healthy else 0.0
    return max(BEHIND_FLOOR * best, BEHIND_SPREAD * spread)


def why(runs: list[Sweep]) -> dict[str, str]:
    """{run name: its `why` line} for each run clearly behind the sweep's best; {} for a sweep without two runs
    with a val loss to compare."""
    scored = [r for r in runs if r.val is not None]
    if len(runs) < 2 or not scored:
        return {}
    best = min(scored, key=lambda r: r.val)
    out = {}
    for run in runs:
        if run is best or (run.val is not None and run.val - best.val <= threshold(runs, run, best.val)):
            continue
        gap = (f"{run.val - best.val:.3f} behind {best.name} (val {run.val:.4f} vs {best.val:.4f})" if run.val is not None
               else f"behind {best.name} ({run.result.get('status', 'no val loss')})")
        apart = []
        for stat in STATS:
            a, b = stat.read(run), stat.read(best)
            if a is not None and b is not None and (d := stat.apart(a, b)) >= 1:
                apart.append((d, stat, a, b))
        shown = sorted(apart, key=lambda x: -x[0])[:MOST]
        differ = settings(run, best)
        parts = ["; ".join(stat.say(run, a, b, best) for _, stat, a, b in shown) or "no logged statistic differs clearly"]
        if differ:
            parts.append("it differs in " + ", ".join(f"{k}={v} (the best: {w})" for k, v, w in differ[:4])
                         + (f" and {len(differ) - 4} more" if len(differ) > 4 else ""))
        # never "take the norm away": a norm is what rescues a bad init or lr, so removing one trades this run's
        # trouble for a worse one, even where the best run happens to have none
        fix = [f"{k}={w}" for k, _, w in differ if w is not None and (k, w) != (NORM_KEY, "none")][:2]
        # the lr only where the update size is what sets the run apart: the lr scales every update
        fix += [("a higher lr" if a < b else "a lower lr") for _, stat, a, b in shown if stat.name == "update ratio"]
        if fix:
            parts.append("try " + ", or ".join(fix))
        out[run.name] = f"why {run.name} is {gap}: " + "; ".join(parts)
    return out
