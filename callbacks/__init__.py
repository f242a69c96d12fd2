"""Lightning callbacks that show why a deep network trains or doesn't, for any LightningModule.

Each stands alone and finds what to watch in the module tree: activation modules by type
(with each type's flat region defined once in `callbacks.base`), normalization layers, and
every parameter of 2 or more dimensions. Scalars go to every logger the Trainer has;
histograms and images to the loggers that take them (TensorBoard).

    from callbacks import ActivationStats, GradientStats, UpdateRatio, DiagnosticFigures
    trainer = L.Trainer(callbacks=[ActivationStats(), GradientStats(), UpdateRatio(), DiagnosticFigures()])

`StepProgressBar` is a compact progress bar for long runs. The classes are imported on first use, so
`callbacks.tags` (the tag names) can be read without loading Lightning.
"""

from importlib import import_module

_HOME = {
    "ActivationStats": "callbacks.activations",
    "DiagnosticFigures": "callbacks.figures",
    "GradientStats": "callbacks.gradients",
    "StepProgressBar": "callbacks.progress",
    "UpdateRatio": "callbacks.update_ratio",
}
__all__ = list(_HOME)


def __getattr__(name: str):
    if name not in _HOME:
        raise AttributeError(f"module 'callbacks' has no attribute {name!r}")
    return getattr(import_module(_HOME[name]), name)
