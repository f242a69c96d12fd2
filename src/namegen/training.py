"""`train(cfg)`: one training run from a composed Hydra config. `train.py` wraps it in `@hydra.main`."""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import math
import os
import time
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import lightning as L
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from lightning.pytorch.loggers import TensorBoardLogger
from omegaconf import DictConfig, OmegaConf

from namegen.resolvers import swept_keys  # importing it registers the resolvers the config uses
from namegen.checkpoint import CHECKPOINT_DIR, LAST, read_checkpoint
from namegen.board import hparams_end, hparams_start
from namegen.checks import validate
from namegen.errors import ConfigError, UserError
from namegen.diagnosis import diagnose, write_diagnosis
from namegen.diagnosis.config import RunConfig
from namegen.diagnosis.render import TEXT_TAG
from namegen.events import Scalars, continued, mean_saturation, read_scalars
from namegen.loggers import MemoryLogger
from namegen.results import DATA_RECORD, RECORD, RESULT_FILE, RESUMES, write_atomic, write_result
from namegen.module import CHECKPOINT_KEY, CHECKPOINT_VERSION, DivergedError, NameGen, compile_wanted

log = logging.getLogger(__name__)

# Lightning's advertising and device banners on every run, and a deprecation inside Lightning itself (its
# pytree helper on torch >= 2.10): noise in a training log, dropped by message, everything else kept.
BANNERS = ("💡 Tip:", "GPU available:", "TPU available:", "HPU available:")


def not_a_banner(record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith(BANNERS)


@contextmanager
def process_settings(threads: int | None) -> Iterator[None]:
    """What a run sets for the whole process, for the run only: torch's thread count and the filters of
    Lightning's log noise. A second train(cfg) in the same process (tests, a notebook, Hydra's basic launcher)
    and the caller's own Lightning code find the process as it was."""
    rank_zero, lightning = logging.getLogger("lightning.pytorch.utilities.rank_zero"), logging.getLogger("lightning")
    before = torch.get_num_threads(), lightning.propagate
    if threads is not None:
        torch.set_num_threads(threads)
    rank_zero.addFilter(not_a_banner)
    # `lightning` gives its logger a console handler of its own; passed on to the root logger too (Hydra's),
    # each line would print twice
    lightning.propagate = False
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)", category=Warning)
            yield
    finally:
        rank_zero.removeFilter(not_a_banner)
        torch.set_num_threads(before[0])
        lightning.propagate = before[1]


def build_node(node: DictConfig, key: str, **kwargs: Any) -> Any:
    """instantiate(node, **kwargs), with a bad argument reported as one line naming the config key."""
    try:
        return instantiate(node, **kwargs)
    except InstantiationException as e:
        cause = e.__cause__
        if isinstance(cause, UserError):  # Hydra wraps it; the user needs our message, not the wrapper's
            raise cause from None
        if isinstance(cause, (ValueError, TypeError)):  # an argument check refused a value, or an unknown argument
            raise ConfigError(f"{key}: {str(cause).strip().splitlines()[0]}") from None
        raise


def container(node: DictConfig | None) -> Any:
    return OmegaConf.to_container(node, resolve=True) if node is not None else None


def build(cfg: DictConfig) -> tuple[L.LightningDataModule, NameGen, L.Trainer]:
    """The datamodule, the LightningModule and the Trainer a config describes."""
    # the callbacks first: they check their arguments when built, before the corpus is read
    callbacks = [build_node(c, f"callbacks.{name}") for name, c in (cfg.get("callbacks") or {}).items() if c is not None]
    datamodule = build_node(cfg.data, "data").prepare()
    model = {**container(cfg.model), "vocab_size": len(datamodule.vocab), "block_size": datamodule.block_size}
    compiled = compile_wanted(cfg.compile, cfg.trainer.max_steps)
    if compiled:  # the first steps wait for it: say why
        log.info("compile=%s: the training steps run torch.compile'd; compiling takes a while at the first step",
                 "auto" if cfg.compile == "auto" else "true")
    module = NameGen(model, datamodule.vocab.to_list(), optimizer=container(cfg.optim.optimizer),
                     scheduler=container(cfg.optim.get("scheduler")), init=container(cfg.init), compile=compiled)
    loggers = cfg.get("logger")  # name -> logger (conf/logger/*.yaml), so logger=[tensorboard,csv] composes both
    logger = [build_node(c, f"logger.{name}") for name, c in (loggers or {}).items() if c is not None]
    if logger:  # and every scalar they are sent, kept for the diagnosis at the end of the run
        logger.append(MemoryLogger(version=logger[0].version))
    trainer = build_node(cfg.trainer, "trainer", callbacks=callbacks, logger=logger or False, default_root_dir=cfg.run_dir)
    return datamodule, module, trainer


