"""The run's own config, as the remedies read it: its record (`.hydra/config.yaml`) or the live config at the end
of training. A remedy is a list of value overrides (`model.norm=layernorm`, `optim.optimizer.lr=0.05`): the same
text applies to the record and on `python train.py`'s command line.
"""

from __future__ import annotations

import functools
import math
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from namegen.errors import ConfigError, UserError
from namegen.results import RECORD


REPO = Path(__file__).resolve().parents[3]
CONF_DIR = REPO / "conf"
ADAM_BETAS = (0.9, 0.999)  # torch.optim.Adam/AdamW's default


COMPOSE_LOCK = threading.Lock()  # Hydra's compose API holds global state


def compose_config(overrides: list[str]) -> DictConfig:
    """The config `python train.py <overrides>` composes (outside Hydra's runtime: give run_dir)."""
    from hydra import compose, initialize_config_dir

    import namegen.resolvers  # noqa: F401  the config's interpolations use them

    with COMPOSE_LOCK, initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=overrides)


def parse(override: str) -> tuple[str, Any]:
    """`key=value` as Hydra's command line parses it: (key, value)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    o = OverridesParser.create().parse_override(override)
    return o.key_or_group, o.value()


def same(a: Any, b: Any) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool) and not isinstance(b, bool):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=0.0)
    return a == b


@functools.cache
def recipes() -> tuple[tuple[str, str | None, float, float], ...]:
    """(optimizer target, scheduler target, lr, momentum) of each conf/optim option, by file name."""
    out = []
    for path in sorted((CONF_DIR / "optim").glob("*.yaml")):
        o = OmegaConf.load(path)
        out.append((OmegaConf.select(o, "optimizer._target_"), OmegaConf.select(o, "scheduler._target_"),
                    float(o.optimizer.lr), float(OmegaConf.select(o, "optimizer.momentum") or 0.0)))
    return tuple(out)


def fresh_sibling(run_dir: Path) -> Path:
    """`<run>-fix`, `<run>-fix2`, ...: the first that does not exist, next to the run (never into or over it)."""
    n = 1
    while (candidate := run_dir.parent / f"{run_dir.name}-fix{n if n > 1 else ''}").exists():
        n += 1
    return candidate


@dataclass
class RunConfig:
    """A namegen run's config, read through OmegaConf; `folder` is the run's folder when known (a remedy's rerun
    goes into a fresh sibling of it)."""

    cfg: DictConfig
    folder: Path | None = None

    @classmethod
    def of_run(cls, run_dir: Path) -> RunConfig | None:
        """The run folder's record; None for a run without one (someone else's module). A damaged record is a
        UserError, not a silent guess."""
        record = run_dir / RECORD
        if not record.is_file():
            return None
        import namegen.resolvers  # noqa: F401  the record's interpolations use them

        try:
            cfg = OmegaConf.load(record)
        except Exception as e:  # YAML and OmegaConf raise several types on a damaged file
            raise UserError(f"{record}: unreadable ({type(e).__name__}); restore it, or delete it to diagnose the run "
                            "without its config") from None
        return cls(cfg, run_dir) if isinstance(cfg, DictConfig) else None

    def get(self, key: str) -> Any:
        try:
            return OmegaConf.select(self.cfg, key, default=None)
        except Exception:  # an interpolation that only Hydra's runtime resolves (run_dir): unknown here
            return None

    # the values the remedies are computed from
    @property
    def arch(self) -> str:
        return self.get("model.arch") or "mlp"

    @property
    def activation(self) -> str | None:
        return self.get("model.activation")

    @property
    def norm(self) -> str | None:
        return self.get("model.norm")

    @property
    def scheme(self) -> str | None:
        return self.get("init.scheme")

    @property
    def gain(self) -> float | None:
        return self.get("init.gain")

    @property
    def output_scale(self) -> float | None:
        return self.get("init.output_scale")

    @property
    def lr(self) -> float | None:
        return self.get("optim.optimizer.lr")

    @property
    def optimizer(self) -> str:
        return str(self.get("optim.optimizer._target_") or "").rsplit(".", 1)[-1]

    @property
    def momentum(self) -> float:
        return float(self.get("optim.optimizer.momentum") or 0.0)

    @property
    def betas(self) -> tuple[float, float]:
        betas = self.get("optim.optimizer.betas")
        return (float(betas[0]), float(betas[1])) if betas is not None else ADAM_BETAS

    @property
    def recipe_lr(self) -> float | None:
        """The lr of the recipe for the run's optimizer (conf/optim: the first option with its optimizer and
        scheduler), put in the run's terms: SGD's steady step is lr/(1-momentum), so a run with more momentum than
        the recipe gets the recipe's steady step. None for an optimizer no recipe uses."""
        target, scheduler = self.get("optim.optimizer._target_"), self.get("optim.scheduler._target_")
        options = sorted((o for o in recipes() if o[0] == target), key=lambda o: o[1] != scheduler)
        if not options:
            return None
        _, _, lr, momentum = options[0]
        return lr if self.optimizer.startswith("Adam") else lr * (1 - self.momentum) / (1 - momentum)

    def in_effect(self, override: str) -> bool:
        key, value = parse(override)
        return same(self.get(key), value)

    def applied(self, overrides: list[str] | tuple[str, ...]) -> DictConfig:
        """A copy of the config with the overrides set."""
        cfg = OmegaConf.create(OmegaConf.to_container(self.cfg, resolve=False))
        for override in overrides:
            key, value = parse(override)
            OmegaConf.update(cfg, key, value, merge=False)
        return cfg

    def rerun(self, overrides: list[str] | tuple[str, ...]) -> DictConfig:
        """The config a remedy would run: the overrides set, written into a fresh folder (a sibling of the run's, as
        `namegen diagnose --fix` does), as a new run. The record's own `run_dir` is Hydra's interpolation, which
        resolves only inside Hydra, and its folder holds a finished run: neither is what the rerun meets."""
        folder = self.folder
        if folder is None:
            try:
                folder = Path(str(OmegaConf.select(self.cfg, "run_dir")))
            except Exception:  # the live config outside Hydra's runtime: no folder known
                folder = None
        if folder is None:
            folder = Path(tempfile.gettempdir()) / "namegen-remedy-check"
        cfg = self.applied(overrides)
        cfg.run_dir, cfg.resume = str(fresh_sibling(folder)), False
        return cfg

    def refusal(self, overrides: list[str] | tuple[str, ...]) -> str | None:
        """Why namegen would refuse the rerun with these overrides (checks.validate's one line), or None. A
        refusal the rerun without them meets too (the run's data file moved since) is not the remedy's: None."""
        from namegen.checks import validate

        try:
            validate(self.rerun(overrides))
            return None
        except ConfigError as e:
            refusal = str(e)
        try:
            validate(self.rerun([]))
        except ConfigError as e:
            if str(e) == refusal:
                return None
        return refusal
