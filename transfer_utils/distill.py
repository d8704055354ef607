"""Knowledge distillation: the KD loss, teacher-to-student training, cached soft targets, hints.

Methods layer (chapter 5). :func:`kd_loss` is Hinton et al.'s loss;
:func:`distill` trains a student on a teacher's outputs; :func:`soft_targets`
caches the teacher's logits once so :func:`distill_cached` trains many students
cheaply; :func:`hint_loss` and :func:`hint_pretrain` are FitNets' hints. All
trainers run through :func:`transfer_utils.train_loop`.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from . import _validate as V
from .data import ArrayDataset
from .models import get_submodule
from .runtime import get_device
from .training import History, train_loop

__all__ = [
    "kd_loss",
    "distill",
    "soften",
    "SoftTargets",
    "soft_targets",
    "distill_cached",
    "hint_loss",
    "hint_pretrain",
    "class_bias_accuracy",
]


def soften(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Softmax with temperature: ``softmax(logits / T)`` over the last dimension.

    Examples
    --------
    >>> import torch, transfer_utils as tu
    >>> tu.soften(torch.tensor([2.0, 0.0]), temperature=2.0).tolist()  # softmax([1, 0])
    [0.7310585975646973, 0.2689414322376251]
    """
    V.positive(temperature, "temperature", "soften")
    return F.softmax(logits / temperature, dim=-1)


def kd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    targets: torch.Tensor | None = None,
    *,
    temperature: float = 4.0,
    alpha: float = 0.9,
) -> torch.Tensor:
    r"""The knowledge-distillation loss of Hinton et al. (2015).

    .. math::

        \alpha T^2\,\mathrm{KL}\big(\mathrm{softmax}(t/T)\,\|\,\mathrm{softmax}(s/T)\big)
        + (1-\alpha)\,\mathrm{CE}(s, y)

    with the KL divergence summed over classes and averaged over the batch
    (``F.kl_div(..., reduction="batchmean")``). The ``T**2`` factor keeps the
    gradient of the soft term on the same scale for every temperature. With
    ``targets=None`` only the soft term is used (``alpha`` still scales it).

    Parameters
    ----------
    student_logits, teacher_logits : Tensor ``[batch, classes]``
    targets : Tensor ``[batch]``, optional
        Hard labels for the cross-entropy term.
    temperature : float
        ``T > 0``.
    alpha : float
        Weight of the soft term, in ``[0, 1]``.

    Examples
    --------
    >>> import torch, transfer_utils as tu
    >>> z = torch.randn(4, 10)
    >>> float(tu.kd_loss(z, z))
    0.0
    """
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"student logits {tuple(student_logits.shape)} and teacher logits "
            f"{tuple(teacher_logits.shape)} must have the same shape [batch, classes]"
        )
    if student_logits.dim() != 2:
        raise ValueError(f"logits must be 2-D [batch, classes], got {tuple(student_logits.shape)}")
    T = V.positive(temperature, "temperature", "kd_loss")
    alpha = V.probability(alpha, "alpha", "kd_loss")
    soft = F.kl_div(
        F.log_softmax(student_logits / T, dim=1),
        F.log_softmax(teacher_logits.detach() / T, dim=1),
        reduction="batchmean",
        log_target=True,
    ) * (T * T)
    if targets is None:
        return alpha * soft
    if targets.dim() != 1 or targets.shape[0] != student_logits.shape[0]:
        raise ValueError(
            f"targets must be 1-D with one label per row ({student_logits.shape[0]}), "
            f"got shape {tuple(targets.shape)}"
        )
    return alpha * soft + (1.0 - alpha) * F.cross_entropy(student_logits, targets)


