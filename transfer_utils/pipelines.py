"""End-to-end plumbing (chapter 6) and the decision guide (chapter 8): first-conv surgery,
torchvision ResNet-18 for a new task with a fail-fast download, key renaming, exercise checkers.
"""

from __future__ import annotations

import copy
import os
import re
import socket
import tempfile
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import nn

from .checkpoint import load_checkpoint
from .models import replace_head

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "WeightsUnavailableError",
    "adapt_first_conv",
    "resnet18_for",
    "rename_keys",
    "GUIDE_METHODS",
    "GUIDE_SCENARIOS",
    "Scenario",
    "recommend_method",
    "plot_decision_guide",
    "check_adapt_first_conv",
    "check_safe_loader",
    "check_decision_guide",
]

#: Per-channel (R, G, B) mean and std of ImageNet, which torchvision's pretrained models expect.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_CONV_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


# --------------------------------------------------------------------------- first-conv surgery


def _first_conv(model: nn.Module) -> tuple[nn.Module, str, nn.Module]:
    for name, module in model.named_modules():
        if isinstance(module, _CONV_TYPES):
            parent_name, _, attr = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            return parent, attr, module
    raise ValueError(
        f"{type(model).__name__} has no Conv1d/Conv2d/Conv3d layer: adapt_first_conv changes "
        "the input channels of a convolutional network; for an MLP change in_features instead"
    )


def _adapted_conv(conv: nn.Module, in_channels: int, reduce: str) -> nn.Module:
    if conv.groups != 1:
        raise ValueError(
            f"adapt_first_conv handles ordinary convolutions (groups=1), got groups={conv.groups}"
        )
    w = conv.weight.detach()
    if reduce == "sum":
        # each new channel gets sum_c W_c / in_channels: an input whose channels are all equal
        # (a grey image copied into every channel) gives exactly the old response
        base = w.sum(1, keepdim=True) / in_channels
    else:
        base = w.mean(1, keepdim=True)
    new = type(conv)(
        in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride,
        padding=conv.padding, dilation=conv.dilation, groups=1, bias=conv.bias is not None,
        padding_mode=conv.padding_mode,
    ).to(device=w.device, dtype=w.dtype)
    with torch.no_grad():
        new.weight.copy_(base.expand_as(new.weight))
        if conv.bias is not None:
            new.bias.copy_(conv.bias.detach())
    new.weight.requires_grad_(conv.weight.requires_grad)
    if conv.bias is not None:
        new.bias.requires_grad_(conv.bias.requires_grad)
    return new


def adapt_first_conv(model_or_conv: nn.Module, in_channels: int, *, reduce: str = "sum"):
    """Change the number of input channels of a network's first convolution, keeping its filters.

    A model pretrained on RGB images has a first layer with weights
    ``[out, 3, kh, kw]``. For greyscale inputs, chapter 6 replaces it by a layer with
    one input channel whose filter is the *sum* of the three colour filters: a grey
    image copied into R, G and B gives ``sum_c W_c * x``, so the new layer gives the
    same response to the grey image alone. In general every new channel gets
    ``sum_c W_c / in_channels`` (``reduce="sum"``, the default), which keeps the
    response to any input whose channels are equal, also when going from 1 to 3
    channels. ``reduce="mean"`` gives every new channel ``mean_c W_c`` instead (the
    response shrinks by ``old_channels / in_channels``; BatchNorm after the layer
    absorbs a scale, but nothing else does).

    Parameters
    ----------
    model_or_conv : nn.Module
        A ``Conv1d``/``Conv2d``/``Conv3d`` (a new layer is returned, the old one is
        left unchanged) or a model (its first convolution, in ``named_modules``
        order, is replaced in place and the model is returned).
    in_channels : int
        Input channels of the new layer.
    reduce : {"sum", "mean"}

    Examples
    --------
    >>> import torch, torchvision, transfer_utils as tu
    >>> net = torchvision.models.resnet18(weights=None)
    >>> grey = torch.rand(2, 1, 32, 32)
    >>> before = net.eval()(grey.expand(-1, 3, -1, -1))
    >>> after = tu.adapt_first_conv(net, 1)(grey)
    >>> net.conv1.weight.shape[1], torch.allclose(before, after, atol=1e-5)
    (1, True)
    """
    if isinstance(in_channels, bool) or not isinstance(in_channels, int) or in_channels < 1:
        raise ValueError(f"in_channels must be a positive int, got {in_channels!r}")
    if reduce not in ("sum", "mean"):
        raise ValueError(f"reduce must be 'sum' or 'mean', got {reduce!r}")
    if not isinstance(model_or_conv, nn.Module):
        raise TypeError(f"expected a conv layer or a model, got {type(model_or_conv).__name__}")
    if isinstance(model_or_conv, _CONV_TYPES):
        return _adapted_conv(model_or_conv, in_channels, reduce)
    parent, attr, conv = _first_conv(model_or_conv)
    new = _adapted_conv(conv, in_channels, reduce)
    setattr(parent, attr, new)  # also right for nn.Sequential children named "0", "1", ...
    config = getattr(model_or_conv, "config", None)
    if isinstance(config, dict) and "in_channels" in config:
        config["in_channels"] = in_channels
    return model_or_conv


