"""Throughput benchmark: namegen's real training path against a plain PyTorch loop, side by side.

    python -m namegen.bench --data ../shared/data/names.txt --steps 5000 --rounds 5

Each round runs every contender once, in turn, in this one process (so the machine's
noise hits them alike); the report gives each one's median steps/s and the median of
the per-round ratios. Only the training steps are timed: not setup, not validation.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Callable

import lightning as L
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir

from namegen.data import CharDataModule
from namegen.model import MLP, MLPConfig, initialize
from namegen.training import build

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"


def plain_loop(dm: CharDataModule, steps: int, norm: str, seed: int) -> float:
    """makemore's loop, written out: sample a batch, forward, backward, SGD step. Returns steps/s."""
    torch.manual_seed(seed)
    model = initialize(MLP(MLPConfig(vocab_size=len(dm.vocab), norm=norm)), "kaiming")
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y, g = dm.x["train"], dm.y["train"], torch.Generator().manual_seed(seed)
    start = None
    for step in range(steps):
        if step == WARMUP:
            start = time.perf_counter()
        ix = torch.randint(0, len(y), (dm.batch_size,), generator=g)
        loss = F.cross_entropy(model(x[ix]), y[ix])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return (steps - WARMUP) / (time.perf_counter() - start)


WARMUP = 200  # steps before the clock starts: allocator and caches warm up


class StepTimer(L.Callback):
    """Times the training steps only: from the start of step WARMUP to the end of the last step."""

    def __init__(self):
        self.start = self.end = None
        self.steps = 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == WARMUP:
            self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.end = time.perf_counter()
        self.steps = trainer.global_step

    def steps_per_sec(self) -> float:
        return (self.steps - WARMUP) / (self.end - self.start)


def namegen_run(overrides: list[str], run_dir: Path, steps: int) -> float:
    """namegen's real training path (build() from the real config) for `steps` steps. Returns steps/s."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=[
            f"run_dir={run_dir}", f"trainer.max_steps={steps}", f"trainer.val_check_interval={steps}",
            "trainer.num_sanity_val_steps=0", *overrides,
        ])
    torch.set_num_threads(cfg.threads)
    L.seed_everything(cfg.seed, verbose=False)
    datamodule, module, trainer = build(cfg)
    timer = StepTimer()
    trainer.callbacks.append(timer)
    trainer.fit(module, datamodule=datamodule)
    return timer.steps_per_sec()


def compare(contenders: dict[str, Callable[[], float]], rounds: int, baseline: str) -> dict[str, dict[str, float]]:
    """Run each contender once per round, interleaved; median steps/s and median per-round ratio to baseline."""
    samples: dict[str, list[float]] = {name: [] for name in contenders}
    for r in range(rounds):
        for name, run in contenders.items():
            samples[name].append(run())
            print(f"  round {r + 1}/{rounds}  {name:<28} {samples[name][-1]:8.0f} steps/s", flush=True)
    return {
        name: {
            "steps_per_sec": statistics.median(s),
            "ratio": statistics.median(a / b for a, b in zip(s, samples[baseline])),
        }
        for name, s in samples.items()
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", help="a word file (default: the built-in names_first)")
    p.add_argument("--steps", type=int, default=5000, help="training steps per run (default 5000)")
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default 5)")
    p.add_argument("--norm", default="batchnorm", help="none, batchnorm or layernorm (default batchnorm)")
    p.add_argument("--out", default="outputs/bench", help="scratch folder for the namegen runs")
    args = p.parse_args(argv)
    if args.steps <= WARMUP:
        p.error(f"--steps must exceed the {WARMUP} warm-up steps")

    torch.set_num_threads(1)
    data = ["data=file", f"data.path={Path(args.data).resolve()}"] if args.data else []
    dm = CharDataModule(source="file" if args.data else "names_first", path=args.data).prepare()
    common = [*data, f"norm={args.norm}", "init=kaiming"]
    out = Path(args.out)

    print(f"throughput, batch 32, norm={args.norm}, 1 thread, {args.steps} steps x {args.rounds} rounds")
    table = compare({
        "plain PyTorch loop": lambda: plain_loop(dm, args.steps, args.norm, 42),
        "namegen, diagnostics off": lambda: namegen_run([*common, "callbacks=minimal"], out / "minimal", args.steps),
        "namegen, diagnostics on": lambda: namegen_run([*common, "callbacks=default"], out / "default", args.steps),
    }, args.rounds, baseline="plain PyTorch loop")
    off, on = table["namegen, diagnostics off"], table["namegen, diagnostics on"]
    print("\n| contender | steps/s (median) | ratio to plain loop (median) |\n|---|---|---|")
    for name, row in table.items():
        print(f"| {name} | {row['steps_per_sec']:.0f} | {row['ratio']:.2f}x |")
    print(f"\ndiagnostics on / off: {on['ratio'] / off['ratio']:.2f}x")


if __name__ == "__main__":
    main()
