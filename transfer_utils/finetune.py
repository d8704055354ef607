"""Fine-tuning methods: L2-SP, gradual unfreezing, LP-FT, epochs chosen by k-fold (chapter 3).

Methods layer. Chapter 3 derives each of these; the notebook shows the idea
inline and calls these helpers for the bookkeeping:

- :func:`l2sp_penalty` pulls the fine-tuned weights towards the pretrained ones
  (Li et al. 2018), usable as ``tu.fit(..., penalty=...)``;
- :class:`GradualUnfreezing` unfreezes a model top-down during training
  (Howard and Ruder 2018), usable as ``tu.fit(..., on_epoch_end=...)``;
- :func:`lp_ft` fits the new head on frozen features, then fine-tunes
  everything (Kumar et al. 2022);
- :func:`kfold_epochs` chooses a number of epochs by k-fold cross-validation
  when the target set is too small to spare a validation split.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from . import _validate as V
from .data import fold_splits, make_loader
from .features import fit_linear_head
from .models import head_name
from .surgery import freeze, has_prefix, param_groups, unfreeze
from .training import History, fit

__all__ = [
    "L2SP",
    "l2sp_penalty",
    "GradualUnfreezing",
    "lp_ft",
    "KFoldEpochs",
    "kfold_epochs",
]


def _head_prefix(model: nn.Module) -> str | None:
    """Dotted name of the model's output layer, or None when it has no recognisable head."""
    try:
        return head_name(model)
    except TypeError:
        return None


class L2SP:
    r"""The L2-SP penalty of Li et al. (2018) as a callable ``penalty(model) -> scalar``.

    .. math::

        \Omega(\theta) = \frac{\alpha}{2}\,\|\theta_S - \theta_S^0\|_2^2
                       + \frac{\beta}{2}\,\|\theta_{\bar S}\|_2^2

    where :math:`\theta_S` are the parameters the model shares with the source
    (same name and shape, outside the excluded head), :math:`\theta_S^0` their
    pretrained values, and :math:`\theta_{\bar S}` the new ones (the head).
    Build it with :func:`l2sp_penalty`.
    """

    def __init__(self, anchors: dict[str, torch.Tensor], new: list[str], alpha: float,
                 beta: float):
        self.anchors = anchors
        self.new = new
        self.alpha = float(alpha)
        self.beta = float(beta)

    def __call__(self, model: nn.Module) -> torch.Tensor:
        params = dict(model.named_parameters())
        missing = [n for n in self.anchors if n not in params]
        if missing:
            raise ValueError(
                f"the model has no parameters {missing[:3]} that this L2-SP penalty anchors; "
                "build the penalty from the model you train: tu.l2sp_penalty(source, model, alpha)"
            )
        first = next(iter(params.values()))
        total = first.new_zeros(())
        if self.alpha:
            for name, anchor in self.anchors.items():
                p = params[name]
                if p.requires_grad:
                    if anchor.device != p.device:
                        anchor = self.anchors[name] = anchor.to(p.device)
                    total = total + (p - anchor).pow(2).sum() * (self.alpha / 2)
        if self.beta:
            for name in self.new:
                p = params.get(name)
                if p is not None and p.requires_grad:
                    total = total + p.pow(2).sum() * (self.beta / 2)
        return total

    @torch.no_grad()
    def distance(self, model: nn.Module) -> float:
        r"""How far the shared parameters moved: :math:`\|\theta_S - \theta_S^0\|_2`."""
        params = dict(model.named_parameters())
        sq = sum(float((params[n].detach() - a.to(params[n].device)).pow(2).sum())
                 for n, a in self.anchors.items() if n in params)
        return sq ** 0.5

    def __repr__(self) -> str:
        return (f"L2SP(alpha={self.alpha:g}, beta={self.beta:g}, {len(self.anchors)} anchored "
                f"tensors, {len(self.new)} new)")