# --------------------------------------------------------------------------- torchvision ResNet-18


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
    if cached.exists():
        return torch.load(cached, map_location="cpu", weights_only=True)
    host = urlparse(url).hostname or ""
    how_to = (
        f"use weights=None for a randomly initialised stand-in (its numbers then say nothing "
        f"about ImageNet pretraining), or download {url} on a machine with network access and "
        f"copy it to {cached}"
    )
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
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(max(30.0, timeout))  # a stalled transfer errors out, never hangs
    try:
        return enum.get_state_dict(progress=False, check_hash=True)
    except OSError as err:  # URLError, timeouts and connection resets are OSErrors
        raise WeightsUnavailableError(
            f"downloading the ImageNet weights of ResNet-18 failed ({err}); {how_to}"
        ) from err
    finally:
        socket.setdefaulttimeout(old)


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
        torchvision's ResNet-18 (3 input channels, any ``fc``), loaded safely with
        :func:`transfer_utils.load_checkpoint`.
    timeout : float
        Seconds to wait for the download server before giving up.
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

    if not isinstance(timeout, (int, float)) or not timeout > 0:
        raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
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
        try:
            model.load_state_dict(state)
        except RuntimeError as err:
            raise ValueError(
                f"{Path(weights).name} does not hold torchvision ResNet-18 weights with 3 input "
                f"channels ({str(err).splitlines()[0]}); save the source model before adapting "
                "its first conv"
            ) from None
    else:
        state = _imagenet_state(weights, float(timeout))  # fails fast, before building anything
        model = torchvision.models.resnet18(weights=None)
        model.load_state_dict(state)
    if in_channels != 3:
        adapt_first_conv(model, in_channels, reduce=reduce)
    return replace_head(model, num_classes)


# --------------------------------------------------------------------------- state-dict keys


def rename_keys(state_dict: Mapping[str, torch.Tensor], mapping: Mapping[str, str]) -> dict:
    """New state dict with key prefixes renamed, e.g. ``{"module.": ""}`` after DataParallel.

    Each old prefix in ``mapping`` must match at least one key; a prefix that
    matches nothing raises, so a typo cannot silently skip a layer (the bug that
    ``strict=False`` hides in chapter 6). The longest matching prefix wins.

    Examples
    --------
    >>> import torch, transfer_utils as tu
    >>> sd = {"module.fc.weight": torch.zeros(1), "module.fc.bias": torch.zeros(1)}
    >>> sorted(tu.rename_keys(sd, {"module.": ""}))
    ['fc.bias', 'fc.weight']
    """
    if not isinstance(mapping, Mapping) or not mapping:
        raise ValueError("mapping must be a non-empty {old_prefix: new_prefix} dict")
    used = dict.fromkeys(mapping, 0)
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        hits = [old for old in mapping if key.startswith(old)]
        new_key = key
        if hits:
            old = max(hits, key=len)
            used[old] += 1
            new_key = mapping[old] + key[len(old):]
        if new_key in out:
            raise ValueError(f"renaming gives the key {new_key!r} twice; check the mapping")
        out[new_key] = value
    unused = [old for old, n in used.items() if n == 0]
    if unused:
        raise ValueError(
            f"prefixes {unused} match no key; keys start like {list(state_dict)[:4]}"
        )
    return out


