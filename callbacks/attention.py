"""The attention logits' scale, wherever a model lets them be seen: a saturated softmax is attention's dead unit."""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch
import torch.nn as nn
from lightning.pytorch.utilities import rank_zero_warn

from .base import Want
from .catalog import Catalog
from .kinds import finite_part, std
from .probe import ModuleProbe, Step, histogram
from .schedule import Due
from .tags import ATTN, FUSED, tag


def mha_logits(module: nn.MultiheadAttention, args: tuple, kwargs: dict) -> torch.Tensor | None:
    """q.k / sqrt(head_dim) of an `nn.MultiheadAttention` call, (N, heads, L, S), from its inputs and projections
    (its public weights): the fused kernel it calls never shows them. Masks are not applied."""
    names = ("query", "key")
    q, k = (args[i] if len(args) > i else kwargs.get(n) for i, n in enumerate(names))
    if not isinstance(q, torch.Tensor) or not isinstance(k, torch.Tensor):
        return None
    E, H = module.embed_dim, module.num_heads
    if module.in_proj_weight is not None:
        wq, wk = module.in_proj_weight[:E], module.in_proj_weight[E:2 * E]
    else:
        wq, wk = module.q_proj_weight, module.k_proj_weight
    bias = module.in_proj_bias
    bq, bk = (bias[:E], bias[E:2 * E]) if bias is not None else (None, None)
    with torch.no_grad():
        if q.dim() == 2:  # unbatched (L, E)
            q, k = q.unsqueeze(0), k.unsqueeze(0)
        elif not module.batch_first:  # (L, N, E)
            q, k = q.transpose(0, 1), k.transpose(0, 1)
        qh = nn.functional.linear(q, wq, bq).unflatten(-1, (H, E // H)).transpose(1, 2)  # (N, H, L, d)
        kh = nn.functional.linear(k, wk, bk).unflatten(-1, (H, E // H)).transpose(1, 2)
        return qh @ kh.transpose(-2, -1) / math.sqrt(E // H)


def attention_logits(module: nn.Module, args: tuple, kwargs: dict, output: Any) -> torch.Tensor | None:
    """The logits of one attention call, (B, heads, T, S), or None where a fused kernel hid them.

    nn.MultiheadAttention: q.k from its projections. Any other module (Hugging Face's GPT2Attention,
    LlamaAttention, BertSelfAttention with the eager implementation) returns its attention weights in its
    output tuple: probabilities, whose log is each row's logits less the row's log-sum-exp; each row is
    centred, so the std is the logits' spread within a row, what saturates a softmax. Entries the mask
    removed (probability 0) are NaN, left out of every statistic. Where the output holds no 4-dimensional
    tensor (SDPA, flash attention), nothing is returned.
    """
    if isinstance(module, nn.MultiheadAttention):
        return mha_logits(module, args, kwargs)
    extras = output[1:] if isinstance(output, (tuple, list)) else ()
    weights = next((o for o in extras if isinstance(o, torch.Tensor) and o.dim() == 4), None)
    if weights is None:
        return None
    with torch.no_grad():
        w = weights.detach().float()
        if bool((w < 0).any()):  # scores already, not probabilities
            return w
        logits = torch.where(w > 0, w.clamp_min(1e-38).log(), torch.full_like(w, math.nan))
        return logits - logits.nanmean(dim=-1, keepdim=True)


class Attention(ModuleProbe):
    """The attention logits of every attention module, on the scalar (and histogram) steps.

    Scalars `attn/i.path/{mean,std}` (i in module-tree order) of the logits before the softmax: a std far
    above the healthy ~1 means a near one-hot softmax. The modules are found by type (`nn.MultiheadAttention`)
    or by a class name containing "Attention" (the innermost: BertSelfAttention, not BertAttention), or given
    by `modules` / `pattern`. A module that runs but whose logits a fused kernel keeps to itself (PyTorch's
    SDPA, flash attention) writes `attn/i.path/fused` = 1 instead, and one warning: build a Hugging Face model
    with `attn_implementation="eager"` to have them.
    """

    key = ATTN

    def __init__(self, modules: Sequence[str] | None = None, pattern: str | None = None) -> None:
        super().__init__(modules, pattern)
        self.warned = False

    def discovered(self, catalog: Catalog) -> list[str]:
        return catalog.attention

    def nothing(self, root: nn.Module) -> str:
        return f"{type(root).__name__} has no attention module (nn.MultiheadAttention or a class named *Attention*)"

    def setup(self, root: nn.Module, catalog: Catalog) -> None:
        if self.modules is not None or self.pattern is not None or catalog.attention:  # an MLP has none: no warning
            super().setup(root, catalog)

    def active(self, due: Due) -> bool:
        return due.scalars or due.histograms

    def watch(self, due: Due) -> list[tuple[str, nn.Module, Want]]:
        return [(name, m, Want(outputs=True)) for name, m in self.watched]

    @staticmethod
    def extract(module: nn.Module, args: tuple, kwargs: dict, output: Any) -> torch.Tensor | None:
        return attention_logits(module, args, kwargs, output)

    def after_update(self, step: Step) -> None:
        histograms = step.writers("histogram") if step.due.histograms else []
        fused = []
        for i, series, key in self.series(step):
            if key in step.recorder.hidden:
                fused.append(series)
                if step.due.scalars:
                    step.scalars[tag(ATTN, i, series, FUSED)] = 1.0
                continue
            t = step.recorder.outputs.get(key)
            if t is None:
                continue
            if step.due.scalars:
                values, _ = finite_part(t)  # the masked pairs (NaN) are no logits
                step.scalars[tag(ATTN, i, series, "mean")] = values.mean().item() if values.numel() else math.nan
                step.scalars[tag(ATTN, i, series, "std")] = std(values)
            for writer in histograms:
                histogram(writer, tag(ATTN, i, series), t, step.global_step)
        if fused and not self.warned:
            self.warned = True
            rank_zero_warn(f"{type(self).__name__}: attention not observed (fused) in {', '.join(fused[:3])}"
                           f"{', ...' if len(fused) > 3 else ''}: a fused kernel (SDPA) never forms the logits; build "
                           "a Hugging Face model with attn_implementation='eager' to see them")
