"""The diagnostics' tag names, defined once: the callbacks write them, namegen's summary, report and diagnosis
read them back. Plain Python (no torch), so readers stay light.

A per-layer tag is `family/NN.name[/stat]`: NN is the module-tree order (activations, norms, attention) or the
parameter order (weights), two digits so TensorBoard's lexical sort shows depth top to bottom. NN is fixed when a
fit first records and the same on every step: a layer that skips a step (LayerDrop, an MoE expert without tokens)
leaves a gap and renames nothing. `name` is the module's path as the user wrote the model (never torch.compile's
`_orig_mod.`); a module called k > 1 times per forward pass (torchvision's BasicBlock calls its one ReLU twice)
has one series per call, `name@1` ... `name@k`, with consecutive NNs (`base.Numbering`).

Stats that say what could not be measured (read by the diagnosis):
    act/NN.name/nonfinite, grad/NN.name/nonfinite   share of NaN/inf entries, written only where it is not 0: the
                                                    first step and the lowest NN with one are where a run diverged
    attn/NN.name/fused                              1 where the module ran but a fused kernel (SDPA) hid its
                                                    attention logits: "attention not observed (fused)"
"""

from __future__ import annotations

import re

CALL_MARK = "@"  # a module called k times per forward pass: `name@1` ... `name@k`, one series per call
ACT, PREACT, GRAD, NORM = "act", "preact", "grad", "norm"
ATTN = "attn"  # attention logits: callbacks.Attention (any model), or conf/callbacks/attention.yaml's Activations probe
NONFINITE, FUSED = "nonfinite", "fused"
GRAD_DATA_RATIO, WEIGHT_GRAD, UPDATE_RATIO = "grad_data_ratio", "weight_grad", "update_ratio"
FIGURES = "figures"
# the step-0 figures, the lesson's "before", in cards of their own (no slider to drag back); sorted before FIGURES
FIGURES_AT_START = "at_step_0"

# the update ratios as one line per run (`UpdateRatios`): the median over the weight matrices, and the guide,
# HEALTHY_UPDATE_RATIO at the starting learning rate moved with the schedule (a tenth of the learning rate, one
# lower), so a decay reads as the schedule it is, not as "too low"
UPDATE_RATIO_MEDIAN, UPDATE_RATIO_GUIDE = f"{UPDATE_RATIO}/median", f"{UPDATE_RATIO}/guide"
HEALTHY_UPDATE_RATIO = -3.0  # makemore's guide line: updates ~1/1000 of the weights

# 64 even bins: a third of the cost of TensorBoard's default (~1,500 exponential buckets) per
# histogram, and plenty to see a distribution's shape.
HISTOGRAM_BINS = 64


def tag(family: str, index: int, name: str, stat: str | None = None) -> str:
    """`act/03.model.hidden.3.act/std`: the index is the forward (or parameter) order, two digits so that
    TensorBoard's lexical sort shows depth top to bottom (up to 100 layers)."""
    base = f"{family}/{index:02d}.{name}"
    return f"{base}/{stat}" if stat else base


TAG = re.compile(r"^(?P<family>[a-z_]+)/(?P<index>\d+)\.(?P<name>.+?)(?:/(?P<stat>[a-z_]+))?$")


def family_regex(family: str, stat: str | None = None) -> str:
    """The regex that matches `tag(family, i, name, stat)` for every i and name (custom-scalars charts)."""
    return rf"^{family}/\d+\..+/{stat}$" if stat else rf"^{family}/\d+\."



# The training loss as the diagnostics see it, for any LightningModule (not only namegen's `train/loss`):
# `Diagnostics` writes the loss of each scalar step (the training step's returned loss, or a logged metric it is
# told to read) and, where the model's output is a classifier's or language model's logits, log(output width):
# the loss of a uniform guess. The diagnosis's loss rules (confident_start, loss_rise) read these.
LOSS, UNIFORM_LOSS = "diagnostics/loss", "diagnostics/uniform_loss"
