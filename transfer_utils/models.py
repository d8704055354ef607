"""Small model families sized for the book's data, and head replacement (chapter 3)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["SmallCNN", "MLP", "replace_head", "get_head", "count_parameters"]


def _conv_block(dims: int, c_in: int, c_out: int, batchnorm: bool) -> nn.Sequential:
    conv = nn.Conv1d if dims == 1 else nn.Conv2d
    norm = nn.BatchNorm1d if dims == 1 else nn.BatchNorm2d
    pool = nn.MaxPool1d if dims == 1 else nn.MaxPool2d
    layers: list[tuple[str, nn.Module]] = [("conv", conv(c_in, c_out, 3, padding=1))]
    if batchnorm:
        layers.append(("bn", norm(c_out)))
    layers += [("relu", nn.ReLU()), ("pool", pool(2, ceil_mode=True))]
    return nn.Sequential(OrderedDict(layers))


class SmallCNN(nn.Module):
    """A small convolutional network: ``body`` (conv blocks + global pooling) then ``head``.

    Global average pooling makes it independent of the input size, so the same
    network reads 28x28 MNIST and 8x8 scikit-learn digits; that is what lets a
    source model trained on one be fine-tuned on the other (chapters 1 and 3).

    Parameters
    ----------
    num_classes : int
        Outputs of the linear head.
    in_channels : int
        Input channels (1 for the book's greyscale images and 1-D signals).
    widths : sequence of int
        Channels of each conv block; block ``i`` is ``body.block{i+1}``.
    batchnorm : bool
        Put a BatchNorm layer after each convolution.
    dims : {1, 2}
        2 for images ``[N, C, H, W]``, 1 for signals ``[N, C, L]`` (MNIST-1D).
    dropout : float
        Dropout before the head.

    Examples
    --------
    >>> import torch, transfer_utils as tu
    >>> net = tu.SmallCNN(num_classes=10)
    >>> net(torch.zeros(2, 1, 28, 28)).shape
    torch.Size([2, 10])
    >>> net(torch.zeros(2, 1, 8, 8)).shape
    torch.Size([2, 10])
    """

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 1,
        widths: Sequence[int] = (16, 32, 64),
        batchnorm: bool = True,
        dims: int = 2,
        dropout: float = 0.0,
    ):
        super().__init__()
        if dims not in (1, 2):
            raise ValueError(f"dims must be 1 (signals) or 2 (images), got {dims!r}")
        if not widths or any(int(w) < 1 for w in widths):
            raise ValueError(f"widths must be a non-empty sequence of positive ints, got {widths!r}")
        _check_classes(num_classes)
        self.config = dict(
            num_classes=num_classes, in_channels=in_channels, widths=list(widths),
            batchnorm=batchnorm, dims=dims, dropout=dropout,
        )
        blocks: list[tuple[str, nn.Module]] = []
        c = in_channels
        for i, w in enumerate(widths):
            blocks.append((f"block{i + 1}", _conv_block(dims, c, int(w), batchnorm)))
            c = int(w)
        pool = nn.AdaptiveAvgPool1d(1) if dims == 1 else nn.AdaptiveAvgPool2d(1)
        blocks += [("pool", pool), ("flatten", nn.Flatten()), ("dropout", nn.Dropout(dropout))]
        self.body = nn.Sequential(OrderedDict(blocks))
        self.head = nn.Linear(c, num_classes)
        self.feature_dim = c

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


class MLP(nn.Module):
    """A fully connected network: ``body`` (flatten + hidden layers ``fc1``, ``fc2``, ...) then ``head``.

    Parameters
    ----------
    in_features : int
        Input size after flattening (784 for 28x28 images, 64 for 8x8).
    hidden : sequence of int
        Width of each hidden layer.
    num_classes : int
        Outputs of the linear head.
    dropout : float
        Dropout after each hidden activation.
    batchnorm : bool
        Put a BatchNorm layer (``bn1``, ``bn2``, ...) between each hidden linear
        layer and its ReLU, so BatchNorm-based adaptation (AdaBN, TENT, chapter 10)
        applies to an MLP too.

    Examples
    --------
    >>> import torch, transfer_utils as tu
    >>> tu.MLP(784, hidden=(64,), num_classes=10)(torch.zeros(3, 1, 28, 28)).shape
    torch.Size([3, 10])
    >>> [n for n, _ in tu.MLP(40, hidden=(8,), batchnorm=True).body.named_children()]
    ['flatten', 'fc1', 'bn1', 'relu1']
    """

    def __init__(
        self,
        in_features: int,
        hidden: Sequence[int] = (256, 128),
        num_classes: int = 10,
        dropout: float = 0.0,
        batchnorm: bool = False,
    ):
        super().__init__()
        if in_features < 1:
            raise ValueError(f"in_features must be positive, got {in_features!r}")
        if any(int(h) < 1 for h in hidden):
            raise ValueError(f"hidden sizes must be positive ints, got {hidden!r}")
        _check_classes(num_classes)
        self.config = dict(
            in_features=in_features, hidden=list(hidden), num_classes=num_classes, dropout=dropout,
            batchnorm=batchnorm,
        )
        layers: list[tuple[str, nn.Module]] = [("flatten", nn.Flatten())]
        d = in_features
        for i, h in enumerate(hidden):
            layers.append((f"fc{i + 1}", nn.Linear(d, int(h))))
            if batchnorm:
                layers.append((f"bn{i + 1}", nn.BatchNorm1d(int(h))))
            layers.append((f"relu{i + 1}", nn.ReLU()))
            if dropout:
                layers.append((f"dropout{i + 1}", nn.Dropout(dropout)))
            d = int(h)
        self.body = nn.Sequential(OrderedDict(layers))
        self.head = nn.Linear(d, num_classes)
        self.feature_dim = d

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def _check_classes(num_classes: int) -> None:
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")


_HEAD_ATTRS = ("head", "fc", "classifier")


def get_head(model: nn.Module) -> tuple[nn.Module, str, nn.Linear]:
    """Find the output layer of a model: ``(parent module, attribute name, linear layer)``.

    Knows the book's models (``.head``), torchvision ResNets (``.fc``) and models
    whose ``.classifier`` is a Linear or a Sequential ending in one (VGG,
    MobileNet, EfficientNet, DenseNet).
    """
    for attr in _HEAD_ATTRS:
        layer = getattr(model, attr, None)
        if isinstance(layer, nn.Linear):
            return model, attr, layer
        if isinstance(layer, nn.Sequential) and len(layer) and isinstance(layer[-1], nn.Linear):
            return layer, str(len(layer) - 1), layer[-1]
    raise TypeError(
        f"replace_head does not know where the output layer of {type(model).__name__} is: "
        "it looks for a Linear at .head (the book's models), .fc (ResNet) or at the end of "
        ".classifier (VGG, MobileNet); replace the layer by hand, e.g. "
        "model.<attr> = nn.Linear(in_features, num_classes)"
    )


def replace_head(model: nn.Module, num_classes: int) -> nn.Module:
    """Swap the output layer for a new, freshly initialised one with ``num_classes`` outputs.

    The body keeps its weights; the new head sits on the same device and dtype as
    the old one. The model is changed in place and returned.

    Examples
    --------
    >>> import torch, transfer_utils as tu
    >>> net = tu.replace_head(tu.SmallCNN(num_classes=10), 5)
    >>> net(torch.zeros(1, 1, 28, 28)).shape
    torch.Size([1, 5])
    """
    _check_classes(num_classes)
    parent, attr, old = get_head(model)
    new = nn.Linear(old.in_features, num_classes, bias=old.bias is not None)
    new = new.to(device=old.weight.device, dtype=old.weight.dtype)
    setattr(parent, attr, new)  # also right for nn.Sequential children named "0", "1", ...
    if hasattr(model, "config") and isinstance(model.config, dict):
        model.config["num_classes"] = num_classes
    return model


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (only those with ``requires_grad`` when ``trainable_only``)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
