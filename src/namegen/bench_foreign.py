"""`Diagnostics` on third-party networks nobody here wrote: what it observes, what the diagnosis says, what it costs.

    python -m namegen.bench_foreign [--data ../shared/data/names.txt] [--steps 240] [--out table.txt]

Each model is built in code from a tiny config (no download) inside a plain LightningModule of the kind a
user writes, with `Diagnostics()` as the user attaches it (its own default probes) and a TensorBoard logger:

    gpt2         Hugging Face GPT2LMHeadModel (NewGELUActivation, eager attention), next character of names
    llama        Hugging Face LlamaForCausalLM (SiLU MLP, LlamaRMSNorm, eager attention), the same task
    bert         Hugging Face BertForMaskedLM (GELUActivation, BertSelfAttention), masked characters
    torch-enc    nn.TransformerEncoder (nn.MultiheadAttention, GELU), causal, next character
    resnet       a ResNet written as torchvision writes it (BasicBlock calling one inplace ReLU twice), on
                 synthetic 10-class images (torchvision's wheel needs a CUDA torch)
    mlp-compile  makemore's tanh MLP with LayerNorm, `self.model = torch.compile(mlp)` in the module

For each, four runs: healthy, weights x20 at init, lr x100, lr x1e-4 (faults seeded, the verdict expected:
anything but healthy); the verdict is `namegen.diagnosis.diagnose` on the run's event files, with the
activation kinds Diagnostics found (its loss rules read the loss Diagnostics writes, `tags.LOSS`). Then the
cost: the same healthy fit with and without Diagnostics, in turn in this process, timing (CPU time) only the
steps that record nothing (Diagnostics' default intervals put no recording step in the timed window); the
ratio is steps/s with Diagnostics over without (1.0: free).
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
import warnings
from collections import Counter
from pathlib import Path
from typing import Any, Callable

import lightning as L
import torch
import torch.nn as nn
import torch.nn.functional as F
from lightning.pytorch.loggers import TensorBoardLogger
from torch.utils.data import DataLoader, IterableDataset

from namegen.callbacks import Diagnostics
from namegen.callbacks.tags import LOSS, TAG
from namegen.diagnosis import diagnose
from namegen.events import read_scalars

BLOCK, BATCH = 16, 32
FAULTS = {"healthy": {}, "init x20": {"init_scale": 20.0}, "lr x100": {"lr_scale": 100.0}, "lr x1e-4": {"lr_scale": 1e-4}}
EVERY = 40  # statistics every this many steps in the verdict runs (Diagnostics' default, 500, is for long runs)
TIMED_MARGIN = 20  # steps left untimed at each end of a cost run (warm-up; the recording first and last steps)


# -- data ------------------------------------------------------------------------------------------------------------


def corpus(path: Path) -> tuple[torch.Tensor, int]:
    """names.txt as one stream of character ids, '.' (0) between names; and the vocabulary size."""
    text = "." + ".".join(w.strip().lower() for w in path.read_text().split() if w.strip()) + "."
    chars = sorted(set(text))
    ids = {c: i for i, c in enumerate(chars)}
    return torch.tensor([ids[c] for c in text]), len(chars)


class Windows(IterableDataset):
    """Endless batches of random windows (B, BLOCK + 1) of the stream, seeded."""

    def __init__(self, stream: torch.Tensor, seed: int):
        self.stream, self.seed = stream, seed

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed)
        offsets = torch.arange(BLOCK + 1)
        while True:
            start = torch.randint(0, len(self.stream) - BLOCK - 1, (BATCH,), generator=g)
            yield self.stream[start[:, None] + offsets]


class Images(IterableDataset):
    """Endless batches of synthetic 3x16x16 images of 10 classes: a fixed random prototype per class plus noise."""

    def __init__(self, seed: int):
        self.seed = seed

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed)
        prototypes = torch.randn(10, 3, 16, 16, generator=g)
        while True:
            y = torch.randint(0, 10, (BATCH,), generator=g)
            yield prototypes[y] + 1.5 * torch.randn(BATCH, 3, 16, 16, generator=g), y


# -- the users' modules ----------------------------------------------------------------------------------------------


class UserModule(L.LightningModule):
    """What a user writes around a network: a loss, AdamW, nothing of namegen."""

    def __init__(self, net: nn.Module, lr: float, loss: Callable[[nn.Module, Any], torch.Tensor]):
        super().__init__()
        self.model, self.lr, self.loss = net, lr, loss

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        return self.loss(self.model, batch)

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=self.lr, weight_decay=0.0)


def next_char(logits_of: Callable[[nn.Module, torch.Tensor], torch.Tensor]):
    def loss(model: nn.Module, batch: torch.Tensor) -> torch.Tensor:
        logits = logits_of(model, batch[:, :-1])
        return F.cross_entropy(logits.reshape(-1, logits.size(-1)), batch[:, 1:].reshape(-1))
    return loss


def masked_chars(vocab: int):
    """BERT's task: 15% of the characters replaced by a mask token (id `vocab`), predicted from both sides."""
    def loss(model: nn.Module, batch: torch.Tensor) -> torch.Tensor:
        x = batch[:, :-1]
        masked = torch.rand(x.shape, generator=torch.Generator().manual_seed(int(x.sum()))) < 0.15
        logits = model(input_ids=x.masked_fill(masked, vocab)).logits
        return F.cross_entropy(logits.reshape(-1, logits.size(-1)), x.masked_fill(~masked, -100).reshape(-1))
    return loss


