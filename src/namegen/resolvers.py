"""The OmegaConf resolvers namegen's config uses; importing this module registers them."""

from __future__ import annotations

import os
from typing import Any

from omegaconf import OmegaConf

SWEPT_KEYS_ENV = "NAMEGEN_SWEPT_KEYS"  # the sweep's swept keys, handed to its jobs (maybe other processes)


def _key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def swept_keys() -> list[str] | None:
    """The keys the running sweep sweeps, in command-line order; None outside a sweep."""
    swept = os.environ.get(SWEPT_KEYS_ENV)
    return None if swept is None else [k for k in swept.split(",") if k]


def job_name(task_overrides: list[str], job_num: Any = 0) -> str:
    """The folder name of one sweep job: its swept `key=value` pairs joined by ','."""
    swept = swept_keys()
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
