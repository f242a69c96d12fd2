"""Diagnostics on networks nobody here wrote (issue 26): runs that blow up, modules called twice, conv layouts,
every activation kind, attention, names that hold still, the loss of any module, Hugging Face models.

Expected numbers are computed here by hand from the test's own tensors, never by the callbacks' helpers.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import lightning as L
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from lightning.pytorch.loggers import TensorBoardLogger
from torch.utils.data import DataLoader

from conftest import read_events
from namegen.callbacks import Activations, Attention, Diagnostics, Gradients
from namegen.callbacks.diagnostics import default_probes


class User(L.LightningModule):
    """A user's module around any network: cross-entropy of its output, plain SGD."""

    def __init__(self, net: nn.Module, lr: float = 0.1):
        super().__init__()
        self.net, self.lr = net, lr

    def training_step(self, batch, batch_idx):
        return F.cross_entropy(self.net(batch[0]), batch[1])

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.lr)


def fit(module, diagnostics, log_dir: Path, data, steps: int = 1, **kwargs) -> list[str]:
    """Fit with a TensorBoard logger; the warnings raised, as text."""
    trainer = L.Trainer(accelerator="cpu", devices=1, max_steps=steps, callbacks=[diagnostics],
                        logger=TensorBoardLogger(log_dir, name="", version=""), enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                        log_every_n_steps=1, **kwargs)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(module, train_dataloaders=data)
    return [str(w.message) for w in caught]


def batches(x, y, n: int = 8) -> DataLoader:
    return DataLoader([(x, y)] * n, batch_size=None)


def series(log_dir: Path, tag: str) -> dict[int, float]:
    return {e.step: e.value for e in read_events(log_dir).Scalars(tag)}


def scalar_tags(log_dir: Path) -> list[str]:
    return read_events(log_dir).Tags()["scalars"]


def close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-4, abs_tol=1e-6)


torch.manual_seed(0)
X, Y = torch.randn(16, 4), torch.randint(0, 3, (16,))


# ---------------------------------------------------------------------------
# 1. a run that blows up: the fit goes on, the first bad step and layer are recorded


class Blows(nn.Module):
    """Linear -> Tanh -> Linear -> ReLU -> Linear; the first Linear's weights go NaN before step 2."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 3))

    def forward(self, x):
        return self.net(x)


class Poison(L.Callback):
    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == 2:
            with torch.no_grad():
                pl_module.net.net[0].weight[0, 0] = math.nan  # one weight: unit 0 of the tanh goes NaN


def test_a_run_that_goes_non_finite_finishes_its_fit_and_records_where(tmp_path):
    module = User(Blows())
    trainer = L.Trainer(accelerator="cpu", devices=1, max_steps=5, enable_checkpointing=False,
                        callbacks=[Poison(), Diagnostics(1, 1, 1)], logger=TensorBoardLogger(tmp_path, name="", version=""),
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0, log_every_n_steps=1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(module, train_dataloaders=batches(X, Y))
    assert trainer.global_step == 5  # the fit ran to its end, as without the callback
    tanh = series(tmp_path, "act/00.net.net.1/nonfinite")
    # from step 2 on, the tanh's unit 0 of 8 is NaN for every example: 1/8 of its entries
    assert list(tanh) == [2, 3, 4] and close(tanh[2], 1 / 8)
    assert min(t for t in scalar_tags(tmp_path) if t.endswith("/nonfinite")).startswith("act/00.")  # the first layer
    # the finite part's statistics go on: the tanh's 7 finite units
    assert 2 in series(tmp_path, "act/00.net.net.1/std")
    loss = series(tmp_path, "diagnostics/loss")
    assert math.isfinite(loss[1]) and math.isnan(loss[2])  # the loss as it was, written even when not finite
    said = [str(w.message) for w in caught if "non-finite" in str(w.message)]
    assert len(said) == 1 and "step 2" in said[0] and "act/00.net.net.1" in said[0]


# ---------------------------------------------------------------------------
# 2. every call of a module


class SharedTanh(nn.Module):
    """One Tanh called twice: the second call on 30x its input, so it is saturated."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(1)
        self.a, self.b, self.out = nn.Linear(4, 8), nn.Linear(8, 8), nn.Linear(8, 3)
        self.act = nn.Tanh()

    def forward(self, x):
        return self.out(self.act(30 * self.b(self.act(self.a(x)))))


