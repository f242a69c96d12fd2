"""`validate(cfg)`: the one check a config passes before a run writes anything or spends a resource.

A table of value rules (key, test, requirement) and a list of checks that need more than one value, run in
order by one engine; the first failure is a ConfigError of one line naming the key, the value and the fix.
`train.py` runs it before Hydra makes the run folder (and for every job of a sweep before launching any),
`train(cfg)` again before it builds anything. Imports torch but not Lightning: a mistake is answered before the
training stack loads.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Callable

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from namegen.budget import run_estimate
from namegen.errors import ConfigError, is_positive_int, shown
from namegen.results import DATA_RECORD, RECORD, run_folders, what_run

MAX_SEED = 2**32 - 1  # what seed_everything (numpy's seeding) accepts
CORES = os.cpu_count() or 1
# what a resume may change: how fast and what to watch, nothing the results depend on. Not trainer.max_steps:
# the LR schedule restored from the checkpoint was laid out over the original one.
RESUMABLE = ("resume", "run_dir", "threads", "callbacks", "logger")
# ... except a callback of these classes, which decides what the results are (ModelCheckpoint: which is "best")
DECIDES_RESULTS = ("ModelCheckpoint",)


def is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def accelerators() -> list[str]:
    """The trainer.accelerator values this machine can run: its devices, found without loading Lightning."""
    from importlib.util import find_spec

    import torch

    return (["cpu", "auto"] + ["gpu", "cuda"] * torch.cuda.is_available() + ["mps"] * torch.backends.mps.is_available()
            + ["tpu"] * (find_spec("torch_xla") is not None) + ["hpu"] * (find_spec("habana_frameworks") is not None))


def devices_ok(v: Any) -> bool:
    if isinstance(v, str) and v.strip().lstrip("-").isdigit():
        v = int(v)
    return v in ("auto", -1) or (is_int(v) and 1 <= v <= CORES)


POSITIVE = "must be a positive integer; set {key} >= 1"
# (key, test, what the value must be and how to fix it); a key absent from the config is not checked
VALUE_RULES: list[tuple[str, Callable[[Any], bool], str | Callable[[], str]]] = [
    ("optim.optimizer.lr", lambda v: v is None or (is_number(v) and 0 < v < math.inf),
     "must be a finite number > 0; makemore uses optim.optimizer.lr=0.1"),
    ("trainer.max_steps", is_positive_int, POSITIVE),
    ("trainer.val_check_interval", is_positive_int, POSITIVE),
    ("trainer.log_every_n_steps", is_positive_int, POSITIVE),
    ("compile", lambda v: v == "auto" or isinstance(v, bool),
     "must be auto (what the benchmark measured as faster here), true or false"),
    ("seed", lambda v: is_int(v) and 0 <= v <= MAX_SEED, "must be an integer in 0 .. 2**32 - 1"),
    ("threads", lambda v: v is None or (is_positive_int(v) and v <= CORES),
     f"must be a positive integer, at most this machine's {CORES} cores; set threads<={CORES}"),
    ("trainer.devices", devices_ok,
     f"must be 'auto', -1 or a number of processes from 1 to this machine's {CORES} cores; "
     f"set trainer.devices<={CORES}"),
    ("trainer.accelerator", lambda v: not isinstance(v, str) or v in accelerators(),
     lambda: f"names a device this machine does not have; choose one of {', '.join(accelerators())}"),
    ("init.output_scale", lambda v: is_number(v) and 0 < v <= 10,
     "must be in (0, 10] (kaiming shrinks the output layer by it; 0.1 is the lesson's)"),
    ("init.gain", lambda v: v is None or (is_number(v) and 0 < v <= 100),
     "must be in (0, 100], or null for the activation's gain"),
    ("data.batch_size", is_positive_int, POSITIVE),
    ("data.max_word_len", is_positive_int, POSITIVE),
]


def resolved(cfg: DictConfig) -> None:
    """Every interpolation resolves (`${oc.env:X}` with X unset is a traceback later, at first use)."""
    try:
        OmegaConf.to_container(cfg, resolve=True)
    except OmegaConfBaseException as e:
        raise unresolvable(cfg, e) from None


def unresolvable(cfg: DictConfig, e: OmegaConfBaseException) -> ConfigError:
    key = getattr(e, "full_key", None) or "a config value"
    raw = flatten(OmegaConf.to_container(cfg, resolve=False)).get(key)
    reason = str(e).strip().splitlines()[0].split(": ", 1)[-1] if str(e).strip() else type(e).__name__
    return ConfigError(f"{key}={shown(raw)} cannot be resolved ({reason}); give the value itself")


def values(cfg: DictConfig) -> None:
    for key, test, must in VALUE_RULES:
        value = OmegaConf.select(cfg, key, default=KeyError)
        if value is not KeyError and not test(value):
            text = must() if callable(must) else must
            raise ConfigError(f"{key}={shown(value)} {text.format(key=key)}")


def model_spec(cfg: DictConfig) -> dict[str, Any]:
    """The model's config with block_size resolved: a whole-name model's null takes the longest name it may see."""
    spec = OmegaConf.to_container(cfg.model, resolve=True)
    if spec.get("block_size") is None:
        spec["block_size"] = cfg.data.max_word_len + 1
    return spec


def model(cfg: DictConfig) -> None:
    from namegen.model import INITS
    from namegen.nets import model_config

    model_config(model_spec(cfg))  # the architecture's own field checks, nothing built
    if cfg.init.scheme not in INITS:
        raise ConfigError(f"unknown init.scheme {cfg.init.scheme!r}; choose one of {', '.join(INITS)}")


def build_or_refuse(node: DictConfig, key: str, *args: Any) -> Any:
    """Instantiate an optimizer or scheduler node on stand-ins, so torch's own argument checks speak now."""
    from hydra.utils import instantiate

    spec = OmegaConf.to_container(node, resolve=True)
    spec.pop("_partial_", None)
    try:
        return instantiate(spec, _partial_=True)(*args)
    except Exception as e:  # torch raises ValueError/TypeError for a bad argument, Hydra wraps them
        cause = e.__cause__ or e
        raise ConfigError(f"{key}: {str(cause).strip().splitlines()[0]}") from None


