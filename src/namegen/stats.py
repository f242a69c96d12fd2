"""A network's health at one batch, for the divergence report; the statistics themselves are `callbacks.base`'s."""

from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Any, Iterator

import torch

from namegen.callbacks.base import Numbering, Recorder, Want, activation_summary
from namegen.callbacks.catalog import Catalog
from namegen.callbacks.kinds import flat_rule


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
    """Each activation's summary on a batch (each call of a module its own, named as the diagnostics' tags name
    it), in module-tree order, without touching BatchNorm's running statistics."""
    catalog = Catalog.of(model)
    recorder = Recorder()
    for name in catalog.kinds:
        recorder.attach([(name, catalog.modules[name])], Want(inputs=True, outputs=True), catalog.extracts.get(name))
    try:
        with buffers_kept(model):
            model(idx)
    finally:
        recorder.remove()
    return [{"name": series, **activation_summary(recorder.inputs.get(key), recorder.outputs[key],
                                                  flat_rule(catalog.kinds[key[0]], catalog.modules[key[0]]),
                                                  catalog.unit_dim(key[0], recorder.outputs[key].dim()))}
            for _, series, key in Numbering(list(catalog.kinds)).number(recorder.order) if key in recorder.outputs]


def format_layer_stats(stats: list[dict[str, Any]]) -> str:
    return "\n".join(
        f"  {s['name']}: " + ", ".join(f"{k} {v:.4g}" if math.isfinite(v) else f"{k} {v}"
                                       for k, v in s.items() if k != "name")
        for s in stats
    )
