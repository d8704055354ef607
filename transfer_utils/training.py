"""The training loop every chapter uses: fit, evaluate, predict, and the History they return."""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from .runtime import get_device, progress_enabled

__all__ = ["History", "fit", "evaluate", "predict", "train_loop"]

Batch = tuple[torch.Tensor, torch.Tensor]
# compute_loss(model, x, y) -> (loss, logits); lets distillation reuse the same loop.
LossStep = Callable[[nn.Module, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


@dataclass
class History:
    """Per-epoch record of a training run (validation entries only with a validation loader)."""

    train_loss: list[float] = field(default_factory=list)
    train_acc: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    val_acc: list[float] = field(default_factory=list)
    epoch_time: list[float] = field(default_factory=list)
    best_epoch: int | None = None
    stopped_early: bool = False

    @property
    def epochs(self) -> int:
        return len(self.train_loss)

    def as_dict(self) -> dict:
        return asdict(self)

    def __repr__(self) -> str:
        if not self.epochs:
            return "History(empty)"
        s = f"History({self.epochs} epochs, train_loss {self.train_loss[-1]:.4f}"
        s += f", train_acc {self.train_acc[-1]:.3f}"
        if self.val_acc:
            s += f", val_acc {self.val_acc[-1]:.3f}, best epoch {self.best_epoch}"
        return s + ")"


def _ce_step(loss_fn: Callable) -> LossStep:
    def step(model: nn.Module, x: torch.Tensor, y: torch.Tensor):
        logits = model(x)
        return loss_fn(logits, y), logits

    return step


def _check_loader(loader: Iterable, what: str) -> None:
    if loader is None or not hasattr(loader, "__iter__"):
        raise TypeError(
            f"{what} must be an iterable of (inputs, targets) batches such as "
            f"tu.make_loader(dataset) or a DataLoader, got {type(loader).__name__}"
        )
    try:
        if len(loader) == 0:  # type: ignore[arg-type]
            raise ValueError(f"{what} is empty: it yields no batches (is the dataset empty?)")
    except TypeError:
        pass


def _bar(total: int, desc: str, enabled: bool):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, leave=False)


def train_loop(
    model: nn.Module,
    train_loader: Iterable[Batch],
    compute_loss: LossStep,
    *,
    epochs: int,
    optimizer: torch.optim.Optimizer,
    val_loader: Iterable[Batch] | None = None,
    scheduler=None,
    penalty: Callable[[nn.Module], torch.Tensor] | None = None,
    early_stopping: int | None = None,
    restore_best: bool = True,
    device: torch.device | str | None = None,
    progress: bool | None = None,
    on_epoch_end: Callable[[int, nn.Module, History], None] | None = None,
    desc: str = "fit",
) -> History:
    """The loop behind :func:`fit` and :func:`transfer_utils.distill`, for a custom loss.

    ``compute_loss(model, x, y)`` returns ``(loss, logits)``; the logits give the
    training accuracy. See :func:`fit` for the other arguments.
    """
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs must be a positive integer, got {epochs!r}")
    if early_stopping is not None:
        if val_loader is None:
            raise ValueError("early_stopping needs a val_loader to watch; pass val_loader=...")
        if early_stopping < 1:
            raise ValueError(f"early_stopping is a patience in epochs (>= 1), got {early_stopping}")
    _check_loader(train_loader, "train_loader")
    if val_loader is not None:
        _check_loader(val_loader, "val_loader")
    device = get_device(device)
    model.to(device)
    history = History()
    best_loss, best_state, waited = math.inf, None, 0
    show = progress_enabled(progress)
    bar = _bar(epochs, desc, show)
    try:
        for epoch in range(1, epochs + 1):
            t0 = time.perf_counter()
            model.train()
            total_loss = torch.zeros((), device=device)
            correct = torch.zeros((), device=device, dtype=torch.long)
            seen = 0
            for b, (x, y) in enumerate(train_loader, start=1):
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                loss, logits = compute_loss(model, x, y)
                if penalty is not None:
                    loss = loss + penalty(model)
                if not torch.isfinite(loss):
                    raise FloatingPointError(
                        f"non-finite loss ({loss.item()}) at epoch {epoch}, batch {b}: lower the "
                        "learning rate, check the inputs for NaN/inf, or clip gradients"
                    )
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                n = y.shape[0]
                total_loss += loss.detach() * n
                if logits.dim() == 2 and y.dim() == 1:
                    correct += (logits.detach().argmax(1) == y).sum()
                seen += n
            if scheduler is not None:
                scheduler.step()
            history.train_loss.append(total_loss.item() / seen)
            history.train_acc.append(correct.item() / seen)
            if val_loader is not None:
                metrics = evaluate(model, val_loader, device=device)
                history.val_loss.append(metrics["loss"])
                history.val_acc.append(metrics["accuracy"])
                if metrics["loss"] < best_loss - 1e-12:
                    best_loss, waited, history.best_epoch = metrics["loss"], 0, epoch
                    if restore_best:
                        best_state = copy.deepcopy(model.state_dict())
                else:
                    waited += 1
            history.epoch_time.append(time.perf_counter() - t0)
            if on_epoch_end is not None:
                on_epoch_end(epoch, model, history)
            if bar is not None:
                post = {"loss": f"{history.train_loss[-1]:.3f}"}
                if history.val_acc:
                    post["val_acc"] = f"{history.val_acc[-1]:.3f}"
                bar.set_postfix(post)
                bar.update(1)
            if early_stopping is not None and waited >= early_stopping:
                history.stopped_early = True
                break
    finally:
        if bar is not None:
            bar.close()
    if restore_best and best_state is not None:
        model.load_state_dict(best_state)
    return history


def fit(
    model: nn.Module,
    train_loader: Iterable[Batch],
    *,
    epochs: int,
    val_loader: Iterable[Batch] | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    scheduler=None,
    penalty: Callable[[nn.Module], torch.Tensor] | None = None,
    early_stopping: int | None = None,
    restore_best: bool = True,
    device: torch.device | str | None = None,
    progress: bool | None = None,
    on_epoch_end: Callable[[int, nn.Module, History], None] | None = None,
) -> History:
    """Train ``model`` for ``epochs`` epochs and return its :class:`History`.

    Reads top to bottom like a hand-written loop: for each batch, move it to the
    device, compute the loss, step the optimizer; after each epoch, optionally
    evaluate on ``val_loader``. A non-finite loss stops training with an error that
    names the epoch and batch.

    Parameters
    ----------
    model : nn.Module
        Moved to ``device``.
    train_loader : iterable of (x, y)
        For example ``tu.make_loader(ds, shuffle=True)``.
    epochs : int
    val_loader : iterable of (x, y), optional
        Evaluated after every epoch (fills ``val_loss``/``val_acc``).
    optimizer : torch.optim.Optimizer, optional
        Default: Adam over the trainable parameters with ``lr`` and ``weight_decay``.
        Build one from :func:`transfer_utils.param_groups` for per-layer rates.
    loss_fn : callable, optional
        ``loss_fn(logits, targets)``; default cross-entropy.
    scheduler : optional
        A learning-rate scheduler stepped once per epoch.
    penalty : callable, optional
        ``penalty(model) -> scalar`` added to the loss, e.g. an L2-SP term.
    early_stopping : int, optional
        Stop after this many epochs without a lower validation loss.
    restore_best : bool
        With a validation loader, end with the weights of the best epoch.
    device : str or torch.device, optional
        Default :func:`transfer_utils.get_device`.
    progress : bool, optional
        Show a progress bar (default: on, unless ``TU_PROGRESS=0``).
    on_epoch_end : callable, optional
        ``on_epoch_end(epoch, model, history)`` after each epoch.

    Examples
    --------
    >>> import transfer_utils as tu
    >>> ds = tu.load_digits()
    >>> net = tu.SmallCNN(num_classes=10)
    >>> hist = tu.fit(net, tu.make_loader(ds, shuffle=True), epochs=1, progress=False)
    >>> len(hist.train_loss)
    1
    """
    if optimizer is None:
        params = [p for p in model.parameters() if p.requires_grad]
        if not params:
            raise ValueError("the model has no trainable parameters: unfreeze something first")
        optimizer = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    step = _ce_step(loss_fn or F.cross_entropy)
    return train_loop(
        model, train_loader, step, epochs=epochs, optimizer=optimizer, val_loader=val_loader,
        scheduler=scheduler, penalty=penalty, early_stopping=early_stopping,
        restore_best=restore_best, device=device, progress=progress, on_epoch_end=on_epoch_end,
    )


@torch.no_grad()
def predict(
    model: nn.Module, loader: Iterable[Batch], *, device: torch.device | str | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and targets for every batch of ``loader``, on the CPU, in eval mode.

    The model's previous train/eval mode is restored afterwards.
    """
    _check_loader(loader, "loader")
    device = get_device(device)
    was_training = model.training
    model.to(device).eval()
    outs, ys = [], []
    try:
        for x, y in loader:
            outs.append(model(x.to(device)).float().cpu())
            ys.append(y.cpu())
    finally:
        model.train(was_training)
    return torch.cat(outs), torch.cat(ys)


def evaluate(
    model: nn.Module,
    loader: Iterable[Batch],
    *,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    device: torch.device | str | None = None,
) -> dict:
    """Mean loss and accuracy of ``model`` over ``loader``.

    Returns
    -------
    dict
        ``{"loss": float, "accuracy": float, "n": int}``.

    Examples
    --------
    >>> import transfer_utils as tu
    >>> m = tu.evaluate(tu.SmallCNN(), tu.make_loader(tu.load_digits()))
    >>> sorted(m)
    ['accuracy', 'loss', 'n']
    """
    logits, y = predict(model, loader, device=device)
    loss = (loss_fn or F.cross_entropy)(logits, y).item()
    acc = (logits.argmax(1) == y).float().mean().item()
    return {"loss": loss, "accuracy": acc, "n": int(y.shape[0])}


def _fit_steps(model, loader, steps: int, optimizer, device=None) -> None:
    """Train for about ``steps`` optimizer steps: whole epochs, at least one, no progress bar.

    The experiments count training in steps, so that a 1-shot and a 20-shot run get the
    same number of updates; :func:`fit` counts epochs.
    """
    fit(model, loader, epochs=max(1, math.ceil(steps / len(loader))), optimizer=optimizer,
        device=device, progress=False)
