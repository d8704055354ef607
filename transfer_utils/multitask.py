"""Multi-task models, a denoising autoencoder, attribute-based zero-shot learning (chapter 2),
paired comparisons over seeds (chapter 1), and the exercise checkers of chapters 1 and 2.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .analysis import summarize
from .data import ArrayDataset, make_loader
from .runtime import get_device, seed_everything

__all__ = [
    "MultiTaskNet",
    "fit_multitask",
    "Autoencoder",
    "fit_autoencoder",
    "DIGIT_ATTRIBUTES",
    "attribute_table",
    "AttributeZeroShot",
    "check_ci95",
    "check_attribute_map",
    "plot_transfer_diagram",
]


# --------------------------------------------------------------------------- multi-task


class _TaskView(nn.Module):
    """One task of a :class:`MultiTaskNet` as an ordinary ``body`` + ``head`` classifier.

    It holds the *same* modules as the multi-task net (no copy), so evaluating it
    measures the shared model, and ``tu.transfer_run`` can start from it.
    """

    def __init__(self, body: nn.Module, head: nn.Linear, feature_dim: int):
        super().__init__()
        self.body, self.head, self.feature_dim = body, head, feature_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


class MultiTaskNet(nn.Module):
    """A shared trunk (``body``) with one linear head per task: hard parameter sharing.

    Chapter 2 trains one jointly on two tasks (digit class and "is it > 4") and
    compares it with sequential transfer (train on one task, then fine-tune on the
    other).

    Parameters
    ----------
    body : nn.Module
        Maps a batch of inputs to features ``[N, feature_dim]``, e.g.
        ``tu.SmallCNN(...).body``.
    feature_dim : int
        Size of the body's output.
    heads : mapping of str to int
        Task name -> number of classes, e.g. ``{"digit": 10, "high": 2}``.

    Examples
    --------
    >>> import torch, transfer_utils as tu
    >>> net = tu.MultiTaskNet.from_model(tu.SmallCNN(10), {"digit": 10, "parity": 2})
    >>> {k: tuple(v.shape) for k, v in net(torch.zeros(3, 1, 8, 8)).items()}
    {'digit': (3, 10), 'parity': (3, 2)}
    >>> net.task("parity")(torch.zeros(3, 1, 8, 8)).shape
    torch.Size([3, 2])
    """

    def __init__(self, body: nn.Module, feature_dim: int, heads: Mapping[str, int]):
        super().__init__()
        if not heads:
            raise ValueError("heads is empty; give at least one task, e.g. {'digit': 10}")
        for name, k in heads.items():
            if not isinstance(name, str) or not name.isidentifier():
                raise ValueError(f"task names must be identifiers like 'digit', got {name!r}")
            if isinstance(k, bool) or not isinstance(k, int) or k < 1:
                raise ValueError(f"task {name!r}: number of classes must be a positive int, got {k!r}")
        self.body = body
        self.feature_dim = int(feature_dim)
        self.heads = nn.ModuleDict({n: nn.Linear(self.feature_dim, k) for n, k in heads.items()})

    @classmethod
    def from_model(cls, model: nn.Module, heads: Mapping[str, int]) -> MultiTaskNet:
        """Build one on a copy of ``model.body`` (a ``tu.SmallCNN`` or ``tu.MLP``, maybe pretrained)."""
        if not hasattr(model, "body") or not hasattr(model, "feature_dim"):
            raise TypeError(
                f"from_model needs a model with .body and .feature_dim (tu.SmallCNN, tu.MLP), "
                f"got {type(model).__name__}; use MultiTaskNet(body, feature_dim, heads)"
            )
        return cls(copy.deepcopy(model.body), model.feature_dim, heads)

    @property
    def tasks(self) -> list[str]:
        return list(self.heads)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        z = self.body(x)
        return {name: head(z) for name, head in self.heads.items()}

    def task(self, name: str) -> nn.Module:
        """The classifier for one task (shares the weights): use it with ``tu.evaluate``."""
        if name not in self.heads:
            raise KeyError(f"no task {name!r}; tasks are {self.tasks}")
        return _TaskView(self.body, self.heads[name], self.feature_dim)


def _cycle(loader):
    while True:
        yield from loader


def fit_multitask(
    model: MultiTaskNet,
    datasets: Mapping[str, ArrayDataset],
    *,
    steps: int,
    batch_size: int = 32,
    lr: float = 1e-3,
    weights: Mapping[str, float] | None = None,
    seed: int = 0,
    device: str | torch.device | None = None,
) -> dict[str, list[float]]:
    r"""Train all tasks of ``model`` jointly for ``steps`` optimizer steps.

    Each step draws one batch from every task's dataset (they may differ, e.g. a
    few digit labels and many cheap coarse labels), runs the shared body, and
    minimises the weighted sum of the tasks' cross-entropies,

    .. math:: \mathcal{L} = \sum_t w_t \, \mathrm{CE}(h_t(g(x_t)), y_t).

    Parameters
    ----------
    model : MultiTaskNet
    datasets : mapping of task name to ArrayDataset
        One dataset per head; labels must fit that head.
    steps : int
    batch_size : int
        Per task (smaller datasets use their whole size).
    lr : float
        Adam learning rate for all parameters.
    weights : mapping of task name to float, optional
        Loss weights ``w_t`` (default 1 for every task).
    seed : int
    device : str or torch.device, optional

    Returns
    -------
    dict
        Task name -> training loss at every step.

    Examples
    --------
    >>> import transfer_utils as tu
    >>> ds = tu.load_digits()
    >>> odd = tu.ArrayDataset(ds.x, ds.y % 2, ["even", "odd"])
    >>> net = tu.MultiTaskNet.from_model(tu.SmallCNN(10), {"digit": 10, "odd": 2})
    >>> losses = tu.fit_multitask(net, {"digit": ds, "odd": odd}, steps=5)
    >>> sorted(losses), len(losses["odd"])
    (['digit', 'odd'], 5)
    """
    if not isinstance(model, MultiTaskNet):
        raise TypeError(f"model must be a tu.MultiTaskNet, got {type(model).__name__}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    if set(datasets) != set(model.tasks):
        raise ValueError(
            f"give one dataset per task: the model has tasks {model.tasks}, "
            f"datasets were given for {sorted(datasets)}"
        )
    weights = dict(weights or {})
    unknown = set(weights) - set(model.tasks)
    if unknown:
        raise ValueError(f"weights name unknown tasks {sorted(unknown)}; tasks are {model.tasks}")
    for name, ds in datasets.items():
        n_out = model.heads[name].out_features
        if len(ds) == 0:
            raise ValueError(f"the dataset for task {name!r} is empty")
        if int(ds.y.max()) >= n_out:
            raise ValueError(
                f"task {name!r}: labels go up to {int(ds.y.max())} but its head has {n_out} "
                "outputs; relabel the data or widen the head"
            )
    device = get_device(device)
    seed_everything(seed)
    model.to(device).train()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    streams = {
        name: _cycle(make_loader(ds, min(batch_size, len(ds)), shuffle=True, seed=seed + i))
        for i, (name, ds) in enumerate(datasets.items())
    }
    history: dict[str, list[float]] = {name: [] for name in datasets}
    for _ in range(steps):
        batches = {name: next(s) for name, s in streams.items()}
        xs = [x.to(device) for x, _ in batches.values()]
        if len({tuple(x.shape[1:]) for x in xs}) == 1:  # one pass through the shared body
            feats = model.body(torch.cat(xs)).split([len(x) for x in xs])
        else:
            feats = [model.body(x) for x in xs]
        loss = torch.zeros((), device=device)
        for (name, (_, y)), f in zip(batches.items(), feats, strict=True):
            task_loss = F.cross_entropy(model.heads[name](f), y.to(device))
            loss = loss + weights.get(name, 1.0) * task_loss
            history[name].append(task_loss.item())
        if not torch.isfinite(loss):
            raise FloatingPointError("non-finite multi-task loss: lower the learning rate")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    model.eval()
    return history


# --------------------------------------------------------------------------- autoencoder


class Autoencoder(nn.Module):
    """A small fully connected (denoising) autoencoder for unsupervised pretraining.

    ``encoder``: flatten -> ``hidden`` -> ``code`` (ReLU after each); ``decoder``:
    ``code`` -> ``hidden`` -> the input's shape, as logits (apply a sigmoid to see
    an image). Chapter 2 trains one on unlabelled digits, then puts a linear probe
    on its codes.

    Parameters
    ----------
    in_shape : sequence of int
        Shape of one input, e.g. ``(1, 8, 8)``.
    hidden : int
    code : int
        Size of the code (the features a probe reads).

    Examples
    --------
    >>> import torch, transfer_utils as tu
    >>> ae = tu.Autoencoder((1, 8, 8), hidden=32, code=8)
    >>> ae(torch.zeros(2, 1, 8, 8)).shape, ae.encode(torch.zeros(2, 1, 8, 8)).shape
    (torch.Size([2, 1, 8, 8]), torch.Size([2, 8]))
    """

    def __init__(self, in_shape: Sequence[int] = (1, 8, 8), hidden: int = 256, code: int = 64):
        super().__init__()
        in_shape = tuple(int(s) for s in in_shape)
        if not in_shape or min(in_shape) < 1:
            raise ValueError(f"in_shape must be positive sizes like (1, 8, 8), got {in_shape}")
        for what, v in (("hidden", hidden), ("code", code)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{what} must be a positive int, got {v!r}")
        d = math.prod(in_shape)
        self.in_shape, self.feature_dim = in_shape, code
        self.encoder = nn.Sequential(
            nn.Flatten(), nn.Linear(d, hidden), nn.ReLU(), nn.Linear(hidden, code), nn.ReLU()
        )
        self.decoder = nn.Sequential(
            nn.Linear(code, hidden), nn.ReLU(), nn.Linear(hidden, d), nn.Unflatten(1, in_shape)
        )

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))

    def classifier(self, num_classes: int) -> nn.Module:
        """A ``body`` (a copy of the encoder) + new ``head`` classifier, for fine-tuning."""
        return _TaskView(copy.deepcopy(self.encoder), nn.Linear(self.feature_dim, num_classes),
                         self.feature_dim)


def fit_autoencoder(
    model: Autoencoder,
    data: ArrayDataset | torch.Tensor,
    *,
    steps: int = 1000,
    batch_size: int = 64,
    lr: float = 1e-3,
    mask: float = 0.5,
    seed: int = 0,
    device: str | torch.device | None = None,
) -> list[float]:
    """Train ``model`` to rebuild its inputs from corrupted copies; labels are never used.

    Each step zeroes a random fraction ``mask`` of the input pixels and scores the
    reconstruction of the *clean* input with binary cross-entropy (inputs must lie
    in [0, 1]). ``mask=0`` gives a plain autoencoder.

    Returns
    -------
    list of float
        The loss at every step.

    Examples
    --------
    >>> import transfer_utils as tu
    >>> ae = tu.Autoencoder((1, 8, 8), hidden=32, code=8)
    >>> losses = tu.fit_autoencoder(ae, tu.load_digits(), steps=20)
    >>> losses[-1] < losses[0]
    True
    """
    if not isinstance(model, Autoencoder):
        raise TypeError(f"model must be a tu.Autoencoder, got {type(model).__name__}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    if not 0.0 <= mask < 1.0:
        raise ValueError(f"mask is the fraction of pixels hidden, in [0, 1), got {mask!r}")
    x = data.x if isinstance(data, ArrayDataset) else torch.as_tensor(data, dtype=torch.float32)
    if tuple(x.shape[1:]) != model.in_shape:
        raise ValueError(
            f"inputs have shape {tuple(x.shape[1:])} but the autoencoder expects {model.in_shape}"
        )
    if len(x) == 0:
        raise ValueError("no inputs to train on")
    if float(x.min()) < 0 or float(x.max()) > 1:
        raise ValueError("inputs must lie in [0, 1] for the cross-entropy reconstruction loss")
    device = get_device(device)
    seed_everything(seed)
    g = torch.Generator().manual_seed(seed)
    model.to(device).train()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        xb = x[torch.randint(0, len(x), (min(batch_size, len(x)),), generator=g)]
        keep = (torch.rand(xb.shape, generator=g) >= mask).to(xb.dtype)
        xb, keep = xb.to(device), keep.to(device)
        loss = F.binary_cross_entropy_with_logits(model(xb * keep), xb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    model.eval()
    return losses


# --------------------------------------------------------------------------- zero-shot

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
    all: only their row of ``A`` is needed. This is the linear-embedding approach of
    ESZSL (Romera-Paredes and Torr, 2015) in its simplest form; chapter 2 explains it.

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


# --------------------------------------------------------------------------- diagram


def plot_transfer_diagram(
    source: str = "source domain\nMNIST, 8x8\n4,500 labels",
    target: str = "target domain\nscikit-learn digits\na few labels",
):
    """Draw the picture of transfer learning used in chapters 1 and 2; returns the Figure.

    Source data trains a body and a source head; the body's weights are copied to
    the target model, which gets a new head and is trained on the target data.

    Examples
    --------
    >>> import transfer_utils as tu
    >>> fig = tu.plot_transfer_diagram()
    >>> len(fig.axes)
    1
    """
    from matplotlib.figure import Figure
    from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

    fig = Figure(figsize=(8.0, 3.4))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, 10)
    ax.set_ylim(0, 4.2)
    ax.set_axis_off()

    def box(x, y, w, h, text, color):
        ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.05", fc=color,
                                    ec="0.3", lw=1))
        ax.text(x + w / 2, y + h / 2, text, ha="center", va="center", fontsize=9)

    def arrow(x0, y0, x1, y1, text="", **kw):
        ax.add_patch(FancyArrowPatch((x0, y0), (x1, y1), arrowstyle="-|>", mutation_scale=12,
                                     color="0.25", lw=1.2, **kw))
        if text:
            ax.text((x0 + x1) / 2 + 0.1, (y0 + y1) / 2, text, fontsize=8.5, ha="left",
                    va="center", color="0.2")

    src_c, shared_c, task_c, tgt_c = "#dbe9f6", "#fde7c8", "#e3f1dc", "#f6dbe4"
    box(0.2, 2.6, 2.0, 1.2, source, src_c)
    box(3.0, 2.6, 2.6, 1.2, "body $g$\n(conv blocks: features)", shared_c)
    box(6.4, 2.6, 1.6, 1.2, "source head\n$h_S$", task_c)
    ax.text(8.2, 3.2, "source task\n10 MNIST classes", fontsize=8.5, va="center")
    box(0.2, 0.3, 2.0, 1.2, target, tgt_c)
    box(3.0, 0.3, 2.6, 1.2, "body $g$\nstarts from the source weights", shared_c)
    box(6.4, 0.3, 1.6, 1.2, "new head\n$h_T$ (random)", task_c)
    ax.text(8.2, 0.9, "target task\n10 digit classes", fontsize=8.5, va="center")
    arrow(2.25, 3.2, 2.95, 3.2)
    arrow(5.65, 3.2, 6.35, 3.2)
    arrow(2.25, 0.9, 2.95, 0.9)
    arrow(5.65, 0.9, 6.35, 0.9)
    arrow(4.3, 2.55, 4.3, 1.55, "copy the weights\n(shared knowledge)")
    ax.text(7.2, 2.07, "task-specific:\nnot transferred", fontsize=8.5, ha="center",
            va="center", color="0.35")
    return fig


# --------------------------------------------------------------------------- exercise checks


def _ok(msg: str) -> None:
    print(f"Correct! {msg}")


def check_ci95(fn: Callable[[Sequence[float]], float]) -> None:
    """Exercise check (chapter 1): ``fn(values)`` returns the 95% half-width of the mean.

    The interval is Student's t: ``t_{0.975, n-1} * s / sqrt(n)`` with the sample
    standard deviation ``s`` (ddof = 1). Prints a message when right, raises
    ``AssertionError`` with a hint when wrong.
    """
    cases = [[0.80, 0.85, 0.90], [0.1, 0.4], [0.5, 0.52, 0.49, 0.55, 0.51, 0.47, 0.5, 0.53]]
    for values in cases:
        want = summarize(values).ci95
        got = fn(list(values))
        try:
            got = float(got)
        except (TypeError, ValueError):
            raise AssertionError(f"return one number (the half-width), got {got!r}") from None
        n = len(values)
        sd0 = float(np.std(values, ddof=0))
        if math.isclose(got, 1.96 * float(np.std(values, ddof=1)) / math.sqrt(n), rel_tol=1e-3):
            raise AssertionError(
                f"for n={n} you used the normal quantile 1.96; with few seeds use Student's t "
                f"with n-1 degrees of freedom (scipy.stats.t.ppf(0.975, n-1))"
            )
        if sd0 > 0 and math.isclose(got, want * sd0 / float(np.std(values, ddof=1)), rel_tol=1e-3):
            raise AssertionError("use the sample standard deviation (ddof=1), not ddof=0")
        if math.isclose(got, 2 * want, rel_tol=1e-3):
            raise AssertionError("that is the full width; return the half-width (mean ± it)")
        if not math.isclose(got, want, rel_tol=1e-3, abs_tol=1e-9):
            raise AssertionError(
                f"for values {values} expected {want:.5f}, got {got:.5f}; the half-width is "
                "t(0.975, n-1) * std(values, ddof=1) / sqrt(n)"
            )
    _ok("your interval matches tu.summarize(values).ci95.")


def check_attribute_map(fn: Callable[[np.ndarray, np.ndarray, float], np.ndarray]) -> None:
    r"""Exercise check (chapter 2): ``fn(X, T, alpha)`` returns the ridge solution ``W``.

    ``W = (X^T X + alpha I)^{-1} X^T T`` for inputs ``X`` ``[n, d]`` and attribute
    targets ``T`` ``[n, m]`` (no intercept). Prints a message when right, raises
    ``AssertionError`` with a hint when wrong.
    """
    rng = np.random.default_rng(0)
    X = rng.normal(size=(30, 5))
    T = np.sign(rng.normal(size=(30, 3)))
    for alpha in (0.5, 10.0):
        want = np.linalg.solve(X.T @ X + alpha * np.eye(5), X.T @ T)
        got = fn(X.copy(), T.copy(), alpha)
        got = got.detach().cpu().numpy() if isinstance(got, torch.Tensor) else np.asarray(got)
        if got.shape != want.shape:
            hint = " (transposed?)" if got.shape == want.shape[::-1] else ""
            raise AssertionError(
                f"W must have shape [d, m] = {want.shape} (inputs x attributes), got "
                f"{got.shape}{hint}"
            )
        unreg = np.linalg.lstsq(X, T, rcond=None)[0]
        if np.allclose(got, unreg, atol=1e-6):
            raise AssertionError("that is plain least squares: add alpha * I to X^T X")
        if not np.allclose(got, want, atol=1e-6):
            raise AssertionError(
                f"alpha={alpha}: W differs from (X^T X + alpha I)^-1 X^T T by up to "
                f"{np.abs(got - want).max():.3g}; solve the linear system with np.linalg.solve"
            )
    _ok("W = (X^T X + alpha I)^-1 X^T T, the map AttributeZeroShot learns.")
