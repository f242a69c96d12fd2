"""What TensorBoard shows of a run, read back from the real event files: the step-0 story, the lesson's charts,
no clutter. (A real TensorBoard server serving a real sweep: tests/test_sweep.py.)"""

import math
import re
import statistics
from pathlib import Path

import lightning as L
import pytest
import torch
import yaml

from conftest import FAST, make_cfg, read_events
from namegen.board import CHARTS, METRICS, layout
from namegen.module import loss_fn
from namegen.training import build, train


def values(events, tag):
    return [(e.step, e.value) for e in events.Scalars(tag)]


def last_layout(events):
    """The Custom Scalars layout TensorBoard shows: the latest one the run wrote."""
    from tensorboard.plugins.custom_scalar import layout_pb2

    return layout_pb2.Layout.FromString(events.Tensors("custom_scalars__config__")[-1].tensor_proto.string_val[0])


@pytest.fixture(scope="module")
def naive_run(tmp_path_factory):
    """naive init without a norm, the lesson's bad case, with every diagnostic, for 40 steps."""
    run_dir = tmp_path_factory.mktemp("naive")
    cfg = make_cfg(run_dir, "init=naive", "norm=none", "callbacks=default", *FAST)
    return cfg, train(cfg), read_events(run_dir)


def test_the_first_train_loss_point_is_the_step_0_loss(naive_run):
    cfg, result, events = naive_run
    # the loss of step 0's batch before any update, computed again apart from training: the same seeded
    # initialization, and the batch the data stream draws for step 0
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule, module, _ = build(cfg)
    x, y = next(iter(datamodule.train_dataloader()))
    module.train()
    with torch.no_grad():
        step0 = loss_fn(module(x), y).item()
    assert step0 > 3 * math.log(27)  # naive init: confidently wrong, far above log V
    train_loss = values(events, "train/loss")
    assert train_loss[0] == (0, pytest.approx(step0, rel=1e-5))
    assert [s for s, _ in train_loss] == [0, 9, 19, 29, 39]


def test_init_loss_and_log_v_are_held_flat_beside_every_train_loss_point(naive_run):
    _, result, events = naive_run
    steps = [s for s, _ in values(events, "train/loss")]
    assert values(events, "init/loss") == [(s, pytest.approx(result["init_loss"], rel=1e-6)) for s in steps]
    assert values(events, "init/uniform_loss") == [(s, pytest.approx(math.log(27), abs=1e-6)) for s in steps]


def test_the_update_ratios_one_line_is_their_median_and_the_guide_follows_the_schedule(naive_run):
    _, _, events = naive_run
    per_matrix = [t for t in events.Tags()["scalars"] if re.match(r"^update_ratio/\d+\.", t)]
    assert len(per_matrix) == 7  # the embedding, 5 hidden layers, the output layer
    at = {t: dict(values(events, t)) for t in per_matrix}
    for step, median in values(events, "update_ratio/median"):
        assert median == pytest.approx(statistics.median(at[t][step] for t in per_matrix), rel=1e-6)
    # makemore's schedule: lr 0.1, then 0.01 for the last quarter (from step 30 of 40); the guide is -3, then -4
    assert values(events, "update_ratio/guide") == [(0, pytest.approx(-3.0)), (39, pytest.approx(-4.0))]


def test_no_epoch_or_hparams_scalars_no_empty_files_no_empty_hparams_yaml(naive_run):
    cfg, _, events = naive_run
    tags = events.Tags()["scalars"]
    assert "epoch" not in tags and not [t for t in tags if t.startswith("hparams/")]
    run_dir = Path(cfg.run_dir)
    assert not [p for p in run_dir.rglob("*") if p.is_file() and p.stat().st_size == 0]
    record = yaml.safe_load((run_dir / "hparams.yaml").read_text())
    assert record["init"] == "naive" and record["norm"] == "none" and record["model.depth"] == "5"


def test_the_csv_logger_writes_the_same_choices_not_an_empty_record(tmp_path):
    train(make_cfg(tmp_path, "logger=[tensorboard,csv]", "callbacks=minimal", *FAST))
    records = [yaml.safe_load(p.read_text()) for p in tmp_path.rglob("hparams.yaml")]
    assert len(records) == 2 and all(r["init"] == "kaiming" and r["norm"] == "batchnorm" for r in records)


