"""One callback that owns the diagnostics' schedule and runs their probes."""

from __future__ import annotations

import math
from dataclasses import replace
from functools import cached_property
from typing import Any, Callable, Mapping, Sequence

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_warn

from .base import Recorder
from .catalog import Catalog, check_units, weight_matrices
from .kinds import check_kinds
from .probe import Probe, Step
from .schedule import Schedule
from .tags import LOSS, NONFINITE, UNIFORM_LOSS

# where the training loss is read when the training step returns none (manual optimization): the usual names
LOSS_KEYS = ("train/loss", "train_loss", "loss", "train_loss_step")


class EagerSteps:
    """torch.compile's stance is one for the process: the recording steps of every Diagnostics in a Trainer share
    one "force_eager", entered by the first to start recording and left by the last to finish (they finish in the
    order they started, not nested, so each restoring the stance it found would leave it forced)."""

    depth = 0
    stance: Any = None

    @classmethod
    def enter(cls) -> None:
        if cls.depth == 0:
            cls.stance = torch.compiler.set_stance("force_eager")
        cls.depth += 1

    @classmethod
    def leave(cls) -> None:
        cls.depth -= 1
        if cls.depth == 0:
            cls.stance.__exit__(None, None, None)  # back to the stance before the first recording step
            cls.stance = None


def default_probes() -> list[Probe]:
    """Every probe: activations, gradients, update ratios, attention, figures."""
    from .activations import Activations
    from .attention import Attention
    from .figures import Figures
    from .gradients import Gradients
    from .update_ratio import UpdateRatios

    return [Activations(), Gradients(), UpdateRatios(), Attention(), Figures()]


