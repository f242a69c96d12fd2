"""Hydra plumbing: run and sweep-job folder names, and the summary table when a sweep ends.

`python train.py -m init=naive,kaiming norm=none,batchnorm trainer.max_steps=500`
names its job folders `init=naive,norm=none`, ...: only the swept keys, in
command-line order, with any '/' in a value replaced so a folder never nests.
The swept keys are read from the sweep's own overrides when the multirun starts
and handed to the jobs (which may run in other processes) through the environment.
"""

from __future__ import annotations

import copy
import csv
import itertools
import os
import sys
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, open_dict, read_write
from omegaconf.errors import OmegaConfBaseException

from namegen.board import how_to_open
from namegen.errors import UserError, refuse, shown
from namegen.resolvers import SWEPT_KEYS_ENV, announce_sweep
from namegen.results import is_run, read_result, run_folders, write_atomic

MULTIRUN_RECORD = "multirun.yaml"  # the sweep's config, as Hydra's sweeper writes it

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
    from namegen.diagnosis.files import sweep_why

    table = markdown_table(*summary_rows(runs))
    behind = sweep_why(sweep_dir)  # why each run clearly behind the best is behind
    table += "".join(f"\n- {line}" for line in behind.values()) + "\n" * bool(behind)
    (sweep_dir / "summary.md").write_text(f"# Sweep summary: {sweep_dir}\n\n{table}")
    return table


def task_config(config: DictConfig, run_dir: str) -> DictConfig:
    """The job's config (no `hydra` node) as train.py will see it, writing into `run_dir`."""
    cfg = copy.deepcopy(config)
    with read_write(cfg), open_dict(cfg):
        del cfg["hydra"]
        cfg.run_dir = run_dir
    return cfg


def job_overrides(task: list[str]) -> list[list[str]] | None:
    """Each job's overrides, as Hydra's basic sweeper lays out the grid (the cartesian product of the sweeps,
    the last key varying fastest); None when a sweep cannot be listed in advance (an interval, for Optuna)."""
    lists = []
    for o in OverridesParser.create().parse_overrides(task):
        if not o.is_sweep_override():
            lists.append([o.input_line])
            continue
        try:
            lists.append([f"{o.get_key_element()}={v}" for v in o.sweep_string_iterator()])
        except Exception:  # Hydra raises for sweeps that only a sweeper plugin can draw from
            return None
    return [list(job) for job in itertools.product(*lists)]


def subdir(config: DictConfig, job: list[str], num: int) -> str:
    """A job's folder name in the sweep, `hydra.sweep.subdir` resolved as the launcher will for that job."""
    sweep = copy.deepcopy(config)
    with read_write(sweep.hydra), open_dict(sweep.hydra):
        sweep.hydra.overrides.task = job
        sweep.hydra.job.num = num
    return str(sweep.hydra.sweep.subdir)