def test_a_module_called_twice_gives_one_series_per_call(tmp_path):
    net = SharedTanh()
    with torch.no_grad():
        h1 = torch.tanh(X @ net.a.weight.T + net.a.bias)
        h2 = torch.tanh(30 * (h1 @ net.b.weight.T + net.b.bias))
    first, second = (h1.abs() > 0.97).float().mean().item(), (h2.abs() > 0.97).float().mean().item()
    assert first < 0.3 < 0.6 < second  # the second call saturated, the first not
    fit(User(net), Diagnostics(1, None, None, [Activations(), Gradients()]), tmp_path, batches(X, Y))
    assert close(series(tmp_path, "act/00.net.act@1/saturation")[0], first)
    assert close(series(tmp_path, "act/01.net.act@2/saturation")[0], second)
    assert close(series(tmp_path, "act/01.net.act@2/std")[0], h2.std().item())
    assert {t for t in scalar_tags(tmp_path) if t.startswith("grad/") and t.endswith("/std")} == {
        "grad/00.net.act@1/std", "grad/01.net.act@2/std"}


def test_torchvisions_basic_block_shows_every_relu_call_with_channels_as_units(tmp_path):
    from namegen.bench_foreign import ResNet

    net = ResNet()
    calls = []
    hooks = [m.register_forward_hook(lambda m, a, o, n=n: calls.append(n)) for n, m in net.named_modules()
             if isinstance(m, nn.ReLU)]
    net(torch.randn(2, 3, 16, 16))
    for h in hooks:
        h.remove()
    assert len(calls) == 9  # the stem's ReLU, then each of 4 blocks' one ReLU twice
    x, y = torch.randn(4, 3, 16, 16), torch.randint(0, 10, (4,))
    fit(User(net), Diagnostics(1, None, None, [Activations()]), tmp_path, batches(x, y))
    acts = sorted(t.removesuffix("/std") for t in scalar_tags(tmp_path) if t.startswith("act/") and t.endswith("/std"))
    assert len(acts) == 9 and acts[:3] == ["act/00.net.relu", "act/01.net.layer1.0.relu@1", "act/02.net.layer1.0.relu@2"]


def test_gradient_accumulation_is_not_taken_for_a_second_call(tmp_path):
    net = Blows()
    fit(User(net), Diagnostics(1, None, None, [Activations()]), tmp_path, batches(X, Y), accumulate_grad_batches=2)
    assert {t for t in scalar_tags(tmp_path) if t.endswith("/std")} == {"act/00.net.net.1/std", "act/01.net.net.3/std"}


# ---------------------------------------------------------------------------
# 3. units by layout


class Conv(nn.Module):
    """Conv2d(3, 16) -> ReLU -> pool -> Linear; 6 of the 16 channels held below zero: dead for every example."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(2)
        self.conv, self.act = nn.Conv2d(3, 16, 3, padding=1), nn.ReLU()
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 3))
        with torch.no_grad():
            self.conv.bias[:6] = -100.0

    def forward(self, x):
        return self.head(self.act(self.conv(x)))


def test_a_conv_activation_counts_channels_as_units(tmp_path):
    x, y = torch.randn(4, 3, 8, 8), torch.randint(0, 3, (4,))
    with torch.no_grad():
        z = Conv().conv(x)
    assert (z[:, 6:] > 0).any(dim=(0, 2, 3)).all() and (z[:, :6] <= 0).all()  # exactly 6 channels dead
    fit(User(Conv()), Diagnostics(1, None, None, [Activations()]), tmp_path / "auto", batches(x, y))
    assert close(series(tmp_path / "auto", "act/00.net.act/dead")[0], 6 / 16)
    # the rule overridden: the last dimension (the image's columns) as units, where none is dead
    fit(User(Conv()), Diagnostics(1, None, None, [Activations()], units={nn.ReLU: -1}), tmp_path / "last",
        batches(x, y))
    assert series(tmp_path / "last", "act/00.net.act/dead")[0] == 0.0


# ---------------------------------------------------------------------------
# 4. every kind of activation


class Squared(nn.Module):
    """A ReLU² of someone's own: nobody told the callback what it is."""

    def forward(self, x):
        return torch.relu(x) ** 2


