"""The judges of the init, the activations, the gradients, the attention and a divergence: each reads a `Run` and
returns what it saw (`observe.Observation`). The lr's judges are in `lr.py`; the table that runs them in `rules.py`."""

from __future__ import annotations

import math

from namegen.diagnosis.lr import step_size
from namegen.diagnosis.observe import (
    START, Observation, Run, above, confident, num, number, pct, weight_layer, wrong_at_step0,
)
from namegen.diagnosis.thresholds import BOUNDED, FAR_TAIL, ONE_SIDED


def judge_diverged(run: Run) -> list[Observation]:
    """The loss stopped being finite (result.json's status, or a non-finite train/loss). Ambiguous between a
    bad init and an lr too high: a bad init shows at step 0 (a confident start, saturation), the lr after."""
    bad = next(((s, v) for s, v in run.loss if not math.isfinite(v)), None)
    nonfinite = run.first_nonfinite()
    if not run.diverged and bad is None and nonfinite is None:
        return []
    step = number(run.result.get("diverged_step"))
    step = int(step) if step is not None else (bad[0] if bad else nonfinite[0] if nonfinite else None)
    layer = run.result.get("diverged_layer") if isinstance(run.result.get("diverged_layer"), str) else None
    if layer is None and nonfinite is not None and (bad is None or nonfinite[0] <= bad[0]):
        layer = nonfinite[1]
    error = run.result.get("error")
    measured = (str(error).splitlines() or [""])[0] if error else (
        f"{run.loss_tag} = {bad[1]} at step {bad[0]}" if bad else
        f"non-finite values in {nonfinite[1]} from step {nonfinite[0]}" if nonfinite else "status diverged")
    return [Observation(
        "diverged", "the loss stopped being finite", (layer,) if layer else (), (step,) if step is not None else (),
        measured, "a finite loss at every step", ({"layer": layer, "step": step, "value": bad[1] if bad else None},),
        harm="the run stopped", facts={"init_bad": wrong_at_step0(run), "lr": step_size(run, None)})]


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
    # In a chain of layers (namegen's MLP) the first/last ratio is the product of the layers' gains: out of range,
    # the early layers cannot learn. Across skip connections or several heads (a ResNet, a Transformer, BERT's
    # masked-LM head, any module whose shape is unknown) it is no such product, so it counts only beside another harm.
    chain = run.config is not None and run.config.arch != "transformer"
    out = []
    for name, rows in hits.items():
        if not rows:
            continue
        vanishing = name == "vanishing_gradients"
        at_start = rows[0][0] == START
        harm = ("at step 0: each layer scales the backward signal by its gain" if at_start
                else "the early layers stopped learning")
        out.append(Observation(
            name, "the early layers receive almost no gradient" if vanishing
            else "the early layers receive a far larger gradient than the late ones",
            (first, last), tuple(step for step, _, _ in rows),
            "; ".join(f"step {step}: {first} {num(g[0])} vs {last} {num(g[-1])} (ratio {ratio:.3g}); by depth "
                      + ", ".join(num(v) for v in g) + trend(g, vanishing) for step, g, ratio in rows),
            f"first/last gradient std between 1/{T:g} and {T:g} (kaiming + norm: 1.1-2.9)",
            tuple({"layer": f"{first}/{last}", "step": step, "value": ratio} for step, _, ratio in rows),
            harm=harm if chain else None,
            harm_with=() if chain else GRADIENT_HARM_WITH,
            quiet="" if chain else "the network kept learning; without a plain chain of layers (skip connections, "
                                   "several heads) the first/last ratio is no per-layer gain",
            facts={"at_start": at_start}))
    return out


# what a gradient spread outside a plain chain hurts together with: a broken start, stuck units, a divergence
GRADIENT_HARM_WITH = ("confident_start", "saturated", "dead_units", "diverged")


def trend(g: list[float], vanishing: bool) -> str:
    pairs = list(zip(g, g[1:]))
    monotone = all(a <= b for a, b in pairs) if vanishing else all(a >= b for a, b in pairs)
    return (": shrinks" if vanishing else ": grows") + (" at every layer toward the input" if monotone
                                                        else " toward the input, not monotonically")



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


