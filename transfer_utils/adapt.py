"""Domain adaptation without target labels (chapter 10): AdaBN, CORAL, DANN, self-training, TENT, BBSE.

Every method here starts from a model trained on a labelled *source* domain and
uses unlabelled *target* inputs only. Chapter 10 explains each and measures it
against the untouched source model:

- :func:`adapt_batchnorm` (AdaBN): re-estimate BatchNorm statistics on the target;
- :func:`coral_loss`, :func:`train_coral` (Deep CORAL): match second moments of features;
- :func:`grad_reverse`, :class:`DomainDiscriminator`, :func:`train_dann` (DANN):
  features a domain classifier cannot tell apart;
- :func:`self_train`: confidence-thresholded pseudo-labels, round after round;
- :func:`tent` (TENT): minimise prediction entropy through BatchNorm's affine parameters;
- :func:`bbse_weights`, :func:`reweight_logits` (BBSE): label shift, corrected from
  a confusion matrix;
- :func:`domain_weights`, :func:`importance_weighted_evaluate`,
  :func:`proxy_a_distance`: choosing knobs and measuring the divergence without
  target labels.

The trainers use the package's one training loop
(:func:`transfer_utils.training.train_loop`) with their own loss, take their
length as exactly one of ``epochs=`` / ``steps=``, and change the model in place.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import _validate as V
from .data import ArrayDataset, make_loader
from .models import get_head
from .runtime import get_device, seed_everything
from .surgery import batchnorm_layers
from .training import History, fit, predict, train_loop

__all__ = [
    "adapt_batchnorm",
    "coral_loss",
    "grad_reverse",
    "GradientReversal",
    "DomainDiscriminator",
    "DomainPairs",
    "features_and_logits",
    "train_coral",
    "dann_lambda",
    "train_dann",
    "self_train",
    "tent",
    "ADAPT_METHODS",
    "domain_adapt",
    "joint_confusion",
    "bbse_weights",
    "reweight_logits",
    "domain_weights",
    "effective_sample_size",
    "importance_weighted_evaluate",
    "proxy_a_distance",
]



# --------------------------------------------------------------------------- AdaBN


@torch.no_grad()
def adapt_batchnorm(
    model: nn.Module,
    loader: Iterable,
    *,
    inplace: bool = False,
    device: str | torch.device | None = None,
) -> nn.Module:
    """Re-estimate every BatchNorm layer's running mean and variance on (unlabelled) target data.

    BatchNorm normalises with statistics of the *source* data; under domain shift
    those are wrong for the target. Resetting them and averaging the statistics
    of the target batches (no labels, no gradient step) is AdaBN (Li et al. 2018),
    the cheapest adaptation chapter 7 measures and chapter 10's first baseline.
    Only the statistics change; all weights stay as they were. The result is in
    eval mode.

    Parameters
    ----------
    model : nn.Module
        A network with BatchNorm layers.
    loader : iterable of (x, y) or of x
        Target inputs; labels, if present, are ignored.
    inplace : bool
        Change ``model`` itself instead of a copy.
    device : str or torch.device, optional
        Default :func:`transfer_utils.get_device`.

    Returns
    -------
    nn.Module
        The adapted model (a copy unless ``inplace``), in eval mode.

    Examples
    --------
    >>> import transfer_utils as tu
    >>> src = tu.zoo.load("mnist8_cnn")
    >>> adapted = tu.adapt_batchnorm(src, tu.make_loader(tu.load_digits(), 256))
    >>> bool((adapted.body.block1.bn.running_mean != src.body.block1.bn.running_mean).any())
    True
    """
    bns = batchnorm_layers(model)
    if not bns:
        raise ValueError(f"{type(model).__name__} has no BatchNorm layers: nothing to adapt")
    net = model if inplace else copy.deepcopy(model)
    device = get_device(device)
    net.to(device).eval()
    bns = batchnorm_layers(net)
    momenta = [m.momentum for m in bns]
    seen = 0
    try:
        for m in bns:
            m.reset_running_stats()
            m.momentum = None  # cumulative average over all batches
            nn.Module.train(m, True)
        for batch in loader:
            x = batch[0] if isinstance(batch, (tuple, list)) else batch
            net(x.to(device))
            seen += len(x)
    finally:
        for m, momentum in zip(bns, momenta, strict=True):
            m.momentum = momentum
            nn.Module.train(m, False)
    if seen == 0:
        raise ValueError("the loader yielded no batches: no target statistics to estimate")
    return net.eval()


# --------------------------------------------------------------------------- CORAL


def _covariance(f: torch.Tensor) -> torch.Tensor:
    centred = f - f.mean(0, keepdim=True)
    return centred.T @ centred / (f.shape[0] - 1)


def coral_loss(source_features: torch.Tensor, target_features: torch.Tensor) -> torch.Tensor:
    r"""Deep CORAL loss (Sun and Saenko 2016): the distance between two feature covariances.

    .. math::

        \ell_{\mathrm{CORAL}} = \frac{1}{4 d^2} \, \lVert C_S - C_T \rVert_F^2,

    where :math:`C_S`, :math:`C_T` are the unbiased covariances (divided by
    :math:`n - 1`) of the ``[n_s, d]`` source and ``[n_t, d]`` target features.
    It is 0 when the second moments match and differentiable in both inputs;
    chapter 10 adds it, times a weight, to the source cross-entropy
    (:func:`train_coral`).

    Parameters
    ----------
    source_features, target_features : Tensor
        ``[n_s, d]`` and ``[n_t, d]`` with the same width ``d`` and at least two rows each.

    Returns
    -------
    Tensor
        A scalar.

    Examples
    --------
    >>> import torch, transfer_utils as tu
    >>> xs = torch.tensor([[0.0, 0.0], [2.0, 0.0]])   # covariance [[2, 0], [0, 0]]
    >>> xt = torch.tensor([[0.0, 0.0], [0.0, 2.0]])   # covariance [[0, 0], [0, 2]]
    >>> tu.coral_loss(xs, xt)                          # (4 + 4) / (4 * 2**2)
    tensor(0.5000)
    """
    for name, f in (("source_features", source_features), ("target_features", target_features)):
        if not isinstance(f, torch.Tensor):
            raise TypeError(f"coral_loss: {name} must be a tensor [n, d], got {type(f).__name__}")
        if f.ndim != 2:
            raise ValueError(
                f"coral_loss: {name} must be 2-D [n, d], got shape {V.shape_str(f.shape)}; "
                "flatten the features first (f.flatten(1))"
            )
        if f.shape[0] < 2:
            raise ValueError(
                f"coral_loss: {name} has {f.shape[0]} row(s); a covariance needs at least 2 "
                "examples (use batches of 2 or more)"
            )
    if source_features.shape[1] != target_features.shape[1]:
        raise ValueError(
            f"coral_loss: source and target features have different widths "
            f"({source_features.shape[1]} and {target_features.shape[1]}); take both from "
            "the same layer of the same network"
        )
    d = source_features.shape[1]
    diff = _covariance(source_features) - _covariance(target_features)
    return (diff * diff).sum() / (4 * d * d)


# --------------------------------------------------------------------------- DANN


class _ReverseGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, lambd: float) -> torch.Tensor:
        ctx.lambd = lambd
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return -ctx.lambd * grad, None


def grad_reverse(x: torch.Tensor, lambd: float = 1.0) -> torch.Tensor:
    r"""Gradient reversal (Ganin and Lempitsky 2015): identity forward, ``-lambd`` times the gradient backward.

    Put between a feature extractor and a domain classifier, it lets one
    backward pass train the classifier to *tell* the domains apart while it
    pushes the features to make them *indistinguishable*: the heart of DANN
    (:func:`train_dann`, chapter 10).

    Parameters
    ----------
    x : Tensor
        Any tensor (usually features ``[n, d]``).
    lambd : float
        The reversal strength, a finite number ``>= 0``; 0 blocks the gradient.

    Examples
    --------
    >>> import torch, transfer_utils as tu
    >>> x = torch.ones(3, requires_grad=True)
    >>> tu.grad_reverse(x, 0.5).sum().backward()
    >>> x.grad
    tensor([-0.5000, -0.5000, -0.5000])
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"grad_reverse: x must be a tensor, got {type(x).__name__}")
    lambd = V.nonneg(lambd, "lambd", "grad_reverse")
    return _ReverseGrad.apply(x, lambd)


