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
from namegen.stats import buffers_kept, format_layer_stats, layer_stats

CHECKPOINT_KEY = "namegen"  # marks our checkpoints and carries what rebuilding the model needs
CHECKPOINT_VERSION = 2  # 2: steps_per_batch; global_step counted by manual optimization

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

    Each training batch holds `steps_per_batch` minibatches, (K, B, T) and (K, B),
    and `training_step` takes one optimizer step on each of them in a tight loop:
    Lightning's per-batch machinery (hooks, progress, logging; about a tenth of a
    millisecond per hook on this net's ~1 ms step) runs once per K steps instead
    of every step, and `trainer.global_step` still counts optimizer steps. K changes
    only the speed: the minibatch of each step and the arithmetic are the same for any K.

    Logged to the experiment logger, against the optimizer step: `train/loss` every
    `log_every_n_steps`, `val/loss` at each validation, `test/loss` at the end,
    and at step 0, before any update, `init/loss` next to `init/uniform_loss` =
    log(vocab_size), the loss of a network that knows nothing and says so.
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
        steps_per_batch: int = 1,
    ):
        super().__init__()
        if not 0.0 <= decay_at <= 1.0:
            raise ConfigError(f"optim.decay_at={decay_at!r} must be a fraction of the run in [0, 1]")
        for name, value in (("log_every_n_steps", log_every_n_steps), ("steps_per_batch", steps_per_batch)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"{name}={value!r} must be a positive integer; set {name} >= 1")
        self.automatic_optimization = False  # training_step steps the optimizer itself, steps_per_batch times
        self.vocab = list(vocab)
        self.model = initialize(MLP(model), init, gain, output_scale)
        self.optimizer_factory = optimizer
        self.decay_at, self.decay_factor = decay_at, decay_factor
        self.decay_step: int | None = None  # set with the optimizer, from trainer.max_steps
        self.log_every_n_steps = log_every_n_steps
        self.steps_per_batch = steps_per_batch
        self.init_loss: float | None = None

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.model(idx)

    # -- steps ---------------------------------------------------------------

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        xs, ys = batch  # (K, B, T), (K, B): one minibatch per optimizer step
        if len(xs) != self.steps_per_batch:
            raise ValueError(
                f"a training batch holds {len(xs)} minibatches but steps_per_batch={self.steps_per_batch}; "
                "give the datamodule and the module the same steps_per_batch"
            )
        trainer = self.trainer
        # The torch optimizer itself, not Lightning's wrapper: the wrapper's hook dispatch would cost a
        # tenth of each step. Callbacks see the step through the optimizer's own step hooks instead.
        optimizer = self.optimizers().optimizer
        distributed = trainer.world_size > 1
        # Under DDP, manual_backward readies the gradient all-reduce for each backward; alone it only dispatches hooks.
        backward = self.manual_backward if distributed else torch.Tensor.backward
        progress = trainer.fit_loop.epoch_loop.manual_optimization.optim_step_progress  # what global_step counts
        step = self.global_step
        self.set_lr(optimizer, step)
        for x, y in zip(xs, ys):
            if step == self.decay_step:
                self.set_lr(optimizer, step)
            loss = loss_fn(self.model, (x, y))
            self.check_finite(loss, x, step, distributed)
            optimizer.zero_grad(set_to_none=True)
            backward(loss)
            optimizer.step()
            progress.increment_ready()
            progress.increment_completed()
            # Logging every step costs more than the step itself on this small net; log on logging steps only.
            if step % self.log_every_n_steps == 0:
                self.log("loss", loss, prog_bar=True, logger=False)
                self.log_to_logger({"train/loss": loss.item()}, step)
            step += 1

    def set_lr(self, optimizer: torch.optim.Optimizer, step: int) -> None:
        """The learning rate of `step`: the configured one, times `decay_factor` from `decay_step` on.

        Set from the step, not by multiplying the current rate, so a resumed run gets it right
        whatever was saved.
        """
        scale = self.decay_factor if step >= self.decay_step else 1.0
        for group in optimizer.param_groups:
            group["lr"] = group["initial_lr"] * scale

    def check_finite(self, loss: torch.Tensor, x: torch.Tensor, step: int, distributed: bool) -> None:
        """Raise `DivergedError` at the step the loss stops being finite, before its update."""
        diverged = not math.isfinite(loss.item())
        if distributed:
            # every process must stop together: the report's forward pass syncs BatchNorm across them
            diverged = self.trainer.strategy.reduce_boolean_decision(diverged, all=False)
        if diverged:
            raise DivergedError(step, loss.item(), format_layer_stats(layer_stats(self.model, x)))

    def log_to_logger(self, metrics: dict[str, float], step: int) -> None:
        """Straight to the logger at optimizer step `step` (`self.log` would count Lightning batches instead)."""
        if self.logger is not None:
            self.logger.log_metrics(metrics, step=step)

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        # logger=False: on_validation_epoch_end writes it against the optimizer step
        self.log("val/loss", loss_fn(self.model, batch), prog_bar=True, logger=False, batch_size=len(batch[1]))

    def on_validation_epoch_end(self) -> None:
        if not self.trainer.sanity_checking:
            self.log_epoch_loss("val/loss")

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self.log("test/loss", loss_fn(self.model, batch), logger=False, batch_size=len(batch[1]))

    def on_test_epoch_end(self) -> None:
        self.log_epoch_loss("test/loss")

    def log_epoch_loss(self, name: str) -> None:
        """The epoch's `self.log`ged loss to the logger at the current step, saved to disk at once (as Lightning's
        own logging does), so the checkpoint that follows a validation never gets ahead of the logs."""
        self.log_to_logger({name: self.trainer.callback_metrics[name].item()}, self.global_step)
        if self.logger is not None:
            self.logger.save()

    def on_train_start(self) -> None:
        if self.global_step == 0:
            self.init_loss = self.batch_statistics_loss(next(iter(self.trainer.val_dataloaders)))
            self.log_to_logger({"init/loss": self.init_loss, "init/uniform_loss": math.log(len(self.vocab))}, 0)

    @torch.no_grad()
    def batch_statistics_loss(self, batch: tuple[torch.Tensor, torch.Tensor]) -> float:
        """The loss as training sees it (BatchNorm on batch statistics), leaving the running statistics untouched."""
        was_training = self.model.training
        self.model.train()
        with buffers_kept(self.model):
            loss = loss_fn(self.model, batch).item()
        self.model.train(was_training)
        return loss

    # -- optimization ----------------------------------------------------------

    def configure_optimizers(self) -> torch.optim.Optimizer:
        """The optimizer; its learning rate is multiplied by `decay_factor` from step `decay_at * max_steps` on."""
        max_steps = self.trainer.max_steps
        if max_steps is None or max_steps < 1:
            raise ConfigError(f"trainer.max_steps={max_steps!r}: the learning-rate schedule needs a positive step budget")
        if max_steps % self.steps_per_batch:
            # Lightning stops only between batches: the run would overshoot
            raise ConfigError(f"trainer.max_steps={max_steps} is not a multiple of steps_per_batch={self.steps_per_batch}")
        self.decay_step = int(self.decay_at * max_steps)
        optimizer = self.optimizer_factory(self.parameters())
        for group in optimizer.param_groups:
            group["initial_lr"] = group["lr"]  # the rate before the decay; saved with the optimizer's state
        return optimizer

    # -- checkpoints -------------------------------------------------------------

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Plain types only, so checkpoints load with torch.load(weights_only=True).
        checkpoint[CHECKPOINT_KEY] = {
            "version": CHECKPOINT_VERSION,
            "model": asdict(self.model.cfg),
            "vocab": self.vocab,
            "init_loss": self.init_loss,
            "steps_per_batch": self.steps_per_batch,
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.init_loss = checkpoint.get(CHECKPOINT_KEY, {}).get("init_loss")