def distill(
    student: nn.Module,
    teacher: nn.Module,
    loader: Iterable[tuple[torch.Tensor, torch.Tensor]],
    *,
    epochs: int | None = None,
    steps: int | None = None,
    temperature: float = 4.0,
    alpha: float = 0.9,
    use_labels: bool = True,
    optimizer: torch.optim.Optimizer | None = None,
    lr: float = 1e-3,
    val_loader=None,
    early_stopping: int | None = None,
    seed: int | None = None,
    device: torch.device | str | None = None,
    progress: bool | None = None,
) -> History:
    """Train ``student`` to match ``teacher`` with :func:`kd_loss`, for ``epochs`` or ``steps``.

    The teacher runs in eval mode under ``torch.no_grad()`` (no gradient ever
    reaches it, its weights and BatchNorm statistics stay as they are) and gets
    its previous mode back at the end. With ``use_labels=False`` the loader's
    labels are ignored, so unlabelled transfer data works (pass any placeholder
    labels); ``alpha`` is then not used, but it is still checked. Other
    arguments are those of :func:`transfer_utils.fit`.

    Examples
    --------
    >>> import transfer_utils as tu
    >>> ds = tu.load_digits()
    >>> teacher, student = tu.SmallCNN(), tu.MLP(64, hidden=(32,))
    >>> h = tu.distill(student, teacher, tu.make_loader(ds), epochs=1, progress=False)
    >>> h.epochs
    1
    """
    if student is teacher:
        raise ValueError("student and teacher are the same module; distil into a separate model")
    V.positive(temperature, "temperature", "distill")
    V.probability(alpha, "alpha", "distill")
    device = get_device(device)
    teacher_was_training = teacher.training
    teacher.to(device).eval()
    if optimizer is None:
        optimizer = torch.optim.Adam([p for p in student.parameters() if p.requires_grad], lr=lr)

    def step(model: nn.Module, x: torch.Tensor, y: torch.Tensor):
        with torch.no_grad():
            t_logits = teacher(x)
        s_logits = model(x)
        if use_labels:
            V.class_labels(y, s_logits.shape[1], "loader")
        loss = kd_loss(s_logits, t_logits, y if use_labels else None,
                       temperature=temperature, alpha=alpha if use_labels else 1.0)
        return loss, s_logits

    try:
        return train_loop(
            student, loader, step, epochs=epochs, steps=steps, optimizer=optimizer,
            val_loader=val_loader, early_stopping=early_stopping, seed=seed, device=device,
            progress=progress, class_labels=use_labels, desc="distill",
        )
    finally:
        teacher.train(teacher_was_training)


# --------------------------------------------------------------------------- cached soft targets


class SoftTargets(torch.utils.data.Dataset):
    """A transfer set with the teacher's outputs computed once: inputs, labels, teacher logits.

    Made by :func:`soft_targets`; trained on by :func:`distill_cached` and
    :func:`hint_pretrain`. Because the teacher never changes during
    distillation, its logits (and, for hints, an intermediate feature) can be
    cached: each student run then costs only the student's forward and backward
    passes (chapter 5 trains dozens of students this way).

    Attributes
    ----------
    x : Tensor ``[N, ...]``
        What the student sees.
    y : Tensor ``[N]``
        True labels, or the teacher's argmax when the data came unlabelled
        (``labelled`` is then False).
    logits : Tensor ``[N, K]``
        The teacher's logits (temperature 1).
    features : Tensor ``[N, D]`` or None
        The teacher's flattened output of a named layer (the FitNets hint).
    classes : list of str
    labelled : bool
    """

    def __init__(self, x, y, logits, features=None, classes=None, labelled: bool = True):
        x, y, logits = torch.as_tensor(x), torch.as_tensor(y), torch.as_tensor(logits)
        n = len(x)
        if y.shape != (n,) or logits.dim() != 2 or len(logits) != n:
            raise ValueError(
                f"SoftTargets needs x [N, ...], y [N] and logits [N, K] with the same N; got "
                f"x {tuple(x.shape)}, y {tuple(y.shape)}, logits {tuple(logits.shape)}"
            )
        if features is not None:
            features = torch.as_tensor(features)
            if len(features) != n:
                raise ValueError(f"features has {len(features)} rows, expected {n}")
        self.x, self.y, self.logits, self.features = x, y.long(), logits.float(), features
        k = logits.shape[1]
        self.classes = [str(c) for c in classes] if classes is not None else [
            str(i) for i in range(k)]
        self.labelled = bool(labelled)

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i):
        return self.x[i], self.y[i], self.logits[i]

    def __repr__(self) -> str:
        feats = "" if self.features is None else f", features={list(self.features.shape[1:])}"
        return (f"SoftTargets(n={len(self)}, x={list(self.x.shape[1:])}, "
                f"classes={self.logits.shape[1]}, labelled={self.labelled}{feats})")

    def subset(self, indices) -> SoftTargets:
        """New SoftTargets with the rows ``indices`` (ints, a bool mask or a slice)."""
        if not isinstance(indices, (slice, torch.Tensor)):
            indices = torch.as_tensor(indices, dtype=torch.long)
        feats = None if self.features is None else self.features[indices]
        return SoftTargets(self.x[indices], self.y[indices], self.logits[indices], feats,
                           self.classes, self.labelled)

    def teacher_accuracy(self) -> float:
        """Fraction of rows where the teacher's argmax equals ``y`` (1.0 when unlabelled)."""
        return float((self.logits.argmax(1) == self.y).float().mean())


