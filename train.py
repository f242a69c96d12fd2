"""Train namegen: `python train.py [overrides]`, or sweep: `python train.py -m init=naive,kaiming norm=none,batchnorm`."""

import logging
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

import namegen.sweep  # noqa: F401  registers the job-name resolver the config uses
from namegen.errors import UserError
from namegen.training import train, write_result

log = logging.getLogger("namegen")


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> dict:
    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode != RunMode.MULTIRUN:
        fixed_dir = any(o.startswith("hydra.run.dir=") for o in hydra_cfg.overrides.hydra)
        if cfg.resume is True and not fixed_dir:  # a single run's folder is new each time: say which to continue
            sys.exit("namegen: error: resume=true needs the run's folder in a single run; use resume=outputs/runs/<time>")
        try:
            result = train(cfg)
        except UserError as e:  # a user's mistake: one line that says how to fix it, no traceback
            sys.exit(f"namegen: error: {e}")
        if result["status"] != "ok":
            sys.exit(f"namegen: run {result['status']}: {result['error']}")
        return result
    # In a sweep, one job's crash must not stop the others or lose their results:
    # record it where the sweep summary will find it, and let the sweep go on.
    try:
        return train(cfg)
    except Exception as e:
        log.exception("job failed")
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        result = {"status": "failed", "error": f"{type(e).__name__}: {first}"}
        write_result(Path(cfg.run_dir), result)
        return result


if __name__ == "__main__":
    main()
