"""The seeded-fault benchmark of the diagnosis: `python -m namegen.bench diagnosis --data names.txt`.

In the spirit of AUTOTRAINER's and DeepDiagnosis's evaluations: labelled configurations, healthy and faulty,
each trained briefly with `python train.py` (2 jobs at a time), diagnosed from its run folder, and, when the
diagnosis proposes a fix, trained again with the fix applied. Per case it prints the findings and the fix's
result; then the totals:

    detection        faulty cases whose diagnosis names an expected finding, of all faulty cases
    false positives  healthy cases diagnosed unhealthy
    bad remedies     remedy overrides already in effect in the run, or refused by namegen (checked here
                     independently: the case's composed config, and checks.validate on config + fix)
    repair           detected cases whose fixed run has none of the original findings and a lower val loss
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MLP_STEPS, TRANSFORMER_STEPS = 1500, 800
EVERY = 100  # statistics every this many steps: 20 points per MLP run
JOBS = 2


@dataclass(frozen=True)
class Case:
    name: str
    overrides: tuple[str, ...]
    expect: tuple[str, ...] = ()  # () = healthy; else any of these findings detects the fault
    transformer: bool = False


def mlp(name: str, *overrides: str, expect: tuple[str, ...] = ()) -> Case:
    return Case(name, overrides, expect)


def transformer(name: str, *overrides: str, expect: tuple[str, ...] = ()) -> Case:
    return Case(name, ("model=transformer", "optim=adamw_cosine", "callbacks=transformer", *overrides), expect, True)


CASES = [
    # healthy
    mlp("tanh kaiming batchnorm", "init=kaiming", "norm=batchnorm"),
    mlp("tanh kaiming layernorm", "init=kaiming", "norm=layernorm"),
    mlp("tanh kaiming none", "init=kaiming", "norm=none"),
    mlp("tanh pytorch-init batchnorm", "init=pytorch", "norm=batchnorm"),
    mlp("relu kaiming batchnorm", "model.activation=relu", "init=kaiming", "norm=batchnorm"),
    mlp("relu kaiming none", "model.activation=relu", "init=kaiming", "norm=none"),
    mlp("tanh kaiming batchnorm adamw", "init=kaiming", "norm=batchnorm", "optim=adamw"),
    transformer("transformer recipe", "init=kaiming", "norm=layernorm"),
    # faulty
    mlp("naive init tanh", "init=naive", "norm=none", expect=("confident_start", "saturated")),
    mlp("naive init relu", "model.activation=relu", "init=naive", "norm=none", expect=("confident_start",)),
    mlp("huge output scale", "init=kaiming", "norm=none", "init.output_scale=10", expect=("confident_start",)),
    mlp("gain 3 tanh", "init=kaiming", "norm=none", "init.gain=3", expect=("saturated",)),
    mlp("lr 30 batchnorm", "init=kaiming", "norm=batchnorm", "optim.optimizer.lr=30", expect=("lr_too_high",)),
    mlp("lr 5 no norm", "init=kaiming", "norm=none", "optim.optimizer.lr=5", expect=("lr_too_high", "diverged")),
    mlp("lr 1e-5 batchnorm", "init=kaiming", "norm=batchnorm", "optim.optimizer.lr=1e-5", expect=("lr_too_low",)),
    mlp("adamw lr 1e-6", "init=kaiming", "norm=batchnorm", "optim=adamw", "optim.optimizer.lr=1e-6",
        expect=("lr_too_low",)),
    mlp("adamw lr 0.3", "init=kaiming", "norm=batchnorm", "optim=adamw", "optim.optimizer.lr=0.3",
        expect=("lr_too_high",)),
    mlp("momentum blow-up", "init=kaiming", "norm=batchnorm", "optim.optimizer.lr=1.0", "optim.optimizer.momentum=0.99",
        expect=("lr_too_high", "diverged")),
    mlp("vanishing deep net", "init=kaiming", "norm=none", "model.depth=12", "init.gain=0.5",
        expect=("vanishing_gradients",)),
    mlp("exploding deep net", "init=kaiming", "norm=none", "model.depth=12", "init.gain=3",
        expect=("exploding_gradients", "saturated")),
    mlp("dying relu", "model.activation=relu", "init=kaiming", "norm=none", "optim.optimizer.lr=1.0",
        expect=("dead_units", "lr_too_high", "diverged")),
    transformer("naive transformer", "init=naive", "norm=layernorm", expect=("attention", "saturated", "confident_start")),
    transformer("naive transformer no norm", "init=naive", "norm=none", expect=("attention", "saturated", "confident_start")),
]


@dataclass
class Outcome:
    case: Case
    result: dict[str, Any] = field(default_factory=dict)
    diagnosis: Any = None
    fixed_result: dict[str, Any] = field(default_factory=dict)
    fixed: Any = None
    bad_remedies: list[str] = field(default_factory=list)

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
    steps = TRANSFORMER_STEPS if case.transformer else MLP_STEPS
    every = [f"callbacks.diagnostics.every_n_steps={EVERY}", "callbacks.diagnostics.histogram_every_n_steps=null",
             "callbacks.diagnostics.figures_every_n_steps=null", "~callbacks.diagnostics.probes.figures"]
    return ["data=file", f"data.path={data}", f"trainer.max_steps={steps}", f"trainer.val_check_interval={steps}",
            f"trainer.log_every_n_steps={EVERY}", "trainer.num_sanity_val_steps=0",
            "callbacks.progress.lines=true", *every, *case.overrides, *extra, f"hydra.run.dir={run_dir}"]


def same_run(previous: Path, case: Case, data: str, extra: list[str]) -> bool:
    """Whether a folder of an earlier benchmark holds exactly this run: finished, and its config record is what
    these arguments compose (runs are bit-identical for the same config and seed on CPU, threads=1)."""
    from omegaconf import OmegaConf

    from namegen.bench import compose_cfg
    from namegen.diagnosis.repair import leaves

    record = previous / ".hydra" / "config.yaml"
    if not (record.is_file() and (previous / "result.json").is_file()):
        return False
    with _lock:
        wanted = compose_cfg([*train_args(case, data, previous, extra)[:-1], f"run_dir={previous}"])
    return leaves(OmegaConf.load(record)) == leaves(wanted)


def train(case: Case, data: str, run_dir: Path, extra: list[str], reuse: Path | None) -> Path:
    """The run folder of this case (and fix): an identical one of an earlier benchmark, or a new run."""
    from namegen.diagnosis.repair import TRAIN_PY

    if reuse is not None and same_run(reuse / run_dir.name, case, data, extra):
        return reuse / run_dir.name
    subprocess.run([sys.executable, str(TRAIN_PY), *train_args(case, data, run_dir, extra)],
                   capture_output=True, text=True, cwd=TRAIN_PY.parent)
    return run_dir


_lock = threading.Lock()


def bad_remedies(case: Case, data: str, fix_overrides: list[str], diagnosis: Any) -> list[str]:
    """Each remedy override already in effect in the case's config, or refused with the fix applied: composed and
    validated here, independently of the diagnosis's own filter."""
    from omegaconf import OmegaConf

    from namegen.bench import compose_cfg
    from namegen.checks import validate
    from namegen.diagnosis.config import parse, same
    from namegen.errors import ConfigError

    bad = []
    with _lock:
        base = compose_cfg([*train_args(case, data, Path("unused"), [])[:-1], "run_dir=unused"])
        for f in diagnosis.findings:
            for override in f.remedy.overrides:
                key, value = parse(override)
                if same(OmegaConf.select(base, key), value):
                    bad.append(f"{override} in effect")
        try:
            validate(compose_cfg([*train_args(case, data, Path("unused"), fix_overrides)[:-1], "run_dir=unused"]))
        except ConfigError as e:
            bad.append(f"{' '.join(fix_overrides)} refused: {e}")
    return bad


