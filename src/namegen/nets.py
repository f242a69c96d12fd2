"""The architectures namegen trains, by name: `build_model({"arch": ..., **config})`.

Each takes `idx` (B, T) and returns logits whose last dimension is the vocabulary:
(B, V) for the MLP (the next character after the window), (B, T, V) for the
Transformer (the next character after every position).
"""

from __future__ import annotations

from typing import Any

import torch.nn as nn

from namegen.errors import ConfigError
from namegen.model import MLP, MLPConfig, initialize
from namegen.transformer import Transformer, TransformerConfig, initialize_transformer

# arch -> (config dataclass, network, init function taking (model, scheme, gain, output_scale))
ARCHITECTURES = {
    "mlp": (MLPConfig, MLP, initialize),
    "transformer": (TransformerConfig, Transformer, initialize_transformer),
}
# config keys that describe how the model is fed, not the network; the data module reads them
DATA_KEYS = ("arch", "context")


def model_config(spec: dict[str, Any]) -> Any:
    """The architecture's config dataclass for a model spec (`arch` plus its config fields), its checks passed."""
    arch = spec.get("arch", "mlp")
    if arch not in ARCHITECTURES:
        raise ConfigError(f"unknown model.arch {arch!r}; choose one of {', '.join(ARCHITECTURES)}")
    config_cls = ARCHITECTURES[arch][0]
    fields = {k: v for k, v in spec.items() if k not in DATA_KEYS}
    try:
        config = config_cls(**fields)
    except TypeError as e:
        if "unexpected keyword" not in str(e):  # a value of the wrong type inside the config's own checks
            raise ConfigError(f"model.arch={arch}: {e}") from None
        valid = ", ".join(f"model.{f}" for f in config_cls.__dataclass_fields__)
        raise ConfigError(f"model.arch={arch}: {e}; valid keys are {valid}") from None
    return config


def build_model(spec: dict[str, Any], init: dict[str, Any] | None = None) -> nn.Module:
    """The network a model spec describes (`arch` plus its config fields), initialized by `init` if given."""
    config = model_config(spec)
    _, model_cls, init_fn = ARCHITECTURES[spec.get("arch", "mlp")]
    model = model_cls(config)
    if init is not None:
        init_fn(model, init["scheme"], init.get("gain"), init.get("output_scale", 0.1))
    return model
