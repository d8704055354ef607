"""Feature extraction from a frozen network, cheap probes on the features, and feature caches.

Chapter 4 explains every function here: extract features once (in eval mode, without
gradients), cache them, and train linear, nearest-class-mean, k-NN or small MLP heads
on the cache in a fraction of a second; probe every layer of a network; look at the
features in 2-D; and check a reader's own ``extract_features``.
"""

from __future__ import annotations

import copy
import hashlib
import inspect
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .analysis import Summary, summarize
from .checkpoint import load_checkpoint, save_checkpoint
from .data import ArrayDataset, few_shot, make_loader
from .runtime import get_device, seed_everything

__all__ = [
    "extract_features",
    "extract_layers",
    "linear_probe",
    "knn_probe",
    "ncm_probe",
    "NearestClassMean",
    "mlp_probe",
    "train_head",
    "FeatureCache",
    "cache_features",
    "probe_curve",
    "layerwise_probe",
    "project_2d",
    "plot_layerwise",
    "plot_projection",
    "check_extract_features",
]



def _find_module(model: nn.Module, layer: str) -> nn.Module:
    modules = dict(model.named_modules())
    if layer not in modules:
        names = [n for n in modules if n]
        raise ValueError(
            f"{type(model).__name__} has no submodule named {layer!r}; "
            f"choose one of {names[:20]}{' ...' if len(names) > 20 else ''}"
        )
    return modules[layer]


