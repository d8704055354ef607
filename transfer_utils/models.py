"""Models: the book's small model families, finding and replacing heads, torchvision ResNet-18.

Core layer. :class:`SmallCNN` and :class:`MLP` are ``body`` + ``head`` networks
sized for the book's data; :func:`get_head` finds the output layer of those and
of torchvision models (``.fc``, ``.classifier``), which every helper that needs
"the head" uses (chapter 3); :func:`resnet18_for` is the "at scale" path of
chapter 6.
"""

from __future__ import annotations

import os
import socket
import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import nn

from . import _validate as V
from .checkpoint import load_checkpoint
from .surgery import adapt_first_conv

__all__ = ["SmallCNN", "MLP", "replace_head", "get_head", "head_name", "body_blocks",
           "get_submodule", "count_parameters", "IMAGENET_MEAN", "IMAGENET_STD",
           "WeightsUnavailableError", "resnet18_for"]


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
        _num_classes_arg(num_classes)
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
        _num_classes_arg(num_classes)
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


def _num_classes_arg(num_classes: int) -> None:
    V.positive_int(num_classes, "num_classes")


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
        f"cannot find the output layer (head) of {type(model).__name__}: tu looks for a "
        "Linear at .head (the book's models), .fc (ResNet) or at the end of .classifier "
        "(VGG, MobileNet); give your model one of those attributes, e.g. "
        "model.head = nn.Linear(in_features, num_classes)"
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
    _num_classes_arg(num_classes)
    parent, attr, old = get_head(model)
    new = nn.Linear(old.in_features, num_classes, bias=old.bias is not None)
    new = new.to(device=old.weight.device, dtype=old.weight.dtype)
    setattr(parent, attr, new)  # also right for nn.Sequential children named "0", "1", ...
    if hasattr(model, "config") and isinstance(model.config, dict):
        model.config["num_classes"] = num_classes
    return model


def head_name(model: nn.Module) -> str:
    """Dotted name of the output layer found by :func:`get_head` (``"head"``, ``"fc"``, ...).

    Examples
    --------
    >>> import torchvision, transfer_utils as tu
    >>> tu.head_name(tu.SmallCNN()), tu.head_name(torchvision.models.resnet18())
    ('head', 'fc')
    """
    _, _, layer = get_head(model)
    for name, module in model.named_modules():
        if module is layer:
            return name
    raise TypeError(f"the head of {type(model).__name__} is not one of its submodules")


def body_blocks(model: nn.Module) -> list[str]:
    """Dotted names of the blocks before the head, input side first: what "partial" freezes.

    For the book's models, the children of ``body`` (``body.block1``, ...); for
    other models (a torchvision ResNet), the top-level children other than the
    head (``conv1``, ``bn1``, ..., ``layer4``, ``avgpool``). Children without
    parameters are listed too, so ``blocks[:n]`` is "the first n blocks".

    Examples
    --------
    >>> import transfer_utils as tu
    >>> tu.body_blocks(tu.SmallCNN())[:3]
    ['body.block1', 'body.block2', 'body.block3']
    """
    head = head_name(model)
    body = getattr(model, "body", None)
    if isinstance(body, nn.Module) and head != "body" and not head.startswith("body."):
        return [f"body.{n}" for n, _ in body.named_children()]
    top = head.split(".")[0]
    return [n for n, _ in model.named_children() if n != top]


def get_submodule(model: nn.Module, name: str) -> nn.Module:
    """The submodule called ``name`` (dotted, as in ``named_modules``), or an error listing names.

    Examples
    --------
    >>> import transfer_utils as tu
    >>> type(tu.get_submodule(tu.SmallCNN(), "body.block1.conv")).__name__
    'Conv2d'
    """
    if not isinstance(name, str):
        raise TypeError(f"a layer name must be a string such as 'body.block2', got {name!r}")
    modules = dict(model.named_modules())
    if name not in modules:
        names = [n for n in modules if n]
        raise ValueError(
            f"{type(model).__name__} has no submodule named {name!r}; "
            f"choose one of {names[:20]}{' ...' if len(names) > 20 else ''}"
        )
    return modules[name]


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (only those with ``requires_grad`` when ``trainable_only``)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


#: Per-channel (R, G, B) mean and std of ImageNet, which torchvision's pretrained models expect.
IMAGENET_MEAN = (0.485, 0.456, 0.406)