# --------------------------------------------------------------------------- decision guide

#: The answers :func:`recommend_method` can give (chapter 8's decision guide).
GUIDE_METHODS = ("feature extraction", "fine-tune", "partial fine-tune", "scratch")

_SIMILARITY_WORDS = {"low": 0.2, "medium": 0.5, "high": 0.8}


def _similarity(value) -> float:
    if isinstance(value, str):
        if value not in _SIMILARITY_WORDS:
            raise ValueError(f"similarity must be a number in [0, 1] or one of "
                             f"{sorted(_SIMILARITY_WORDS)}, got {value!r}")
        return _SIMILARITY_WORDS[value]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise ValueError(f"similarity must be a number in [0, 1] or 'low'/'medium'/'high', "
                         f"got {value!r}")
    return float(value)


def recommend_method(
    labels_per_class: float, similarity, *, compute: str = "normal", small_model: bool = False
) -> str:
    """Chapter 8's rule of thumb: which transfer method to try first.

    It encodes the decision guide drawn by :func:`plot_decision_guide`; the
    boundaries are rules of thumb (chapters 3, 4 and 7 measure the effects behind
    them), not measured thresholds. Run a small pilot on your own data before
    committing.

    * Related source (``similarity >= 0.5``): with fewer than 5 labels per class,
      train a head on frozen features (feature extraction, chapter 4); with more,
      fine-tune (chapter 3). Tight training compute: feature extraction (features
      can be cached once).
    * Distant source (``similarity < 0.5``): with fewer than 1,000 labels per class,
      transfer only the early, general layers and retrain the rest (partial
      fine-tuning; chapter 7 shows frozen features from a distant source hurting);
      with 1,000 or more, training from scratch is as good and simpler.
    * ``small_model=True`` (the deployed model must be small or fast): the answer
      gets ``", then distil"`` (chapter 5).

    Parameters
    ----------
    labels_per_class : float
        Labelled target examples per class (>= 1).
    similarity : float in [0, 1] or {"low", "medium", "high"}
        How close the source data and task are to the target (0: unrelated).
    compute : {"normal", "low"}
        Training compute available.
    small_model : bool

    Returns
    -------
    str
        One of :data:`GUIDE_METHODS`, possibly followed by ``", then distil"``.

    Examples
    --------
    >>> import transfer_utils as tu
    >>> tu.recommend_method(2, "high")
    'feature extraction'
    >>> tu.recommend_method(50, 0.9, small_model=True)
    'fine-tune, then distil'
    """
    if isinstance(labels_per_class, bool) or not isinstance(labels_per_class, (int, float)) \
            or not labels_per_class >= 1:
        raise ValueError(f"labels_per_class must be a number >= 1, got {labels_per_class!r}")
    if compute not in ("normal", "low"):
        raise ValueError(f"compute must be 'normal' or 'low', got {compute!r}")
    s = _similarity(similarity)
    n = float(labels_per_class)
    if s >= 0.5:
        method = "feature extraction" if n < 5 or compute == "low" else "fine-tune"
    else:
        method = "partial fine-tune" if n < 1000 else "scratch"
    return f"{method}, then distil" if small_model else method


