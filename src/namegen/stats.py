"""A network's health at one batch, for the divergence report; the statistics themselves are `callbacks.base`'s."""

from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Any, Iterator

import torch

from namegen.callbacks.base import Recorder, activation_summary, flat_rules, rule_for, select_modules


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
def layer_stats(model: torch.nn.Module, idx: torch.Tensor) -> list[dict[str, Any]]:
    """Each activation's summary on a batch, in forward order, without touching BatchNorm's running statistics."""
    rules = flat_rules()
    recorder = Recorder(select_modules(model, lambda m: rule_for(m, rules) is not None), inputs=True, outputs=True)
    modules = dict(model.named_modules())
    try:
        with buffers_kept(model):
            model(idx)
    finally:
        recorder.remove()
    return [{"name": name, **activation_summary(recorder.inputs.get(name), recorder.outputs[name],
                                                rule_for(modules[name], rules))}
            for name in recorder.order]


def format_layer_stats(stats: list[dict[str, Any]]) -> str:
    return "\n".join(
        f"  {s['name']}: " + ", ".join(f"{k} {v:.4g}" if math.isfinite(v) else f"{k} {v}"
                                       for k, v in s.items() if k != "name")
        for s in stats
    )