def optimizer(cfg: DictConfig) -> None:
    import torch

    built = build_or_refuse(cfg.optim.optimizer, "optim.optimizer", [torch.zeros(1, requires_grad=True)])
    scheduler = cfg.optim.get("scheduler")
    if scheduler is None:
        return
    steps = scheduler.get("milestones")
    if steps is not None and not all(is_int(s) and 1 <= s <= cfg.trainer.max_steps for s in steps):
        raise ConfigError(f"optim.scheduler.milestones={shown(list(steps))} must be steps of the run, integers from 1 "
                          f"to trainer.max_steps={cfg.trainer.max_steps}")
    build_or_refuse(scheduler, "optim.scheduler", built)


def data(cfg: DictConfig) -> None:
    from namegen.words import SOURCES, check_data_path

    if cfg.data.source not in SOURCES:
        raise ConfigError(f"unknown data.source {cfg.data.source!r}; choose one of {', '.join(SOURCES)}")
    if cfg.data.source == "file":
        check_data_path(cfg.data.path)


def observers(cfg: DictConfig) -> None:
    for name, node in (cfg.get("callbacks") or {}).items():
        # a building block chosen as the whole set (callbacks=attention) composes into a node Hydra cannot build
        if node is not None and (not isinstance(node, DictConfig) or "_target_" not in node):
            raise ConfigError(f"callbacks.{name} is not a callback (it has no _target_): choose a callback set, "
                              "callbacks=default, minimal or transformer")
    monitors = [name for name, c in (cfg.get("callbacks") or {}).items()
                if c is not None and str(c.get("_target_", "")).endswith("LearningRateMonitor")]
    if monitors and not cfg.get("logger"):
        raise ConfigError(f"callbacks.{monitors[0]} (Lightning's LearningRateMonitor) needs a logger; keep one or "
                          f"add ~callbacks.{monitors[0]}")
    from namegen.diagnosis.thresholds import Thresholds

    Thresholds.from_mapping(cfg.get("diagnosis"))


def processes(cfg: DictConfig) -> int:
    devices = OmegaConf.select(cfg, "trainer.devices", default=1)
    return int(devices) if str(devices).isdigit() else 1


def memory(cfg: DictConfig) -> None:
    """What the run will allocate, estimated by arithmetic (namegen.budget), against this machine's memory."""
    from namegen.words import corpus_bytes

    estimate = run_estimate(model_spec(cfg), corpus_bytes(cfg.data.source, cfg.data.get("path")),
                            cfg.data.batch_size, processes(cfg))
    estimate.check("the run")


def as_value(path: Path) -> str:
    """A path as a command-line override value: quoted where Hydra's grammar would read it otherwise."""
    text = str(path)
    return f"'{text}'" if any(c in text for c in "=,[]{}()'\" ") else text


def is_other_rank() -> bool:
    """A DDP process other than rank zero (Lightning starts them with LOCAL_RANK set): it follows rank zero's
    folder, which rank zero has checked and already writes into."""
    return os.environ.get("LOCAL_RANK", "0") != "0"


def flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, dict):
        return {k: v for key, value in node.items() for k, v in flatten(value, f"{prefix}{key}.").items()}
    return {prefix[:-1]: node}


