"""namegen's loggers: TensorBoard's minus the `epoch` scalar plus the Custom Scalars layout, and the one that keeps
every scalar in memory for the diagnosis at the end of the run."""

from __future__ import annotations

from typing import Any, Mapping

from lightning.pytorch.loggers import Logger
from lightning.pytorch.loggers import TensorBoardLogger as LightningTensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only

from namegen.board import layout
from namegen.events import NOT_SCALARS, Scalars, as_recorded


class TensorBoardLogger(LightningTensorBoardLogger):
    """Lightning's TensorBoardLogger, for namegen's runs: no `epoch` scalar (Lightning adds one to every
    `self.log`; namegen's training batches are one endless stream, so it says nothing), and the Custom Scalars layout
    of the charts that have data, rewritten whenever a chart gets its first tag (TensorBoard shows the latest)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.seen: set[str] = set()
        self.charted: Any = None

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        metrics = {k: v for k, v in metrics.items() if k != "epoch"}
        super().log_metrics(metrics, step)
        if metrics.keys() - self.seen:
            self.seen |= metrics.keys()
            current = layout(self.seen)
            if current != self.charted:
                self.charted = current
                self.experiment.add_custom_scalars(current)


class MemoryLogger(Logger):
    """Keeps every scalar the run logs, (step, value) per tag, at the precision an event file holds: what the
    diagnosis at the end of a run reads, whichever loggers write the run's files (`training.build` adds it next
    to them). It writes nothing and has no `experiment`: histograms and images are not for it."""

    def __init__(self, version: int | str | None = None) -> None:
        super().__init__()
        self.scalars: Scalars = {}
        self._version = version  # the files' loggers' own, so the progress bar's v_num reads as it did without it

    @property
    def name(self) -> str:
        return "memory"

    @property
    def version(self) -> int | str | None:
        return self._version

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        for tag, value in metrics.items():
            if tag not in NOT_SCALARS:
                self.scalars.setdefault(tag, []).append((step, as_recorded(value)))

    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        """Hyperparameters are the files' loggers' record (hparams.yaml)."""