class GradientReversal(nn.Module):
    """:func:`grad_reverse` as a layer, for an ``nn.Sequential`` (chapter 10).

    Examples
    --------
    >>> import torch, transfer_utils as tu
    >>> layer = tu.GradientReversal(2.0)
    >>> x = torch.ones(2, requires_grad=True)
    >>> layer(x).sum().backward(); x.grad
    tensor([-2., -2.])
    """

    def __init__(self, lambd: float = 1.0):
        super().__init__()
        self.lambd = V.nonneg(lambd, "lambd", "GradientReversal")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return grad_reverse(x, self.lambd)

    def extra_repr(self) -> str:
        return f"lambd={self.lambd:g}"


class DomainDiscriminator(nn.Sequential):
    """A small MLP that says whether features come from the target (logit > 0) or the source.

    ``in_features -> hidden -> ReLU -> hidden -> ReLU -> 1``, as in DANN's
    domain classifier (chapter 10). Its output is one logit per example
    (``[n, 1]``), for ``binary_cross_entropy_with_logits`` with target = 1.

    Examples
    --------
    >>> import torch, transfer_utils as tu
    >>> tu.DomainDiscriminator(64, hidden=32)(torch.zeros(5, 64)).shape
    torch.Size([5, 1])
    """

    def __init__(self, in_features: int, hidden: int = 256):
        in_features = V.positive_int(in_features, "in_features", "DomainDiscriminator")
        hidden = V.positive_int(hidden, "hidden", "DomainDiscriminator")
        super().__init__(
            nn.Linear(in_features, hidden), nn.ReLU(),
            nn.Linear(hidden, hidden), nn.ReLU(),
            nn.Linear(hidden, 1),
        )


# --------------------------------------------------------------------------- batches


def _inputs(batch) -> torch.Tensor:
    x = batch[0] if isinstance(batch, (tuple, list)) else batch
    if not isinstance(x, torch.Tensor):
        raise TypeError(
            f"the target loader must yield input tensors or (x, y) pairs, got {type(x).__name__}"
        )
    return x


class DomainPairs:
    """Source and target batches side by side: ``(cat([x_s, x_t]), y_s)`` (chapter 10).

    One pass over ``source_loader`` is one epoch; ``target_loader`` is cycled
    (restarted whenever it runs out). The target labels are dropped, unless
    ``target_labels`` asks for them (self-training's pseudo-labels), in which
    case the labels are ``cat([y_s, y_t])``. The first ``len(y_s)`` rows of
    each input batch are source examples, so a loss can split them again; that
    is how :func:`train_coral` and :func:`train_dann` run in the package's one
    training loop, and why BatchNorm sees both domains in every batch.

    Examples
    --------
    >>> import torch, transfer_utils as tu
    >>> src = tu.make_loader(tu.load_digits(), 32)
    >>> tgt = [torch.zeros(16, 1, 8, 8)]                  # bare inputs are fine
    >>> x, y = next(iter(tu.DomainPairs(src, tgt)))
    >>> tuple(x.shape), tuple(y.shape), len(tu.DomainPairs(src, tgt)) == len(src)
    ((48, 1, 8, 8), (32,), True)
    """

    def __init__(self, source_loader: Iterable, target_loader: Iterable, *,
                 target_labels: bool = False):
        for name, loader in (("source_loader", source_loader), ("target_loader", target_loader)):
            if isinstance(loader, (str, bytes, torch.Tensor, ArrayDataset)) or not hasattr(
                loader, "__iter__"
            ):
                raise TypeError(
                    f"DomainPairs: {name} must be a loader of batches such as "
                    f"tu.make_loader(dataset, 64, shuffle=True), got {type(loader).__name__}"
                )
        self.source_loader, self.target_loader = source_loader, target_loader
        self.target_labels = bool(target_labels)

    def __len__(self) -> int:
        return len(self.source_loader)  # type: ignore[arg-type]

    def _target_batches(self) -> Iterator:
        while True:
            empty = True
            for batch in self.target_loader:
                empty = False
                yield batch
            if empty:
                raise ValueError("DomainPairs: the target loader yielded no batch")

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        targets = self._target_batches()
        for xs, ys in self.source_loader:
            batch = next(targets)
            xt = _inputs(batch).to(xs.device)
            if xt.shape[1:] != xs.shape[1:]:
                raise ValueError(
                    f"DomainPairs: source inputs are {V.shape_str(xs.shape[1:])} but target "
                    f"inputs are {V.shape_str(xt.shape[1:])}; resize one domain to the other "
                    "(e.g. tu.load_digits(image_size=28))"
                )
            x = torch.cat([xs, xt])
            if self.target_labels:
                if not isinstance(batch, (tuple, list)) or len(batch) != 2:
                    raise TypeError("DomainPairs(target_labels=True) needs (x, y) target batches")
                yield x, torch.cat([ys, batch[1].to(ys.device)])
            else:
                yield x, ys


