"""The diagnostics callbacks on LightningModules that have nothing of namegen, and on namegen's MLP.

Every expected number is computed here by hand (a functional forward/backward on copies
of the weights), never by the callbacks' own helpers.
"""

from __future__ import annotations

import csv
import math
import warnings
from pathlib import Path

import lightning as L
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from torch.utils.data import DataLoader

from namegen.callbacks import (
    Activations, Diagnostics, Figures, Gradients, Probe,
    UpdateRatios,
)
from namegen.callbacks.base import keep_positions
from conftest import read_events

X = torch.tensor([[0.5, -1.0, 2.0, 0.1], [1.5, 0.3, -0.2, -2.0], [-0.7, 0.8, 0.4, 1.2], [2.0, -0.5, -1.5, 0.6],
                  [0.0, 1.1, -0.9, -0.3], [-1.2, -0.4, 0.7, 2.2]])
Y = torch.tensor([0, 2, 1, 1, 0, 2])
FIGURES = ("activations", "activation_grads", "weight_grads", "update_ratios", "saturation_map")


class Foreign(L.LightningModule):
    """A network namegen never saw: Linear -> LayerNorm -> ReLU -> Linear -> Tanh -> Linear, plain SGD."""

    def __init__(self, lr: float = 0.1, optimizer: str = "sgd"):
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(4, 6), nn.LayerNorm(6), nn.ReLU(), nn.Linear(6, 6), nn.Tanh(),
                                 nn.Linear(6, 3))
        with torch.no_grad():
            self.net[3].weight.mul_(4.0)  # push the tanh into its flat tails, so saturation is not 0
            self.net[1].bias[0] = -10.0  # one ReLU unit below zero for every example: dead
        self.lr, self.optimizer = lr, optimizer

    def training_step(self, batch, batch_idx):
        x, y = batch
        return F.cross_entropy(self.net(x), y)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", F.cross_entropy(self.net(x), y))

    def configure_optimizers(self):
        if self.optimizer == "adam":
            return torch.optim.Adam(self.parameters(), lr=self.lr)
        return torch.optim.SGD(self.parameters(), lr=self.lr)


def hand_pass(module: Foreign, x=X, y=Y):
    """The forward and backward written out with tensor ops on copies of the weights."""
    p = {k: v.detach().clone().requires_grad_() for k, v in module.named_parameters()}
    z0 = x @ p["net.0.weight"].T + p["net.0.bias"]
    mu, var = z0.mean(1, keepdim=True), z0.var(1, unbiased=False, keepdim=True)
    z1 = (z0 - mu) / torch.sqrt(var + 1e-5) * p["net.1.weight"] + p["net.1.bias"]
    r = z1 * (z1 > 0)
    r.retain_grad()
    z3 = r @ p["net.3.weight"].T + p["net.3.bias"]
    t = torch.tanh(z3)
    t.retain_grad()
    loss = F.cross_entropy(t @ p["net.5.weight"].T + p["net.5.bias"], y)
    loss.backward()
    return p, {"z0": z0.detach(), "z1": z1.detach(), "r": r, "z3": z3.detach(), "t": t}


def batches(n: int, x=X, y=Y) -> DataLoader:
    return DataLoader([(x, y)] * n, batch_size=None)  # batch_size=None: each item is already a batch


def fit(module, callbacks, log_dir: Path, max_steps=1, loggers=None, train=None, val=None, ckpt_path=None,
        **kwargs) -> L.Trainer:
    loggers = loggers if loggers is not None else [TensorBoardLogger(save_dir=log_dir, name="", version="")]
    trainer = L.Trainer(accelerator="cpu", devices=1, max_steps=max_steps, logger=loggers, callbacks=callbacks,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        num_sanity_val_steps=0, val_check_interval=1000, check_val_every_n_epoch=None,
                        log_every_n_steps=1, **kwargs)
    trainer.fit(module, train_dataloaders=train or batches(max_steps + 2), val_dataloaders=val or batches(1),
                ckpt_path=ckpt_path)
    return trainer