@torch.no_grad()
def soft_targets(
    teacher: nn.Module,
    data,
    *,
    student_inputs: torch.Tensor | None = None,
    layer: str | None = None,
    batch_size: int = 512,
    device: torch.device | str | None = None,
) -> SoftTargets:
    """Run the teacher once over a transfer set and cache its logits (and a hint feature).

    Parameters
    ----------
    teacher : nn.Module
        Run in eval mode under ``torch.no_grad()``; its mode is restored afterwards.
    data : ArrayDataset or Tensor
        Labelled data (an :class:`~transfer_utils.ArrayDataset`), or a tensor of
        unlabelled inputs ``[N, ...]``: the teacher then labels it, and ``y``
        holds its argmax (hard pseudo-labels).
    student_inputs : Tensor, optional
        What the student sees for the same N examples, if not the teacher's
        inputs (e.g. standardised images, or a lower resolution).
    layer : str, optional
        A named submodule of the teacher (e.g. ``"body.block2"``) whose output,
        flattened, is stored as ``features``: the hint of :func:`hint_pretrain`.
    batch_size : int
    device : str or torch.device, optional

    Examples
    --------
    >>> import torch, transfer_utils as tu
    >>> soft = tu.soft_targets(tu.SmallCNN(), tu.load_digits(), layer="body.block1")
    >>> soft.logits.shape, soft.features.shape[0]
    (torch.Size([1797, 10]), 1797)
    """
    if isinstance(data, ArrayDataset):
        x, y, classes, labelled = data.x, data.y, data.classes, True
    elif isinstance(data, torch.Tensor):
        x, y, classes, labelled = data, None, None, False
    else:
        raise TypeError(
            "data must be a tu.ArrayDataset (labelled) or a tensor of inputs (unlabelled), "
            f"got {type(data).__name__}"
        )
    if len(x) == 0:
        raise ValueError("the transfer set is empty")
    if student_inputs is not None and len(student_inputs) != len(x):
        raise ValueError(
            f"student_inputs has {len(student_inputs)} rows but the transfer set has {len(x)}"
        )
    device = get_device(device)
    captured: list[torch.Tensor] = []
    handle = None
    if layer is not None:
        handle = get_submodule(teacher, layer).register_forward_hook(
            lambda _m, _i, out: captured.append(out))
    was_training = teacher.training
    teacher.to(device).eval()
    logits, feats = [], []
    try:
        for i in range(0, len(x), batch_size):
            logits.append(teacher(x[i:i + batch_size].to(device)).float().cpu())
            if layer is not None:
                feats.append(captured.pop().detach().float().flatten(1).cpu())
    finally:
        if handle is not None:
            handle.remove()
        teacher.train(was_training)
    logits_t = torch.cat(logits)
    if y is None:
        y = logits_t.argmax(1)
    return SoftTargets(
        x if student_inputs is None else student_inputs, y, logits_t,
        torch.cat(feats) if feats else None, classes, labelled,
    )


