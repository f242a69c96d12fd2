"""`train(cfg)`: one training run from a composed Hydra config. `train.py` wraps it in `@hydra.main`."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from namegen.checkpoint import CHECKPOINT_DIR, LAST, read_checkpoint
from namegen.model import MLPConfig
from namegen.module import NameGen

log = logging.getLogger(__name__)


def build(cfg: DictConfig) -> tuple[L.LightningDataModule, NameGen, L.Trainer]:
    """The datamodule, the LightningModule and the Trainer a config describes."""
    datamodule = instantiate(cfg.data).prepare()
    model_cfg = MLPConfig(vocab_size=len(datamodule.vocab), **OmegaConf.to_container(cfg.model, resolve=True))
    module = NameGen(
        model_cfg,
        datamodule.vocab.to_list(),
        optimizer=instantiate(cfg.optim.optimizer),
        init=cfg.init.scheme,
        gain=cfg.init.gain,
        output_scale=cfg.init.output_scale,
        decay_at=cfg.optim.decay_at,
        decay_factor=cfg.optim.decay_factor,
        log_every_n_steps=cfg.log_every_n_steps,
    )
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c is not None]
    logger = instantiate(cfg.logger) if cfg.get("logger") is not None else False
    trainer = instantiate(
        cfg.trainer, callbacks=callbacks, logger=logger, default_root_dir=cfg.run_dir, log_every_n_steps=cfg.log_every_n_steps
    )
    return datamodule, module, trainer


def train(cfg: DictConfig) -> dict[str, Any]:
    """Train, validate and test one run; returns its final metrics."""
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    datamodule, module, trainer = build(cfg)

    ckpt_path = None
    if cfg.resume:
        last = run_dir / CHECKPOINT_DIR / LAST
        if last.is_file():
            read_checkpoint(last)  # refuses anything but a namegen checkpoint, weights-only
            ckpt_path = str(last)
            log.info("resuming from %s", last)
        else:
            log.info("resume=true but %s does not exist yet: starting from step 0", last)

    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
    test = trainer.test(module, datamodule=datamodule, ckpt_path=best or None, weights_only=True, verbose=False)
    metrics.update(test[0] if test else {})
    metrics["init/loss"] = module.init_loss
    return metrics
