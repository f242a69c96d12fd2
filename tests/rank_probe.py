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


HOOKS = ("on_train_batch_start", "on_before_zero_grad", "on_before_backward", "on_after_backward",
         "on_before_optimizer_step", "on_train_batch_end")


class HookCounts(L.Callback):
    """Counts Lightning's per-step hooks in every process; writes hook_counts.json (every rank's counts) at the end."""

    def __init__(self):
        self.counts = dict.fromkeys(HOOKS, 0)

    def __getattribute__(self, name):
        if name in HOOKS:
            counts = object.__getattribute__(self, "counts")
            return lambda *args, **kwargs: counts.__setitem__(name, counts[name] + 1)
        return object.__getattribute__(self, name)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        mine = torch.tensor([self.counts[h] for h in HOOKS])
        gathered = trainer.strategy.all_gather(mine) if trainer.world_size > 1 else mine[None]
        if trainer.is_global_zero:
            out = Path(trainer.default_root_dir) / "hook_counts.json"
            out.write_text(json.dumps({"steps": trainer.global_step,
                                       "ranks": [dict(zip(HOOKS, row)) for row in gathered.tolist()]}))