class SweepCallback(Callback):
    """Hydra callback (`hydra.callbacks`): the one check before a run or a sweep writes anything, job folder names,
    and the sweep's summary when it ends.

    Before a run, its config and folder are checked (`namegen.checks.validate`) before Hydra makes the folder.
    Before a sweep launches, the sweep folder is checked and every job's config composed and checked: a mistake
    is one line and nothing is written. The summary (`summary.md`, `summary.csv`, printed too) has a row per job:
    its status (ok, diverged, failed with the error's first line), initial loss next to log(V), mean saturation
    at step 0 and at the end, final and best losses, and steps per second.
    """

    def __init__(self) -> None:
        self.record: tuple[Path, str] | None = None  # a resumed sweep's multirun.yaml, as it was

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        from namegen.checks import unresolvable, validate

        fixed_dir = any(o.startswith("hydra.run.dir=") for o in config.hydra.overrides.hydra)
        try:
            cfg = task_config(config, str(config.hydra.run.dir))
            if cfg.resume is True:
                if not fixed_dir:  # a single run's folder is new each time: say which to continue
                    raise UserError("resume=true needs the run's folder in a single run; use "
                                    "resume=outputs/runs/<time>")
                cfg.resume = cfg.run_dir
            validate(cfg, "hydra.run.dir" if fixed_dir else "run_dir")
        except OmegaConfBaseException as e:  # hydra.run.dir interpolates `resume`
            refuse(str(unresolvable(config, e)))
        except UserError as e:
            refuse(str(e))

    def on_multirun_start(self, config: DictConfig, config_name: str | None = None, **kwargs: Any) -> None:
        overrides = OverridesParser.create().parse_overrides(list(config.hydra.overrides.task))
        # first: the jobs' folder names (namegen_job_name) are made of the swept keys
        announce_sweep(Path(config.hydra.sweep.dir), [o.key_or_group for o in overrides if o.is_sweep_override()])
        try:
            self.check_sweep(config, config_name)
        except UserError as e:
            refuse(str(e))

    def check_sweep(self, config: DictConfig, config_name: str | None) -> None:
        """The sweep folder, then every job's config, before any job is launched or anything written."""
        from hydra import compose

        from namegen.checks import validate
        from namegen.paths import writable_folder

        sweep_dir = Path(config.hydra.sweep.dir)
        writable_folder(sweep_dir, "hydra.sweep.dir")
        resume, runs = config.get("resume"), run_folders(sweep_dir)
        if resume is True and not runs:
            # every job would start over from step 0: the folder is new or mistyped, not a sweep to continue
            raise UserError(f"resume=true: {sweep_dir} holds no runs of a sweep; give the folder of the sweep to "
                            "continue in hydra.sweep.dir")
        if resume is False and runs:
            raise UserError(f"{sweep_dir} already holds a sweep's runs ({len(runs)}, such as {runs[0].name}); "
                            "continue it with resume=true, or give a new hydra.sweep.dir: a finished run is never "
                            "written over")
        if not isinstance(resume, bool):
            raise UserError(f"resume={resume!r}: a sweep continues with resume=true and the same hydra.sweep.dir")
        if resume and (sweep_dir / MULTIRUN_RECORD).is_file():
            self.record = (sweep_dir / MULTIRUN_RECORD, (sweep_dir / MULTIRUN_RECORD).read_text())
        jobs = job_overrides(list(config.hydra.overrides.task))
        refused: list[tuple[str, str]] = []  # (job folder, message)
        for i, job in enumerate(jobs or []):
            name = subdir(config, job, i)
            try:
                cfg = compose(config_name, job)
            except HydraException:  # an unknown option or key: Hydra's own message, when it launches the job
                continue
            cfg.run_dir = str(sweep_dir / name)  # set, not overridden: a job name holds '=', which Hydra would parse
            try:
                validate(cfg, "hydra.sweep.subdir")
            except UserError as e:
                refused.append((name, str(e)))
        if refused:
            first, message = refused[0]
            if len({m for _, m in refused}) == 1 and len(refused) == len(jobs):
                raise UserError(message)  # every job has the same mistake: said once
            raise UserError(f"job {shown(first)}: {message} ({len(refused)} of {len(jobs)} jobs refused; nothing "
                            "launched)")

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        os.environ.pop(SWEPT_KEYS_ENV, None)
        if self.record is not None:  # Hydra's sweeper rewrote it with resume=true: the record stays as it was
            write_atomic(*self.record)
        sweep_dir = Path(config.hydra.sweep.dir)
        runs = collect(sweep_dir)
        table = write_summary(sweep_dir, runs)
        print(f"\nSweep summary ({sweep_dir / 'summary.md'}):\n{table}", flush=True)
        if config.get("logger") is not None and "tensorboard" in config.logger:
            print(how_to_open(sweep_dir), flush=True)
        failed = [name for name, r in runs if r.get("status") == "failed"]
        if failed:
            sys.exit(f"namegen: {len(failed)} job(s) failed: {', '.join(failed)}")
