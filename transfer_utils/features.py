"""Features of a frozen network: extraction, caches, and heads fitted on them (chapter 4).

Methods layer. Extract features once (in eval mode, without gradients), cache
them, and fit linear, nearest-class-mean, k-NN or small MLP heads on the cache in a
fraction of a second; fit a model's own linear head to convergence on frozen
features (:func:`fit_linear_head`, the "frozen" and LP-FT baselines); project
features to 2-D for plots.
"""

from __future__ import annotations

import hashlib
import os
import time
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from . import _validate as V
from .checkpoint import load_checkpoint, save_checkpoint
from .data import (
    ArrayDataset,
    dataset_classes,
    dataset_labels,
    few_shot,
    make_loader,
)
from .models import get_head, get_submodule
from .runtime import get_device, seed_everything
from .training import fit

__all__ = [
    "extract_features",
    "extract_layers",
    "INPUT",
    "OUTPUT",
    "linear_probe",
    "fit_linear_head",
    "knn_probe",
    "ncm_probe",
    "NearestClassMean",
    "mlp_probe",
    "train_head",
    "FeatureCache",
    "cache_features",
    "project_2d",
]


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


def _xy_arrays(X_train, y_train, X_test, y_test):
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


def _fit_logreg(X, y, *, C: float, standardize: bool, max_iter: int):
    """Multinomial logistic regression fitted to convergence by L-BFGS (scikit-learn)."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    C = V.positive(C, "C (inverse regularisation strength)")
    steps = [StandardScaler()] if standardize else []
    clf = make_pipeline(*steps, LogisticRegression(C=C, max_iter=max_iter, tol=1e-6))
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        try:
            clf.fit(X, y)
        except ConvergenceWarning:
            raise RuntimeError(
                f"the logistic regression did not converge in {max_iter} L-BFGS iterations "
                f"(C={C:g}); raise max_iter, or lower C (more regularisation)"
            ) from None
    return clf


def linear_probe(X_train, y_train, X_test, y_test, *, C: float = 1.0, standardize: bool = True,
                 max_iter: int = 5000) -> dict:
    """Multinomial logistic regression on fixed features, fitted to convergence: the linear probe.

    The problem is convex, so it is solved to convergence (L-BFGS; a warning of
    non-convergence becomes an error) rather than by a fixed number of gradient
    steps, which would report an under-trained head as a limit of the features
    (DESIGN §8; chapter 4). Choose ``C`` on validation data. Standardisation
    statistics come from the training features only (fitting them on all data
    would leak the test set into training; chapter 4 shows it).

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
    X_train, y_train, X_test, y_test = _xy_arrays(X_train, y_train, X_test, y_test)
    if len(np.unique(y_train)) < 2:
        raise ValueError("linear_probe needs at least two classes in y_train")
    clf = _fit_logreg(X_train, y_train, C=C, standardize=standardize, max_iter=max_iter)
    return {"accuracy": float(clf.score(X_test, y_test)), "model": clf}


