"""The one engine: run every rule of the table, decide harm, attach each finding's remedy."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from namegen.diagnosis.config import RunConfig
from namegen.diagnosis.remedies import Remedy, combined, remedy_for
from namegen.diagnosis.observe import Observation, Run, Seen
from namegen.diagnosis.rules import RULES
from namegen.diagnosis.thresholds import Thresholds
from namegen.events import Scalars


def json_value(v: Any) -> Any:
    return None if isinstance(v, float) and not math.isfinite(v) else v


@dataclass
class Finding(Seen):
    """One thing the rules saw. `why` says how it hurt the run (a finding) or why it did not (a note)."""

    why: str
    remedy: Remedy
    evidence: tuple[dict[str, Any], ...] = ()
    note: bool = False

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(layers=list(self.layers), steps=list(self.steps), remedy=self.remedy.to_dict(),
                 evidence=[{k: json_value(v) for k, v in e.items()} for e in self.evidence])
        return d


@dataclass(frozen=True)
class Diagnosis:
    findings: tuple[Finding, ...]  # what hurt the run: its health
    notes: tuple[Finding, ...]  # what the rules saw that did not hurt: shown apart, never in the health
    checked: tuple[str, ...]  # rules that ran
    missing: tuple[tuple[str, str], ...] = ()  # (rule, what it needs) of the rules that had nothing to read
    not_applicable: tuple[str, ...] = ()  # rules for what the model does not have (attention in an MLP)
    status: str | None = None  # result.json's status
    thresholds: Thresholds = field(default_factory=Thresholds)

    @property
    def coverage(self) -> str:
        """"" when every rule that applies ran, else "2 of 6 rules: no activation statistics, ..."."""
        if not self.missing:
            return ""
        needs = list(dict.fromkeys(reads for _, reads in self.missing))
        total = len(self.checked) + len(self.missing)
        return f"{len(self.checked)} of {total} rules: no {', '.join(needs)}"

    @property
    def health(self) -> str:
        """The sweep summary's health column: the findings' names, or "healthy"; with what was not checked when some
        rule had nothing to read; "unknown" when none had anything."""
        if not self.checked:
            return "unknown"
        names = ",".join(dict.fromkeys(f.name for f in self.findings)) or "healthy"
        return f"{names} ({self.coverage})" if self.coverage else names

    @property
    def healthy(self) -> bool:
        return bool(self.checked) and not self.findings and not self.missing

    @property
    def fix(self) -> list[str]:
        """Every finding's overrides, one per key, the likeliest cause first: what `namegen diagnose --fix` applies."""
        return combined([f.remedy.overrides for f in self.findings])

    def to_dict(self) -> dict[str, Any]:
        return {"health": self.health, "status": self.status, "findings": [f.to_dict() for f in self.findings],
                "notes": [f.to_dict() for f in self.notes], "fix": self.fix, "checked": list(self.checked),
                "not_checked": [{"rule": r, "needs": reads} for r, reads in self.missing],
                "not_applicable": list(self.not_applicable), "thresholds": asdict(self.thresholds)}

    def to_markdown(self, title: str | None = None, level: int = 1) -> str:
        from namegen.diagnosis.render import markdown

        return markdown(self, title, level)

    def to_card(self, title: str, val_loss: float | None = None) -> str:
        from namegen.diagnosis.render import card

        return card(self, title, val_loss)


def merged(observations: list[Observation]) -> Observation:
    first = observations[0]
    if len(observations) == 1:
        return first
    return replace(
        first,
        layers=tuple(dict.fromkeys(x for o in observations for x in o.layers)),
        steps=tuple(sorted({s for o in observations for s in o.steps})),
        measured="; ".join(o.measured for o in observations),
        healthy="; ".join(dict.fromkeys(o.healthy for o in observations)),
        evidence=tuple(e for o in observations for e in o.evidence),
        harm="; ".join(dict.fromkeys(o.harm for o in observations if o.harm)) or None,
        facts={**observations[-1].facts, **first.facts},
    )


def settle_harm(seen: list[Observation]) -> set[str]:
    """Harm spreads along `harm_with` until nothing changes (a fixed point): lr_too_high hurts with a divergence,
    and saturation hurts with lr_too_high, so a diverged run's saturation is a finding whatever the rules' order.
    Returns the names that hurt."""
    harmful = {o.name for o in seen if o.harm}
    changed = True
    while changed:
        changed = False
        for o in seen:
            if not o.harm and (companions := [n for n in o.harm_with if n in harmful]):
                o.harm = f"together with {', '.join(companions)}"
                harmful.add(o.name)
                changed = True
    return harmful


def diagnose(scalars: Scalars, result: Mapping[str, Any] | None = None, thresholds: Thresholds | None = None,
             activations: Mapping[str, str] | None = None, config: RunConfig | None = None) -> Diagnosis:
    """Apply the rule table to a run's scalars ({tag: [(step, value)]}), its result.json (missing keys = unknown) and
    its config (None: someone else's module; remedies are then sentences without overrides).

    `activations` maps module paths to activation class names, read from result.json's "activations" when not
    given; without it a layer's kind is guessed from its outputs. `thresholds` default to the config's
    `diagnosis:` overrides of `Thresholds`.
    """
    result = dict(result or {})
    if activations is None:
        activations = result.get("activations") if isinstance(result.get("activations"), Mapping) else {}
    if thresholds is None:
        thresholds = Thresholds.from_mapping(config.get("diagnosis") if config is not None else None)
    run = Run(scalars, result, thresholds, activations, config)
    checked, missing, not_applicable, seen = [], [], [], []
    for rule in RULES:
        if not rule.applies(run):
            not_applicable.append(rule.name)
        elif not rule.ready(run):
            missing.append((rule.name, rule.needs(run)))
        else:
            checked.append(rule.name)
            seen += rule.judge(run)
    harmful = settle_harm(seen)
    groups: dict[tuple[str, bool], list[Observation]] = {}
    for o in seen:
        groups.setdefault((o.name, o.harm is not None), []).append(o)
    found = [merged(g) for (name, hurt), g in groups.items() if hurt]
    context = {o.name: o for o in found}
    findings = tuple(finding(o, remedy_for(o, config, context)) for o in found)
    notes = tuple(finding(merged(g), Remedy((), "")) for (name, hurt), g in groups.items()
                  if not hurt and name not in harmful)
    status = result.get("status")
    return Diagnosis(findings, notes, tuple(checked), tuple(missing), tuple(not_applicable),
                     status if isinstance(status, str) else None, thresholds)


def finding(o: Observation, remedy: Remedy) -> Finding:
    return Finding(o.name, o.title, o.layers, o.steps, o.measured, o.healthy, o.harm or o.quiet, remedy, o.evidence,
                   note=o.harm is None)
