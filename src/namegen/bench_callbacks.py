"""What the diagnostics cost on the steps that record nothing, side by side with a bare Trainer, in one run.

    python -m namegen.bench_callbacks [--steps 3000] [--rounds 5]

Contenders, on makemore's BatchNorm MLP (batch 32, one thread, a TensorBoard logger each):
- bare: the Trainer and the logger, no callback;
- diagnostics: one `Diagnostics` with its four probes (namegen's `callbacks=default` shape).
Intervals lie beyond the run, so only step 0 and the last step record; steps 200 .. steps-200 are
timed (CPU time). Each round runs every contender once, in turn, in this process; the report gives
the median us/step and the median per-round ratio to bare.

Lightning's SimpleProfiler (a second pass) attributes the cost to each callback's hooks: the median
call of each hook times its calls per step. A plain `L.Callback()` in the same run is the floor any
callback pays for Lightning's hook dispatch.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import lightning as L
import torch
import torch.nn as nn
import torch.nn.functional as F
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.profilers import SimpleProfiler

from namegen.callbacks import Diagnostics

NEVER = 10**9  # an interval beyond any run: only step 0 and the last step record
MARGIN = 200  # steps left untimed at each end (warm-up; the recording first and last steps)


class MLP(L.LightningModule):
    """makemore's BatchNorm net (embedding 10, block 3, 5 x [Linear 100, BatchNorm, Tanh], output 27)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        layers, fan_in = [], 30
        for _ in range(5):
            layers += [nn.Linear(fan_in, 100, bias=False), nn.BatchNorm1d(100), nn.Tanh()]
            fan_in = 100
        self.emb, self.net = nn.Embedding(27, 10), nn.Sequential(*layers, nn.Linear(100, 27))

    def training_step(self, batch, batch_idx):
        x, y = batch
        return F.cross_entropy(self.net(self.emb(x).view(len(x), -1)), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


class CpuTimer(L.Callback):
    """CPU time from the start of step MARGIN to the start of step steps - MARGIN (first in the list)."""

    def __init__(self, steps: int):
        self.marks, self.at = {}, (MARGIN, steps - MARGIN)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step in self.at:
            self.marks[trainer.global_step] = time.process_time()

    def us_per_step(self) -> float:
        return (self.marks[self.at[1]] - self.marks[self.at[0]]) / (self.at[1] - self.at[0]) * 1e6


CONTENDERS = {
    "bare": lambda: [],
    "diagnostics": lambda: [Diagnostics(NEVER, NEVER, NEVER)],
}


def run(callbacks: list[L.Callback], steps: int, profiler=None) -> L.Trainer:
    g = torch.Generator().manual_seed(0)
    batches = list(zip(torch.randint(0, 27, (steps + 1, 32, 3), generator=g),
                       torch.randint(0, 27, (steps + 1, 32), generator=g)))
    with tempfile.TemporaryDirectory() as log_dir:
        trainer = L.Trainer(max_steps=steps, logger=TensorBoardLogger(log_dir), callbacks=callbacks, profiler=profiler,
                            enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                            log_every_n_steps=NEVER, accelerator="cpu", devices=1)
        trainer.fit(MLP(), torch.utils.data.DataLoader(batches, batch_size=None))
    return trainer


def hook_costs(trainer: L.Trainer, steps: int) -> dict[str, float]:
    """us per step in each callback's hooks: each hook's median call times its calls per step."""
    per: dict[str, float] = {}
    for action, durations in trainer.profiler.recorded_durations.items():
        if action.startswith("[Callback]") and "CpuTimer" not in action:
            owner = action.removeprefix("[Callback]").split(".")[0]
            per[owner] = per.get(owner, 0.0) + statistics.median(durations) * len(durations) / steps * 1e6
    return per


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    if args.steps <= 2 * MARGIN:
        parser.error(f"--steps={args.steps} must be above {2 * MARGIN} (the untimed margins)")
    torch.set_num_threads(1)
    us: dict[str, list[float]] = {name: [] for name in CONTENDERS}
    for r in range(args.rounds):
        for name, make in CONTENDERS.items():
            timer = CpuTimer(args.steps)
            run([timer, *make()], args.steps)
            us[name].append(timer.us_per_step())
        print(f"round {r + 1}: " + ", ".join(f"{name} {v[-1]:.0f} us/step" for name, v in us.items()), flush=True)
    print(f"\nnon-recording steps, {args.rounds} rounds of {args.steps} steps (CPU us per step, median):")
    for name, values in us.items():
        ratio = statistics.median(b / v for b, v in zip(us["bare"], values))
        print(f"  {name:15s} {statistics.median(values):7.1f} us/step   steps/s vs bare {ratio:.3f}x")
    for name, make in CONTENDERS.items():
        if name == "bare":
            continue
        trainer = run([*make(), L.Callback()], args.steps, SimpleProfiler())
        costs = hook_costs(trainer, args.steps)
        floor = costs.pop("Callback")
        print(f"\n{name}: us per step in the callbacks' hooks (SimpleProfiler): "
              + ", ".join(f"{owner} {cost:.1f}" for owner, cost in sorted(costs.items()))
              + f"; total {sum(costs.values()):.1f}; a plain L.Callback() {floor:.1f} (Lightning's dispatch floor)")


if __name__ == "__main__":
    main()
