"""The LightningModule: one loss, the optimizer and its schedule, what gets logged.

Training goes through Lightning's automatic optimization, one optimizer step per
batch, so every standard hook, logger, scheduler and Trainer flag behaves as
Lightning documents it (`trainer.global_step` counts optimizer steps).
"""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch
import torch.nn as nn
import torch.nn.functional as F

from callbacks.tags import ACT, ATTN, GRAD, GRAD_DATA_RATIO, NORM, UPDATE_RATIO, family_regex
from namegen.checkpoint import CHECKPOINT_KEY, CHECKPOINT_VERSION
from namegen.errors import ConfigError
from namegen.nets import build_model
from namegen.stats import buffers_kept, format_layer_stats, layer_stats

def multiline(*regexes: str) -> list:
    return ["Multiline", list(regexes)]


# TensorBoard's Custom Scalars layout: each quantity as one chart across layers, the lesson's first
CHARTS = {
    "1. the lesson": {
        "loss at step 0 (init/loss) next to log V, a uniform guess's (init/uniform_loss)": multiline(r"^init/"),
        "train and validation loss": multiline(r"^train/loss$", r"^val/loss$"),
        "saturation: fraction of each activation in its flat region": multiline(family_regex(ACT, "saturation")),
        "log10 update:data ratio of each weight matrix (about -3 is healthy)": multiline(family_regex(UPDATE_RATIO)),
    },
    "2. activations": {
        "activation std by layer": multiline(family_regex(ACT, "std")),
        "dead units (flat for the whole batch)": multiline(family_regex(ACT, "dead")),
        "std of each norm's input: the scale it takes out": multiline(family_regex(NORM, "in_std")),
        "attention logits' std (softmax saturates when large)": multiline(family_regex(ATTN, "std")),
    },
    "3. gradients": {
        "gradient std reaching each activation": multiline(family_regex(GRAD, "std")),
        "grad:data ratio of each weight matrix": multiline(family_regex(GRAD_DATA_RATIO)),
    },
    "4. learning rate": {"learning rate": multiline(r"^lr-")},
}


