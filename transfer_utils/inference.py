"""Inference: rebuild an image classifier, its preprocessing and class names from a checkpoint.

Core layer (chapter 6, "Your own images"). A checkpoint saved with
``tu.save_checkpoint(path, model, architecture=tu.architecture_of(model),
classes=[...], preprocessing={"size": ..., "mean": [...], "std": [...]})``
describes everything needed to use it: :func:`load_predictor` turns it back into
a :class:`Predictor` that maps an image file to a class name.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
from torch import nn

from .checkpoint import load_checkpoint
from .models import MLP, SmallCNN, get_head, resnet18_for
from .runtime import get_device

__all__ = ["IMAGE_EXTENSIONS", "architecture_of", "build_architecture", "image_transform",
           "Predictor", "load_predictor"]

#: File endings :meth:`Predictor.predict_folder` reads (those of torchvision's ImageFolder).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")

_SAVE_HINT = (
    "save it with tu.save_checkpoint(path, model, architecture=tu.architecture_of(model), "
    "classes=train_set.classes, preprocessing={'size': SIZE, 'mean': MEAN, 'std': STD})"
)


def _first_conv(model: nn.Module) -> nn.Module | None:
    return next((m for m in model.modules() if isinstance(m, (nn.Conv1d, nn.Conv2d))), None)


def architecture_of(model: nn.Module) -> dict:
    """A JSON description of ``model``'s architecture, from which :func:`build_architecture` rebuilds it.

    Knows the book's :class:`~transfer_utils.SmallCNN` and :class:`~transfer_utils.MLP`
    and torchvision's ResNet-18 (as made by :func:`~transfer_utils.resnet18_for`).
    Store it in a checkpoint's metadata (``architecture=``) so that the file says
    which network its tensors belong to (chapter 6).

    Examples
    --------
    >>> import transfer_utils as tu
    >>> tu.architecture_of(tu.SmallCNN(num_classes=4, in_channels=3, widths=[8, 16]))["name"]
    'SmallCNN'
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"architecture_of describes an nn.Module, got {type(model).__name__}")
    if isinstance(model, (SmallCNN, MLP)):
        kwargs = {**model.config, "num_classes": get_head(model)[2].out_features}
        conv = _first_conv(model.body)
        if isinstance(model, SmallCNN) and conv is not None:
            kwargs["in_channels"] = conv.in_channels
        return {"name": type(model).__name__, "kwargs": kwargs}
    import torchvision

    if (isinstance(model, torchvision.models.ResNet)
            and [len(getattr(model, f"layer{i}")) for i in range(1, 5)] == [2, 2, 2, 2]
            and isinstance(model.layer1[0], torchvision.models.resnet.BasicBlock)):
        return {"name": "resnet18", "kwargs": {"num_classes": model.fc.out_features,
                                               "in_channels": model.conv1.in_channels}}
    raise TypeError(
        f"architecture_of knows SmallCNN, MLP and ResNet-18, not {type(model).__name__}; "
        "save your own description in the metadata and pass the rebuilt model to "
        "tu.load_predictor(path, model=...)"
    )


def build_architecture(spec: dict) -> nn.Module:
    """A freshly initialised model from an :func:`architecture_of` description.

    Examples
    --------
    >>> import transfer_utils as tu
    >>> net = tu.build_architecture({"name": "MLP", "kwargs": {"in_features": 4}})
    >>> type(net).__name__
    'MLP'
    """
    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
        raise ValueError(f"an architecture is a dict {{'name': ..., 'kwargs': {{...}}}} as "
                         f"tu.architecture_of returns it, got {spec!r}")
    kwargs = dict(spec.get("kwargs") or {})
    name = spec["name"]
    if name == "SmallCNN":
        return SmallCNN(**kwargs)
    if name == "MLP":
        return MLP(**kwargs)
    if name == "resnet18":
        return resnet18_for(kwargs.pop("num_classes"), weights=None, **kwargs)
    raise ValueError(f"unknown architecture {name!r}; known: SmallCNN, MLP, resnet18 "
                     "(for another, pass the model to tu.load_predictor(path, model=...))")


