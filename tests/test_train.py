"""train(cfg) end to end, through Lightning's standard tools: hooks, loggers, schedulers, checkpoints, Trainer flags."""

import csv
import json
import math

import pytest
import torch

from conftest import FAST, make_cfg, read_events, run_train
from namegen.checkpoint import load_checkpoint
from namegen.training import train

PROBE = "+callbacks.probe._target_=rank_probe.HookCounts"  # tests/ is on the path, in-process and in subprocesses


def steps(acc, tag):
    return [e.step for e in acc.Scalars(tag)]


def test_train_end_to_end_writes_checkpoints_and_events(tmp_path):
    metrics = train(make_cfg(tmp_path, "callbacks=minimal", *FAST))
    assert (tmp_path / "checkpoints" / "best.ckpt").is_file()
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()
    events = read_events(tmp_path)
    tags = set(events.Tags()["scalars"])
    assert {"init/loss", "init/uniform_loss", "train/loss", "val/loss", "test/loss", "lr-SGD"} <= tags
    assert steps(events, "init/loss") == [0, 9, 19, 29, 39]  # held flat beside train/loss
    assert events.Scalars("init/uniform_loss")[0].value == pytest.approx(math.log(27), abs=1e-6)
    # step 0, then every log_every_n_steps steps: the loss of step s (computed with s updates) at s
    assert steps(events, "train/loss") == [0, 9, 19, 29, 39]
    # Lightning's x-axis is the index of the optimizer step: a validation right after step 19 (the 20th) is at 19
    assert steps(events, "val/loss") == [19, 39]
    assert steps(events, "test/loss") == [40]
    # kaiming's first logits are near zero, so the first loss is the uniform baseline (reference fact)
    assert events.Scalars("init/loss")[0].value == pytest.approx(math.log(27), abs=0.15)
    assert metrics["test_loss"] < metrics["init_loss"]  # it learned something in 40 steps
    assert load_checkpoint(tmp_path).vocab.chars[0] == "."


def test_every_hook_fires_once_per_optimizer_step(tmp_path):
    train(make_cfg(tmp_path, "callbacks=default", PROBE, *FAST))
    counts = json.loads((tmp_path / "hook_counts.json").read_text())
    assert counts["steps"] == 40 and len(counts["ranks"]) == 1
    assert counts["ranks"][0] == {hook: 40 for hook in counts["ranks"][0]}


