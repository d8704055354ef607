"""Feature extraction from a frozen network, and cheap probes on the features (chapter 4)."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch
from torch import nn

from .runtime import get_device

__all__ = ["extract_features", "linear_probe", "knn_probe"]


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
    device = get_device(device)
    captured: list[torch.Tensor] = []
    handle = None
    if layer is not None:
        target = _find_module(model, layer)
        handle = target.register_forward_hook(lambda _m, _i, out: captured.append(out))
    was_training = model.training
    model.to(device).eval()
    feats, labels = [], []
    try:
        for x, y in loader:
            out = model(x.to(device))
            if layer is not None:
                out = captured.pop()
            out = out.detach().float()
            feats.append((out.flatten(1) if flatten else out).cpu())
            labels.append(y.cpu())
    finally:
        if handle is not None:
            handle.remove()
        model.train(was_training)
    if not feats:
        raise ValueError("the loader yielded no batches: nothing to extract")
    return torch.cat(feats), torch.cat(labels)


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
