"""Runtime: seeding, device choice, CPU threads and the progress-bar policy for every chapter.

Core layer, imported by every other module; it imports none of them.
"""

from __future__ import annotations

import os
import random

import numpy as np
import torch

from . import _validate as V

__all__ = ["seed_everything", "get_device", "progress_enabled", "set_progress", "setup",
           "default_threads"]

_KNOWN_DEVICES = ("cpu", "cuda", "mps")
_progress_override: bool | None = None


def seed_everything(seed: int) -> int:
    """Seed Python, NumPy and PyTorch (CPU and CUDA) so a run can be repeated.

    Parameters
    ----------
    seed : int
        A non-negative integer.

    Returns
    -------
    int
        The seed, so a notebook can write ``SEED = tu.seed_everything(0)``.

    Examples
    --------
    >>> import transfer_utils as tu, torch
    >>> _ = tu.seed_everything(0); a = torch.rand(2)
    >>> _ = tu.seed_everything(0); b = torch.rand(2)
    >>> bool(torch.equal(a, b))
    True
    """
    seed = V.seed_value(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
    return seed


def _available(kind: str) -> bool:
    if kind == "cpu":
        return True
    if kind == "cuda":
        return torch.cuda.is_available()
    if kind == "mps":
        return bool(getattr(torch.backends, "mps", None)) and torch.backends.mps.is_available()
    return False


def get_device(prefer: str | torch.device | None = None) -> torch.device:
    """Choose the device that models and data go to.

    The order is: ``prefer`` if given, else the environment variable ``TU_DEVICE``,
    else CUDA when available, else CPU. Asking for a device this machine does not
    have is an error rather than a silent fallback, so a "GPU run" never quietly
    runs on the CPU.

    Parameters
    ----------
    prefer : str or torch.device, optional
        ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"`` or ``"auto"``.

    Examples
    --------
    >>> import transfer_utils as tu
    >>> tu.get_device("cpu")
    device(type='cpu')
    """
    source = "argument prefer"
    if prefer is None:
        prefer = os.environ.get("TU_DEVICE") or "auto"
        source = "environment variable TU_DEVICE" if os.environ.get("TU_DEVICE") else source
    if isinstance(prefer, torch.device):
        prefer = str(prefer)
    if not isinstance(prefer, str):
        raise TypeError(f"prefer must be a string or torch.device, got {type(prefer).__name__}")
    name = prefer.strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    kind = name.split(":")[0]
    if kind not in _KNOWN_DEVICES:
        raise ValueError(
            f"unknown device {prefer!r} (from {source}); use one of 'auto', 'cpu', 'cuda', "
            "'cuda:N' or 'mps'"
        )
    if not _available(kind):
        raise RuntimeError(
            f"device {prefer!r} was requested (from {source}) but this machine has no {kind} "
            "device; use 'cpu' or 'auto', or unset TU_DEVICE"
        )
    device = torch.device(name)
    if kind == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise RuntimeError(
            f"device {prefer!r} was requested but only {torch.cuda.device_count()} CUDA "
            "device(s) exist; use 'cuda:0' or 'auto'"
        )
    return device


def set_progress(enabled: bool | None) -> None:
    """Switch progress bars on or off for the whole session (``None`` restores the default)."""
    global _progress_override
    if enabled is not None and not isinstance(enabled, bool):
        raise TypeError(f"enabled must be True, False or None, got {enabled!r}")
    _progress_override = enabled


def progress_enabled(progress: bool | None = None) -> bool:
    """Resolve whether to show a progress bar.

    An explicit ``progress`` argument wins, then :func:`set_progress`, then the
    environment variable ``TU_PROGRESS`` (``0``/``false`` to switch off, as the
    book build does so the HTML holds no progress-bar debris), else on.
    """
    if progress is not None:
        return bool(progress)
    if _progress_override is not None:
        return _progress_override
    return os.environ.get("TU_PROGRESS", "1").strip().lower() not in ("0", "false", "no", "off")


def setup(
    seed: int = 0, device: str | torch.device | None = None, threads: int | None = None
) -> torch.device:
    """The one line every chapter starts with: seed, pick the device, set CPU threads, style plots.

    Returns the device, so a notebook reads ``device = tu.setup(seed=0)``.

    ``threads`` sets PyTorch's CPU threads; the default is the environment variable
    ``TU_THREADS``, else 1. The book's models are tiny: a second thread saves little
    on an idle machine, and when anything else runs beside the notebook, threads that
    wait for each other made a fine-tuning run 10-30 times slower on a 2-core machine
    (0.5 s with one thread against 8-15 s with two, measured while one other process ran).

    Examples
    --------
    >>> import transfer_utils as tu
    >>> tu.setup(seed=0, device="cpu")
    device(type='cpu')
    """
    seed_everything(seed)
    if threads is None:
        threads = default_threads()
    threads = V.positive_int(threads, "threads", "setup")
    torch.set_num_threads(threads)
    import matplotlib as mpl

    mpl.rcParams.update({"figure.dpi": 100, "axes.spines.top": False,
                         "axes.spines.right": False, "figure.figsize": (5.5, 3.8)})
    return get_device(device)


def default_threads() -> int:
    """CPU threads for PyTorch: the environment variable ``TU_THREADS``, else 1.

    Used by :func:`setup` and the zoo's command line, so both read the variable
    the same way; a value that is not a positive integer is an error.

    Examples
    --------
    >>> import os, transfer_utils as tu
    >>> os.environ.pop("TU_THREADS", None) and None
    >>> tu.default_threads()
    1
    """
    raw = os.environ.get("TU_THREADS", "1").strip()
    try:
        threads = int(raw)
    except ValueError:
        threads = 0
    if threads < 1:
        raise ValueError(f"TU_THREADS must be a positive integer, got {raw!r}; unset it for 1")
    return threads