@torch.no_grad()
def extract_features(
    model: nn.Module,
    loader: Iterable[tuple[torch.Tensor, torch.Tensor]],
    *,
    layer: str | None = None,
    device: torch.device | str | None = None,
    flatten: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run ``model`` over ``loader`` and collect features and labels, on the CPU.

    The model runs in eval mode (so dropout and BatchNorm behave as at test
    time) under ``torch.no_grad()``; its previous mode is restored afterwards,
    even on error. With ``layer`` the features are the output of that named
    submodule, captured with a forward hook; otherwise the model's output.

    Parameters
    ----------
    model : nn.Module
        For example ``net.body`` for the penultimate features.
    loader : iterable of (x, y)
    layer : str, optional
        Dotted submodule name, e.g. ``"body.block2"``.
    device : str or torch.device, optional
    flatten : bool
        Flatten each feature to a vector.

    Returns
    -------
    (X, y) : tuple of tensors
        ``X`` is ``[n, d]`` (float32) and ``y`` is ``[n]``.

    Examples
    --------
    >>> import transfer_utils as tu
    >>> X, y = tu.extract_features(tu.SmallCNN().body, tu.make_loader(tu.load_digits()))
    >>> tuple(X.shape)
    (1797, 64)
    """
    name = OUTPUT if layer is None else layer
    feats, labels = extract_layers(model, loader, [name], device=device, flatten=flatten)
    return feats[name], labels


def _as_numpy(a) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        return a.detach().cpu().numpy()
    return np.asarray(a)


def _check_xy(X_train, y_train, X_test, y_test):
    X_train, y_train = _as_numpy(X_train), _as_numpy(y_train)
    X_test, y_test = _as_numpy(X_test), _as_numpy(y_test)
    for name, X, y in (("train", X_train, y_train), ("test", X_test, y_test)):
        if X.ndim != 2:
            raise ValueError(f"X_{name} must be 2-D [n, d]; got shape {X.shape} (flatten it)")
        if len(X) != len(y):
            raise ValueError(f"X_{name} has {len(X)} rows but y_{name} has {len(y)} labels")
    if X_train.shape[1] != X_test.shape[1]:
        raise ValueError(
            f"train features have {X_train.shape[1]} dims but test features {X_test.shape[1]}"
        )
    return X_train, y_train, X_test, y_test


def linear_probe(X_train, y_train, X_test, y_test, *, C: float = 1.0, standardize: bool = True,
                 max_iter: int = 2000) -> dict:
    """Multinomial logistic regression on fixed features: the linear probe.

    Standardisation statistics come from the training features only (fitting
    them on all data would leak the test set into training; chapter 4 shows it).

    Returns
    -------
    dict
        ``{"accuracy": float, "model": fitted sklearn pipeline}``.

    Examples
    --------
    >>> import torch, transfer_utils as tu
    >>> X = torch.randn(40, 3); y = (X[:, 0] > 0).long()
    >>> tu.linear_probe(X[:30], y[:30], X[30:], y[30:])["accuracy"] > 0.5
    True
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X_train, y_train, X_test, y_test = _check_xy(X_train, y_train, X_test, y_test)
    if len(np.unique(y_train)) < 2:
        raise ValueError("linear_probe needs at least two classes in y_train")
    steps = [StandardScaler()] if standardize else []
    clf = make_pipeline(*steps, LogisticRegression(C=C, max_iter=max_iter))
    clf.fit(X_train, y_train)
    return {"accuracy": float(clf.score(X_test, y_test)), "model": clf}


def knn_probe(X_train, y_train, X_test, y_test, *, k: int = 1, metric: str = "cosine") -> dict:
    """k-nearest-neighbour classification on fixed features.

    Returns
    -------
    dict
        ``{"accuracy": float, "model": fitted KNeighborsClassifier}``.
    """
    from sklearn.neighbors import KNeighborsClassifier

    X_train, y_train, X_test, y_test = _check_xy(X_train, y_train, X_test, y_test)
    if k < 1 or k > len(X_train):
        raise ValueError(f"k must be between 1 and the {len(X_train)} training points, got {k}")
    clf = KNeighborsClassifier(n_neighbors=k, metric=metric).fit(X_train, y_train)
    return {"accuracy": float(clf.score(X_test, y_test)), "model": clf}


# --------------------------------------------------------------------------- several layers

INPUT = "input"  # pseudo-layer name: the model's input itself, flattened
OUTPUT = ""  # pseudo-layer name: what the model returns (named_modules() calls the model "")


@torch.no_grad()
def extract_layers(
    model: nn.Module,
    loader: Iterable[tuple[torch.Tensor, torch.Tensor]],
    layers: Sequence[str],
    *,
    device: torch.device | str | None = None,
    flatten: bool = True,
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Features of several named layers in one pass over ``loader``.

    Like :func:`extract_features` (eval mode, no gradients, the caller's mode
    restored even on error), but with a forward hook on every layer in
    ``layers`` at once, so probing five layers costs one forward pass, not five.
    The name ``"input"`` stands for the input itself (a pixel baseline) and ``""``
    for what the model returns (its logits, for a classifier). If a module runs
    several times in one forward pass, its last output is kept.

    Returns
    -------
    (features, y) : (dict of tensors, tensor)
        ``features[name]`` is ``[n, d_name]`` (float32, on the CPU).

    Examples
    --------
    >>> import transfer_utils as tu
    >>> feats, y = tu.extract_layers(tu.SmallCNN(), tu.make_loader(tu.load_digits()),
    ...                              ["input", "body.block1", "body.block3"])
    >>> {k: tuple(v.shape) for k, v in feats.items()}
    {'input': (1797, 64), 'body.block1': (1797, 256), 'body.block3': (1797, 64)}
    """
    layers = list(layers)
    if not layers:
        raise ValueError("give at least one layer name, e.g. ['body.block1', 'body.block2']")
    if len(set(layers)) != len(layers):
        raise ValueError(f"layers has repeats: {layers}; list each layer once")
    targets = {name: _find_module(model, name) for name in layers if name not in (INPUT, OUTPUT)}
    device = get_device(device)
    captured: dict[str, torch.Tensor] = {}
    handles = []
    feats: dict[str, list[torch.Tensor]] = {name: [] for name in layers}
    labels: list[torch.Tensor] = []
    was_training = model.training
    try:
        for name, module in targets.items():
            handles.append(module.register_forward_hook(
                lambda _m, _i, out, name=name: captured.__setitem__(name, out)))
        model.to(device).eval()
        for x, y in loader:
            captured.clear()
            x = x.to(device)
            result = model(x)
            for name in layers:
                if name == INPUT:
                    out = x
                elif name == OUTPUT:
                    out = result
                elif name in captured:
                    out = captured[name]
                else:
                    raise ValueError(f"layer {name!r} did not run in the forward pass; "
                                     "choose a submodule that the model calls")
                out = out.detach().float()
                feats[name].append((out.flatten(1) if flatten else out).cpu())
            labels.append(y.cpu())
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    if not labels:
        raise ValueError("the loader yielded no batches: nothing to extract")
    return {name: torch.cat(v) for name, v in feats.items()}, torch.cat(labels)


# --------------------------------------------------------------------------- more probes


class NearestClassMean:
    """Nearest-class-mean classifier: each class is the mean of its training features.

    ``metric="cosine"`` compares directions (features and means are L2-normalised,
    after subtracting the mean training feature when ``center=True``, as in
    SimpleShot); ``metric="euclidean"`` compares distances. It has no
    hyper-parameter to tune and needs only one example per class (chapter 4).

    Examples
    --------
    >>> import torch
    >>> X = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]]); y = torch.tensor([0, 0, 1])
    >>> NearestClassMean().fit(X, y).predict(torch.tensor([[0.2, 0.8]])).tolist()
    [1]
    """

    def __init__(self, metric: str = "cosine", center: bool = False):
        if metric not in ("cosine", "euclidean"):
            raise ValueError(f"metric must be 'cosine' or 'euclidean', got {metric!r}")
        self.metric, self.center = metric, center

    def _prep(self, X) -> torch.Tensor:
        X = torch.as_tensor(_as_numpy(X), dtype=torch.float64)
        if self.center:
            X = X - self.offset_
        if self.metric == "cosine":
            X = torch.nn.functional.normalize(X, dim=1)
        return X

    def fit(self, X, y) -> NearestClassMean:
        X = torch.as_tensor(_as_numpy(X), dtype=torch.float64)
        y = torch.as_tensor(_as_numpy(y))
        if X.ndim != 2 or len(X) != len(y):
            raise ValueError(f"fit needs X [n, d] and y [n]; got {tuple(X.shape)} and {tuple(y.shape)}")
        self.classes_ = torch.unique(y)
        self.offset_ = X.mean(0) if self.center else torch.zeros(X.shape[1], dtype=X.dtype)
        Xp = self._prep(X)
        means = torch.stack([Xp[y == c].mean(0) for c in self.classes_])
        self.means_ = torch.nn.functional.normalize(means, dim=1) if self.metric == "cosine" else means
        return self

    def predict(self, X) -> torch.Tensor:
        if not hasattr(self, "means_"):
            raise RuntimeError("call fit(X, y) before predict")
        Xp = self._prep(X)
        if self.metric == "cosine":
            idx = (Xp @ self.means_.T).argmax(1)
        else:
            idx = torch.cdist(Xp, self.means_).argmin(1)
        return self.classes_[idx]

    def score(self, X, y) -> float:
        return float((self.predict(X) == torch.as_tensor(_as_numpy(y))).double().mean())


def ncm_probe(X_train, y_train, X_test, y_test, *, metric: str = "cosine",
              center: bool = False) -> dict:
    """Nearest-class-mean classification on fixed features (see :class:`NearestClassMean`).

    Returns
    -------
    dict
        ``{"accuracy": float, "model": fitted NearestClassMean}``.

    Examples
    --------
    >>> import torch, transfer_utils as tu
    >>> X = torch.randn(60, 4) + 4 * torch.eye(4)[torch.arange(60) % 2]; y = torch.arange(60) % 2
    >>> tu.ncm_probe(X[:40], y[:40], X[40:], y[40:])["accuracy"]
    1.0
    """
    X_train, y_train, X_test, y_test = _check_xy(X_train, y_train, X_test, y_test)
    clf = NearestClassMean(metric, center=center).fit(X_train, y_train)
    return {"accuracy": clf.score(X_test, y_test), "model": clf}


class _Standardize(nn.Module):
    """``(x - mean) / std`` with statistics frozen from the training features."""

    def __init__(self, mean: torch.Tensor, std: torch.Tensor):
        super().__init__()
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def train_head(
    X,
    y,
    *,
    hidden: int | Sequence[int] | None = None,
    num_classes: int | None = None,
    steps: int = 300,
    batch_size: int = 64,
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    standardize: bool = True,
    seed: int = 0,
    device: str | torch.device | None = None,
) -> nn.Module:
    """Train a head (linear, or an MLP with ``hidden`` units) on cached features.

    Adam on cross-entropy for about ``steps`` optimizer steps (whole epochs), so
    10 or 1,000 examples cost about the same. With ``standardize`` the head
    starts with a fixed layer that standardises its input with the *training*
    features' mean and std, so it takes raw features at test time.

    Returns
    -------
    nn.Module
        The trained head, in eval mode: ``head(X)`` gives logits.

    Examples
    --------
    >>> import torch, transfer_utils as tu
    >>> X = torch.randn(200, 5, generator=torch.Generator().manual_seed(0))
    >>> y = (X[:, 0] > 0).long()
    >>> head = tu.train_head(X, y, hidden=16, steps=200, lr=1e-2)
    >>> float((head(X).argmax(1) == y).float().mean()) > 0.9
    True
    """
    from .training import fit

    X = torch.as_tensor(_as_numpy(X), dtype=torch.float32)
    y = torch.as_tensor(_as_numpy(y), dtype=torch.int64)
    if X.ndim != 2 or len(X) != len(y):
        raise ValueError(f"train_head needs X [n, d] and y [n]; got {tuple(X.shape)} and "
                         f"{tuple(y.shape)}")
    if steps < 1:
        raise ValueError(f"steps must be positive, got {steps}")
    num_classes = int(y.max()) + 1 if num_classes is None else num_classes
    seed_everything(seed)
    sizes = [] if hidden is None else [hidden] if isinstance(hidden, int) else list(hidden)
    layers: list[nn.Module] = []
    if standardize:
        std = X.std(0) if len(X) > 1 else torch.ones(X.shape[1])
        layers.append(_Standardize(X.mean(0), std.clamp_min(1e-6)))
    d = X.shape[1]
    for h in sizes:
        layers += [nn.Linear(d, int(h)), nn.ReLU()]
        d = int(h)
    layers.append(nn.Linear(d, num_classes))
    head = nn.Sequential(*layers)
    loader = make_loader(ArrayDataset(X, y), min(batch_size, len(y)), shuffle=True, seed=seed)
    opt = torch.optim.Adam(head.parameters(), lr=lr, weight_decay=weight_decay)
    fit(head, loader, steps=steps, optimizer=opt, device=device, progress=False)
    return head.eval().cpu()


def mlp_probe(X_train, y_train, X_test, y_test, *, hidden: int | Sequence[int] | None = 64,
              steps: int = 300, lr: float = 1e-3, weight_decay: float = 1e-4,
              batch_size: int = 64, seed: int = 0) -> dict:
    """A small MLP head (one hidden layer of ``hidden`` units) trained on fixed features.

    ``hidden=None`` trains a linear head by SGD instead (compare :func:`linear_probe`,
    which solves the same convex problem exactly with L-BFGS). See :func:`train_head`.

    Returns
    -------
    dict
        ``{"accuracy": float, "model": trained head}``.
    """
    X_train, y_train, X_test, y_test = _check_xy(X_train, y_train, X_test, y_test)
    head = train_head(X_train, y_train, hidden=hidden, steps=steps, lr=lr,
                      weight_decay=weight_decay, batch_size=batch_size, seed=seed)
    with torch.no_grad():
        pred = head(torch.as_tensor(X_test, dtype=torch.float32)).argmax(1).numpy()
    return {"accuracy": float((pred == y_test).mean()), "model": head}


# --------------------------------------------------------------------------- the cache

_CACHE_KIND = "feature_cache"


def _fingerprint(model: nn.Module, dataset: ArrayDataset, layer: str | None) -> str:
    """SHA-256 of the model's weights and buffers, the data and the layer name."""
    h = hashlib.sha256()
    h.update(type(model).__name__.encode())
    for name, t in model.state_dict().items():
        h.update(name.encode())
        h.update(str(t.dtype).encode())
        h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    for t in (dataset.x, dataset.y):
        h.update(str(tuple(t.shape)).encode())
        h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    h.update(repr(layer).encode())
    return h.hexdigest()