IMAGENET_STD = (0.229, 0.224, 0.225)


class WeightsUnavailableError(RuntimeError):
    """Pretrained weights were asked for but cannot be had (no network, no cached file)."""


def _reachable(host: str, port: int, timeout: float) -> tuple[bool, str]:
    """Can a TCP connection to ``host:port`` be opened within ``timeout`` seconds (DNS included)?"""
    result: dict[str, str | bool] = {}

    def probe():
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            result["ok"] = True
        except Exception as err:  # noqa: BLE001 - any failure means "unreachable"; it is reported
            result["error"] = f"{type(err).__name__}: {err}"

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout)  # name resolution ignores socket timeouts: never wait longer than this
    if thread.is_alive():
        return False, f"no answer within {timeout:g} s"
    if result.get("ok"):
        return True, ""
    return False, str(result.get("error", "unknown error"))


def _hub_file_ok(path: Path) -> tuple[bool, str]:
    """Does a torch-hub weight file match the hash prefix in its name (``name-<sha256[:n]>.pth``)?"""
    import re

    from .checkpoint import sha256_file

    m = re.search(r"-([0-9a-f]{8,64})\.", path.name)
    if m is None:
        return True, ""
    actual = sha256_file(path)
    if not actual.startswith(m.group(1)):
        return False, f"its SHA-256 starts {actual[:len(m.group(1))]}, the published {m.group(1)}"
    return True, ""


def _load_hub_file(path: Path, how_to: str) -> dict[str, torch.Tensor]:
    ok, why = _hub_file_ok(path)
    if not ok:
        raise WeightsUnavailableError(
            f"the cached weight file {path} is damaged or was replaced ({why}); delete it and "
            f"download it again, or {how_to}"
        )
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated (EOFError), not a zip, pickled objects, ...
        raise WeightsUnavailableError(
            f"the cached weight file {path} cannot be read ({type(err).__name__}: {err}); "
            f"delete it and download it again, or {how_to}"
        ) from None


def _download(url: str, dest: Path, timeout: float) -> None:
    """Download ``url`` to ``dest`` (atomically); a server silent for ``timeout`` s is an error."""
    import tempfile
    import urllib.request

    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:
            while chunk := resp.read(1 << 16):  # each read waits at most `timeout` seconds
                out.write(chunk)
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _imagenet_state(weights, timeout: float) -> dict[str, torch.Tensor]:
    from torchvision.models import ResNet18_Weights

    try:
        enum = ResNet18_Weights.verify(weights)
    except (KeyError, ValueError, TypeError) as err:
        names = ", ".join(["'DEFAULT'", *(f"'{w.name}'" for w in ResNet18_Weights)])
        raise ValueError(
            f"unknown weights {weights!r} for ResNet-18; use None (random initialisation), one of "
            f"{names}, a ResNet18_Weights member, or the path of a local .safetensors/.pt file"
        ) from err
    url = enum.url
    cached = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(url).path)
    how_to = (
        f"use weights=None for a randomly initialised stand-in (its numbers then say nothing "
        f"about ImageNet pretraining), or download {url} on a machine with network access and "
        f"copy it to {cached}"
    )
    if cached.exists():
        return _load_hub_file(cached, how_to)
    host = urlparse(url).hostname or ""
    if os.environ.get("TU_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        raise WeightsUnavailableError(
            f"ImageNet weights for ResNet-18 are not cached and TU_OFFLINE is set; {how_to}"
        )
    ok, why = _reachable(host, 443, timeout)
    if not ok:
        raise WeightsUnavailableError(
            f"cannot download the ImageNet weights of ResNet-18: {host} is unreachable ({why}); "
            f"this machine seems to be offline. {how_to[0].upper()}{how_to[1:]}"
        )
    try:
        _download(url, cached, timeout)
    except OSError as err:  # URLError, timeouts and connection resets are OSErrors
        raise WeightsUnavailableError(
            f"downloading the ImageNet weights of ResNet-18 failed ({err}); {how_to}"
        ) from err
    return _load_hub_file(cached, how_to)


