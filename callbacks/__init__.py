"""namegen's diagnostics callbacks: what the lesson plots, written to TensorBoard while training.

Each is one Lightning callback with its own config under conf/callbacks/; `callbacks=default` turns all on.
They need a TensorBoardLogger; without one each warns once and does nothing. The first of them
also writes a custom-scalars layout: each quantity as one chart across layers.
`StepProgressBar` is the progress bar, counting optimizer steps.
"""

from callbacks.activations import ActivationStats
from callbacks.figures import DiagnosticFigures
from callbacks.gradients import GradientStats
from callbacks.progress import StepProgressBar
from callbacks.update_ratio import UpdateRatio

__all__ = ["ActivationStats", "DiagnosticFigures", "GradientStats", "StepProgressBar", "UpdateRatio"]