def scalars(acc, tag: str) -> dict[int, float]:
    return {e.step: e.value for e in acc.Scalars(tag)}


def close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-4, abs_tol=1e-6)


def csv_rows(log_dir: Path) -> list[dict[str, str]]:
    with open(log_dir / "metrics.csv") as f:
        return list(csv.DictReader(f))


# ---------------------------------------------------------------------------
# the numbers, on a module written here


def test_scalars_of_a_foreign_module_match_a_hand_written_pass_in_every_logger(tmp_path):
    lr = 0.1
    module = Foreign(lr)
    before = {k: v.detach().clone() for k, v in module.named_parameters()}
    p, h = hand_pass(module)
    loggers = [TensorBoardLogger(tmp_path, name="", version=""), CSVLogger(tmp_path, name="", version="")]
    callbacks = [Diagnostics(1, 1, None, [Activations()]), Diagnostics(1, 1, None, [Gradients()]), Diagnostics(1, None, None, [UpdateRatios()])]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit(module, callbacks, tmp_path, loggers=loggers)
    acc = read_events(tmp_path)

    relu, tanh = h["r"].detach(), h["t"].detach()
    expected = {
        # forward order: the ReLU runs first, then the Tanh; the flat regions are relu <= 0 and |tanh| > 0.97
        "act/00.net.2/mean": relu.mean(), "act/00.net.2/std": relu.std(),
        "act/00.net.2/saturation": (relu <= 0).float().mean(), "act/00.net.2/dead": (relu <= 0).all(0).float().mean(),
        "act/01.net.4/mean": tanh.mean(), "act/01.net.4/std": tanh.std(),
        "act/01.net.4/saturation": (tanh.abs() > 0.97).float().mean(),
        "act/01.net.4/dead": (tanh.abs() > 0.97).all(0).float().mean(),
        "norm/00.net.1/in_std": h["z0"].std(),
        "grad/00.net.2/mean": h["r"].grad.mean(), "grad/00.net.2/std": h["r"].grad.std(),
        "grad/01.net.4/mean": h["t"].grad.mean(), "grad/01.net.4/std": h["t"].grad.std(),
    }
    for j, name in enumerate(["net.0.weight", "net.3.weight", "net.5.weight"]):  # every parameter of 2+ dimensions
        expected[f"grad_data_ratio/{j:02d}.{name}"] = p[name].grad.std() / before[name].std()
        expected[f"update_ratio/{j:02d}.{name}"] = torch.log10((lr * p[name].grad).std() / before[name].std())
    # the run as one line: the median of the three, and the guide, -3 (a constant learning rate: no schedule to follow)
    expected["update_ratio/median"] = torch.stack([v for k, v in expected.items() if k.startswith("update_ratio/")]).median()
    expected["update_ratio/guide"] = torch.tensor(-3.0)
    assert 0 < expected["act/01.net.4/saturation"] < 1 and expected["act/00.net.2/dead"] >= 1 / 6  # not vacuous
    diagnostic = {t for t in acc.Tags()["scalars"] if t.split("/")[0] in ("act", "norm", "grad", "grad_data_ratio",
                                                                           "update_ratio")}
    assert diagnostic == set(expected)
    rows = csv_rows(tmp_path)
    for tag, value in expected.items():
        got = scalars(acc, tag)
        assert list(got) == [0] and close(got[0], value.item()), (tag, got, value)
        in_csv = [float(r[tag]) for r in rows if r.get(tag)]  # the same numbers in the CSV logger
        assert len(in_csv) == 1 and close(in_csv[0], value.item()), tag

    # histograms to TensorBoard only, with one warning naming the logger that can't hold them
    hist = acc.Histograms("preact/00.net.2")[0].histogram_value
    assert hist.num == h["z1"].numel() and math.isclose(hist.sum, h["z1"].sum().item(), abs_tol=1e-4)
    assert acc.Histograms("weight_grad/01.net.3.weight")[0].histogram_value.num == 36
    skipped = [str(w.message) for w in caught if "cannot hold histograms" in str(w.message)]
    assert len(skipped) == 2 and all("CSVLogger" in m for m in skipped)  # once per callback that writes them
    # the model really took that SGD step
    assert torch.allclose(module.net[3].weight, before["net.3.weight"] - lr * p["net.3.weight"].grad, atol=1e-6)


