"""Each run's record, result.json: written only from what was measured, read by the summary, report and diagnosis."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from namegen.errors import UserError

RESULT_FILE = "result.json"
RECORD = Path(".hydra") / "config.yaml"  # the run's config, where Hydra would put it (namegen writes it once)
DATA_RECORD = RECORD.with_name("data.json")  # the corpus it was trained on: size and SHA-256
RESUMES = RECORD.with_name("resumes.jsonl")  # one line per resume: when, from which step, what it changed
EVENT_GLOB = "events.out.tfevents.*"  # a run folder's TensorBoard event files


def write_atomic(path: Path, text: str) -> None:
    """Write to a temporary file, then rename it into place: a kill mid-write leaves the previous file whole."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_result(run_dir: Path, result: dict[str, Any]) -> None:
    write_atomic(run_dir / RESULT_FILE, json.dumps(result, indent=2, default=str))


def record_failure(run_dir: Path, error: str) -> None:
    """A job that failed before finishing, for the sweep summary; never over a result already written."""
    if not (run_dir / RESULT_FILE).exists():
        write_result(run_dir, {"status": "failed", "error": error})


def what_run(path: Path) -> str | None:
    """What shows that `path` holds a run (one namegen trained or tried to train in): its config record, result,
    checkpoints or event files, any of which may have been lost; None for a folder that holds none of them."""
    if not path.is_dir():
        return None
    for what, there in ((f"{RECORD}", (path / RECORD).is_file()), (RESULT_FILE, (path / RESULT_FILE).is_file()),
                        ("checkpoints", (path / "checkpoints").is_dir()), ("event files", any(path.glob(EVENT_GLOB)))):
        if there:
            return what
    return None


def is_run(path: Path) -> bool:
    """The one rule for "this folder already holds a run"."""
    return what_run(path) is not None


def run_folders(path: Path) -> list[Path]:
    """The runs at `path`: the folder itself if it is a run, else the runs among its subfolders (a sweep)."""
    if is_run(path):
        return [path]
    return sorted(d for d in path.iterdir() if is_run(d)) if path.is_dir() else []


def require_runs(path: Path) -> list[Path]:
    """`run_folders(path)`, or a UserError saying what to give instead."""
    if not path.is_dir():
        what = f"{str(path)!r} is a file, not a folder" if path.exists() else f"no such folder: {str(path)!r}"
        raise UserError(f"{what}; give a run folder (outputs/runs/<time>) or a sweep folder (outputs/sweeps/<time>)")
    runs = run_folders(path)
    if not runs:
        raise UserError(f"{path} is neither a run folder nor a sweep folder of runs; give outputs/runs/<time> or "
                        "outputs/sweeps/<time>")
    return runs


def read_result(run: Path) -> dict[str, Any]:
    """A run folder's result.json; a run that left none counts as failed."""
    result_file = run / RESULT_FILE
    if not result_file.is_file():
        return {"status": "failed", "error": f"no {RESULT_FILE}: the job died before finishing"}
    try:
        result = json.loads(result_file.read_text())
    except (OSError, ValueError) as e:
        return {"status": "failed", "error": f"unreadable {RESULT_FILE} ({type(e).__name__})"}
    if not isinstance(result, dict):
        return {"status": "failed", "error": f"unreadable {RESULT_FILE} (a JSON {type(result).__name__}, not an object)"}
    return result