@torch.no_grad()
def fit_linear_head(
    model: nn.Module,
    data,
    *,
    C: float = 1.0,
    standardize: bool = True,
    max_iter: int = 5000,
    batch_size: int = 512,
    device: str | torch.device | None = None,
) -> dict:
    """Fit a model's linear head to convergence on the frozen features that feed it.

    The features are the inputs of the layer :func:`transfer_utils.get_head`
    finds (``head``, ``fc``, ...), computed in eval mode over ``data`` (a
    dataset or a loader). A multinomial logistic regression with inverse
    regularisation ``C`` is fitted to them exactly as :func:`linear_probe` does
    (standardised, L-BFGS to convergence), and the solution is written into the
    head, with the standardisation folded into its weights and bias. This is the
    head of the "frozen" baseline and the first stage of LP-FT (chapters 3 and 4):
    a convex problem, so no step budget can leave it under-trained.

    Returns
    -------
    dict
        ``{"train_accuracy": float, "C": float, "iterations": int}``.

    Examples
    --------
    >>> import transfer_utils as tu
    >>> net = tu.replace_head(tu.zoo.load("mnist8_cnn"), 10)
    >>> info = tu.fit_linear_head(net, tu.few_shot(tu.load_digits(), 5))
    >>> info["train_accuracy"] > 0.9
    True
    """
    _, _, head = get_head(model)
    loader = data if not isinstance(data, torch.utils.data.Dataset) else make_loader(
        data, batch_size)
    captured: list[torch.Tensor] = []
    handle = head.register_forward_pre_hook(lambda _m, args: captured.append(args[0].detach()))
    device = get_device(device)
    was_training = model.training
    feats, labels = [], []
    try:
        model.to(device).eval()
        for batch in loader:
            x, y = V.batch_pair(batch, "data")
            captured.clear()
            model(x.to(device))
            feats.append(captured[-1].flatten(1).float().cpu())
            labels.append(torch.as_tensor(y).cpu())
    finally:
        handle.remove()
        model.train(was_training)
    if not feats:
        raise ValueError("fit_linear_head: the data yielded no batches")
    X, y = torch.cat(feats).double().numpy(), torch.cat(labels).long().numpy()
    present = np.unique(y)
    if len(present) != head.out_features or present.min() < 0 or present.max() >= head.out_features:
        raise ValueError(
            f"fit_linear_head: the head has {head.out_features} outputs but the data has labels "
            f"{present.tolist()[:12]}; every class needs examples (tu.few_shot gives k of each), "
            "and the head needs one output per class (tu.replace_head)"
        )
    clf = _fit_logreg(X, y, C=C, standardize=standardize, max_iter=max_iter)
    lr = clf[-1]
    W, b = lr.coef_, lr.intercept_
    if W.shape[0] == 1:  # two classes: sklearn keeps one row; softmax([0, z]) = sigmoid(z)
        W, b = np.vstack([np.zeros_like(W), W]), np.array([0.0, b[0]])
    if standardize:
        scaler = clf[0]
        W = W / scaler.scale_
        b = b - W @ scaler.mean_
    head.weight.copy_(torch.as_tensor(W, dtype=head.weight.dtype, device=head.weight.device))
    if head.bias is not None:
        head.bias.copy_(torch.as_tensor(b, dtype=head.bias.dtype, device=head.bias.device))
    elif np.abs(b).max() > 1e-8:
        raise ValueError("fit_linear_head: the head has no bias; pass standardize=False and "
                         "expect a worse fit, or give the head a bias")
    return {"train_accuracy": float(clf.score(X, y)), "C": float(lr.C),
            "iterations": int(np.max(lr.n_iter_))}


