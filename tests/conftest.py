"""Shared fixtures: tiny in-memory datasets so unit tests run in milliseconds."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("TU_PROGRESS", "0")
os.environ.setdefault("MPLBACKEND", "Agg")
# One CPU thread, as tu.setup gives the notebooks: tiny models gain nothing from more, and
# competing threads slow them many times over when anything else runs on the machine.
torch.set_num_threads(int(os.environ.get("TU_THREADS", "1")))


def blobs(n=120, d=5, seed=0):
    """Three Gaussian classes in ``d`` dimensions, well separated: probes should get them."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 3
    X = torch.randn(n, d, generator=g) + 3 * torch.nn.functional.one_hot(y, d).float()
    return X, y


@pytest.fixture
def toy_images():
    """A separable 4-class problem on 1x8x8 images: class c lights up quadrant c."""
    g = torch.Generator().manual_seed(0)
    n = 200
    y = torch.arange(n) % 4
    x = 0.1 * torch.rand(n, 1, 8, 8, generator=g)
    for c in range(4):
        r, q = divmod(c, 2)
        x[y == c, 0, r * 4:(r + 1) * 4, q * 4:(q + 1) * 4] += 1.0
    import transfer_utils as tu

    return tu.ArrayDataset(x, y, name="toy")