def test_update_ratio_measures_the_actual_adam_step(tmp_path):
    lr = 0.01
    module = Foreign(lr, optimizer="adam")
    before = {k: v.detach().clone() for k, v in module.named_parameters()}
    p, _ = hand_pass(module)
    fit(module, [Diagnostics(1, None, None, [UpdateRatios()])], tmp_path)
    acc = read_events(tmp_path)
    # Adam's first step by hand: update = -lr * g / (|g| + eps)
    for j, name in enumerate(["net.0.weight", "net.3.weight", "net.5.weight"]):
        g = p[name].grad
        update = -lr * g / (g.abs() + 1e-8)
        assert torch.allclose(module.get_parameter(name).detach() - before[name], update, atol=1e-6)
        expected = math.log10(update.std().item() / before[name].std().item())
        assert close(scalars(acc, f"update_ratio/{j:02d}.{name}")[0], expected)
        assert abs(expected - math.log10((lr * g).std().item() / before[name].std().item())) > 0.1  # not SGD's


def test_gradient_accumulation_logs_once_per_optimizer_step_from_its_first_batch(tmp_path):
    x2, y2 = X.flip(0) * 2, torch.full_like(Y, 2)
    module = Foreign()
    before = {k: v.detach().clone() for k, v in module.named_parameters()}
    _, h = hand_pass(module)  # the first micro-batch (X, Y)
    train = DataLoader([(X, Y), (x2, y2)] * 4, batch_size=None)
    fit(module, [Diagnostics(1, None, None, [Activations()]), Diagnostics(1, None, None, [UpdateRatios()])], tmp_path, train=train, accumulate_grad_batches=2)
    acc = read_events(tmp_path)
    std = scalars(acc, "act/01.net.4/std")
    assert list(std) == [0] and close(std[0], h["t"].std().item())
    old, new = before["net.3.weight"], module.net[3].weight.detach()  # the update spans both micro-batches
    assert close(scalars(acc, "update_ratio/01.net.3.weight")[0], math.log10(((new - old).std() / old.std()).item()))


def test_modules_or_a_pattern_override_the_discovery(tmp_path):
    module = Foreign()
    _, h = hand_pass(module)
    fit(module, [Diagnostics(1, None, None, [Activations(modules=["net.3"])])], tmp_path / "named")
    acc = read_events(tmp_path / "named")
    act = {t for t in acc.Tags()["scalars"] if t.startswith("act/")}
    assert act == {"act/00.net.3/mean", "act/00.net.3/std"}  # a Linear has no flat region: no saturation
    assert close(scalars(acc, "act/00.net.3/std")[0], h["z3"].std().item())
    fit(Foreign(), [Diagnostics(1, None, None, [Gradients(pattern=r"^net\.[24]$")])], tmp_path / "pattern")
    grads = {t for t in read_events(tmp_path / "pattern").Tags()["scalars"] if t.startswith("grad/")}
    assert grads == {"grad/00.net.2/mean", "grad/00.net.2/std", "grad/01.net.4/mean", "grad/01.net.4/std"}
    with pytest.raises(ValueError, match=r"no module named 'net\.9'.*activations found: net\.2, net\.4"):
        fit(Foreign(), [Diagnostics(1, None, None, [Activations(modules=["net.9"])])], tmp_path / "bad")


class InPlace(L.LightningModule):
    """Linear -> an in-place activation -> Linear: the activation overwrites its input with its output."""

    def __init__(self, act: nn.Module):
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(4, 6), act, nn.Linear(6, 3))
        with torch.no_grad():
            self.net[0].weight.mul_(4.0)  # pre-activations well below -3 too: the smooth units' flat tail

    def training_step(self, batch, batch_idx):
        return F.cross_entropy(self.net(batch[0]), batch[1])

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


