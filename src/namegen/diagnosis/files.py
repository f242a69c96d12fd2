"""Reading a run folder's diagnosis inputs (event files, result.json, its config record) and writing its output."""

from __future__ import annotations

import json
from pathlib import Path

from namegen.diagnosis.compare import Sweep, why
from namegen.diagnosis.config import RunConfig
from namegen.diagnosis.engine import Diagnosis, diagnose
from namegen.diagnosis.thresholds import Thresholds
from namegen.events import read_scalars
from namegen.results import is_run, read_result, require_runs, run_folders, write_atomic

MARKDOWN_FILE = "diagnosis.md"
JSON_FILE = "diagnosis.json"


def read_run(run_dir: Path) -> Sweep:
    """A run folder's diagnosis inputs: its recorded scalars (any logger's files: TensorBoard's event files,
    CSVLogger's metrics.csv), its result.json and its config record."""
    scalars = read_scalars(run_dir)
    result = read_result(run_dir)
    return Sweep(run_dir.name, result, scalars, RunConfig.of_run(run_dir), str(result.get("health", "")))


def diagnose_run(run_dir: str | Path, thresholds: Thresholds | None = None) -> Diagnosis:
    """The diagnosis of one run folder: its recorded scalars, its result.json and its config record (the
    thresholds it was configured with, and what the remedies are computed from)."""
    run = read_run(Path(run_dir))
    return diagnose(run.scalars, run.result, thresholds, config=run.config)


def sweep_why(sweep_dir: str | Path) -> dict[str, str]:
    """{run name: why it is behind} for the runs of a sweep folder clearly behind its best (diagnosis.compare)."""
    runs = [read_run(p) for p in run_folders(Path(sweep_dir))]
    for run in runs:
        if not run.health:  # a run that ended before its diagnosis: diagnosed here
            run.health = diagnose(run.scalars, run.result, config=run.config).health
    return why(runs)


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
    runs = [read_run(p) for p in require_runs(path)]
    diagnoses = [(run, diagnose(run.scalars, run.result, thresholds, config=run.config)) for run in runs]
    if is_run(path):
        return diagnoses[0][1].to_markdown(path.name)
    for run, d in diagnoses:
        run.health = d.health
    width = max(len(run.name) for run in runs)
    parts = [f"# Diagnosis: {path.name}", ""] + [f"- {r.name.ljust(width)}  {d.health}" for r, d in diagnoses] + [""]
    behind = why(runs)
    parts += ["## Why runs are behind", ""] + [f"- {line}" for line in behind.values()] + [""] if behind else []
    return "\n".join(parts + [d.to_markdown(r.name, level=2) for r, d in diagnoses])
