"""Shared fixtures: composing the real Hydra config, the reference corpus, one small trained run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

REPO = Path(__file__).resolve().parents[1]
# The classic 32,033-name file, read in place (never copied into the project).
NAMES_TXT = Path(os.environ.get("NAMEGEN_NAMES_TXT", REPO.parent / "shared" / "data" / "names.txt"))

# Few steps, no sanity pass: fast end-to-end runs for tests.
FAST = ["trainer.max_steps=40", "trainer.val_check_interval=20", "trainer.num_sanity_val_steps=0",
        "trainer.log_every_n_steps=10"]


def run_train(*args: str, cwd: Path = REPO, timeout: int = 400, env: dict | None = None) -> subprocess.CompletedProcess:
    """`python train.py <args>` in a subprocess, as a user runs it; tests/ is on its path, so a test can hand
    the run a probe callback from there."""
    path = os.pathsep.join(p for p in (str(REPO / "tests"), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": path, **(env or {})}
    return subprocess.run([sys.executable, str(REPO / "train.py"), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def namegen(*args: str, cwd: Path | None = None, timeout: int = 120) -> subprocess.CompletedProcess:
    """The `namegen` command (`python -m namegen.cli <args>`) in a subprocess."""
    return subprocess.run([sys.executable, "-m", "namegen.cli", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=cwd)


def make_cfg(run_dir: Path, *overrides: str) -> DictConfig:
    """The config `python train.py <overrides>` would run, writing into run_dir."""
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose("config", overrides=[f"run_dir={run_dir}", *overrides])


@pytest.fixture(scope="session")
def names_txt() -> Path:
    if not NAMES_TXT.is_file():
        pytest.skip(f"reference corpus not found at {NAMES_TXT} (set NAMEGEN_NAMES_TXT)")
    return NAMES_TXT


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory) -> Path:
    """A run folder trained for a few hundred steps on the built-in names."""
    from namegen.training import train

    run_dir = tmp_path_factory.mktemp("run")
    train(make_cfg(run_dir, "callbacks=minimal", "trainer.max_steps=300", "trainer.val_check_interval=100",
                   "trainer.num_sanity_val_steps=0"))
    return run_dir


def read_events(run_dir: Path):
    """Every scalar, histogram and image in a run folder's TensorBoard event files, read back by TensorBoard itself."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "histograms": 0, "images": 0, "tensors": 0})
    acc.Reload()
    return acc
