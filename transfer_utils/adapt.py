"""Adapting a trained model to a shifted target domain without target labels (chapters 7, 10).

Methods layer: AdaBN (:func:`adapt_batchnorm`) re-estimates BatchNorm statistics
on unlabelled target data.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable

import torch
from torch import nn

from .runtime import get_device
from .surgery import batchnorm_layers

__all__ = ["adapt_batchnorm"]



@torch.no_grad()
def adapt_batchnorm(
    model: nn.Module,
    loader: Iterable,
    *,
    inplace: bool = False,
    device: str | torch.device | None = None,
) -> nn.Module:
    """Re-estimate every BatchNorm layer's running mean and variance on (unlabelled) target data.

    BatchNorm normalises with statistics of the *source* data; under domain shift
    those are wrong for the target. Resetting them and averaging the statistics
    of the target batches (no labels, no gradient step) is AdaBN (Li et al. 2018),
    the cheapest adaptation chapter 7 measures. Only the statistics change; all
    weights stay as they were. The result is in eval mode.

    Parameters
    ----------
    model : nn.Module
        A network with BatchNorm layers.
    loader : iterable of (x, y) or of x
        Target inputs; labels, if present, are ignored.
    inplace : bool
        Change ``model`` itself instead of a copy.

    Examples
    --------
    >>> import transfer_utils as tu
    >>> src = tu.zoo.load("mnist8_cnn")
    >>> adapted = tu.adapt_batchnorm(src, tu.make_loader(tu.load_digits(), 256))
    >>> bool((adapted.body.block1.bn.running_mean != src.body.block1.bn.running_mean).any())
    True
    """
    if not batchnorm_layers(model):
        raise ValueError(f"{type(model).__name__} has no BatchNorm layers: nothing to adapt")
    net = model if inplace else copy.deepcopy(model)
    device = get_device(device)
    net.to(device).eval()
    bns = batchnorm_layers(net)
    momenta = [m.momentum for m in bns]
    seen = 0
    try:
        for m in bns:
            m.reset_running_stats()
            m.momentum = None  # cumulative average over all batches
            nn.Module.train(m, True)
        for batch in loader:
            x = batch[0] if isinstance(batch, (tuple, list)) else batch
            net(x.to(device))
            seen += len(x)
    finally:
        for m, momentum in zip(bns, momenta, strict=True):
            m.momentum = momentum
            nn.Module.train(m, False)
    if seen == 0:
        raise ValueError("the loader yielded no batches: no target statistics to estimate")
    return net.eval()