@pytest.mark.parametrize("act,flat", [
    (nn.ReLU6(inplace=True), lambda z: (z <= 0) | (z >= 6)),
    (nn.ELU(inplace=True), lambda z: z < -3),
    (nn.SiLU(inplace=True), lambda z: z < -3),
    (nn.Mish(inplace=True), lambda z: z < -3),
])
def test_in_place_activations_record_their_true_input(tmp_path, act, flat):
    """Issue 19: the input was read after an in-place activation had overwritten it with its output."""
    module = InPlace(act)
    with torch.no_grad():
        z = X @ module.net[0].weight.T + module.net[0].bias  # the pre-activation, by hand
    expected = flat(z).float().mean().item()
    assert 0 < expected < 1
    fit(module, [Diagnostics(1, 1, None, [Activations()])], tmp_path)
    acc = read_events(tmp_path)
    assert close(scalars(acc, "act/00.net.1/saturation")[0], expected)
    preact = acc.Histograms("preact/00.net.1")[0].histogram_value
    assert math.isclose(preact.sum, z.sum().item(), rel_tol=1e-5) and math.isclose(preact.min, z.min().item(), rel_tol=1e-5)


class Late(Foreign):
    """Foreign's network, built in `configure_model` (as for sharded models) instead of `__init__`."""

    def __init__(self):
        L.LightningModule.__init__(self)
        self.lr, self.optimizer, self.net = 0.1, "sgd", None

    def configure_model(self):
        if self.net is None:
            self.net = Foreign().net


def test_modules_built_in_configure_model_are_watched(tmp_path):
    """Issue 19: discovery ran in `setup`, before Lightning calls `configure_model`."""
    p, h = hand_pass(Foreign())  # the same weights
    fit(Late(), [Diagnostics(1, None, None, probes=[Activations(), Gradients(), UpdateRatios()])], tmp_path)
    acc = read_events(tmp_path)
    assert close(scalars(acc, "act/01.net.4/std")[0], h["t"].std().item())
    assert close(scalars(acc, "grad/00.net.2/std")[0], h["r"].grad.std().item())
    assert close(scalars(acc, "grad_data_ratio/01.net.3.weight")[0],
                 (p["net.3.weight"].grad.std() / p["net.3.weight"].std()).item())
    assert list(scalars(acc, "update_ratio/02.net.5.weight")) == [0]


def history_steps(callback) -> set[tuple[int, ...]]:
    return {tuple(step for step, _ in points) for points in callback.state_dict()["figures"]["history"].values()}


def test_two_fits_with_one_figures_callback_do_not_share_the_history_and_a_resume_keeps_it(tmp_path):
    """Issue 19: `Figures.history` was never reset between fits."""
    figures = Diagnostics(1, None, 100, [Figures()])
    trainer = fit(Foreign(), [figures], tmp_path / "one", max_steps=3)
    assert history_steps(figures) == {(0, 1, 2)}
    trainer.save_checkpoint(tmp_path / "three.ckpt")
    fit(Foreign(), [figures], tmp_path / "two", max_steps=2)
    assert history_steps(figures) == {(0, 1)}  # the second fit's steps alone
    resumed = Diagnostics(1, None, 100, [Figures()])
    fit(Foreign(), [resumed], tmp_path / "resumed", max_steps=5, ckpt_path=tmp_path / "three.ckpt")
    assert history_steps(resumed) == {(0, 1, 2, 3, 4)}  # restored after the reset, then continued


def test_the_state_key_names_the_probes_and_is_computed_once():
    """Lightning reads every callback's key at each hook call, six a training step: a cached string, not a join."""
    diagnostics = Diagnostics(1, None, None, [Activations(family="attn"), UpdateRatios()])
    assert diagnostics.state_key == "Diagnostics[attn,update_ratio]"
    assert diagnostics.__dict__["state_key"] is diagnostics.state_key  # computed once, then read


