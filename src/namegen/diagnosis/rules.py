"""The rule table: what each rule reads, when it applies, what it judges with; `engine.diagnose` runs it.

What the rules read is described in `observe.py`; each judge returns observations. One that names its harm
(`harm`) becomes a finding and makes the run unhealthy; one that only hurts together with another finding names it
in `harm_with`; any other is a note.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from namegen.diagnosis.judges import (
    judge_attention, judge_confident_start, judge_dead_units, judge_diverged, judge_gradients, judge_saturated,
)
from namegen.diagnosis.lr import judge_learning_rate, judge_loss_rise
from namegen.callbacks.tags import ATTN, FUSED
from namegen.diagnosis.observe import Observation, Run, layers

# -- the table -----------------------------------------------------------------------------------------------------


def has_attention(run: Run) -> bool:
    """A model with attention: its config says so, or it logged attention logits (someone else's module)."""
    if run.config is not None:
        return run.config.arch == "transformer"
    return bool(run.attns) or bool(layers(run.scalars, ATTN))  # logits std, or only `fused`: a kernel hid them


def attention_reads(run: Run) -> str:
    """What the attention rule lacks: the logits, or (the callbacks saw attention modules run a fused kernel, which
    never forms them) the reason they could not be observed."""
    fused = any(layer.finite(FUSED) for layer in layers(run.scalars, ATTN))
    return "attention logits (attention not observed: fused kernel)" if fused else "attention logits"


@dataclass(frozen=True)
class Rule:
    name: str  # as listed in `Diagnosis.checked`
    reads: str | Callable[[Run], str]  # what it needs, in words, for the coverage line (or what of it is missing)
    ready: Callable[[Run], bool]  # that was logged
    judge: Callable[[Run], list[Observation]]
    applies: Callable[[Run], bool] = lambda run: True  # the model has what the rule judges

    def needs(self, run: Run) -> str:
        return self.reads(run) if callable(self.reads) else self.reads


RULES = (
    Rule("diverged", lambda r: r.lacks("train") + " or run status", lambda r: "status" in r.result or bool(r.loss)
         or r.first_nonfinite() is not None, judge_diverged),
    Rule("confident_start", lambda r: r.lacks("init", "uniform"), lambda r: r.init_loss is not None and r.uniform_loss is not None,
         judge_confident_start),
    Rule("saturated", "activation statistics", lambda r: bool(r.judged_acts("saturation")) or any(
        a.finite("saturation") for a in r.acts), judge_saturated),
    Rule("dead_units", "activation statistics", lambda r: any(a.finite("dead") for a in r.acts), judge_dead_units),
    Rule("gradients", "gradient statistics", lambda r: len(r.grads) >= 2 and bool(
        set.intersection(*(set(dict(g.finite("std"))) for g in r.grads))), judge_gradients),
    Rule("learning_rate", "update ratios", lambda r: bool(r.updates), judge_learning_rate),
    Rule("attention", attention_reads, lambda r: bool(r.attns), judge_attention, applies=has_attention),
    Rule("loss_rise", lambda r: r.lacks("train", "init"), lambda r: r.init_loss is not None and any(
        math.isfinite(v) for _, v in r.loss), judge_loss_rise),
)
RULE_NAMES = tuple(rule.name for rule in RULES)

