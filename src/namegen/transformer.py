"""A small decoder-only character Transformer (makemore's Transformer, nanoGPT's layout).

    idx (B, T) -> wte(idx) + wpe(0..T-1)                                  (B, T, C)
               -> n_layer x [x = x + attn(ln_1(x)); x = x + mlp(ln_2(x))]  (B, T, C)
               -> ln_f -> lm_head                                          (B, T, V) logits

Position t's logits predict token t+1 from tokens 0..t only: every position of a
sequence is a training example, and the causal mask is what keeps that honest.
The loss is not computed here; it lives in one place with the training code.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from namegen.errors import ConfigError, check_positive_int
from namegen.model import INITS, make_norm

NORMS = ("none", "layernorm")
ACTIVATIONS = ("gelu", "relu", "tanh")


@dataclass
class TransformerConfig:
    vocab_size: int = 27
    block_size: int = 16  # longest sequence; names.txt's longest word + 1 for the leading '.'
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 64
    norm: str = "layernorm"
    activation: str = "gelu"
    dropout: float = 0.0  # on what each block writes into the residual stream: this small net overfits names

    def __post_init__(self):
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"):
            check_positive_int(f"model.{name}", getattr(self, name))
        if self.norm == "batchnorm":
            raise ConfigError(
                "model.norm=batchnorm breaks the Transformer's causality: its statistics over (B, T) mix later "
                "positions of a sequence into earlier ones; use model.norm=layernorm or model.norm=none"
            )
        if self.norm not in NORMS:
            raise ConfigError(f"unknown norm {self.norm!r}; choose one of {', '.join(NORMS)}")
        if self.activation not in ACTIVATIONS:
            raise ConfigError(f"unknown activation {self.activation!r}; choose one of {', '.join(ACTIVATIONS)}")
        if isinstance(self.dropout, bool) or not isinstance(self.dropout, (int, float)) or not 0 <= self.dropout < 1:
            raise ConfigError(f"model.dropout={self.dropout!r} must be in [0, 1)")
        if self.n_embd % self.n_head:
            divisors = [d for d in range(1, self.n_embd + 1) if self.n_embd % d == 0]
            raise ConfigError(
                f"model.n_head={self.n_head} must divide model.n_embd={self.n_embd}; "
                f"choose model.n_head from {', '.join(map(str, divisors))}"
            )


def make_activation(kind: str) -> nn.Module:
    return {"gelu": nn.GELU, "relu": nn.ReLU, "tanh": nn.Tanh}[kind]()


def activation_gain(kind: str) -> float:
    """The kaiming gain for a Linear feeding `kind`.

    torch's calculate_gain has no entry for GELU; 1.47 solves E[gelu(g z)^2] = 1 for
    z ~ N(0, 1), the condition sqrt(2) meets exactly for ReLU: the activation's output
    keeps unit second moment, so the Linear after it needs no gain of its own.
    """
    return 1.47 if kind == "gelu" else nn.init.calculate_gain(kind)


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention in which position t attends to positions 0..t only.

    `scores` is an identity that the pre-softmax logits pass through, so a forward hook
    on it sees them: (B, n_head, T, T), before the mask, so every entry is finite (the
    entries above the diagonal are computed but then discarded).
    """

    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.n_head = cfg.n_head
        self.c_attn = nn.Linear(cfg.n_embd, 3 * cfg.n_embd)  # q, k, v for every head in one matmul
        self.c_proj = nn.Linear(cfg.n_embd, cfg.n_embd)  # writes back into the residual stream
        self.drop = nn.Dropout(cfg.dropout)
        self.scores = nn.Identity()
        causal = torch.tril(torch.ones(cfg.block_size, cfg.block_size, dtype=torch.bool))
        self.register_buffer("causal", causal, persistent=False)  # rebuilt from cfg, so kept out of checkpoints

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        hs = C // self.n_head
        q, k, v = self.c_attn(x).split(C, dim=2)  # 3 x (B, T, C)
        q = q.view(B, T, self.n_head, hs).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, self.n_head, hs).transpose(1, 2)
        v = v.view(B, T, self.n_head, hs).transpose(1, 2)
        # 1/sqrt(hs) keeps the logits at unit variance when q and k are, so softmax starts unsaturated
        att = self.scores(q @ k.transpose(-2, -1) / math.sqrt(hs))  # (B, nh, T, T)
        att = att.masked_fill(~self.causal[:T, :T], float("-inf"))
        att = F.softmax(att, dim=-1)
        y = att @ v  # (B, nh, T, hs)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # heads side by side again
        return self.drop(self.c_proj(y))