@dataclass
class FeatureCache:
    """Features of a dataset under a frozen model, computed once and reused for every head.

    Build one with :meth:`build` (or :func:`cache_features`, which also saves
    and reloads it), then train heads on ``cache.X`` or on
    ``tu.make_loader(cache.dataset(), ...)``. :meth:`few_shot` picks exactly the
    examples that ``tu.few_shot`` picks from the images, so probes on a cache
    and fine-tuning on images see the same labelled examples (chapter 4).

    Attributes
    ----------
    X : tensor ``[n, d]``
    y : tensor ``[n]``
    classes : list of str
    layer : str or None
        The layer the features come from (None: the model's output).
    meta : dict
        JSON-serialisable notes, saved with the cache (e.g. the source model).
    seconds : float
        How long the extraction took.
    loaded : bool
        True when the cache was read from a file rather than computed.
    """

    X: torch.Tensor
    y: torch.Tensor
    classes: list[str]
    layer: str | None = None
    meta: dict = field(default_factory=dict)
    seconds: float = 0.0
    loaded: bool = False

    def __post_init__(self):
        if self.X.ndim != 2 or len(self.X) != len(self.y):
            raise ValueError(f"FeatureCache needs X [n, d] and y [n]; got {tuple(self.X.shape)} "
                             f"and {tuple(self.y.shape)}")

    @classmethod
    def build(cls, model: nn.Module, data, *, layer: str | None = None, batch_size: int = 512,
              device: str | torch.device | None = None, **meta) -> FeatureCache:
        """Extract features of ``data`` (an ArrayDataset or a loader) with :func:`extract_features`."""
        loader = make_loader(data, batch_size) if isinstance(data, ArrayDataset) else data
        t0 = time.perf_counter()
        X, y = extract_features(model, loader, layer=layer, device=device)
        seconds = time.perf_counter() - t0
        classes = list(data.classes) if isinstance(data, ArrayDataset) else \
            [str(i) for i in range(int(y.max()) + 1)]
        return cls(X, y, classes, layer, dict(meta), seconds)

    def __len__(self) -> int:
        return len(self.y)

    @property
    def dim(self) -> int:
        """Feature dimension ``d``."""
        return int(self.X.shape[1])

    def __repr__(self) -> str:
        how = "loaded" if self.loaded else f"computed in {self.seconds:.2f} s"
        return f"FeatureCache(n={len(self)}, d={self.dim}, layer={self.layer!r}, {how})"

    def dataset(self) -> ArrayDataset:
        """The features as an :class:`ArrayDataset`, for ``tu.make_loader`` and ``tu.fit``."""
        return ArrayDataset(self.X, self.y, self.classes, name="features")

    def _like(self, ds: ArrayDataset) -> FeatureCache:
        return FeatureCache(ds.x, ds.y, self.classes, self.layer, dict(self.meta), self.seconds,
                            self.loaded)

    def subset(self, indices) -> FeatureCache:
        """A cache of the rows ``indices``."""
        return self._like(self.dataset().subset(indices))

    def few_shot(self, k: int, seed: int = 0) -> FeatureCache:
        """``k`` rows per class: the same examples ``tu.few_shot(images, k, seed)`` picks."""
        return self._like(few_shot(self.dataset(), k, seed=seed))

    def save(self, path: str | os.PathLike) -> Path:
        """Write the cache to a ``.safetensors`` file, atomically (see ``tu.save_checkpoint``)."""
        return save_checkpoint(
            path, {"X": self.X, "y": self.y}, kind=_CACHE_KIND, layer=self.layer,
            classes=list(self.classes), seconds=self.seconds, meta=self.meta,
        )

    @classmethod
    def load(cls, path: str | os.PathLike) -> FeatureCache:
        """Read a cache written by :meth:`save` (no pickled code is ever run)."""
        ckpt = load_checkpoint(path)
        if ckpt.meta.get("kind") != _CACHE_KIND or set(ckpt.state_dict) != {"X", "y"}:
            raise ValueError(f"{Path(path).name} is not a feature cache (it holds "
                             f"{sorted(ckpt.state_dict)[:5]}); write one with FeatureCache.save")
        m = ckpt.meta
        return cls(ckpt.state_dict["X"], ckpt.state_dict["y"], list(m["classes"]), m["layer"],
                   dict(m.get("meta", {})), float(m.get("seconds", 0.0)), loaded=True)


