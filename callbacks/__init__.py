"""Lightning callbacks that show why a deep network trains or doesn't, for any LightningModule.

Installed with namegen as `namegen.callbacks` (the folder is `callbacks/` in the repository), so it
never collides with a project's own `callbacks` module:

    from namegen.callbacks import Diagnostics
    trainer = L.Trainer(callbacks=[Diagnostics(every_n_steps=500, histogram_every_n_steps=2000)])

`Diagnostics` owns one schedule (scalars, histograms, figures) and runs probes on it:
`Activations`, `Gradients`, `UpdateRatios`, `Attention`, `Figures`, or a `Probe` of your own
(`Diagnostics(probes=[Gradients()])` for one alone). What to watch is found once in the module
tree (`catalog.Catalog`): activations by kind (torch's by type, anyone else's by what they compute,
each kind's flat region defined once in `kinds`), normalization layers, attention modules, and
every parameter of 2 or more dimensions. Every call of a module is its own series; names are fixed
for the fit; NaN and inf are counted, never fatal; compiled models are recorded eagerly. Scalars go to every logger the
Trainer has; histograms and images to the loggers that take them (TensorBoard).
`StepProgressBar` is a compact progress bar for long runs. The classes are imported on first use,
so `namegen.callbacks.tags` (the tag names) can be read without loading Lightning.
"""

from importlib import import_module

_HOME = {
    "Activations": ".activations",
    "Attention": ".attention",
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