class Padded(L.LightningModule):
    """A tiny next-token model over sequences padded with target -1 (the loss ignores those positions)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.emb, self.net = nn.Embedding(5, 4), nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 5))
        with torch.no_grad():
            self.net[0].weight.mul_(3.0)  # some tanh units in their flat tails

    def training_step(self, batch, batch_idx):
        x, y = batch
        logits = self.net(self.emb(x))
        return F.cross_entropy(logits.view(-1, 5), y.view(-1), ignore_index=-1)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


SEQ_X = torch.tensor([[0, 3, 1, 4], [0, 2, 0, 0], [0, 1, 2, 0]])
SEQ_Y = torch.tensor([[3, 1, 4, 0], [2, 0, -1, -1], [1, 2, 0, -1]])  # 9 of 12 positions count


@pytest.mark.parametrize("masking", [{"ignore_index": -1}, {"mask_fn": lambda batch: batch[1] >= 0}])
def test_padded_positions_are_left_out_of_the_statistics(tmp_path, masking):
    module = Padded()
    p = {k: v.detach().clone().requires_grad_() for k, v in module.named_parameters()}
    h = torch.tanh(p["emb.weight"][SEQ_X] @ p["net.0.weight"].T + p["net.0.bias"])  # (3, 4, 6), by hand
    h.retain_grad()
    logits = h @ p["net.2.weight"].T + p["net.2.bias"]
    F.cross_entropy(logits.view(-1, 5), SEQ_Y.view(-1), ignore_index=-1).backward()
    keep = SEQ_Y != -1
    t, g = h.detach()[keep], h.grad[keep]  # (9, 6): the positions that count
    expected = {"act/00.net.1/mean": t.mean(), "act/00.net.1/std": t.std(),
                "act/00.net.1/saturation": (t.abs() > 0.97).float().mean(),
                "act/00.net.1/dead": (t.abs() > 0.97).all(0).float().mean(),
                "grad/00.net.1/mean": g.mean(), "grad/00.net.1/std": g.std()}
    assert abs(t.std() - h.detach().std()) > 0.01 and abs(g.std() - h.grad.std()) > 1e-4  # padding would show
    assert 0 < expected["act/00.net.1/saturation"] < 1
    train = DataLoader([(SEQ_X, SEQ_Y)] * 3, batch_size=None)
    fit(module, [Diagnostics(1, 1, None, probes=[Activations(), Gradients()], **masking)], tmp_path, train=train,
        val=train)
    acc = read_events(tmp_path)
    for tag, value in expected.items():
        assert close(scalars(acc, tag)[0], value.item()), tag
    assert acc.Histograms("act/00.net.1")[0].histogram_value.num == t.numel()


def test_a_mask_keeps_the_positions_of_per_position_tensors_and_the_pairs_of_attention_logits():
    mask = torch.tensor([[True, True, False]])  # one sequence, its last position padding
    units = torch.arange(6.0).view(1, 3, 2)  # (B, T, C)
    assert keep_positions(units, mask).tolist() == [[0.0, 1.0], [2.0, 3.0]]
    pairs = torch.arange(18.0).view(1, 2, 3, 3)  # (B, heads, T, T): entry [0, h, i, j] = 9h + 3i + j
    assert keep_positions(pairs, mask).tolist() == [0.0, 1.0, 3.0, 4.0, 9.0, 10.0, 12.0, 13.0]  # i, j in {0, 1}
    assert keep_positions(torch.zeros(2, 3, 4, 5), mask) is None  # no dimension fits: not masked (and warned)


# ---------------------------------------------------------------------------
# when the callbacks look, and that they leave nothing behind


def forward_hooks(module: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in module.modules())


class HookCount(L.Callback):
    """The number of forward hooks on the module in the middle of each optimizer step."""

    def __init__(self):
        self.hooks = {}

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        self.hooks[trainer.global_step] = forward_hooks(pl_module)


def test_hooks_live_only_on_logging_steps_and_the_last_step_is_one(tmp_path):
    probe = HookCount()
    module = Foreign()
    fit(module, [probe, Diagnostics(4, None, None, [Activations(), Gradients(), UpdateRatios()])], tmp_path, max_steps=10)
    assert sorted(step for step, n in probe.hooks.items() if n) == [0, 4, 8, 9]  # every 4 steps and the last
    assert forward_hooks(module) == 0  # all removed
    acc = read_events(tmp_path)
    for tag in ("act/01.net.4/std", "grad/00.net.2/std", "update_ratio/00.net.0.weight"):
        assert list(scalars(acc, tag)) == [0, 4, 8, 9], tag


def test_scalars_histograms_and_figures_each_keep_their_own_interval_and_hooks_live_on_their_union(tmp_path):
    """Issue 19: scalars every 4 and histograms every 6 on a 20-step run wrote histograms at 0, 12, 19."""
    probe, module = HookCount(), Foreign()
    diagnostics = Diagnostics(every_n_steps=4, histogram_every_n_steps=6, figures_every_n_steps=10)
    fit(module, [probe, diagnostics], tmp_path, max_steps=20)
    acc = read_events(tmp_path)
    assert list(scalars(acc, "act/01.net.4/std")) == [0, 4, 8, 12, 16, 19]  # and at the last step, index 19
    assert list(scalars(acc, "update_ratio/00.net.0.weight")) == [0, 4, 8, 12, 16, 19]
    for tag in ("act/01.net.4", "preact/01.net.4", "grad/00.net.2", "weight_grad/00.net.0.weight"):
        assert [e.step for e in acc.Histograms(tag)] == [0, 6, 12, 18, 19], tag
    drawn = sorted(e.step for tag in acc.Tags()["images"] if tag.endswith("/activations") for e in acc.Images(tag))
    assert drawn == [0, 10, 19]
    union = [0, 4, 6, 8, 10, 12, 16, 18, 19]
    assert sorted(step for step, n in probe.hooks.items() if n) == union  # no hook on any other step
    assert forward_hooks(module) == 0


class Snapshots(Probe):
    """A probe of one's own: asks for the weights before the update, keeps what it was given."""

    def __init__(self, key):
        self.key, self.seen = key, []

    def wants_snapshot(self, due):
        return True

    def after_update(self, step):
        self.seen.append(step.before)