def cache_features(
    model: nn.Module,
    dataset: ArrayDataset,
    *,
    path: str | os.PathLike | None = None,
    layer: str | None = None,
    batch_size: int = 512,
    device: str | torch.device | None = None,
) -> FeatureCache:
    """Load-or-compute: features of ``dataset`` under ``model``, cached in ``path``.

    The file records a SHA-256 fingerprint of the model's weights, the data and
    the layer. If ``path`` holds a cache with the same fingerprint it is loaded;
    otherwise (no file, or a stale cache from other weights or data) the features
    are computed and the file is (re)written. A stale cache is never used.

    Examples
    --------
    >>> import os, tempfile, transfer_utils as tu
    >>> path = os.path.join(tempfile.mkdtemp(), "digits.safetensors")
    >>> net, ds = tu.SmallCNN(), tu.load_digits()
    >>> tu.cache_features(net.body, ds, path=path).loaded
    False
    >>> tu.cache_features(net.body, ds, path=path).loaded
    True
    """
    if not isinstance(dataset, ArrayDataset):
        raise TypeError(f"cache_features needs an ArrayDataset (to fingerprint the data), got "
                        f"{type(dataset).__name__}; use FeatureCache.build for a loader")
    fingerprint = _fingerprint(model, dataset, layer)
    if path is not None and Path(path).exists():
        cache = FeatureCache.load(path)
        if cache.meta.get("fingerprint") == fingerprint:
            return cache
    cache = FeatureCache.build(model, dataset, layer=layer, batch_size=batch_size, device=device,
                               fingerprint=fingerprint)
    if path is not None:
        cache.save(path)
    return cache


