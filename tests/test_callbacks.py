"""The diagnostics callbacks, through real Lightning runs and the TensorBoard event files they write.

Every expected number is computed here by hand (a functional forward/backward
on copies of the weights), never by the callbacks' own helpers.
"""

from __future__ import annotations

import io
import math
import re
import warnings
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from PIL import Image
from tensorboard.plugins.custom_scalar import layout_pb2
from torch.utils.data import DataLoader

from conftest import read_events
from callbacks import ActivationStats, DiagnosticFigures, GradientStats, StepProgressBar, UpdateRatio
from namegen.data import CharDataModule
from namegen.model import MLPConfig
from namegen.module import NameGen, loss_fn

VOCAB = list(".abcd")
X = torch.tensor([[0, 0], [0, 1], [1, 2], [2, 3], [3, 4], [4, 0], [1, 1], [2, 2]])
Y = torch.tensor([1, 2, 3, 4, 0, 1, 2, 3])
THRESHOLD = 0.97
FIGURES = ("activations", "activation_grads", "weight_grads", "update_ratios", "saturation_map")
FIGURE_TAGS = [f"figures/{name}" for name in FIGURES]


# ---------------------------------------------------------------------------
# helpers


def tiny_module(norm="none", activation="tanh", depth=2, optimizer=None, seed=0, steps_per_batch=1) -> NameGen:
    """namegen's MLP at toy size, naive init, with unit 0 of layer 0 pushed into the flat region for every example."""
    torch.manual_seed(seed)
    cfg = MLPConfig(vocab_size=5, block_size=2, n_embd=3, n_hidden=4, depth=depth, norm=norm, activation=activation)
    module = NameGen(
        cfg,
        VOCAB,
        optimizer=optimizer or (lambda params: torch.optim.SGD(params, lr=0.1)),
        init="naive",
        decay_at=1.0,  # full learning rate for the whole (tiny) run
        log_every_n_steps=1,
        steps_per_batch=steps_per_batch,
    )
    block = module.model.hidden[0]
    shift = block.linear.bias if block.linear.bias is not None else block.norm.bias
    with torch.no_grad():
        shift[0] = 10.0 if activation == "tanh" else -10.0  # tanh pinned at +1 / relu pinned at 0: a dead unit
    return module


def batches(n: int, x=X, y=Y, k=1) -> DataLoader:
    """n training batches for NameGen: each holds k copies of the minibatch (x, y), one per optimizer step."""
    return DataLoader([(x.expand(k, *x.shape), y.expand(k, *y.shape))] * n, batch_size=None)


def minibatches(n: int, x=X, y=Y) -> DataLoader:
    """n plain (x, y) batches: for validation and for `AutoModule`."""
    return DataLoader([(x, y)] * n, batch_size=None)  # batch_size=None: each item is already a batch


class AutoModule(L.LightningModule):
    """A NameGen's model under Lightning's automatic optimization: the optimizer is stepped with a closure
    that runs the backward, and gradients can accumulate. The callbacks' other path."""

    def __init__(self, module: NameGen, lr: float = 0.1):
        super().__init__()
        self.model, self.lr = module.model, lr

    def training_step(self, batch, batch_idx):
        return loss_fn(self.model, batch)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.lr)


def fit(module, callbacks, log_dir=None, max_steps=1, logger=None, train=None, val=None, **trainer_kwargs) -> L.Trainer:
    if logger is None:
        logger = TensorBoardLogger(save_dir=log_dir, name="", version="")
    kwargs = dict(
        accelerator="cpu",
        devices=1,
        max_steps=max_steps,
        logger=logger,
        callbacks=callbacks,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        val_check_interval=1000,
        check_val_every_n_epoch=None,
        log_every_n_steps=1,
    )
    kwargs.update(trainer_kwargs)
    trainer = L.Trainer(**kwargs)
    k = getattr(module, "steps_per_batch", None)
    train = train or (batches(max_steps + 2, k=k) if k else minibatches(max_steps + 2))
    trainer.fit(module, train_dataloaders=train, val_dataloaders=val or minibatches(1))
    return trainer


