"""Benchmarks that compare side by side in one run and print the ratio.

    python -m namegen.bench throughput --data ../shared/data/names.txt   # steps/s: plain loop vs namegen
    python -m namegen.bench quality --data ../shared/data/names.txt      # wall time to val loss <= 2.10
    python -m namegen.bench sweep                                        # the default 2x2 sweep's wall time
    python -m namegen.bench costs                                        # namegen's parts, per step, over a bare Trainer
    python -m namegen.bench compile                                      # torch.compile: cold start, gain, break-even
    python -m namegen.bench commands                                     # how long a user waits for a command
    python -m namegen.bench diagnosis --data ../shared/data/names.txt    # seeded faults: detection and repair

throughput: each round runs every contender once, in turn, in this one process (so
the machine's noise hits them alike); the report gives each one's median steps/s and
the median of the per-round ratios. Only training steps are timed (CPU time): not setup, not validation.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import lightning as L
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from namegen.data import CharDataModule, RandomBatches
from namegen.model import MLP, MLPConfig, initialize
from namegen.module import COMPILE_AUTO
from namegen.training import build, validate

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"


def plain_loop(
    dm: CharDataModule, steps: int, norm: str, seed: int, batch_size: int = 32, lr: float = 0.1, decay_at: float = 0.75,
    init: str = "kaiming", compiled: bool = False, optimizer: Callable | None = None,
) -> tuple[float, float]:
    """makemore's loop, written out: sample a batch, forward, backward, SGD step, lr x0.1 for the last quarter.

    `optimizer` replaces torch's default SGD(lr) (the lr schedule still applies).
    Returns (steps/s after the warm-up, val loss with BatchNorm on its running statistics).
    """
    torch.manual_seed(seed)
    model = initialize(MLP(MLPConfig(vocab_size=len(dm.vocab), norm=norm)), init)
    opt = (optimizer or (lambda params: torch.optim.SGD(params, lr=lr)))(model.parameters())
    forward = torch.compile(model) if compiled else model  # compiles on the first steps, inside the warm-up
    x, y, g = dm.x["train"], dm.y["train"], torch.Generator().manual_seed(seed)
    start = step_clock()
    for step in range(steps):
        if step == WARMUP:
            start = step_clock()
        if step == int(decay_at * steps):
            for group in opt.param_groups:
                group["lr"] *= 0.1
        ix = torch.randint(0, len(y), (batch_size,), generator=g)
        loss = F.cross_entropy(forward(x[ix]), y[ix])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    rate = (steps - WARMUP) / (step_clock() - start)
    with torch.no_grad():
        val = F.cross_entropy(model.eval()(dm.x["val"]), dm.y["val"]).item()
    return rate, val


WARMUP = 200  # steps before the clock starts: allocator and caches warm up
# the steps' clock: this process's CPU time (every contender has 1 torch thread), not the wall's: a shared machine's
step_clock = time.process_time  # other processes (which swung the ratios from 0.87x to 1.10x) do not count


class StepTimer(L.Callback):
    """Times the training steps only: from the start of step WARMUP to the start of the last step. The last step
    is left out: its end is where callbacks do their end-of-run work (the last step's figures, histograms)."""

    def __init__(self):
        self.start = self.end = None
        self.steps = 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == WARMUP:
            self.start = step_clock()
        elif trainer.global_step == trainer.max_steps - 1:
            self.end = step_clock()
            self.steps = trainer.global_step

    def steps_per_sec(self) -> float:
        return (self.steps - WARMUP) / (self.end - self.start)


class BareModule(L.LightningModule):
    """The least a LightningModule can be: the same model and loss, plain SGD, nothing logged."""

    def __init__(self, vocab_size: int, norm: str, seed: int):
        super().__init__()
        torch.manual_seed(seed)
        self.model = initialize(MLP(MLPConfig(vocab_size=vocab_size, norm=norm)), "kaiming")

    def training_step(self, batch, batch_idx):
        x, y = batch
        return F.cross_entropy(self.model(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def bare_lightning(dm: CharDataModule, steps: int, norm: str, seed: int) -> float:
    """Lightning's own floor at one optimizer step per batch: a Trainer with no logger, no callbacks, no
    progress bar, automatic optimization. Returns steps/s."""
    timer = StepTimer()
    trainer = L.Trainer(accelerator="cpu", devices=1, max_steps=steps, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[timer])
    batches = RandomBatches(dm.x["train"], dm.y["train"], dm.batch_size, seed)
    trainer.fit(BareModule(len(dm.vocab), norm, seed), train_dataloaders=batches)
    return timer.steps_per_sec()


def namegen_run(overrides: list[str], run_dir: Path, steps: int) -> float:
    """namegen's real training path (build() from the real config) for `steps` steps, in a fresh folder beside
    `run_dir` (name-<random>): every round is a new run, and a finished run is never trained over. Returns steps/s."""
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    run_dir = Path(tempfile.mkdtemp(prefix=f"{run_dir.name}-", dir=run_dir.parent))
    cfg = compose_cfg([f"run_dir={run_dir}", f"trainer.max_steps={steps}", f"trainer.val_check_interval={steps}",
                       "trainer.num_sanity_val_steps=0", *overrides])
    validate(cfg)
    torch.set_num_threads(cfg.threads)  # as train() does
    L.seed_everything(cfg.seed, verbose=False)
    datamodule, module, trainer = build(cfg)
    timer = StepTimer()
    trainer.callbacks.append(timer)
    trainer.fit(module, datamodule=datamodule)
    return timer.steps_per_sec()


def compare(contenders: dict[str, Callable[[], float]], rounds: int, baseline: str) -> dict[str, dict[str, float]]:
    """Run each contender once per round, interleaved, in an order rotated each round (run right after the bare
    Trainer, namegen measured up to 14% slower than run before it); median steps/s and median per-round ratio."""
    samples: dict[str, list[float]] = {name: [] for name in contenders}
    for r in range(rounds):
        for name in sorted(contenders, key=lambda n: ([*contenders].index(n) - r) % len(contenders)):
            samples[name].append(contenders[name]())
            print(f"  round {r + 1}/{rounds}  {name:<28} {samples[name][-1]:8.0f} steps/s", flush=True)
    return {
        name: {
            "steps_per_sec": statistics.median(s),
            "ratio": statistics.median(a / b for a, b in zip(s, samples[baseline])),
        }
        for name, s in samples.items()
    }


def print_table(table: dict[str, dict[str, float]], baseline: str) -> None:
    print(f"\n| contender | steps/s (median) | ratio to {baseline} (median) |\n|---|---|---|")
    print("\n".join(f"| {name} | {row['steps_per_sec']:.0f} | {row['ratio']:.2f}x |" for name, row in table.items()) + "\n")


def compose_cfg(overrides: list[str]):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=overrides)


def bench_throughput(args: argparse.Namespace) -> None:
    data = ["data=file", f"data.path={Path(args.data).resolve()}"] if args.data else []
    dm = CharDataModule(source="file" if args.data else "names_first", path=args.data).prepare()
    common = [*data, f"norm={args.norm}", "init=kaiming"]
    out = Path(args.out)
    print(f"## throughput: batch 32, norm={args.norm}, kaiming, 1 thread, {args.steps} steps x {args.rounds} rounds")
    namegen_optimizer = instantiate(compose_cfg(common).optim.optimizer, _partial_=True)  # conf/optim/sgd.yaml: SGD
    table = compare({
        "plain PyTorch loop": lambda: plain_loop(dm, args.steps, args.norm, 42)[0],
        "plain loop, namegen's optimizer": lambda: plain_loop(dm, args.steps, args.norm, 42,
                                                              optimizer=namegen_optimizer)[0],
        "bare Lightning Trainer": lambda: bare_lightning(dm, args.steps, args.norm, 42),
        "namegen, diagnostics off": lambda: namegen_run([*common, "callbacks=minimal", "compile=false"],
                                                        out / "minimal", args.steps),
        "namegen, diagnostics off, compiled": lambda: namegen_run([*common, "callbacks=minimal", "compile=true"],
                                                                  out / "minimal_compiled", args.steps),
        "namegen, diagnostics on": lambda: namegen_run([*common, "callbacks=default", "compile=false"],
                                                       out / "default", args.steps),
        "namegen, diagnostics on, compiled": lambda: namegen_run([*common, "callbacks=default", "compile=true"],
                                                                 out / "default_compiled", args.steps),
    }, args.rounds, baseline="plain PyTorch loop")
    print_table(table, "plain loop")
    for a, b in (("namegen, diagnostics off", "bare Lightning Trainer"),
                 ("namegen, diagnostics on", "namegen, diagnostics off"),
                 ("namegen, diagnostics on, compiled", "namegen, diagnostics off, compiled"),
                 ("namegen, diagnostics off, compiled", "namegen, diagnostics off")):
        print(f"{a} / {b}: {table[a]['ratio'] / table[b]['ratio']:.2f}x")
    faster = table["namegen, diagnostics off, compiled"]["ratio"] > table["namegen, diagnostics off"]["ratio"]
    auto = "eager" if COMPILE_AUTO["min_steps"] is None else f"compiled from {COMPILE_AUTO['min_steps']:,} steps"
    print(f"compile=auto picks {auto} (namegen.module.COMPILE_AUTO); this run measured "
          f"{'compiled' if faster else 'eager'} as faster")
    print("\nplain PyTorch loop: makemore's, torch's default SGD. plain loop, namegen's optimizer: the same loop with"
          f" namegen's configured optimizer ({namegen_optimizer.func.__name__}, {namegen_optimizer.keywords}).\n"
          "bare Lightning Trainer: the model in a LightningModule with nothing else, no logger, no callbacks.\n"
          "namegen: the real training path (build() from the config), checkpointing, LR monitor and progress bar on;\n"
          "compiled: compile=true (the compile itself falls in the warm-up;"
          " python -m namegen.bench compile measures it).")


def bench_costs(args: argparse.Namespace) -> None:
    """What each part of namegen's eager path costs per step over a bare Trainer: namegen with everything
    (callbacks=minimal: checkpointing, LR monitor, progress bar, TensorBoard), then without one part at a time,
    then the module alone (no callbacks, no logger); interleaved, median; each part's cost is the difference
    of the steps' durations."""
    dm = CharDataModule(source="file" if args.data else "names_first", path=args.data).prepare()
    data = ["data=file", f"data.path={Path(args.data).resolve()}"] if args.data else []
    common = [*data, f"norm={args.norm}", "init=kaiming", "callbacks=minimal", "compile=false"]
    out = Path(args.out)
    without = {"progress bar": ["~callbacks.progress", "+trainer.enable_progress_bar=false"],
               "LR monitor": ["~callbacks.lr_monitor"], "checkpointing": ["~callbacks.checkpoint",
                                                                         "+trainer.enable_checkpointing=false"]}
    alone = ["~callbacks", "~logger", "+trainer.enable_progress_bar=false", "+trainer.enable_checkpointing=false"]
    contenders = {"bare Lightning Trainer": lambda: bare_lightning(dm, args.steps, args.norm, 42),
                  "namegen (callbacks=minimal)": lambda: namegen_run(common, out / "all", args.steps)}
    for part, overrides in without.items():
        contenders[f"namegen without the {part}"] = lambda o=overrides, d=part: namegen_run(
            [*common, *o], out / d.replace(" ", "_"), args.steps)
    contenders["namegen module alone (no callbacks, no logger)"] = lambda: namegen_run([*common, *alone], out / "alone",
                                                                                        args.steps)
    table = compare(contenders, args.rounds, baseline="bare Lightning Trainer")
    # us per step, from the bare Trainer's median and each contender's median per-round ratio to it (under
    # load the ratios of one round hold better than rates taken from different rounds)
    bare_step = 1e6 / table["bare Lightning Trainer"]["steps_per_sec"]
    step = {name: bare_step / row["ratio"] for name, row in table.items()}
    print("\n| contender | steps/s (median) | ratio to the bare Trainer | us per step over the bare Trainer |"
          "\n|---|---|---|---|")
    bare = step["bare Lightning Trainer"]
    for name, row in table.items():
        print(f"| {name} | {row['steps_per_sec']:.0f} | {row['ratio']:.2f}x | {step[name] - bare:+.0f} |")
    full = step["namegen (callbacks=minimal)"]
    print("\ncost per step of each part (namegen with it minus namegen without it):")
    for part in without:
        print(f"  {part}: {full - step[f'namegen without the {part}']:+.0f} us")
    print(f"  the module, its optimizer, scheduler and data path over the bare Trainer's: "
          f"{step['namegen module alone (no callbacks, no logger)'] - bare:+.0f} us")


FIRST_COMPILED_STEP = """
import sys, time, torch, torch.nn.functional as F
from namegen.model import MLP, MLPConfig, initialize
torch.set_num_threads(1)
model = torch.compile(initialize(MLP(MLPConfig(norm=sys.argv[1])), "kaiming").forward)
x, y = torch.randint(0, 27, (32, 3)), torch.randint(0, 27, (32,))
start = time.perf_counter()
F.cross_entropy(model(x), y).backward()  # compiles the forward graph, then the backward
print(time.perf_counter() - start)
"""


def first_compiled_step(norm: str, cache: Path) -> float:
    """Seconds of the first compiled training step (forward and backward) of a fresh process, kernel cache in `cache`."""

    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(cache)}
    out = subprocess.run([sys.executable, "-c", FIRST_COMPILED_STEP, norm], env=env, check=True, capture_output=True,
                         text=True).stdout
    return float(out.split()[-1])


def bench_compile(args: argparse.Namespace) -> None:
    """What torch.compile costs and saves here: what compile=auto (namegen.module.COMPILE_AUTO) is set from.

    The cold start is the first compiled step of a fresh process: with an empty kernel cache (a machine's first
    compiled run) and with the cache that run left behind (every later run with the same net, sweep jobs
    included). The saving per step is eager against compiled, plain loop and namegen, interleaved.
    """
    from namegen.module import COMPILE_AUTO

    with tempfile.TemporaryDirectory() as cache:
        cold = first_compiled_step(args.norm, Path(cache))
        warm = first_compiled_step(args.norm, Path(cache))
    print(f"## torch.compile, norm={args.norm}: first compiled step {cold:.1f} s with an empty kernel cache, "
          f"{warm:.1f} s with a warm one", flush=True)
    dm = CharDataModule(source="file" if args.data else "names_first", path=args.data).prepare()
    data = ["data=file", f"data.path={Path(args.data).resolve()}"] if args.data else []
    common = [*data, f"norm={args.norm}", "init=kaiming", "callbacks=minimal"]
    out = Path(args.out)
    table = compare({
        "plain loop, eager": lambda: plain_loop(dm, args.steps, args.norm, 42)[0],
        "plain loop, compiled": lambda: plain_loop(dm, args.steps, args.norm, 42, compiled=True)[0],
        "namegen, eager": lambda: namegen_run([*common, "compile=false"], out / "eager", args.steps),
        "namegen, compiled": lambda: namegen_run([*common, "compile=true"], out / "compiled", args.steps),
    }, args.rounds, baseline="plain loop, eager")
    print_table(table, "the eager plain loop")
    eager = table["namegen, eager"]["steps_per_sec"]
    gain = table["namegen, compiled"]["ratio"] / table["namegen, eager"]["ratio"]  # of the per-round ratios: robust
    compiled = eager * gain
    saved = 1 / eager - 1 / compiled  # seconds per step
    print(f"\nnamegen compiled / eager: {gain:.2f}x; {saved * 1e6:.0f} us saved per step")
    auto = COMPILE_AUTO["min_steps"]
    print(f"compile=auto compiles {'no run' if auto is None else f'runs from {auto:,} steps'} "
          f"(namegen.module.COMPILE_AUTO: {COMPILE_AUTO['measured']})")
    if saved > 0:
        print(f"break-even run length: {cold / saved:,.0f} steps (empty cache), {warm / saved:,.0f} steps (warm cache)")


def bench_quality(args: argparse.Namespace) -> None:
    """makemore's recipe in the plain loop against namegen's `fast` preset: wall time to the final val loss."""
    from namegen.training import train

    if not args.data:
        raise SystemExit("quality needs --data (makemore's names.txt)")
    path = str(Path(args.data).resolve())
    dm = CharDataModule(source="file", path=path).prepare()
    print("## time to quality on", path)
    start = time.perf_counter()
    _, plain_val = plain_loop(dm, 200_000, "batchnorm", 42)
    plain_time = time.perf_counter() - start
    print(f"plain loop, makemore recipe (200k steps, batch 32, SGD): val {plain_val:.4f} in {plain_time:.0f} s", flush=True)
    start = time.perf_counter()
    result = train(compose_cfg([f"run_dir={Path(args.out) / 'fast'}", "experiment=fast", f"data.path={path}",
                                "norm=batchnorm", "init=kaiming"]))
    fast_time = time.perf_counter() - start
    print(f"namegen experiment=fast: val {result['val_loss']:.4f} (best {result['best_val_loss']:.4f}) "
          f"in {fast_time:.0f} s, all included")
    print(f"\n| run | val loss | wall time |\n|---|---|---|\n| plain loop, makemore recipe | {plain_val:.4f} | "
          f"{plain_time:.0f} s |\n| namegen `experiment=fast` | {result['val_loss']:.4f} | {fast_time:.0f} s |")
    print(f"\nwall-time ratio namegen fast / plain recipe: {fast_time / plain_time:.2f}")


def bench_sweep(args: argparse.Namespace) -> None:
    """The default 2x2 sweep, parallel (the default joblib launcher) against one job at a time."""

    train_py = CONF_DIR.parent / "train.py"
    times = {}
    for launcher in ("joblib", "basic"):  # the default 20k steps are a multiple of the 2k validation interval
        start = time.perf_counter()
        subprocess.run([sys.executable, str(train_py), "-m", "init=naive,kaiming", "norm=none,batchnorm",
                        f"hydra/launcher={launcher}", f"hydra.sweep.dir={Path(args.out) / ('sweep_' + launcher)}"],
                       check=True, capture_output=True, cwd=CONF_DIR.parent)
        times[launcher] = time.perf_counter() - start
        print(f"default 2x2 sweep, hydra/launcher={launcher}: {times[launcher]:.0f} s", flush=True)
    print(f"\nparallel / one at a time: {times['joblib'] / times['basic']:.2f}")


def bench_commands(args: argparse.Namespace) -> None:
    """How long a user waits: namegen's commands against `python -c "import torch"`, interleaved, median of rounds."""

    from namegen.training import train

    run = Path(args.out) / "commands_run"
    if not (run / "checkpoints" / "best.ckpt").is_file():
        train(compose_cfg([f"run_dir={run}", "experiment=quick", "callbacks=minimal"]))
    namegen = shutil.which("namegen") or str(Path(sys.executable).with_name("namegen"))
    train_py = str(CONF_DIR.parent / "train.py")
    commands = {
        'python -c "import torch"': [sys.executable, "-c", "import torch"],
        "namegen --help": [namegen, "--help"],
        "namegen sample RUN -n 10": [namegen, "sample", str(run), "-n", "10"],
        "python train.py seed=-1 (a config mistake)": [sys.executable, train_py, "seed=-1",
                                                       f"hydra.run.dir={Path(args.out) / 'refused'}"],
    }
    times: dict[str, list[float]] = {name: [] for name in commands}
    for r in range(args.rounds):
        for name, command in commands.items():
            start = time.perf_counter()
            subprocess.run(command, capture_output=True, cwd=CONF_DIR.parent)
            times[name].append(time.perf_counter() - start)
        print(f"  round {r + 1}/{args.rounds}: " + ", ".join(f"{t[-1]:.2f} s" for t in times.values()), flush=True)
    base = statistics.median(times['python -c "import torch"'])
    print("\n| command | seconds (median) | ratio to importing torch |\n|---|---|---|")
    for name, t in times.items():
        print(f"| `{name}` | {statistics.median(t):.2f} | {statistics.median(t) / base:.2f}x |")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=["throughput", "costs", "quality", "sweep", "compile", "commands", "diagnosis"],
                   nargs="?", default="throughput")
    p.add_argument("--data", help="a word file (default: the built-in names_first)")
    p.add_argument("--steps", type=int, default=5000, help="throughput: training steps per run (default 5000)")
    p.add_argument("--rounds", type=int, default=5, help="throughput: interleaved rounds (default 5)")
    p.add_argument("--norm", default="batchnorm", help="throughput: none, batchnorm or layernorm (default batchnorm)")
    p.add_argument("--out", default="outputs/bench", help="scratch folder for the namegen runs")
    p.add_argument("--reuse", help="diagnosis: an earlier benchmark's folder; its runs whose config is identical are "
                                   "diagnosed again instead of trained again")
    args = p.parse_args(argv)
    if args.steps < WARMUP + 2:  # the clock runs from step WARMUP to the start of the last step
        p.error(f"--steps must be at least {WARMUP + 2}: {WARMUP} warm-up steps, one timed, and the last")
    torch.set_num_threads(1)
    if args.what == "diagnosis":
        from namegen.bench_diagnosis import bench_diagnosis

        if not args.data:
            raise SystemExit("diagnosis needs --data (makemore's names.txt)")
        return bench_diagnosis(args.data, Path(args.out), reuse=Path(args.reuse) if args.reuse else None)
    {"throughput": bench_throughput, "costs": bench_costs, "quality": bench_quality, "sweep": bench_sweep,
     "compile": bench_compile, "commands": bench_commands}[args.what](args)


if __name__ == "__main__":
    main()