def resnet18_for(
    num_classes: int,
    in_channels: int = 1,
    weights=None,
    *,
    timeout: float = 5.0,
    reduce: str = "sum",
) -> nn.Module:
    """A torchvision ResNet-18 ready for a new task: its first conv adapted, a new ``fc`` head.

    This is the "at scale" path of chapter 6: the same three steps you would take
    with any ImageNet model (load the weights, adapt the first layer to the
    input channels, replace the classifier).

    Parameters
    ----------
    num_classes : int
        Outputs of the new ``fc`` layer.
    in_channels : int
        Input channels of the data (1 for greyscale); the first conv's RGB filters
        are combined by :func:`adapt_first_conv` (``reduce``) when this is not 3.
    weights : None, str, ResNet18_Weights or path
        ``None``: random initialisation, the offline *stand-in* for pretrained
        weights (the book's pages are built this way, without network).
        ``"DEFAULT"`` / ``"IMAGENET1K_V1"`` / a ``ResNet18_Weights`` member: the
        ImageNet weights, from torch's cache or downloaded; when they are not cached
        and the download server cannot be reached within ``timeout`` seconds,
        :class:`WeightsUnavailableError` is raised at once (it never hangs; set
        ``TU_OFFLINE=1`` to skip the network check entirely). A path to a
        ``.safetensors`` or ``.pt`` file: a local checkpoint with the layout of
        torchvision's ResNet-18 (any input channels, any ``fc``), loaded safely with
        :func:`transfer_utils.load_checkpoint`. A checkpoint whose ``fc`` already
        has ``num_classes`` outputs (a model fine-tuned for this task) keeps its
        trained head and first layer; one with another number of outputs (a
        source model) gets a new, untrained head.
    timeout : float
        Seconds to wait for the download server (to connect, and for each piece
        of data) before giving up.
    reduce : {"sum", "mean"}
        How :func:`adapt_first_conv` combines the colour filters.

    Examples
    --------
    >>> import torch, transfer_utils as tu
    >>> net = tu.resnet18_for(10, in_channels=1, weights=None)
    >>> net(torch.zeros(2, 1, 32, 32)).shape
    torch.Size([2, 10])
    """
    import torchvision

    V.positive(timeout, "timeout (seconds)", "resnet18_for")
    _num_classes_arg(num_classes)
    V.positive_int(in_channels, "in_channels", "resnet18_for")
    V.one_of(reduce, "reduce", ("sum", "mean"), "resnet18_for")
    if weights is None:
        model = torchvision.models.resnet18(weights=None)
    elif isinstance(weights, (os.PathLike, str)) and Path(weights).suffix in (
        ".safetensors", ".pt", ".pth"
    ):
        state = load_checkpoint(weights).state_dict
        model = torchvision.models.resnet18(weights=None)
        fc = {k: v for k, v in state.items() if k.startswith("fc.")}
        if "fc.weight" in fc:  # the checkpoint's head may have any number of classes
            model.fc = nn.Linear(fc["fc.weight"].shape[1], fc["fc.weight"].shape[0],
                                 bias="fc.bias" in fc)
        conv = state.get("conv1.weight")
        if conv is not None and conv.ndim == 4 and conv.shape[1] != 3:  # saved after adapting
            adapt_first_conv(model, int(conv.shape[1]))
        try:
            model.load_state_dict(state)
        except RuntimeError as err:
            raise ValueError(
                f"{Path(weights).name} does not hold torchvision ResNet-18 weights "
                f"({str(err).splitlines()[0]}); save the model with "
                "tu.save_checkpoint(path, model) after fine-tuning a tu.resnet18_for model"
            ) from None
    else:
        state = _imagenet_state(weights, float(timeout))  # fails fast, before building anything
        model = torchvision.models.resnet18(weights=None)
        model.load_state_dict(state)
    if model.conv1.in_channels != in_channels:
        adapt_first_conv(model, in_channels, reduce=reduce)
    if model.fc.out_features == num_classes and not (weights is None or _is_imagenet(weights)):
        return model  # a fine-tuned checkpoint for this task: keep its trained head
    return replace_head(model, num_classes)


def _is_imagenet(weights) -> bool:
    return not (isinstance(weights, (os.PathLike, str)) and Path(weights).suffix in (
        ".safetensors", ".pt", ".pth"))


# --------------------------------------------------------------------------- transformers
# Small transformers for chapter 9 (parameter-efficient fine-tuning): a vision transformer
# for 28x28 digits and a character-level language model. Every projection is its own
# nn.Linear (attention q, k, v, out; MLP fc1, fc2), so LoRA can target them by name.

