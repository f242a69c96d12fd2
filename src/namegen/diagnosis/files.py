"""Reading a run folder's diagnosis inputs (event files, result.json, its config record) and writing its output."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from namegen.diagnosis.config import RunConfig
from namegen.diagnosis.engine import Diagnosis, diagnose
from namegen.diagnosis.thresholds import Thresholds
from namegen.events import read_scalars
from namegen.results import RESULT_FILE, is_run, require_runs, write_atomic

MARKDOWN_FILE = "diagnosis.md"
JSON_FILE = "diagnosis.json"


def read_result(run_dir: Path) -> dict[str, Any]:
    try:
        result = json.loads((run_dir / RESULT_FILE).read_text())
    except (OSError, ValueError):  # absent or unreadable: every key unknown
        return {}
    return result if isinstance(result, dict) else {}


def diagnose_run(run_dir: str | Path, thresholds: Thresholds | None = None) -> Diagnosis:
    """The diagnosis of one run folder: its recorded scalars, its result.json and its config record (the
    thresholds it was configured with, and what the remedies are computed from)."""
    run_dir = Path(run_dir)
    scalars = read_scalars(run_dir)  # any logger's files: TensorBoard's event files, CSVLogger's metrics.csv
    return diagnose(scalars, read_result(run_dir), thresholds, config=RunConfig.of_run(run_dir))


def diagnose_path(path: str | Path, thresholds: Thresholds | None = None) -> list[tuple[Path, Diagnosis]]:
    """(run folder, diagnosis) for a run folder, or for each run folder of a sweep folder, by name."""
    return [(p, diagnose_run(p, thresholds)) for p in require_runs(Path(path))]


def write_diagnosis(run_dir: str | Path, diagnosis: Diagnosis, title: str | None = None) -> None:
    """diagnosis.md and diagnosis.json in the run folder, each written atomically (a temp file, then a rename)."""
    run_dir = Path(run_dir)
    write_atomic(run_dir / MARKDOWN_FILE, diagnosis.to_markdown(title or run_dir.name))
    write_atomic(run_dir / JSON_FILE, json.dumps(diagnosis.to_dict(), indent=2, allow_nan=False) + "\n")


def report_text(path: str | Path, thresholds: Thresholds | None = None) -> str:
    """What `namegen diagnose PATH` prints: a run's diagnosis, or a sweep's health lines then each run's."""
    path = Path(path)
    diagnoses = diagnose_path(path, thresholds)
    if is_run(path):
        return diagnoses[0][1].to_markdown(path.name)
    width = max(len(p.name) for p, _ in diagnoses)
    parts = [f"# Diagnosis: {path.name}", ""] + [f"- {p.name.ljust(width)}  {d.health}" for p, d in diagnoses] + [""]
    return "\n".join(parts + [d.to_markdown(p.name, level=2) for p, d in diagnoses])