def events(log_dir: Path):
    assert list(Path(log_dir).glob("events.out.tfevents.*")), f"no event file in {log_dir}"
    return read_events(log_dir)


def scalars(acc, tag: str) -> dict[int, float]:
    return {e.step: e.value for e in acc.Scalars(tag)}


def scalar_tags(acc) -> set[str]:
    return set(acc.Tags()["scalars"])


def manual_pass(module: NameGen, params: dict[str, torch.Tensor], x=X, y=Y):
    """makemore's forward and backward written out with plain tensor ops on copies of the weights."""
    cfg = module.model.cfg
    p = {k: v.detach().clone().requires_grad_(v.is_floating_point()) for k, v in params.items()}

    def norm(z, prefix):
        if cfg.norm == "batchnorm":
            z = (z - z.mean(0)) / torch.sqrt(z.var(0, unbiased=False) + 1e-5)
        elif cfg.norm == "layernorm":
            z = (z - z.mean(1, keepdim=True)) / torch.sqrt(z.var(1, unbiased=False, keepdim=True) + 1e-5)
        else:
            return z
        return z * p[f"{prefix}.weight"] + p[f"{prefix}.bias"]

    h = p["wte.weight"][x].reshape(len(x), -1)
    preacts, acts = [], []
    for i in range(cfg.depth):
        z = h @ p[f"hidden.{i}.linear.weight"].T
        if f"hidden.{i}.linear.bias" in p:
            z = z + p[f"hidden.{i}.linear.bias"]
        z = norm(z, f"hidden.{i}.norm")
        h = torch.tanh(z) if cfg.activation == "tanh" else z * (z > 0)  # relu, with relu's zero gradient at 0
        h.retain_grad()
        preacts.append(z.detach())
        acts.append(h)
    logits = h @ p["head.weight"].T + (p["head.bias"] if "head.bias" in p else 0)
    loss = F.cross_entropy(norm(logits, "head_norm"), y)
    loss.backward()
    return p, preacts, acts


def flat(t: torch.Tensor, activation: str) -> torch.Tensor:
    return t == 0 if activation == "relu" else t.abs() > THRESHOLD


def parameters(module: NameGen) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.model.named_parameters()}


def close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-4, abs_tol=1e-7)


# ---------------------------------------------------------------------------
# the numbers