# --------------------------------------------------------------------------- experiments


def _as_feature_dataset(data, what: str) -> ArrayDataset:
    if isinstance(data, FeatureCache):
        return data.dataset()
    if isinstance(data, ArrayDataset) and data.x.ndim == 2:
        return data
    raise TypeError(f"{what} must be a FeatureCache (or an ArrayDataset of [n, d] features), "
                    f"got {type(data).__name__}")


def _call_probe(probe: Callable, Xtr, ytr, Xte, yte, seed: int) -> float:
    try:
        takes_seed = "seed" in inspect.signature(probe).parameters
    except (TypeError, ValueError):
        takes_seed = False
    out = probe(Xtr, ytr, Xte, yte, seed=seed) if takes_seed else probe(Xtr, ytr, Xte, yte)
    return float(out["accuracy"] if isinstance(out, Mapping) else out)


def probe_curve(
    train: FeatureCache,
    test: FeatureCache,
    probes: Mapping[str, Callable],
    *,
    ks: Sequence[int],
    seeds: Sequence[int] = (0, 1, 2),
) -> tuple[dict[str, dict[int, Summary]], dict[str, float]]:
    """Accuracy of several probes against labels per class, on cached features.

    For each ``k`` and seed every probe gets ``train.few_shot(k, seed)``: the same
    examples that :func:`transfer_utils.transfer_curve` fine-tunes on, so the two
    curves compare methods on equal data. A probe is called as
    ``probe(X_train, y_train, X_test, y_test)`` (plus ``seed=`` if it takes one)
    and returns ``{"accuracy": ...}``, like :func:`linear_probe`.

    Returns
    -------
    (curves, seconds)
        ``curves[name][k]`` is a :class:`Summary` over seeds (plot it with
        ``tu.plot_curves``); ``seconds[name]`` is the mean wall time of one run.
    """
    if not probes:
        raise ValueError("give at least one probe, e.g. {'linear': tu.linear_probe}")
    if not list(ks) or not list(seeds):
        raise ValueError("ks and seeds must be non-empty")
    train_ds = _as_feature_dataset(train, "train")
    test_ds = _as_feature_dataset(test, "test")
    accs: dict[str, dict[int, list[float]]] = {n: {k: [] for k in ks} for n in probes}
    times: dict[str, list[float]] = {n: [] for n in probes}
    for k in ks:
        for seed in seeds:
            shots = few_shot(train_ds, k, seed=seed)
            for name, probe in probes.items():
                t0 = time.perf_counter()
                accs[name][k].append(_call_probe(probe, shots.x, shots.y, test_ds.x, test_ds.y,
                                                 seed))
                times[name].append(time.perf_counter() - t0)
    curves = {n: {k: summarize(v) for k, v in per_k.items()} for n, per_k in accs.items()}
    return curves, {n: float(np.mean(t)) for n, t in times.items()}