class Wobble(nn.Module):
    """An activation of no known kind."""

    def forward(self, x):
        return torch.sin(x) + x


class Kinds(nn.Module):
    def __init__(self, acts: list[nn.Module]):
        super().__init__()
        torch.manual_seed(3)
        self.lin = nn.ModuleList(nn.Linear(4, 4) for _ in acts)
        self.acts = nn.ModuleList(acts)
        self.out = nn.Linear(4, 3)
        with torch.no_grad():
            for lin in self.lin:
                lin.weight.mul_(5)  # inputs reaching every flat region (|x| up to ~15)

    def forward(self, x):
        return self.out(sum(act(lin(x)) for lin, act in zip(self.lin, self.acts)))


def test_every_activation_kind_has_its_true_flat_region(tmp_path):
    from transformers.activations import GELUActivation, NewGELUActivation

    acts = [nn.ReLU6(), nn.Hardtanh(-2.0, 2.0), nn.Hardswish(), nn.Hardsigmoid(), nn.SELU(), nn.CELU(2.0),
            nn.PReLU(), nn.RReLU(), nn.LeakyReLU(), NewGELUActivation(), GELUActivation(), Squared(), Wobble(),
            nn.Softplus(beta=2.0)]
    net = Kinds(acts)
    flat = {  # each by hand, from the function's derivative
        0: lambda z: (z <= 0) | (z >= 6), 1: lambda z: (z <= -2) | (z >= 2), 2: lambda z: z <= -3,
        3: lambda z: (z <= -3) | (z >= 3), 4: lambda z: z < -3, 5: lambda z: z < -6, 9: lambda z: z < -3,
        10: lambda z: z < -3, 11: lambda z: z <= 0, 13: lambda z: z < -1.5,
    }
    with torch.no_grad():
        z = [lin(X) for lin in net.lin]
    diagnostics = Diagnostics(1, None, None, [Activations()])
    said = fit(User(net), diagnostics, tmp_path, batches(X, Y))
    assert diagnostics.kinds == {"net.acts.0": "relu6", "net.acts.1": "hardtanh", "net.acts.2": "hardswish",
                                 "net.acts.3": "hardsigmoid", "net.acts.4": "selu", "net.acts.5": "celu",
                                 "net.acts.6": "prelu", "net.acts.7": "rrelu", "net.acts.8": "leakyrelu",
                                 "net.acts.9": "gelu", "net.acts.10": "gelu", "net.acts.11": "relu2",
                                 "net.acts.13": "softplus"}
    tags = scalar_tags(tmp_path)
    index = {t.split("/")[1].split(".", 1)[1]: t.split("/")[1] for t in tags if t.startswith("act/")}
    for i, rule in flat.items():
        expected = rule(z[i]).float().mean().item()
        assert close(series(tmp_path, f"act/{index[f'net.acts.{i}']}/saturation")[0], expected), (acts[i], expected)
    assert 0 < series(tmp_path, f"act/{index['net.acts.0']}/saturation")[0] < 1
    for leaky in (6, 7, 8):  # never flat: mean and std, no saturation, no dead
        assert f"act/{index[f'net.acts.{leaky}']}/saturation" not in tags
    unknown = [s for s in said if "no known kind" in s]
    assert len(unknown) == 1 and "net.acts.12" in unknown[0]


