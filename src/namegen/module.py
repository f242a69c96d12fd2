"""The LightningModule: the loss, the optimizer schedule and what gets logged."""

from __future__ import annotations

import math
from dataclasses import asdict
from typing import Any, Callable, Iterable

import lightning as L
import torch
import torch.nn.functional as F

from namegen.errors import ConfigError
from namegen.model import MLP, MLPConfig, initialize
from namegen.stats import format_layer_stats, layer_stats

CHECKPOINT_KEY = "namegen"  # marks our checkpoints and carries what rebuilding the model needs
CHECKPOINT_VERSION = 1

class DivergedError(RuntimeError):
    """The loss stopped being finite. The message names the step and each layer's state at that moment."""

    def __init__(self, step: int, loss: float, report: str):
        super().__init__(f"loss became {loss} at step {step}\nper-layer statistics at that step:\n{report}")
        self.step = step


OptimizerFactory = Callable[[Iterable[torch.nn.Parameter]], torch.optim.Optimizer]


def loss_fn(model: torch.nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """The one loss: mean cross-entropy of the next character."""
    x, y = batch
    return F.cross_entropy(model(x), y)


class NameGen(L.LightningModule):
    """Trains an `MLP` on (context, next char) batches.

    Logged to the experiment logger: `train/loss` every `log_every_n_steps`,
    `val/loss` at each validation, `test/loss` at the end, and at step 0, before
    any update, `init/loss` next to `init/uniform_loss` = log(vocab_size), the
    loss of a network that knows nothing and says so.
    """

    def __init__(
        self,
        model: MLPConfig,
        vocab: list[str],
        optimizer: OptimizerFactory = lambda params: torch.optim.SGD(params, lr=0.1),
        init: str = "kaiming",
        gain: float | None = None,
        output_scale: float = 0.1,
        decay_at: float = 0.75,
        decay_factor: float = 0.1,
        log_every_n_steps: int = 100,
    ):
        super().__init__()
        if not 0.0 <= decay_at <= 1.0:
            raise ConfigError(f"optim.decay_at={decay_at!r} must be a fraction of the run in [0, 1]")
        if not isinstance(log_every_n_steps, int) or log_every_n_steps < 1:
            raise ConfigError(f"log_every_n_steps={log_every_n_steps!r} must be a positive integer")
        self.vocab = list(vocab)
        self.model = initialize(MLP(model), init, gain, output_scale)
        self.optimizer_factory = optimizer
        self.decay_at, self.decay_factor = decay_at, decay_factor
        self.log_every_n_steps = log_every_n_steps
        self.init_loss: float | None = None

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.model(idx)

    # -- steps ---------------------------------------------------------------

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = loss_fn(self.model, batch)
        # Checked every step so a divergence is caught at the step it happens (one scalar sync: cheap on CPU).
        diverged = not torch.isfinite(loss)
        if self.trainer.world_size > 1:
            # every process must stop together: the report's forward pass syncs BatchNorm across them
            diverged = self.trainer.strategy.reduce_boolean_decision(diverged, all=False)
        if diverged:
            raise DivergedError(self.global_step, loss.item(), format_layer_stats(layer_stats(self.model, batch[0])))
        # Logging every step costs more than the step itself on this small net; log on logging steps only.
        if self.global_step % self.log_every_n_steps == 0:
            self.log("loss", loss, prog_bar=True, logger=False)
            if self.logger is not None:
                self.logger.log_metrics({"train/loss": loss.item()}, step=self.global_step)
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self.log("val/loss", loss_fn(self.model, batch), prog_bar=True, batch_size=len(batch[1]))

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self.log("test/loss", loss_fn(self.model, batch), batch_size=len(batch[1]))

    def on_train_start(self) -> None:
        if self.global_step == 0:
            self.init_loss = self.batch_statistics_loss(next(iter(self.trainer.val_dataloaders)))
            if self.logger is not None:
                uniform = math.log(len(self.vocab))
                self.logger.log_metrics({"init/loss": self.init_loss, "init/uniform_loss": uniform}, step=0)

    @torch.no_grad()
    def batch_statistics_loss(self, batch: tuple[torch.Tensor, torch.Tensor]) -> float:
        """The loss as training sees it (BatchNorm on batch statistics), leaving the running statistics untouched."""
        buffers = {name: b.clone() for name, b in self.model.named_buffers()}
        was_training = self.model.training
        self.model.train()
        loss = loss_fn(self.model, batch).item()
        self.model.train(was_training)
        for name, b in self.model.named_buffers():
            b.copy_(buffers[name])
        return loss

    # -- optimization ----------------------------------------------------------

    def configure_optimizers(self) -> dict[str, Any]:
        optimizer = self.optimizer_factory(self.parameters())
        max_steps = self.trainer.max_steps
        if max_steps is None or max_steps < 1:
            raise ConfigError(f"trainer.max_steps={max_steps!r}: the learning-rate schedule needs a positive step budget")
        boundary = int(self.decay_at * max_steps)
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: 1.0 if step < boundary else self.decay_factor
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # -- checkpoints -------------------------------------------------------------

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Plain types only, so checkpoints load with torch.load(weights_only=True).
        checkpoint[CHECKPOINT_KEY] = {
            "version": CHECKPOINT_VERSION,
            "model": asdict(self.model.cfg),
            "vocab": self.vocab,
            "init_loss": self.init_loss,
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.init_loss = checkpoint.get(CHECKPOINT_KEY, {}).get("init_loss")