def test_self_log_and_the_lr_monitor_land_on_optimizer_steps_in_every_logger(tmp_path):
    """logger=[tensorboard,csv]: the same scalars at the same steps in both; the scheduler's decay at its step."""
    train(make_cfg(tmp_path, "logger=[tensorboard,csv]", "callbacks=minimal", "trainer.max_steps=40",
                   "trainer.val_check_interval=20", "trainer.log_every_n_steps=5", "trainer.num_sanity_val_steps=0"))
    events = read_events(tmp_path)
    with open(tmp_path / "csv" / "version_0" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    in_csv = lambda tag: [int(r["step"]) for r in rows if r.get(tag)]  # noqa: E731
    assert steps(events, "train/loss") == in_csv("train/loss") == [0] + list(range(4, 40, 5))
    assert steps(events, "val/loss") == in_csv("val/loss") == [19, 39]
    assert steps(events, "lr-SGD") == in_csv("lr-SGD") == list(range(4, 40, 5))
    # MultiStepLR at 3/4 of max_steps: lr 0.1 for steps 0..29, then 0.01 (makemore's recipe)
    lr = {e.step: e.value for e in events.Scalars("lr-SGD")}
    assert all(lr[s] == pytest.approx(0.1 if s < 30 else 0.01) for s in lr)
    assert in_csv("init/loss") == [0] + list(range(4, 40, 5))


def test_any_max_steps_ends_validated_checkpointed_and_diagnosed(tmp_path):
    train(make_cfg(tmp_path, "callbacks=default", "trainer.max_steps=500", "trainer.num_sanity_val_steps=0"))
    events = read_events(tmp_path)
    assert steps(events, "val/loss") == [499]  # the interval is 2,000: the last step (index 499) is validated anyway
    last = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["global_step"] == 500
    # the last optimizer step (index 499, the 500th) gets every diagnostic
    assert steps(events, "act/00.model.hidden.0.act/saturation") == [0, 499]
    assert steps(events, "update_ratio/01.model.hidden.0.linear.weight") == [0, 499]
    assert [e.step for e in events.Histograms("act/00.model.hidden.0.act")] == [0, 499]
    assert [e.step for e in events.Images("at_step_0/activations")] == [0]
    assert [e.step for e in events.Images("figures/activations")] == [499]


def test_model_checkpoint_every_n_train_steps_saves_at_those_optimizer_steps(tmp_path):
    ckpts = tmp_path / "every"
    every = ["+callbacks.every._target_=lightning.pytorch.callbacks.ModelCheckpoint", f"+callbacks.every.dirpath={ckpts}",
             "+callbacks.every.every_n_train_steps=15", "+callbacks.every.save_top_k=-1",
             "+callbacks.every.filename=\"{step}\""]
    train(make_cfg(tmp_path, "callbacks=minimal", *every, *FAST))
    assert sorted(p.name for p in ckpts.iterdir()) == ["step=15.ckpt", "step=30.ckpt"]


def test_early_stopping_on_val_loss_stops_the_run(tmp_path):
    stop = ["+callbacks.stop._target_=lightning.pytorch.callbacks.EarlyStopping", "+callbacks.stop.monitor=val/loss",
            "+callbacks.stop.patience=0", "+callbacks.stop.min_delta=100"]  # no validation can improve by 100
    result = train(make_cfg(tmp_path, "callbacks=minimal", *stop, "trainer.max_steps=100",
                            "trainer.val_check_interval=10", "trainer.num_sanity_val_steps=0"))
    assert result["status"] == "ok" and result["steps"] == 20  # the second validation finds no improvement


def test_fast_dev_run_trains_one_step_and_validates_it(tmp_path):
    result = train(make_cfg(tmp_path, "callbacks=default", "+trainer.fast_dev_run=true", *FAST))
    assert result["status"] == "ok" and result["steps"] == 1
    # one step of lr 0.1 barely moves kaiming's start, whose loss is the uniform baseline log 27 (reference fact)
    assert result["val_loss"] == pytest.approx(math.log(27), abs=0.15)


def test_limit_val_batches_0_trains_without_validating(tmp_path):
    result = train(make_cfg(tmp_path, "callbacks=default", "+trainer.limit_val_batches=0", *FAST))
    assert result["status"] == "ok" and result["steps"] == 40
    assert result["val_loss"] is None and result["best_val_loss"] is None
    assert "val/loss" not in read_events(tmp_path).Tags()["scalars"] and result["test_loss"] < result["init_loss"]


def test_adamw_decays_only_matrices(tmp_path):
    from namegen.training import build

    _, module, trainer = build(make_cfg(tmp_path, "optim=adamw", "callbacks=minimal", "~logger", "~callbacks.lr_monitor", *FAST))
    trainer.strategy.connect(module)
    optimizer = module.configure_optimizers()["optimizer"]
    decayed, other = optimizer.param_groups
    assert decayed["weight_decay"] == 0.01 and other["weight_decay"] == 0.0
    assert {p.dim() for p in decayed["params"]} == {2} and {p.dim() for p in other["params"]} == {1}
    assert len(decayed["params"]) + len(other["params"]) == len(list(module.parameters()))


def test_same_seed_same_losses(tmp_path):
    runs = [train(make_cfg(tmp_path / str(i), "callbacks=minimal", "~logger", "~callbacks.lr_monitor", *FAST)) for i in range(2)]
    assert isinstance(runs[0]["val_loss"], float) and isinstance(runs[0]["test_loss"], float)
    assert runs[0]["val_loss"] == runs[1]["val_loss"] and runs[0]["test_loss"] == runs[1]["test_loss"]


def test_unknown_option_fails_at_once(tmp_path):
    result = run_train("init=xavier", f"hydra.run.dir={tmp_path}", timeout=60)
    assert result.returncode != 0
    assert "Could not find 'init/xavier'" in result.stderr
    result = run_train("trainer.max_stepz=5", f"hydra.run.dir={tmp_path}", timeout=60)
    assert result.returncode != 0 and "max_stepz" in result.stderr


def test_tensorboard_opens_on_the_lesson(tmp_path):
    """Custom Scalars: the lesson's charts first; each regex matches tags the run wrote (no empty chart)."""
    import re

    from tensorboard.plugins.custom_scalar import layout_pb2

    train(make_cfg(tmp_path, "callbacks=default", *FAST))
    events = read_events(tmp_path)
    # TensorBoard shows the latest layout the run wrote
    layout = layout_pb2.Layout.FromString(events.Tensors("custom_scalars__config__")[-1].tensor_proto.string_val[0])
    assert layout.category[0].title == "1. the lesson"
    tags = events.Tags()["scalars"]
    for category in layout.category:
        for chart in category.chart:
            matched = [t for t in tags for r in chart.multiline.tag if re.search(r, t)]
            assert matched, chart.title
    lesson = {c.title: list(c.multiline.tag) for c in layout.category[0].chart}
    saturation = next(r for title, rs in lesson.items() if title.startswith("saturation") for r in rs)
    assert sorted(t for t in tags if re.search(saturation, t)) == [f"act/0{i}.model.hidden.{i}.act/saturation"
                                                                  for i in range(5)]


def test_a_csv_run_gets_the_diagnosis_a_tensorboard_run_gets(tmp_path):
    """The diagnosis reads what the run recorded, whichever logger wrote it: a logger=csv run and a
    logger=tensorboard run of the same seed say the same, at the end of the run and from their files alone
    (`namegen diagnose`), with every rule that reads the diagnostics' tags applying (naive init saturates)."""
    from namegen.diagnosis import diagnose_run

    overrides = ("init=naive", "norm=none", "callbacks.diagnostics.every_n_steps=10",
                 "callbacks.diagnostics.histogram_every_n_steps=null", "~callbacks.diagnostics.probes.figures", *FAST)
    results = {name: train(make_cfg(tmp_path / name, f"logger={name}", *overrides)) for name in ("csv", "tensorboard")}
    assert not list((tmp_path / "csv").glob("events.out.tfevents.*"))  # the csv run wrote no event file to read
    written = {name: json.loads((tmp_path / name / "diagnosis.json").read_text()) for name in results}
    read_back = {name: diagnose_run(tmp_path / name).to_dict() for name in results}
    assert written["csv"] == written["tensorboard"] == read_back["csv"] == read_back["tensorboard"]
    assert len(written["csv"]["checked"]) >= 5, written["csv"]["checked"]  # not the 2 rules of a run without scalars
    assert results["csv"]["health"] == results["tensorboard"]["health"] != "healthy"
    assert results["csv"]["final_saturation"] == results["tensorboard"]["final_saturation"] > 0
    assert read_events(tmp_path / "tensorboard").Tags()["images"] == []  # one override turned every figure off


def test_the_checkpoint_callback_keeps_lightnings_state_key_computed_once():
    """Its key is Lightning's string (checkpoints written with Lightning's class restore alike), read from a cache:
    Lightning asks for it at every hook call."""
    from lightning.pytorch.callbacks import ModelCheckpoint as Lightnings

    from namegen.checkpoint_io import ModelCheckpoint

    args = dict(dirpath="ckpts", filename="best", monitor="val/loss", mode="min", save_last=True)
    ours = ModelCheckpoint(**args)
    assert ours.state_key == Lightnings(**args).state_key
    assert ours.__dict__["state_key"] is ours.state_key  # computed once, then read
