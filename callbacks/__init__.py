"""Lightning callbacks that show why a deep network trains or doesn't, for any LightningModule.

`Diagnostics` owns one schedule (scalars, histograms, figures) and runs probes on it:
`Activations`, `Gradients`, `UpdateRatios`, `Figures`, or a `Probe` of your own. The probes find
what to watch in the module tree: activation modules by type (with each type's flat region
defined once in `callbacks.base`), normalization layers, and every parameter of 2 or more
dimensions. Scalars go to every logger the Trainer has; histograms and images to the loggers
that take them (TensorBoard).

    from callbacks import Diagnostics
    trainer = L.Trainer(callbacks=[Diagnostics(every_n_steps=500, histogram_every_n_steps=2000)])

`ActivationStats`, `GradientStats`, `UpdateRatio` and `DiagnosticFigures` are `Diagnostics` with one
probe. `StepProgressBar` is a compact progress bar for long runs. The classes are imported on first
use, so `callbacks.tags` (the tag names) can be read without loading Lightning.
"""

from importlib import import_module

_HOME = {
    "Activations": "callbacks.activations",
    "ActivationStats": "callbacks.activations",
    "DiagnosticFigures": "callbacks.figures",
    "Diagnostics": "callbacks.diagnostics",
    "Figures": "callbacks.figures",
    "GradientStats": "callbacks.gradients",
    "Gradients": "callbacks.gradients",
    "Probe": "callbacks.probe",
    "StepProgressBar": "callbacks.progress",
    "UpdateRatio": "callbacks.update_ratio",
    "UpdateRatios": "callbacks.update_ratio",
}
__all__ = list(_HOME)


def __getattr__(name: str):
    if name not in _HOME:
        raise AttributeError(f"module 'callbacks' has no attribute {name!r}")
    return getattr(import_module(_HOME[name]), name)
