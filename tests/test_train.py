import math
import os
import subprocess
import sys

import pytest

from conftest import FAST, REPO, make_cfg, read_events
from namegen.checkpoint import load_checkpoint
from namegen.training import train


def test_train_end_to_end_writes_checkpoints_and_events(tmp_path):
    metrics = train(make_cfg(tmp_path, "callbacks=minimal", *FAST))
    assert (tmp_path / "checkpoints" / "best.ckpt").is_file()
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()
    events = read_events(tmp_path)
    tags = set(events.Tags()["scalars"])
    assert {"init/loss", "init/uniform_loss", "train/loss", "val/loss", "test/loss"} <= tags
    assert [e.step for e in events.Scalars("init/loss")] == [0]
    assert events.Scalars("init/uniform_loss")[0].value == pytest.approx(math.log(27), abs=1e-6)
    assert [e.step for e in events.Scalars("train/loss")] == [0, 10, 20, 30]
    # kaiming's first logits are near zero, so the first loss is the uniform baseline (reference fact)
    assert events.Scalars("init/loss")[0].value == pytest.approx(math.log(27), abs=0.15)
    assert metrics["test_loss"] < metrics["init_loss"]  # it learned something in 40 steps
    assert load_checkpoint(tmp_path).vocab.chars[0] == "."


def test_same_seed_same_losses(tmp_path):
    runs = [train(make_cfg(tmp_path / str(i), "callbacks=minimal", "~logger", *FAST)) for i in range(2)]
    assert runs[0]["val_loss"] == runs[1]["val_loss"] and runs[0]["test_loss"] == runs[1]["test_loss"]


def run_train(*args, cwd=REPO, timeout=300):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, str(REPO / "train.py"), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)



def test_unknown_option_fails_at_once(tmp_path):
    result = run_train("init=xavier", f"hydra.run.dir={tmp_path}", timeout=60)
    assert result.returncode != 0
    assert "Could not find 'init/xavier'" in result.stderr
    result = run_train("trainer.max_stepz=5", f"hydra.run.dir={tmp_path}", timeout=60)
    assert result.returncode != 0 and "max_stepz" in result.stderr
