"""Multi-task models (hard parameter sharing) and a denoising autoencoder for pretraining (chapter 2).

Methods layer. :class:`MultiTaskNet` shares one body between several heads and
:func:`fit_multitask` trains them jointly; :class:`Autoencoder` and
:func:`fit_autoencoder` pretrain features without labels. Both trainers run
through :func:`transfer_utils.train_loop` and return a
:class:`transfer_utils.History`.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from . import _validate as V
from .data import ArrayDataset, dataset_labels, make_loader
from .training import History, train_loop

__all__ = ["MultiTaskNet", "fit_multitask", "Autoencoder", "fit_autoencoder"]


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
            V.positive_int(k, f"task {name!r}: the number of classes")
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


class _JointBatches:
    """One batch of every task per step: ``({task: x}, {task: y})``; an epoch is the largest task's."""

    def __init__(self, loaders: Mapping[str, object]):
        self.loaders = dict(loaders)
        self.streams = {name: _cycle(loader) for name, loader in self.loaders.items()}

    def __len__(self) -> int:
        return max(len(loader) for loader in self.loaders.values())

    def __iter__(self):
        for _ in range(len(self)):
            batches = {name: next(s) for name, s in self.streams.items()}
            yield ({n: b[0] for n, b in batches.items()}, {n: b[1] for n, b in batches.items()})


