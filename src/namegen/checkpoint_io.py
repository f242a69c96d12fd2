"""Checkpoint writing for the Trainer (`trainer.plugins` in conf/trainer/default.yaml)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from lightning.pytorch.plugins.io import TorchCheckpointIO


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
        tmp = path.with_name(f".{path.name}.tmp")
        try:
            super().save_checkpoint(checkpoint, tmp, storage_options)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
