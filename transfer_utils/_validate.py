"""Argument checks shared by every module: one definition per rule, one message style.

Private: the public functions call these so that a bad argument gets the same
clear message everywhere ("fn: what must be ..., got ...; do this instead").
Nothing here is re-exported as ``tu.NAME``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import torch

__all__: list[str] = []


def _where(fn: str | None) -> str:
    return f"{fn}: " if fn else ""


def is_int(value) -> bool:
    """True for Python and NumPy integers (and 0-d integer tensors), never for bools."""
    if isinstance(value, torch.Tensor):
        return value.ndim == 0 and not value.is_floating_point() and value.dtype != torch.bool
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def positive_int(value, name: str, fn: str | None = None) -> int:
    """``value`` as an ``int >= 1``, or a ``ValueError`` that names it."""
    if not is_int(value) or int(value) < 1:
        raise ValueError(f"{_where(fn)}{name} must be a positive integer, got {value!r}")
    return int(value)


def nonneg_int(value, name: str, fn: str | None = None) -> int:
    """``value`` as an ``int >= 0``, or a ``ValueError`` that names it."""
    if not is_int(value) or int(value) < 0:
        raise ValueError(f"{_where(fn)}{name} must be a non-negative integer, got {value!r}")
    return int(value)


def seed_value(value, fn: str | None = None) -> int:
    """A seed: an ``int >= 0``."""
    if not is_int(value) or int(value) < 0:
        raise ValueError(f"{_where(fn)}seed must be a non-negative integer, got {value!r}")
    return int(value)


def number(
    value,
    name: str,
    fn: str | None = None,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """``value`` as a finite ``float`` within the bounds given (closed unless ``*_open``)."""
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(
        value, (bool, np.bool_)
    )
    if isinstance(value, torch.Tensor) and value.ndim == 0 and value.is_floating_point():
        value, ok = float(value), True
    if ok:
        v = float(value)
        ok = math.isfinite(v)
        if ok and low is not None:
            ok = v > low if low_open else v >= low
        if ok and high is not None:
            ok = v < high if high_open else v <= high
    if not ok:
        if low == 0 and low_open and high is None:
            want = "a positive number"
        elif low == 0 and not low_open and high is None:
            want = "a non-negative number"
        elif low is not None and high is not None and not low_open and not high_open:
            want = f"a number in [{low:g}, {high:g}]"
        else:
            lo = "" if low is None else f"{'>' if low_open else '>='} {low:g}"
            hi = "" if high is None else f"{'<' if high_open else '<='} {high:g}"
            bounds = " and ".join(b for b in (lo, hi) if b)
            want = f"a number {bounds}" if bounds else "a finite number"
        raise ValueError(f"{_where(fn)}{name} must be {want}, got {value!r}")
    return float(value)


def positive(value, name: str, fn: str | None = None) -> float:
    """A finite number ``> 0`` (a learning rate, a temperature, a timeout)."""
    return number(value, name, fn, low=0.0, low_open=True)


def nonneg(value, name: str, fn: str | None = None) -> float:
    """A finite number ``>= 0`` (a penalty weight, a noise level)."""
    return number(value, name, fn, low=0.0)


def probability(value, name: str, fn: str | None = None) -> float:
    """A number in ``[0, 1]``."""
    return number(value, name, fn, low=0.0, high=1.0)


def one_of(value, name: str, options: Iterable, fn: str | None = None):
    """``value`` if it is one of ``options``, else a ``ValueError`` listing them."""
    options = list(options)
    try:
        found = value in options
    except TypeError:  # unhashable or incomparable values are simply not among the options
        found = False
    if not found:
        shown = ", ".join(repr(o) for o in options)
        raise ValueError(f"{_where(fn)}{name} must be one of {shown}; got {value!r}")
    return value


def int_list(value, name: str, fn: str | None = None, *, nonempty: bool = True,
             example: str = "[0, 1, 2]") -> list[int]:
    """A list of integers from any iterable of them; a bare int or string is refused."""
    if isinstance(value, (str, bytes)) or is_int(value) or not isinstance(value, Iterable):
        raise TypeError(
            f"{_where(fn)}{name} must be a list of integers such as {example}, got {value!r}"
        )
    out = list(value)
    bad = [v for v in out if not is_int(v)]
    if bad:
        raise TypeError(f"{_where(fn)}{name} must hold integers, got {bad[0]!r}")
    if nonempty and not out:
        raise ValueError(f"{_where(fn)}{name} is empty; give at least one, e.g. {example}")
    return [int(v) for v in out]


def epochs_or_steps(epochs, steps, fn: str | None = None) -> tuple[str, int]:
    """The length of a training run: exactly one of ``epochs=`` and ``steps=``.

    Returns ``("epochs", n)`` or ``("steps", n)``. Every trainer in the package
    takes its length this way (DESIGN §4a).
    """
    if (epochs is None) == (steps is None):
        raise TypeError(
            f"{_where(fn)}give exactly one of epochs= (passes over the data) or steps= "
            f"(optimizer updates), got epochs={epochs!r} and steps={steps!r}"
        )
    if epochs is not None:
        return "epochs", positive_int(epochs, "epochs", fn)
    return "steps", positive_int(steps, "steps", fn)


def shape_str(shape: Sequence[int]) -> str:
    return "[" + ", ".join(str(int(s)) for s in shape) + "]"


def batch_pair(batch, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch as ``(x, y)``, or a ``TypeError`` that says what a batch must be."""
    if isinstance(batch, dict):
        raise TypeError(
            f"{what} yielded a dict batch with keys {sorted(map(str, batch))[:6]}; tu's loops "
            "expect (inputs, labels) pairs: make the dataset return (x, y) or convert in a "
            "collate_fn"
        )
    if not isinstance(batch, (tuple, list)) or len(batch) != 2:
        got = (f"a {type(batch).__name__} of {len(batch)} items"
               if isinstance(batch, (tuple, list)) else f"a {type(batch).__name__}")
        raise TypeError(
            f"{what} yielded {got}; tu's loops expect (inputs, labels) pairs: drop the extra "
            "items (e.g. a dataset returning (x, y, index) -> (x, y)) or add labels"
        )
    x, y = batch
    if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
        raise TypeError(
            f"{what} yielded ({type(x).__name__}, {type(y).__name__}); inputs and labels must "
            "be tensors: add transforms.ToTensor() to an image dataset, or torch.as_tensor"
        )
    return x, y


