"""Checkpoint writing for the Trainer: how a file is written (`trainer.plugins` in conf/trainer/default.yaml) and
when (`callbacks.checkpoint`, conf/callbacks/checkpoint.yaml)."""

from __future__ import annotations

import os
from functools import cached_property
from pathlib import Path
from typing import Any

from lightning.pytorch.callbacks import ModelCheckpoint as LightningModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO


class ModelCheckpoint(LightningModelCheckpoint):
    """Lightning's ModelCheckpoint, its `state_key` computed once. Lightning reads every callback's state key at
    every hook call, each step (to name the call for its profiler), and ModelCheckpoint builds its key anew each
    time from its arguments, a repr of them: ~10 us a call, six calls a training step. Its arguments never change
    after __init__, so neither does the key (the same string: checkpoints written before load alike)."""

    @cached_property
    def state_key(self) -> str:
        return super().state_key


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes each checkpoint to a temporary file next to it, then renames it into place.

    A rename within one folder is atomic, so a run killed mid-write leaves the previous last.ckpt whole
    instead of a truncated one that resume would choke on; a failed write (a full disk) removes its
    temporary file. Lightning's own save is not enough: its fsspec transaction writes the temporary file
    in the system's temp folder and moves it into place, which is a rename only when that folder is on
    the checkpoint's filesystem; elsewhere (a tmpfs /tmp, a cluster's scratch disk) the move copies
    straight into last.ckpt, and a kill during the copy truncates it (tests/test_resume.py shows both).
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        try:
            super().save_checkpoint(checkpoint, tmp, storage_options)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