@pytest.mark.parametrize(
    "norm,activation,depth,path",
    [
        ("none", "tanh", 2, "namegen"),
        ("layernorm", "relu", 3, "namegen"),
        ("batchnorm", "tanh", 1, "namegen"),
        ("none", "relu", 2, "automatic"),
        ("batchnorm", "tanh", 2, "3 steps per batch"),
    ],
)
def test_statistics_match_a_manual_forward_backward_and_sgd_step(tmp_path, norm, activation, depth, path):
    """Step 0's statistics, whether the optimizer is stepped by NameGen (no closure), by Lightning
    (with a closure), or three times per batch; the later two steps must not reach them."""
    lr = 0.1
    k = 3 if path == "3 steps per batch" else 1
    module = tiny_module(norm, activation, depth, steps_per_batch=k)
    before = parameters(module)
    p, preacts, acts = manual_pass(module, before)
    callbacks = [ActivationStats(k, k), GradientStats(k, k), UpdateRatio(k)]
    fit(AutoModule(module, lr) if path == "automatic" else module, callbacks, tmp_path, max_steps=k)
    acc = events(tmp_path)

    for i, (z, t) in enumerate(zip(preacts, acts)):
        t = t.detach()
        mask = flat(t, activation)
        expected = {
            "mean": t.mean().item(),
            "std": t.std().item(),
            "saturation": mask.float().mean().item(),
            "dead": mask.all(0).float().mean().item(),
        }
        for stat, value in expected.items():
            got = scalars(acc, f"act/layer_{i:02d}/{stat}")
            assert list(got) == [0]
            assert close(got[0], value), (i, stat, got[0], value)
        g = acts[i].grad
        assert close(scalars(acc, f"grad/layer_{i:02d}/mean")[0], g.mean().item())
        assert close(scalars(acc, f"grad/layer_{i:02d}/std")[0], g.std().item())
        for tag, values in ((f"act/layer_{i:02d}", t), (f"preact/layer_{i:02d}", z), (f"grad/layer_{i:02d}", g)):
            hist = acc.Histograms(tag)[0].histogram_value
            assert hist.num == values.numel()
            # a normalized pre-activation sums to ~0: rounding then scales with the sum of |values|
            assert math.isclose(hist.sum, values.sum().item(), rel_tol=1e-4, abs_tol=1e-6 * values.abs().sum().item())
            assert math.isclose(hist.min, values.min().item(), rel_tol=1e-5, abs_tol=1e-7)
    # the planted dead unit is seen: layer 0 has at least 1 of 4 units flat for every example
    assert scalars(acc, "act/layer_00/dead")[0] >= 0.25

    matrices = [name for name, v in before.items() if v.ndim == 2]
    assert matrices == ["wte.weight"] + [f"hidden.{i}.linear.weight" for i in range(depth)] + ["head.weight"]
    ratio_tags = {t for t in scalar_tags(acc) if t.startswith("grad_data_ratio/")}
    assert ratio_tags == {f"grad_data_ratio/{n}" for n in matrices}
    for name in matrices:
        assert close(scalars(acc, f"grad_data_ratio/{name}")[0], (p[name].grad.std() / before[name].std()).item())
        hist = acc.Histograms(f"weight_grad/{name}")[0].histogram_value
        assert hist.num == p[name].numel()
        assert math.isclose(hist.sum, p[name].grad.sum().item(), rel_tol=1e-4, abs_tol=1e-7)

    # plain SGD: new = old - lr * grad
    logged = {t.split("/", 1)[1] for t in scalar_tags(acc) if t.startswith("update_ratio/")}
    for name, old in before.items():
        ratio = (lr * p[name].grad).std() / old.std()
        if old.std() == 0 or ratio == 0:  # constant at init (zero bias, unit norm gain): no finite ratio
            assert name not in logged
            continue
        assert close(scalars(acc, f"update_ratio/{name}")[0], math.log10(ratio.item())), name
        if k == 1:
            assert torch.allclose(module.model.get_parameter(name).detach(), old - lr * p[name].grad, atol=1e-6)
    assert "hidden.0.linear.weight" in logged


def test_update_ratio_measures_the_actual_adam_step(tmp_path):
    lr = 0.01
    module = tiny_module(optimizer=lambda params: torch.optim.Adam(params, lr=lr))
    before = parameters(module)
    p, _, _ = manual_pass(module, before)
    fit(module, [UpdateRatio(1)], tmp_path, max_steps=1)
    acc = events(tmp_path)

    # Adam's first step by hand: m = (1-b1) g, v = (1-b2) g^2, bias-corrected: update = -lr * g / (|g| + eps)
    differs_from_sgd = 0
    for name, old in before.items():
        g = p[name].grad
        update = -lr * g / (g.abs() + 1e-8)
        new = module.model.get_parameter(name).detach()
        assert torch.allclose(new - old, update, atol=1e-6), name
        if old.std() == 0:
            continue
        expected = math.log10(update.std().item() / old.std().item())
        assert close(scalars(acc, f"update_ratio/{name}")[0], expected), name
        differs_from_sgd += abs(expected - math.log10((lr * g).std().item() / old.std().item())) > 0.1
    assert differs_from_sgd >= 3  # the test tells an Adam step from lr * grad


