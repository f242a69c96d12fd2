"""Forward-pass statistics of every hidden activation: is the tanh saturated, are units dead?"""

from __future__ import annotations

import lightning as L

from callbacks.base import ACT, HISTOGRAM_BINS, PREACT, RecordingCallback, activation_summary, layer_regex, layer_tag


class ActivationStats(RecordingCallback):
    """Writes, for every hidden layer i, the statistics of the activation output `t` over the training batch.

    Scalars (every `every_n_steps` optimizer steps and at step 0, before the first update):
        act/layer_{i:02d}/mean, act/layer_{i:02d}/std
        act/layer_{i:02d}/saturation  fraction of entries in the flat region: |t| > saturation_threshold
                                      for tanh, t <= 0 for relu
        act/layer_{i:02d}/dead        fraction of units flat for every example of the batch
    Histograms (every `histogram_every_n_steps`, a multiple of `every_n_steps`; None for none):
        act/layer_{i:02d}             the activation values
        preact/layer_{i:02d}          the activation's input (after the linear and the norm)

    The statistics are those of the training batch in the forward pass of that
    step, before the optimizer updates the weights.

    Example::

        trainer = L.Trainer(logger=TensorBoardLogger("runs"), callbacks=[ActivationStats(every_n_steps=500)])

    Args:
        every_n_steps: write the scalars every this many optimizer steps.
        histogram_every_n_steps: write the histograms every this many steps, or None for none.
        saturation_threshold: a tanh output with |t| above this counts as saturated, in (0, 1).
    """

    record = {"inputs": True, "outputs": True}
    charts = {
        "activations": {
            "saturation (fraction in the flat region)": ["Multiline", [layer_regex(ACT, "saturation")]],
            "dead units (flat for the whole batch)": ["Multiline", [layer_regex(ACT, "dead")]],
            "activation mean": ["Multiline", [layer_regex(ACT, "mean")]],
            "activation std": ["Multiline", [layer_regex(ACT, "std")]],
        }
    }

    def __init__(
        self, every_n_steps: int = 500, histogram_every_n_steps: int | None = 2000, saturation_threshold: float = 0.97
    ) -> None:
        super().__init__(every_n_steps, histogram_every_n_steps)
        if not isinstance(saturation_threshold, (int, float)) or not 0.0 < saturation_threshold < 1.0:
            raise ValueError(f"saturation_threshold={saturation_threshold!r} must be in (0, 1), the range of |tanh|")
        self.saturation_threshold = float(saturation_threshold)

    def end_step(self, trainer: L.Trainer, pl_module: L.LightningModule, step: int) -> None:
        writer, activation = self.writer, pl_module.model.cfg.activation
        histograms = self.histograms_due(step)
        for i, t in sorted(self.recorder.outputs.items()):
            for stat, value in activation_summary(t, activation, self.saturation_threshold).items():
                writer.add_scalar(layer_tag(ACT, i, stat), value, global_step=step)
            if histograms:
                writer.add_histogram(layer_tag(ACT, i), t, global_step=step, bins=HISTOGRAM_BINS)
                preact = self.recorder.inputs[i]
                writer.add_histogram(layer_tag(PREACT, i), preact, global_step=step, bins=HISTOGRAM_BINS)
