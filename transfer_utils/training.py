"""The one training loop: fit, evaluate, predict, and the History they return (chapter 3)."""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from . import _validate as V
from .runtime import get_device, progress_enabled, seed_everything

__all__ = ["History", "TrainingInterrupted", "fit", "evaluate", "predict", "train_loop"]

Batch = tuple[torch.Tensor, torch.Tensor]
# compute_loss(model, x, y) -> (loss, logits); lets distillation and multi-task training
# reuse the same loop.
LossStep = Callable[[nn.Module, object, object], tuple[torch.Tensor, torch.Tensor]]


@dataclass
class History:
    """Per-epoch record of a training run (validation entries only with a validation loader).

    ``steps`` counts optimizer updates; ``interrupted`` is True when the run was
    stopped with Ctrl-C (see :class:`TrainingInterrupted`).
    """

    train_loss: list[float] = field(default_factory=list)
    train_acc: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    val_acc: list[float] = field(default_factory=list)
    epoch_time: list[float] = field(default_factory=list)
    best_epoch: int | None = None
    stopped_early: bool = False
    steps: int = 0
    interrupted: bool = False

    @property
    def epochs(self) -> int:
        return len(self.train_loss)

    def as_dict(self) -> dict:
        return asdict(self)

    def __repr__(self) -> str:
        if not self.epochs:
            return "History(empty)"
        s = f"History({self.epochs} epochs, {self.steps} steps, "
        s += f"train_loss {self.train_loss[-1]:.4f}, train_acc {self.train_acc[-1]:.3f}"
        if self.val_acc:
            s += f", val_acc {self.val_acc[-1]:.3f}, best epoch {self.best_epoch}"
        return s + (", interrupted" if self.interrupted else "") + ")"


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during :func:`fit`: the run stopped, and nothing learnt so far is lost.

    ``history`` holds the epochs finished before the interruption. When the run
    tracked a best validation epoch, the model already holds that epoch's weights.
    In a notebook the exception is ``sys.last_value`` after the cell stops.
    """

    def __init__(self, message: str, history: History):
        super().__init__(message)
        self.history = history


def _ce_step(loss_fn: Callable, check_labels: bool) -> LossStep:
    def step(model: nn.Module, x: torch.Tensor, y: torch.Tensor):
        logits = model(x)
        if check_labels and logits.dim() == 2:  # before the loss, which would index with y
            V.class_labels(y, logits.shape[1], "train_loader")
        return loss_fn(logits, y), logits

    return step


def _require_loader(loader: Iterable, what: str) -> None:
    if loader is None or isinstance(loader, (str, bytes, torch.Tensor)) or not hasattr(
        loader, "__iter__"
    ):
        hint = (" (a dataset is indexed, not batched: wrap it with tu.make_loader(dataset) or "
                "torch.utils.data.DataLoader(dataset, batch_size=64))"
                if isinstance(loader, torch.utils.data.Dataset) else "")
        raise TypeError(
            f"{what} must be an iterable of (inputs, targets) batches such as "
            f"tu.make_loader(dataset) or a DataLoader, got {type(loader).__name__}{hint}"
        )
    if isinstance(loader, torch.utils.data.Dataset) and not isinstance(
        loader, torch.utils.data.IterableDataset
    ):
        raise TypeError(
            f"{what} is a dataset ({type(loader).__name__}), not a loader of batches: wrap it "
            "with tu.make_loader(dataset, batch_size=64) or torch.utils.data.DataLoader"
        )
    try:
        n = len(loader)  # type: ignore[arg-type]
    except TypeError:
        return
    if n == 0:
        raise ValueError(f"{what} is empty: it yields no batches (is the dataset empty?)")


def _bar(total: int | None, desc: str, enabled: bool):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, leave=False, unit="batch")


def _grads_finite(optimizer: torch.optim.Optimizer) -> bool:
    grads = [p.grad for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
    if not grads:
        return True
    norms = torch._foreach_norm(grads)
    return bool(torch.isfinite(torch.stack([n.float() for n in norms])).all())


def _batches(loader: Iterable, what: str, epoch: int) -> Iterator:
    empty = True
    for batch in loader:
        empty = False
        yield batch
    if empty:
        raise ValueError(
            f"{what} yielded no batch in epoch {epoch}: an exhausted generator or iterator can "
            "be read only once, and an empty dataset has nothing to give; pass a DataLoader, "
            "tu.make_loader(...) or a list of batches"
        )


def train_loop(
    model: nn.Module,
    train_loader: Iterable,
    compute_loss: LossStep,
    *,
    optimizer: torch.optim.Optimizer,
    epochs: int | None = None,
    steps: int | None = None,
    val_loader: Iterable[Batch] | None = None,
    scheduler=None,
    penalty: Callable[[nn.Module], torch.Tensor] | None = None,
    early_stopping: int | None = None,
    restore_best: bool = True,
    seed: int | None = None,
    device: torch.device | str | None = None,
    progress: bool | None = None,
    on_epoch_end: Callable[[int, nn.Module, History], None] | None = None,
    class_labels: bool = True,
    desc: str = "fit",
) -> History:
    """The loop behind :func:`fit`, distillation and multi-task training, for a custom loss.

    ``compute_loss(model, x, y)`` returns ``(loss, logits)``; the logits give the
    training accuracy. With ``class_labels`` each batch must be an ``(x, y)`` pair
    of tensors with integer labels inside the model's outputs (checked once per
    batch); without it the batch is passed to ``compute_loss`` as it comes. See
    :func:`fit` for the other arguments.
    """
    kind, length = V.epochs_or_steps(epochs, steps, desc)
    if early_stopping is not None:
        if val_loader is None:
            raise ValueError("early_stopping needs a val_loader to watch; pass val_loader=...")
        V.positive_int(early_stopping, "early_stopping (a patience in epochs)", desc)
    _require_loader(train_loader, "train_loader")
    if val_loader is not None:
        _require_loader(val_loader, "val_loader")
    if seed is not None:
        seed_everything(V.seed_value(seed, desc))
    device = get_device(device)
    model.to(device)
    params = [p for g in optimizer.param_groups for p in g["params"]]
    if not any(p.requires_grad for p in params):
        raise ValueError("the optimizer holds no trainable parameter: unfreeze something first")
    try:
        per_epoch = len(train_loader)  # type: ignore[arg-type]
    except TypeError:
        per_epoch = None
    if kind == "epochs":
        max_epochs, max_steps = length, None
        total = length * per_epoch if per_epoch else None
    else:
        max_epochs, max_steps = (math.ceil(length / per_epoch) if per_epoch else None), length
        total = length
    history = History()
    best_loss, best_state, waited = math.inf, None, 0
    bar = _bar(total, desc, progress_enabled(progress))
    epoch, b = 0, 0
    try:
        while max_epochs is None or epoch < max_epochs:
            epoch += 1
            t0 = time.perf_counter()
            model.train()
            total_loss = torch.zeros((), device=device)
            correct = torch.zeros((), device=device, dtype=torch.long)
            seen = counted = 0
            for b, batch in enumerate(_batches(train_loader, "train_loader", epoch), start=1):
                if class_labels:
                    x, y = V.batch_pair(batch, "train_loader")
                    x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                    y = V.class_labels(y, None, "train_loader")
                else:  # passed on as it comes; tensors are moved to the device
                    x, y = batch if isinstance(batch, (tuple, list)) and len(batch) == 2 \
                        else (batch, None)
                    x = x.to(device, non_blocking=True) if isinstance(x, torch.Tensor) else x
                    y = y.to(device, non_blocking=True) if isinstance(y, torch.Tensor) else y
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
                if not _grads_finite(optimizer):
                    raise FloatingPointError(
                        f"non-finite gradient at epoch {epoch}, batch {b} although the loss "
                        f"({loss.item():.4g}) is finite; the step was not taken, so the weights "
                        "are still finite: lower the learning rate, clip gradients, or check "
                        "for operations such as sqrt(0) or log(0) in the model"
                    )
                optimizer.step()
                history.steps += 1
                if isinstance(y, torch.Tensor) and y.ndim >= 1:
                    n = y.shape[0]
                    total_loss += loss.detach() * n
                    if logits.dim() == 2 and y.dim() == 1:
                        correct += (logits.detach().argmax(1) == y).sum()
                        counted += n
                    seen += n
                else:  # structured batches (multi-task): average the loss per batch
                    total_loss += loss.detach()
                    seen += 1
                if bar is not None:
                    bar.update(1)
                if max_steps is not None and history.steps >= max_steps:
                    break
            if scheduler is not None:
                scheduler.step()
            history.train_loss.append(total_loss.item() / seen)
            history.train_acc.append(correct.item() / counted if counted else float("nan"))
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
                post = {"epoch": epoch, "loss": f"{history.train_loss[-1]:.3f}"}
                if history.val_acc:
                    post["val_acc"] = f"{history.val_acc[-1]:.3f}"
                bar.set_postfix(post)
            if max_steps is not None and history.steps >= max_steps:
                break
            if early_stopping is not None and waited >= early_stopping:
                history.stopped_early = True
                break
    except KeyboardInterrupt as err:
        history.interrupted = True
        kept = ""
        if restore_best and best_state is not None:
            model.load_state_dict(best_state)
            kept = f" The model holds the weights of the best epoch so far ({history.best_epoch})."
        raise TrainingInterrupted(
            f"training interrupted in epoch {epoch}, batch {b}, after {history.epochs} full "
            f"epochs.{kept} The history so far is the exception's .history (in a notebook: "
            "sys.last_value.history).", history,
        ) from err
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
    epochs: int | None = None,
    steps: int | None = None,
    val_loader: Iterable[Batch] | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    scheduler=None,
    penalty: Callable[[nn.Module], torch.Tensor] | None = None,
    early_stopping: int | None = None,
    restore_best: bool = True,
    seed: int | None = None,
    device: torch.device | str | None = None,
    progress: bool | None = None,
    on_epoch_end: Callable[[int, nn.Module, History], None] | None = None,
) -> History:
    """Train ``model`` for ``epochs`` passes or ``steps`` updates and return its :class:`History`.

    Reads top to bottom like a hand-written loop: for each batch, move it to the
    device, compute the loss, step the optimizer; after each epoch, optionally
    evaluate on ``val_loader``. Each batch is checked once: an ``(x, y)`` pair of
    tensors, integer labels inside the model's outputs (other integer dtypes
    become int64; float labels are refused unless you pass a ``loss_fn``). A
    non-finite loss, or a non-finite gradient, stops training with an error that
    names the epoch and batch, before the weights are touched. Ctrl-C stops it
    with :class:`TrainingInterrupted`, which carries the history so far.

    Parameters
    ----------
    model : nn.Module
        Moved to ``device``.
    train_loader : iterable of (x, y)
        For example ``tu.make_loader(ds, shuffle=True)`` or a ``DataLoader``.
    epochs, steps : int
        How long to train: exactly one of them. ``steps`` counts optimizer updates
        (the last epoch stops part-way), so runs on 10 or 1,000 examples can be
        given the same budget.
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
    seed : int, optional
        Seed everything (:func:`transfer_utils.seed_everything`) before training;
        every trainer in the package takes ``seed=`` the same way.
    device : str or torch.device, optional
        Default :func:`transfer_utils.get_device`.
    progress : bool, optional
        Show a progress bar that moves per batch (default: on, unless ``TU_PROGRESS=0``).
    on_epoch_end : callable, optional
        ``on_epoch_end(epoch, model, history)`` after each epoch.

    Examples
    --------
    >>> import transfer_utils as tu
    >>> ds = tu.load_digits()
    >>> net = tu.SmallCNN(num_classes=10)
    >>> hist = tu.fit(net, tu.make_loader(ds, shuffle=True), epochs=1, progress=False)
    >>> len(hist.train_loss), hist.steps
    (1, 29)
    >>> tu.fit(net, tu.make_loader(ds, shuffle=True), steps=5, progress=False).steps
    5
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    if optimizer is None:
        params = [p for p in model.parameters() if p.requires_grad]
        if not params:
            raise ValueError("the model has no trainable parameters: unfreeze something first")
        V.nonneg(weight_decay, "weight_decay", "fit")
        optimizer = torch.optim.Adam(params, lr=V.positive(lr, "lr", "fit"),
                                     weight_decay=weight_decay)
    step = _ce_step(loss_fn or F.cross_entropy, check_labels=loss_fn is None)
    return train_loop(
        model, train_loader, step, epochs=epochs, steps=steps, optimizer=optimizer,
        val_loader=val_loader, scheduler=scheduler, penalty=penalty,
        early_stopping=early_stopping, restore_best=restore_best, seed=seed, device=device,
        progress=progress, on_epoch_end=on_epoch_end, class_labels=loss_fn is None,
    )


