"""namegen's TensorBoard logger: Lightning's, minus the `epoch` scalar, plus the Custom Scalars layout."""

from __future__ import annotations

from typing import Any, Mapping

from lightning.pytorch.loggers import TensorBoardLogger as LightningTensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only

from namegen.board import layout, layout_summary


class TensorBoardLogger(LightningTensorBoardLogger):
    """Lightning's TensorBoardLogger, for namegen's runs: no `epoch` scalar (Lightning adds one to every
    `self.log`; namegen's training batches are one endless stream, so it says nothing), and the Custom Scalars layout
    of the charts that have data, rewritten whenever a chart gets its first tag (TensorBoard shows the latest)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.seen: set[str] = set()
        self.charted: bytes | None = None

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        metrics = {k: v for k, v in metrics.items() if k != "epoch"}
        super().log_metrics(metrics, step)
        if metrics.keys() - self.seen:
            self.seen |= metrics.keys()
            current = layout(self.seen).SerializeToString()
            if current != self.charted:
                self.charted = current
                self.experiment.file_writer.add_summary(layout_summary(current))
