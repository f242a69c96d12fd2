"""The statistics of a network's health, defined once for the diagnostics callbacks and the divergence report."""

from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Iterator

import torch

from namegen.model import MLP

SATURATION_THRESHOLD = 0.97  # |tanh| above it: tanh' = 1 - t^2 < 0.06, almost no gradient flows back


def flat_mask(t: torch.Tensor, activation: str, threshold: float = SATURATION_THRESHOLD) -> torch.Tensor:
    """Where the activation sits in its flat region, so almost no gradient flows back through it.

    tanh: |t| > threshold (tanh' = 1 - t^2 < 1 - threshold^2); relu: t <= 0 (relu' = 0).
    """
    return t <= 0 if activation == "relu" else t.abs() > threshold


def activation_summary(t: torch.Tensor, activation: str, threshold: float = SATURATION_THRESHOLD) -> dict[str, float]:
    """mean, std, saturation (fraction of flat entries) and dead (fraction of units flat for every example) of a (B, H) output."""
    flat = flat_mask(t, activation, threshold)
    return {
        "mean": t.mean().item(),
        "std": t.std().item(),
        "saturation": flat.float().mean().item(),
        "dead": flat.all(dim=0).float().mean().item(),
    }


@contextmanager
def buffers_kept(model: torch.nn.Module) -> Iterator[None]:
    """Restore every buffer (BatchNorm's running statistics) on exit: a measuring forward pass leaves no trace."""
    saved = {name: b.clone() for name, b in model.named_buffers()}
    try:
        yield
    finally:
        with torch.no_grad():
            for name, b in model.named_buffers():
                b.copy_(saved[name])


@torch.no_grad()
def layer_stats(model: MLP, idx: torch.Tensor) -> list[dict[str, float]]:
    """Each hidden layer's activation summary and weight scale on a batch, without touching BatchNorm's running stats."""
    outputs: dict[int, torch.Tensor] = {}
    handles = [
        block.act.register_forward_hook(lambda m, a, out, i=i: outputs.__setitem__(i, out))
        for i, block in enumerate(model.hidden)
    ]
    try:
        with buffers_kept(model):
            model(idx)
    finally:
        for h in handles:
            h.remove()
    return [
        {**activation_summary(outputs[i], model.cfg.activation), "weight_absmax": block.linear.weight.abs().max().item()}
        for i, block in enumerate(model.hidden)
    ]


def format_layer_stats(stats: list[dict[str, float]]) -> str:
    return "\n".join(
        f"  layer {i}: " + ", ".join(f"{k} {v:.4g}" if math.isfinite(v) else f"{k} {v}" for k, v in s.items())
        for i, s in enumerate(stats)
    )
