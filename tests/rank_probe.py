"""A callback for the DDP test, loaded by the training subprocess from the tests folder."""

import json
from pathlib import Path

import lightning as L
import torch


class RankWeights(L.Callback):
    """At the end of training, writes every process's parameter sums to rank_weights.json (rank zero writes).

    Data-parallel processes must hold the same weights after every step; a gradient that
    was not all-reduced shows as processes whose sums differ.
    """

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        sums = torch.stack([p.detach().double().sum() for p in pl_module.parameters()])
        gathered = trainer.strategy.all_gather(sums)  # (world_size, n_params)
        if trainer.is_global_zero:
            out = Path(trainer.default_root_dir) / "rank_weights.json"
            out.write_text(json.dumps({"steps": trainer.global_step, "sums": gathered.tolist()}))
