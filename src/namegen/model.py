"""makemore's deep character MLP, with the initialization and normalization as choices.

    idx (B, T) -> Embedding -> flatten (B, T*n_embd)
               -> depth x [Linear(n_hidden) -> norm -> act]        (B, n_hidden)
               -> Linear(vocab) -> norm                            (B, V) logits

A Linear feeding a norm has no bias: the norm's own shift makes it redundant.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.distributed.nn as dist_nn
import torch.nn as nn
import torch.nn.functional as F

from namegen.errors import ConfigError, check_positive_int

NORMS = ("none", "batchnorm", "layernorm")
ACTIVATIONS = ("tanh", "relu")
INITS = ("naive", "kaiming", "pytorch")


@dataclass
class MLPConfig:
    vocab_size: int = 27
    block_size: int = 3
    n_embd: int = 10
    n_hidden: int = 100
    depth: int = 5
    norm: str = "batchnorm"
    activation: str = "tanh"
    bn_momentum: float = 0.1

    def __post_init__(self):
        for name in ("vocab_size", "block_size", "n_embd", "n_hidden", "depth"):
            check_positive_int(f"model.{name}", getattr(self, name))
        if self.norm not in NORMS:
            raise ConfigError(f"unknown norm {self.norm!r}; choose one of {', '.join(NORMS)}")
        if self.activation not in ACTIVATIONS:
            raise ConfigError(f"unknown activation {self.activation!r}; choose one of {', '.join(ACTIVATIONS)}")
        if not 0.0 <= self.bn_momentum <= 1.0:
            raise ConfigError(f"model.bn_momentum={self.bn_momentum!r} must be in [0, 1]")


class BatchNorm1d(nn.BatchNorm1d):
    """BatchNorm1d whose batch statistics span every process of a data-parallel run.

    torch's SyncBatchNorm is GPU-only; this one all-reduces the per-feature sums
    (differentiably) over any backend, gloo on CPU included. In a single process it
    is exactly nn.BatchNorm1d.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        C = x.shape[1]
        count = torch.full((1,), x.shape[0], dtype=x.dtype, device=x.device)
        sums = dist_nn.all_reduce(torch.cat([x.sum(0), (x * x).sum(0), count]))  # (2C+1,) summed over processes
        n = sums[-1]
        mean = sums[:C] / n
        var = sums[C : 2 * C] / n - mean * mean  # biased, as BatchNorm normalizes
        with torch.no_grad():
            self.num_batches_tracked += 1
            m = self.momentum
            self.running_mean.lerp_(mean, m)
            self.running_var.lerp_(var * n / (n - 1), m)  # unbiased, as BatchNorm tracks
        return (x - mean) / torch.sqrt(var + self.eps) * self.weight + self.bias


def make_norm(kind: str, dim: int, bn_momentum: float) -> nn.Module:
    if kind == "batchnorm":
        return BatchNorm1d(dim, momentum=bn_momentum)
    if kind == "layernorm":
        return nn.LayerNorm(dim)
    return nn.Identity()


class Block(nn.Module):
    """One hidden layer: Linear -> norm -> activation. `act`'s output is what diagnostics watch."""

    def __init__(self, fan_in: int, fan_out: int, cfg: MLPConfig):
        super().__init__()
        self.linear = nn.Linear(fan_in, fan_out, bias=cfg.norm == "none")
        self.norm = make_norm(cfg.norm, fan_out, cfg.bn_momentum)
        self.act = nn.Tanh() if cfg.activation == "tanh" else nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.norm(self.linear(x)))


class MLP(nn.Module):
    def __init__(self, cfg: MLPConfig):
        super().__init__()
        self.cfg = cfg
        self.wte = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        widths = [cfg.block_size * cfg.n_embd] + [cfg.n_hidden] * cfg.depth
        self.hidden = nn.ModuleList(Block(i, o, cfg) for i, o in zip(widths[:-1], widths[1:]))
        self.head = nn.Linear(cfg.n_hidden, cfg.vocab_size, bias=cfg.norm == "none")
        self.head_norm = make_norm(cfg.norm, cfg.vocab_size, cfg.bn_momentum)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        """Logits of the character after `idx`'s last; a context shorter than block_size is padded with '.' (id 0)."""
        if idx.size(1) < self.cfg.block_size:  # the start of a name: '.' before it, as in training
            idx = F.pad(idx, (self.cfg.block_size - idx.size(1), 0))
        x = self.wte(idx[:, -self.cfg.block_size :]).flatten(1)  # (B, T) -> (B, T, n_embd) -> (B, T*n_embd)
        for block in self.hidden:
            x = block(x)  # (B, n_hidden)
        return self.head_norm(self.head(x))  # (B, V)


@torch.no_grad()
def initialize(model: MLP, scheme: str, gain: float | None = None, output_scale: float = 0.1) -> MLP:
    """Set the weights by `scheme`.

    naive:   embedding and every weight ~ N(0, 1), biases 0. Pre-activations have
             std ~ sqrt(fan_in): the tanh saturates and the logits are huge.
    kaiming: weights ~ N(0, 1) * gain / sqrt(fan_in), biases 0; gain None takes the
             activation's (5/3 offsets tanh's squashing, sqrt(2) relu's halving); the output layer gets gain 1 and is shrunk by
             `output_scale` so the first logits are near zero (with a norm on the
             logits, its gain is shrunk instead, since the norm would undo it).
    pytorch: leave PyTorch's default init (uniform +-1/sqrt(fan_in)), for reference.
    """
    if scheme not in INITS:
        raise ConfigError(f"unknown init {scheme!r}; choose one of {', '.join(INITS)}")
    if scheme == "pytorch":
        return model
    if gain is None:
        gain = nn.init.calculate_gain(model.cfg.activation)
    nn.init.normal_(model.wte.weight)
    linears = [b.linear for b in model.hidden] + [model.head]
    for layer in linears:
        fan_in = layer.weight.shape[1]
        nn.init.normal_(layer.weight)
        if scheme == "kaiming":
            layer.weight *= (gain if layer is not model.head else 1.0) / math.sqrt(fan_in)
        if layer.bias is not None:
            nn.init.zeros_(layer.bias)
    if scheme == "kaiming":
        if isinstance(model.head_norm, nn.Identity):
            model.head.weight *= output_scale
        else:
            model.head_norm.weight *= output_scale
    return model
