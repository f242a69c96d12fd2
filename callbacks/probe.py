"""A probe measures one thing on the steps `Diagnostics` instruments; `Step` is what it sees of one such step.

`Diagnostics` owns the schedule, the hooks, the weight snapshot and the writing; a probe says
what it needs on a step (`active`, `watch`, `wants_snapshot`) and reads it (`before_update`,
`after_update`). Any probe runs alone (`Diagnostics(probes=[Gradients()])`) or next to others,
which then share one set of hooks and one copy of the weights per step. A probe of your own
subclasses `Probe` and is passed the same way.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
import torch.nn as nn
from lightning.pytorch.utilities import rank_zero_warn

from .base import Key, Numbering, Recorder, Want, grad_data_ratio, update_ratio
from .catalog import Catalog, check_selection, select_modules
from .kinds import SATURATION_THRESHOLD, FlatRule, check_threshold, finite_part, flat_rule
from .schedule import Due, Schedule
from .tags import HISTOGRAM_BINS


class Step:
    """One instrumented optimizer step, as the probes see it.

    `global_step` is the step's number, `due` what the schedule asks of it, `recorder` the hooks'
    records (`view(names)` gives a probe its own modules), `matrices` the (index, name, parameter) of
    every weight of 2 or more dimensions, `before` those weights before the update (when a probe
    asked for them), `scalars` what is written to every logger when the step ends, `loss` the training
    loss of its first forward pass.
    """

    def __init__(self, global_step: int, due: Due, probes: Sequence["Probe"], recorder: Recorder,
                 matrices: list[tuple[int, str, nn.Parameter]], writers: Callable[[str], list[Any]],
                 optimizers: Sequence[Any]) -> None:
        self.global_step, self.due, self.probes, self.recorder, self.matrices = global_step, due, probes, recorder, matrices
        self.before: dict[str, torch.Tensor] = {}
        self.scalars: dict[str, float] = {}
        self.updated = False
        self.writers = writers  # kind ("histogram", "image") -> the loggers' experiments that take it (SummaryWriter)
        self.optimizers = optimizers  # the Trainer's, for what the learning rate is at this step
        self.ratios: dict[str, float] | None = None
        self.updates: dict[str, float] | None = None
        self.loss: float | None = None

    def grad_data_ratios(self) -> dict[str, float]:
        """std(grad) / std(weight) of each weight matrix with a gradient; read before the update, computed once."""
        if self.ratios is None:
            self.ratios = {name: grad_data_ratio(p.grad, p) for _, name, p in self.matrices if p.grad is not None}
        return self.ratios

    def update_ratios(self) -> dict[str, float]:
        """log10 std(update) / std(weight) of each weight matrix snapshot before the update; computed once."""
        if self.updates is None:
            self.updates = {name: update_ratio(p.detach(), self.before[name])
                            for _, name, p in self.matrices if name in self.before}
        return self.updates


class Probe:
    """One kind of measurement, driven by `Diagnostics`. `key` names it (its tag family): unique in one Diagnostics,
    and its key in the callback's state."""

    key: str = ""

    def check(self, schedule: Schedule) -> None:
        """Refuse a schedule the probe cannot work with (a ValueError naming the setting), at construction."""

    def reset(self) -> None:
        """A fit starts (before a checkpoint restores the state): forget anything of a previous fit."""

    def setup(self, root: nn.Module, catalog: Catalog) -> None:
        """At fit start, once `configure_model` has built the model: find what to watch in `root` (the catalog
        holds what `Diagnostics` found in it)."""

    def active(self, due: Due) -> bool:
        """Whether the probe records anything on a step where `due` is due."""
        return due.scalars

    def watch(self, due: Due) -> list[tuple[str, nn.Module, Want]]:
        """The modules to hook on such a step, and what to keep of each."""
        return []

    extract = None  # a function (module, args, kwargs, output) -> the tensor to record, for outputs that are not one

    def wants_snapshot(self, due: Due) -> bool:
        """Whether it needs the weights as they were before the update (`Step.before`)."""
        return False

    def before_update(self, step: Step) -> None:
        """Gradients are final and the weights are still those the forward pass used."""

    def after_update(self, step: Step) -> None:
        """The optimizer has stepped."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore `state_dict()`'s output."""


class ModuleProbe(Probe):
    """A probe of chosen modules: the activations the catalog found, or `modules` (names) / `pattern` (a regex).

    Each probe numbers its series itself (`Numbering`): module-tree order, fixed at the first recorded step."""

    def __init__(self, modules: Sequence[str] | None = None, pattern: str | None = None,
                 saturation_threshold: float = SATURATION_THRESHOLD) -> None:
        check_selection(modules, pattern)
        self.modules = list(modules) if modules is not None else None
        self.pattern = pattern
        self.saturation_threshold = check_threshold(saturation_threshold)
        self.catalog: Catalog | None = None
        self.watched: list[tuple[str, nn.Module]] = []
        self.rule_of: dict[str, FlatRule | None] = {}  # each watched module's flat region, None for a non-activation
        self.numbering = Numbering([])

    def discovered(self, catalog: Catalog) -> list[str]:
        """What the probe watches by default: the activations."""
        return list(catalog.kinds)

    def setup(self, root: nn.Module, catalog: Catalog) -> None:
        self.catalog = catalog
        names = select_modules(catalog, self.discovered(catalog), self.modules, self.pattern)
        self.watched = [(name, catalog.modules[name]) for name in names]
        self.rule_of = {name: flat_rule(catalog.kinds.get(name), catalog.modules[name], self.saturation_threshold)
                        for name in names}
        self.numbering = Numbering(names)
        if not names:
            what = (f"no module of {type(root).__name__} matches pattern={self.pattern!r}"
                    if self.pattern is not None else self.nothing(root))
            rank_zero_warn(f"{type(self).__name__}: {what}")

    def nothing(self, root: nn.Module) -> str:
        return (f"{type(root).__name__} has no activation modules of a known kind; give modules=[...] or "
                "pattern=... to watch, or Diagnostics(activations={MyAct: 'gelu'})")

    def reads_input(self, name: str) -> bool:
        rule = self.rule_of[name]
        return rule is not None and rule.on == "input"

    def series(self, step: Step) -> list[tuple[int, str, Key]]:
        """(index, series name, record key) of every call of the watched modules recorded this step."""
        return self.numbering.number(step.recorder.view(self.rule_of).order)

    def unit_dim(self, name: str, t: torch.Tensor) -> int:
        return self.catalog.unit_dim(name, t.dim())


def histogram(writer: Any, tag: str, t: torch.Tensor, step: int) -> None:
    """A histogram of the finite values (TensorBoard refuses a non-finite range); none when there are none."""
    values, _ = finite_part(t.detach())
    if values.numel():
        writer.add_histogram(tag, values, global_step=step, bins=HISTOGRAM_BINS)