def l2sp_penalty(
    source_state: nn.Module | Mapping[str, torch.Tensor],
    model: nn.Module,
    alpha: float,
    *,
    beta: float = 0.0,
    exclude: Sequence[str] | None = None,
) -> L2SP:
    r"""An L2-SP penalty that keeps ``model`` close to the pretrained ``source_state``.

    Chapter 3 explains it: fine-tuning from :math:`\theta^0` is an implicit pull
    towards the starting point; L2-SP makes it explicit with
    :math:`\frac{\alpha}{2}\|\theta_S - \theta_S^0\|^2` on the shared parameters,
    plus an ordinary weight decay :math:`\frac{\beta}{2}\|\theta_{\bar S}\|^2` on
    the new ones. Pass the result to :func:`transfer_utils.fit` as ``penalty=``.

    Parameters
    ----------
    source_state : nn.Module or state dict
        The pretrained weights to anchor to. Only parameters with the same name
        and shape in ``model`` are anchored; the values are copied, so later
        changes to the source do not move the anchor.
    model : nn.Module
        The model being fine-tuned (with its new head).
    alpha : float
        Strength of the pull towards the pretrained weights (``>= 0``).
    beta : float
        Weight decay on the parameters that are not anchored (``>= 0``).
    exclude : sequence of str, optional
        Name prefixes never anchored even if their shape matches. Default: the
        model's output layer (``"head"`` for the book's models, ``"fc"`` for a
        ResNet), because a new head must not be pulled towards the old one,
        even when source and target both have 10 classes.

    Returns
    -------
    L2SP
        A callable ``penalty(model) -> scalar tensor``.

    Examples
    --------
    >>> import copy, transfer_utils as tu
    >>> src = tu.SmallCNN(num_classes=10)
    >>> net = tu.replace_head(copy.deepcopy(src), 10)
    >>> pen = tu.l2sp_penalty(src, net, alpha=0.01)
    >>> pen(net).item()  # starts at the anchor: no penalty yet
    0.0
    >>> "head.weight" in pen.anchors
    False
    """
    for what, value in (("alpha", alpha), ("beta", beta)):
        V.nonneg(value, what, "l2sp_penalty")
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    source = V.state_of(source_state, "source_state (the pretrained model)", "l2sp_penalty")
    if exclude is None:
        head = _head_prefix(model)
        exclude = (head,) if head else ()
    anchors: dict[str, torch.Tensor] = {}
    new: list[str] = []
    for name, p in model.named_parameters():
        src = source.get(name)
        if (any(has_prefix(name, e) for e in exclude) or src is None
                or tuple(src.shape) != tuple(p.shape)):
            new.append(name)
        else:
            anchors[name] = src.detach().to(device=p.device, dtype=p.dtype).clone()
    if not anchors:
        raise ValueError(
            "l2sp_penalty anchored nothing: no parameter of the model has the same name and "
            f"shape in source_state (model names start {[n for n, _ in model.named_parameters()][:3]}, "
            f"source names start {list(source)[:3]}); pass the pretrained model the target was "
            "copied from"
        )
    return L2SP(anchors, new, alpha, beta)


