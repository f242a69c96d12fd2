"""The run's own config, as the remedies read it: its record (`.hydra/config.yaml`) or the live config at the end
of training. A remedy is a list of value overrides (`model.norm=layernorm`, `optim.optimizer.lr=0.05`): the same
text applies to the record and on `python train.py`'s command line.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from namegen.errors import ConfigError, UserError
from namegen.results import RECORD


def parse(override: str) -> tuple[str, Any]:
    """`key=value` as Hydra's command line parses it: (key, value)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    o = OverridesParser.create().parse_override(override)
    return o.key_or_group, o.value()


def same(a: Any, b: Any) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool) and not isinstance(b, bool):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=0.0)
    return a == b


@dataclass
class RunConfig:
    """A namegen run's config, read through OmegaConf."""

    cfg: DictConfig

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
        return cls(cfg) if isinstance(cfg, DictConfig) else None

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

    def refusal(self, overrides: list[str] | tuple[str, ...]) -> str | None:
        """Why namegen would refuse the config with these overrides (checks.validate's one line), or None.

        A run whose own config no longer validates here (its data file moved, more threads than this
        machine has) is judged by the model's own checks alone (nets.build_model).
        """
        from namegen.checks import validate_values as validate  # a fix runs into a new folder: not this run's

        try:
            validate(self.applied(overrides))
            return None
        except ConfigError as e:
            refusal = str(e)
        try:
            validate(self.cfg)
        except ConfigError:
            return self.model_refusal(overrides)
        return refusal

    def model_refusal(self, overrides: list[str] | tuple[str, ...]) -> str | None:
        import torch

        from namegen.nets import build_model

        spec = OmegaConf.to_container(self.applied(overrides).model, resolve=True)
        try:
            with torch.device("meta"):
                build_model({**spec, "block_size": spec.get("block_size") or 64})
        except ConfigError as e:
            return str(e)
        return None
