"""Each run's record, result.json: written only from what was measured, read by the summary, report and diagnosis."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

RESULT_FILE = "result.json"


def write_result(run_dir: Path, result: dict[str, Any]) -> None:
    """Atomically: a kill mid-write leaves the previous record whole."""
    tmp = run_dir / f".{RESULT_FILE}.tmp"
    tmp.write_text(json.dumps(result, indent=2, default=str))
    os.replace(tmp, run_dir / RESULT_FILE)


def read_result(run: Path) -> dict[str, Any]:
    """A run folder's result.json; a run that left none counts as failed."""
    result_file = run / RESULT_FILE
    if not result_file.is_file():
        return {"status": "failed", "error": f"no {RESULT_FILE}: the job died before finishing"}
    try:
        return json.loads(result_file.read_text())
    except (OSError, ValueError) as e:
        return {"status": "failed", "error": f"unreadable {RESULT_FILE} ({type(e).__name__})"}