class FeedForward(nn.Module):
    """Position-wise MLP, 4x wide. `act` is a module so hooks can find it by attribute or type."""

    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.c_fc = nn.Linear(cfg.n_embd, 4 * cfg.n_embd)
        self.act = make_activation(cfg.activation)
        self.c_proj = nn.Linear(4 * cfg.n_embd, cfg.n_embd)  # writes back into the residual stream
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.c_proj(self.act(self.c_fc(x))))  # (B, T, C) -> (B, T, 4C) -> (B, T, C)


class Block(nn.Module):
    """Pre-norm: the residual stream itself is never normalized, so gradients reach the embeddings unscaled."""

    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.ln_1 = make_norm(cfg.norm, cfg.n_embd, bn_momentum=0.1)  # momentum unused: batchnorm is refused
        self.attn = CausalSelfAttention(cfg)
        self.ln_2 = make_norm(cfg.norm, cfg.n_embd, bn_momentum=0.1)
        self.mlp = FeedForward(cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))  # tokens exchange information
        x = x + self.mlp(self.ln_2(x))  # each token computes on what it gathered
        return x


class Transformer(nn.Module):
    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.cfg = cfg
        self.wte = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.wpe = nn.Embedding(cfg.block_size, cfg.n_embd)  # attention alone is blind to order
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = make_norm(cfg.norm, cfg.n_embd, bn_momentum=0.1)
        self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        B, T = idx.shape
        if T > self.cfg.block_size:
            raise ValueError(
                f"sequence of length {T} is longer than model.block_size={self.cfg.block_size}; "
                f"crop the context to its last {self.cfg.block_size} tokens"
            )
        pos = torch.arange(T, device=idx.device)
        x = self.wte(idx) + self.wpe(pos)  # (B, T, C) + (T, C) -> (B, T, C)
        for block in self.blocks:
            x = block(x)  # (B, T, C)
        return self.lm_head(self.ln_f(x))  # (B, T, V)


def _normal_(layer: nn.Linear | nn.Embedding, std: float) -> None:
    nn.init.normal_(layer.weight, std=std)
    if getattr(layer, "bias", None) is not None:
        nn.init.zeros_(layer.bias)


def _kaiming_(layer: nn.Linear, gain: float) -> None:
    _normal_(layer, gain / math.sqrt(layer.in_features))


@torch.no_grad()
def initialize_transformer(
    model: Transformer, scheme: str, gain: float | None = None, output_scale: float = 0.1
) -> Transformer:
    """Set the weights by `scheme`; LayerNorm gains 1 and biases 0 in every scheme.

    naive:   every embedding and weight ~ N(0, 1), biases 0. Each Linear multiplies
             the std by sqrt(fan_in): the attention logits and the output logits are
             huge, softmax saturates, the first loss is far above log(V).
    kaiming: each Linear ~ N(0, 1) * gain / sqrt(fan_in), biases 0; gain None takes the
             activation's for the Linear feeding it (mlp.c_fc) and 1 elsewhere.
             The two embeddings are N(0, 1/2), so their sum, the residual stream, starts
             at unit variance: the scale every kaiming Linear is built to preserve and
             the one the MLP's embedding has. (GPT-2's 0.02 would make the embeddings'
             direct path an order of magnitude weaker than what each block adds, and
             with norm=none would feed the first block near-zero inputs.)
             The residual projections (attn.c_proj, mlp.c_proj) are shrunk by
             1/sqrt(2 n_layer): 2 n_layer branches each add their variance to the stream,
             which would otherwise grow with depth (GPT-2 does the same).
             lm_head is shrunk by `output_scale` so the first logits are near zero and
             the first loss is about log(V).
    pytorch: leave PyTorch's defaults (embeddings N(0, 1), Linears uniform +-1/sqrt(fan_in)).
    """
    if scheme not in INITS:
        raise ConfigError(f"unknown init {scheme!r}; choose one of {', '.join(INITS)}")
    for module in model.modules():
        if isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
    if scheme == "pytorch":
        return model
    if scheme == "naive":
        for module in model.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                _normal_(module, 1.0)
        return model

    if gain is None:
        gain = activation_gain(model.cfg.activation)
    residual = 1.0 / math.sqrt(2 * model.cfg.n_layer)
    _normal_(model.wte, 1.0 / math.sqrt(2))
    _normal_(model.wpe, 1.0 / math.sqrt(2))
    for block in model.blocks:
        _kaiming_(block.attn.c_attn, 1.0)
        _kaiming_(block.attn.c_proj, residual)
        _kaiming_(block.mlp.c_fc, gain)
        _kaiming_(block.mlp.c_proj, residual)
    _kaiming_(model.lm_head, output_scale)
    return model