_GUIDE_COLOURS = {"feature extraction": "#9ecae1", "fine-tune": "#a1d99b",
                  "partial fine-tune": "#fdd0a2", "scratch": "#d9d9d9"}


def plot_decision_guide(points: Mapping[str, tuple[float, float]] | None = None, *,
                        compute: str = "normal", ax=None):
    """Draw :func:`recommend_method` as a map: labels per class (log) against domain similarity.

    Parameters
    ----------
    points : mapping of str to (labels_per_class, similarity), optional
        Measured settings to mark on the map, labelled with their key
        (chapter 8 marks the winners of its own experiment).
    compute : {"normal", "low"}
    ax : matplotlib Axes, optional

    Returns
    -------
    matplotlib.figure.Figure
    """
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.patches import Patch

    if compute not in ("normal", "low"):
        raise ValueError(f"compute must be 'normal' or 'low', got {compute!r}")
    fig, ax = (ax.figure, ax) if ax is not None else plt.subplots(figsize=(7.6, 4.0))
    ns = np.logspace(0, 4, 241)
    ss = np.linspace(0, 1, 201)
    codes = np.array([[GUIDE_METHODS.index(recommend_method(n, s, compute=compute))
                       for n in ns] for s in ss])
    colours = [_GUIDE_COLOURS[m] for m in GUIDE_METHODS]
    from matplotlib.colors import BoundaryNorm, ListedColormap

    ax.pcolormesh(ns, ss, codes, cmap=ListedColormap(colours),
                  norm=BoundaryNorm(np.arange(len(GUIDE_METHODS) + 1) - 0.5, len(GUIDE_METHODS)),
                  shading="nearest", rasterized=True)
    for i, (label, (n, s)) in enumerate((points or {}).items()):
        ax.plot(n, s, "k*", ms=11, clip_on=False, zorder=3)
        ax.annotate(label, (n, s), textcoords="offset points", xytext=(4, 8 if i % 2 else -14),
                    fontsize=8, zorder=3)
    ax.set_xscale("log")
    ax.set(xlabel="labelled target examples per class",
           ylabel="source-target similarity (judged)", xlim=(1, 1e4), ylim=(0, 1),
           title=f"Rule of thumb ({compute} training compute)")
    ax.set_yticks([0.0, 0.25, 0.5, 0.75, 1.0], ["unrelated", "distant", "", "related", "same"])
    present = sorted(set(codes.ravel().tolist()))
    # beside the map, not on it: the boundaries are the point of the figure
    ax.legend(handles=[Patch(color=colours[i], label=GUIDE_METHODS[i]) for i in present],
              loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0, fontsize=8,
              frameon=False)
    fig.tight_layout()
    return fig


@dataclass(frozen=True)
class Scenario:
    """A made-up project for chapter 8's decision-guide exercise."""

    name: str
    description: str
    labels_per_class: float
    similarity: float
    compute: str = "normal"
    small_model: bool = False

    def recommend(self) -> str:
        """What :func:`recommend_method` says for this scenario."""
        return recommend_method(self.labels_per_class, self.similarity, compute=self.compute,
                                small_model=self.small_model)


GUIDE_SCENARIOS = (
    Scenario("pets", "Classify 37 pet breeds from photos, 3 labelled photos per breed, "
             "starting from an ImageNet model.", 3, 0.9),
    Scenario("xray", "Grade chest X-rays (5 grades), 400 labelled images per grade, starting "
             "from an ImageNet model (natural photos: a distant domain).", 400, 0.3),
    Scenario("factory", "Sort product photos into 8 defect types, 200 labels per type, an "
             "ImageNet model, a GPU for a day.", 200, 0.7),
    Scenario("phone", "The same defect classifier must then run on a phone at 30 frames per "
             "second.", 200, 0.7, small_model=True),
    Scenario("radar", "Classify 4 radar signal types, 20,000 labelled signals per type, the only "
             "pretrained model was trained on speech.", 20000, 0.1),
    Scenario("laptop", "Classify 10 kinds of handwritten symbols, 50 labels each, a model "
             "pretrained on handwritten digits, and only a laptop CPU for an hour.", 50, 0.8,
             compute="low"),
)