def layerwise_probe(
    model: nn.Module,
    train,
    test,
    layers: Sequence[str],
    *,
    k: int | None = None,
    seeds: Sequence[int] = (0,),
    probe: Callable = linear_probe,
    batch_size: int = 512,
    device: str | torch.device | None = None,
) -> dict[str, Summary]:
    """Probe accuracy of every layer in ``layers``: which layer's features transfer best?

    Features of all layers are extracted in one pass each over ``train`` and
    ``test`` (ArrayDatasets or loaders) with :func:`extract_layers`; ``"input"``
    is the raw input. With ``k`` each seed draws ``k`` training examples per
    class (``tu.few_shot``); without it all training examples are used and a
    deterministic probe gives the same number for every seed.

    Returns
    -------
    dict
        ``{layer: Summary over seeds}``, in the order of ``layers``; plot it with
        :func:`plot_layerwise`.

    Examples
    --------
    >>> import transfer_utils as tu
    >>> train, test = tu.split(tu.load_digits(), (0.5, 0.5))
    >>> res = tu.layerwise_probe(tu.SmallCNN(), train, test, ["input", "body.block1"], k=5)
    >>> list(res)
    ['input', 'body.block1']
    """
    if not list(seeds):
        raise ValueError("seeds must be non-empty")

    def as_loader(data):
        return make_loader(data, batch_size) if isinstance(data, ArrayDataset) else data

    Ftr, ytr = extract_layers(model, as_loader(train), layers, device=device)
    Fte, yte = extract_layers(model, as_loader(test), layers, device=device)
    results: dict[str, Summary] = {}
    for name in layers:
        ds = ArrayDataset(Ftr[name], ytr)
        accs = []
        for seed in seeds:
            shots = ds if k is None else few_shot(ds, k, seed=seed)
            accs.append(_call_probe(probe, shots.x, shots.y, Fte[name], yte, seed))
        results[name] = summarize(accs)
    return results


