"""`train(cfg)`: one training run from a composed Hydra config. `train.py` wraps it in `@hydra.main`."""

from __future__ import annotations

import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from lightning.pytorch.loggers import TensorBoardLogger
from omegaconf import DictConfig, OmegaConf

import namegen.resolvers  # noqa: F401  registers the resolvers the config uses
from namegen.checkpoint import CHECKPOINT_DIR, LAST, read_checkpoint
from namegen.errors import ConfigError, UserError, check_positive_int
from namegen.events import mean_saturation, read_scalars
from namegen.results import RESULT_FILE, write_result
from namegen.module import CHECKPOINT_KEY, CHECKPOINT_VERSION, DivergedError, NameGen, build_model

log = logging.getLogger(__name__)

def validate(cfg: DictConfig) -> None:
    """Refuse out-of-range numbers before anything is built or written (the model and data check their own)."""
    lr = cfg.optim.optimizer.get("lr")
    if lr is not None and not (isinstance(lr, (int, float)) and 0 < lr < math.inf):
        raise ConfigError(f"optim.optimizer.lr={lr!r} must be a finite number > 0; makemore uses optim.optimizer.lr=0.1")
    for key in ("trainer.max_steps", "trainer.val_check_interval", "trainer.log_every_n_steps"):
        check_positive_int(key, OmegaConf.select(cfg, key))
    if cfg.threads is not None:
        check_positive_int("threads", cfg.threads)
    build_model({**OmegaConf.to_container(cfg.model, resolve=True), "block_size": cfg.model.block_size or 1})
    if not isinstance(cfg.resume, bool) and not Path(str(cfg.resume)).is_dir():
        raise ConfigError(f"resume={cfg.resume!r}: no such run folder; give resume=true or an existing run folder")


def build_node(node: DictConfig, key: str, **kwargs: Any) -> Any:
    """instantiate(node, **kwargs), with a bad argument reported as one line naming the config key."""
    try:
        return instantiate(node, **kwargs)
    except InstantiationException as e:
        cause = e.__cause__
        if isinstance(cause, UserError):  # Hydra wraps it; the user needs our message, not the wrapper's
            raise cause from None
        if isinstance(cause, ValueError):  # an argument check (the callbacks' own) refused a value
            raise ConfigError(f"{key}: {cause}") from None
        raise


def container(node: DictConfig | None) -> Any:
    return OmegaConf.to_container(node, resolve=True) if node is not None else None


def build(cfg: DictConfig) -> tuple[L.LightningDataModule, NameGen, L.Trainer]:
    """The datamodule, the LightningModule and the Trainer a config describes."""
    datamodule = build_node(cfg.data, "data").prepare()
    model = {**container(cfg.model), "vocab_size": len(datamodule.vocab), "block_size": datamodule.block_size}
    module = NameGen(model, datamodule.vocab.to_list(), optimizer=container(cfg.optim.optimizer),
                     scheduler=container(cfg.optim.get("scheduler")), init=container(cfg.init))
    callbacks = [build_node(c, f"callbacks.{name}") for name, c in (cfg.get("callbacks") or {}).items() if c is not None]
    loggers = cfg.get("logger")
    if loggers is not None and "_target_" in loggers:  # one logger, or a mapping name -> logger
        loggers = {"logger": loggers}
    logger = [build_node(c, f"logger.{name}") for name, c in (loggers or {}).items() if c is not None] or False
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=logger, default_root_dir=cfg.run_dir)
    return datamodule, module, trainer


def hparams(cfg: DictConfig) -> dict[str, Any]:
    """The run's choices, as the HParams table shows them."""
    data = cfg.data
    model = {f"model.{k}": v for k, v in container(cfg.model).items() if k not in ("norm", "context") and v is not None}
    return {
        "init": cfg.init.scheme,
        "norm": cfg.model.norm,
        "optimizer": cfg.optim.optimizer._target_.rsplit(".", 1)[-1],
        "lr": cfg.optim.optimizer.lr,
        **model,
        "batch_size": data.batch_size,
        "max_steps": cfg.trainer.max_steps,
        "seed": cfg.seed,
        "corpus": os.path.basename(data.path) if data.source == "file" else data.source,
    }