def fit_multitask(
    model: MultiTaskNet,
    datasets: Mapping[str, object],
    *,
    epochs: int | None = None,
    steps: int | None = None,
    batch_size: int = 32,
    lr: float = 1e-3,
    weights: Mapping[str, float] | None = None,
    seed: int = 0,
    device: str | torch.device | None = None,
    progress: bool | None = None,
) -> History:
    r"""Train all tasks of ``model`` jointly for ``epochs`` or ``steps``.

    Each step draws one batch from every task's dataset (they may differ, e.g. a
    few digit labels and many cheap coarse labels), runs the shared body, and
    minimises the weighted sum of the tasks' cross-entropies,

    .. math:: \mathcal{L} = \sum_t w_t \, \mathrm{CE}(h_t(g(x_t)), y_t).

    An epoch is one pass over the largest task's data (smaller ones cycle).

    Parameters
    ----------
    model : MultiTaskNet
    datasets : mapping of task name to dataset
        One dataset per head; labels must fit that head.
    epochs, steps : int
        Exactly one of them.
    batch_size : int
        Per task (smaller datasets use their whole size).
    lr : float
        Adam learning rate for all parameters.
    weights : mapping of task name to float, optional
        Loss weights ``w_t`` (default 1 for every task).
    seed : int
        Seeds everything, and each task's shuffling.
    device : str or torch.device, optional

    Returns
    -------
    History
        ``train_loss`` is the mean weighted loss per epoch.

    Examples
    --------
    >>> import transfer_utils as tu
    >>> ds = tu.load_digits()
    >>> odd = tu.ArrayDataset(ds.x, ds.y % 2, ["even", "odd"])
    >>> net = tu.MultiTaskNet.from_model(tu.SmallCNN(10), {"digit": 10, "odd": 2})
    >>> tu.fit_multitask(net, {"digit": ds, "odd": odd}, steps=5, progress=False).steps
    5
    """
    if not isinstance(model, MultiTaskNet):
        raise TypeError(f"model must be a tu.MultiTaskNet, got {type(model).__name__}")
    V.epochs_or_steps(epochs, steps, "fit_multitask")
    if not isinstance(datasets, Mapping) or set(datasets) != set(model.tasks):
        got = sorted(datasets) if isinstance(datasets, Mapping) else type(datasets).__name__
        raise ValueError(
            f"give one dataset per task: the model has tasks {model.tasks}, "
            f"datasets were given for {got}"
        )
    weights = dict(weights or {})
    unknown = set(weights) - set(model.tasks)
    if unknown:
        raise ValueError(f"weights name unknown tasks {sorted(unknown)}; tasks are {model.tasks}")
    for name, w in weights.items():
        V.nonneg(w, f"the weight of task {name!r}", "fit_multitask")
    seed = V.seed_value(seed, "fit_multitask")
    for name, ds in datasets.items():
        n_out = model.heads[name].out_features
        y = dataset_labels(ds)
        if len(y) == 0:
            raise ValueError(f"the dataset for task {name!r} is empty")
        if int(y.max()) >= n_out:
            raise ValueError(
                f"task {name!r}: labels go up to {int(y.max())} but its head has {n_out} "
                "outputs; relabel the data or widen the head"
            )
    batches = _JointBatches({
        name: make_loader(ds, min(batch_size, len(ds)), shuffle=True, seed=seed + i)
        for i, (name, ds) in enumerate(datasets.items())
    })

    def step(net: MultiTaskNet, xs: dict, ys: dict):
        dev = next(net.parameters()).device
        xs = [xs[name].to(dev) for name in net.tasks]
        if len({tuple(x.shape[1:]) for x in xs}) == 1:  # one pass through the shared body
            feats = net.body(torch.cat(xs)).split([len(x) for x in xs])
        else:
            feats = [net.body(x) for x in xs]
        loss = torch.zeros((), device=dev)
        for name, f in zip(net.tasks, feats, strict=True):
            task_loss = F.cross_entropy(net.heads[name](f), ys[name].to(dev))
            loss = loss + weights.get(name, 1.0) * task_loss
        return loss, None

    history = train_loop(model, batches, step, epochs=epochs, steps=steps,
                         optimizer=torch.optim.Adam(model.parameters(), lr=V.positive(
                             lr, "lr", "fit_multitask")), seed=seed, device=device,
                         progress=progress, class_labels=False, desc="multi-task")
    model.eval()
    return history


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
            V.positive_int(v, what, "Autoencoder")
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
    data,
    *,
    epochs: int | None = None,
    steps: int | None = None,
    batch_size: int = 64,
    lr: float = 1e-3,
    mask: float = 0.5,
    seed: int = 0,
    device: str | torch.device | None = None,
    progress: bool | None = None,
) -> History:
    """Train ``model`` to rebuild its inputs from corrupted copies; labels are never used.

    Each step zeroes a random fraction ``mask`` of the input pixels and scores the
    reconstruction of the *clean* input with binary cross-entropy (inputs must lie
    in [0, 1]). ``mask=0`` gives a plain autoencoder. ``data`` is a dataset (its
    labels are ignored) or a tensor of inputs.

    Returns
    -------
    History
        ``train_loss`` is the mean reconstruction loss per epoch.

    Examples
    --------
    >>> import transfer_utils as tu
    >>> ae = tu.Autoencoder((1, 8, 8), hidden=32, code=8)
    >>> hist = tu.fit_autoencoder(ae, tu.load_digits(), steps=60, progress=False)
    >>> hist.train_loss[-1] < hist.train_loss[0]
    True
    """
    if not isinstance(model, Autoencoder):
        raise TypeError(f"model must be a tu.Autoencoder, got {type(model).__name__}")
    V.epochs_or_steps(epochs, steps, "fit_autoencoder")
    mask = V.number(mask, "mask (the fraction of pixels hidden)", "fit_autoencoder", low=0.0,
                    high=1.0, high_open=True)
    seed = V.seed_value(seed, "fit_autoencoder")
    if isinstance(data, ArrayDataset):
        x = data.x
    elif isinstance(data, torch.utils.data.Dataset):
        x = torch.stack([torch.as_tensor(data[i][0]) for i in range(len(data))])
    else:
        x = torch.as_tensor(data, dtype=torch.float32)
    if len(x) == 0:
        raise ValueError("no inputs to train on")
    if tuple(x.shape[1:]) != model.in_shape:
        raise ValueError(
            f"inputs have shape {tuple(x.shape[1:])} but the autoencoder expects {model.in_shape}"
        )
    if not torch.isfinite(x).all() or float(x.min()) < 0 or float(x.max()) > 1:
        raise ValueError("inputs must lie in [0, 1] for the cross-entropy reconstruction loss")
    loader = make_loader(ArrayDataset(x, torch.zeros(len(x), dtype=torch.long)),
                         min(batch_size, len(x)), shuffle=True, seed=seed)
    g = torch.Generator().manual_seed(seed + 2)

    def step(net: Autoencoder, xb: torch.Tensor, _y):
        keep = (torch.rand(xb.shape, generator=g) >= mask).to(xb.dtype).to(xb.device)
        recon = net(xb * keep)
        return F.binary_cross_entropy_with_logits(recon, xb), recon

    history = train_loop(model, loader, step, epochs=epochs, steps=steps,
                         optimizer=torch.optim.Adam(model.parameters(), lr=V.positive(
                             lr, "lr", "fit_autoencoder")), seed=seed, device=device,
                         progress=progress, class_labels=False, desc="autoencoder")
    model.eval()
    return history