__all__ += ["TransformerBlock", "TinyViT", "CharTransformer"]


class _Attention(nn.Module):
    """Multi-head self-attention with separate ``q``, ``k``, ``v`` and ``out`` projections."""

    def __init__(self, dim: int, heads: int, causal: bool):
        super().__init__()
        self.heads, self.causal = heads, causal
        self.q, self.k, self.v, self.out = (nn.Linear(dim, dim) for _ in range(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape

        def split(z: torch.Tensor) -> torch.Tensor:  # [B, T, D] -> [B, heads, T, D/heads]
            return z.view(b, t, self.heads, d // self.heads).transpose(1, 2)

        y = nn.functional.scaled_dot_product_attention(
            split(self.q(x)), split(self.k(x)), split(self.v(x)), is_causal=self.causal)
        return self.out(y.transpose(1, 2).reshape(b, t, d))


class _FeedForward(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class TransformerBlock(nn.Module):
    """A pre-norm transformer block: ``x + attn(norm1(x))``, then ``x + mlp(norm2(x))``.

    Submodules ``attn.q``, ``attn.k``, ``attn.v``, ``attn.out``, ``mlp.fc1`` and
    ``mlp.fc2`` are the ``nn.Linear`` layers that LoRA targets (chapter 9).

    Examples
    --------
    >>> import torch, transfer_utils as tu
    >>> tu.TransformerBlock(dim=16, heads=2)(torch.zeros(3, 5, 16)).shape
    torch.Size([3, 5, 16])
    """

    def __init__(self, dim: int, heads: int, mlp_ratio: int = 2, causal: bool = False):
        super().__init__()
        for value, what in ((dim, "dim"), (heads, "heads"), (mlp_ratio, "mlp_ratio")):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{what} must be a positive integer, got {value!r}")
        if dim % heads:
            raise ValueError(f"dim ({dim}) must be a multiple of heads ({heads})")
        self.norm1, self.attn = nn.LayerNorm(dim), _Attention(dim, heads, causal)
        self.norm2, self.mlp = nn.LayerNorm(dim), _FeedForward(dim, mlp_ratio * dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class _ViTBody(nn.Module):
    def __init__(self, image_size, patch_size, in_channels, dim, depth, heads, mlp_ratio):
        super().__init__()
        self.patch_size = patch_size
        n = (image_size // patch_size) ** 2
        self.patch_embed = nn.Linear(in_channels * patch_size**2, dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(0.02 * torch.randn(1, n + 1, dim))
        self.blocks = nn.Sequential(*(TransformerBlock(dim, heads, mlp_ratio)
                                      for _ in range(depth)))
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.patch_size
        patches = nn.functional.unfold(x, kernel_size=p, stride=p).transpose(1, 2)  # [B, N, C*p*p]
        if patches.shape[1] + 1 != self.pos_embed.shape[1]:
            raise ValueError(
                f"TinyViT was built for {self.pos_embed.shape[1] - 1} patches of {p}x{p}, got "
                f"images of shape {list(x.shape[1:])} ({patches.shape[1]} patches); resize "
                "the images, e.g. tu.load_digits(image_size=28)"
            )
        h = self.patch_embed(patches)
        h = torch.cat([self.cls_token.expand(len(h), -1, -1), h], dim=1) + self.pos_embed
        return self.norm(self.blocks(h))[:, 0]  # the class token's features


class TinyViT(nn.Module):
    """A small vision transformer: ``body`` (patches, class token, blocks, norm) then ``head``.

    The image is cut into non-overlapping ``patch_size`` squares, each flattened
    and projected by ``body.patch_embed`` (an ``nn.Linear``); a learned class
    token and position embeddings are added, ``depth`` :class:`TransformerBlock`
    layers mix the tokens, and the head reads the class token. Chapter 9 fine-tunes
    it with LoRA (``body.blocks.0.attn.q`` etc. are the target names).

    Parameters
    ----------
    num_classes : int
    image_size, patch_size : int
        ``image_size`` must be a multiple of ``patch_size``.
    in_channels, dim, depth, heads, mlp_ratio : int
        Input channels, token width, number of blocks, attention heads, MLP width
        as a multiple of ``dim``.

    Examples
    --------
    >>> import torch, transfer_utils as tu
    >>> vit = tu.TinyViT(num_classes=10, dim=32, depth=1)
    >>> vit(torch.zeros(2, 1, 28, 28)).shape
    torch.Size([2, 10])
    """

    def __init__(self, num_classes: int = 10, image_size: int = 28, patch_size: int = 7,
                 in_channels: int = 1, dim: int = 64, depth: int = 2, heads: int = 4,
                 mlp_ratio: int = 2):
        super().__init__()
        _num_classes_arg(num_classes)
        for value, what in ((image_size, "image_size"), (patch_size, "patch_size"),
                            (in_channels, "in_channels"), (depth, "depth")):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{what} must be a positive integer, got {value!r}")
        if image_size % patch_size:
            raise ValueError(f"image_size ({image_size}) must be a multiple of patch_size "
                             f"({patch_size})")
        self.config = dict(num_classes=num_classes, image_size=image_size,
                           patch_size=patch_size, in_channels=in_channels, dim=dim,
                           depth=depth, heads=heads, mlp_ratio=mlp_ratio)
        self.body = _ViTBody(image_size, patch_size, in_channels, dim, depth, heads, mlp_ratio)
        self.head = nn.Linear(dim, num_classes)
        self.feature_dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


class CharTransformer(nn.Module):
    """A character-level, GPT-style language model: next-character logits for every position.

    ``tok_embed`` (characters) plus ``pos_embed`` (positions up to ``context``),
    ``depth`` causal :class:`TransformerBlock` layers, a final ``norm`` and the
    ``head`` that maps each position to ``vocab_size`` logits. Input: integer
    tensor ``[B, T]`` with ``T <= context``; output ``[B, T, vocab_size]``. The
    book's characters are :func:`transfer_utils.encode_text`'s vocabulary; the zoo
    model ``prose_char_lm`` is pretrained on English prose (chapter 9).

    Examples
    --------
    >>> import torch, transfer_utils as tu
    >>> lm = tu.CharTransformer(vocab_size=97, context=32, dim=32, depth=1)
    >>> lm(torch.zeros(2, 10, dtype=torch.long)).shape
    torch.Size([2, 10, 97])
    """

    def __init__(self, vocab_size: int = 97, context: int = 64, dim: int = 64, depth: int = 2,
                 heads: int = 4, mlp_ratio: int = 2):
        super().__init__()
        for value, what in ((vocab_size, "vocab_size"), (context, "context"), (depth, "depth")):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{what} must be a positive integer, got {value!r}")
        self.config = dict(vocab_size=vocab_size, context=context, dim=dim, depth=depth,
                           heads=heads, mlp_ratio=mlp_ratio)
        self.context = context
        self.tok_embed = nn.Embedding(vocab_size, dim)
        self.pos_embed = nn.Parameter(0.02 * torch.randn(context, dim))
        self.blocks = nn.Sequential(*(TransformerBlock(dim, heads, mlp_ratio, causal=True)
                                      for _ in range(depth)))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, vocab_size)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        if idx.dim() != 2 or idx.is_floating_point():
            raise ValueError(f"CharTransformer takes integer token ids [B, T], got "
                             f"{idx.dtype} of shape {list(idx.shape)}")
        if idx.shape[1] > self.context:
            raise ValueError(f"sequence of {idx.shape[1]} characters is longer than the "
                             f"context ({self.context}); feed the last {self.context}")
        h = self.tok_embed(idx) + self.pos_embed[: idx.shape[1]]
        return self.head(self.norm(self.blocks(h)))

    @torch.no_grad()
    def generate(self, idx: torch.Tensor, length: int, *, temperature: float = 1.0,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        """Extend ``idx`` ``[B, T]`` by ``length`` sampled characters (``temperature`` > 0).

        Sampling uses ``generator`` when given (on the model's device), so a seeded
        generator repeats the same text. The model's train/eval mode is restored.
        """
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature!r}")
        was_training = self.training
        self.eval()
        try:
            for _ in range(length):
                logits = self(idx[:, -self.context:])[:, -1] / temperature
                nxt = torch.multinomial(torch.softmax(logits, -1), 1, generator=generator)
                idx = torch.cat([idx, nxt], dim=1)
        finally:
            self.train(was_training)
        return idx