def test_a_fully_dead_relu6_reads_dead_and_a_declared_kind_is_used(tmp_path):
    net = nn.Sequential(nn.Linear(4, 5), nn.ReLU6(), Wobble(), nn.Linear(5, 3))
    with torch.no_grad():
        net[0].bias.fill_(-100.0)  # every input below zero: the whole ReLU6 layer is flat
    fit(User(net), Diagnostics(1, None, None, [Activations()], activations={Wobble: "relu"}), tmp_path,
        batches(X, Y))
    assert series(tmp_path, "act/00.net.1/saturation")[0] == 1.0 and series(tmp_path, "act/00.net.1/dead")[0] == 1.0
    assert "act/01.net.2/dead" in scalar_tags(tmp_path)  # watched as the ReLU it was declared


def test_rmsnorm_torchs_and_llamas_count_as_norms(tmp_path):
    from transformers.models.llama.modeling_llama import LlamaRMSNorm

    net = nn.Sequential(nn.Linear(4, 6), nn.RMSNorm(6), nn.ReLU(), nn.Linear(6, 6), LlamaRMSNorm(6), nn.Linear(6, 3))
    with torch.no_grad():
        h = net[0](X)
        h2 = net[3](net[2](net[1](h)))
    fit(User(net), Diagnostics(1, None, None, [Activations()]), tmp_path, batches(X, Y))
    assert close(series(tmp_path, "norm/00.net.1/in_std")[0], h.std().item())
    assert close(series(tmp_path, "norm/01.net.4/in_std")[0], h2.std().item())


# ---------------------------------------------------------------------------
# 5. attention


class MHA(nn.Module):
    def __init__(self, batch_first: bool):
        super().__init__()
        torch.manual_seed(4)
        self.batch_first = batch_first
        self.attn = nn.MultiheadAttention(8, 2, batch_first=batch_first)
        self.out = nn.Linear(8, 3)

    def forward(self, x):
        h = x if self.batch_first else x.transpose(0, 1)
        a, _ = self.attn(h, h, h, need_weights=False)
        return self.out((a if self.batch_first else a.transpose(0, 1)).mean(1))


@pytest.mark.parametrize("batch_first", [True, False])
def test_multihead_attention_logits_are_q_dot_k_of_its_projections(tmp_path, batch_first):
    x, y = torch.randn(3, 5, 8), torch.randint(0, 3, (3,))
    net = MHA(batch_first)
    w, b = net.attn.in_proj_weight.detach(), net.attn.in_proj_bias.detach()
    q = (x @ w[:8].T + b[:8]).view(3, 5, 2, 4).transpose(1, 2)
    k = (x @ w[8:16].T + b[8:16]).view(3, 5, 2, 4).transpose(1, 2)
    logits = q @ k.transpose(-2, -1) / 2.0  # sqrt(head dim 4)
    fit(User(net), Diagnostics(1, None, None, [Attention()]), tmp_path, batches(x, y))
    assert close(series(tmp_path, "attn/00.net.attn/std")[0], logits.std().item())


def tiny_gpt2(implementation: str, scale: float = 1.0):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(5)
    net = GPT2LMHeadModel(GPT2Config(vocab_size=27, n_positions=8, n_embd=32, n_layer=2, n_head=2, attn_pdrop=0.0,
                                     resid_pdrop=0.0, embd_pdrop=0.0, attn_implementation=implementation))
    with torch.no_grad():
        for p in net.parameters():
            if p.dim() >= 2:
                p.mul_(scale)
    return net


class LM(L.LightningModule):
    def __init__(self, net):
        super().__init__()
        self.model = net

    def training_step(self, batch, batch_idx):
        logits = self.model(input_ids=batch[:, :-1]).logits
        return F.cross_entropy(logits.reshape(-1, 27), batch[:, 1:].reshape(-1))

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=1e-3)


TOKENS = torch.randint(0, 27, (4, 9), generator=torch.Generator().manual_seed(6))