class _IndexedBatches:
    """Shuffled mini-batches ``(x, y)`` of a SoftTargets that remember the rows they came from."""

    def __init__(self, soft: SoftTargets, batch_size: int, seed: int, device: torch.device):
        self.x, self.y = soft.x.to(device), soft.y.to(device)
        self.batch_size, self.index = batch_size, None
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return -(-len(self.y) // self.batch_size)

    def __iter__(self):
        order = torch.randperm(len(self.y), generator=self.generator).to(self.y.device)
        for b in range(len(self)):
            self.index = order[b * self.batch_size:(b + 1) * self.batch_size]
            yield self.x[self.index], self.y[self.index]


def _adam(params, lr: float, device: torch.device) -> torch.optim.Optimizer:
    """Adam; the fused kernel where PyTorch has one (CPU, CUDA): same maths, fewer launches."""
    params = [p for p in params if p.requires_grad]
    if not params:
        raise ValueError("the student has no trainable parameters: unfreeze something first")
    if device.type in ("cpu", "cuda"):
        return torch.optim.Adam(params, lr=lr, fused=True)
    return torch.optim.Adam(params, lr=lr)


def _require_soft(soft, what: str) -> None:
    if not isinstance(soft, SoftTargets):
        raise TypeError(f"{what} needs a tu.SoftTargets from tu.soft_targets(teacher, data), "
                        f"got {type(soft).__name__}")


def distill_cached(
    student: nn.Module,
    soft: SoftTargets,
    *,
    epochs: int | None = None,
    steps: int | None = None,
    temperature: float = 4.0,
    alpha: float = 0.9,
    use_labels: bool = True,
    batch_size: int = 128,
    lr: float = 1e-3,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler=None,
    seed: int = 0,
    val_loader=None,
    early_stopping: int | None = None,
    device: torch.device | str | None = None,
    progress: bool | None = None,
) -> History:
    """:func:`distill` from cached teacher logits: same loss, no teacher forward passes.

    Each step takes a shuffled mini-batch of ``soft`` and minimises
    :func:`kd_loss` between the student's logits and the cached teacher logits
    of the same rows. With ``use_labels=False`` only the soft term is used
    (``alpha`` is then 1). With ``alpha=0`` it trains on ``soft.y`` alone:
    plain cross-entropy on the labels, or on the teacher's hard pseudo-labels
    when ``soft`` was made from unlabelled inputs.

    Caching is exact when the transfer inputs are fixed; with data
    augmentation the teacher must see each augmented batch, so use
    :func:`distill` instead.

    Examples
    --------
    >>> import transfer_utils as tu
    >>> soft = tu.soft_targets(tu.SmallCNN(), tu.load_digits())
    >>> h = tu.distill_cached(tu.MLP(64, (32,)), soft, epochs=2, progress=False)
    >>> h.epochs
    2
    """
    _require_soft(soft, "distill_cached")
    batch_size = V.positive_int(batch_size, "batch_size", "distill_cached")
    V.positive(temperature, "temperature", "distill_cached")
    V.probability(alpha, "alpha", "distill_cached")
    seed = V.seed_value(seed, "distill_cached")
    device = get_device(device)
    student.to(device)
    batches = _IndexedBatches(soft, batch_size, seed, device)
    teacher_logits = soft.logits.to(device)
    if optimizer is None:
        optimizer = _adam(student.parameters(), lr, device)
    a = alpha if use_labels else 1.0

    def step(model: nn.Module, x: torch.Tensor, y: torch.Tensor):
        s_logits = model(x)
        loss = kd_loss(s_logits, teacher_logits[batches.index], y if use_labels else None,
                       temperature=temperature, alpha=a)
        return loss, s_logits

    return train_loop(
        student, batches, step, epochs=epochs, steps=steps, optimizer=optimizer,
        scheduler=scheduler, val_loader=val_loader, early_stopping=early_stopping, seed=seed,
        device=device, progress=progress, desc="distill",
    )


# --------------------------------------------------------------------------- hints (FitNets)


def hint_loss(
    student_features: torch.Tensor,
    teacher_features: torch.Tensor,
    regressor: nn.Module | None = None,
) -> torch.Tensor:
    r"""The FitNets hint loss of Romero et al. (2015): :math:`\tfrac12\|u - r(v)\|^2`.

    ``v`` is the student's guided layer, ``u`` the teacher's hint layer and
    ``r`` a small trainable regressor that maps one onto the other's width.
    Both are flattened to ``[batch, -1]``; the squared error is summed over
    features and averaged over the batch. Chapter 5 compares it with logit
    distillation.

    Examples
    --------
    >>> import torch, transfer_utils as tu
    >>> v, u = torch.randn(8, 16), torch.randn(8, 32)
    >>> tu.hint_loss(v, u, torch.nn.Linear(16, 32)).item() > 0
    True
    """
    v = student_features.flatten(1)
    u = teacher_features.flatten(1).detach()
    if regressor is not None:
        v = regressor(v)
    if v.shape != u.shape:
        raise ValueError(
            f"student features {tuple(v.shape)} (after the regressor) and teacher features "
            f"{tuple(u.shape)} must match; pass regressor=nn.Linear({v.shape[1]}, {u.shape[1]})"
        )
    return 0.5 * (v - u).pow(2).sum(1).mean()


def hint_pretrain(
    student: nn.Module,
    soft: SoftTargets,
    regressor: nn.Module,
    *,
    layer: str = "body",
    epochs: int | None = None,
    steps: int | None = None,
    batch_size: int = 128,
    lr: float = 1e-3,
    seed: int = 0,
    device: torch.device | str | None = None,
    progress: bool | None = None,
) -> History:
    """Stage 1 of FitNets: train the student up to ``layer`` (and the regressor) on the hint.

    Minimises :func:`hint_loss` between ``regressor(student.<layer>(x))`` and
    ``soft.features`` (cached with ``tu.soft_targets(..., layer=...)``). Only
    the parameters that feed ``layer`` get gradients; the head is left as it
    is. Stage 2 is ordinary distillation, e.g. :func:`distill_cached`. The
    returned History's accuracies are those of the untouched head, so ignore
    them; its ``train_loss`` is the hint loss.

    Examples
    --------
    >>> import torch, transfer_utils as tu
    >>> soft = tu.soft_targets(tu.SmallCNN(), tu.load_digits(), layer="body.block1")
    >>> student = tu.MLP(64, (32,))
    >>> reg = torch.nn.Linear(32, soft.features.shape[1])
    >>> h = tu.hint_pretrain(student, soft, reg, epochs=1, progress=False)
    >>> h.epochs
    1
    """
    _require_soft(soft, "hint_pretrain")
    if soft.features is None:
        raise ValueError("soft has no teacher features; make it with "
                         "tu.soft_targets(teacher, data, layer='body.block2') (any teacher layer)")
    device = get_device(device)
    target = get_submodule(student, layer)
    student.to(device)
    regressor.to(device)
    batches = _IndexedBatches(soft, batch_size, seed, device)
    features = soft.features.to(device)
    optimizer = _adam([*student.parameters(), *regressor.parameters()], lr, device)
    captured: list[torch.Tensor] = []
    handle = target.register_forward_hook(lambda _m, _i, out: captured.append(out))

    def step(model: nn.Module, x: torch.Tensor, y: torch.Tensor):
        logits = model(x)
        return hint_loss(captured.pop(), features[batches.index], regressor), logits

    regressor.train()
    try:
        return train_loop(student, batches, step, epochs=epochs, steps=steps,
                          optimizer=optimizer, seed=seed, device=device, progress=progress,
                          desc="hints")
    finally:
        handle.remove()


# --------------------------------------------------------------------------- leaving a class out


@torch.no_grad()
def class_bias_accuracy(
    logits: torch.Tensor, targets: torch.Tensor, cls: int, biases
) -> torch.Tensor:
    """Accuracy after adding each of ``biases`` to the logit of class ``cls``.

    A student that never saw class ``cls`` in its transfer set learns about it
    only from the teacher's soft targets, and its bias for that class ends up
    too low; Hinton et al. (2015) raise it. Choose the bias on validation data
    (never the test set) and add it to ``student.head.bias[cls]`` (chapter 5).

    Returns
    -------
    Tensor ``[len(biases)]``
        Accuracy over all classes for each bias.

    Examples
    --------
    >>> import torch, transfer_utils as tu
    >>> z = torch.tensor([[2.0, 1.0], [2.0, 1.5]]); y = torch.tensor([0, 1])
    >>> tu.class_bias_accuracy(z, y, 1, [0.0, 0.8, 2.0]).tolist()
    [0.5, 1.0, 0.5]
    """
    logits, targets = torch.as_tensor(logits).float(), torch.as_tensor(targets)
    if logits.dim() != 2 or targets.shape != (len(logits),):
        raise ValueError(f"need logits [N, K] and targets [N], got {tuple(logits.shape)} and "
                         f"{tuple(targets.shape)}")
    if not 0 <= cls < logits.shape[1]:
        raise ValueError(f"cls must be a class index in [0, {logits.shape[1] - 1}], got {cls}")
    b = torch.as_tensor(biases, dtype=logits.dtype).flatten()
    shifted = logits[None].repeat(len(b), 1, 1)
    shifted[:, :, cls] += b[:, None]
    return (shifted.argmax(2) == targets[None]).float().mean(1)


# --------------------------------------------------------------------------- exercise checker




