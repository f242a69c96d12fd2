"""The diagnosis's thresholds, each defined once here, and the activation kinds they depend on.

Each default is set against a healthy value measured on names.txt with kaiming init and a norm
(3,000 steps, statistics every 100 steps; the README's `## Diagnosis` lists the measurements) and
against the failure it must catch. `conf/config.yaml`'s `diagnosis:` block holds only a run's
overrides of these (`+diagnosis.dead=0.2`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from namegen.errors import ConfigError

# An activation's kind decides what "flat" means for it, hence its saturation threshold (namegen.callbacks.kinds
# defines each kind's flat region; its kind names are the lower-cased torch class names, which are the keys here).
# A kind not listed (hardshrink, softshrink: flat near zero) is guessed from its outputs like an unknown module.
BOUNDED, ONE_SIDED, FAR_TAIL, LEAKY = "bounded", "one-sided", "far-tail", "leaky"
KINDS = {
    # flat near both bounds (|tanh| > 0.97; hardtanh, hardsigmoid outside their linear part): ~0 when healthy
    BOUNDED: ("tanh", "sigmoid", "hardtanh", "softsign", "hardsigmoid"),
    ONE_SIDED: ("relu", "relu6", "relu2", "threshold"),  # flat for every negative input: ~50% when healthy
    # flat only far into one tail (x < -3; logsigmoid x > 3): a few %
    FAR_TAIL: ("gelu", "quick_gelu", "silu", "elu", "mish", "selu", "celu", "softplus", "hardswish", "logsigmoid"),
    LEAKY: ("leakyrelu", "prelu", "rrelu"),  # never flat: the negative side keeps its slope, so no unit dies
}
KIND_OF = {name: kind for kind, names in KINDS.items() for name in names}
# Without the activation's type (a run of someone else's module), a layer whose mean output at its first logged
# step is positive and at least this fraction of its std is taken as one-sided: a ReLU of a centred input has
# mean/std = 0.68, a tanh of one ~0 (saturated or not).
ONE_SIDED_MEAN_TO_STD = 0.25
# ... and a one-sided layer whose first logged flat fraction is below this as far-tail: a ReLU of a centred input
# is flat for half of it (measured 49-50% at step 0), a healthy GELU (x < -3) for 2-5%.
FAR_TAIL_BELOW = 0.2
# ... but a layer whose outputs look like a sigmoid's is bounded: a sigmoid of a roughly centred input has mean ~0.5
# and, its outputs lying in (0, 1), a std of at most 0.5, so mean/std >= 1 (1.04 saturated, 2.4 at unit input
# scale). A ReLU/GELU/SiLU/ELU/Mish of a centred input has mean/std <= 0.68 at any scale (measured, N(0, s^2) inputs,
# s from 0.3 to 20).
SIGMOID_MEAN, SIGMOID_STD_MAX, SIGMOID_MEAN_TO_STD = (0.35, 0.65), 0.5, 0.95


def kind_of(class_name: str) -> str | None:
    """"Tanh", "torch.nn.GELU" -> its kind; None for an unknown class."""
    return KIND_OF.get(class_name.rsplit(".", 1)[-1].lower())


# records of runs trained before the thresholds were split by activation kind
LEGACY = {"saturation": "saturation_bounded"}


@dataclass(frozen=True)
class Thresholds:
    """The rules' thresholds. "Healthy" is the range measured on names.txt with kaiming init and BatchNorm or
    LayerNorm (3,000 steps; the Transformer 1,500; and the default 20k-step run on names_first), every logged step.

    init_loss_ratio: step-0 loss over log(V). Healthy 1.00-1.01 (3.29-3.33 vs 3.30); naive init 5.6-6x.
    saturation_bounded: tanh/sigmoid flat fraction (|t| > 0.97). Healthy 1.9-4.8% (9.3% at most over 20k
        steps); kaiming without a norm 21-25% in the first layer; naive init 70-85%.
    saturation_one_sided: ReLU flat fraction (t <= 0). Healthy 47-54%; 75% means the pre-activations
        have drifted about 0.7 std below zero.
    saturation_far_tail: GELU/SiLU/ELU/Mish flat fraction (x < -3). Healthy 1.5-4.4% (the Transformer's
        GELU after kaiming's gain 1.47: its input's std ~1.5, so x < -3 is z < -2); 5.1% without a norm;
        a naive Transformer's GELU layers 32-36% at step 0.
    dead: share of a layer's units flat for every example of the batch, at the end. Healthy 0.
    gradient_ratio: gradient std at the first activation over the last one's. Healthy 1.1-2.9.
    update_ratio_high / update_ratio_low: log10(update std / weight std) per step, median over a phase.
        Healthy -3.5 to -1.9 per matrix (the shrunken output layer is the one near -1.9): one decade
        around the lesson's -3 either way.
    update_ratio_share: the share of weight matrices out of range that makes the lr the cause (one odd
        matrix, such as the output layer, is not).
    norm_growth: how many times the std of a norm's input grew over its first logged value. Healthy at
        most 3.7; weights feeding a norm that a too-high lr blows up grow 25 to 10^6 times (lr 30 with
        BatchNorm), while their update ratios fall (the norm takes the scale out).
    update_ratio_small / norm_input_scale: the median update ratio over the whole run below update_ratio_small
        while most norms' inputs stay at least norm_input_scale x unit scale from the first logged step to the
        last: weights far from unit scale, whose every update a norm divides by their scale (a note: the run
        learns, slower). Kaiming + BatchNorm, default 20k-step run: median -2.4, norm inputs 1.0-2.2; naive init +
        BatchNorm: -3.7, norm inputs 5.6-6.8 (val 2.092 against 1.9905).
    attention_std: std of the attention logits (pre-softmax). Healthy 1.0 at step 0, at most 2.5 after 3,000 steps (padding left out);
        naive init ~60 (the softmax is one-hot: a single key takes all the weight).
    loss_rise: the mean of the last three logged train losses over the step-0 loss (init/loss) above which
        training made the run worse than its start. In every healthy benchmark case the loss falls: 0.62-0.74
        (any logged point at most 0.93); a run that learns nothing ends at 1.00-1.01 (lr 1e-5); one batch's
        noise is at most 1.2x. SGD lr 5 without a norm (a healthy step 0, then dead tanh units) ends at ~5x.
    """

    init_loss_ratio: float = 1.5
    saturation_bounded: float = 0.30
    saturation_one_sided: float = 0.75
    saturation_far_tail: float = 0.15
    dead: float = 0.10
    gradient_ratio: float = 10.0
    update_ratio_high: float = -2.0
    update_ratio_low: float = -4.0
    update_ratio_share: float = 0.5
    norm_growth: float = 10.0
    update_ratio_small: float = -3.5
    norm_input_scale: float = 3.0
    attention_std: float = 5.0
    loss_rise: float = 1.2

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ConfigError(f"diagnosis.{f.name}={value!r} must be a finite number")
        for name, (ok, allowed) in self.ranges().items():
            if not ok:
                raise ConfigError(f"diagnosis.{name}={getattr(self, name)!r} must be {allowed}")

    def ranges(self) -> dict[str, tuple[bool, str]]:
        unit = "in [0, 1]"
        return {
            "init_loss_ratio": (self.init_loss_ratio >= 1, ">= 1"),
            "saturation_bounded": (0 <= self.saturation_bounded <= 1, unit),
            "saturation_one_sided": (0 <= self.saturation_one_sided <= 1, unit),
            "saturation_far_tail": (0 <= self.saturation_far_tail <= 1, unit),
            "dead": (0 <= self.dead <= 1, unit),
            "gradient_ratio": (self.gradient_ratio > 1, "> 1"),
            "update_ratio_low": (self.update_ratio_low < self.update_ratio_high,
                                 f"below diagnosis.update_ratio_high={self.update_ratio_high}"),
            "update_ratio_share": (0 <= self.update_ratio_share < 1, "in [0, 1)"),
            "norm_growth": (self.norm_growth > 1, "> 1"),
            "update_ratio_small": (self.update_ratio_low <= self.update_ratio_small <= self.update_ratio_high,
                                   "between diagnosis.update_ratio_low and update_ratio_high"),
            "norm_input_scale": (self.norm_input_scale > 1, "> 1"),
            "attention_std": (self.attention_std > 0, "> 0"),
            "loss_rise": (self.loss_rise > 1, "> 1"),
        }

    def saturation(self, kind: str) -> float | None:
        """The flat-fraction threshold of an activation kind; None for a kind that is never flat (leaky)."""
        return {BOUNDED: self.saturation_bounded, ONE_SIDED: self.saturation_one_sided,
                FAR_TAIL: self.saturation_far_tail}.get(kind)

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any] | None) -> Thresholds:
        """Defaults overridden by a dict or a config node; an unknown key or a bad value is a ConfigError."""
        if mapping is None:
            return cls()
        valid = [f.name for f in fields(cls)]
        mapping = {LEGACY.get(key, key): value for key, value in mapping.items()}
        for key in mapping:
            if key not in valid:
                raise ConfigError(f"unknown diagnosis threshold {key!r}; valid ones: {', '.join(valid)}")
        return cls(**{key: mapping[key] for key in mapping})