def differences(saved: dict[str, Any], wanted: dict[str, Any]) -> tuple[dict[str, tuple], dict[str, tuple]]:
    """({key: (then, now)} a resume may not change but does, {key: (then, now)} it may change and does)."""
    fixed = tuple(f"callbacks.{name}." for name, node in (saved.get("callbacks") or {}).items()
                  if isinstance(node, dict) and str(node.get("_target_", "")).endswith(DECIDES_RESULTS))
    a, b = flatten(saved), flatten(wanted)
    differ = {k: (a.get(k), b.get(k)) for k in sorted(a.keys() | b.keys()) if a.get(k) != b.get(k)}
    free = {k: v for k, v in differ.items() if k.startswith(RESUMABLE) and not k.startswith(fixed)}
    return {k: v for k, v in differ.items() if k not in free}, free


def against_record(cfg: DictConfig, run_dir: Path) -> tuple[dict[str, tuple], dict[str, tuple]]:
    """`differences` between a run folder's config record and `cfg`."""
    return differences(OmegaConf.to_container(OmegaConf.load(run_dir / RECORD), resolve=False),
                       OmegaConf.to_container(cfg, resolve=False))


def folder(cfg: DictConfig, key: str = "run_dir") -> None:
    """The run folder: writable; a folder that holds a run is only ever continued (resume), with the same config
    on the same data; `resume=<folder>` names the run folder itself."""
    from namegen.paths import writable_folder
    from namegen.words import fingerprint

    run_dir = Path(cfg.run_dir)
    if is_other_rank():
        return
    writable_folder(run_dir, key)
    resume = cfg.resume
    if not isinstance(resume, bool):
        if not Path(str(resume)).is_dir():
            raise ConfigError(f"resume: {resume} is not a namegen run folder (no such folder); give the folder of "
                              "the run to continue, or resume=false for a new run")
        if Path(str(resume)).resolve() != run_dir.resolve():
            raise ConfigError(f"resume={resume} continues that run in its own folder, but {key}={run_dir} names "
                              f"another; drop one of them")
    held = what_run(run_dir)
    if resume is False:
        if held:
            raise ConfigError(f"{run_dir} already holds a run (its {held}); continue it with "
                              f"resume={as_value(run_dir)}, or give a new folder: a finished run is never written over")
        runs = run_folders(run_dir)
        if runs:  # a sweep's folder: a run trained into it would make its runs unreadable as a sweep
            raise ConfigError(f"{run_dir} holds a sweep's runs ({len(runs)}, such as {runs[0].name}); give a new "
                              "folder")
        return
    record = run_dir / RECORD
    if not record.is_file():
        if not isinstance(resume, bool) or held:
            raise ConfigError(f"resume: {run_dir} is not a namegen run folder (no {RECORD}); give the folder of the "
                              "run to continue, or resume=false for a new run")
        return  # resume=true in a sweep whose job never started: it starts at step 0
    fixed, _ = against_record(cfg, run_dir)
    if fixed:
        shown_keys = ", ".join(f"{k}={then!r}, not {now!r}" for k, (then, now) in list(fixed.items())[:3])
        raise ConfigError(f"resume: {run_dir} was trained with {shown_keys}; resume with the run's own overrides "
                          f"(its {RECORD}), changing only threads, loggers or callbacks other than the checkpoint's")
    data_record = run_dir / DATA_RECORD
    if data_record.is_file():
        then, now = json.loads(data_record.read_text()), fingerprint(cfg.data.source, cfg.data.get("path"))
        if then["sha256"] != now["sha256"]:
            raise ConfigError(f"resume: the corpus changed since {run_dir} was trained ({then['bytes']:,} bytes, "
                              f"sha256 {then['sha256'][:12]} then; {now['bytes']:,} bytes, {now['sha256'][:12]} now): "
                              "its train/val/test split would differ; resume on the same corpus, or start a new run")


# in order: later checks rely on what earlier ones established; the costly ones (the memory estimate, hashing the
# corpus for a resume) come last
CHECKS: list[Callable[[DictConfig], None]] = [resolved, values, model, optimizer, data, observers, memory]


def validate(cfg: DictConfig, folder_key: str = "run_dir") -> None:
    """Refuse the config's first mistake with a one-line ConfigError; `folder_key` is what the user calls the run's
    folder (hydra.run.dir, hydra.sweep.dir, run_dir)."""
    validate_values(cfg)
    folder(cfg, folder_key)


def validate_values(cfg: DictConfig) -> None:
    """`validate` but for the run folder: whether the config itself would run (what a fix, run into a folder of
    its own, depends on)."""
    for check in CHECKS:
        check(cfg)