def _method_of(answer: str) -> str:
    return re.sub(r"\s+", " ", str(answer).strip().lower().replace("finetune", "fine-tune")
                  .replace("fine tune", "fine-tune"))


def check_decision_guide(answers: Mapping[str, str]) -> None:
    """Exercise checker (chapter 8): your method for each of :data:`GUIDE_SCENARIOS`.

    ``answers`` maps each scenario name to a method: one of :data:`GUIDE_METHODS`,
    followed by ``", then distil"`` when the deployed model must be small. Prints a
    pass message, or raises ``AssertionError`` explaining the first disagreement
    with the rule of thumb.

    Examples
    --------
    >>> import transfer_utils as tu
    >>> tu.check_decision_guide({s.name: s.recommend() for s in tu.GUIDE_SCENARIOS})
    Correct: all 6 scenarios match the decision guide.
    """
    if not isinstance(answers, Mapping):
        raise TypeError(f"answers must be a dict {{scenario name: method}}, got "
                        f"{type(answers).__name__}")
    names = [s.name for s in GUIDE_SCENARIOS]
    missing = [n for n in names if n not in answers]
    if missing:
        raise AssertionError(f"no answer for scenarios {missing}; answer all of {names}")
    unknown = sorted(set(answers) - set(names))
    if unknown:
        raise AssertionError(f"unknown scenario names {unknown}; the scenarios are {names}")
    for s in GUIDE_SCENARIOS:
        want, got = s.recommend(), _method_of(answers[s.name])
        base = got.split(",")[0].strip()
        if base not in GUIDE_METHODS:
            raise AssertionError(f"{s.name}: {answers[s.name]!r} is not one of {GUIDE_METHODS} "
                                 "(optionally followed by ', then distil')")
        if got == want:
            continue
        want_base = want.split(",")[0]
        if base == want_base:
            hint = ("the deployed model must be small and fast: train the best model you can, "
                    "then distil it into a small student (chapter 5)" if s.small_model else
                    "nothing asks for a smaller deployed model here, so no distillation step")
        elif s.similarity >= 0.5 and s.compute == "low":
            hint = ("training compute is tight: extract the features once, cache them and "
                    "train only a head (chapter 4)")
        elif s.similarity >= 0.5:
            hint = (f"a related source and {s.labels_per_class:g} labels per class: "
                    + ("too few labels to move millions of weights safely; train a head on "
                       "frozen features (chapter 4)" if s.labels_per_class < 5 else
                       "enough labels to adapt the whole network; fine-tune (chapter 3)"))
        else:
            hint = ("a distant source: its late layers are specific to the source task "
                    + ("and 1,000+ labels per class are enough to train from scratch "
                       "(chapter 7)" if s.labels_per_class >= 1000 else
                       "but its early layers are general: keep those and retrain the rest "
                       "(partial fine-tuning; chapter 7 measures frozen distant features hurting)"))
        raise AssertionError(f"{s.name}: you chose {answers[s.name]!r}, the guide says "
                             f"{want!r}. Hint: {hint}")
    print(f"Correct: all {len(GUIDE_SCENARIOS)} scenarios match the decision guide.")


# --------------------------------------------------------------------------- exercise checkers


