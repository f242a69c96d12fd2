"""Every run ends with a diagnosis: what went wrong, where, the evidence, whether it hurt, and a fix computed from
the run's own config.

    thresholds.py  each threshold, defined once, and the activation kinds they depend on
    rules.py       the rule table: what each rule reads, when it applies, what it measures
    remedies.py    each finding's fix from the run's config: overrides plus a sentence
    engine.py      the one engine: runs the table, decides harm, attaches remedies
    render.py      Markdown and TensorBoard's Text-tab card
    files.py       a run folder's inputs and diagnosis files
    repair.py      `namegen diagnose RUN --fix [--run]`
"""

from namegen.diagnosis.engine import Diagnosis, Finding, diagnose
from namegen.diagnosis.files import diagnose_path, diagnose_run, report_text, write_diagnosis
from namegen.diagnosis.observe import lr_phases
from namegen.diagnosis.rules import RULE_NAMES
from namegen.diagnosis.thresholds import Thresholds

__all__ = ["Diagnosis", "Finding", "RULE_NAMES", "Thresholds", "diagnose", "diagnose_path", "diagnose_run",
           "lr_phases", "report_text", "write_diagnosis"]
