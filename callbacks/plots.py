"""makemore part 3's diagnostic plots, drawn with matplotlib's object API (no pyplot, no global state).

Shared by the TensorBoard figure callback (live tensors) and `namegen report`
(histograms read back from event files), so both draw the same picture.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from .tags import HEALTHY_UPDATE_RATIO

FIGSIZE, DPI = (10, 4), 100
# TensorBoard shows an image in a card about 350 px wide: drawn at 640 x 480 with large type, a figure stays
# legible at that size (and at its actual size)
THUMBNAIL = (6.4, 4.8)
LEGIBLE = {"font.size": 18, "axes.titlesize": "medium", "lines.linewidth": 2.0}


def new_axes(title: str, xlabel: str, ylabel: str, figsize: tuple[float, float] = FIGSIZE):
    fig = Figure(figsize=figsize, dpi=DPI)
    ax = fig.add_subplot()
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    return fig, ax


def render(fig: Figure) -> np.ndarray:
    """The figure as an (H, W, 3) uint8 array, drawn by Agg."""
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def save(fig: Figure, path) -> None:
    FigureCanvasAgg(fig).print_png(str(path))


def distributions(title: str, xlabel: str, curves: Sequence[tuple[str, np.ndarray, np.ndarray]],
                  figsize: tuple[float, float] = FIGSIZE) -> Figure:
    """One density curve per layer or weight: (legend label, bin centers, density)."""
    fig, ax = new_axes(title, xlabel, "density", figsize)
    for label, centers, dens in curves:
        ax.plot(centers, dens, label=label)
    if curves:
        ax.legend(fontsize="small")
    fig.tight_layout()
    return fig


def update_ratios(series: dict[str, Sequence[tuple[int, float]]], title: str = "update:data ratio",
                  figsize: tuple[float, float] = FIGSIZE) -> Figure:
    """log10(update std / data std) of each parameter over the steps, with the -3 guide line."""
    fig, ax = new_axes(title, "step", "log10 update:data ratio", figsize)
    for name, points in series.items():
        finite = [(s, v) for s, v in points if np.isfinite(v)]
        if finite:
            steps, values = zip(*finite)
            ax.plot(steps, values, marker="." if len(finite) < 20 else None, label=name)
    ax.axhline(HEALTHY_UPDATE_RATIO, color="k", linestyle="--", linewidth=1, label="-3: about right")
    ax.legend(fontsize="small", ncol=2)
    fig.tight_layout()
    return fig