def _conv_mistakes(conv: nn.Conv2d, x: torch.Tensor, in_channels: int) -> dict[str, torch.Tensor]:
    """Outputs of the usual wrong first-conv adaptations, for the checker's hints."""
    import torch.nn.functional as F

    w, b = conv.weight.detach(), conv.bias
    kw = dict(stride=conv.stride, padding=conv.padding, dilation=conv.dilation)

    def out(weight, bias=b, **over):
        return F.conv2d(x, weight.expand(-1, in_channels, -1, -1), bias, **{**kw, **over})

    return {  # checked in this order: with one old channel, the mean equals the sum
        "every new channel got the full sum, so the response is in_channels times too large; "
        "divide the summed filter by the new channel count": out(w.sum(1, keepdim=True)),
        "you averaged the filters: the response is old_channels/new_channels times too small; "
        "sum them (and divide by the new channel count)": out(w.mean(1, keepdim=True)),
        "you kept only the first input channel's filter; combine all of them":
            out(w[:, :1]),
        "the bias is missing; copy it from the old layer": out(
            w.sum(1, keepdim=True) / in_channels, bias=None),
        "stride, padding or dilation differ from the old layer; copy them": out(
            w.sum(1, keepdim=True) / in_channels, stride=1, padding=0, dilation=1),
    }


def check_adapt_first_conv(fn: Callable[[nn.Conv2d, int], nn.Conv2d], *, seed: int = 0) -> None:
    """Exercise checker (chapter 6): does ``fn(conv, in_channels)`` adapt a first conv correctly?

    ``fn`` gets a ``Conv2d`` and a channel count and must return a *new* ``Conv2d``
    with that many input channels whose response to an image with equal channels
    (e.g. a grey image copied into RGB) is the old layer's response, both for
    3 -> 1 and 1 -> 3 channels, with stride, padding and bias kept and the old
    layer left unchanged. Prints a pass message or raises ``AssertionError`` with
    a hint.

    Examples
    --------
    >>> import transfer_utils as tu
    >>> tu.check_adapt_first_conv(tu.adapt_first_conv)
    Correct: 4 layers adapted (3->1 and 1->3 channels), responses to grey images unchanged.
    """
    if not callable(fn):
        raise TypeError(f"check_adapt_first_conv needs a function, got {type(fn).__name__}")
    g = torch.Generator().manual_seed(seed)
    cases = [(3, 1, dict(kernel_size=7, stride=2, padding=3, bias=False)),
             (3, 1, dict(kernel_size=3, stride=1, padding=1, bias=True)),
             (1, 3, dict(kernel_size=3, stride=1, padding=1, bias=True)),
             (3, 2, dict(kernel_size=5, stride=2, padding=0, bias=True))]
    for old_c, new_c, kw in cases:
        conv = nn.Conv2d(old_c, 8, **kw)
        with torch.no_grad():
            conv.weight.copy_(torch.randn(conv.weight.shape, generator=g))
            if conv.bias is not None:
                conv.bias.copy_(torch.randn(conv.bias.shape, generator=g))
        original = copy.deepcopy(conv)
        grey = torch.rand(2, 1, 16, 16, generator=g)
        what = f"a Conv2d({old_c}, 8, {kw}) adapted to {new_c} channels"
        try:
            new = fn(conv, new_c)
        except Exception as err:
            raise AssertionError(f"your function raised {type(err).__name__}: {err} (on {what})"
                                 ) from err
        if not isinstance(new, nn.Conv2d):
            raise AssertionError(f"return an nn.Conv2d, got {type(new).__name__} ({what})")
        if not (torch.equal(conv.weight, original.weight)
                and (conv.bias is None or torch.equal(conv.bias, original.bias))):
            raise AssertionError(f"the old layer was changed in place ({what}); build a new "
                                 "nn.Conv2d and copy the combined weights into it")
        if new.in_channels != new_c or new.weight.shape[1] != new_c:
            raise AssertionError(f"the new layer has {new.weight.shape[1]} input channels, "
                                 f"expected {new_c} ({what})")
        if new.out_channels != 8:
            raise AssertionError(f"keep the number of output channels (8), got "
                                 f"{new.out_channels} ({what})")
        with torch.no_grad():
            want = conv(grey.expand(-1, old_c, -1, -1))
            try:
                got = new(grey.expand(-1, new_c, -1, -1))
            except Exception as err:
                raise AssertionError(f"the new layer fails on a [2, {new_c}, 16, 16] input: "
                                     f"{err} ({what})") from err
            if got.shape == want.shape and torch.allclose(got, want, atol=1e-4, rtol=1e-4):
                continue
            hint = "a grey image copied into every channel must give the old response"
            for msg, wrong in _conv_mistakes(conv, grey.expand(-1, new_c, -1, -1), new_c).items():
                if wrong.shape == got.shape and torch.allclose(got, wrong, atol=1e-4, rtol=1e-4):
                    hint = msg
                    break
            else:
                if got.shape != want.shape:
                    hint = (f"the output has shape {list(got.shape)} instead of "
                            f"{list(want.shape)}: copy stride, padding and dilation")
        raise AssertionError(f"wrong response for {what}. Hint: {hint}")
    print(f"Correct: {len(cases)} layers adapted (3->1 and 1->3 channels), responses to grey "
          "images unchanged.")