def loss_fn(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The one loss: mean cross-entropy of the next character over every position that has one.

    Works for one prediction per example ((B, V) logits, (B,) targets) and one per position
    ((B, T, V), (B, T), padding marked -1) alike.
    """
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-1)


class DivergedError(RuntimeError):
    """The loss stopped being finite or exploded at `step`. The message names the step and each layer's state.

    `read_at` is the step at which the loss was read (see `NameGen.reads_loss_at`): `step` itself where
    reading costs nothing, so the layers' state is the one that produced the bad loss and `layer` the first
    whose statistics went non-finite; a later step otherwise, after the bad steps' updates have spread
    non-finite weights through every layer, so no layer is named.
    """

    def __init__(self, step: int, loss: float, report: str, layer: str | None = None, read_at: int | None = None):
        self.step, self.layer, self.read_at = step, layer, step if read_at is None else read_at
        if self.read_at == step:
            where = f"at step {step}\nper-layer statistics at that step:"
        else:
            where = (f"at step {step} (read at step {self.read_at}: on an accelerator or across processes the loss "
                     f"is read on logging steps and before validations and checkpoints)\n"
                     f"per-layer statistics at step {self.read_at}:")
        super().__init__(f"loss became {loss:.4g} {where}\n{report}")


def param_groups(module: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Decay only weights of 2 or more dimensions (matrices, embeddings), not biases or norm gains (as nanoGPT)."""
    params = [p for p in module.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    other = [p for p in params if p.dim() < 2]
    # named, so LearningRateMonitor's tags say which group: lr-AdamW/decay, lr-AdamW/no_decay
    return [{"params": decay, "weight_decay": weight_decay, "name": "decay"},
            {"params": other, "weight_decay": 0.0, "name": "no_decay"}]


class NameGen(L.LightningModule):
    """Trains a character model (`model.arch`: mlp or transformer) on (context, next chars) batches.

    Every argument is a plain value and saved as a hyperparameter, so
    `NameGen.load_from_checkpoint(path)` rebuilds the module and the checkpoint
    loads with `torch.load(weights_only=True)`.

    Args:
        model: the architecture (`arch`) and its config fields; `vocab_size` and `block_size` included.
        vocab: the characters, '.' first (see `namegen.data.Vocab`).
        optimizer: a Hydra node for the optimizer (`_target_` and its arguments, without the parameters).
        scheduler: a Hydra node for a torch LR scheduler stepped every optimizer step, or None.
        init: `scheme` (naive, kaiming, pytorch), `gain`, `output_scale`.
        diverge_factor: a loss above this many times the initial loss counts as diverged, like a non-finite one.

    Logged to every attached logger, against the optimizer step: `train/loss` (Lightning's
    `log_every_n_steps`), `val/loss` at each validation, `test/loss`, and at step 0, before
    any update, `init/loss` next to `init/uniform_loss` = log(vocab_size), the loss of a
    network that knows nothing and says so.
    """

    def __init__(
        self,
        model: dict[str, Any],
        vocab: list[str],
        optimizer: dict[str, Any] | None = None,
        scheduler: dict[str, Any] | None = None,
        init: dict[str, Any] | None = None,
        diverge_factor: float = 100.0,
    ):
        super().__init__()
        if not diverge_factor > 1:
            raise ConfigError(f"diverge_factor={diverge_factor!r} must be > 1 (a multiple of the initial loss)")
        self.save_hyperparameters(logger=False)  # namegen writes its own HParams table at the end of a run
        self.vocab = list(vocab)
        self.model = build_model(model, {"scheme": "kaiming"} if init is None else init)
        self.init_loss: float | None = None
        # (step, loss, inputs) of the steps whose loss the divergence check has not read yet: a plain list, as
        # setting a module attribute every step would cost more than the check
        self.unread: list[tuple[int, torch.Tensor, torch.Tensor]] = []

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.model(idx)

    # -- steps ---------------------------------------------------------------

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = loss_fn(self.model(x), y)
        self.check_diverged(loss, x)
        # self.log costs about as much as this net's whole step, and Lightning writes the value only on
        # its logging steps ((step + 1) % log_every_n_steps == 0): call it on those alone
        if self.lightning_logs_at(self.global_step):
            self.log("train/loss", loss, prog_bar=True)
        return loss

    def lightning_logs_at(self, step: int) -> bool:
        """Whether Lightning writes what `self.log` receives on this step: its logging steps, and the final step."""
        return (step + 1) % self.trainer.log_every_n_steps == 0 or step + 1 == self.trainer.max_steps

    def reads_loss_at(self, step: int) -> bool:
        """Whether the divergence check reads the loss on this step: every step where that costs nothing (on the
        CPU, in one process); else only Lightning's logging steps, which read it anyway, since on an accelerator
        a read waits for the device and across processes a decision takes a collective. (The losses are read
        before every validation and checkpoint too, so no checkpoint holds diverged weights.)"""
        return (self.device.type == "cpu" and self.trainer.world_size == 1) or self.lightning_logs_at(step)

    def check_diverged(self, loss: torch.Tensor, x: torch.Tensor) -> None:
        """Keep this step's loss; on the steps that read it, raise `DivergedError` if a loss kept so far stopped
        being finite or exploded (where every step reads, at the step it happens, before its update)."""
        step = self.global_step
        self.unread.append((step, loss.detach(), x))
        if self.reads_loss_at(step):
            self.read_losses(before_update=True)

    def read_losses(self, before_update: bool = False) -> None:
        """Raise `DivergedError` naming the first unread step whose loss is non-finite or above the limit.

        One read for all of them (and one all-gather across processes, so all stop together: the report's
        forward pass syncs BatchNorm across them). `before_update`: the last unread step's update is not applied yet.
        """
        if not self.unread:
            return
        steps, losses, inputs = zip(*self.unread)
        self.unread.clear()
        if self.trainer.world_size > 1:
            rows = self.all_gather(torch.stack(losses)).view(-1, len(steps)).tolist()
        else:  # a single loss (every step on the CPU) is read without stacking it
            rows = [[losses[0].item()] if len(losses) == 1 else torch.stack(losses).tolist()]
        limit = self.hparams.diverge_factor * self.init_loss if self.init_loss is not None else math.inf
        bad = [(i, v) for row in rows for i, v in enumerate(row) if not math.isfinite(v) or v > limit]
        if not bad:
            return
        index, value = min(bad, key=lambda b: b[0])  # the earliest step at which any process's loss went bad
        stats = layer_stats(self, inputs[-1])  # names as the diagnostics' tags have them: model.hidden.0.act, ...
        at_bad_step = before_update and index == len(steps) - 1
        first_bad = next((s["name"] for s in stats if not all(math.isfinite(v) for k, v in s.items() if k != "name")),
                         None) if at_bad_step else None
        raise DivergedError(steps[index], value, format_layer_stats(stats), first_bad,
                            read_at=steps[-1] if before_update else self.global_step)

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self.log("val/loss", loss_fn(self.model(batch[0]), batch[1]), prog_bar=True, batch_size=len(batch[1]))

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self.log("test/loss", loss_fn(self.model(batch[0]), batch[1]), batch_size=len(batch[1]))

    def on_fit_start(self) -> None:
        self.unread.clear()

    def on_validation_start(self) -> None:
        self.read_losses()

    def on_train_end(self) -> None:
        self.read_losses()

    def on_train_start(self) -> None:
        if self.trainer.is_global_zero and self.global_step == 0:
            for logger in self.loggers:  # TensorBoard's Custom Scalars tab: the lesson's charts first
                if hasattr(logger.experiment, "add_custom_scalars"):
                    logger.experiment.add_custom_scalars(CHARTS)
        datamodule = self.trainer.datamodule
        if self.global_step == 0 and datamodule is not None:
            # the whole validation split with batch statistics: the loss as the first step sees it, without noise
            # moved as Lightning moves every batch (the module's and datamodule's transfer hooks): any accelerator
            batch = self.trainer.strategy.batch_to_device(next(iter(datamodule.val_dataloader())))
            self.init_loss = self.batch_statistics_loss(batch)
            metrics = {"init/loss": self.init_loss, "init/uniform_loss": math.log(len(self.vocab))}
            for logger in self.loggers:
                logger.log_metrics(metrics, step=0)

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        # Stopping is how Lightning's own EarlyStopping asks for a last validation: the final step is then
        # validated and checkpointed whatever trainer.max_steps and val_check_interval are.
        if 0 < self.trainer.max_steps <= self.global_step:
            self.trainer.should_stop = True

    @torch.no_grad()
    def batch_statistics_loss(self, batch: tuple[torch.Tensor, torch.Tensor]) -> float:
        """The loss as training sees it (BatchNorm on batch statistics), leaving the running statistics untouched."""
        was_training = self.model.training
        self.model.train()
        with buffers_kept(self.model):
            loss = loss_fn(self.model(batch[0]), batch[1]).item()
        self.model.train(was_training)
        return loss

    # -- optimization ----------------------------------------------------------

    def configure_optimizers(self) -> Any:
        """The optimizer (weight decay on matrices only) and, if configured, its scheduler, stepped every step."""
        from hydra.utils import instantiate  # the nodes are Hydra's; imported here so loading a checkpoint stays light

        if self.hparams.optimizer is None:
            raise ConfigError("NameGen needs an optimizer: give optimizer={'_target_': 'torch.optim.SGD', 'lr': 0.1}")
        spec = dict(self.hparams.optimizer)
        spec.pop("_partial_", None)
        weight_decay = spec.pop("weight_decay", 0.0)  # explicit: AdamW's own default (0.01) would decay everything
        if weight_decay > 0:
            params = [g for g in param_groups(self, weight_decay) if g["params"]]
        else:
            params = [{"params": list(self.parameters()), "weight_decay": 0.0}]
        optimizer = instantiate(spec, _partial_=True)(params)  # the groups hold tensors: kept out of Hydra's hands
        if self.hparams.scheduler is None:
            return optimizer
        scheduler = instantiate(self.hparams.scheduler, _partial_=True)(optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # -- checkpoints -------------------------------------------------------------

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.read_losses()  # never a checkpoint of diverged weights
        # Plain types only, so checkpoints load with torch.load(weights_only=True).
        checkpoint[CHECKPOINT_KEY] = {"version": CHECKPOINT_VERSION, "init_loss": self.init_loss}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.init_loss = checkpoint.get(CHECKPOINT_KEY, {}).get("init_loss")
