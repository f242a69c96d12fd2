"""Reading event files back: histograms on the bins they were written with."""

import numpy as np
import pytest
import torch
from torch.utils.tensorboard import SummaryWriter

from namegen.callbacks.tags import HISTOGRAM_BINS
from namegen.events import histogram_density, load


@pytest.mark.parametrize("bins", [HISTOGRAM_BINS, "tensorflow"])  # the callbacks' even bins, TensorBoard's default
def test_a_known_distribution_reads_back_with_its_density(tmp_path, bins):
    g = torch.Generator().manual_seed(0)
    uniform = torch.rand(200_000, generator=g) * 2 - 1  # density 0.5 on (-1, 1)
    normal = torch.randn(200_000, generator=g)
    with SummaryWriter(tmp_path) as writer:
        writer.add_histogram("uniform", uniform, 0, bins=bins)
        writer.add_histogram("normal", normal, 0, bins=bins)
    acc = load(tmp_path, histograms=True)
    _, centers, density = histogram_density(acc, "uniform")
    widths = np.diff(acc.Histograms("uniform")[0].histogram_value.bucket_limit)
    # every bin wide enough to hold a few thousand samples, not just on average: no double-height bins
    inside = (centers > -0.95) & (centers < 0.95) & (widths > 0.02)
    assert inside.sum() > 20 and np.allclose(density[inside], 0.5, rtol=0.08)
    assert np.sum(density * widths) == pytest.approx(1.0, abs=1e-6)  # a density integrates to 1
    _, centers, density = histogram_density(acc, "normal")
    widths = np.diff(acc.Histograms("normal")[0].histogram_value.bucket_limit)
    near = np.abs(centers) < 0.1
    peak = np.sum(density[near] * widths[near]) / np.sum(widths[near])  # the mean density over (-0.1, 0.1)
    assert peak == pytest.approx(1 / np.sqrt(2 * np.pi), rel=0.08)  # N(0, 1) at 0
