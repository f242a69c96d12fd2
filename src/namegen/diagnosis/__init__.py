"""Every run ends with a diagnosis: what went wrong, where, the evidence, whether it hurt, and a fix computed from
the run's own config.

    thresholds.py  each threshold, defined once, and the activation kinds they depend on
    observe.py     a run as the rules read it: its layers, its lr schedule's phases, its step-0 loss
    judges.py      the judges of the init, the activations, the gradients, the attention, a divergence
    lr.py          the learning rate's judges, and the evidence its remedies are sized from
    rules.py       the rule table: what each rule reads, when it applies, which judge it runs
    remedies.py    each finding's fix from the run's config: overrides plus a sentence
    engine.py      the one engine: runs the table, settles harm, attaches remedies
    compare.py     why a sweep's run is behind its best
    render.py      Markdown and TensorBoard's Text-tab card
    files.py       a run folder's inputs and diagnosis files
    repair.py      `namegen diagnose RUN --fix [--run]`

Nothing is imported until a name is used (PEP 562): `namegen.checks` reads `diagnosis.thresholds` while the
diagnosis validates its remedies through `namegen.checks`, and neither drags the other in whole.
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "Diagnosis": "engine", "Finding": "engine", "diagnose": "engine",
    "diagnose_path": "files", "diagnose_run": "files", "report_text": "files", "write_diagnosis": "files",
    "sweep_why": "files", "lr_phases": "observe", "RULE_NAMES": "rules", "Thresholds": "thresholds",
}
__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