def test_probes_share_one_copy_of_the_weights_per_step(tmp_path):
    first, second = Snapshots("a"), Snapshots("b")
    module = Foreign()
    before = module.net[3].weight.detach().clone()
    fit(module, [Diagnostics(2, None, None, probes=[first, UpdateRatios(), second])], tmp_path, max_steps=3)
    assert len(first.seen) == 2  # steps 0 and 2 (the last)
    assert all(a is b for a, b in zip(first.seen, second.seen))  # the same copy, not one per probe
    assert torch.equal(first.seen[0]["net.3.weight"], before)  # taken before the first update


def test_validation_does_not_reach_the_statistics(tmp_path):
    module = Foreign()
    _, h = hand_pass(module)
    other = torch.randn(6, 4) * 5  # validation batches that would change every statistic
    trainer = L.Trainer(max_steps=1, logger=TensorBoardLogger(tmp_path, name="", version=""),
                        callbacks=[Diagnostics(1, None, None, [Activations()])], enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, num_sanity_val_steps=2, val_check_interval=1,
                        check_val_every_n_epoch=None)
    trainer.fit(module, train_dataloaders=batches(3), val_dataloaders=batches(2, x=other))
    assert close(scalars(read_events(tmp_path), "act/01.net.4/std")[0], h["t"].std().item())


def test_figures_are_images_of_the_logging_steps(tmp_path):
    fit(Foreign(), [Diagnostics(1, None, 3, [Figures()])], tmp_path, max_steps=5)
    acc = read_events(tmp_path)
    # step 0 in cards of its own (no update-ratio history yet), the later steps under figures/
    assert sorted(acc.Tags()["images"]) == sorted([f"figures/{f}" for f in FIGURES] +
                                                  [f"at_step_0/{f}" for f in FIGURES if f != "update_ratios"])
    for name in FIGURES:
        events = acc.Images(f"figures/{name}")
        assert [e.step for e in events] == [3, 4]
        assert events[0].width > 300 and events[0].height > 200