class GradualUnfreezing:
    """Unfreeze a model top-down during training, one stage every ``every`` epochs.

    Chapter 3 explains the idea (ULMFiT, Howard and Ruder 2018): at first only the
    new head trains, on features it cannot yet damage; then the top block joins,
    then the next, so the layers nearest the input, which transfer best, move
    last and least. Construction freezes every stage (BatchNorm in eval mode);
    use the object as ``tu.fit(..., on_epoch_end=schedule)``.

    The optimizer must already hold the parameters of every stage (frozen
    parameters get no gradient, so the optimizer skips them until they are
    unfrozen). Build it *before* the schedule, while everything is trainable.

    Parameters
    ----------
    model : nn.Module
    optimizer : torch.optim.Optimizer
        Built over all parameters, e.g. ``Adam(tu.param_groups(model, lrs))``.
    stages : sequence of str or sequence of str
        Name prefixes in the order they are unfrozen, top (near the head) first,
        e.g. ``["body.block3", "body.block2", "body.block1"]``. An entry may be a
        list of prefixes unfrozen together.
    every : int
        Epochs between two unfreezing steps.

    Attributes
    ----------
    log : list of (epoch, stage)
        When each stage was unfrozen (epoch 0: frozen at construction).

    Examples
    --------
    >>> import torch, transfer_utils as tu
    >>> net = tu.SmallCNN()
    >>> opt = torch.optim.Adam(tu.param_groups(net, {"body": 1e-4, "head": 1e-3}))
    >>> sched = tu.GradualUnfreezing(net, opt, ["body.block3", "body.block2", "body.block1"])
    >>> tu.trainable_summary(net).startswith("trainable: 650")
    True
    >>> sched(1, net, None); net.body.block3.conv.weight.requires_grad
    True
    """

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer,
                 stages: Sequence[str | Sequence[str]], every: int = 1):
        V.positive_int(every, "every (epochs between unfreezing steps)", "GradualUnfreezing")
        if isinstance(stages, str) or not stages:
            raise ValueError(
                "stages must be a non-empty list of name prefixes, top first, e.g. "
                "['body.block3', 'body.block2', 'body.block1']"
            )
        self.stages = [(s,) if isinstance(s, str) else tuple(s) for s in stages]
        in_opt = {id(p) for g in optimizer.param_groups for p in g["params"]}
        for stage in self.stages:
            freeze(model, *stage)  # also checks that the prefixes exist
            outside = [n for n, p in model.named_parameters()
                       if any(has_prefix(n, s) for s in stage) and id(p) not in in_opt]
            if outside:
                unfreeze(model, *(s for st in self.stages for s in st))
                raise ValueError(
                    f"the optimizer does not hold {outside[:3]}: build it over all parameters "
                    "before the schedule freezes them, e.g. opt = torch.optim.Adam("
                    "tu.param_groups(model, {'body': 1e-4, 'head': 1e-3})), then "
                    "tu.GradualUnfreezing(model, opt, stages)"
                )
        self.model = model
        self.every = every
        self.next_stage = 0
        self.log: list[tuple[int, tuple[str, ...]]] = [(0, ())]

    def __call__(self, epoch: int, model: nn.Module | None = None,
                 history: History | None = None) -> None:
        if epoch % self.every == 0 and self.next_stage < len(self.stages):
            stage = self.stages[self.next_stage]
            unfreeze(self.model, *stage)
            self.next_stage += 1
            self.log.append((epoch, stage))

    @property
    def done(self) -> bool:
        """True once every stage is trainable."""
        return self.next_stage == len(self.stages)

    def __repr__(self) -> str:
        return (f"GradualUnfreezing({len(self.stages)} stages, every {self.every} epochs, "
                f"{self.next_stage} unfrozen)")