def test_gradient_accumulation_logs_once_per_optimizer_step_from_its_first_batch(tmp_path):
    x2, y2 = (X + 1) % 5, torch.full_like(Y, 4)
    module = tiny_module()
    before = parameters(module)
    _, _, acts = manual_pass(module, before)  # the first micro-batch (X, Y)
    train = DataLoader([(X, Y), (x2, y2)] * 4, batch_size=None)
    callbacks = [ActivationStats(1, None), UpdateRatio(1)]
    fit(AutoModule(module), callbacks, tmp_path, max_steps=1, train=train, accumulate_grad_batches=2)
    acc = events(tmp_path)
    std = scalars(acc, "act/layer_01/std")
    assert list(std) == [0] and close(std[0], acts[1].std().item())
    # the update spans both micro-batches: measured from the weights, whatever produced them
    old, new = before["hidden.1.linear.weight"], module.model.hidden[1].linear.weight.detach()
    expected = math.log10(((new - old).std() / old.std()).item())
    assert close(scalars(acc, "update_ratio/hidden.1.linear.weight")[0], expected)


# ---------------------------------------------------------------------------
# makemore's net at step 0


@pytest.fixture(scope="module")
def names(names_txt) -> CharDataModule:
    return CharDataModule(source="file", path=str(names_txt), block_size=3, batch_size=32, seed=42).prepare()


def step0_saturation(names: CharDataModule, tmp_path: Path, init: str, norm: str) -> list[float]:
    L.seed_everything(42, verbose=False)
    module = NameGen(MLPConfig(vocab_size=len(names.vocab), norm=norm), names.vocab.to_list(), init=init)
    stats = ActivationStats(every_n_steps=1000, histogram_every_n_steps=None)
    fit(module, [stats], log_dir=tmp_path, train=names.train_dataloader(), val=names.val_dataloader())
    acc = events(tmp_path)
    return [scalars(acc, f"act/layer_{i:02d}/saturation")[0] for i in range(module.model.cfg.depth)]


def test_naive_init_saturates_the_tanh_and_kaiming_or_batchnorm_do_not(names, tmp_path):
    naive = step0_saturation(names, tmp_path / "naive-none", "naive", "none")
    assert len(naive) == 5 and sum(naive) / len(naive) > 0.5, naive
    for init, norm in (("kaiming", "none"), ("naive", "batchnorm"), ("kaiming", "batchnorm")):
        sat = step0_saturation(names, tmp_path / f"{init}-{norm}", init, norm)
        assert max(sat[1:]) < 0.10, (init, norm, sat)


# ---------------------------------------------------------------------------
# hooks, validation, loggers


class HookCounter(L.Callback):
    """Counts the forward hooks on the activations each time the optimizer is about to step."""

    def __init__(self):
        self.counts: dict[int, int] = {}

    def on_train_start(self, trainer, pl_module):
        def count(optimizer, args, kwargs):
            self.counts[trainer.global_step] = sum(len(b.act._forward_hooks) for b in pl_module.model.hidden)

        self.handle = trainer.optimizers[0].register_step_pre_hook(count)

    def on_train_end(self, trainer, pl_module):
        self.handle.remove()


def all_hooks(module: torch.nn.Module) -> int:
    return sum(
        len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) + len(m._backward_pre_hooks)
        for m in module.modules()
    )


def test_hooks_live_only_during_logging_steps(tmp_path):
    module = tiny_module(depth=3)
    counter = HookCounter()
    diagnostics = [ActivationStats(2, None), GradientStats(2, None), UpdateRatio(2), DiagnosticFigures(4)]
    trainer = fit(module, diagnostics + [counter], tmp_path, max_steps=5)
    # steps 0 and 4: activations + gradients + figures on each of 3 layers; step 2: no figures; odd steps: nothing
    assert counter.counts == {0: 9, 1: 0, 2: 6, 3: 0, 4: 9}
    assert all_hooks(module) == 0
    assert all(cb.recorder is None for cb in diagnostics if hasattr(cb, "recorder"))
    assert diagnostics[2]._before == {}
    assert not trainer.optimizers[0]._optimizer_step_pre_hooks and not trainer.optimizers[0]._optimizer_step_post_hooks


