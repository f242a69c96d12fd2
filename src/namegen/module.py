"""The LightningModule: one loss, the optimizer and its schedule, what gets logged.

Training goes through Lightning's automatic optimization, one optimizer step per
batch, so every standard hook, logger, scheduler and Trainer flag behaves as
Lightning documents it (`trainer.global_step` counts optimizer steps).
"""

from __future__ import annotations

import logging
import math
from typing import Any, Callable

import lightning as L
import torch
import torch.nn as nn
import torch.nn.functional as F

from namegen.checkpoint import CHECKPOINT_KEY, CHECKPOINT_VERSION
from namegen.errors import ConfigError
from namegen.nets import build_model
from namegen.stats import buffers_kept, format_layer_stats, layer_stats

log = logging.getLogger(__name__)

# What compile=auto picks, as measured here, with the measurement: compile runs of at least `min_steps` optimizer
# steps, or None for none. Set from `python -m namegen.bench compile` (its "namegen compiled / eager" line) and
# `bench throughput`; rerun them on another machine and set it from what they print there.
COMPILE_AUTO = {
    "min_steps": 100_000,
    "measured": "namegen's compiled step ran at 1.20x its eager one in two runs of bench throughput on this code "
                "(diagnostics off; 1.15x with them on), and the first compiled step costs 3,000-20,000 eager steps' "
                "time: it pays back from ~20k-120k steps, so makemore's 200k-step run compiles, the 20k default not",
}
PLAIN_TYPES = frozenset({str, int, float, bool, type(None)})  # values nn.Module never registers


def compile_wanted(setting: str | bool, max_steps: int) -> bool:
    """What `compile` (auto, true or false) means for a run of `max_steps` optimizer steps (auto: `COMPILE_AUTO`)."""
    if setting == "auto":
        return COMPILE_AUTO["min_steps"] is not None and max_steps >= COMPILE_AUTO["min_steps"]
    return setting


