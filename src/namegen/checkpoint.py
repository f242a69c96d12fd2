"""The one place checkpoints are read, for sampling, reports and resuming training.

Checkpoints are loaded with `torch.load(weights_only=True)`: only tensors and
plain containers are unpickled, so a crafted file cannot run code.
"""

from __future__ import annotations

import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from namegen.data import Vocab
from namegen.errors import UserError
from namegen.model import MLP, MLPConfig
from namegen.module import CHECKPOINT_KEY, CHECKPOINT_VERSION

# the model and vocabulary are stored alike in these; resuming training needs CHECKPOINT_VERSION itself
READABLE_VERSIONS = (1, CHECKPOINT_VERSION)

CHECKPOINT_DIR = "checkpoints"
BEST, LAST = "best.ckpt", "last.ckpt"


class CheckpointError(UserError):
    """A path that does not lead to a usable namegen checkpoint; the message says why."""


@dataclass
class Loaded:
    model: MLP  # in eval mode: BatchNorm uses its running statistics
    vocab: Vocab
    path: Path
    raw: dict[str, Any]


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes each checkpoint to a temporary file, then renames it into place.

    A rename is atomic, so a run killed mid-write leaves the previous last.ckpt
    whole instead of a truncated one that resume would choke on.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        super().save_checkpoint(checkpoint, tmp, storage_options)
        os.replace(tmp, path)


def resolve(path: str | Path, name: str = BEST) -> Path:
    """A .ckpt file as is; a run folder -> its checkpoints/<name>."""
    p = Path(path).expanduser()
    if p.is_dir():
        candidate = p / CHECKPOINT_DIR / name
        if not candidate.is_file():
            raise CheckpointError(f"{p} has no {CHECKPOINT_DIR}/{name}; is it a namegen run folder that has trained?")
        return candidate
    if not p.exists():
        raise CheckpointError(f"no such file or folder: {str(p)!r}; give a .ckpt file or a run folder")
    return p


def _first_line(e: Exception) -> str:
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0]}" if text else type(e).__name__


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The checkpoint dict of a namegen .ckpt file, read weights-only, or a CheckpointError."""
    p = Path(path)
    try:
        ckpt = torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(f"{p}: refused to load, it holds more than weights ({_first_line(e)})") from None
    except Exception as e:  # torch.load raises many types on a file that is not a checkpoint
        raise CheckpointError(f"{p}: not a readable checkpoint, truncated or corrupt ({_first_line(e)})") from None
    meta = ckpt.get(CHECKPOINT_KEY) if isinstance(ckpt, dict) else None
    if not isinstance(meta, dict) or "state_dict" not in ckpt:
        raise CheckpointError(f"{p}: not a namegen checkpoint (no '{CHECKPOINT_KEY}' section); was it written by namegen?")
    if meta.get("version") not in READABLE_VERSIONS:
        raise CheckpointError(
            f"{p}: namegen checkpoint format {meta.get('version')!r}; this namegen reads formats"
            f" {', '.join(map(str, READABLE_VERSIONS))}"
        )
    return ckpt


def load_checkpoint(path: str | Path) -> Loaded:
    """Rebuild the trained model and its vocabulary from a .ckpt file or a run folder (best checkpoint)."""
    p = resolve(path)
    ckpt = read_checkpoint(p)
    meta = ckpt[CHECKPOINT_KEY]
    model = MLP(MLPConfig(**meta["model"]))
    prefix = "model."
    model.load_state_dict({k[len(prefix):]: v for k, v in ckpt["state_dict"].items() if k.startswith(prefix)})
    return Loaded(model.eval(), Vocab.from_list(meta["vocab"]), p, ckpt)