def lp_ft(
    model: nn.Module,
    train_loader,
    *,
    epochs: int | None = None,
    steps: int | None = None,
    lr: float = 1e-3,
    body_lr: float | None = None,
    head_lr: float | None = None,
    C: float = 1.0,
    head: str | None = None,
    probe_data=None,
    val_loader=None,
    **fit_kwargs,
) -> tuple[dict, History]:
    """Linear probing, then fine-tuning (LP-FT, Kumar et al. 2022), on any model with a head.

    Stage 1 fits the head to convergence on the frozen features
    (:func:`transfer_utils.fit_linear_head`, a logistic regression with inverse
    regularisation ``C``, fitted on ``probe_data``, default ``train_loader``);
    stage 2 trains everything for ``epochs`` or ``steps``, the head at ``head_lr``
    and the rest at ``body_lr`` (both ``lr`` unless given, and given together).
    Chapter 3 explains why: a random head sends large, random gradients into the
    body; a head that already fits the frozen features does not, so the
    pretrained features move less. :func:`transfer_utils.transfer_run` with
    ``"lp-ft"`` calls this function.

    Parameters
    ----------
    model : nn.Module
        Already with its new head (:func:`transfer_utils.replace_head`).
    train_loader : iterable of (x, y)
    epochs, steps : int
        Length of the fine-tuning stage: exactly one of them.
    lr, body_lr, head_lr : float
        Learning rates of the fine-tuning stage.
    C : float
        Inverse L2 strength of the probe (choose it on validation data).
    head : str, optional
        Name of the head; found automatically for ``.head``, ``.fc``, ``.classifier``.
    probe_data : dataset or loader, optional
        What the probe is fitted on (default ``train_loader``).
    val_loader : optional
        Passed to the fine-tuning stage's :func:`transfer_utils.fit`.
    **fit_kwargs
        Other arguments of :func:`transfer_utils.fit` (``device``, ``progress``, ``seed``...).

    Returns
    -------
    (dict, History)
        What the probe stage reported (:func:`transfer_utils.fit_linear_head`) and
        the history of the fine-tuning stage.

    Examples
    --------
    >>> import transfer_utils as tu
    >>> net = tu.replace_head(tu.zoo.load("mnist8_cnn"), 10)
    >>> loader = tu.make_loader(tu.few_shot(tu.load_digits(), 2), 10, shuffle=True)
    >>> probe, ft = tu.lp_ft(net, loader, steps=3, progress=False)
    >>> probe["train_accuracy"] > 0.5, ft.steps
    (True, 3)
    """
    V.epochs_or_steps(epochs, steps, "lp_ft")
    for bad in ("optimizer",):
        if bad in fit_kwargs:
            raise TypeError(f"lp_ft builds its own optimizer; do not pass {bad!r}")
    if (body_lr is None) != (head_lr is None):
        raise TypeError("lp_ft: give both body_lr and head_lr, or neither (then both are lr); "
                        f"got body_lr={body_lr!r}, head_lr={head_lr!r}")
    lr = V.positive(lr, "lr", "lp_ft")
    body_lr = lr if body_lr is None else V.nonneg(body_lr, "body_lr", "lp_ft")
    head_lr = lr if head_lr is None else V.positive(head_lr, "head_lr", "lp_ft")
    head = head or _head_prefix(model)
    if head is None:
        raise TypeError(
            f"lp_ft cannot find the head of {type(model).__name__}; pass head='name' "
            "(the dotted name of the output layer)"
        )
    freeze(model)
    try:
        probe = fit_linear_head(model, train_loader if probe_data is None else probe_data, C=C,
                                device=fit_kwargs.get("device"))
    finally:
        unfreeze(model)
    groups = param_groups(model, {head: head_lr}, default_lr=body_lr)
    ft_hist = fit(model, train_loader, epochs=epochs, steps=steps,
                  optimizer=torch.optim.Adam(groups), val_loader=val_loader, **fit_kwargs)
    return probe, ft_hist


