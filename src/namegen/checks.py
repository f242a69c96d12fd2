"""`validate(cfg)`: every user mistake in a composed config, refused in one line before anything is built or written.

Imports torch but not Lightning, so `train.py` answers a mistake before the training stack loads.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from namegen.errors import ConfigError, check_positive_int
from namegen.nets import build_model

MAX_SEED = 2**32 - 1  # what seed_everything (numpy's seeding) accepts
BYTES_PER_PARAMETER = 16  # the weight, its gradient and two optimizer moments, float32


def memory_bytes() -> int:
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def build_or_refuse(node: DictConfig, key: str, *args: Any) -> Any:
    """Instantiate an optimizer or scheduler node on stand-ins, so torch's own argument checks speak now."""
    from hydra.utils import instantiate

    spec = OmegaConf.to_container(node, resolve=True)
    spec.pop("_partial_", None)
    try:
        return instantiate(spec, _partial_=True)(*args)
    except Exception as e:  # torch raises ValueError/TypeError for a bad argument, Hydra wraps them
        cause = e.__cause__ or e
        raise ConfigError(f"{key}: {str(cause).strip().splitlines()[0]}") from None


def validate(cfg: DictConfig) -> None:
    """Refuse out-of-range values with a one-line ConfigError naming the key, the value and the fix."""
    from namegen.words import check_data_path

    lr = cfg.optim.optimizer.get("lr")
    if lr is not None and not (isinstance(lr, (int, float)) and 0 < lr < math.inf):
        raise ConfigError(f"optim.optimizer.lr={lr!r} must be a finite number > 0; makemore uses optim.optimizer.lr=0.1")
    for key in ("trainer.max_steps", "trainer.val_check_interval", "trainer.log_every_n_steps"):
        check_positive_int(key, OmegaConf.select(cfg, key))
    if not (cfg.compile == "auto" or isinstance(cfg.compile, bool)):
        raise ConfigError(f"compile={cfg.compile!r}: choose auto (compile long runs), true or false")
    seed = cfg.seed
    if not (isinstance(seed, int) and not isinstance(seed, bool) and 0 <= seed <= MAX_SEED):
        raise ConfigError(f"seed={seed!r} must be an integer in 0 .. 2**32 - 1")
    if cfg.threads is not None:
        check_positive_int("threads", cfg.threads)
        cores = os.cpu_count() or 1
        if cfg.threads > cores:
            raise ConfigError(f"threads={cfg.threads} is more than this machine's {cores} cores; set threads<={cores}")
    init = cfg.init
    if not (isinstance(init.output_scale, (int, float)) and 0 < init.output_scale <= 10):
        raise ConfigError(f"init.output_scale={init.output_scale!r} must be in (0, 10] (kaiming shrinks the output "
                          "layer by it; 0.1 is the lesson's)")
    if init.gain is not None and not (isinstance(init.gain, (int, float)) and 0 < init.gain <= 100):
        raise ConfigError(f"init.gain={init.gain!r} must be in (0, 100], or null for the activation's gain")
    with torch.device("meta"):  # shapes only: a huge model is refused, not allocated
        spec = OmegaConf.to_container(cfg.model, resolve=True)
        # a whole-name model's block_size comes from the data (null here): any size shows the parameter count's scale
        block_size = spec.get("block_size")
        model = build_model({**spec, "block_size": 64 if block_size is None else block_size})
    params = sum(p.numel() for p in model.parameters())
    if params * BYTES_PER_PARAMETER > memory_bytes():
        sizes = ", ".join(f"model.{k}={v}" for k, v in spec.items() if isinstance(v, int) and not isinstance(v, bool))
        raise ConfigError(f"the model ({sizes}) would hold {params:,} parameters, more than this machine's "
                          f"{memory_bytes() / 2**30:.0f} GiB can train; make it smaller")
    from namegen.model import INITS

    if init.scheme not in INITS:
        raise ConfigError(f"unknown init.scheme {init.scheme!r}; choose one of {', '.join(INITS)}")
    stand_in = torch.zeros(1, requires_grad=True)
    optimizer = build_or_refuse(cfg.optim.optimizer, "optim.optimizer", [stand_in])
    if cfg.optim.get("scheduler") is not None:
        build_or_refuse(cfg.optim.scheduler, "optim.scheduler", optimizer)
    for key in ("batch_size", "max_word_len"):
        check_positive_int(f"data.{key}", cfg.data.get(key))
    if cfg.data.source == "file":
        check_data_path(cfg.data.path)
    monitors = [name for name, c in (cfg.get("callbacks") or {}).items()
                if c is not None and str(c.get("_target_", "")).endswith("LearningRateMonitor")]
    if monitors and not cfg.get("logger"):
        raise ConfigError(f"callbacks.{monitors[0]} (Lightning's LearningRateMonitor) needs a logger; keep one or "
                          f"add ~callbacks.{monitors[0]}")
    from namegen.diagnosis import Thresholds

    Thresholds.from_mapping(cfg.get("diagnosis"))
    if not isinstance(cfg.resume, bool) and not Path(str(cfg.resume)).is_dir():
        raise ConfigError(f"resume={cfg.resume!r}: no such run folder; give resume=true or an existing run folder")