def resume_from(cfg: DictConfig, run_dir: Path) -> tuple[str | None, int]:
    """(last.ckpt of the run folder, its step) when resuming (resume=true, or resume=<that folder>); else (None, 0)."""
    if cfg.resume is False:
        return None, 0
    last = run_dir / CHECKPOINT_DIR / LAST
    if not last.is_file():
        # killed before its first checkpoint: there is nothing to continue, so the run starts over
        log.warning("resume: %s does not exist yet, starting from step 0", last)
        return None, 0
    ckpt = read_checkpoint(last)  # weights-only; refuses anything but namegen's
    if ckpt[CHECKPOINT_KEY]["version"] != CHECKPOINT_VERSION:
        raise ConfigError(
            f"resume: {last} was written by an older namegen (checkpoint format {ckpt[CHECKPOINT_KEY]['version']}) "
            "that trained differently; it can still be sampled but not resumed: start a new run"
        )
    saved = ckpt["hyper_parameters"]["model"]
    wanted = container(cfg.model)
    differ = {k: (saved.get(k), v) for k, v in wanted.items() if v is not None and saved.get(k) != v}
    if differ:
        raise ConfigError(
            f"resume: {last} was trained with a different model "
            f"({', '.join(f'model.{k}={a!r}, not {b!r}' for k, (a, b) in differ.items())}); "
            "resume with the same model overrides"
        )
    log.info("resuming from %s at step %d", last, ckpt["global_step"])
    return str(last), ckpt["global_step"]


def last_value(scalars: dict[str, list[tuple[int, float]]], tag: str) -> float | None:
    return scalars[tag][-1][1] if scalars.get(tag) else None


def train(cfg: DictConfig) -> dict[str, Any]:
    """Train, validate and test one run. Returns (and writes to result.json) its outcome and metrics.

    A loss that stops being finite (or explodes) ends the run as `status: diverged`, keeping
    its logs and its last good checkpoint; any other error propagates.
    """
    validate(cfg)
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    datamodule, module, trainer = build(cfg)
    ckpt_path, start_step = resume_from(cfg, run_dir)
    previous = run_dir / RESULT_FILE
    if ckpt_path is not None and start_step >= cfg.trainer.max_steps and previous.is_file():
        log.info("resume: %s already reached step %d; nothing to train, its result is kept", run_dir, start_step)
        return json.loads(previous.read_text())

    result: dict[str, Any] = {"status": "ok", "error": None, "pid": os.getpid(), "started_at": time.time()}
    start = time.perf_counter()
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
    except DivergedError as e:
        log.error("run diverged: %s", e)
        result.update(status="diverged", error=str(e).splitlines()[0], diverged_step=e.step, diverged_layer=e.layer)
    fit_seconds = time.perf_counter() - start

    trained = trainer.global_step - start_step
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    ckpt = trainer.checkpoint_callback
    best_score = getattr(ckpt, "best_model_score", None)
    result.update(
        steps=trainer.global_step,
        fit_seconds=fit_seconds,
        steps_per_sec=trained / fit_seconds if trained > 0 and fit_seconds > 0 else None,
        init_loss=module.init_loss,
        uniform_loss=math.log(len(module.vocab)),
        train_loss=metrics.get("train/loss"),
        val_loss=metrics.get("val/loss"),
        best_val_loss=float(best_score) if best_score is not None else None,
    )
    if result["status"] == "ok":
        best = ckpt.best_model_path if ckpt is not None else ""
        trainer.test(module, datamodule=datamodule, ckpt_path=best or None, weights_only=True, verbose=False)
        test_loss = trainer.callback_metrics.get("test/loss")
        result["test_loss"] = float(test_loss) if test_loss is not None else None

    tb = next((lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)), None)
    if tb is not None and trainer.is_global_zero:
        tb.experiment.flush()
        scalars = read_scalars(run_dir)
        for key, tag in (("train_loss", "train/loss"), ("val_loss", "val/loss")):  # a resume with nothing left to train
            result[key] = result[key] if result[key] is not None else last_value(scalars, tag)
        result["init_saturation"] = mean_saturation(scalars, "first")
        result["final_saturation"] = mean_saturation(scalars, "last")
        hp_metrics = {
            "hparams/best_val_loss": result["best_val_loss"],
            "hparams/init_loss": result["init_loss"],
            "hparams/init_saturation": result["init_saturation"],
            "hparams/test_loss": result.get("test_loss"),
        }
        tb.log_hyperparams(hparams(cfg), {k: v for k, v in hp_metrics.items() if v is not None})
        tb.finalize("success" if result["status"] == "ok" else "failed")  # flushes events, writes hparams.yaml
    if trainer.is_global_zero:
        result["finished_at"] = time.time()
        write_result(run_dir, result)
    return result