def hf(name: str, vocab: int) -> tuple[nn.Module, Callable]:
    from transformers import (BertConfig, BertForMaskedLM, GPT2Config, GPT2LMHeadModel, LlamaConfig,
                              LlamaForCausalLM)

    eager = {"attn_implementation": "eager"}  # SDPA hides the attention weights ("attention not observed (fused)")
    if name == "gpt2":
        net = GPT2LMHeadModel(GPT2Config(vocab_size=vocab, n_positions=BLOCK, n_embd=64, n_layer=2, n_head=2,
                                         attn_pdrop=0.0, resid_pdrop=0.0, embd_pdrop=0.0, **eager))
    elif name == "llama":
        net = LlamaForCausalLM(LlamaConfig(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                           num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=BLOCK,
                                           **eager))
    else:
        net = BertForMaskedLM(BertConfig(vocab_size=vocab + 1, hidden_size=32, num_hidden_layers=2,
                                         num_attention_heads=2, intermediate_size=64, max_position_embeddings=BLOCK,
                                         hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, **eager))
        return net, masked_chars(vocab)
    return net, next_char(lambda m, x: m(input_ids=x).logits)


class EncoderLM(nn.Module):
    """A causal character model on torch's own nn.TransformerEncoder."""

    def __init__(self, vocab: int, d: int = 32):
        super().__init__()
        self.tok, self.pos = nn.Embedding(vocab, d), nn.Parameter(torch.zeros(BLOCK, d))
        layer = nn.TransformerEncoderLayer(d, 2, 64, dropout=0.0, activation="gelu", batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.head = nn.Linear(d, vocab)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mask = nn.Transformer.generate_square_subsequent_mask(x.size(1))
        return self.head(self.encoder(self.tok(x) + self.pos[: x.size(1)], mask=mask, is_causal=True))


class BasicBlock(nn.Module):
    """torchvision.models.resnet.BasicBlock, as torchvision writes it: one inplace ReLU, called twice."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x
        out = self.conv1(x)
        out = self.bn1(out)
        out = self.relu(out)
        out = self.conv2(out)
        out = self.bn2(out)
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        out = self.relu(out)
        return out


class ResNet(nn.Module):
    """torchvision's ResNet layout, two stages of two blocks, 8 and 16 channels."""

    def __init__(self, classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.relu = nn.ReLU(inplace=True)
        down = nn.Sequential(nn.Conv2d(8, 16, 1, 2, bias=False), nn.BatchNorm2d(16))
        self.layer1 = nn.Sequential(BasicBlock(8, 8), BasicBlock(8, 8))
        self.layer2 = nn.Sequential(BasicBlock(8, 16, 2, down), BasicBlock(16, 16))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer2(self.layer1(x))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def mlp(vocab: int) -> nn.Module:
    """makemore's MLP: 3 characters of context, embedding 10, 3 x [Linear 64, LayerNorm, Tanh], output."""
    layers: list[nn.Module] = [nn.Embedding(vocab, 10), nn.Flatten()]
    width = 30
    for _ in range(3):
        layers += [nn.Linear(width, 64), nn.LayerNorm(64), nn.Tanh()]
        width = 64
    return nn.Sequential(*layers, nn.Linear(64, vocab))


def build(name: str, stream: torch.Tensor, vocab: int, seed: int, lr_scale: float = 1.0,
          init_scale: float = 1.0) -> tuple[L.LightningModule, DataLoader]:
    """The user's module for `name`, its training batches, and a seeded fault (weights x init_scale, lr x lr_scale)."""
    torch.manual_seed(seed)
    data = DataLoader(Windows(stream, seed), batch_size=None)
    if name in ("gpt2", "llama", "bert"):
        net, loss = hf(name, vocab)
        lr = 1e-3
    elif name == "torch-enc":
        net, loss, lr = EncoderLM(vocab), next_char(lambda m, x: m(x)), 1e-3
    elif name == "resnet":
        net, lr = ResNet(), 1e-3
        loss = lambda m, batch: F.cross_entropy(m(batch[0]), batch[1])  # noqa: E731
        data = DataLoader(Images(seed), batch_size=None)
    else:
        net, lr = mlp(vocab), 1e-2
        loss = lambda m, batch: F.cross_entropy(m(batch[:, :3]), batch[:, 3])  # noqa: E731
    with torch.no_grad():
        for p in net.parameters():
            if p.dim() >= 2:
                p.mul_(init_scale)
    if name == "mlp-compile":
        net = torch.compile(net)  # as a user writes it: the module's model is the compiled one
    return UserModule(net, lr * lr_scale, loss), data


MODELS = ("gpt2", "llama", "bert", "torch-enc", "resnet", "mlp-compile")


# -- runs ------------------------------------------------------------------------------------------------------------


class Clock(L.Callback):
    """CPU time of the training steps in [start, end): the steps a cost run compares (one thread; CPU time, as the
    machine's other load would swing a wall clock by more than the difference measured)."""

    def __init__(self, start: int, end: int):
        self.start, self.end, self.t0, self.seconds = start, end, 0.0, math.nan

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.start:
            self.t0 = time.process_time()
        elif trainer.global_step == self.end:
            self.seconds = time.process_time() - self.t0


def fit(module: L.LightningModule, data: DataLoader, steps: int, log_dir: Path, callbacks: list) -> None:
    trainer = L.Trainer(accelerator="cpu", devices=1, max_steps=steps, logger=TensorBoardLogger(log_dir, name="", version=""),
                        callbacks=callbacks, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, log_every_n_steps=EVERY, limit_val_batches=0)
    trainer.fit(module, train_dataloaders=data)


def observed(scalars: dict[str, Any]) -> dict[str, int]:
    """Series per tag family (act, norm, attn, grad, update_ratio), and the attention modules seen as fused."""
    series: dict[str, set[int]] = {}
    fused = set()
    for tag in scalars:
        if m := TAG.match(tag):
            series.setdefault(m["family"], set()).add(int(m["index"]))
            if m["family"] == "attn" and m["stat"] == "fused":
                fused.add(int(m["index"]))
    counts = {family: len(indices) for family, indices in series.items()}
    return counts | ({"fused": len(fused)} if fused else {})


def verdict(name: str, fault: dict, stream, vocab, steps: int, root: Path) -> dict[str, Any]:
    module, data = build(name, stream, vocab, seed=0, **fault)
    # every probe, figures and histograms at the first and last step too: they must hold on a run that blows up
    diagnostics = Diagnostics(every_n_steps=EVERY, histogram_every_n_steps=steps, figures_every_n_steps=steps)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit(module, data, steps, root, [diagnostics])
    scalars = read_scalars(root)
    d = diagnose(scalars, {"activations": diagnostics.kinds})
    loss = [v for _, v in scalars.get(LOSS, [])]
    said = sorted({str(w.message)[:150] for w in caught if str(w.message).startswith(("Diagnostics", "Attention"))})
    return {"observed": observed(scalars), "health": d.health, "checked": len(d.checked),
            "rules": len(d.checked) + len(d.missing), "na": d.not_applicable,
            "loss": (loss[0], loss[-1]) if loss else None, "said": said,
            "orig_mod": any("_orig_mod" in t for t in scalars)}


def cost(name: str, stream, vocab, steps: int, root: Path, rounds: int) -> float:
    """Median over rounds of (steps/s with Diagnostics) / (steps/s without), the two fits in turn each round,
    timing steps [TIMED_MARGIN, steps - TIMED_MARGIN): Diagnostics' default intervals record none of them."""
    ratios = []
    for r in range(rounds):
        seconds = {}
        for on in (False, True):
            module, data = build(name, stream, vocab, seed=r)
            clock = Clock(TIMED_MARGIN, steps - TIMED_MARGIN)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # said once in the verdict runs
                fit(module, data, steps, root / f"{name}-{r}-{on}", [clock, Diagnostics()] if on else [clock])
            seconds[on] = clock.seconds
        ratios.append(seconds[False] / seconds[True])
    return sorted(ratios)[len(ratios) // 2]


def row(name: str, fault: str, r: dict[str, Any]) -> str:
    seen = r["observed"]
    families = " ".join(f"{k}{seen[k]}" for k in ("act", "norm", "attn", "fused", "grad", "update_ratio") if k in seen)
    loss = f"{r['loss'][0]:.2f}->{r['loss'][1]:.2f}" if r["loss"] else "-"
    extra = " _orig_mod!" if r["orig_mod"] else ""
    return f"{name:<12} {fault:<9} {loss:<12} {families:<40} {r['health']}{extra}"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=Path("../shared/data/names.txt"))
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--cost-steps", type=int, default=240)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--models", nargs="*", default=list(MODELS), choices=MODELS)
    p.add_argument("--out", type=Path, default=None, help="also write the table to this file")
    args = p.parse_args(argv)
    if not args.data.is_file():
        raise SystemExit(f"--data {args.data}: no such file; give the path of names.txt")
    torch.set_num_threads(1)  # 2 cores shared: one thread each is the steadier measure
    stream, vocab = corpus(args.data)
    lines = [f"bench_foreign: {args.steps} steps per run, statistics every {EVERY}; verdict = namegen.diagnosis on "
             "the run's events", f"{'model':<12} {'fault':<9} {'loss 0->end':<12} {'series per family':<40} verdict"]
    print(lines[0], "\n" + lines[1], flush=True)
    costs, said = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            for fault, seed in FAULTS.items():
                start = time.perf_counter()
                r = verdict(name, seed, stream, vocab, args.steps, Path(tmp) / f"{name}-{fault}")
                lines.append(row(name, fault, r) + f"  [{time.perf_counter() - start:.0f}s]")
                said.setdefault(name, Counter()).update(r["said"])
                print(lines[-1], flush=True)
            costs[name] = cost(name, stream, vocab, args.cost_steps, Path(tmp), args.rounds)
    lines += ["", f"cost: steps/s with Diagnostics() over without, steps {TIMED_MARGIN}-{args.cost_steps - TIMED_MARGIN} "
              f"of {args.cost_steps} (no recording step among them), median of {args.rounds} rounds, each pair in turn"]
    lines += [f"  {name:<12} {ratio:.3f}x" for name, ratio in costs.items()]
    lines += ["", "what the callback said (warnings, over the four runs):"]
    lines += [f"  {name}: {text}" for name, texts in said.items() for text in texts] or ["  (nothing)"]
    print("\n".join(lines[-(len(costs) + 3 + sum(len(t) for t in said.values())):]))
    if args.out is not None:
        args.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
