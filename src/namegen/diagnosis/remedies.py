"""Each finding's fix, computed from the run's own config: Hydra overrides plus the sentence that says why.

For each finding a function lists candidate fixes, likeliest first; the first one that changes something (no
override already in effect) and that namegen accepts (checks.validate, which asks the model itself) is the
remedy. A run without a namegen config (someone else's module) gets the sentence without overrides.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

from namegen.diagnosis.config import RunConfig
from namegen.diagnosis.lr import Evidence
from namegen.diagnosis.observe import Observation


@dataclass(frozen=True)
class Remedy:
    overrides: tuple[str, ...]  # Hydra overrides for `python train.py`; () for a run without a namegen config
    text: str
    skipped: tuple[str, ...] = ()  # candidates left out, and why (in effect, refused)

    def to_dict(self) -> dict[str, Any]:
        return {"overrides": list(self.overrides), "text": self.text, "skipped": list(self.skipped)}


Candidate = tuple[list[str], str]
LR_KEY = "optim.optimizer.lr"


def default_gain(cfg: RunConfig) -> float:
    """The gain kaiming init takes for the run's activation (5/3 tanh, sqrt 2 relu, 1.47 gelu)."""
    from namegen.transformer import activation_gain

    return activation_gain(cfg.activation or "tanh")


def kaiming(cfg: RunConfig) -> list[Candidate]:
    if cfg.scheme == "kaiming":
        return []
    overrides = ["init.scheme=kaiming"] + (["init.output_scale=0.1"] if cfg.output_scale is not None and cfg.output_scale > 0.1 else [])
    return [(overrides, "initialize with kaiming: weights x gain/sqrt(fan_in) keep each layer's pre-activations near "
                        "unit scale, and the output layer x init.output_scale starts the loss near log(V)")]


def gain_back(cfg: RunConfig, too: str) -> list[Candidate]:
    """The activation's own gain, when the run set one that is too large (`too="large"`) or too small."""
    g, base = cfg.gain, default_gain(cfg)
    if cfg.scheme != "kaiming" or g is None or abs(g - base) < 1e-3 or (g > base) != (too == "large"):
        return []
    return [([f"init.gain={base:.4g}"], f"use the activation's own gain ({base:.4g} for {cfg.activation}, not {g:g}): "
                                        f"each layer multiplies its input's scale by about the gain")]


def output_scale(cfg: RunConfig) -> list[Candidate]:
    if cfg.scheme != "kaiming" or cfg.output_scale is None or cfg.output_scale <= 0.1:
        return []
    return [(["init.output_scale=0.1"], f"shrink the output layer (init.output_scale=0.1, not {cfg.output_scale:g}): "
                                        "small logits start the loss near log(V)")]


def normalize(cfg: RunConfig) -> list[Candidate]:
    why = "a norm before each activation re-centres and rescales its input at every step, whatever the weights do"
    return [([f"model.norm={kind}"], f"normalize ({kind}): {why}") for kind in ("batchnorm", "layernorm")]


def toward(value: float, lr: float, digits: int) -> float:
    """`value` to `digits` significant digits, rounded toward `lr`: a fix never moves further than its evidence."""
    q = 10.0 ** (math.floor(math.log10(value)) - digits + 1)
    n = math.ceil(value / q - 1e-9) if value < lr else math.floor(value / q + 1e-9)
    return float(f"{n * q:.{digits}g}")


