import math

import pytest
import torch

from conftest import FAST, make_cfg, read_events, run_train
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
    # against optimizer steps, not Lightning's batches of steps_per_batch=10 steps
    assert [e.step for e in events.Scalars("val/loss")] == [20, 40]
    assert [e.step for e in events.Scalars("test/loss")] == [40]
    # kaiming's first logits are near zero, so the first loss is the uniform baseline (reference fact)
    assert events.Scalars("init/loss")[0].value == pytest.approx(math.log(27), abs=0.15)
    assert metrics["test_loss"] < metrics["init_loss"]  # it learned something in 40 steps
    assert load_checkpoint(tmp_path).vocab.chars[0] == "."


def test_same_seed_same_losses(tmp_path):
    runs = [train(make_cfg(tmp_path / str(i), "callbacks=minimal", "~logger", *FAST)) for i in range(2)]
    assert isinstance(runs[0]["val_loss"], float) and isinstance(runs[0]["test_loss"], float)
    assert runs[0]["val_loss"] == runs[1]["val_loss"] and runs[0]["test_loss"] == runs[1]["test_loss"]


def test_steps_per_batch_changes_the_speed_not_the_results(tmp_path):
    diagnostics = ["callbacks.activations.every_n_steps=10", "callbacks.activations.histogram_every_n_steps=20",
                   "callbacks.gradients.every_n_steps=10", "callbacks.gradients.histogram_every_n_steps=20",
                   "callbacks.update_ratio.every_n_steps=10", "callbacks.figures.every_n_steps=20"]
    runs = {}
    for k in (1, 10):
        run = tmp_path / f"k{k}"
        # the decay (step 24) and the loss logging (every 5) fall inside batches of 10
        result = train(make_cfg(run, "callbacks=default", *FAST, *diagnostics, f"steps_per_batch={k}",
                                "optim.decay_at=0.6", "log_every_n_steps=5"))
        events = read_events(run)
        scalars = {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}
        histograms = {tag: [(e.step, e.histogram_value.sum) for e in events.Histograms(tag)]
                      for tag in events.Tags()["histograms"]}
        weights = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
        runs[k] = (result, scalars, histograms, weights)
    (r1, s1, h1, w1), (r10, s10, h10, w10) = runs[1], runs[10]
    assert r1["steps"] == r10["steps"] == 40
    assert r1["val_loss"] == r10["val_loss"] and r1["test_loss"] == r10["test_loss"]
    assert len(s1) > 50 and s1 == s10  # every scalar, diagnostics included, at the same steps
    assert [step for step, _ in s1["train/loss"]] == list(range(0, 40, 5))
    assert [step for step, _ in s1["update_ratio/hidden.0.linear.weight"]] == [0, 10, 20, 30]
    assert h1 == h10 and w1.keys() == w10.keys()
    assert all(torch.equal(w1[name], w10[name]) for name in w1)  # bit-identical weights


def test_unknown_option_fails_at_once(tmp_path):
    result = run_train("init=xavier", f"hydra.run.dir={tmp_path}", timeout=60)
    assert result.returncode != 0
    assert "Could not find 'init/xavier'" in result.stderr
    result = run_train("trainer.max_stepz=5", f"hydra.run.dir={tmp_path}", timeout=60)
    assert result.returncode != 0 and "max_stepz" in result.stderr
