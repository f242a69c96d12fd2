"""Lightning callbacks that show why a deep network trains or doesn't, for any LightningModule.

Installed with namegen as `namegen.callbacks` (the folder is `callbacks/` in the repository), so it
never collides with a project's own `callbacks` module:

    from namegen.callbacks import Diagnostics
    trainer = L.Trainer(callbacks=[Diagnostics(every_n_steps=500, histogram_every_n_steps=2000)])

`Diagnostics` owns one schedule (scalars, histograms, figures) and runs probes on it:
`Activations`, `Gradients`, `UpdateRatios`, `Figures`, or a `Probe` of your own
(`Diagnostics(probes=[Gradients()])` for one alone). The probes find what to watch in the module
tree: activation modules by type (with each type's flat region defined once in `base`),
normalization layers, and every parameter of 2 or more dimensions. Scalars go to every logger the
Trainer has; histograms and images to the loggers that take them (TensorBoard).
`StepProgressBar` is a compact progress bar for long runs. The classes are imported on first use,
so `namegen.callbacks.tags` (the tag names) can be read without loading Lightning.
"""

from importlib import import_module

_HOME = {
    "Activations": ".activations",
    "Diagnostics": ".diagnostics",
    "Figures": ".figures",
    "Gradients": ".gradients",
    "Probe": ".probe",
    "StepProgressBar": ".progress",
    "UpdateRatios": ".update_ratio",
}
__all__ = list(_HOME)


def __getattr__(name: str):
    if name not in _HOME:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(_HOME[name], __name__), name)
