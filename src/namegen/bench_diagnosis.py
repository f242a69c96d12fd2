"""The seeded-fault benchmark of the diagnosis: `python -m namegen.bench diagnosis --data names.txt`.

In the spirit of AUTOTRAINER's and DeepDiagnosis's evaluations: labelled configurations, healthy and faulty,
each trained briefly with `python train.py` (2 jobs at a time), diagnosed from its run folder, and, when the
diagnosis proposes a fix, trained again with the fix applied. Per case it prints the findings and the fix's
result; then the totals:

    detection        faulty cases whose diagnosis names an expected finding, of all faulty cases
    false positives  healthy cases diagnosed unhealthy
    in effect/refused  remedy overrides already in effect in the run, or refused by namegen (checked here
                     independently: the case's composed config, and checks.validate on config + fix)
    wrong way        remedy overrides that move a setting against their finding (a too-high lr raised)
    repair           detected cases whose fixed run has none of the original findings and a lower val loss

The cases cover every fault kind behind each norm, under SGD, SGD+momentum and AdamW, at 1,500 and 3,000 steps
(two seeds where the finding depends on timing), and the Transformer's. They are split once, by a hash of the
case's name (`Case.half`), into a development half, the only one thresholds and remedies are tuned on, and a
held-out half; the totals show both side by side.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TRANSFORMER_STEPS = 800
EVERY = 100  # statistics every this many steps: 15 or 30 points per MLP run
JOBS = 2
DEV, HELD_OUT = "development", "held-out"


@dataclass(frozen=True)
class Case:
    name: str
    overrides: tuple[str, ...]
    expect: tuple[str, ...] = ()  # () = healthy; else any of these findings detects the fault
    transformer: bool = False
    steps: int = 1500

    @property
    def half(self) -> str:
        """Fixed once, before any tuning, by the case's name: thresholds and remedies are set on the development half
        only; the held-out half measures how the diagnosis generalizes."""
        return DEV if hashlib.sha256(self.name.encode()).digest()[0] % 2 == 0 else HELD_OUT


def mlp(name: str, *overrides: str, expect: tuple[str, ...] = (), steps: tuple[int, ...] = (1500,),
        seeds: tuple[int, ...] = ()) -> list[Case]:
    """The case at each length (and each seed, where the label is timing-sensitive)."""
    return [Case(f"{name} {n}" + (f" seed {seed}" if seed is not None else ""),
                 (*overrides, *([f"seed={seed}"] if seed is not None else [])), expect, False, n)
            for n in steps for seed in (seeds or (None,))]


def transformer(name: str, *overrides: str, expect: tuple[str, ...] = ()) -> list[Case]:
    return [Case(name, ("model=transformer", "optim=adamw_cosine", "callbacks=transformer", *overrides), expect, True,
                 TRANSFORMER_STEPS)]


SGD, MOMENTUM, ADAMW = (), ("optim.optimizer.momentum=0.9", "optim.optimizer.lr=0.01"), ("optim=adamw",)
HIGH = ("lr_too_high", "diverged")  # a too-high lr: found as such, or as the divergence it caused
BOTH = (1500, 3000)
CASES = [
    # healthy: kaiming behind each norm, under SGD, SGD+momentum and AdamW; ReLU, PyTorch's init, the Transformer
    *mlp("tanh kaiming none sgd", "init=kaiming", "norm=none", steps=BOTH),
    *mlp("tanh kaiming batchnorm sgd", "init=kaiming", "norm=batchnorm", steps=BOTH),
    *mlp("tanh kaiming layernorm sgd", "init=kaiming", "norm=layernorm", steps=BOTH),
    *mlp("tanh kaiming none momentum", "init=kaiming", "norm=none", *MOMENTUM),
    *mlp("tanh kaiming batchnorm momentum", "init=kaiming", "norm=batchnorm", *MOMENTUM, steps=(3000,)),
    *mlp("tanh kaiming layernorm momentum", "init=kaiming", "norm=layernorm", *MOMENTUM),
    *mlp("tanh kaiming none adamw", "init=kaiming", "norm=none", *ADAMW, steps=(3000,)),
    *mlp("tanh kaiming batchnorm adamw", "init=kaiming", "norm=batchnorm", *ADAMW),
    *mlp("tanh kaiming layernorm adamw", "init=kaiming", "norm=layernorm", *ADAMW, steps=(3000,)),
    *mlp("relu kaiming batchnorm", "model.activation=relu", "init=kaiming", "norm=batchnorm"),
    *mlp("relu kaiming none", "model.activation=relu", "init=kaiming", "norm=none", steps=(3000,)),
    *mlp("tanh pytorch-init batchnorm", "init=pytorch", "norm=batchnorm"),
    *transformer("transformer recipe", "init=kaiming", "norm=layernorm"),
    # the init
    *mlp("naive init tanh sgd", "init=naive", "norm=none", expect=("confident_start", "saturated"), steps=BOTH),
    *mlp("naive init tanh adamw", "init=naive", "norm=none", *ADAMW, expect=("confident_start", "saturated")),
    *mlp("naive init tanh momentum", "init=naive", "norm=none", *MOMENTUM, expect=("confident_start", "saturated"),
         steps=(3000,)),
    *mlp("naive init relu", "model.activation=relu", "init=naive", "norm=none", expect=("confident_start",)),
    *mlp("huge output scale none", "init=kaiming", "norm=none", "init.output_scale=10", expect=("confident_start",)),
    *mlp("huge output scale batchnorm", "init=kaiming", "norm=batchnorm", "init.output_scale=10",
         expect=("confident_start",), steps=(3000,)),
    *mlp("huge output scale layernorm", "init=kaiming", "norm=layernorm", "init.output_scale=10",
         expect=("confident_start",)),
    *mlp("gain 3 tanh", "init=kaiming", "norm=none", "init.gain=3", expect=("saturated",), steps=BOTH),
    *mlp("vanishing deep net", "init=kaiming", "norm=none", "model.depth=12", "init.gain=0.5",
         expect=("vanishing_gradients",), steps=BOTH),
    *mlp("exploding deep net", "init=kaiming", "norm=none", "model.depth=12", "init.gain=3",
         expect=("exploding_gradients", "saturated")),
    *transformer("naive transformer", "init=naive", "norm=layernorm", expect=("attention", "saturated", "confident_start")),
    *transformer("naive transformer no norm", "init=naive", "norm=none",
                 expect=("attention", "saturated", "confident_start")),
    # the lr, too high: behind each norm (the norm hides it in the update ratios), each optimizer, two lengths; two
    # seeds where the finding depends on when the weights grew
    *mlp("sgd lr 30 none", "init=kaiming", "norm=none", "optim.optimizer.lr=30", expect=HIGH),
    *mlp("sgd lr 30 batchnorm", "init=kaiming", "norm=batchnorm", "optim.optimizer.lr=30", expect=HIGH, steps=BOTH,
         seeds=(1, 2)),
    *mlp("sgd lr 30 layernorm", "init=kaiming", "norm=layernorm", "optim.optimizer.lr=30", expect=HIGH, steps=BOTH,
         seeds=(1, 2)),
    *mlp("sgd lr 5 none", "init=kaiming", "norm=none", "optim.optimizer.lr=5", expect=HIGH, steps=BOTH),
    *mlp("momentum 0.95 lr 0.5 none", "init=kaiming", "norm=none", "optim.optimizer.lr=0.5",
         "optim.optimizer.momentum=0.95", expect=(*HIGH, "dead_units", "saturated")),
    *mlp("momentum 0.95 lr 0.5 batchnorm", "init=kaiming", "norm=batchnorm", "optim.optimizer.lr=0.5",
         "optim.optimizer.momentum=0.95", expect=HIGH, steps=BOTH),
    *mlp("momentum 0.99 lr 1 layernorm", "init=kaiming", "norm=layernorm", "optim.optimizer.lr=1.0",
         "optim.optimizer.momentum=0.99", expect=HIGH),
    *mlp("adamw lr 0.3 none", "init=kaiming", "norm=none", *ADAMW, "optim.optimizer.lr=0.3", expect=HIGH),
    *mlp("adamw lr 0.3 batchnorm", "init=kaiming", "norm=batchnorm", *ADAMW, "optim.optimizer.lr=0.3", expect=HIGH,
         steps=BOTH),
    *mlp("adamw lr 0.3 layernorm", "init=kaiming", "norm=layernorm", *ADAMW, "optim.optimizer.lr=0.3", expect=HIGH,
         steps=(3000,)),
    *mlp("dying relu", "model.activation=relu", "init=kaiming", "norm=none", "optim.optimizer.lr=1.0",
         expect=("dead_units", *HIGH)),
    # the lr, too low
    *mlp("sgd lr 1e-5 none", "init=kaiming", "norm=none", "optim.optimizer.lr=1e-5", expect=("lr_too_low",)),
    *mlp("sgd lr 1e-5 batchnorm", "init=kaiming", "norm=batchnorm", "optim.optimizer.lr=1e-5", expect=("lr_too_low",),
         steps=BOTH),
    *mlp("sgd lr 1e-5 layernorm", "init=kaiming", "norm=layernorm", "optim.optimizer.lr=1e-5",
         expect=("lr_too_low",), steps=(3000,)),
    *mlp("momentum lr 1e-6 batchnorm", "init=kaiming", "norm=batchnorm", "optim.optimizer.momentum=0.9",
         "optim.optimizer.lr=1e-6", expect=("lr_too_low",)),
    *mlp("adamw lr 1e-6 batchnorm", "init=kaiming", "norm=batchnorm", *ADAMW, "optim.optimizer.lr=1e-6",
         expect=("lr_too_low",)),
    *mlp("adamw lr 1e-6 layernorm", "init=kaiming", "norm=layernorm", *ADAMW, "optim.optimizer.lr=1e-6",
         expect=("lr_too_low",), steps=(3000,)),
]
# the way a finding's fix must move a setting: (finding, key) -> -1 lower, +1 higher
DIRECTION = {
    ("lr_too_high", "optim.optimizer.lr"): -1, ("diverged", "optim.optimizer.lr"): -1,
    ("dead_units", "optim.optimizer.lr"): -1, ("saturated", "optim.optimizer.lr"): -1,
    ("exploding_gradients", "optim.optimizer.lr"): -1, ("lr_too_low", "optim.optimizer.lr"): +1,
    ("saturated", "init.gain"): -1, ("exploding_gradients", "init.gain"): -1, ("dead_units", "init.gain"): -1,
    ("vanishing_gradients", "init.gain"): +1, ("confident_start", "init.output_scale"): -1,
    ("confident_start", "init.gain"): -1,
}


@dataclass
class Outcome:
    case: Case
    result: dict[str, Any] = field(default_factory=dict)
    diagnosis: Any = None
    fixed_result: dict[str, Any] = field(default_factory=dict)
    fixed: Any = None
    bad_remedies: list[str] = field(default_factory=list)
    wrong_way: list[str] = field(default_factory=list)

    @property
    def found(self) -> list[str]:
        return [f.name for f in self.diagnosis.findings] if self.diagnosis is not None else []

    @property
    def detected(self) -> bool:
        return any(name in self.found for name in self.case.expect)

    @property
    def false_positive(self) -> bool:
        return not self.case.expect and bool(self.found)

    @property
    def repaired(self) -> bool:
        if self.fixed is None:
            return False
        before, after = self.result.get("val_loss"), self.fixed_result.get("val_loss")
        gone = not set(self.found) & {f.name for f in self.fixed.findings}
        return gone and after is not None and (before is None or after < before)


def train_args(case: Case, data: str, run_dir: Path, extra: list[str]) -> list[str]:
    steps = case.steps
    every = [f"callbacks.diagnostics.every_n_steps={EVERY}", "callbacks.diagnostics.histogram_every_n_steps=null",
             "callbacks.diagnostics.figures_every_n_steps=null", "~callbacks.diagnostics.probes.figures"]
    return ["data=file", f"data.path={data}", f"trainer.max_steps={steps}", f"trainer.val_check_interval={steps}",
            f"trainer.log_every_n_steps={EVERY}", "trainer.num_sanity_val_steps=0",
            "callbacks.progress.lines=true", *every, *case.overrides, *extra, f"hydra.run.dir={run_dir}"]


def same_run(previous: Path, case: Case, data: str, extra: list[str]) -> bool:
    """Whether a folder of an earlier benchmark holds exactly this run: finished, and its config record is what
    these arguments compose (runs are bit-identical for the same config and seed on CPU, threads=1)."""
    from omegaconf import OmegaConf

    from namegen.diagnosis.config import compose_config
    from namegen.diagnosis.repair import leaves

    record = previous / ".hydra" / "config.yaml"
    if not (record.is_file() and (previous / "result.json").is_file()):
        return False
    wanted = compose_config([*train_args(case, data, previous, extra)[:-1], f"run_dir={previous}"])
    return trained(leaves(OmegaConf.load(record))) == trained(leaves(wanted))


def trained(config: dict[str, Any]) -> dict[str, Any]:
    """The leaves that decide what trains: all but the callbacks', which record the run (a newer callback records
    more tags of the same bit-identical run; the reused run keeps the tags its own callbacks wrote)."""
    return {k: v for k, v in config.items() if not k.startswith("callbacks.")}


def train(case: Case, data: str, run_dir: Path, extra: list[str], reuse: Path | None) -> Path:
    """The run folder of this case (and fix): an identical one of an earlier benchmark, or a new run."""
    from namegen.diagnosis.repair import TRAIN_PY

    if reuse is not None and same_run(reuse / run_dir.name, case, data, extra):
        return reuse / run_dir.name
    subprocess.run([sys.executable, str(TRAIN_PY), *train_args(case, data, run_dir, extra)],
                   capture_output=True, text=True, cwd=TRAIN_PY.parent)
    return run_dir


def composed(case: Case, data: str, extra: list[str]) -> Any:
    from namegen.diagnosis.config import compose_config

    return compose_config([*train_args(case, data, Path("unused"), extra)[:-1], "run_dir=unused"])


def bad_remedies(case: Case, data: str, fix_overrides: list[str], diagnosis: Any) -> tuple[list[str], list[str]]:
    """(each remedy override already in effect in the case's config, or refused with the fix applied; each that moves
    a setting against its finding (DIRECTION)): composed and validated here, independently of the diagnosis's own
    filter."""
    from omegaconf import OmegaConf

    from namegen.checks import validate
    from namegen.diagnosis.config import parse, same
    from namegen.errors import ConfigError

    bad, wrong = [], []
    base = composed(case, data, [])
    for f in diagnosis.findings:
        for override in f.remedy.overrides:
            key, value = parse(override)
            then = OmegaConf.select(base, key)
            if same(then, value):
                bad.append(f"{override} in effect")
            way = DIRECTION.get((f.name, key))
            if way is not None and isinstance(then, (int, float)) and not way * (value - then) > 0:
                wrong.append(f"{f.name}: {key} {then:g} -> {value:g}")
    try:
        validate(composed(case, data, fix_overrides))
    except ConfigError as e:
        bad.append(f"{' '.join(fix_overrides)} refused: {e}")
    return bad, wrong


def run_case(case: Case, data: str, out: Path, reuse: Path | None) -> Outcome:
    from namegen.diagnosis import diagnose_run
    from namegen.results import read_result

    slug = case.name.replace(" ", "_").replace(".", "p")
    folder = train(case, data, out / slug, [], reuse)
    o = Outcome(case, read_result(folder))
    o.diagnosis = diagnose_run(folder)
    fix = o.diagnosis.fix
    o.bad_remedies, o.wrong_way = bad_remedies(case, data, fix, o.diagnosis) if fix else ([], [])
    if fix:
        folder = train(case, data, out / f"{slug}-fix", fix, reuse)
        o.fixed_result = read_result(folder)
        o.fixed = diagnose_run(folder)
    print(f"  done: {case.name}: {','.join(o.found) or 'healthy'}" + (f" -> fixed: {o.fixed.health}" if o.fixed else ""),
          flush=True)
    return o


def loss(r: dict[str, Any]) -> str:
    v = r.get("val_loss")
    return f"{v:.3f}" if isinstance(v, (int, float)) else r.get("status", "n/a")


def table(outcomes: list[Outcome]) -> str:
    rows = ["| case | half | label | findings | notes | fix | val before | val after | after the fix | verdict |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    for o in outcomes:
        label = "healthy" if not o.case.expect else " or ".join(o.case.expect)
        notes = ", ".join(f.name for f in o.diagnosis.notes) or ""
        fix = " ".join(o.diagnosis.fix)
        if not o.case.expect:
            verdict = "false positive" if o.false_positive else "ok"
        else:
            verdict = ("detected" if o.detected else "missed") + (", repaired" if o.repaired else
                                                                  (", not repaired" if o.detected else ""))
        after = o.fixed.health if o.fixed is not None else ""
        rows.append(f"| {o.case.name} | {o.case.half} | {label} | {','.join(o.found) or 'healthy'} | {notes} | "
                    f"{'`' + fix + '`' if fix else ''} | {loss(o.result)} | "
                    f"{loss(o.fixed_result) if o.fixed is not None else ''} | {after} | {verdict} |")
    return "\n".join(rows) + "\n"


def rates(outcomes: list[Outcome]) -> dict[str, tuple[int, int]]:
    """Each score as (count, out of)."""
    faulty = [o for o in outcomes if o.case.expect]
    detected = [o for o in faulty if o.detected]
    remedies = sum(len(f.remedy.overrides) for o in outcomes for f in o.diagnosis.findings)
    return {
        "detection": (len(detected), len(faulty)),
        "false positives": (sum(o.false_positive for o in outcomes if not o.case.expect),
                            sum(not o.case.expect for o in outcomes)),
        "remedies in effect or refused": (sum(len(o.bad_remedies) for o in outcomes), remedies),
        "remedies moving the wrong way": (sum(len(o.wrong_way) for o in outcomes), remedies),
        "repair": (sum(o.repaired for o in detected), len(detected)),
    }


def totals(outcomes: list[Outcome]) -> str:
    """The scores of the development and the held-out half side by side, then the bad remedies by name."""
    halves = {half: rates([o for o in outcomes if o.case.half == half]) for half in (DEV, HELD_OUT)}
    cell = lambda a, b: f"{a}/{b} = {a / b:.0%}" if b else "n/a"  # noqa: E731
    lines = [f"| score | {DEV} | {HELD_OUT} |", "|---|---|---|"]
    lines += [f"| {name} | {cell(*halves[DEV][name])} | {cell(*halves[HELD_OUT][name])} |" for name in halves[DEV]]
    bad = [f"{o.case.name}: {b}" for o in outcomes for b in o.bad_remedies + o.wrong_way]
    return "\n".join(lines + ([""] + [f"- {b}" for b in bad] if bad else [])) + "\n"


def bench_diagnosis(data: str, out: Path, jobs: int = JOBS, reuse: Path | None = None) -> None:
    """`reuse`: an earlier benchmark's folder whose runs are taken as they are where their config is identical
    (after a change to the diagnosis alone, only the fixes that changed train again)."""
    data = str(Path(data).resolve())
    # absolute: train.py runs from the repository, so a relative folder would be another folder there
    out = out.resolve() / time.strftime("diagnosis_%Y-%m-%d_%H-%M-%S")  # each benchmark trains into its own folders
    out.mkdir(parents=True)
    halves = {half: sum(c.half == half for c in CASES) for half in (DEV, HELD_OUT)}
    print(f"## diagnosis benchmark: {len(CASES)} cases ({halves[DEV]} development, {halves[HELD_OUT]} held out) on "
          f"{data}, MLP 1,500 or 3,000 steps, Transformer {TRANSFORMER_STEPS} steps, {jobs} jobs at a time"
          + (f", reusing identical runs of {reuse}" if reuse else ""), flush=True)
    start = time.perf_counter()
    with ThreadPoolExecutor(jobs) as pool:
        # the slow cases first, so the two lanes end together
        order = sorted(CASES, key=lambda c: (not c.transformer, -c.steps))
        outcomes = {o.case.name: o for o in pool.map(lambda c: run_case(c, data, out, reuse), order)}
    outcomes = [outcomes[c.name] for c in CASES]
    text = f"\n{table(outcomes)}\n{totals(outcomes)}\nwall time: {time.perf_counter() - start:.0f} s\n"
    print(text)
    (out / "diagnosis_bench.md").write_text(text)
    (out / "diagnosis_bench.json").write_text(json.dumps(
        [{"case": o.case.name, "half": o.case.half, "wrong_way": o.wrong_way, "bad_remedies": o.bad_remedies, "expect": list(o.case.expect), "found": o.found, "fix": o.diagnosis.fix,
          "val": o.result.get("val_loss"), "fixed_val": o.fixed_result.get("val_loss"),
          "fixed_found": [f.name for f in o.fixed.findings] if o.fixed else None} for o in outcomes], indent=1))
