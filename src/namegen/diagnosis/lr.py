"""The learning rate's judges (update ratios per schedule phase, norm-input growth, a loss that rose above a healthy
start) and the evidence their remedies are sized from."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from namegen.callbacks.tags import HEALTHY_UPDATE_RATIO
from namegen.diagnosis.observe import (
    LR_JUDGED_LOW, LR_PREFIX, START, Layer, Observation, Phase, Run, above, lr_phases, num, weight_layer,
    wrong_at_step0,
)


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


def judge_learning_rate(run: Run) -> list[Observation]:
    """lr too high: in a phase of the lr schedule more than update_ratio_share of the weight matrices move by more
    than 10^update_ratio_high of their size per step, or the inputs of most norms grew norm_growth-fold (scale-
    invariant weights grow under a too-high lr while their update ratios fall: never read as too low). Harm: loss
    spikes, or dead units / vanishing gradients / divergence with it.
    lr too low: more than update_ratio_share below 10^update_ratio_low, where the lr is at least half its peak,
    without that growth, after a first update (at a healthy step 0) that was not above 10^update_ratio_high: a
    first step that large and later ones that small is a too-high lr whose damage shrank the later updates. Harm:
    the loss barely fell."""
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
    # small later updates after a first one far above the healthy range, at a healthy step 0: the lr was too high,
    # and the weights grew (behind norms whose growth stayed under norm_growth) or units died since: never too low
    first, fell = steady_start(run), []
    if low and first is not None and above(first, t.update_ratio_high):
        fell, low = low, []
    out = []
    if high or growth or fell:
        measured, layers_, steps, evidence = [], [], [], []
        if fell:
            later = float(np.median([m for _, _, every in fell for _, m in every]))
            measured.append(f"the first update's steady log10 ratio {first:.2f}, above {t.update_ratio_high:g} at a "
                            f"healthy step 0, then {later:.2f} (the weights grew or units stopped passing gradient)")
            steps.append(START)
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
            measured.append(f"{run.loss_tag} spiked {len(spikes)} time(s), first at step {s}: {num(v)} after {num(lowest)}")
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
            facts={"lr": step_size(run, None if growth else typical(high)), "limit": t.update_ratio_high}))
    if low:
        measured, layers_, steps = [], [], []
        for phase, under, medians in low:
            measured.append(phase_text(run, phase, under, medians, "below", t.update_ratio_low))
            layers_ += [weight_layer(w.name) for w, _ in under]
            steps.append(phase.start)
        stalled = run.stalled()
        ratio = float(np.median([m for _, _, every in low for _, m in every]))
        out.append(Observation(
            "lr_too_low", "each step changes the weights by too little to learn",
            tuple(dict.fromkeys(layers_)), tuple(steps), "; ".join(measured),
            f"median log10(update/weight) above {t.update_ratio_low:g} for most weight matrices (healthy -3.5 to -1.9)",
            tuple({"layer": w, "step": None, "value": None} for w in dict.fromkeys(layers_)),
            harm=(f"the loss barely fell: {num(stalled[0])} at the end from {num(stalled[1])} at step 0"
                  if stalled else None),
            quiet="the steps are small, but the loss fell",
            facts={"lr": measured_size(run, ratio), "limit": t.update_ratio_low}))
    if not (high or growth or low):
        out += small_behind_norms(run)
    return out


def small_behind_norms(run: Run) -> list[Observation]:
    """Updates persistently small (the run's median update ratio below update_ratio_small) while most norms'
    inputs stay far from unit scale (>= norm_input_scale x, first and last logged step): the weights feeding the
    norms are large, and the norm divides each of their updates by that scale (naive init behind BatchNorm). A
    note, not a finding: the run learns, only slower, which a sweep's comparison shows (diagnosis.compare)."""
    t = run.t
    far = [(n, n.finite("in_std")[0][1], n.finite("in_std")[-1][1]) for n in run.norms]
    far = [(n, a, b) for n, a, b in far if min(a, b) >= t.norm_input_scale]
    medians = phase_medians(run, START, None)
    if not run.norms or not medians or len(far) <= t.update_ratio_share * len(run.norms):
        return []
    ratio = float(np.median([m for _, m in medians]))
    if not above(t.update_ratio_small, ratio):
        return []
    cfg = run.config
    fix = ("init.scheme=kaiming (weights x gain/sqrt(fan_in), near unit scale), or a higher lr"
           if cfg is None or cfg.scheme != "kaiming" else "a higher lr")
    scales = [v for _, a, b in far for v in (a, b)]
    return [Observation(
        "small_updates", "each update is small next to weights far from unit scale, which a norm divides out",
        tuple(n.name for n, _, _ in far), (),
        f"median log10(update/weight) {ratio:.2f} over the run; the inputs of {len(far)} of {len(run.norms)} norms "
        f"stay {min(scales):.1f}-{max(scales):.1f} x unit scale",
        f"median above {t.update_ratio_small:g} (kaiming + BatchNorm: -2.4), or norm inputs below "
        f"{t.norm_input_scale:g} x unit scale (kaiming: 1.0-2.2)",
        tuple({"layer": n.name, "step": None, "value": b} for n, _, b in far),
        quiet=f"the run learns, but each step moves it ~{10 ** (HEALTHY_UPDATE_RATIO - ratio):.0f}x less than the "
              f"lesson's -3: a norm divides each update by the scale of the weights feeding it; {fix}")]


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
    return [Observation(
        "lr_too_high", "training made the run worse than its start: the updates did the damage",
        (), tuple(s for s, _ in tail),
        f"{run.loss_tag} {num(end)} over steps {tail[0][0]}-{tail[-1][0]} = {end / run.init_loss:.1f} x the step-0 loss "
        f"{num(run.init_loss)}, after a healthy step 0",
        f"last losses below {run.t.loss_rise:g} x the step-0 loss (healthy runs end at 0.62-0.74 x)",
        tuple({"layer": None, "step": s, "value": v} for s, v in tail),
        harm=f"the loss ended {end / run.init_loss:.1f} x above where it started",
        facts={"lr": step_size(run, None), "rose": True, "limit": run.t.update_ratio_high})]


def start_ratio(run: Run) -> float | None:
    """The median update ratio of the first update (step 0). After a healthy step 0 it is the lr's own effect:
    it scales with the lr (SGD 0.1 on kaiming tanh: -3.24; lr 5: -1.54, log10(50) = 1.7 higher)."""
    firsts = [v for w in run.updates for s, v in w.finite()[:1] if s == START]
    return float(np.median(firsts)) if firsts else None


@dataclass(frozen=True)
class Evidence:
    """The lr that brings the run's steady update ratios to about -3 (HEALTHY_UPDATE_RATIO), and what it is from."""

    lr: float
    source: str


def steady_over_first(run: Run) -> tuple[float, str]:
    """How much larger a steady step is than the first one, for the run's optimizer. SGD with momentum b starts its
    velocity at the first gradient and settles at lr/(1-b) x a consistent gradient; Adam's first step is lr x
    sign(grad) (|m/sqrt(v)| = 1), a steady one about sqrt((1-b1)/(1+b1)) of it where the gradient's noise dominates
    (the moving average of b1 shrinks zero-mean noise by that much)."""
    cfg = run.config
    if cfg is None:
        return 1.0, ""
    if cfg.optimizer.startswith("Adam"):
        b1 = cfg.betas[0]
        return math.sqrt((1 - b1) / (1 + b1)), f", x {math.sqrt((1 - b1) / (1 + b1)):.2g} for Adam's beta1 {b1:g}"
    if cfg.momentum > 0:
        return 1 / (1 - cfg.momentum), f", x {1 / (1 - cfg.momentum):.3g} = 1/(1-momentum) for momentum {cfg.momentum:g}"
    return 1.0, ""


def steady_start(run: Run) -> float | None:
    """The first update's median log10 ratio as the steady step the optimizer makes of it, when step 0 looked
    healthy (a bad init's gradients make the first update large at any lr); else None."""
    r0 = start_ratio(run)
    if r0 is None or wrong_at_step0(run):
        return None
    return r0 + math.log10(steady_over_first(run)[0])


def step_size(run: Run, measured: float | None) -> Evidence | None:
    """The lr a too-high lr's fix is sized from. Best, the first update's ratio (step 0), the lr's own effect before
    any weight grew, when step 0 looked healthy (a bad init's gradients make the first update large at any lr),
    counted as the steady step the optimizer makes of it; else the ratios measured in the phases where they were
    too high (`measured`: None where weights feeding a norm grew, which makes every update look small)."""
    lr, r0 = run.config.lr if run.config is not None else None, start_ratio(run)
    if lr is None:
        return None
    if r0 is not None and not wrong_at_step0(run):
        factor, how = steady_over_first(run)
        steady = r0 + math.log10(factor)
        return Evidence(lr * 10 ** (HEALTHY_UPDATE_RATIO - steady), f"the first update's median log10 ratio {r0:.2f}, "
                                                                    f"before any weight grew{how}")
    return measured_size(run, measured)


def measured_size(run: Run, ratio: float | None) -> Evidence | None:
    """The lr that moves the measured steady update ratio `ratio` to about -3 (update ratios scale with the lr)."""
    lr = run.config.lr if run.config is not None else None
    if lr is None or ratio is None or not math.isfinite(ratio):
        return None
    return Evidence(lr * 10 ** (HEALTHY_UPDATE_RATIO - ratio), f"the median log10 update ratio {ratio:.2f} measured "
                                                               "where the lr was judged")


def typical(phases: list[tuple[Phase, list[tuple[Layer, float]], list[tuple[Layer, float]]]]) -> float | None:
    """The median update ratio of every weight matrix, in the phase where it ran highest."""
    medians = [float(np.median([m for _, m in every])) for _, _, every in phases]
    return max(medians) if medians else None


def phase_text(run: Run, phase: Phase, hits: list[tuple[Layer, float]], medians: list[tuple[Layer, float]],
               side: str, limit: float) -> str:
    lr = ", ".join(f"{tag.removeprefix(LR_PREFIX)} {v:.3g}" for tag, v in phase.lr.items()) or "lr unknown"
    end = f"{phase.end}" if phase.end is not None else "the end"
    shown = ", ".join(f"{weight_layer(w.name)} {m:.2f}" for w, m in hits[:4]) + (", ..." if len(hits) > 4 else "")
    return (f"steps {phase.start}-{end} ({lr}): {len(hits)} of {len(medians)} weight matrices {side} {limit:g} "
            f"({shown})")