def test_hugging_face_gpt2_is_observed_whole_and_a_fused_attention_says_so(tmp_path):
    net = tiny_gpt2("eager")
    diagnostics = Diagnostics(1, None, None, default_probes()[:4])
    # the attention logits by hand, before the update: block 0, q and k from c_attn on ln_1 of the embeddings
    block = net.transformer.h[0]
    with torch.no_grad():
        x = TOKENS[:, :-1]
        h = block.ln_1(net.transformer.wte(x) + net.transformer.wpe(torch.arange(8)))
        q, k, _ = block.attn.c_attn(h).split(32, dim=-1)
        q, k = (t.view(4, 8, 2, 16).transpose(1, 2) for t in (q, k))
        s = q @ k.transpose(-2, -1) / 4.0
        causal = torch.ones(8, 8, dtype=torch.bool).tril()
        s = s.masked_fill(~causal, math.nan)
        centred = s - s.nanmean(-1, keepdim=True)
    fit(LM(net), diagnostics, tmp_path / "eager", DataLoader([TOKENS] * 2, batch_size=None))
    tags = scalar_tags(tmp_path / "eager")
    # NewGELUActivation found by what it computes, the attention modules' tuples read, every LayerNorm
    assert {t for t in tags if t.startswith("act/") and t.endswith("/std")} == {
        "act/00.model.transformer.h.0.mlp.act/std", "act/01.model.transformer.h.1.mlp.act/std"}
    assert {t for t in tags if t.startswith("attn/") and t.endswith("/std")} == {
        "attn/00.model.transformer.h.0.attn/std", "attn/01.model.transformer.h.1.attn/std"}
    assert len([t for t in tags if t.startswith("norm/")]) == 5
    assert close(series(tmp_path / "eager", "attn/00.model.transformer.h.0.attn/std")[0],
                 centred[causal.expand_as(centred)].std().item())
    assert close(series(tmp_path / "eager", "diagnostics/uniform_loss")[0], math.log(27))

    said = fit(LM(tiny_gpt2("sdpa")), Diagnostics(1, None, None, [Attention()]), tmp_path / "sdpa",
               DataLoader([TOKENS] * 2, batch_size=None))
    assert series(tmp_path / "sdpa", "attn/00.model.transformer.h.0.attn/fused") == {0: 1.0}
    assert len([s for s in said if "attention not observed (fused)" in s]) == 1


def test_gpt2_with_weights_x20_records_what_its_verdict_needs(tmp_path):
    """Issue 26: a GPT-2 x20 read `healthy`: its activations, attention and loss were not observed."""
    fit(LM(tiny_gpt2("eager", 20.0)), Diagnostics(1, None, None, default_probes()[:4]), tmp_path,
        DataLoader([TOKENS] * 2, batch_size=None))
    loss, uniform = series(tmp_path, "diagnostics/loss")[0], series(tmp_path, "diagnostics/uniform_loss")[0]
    assert loss > 1.5 * uniform  # a confident start, as the diagnosis's init_loss_ratio judges it
    assert len([t for t in scalar_tags(tmp_path) if t.startswith("act/") and t.endswith("/saturation")]) == 2


def test_gpt2_with_weights_x20_is_not_healthy(tmp_path):
    from namegen.diagnosis import diagnose
    from namegen.events import read_scalars

    diagnostics = Diagnostics(1, None, None, default_probes()[:4])
    fit(LM(tiny_gpt2("eager", 20.0)), diagnostics, tmp_path, DataLoader([TOKENS] * 3, batch_size=None), steps=3)
    d = diagnose(read_scalars(tmp_path), {"activations": diagnostics.kinds})
    assert "confident_start" in {f.name for f in d.findings}  # step-0 loss > 1.5 log V, read from tags.LOSS


# ---------------------------------------------------------------------------
# 7. names that hold still


class LayerDrop(nn.Module):
    """Three Linear+ReLU layers; the middle one skipped on the second step."""

    def __init__(self):
        super().__init__()
        self.layers = nn.ModuleList(nn.Sequential(nn.Linear(4, 4), nn.ReLU()) for _ in range(3))
        self.out, self.calls = nn.Linear(4, 3), 0

    def forward(self, x):
        self.calls += 1
        for i, layer in enumerate(self.layers):
            if not (i == 1 and self.calls == 2):
                x = layer(x)
        return self.out(x)