def _size_pair(size, what: str) -> tuple[int, int]:
    pair = [size, size] if isinstance(size, int) and not isinstance(size, bool) else size
    if (not isinstance(pair, (list, tuple)) or len(pair) != 2
            or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in pair)):
        raise ValueError(f"preprocessing {what} must be a positive int or [height, width], "
                         f"got {size!r}")
    return int(pair[0]), int(pair[1])


class _ConvertMode:
    """PIL image -> the same image in ``mode`` ("RGB" or "L"); picklable, unlike a lambda."""

    def __init__(self, mode: str):
        self.mode = mode

    def __call__(self, img):
        return img.convert(self.mode)

    def __repr__(self) -> str:
        return f"ConvertMode({self.mode!r})"


def image_transform(size, mean: Sequence[float], std: Sequence[float], *,
                    resize: int | None = None):
    """The evaluation transform a checkpoint's ``preprocessing`` metadata describes.

    ``PIL image -> Resize -> ToTensor -> Normalize(mean, std)``, converting the
    image to RGB (3 values in ``mean``) or greyscale (1 value) first. Without
    ``resize`` the image is resized to ``size`` (an int for a square, or
    ``[height, width]``); with ``resize`` its shorter side is resized to ``resize``
    and the centre ``size`` is cropped out (torchvision's ImageNet weights use
    ``resize=256, size=224``). Chapter 6 writes the same transform by hand.

    Examples
    --------
    >>> import transfer_utils as tu
    >>> from PIL import Image
    >>> tf = tu.image_transform(32, [0.5, 0.5, 0.5], [0.25, 0.25, 0.25])
    >>> tuple(tf(Image.new("L", (50, 70))).shape)
    (3, 32, 32)
    """
    from torchvision import transforms as T

    h, w = _size_pair(size, "size")
    mean, std = [float(m) for m in mean], [float(s) for s in std]
    if len(mean) not in (1, 3) or len(std) != len(mean) or min(std) <= 0:
        raise ValueError(f"preprocessing needs one mean and one std > 0 per channel (1 or 3), "
                         f"got mean={mean}, std={std}")
    mode = "RGB" if len(mean) == 3 else "L"
    steps = [_ConvertMode(mode)]
    if resize is None:
        steps.append(T.Resize((h, w)))
    else:
        steps += [T.Resize(_size_pair(resize, "resize")[0]), T.CenterCrop((h, w))]
    return T.Compose([*steps, T.ToTensor(), T.Normalize(mean, std)])


class Predictor:
    """A trained image classifier with its preprocessing and class names: image file -> class name.

    Made by :func:`load_predictor` from a checkpoint (chapter 6). Call it on an
    image (a path or a PIL image) to get the class name; :meth:`probabilities`
    gives every class's probability, :meth:`predict_folder` labels every image
    in a folder.

    Attributes
    ----------
    model : nn.Module
        In eval mode, on ``device``.
    transform : callable
        PIL image -> normalised tensor ``[C, H, W]``.
    classes : list of str
    meta : dict
        The checkpoint's metadata.
    """

    def __init__(self, model: nn.Module, transform, classes: Sequence[str], meta: dict | None = None,
                 *, device: str | torch.device | None = None):
        self.device = get_device(device)
        self.model = model.to(self.device).eval()
        self.transform = transform
        self.classes = [str(c) for c in classes]
        self.meta = dict(meta or {})

    def __repr__(self) -> str:
        return (f"Predictor({type(self.model).__name__}, {len(self.classes)} classes "
                f"{self.classes[:6]}{'...' if len(self.classes) > 6 else ''}, "
                f"device={self.device.type})")

    def _open(self, image):
        from PIL import Image

        if isinstance(image, Image.Image):
            return image
        if isinstance(image, (str, os.PathLike)):
            path = Path(image)
            if not path.is_file():
                raise FileNotFoundError(f"no image file at {path}")
            with Image.open(path) as img:
                img.load()
                return img.copy()
        raise TypeError(f"expected an image file path or a PIL image, got {type(image).__name__}")

    @torch.no_grad()
    def _logits(self, images: Iterable) -> torch.Tensor:
        x = torch.stack([self.transform(self._open(im)) for im in images]).to(self.device)
        return self.model(x).float().cpu()

    def probabilities(self, image) -> dict[str, float]:
        """``{class name: probability}`` for one image (a path or a PIL image)."""
        p = self._logits([image]).softmax(1)[0]
        return {c: float(v) for c, v in zip(self.classes, p, strict=True)}

    def __call__(self, image) -> str:
        """The predicted class name of one image (a path or a PIL image)."""
        return self.classes[int(self._logits([image]).argmax(1))]

    def predict_folder(self, folder: str | os.PathLike, *, batch_size: int = 64) -> list[dict]:
        """Predict every image under ``folder`` (recursively), in batches.

        Returns
        -------
        list of dict
            One ``{"path", "prediction", "confidence"}`` per image file, sorted by path.
        """
        folder = Path(folder)
        if not folder.is_dir():
            raise NotADirectoryError(f"{folder} is not a folder; for one image call predictor(path)")
        paths = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
        if not paths:
            raise FileNotFoundError(f"no image files ({', '.join(IMAGE_EXTENSIONS)}) under {folder}")
        rows = []
        for lo in range(0, len(paths), max(1, int(batch_size))):
            chunk = paths[lo : lo + batch_size]
            prob = self._logits(chunk).softmax(1)
            conf, pred = prob.max(1)
            rows += [{"path": str(p), "prediction": self.classes[int(c)], "confidence": float(q)}
                     for p, c, q in zip(chunk, pred, conf, strict=True)]
        return rows