GROUP_VALUE = {"init": "init.scheme", "norm": "model.norm", "model": "model.arch", "optim": "optim.optimizer._target_",
               "data": "data.source"}  # what a swept config group's column shows


def hparams(cfg: DictConfig) -> dict[str, Any]:
    """The run's choices, for its loggers' records (hparams.yaml) and TensorBoard's HParams table: the sweep's
    swept keys first, integers and booleans as text (the table would print 32 as 32.000, and true as 1.000)."""
    model = {f"model.{k}": v for k, v in container(cfg.model).items() if k not in ("norm", "arch", "context")}
    values = {
        "init": cfg.init.scheme,
        "norm": cfg.model.norm,
        "model": cfg.model.arch,
        "optim": cfg.optim.optimizer._target_.rsplit(".", 1)[-1],
        "lr": cfg.optim.optimizer.get("lr"),
        **model,
        "data.batch_size": cfg.data.batch_size,
        "trainer.max_steps": cfg.trainer.max_steps,
        "seed": cfg.seed,
        "data": os.path.basename(cfg.data.path) if cfg.data.source == "file" else cfg.data.source,
    }
    swept = swept_keys(cfg.run_dir) or []  # none outside a sweep
    for key in swept:
        if key not in values:
            values[key] = OmegaConf.select(cfg, GROUP_VALUE.get(key, key))
    ordered = {k: values[k] for k in swept} | values
    return {k: str(v) if isinstance(v, int) else v for k, v in ordered.items() if v is not None}


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
    log.info("resuming from %s at step %d", last, ckpt["global_step"])
    return str(last), ckpt["global_step"]


def record_run(cfg: DictConfig, run_dir: Path, resuming: bool, step: int) -> None:
    """The run's record, written once when it starts: its config and the corpus it trains on (`validate` refused
    a resume that differs from them). A resume never rewrites them: it adds a line to the resumes log."""
    from namegen.checks import against_record
    from namegen.words import fingerprint

    record = run_dir / RECORD
    record.parent.mkdir(parents=True, exist_ok=True)
    if not record.is_file():
        write_atomic(run_dir / DATA_RECORD, json.dumps(fingerprint(cfg.data.source, cfg.data.get("path"))))
        write_atomic(record, OmegaConf.to_yaml(cfg))
        return
    if resuming:
        _, changed = against_record(cfg, run_dir)
        line = {"at": time.strftime("%Y-%m-%dT%H:%M:%S"), "from_step": step,
                "changed": {k: {"was": then, "now": now} for k, (then, now) in changed.items()}}
        with open(run_dir / RESUMES, "a") as f:
            f.write(json.dumps(line, default=str) + "\n")
        log.info("resume: logged in %s", run_dir / RESUMES)


