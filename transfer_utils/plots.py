"""Plotting helpers for the book: learning curves with error bars, training histories."""

from __future__ import annotations

from collections.abc import Mapping

import matplotlib.pyplot as plt

from .analysis import Summary
from .training import History

__all__ = ["plot_curves", "plot_history", "plot_tradeoff"]


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


def plot_tradeoff(
    curves: Mapping[str, Mapping[float, Summary]],
    *,
    point_labels: Mapping[str, Mapping[float, str]] | None = None,
    reference: Mapping[str, float] | None = None,
    xlabel: str = "trainable parameters",
    ylabel: str = "",
    title: str | None = None,
    ax=None,
):
    """Quality against cost: each curve ``{cost: Summary}`` with 95% error bars, on a log x axis.

    A curve with one point is drawn as a marker (a method), a longer one as a line
    (a method at several sizes, e.g. LoRA ranks); ``point_labels`` writes a short
    label beside chosen points (``{curve: {cost: "r=4"}}``), and ``reference``
    draws horizontal dashed lines (``{"untouched model": 3.6}``). Chapter 9 plots
    bits per character against trainable parameters with it. Returns the Figure.

    Examples
    --------
    >>> import transfer_utils as tu
    >>> fig = tu.plot_tradeoff(
    ...     {"LoRA": {512: tu.summarize([3.2, 3.3]), 2048: tu.summarize([3.1, 3.2])},
    ...      "full": {80000: tu.summarize([3.0, 3.1])}},
    ...     point_labels={"LoRA": {512: "r=1", 2048: "r=4"}}, reference={"base": 3.5})
    >>> fig.axes[0].get_xscale()
    'log'
    """
    if not curves or not all(curves.values()):
        raise ValueError("plot_tradeoff needs {label: {cost: Summary}} with at least one point")
    own = ax is None
    fig, ax = (ax.figure, ax) if not own else plt.subplots(figsize=(7.0, 4.0))
    for i, (label, curve) in enumerate(curves.items()):
        xs = sorted(curve)
        for x in xs:
            if not isinstance(curve[x], Summary):
                raise TypeError(f"values must be Summary objects (tu.summarize), got "
                                f"{type(curve[x]).__name__} in {label!r}")
        ax.errorbar(xs, [curve[x].mean for x in xs], yerr=[curve[x].ci95 for x in xs],
                    marker="os^DvP<>*hX"[i % 11], capsize=3, label=label,
                    linestyle="-" if len(xs) > 1 else "none")
        for x, text in ((point_labels or {}).get(label) or {}).items():
            ax.annotate(text, (x, curve[x].mean), textcoords="offset points", xytext=(4, 4),
                        fontsize=8)
    for j, (label, y) in enumerate((reference or {}).items()):
        ax.axhline(y, linestyle="--", color=f"C{(len(curves) + j) % 10}", lw=1, label=label)
    ax.set_xscale("log")
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
