"""`namegen diagnose RUN --fix`: the exact `python train.py ...` command that reruns a run with its diagnosis's
fixes; `--fix --run` runs it into a fresh sibling folder and sets before and after side by side.

The command is rebuilt from the run's config record: for each config group, the option whose composition is
closest to the record, then a value override for every key that still differs. It is checked by composing it
again: the command reproduces the record exactly, plus the fixes.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from namegen.diagnosis.config import COMPOSE_LOCK, CONF_DIR, REPO, RunConfig, fresh_sibling, parse
from namegen.diagnosis.engine import Diagnosis
from namegen.checks import flatten
from namegen.errors import UserError
from namegen.results import is_run

TRAIN_PY = REPO / "train.py"
GROUPS = ("data", "model", "init", "norm", "optim", "trainer", "callbacks", "logger")  # norm after model: it sets model.norm
PER_COMMAND = ("run_dir", "resume")  # where a command writes, not what it trains


def leaves(cfg: DictConfig) -> dict[str, Any]:
    tree = OmegaConf.to_container(cfg, resolve=False)
    return {k: v for k, v in flatten(tree).items() if k.split(".")[0] not in PER_COMMAND + ("hydra",)}


def value_text(v: Any) -> str:
    """A value as Hydra's override grammar reads it back."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, list):
        return "[" + ",".join(value_text(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ",".join(f"{k}:{value_text(x)}" for k, x in v.items()) + "}"
    text = str(v)
    try:
        if parse(f"k={text}")[1] == text:
            return text
    except Exception:  # Hydra's grammar refuses it unquoted
        pass
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def overrides_between(have: dict[str, Any], want: dict[str, Any]) -> list[str]:
    """The value overrides that turn `have` into `want`: `key=v`, `+key=v` (new), `~node` (gone, whole subtrees)."""
    out = []
    for key in want:
        if key not in have:
            out.append(f"+{key}={value_text(want[key])}")
        elif have[key] != want[key]:
            out.append(f"{key}={value_text(want[key])}")
    removed: list[str] = []
    for key in (k for k in have if k not in want):
        parts = key.split(".")
        prefixes = (".".join(parts[:n]) for n in range(1, len(parts) + 1))
        top = next((p for p in prefixes if not any(k == p or k.startswith(p + ".") for k in want)), None)
        if top is not None and top not in removed:  # None: an empty node that `want` fills
            removed.append(top)
    return out + [f"~{k}" for k in removed]


def command_overrides(cfg: DictConfig) -> list[str]:
    """The overrides of `python train.py` that compose exactly `cfg` (apart from where it writes)."""
    from hydra import compose, initialize_config_dir

    import namegen.resolvers  # noqa: F401  the composed config's interpolations use them

    want = leaves(cfg)
    with COMPOSE_LOCK, initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        defaults = compose("config", return_hydra_config=True).hydra.runtime.choices
        chosen: list[str] = []
        for group in GROUPS:
            options = sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))
            default = defaults.get(group)
            scored = []
            for option in options:
                trial = chosen + ([] if option == default else [f"{group}={option}"])
                have = leaves(compose("config", overrides=trial))
                scored.append((len(overrides_between(have, want)), option != default, option))
            _, _, best = min(scored)
            if best != default:
                chosen.append(f"{group}={best}")
        overrides = chosen + overrides_between(leaves(compose("config", overrides=chosen)), want)
        if leaves(compose("config", overrides=overrides)) != want:
            raise UserError("the run's config record cannot be rebuilt from conf/ (was it trained with another version "
                            "of namegen?); rerun it by hand with the fixes the diagnosis lists")
    return overrides


def fix_command(run_dir: Path, diagnosis: Diagnosis, out: Path | None = None) -> list[str]:
    """argv of the command that reruns the run with every fix, into `out` (default: a fresh sibling)."""
    config = RunConfig.of_run(run_dir)
    if config is None:
        raise UserError(f"{run_dir} has no namegen config record (.hydra/config.yaml): it was not trained by namegen, "
                        "so there is no command to rerun; apply the fixes the diagnosis describes in your own code")
    if not diagnosis.fix:
        raise UserError(f"{run_dir}: the diagnosis has no fix to apply (health: {diagnosis.health})")
    overrides = command_overrides(config.applied(diagnosis.fix))
    return [sys.executable, str(TRAIN_PY), *overrides, f"hydra.run.dir={value_text(str(out or fresh_sibling(run_dir)))}"]


def typed_command(argv: list[str]) -> str:
    """The command as a user types it from the repository's folder."""
    return " ".join(["python", "train.py"] + [shlex.quote(a) for a in argv[2:]])


def run_fix(run_dir: Path, diagnosis: Diagnosis) -> str:
    """Run the fix command into a fresh sibling folder; the before/after comparison as Markdown."""
    from namegen.diagnosis.files import diagnose_run
    from namegen.results import read_result

    out = fresh_sibling(run_dir)
    argv = fix_command(run_dir, diagnosis, out)
    print(f"running: {typed_command(argv)}", flush=True)
    done = subprocess.run(argv, cwd=os.getcwd(), capture_output=True, text=True)
    if not is_run(out):
        raise UserError(f"the fix command did not train (exit {done.returncode}): "
                        f"{(done.stderr.strip().splitlines() or ['no output'])[-1]}")
    after = diagnose_run(out)
    before_result, after_result = read_result(run_dir), read_result(out)
    return compare(run_dir.name, diagnosis, before_result, out.name, after, after_result)


def compare(before_name: str, before: Diagnosis, before_result: dict[str, Any], after_name: str, after: Diagnosis,
            after_result: dict[str, Any]) -> str:
    def loss(r: dict[str, Any]) -> str:
        v = r.get("val_loss")
        return f"{v:.4f}" if isinstance(v, (int, float)) else "n/a"

    def names(d: Diagnosis, notes: bool = False) -> str:
        return ", ".join(f.name for f in (d.notes if notes else d.findings)) or "none"

    rows = [("run", before_name, after_name), ("status", before_result.get("status", "n/a"), after_result.get("status", "n/a")),
            ("val loss", loss(before_result), loss(after_result)), ("health", before.health, after.health),
            ("findings", names(before), names(after)), ("notes", names(before, True), names(after, True))]
    lines = ["| | before | after |", "|---|---|---|"] + [f"| {a} | {b} | {c} |" for a, b, c in rows]
    return "\n".join(lines) + "\n"