@contextmanager
def folder_lock(run_dir: Path) -> Iterator[None]:
    """One training per run folder: an exclusive lock on the folder itself, released when the process ends."""
    fd = os.open(run_dir, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigError(f"another namegen process is training in {run_dir}; wait for it to end, or give "
                              "another folder") from None
        yield
    finally:
        os.close(fd)


def train(cfg: DictConfig) -> dict[str, Any]:
    """Train, validate and test one run. Returns (and writes to result.json) its outcome and metrics.

    A loss that stops being finite (or explodes) ends the run as `status: diverged`, keeping
    its logs and its last good checkpoint; any other error propagates.
    """
    validate(cfg)
    with process_settings(cfg.threads):
        L.seed_everything(cfg.seed, workers=True, verbose=False)
        run_dir = Path(cfg.run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        datamodule, module, trainer = build(cfg)
        if not trainer.is_global_zero:  # the other processes of a DDP run follow rank zero's folder
            return fit_and_record(cfg, run_dir, datamodule, module, trainer)
        with folder_lock(run_dir):
            return fit_and_record(cfg, run_dir, datamodule, module, trainer)


def fit_and_record(cfg: DictConfig, run_dir: Path, datamodule: L.LightningDataModule, module: NameGen,
                   trainer: L.Trainer) -> dict[str, Any]:
    """The run: fit and test it (`fit`), then, on rank zero, conclude from what it recorded (`conclude`)."""
    ckpt_path, start_step = resume_from(cfg, run_dir)
    if trainer.is_global_zero:
        record_run(cfg, run_dir, cfg.resume is not False, start_step)
    previous = run_dir / RESULT_FILE
    if ckpt_path is not None and start_step >= cfg.trainer.max_steps and previous.is_file():
        log.info("resume: %s already reached step %d; nothing to train, its result is kept", run_dir, start_step)
        return json.loads(previous.read_text())
    tb = next((lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)), None)
    if trainer.is_global_zero:
        choices = hparams(cfg)
        for logger in trainer.loggers:  # each logger's own record of them (the hparams.yaml of TensorBoard's and CSV's)
            logger.log_hyperparams(choices)
        if tb is not None:  # the HParams row, which fills in as the run logs its losses
            hparams_start(tb, choices, swept_keys(cfg.run_dir) or [])
    result = fit(trainer, module, datamodule, ckpt_path, start_step, run_dir)
    if not trainer.is_global_zero:
        return result
    memory = next((lg.scalars for lg in trainer.loggers if isinstance(lg, MemoryLogger)), {})
    # a resumed run's earlier steps are in its files only
    scalars = continued(read_scalars(run_dir), memory) if ckpt_path is not None else memory
    return conclude(cfg, run_dir, result, scalars, module, trainer, tb)


def fit(trainer: L.Trainer, module: NameGen, datamodule: L.LightningDataModule, ckpt_path: str | None,
        start_step: int, run_dir: Path) -> dict[str, Any]:
    """Fit, then test the best checkpoint; the result as measured: status, steps, time and losses."""
    result: dict[str, Any] = {"status": "ok", "error": None, "pid": os.getpid(), "started_at": time.time()}
    start = time.perf_counter()
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
    except DivergedError as e:
        log.error("run diverged: %s", e)
        result.update(status="diverged", error=str(e).splitlines()[0], diverged_step=e.step, diverged_layer=e.layer)
    except OSError as e:
        if e.errno not in (errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EDQUOT):
            raise
        # the last complete checkpoint is still whole (written atomically): the run resumes once there is room
        raise UserError(f"cannot write into {run_dir} ({e.strerror}); free space or give a writable folder, then "
                        "resume the run") from None
    fit_seconds = time.perf_counter() - start
    trained = trainer.global_step - start_step
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    best_score = getattr(trainer.checkpoint_callback, "best_model_score", None)
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
        best = getattr(trainer.checkpoint_callback, "best_model_path", "")
        trainer.test(module, datamodule=datamodule, ckpt_path=best or None, weights_only=True, verbose=False)
        test_loss = trainer.callback_metrics.get("test/loss")
        result["test_loss"] = float(test_loss) if test_loss is not None else None
    return result


def conclude(cfg: DictConfig, run_dir: Path, result: dict[str, Any], scalars: Scalars, module: NameGen,
             trainer: L.Trainer, tb: TensorBoardLogger | None) -> dict[str, Any]:
    """The diagnosis of what the run recorded: written (diagnosis.md/.json, result.json), printed, and shown in
    TensorBoard's Text tab and HParams row."""
    result["activations"] = activation_kinds(module)
    for key, tag in (("train_loss", "train/loss"), ("val_loss", "val/loss")):  # a resume with nothing left to train
        if result[key] is None and scalars.get(tag):
            result[key] = scalars[tag][-1][1]
    if scalars:
        result["init_saturation"] = mean_saturation(scalars, "first")
        result["final_saturation"] = mean_saturation(scalars, "last")
    result["finished_at"] = time.time()
    diagnosis = diagnose(scalars, result, config=RunConfig(cfg))
    write_diagnosis(run_dir, diagnosis)
    result["health"] = diagnosis.health
    write_result(run_dir, result)
    print(f"\n{diagnosis.to_markdown(run_dir.name)}", flush=True)
    if tb is not None:
        # at the run's last step, where its other last values are (global_step has counted that step's update)
        tb.experiment.add_text(TEXT_TAG, diagnosis.to_card(run_dir.name, result["val_loss"]),
                               global_step=max(trainer.global_step - 1, 0))
        hparams_end(tb, ok=result["status"] == "ok")
        tb.finalize("success" if result["status"] == "ok" else "failed")  # flushes events
    return result


def activation_kinds(module: torch.nn.Module) -> dict[str, str]:
    """{module path: activation kind}, for the diagnosis: a ReLU's healthy flat fraction is not a tanh's."""
    from namegen.callbacks.catalog import Catalog

    return Catalog.of(module).kinds