def knn_probe(X_train, y_train, X_test, y_test, *, n_neighbors: int = 1,
              metric: str = "cosine", k: int | None = None) -> dict:
    """k-nearest-neighbour classification on fixed features (``n_neighbors`` neighbours).

    ``k`` is a deprecated alias of ``n_neighbors``: in this book ``k`` means
    labelled examples per class.

    Returns
    -------
    dict
        ``{"accuracy": float, "model": fitted KNeighborsClassifier}``.

    Examples
    --------
    >>> import torch, transfer_utils as tu
    >>> X = torch.tensor([[0.0, 1.0], [1.0, 0.0]]); y = torch.tensor([0, 1])
    >>> tu.knn_probe(X, y, X, y, n_neighbors=1)["accuracy"]
    1.0
    """
    from sklearn.neighbors import KNeighborsClassifier

    if k is not None:
        warnings.warn("knn_probe(k=...) is deprecated: k means labelled examples per class in "
                      "this book; use n_neighbors=", DeprecationWarning, stacklevel=2)
        n_neighbors = k
    X_train, y_train, X_test, y_test = _xy_arrays(X_train, y_train, X_test, y_test)
    n_neighbors = V.positive_int(n_neighbors, "n_neighbors", "knn_probe")
    if n_neighbors > len(X_train):
        raise ValueError(f"knn_probe: n_neighbors must be between 1 and the {len(X_train)} "
                         f"training points, got {n_neighbors}")
    clf = KNeighborsClassifier(n_neighbors=n_neighbors, metric=metric).fit(X_train, y_train)
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
    targets = {name: get_submodule(model, name) for name in layers if name not in (INPUT, OUTPUT)}
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
        for batch in loader:
            x, y = V.batch_pair(batch, "loader")
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
        V.one_of(metric, "metric", ("cosine", "euclidean"), "NearestClassMean")
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
    X_train, y_train, X_test, y_test = _xy_arrays(X_train, y_train, X_test, y_test)
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
    epochs: int | None = None,
    steps: int | None = None,
    batch_size: int = 64,
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    standardize: bool = True,
    seed: int = 0,
    device: str | torch.device | None = None,
) -> nn.Module:
    """Train a head (an MLP with ``hidden`` units, or linear) on cached features by Adam.

    For a *linear* head on frozen features prefer :func:`linear_probe` or
    :func:`fit_linear_head`, which solve the convex problem to convergence; a
    fixed number of Adam steps can leave it under-trained (DESIGN §8). Give the
    length as ``epochs=`` or ``steps=`` (default ``steps=300``).

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
    X = torch.as_tensor(_as_numpy(X), dtype=torch.float32)
    y = torch.as_tensor(_as_numpy(y), dtype=torch.int64)
    if X.ndim != 2 or len(X) != len(y):
        raise ValueError(f"train_head needs X [n, d] and y [n]; got {tuple(X.shape)} and "
                         f"{tuple(y.shape)}")
    if epochs is None and steps is None:
        steps = 300
    V.epochs_or_steps(epochs, steps, "train_head")
    num_classes = int(y.max()) + 1 if num_classes is None else V.positive_int(
        num_classes, "num_classes", "train_head")
    seed_everything(V.seed_value(seed, "train_head"))
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
    fit(head, loader, epochs=epochs, steps=steps, optimizer=opt, device=device, progress=False)
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
    X_train, y_train, X_test, y_test = _xy_arrays(X_train, y_train, X_test, y_test)
    head = train_head(X_train, y_train, hidden=hidden, steps=steps, lr=lr,
                      weight_decay=weight_decay, batch_size=batch_size, seed=seed)
    with torch.no_grad():
        pred = head(torch.as_tensor(X_test, dtype=torch.float32)).argmax(1).numpy()
    return {"accuracy": float((pred == y_test).mean()), "model": head}


# --------------------------------------------------------------------------- the cache

_CACHE_KIND = "feature_cache"


def _hash_tensor(h, t: torch.Tensor) -> None:
    t = torch.as_tensor(t).detach().cpu().contiguous()
    h.update(f"{t.dtype}{tuple(t.shape)}".encode())
    h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())


def _hash_data(h, dataset) -> None:
    """Fingerprint a dataset's inputs and labels without a model.

    In-memory data is hashed byte by byte; a folder dataset (torchvision's
    ImageFolder and friends, with ``samples``) by its file paths, sizes and
    modification times plus the repr of its transform; anything else by one pass
    over its items.
    """
    _hash_tensor(h, dataset_labels(dataset))
    base, index = dataset, None
    if isinstance(dataset, torch.utils.data.Subset):
        base, index = dataset.dataset, list(dataset.indices)
        h.update(repr(getattr(dataset, "label_map", None)).encode())
    if isinstance(base, ArrayDataset):
        _hash_tensor(h, base.x if index is None else base.x[torch.as_tensor(index)])
    elif isinstance(getattr(base, "samples", None), list):
        samples = base.samples if index is None else [base.samples[i] for i in index]
        for path, label in samples:
            st = os.stat(path)
            h.update(f"{path}|{st.st_size}|{st.st_mtime_ns}|{label};".encode())
        h.update(repr(getattr(base, "transform", None)).encode())
    else:
        for i in range(len(dataset)):
            x, _ = dataset[i]
            _hash_tensor(h, torch.as_tensor(x))


def _fingerprint(model: nn.Module, dataset, layer: str | None) -> str:
    """SHA-256 of the model's weights and buffers, the data and the layer name."""
    h = hashlib.sha256()
    h.update(type(model).__name__.encode())
    for name, t in model.state_dict().items():
        h.update(name.encode())
        _hash_tensor(h, t)
    _hash_data(h, dataset)
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
        """Extract features of ``data`` (any dataset, or a loader) with :func:`extract_features`."""
        is_dataset = isinstance(data, torch.utils.data.Dataset)
        loader = make_loader(data, batch_size) if is_dataset else data
        t0 = time.perf_counter()
        X, y = extract_features(model, loader, layer=layer, device=device)
        seconds = time.perf_counter() - t0
        classes = dataset_classes(data) if is_dataset else \
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
    dataset,
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
    if not isinstance(dataset, torch.utils.data.Dataset):
        raise TypeError(f"cache_features needs a dataset (to fingerprint the data), got "
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
    V.one_of(method, "method", ("pca", "tsne"), "project_2d")
    raise AssertionError("unreachable")  # pragma: no cover






# --------------------------------------------------------------------------- exercise checker