def test_hooks_with_several_steps_per_batch_cover_only_the_logging_step(tmp_path):
    module = tiny_module(depth=3, steps_per_batch=2)
    counter = HookCounter()
    diagnostics = [ActivationStats(2, None), GradientStats(2, None), UpdateRatio(2)]
    trainer = fit(module, diagnostics + [counter], tmp_path, max_steps=6)
    # each logging step begins a batch; the batch's second step runs without the diagnostics' hooks
    assert counter.counts == {0: 6, 1: 0, 2: 6, 3: 0, 4: 6, 5: 0}
    assert all_hooks(module) == 0
    assert not trainer.optimizers[0]._optimizer_step_pre_hooks and not trainer.optimizers[0]._optimizer_step_post_hooks
    assert list(scalars(events(tmp_path), "update_ratio/hidden.1.linear.weight")) == [0, 2, 4]


def test_logging_steps_inside_a_batch_are_refused_at_setup(tmp_path):
    with pytest.raises(ValueError, match=r"ActivationStats: every_n_steps=3 is not a multiple of .*steps_per_batch=2"):
        fit(tiny_module(steps_per_batch=2), [ActivationStats(3, None)], tmp_path, max_steps=4)


def test_validation_and_sanity_check_do_not_reach_the_statistics(tmp_path):
    # a validation batch unlike the training one, so its statistics would show if it leaked in
    val_x, val_y = torch.full((64, 2), 4), torch.zeros(64, dtype=torch.long)
    runs = {}
    for name, kwargs in (
        ("quiet", {}),
        ("validating", dict(num_sanity_val_steps=1, val_check_interval=1, val=minibatches(1, val_x, val_y))),
    ):
        fit(tiny_module(norm="batchnorm"), [ActivationStats(1, None), GradientStats(1, None), UpdateRatio(1)],
            tmp_path / name, max_steps=3, **kwargs)
        acc = events(tmp_path / name)
        diagnostics = {"act", "grad", "grad_data_ratio", "update_ratio"}
        runs[name] = {t: scalars(acc, t) for t in scalar_tags(acc) if t.split("/")[0] in diagnostics}
    assert "val/loss" in scalar_tags(events(tmp_path / "validating"))
    assert len(runs["quiet"]) > 20 and runs["quiet"] == runs["validating"]


def diagnostics_all() -> list[L.Callback]:
    return [ActivationStats(1, 1), GradientStats(1, 1), UpdateRatio(1), DiagnosticFigures(1)]


@pytest.mark.parametrize("logger", ["none", "csv"])
def test_without_tensorboard_each_callback_warns_once_and_the_run_completes(tmp_path, logger):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer = fit(
            tiny_module(), diagnostics_all(), max_steps=3, default_root_dir=tmp_path,  # where stray events would go
            logger=False if logger == "none" else CSVLogger(tmp_path, name="", version=""),
        )
    ours = [str(w.message) for w in caught if "no TensorBoardLogger" in str(w.message)]
    assert sorted(m.split()[0] for m in ours) == sorted(type(cb).__name__ for cb in diagnostics_all())
    assert trainer.global_step == 3
    assert not list(tmp_path.rglob("events.out.tfevents.*"))


# ---------------------------------------------------------------------------
# a run with everything on: cadence, figures, layout


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    log_dir = tmp_path_factory.mktemp("full")
    callbacks = [
        ActivationStats(every_n_steps=2, histogram_every_n_steps=4),
        GradientStats(every_n_steps=2, histogram_every_n_steps=4),
        UpdateRatio(every_n_steps=2),
        DiagnosticFigures(every_n_steps=4, saturation_layer=-1),
    ]
    fit(tiny_module(norm="layernorm", depth=3), callbacks, log_dir, max_steps=5)
    return events(log_dir)


def test_cadence_scalars_histograms_and_figures(full_run):
    assert list(scalars(full_run, "act/layer_02/saturation")) == [0, 2, 4]
    assert list(scalars(full_run, "update_ratio/hidden.1.linear.weight")) == [0, 2, 4]
    for tag in ("act/layer_00", "preact/layer_02", "grad/layer_01", "weight_grad/head.weight"):
        assert [e.step for e in full_run.Histograms(tag)] == [0, 4], tag
    for tag in FIGURE_TAGS:
        assert [e.step for e in full_run.Images(tag)] == [0, 4], tag