@dataclass
class KFoldEpochs:
    """What :func:`kfold_epochs` measured: per-fold held-out curves and the chosen epoch."""

    best_epoch: int
    val_loss: np.ndarray  # [folds, max_epochs]
    val_acc: np.ndarray  # [folds, max_epochs]
    criterion: str
    rule: str

    @property
    def folds(self) -> int:
        return int(self.val_loss.shape[0])

    @property
    def max_epochs(self) -> int:
        return int(self.val_loss.shape[1])

    def curve(self, metric: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Mean over folds and its standard error, per epoch, of ``"loss"`` or ``"accuracy"``."""
        metric = metric or self.criterion
        V.one_of(metric, "metric", ("loss", "accuracy"), "KFoldEpochs.curve")
        values = self.val_loss if metric == "loss" else self.val_acc
        se = values.std(0, ddof=1) / np.sqrt(self.folds)
        return values.mean(0), se

    def __repr__(self) -> str:
        e = self.best_epoch
        acc = self.val_acc.mean(0)[e - 1]
        return (f"KFoldEpochs(best_epoch={e} of {self.max_epochs} by {self.criterion}, "
                f"rule {self.rule!r}, {self.folds} folds, mean held-out accuracy there {acc:.3f})")


def _choose_epoch(mean: np.ndarray, se: np.ndarray, lower_is_better: bool, rule: str) -> int:
    sign = 1.0 if lower_is_better else -1.0
    score = sign * mean  # lower is better from here on
    best = int(np.argmin(score))
    if rule == "best":
        return best + 1
    # one-standard-error rule: the earliest epoch within one SE of the best
    within = np.nonzero(score <= score[best] + se[best])[0]
    return int(within[0]) + 1


def kfold_epochs(
    make_model: Callable[[], nn.Module],
    dataset,
    *,
    max_epochs: int,
    folds: int = 5,
    make_optimizer: Callable[[nn.Module], torch.optim.Optimizer] | None = None,
    batch_size: int = 32,
    criterion: str = "loss",
    rule: str = "best",
    seed: int = 0,
    device: str | torch.device | None = None,
) -> KFoldEpochs:
    """Choose how many epochs to train by k-fold cross-validation on a small target set.

    With 5 labels per class there is no validation set to spare for early
    stopping. Chapter 3 uses this instead: split ``dataset`` into ``folds``
    stratified parts; for each, train a fresh model on the others for
    ``max_epochs`` while recording the held-out loss and accuracy after every
    epoch; average the curves over folds and pick the best epoch. Then train on
    all of ``dataset`` for that many epochs.

    Parameters
    ----------
    make_model : callable
        ``make_model() -> nn.Module``, a fresh model for each fold (e.g. a copy of
        the pretrained model with a new head).
    dataset : Dataset
        The whole small training set; every class needs at least ``folds`` examples
        (the folds come from :func:`transfer_utils.fold_splits`).
    max_epochs : int
        Length of each fold's curve.
    folds : int
        Number of folds (>= 2).
    make_optimizer : callable, optional
        ``make_optimizer(model) -> optimizer``; default Adam at 1e-3.
    batch_size : int
    criterion : {"loss", "accuracy"}
        Judge epochs by mean held-out loss (lower is better) or accuracy.
    rule : {"best", "1se"}
        ``"best"``: the epoch with the best mean (ties go to the earliest).
        ``"1se"``: the earliest epoch whose mean is within one standard error
        (over folds) of the best one, the "one-standard-error rule" of
        cross-validation: as good as the best within the noise of the estimate,
        and cheaper.
    seed : int
        Seeds the fold assignment and each fold's shuffling.
    device : str or torch.device, optional

    Returns
    -------
    KFoldEpochs
        ``best_epoch`` (1-based), the per-fold curves and their means.

    Examples
    --------
    >>> import transfer_utils as tu
    >>> ds = tu.few_shot(tu.load_digits(), 3)
    >>> res = tu.kfold_epochs(lambda: tu.SmallCNN(), ds, max_epochs=2, folds=3)
    >>> res.val_acc.shape, 1 <= res.best_epoch <= 2
    ((3, 2), True)
    """
    max_epochs = V.positive_int(max_epochs, "max_epochs", "kfold_epochs")
    V.one_of(criterion, "criterion", ("loss", "accuracy"), "kfold_epochs")
    V.one_of(rule, "rule", ("best", "1se"), "kfold_epochs")
    parts = fold_splits(dataset, folds, seed=seed)
    make_optimizer = make_optimizer or (lambda m: torch.optim.Adam(
        [p for p in m.parameters() if p.requires_grad], lr=1e-3))
    losses, accs = [], []
    for f, (train_part, val_part) in enumerate(parts):
        torch.manual_seed(seed + f)
        model = make_model()
        hist = fit(model, make_loader(train_part, min(batch_size, len(train_part)), shuffle=True,
                                      seed=seed + f),
                   epochs=max_epochs, optimizer=make_optimizer(model),
                   val_loader=make_loader(val_part, 512), restore_best=False,
                   device=device, progress=False)
        losses.append(hist.val_loss)
        accs.append(hist.val_acc)
    result = KFoldEpochs(0, np.asarray(losses), np.asarray(accs), criterion, rule)
    mean, se = result.curve()
    result.best_epoch = _choose_epoch(mean, se, criterion == "loss", rule)
    return result






