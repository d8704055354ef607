"""Plotting helpers for the book: learning curves with error bars, training histories."""

from __future__ import annotations

from collections.abc import Mapping

import matplotlib.pyplot as plt

from .analysis import Summary
from .distributed import rank_batches
from .training import History

__all__ = ["plot_curves", "plot_history", "plot_rank_batches"]


def plot_curves(
    curves: Mapping[str, Mapping[int, Summary]],
    *,
    xlabel: str = "labels per class (k)",
    ylabel: str = "test accuracy",
    title: str | None = None,
    logx: bool = True,
    ax=None,
):
    """Plot several ``{k: Summary}`` curves (from :func:`learning_curve`) with 95% error bars.

    On its own figure the legend sits outside the axes, on the right, where it cannot hide
    a point; drawn into a given ``ax`` it goes wherever matplotlib finds room. Integer
    x values on a linear axis get one tick each (no "1.5 blocks frozen").
    Returns the matplotlib Figure.
    """
    if not curves:
        raise ValueError("plot_curves needs at least one curve, e.g. {'scratch': {1: summary}}")
    own = ax is None
    fig, ax = (ax.figure, ax) if not own else plt.subplots(figsize=(7.0, 3.8))
    for label, curve in curves.items():
        if not curve:
            raise ValueError(f"curve {label!r} is empty")
        ks = sorted(curve)
        ax.errorbar(ks, [curve[k].mean for k in ks], yerr=[curve[k].ci95 for k in ks],
                    marker="o", capsize=3, label=label)
    xs = sorted({k for c in curves.values() for k in c})
    if logx:
        ax.set_xscale("log")
        ax.set_xticks(xs, [str(k) for k in xs])
        ax.minorticks_off()
    elif all(float(x).is_integer() for x in xs) and len(xs) <= 12:
        ax.set_xticks(xs, [str(int(x)) for x in xs])
    ax.set(xlabel=xlabel, ylabel=ylabel)
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    if own:
        ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0, frameon=False)
    else:
        ax.legend()
    fig.tight_layout()
    return fig


def plot_history(history: History | Mapping[str, History], *, ax=None):
    """Plot training (and validation) accuracy per epoch of one or several runs."""
    runs = {"": history} if isinstance(history, History) else dict(history)
    if not runs or any(h.epochs == 0 for h in runs.values()):
        raise ValueError("plot_history needs histories with at least one epoch")
    fig, ax = (ax.figure, ax) if ax is not None else plt.subplots(figsize=(5.5, 3.8))
    for label, h in runs.items():
        epochs = range(1, h.epochs + 1)
        line = ax.plot(epochs, h.train_acc, label=f"{label} train".strip())[0]
        if h.val_acc:
            ax.plot(epochs, h.val_acc, "--", color=line.get_color(),
                    label=f"{label} validation".strip())
    ax.set(xlabel="epoch", ylabel="accuracy")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return fig


def plot_rank_batches(perm, world_size: int, local_batch: int, *, ax=None):
    """Draw how DDP's sampler splits one shuffled epoch among processes (chapter 11).

    Top row: the epoch as one process sees it, cut into global batches of
    ``world_size * local_batch``. Bottom row: the same positions coloured by the
    process that gets them (:func:`rank_batches`); a grey cell is dropped
    (``drop_last``). Each cell shows the example index. Returns the Figure.

    Examples
    --------
    >>> import transfer_utils as tu
    >>> fig = tu.plot_rank_batches(list(range(10)), world_size=2, local_batch=2)
    >>> len(fig.axes)
    1
    """
    perm = [int(i) for i in perm]
    batches = rank_batches(perm, world_size, local_batch)
    owner = {}
    for rank, per_rank in enumerate(batches):
        for j, batch in enumerate(per_rank):
            for i in batch:
                owner[i] = (rank, j)
    n, B = len(perm), world_size * local_batch
    fig, ax = (ax.figure, ax) if ax is not None else plt.subplots(
        figsize=(min(0.42 * n + 1.6, 9.0), 2.3))
    colors = plt.get_cmap("tab10")
    for pos, i in enumerate(perm):
        used = i in owner
        for row, color in ((1, "#d9d9d9" if not used else "#f2f2f2"),
                           (0, colors(owner[i][0]) if used else "#d9d9d9")):
            ax.add_patch(plt.Rectangle((pos, row), 0.94, 0.8, color=color))
            ax.text(pos + 0.47, row + 0.4, str(i), ha="center", va="center", fontsize=8,
                    color="white" if row == 0 and used else "black")
    for j in range(n // B + 1):
        ax.axvline(j * B - 0.03, color="black", lw=1.2, ymin=0.0, ymax=1.0)
        if (j + 1) * B <= n:
            ax.text(j * B + B / 2, 1.95, f"global batch {j}", ha="center", fontsize=8)
    for rank in range(world_size):
        ax.plot([], [], "s", color=colors(rank), label=f"rank {rank}")
    if len(owner) < n:
        ax.plot([], [], "s", color="#d9d9d9", label="dropped")
    ax.set(xlim=(-0.2, n + 0.2), ylim=(-0.1, 2.2))
    ax.set_yticks([0.4, 1.4], [f"{world_size} processes", "1 process"])
    ax.set_xticks([])
    for side in ("top", "right", "bottom", "left"):
        ax.spines[side].set_visible(False)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False, fontsize=8)
    fig.tight_layout()
    return fig