def test_figures_are_real_images(full_run):
    assert set(full_run.Tags()["images"]) == set(FIGURE_TAGS)
    for tag in FIGURE_TAGS:
        for event in full_run.Images(tag):
            image = np.asarray(Image.open(io.BytesIO(event.encoded_image_string)).convert("RGB"))
            assert image.shape == (event.height, event.width, 3)
            assert 300 <= event.width <= 3000 and 200 <= event.height <= 2000, (tag, event.width, event.height)
            assert image.std() > 10, f"{tag} at step {event.step} is blank"
            assert 5_000 < len(event.encoded_image_string) < 1_000_000


def test_custom_scalars_layout_charts_every_diagnostic_across_layers(full_run):
    (event,) = full_run.Tensors("custom_scalars__config__")
    layout = layout_pb2.Layout.FromString(event.tensor_proto.string_val[0])
    tags = scalar_tags(full_run)
    charts = {chart.title: chart for category in layout.category for chart in category.chart}
    assert len(charts) >= 6
    for title, chart in charts.items():
        matched = {t for regex in chart.multiline.tag for t in tags if re.match(regex, t)}
        assert len(matched) >= 3, (title, list(chart.multiline.tag))  # one line per layer or weight matrix
    saturation = next(c for t, c in charts.items() if "saturation" in t)
    assert {t for t in tags if re.match(saturation.multiline.tag[0], t)} == {
        f"act/layer_{i:02d}/saturation" for i in range(3)
    }


# ---------------------------------------------------------------------------
# arguments


@pytest.mark.parametrize(
    "make,match",
    [
        (lambda: ActivationStats(every_n_steps=0), "every_n_steps=0"),
        (lambda: GradientStats(every_n_steps=500, histogram_every_n_steps=750), "multiple"),
        (lambda: ActivationStats(saturation_threshold=1.5), "saturation_threshold=1.5"),
        (lambda: UpdateRatio(every_n_steps=2.5), "every_n_steps=2.5"),
        (lambda: DiagnosticFigures(saturation_layer="last"), "saturation_layer='last'"),
    ],
)
def test_bad_arguments_are_refused_with_the_value_and_the_range(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_saturation_layer_out_of_range_is_refused_at_setup(tmp_path):
    with pytest.raises(ValueError, match=r"saturation_layer=2 .* choose -2\.\.1"):
        fit(tiny_module(depth=2), [DiagnosticFigures(saturation_layer=2)], tmp_path)


def test_progress_bar_counts_optimizer_steps(tmp_path):
    bar = StepProgressBar(refresh_rate=2)
    fit(tiny_module(steps_per_batch=2), [bar], tmp_path, max_steps=6, enable_progress_bar=True)
    assert bar.train_progress_bar.n == 6 and bar.train_progress_bar.total == 6  # 3 batches of 2 steps


def test_learning_rate_decays_at_its_step_inside_a_batch(tmp_path):
    module = tiny_module(steps_per_batch=4)
    module.decay_at, module.decay_factor = 0.375, 0.1  # 0.375 * 8 steps: step 3, the last of the first batch
    lrs = {}

    class LearningRates(L.Callback):
        def on_train_start(self, trainer, pl_module):
            def record(optimizer, args, kwargs):
                lrs[trainer.global_step] = optimizer.param_groups[0]["lr"]

            trainer.optimizers[0].register_step_pre_hook(record)

    fit(module, [LearningRates()], tmp_path, max_steps=8)
    assert lrs == {0: 0.1, 1: 0.1, 2: 0.1, 3: pytest.approx(0.01), 4: pytest.approx(0.01), 5: pytest.approx(0.01),
                   6: pytest.approx(0.01), 7: pytest.approx(0.01)}