# --------------------------------------------------------------------------- pictures


def project_2d(X, *, method: str = "pca", seed: int = 0) -> np.ndarray:
    """Project features ``[n, d]`` to 2-D with PCA or t-SNE (scikit-learn), for plotting.

    Examples
    --------
    >>> import torch, transfer_utils as tu
    >>> tu.project_2d(torch.randn(30, 5)).shape
    (30, 2)
    """
    X = _as_numpy(X).astype(np.float64)
    if X.ndim != 2 or len(X) < 3:
        raise ValueError(f"project_2d needs features [n, d] with n >= 3, got shape {X.shape}")
    if method == "pca":
        from sklearn.decomposition import PCA

        return PCA(n_components=2, random_state=seed).fit_transform(X)
    if method == "tsne":
        from sklearn.manifold import TSNE

        perplexity = min(30.0, (len(X) - 1) / 3)
        return TSNE(n_components=2, init="pca", random_state=seed,
                    perplexity=perplexity).fit_transform(X)
    raise ValueError(f"method must be 'pca' or 'tsne', got {method!r}")


def plot_projection(panels, *, method: str = "pca", classes: Sequence[str] | None = None,
                    seed: int = 0, axes=None):
    """Scatter 2-D projections of features coloured by class, one panel per entry.

    Parameters
    ----------
    panels : mapping ``{title: (X, y)}`` or one ``(X, y)`` pair
    method : {"pca", "tsne"}
        See :func:`project_2d`; each panel is projected on its own.
    classes : list of str, optional
        Legend names of the labels.

    Returns the matplotlib Figure.
    """
    import matplotlib.pyplot as plt

    if isinstance(panels, tuple):
        panels = {"": panels}
    if not panels:
        raise ValueError("plot_projection needs at least one (X, y) panel")
    n = len(panels)
    if axes is None:
        fig, axes = plt.subplots(1, n, figsize=(4.2 * n, 4.0), squeeze=False)
        axes = axes[0]
    else:
        axes = np.atleast_1d(axes)
        fig = axes[0].figure
    if len(axes) != n:
        raise ValueError(f"got {len(axes)} axes for {n} panels")
    cmap = plt.get_cmap("tab10")
    for ax, (title, (X, y)) in zip(axes, panels.items(), strict=True):
        Z = project_2d(X, method=method, seed=seed)
        y = _as_numpy(y)
        for c in np.unique(y):
            name = classes[c] if classes is not None else str(c)
            ax.scatter(Z[y == c, 0], Z[y == c, 1], s=6, alpha=0.7, color=cmap(int(c) % 10),
                       label=name)
        ax.set_title(title)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_xlabel(f"{method.upper()} 1")
        ax.set_ylabel(f"{method.upper()} 2")
    axes[-1].legend(loc="center left", bbox_to_anchor=(1.0, 0.5), markerscale=2.5, fontsize=8,
                    frameon=False)
    fig.tight_layout()
    return fig


def plot_layerwise(results, *, ylabel: str = "probe accuracy", title: str | None = None,
                   ax=None):
    """Probe accuracy against layer with 95% error bars (from :func:`layerwise_probe`).

    ``results`` is one ``{layer: Summary}`` or several, as ``{label: {layer: Summary}}``
    (e.g. one curve per number of labels). Returns the matplotlib Figure.
    """
    import matplotlib.pyplot as plt

    if not results:
        raise ValueError("plot_layerwise needs results, e.g. tu.layerwise_probe(...)")
    if all(isinstance(v, Summary) for v in results.values()):
        results = {"": results}
    fig, ax = (ax.figure, ax) if ax is not None else plt.subplots(figsize=(6.0, 3.8))
    names: list[str] = []
    for curve in results.values():
        names += [n for n in curve if n not in names]
    for label, curve in results.items():
        xs = [names.index(n) for n in curve]
        ax.errorbar(xs, [s.mean for s in curve.values()], yerr=[s.ci95 for s in curve.values()],
                    marker="o", capsize=3, label=str(label) or None)
    ax.set_xticks(range(len(names)), names, rotation=20)
    ax.set(xlabel="layer", ylabel=ylabel)
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    if any(str(label) for label in results):
        ax.legend()
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- exercise checker


