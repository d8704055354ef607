"""Fine-tuning helpers: L2-SP, gradual unfreezing, LP-FT, k-fold epochs, forgetting (chapter 3).

Chapter 3 derives each of these; the notebook shows the idea inline and calls
these helpers for the bookkeeping:

- :func:`l2sp_penalty` pulls the fine-tuned weights towards the pretrained ones
  (Li et al. 2018), usable as ``tu.fit(..., penalty=...)``;
- :class:`GradualUnfreezing` unfreezes a model top-down during training
  (Howard and Ruder 2018), usable as ``tu.fit(..., on_epoch_end=...)``;
- :func:`lp_ft` trains the new head on frozen features, then everything
  (Kumar et al. 2022);
- :func:`kfold_epochs` chooses a number of epochs by k-fold cross-validation
  when the target set is too small to spare a validation split;
- :func:`source_task_accuracy` measures forgetting: the source task's accuracy
  of a fine-tuned body with the source head put back;
- :func:`check_param_groups` checks the chapter's exercise on discriminative
  learning rates;
- :class:`TransferGrid`, :func:`relative_change` and :func:`results_table` are
  the bookkeeping of the chapter's experiments: train each configuration once,
  measure how far the weights moved, print the results.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .analysis import Summary, Table, format_table, summarize
from .data import ArrayDataset, _stratified_folds, few_shot, make_loader
from .experiments import transfer_run
from .models import get_head
from .surgery import _matches, freeze, param_groups, unfreeze
from .training import History, evaluate, fit

__all__ = [
    "TransferGrid",
    "relative_change",
    "results_table",
    "L2SP",
    "l2sp_penalty",
    "GradualUnfreezing",
    "lp_ft",
    "KFoldEpochs",
    "kfold_epochs",
    "plot_kfold",
    "source_task_accuracy",
    "check_param_groups",
]


class TransferGrid:
    """Train each (method, k, seed, settings) once; evaluate the trained models on any split.

    Chapter 3 runs many overlapping experiments: the learning-rate sweep on a
    validation split picks the body rate, the method comparison reports the
    chosen setting on the test split, the layer-freezing experiment reuses the
    fine-tuned and frozen runs, and the forgetting experiment measures the same
    models on the source task. A grid trains each configuration with
    :func:`transfer_utils.transfer_run` the first time it is asked for and keeps
    the models, so nothing is trained twice.

    Parameters
    ----------
    source : nn.Module
        The pretrained model (never changed).
    train : ArrayDataset
        The pool that ``tu.few_shot(train, k, seed)`` draws the training sets from.
    seeds : sequence of int
        Every query is answered over these seeds.
    **defaults
        Arguments for every :func:`transfer_utils.transfer_run` call (``steps``,
        ``lr``, ``device``, ...); a query's own arguments override them.

    Examples
    --------
    >>> import transfer_utils as tu
    >>> digits = tu.load_digits()
    >>> pool, val = tu.split(digits, (0.8, 0.2), seed=0)
    >>> grid = tu.TransferGrid(tu.zoo.load("mnist8_cnn"), pool, seeds=(0, 1), steps=5)
    >>> s = grid.accuracy("frozen", 1, val)
    >>> s.n, len(grid)
    (2, 2)
    >>> _ = grid.accuracy("frozen", 1, val)  # cached: nothing is trained again
    >>> len(grid)
    2
    """

    def __init__(self, source: nn.Module, train: ArrayDataset, *,
                 seeds: Sequence[int] = (0, 1, 2), **defaults):
        if not isinstance(train, ArrayDataset):
            raise TypeError(f"train must be a tu.ArrayDataset, got {type(train).__name__}")
        seeds = tuple(int(s) for s in seeds)
        if not seeds:
            raise ValueError("TransferGrid needs at least one seed")
        self.source = source
        self.train = train
        self.seeds = seeds
        self.defaults = defaults
        self.seconds = 0.0
        self._models: dict[tuple, nn.Module] = {}
        self._scores: dict[tuple, float] = {}
        self._data: dict[int, object] = {}

    @staticmethod
    def _key(method: str, k: int, seed: int, kwargs: dict) -> tuple:
        return (method, int(k), int(seed), tuple(sorted(kwargs.items())))

    def model(self, method: str, k: int, seed: int, **kwargs) -> nn.Module:
        """The model trained by ``method`` on ``few_shot(train, k, seed)`` (trained once)."""
        kw = {**self.defaults, **kwargs}
        key = self._key(method, k, seed, kw)
        if key not in self._models:
            shots = few_shot(self.train, k, seed=seed)
            run = transfer_run(method, self.source, shots, shots, seed=seed, **kw)
            self.seconds += run["seconds"]
            self._models[key] = run["model"]
        return self._models[key]

    def models(self, method: str, k: int, **kwargs) -> list[nn.Module]:
        """One trained model per seed."""
        return [self.model(method, k, s, **kwargs) for s in self.seeds]

    def score(self, fn: Callable[[nn.Module], float], method: str, k: int, *,
              name: str | None = None, **kwargs) -> Summary:
        """Summarise ``fn(model)`` over seeds; cached when ``name`` is given."""
        vals = []
        for s in self.seeds:
            m = self.model(method, k, s, **kwargs)
            key = (name, self._key(method, k, s, {**self.defaults, **kwargs}))
            if name is None or key not in self._scores:
                v = float(fn(m))
                if name is None:
                    vals.append(v)
                    continue
                self._scores[key] = v
            vals.append(self._scores[key])
        return summarize(vals)

    def accuracy(self, method: str, k: int, data: ArrayDataset, **kwargs) -> Summary:
        """Accuracy on ``data`` over seeds (mean, std, 95% CI)."""
        if not isinstance(data, ArrayDataset):
            raise TypeError(f"data must be a tu.ArrayDataset, got {type(data).__name__}")
        self._data[id(data)] = data  # keep it alive so its id stays unique
        loader = make_loader(data, 512)
        device = self.defaults.get("device")
        return self.score(lambda m: evaluate(m, loader, device=device)["accuracy"],
                          method, k, name=f"accuracy@{id(data)}", **kwargs)

    def curve(self, method: str, ks: Sequence[int], data: ArrayDataset,
              **kwargs) -> dict[int, Summary]:
        """``{k: accuracy Summary}`` for :func:`transfer_utils.plot_curves`."""
        if not list(ks):
            raise ValueError("curve needs at least one k")
        return {k: self.accuracy(method, k, data, **kwargs) for k in ks}

    def __len__(self) -> int:
        return len(self._models)

    def __repr__(self) -> str:
        return (f"TransferGrid({len(self)} trained runs, seeds {list(self.seeds)}, "
                f"{self.seconds:.1f} s of training)")


def relative_change(model: nn.Module, source: nn.Module | Mapping[str, torch.Tensor],
                    prefix: str = "body") -> float:
    r"""How far fine-tuning moved the weights: :math:`\|\theta - \theta^0\|_2 / \|\theta^0\|_2`.

    Over the parameters under ``prefix`` that ``model`` and ``source`` share
    (same name and shape). Chapter 3 uses it to show that a large body learning
    rate carries the weights far from the pretrained ones.

    Examples
    --------
    >>> import transfer_utils as tu
    >>> net = tu.SmallCNN()
    >>> tu.relative_change(net, net)
    0.0
    """
    src = source.state_dict() if isinstance(source, nn.Module) else dict(source)
    num = den = 0.0
    n = 0
    with torch.no_grad():
        for name, p in model.named_parameters():
            if not _matches(name, prefix):
                continue
            s = src.get(name)
            if s is None or tuple(s.shape) != tuple(p.shape):
                continue
            s = s.to(p.device, p.dtype)
            num += float((p - s).pow(2).sum())
            den += float(s.pow(2).sum())
            n += 1
    if n == 0:
        raise ValueError(
            f"relative_change found no parameter under {prefix!r} shared by model and source; "
            "pass the pretrained model the target was copied from (and prefix='' for all)"
        )
    if den == 0:
        raise ValueError("the source weights under the prefix are all zero: no relative scale")
    return (num / den) ** 0.5


def results_table(results: Mapping[str, Mapping], *, title: str = "", fmt: str = ".3f",
                  column_format: str = "k={}") -> Table:
    """A plain-text table: one row per outer key, one column per inner key.

    Cells may be :class:`transfer_utils.Summary` (shown as ``mean ± std``), numbers
    or strings. Column keys that are not strings are shown with ``column_format``
    (``"k={}"`` for labels per class, ``"{:g}"`` for learning rates). Chapter 3
    prints its results this way; the layout is :func:`transfer_utils.format_table`'s.

    Examples
    --------
    >>> import transfer_utils as tu
    >>> print(tu.results_table({"scratch": {1: tu.summarize([0.5, 0.7])}}, title="method"))
    method  | k=1
    --------+--------------
    scratch | 0.600 ± 0.141
    """
    if not isinstance(results, Mapping) or not results:
        raise ValueError("results_table needs a non-empty mapping {row: {column: value}}")
    if not all(isinstance(row, Mapping) for row in results.values()):
        raise TypeError("each row must be a mapping {column: value}")

    def head(c) -> str:
        return c if isinstance(c, str) else column_format.format(c)

    rows = [{title: str(r), **{head(c): v for c, v in row.items()}} for r, row in results.items()]
    return format_table(rows, floatfmt=fmt)


def _head_prefix(model: nn.Module) -> str | None:
    """Dotted name of the model's output layer (``"head"``, ``"fc"``, ...), or None."""
    try:
        _, _, layer = get_head(model)
    except TypeError:
        return None
    for name, module in model.named_modules():
        if module is layer:
            return name
    return None  # pragma: no cover - get_head returns a submodule of model


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
                "build the penalty from the model you train: tu.l2sp_penalty(model, source, alpha)"
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
    model: nn.Module,
    source_state: nn.Module | Mapping[str, torch.Tensor],
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
    model : nn.Module
        The model being fine-tuned (with its new head).
    source_state : nn.Module or state dict
        The pretrained weights to anchor to. Only parameters with the same name
        and shape in ``model`` are anchored; the values are copied, so later
        changes to the source do not move the anchor.
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
    >>> pen = tu.l2sp_penalty(net, src, alpha=0.01)
    >>> pen(net).item()  # starts at the anchor: no penalty yet
    0.0
    >>> "head.weight" in pen.anchors
    False
    """
    for what, value in (("alpha", alpha), ("beta", beta)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise ValueError(f"{what} must be a non-negative number, got {value!r}")
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    if isinstance(source_state, nn.Module):
        source = source_state.state_dict()
    elif isinstance(source_state, Mapping):
        source = dict(source_state)
    else:
        raise TypeError(
            "source_state must be the pretrained nn.Module or its state_dict(), got "
            f"{type(source_state).__name__}"
        )
    if exclude is None:
        head = _head_prefix(model)
        exclude = (head,) if head else ()
    anchors: dict[str, torch.Tensor] = {}
    new: list[str] = []
    for name, p in model.named_parameters():
        src = source.get(name)
        if (any(_matches(name, e) for e in exclude) or src is None
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
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"every must be a positive number of epochs, got {every!r}")
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
                       if any(_matches(n, s) for s in stage) and id(p) not in in_opt]
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
    head_epochs: int,
    epochs: int,
    lr: float = 1e-3,
    body_lr: float | None = None,
    head: str | None = None,
    val_loader=None,
    **fit_kwargs,
) -> tuple[History, History]:
    """Linear probing, then fine-tuning (LP-FT, Kumar et al. 2022), on any model with a head.

    Stage 1 freezes everything but the head (BatchNorm in eval mode) and trains the
    head for ``head_epochs``; stage 2 unfreezes everything and trains it all for
    ``epochs``, the head at ``lr`` and the rest at ``body_lr``. Chapter 3 explains
    why: a random head sends large, random gradients into the body; a head that
    already fits the frozen features does not, so the pretrained features move
    less. (:func:`transfer_utils.transfer_run` with ``"lp-ft"`` does the same by
    optimizer steps for the book's experiments.)

    Parameters
    ----------
    model : nn.Module
        Already with its new head (:func:`transfer_utils.replace_head`).
    train_loader : iterable of (x, y)
    head_epochs, epochs : int
        Epochs of the two stages (``head_epochs`` may be 0).
    lr : float
        Head learning rate (both stages).
    body_lr : float, optional
        Learning rate of everything else in stage 2 (default ``lr``).
    head : str, optional
        Name of the head; found automatically for ``.head``, ``.fc``, ``.classifier``.
    val_loader : optional
        Passed to both stages of :func:`transfer_utils.fit`.
    **fit_kwargs
        Other arguments of :func:`transfer_utils.fit` (``device``, ``progress``, ...).

    Returns
    -------
    (History, History)
        The histories of the probing and the fine-tuning stage (the first is
        empty when ``head_epochs`` is 0).

    Examples
    --------
    >>> import transfer_utils as tu
    >>> net = tu.replace_head(tu.SmallCNN(), 10)
    >>> loader = tu.make_loader(tu.few_shot(tu.load_digits(), 2), 10, shuffle=True)
    >>> lp, ft = tu.lp_ft(net, loader, head_epochs=1, epochs=1, body_lr=1e-4, progress=False)
    >>> lp.epochs, ft.epochs
    (1, 1)
    """
    if isinstance(head_epochs, bool) or not isinstance(head_epochs, int) or head_epochs < 0:
        raise ValueError(f"head_epochs must be a non-negative integer, got {head_epochs!r}")
    for bad in ("optimizer", "epochs"):
        if bad in fit_kwargs:
            raise TypeError(f"lp_ft builds its own optimizers; do not pass {bad!r}")
    head = head or _head_prefix(model)
    if head is None:
        raise TypeError(
            f"lp_ft cannot find the head of {type(model).__name__}; pass head='name' "
            "(the dotted name of the output layer)"
        )
    body_lr = lr if body_lr is None else body_lr
    probe_hist = History()
    if head_epochs:
        freeze(model)
        unfreeze(model, head)
        try:
            probe_hist = fit(model, train_loader, epochs=head_epochs, lr=lr,
                             val_loader=val_loader, **fit_kwargs)
        finally:
            unfreeze(model)
    unfreeze(model)
    groups = param_groups(model, {head: lr}, default_lr=body_lr)
    ft_hist = fit(model, train_loader, epochs=epochs, optimizer=torch.optim.Adam(groups),
                  val_loader=val_loader, **fit_kwargs)
    return probe_hist, ft_hist


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
        if metric not in ("loss", "accuracy"):
            raise ValueError(f"metric must be 'loss' or 'accuracy', got {metric!r}")
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
    dataset: ArrayDataset,
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
    dataset : ArrayDataset
        The whole small training set; every class needs at least ``folds`` examples.
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
    if isinstance(folds, bool) or not isinstance(folds, int) or folds < 2:
        raise ValueError(f"folds must be an integer >= 2, got {folds!r}")
    if isinstance(max_epochs, bool) or not isinstance(max_epochs, int) or max_epochs < 1:
        raise ValueError(f"max_epochs must be a positive integer, got {max_epochs!r}")
    if criterion not in ("loss", "accuracy"):
        raise ValueError(f"criterion must be 'loss' or 'accuracy', got {criterion!r}")
    if rule not in ("best", "1se"):
        raise ValueError(f"rule must be 'best' or '1se', got {rule!r}")
    if not isinstance(dataset, ArrayDataset):
        raise TypeError(f"dataset must be a tu.ArrayDataset, got {type(dataset).__name__}")
    counts = dataset.y.cpu().bincount()
    counts = counts[counts > 0]
    if len(counts) == 0 or int(counts.min()) < folds:
        raise ValueError(
            f"kfold_epochs needs at least {folds} examples of every class for {folds} folds; "
            f"the smallest class has {int(counts.min()) if len(counts) else 0}: use fewer folds"
        )
    make_optimizer = make_optimizer or (lambda m: torch.optim.Adam(
        [p for p in m.parameters() if p.requires_grad], lr=1e-3))
    parts = _stratified_folds(dataset.y.cpu(), folds, seed)
    losses, accs = [], []
    for f, held in enumerate(parts):
        rest = torch.cat([p for i, p in enumerate(parts) if i != f]).sort().values
        train_part, val_part = dataset.subset(rest), dataset.subset(held)
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


def plot_kfold(result: KFoldEpochs, *, metric: str | None = None,
               reference: History | None = None, reference_label: str = "validation split",
               ax=None):
    """Plot the k-fold held-out curve (mean ± one standard error) and the chosen epoch.

    ``reference`` adds the validation curve of a :class:`transfer_utils.History`
    (e.g. one run watched on a large validation split) for comparison. Returns
    the matplotlib Figure (chapter 3).
    """
    import matplotlib.pyplot as plt

    metric = metric or result.criterion
    mean, se = result.curve(metric)
    epochs = np.arange(1, result.max_epochs + 1)
    fig, ax = (ax.figure, ax) if ax is not None else plt.subplots(figsize=(5.5, 3.8))
    ax.plot(epochs, mean, label=f"{result.folds}-fold held-out (mean ± SE)")
    ax.fill_between(epochs, mean - se, mean + se, alpha=0.25)
    if reference is not None:
        ref = reference.val_loss if metric == "loss" else reference.val_acc
        if not ref:
            raise ValueError("reference has no validation curve: fit it with val_loader=...")
        ax.plot(np.arange(1, len(ref) + 1), ref, "--", label=reference_label)
    ax.axvline(result.best_epoch, color="grey", ls=":",
               label=f"chosen epoch {result.best_epoch} ({result.rule})")
    ax.set(xlabel="epoch", ylabel=f"held-out {metric}")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return fig


def source_task_accuracy(
    model: nn.Module,
    source: nn.Module,
    data: ArrayDataset,
    *,
    device: str | torch.device | None = None,
) -> float:
    """Source-task accuracy of a fine-tuned body with the source model's head put back.

    Chapter 3 measures forgetting this way: the fine-tuned ``model`` keeps its
    body (weights and BatchNorm statistics), its head is replaced by a copy of
    ``source``'s head, and the result is evaluated on the source task's ``data``.
    Neither model is changed.

    Examples
    --------
    >>> import transfer_utils as tu
    >>> src = tu.SmallCNN(num_classes=10)
    >>> acc = tu.source_task_accuracy(src, src, tu.load_digits())
    >>> 0.0 <= acc <= 1.0
    True
    """
    *_, head_s = get_head(source)
    probe = copy.deepcopy(model)
    parent, attr, head = get_head(probe)
    if head.in_features != head_s.in_features:
        raise ValueError(
            f"the source head reads {head_s.in_features} features but the model's body gives "
            f"{head.in_features}: source_task_accuracy needs the body the source was copied to"
        )
    new_head = copy.deepcopy(head_s).to(device=head.weight.device)
    setattr(parent, attr, new_head)
    if data.num_classes != head_s.out_features:
        raise ValueError(
            f"data has {data.num_classes} classes but the source head has "
            f"{head_s.out_features} outputs: pass the source task's data "
            "(tu.zoo.source_data(name)[1] for a zoo model)"
        )
    return evaluate(probe, make_loader(data, 512), device=device)["accuracy"]


def check_param_groups(groups, model: nn.Module, *, ratio: float = 10.0) -> None:
    """Check the exercise "write the parameter groups so the head learns 10x faster".

    Passes when ``groups`` (a list of dicts with ``"params"`` and ``"lr"``, as an
    optimizer takes them) holds every trainable parameter of ``model`` exactly
    once, every body parameter has one learning rate, every head parameter has
    one learning rate, and the head's is ``ratio`` times the body's. Prints a
    short confirmation; raises ``AssertionError`` with a hint otherwise.

    Examples
    --------
    >>> import transfer_utils as tu
    >>> net = tu.SmallCNN()
    >>> tu.check_param_groups([{"params": net.body.parameters(), "lr": 1e-4},
    ...                        {"params": net.head.parameters(), "lr": 1e-3}], net)
    Correct: the head learns 10x faster than the body (head 0.001, body 0.0001).
    """
    head = _head_prefix(model)
    if head is None:
        raise TypeError(f"check_param_groups cannot find the head of {type(model).__name__}")
    if isinstance(groups, torch.optim.Optimizer):
        groups = groups.param_groups
    if isinstance(groups, Mapping) or not isinstance(groups, (list, tuple)):
        raise AssertionError(
            "Hint: give a list of dicts, one per group, e.g. "
            "[{'params': model.body.parameters(), 'lr': ...}, "
            "{'params': model.head.parameters(), 'lr': ...}]"
        )
    lr_of: dict[int, float] = {}
    for i, g in enumerate(groups):
        if not isinstance(g, Mapping) or "params" not in g:
            raise AssertionError(f"Hint: group {i} must be a dict with a 'params' entry")
        if "lr" not in g:
            raise AssertionError(
                f"Hint: group {i} has no 'lr'; give each group its own learning rate"
            )
        params = g["params"]
        params = [params] if isinstance(params, torch.Tensor) else list(params)
        for p in params:
            if id(p) in lr_of:
                raise AssertionError(
                    "Hint: a parameter appears in two groups; each parameter belongs to exactly "
                    "one group (the optimizer would refuse this list)"
                )
            lr_of[id(p)] = float(g["lr"])
    names = {id(p): n for n, p in model.named_parameters()}
    foreign = [i for i in lr_of if i not in names]
    if foreign:
        raise AssertionError(
            "Hint: the groups hold parameters that are not the model's; take them from the "
            "model you pass (model.body.parameters(), model.head.parameters())"
        )
    missing = [n for n, p in model.named_parameters() if p.requires_grad and id(p) not in lr_of]
    if missing:
        raise AssertionError(
            f"Hint: {len(missing)} trainable parameters are in no group (e.g. {missing[:2]}): "
            "the optimizer would never update them"
        )
    body_lrs = {lr for i, lr in lr_of.items() if not _matches(names[i], head)}
    head_lrs = {lr for i, lr in lr_of.items() if _matches(names[i], head)}
    if not head_lrs or not body_lrs:
        raise AssertionError("Hint: give the body and the head each a group")
    if len(body_lrs) > 1 or len(head_lrs) > 1:
        raise AssertionError(
            f"Hint: use one rate for the whole body and one for the head; got body rates "
            f"{sorted(body_lrs)} and head rates {sorted(head_lrs)}"
        )
    body_lr, head_lr = body_lrs.pop(), head_lrs.pop()
    if head_lr == body_lr:
        raise AssertionError(
            f"Hint: the body and the head both learn at {head_lr:g}; the new head should "
            f"learn {ratio:g}x faster than the pretrained body (e.g. body {head_lr / ratio:g})"
        )
    if body_lr <= 0:
        raise AssertionError(
            "Hint: a body rate of 0 freezes the body; the exercise asks for a smaller rate, "
            "not none"
        )
    if head_lr < body_lr:
        raise AssertionError(
            f"Hint: the rates are the wrong way round (body {body_lr:g}, head {head_lr:g}): "
            "the pretrained body gets the smaller rate"
        )
    if not np.isclose(head_lr / body_lr, ratio, rtol=1e-6):
        raise AssertionError(
            f"Hint: the head learns {head_lr / body_lr:g}x faster than the body; the exercise "
            f"asks for {ratio:g}x"
        )
    print(f"Correct: the head learns {ratio:g}x faster than the body "
          f"(head {head_lr:g}, body {body_lr:g}).")
