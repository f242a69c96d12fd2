"""The OmegaConf resolvers namegen's config uses; importing this module registers them."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

# the running sweep's folder and swept keys, handed to its jobs (maybe other processes) by the environment
SWEPT_KEYS_ENV = "NAMEGEN_SWEPT_KEYS"


def _key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def announce_sweep(sweep_dir: str | Path, keys: list[str]) -> None:
    """Tell the sweep's jobs which keys it sweeps (`swept_keys`)."""
    os.environ[SWEPT_KEYS_ENV] = json.dumps({"dir": str(Path(sweep_dir).resolve()), "keys": keys})


def swept_keys(run_dir: str | Path | None = None) -> list[str] | None:
    """The keys the running sweep sweeps, in command-line order; None outside a sweep.

    With `run_dir`, only if that run belongs to the sweep: a sweep that aborted in this process (its end never
    came to clear the record) says nothing about a later run elsewhere.
    """
    swept = os.environ.get(SWEPT_KEYS_ENV)
    if swept is None:
        return None
    sweep = json.loads(swept)
    if run_dir is not None and not Path(run_dir).resolve().is_relative_to(sweep["dir"]):
        return None
    return sweep["keys"]


def job_name(task_overrides: list[str], job_num: Any = 0) -> str:
    """The folder name of one sweep job: its swept `key=value` pairs joined by ','."""
    swept = swept_keys()  # resolved while the sweep launches this job
    keep = [o for o in task_overrides if swept is None or _key(o) in swept]
    name = ",".join(o.replace("/", "_") for o in keep)
    return name if name else f"job{job_num}"


def run_dir(resume: Any, default: str) -> str:
    """A single run's folder: the one being resumed (resume=<run folder>), else a new timestamped one."""
    return default if isinstance(resume, bool) else str(resume)


def step_at(fraction: float, max_steps: int) -> int:
    """The optimizer step at `fraction` of the run: where a step schedule decays (`optim.scheduler.milestones`)."""
    return int(float(fraction) * int(max_steps))


OmegaConf.register_new_resolver("namegen_job_name", job_name, replace=True)
OmegaConf.register_new_resolver("namegen_run_dir", run_dir, replace=True)
OmegaConf.register_new_resolver("namegen_step_at", step_at, replace=True)