def _fail(msg: str, hint: str) -> AssertionError:
    return AssertionError(f"{msg}\nHint: {hint}")


def check_extract_features(fn: Callable) -> None:
    """Check a reader's ``fn(model, loader) -> (X, y)`` (chapter 4's first exercise).

    It must return the features and labels of every batch, computed as at test
    time (``model.eval()``: dropout off, BatchNorm on its running statistics,
    which must not change), without building a gradient graph
    (``torch.no_grad()``), and leave the model in the mode it found it, even when
    the loader raises an error half-way.

    Prints a short message when all checks pass; raises ``AssertionError`` with a
    hint otherwise.

    Examples
    --------
    >>> import transfer_utils as tu
    >>> tu.check_extract_features(tu.extract_features)
    ✓ extract_features: eval mode, no gradients, labels kept, caller's mode restored.
    """
    state = torch.random.get_rng_state()  # dropout in train mode draws from the global RNG
    try:
        _check_extract_features(fn)
    finally:
        torch.random.set_rng_state(state)
    print("✓ extract_features: eval mode, no gradients, labels kept, caller's mode restored.")


def _check_extract_features(fn: Callable) -> None:
    from .models import SmallCNN

    g = torch.Generator().manual_seed(0)
    x = torch.rand(48, 1, 8, 8, generator=g)
    y = torch.arange(48) % 3
    data = ArrayDataset(x, y)
    torch.manual_seed(0)
    net = SmallCNN(num_classes=3, widths=(8, 16), dropout=0.5)
    with torch.no_grad():  # give BatchNorm running statistics that differ from any batch's
        net.train()
        for _ in range(3):
            net(2.0 * torch.rand(16, 1, 8, 8, generator=g))
        net.eval()
        expected = net.body(x)
    stats = copy.deepcopy(net.body.block1.bn.state_dict())
    net.train()

    out = fn(net.body, make_loader(data, 16))
    if not (isinstance(out, tuple) and len(out) == 2):
        raise _fail(f"fn should return a pair (X, y), got {type(out).__name__}",
                    "collect features and labels batch by batch, then return "
                    "(torch.cat(features), torch.cat(labels))")
    X, labels = out
    X, labels = torch.as_tensor(X), torch.as_tensor(labels)
    if tuple(X.shape) != tuple(expected.shape):
        raise _fail(f"X has shape {tuple(X.shape)}, expected {tuple(expected.shape)} "
                    f"(48 examples x 16 features)", "concatenate the batches along dim 0")
    if not torch.equal(labels.cpu().long(), y):
        raise _fail("the labels do not match the loader's labels, in order",
                    "append y from every batch and torch.cat them; do not shuffle")
    if X.requires_grad or X.grad_fn is not None:
        raise _fail("the features carry a gradient graph",
                    "run the forward passes inside `with torch.no_grad():` (or decorate "
                    "fn with @torch.no_grad()): no memory is spent on a graph")
    for name, t in net.body.block1.bn.state_dict().items():
        if not torch.equal(t, stats[name]):
            raise _fail(f"BatchNorm's running statistics changed ({name})",
                        "in train mode BatchNorm updates running_mean/var on every forward "
                        "pass, even under no_grad: call model.eval() before the loop")
    if not torch.allclose(X.cpu().float(), expected, atol=1e-5):
        raise _fail("the features differ from the model's test-time (eval-mode) features",
                    "call model.eval() before extracting: dropout and BatchNorm behave "
                    "differently in train mode")
    if not (net.body.training and all(m.training for m in net.body.modules())):
        raise _fail("the model was in train mode but is not any more",
                    "remember `was_training = model.training` first and end with "
                    "`model.train(was_training)`")
    net.eval()
    fn(net.body, make_loader(data, 16))
    if net.body.training:
        raise _fail("the model was in eval mode but fn left it in train mode",
                    "restore the mode the model had (model.train(was_training)); do not "
                    "call model.train() unconditionally")

    def broken_loader():
        yield x[:16], y[:16]
        raise RuntimeError("loader failed")

    net.train()
    try:
        fn(net.body, broken_loader())
    except RuntimeError:
        pass
    else:
        raise _fail("an error from the loader was swallowed",
                    "let exceptions propagate; do not catch them without re-raising")
    if not net.body.training:
        raise _fail("after an error half-way, the model was left in eval mode",
                    "restore the mode in a `finally:` block, so it runs on errors too")