def features_and_logits(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One forward pass that returns the input of the model's head (the features) and its output.

    Works for any model :func:`transfer_utils.get_head` knows (``.head``, ``.fc``,
    ``.classifier``); the features keep their graph, so a loss on them trains
    the body (chapter 10's CORAL and DANN).

    Examples
    --------
    >>> import torch, transfer_utils as tu
    >>> f, logits = tu.features_and_logits(tu.SmallCNN(), torch.zeros(4, 1, 8, 8))
    >>> tuple(f.shape), tuple(logits.shape)
    ((4, 64), (4, 10))
    """
    _, _, head = get_head(model)
    seen: list[torch.Tensor] = []
    handle = head.register_forward_pre_hook(lambda _m, args: seen.append(args[0]))
    try:
        logits = model(x)
    finally:
        handle.remove()
    if len(seen) != 1:
        raise RuntimeError(f"the head of {type(model).__name__} ran {len(seen)} times in one "
                           "forward pass; features_and_logits needs exactly one call")
    return seen[0].flatten(1), logits


# --------------------------------------------------------------------------- trainers


def _steps_per_epoch(loader) -> int | None:
    try:
        return len(loader)
    except TypeError:
        return None


def train_coral(
    model: nn.Module,
    source_loader: Iterable,
    target_loader: Iterable,
    *,
    weight: float = 1.0,
    epochs: int | None = None,
    steps: int | None = None,
    lr: float = 1e-3,
    seed: int | None = None,
    device: str | torch.device | None = None,
    progress: bool | None = None,
) -> History:
    r"""Deep CORAL: train on labelled source batches while matching feature covariances to the target.

    Each step sees a source batch and a target batch (:class:`DomainPairs`) and minimises

    .. math:: \mathrm{CE}(h(f(x_s)), y_s) + w \, \ell_{\mathrm{CORAL}}(f(x_s), f(x_t)),

    with :math:`f` the features entering the head (:func:`coral_loss`). The model
    changes in place; Adam with ``lr`` over every trainable parameter. Chapter 10
    measures it on digits and MNIST-1D.

    Parameters
    ----------
    model : nn.Module
        The source model (its head predicts the shared classes).
    source_loader : iterable of (x, y)
        Labelled source batches; one pass is one epoch.
    target_loader : iterable of (x, y) or of x
        Unlabelled target batches (labels, if any, are never read); cycled.
    weight : float
        :math:`w \ge 0`, the CORAL term's weight (0 = fine-tune on the source only).
    epochs, steps : int
        How long: exactly one of them.
    lr : float
    seed : int, optional
        Seed everything first.
    device, progress
        As in :func:`transfer_utils.fit`.

    Returns
    -------
    History
        ``train_acc`` is the accuracy on the *source* batches.

    Examples
    --------
    >>> import transfer_utils as tu
    >>> net = tu.zoo.load("mnist8_cnn")
    >>> src = tu.make_loader(tu.zoo.source_data("mnist8_cnn")[1], 32, shuffle=True)
    >>> tgt = tu.make_loader(tu.load_digits(), 32, shuffle=True)
    >>> tu.train_coral(net, src, tgt, weight=1.0, steps=3, seed=0, progress=False).steps
    3
    """
    weight = V.nonneg(weight, "weight", "train_coral")
    lr = V.positive(lr, "lr", "train_coral")
    pairs = DomainPairs(source_loader, target_loader)

    def step(net: nn.Module, x: torch.Tensor, y: torch.Tensor):
        n = len(y)
        feats, logits = features_and_logits(net, x)
        loss = F.cross_entropy(logits[:n], y)
        if weight > 0 and len(x) - n >= 2 and n >= 2:
            loss = loss + weight * coral_loss(feats[:n], feats[n:])
        return loss, logits[:n]

    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("train_coral: the model has no trainable parameters; unfreeze some")
    return train_loop(model, pairs, step, optimizer=torch.optim.Adam(params, lr=lr),
                      epochs=epochs, steps=steps, seed=seed, device=device,
                      progress=progress, desc="train_coral")


class _WithDiscriminator(nn.Module):
    """The model and its domain discriminator as one module, so one loop moves and trains both."""

    def __init__(self, model: nn.Module, discriminator: nn.Module):
        super().__init__()
        self.model, self.discriminator = model, discriminator

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def dann_lambda(progress: float, lambd: float = 1.0, gamma: float = 10.0) -> float:
    r"""DANN's reversal schedule: :math:`\lambda_p = \lambda\,(2 / (1 + e^{-\gamma p}) - 1)`, ``p`` in [0, 1].

    It starts at 0 (the discriminator is random, its gradient noise) and rises
    to almost ``lambd`` (Ganin et al. 2016, section 5.2.2).

    Examples
    --------
    >>> from transfer_utils.adapt import dann_lambda
    >>> dann_lambda(0.0), round(dann_lambda(1.0), 4)
    (0.0, 0.9999)
    """
    p = min(1.0, max(0.0, float(progress)))
    return lambd * (2.0 / (1.0 + math.exp(-gamma * p)) - 1.0)


def train_dann(
    model: nn.Module,
    source_loader: Iterable,
    target_loader: Iterable,
    *,
    lambd: float = 1.0,
    epochs: int | None = None,
    steps: int | None = None,
    lr: float = 1e-3,
    discriminator_lr: float | None = None,
    discriminator: nn.Module | None = None,
    schedule: bool = True,
    seed: int | None = None,
    device: str | torch.device | None = None,
    progress: bool | None = None,
) -> History:
    r"""DANN (Ganin and Lempitsky 2015): learn features a domain discriminator cannot tell apart.

    Each step sees a source and a target batch (:class:`DomainPairs`); the
    features :math:`f` (the head's input) feed the head and, through
    :func:`grad_reverse`, a :class:`DomainDiscriminator` :math:`D`. One backward pass of

    .. math:: \mathrm{CE}(h(f(x_s)), y_s) + \mathrm{BCE}(D(R_\lambda(f(x))), d)

    (:math:`d` = 0 for source rows, 1 for target rows) trains :math:`D` to
    separate the domains and, reversed, the body to confuse it. With
    ``schedule`` the reversal strength rises from 0 to ``lambd`` over the run
    (:func:`dann_lambda`). The model changes in place; Adam trains the model at ``lr`` and the
    discriminator at ``discriminator_lr``.

    Parameters
    ----------
    model : nn.Module
    source_loader, target_loader
        As in :func:`train_coral`.
    lambd : float
        The largest reversal strength (``>= 0``; 0 = source training plus an unused
        discriminator).
    epochs, steps : int
        How long: exactly one of them (``epochs`` needs a source loader with a length).
    lr : float
        Adam's learning rate for the model.
    discriminator_lr : float, optional
        Adam's learning rate for the discriminator (a freshly initialised network,
        like a new head); default ``lr``.
    discriminator : nn.Module, optional
        Maps features ``[n, d]`` to logits ``[n, 1]``; default a fresh
        ``DomainDiscriminator(d)``. Pass your own to inspect it afterwards.
    schedule : bool
        Ramp :math:`\lambda` up (True) or use ``lambd`` from the first step.
    seed, device, progress
        As in :func:`transfer_utils.fit`.

    Returns
    -------
    History
        ``train_acc`` is the accuracy on the *source* batches.

    Examples
    --------
    >>> import transfer_utils as tu
    >>> net = tu.zoo.load("mnist8_cnn")
    >>> src = tu.make_loader(tu.zoo.source_data("mnist8_cnn")[1], 32, shuffle=True)
    >>> tgt = tu.make_loader(tu.load_digits(), 32, shuffle=True)
    >>> tu.train_dann(net, src, tgt, lambd=1.0, steps=3, seed=0, progress=False).steps
    3
    """
    lambd = V.nonneg(lambd, "lambd", "train_dann")
    lr = V.positive(lr, "lr", "train_dann")
    discriminator_lr = lr if discriminator_lr is None else V.positive(
        discriminator_lr, "discriminator_lr", "train_dann")
    kind, length = V.epochs_or_steps(epochs, steps, "train_dann")
    pairs = DomainPairs(source_loader, target_loader)
    if seed is not None:
        seed_everything(V.seed_value(seed, "train_dann"))
    if discriminator is None:
        _, _, head = get_head(model)
        discriminator = DomainDiscriminator(head.in_features)
    if not isinstance(discriminator, nn.Module):
        raise TypeError(f"train_dann: discriminator must be an nn.Module, got "
                        f"{type(discriminator).__name__}")
    per_epoch = _steps_per_epoch(pairs)
    if kind == "epochs" and per_epoch is None:
        raise TypeError("train_dann: epochs= needs a source loader with a length; give steps=")
    total = length if kind == "steps" else length * per_epoch
    both = _WithDiscriminator(model, discriminator)
    done = [0]

    def step(net: _WithDiscriminator, x: torch.Tensor, y: torch.Tensor):
        n = len(y)
        feats, logits = features_and_logits(net.model, x)
        strength = dann_lambda(done[0] / total, lambd) if schedule else lambd
        done[0] += 1
        d_logits = net.discriminator(grad_reverse(feats, strength)).reshape(-1)
        domain = torch.cat([torch.zeros(n, device=x.device), torch.ones(len(x) - n, device=x.device)])
        loss = F.cross_entropy(logits[:n], y) + F.binary_cross_entropy_with_logits(d_logits, domain)
        return loss, logits[:n]

    groups = [{"params": [p for p in model.parameters() if p.requires_grad], "lr": lr},
              {"params": [p for p in discriminator.parameters() if p.requires_grad],
               "lr": discriminator_lr}]
    history = train_loop(both, pairs, step, optimizer=torch.optim.Adam(groups),
                         epochs=epochs, steps=steps, device=device, progress=progress,
                         desc="train_dann")
    return history


def _collect_inputs(loader: Iterable) -> torch.Tensor:
    xs = [_inputs(b).cpu() for b in loader]
    if not xs:
        raise ValueError("the target loader yielded no batch")
    return torch.cat(xs)


def self_train(
    model: nn.Module,
    source_loader: Iterable,
    target_loader: Iterable,
    *,
    threshold: float = 0.9,
    rounds: int = 2,
    epochs: int | None = None,
    steps: int | None = None,
    lr: float = 1e-3,
    batch_size: int = 32,
    seed: int | None = None,
    device: str | torch.device | None = None,
    progress: bool | None = None,
) -> list[dict]:
    """Self-training: label the target with the model's confident predictions, train on them, repeat.

    Each of ``rounds`` rounds (1) predicts every target input in eval mode,
    (2) keeps those whose top softmax probability is at least ``threshold``,
    with the predicted class as a pseudo-label, and (3) trains the model on
    source batches and pseudo-labelled target batches side by side
    (:class:`DomainPairs` with ``target_labels=True``, cross-entropy on both) for
    ``epochs`` or ``steps``, *per round*. No true target label is read.
    Confident mistakes are learnt too: chapter 10 shows when that helps and
    when it hurts. The model changes in place.

    Parameters
    ----------
    model : nn.Module
    source_loader : iterable of (x, y)
    target_loader : iterable of (x, y) or of x
        The unlabelled target pool (read once per round to pseudo-label it).
    threshold : float
        Confidence needed for a pseudo-label, in [0, 1].
    rounds : int
        Pseudo-label-and-train rounds.
    epochs, steps : int
        Training per round: exactly one of them.
    lr : float
    batch_size : int
        Batch size of the pseudo-labelled target loader.
    seed, device, progress
        As in :func:`transfer_utils.fit`.

    Returns
    -------
    list of dict
        One per round: ``{"round", "kept", "pool", "history"}`` (``kept`` of the
        ``pool`` target inputs had a pseudo-label; ``history`` is ``None`` when
        none did, and that round trains nothing).

    Examples
    --------
    >>> import transfer_utils as tu
    >>> net = tu.zoo.load("mnist8_cnn")
    >>> src = tu.make_loader(tu.zoo.source_data("mnist8_cnn")[1], 32, shuffle=True)
    >>> tgt = tu.make_loader(tu.load_digits().subset(range(200)), 100)
    >>> log = tu.self_train(net, src, tgt, threshold=0.9, rounds=1, steps=2, seed=0,
    ...                     progress=False)
    >>> log[0]["pool"], 0 < log[0]["kept"] <= 200
    (200, True)
    """
    threshold = V.probability(threshold, "threshold", "self_train")
    rounds = V.positive_int(rounds, "rounds", "self_train")
    lr = V.positive(lr, "lr", "self_train")
    batch_size = V.positive_int(batch_size, "batch_size", "self_train")
    V.epochs_or_steps(epochs, steps, "self_train")
    if seed is not None:
        seed_everything(V.seed_value(seed, "self_train"))
    device = get_device(device)
    pool = _collect_inputs(target_loader)
    unlabelled = ArrayDataset(pool, torch.zeros(len(pool), dtype=torch.long))
    log = []
    for r in range(1, rounds + 1):
        logits, _ = predict(model, make_loader(unlabelled, 512), device=device)
        conf, label = logits.softmax(1).max(1)
        keep = conf >= threshold
        kept = int(keep.sum())
        history = None
        if kept:
            pseudo = ArrayDataset(pool[keep], label[keep])
            target = make_loader(pseudo, min(batch_size, kept), shuffle=True,
                                 seed=0 if seed is None else seed + r)
            params = [p for p in model.parameters() if p.requires_grad]
            history = fit(model, DomainPairs(source_loader, target, target_labels=True),
                          epochs=epochs, steps=steps, optimizer=torch.optim.Adam(params, lr=lr),
                          device=device, progress=progress)
        log.append({"round": r, "kept": kept, "pool": len(pool), "history": history})
    return log


class _Unlabelled:
    """A loader's inputs only, as ``(x, None)`` batches: no label can reach the loss."""

    def __init__(self, loader: Iterable):
        self.loader = loader

    def __len__(self) -> int:
        return len(self.loader)  # type: ignore[arg-type]

    def __iter__(self):
        for batch in self.loader:
            yield _inputs(batch), None


def _entropy(logits: torch.Tensor) -> torch.Tensor:
    logp = logits.log_softmax(1)
    return -(logp.exp() * logp).sum(1)


def tent(
    model: nn.Module,
    target_loader: Iterable,
    *,
    epochs: int | None = None,
    steps: int | None = None,
    lr: float = 1e-3,
    seed: int | None = None,
    device: str | torch.device | None = None,
    progress: bool | None = None,
) -> History:
    r"""TENT (Wang et al. 2021): minimise the entropy of the predictions on target batches, at test time.

    Only BatchNorm's affine parameters :math:`\gamma, \beta` are trained (every
    other weight is held fixed), with BatchNorm normalising each target batch
    by its own statistics, on the mean prediction entropy
    :math:`-\sum_c p_c \log p_c`. No source data and no label is used. Offline
    variant: after the updates the running statistics are re-estimated on the
    whole target loader (:func:`adapt_batchnorm`), so the adapted model is
    evaluated in eval mode like every other. The model changes in place; the
    ``requires_grad`` flags are restored afterwards.

    Parameters
    ----------
    model : nn.Module
        A network with affine BatchNorm layers.
    target_loader : iterable of (x, y) or of x
        Unlabelled target batches (labels, if present, are dropped before the loss).
    epochs, steps : int
        How long: exactly one of them.
    lr : float
        Adam's learning rate for :math:`\gamma, \beta`.
    seed, device, progress
        As in :func:`transfer_utils.fit`.

    Returns
    -------
    History
        ``train_loss`` is the mean entropy per epoch (``train_acc`` is NaN: no labels).

    Examples
    --------
    >>> import transfer_utils as tu
    >>> net = tu.zoo.load("mnist8_cnn")
    >>> tgt = tu.make_loader(tu.load_digits(), 128, shuffle=True)
    >>> h = tu.tent(net, tgt, steps=3, seed=0, progress=False)
    >>> h.steps, h.train_loss[0] > 0
    (3, True)
    """
    lr = V.positive(lr, "lr", "tent")
    V.epochs_or_steps(epochs, steps, "tent")
    bns = [m for m in batchnorm_layers(model) if m.affine]
    if not bns:
        raise ValueError(
            f"tent: {type(model).__name__} has no BatchNorm layer with affine parameters; "
            "TENT adapts gamma and beta of BatchNorm, so it needs a network that has them"
        )
    affine = [p for m in bns for p in (m.weight, m.bias) if p is not None]
    flags = {p: p.requires_grad for p in model.parameters()}
    device = get_device(device)

    def step(net: nn.Module, x: torch.Tensor, _y):
        logits = net(x.to(device))
        return _entropy(logits).mean(), logits

    try:
        for p in model.parameters():
            p.requires_grad_(False)
        for p in affine:
            p.requires_grad_(True)
        history = train_loop(model, _Unlabelled(target_loader), step,
                             optimizer=torch.optim.Adam(affine, lr=lr), epochs=epochs,
                             steps=steps, seed=seed, device=device, progress=progress,
                             class_labels=False, desc="tent")
    finally:
        for p, flag in flags.items():
            p.requires_grad_(flag)
    adapt_batchnorm(model, target_loader, inplace=True, device=device)
    return history


# --------------------------------------------------------------------------- one call per method

ADAPT_METHODS: tuple[str, ...] = ("source", "adabn", "coral", "dann", "self-training", "tent")
_KNOBS = {"source": (), "adabn": (), "coral": ("weight",),
          "dann": ("lambd", "discriminator_lr", "schedule"),
          "self-training": ("threshold", "rounds"), "tent": ()}


def domain_adapt(
    method: str,
    model: nn.Module,
    source: ArrayDataset,
    target: ArrayDataset,
    *,
    epochs: int | None = None,
    steps: int | None = None,
    seed: int = 0,
    lr: float = 1e-4,
    batch_size: int = 32,
    device: str | torch.device | None = None,
    **knobs,
) -> nn.Module:
    """Adapt a copy of ``model`` from labelled ``source`` data to unlabelled ``target`` inputs by ``method``.

    The one entry point chapter 10 measures every method through, with the
    same data, seed and budget. The target's labels are replaced by zeros
    before any method sees the data, so no method can read them. Methods
    (:data:`ADAPT_METHODS`):

    ``"source"``
        the model as it is (a copy; no training);
    ``"adabn"``
        :func:`adapt_batchnorm` on the target inputs;
    ``"coral"``
        :func:`train_coral` (knob ``weight``);
    ``"dann"``
        :func:`train_dann` (knobs ``lambd``, ``discriminator_lr``, ``schedule``);
    ``"self-training"``
        :func:`self_train` (knobs ``threshold``, ``rounds``); the budget is split
        evenly over the rounds;
    ``"tent"``
        :func:`tent` on target batches only (``lr`` is its rate for BatchNorm's
        :math:`\\gamma, \\beta`).

    Parameters
    ----------
    method : str
    model : nn.Module
        The source model; never changed.
    source : ArrayDataset
        Labelled source examples (batches of ``batch_size``, shuffled with ``seed``).
    target : ArrayDataset
        Target examples; only their inputs are used.
    epochs, steps : int
        The training budget, exactly one of them (ignored by ``"source"`` and ``"adabn"``).
    seed : int
        Seeds everything and both loaders' shuffling.
    lr : float
        Adam's learning rate for the model.
    batch_size : int
        Source and target examples per batch (each).
    device : str or torch.device, optional
    **knobs
        The method's own settings, listed above.

    Returns
    -------
    nn.Module
        The adapted copy, in eval mode.

    Examples
    --------
    >>> import transfer_utils as tu
    >>> src = tu.zoo.load("mnist8_cnn")
    >>> source, _ = tu.zoo.source_data("mnist8_cnn")
    >>> pool, test = tu.split(tu.load_digits(), (0.5, 0.5), seed=0)
    >>> adapted = tu.domain_adapt("coral", src, source, pool, steps=2, weight=1.0)
    >>> adapted is not src and not adapted.training
    True
    """
    V.one_of(method, "method", ADAPT_METHODS, "domain_adapt")
    unknown = sorted(set(knobs) - set(_KNOBS[method]))
    if unknown:
        allowed = ", ".join(_KNOBS[method]) or "none"
        raise TypeError(f"domain_adapt: {method!r} has no knob {unknown[0]!r}; its knobs: "
                        f"{allowed}")
    for name, ds in (("source", source), ("target", target)):
        if not isinstance(ds, ArrayDataset):
            raise TypeError(f"domain_adapt: {name} must be a tu.ArrayDataset, got "
                            f"{type(ds).__name__}")
    seed = V.seed_value(seed, "domain_adapt")
    batch_size = V.positive_int(batch_size, "batch_size", "domain_adapt")
    if method not in ("source", "adabn"):
        V.epochs_or_steps(epochs, steps, "domain_adapt")
    net = copy.deepcopy(model)
    device = get_device(device)
    inputs = ArrayDataset(target.x, torch.zeros(len(target), dtype=torch.long))  # no labels
    tgt = make_loader(inputs, batch_size, shuffle=True, seed=seed + 1)
    src = make_loader(source, batch_size, shuffle=True, seed=seed)
    common = dict(seed=seed, device=device, progress=False)
    if method == "adabn":
        adapt_batchnorm(net, tgt, inplace=True, device=device)
    elif method == "coral":
        train_coral(net, src, tgt, epochs=epochs, steps=steps, lr=lr, **knobs, **common)
    elif method == "dann":
        train_dann(net, src, tgt, epochs=epochs, steps=steps, lr=lr, **knobs, **common)
    elif method == "self-training":
        rounds = V.positive_int(knobs.pop("rounds", 2), "rounds", "domain_adapt")
        per = {"epochs": max(1, epochs // rounds)} if epochs is not None else {
            "steps": max(1, steps // rounds)}
        self_train(net, src, tgt, rounds=rounds, lr=lr, batch_size=batch_size, **per,
                   **knobs, **common)
    elif method == "tent":
        tent(net, tgt, epochs=epochs, steps=steps, lr=lr, **common)
    return net.to(device).eval()


# --------------------------------------------------------------------------- label shift


def _class_ids(v, name: str, fn: str) -> torch.Tensor:
    t = torch.as_tensor(v).detach().cpu()
    if t.ndim != 1 or t.is_floating_point() or t.dtype == torch.bool:
        raise ValueError(f"{fn}: {name} must be a 1-D tensor of integer class ids, got "
                         f"dtype {t.dtype} and shape {V.shape_str(t.shape)} (use logits.argmax(1))")
    if len(t) and int(t.min()) < 0:
        raise ValueError(f"{fn}: {name} holds a negative class id ({int(t.min())})")
    return t.long()


def joint_confusion(
    predictions: torch.Tensor, labels: torch.Tensor, num_classes: int | None = None
) -> torch.Tensor:
    r"""The joint confusion matrix :math:`C_{ij} = \hat P(\hat y = i, y = j)` (rows: predicted, columns: true).

    Entries sum to 1. Estimated on held-out *source* data, it is what BBSE
    inverts (:func:`bbse_weights`, chapter 10).

    Examples
    --------
    >>> import torch, transfer_utils as tu
    >>> tu.joint_confusion(torch.tensor([0, 0, 1, 1]), torch.tensor([0, 1, 1, 1]))
    tensor([[0.2500, 0.2500],
            [0.0000, 0.5000]], dtype=torch.float64)
    """
    pred = _class_ids(predictions, "predictions", "joint_confusion")
    true = _class_ids(labels, "labels", "joint_confusion")
    if len(pred) != len(true):
        raise ValueError(f"joint_confusion: {len(pred)} predictions but {len(true)} labels")
    if not len(pred):
        raise ValueError("joint_confusion: no examples")
    top = int(max(pred.max(), true.max())) + 1
    k = top if num_classes is None else V.positive_int(num_classes, "num_classes",
                                                          "joint_confusion")
    if top > k:
        raise ValueError(f"joint_confusion: class id {top - 1} is outside num_classes={k}")
    counts = torch.bincount(pred * k + true, minlength=k * k).reshape(k, k)
    return counts.double() / len(pred)


def bbse_weights(
    source_predictions: torch.Tensor,
    source_labels: torch.Tensor,
    target_predictions: torch.Tensor,
    *,
    num_classes: int | None = None,
) -> torch.Tensor:
    r"""Black-box shift estimation (Lipton et al. 2018): target/source class-prior ratios.

    Under label shift (:math:`p(x \mid y)` fixed, :math:`p(y)` changed) the
    predicted-class rates on the target, :math:`\hat\mu_i = \hat P_t(\hat y = i)`,
    satisfy :math:`\hat\mu = C w` with :math:`C` the source joint confusion
    matrix (:func:`joint_confusion`, from held-out source data) and
    :math:`w_j = p_t(y = j) / p_s(y = j)`. So

    .. math:: \hat w = C^{-1} \hat\mu,

    clipped at 0 (a negative prior ratio is estimation noise). Multiply the
    source model's class probabilities by :math:`\hat w` (:func:`reweight_logits`)
    to correct them. The estimate needs an invertible :math:`C`: a source model
    better than chance on every class.

    Parameters
    ----------
    source_predictions, source_labels : Tensor
        Predicted and true classes of held-out *source* examples.
    target_predictions : Tensor
        Predicted classes of the unlabelled target examples.
    num_classes : int, optional
        Default: one more than the largest class id seen.

    Returns
    -------
    Tensor
        ``[num_classes]`` float64 weights, each ``>= 0``.

    Examples
    --------
    >>> import torch, transfer_utils as tu
    >>> y = torch.tensor([0, 0, 1, 1])                   # a perfect source classifier
    >>> tu.bbse_weights(y, y, torch.tensor([0, 0, 0, 1]))   # target: 3/4 class 0
    tensor([1.5000, 0.5000], dtype=torch.float64)
    """
    pred_t = _class_ids(target_predictions, "target_predictions", "bbse_weights")
    if not len(pred_t):
        raise ValueError("bbse_weights: target_predictions is empty")
    k = num_classes
    if k is None:
        k = int(max(torch.as_tensor(source_predictions).max(), torch.as_tensor(source_labels).max(),
                    pred_t.max())) + 1
    C = joint_confusion(source_predictions, source_labels, k)
    if int(pred_t.max()) >= C.shape[0]:
        raise ValueError(f"bbse_weights: target prediction {int(pred_t.max())} is outside "
                         f"num_classes={C.shape[0]}")
    mu = torch.bincount(pred_t, minlength=C.shape[0]).double() / len(pred_t)
    if torch.linalg.matrix_rank(C) < C.shape[0]:
        raise ValueError(
            "bbse_weights: the source confusion matrix is singular (some class is never "
            "predicted or never present in the held-out source data), so the target priors "
            "cannot be recovered; use more held-out source data or a better source model"
        )
    return torch.linalg.solve(C, mu).clamp_min(0.0)


def reweight_logits(logits: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    r"""Logits whose softmax is :math:`p_s(y \mid x)\, w_y` renormalised: the label-shift correction.

    Adds :math:`\log w_y` to every row (a zero weight becomes a very negative
    logit, so that class is never predicted). With :math:`w` from
    :func:`bbse_weights`, or the true prior ratios, ``argmax`` gives the Bayes
    decision under the target priors (chapter 10).

    Examples
    --------
    >>> import torch, transfer_utils as tu
    >>> logits = torch.log(torch.tensor([[0.6, 0.4]]))
    >>> tu.reweight_logits(logits, torch.tensor([0.5, 1.5])).softmax(1)
    tensor([[0.3333, 0.6667]])
    """
    if not isinstance(logits, torch.Tensor) or logits.ndim != 2:
        raise ValueError("reweight_logits: logits must be a 2-D tensor [n, classes]")
    w = torch.as_tensor(weights, dtype=logits.dtype, device=logits.device)
    if w.ndim != 1 or len(w) != logits.shape[1]:
        raise ValueError(f"reweight_logits: {tuple(w.shape)} weights for {logits.shape[1]} "
                         "classes; give one weight per class")
    if not torch.isfinite(w).all() or bool((w < 0).any()):
        raise ValueError("reweight_logits: weights must be finite and >= 0")
    return logits + torch.log(w.clamp_min(1e-12))


# --------------------------------------------------------------------------- no target labels: choosing and measuring


def _features_np(f, name: str, fn: str) -> np.ndarray:
    a = f.detach().cpu().double().numpy() if isinstance(f, torch.Tensor) else np.asarray(f, float)
    if a.ndim != 2 or len(a) < 2:
        raise ValueError(f"{fn}: {name} must be 2-D [n, d] with n >= 2, got shape {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError(f"{fn}: {name} holds NaN or inf")
    return a


def _domain_data(source_features, target_features, fn: str) -> tuple[np.ndarray, np.ndarray]:
    s = _features_np(source_features, "source_features", fn)
    t = _features_np(target_features, "target_features", fn)
    if s.shape[1] != t.shape[1]:
        raise ValueError(f"{fn}: source and target features have different widths "
                         f"({s.shape[1]} and {t.shape[1]})")
    X = np.concatenate([s, t])
    mean, std = X.mean(0), X.std(0)
    return (X - mean) / np.where(std > 0, std, 1.0), np.r_[np.zeros(len(s)), np.ones(len(t))]


def domain_weights(
    source_features, target_features, *, C: float = 1.0, max_weight: float | None = None
) -> torch.Tensor:
    r"""Importance weights :math:`w(x) = p_t(x) / p_s(x)` for source examples, from a domain classifier.

    A logistic regression (L2, inverse strength ``C``, on standardised
    features) learns :math:`P(\text{target} \mid x)`; by Bayes' rule

    .. math:: w(x) = \frac{n_s}{n_t} \, \frac{P(\text{target} \mid x)}{P(\text{source} \mid x)} .

    A source example that looks like the target gets a large weight. Averaging
    a loss over labelled source data with these weights estimates the target
    loss (importance-weighted validation, :func:`importance_weighted_evaluate`),
    but only as well as the classifier and only when the domains overlap: when
    they barely do, a few weights dominate (see :func:`effective_sample_size`).

    Parameters
    ----------
    source_features, target_features : array-like
        ``[n_s, d]`` and ``[n_t, d]``, for example penultimate features of the source model.
    C : float
        Inverse regularisation of the logistic regression.
    max_weight : float, optional
        Clip the weights at this value.

    Returns
    -------
    Tensor
        ``[n_s]`` float64 weights.

    Examples
    --------
    >>> import torch, transfer_utils as tu
    >>> g = torch.Generator().manual_seed(0)
    >>> s, t = torch.randn(300, 2, generator=g), torch.randn(300, 2, generator=g) + 1
    >>> w = tu.domain_weights(s, t)
    >>> bool(w[s.sum(1) > 2].mean() > w[s.sum(1) < -2].mean())   # target-like points weigh more
    True
    """
    from sklearn.linear_model import LogisticRegression

    C = V.positive(C, "C", "domain_weights")
    X, d = _domain_data(source_features, target_features, "domain_weights")
    clf = LogisticRegression(C=C, max_iter=2000).fit(X, d)
    n_s, n_t = int((d == 0).sum()), int((d == 1).sum())
    # log-odds of "target" for each source row, exponentiated: P(t|x) / P(s|x)
    w = np.exp(clf.decision_function(X[: n_s])) * n_s / n_t
    if max_weight is not None:
        w = np.minimum(w, V.positive(max_weight, "max_weight", "domain_weights"))
    return torch.as_tensor(w, dtype=torch.float64)


def effective_sample_size(weights) -> float:
    r"""Kish's effective sample size :math:`(\sum_i w_i)^2 / \sum_i w_i^2` of importance weights.

    ``n`` for equal weights, about 1 when one weight dominates: how many
    labelled examples an importance-weighted average is really worth.

    Examples
    --------
    >>> import transfer_utils as tu
    >>> tu.effective_sample_size([1.0, 1.0, 1.0, 1.0]), tu.effective_sample_size([1.0, 0, 0, 0])
    (4.0, 1.0)
    """
    w = torch.as_tensor(weights, dtype=torch.float64).reshape(-1)
    if not len(w) or not torch.isfinite(w).all() or bool((w < 0).any()) or float(w.sum()) == 0:
        raise ValueError("effective_sample_size: weights must be finite, >= 0, not all zero")
    return float(w.sum() ** 2 / (w * w).sum())


def importance_weighted_evaluate(
    model: nn.Module,
    loader: Iterable,
    weights,
    *,
    device: str | torch.device | None = None,
) -> dict:
    r"""Accuracy and loss on labelled *source* data, weighted to estimate them on the target.

    :math:`\widehat{\mathrm{acc}}_T = \sum_i w_i [\hat y_i = y_i] / \sum_i w_i`
    (and the same for the cross-entropy), with :math:`w_i` from
    :func:`domain_weights` on the same examples in the same order. This is
    importance-weighted validation (Sugiyama et al. 2007): a way to compare
    adapted models without a single target label (chapter 10).

    Returns
    -------
    dict
        ``{"accuracy", "loss", "ess", "n"}``: the weighted estimates, the effective
        sample size of the weights and the number of examples.

    Examples
    --------
    >>> import torch, transfer_utils as tu
    >>> net, ds = tu.SmallCNN(), tu.load_digits().subset(range(100))
    >>> r = tu.importance_weighted_evaluate(net, tu.make_loader(ds), torch.ones(100))
    >>> r["ess"], abs(r["accuracy"] - tu.evaluate(net, tu.make_loader(ds))["accuracy"]) < 1e-6
    (100.0, True)
    """
    logits, y = predict(model, loader, device=device)
    w = torch.as_tensor(weights, dtype=torch.float64).reshape(-1)
    if len(w) != len(y):
        raise ValueError(f"importance_weighted_evaluate: {len(w)} weights for {len(y)} examples; "
                         "compute the weights on the same examples, in the loader's order "
                         "(a loader without shuffle)")
    ess = effective_sample_size(w)
    correct = (logits.argmax(1) == y).double()
    losses = F.cross_entropy(logits.double(), y, reduction="none")
    total = w.sum()
    return {"accuracy": float((w * correct).sum() / total),
            "loss": float((w * losses).sum() / total), "ess": ess, "n": int(len(y))}


def proxy_a_distance(source_features, target_features, *, C: float = 1.0, seed: int = 0) -> float:
    r"""Proxy :math:`\mathcal{A}`-distance :math:`2 (1 - 2\epsilon)` between two feature sets.

    :math:`\epsilon` is the held-out error of a linear domain classifier
    (logistic regression, half the examples of each domain to train, half to
    test). 0 when the domains are indistinguishable, 2 when perfectly
    separable: the divergence term of Ben-David et al.'s bound, made
    measurable (chapter 10). Values below 0 (a classifier worse than chance)
    are reported as 0.

    Examples
    --------
    >>> import torch, transfer_utils as tu
    >>> g = torch.Generator().manual_seed(0)
    >>> same = tu.proxy_a_distance(torch.randn(200, 3, generator=g), torch.randn(200, 3, generator=g))
    >>> apart = tu.proxy_a_distance(torch.randn(200, 3, generator=g), torch.randn(200, 3, generator=g) + 5)
    >>> same < 0.5, apart > 1.9
    (True, True)
    """
    from sklearn.linear_model import LogisticRegression

    C = V.positive(C, "C", "proxy_a_distance")
    seed = V.seed_value(seed, "proxy_a_distance")
    X, d = _domain_data(source_features, target_features, "proxy_a_distance")
    rng = np.random.default_rng(seed)
    train = np.zeros(len(d), dtype=bool)
    for dom in (0, 1):
        idx = np.flatnonzero(d == dom)
        train[rng.permutation(idx)[: len(idx) // 2]] = True
    clf = LogisticRegression(C=C, max_iter=2000).fit(X[train], d[train])
    err = float((clf.predict(X[~train]) != d[~train]).mean())
    return max(0.0, 2.0 * (1.0 - 2.0 * err))
