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

from namegen.checkpoint import CHECKPOINT_DIR, LAST, read_checkpoint
from namegen.errors import ConfigError, UserError
from namegen.events import mean_saturation, read_scalars
from namegen.model import MLPConfig
from namegen.module import CHECKPOINT_KEY, CHECKPOINT_VERSION, DivergedError, NameGen

log = logging.getLogger(__name__)

RESULT_FILE = "result.json"  # each run's outcome, read by the sweep summary


def validate(cfg: DictConfig) -> None:
    """Refuse out-of-range numbers before anything is built or written (the model and data check their own)."""
    lr = cfg.optim.optimizer.get("lr")
    if lr is not None and not lr > 0:
        raise ConfigError(f"optim.optimizer.lr={lr!r} must be > 0; makemore uses optim.optimizer.lr=0.1")
    for key in ("trainer.max_steps", "trainer.val_check_interval", "log_every_n_steps", "steps_per_batch", "threads"):
        value = OmegaConf.select(cfg, key)
        if key == "threads" and value is None:
            continue
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ConfigError(f"{key}={value!r} must be a positive integer; set {key} >= 1")
    steps, every = cfg.trainer.max_steps, cfg.trainer.val_check_interval
    if steps % every != 0:
        # batches never run out, so Lightning validates (and checkpoints) only every `every` steps:
        # the steps after the last multiple would go unvalidated and unsaved
        raise ConfigError(
            f"trainer.max_steps={steps} is not a multiple of trainer.val_check_interval={every}, so the last "
            f"{steps % every} steps would never be validated or saved; set trainer.max_steps={steps - steps % every + every}"
        )
    # Lightning sees one batch per k steps: it validates, stops and starts a diagnostic's step only between batches
    k = cfg.steps_per_batch
    intervals = {"trainer.val_check_interval": every}  # max_steps is a multiple of it
    for name, node in (cfg.get("callbacks") or {}).items():
        if node is not None and isinstance(node.get("every_n_steps"), int):
            intervals[f"callbacks.{name}.every_n_steps"] = node.every_n_steps
    for key, value in intervals.items():
        if value % k != 0:
            common = math.gcd(*intervals.values())
            fits = max(d for d in range(1, k + 1) if common % d == 0)
            raise ConfigError(
                f"{key}={value} is not a multiple of steps_per_batch={k}; set steps_per_batch={fits} "
                f"(the largest up to {k} that divides every interval) or make {key} a multiple of {k}"
            )
    # training_step steps the torch optimizer itself, past Lightning's precision plugin, accumulation and clipping
    for key, allowed in (("trainer.precision", (None, 32, "32", "32-true")), ("trainer.accumulate_grad_batches", (None, 1)),
                         ("trainer.gradient_clip_val", (None, 0, 0.0))):
        value = OmegaConf.select(cfg, key)
        if value not in allowed:
            raise ConfigError(f"{key}={value!r} is not supported: namegen steps its optimizer itself in 32-bit; remove it")
    if not cfg.optim.decay_factor > 0:
        raise ConfigError(f"optim.decay_factor={cfg.optim.decay_factor!r} must be > 0 (makemore uses 0.1)")
    MLPConfig(**OmegaConf.to_container(cfg.model, resolve=True))  # the model's own checks, before data is read
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


def build(cfg: DictConfig) -> tuple[L.LightningDataModule, NameGen, L.Trainer]:
    """The datamodule, the LightningModule and the Trainer a config describes."""
    k = cfg.steps_per_batch
    datamodule = build_node(cfg.data, "data", steps_per_batch=k).prepare()
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
        steps_per_batch=k,
    )
    callbacks = [build_node(c, f"callbacks.{name}") for name, c in (cfg.get("callbacks") or {}).items() if c is not None]
    logger = build_node(cfg.logger, "logger") if cfg.get("logger") is not None else False
    trainer = instantiate(
        cfg.trainer,
        callbacks=callbacks,
        logger=logger,
        default_root_dir=cfg.run_dir,
        val_check_interval=cfg.trainer.val_check_interval // k,  # Lightning counts batches of k steps
    )
    return datamodule, module, trainer


def hparams(cfg: DictConfig) -> dict[str, Any]:
    """The run's choices, as the HParams table shows them."""
    data = cfg.data
    return {
        "init": cfg.init.scheme,
        "norm": cfg.model.norm,
        "optimizer": cfg.optim.optimizer._target_.rsplit(".", 1)[-1],
        "lr": cfg.optim.optimizer.lr,
        "depth": cfg.model.depth,
        "n_hidden": cfg.model.n_hidden,
        "n_embd": cfg.model.n_embd,
        "activation": cfg.model.activation,
        "block_size": cfg.model.block_size,
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
    meta = ckpt[CHECKPOINT_KEY]
    if meta["version"] != CHECKPOINT_VERSION:
        raise ConfigError(
            f"resume: {last} was written by an older namegen (checkpoint format {meta['version']}) that counted "
            "steps differently; it can still be sampled but not resumed: start a new run"
        )
    if meta["steps_per_batch"] != cfg.steps_per_batch:
        # Lightning schedules validation by batches: another grouping would shift every later validation
        raise ConfigError(
            f"resume: {last} was trained with steps_per_batch={meta['steps_per_batch']}, not {cfg.steps_per_batch}; "
            f"resume with steps_per_batch={meta['steps_per_batch']}"
        )
    saved = meta["model"]
    wanted = OmegaConf.to_container(cfg.model, resolve=True)
    differ = {k: (saved.get(k), v) for k, v in wanted.items() if saved.get(k) != v}
    if differ:
        raise ConfigError(
            f"resume: {last} was trained with a different model ({', '.join(f'model.{k}={a!r}, not {b!r}' for k, (a, b) in differ.items())}); "
            "resume with the same model overrides"
        )
    log.info("resuming from %s at step %d", last, ckpt["global_step"])
    return str(last), ckpt["global_step"]


def write_result(run_dir: Path, result: dict[str, Any]) -> None:
    tmp = run_dir / f".{RESULT_FILE}.tmp"
    tmp.write_text(json.dumps(result, indent=2, default=str))
    os.replace(tmp, run_dir / RESULT_FILE)


def train(cfg: DictConfig) -> dict[str, Any]:
    """Train, validate and test one run. Returns (and writes to result.json) its outcome and metrics.

    A loss that stops being finite ends the run as `status: diverged`, keeping its
    logs and its last good checkpoint; any other error propagates.
    """
    validate(cfg)
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    datamodule, module, trainer = build(cfg)

    result: dict[str, Any] = {"status": "ok", "error": None, "pid": os.getpid(), "started_at": time.time()}
    ckpt_path, start_step = resume_from(cfg, run_dir)
    start = time.perf_counter()
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
    except DivergedError as e:
        log.error("run diverged: %s", e)
        result.update(status="diverged", error=str(e).splitlines()[0])
    fit_seconds = time.perf_counter() - start

    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    ckpt = trainer.checkpoint_callback
    best_score = getattr(ckpt, "best_model_score", None)
    result.update(
        steps=trainer.global_step,
        fit_seconds=fit_seconds,
        steps_per_sec=(trainer.global_step - start_step) / fit_seconds if fit_seconds > 0 else None,
        init_loss=module.init_loss,
        uniform_loss=math.log(len(module.vocab)),
        train_loss=metrics.get("loss"),
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