def loss_fn(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The one loss: mean cross-entropy of the next character over every position that has one.

    Works for one prediction per example ((B, V) logits, (B,) targets) and one per position
    ((B, T, V), (B, T), padding marked -1) alike.
    """
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-1)


class DivergedError(RuntimeError):
    """The loss stopped being finite or exploded at `step`, before that step's update. The message names the step
    and each layer's state; `layer` is the first layer whose statistics went non-finite."""

    def __init__(self, step: int, loss: float, report: str, layer: str | None = None):
        self.step, self.layer = step, layer
        super().__init__(f"loss became {loss:.4g} at step {step}\nper-layer statistics at that step:\n{report}")


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
        compile: train through a `torch.compile`d copy of the model's forward (not a hyperparameter: it changes
            the speed, and the float rounding of fused kernels, not the model). Validation and testing run the
            eager model; the diagnostics run their recording steps eagerly themselves (`Diagnostics`).

    Logged to every attached logger, against the optimizer step: `train/loss` at step 0 and every
    `log_every_n_steps`, `val/loss` at each validation, `test/loss`, and `init/loss` (the loss before any
    update, on the whole validation split) next to `init/uniform_loss` = log(vocab_size), the loss of a
    network that knows nothing and says so: both at step 0 and held flat at every `train/loss` point.
    """

    def __init__(
        self,
        model: dict[str, Any],
        vocab: list[str],
        optimizer: dict[str, Any] | None = None,
        scheduler: dict[str, Any] | None = None,
        init: dict[str, Any] | None = None,
        diverge_factor: float = 100.0,
        compile: bool = False,
    ):
        super().__init__()
        if not diverge_factor > 1:
            raise ConfigError(f"diverge_factor={diverge_factor!r} must be > 1 (a multiple of the initial loss)")
        if not isinstance(compile, bool):
            raise ConfigError(f"compile={compile!r} must be true or false (compile_wanted resolves auto)")
        # namegen writes its own HParams table at the end of a run; compile is how, not what, it trains
        self.save_hyperparameters(ignore=["compile"], logger=False)
        self.vocab = list(vocab)
        self.model = build_model(model, {"scheme": "kaiming"} if init is None else init)
        self.init_loss: float | None = None
        # The compiled forward of the same model (same parameters): a function, not a module, so it is not
        # registered as a submodule and no `_orig_mod.` key reaches a state dict. torch.compile is lazy: the
        # first call compiles (and may fail, see step_model).
        self.compiled: Callable[[torch.Tensor], torch.Tensor] | None = torch.compile(self.model.forward) if compile else None

    def __setattr__(self, name: str, value: Any) -> None:
        # Lightning records the running hook's name on the module about 44 times a step, and nn.Module.__setattr__
        # first checks every value against parameters, buffers and submodules (~10% of this net's step). A plain
        # value replacing a plain attribute is none of those (register_parameter, register_buffer and add_module
        # refuse a name already in __dict__): nn.Module would store it as object.__setattr__ does.
        if type(value) in PLAIN_TYPES and name in self.__dict__:
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.model(idx)

    # -- steps ---------------------------------------------------------------

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = loss_fn(self.step_model(x), y)
        self.check_diverged(loss, x)
        # self.log costs about as much as this net's whole step, and Lightning writes the value only on
        # its logging steps ((step + 1) % log_every_n_steps == 0): call it on those alone
        if self.lightning_logs_at(self.global_step):
            self.log("train/loss", loss, prog_bar=True)
            self.log_dict(self.held_flat())
        elif self.global_step == 0:  # the lesson's headline, which Lightning's first logging step would miss
            for logger in self.loggers:
                logger.log_metrics({"train/loss": loss.item()}, step=0)
        return loss

    def held_flat(self) -> dict[str, float]:
        """The step-0 loss and log V, held flat over the run: TensorBoard's outlier clipping (on by default)
        cuts a single point of ~20 off a chart, never a line that is a whole run long."""
        held = {"init/uniform_loss": math.log(len(self.vocab))}
        return held if self.init_loss is None else {"init/loss": self.init_loss, **held}

    def step_model(self, x: torch.Tensor) -> torch.Tensor:
        """The model's logits for a training step, through the compiled forward when there is one (a callback that
        hooks modules runs its steps eagerly with torch.compiler.set_stance, as `Diagnostics` does, so the first
        compiled call may come on any step: every call is guarded, at no cost while nothing fails)."""
        if self.compiled is None:
            return self.model(x)
        try:
            return self.compiled(x)  # the first compiled call compiles the graph: nothing has run if that fails
        except Exception as e:  # no C++ compiler, an op Inductor cannot lower, ...: any of torch's many errors
            reason = next((line.strip() for line in str(e).splitlines() if line.strip()), type(e).__name__)
            if self.trainer.is_global_zero:
                log.warning("compile: torch.compile failed (%s: %s); training on without compiling (compile=false "
                            "skips the attempt)", type(e).__name__, reason[:200])
            self.compiled = None
            return self.model(x)  # an error of the model itself raises again here, uncompiled

    def lightning_logs_at(self, step: int) -> bool:
        """Whether Lightning writes what `self.log` receives on this step: its logging steps, and the final step."""
        return (step + 1) % self.trainer.log_every_n_steps == 0 or step + 1 == self.trainer.max_steps

    def check_diverged(self, loss: torch.Tensor, x: torch.Tensor) -> None:
        """Raise `DivergedError` if this step's loss is non-finite or above `diverge_factor` times the initial loss,
        before its update: the run stops at the first bad step, with the layers' state that produced it, and no
        checkpoint after it. One read of the loss a step (on the CPU it costs nothing; on an accelerator it waits
        for the device); across processes one all-gather, so all of them stop together."""
        if self.trainer.world_size > 1:
            losses = self.all_gather(loss.detach()).flatten().tolist()
        else:
            losses = [loss.item()]
        limit = self.hparams.diverge_factor * self.init_loss if self.init_loss is not None else math.inf
        bad = next((v for v in losses if not math.isfinite(v) or v > limit), None)
        if bad is None:
            return
        stats = layer_stats(self, x)  # names as the diagnostics' tags have them: model.hidden.0.act, ...
        first = next((s["name"] for s in stats if not all(math.isfinite(v) for k, v in s.items() if k != "name")), None)
        raise DivergedError(self.global_step, bad, format_layer_stats(stats), first)

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self.log("val/loss", loss_fn(self.model(batch[0]), batch[1]), prog_bar=True, batch_size=len(batch[1]))

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self.log("test/loss", loss_fn(self.model(batch[0]), batch[1]), batch_size=len(batch[1]))

    def on_train_start(self) -> None:
        datamodule = self.trainer.datamodule
        if self.global_step == 0 and datamodule is not None:
            # the whole validation split with batch statistics: the loss as the first step sees it, without noise
            # moved as Lightning moves every batch (the module's and datamodule's transfer hooks): any accelerator
            batch = self.trainer.strategy.batch_to_device(next(iter(datamodule.val_dataloader())))
            self.init_loss = self.batch_statistics_loss(batch)
            for logger in self.loggers:
                logger.log_metrics(self.held_flat(), step=0)

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
        # Plain types only, so checkpoints load with torch.load(weights_only=True).
        checkpoint[CHECKPOINT_KEY] = {"version": CHECKPOINT_VERSION, "init_loss": self.init_loss}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.init_loss = checkpoint.get(CHECKPOINT_KEY, {}).get("init_loss")