@torch.no_grad()
def predict(
    model: nn.Module, loader: Iterable[Batch], *, device: torch.device | str | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and targets for every batch of ``loader``, on the CPU, in eval mode.

    The model's previous train/eval mode is restored afterwards.

    Examples
    --------
    >>> import transfer_utils as tu
    >>> logits, y = tu.predict(tu.SmallCNN(), tu.make_loader(tu.load_digits(), 512))
    >>> tuple(logits.shape), tuple(y.shape)
    ((1797, 10), (1797,))
    """
    if isinstance(loader, (str, bytes)) or hasattr(loader, "__fspath__"):
        raise TypeError(
            f"predict takes a loader of (x, y) batches, got the path {str(loader)!r}; to "
            "classify an image file, save the model with its preprocessing and class names and "
            "use tu.load_predictor(checkpoint_path)(image_path) (chapter 6, 'Your own images')"
        )
    _require_loader(loader, "loader")
    device = get_device(device)
    was_training = model.training
    model.to(device).eval()
    outs, ys = [], []
    try:
        for batch in _batches(loader, "loader", 1):
            x, y = V.batch_pair(batch, "loader")
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

    Non-finite outputs are an error (a model with NaN weights has no accuracy),
    and so are labels outside the model's outputs.

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
    if not torch.isfinite(logits).all():
        bad = int((~torch.isfinite(logits)).any(1).sum())
        raise FloatingPointError(
            f"evaluate: the model gave non-finite outputs (NaN or inf) for {bad} of {len(y)} "
            "examples; its weights or the inputs hold NaN/inf (check for a diverged training "
            "run, or inputs with NaN)"
        )
    if loss_fn is None:
        y = V.class_labels(y, logits.shape[1] if logits.dim() == 2 else None, "evaluate")
    loss = (loss_fn or F.cross_entropy)(logits, y).item()
    acc = (logits.argmax(1) == y).float().mean().item()
    return {"loss": loss, "accuracy": acc, "n": int(y.shape[0])}


# --------------------------------------------------------------------------- language models
# Next-character prediction (chapter 9) through the same train_loop: the loss is the
# cross-entropy of every position's logits [B, T, V] against the shifted text [B, T].

__all__ += ["lm_loss", "fit_lm", "evaluate_lm"]


def lm_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean next-token cross-entropy (in nats) of ``model(x)`` against ``y``, and the logits.

    ``x`` and ``y`` are ``[B, T]`` integer ids, ``model(x)`` is ``[B, T, V]``;
    the logits come back flattened to ``[B*T, V]``. Divide the loss by ``ln 2``
    for bits per character.
    """
    logits = model(x)
    if logits.dim() != 3 or logits.shape[:2] != y.shape:
        raise ValueError(f"lm_loss: the model gave logits of shape {list(logits.shape)} for "
                         f"targets {list(y.shape)}; a language model returns [B, T, vocab]")
    flat = logits.flatten(0, 1)
    return F.cross_entropy(flat, y.flatten()), flat


def fit_lm(
    model: nn.Module,
    train_loader: Iterable[Batch],
    *,
    epochs: int | None = None,
    steps: int | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    seed: int | None = None,
    device: torch.device | str | None = None,
    progress: bool | None = None,
) -> History:
    """Train a language model on ``(x, y)`` batches of character ids (:func:`tu.text_loader`).

    The loop of :func:`fit` with :func:`lm_loss`; ``history.train_loss`` is in
    nats per character (``train_acc`` is not measured). Like every trainer it
    takes exactly one of ``epochs=`` and ``steps=``, and ``seed=`` seeds
    everything first. Only parameters with ``requires_grad`` are trained by the
    default Adam optimizer, so a frozen model with LoRA layers trains only those.

    Examples
    --------
    >>> import transfer_utils as tu
    >>> ids = tu.encode_text(tu.load_text("prose", max_chars=4000))
    >>> lm = tu.CharTransformer(context=32, dim=32, depth=1)
    >>> h = tu.fit_lm(lm, tu.text_loader(ids, 32, 16, shuffle=True), steps=20, seed=0,
    ...               progress=False)
    >>> h.steps, h.train_loss[-1] < 4.5
    (20, True)
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    if optimizer is None:
        params = [p for p in model.parameters() if p.requires_grad]
        if not params:
            raise ValueError("the model has no trainable parameters: unfreeze something first")
        # foreach: one fused update for all tensors, noticeably faster for many small ones
        optimizer = torch.optim.Adam(params, lr=V.positive(lr, "lr", "fit_lm"),
                                     weight_decay=V.nonneg(weight_decay, "weight_decay", "fit_lm"),
                                     foreach=True)

    def step(model: nn.Module, x, y):
        return lm_loss(model, x.to(device), y.to(device))

    device = get_device(device)
    return train_loop(model, train_loader, step, optimizer=optimizer, epochs=epochs, steps=steps,
                      seed=seed, device=device, progress=progress, class_labels=False,
                      desc="fit_lm")


@torch.no_grad()
def evaluate_lm(
    model: nn.Module, loader: Iterable[Batch], *, device: torch.device | str | None = None
) -> dict:
    """Mean next-character loss of a language model: ``{"loss", "bits_per_char", "n"}``.

    ``loss`` is in nats, ``bits_per_char = loss / ln 2`` (the number of bits an
    ideal compressor driven by the model would spend per character; lower is
    better, and a uniform guess over 97 characters costs 6.6), ``n`` the number of
    characters predicted. The model's train/eval mode is restored.

    Examples
    --------
    >>> import torch, transfer_utils as tu
    >>> ids = tu.encode_text(tu.load_text("prose", "val", max_chars=2000))
    >>> lm = tu.CharTransformer(context=32, dim=32, depth=1)
    >>> round(tu.evaluate_lm(lm, tu.text_loader(ids, 32, 64))["bits_per_char"])
    7
    """
    _require_loader(loader, "loader")
    device = get_device(device)
    was_training = model.training
    model.to(device).eval()
    total, n = torch.zeros((), device=device, dtype=torch.float64), 0
    try:
        for batch in _batches(loader, "loader", 1):
            x, y = V.batch_pair(batch, "loader")
            loss, _ = lm_loss(model, x.to(device), y.to(device))
            total += loss.double() * y.numel()
            n += y.numel()
    finally:
        model.train(was_training)
    mean = total.item() / n
    if not math.isfinite(mean):
        raise FloatingPointError("evaluate_lm: the model gave a non-finite loss; its weights "
                                 "hold NaN/inf (a diverged training run?)")
    return {"loss": mean, "bits_per_char": mean / math.log(2), "n": n}
