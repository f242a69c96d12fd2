"""Train namegen: `python train.py [overrides]`, or sweep: `python train.py -m init=naive,kaiming norm=none,batchnorm`.

Exit codes (shared with the `namegen` command): 0 success, 2 a user's mistake (one line on stderr), 1 a failure.
"""

import logging
import multiprocessing
import os
import sys
import threading
import time
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

import namegen.resolvers  # noqa: F401  registers the resolvers the config uses
from namegen.errors import UserError, refuse
from namegen.results import record_failure

# Hydra parses `seed=<5,000 digits>` into an int before any check of ours runs; Python's guard against slow
# int parsing would make that a traceback. Lifted, so the seed's own check names the value (shortened).
sys.set_int_max_str_digits(0)

log = logging.getLogger("namegen")
STARTED = time.time() - 1  # folders made after this (by Hydra, for this command) may be removed on a refusal
WATCH = "namegen-parent-watch"
WATCH_SECONDS = 0.1  # how often a sweep worker looks for its parent: a getppid() call, free at this rate


def refuse_run(cfg: DictConfig, message: str) -> None:
    """A user's mistake: one line that says how to fix it, no traceback, and no stub run folder left behind."""
    run_dir = Path(cfg.run_dir)
    if run_dir.is_dir() and not any(run_dir.iterdir()) and run_dir.stat().st_ctime >= STARTED:
        run_dir.rmdir()  # the empty folder Hydra made for this command (not one the user had): nothing is lost
    refuse(message)


def exit_with_parent() -> None:
    """In a sweep's worker process (joblib's loky workers, started by multiprocessing): end when the sweep's
    main process dies, even by SIGKILL, instead of training on, orphaned, into the sweep folder.
    A job run in the main process itself (the basic launcher) has no such parent and does nothing."""
    if multiprocessing.parent_process() is None or any(t.name == WATCH for t in threading.enumerate()):
        return
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(WATCH_SECONDS)
        os._exit(1)  # the parent is gone: no one will read what this job writes

    threading.Thread(target=watch, name=WATCH, daemon=True).start()


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    if HydraConfig.get().mode != RunMode.MULTIRUN:
        # namegen's Hydra callback has checked the config and the folder before Hydra made it (namegen.sweep),
        # resume=true as resume=<this run's folder>; training treats the two alike
        try:
            from namegen.training import train  # it checks the config again (validate): the API's callers get that too

            result = train(cfg)
        except UserError as e:  # what only the data shows, once read
            refuse_run(cfg, str(e))
        if result["status"] != "ok":
            sys.exit(f"namegen: run {result['status']}: {result['error']}")
        if cfg.get("logger") is not None and "tensorboard" in cfg.logger:
            from namegen.board import how_to_open

            print(how_to_open(cfg.run_dir), flush=True)
        return result.get("best_val_loss")  # what a Hydra sweeper (Optuna) minimizes
    # In a sweep, one job's crash must not stop the others or lose their results:
    # record it where the sweep summary will find it, and let the sweep go on.
    exit_with_parent()
    if cfg.get("callbacks") is not None and cfg.callbacks.get("progress") is not None:
        cfg.callbacks.progress.lines = True  # parallel jobs share one console: a line each, not bars that interleave
    try:
        from namegen.training import train

        return train(cfg).get("best_val_loss")
    except UserError as e:  # what only this job's data shows: one line, recorded for the summary; the others go on
        log.error("namegen: error: %s", e)
        record_failure(Path(cfg.run_dir), f"{type(e).__name__}: {e}")
        return None
    except Exception as e:
        log.exception("job failed")
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        record_failure(Path(cfg.run_dir), f"{type(e).__name__}: {first}")
        return None


if __name__ == "__main__":
    main()