def load_predictor(path: str | os.PathLike, model: nn.Module | None = None, *,
                   device: str | torch.device | None = None) -> Predictor:
    """Rebuild model, preprocessing and class names from a checkpoint: a :class:`Predictor`.

    The checkpoint's metadata must hold ``preprocessing`` (``size``, ``mean``,
    ``std``, optionally ``resize``; see :func:`image_transform`) and ``classes``,
    and, unless ``model`` is given, ``architecture`` (from :func:`architecture_of`).
    A checkpoint without them is refused with a message that says how to save one
    that has them: guessing the preprocessing would give wrong predictions silently.

    Parameters
    ----------
    path : path-like
        A ``.safetensors`` checkpoint from :func:`~transfer_utils.save_checkpoint`.
    model : nn.Module, optional
        The network to load the weights into, for architectures
        :func:`build_architecture` does not know.
    device : str or torch.device, optional

    Examples
    --------
    >>> import tempfile, os, transfer_utils as tu
    >>> net = tu.SmallCNN(num_classes=2, in_channels=3, widths=[4])
    >>> path = tu.save_checkpoint(os.path.join(tempfile.mkdtemp(), "m.safetensors"), net,
    ...     architecture=tu.architecture_of(net), classes=["cat", "dog"],
    ...     preprocessing={"size": 16, "mean": [0.5] * 3, "std": [0.25] * 3})
    >>> predictor = tu.load_predictor(path, device="cpu")
    >>> predictor.classes
    ['cat', 'dog']
    """
    meta = load_checkpoint(path).meta
    name = Path(path).name
    missing = [k for k in ("preprocessing", "classes") if k not in meta]
    if model is None and "architecture" not in meta:
        missing.append("architecture")
    if missing:
        raise ValueError(
            f"{name} has no {' or '.join(missing)} in its metadata (it holds "
            f"{sorted(meta) or 'none'}), so the model, its input preprocessing (size, mean, "
            f"std) and its class names cannot be rebuilt from it; {_SAVE_HINT}"
            + ("; or pass the model: tu.load_predictor(path, model=net)"
               if "architecture" in missing else "")
        )
    pre = meta["preprocessing"]
    if not isinstance(pre, dict) or not {"size", "mean", "std"} <= set(pre):
        raise ValueError(f"the preprocessing metadata of {name} must give size, mean and std, "
                         f"got {pre!r}; {_SAVE_HINT}")
    transform = image_transform(pre["size"], pre["mean"], pre["std"], resize=pre.get("resize"))
    if model is None:
        model = build_architecture(meta["architecture"])
    load_checkpoint(path, model)
    _, _, head = get_head(model)
    classes = list(meta["classes"])
    if head.out_features != len(classes):
        raise ValueError(f"{name} names {len(classes)} classes but the model has "
                         f"{head.out_features} outputs; save classes=train_set.classes")
    return Predictor(model, transform, classes, meta, device=device)
