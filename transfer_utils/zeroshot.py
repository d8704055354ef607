"""Zero-shot classification through class attributes (chapter 2).

Methods layer: a class-by-attribute table and a linear map from inputs to
attributes, so classes with no training example can still be recognised.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch

__all__ = ["DIGIT_ATTRIBUTES", "attribute_table", "AttributeZeroShot"]



# Which digits (as people usually write them; the 8x8 scikit-learn set has 1s with a base
# and 7s with a middle bar) show each attribute. A hand-made guess, not measured.
DIGIT_ATTRIBUTES: dict[str, tuple[int, ...]] = {
    "closed loop": (0, 6, 8, 9),
    "loop on top": (8, 9),
    "loop at bottom": (6, 8),
    "round top": (0, 2, 3, 8, 9),
    "round bottom": (0, 3, 5, 6, 8),
    "opens to the left": (3, 5),
    "vertical stroke": (1, 4, 9),
    "diagonal stroke": (2, 4, 7),
    "top bar": (5, 7),
    "middle bar": (4, 7),
    "bottom bar": (1, 2),
}


def attribute_table(
    attributes: Mapping[str, Sequence[int]] | None = None, num_classes: int = 10
) -> tuple[np.ndarray, list[str]]:
    """Class-by-attribute 0/1 matrix ``A[c, m]`` from ``{attribute: classes that have it}``.

    Default: :data:`DIGIT_ATTRIBUTES`. Every class must get a different row, or
    zero-shot learning could not tell those classes apart.

    Examples
    --------
    >>> import transfer_utils as tu
    >>> A, names = tu.attribute_table({"round": [0, 2], "straight": [1, 2]}, num_classes=3)
    >>> A.tolist(), names
    ([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], ['round', 'straight'])
    """
    attributes = DIGIT_ATTRIBUTES if attributes is None else attributes
    if not attributes:
        raise ValueError("attributes is empty; map attribute names to the classes that have them")
    names = list(attributes)
    A = np.zeros((num_classes, len(names)))
    for j, name in enumerate(names):
        for c in attributes[name]:
            if not 0 <= int(c) < num_classes:
                raise ValueError(f"attribute {name!r} lists class {c}, outside 0..{num_classes - 1}")
            A[int(c), j] = 1.0
    rows: dict[tuple, int] = {}
    for c, row in enumerate(map(tuple, A)):
        if row in rows:
            raise ValueError(
                f"classes {rows[row]} and {c} have the same attributes; add an attribute "
                "that tells them apart"
            )
        rows[row] = c
    return A, names


class AttributeZeroShot:
    r"""Zero-shot classification through class attributes (side information).

    Fit a ridge regression from inputs to the attribute signatures
    ``s_c = 2 A[c] - 1`` (in {-1, +1}) of the *seen* classes; a new input is given
    the candidate class whose signature is closest in cosine similarity to the
    predicted attributes. Candidates can be classes with no training example at
    all: only their row of ``A`` is needed. The ridge map is one linear predictor per
    attribute, trained on the seen classes: the first stage of direct attribute
    prediction (DAP, Lampert et al., 2009), with cosine similarity as a simple stand-in
    for DAP's probabilistic second stage. (It is not ESZSL, which learns a bilinear
    class score.) Chapter 2 explains it.

    Parameters
    ----------
    attributes : array [C, M]
        0/1 class-by-attribute table (see :func:`attribute_table`).
    alpha : float
        Ridge penalty.

    Examples
    --------
    >>> import numpy as np, transfer_utils as tu
    >>> A = np.eye(3)                       # class c has attribute c only
    >>> X = np.repeat(np.eye(3), 5, 0) + 0.01 * np.arange(15)[:, None]
    >>> y = np.repeat(np.arange(3), 5)
    >>> zsl = tu.AttributeZeroShot(A[:, :2], alpha=0.1)   # 2 attributes
    >>> zsl.fit(X[y < 2], y[y < 2]).predict(X[:5], candidates=[0, 1]).tolist()
    [0, 0, 0, 0, 0]
    """

    def __init__(self, attributes, alpha: float = 1.0):
        A = np.asarray(attributes, dtype=float)
        if A.ndim != 2:
            raise ValueError(f"attributes must be a [classes, attributes] table, got {A.shape}")
        if not np.isin(A, (0.0, 1.0)).all():
            raise ValueError("attributes must be 0/1")
        if not alpha > 0:
            raise ValueError(f"alpha must be > 0, got {alpha!r}")
        self.attributes, self.alpha = A, float(alpha)
        self.W: np.ndarray | None = None

    @staticmethod
    def _flat(X) -> np.ndarray:
        X = X.detach().cpu().numpy() if isinstance(X, torch.Tensor) else np.asarray(X)
        return X.reshape(len(X), -1).astype(np.float64)

    def fit(self, X, y) -> AttributeZeroShot:
        """Learn the map from inputs ``X`` (any shape ``[n, ...]``) to attributes, on seen classes."""
        X = self._flat(X)
        y = np.asarray(y.cpu() if isinstance(y, torch.Tensor) else y).astype(int)
        if len(X) != len(y) or len(X) < 2:
            raise ValueError(f"need at least 2 examples with one label each, got {len(X)}, {len(y)}")
        if y.min() < 0 or y.max() >= len(self.attributes):
            raise ValueError(f"labels must index the {len(self.attributes)} rows of attributes")
        self.mean_ = X.mean(0)
        self.scale_ = X.std(0) + 1e-8
        Xs = (X - self.mean_) / self.scale_
        T = 2 * self.attributes[y] - 1
        self.offset_ = T.mean(0)
        self.W = np.linalg.solve(Xs.T @ Xs + self.alpha * np.eye(Xs.shape[1]),
                                 Xs.T @ (T - self.offset_))
        self.seen_ = sorted(set(y.tolist()))
        return self

    def predict_attributes(self, X) -> np.ndarray:
        """Predicted attribute scores ``[n, M]`` (about -1 = absent, +1 = present)."""
        if self.W is None:
            raise RuntimeError("call fit(X, y) before predicting")
        return ((self._flat(X) - self.mean_) / self.scale_) @ self.W + self.offset_

    def predict(self, X, candidates: Sequence[int]) -> np.ndarray:
        """The candidate class with the most similar attribute signature, for each input."""
        candidates = [int(c) for c in candidates]
        if not candidates:
            raise ValueError("give the candidate classes to choose from, e.g. the unseen ones")
        Z = self.predict_attributes(X)
        S = 2 * self.attributes[candidates] - 1
        Z = Z / (np.linalg.norm(Z, axis=1, keepdims=True) + 1e-12)
        S = S / np.linalg.norm(S, axis=1, keepdims=True)
        return np.asarray(candidates)[(Z @ S.T).argmax(1)]

    def score(self, X, y, candidates: Sequence[int]) -> float:
        """Accuracy of :meth:`predict` on ``(X, y)``."""
        y = np.asarray(y.cpu() if isinstance(y, torch.Tensor) else y)
        return float((self.predict(X, candidates) == y).mean())