def test_the_hparams_columns_are_the_runs_own_loss_tags(naive_run):
    from tensorboard.plugins.hparams import plugin_data_pb2

    _, result, events = naive_run
    experiment = plugin_data_pb2.HParamsPluginData.FromString(
        events.SummaryMetadata("_hparams_/experiment").plugin_data.content).experiment
    columns = [(m.name.tag, m.display_name) for m in experiment.metric_infos]
    assert columns == list(METRICS.items())
    assert [t for t, _ in columns][:2] == ["init/loss", "init/uniform_loss"]  # init loss next to log V
    tags = set(events.Tags()["scalars"])
    assert all(tag in tags for tag, _ in columns)  # every column has values to show
    assert values(events, "test/loss")[-1][1] == pytest.approx(result["test_loss"], rel=1e-6)


def test_the_lesson_layout_has_only_charts_with_data_and_no_attention_chart_for_the_mlp(naive_run):
    _, _, events = naive_run
    layout = last_layout(events)
    tags = events.Tags()["scalars"]
    titles = [c.title for category in layout.category for c in category.chart]
    assert layout.category[0].title == "1. the lesson" and len(layout.category[0].chart) == 4
    assert not [t for t in titles if "attention" in t]
    assert not [t for t in titles if "norm's input" in t]  # norm=none: no norm layer to chart
    for category in layout.category:
        for chart in category.chart:
            assert [t for t in tags for r in chart.multiline.tag if re.search(r, t)], chart.title
    every = [title for charts in CHARTS.values() for title in charts]
    assert len(titles) == len(every) - 2  # all the others are there


def test_model_transformer_trains_with_layernorm(tmp_path):
    cfg = make_cfg(tmp_path, "model=transformer", "trainer.max_steps=50")  # python train.py model=transformer ...
    assert cfg.model.arch == "transformer" and cfg.model.norm == "layernorm"
    result = train(cfg)
    assert result["status"] == "ok" and result["steps"] == 50 and result["test_loss"] < result["init_loss"]
    events = read_events(tmp_path)
    tags = events.Tags()["scalars"]
    # the Transformer's own callbacks: its 4 blocks' attention logits are watched, so the attention rule can run
    assert len({t for t in tags if t.startswith("attn/") and t.endswith("/std")}) == 4
    assert "no attention logits" not in result["health"]
    # a set on the command line still wins: minimal has no diagnostics
    assert "diagnostics" not in make_cfg(tmp_path / "m", "model=transformer", "callbacks=minimal").callbacks
    for category in last_layout(events).category:  # its charts too have data (GELU activations, LayerNorms)
        for chart in category.chart:
            assert [t for t in tags for r in chart.multiline.tag if re.search(r, t)], chart.title


def test_a_chart_appears_once_one_of_its_tags_is_written():
    attention = "attention logits' std (softmax saturates when large)"
    titles = lambda tags: [chart for charts in layout(tags).values() for chart in charts]  # noqa: E731
    assert titles([]) == []
    assert titles(["lr-SGD"]) == ["learning rate"]
    assert attention not in titles(["act/00.model.hidden.0.act/std"])
    assert attention in titles(["act/00.model.hidden.0.act/std", "attn/02.model.blocks.0.attn.scores/std"])


def test_the_step_0_figures_have_their_own_cards_and_are_drawn_for_small_cards(naive_run):
    _, _, events = naive_run
    images = events.Tags()["images"]
    start = sorted(t for t in images if t.startswith("at_step_0/"))
    assert start == ["at_step_0/activation_grads", "at_step_0/activations", "at_step_0/saturation_map",
                     "at_step_0/weight_grads"]
    for tag in start:
        (event,) = events.Images(tag)
        assert event.step == 0 and (event.width, event.height) == (640, 480)
    assert [e.step for e in events.Images("figures/activations")] == [39]  # later steps only
    assert [e.step for e in events.Images("figures/update_ratios")] == [39]