class Diagnostics(L.Callback):
    """Shows why a network trains or doesn't, for any LightningModule: one schedule, the probes run on it.

    On a recording step it hooks the modules its probes watch, once for all of them, copies the weights
    once if a probe needs the update, lets each probe read the step, writes the scalars to every logger
    (histograms and images to those that take them, TensorBoard), and removes every hook. On any other
    step it does one schedule check and nothing else. Through Lightning's public hooks only, on rank zero:

    - `on_fit_start`: what to watch is found once (`Catalog`, after `configure_model`): activations by kind
      (torch's by type, anyone else's by what they compute, `kinds`), norms, attention modules;
    - `on_train_batch_start` of a recording step: hooks attached, and `torch.compiler.set_stance("force_eager")`
      until the step ends, so a compiled model (`torch.compile(model)` in the user's module) runs its
      original modules, hooks and all; the next micro-batches of the step (gradient accumulation) are not
      recorded: each call of a module in the first forward pass is its own series;
    - `on_before_optimizer_step`: gradients final, weights not yet changed; hooks removed;
    - `on_train_batch_end`, once `global_step` has moved (after gradient accumulation): the update is read,
      everything written.

    Example::

        trainer = L.Trainer(logger=TensorBoardLogger("runs"),
                            callbacks=[Diagnostics(every_n_steps=500, histogram_every_n_steps=2000)])

    Args:
        every_n_steps: scalars every this many optimizer steps (and at step 0 and the last step).
        histogram_every_n_steps: histograms every this many steps, or None for none.
        figures_every_n_steps: figures every this many steps, or None for none (then give probes without `Figures`).
        probes: the probes to run (a list, or a mapping of name to probe as a Hydra config builds it);
            default all: `Activations()`, `Gradients()`, `UpdateRatios()`, `Figures()`.
        ignore_index: positions whose target equals it (the last element of an `(inputs, targets)` batch,
            as `cross_entropy(ignore_index=...)` reads it) are left out of every statistic: a sequence
            model's padding.
        mask_fn: instead of `ignore_index`, `mask_fn(batch)` returns the boolean mask of the positions to
            keep, shaped like the targets, (B,) or (B, T).
        activations: the kind of modules discovery cannot tell, by type or by name, such as
            `{MyAct: "gelu", "model.blocks.0.act": "relu"}` (kinds: `kinds.KINDS`); None as a kind leaves a
            module out. An activation-like module of no known kind is named in one warning.
        units: the units' dimension of modules whose layout the rule (`base.unit_dim`: channels, dim 1, of an
            (N, C, ...) tensor; the last of (B, T, C)) gets wrong, by name or type: `{"model.act": 1}`.
        loss_key: the logged metric that is the training loss, when the training step returns none; default:
            the loss the training step returns, else the first of `LOSS_KEYS` logged.
        output_width: the number of classes (or the vocabulary) of the model's logits, for `tags.UNIFORM_LOSS`
            = log(width), the loss of a uniform guess; "auto": the last `nn.Linear`'s out_features (module-tree
            order: a classifier's or a language model's head); None: none written.

    Scalars of its own, on the scalar steps: `tags.LOSS` (the training loss of the step's first forward
    pass, step 0 included; written even when it is not finite) and `tags.UNIFORM_LOSS`.
    """

    def __init__(self, every_n_steps: int = 500, histogram_every_n_steps: int | None = 2000,
                 figures_every_n_steps: int | None = 10000,
                 probes: Sequence[Probe] | Mapping[str, Probe] | None = None, ignore_index: int | None = None,
                 mask_fn: Callable[[Any], torch.Tensor] | None = None,
                 activations: Mapping[type | str, str | None] | None = None,
                 units: Mapping[type | str, int] | None = None, loss_key: str | None = None,
                 output_width: int | str | None = "auto") -> None:
        self.schedule = Schedule(every_n_steps, histogram_every_n_steps, figures_every_n_steps)
        self.probes = check_probes(default_probes() if probes is None else probes)
        for probe in self.probes:
            probe.check(self.schedule)
        if ignore_index is not None and (not isinstance(ignore_index, int) or isinstance(ignore_index, bool)):
            raise ValueError(f"ignore_index={ignore_index!r} must be an integer target value, such as -1")
        if mask_fn is not None and not callable(mask_fn):
            raise ValueError(f"mask_fn={mask_fn!r} must be a function of the batch")
        if ignore_index is not None and mask_fn is not None:
            raise ValueError("give ignore_index or mask_fn, not both")
        self.ignore_index, self.mask_fn = ignore_index, mask_fn
        self.declared, self.units = check_kinds(activations), check_units(units)
        if loss_key is not None and not (isinstance(loss_key, str) and loss_key):
            raise ValueError(f"loss_key={loss_key!r} must be the name of a logged metric, such as 'train_loss'")
        if not (output_width in ("auto", None) or isinstance(output_width, int) and not isinstance(output_width, bool)
                and output_width >= 2):
            raise ValueError(f"output_width={output_width!r} must be 'auto', None or a number of classes >= 2")
        self.loss_key, self.output_width = loss_key, output_width
        self.uniform_loss: float | None = None
        self.catalog: Catalog | None = None
        self.eager = False  # this callback holds the compiler in force_eager (a step of its records)
        self.logged = True  # until a fit without a logger says otherwise
        self.recording = False  # in this process: rank zero of a fit with a logger
        self.matrices: list = []
        self.current: Step | None = None
        self.warned: set[str] = set()

    @cached_property
    def state_key(self) -> str:
        """Unique per set of probes, so several `Diagnostics` (one per probe, say) can sit in one Trainer's checkpoint.
        Computed once: Lightning reads every callback's key at each of its hook calls (six a training step), and
        the probes are fixed in __init__."""
        return f"{type(self).__qualname__}[{','.join(probe.key for probe in self.probes)}]"

    # -- Lightning hooks -------------------------------------------------------------

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage == "fit":  # before a checkpoint restores the probes' state
            for probe in self.probes:
                probe.reset()

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.schedule = replace(self.schedule, last_step=trainer.max_steps - 1 if trainer.max_steps > 0 else None)
        self.logged = bool(trainer.loggers)
        self.recording = self.logged and trainer.is_global_zero
        if self.recording:  # after configure_model: the modules it builds are there
            self.matrices = weight_matrices(pl_module)
            self.catalog = Catalog.of(pl_module, self.declared, self.units)
            if self.catalog.unknown:
                rank_zero_warn(f"{type(self).__name__}: activation-like modules of no known kind, watched for "
                               f"nothing: {', '.join(self.catalog.unknown)}; name their kind with "
                               "Diagnostics(activations={type or name: 'gelu'})")
            for probe in self.probes:
                probe.setup(pl_module, self.catalog)
            self.uniform_loss = self.output_loss(self.catalog)

    def output_loss(self, catalog: Catalog) -> float | None:
        """log(output width), the loss of a uniform guess over the model's classes (or vocabulary)."""
        if self.output_width != "auto":
            return math.log(self.output_width) if self.output_width is not None else None
        heads = [m.out_features for m in catalog.modules.values() if isinstance(m, torch.nn.Linear)]
        return math.log(heads[-1]) if heads and heads[-1] >= 2 else None

    @property
    def kinds(self) -> dict[str, str]:
        """{module path: activation kind} of every activation found (the diagnosis's `activations`)."""
        return dict(self.catalog.kinds) if self.catalog is not None else {}

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int) -> None:
        if self.current is not None:
            self.current.recorder.close()  # another micro-batch of the step (gradient accumulation): not recorded
            return
        if not self.recording:
            return
        step = trainer.global_step
        due = self.schedule.due(step)
        if due is None:
            return
        probes = [probe for probe in self.probes if probe.active(due)]
        if not probes:
            return
        recorder = Recorder(mask=self.positions(batch))
        for probe in probes:
            for name, module, want in probe.watch(due):
                recorder.attach([(name, module)], want, probe.extract or self.catalog.extracts.get(name))
        self.current = Step(step, due, probes, recorder, self.matrices, lambda kind: self.writers(trainer, kind),
                            trainer.optimizers)
        # a compiled model runs its original modules with their hooks (Dynamo would skip hooks added after it
        # compiled); restored when the step ends. The step's numbers are the eager model's, which compiled
        # kernels match within float rounding
        EagerSteps.enter()
        self.eager = True

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: Any) -> None:
        current = self.current
        if current is None or current.updated:
            return
        current.updated = True
        current.recorder.remove()  # forward and backward are done
        self.warn_unmasked(current.recorder)
        with torch.no_grad():
            if any(probe.wants_snapshot(current.due) for probe in current.probes):  # one copy for every probe
                current.before = {name: p.detach().clone() for _, name, p in self.matrices}
            for probe in current.probes:
                probe.before_update(current)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        current = self.current
        if current is None:
            return
        if current.loss is None:  # the step's first forward pass, as its statistics
            current.loss = self.read_loss(trainer, outputs)
        if trainer.global_step == current.global_step:
            return  # no update yet (gradient accumulation)
        try:
            with torch.no_grad():
                for probe in current.probes:
                    probe.after_update(current)
            self.warn_nonfinite(current)
            metrics = {k: v for k, v in current.scalars.items() if math.isfinite(v)}
            if current.due.scalars:
                # the loss even when it is not finite: that is where a run diverged
                metrics |= {LOSS: current.loss} if current.loss is not None else {}
                metrics |= {UNIFORM_LOSS: self.uniform_loss} if self.uniform_loss is not None else {}
            for logger in trainer.loggers if metrics else []:
                logger.log_metrics(metrics, step=current.global_step)
        finally:
            self.finish()

    def read_loss(self, trainer: L.Trainer, outputs: Any) -> float | None:
        """The training loss of this batch: the training step's, or the logged metric `loss_key` (or LOSS_KEYS)."""
        loss = outputs.get(self.loss_key or "loss") if isinstance(outputs, Mapping) else outputs
        if not isinstance(loss, torch.Tensor):
            metrics = trainer.callback_metrics
            loss = next((metrics[k] for k in ([self.loss_key] if self.loss_key else LOSS_KEYS) if k in metrics), None)
        if isinstance(loss, torch.Tensor) and loss.numel() == 1:
            return loss.item()
        if "loss" not in self.warned:
            self.warned.add("loss")
            wanted = repr(self.loss_key) if self.loss_key else f"a returned loss or one of {', '.join(LOSS_KEYS)}"
            rank_zero_warn(f"{type(self).__name__}: no training loss found ({wanted}); {LOSS} is not written: give "
                           "loss_key='<the logged metric>'")
        return None

    def warn_nonfinite(self, current: Step) -> None:
        bad = sorted((k for k in current.scalars if k.endswith("/" + NONFINITE)),
                     key=lambda k: (not k.startswith("act/"), k))  # the first activation: where it started
        if bad and NONFINITE not in self.warned:
            self.warned.add(NONFINITE)
            rank_zero_warn(f"{type(self).__name__}: non-finite values from step {current.global_step} on (first: "
                           f"{bad[0].rsplit('/', 1)[0]}); the statistics are of the finite values, the share of the "
                           "others in <family>/NN.<module>/nonfinite. The fit goes on as it would without the callback")

    def finish(self) -> None:
        if self.current is not None:
            self.current.recorder.remove()
            self.current = None
        if self.eager:
            EagerSteps.leave()
            self.eager = False

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.finish()

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self.finish()

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.finish()

    def state_dict(self) -> dict[str, Any]:
        return {probe.key: state for probe in self.probes if (state := probe.state_dict())}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        for probe in self.probes:
            if probe.key in state_dict:
                probe.load_state_dict(state_dict[probe.key])

    # -- helpers -----------------------------------------------------------------------

    def positions(self, batch: Any) -> torch.Tensor | None:
        """The mask of the positions that count in this batch, or None when every position does."""
        if self.mask_fn is not None:
            mask = self.mask_fn(batch)
        elif self.ignore_index is not None:
            if not isinstance(batch, (tuple, list)) or not batch or not isinstance(batch[-1], torch.Tensor):
                raise ValueError(f"{type(self).__name__}(ignore_index={self.ignore_index}) reads the targets as the "
                                 f"last element of an (inputs, targets) batch, not a {type(batch).__name__}; "
                                 "give mask_fn=lambda batch: <bool mask of the positions to keep> instead")
            mask = batch[-1] != self.ignore_index
        else:
            return None
        if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
            raise ValueError(f"{type(self).__name__}: mask_fn must return a boolean tensor over the batch's positions, "
                             f"not {type(mask).__name__}{'' if not isinstance(mask, torch.Tensor) else ' of ' + str(mask.dtype)}")
        return None if bool(mask.all()) else mask

    def warn_unmasked(self, recorder: Recorder) -> None:
        new = sorted(recorder.unmasked - self.warned)
        if new:
            self.warned.update(new)
            rank_zero_warn(f"{type(self).__name__}: the mask over the batch's positions fits no dimension of "
                           f"{', '.join(new)}; their statistics include every position")

    def writers(self, trainer: L.Trainer, kind: str) -> list[Any]:
        """The experiments of the loggers that take `kind` (histogram, image): TensorBoard's SummaryWriter and
        alike. Warns once per kind about the loggers that can't."""
        method = f"add_{kind}"
        # a logger without an experiment (one that keeps scalars only) is not asked for the others, nor warned about
        experiments = [(lg, lg.experiment) for lg in trainer.loggers if hasattr(lg, "experiment")]
        able = [e for _, e in experiments if hasattr(e, method)]
        unable = [type(lg).__name__ for lg, e in experiments if not hasattr(e, method)]
        if unable and kind not in self.warned:
            self.warned.add(kind)
            rank_zero_warn(f"{type(self).__name__}: {', '.join(unable)} cannot hold {kind}s; they are skipped there "
                           "(scalars still go to every logger)")
        return able


def check_probes(probes: Any) -> list[Probe]:
    values = list(probes.values()) if isinstance(probes, Mapping) else probes
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) and not hasattr(values, "__iter__"):
        raise ValueError(f"probes={probes!r} must be a list of probes, such as [Activations(), Gradients()]")
    values = list(values)
    wrong = [p for p in values if not isinstance(p, Probe)]
    if wrong:
        raise ValueError(f"probes: {wrong[0]!r} is not a probe (Activations, Gradients, UpdateRatios, Figures or a "
                         "subclass of callbacks.Probe)")
    unnamed = [p for p in values if not isinstance(p.key, str) or not p.key]
    if unnamed:
        raise ValueError(f"probes: {type(unnamed[0]).__name__} has no key; give the class a `key`, the family of the "
                         "tags it writes")
    keys = [p.key for p in values]
    twice = sorted({k for k in keys if keys.count(k) > 1})
    if twice:
        raise ValueError(f"probes: two probes write the same tags ({', '.join(twice)}); give the second another "
                         "family, such as Activations(pattern=..., family='attn')")
    return values