class _MarkerPayload:
    """Harmless stand-in for malicious pickled code: unpickling it writes a marker file."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def __reduce__(self):
        return (Path.write_text, (self.path, "written by code inside a checkpoint\n"))


def check_safe_loader(fn: Callable[[str, nn.Module], object]) -> None:
    """Exercise checker (chapter 6): does ``fn(path, model)`` load weights without running code?

    Gives ``fn`` three files in a temporary folder: a plain ``.pt`` state dict, a
    ``.safetensors`` file, and a ``.pt`` state dict that also holds a harmless
    payload which writes a marker file when unpickled. ``fn`` must load the first
    two into ``model`` and *raise* on the third without the payload running.
    Prints a pass message or raises ``AssertionError`` with a hint.

    Examples
    --------
    >>> import transfer_utils as tu
    >>> tu.check_safe_loader(lambda path, model: tu.load_checkpoint(path, model))
    Correct: both clean checkpoints loaded, and the booby-trapped one was refused before its code ran.
    """
    from safetensors.torch import save_file

    if not callable(fn):
        raise TypeError(f"check_safe_loader needs a function, got {type(fn).__name__}")
    torch.manual_seed(0)
    source = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    state = {k: v.clone() for k, v in source.state_dict().items()}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        marker = tmp / "payload_ran.txt"
        torch.save(state, tmp / "clean.pt")
        save_file(state, str(tmp / "clean.safetensors"))
        torch.save({**state, "extra": _MarkerPayload(marker)}, tmp / "trapped.pt")
        for name in ("clean.pt", "clean.safetensors"):
            model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
            try:
                fn(str(tmp / name), model)
            except Exception as err:
                raise AssertionError(
                    f"your loader raised {type(err).__name__} on a clean file {name}: {err}. "
                    "Hint: .safetensors files need safetensors (or tu.load_checkpoint), .pt files "
                    "torch.load(path, weights_only=True)"
                ) from err
            same = all(torch.equal(model.state_dict()[k], state[k]) for k in state)
            if not same:
                raise AssertionError(f"after fn({name!r}, model) the model does not hold the "
                                     "file's weights; call model.load_state_dict(...) on what "
                                     "you loaded")
        model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
        raised = None
        try:
            fn(str(tmp / "trapped.pt"), model)
        except Exception as err:
            raised = err
        if marker.exists():
            raise AssertionError(
                "the payload ran: loading trapped.pt executed code hidden in the file (here it "
                "only wrote a marker file; an attacker's could do anything). Hint: never "
                "torch.load(..., weights_only=False) a file you do not trust; use "
                "torch.load(path, weights_only=True) or tu.load_checkpoint"
            )
        if raised is None:
            raise AssertionError(
                "trapped.pt was loaded without an error: a file holding more than tensors must be "
                "refused loudly (raise), not half-loaded or skipped in silence"
            )
    print("Correct: both clean checkpoints loaded, and the booby-trapped one was refused before "
          "its code ran.")

