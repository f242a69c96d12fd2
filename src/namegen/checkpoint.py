"""The one place checkpoints are read, for sampling, reports and resuming training.

Checkpoints are loaded with `torch.load(weights_only=True)`: only tensors and
plain containers are unpickled, so a crafted file cannot run code. This module
does not import Lightning, so `namegen sample` starts fast.
"""

from __future__ import annotations

import pickle
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from namegen.vocab import Vocab
from namegen.errors import UserError
from namegen.paths import regular_file

PICKLE_START = b"\x80"  # the PROTO opcode every pickle of protocol 2 and later starts with

CHECKPOINT_KEY = "namegen"  # marks our checkpoints
CHECKPOINT_VERSION = 3  # 3: the model and vocabulary travel as the LightningModule's hyperparameters
# formats 1 and 2 kept the MLP's config and the vocabulary under CHECKPOINT_KEY; they still sample
READABLE_VERSIONS = (1, 2, CHECKPOINT_VERSION)

CHECKPOINT_DIR = "checkpoints"
BEST, LAST = "best.ckpt", "last.ckpt"


class CheckpointError(UserError):
    """A path that does not lead to a usable namegen checkpoint; the message says why."""


@dataclass
class Loaded:
    model: torch.nn.Module  # in eval mode: BatchNorm uses its running statistics
    vocab: Vocab
    path: Path
    raw: dict[str, Any]


def resolve(path: str | Path, name: str = BEST) -> Path:
    """A .ckpt file as is; a run folder -> its checkpoints/<name>, or its last.ckpt (said on stderr) when it has
    no best one (a run trained without validation, `+trainer.limit_val_batches=0`, never picks a best)."""
    p = Path(path).expanduser()
    if p.is_dir():
        candidate = p / CHECKPOINT_DIR / name
        if not candidate.is_file() and name == BEST and (p / CHECKPOINT_DIR / LAST).is_file():
            print(f"namegen: {p} has no {CHECKPOINT_DIR}/{BEST} (trained without validation?); using its {LAST}",
                  file=sys.stderr)
            candidate = p / CHECKPOINT_DIR / LAST
        if not candidate.is_file():
            raise CheckpointError(f"{p} has no {CHECKPOINT_DIR}/{name}; is it a namegen run folder that has trained?")
        return candidate
    try:
        return regular_file(p, None, "a .ckpt file or a run folder")
    except UserError as e:
        raise CheckpointError(str(e)) from None


def first_line(e: BaseException) -> str:
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0]}" if text else type(e).__name__


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The checkpoint dict of a namegen .ckpt file, read weights-only, or a CheckpointError."""
    p = Path(path)
    with open(p, "rb") as f:
        first = f.read(1)
    if first == PICKLE_START and not zipfile.is_zipfile(p):
        # torch.save writes a zip archive: a bare pickle was written by pickle.dump, and may hold any Python object
        raise CheckpointError(f"{p}: refused, a raw Python pickle, not a torch checkpoint: it holds Python objects, "
                              "which unpickling could run as code; give a namegen .ckpt")
    try:
        ckpt = torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        # torch's message suggests weights_only=False, which is exactly what must not be done with an unknown file
        reason = "it holds Python objects beyond weights" if "GLOBAL" in str(e) or "global" in str(e) else "corrupt"
        raise CheckpointError(f"{p}: refused, not a weights-only checkpoint ({reason}); give a namegen .ckpt") from None
    except Exception as e:  # torch.load raises many types on a file that is not a checkpoint
        raise CheckpointError(f"{p}: not a readable checkpoint, truncated or corrupt ({first_line(e)})") from None
    meta = ckpt.get(CHECKPOINT_KEY) if isinstance(ckpt, dict) else None
    if not isinstance(meta, dict) or "state_dict" not in ckpt:
        raise CheckpointError(f"{p}: not a namegen checkpoint (no '{CHECKPOINT_KEY}' section); was it written by namegen?")
    if meta.get("version") not in READABLE_VERSIONS:
        raise CheckpointError(
            f"{p}: namegen checkpoint format {meta.get('version')!r}; this namegen reads formats"
            f" {', '.join(map(str, READABLE_VERSIONS))}"
        )
    return ckpt


def model_spec(ckpt: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """(model spec, vocabulary) of a checkpoint, from its hyperparameters (format 3) or its namegen section."""
    meta = ckpt[CHECKPOINT_KEY]
    source = ckpt.get("hyper_parameters", {}) if meta["version"] == CHECKPOINT_VERSION else meta
    return source["model"], source["vocab"]


def check_size(path: Path, spec: dict[str, Any], state: dict[str, Any], vocab: int) -> None:
    """Before the model is built: the one estimate (namegen.budget) of what it allocates fits in memory, and its
    parameters are no more than the weights the file holds (an edited `n_hidden=12000` is refused, not built)."""
    from dataclasses import asdict

    from namegen.budget import model_estimate
    from namegen.nets import model_config

    config = asdict(model_config(spec))
    estimate = model_estimate({"arch": spec.get("arch", "mlp"), **config}, vocab)
    estimate.check(f"{path}: its model")
    held = sum(t.numel() for t in state.values() if isinstance(t, torch.Tensor))
    if estimate.parameters > held:
        raise CheckpointError(f"{path}: its metadata describes a model of {estimate.parameters:,} parameters but the "
                              f"file holds {held:,} weights; the file was edited or written by another program")


def load_checkpoint(path: str | Path) -> Loaded:
    """Rebuild the trained model and its vocabulary from a .ckpt file or a run folder (best checkpoint)."""
    from namegen.nets import build_model

    p = resolve(path)
    ckpt = read_checkpoint(p)
    prefix = "model."
    try:
        spec, chars = model_spec(ckpt)
        vocab = Vocab.from_list(chars)
        check_size(p, spec, ckpt["state_dict"], len(vocab))
        model = build_model(spec)
        model.load_state_dict({k[len(prefix):]: v for k, v in ckpt["state_dict"].items() if k.startswith(prefix)})
    except UserError as e:  # a check's own message (it is a ValueError too)
        raise CheckpointError(f"{p}: {e}" if str(p) not in str(e) else str(e)) from None
    except (KeyError, TypeError, ValueError, RuntimeError, IndexError) as e:  # shapes or metadata that don't match
        raise CheckpointError(f"{p}: its model does not match its own metadata ({first_line(e)}); "
                              "the file was edited or written by another program") from None
    if getattr(model.cfg, "vocab_size", len(vocab)) != len(vocab):
        raise CheckpointError(f"{p}: its model predicts {model.cfg.vocab_size} characters but its vocabulary has "
                              f"{len(vocab)}; the file was edited or written by another program")
    bad = [name for name, t in model.state_dict().items() if t.is_floating_point() and not torch.isfinite(t).all()]
    if bad:
        raise CheckpointError(f"{p}: holds non-finite weights ({', '.join(bad[:3])}); the run diverged before "
                              "this checkpoint: sample an earlier or a healthy run")
    return Loaded(model.eval(), vocab, p, ckpt)