def run_case(case: Case, data: str, out: Path, reuse: Path | None) -> Outcome:
    from namegen.diagnosis import diagnose_run
    from namegen.results import read_result

    slug = case.name.replace(" ", "_")
    folder = train(case, data, out / slug, [], reuse)
    o = Outcome(case, read_result(folder))
    o.diagnosis = diagnose_run(folder)
    fix = o.diagnosis.fix
    o.bad_remedies = bad_remedies(case, data, fix, o.diagnosis) if fix else []
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
    rows = ["| case | label | findings | notes | fix | val before | val after | after the fix | verdict |",
            "|---|---|---|---|---|---|---|---|---|"]
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
        rows.append(f"| {o.case.name} | {label} | {','.join(o.found) or 'healthy'} | {notes} | "
                    f"{'`' + fix + '`' if fix else ''} | {loss(o.result)} | "
                    f"{loss(o.fixed_result) if o.fixed is not None else ''} | {after} | {verdict} |")
    return "\n".join(rows) + "\n"


def totals(outcomes: list[Outcome]) -> str:
    faulty = [o for o in outcomes if o.case.expect]
    healthy = [o for o in outcomes if not o.case.expect]
    detected = [o for o in faulty if o.detected]
    remedies = sum(len(f.remedy.overrides) for o in outcomes for f in o.diagnosis.findings)
    bad = [b for o in outcomes for b in o.bad_remedies]
    repaired = [o for o in detected if o.repaired]
    pct = lambda a, b: f"{a}/{b} = {a / b:.0%}" if b else "n/a"  # noqa: E731
    lines = [f"detection: {pct(len(detected), len(faulty))}",
             f"false positives: {sum(o.false_positive for o in healthy)} of {len(healthy)} healthy cases",
             f"remedies in effect or refused: {len(bad)} of {remedies} remedy overrides"
             + (f" ({'; '.join(bad)})" if bad else ""),
             f"repair: {pct(len(repaired), len(detected))}"]
    return "\n".join(lines) + "\n"