def lr_to(cfg: RunConfig, direction: int, evidence: Evidence | None, why: str) -> list[Candidate]:
    """Lower (direction -1) or raise (+1) the lr: always that way, by what `evidence` supports and no further than
    a decade past the recipe's lr (the healthy point the recipe was tuned to); without evidence that way, to the
    recipe's lr if it lies that way, else by a factor of 10, and the sentence says which."""
    lr, recipe = cfg.lr, cfg.recipe_lr
    if lr is None or lr <= 0:
        return []
    if evidence is not None and direction * (evidence.lr - lr) > 0:
        value, source = evidence.lr, f"sized from {evidence.source}"
        edge = recipe * 10.0 ** direction if recipe is not None else None
        if edge is not None and direction * (edge - lr) > 0 and direction * (value - edge) > 0:
            value, source = edge, source + f", held to 10x {'below' if direction < 0 else 'above'} the recipe's lr {recipe:g}"
    elif recipe is not None and direction * (recipe - lr) > 0:
        value, source = recipe, f"no undistorted evidence of the step size: the recipe's lr {recipe:g}"
    else:
        value, source = lr * 10.0 ** direction, "no evidence of the step size: a factor of 10"
    value = next((v for d in (1, 2, 3) if direction * ((v := toward(value, lr, d)) - lr) > 0), value)
    return [([f"{LR_KEY}={value:g}"], f"{'lower' if direction < 0 else 'raise'} the learning rate from {lr:g} to "
                                      f"{value:g} ({source}): {why}")]


def init_first(cfg: RunConfig, too: str) -> list[Candidate]:
    return kaiming(cfg) + gain_back(cfg, too) + normalize(cfg)


SCALE = "update ratios scale with the lr; about -3 is healthy"


def lower_lr(cfg: RunConfig, o: Observation, context: dict[str, Observation]) -> list[Candidate]:
    evidence = context["lr_too_high"].facts.get("lr") if "lr_too_high" in context else o.facts.get("lr")
    return lr_to(cfg, -1, evidence, SCALE)


def remedy_diverged(cfg: RunConfig, o: Observation, context: dict[str, Observation]) -> list[Candidate]:
    # a bad init shows at step 0 (a confident start, saturation); an lr too high shows only once training moves
    lr = lower_lr(cfg, o, context)
    if o.facts.get("init_bad"):
        return [(c, t + " (the run was already wrong at step 0, so the init is the likelier cause than the lr)")
                for c, t in kaiming(cfg) + gain_back(cfg, "large")] + lr + normalize(cfg)
    return [(c, t + " (step 0 looked healthy, so the lr is the likelier cause than the init)") for c, t in lr] + \
        kaiming(cfg) + normalize(cfg)


def remedy_confident_start(cfg: RunConfig, o: Observation, context: dict[str, Observation]) -> list[Candidate]:
    return kaiming(cfg) + output_scale(cfg) + gain_back(cfg, "large")


def wrong_at_start(o: Observation, context: dict[str, Observation]) -> bool:
    """The run was already wrong at step 0 (a confident start, or saturation, attention, gradients off before any
    update): then the init is the likelier cause of what followed than the lr."""
    return "confident_start" in context or any(c.facts.get("at_start") for c in [o, *context.values()])


def remedy_drift(too: str) -> Callable[[RunConfig, Observation, dict[str, Observation]], list[Candidate]]:
    """Saturation, dead units, a vanishing or exploding gradient: the init's doing when the run was already wrong at
    step 0 (this finding or another), the lr's when the lr was found too high, else drift a norm holds back."""
    def remedy(cfg: RunConfig, o: Observation, context: dict[str, Observation]) -> list[Candidate]:
        if wrong_at_start(o, context):
            return init_first(cfg, too)
        if "lr_too_high" in context:
            return lower_lr(cfg, o, context) + normalize(cfg)
        return normalize(cfg) + lr_to(cfg, -1, None, "smaller steps drift less") + init_first(cfg, too)

    return remedy


def remedy_lr_high(cfg: RunConfig, o: Observation, context: dict[str, Observation]) -> list[Candidate]:
    lr = lr_to(cfg, -1, o.facts.get("lr"), SCALE)
    if wrong_at_start(o, context):  # a bad init's huge gradients make large updates at any lr
        return [(c, t + " (the run was already wrong at step 0, so the init is the likelier cause of the large "
                        f"updates; if they stay above {o.facts['limit']:g} with kaiming init, lower the lr)")
                for c, t in kaiming(cfg)] + lr
    if o.facts.get("rose"):  # healthy at step 0, worse after the updates: they did it
        return [(c, t + " (step 0 looked healthy and the loss rose only once the updates began, so the lr is the "
                        "likelier cause than the init)") for c, t in lr] + normalize(cfg)
    return lr