def class_labels(y: torch.Tensor, n_out: int | None, what: str) -> torch.Tensor:
    """Integer class labels as int64, checked against the model's ``n_out`` outputs.

    Rule: any integer dtype is converted to int64 (lossless); float or bool labels
    are refused, since a silent rounding would hide a wrong dataset.
    """
    if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        raise TypeError(
            f"{what}: labels must be integer class ids, got dtype {str(y.dtype).replace('torch.', '')}"
            "; if they are whole numbers convert them with y.long() (for soft or regression "
            "targets pass your own loss_fn)"
        )
    if y.dtype != torch.int64:
        y = y.long()
    if y.ndim != 1:
        raise ValueError(
            f"{what}: labels must be 1-D (one class id per example), got shape "
            f"{shape_str(y.shape)}; for one-hot labels use y.argmax(1)"
        )
    if y.numel():
        lo, hi = int(y.min()), int(y.max())
        if lo < 0 or (n_out is not None and hi >= n_out):
            bad = lo if lo < 0 else hi
            size = f"the model's {n_out} outputs" if n_out is not None else "its outputs"
            raise ValueError(
                f"{what}: label {bad} is outside [0, {n_out}) for {size}; relabel the data to "
                "0..K-1 or give the model a head with more outputs (tu.replace_head)"
            )
    return y


def state_of(obj, what: str, fn: str | None = None) -> dict:
    """The tensors of a model or a state dict, as a plain dict; anything else is a ``TypeError``."""
    from torch import nn

    if isinstance(obj, nn.Module):
        return obj.state_dict()
    if isinstance(obj, Mapping):
        return dict(obj)
    raise TypeError(f"{_where(fn)}{what} must be an nn.Module or its state_dict(), got "
                    f"{type(obj).__name__}")