def test_without_a_logger_the_callbacks_do_nothing_and_the_run_completes(tmp_path):
    module, diagnostics = Foreign(), Diagnostics(1, 1, 1)
    fit(module, [Diagnostics(1, 2000, None, [Activations()]), Diagnostics(1, 2000, None, [Gradients()]),
                 Diagnostics(1, None, None, [UpdateRatios()]), Diagnostics(1, None, 1, [Figures()]), diagnostics], tmp_path,
        max_steps=2, loggers=False)
    assert not list(tmp_path.glob("events.out.tfevents.*"))
    assert diagnostics.current is None and not diagnostics.eager  # never recorded, never forced eager


@pytest.mark.parametrize("make,match", [
    (lambda: Diagnostics(every_n_steps=0), r"every_n_steps=0 must be a positive integer"),
    (lambda: Diagnostics(histogram_every_n_steps=-5), r"histogram_every_n_steps=-5 must be a positive integer"),
    (lambda: Activations(saturation_threshold=1.5), r"saturation_threshold=1.5 must be in \(0, 1\)"),
    (lambda: Activations(modules=["a"], pattern="b"), r"not both"),
    (lambda: Gradients(pattern="("), r"pattern='\(' is not a regular expression"),
    (lambda: Diagnostics(every_n_steps=True), r"every_n_steps=True must be a positive integer"),
    (lambda: Figures(saturation_layer=1.5), r"saturation_layer=1.5 must be an integer"),
    (lambda: Diagnostics(figures_every_n_steps=0), r"figures_every_n_steps=0 must be a positive integer"),
    (lambda: Diagnostics(figures_every_n_steps=None), r"figures_every_n_steps=None draws no figures"),
    (lambda: Diagnostics(histogram_every_n_steps=2.5), r"histogram_every_n_steps=2.5 must be a positive integer"),
    (lambda: Diagnostics(probes=[Activations(), Activations(pattern="x")]), r"same tags \(act\)"),
    (lambda: Diagnostics(probes=[Activations, Gradients()]), r"is not a probe"),
    (lambda: Diagnostics(probes=[Probe()]), r"Probe has no key"),
    (lambda: Diagnostics(ignore_index=-1.0), r"ignore_index=-1.0 must be an integer"),
    (lambda: Diagnostics(ignore_index=-1, mask_fn=lambda b: b[1] >= 0), r"not both"),
])
def test_bad_arguments_are_refused_with_the_value_and_the_range(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_the_callbacks_import_nothing_of_namegen():
    import ast

    for path in Path(__file__).resolve().parents[1].joinpath("callbacks").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                assert not any(n.split(".")[0] == "namegen" for n in names), (path, names)


# ---------------------------------------------------------------------------
# makemore's net at step 0 (reference facts): naive init saturates its tanh units, kaiming or batchnorm do not


@pytest.fixture(scope="module")
def names(names_txt):
    from namegen.data import CharDataModule

    return CharDataModule(source="file", path=str(names_txt), block_size=3, batch_size=32, seed=42).prepare()


def step0_saturation(names, tmp_path: Path, init: str, norm: str) -> list[float]:
    from namegen.module import NameGen

    L.seed_everything(42, verbose=False)
    module = NameGen({"arch": "mlp", "vocab_size": len(names.vocab), "norm": norm}, names.vocab.to_list(),
                     optimizer={"_target_": "torch.optim.SGD", "lr": 0.1}, init={"scheme": init})
    fit(module, [Diagnostics(1000, None, None, [Activations()])], tmp_path,
        train=names.train_dataloader(), val=names.val_dataloader())
    acc = read_events(tmp_path)
    return [scalars(acc, f"act/{i:02d}.model.hidden.{i}.act/saturation")[0] for i in range(5)]


def test_naive_init_saturates_the_tanh_and_kaiming_or_batchnorm_do_not(names, tmp_path):
    naive = step0_saturation(names, tmp_path / "naive", "naive", "none")
    kaiming = step0_saturation(names, tmp_path / "kaiming", "kaiming", "none")
    batchnorm = step0_saturation(names, tmp_path / "bn", "naive", "batchnorm")
    assert min(naive) > 0.6  # makemore part 3: most of the naive net's tanh units sit in the flat tails
    assert max(kaiming) < 0.3 and max(batchnorm) < 0.1