def remedy_lr_low(cfg: RunConfig, o: Observation, context: dict[str, Observation]) -> list[Candidate]:
    lr = lr_to(cfg, +1, o.facts.get("lr"), SCALE)
    if wrong_at_start(o, context):  # a gradient that vanished at step 0 makes small updates at any lr
        return [(c, t + " (the run was already wrong at step 0, so the init is the likelier cause of the small "
                        f"updates; if they stay below {o.facts['limit']:g} once it is fixed, raise the lr)")
                for c, t in kaiming(cfg) + gain_back(cfg, "small")] + normalize(cfg) + lr
    return lr


def remedy_attention(cfg: RunConfig, o: Observation, context: dict[str, Observation]) -> list[Candidate]:
    layernorm = (["model.norm=layernorm"], "normalize (layernorm): a LayerNorm before attention bounds the scale of "
                                           "the queries and keys")
    return kaiming(cfg) + [layernorm] + lower_lr(cfg, o, context)


REMEDIES = {
    "diverged": remedy_diverged,
    "confident_start": remedy_confident_start,
    "saturated": remedy_drift("large"),
    "dead_units": remedy_drift("large"),
    "vanishing_gradients": remedy_drift("small"),
    "exploding_gradients": remedy_drift("large"),
    "lr_too_high": remedy_lr_high,
    "lr_too_low": remedy_lr_low,
    "attention": remedy_attention,
}

# without a namegen config: what to change, in words
GENERIC = {
    "diverged": "lower the learning rate, unless step 0 already looked wrong (then fix the init: weights x "
                "gain/sqrt(fan_in), a small output layer)",
    "confident_start": "shrink the output layer's weights (x 0.1) and scale every weight by gain/sqrt(fan_in)",
    "saturated": "scale weights by gain/sqrt(fan_in) (kaiming), or put a norm before each activation",
    "dead_units": "scale weights by gain/sqrt(fan_in), lower the learning rate, or put a norm before each activation",
    "vanishing_gradients": "raise the init gain toward the activation's (kaiming), or put a norm before each activation",
    "exploding_gradients": "lower the init gain toward the activation's (kaiming), or put a norm before each activation",
    "lr_too_high": "lower the learning rate until update ratios sit near -3",
    "lr_too_low": "raise the learning rate until update ratios sit near -3",
    "attention": "initialize the query/key projections by 1/sqrt(fan_in), or put a LayerNorm before attention",
}


def remedy_for(o: Observation, cfg: RunConfig | None, context: dict[str, Observation]) -> Remedy:
    """The first candidate that changes something and that namegen accepts."""
    if cfg is None:
        return Remedy((), GENERIC[o.name])
    skipped = []
    for overrides, text in REMEDIES[o.name](cfg, o, context):
        effective = [x for x in overrides if not cfg.in_effect(x)]
        skipped += [f"{x} (already in effect)" for x in overrides if x not in effective]
        if not effective:
            continue
        refusal = cfg.refusal(effective)
        if refusal is not None:
            skipped.append(f"{' '.join(effective)} (refused: {refusal})")
            continue
        return Remedy(tuple(effective), text, tuple(skipped))
    return Remedy((), "nothing in this run's config is left to change for it: " + GENERIC[o.name], tuple(skipped))


def combined(overrides_lists: list[tuple[str, ...]]) -> list[str]:
    """The findings' overrides in order, one per key: the first finding (the likeliest cause) wins."""
    from namegen.diagnosis.config import parse

    out, keys = [], set()
    for overrides in overrides_lists:
        for o in overrides:
            key = parse(o)[0]
            if key not in keys:
                keys.add(key)
                out.append(o)
    return out

