"""Hydra plumbing: run and sweep-job folder names, and the summary table when a sweep ends.

`python train.py -m init=naive,kaiming norm=none,batchnorm trainer.max_steps=500`
names its job folders `init=naive,norm=none`, ...: only the swept keys, in
command-line order, with any '/' in a value replaced so a folder never nests.
The swept keys are read from the sweep's own overrides when the multirun starts
and handed to the jobs (which may run in other processes) through the environment.
"""

from __future__ import annotations

import csv
import os
import sys
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from namegen.resolvers import SWEPT_KEYS_ENV, announce_sweep
from namegen.results import is_run, read_result, run_folders

# (column, result.json key, format); the summary's columns in order
COLUMNS = [
    ("status", "status", "{}"),
    ("health", "health", "{}"),
    ("init loss", "init_loss", "{:.3f}"),
    ("log(V)", "uniform_loss", "{:.3f}"),
    ("sat@0", "init_saturation", "{:.1%}"),
    ("sat@end", "final_saturation", "{:.1%}"),
    ("train loss", "train_loss", "{:.3f}"),
    ("val loss", "val_loss", "{:.4f}"),
    ("best val", "best_val_loss", "{:.4f}"),
    ("test loss", "test_loss", "{:.4f}"),
    ("steps/s", "steps_per_sec", "{:.0f}"),
    ("error", "error", "{}"),
]


def collect(sweep_dir: Path) -> list[tuple[str, dict[str, Any]]]:
    """(run name, result) for each job folder of a sweep."""
    return [(run.name, read_result(run)) for run in sorted(sweep_dir.iterdir()) if is_run(run)]


def _cell(fmt: str, value: Any) -> str:
    return "" if value is None else fmt.format(value)


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]) + "\n"


def summary_rows(runs: list[tuple[str, dict[str, Any]]]) -> tuple[list[str], list[list[str]]]:
    """The summary's header and one formatted row per run."""
    header = ["run"] + [c for c, _, _ in COLUMNS]
    return header, [[name] + [_cell(fmt, r.get(key)) for _, key, fmt in COLUMNS] for name, r in runs]


def write_summary(sweep_dir: Path, runs: list[tuple[str, dict[str, Any]]] | None = None) -> str:
    """Write summary.md and summary.csv into the sweep folder; return the Markdown table."""
    runs = collect(sweep_dir) if runs is None else runs
    with open(sweep_dir / "summary.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["run"] + [key for _, key, _ in COLUMNS])
        writer.writerows([name] + [r.get(key) for _, key, _ in COLUMNS] for name, r in runs)
    table = markdown_table(*summary_rows(runs))
    (sweep_dir / "summary.md").write_text(f"# Sweep summary: {sweep_dir}\n\n{table}")
    return table


class SweepCallback(Callback):
    """Hydra callback (`hydra.callbacks`): names sweep jobs by their swept keys; summarizes the sweep when it ends.

    The summary (`summary.md`, `summary.csv`, printed too) has a row per job: its status
    (ok, diverged, failed with the error's first line), initial loss next to log(V),
    mean saturation at step 0 and at the end, final and best losses, and steps per second.
    """

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        if config.get("resume") is True and not run_folders(sweep_dir):
            # every job would start over from step 0: the folder is new or mistyped, not a sweep to continue
            print(f"namegen: error: resume=true: {sweep_dir} holds no runs of a sweep; give the folder of the sweep "
                  "to continue in hydra.sweep.dir", file=sys.stderr)
            sys.exit(2)
        overrides = OverridesParser.create().parse_overrides(list(config.hydra.overrides.task))
        announce_sweep(sweep_dir, [o.key_or_group for o in overrides if o.is_sweep_override()])

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        os.environ.pop(SWEPT_KEYS_ENV, None)
        sweep_dir = Path(config.hydra.sweep.dir)
        runs = collect(sweep_dir)
        table = write_summary(sweep_dir, runs)
        print(f"\nSweep summary ({sweep_dir / 'summary.md'}):\n{table}", flush=True)
        failed = [name for name, r in runs if r.get("status") == "failed"]
        if failed:
            sys.exit(f"namegen: {len(failed)} job(s) failed: {', '.join(failed)}")
