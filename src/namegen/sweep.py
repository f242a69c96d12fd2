"""Hydra plumbing for sweeps: flat job folder names from the swept choices.

`python train.py -m init=naive,kaiming norm=none,batchnorm trainer.max_steps=500`
names its job folders `init=naive,norm=none`, ...: only the swept keys, in
command-line order, with any '/' in a value replaced so a folder never nests.
The swept keys are read from the sweep's own overrides when the multirun starts
and handed to the jobs (which may run in other processes) through the environment.
"""

from __future__ import annotations

import os
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

SWEPT_KEYS_ENV = "NAMEGEN_SWEPT_KEYS"


def _key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def job_name(task_overrides: list[str], job_num: Any = 0) -> str:
    """The folder name of one sweep job: its swept `key=value` pairs joined by ','."""
    swept = os.environ.get(SWEPT_KEYS_ENV)
    keep = [o for o in task_overrides if swept is None or _key(o) in swept.split(",")]
    name = ",".join(o.replace("/", "_") for o in keep)
    return name if name else f"job{job_num}"


OmegaConf.register_new_resolver("namegen_job_name", job_name, replace=True)


class SweepCallback(Callback):
    """Hydra callback (`hydra.callbacks`): records which keys a multirun sweeps, for the job names."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        overrides = OverridesParser.create().parse_overrides(list(config.hydra.overrides.task))
        os.environ[SWEPT_KEYS_ENV] = ",".join(o.key_or_group for o in overrides if o.is_sweep_override())

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        os.environ.pop(SWEPT_KEYS_ENV, None)