def test_a_skipped_layer_leaves_a_gap_and_renames_nothing(tmp_path):
    fit(User(LayerDrop()), Diagnostics(1, None, None, [Activations()]), tmp_path, batches(X, Y), steps=3)
    assert list(series(tmp_path, "act/00.net.layers.0.1/std")) == [0, 1, 2]
    assert list(series(tmp_path, "act/01.net.layers.1.1/std")) == [0, 2]  # skipped at step 1: a gap
    assert list(series(tmp_path, "act/02.net.layers.2.1/std")) == [0, 1, 2]  # the same name throughout
    assert len({t for t in scalar_tags(tmp_path) if t.endswith("/std")}) == 3


# ---------------------------------------------------------------------------
# 8. the loss of any module


class Manual(User):
    """Manual optimization: the training step returns nothing and logs its loss as `my_loss`."""

    def __init__(self, net):
        super().__init__(net)
        self.automatic_optimization = False

    def training_step(self, batch, batch_idx):
        loss = F.cross_entropy(self.net(batch[0]), batch[1])
        self.log("my_loss", loss)
        opt = self.optimizers()
        opt.zero_grad()
        self.manual_backward(loss)
        opt.step()


def test_the_loss_and_log_of_the_output_width_are_written_for_any_module(tmp_path):
    net = Blows()
    with torch.no_grad():
        copy = Blows()
        copy.load_state_dict(net.state_dict())
    expected0 = F.cross_entropy(copy(X), Y).item()  # step 0, before any update
    fit(User(net), Diagnostics(2, None, None, [Activations()]), tmp_path / "auto", batches(X, Y), steps=3)
    loss = series(tmp_path / "auto", "diagnostics/loss")
    assert list(loss) == [0, 2] and close(loss[0], expected0)
    assert series(tmp_path / "auto", "diagnostics/uniform_loss") == {0: pytest.approx(math.log(3)),
                                                                     2: pytest.approx(math.log(3))}
    said = fit(Manual(Blows()), Diagnostics(1, None, None, [Activations()], loss_key="my_loss", output_width=None),
               tmp_path / "manual", batches(X, Y), steps=2)
    assert len(series(tmp_path / "manual", "diagnostics/loss")) == 2
    assert "diagnostics/uniform_loss" not in scalar_tags(tmp_path / "manual")
    assert not [s for s in said if "no training loss" in s]


@pytest.mark.parametrize("make,match", [
    (lambda: Diagnostics(activations={nn.Tanh: "tan"}), r"'tan' is not a kind; known kinds: tanh"),
    (lambda: Diagnostics(activations=["gelu"]), r"must map module types or names to kinds"),
    (lambda: Diagnostics(units={"a": "channels"}), r"units=.* must map module names or types to the units' dim"),
    (lambda: Diagnostics(loss_key=""), r"loss_key='' must be the name of a logged metric"),
    (lambda: Diagnostics(output_width=1), r"output_width=1 must be 'auto', None or a number of classes >= 2"),
])
def test_bad_arguments_are_refused(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_a_transformer_layers_activation_function_is_watched(tmp_path):
    """nn.TransformerEncoderLayer(activation="gelu") applies F.gelu, no module: recorded from linear1's output."""
    torch.manual_seed(7)
    layer = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, activation="gelu", batch_first=True)
    net = nn.Sequential(nn.TransformerEncoder(layer, 1, enable_nested_tensor=False), nn.Flatten(), nn.Linear(40, 3))
    x, y = torch.randn(3, 5, 8), torch.randint(0, 3, (3,))
    with torch.no_grad():
        block = net[0].layers[0]
        h = block.norm1(x + block.self_attn(x, x, x, need_weights=False)[0])
        z = block.linear1(h)  # the pre-activation, by hand
    fit(User(net), Diagnostics(1, None, None, [Activations()]), tmp_path, batches(x, y))
    assert close(series(tmp_path, "act/00.net.0.layers.0.activation/std")[0], F.gelu(z).std().item())
    assert close(series(tmp_path, "act/00.net.0.layers.0.activation/saturation")[0], (z < -3).float().mean().item())