def bench_diagnosis(data: str, out: Path, jobs: int = JOBS, reuse: Path | None = None) -> None:
    """`reuse`: an earlier benchmark's folder whose runs are taken as they are where their config is identical
    (after a change to the diagnosis alone, only the fixes that changed train again)."""
    data = str(Path(data).resolve())
    out = out / time.strftime("diagnosis_%Y-%m-%d_%H-%M-%S")  # each benchmark trains into folders of its own
    out.mkdir(parents=True)
    print(f"## diagnosis benchmark: {len(CASES)} cases on {data}, MLP {MLP_STEPS} steps, Transformer "
          f"{TRANSFORMER_STEPS} steps, {jobs} jobs at a time" + (f", reusing identical runs of {reuse}" if reuse else ""),
          flush=True)
    start = time.perf_counter()
    with ThreadPoolExecutor(jobs) as pool:
        # the slow Transformer cases first, so the two lanes end together
        order = sorted(CASES, key=lambda c: not c.transformer)
        outcomes = {o.case.name: o for o in pool.map(lambda c: run_case(c, data, out, reuse), order)}
    outcomes = [outcomes[c.name] for c in CASES]
    text = f"\n{table(outcomes)}\n{totals(outcomes)}\nwall time: {time.perf_counter() - start:.0f} s\n"
    print(text)
    (out / "diagnosis_bench.md").write_text(text)
    (out / "diagnosis_bench.json").write_text(json.dumps(
        [{"case": o.case.name, "expect": list(o.case.expect), "found": o.found, "fix": o.diagnosis.fix,
          "val": o.result.get("val_loss"), "fixed_val": o.fixed_result.get("val_loss"),
          "fixed_found": [f.name for f in o.fixed.findings] if o.fixed else None} for o in outcomes], indent=1))
