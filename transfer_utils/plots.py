"""Every plot of the book: curves with error bars, histories, images, maps, heat maps, bars.

Present layer. Each function draws into a new figure (or a given ``ax``) with
matplotlib's object-oriented API and returns the Figure, so a notebook cell that
ends with the call shows it.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch

from .analysis import Summary
from .data import dataset_classes
from .distributed import rank_batches
from .features import project_2d
from .finetune import KFoldEpochs
from .guide import GUIDE_METHODS, recommend_method
from .privacy import AttackMetrics
from .training import History

__all__ = ["plot_curves", "plot_history", "show_images", "plot_heatmap", "plot_bars",
           "plot_decision_guide", "plot_kfold", "plot_projection", "plot_layerwise",
           "plot_transfer_diagram", "plot_rank_batches", "plot_tradeoff", "plot_roc",
           "plot_privacy_utility"]

_GUIDE_COLOURS = {"feature extraction": "#9ecae1", "fine-tune": "#a1d99b",
                  "partial fine-tune": "#fdd0a2", "scratch": "#d9d9d9"}


def _finish(fig, ax, own: bool):
    """Grid, and the legend beside the axes on a figure of our own (where it hides no point)."""
    ax.grid(alpha=0.3)
    if own:
        ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0, frameon=False)
    else:
        ax.legend()
    fig.tight_layout()
    return fig


def _numpy(a) -> np.ndarray:
    return a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)


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
    x values on a linear axis get one tick each (no "1.5 blocks frozen"). When every
    value lies in [0, 1] (accuracies), the error bars are cut at 0 and 1: a t interval of
    a bounded quantity can reach past its bounds, the quantity cannot.
    Returns the matplotlib Figure.
    """
    if not curves:
        raise ValueError("plot_curves needs at least one curve, e.g. {'scratch': {1: summary}}")
    own = ax is None
    for label, curve in curves.items():
        if not curve:
            raise ValueError(f"curve {label!r} is empty")
    # accuracies (every seed's value in [0, 1]): error bars are cut at 0 and 1
    unit_interval = all(0.0 <= v <= 1.0 for c in curves.values() for s in c.values()
                        for v in getattr(s, "values", (s.mean,)))
    fig, ax = (ax.figure, ax) if not own else plt.subplots(figsize=(7.0, 3.8))
    for label, curve in curves.items():
        ks = sorted(curve)
        means = np.array([curve[k].mean for k in ks], dtype=float)
        half = np.array([curve[k].ci95 for k in ks], dtype=float)
        lo, hi = means - half, means + half
        if unit_interval:  # an interval of an accuracy stays inside [0, 1]
            lo, hi = np.clip(lo, 0.0, 1.0), np.clip(hi, 0.0, 1.0)
        ax.errorbar(ks, means, yerr=[means - lo, hi - means], marker="o", capsize=3,
                    label=label)
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
    return _finish(fig, ax, own)


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


def show_images(
    dataset_or_tensor, n: int = 16, *, ncols: int = 8, title: str | None = None, ax=None
):
    """Grid of the first ``n`` examples, each titled with its class name.

    Works for images ``[N, C, H, W]`` (C = 1 or 3), 1-D signals ``[N, C, L]``
    (drawn as lines), an :class:`ArrayDataset` or any dataset of ``(x, y)``
    pairs. Everything is drawn in one Axes, so ``ax`` can be a panel of a
    larger figure. Uses matplotlib's object-oriented API; nothing is shown.

    Returns
    -------
    matplotlib.figure.Figure

    Examples
    --------
    >>> import transfer_utils as tu
    >>> fig = tu.show_images(tu.load_digits(), n=8, ncols=4, title="optdigits")
    >>> len(fig.axes)
    1
    """
    from matplotlib.figure import Figure

    data = dataset_or_tensor
    if isinstance(data, torch.Tensor):
        x, labels = data[:n].detach().cpu().float(), None
    else:
        items = [data[i] for i in range(min(n, len(data)))]
        if not items:
            raise ValueError("show_images: the dataset is empty; nothing to draw")
        x = torch.stack([torch.as_tensor(xi) for xi, _ in items]).detach().cpu().float()
        names = dataset_classes(data) if isinstance(data, torch.utils.data.Dataset) else None
        labels = [names[int(yi)] if names and int(yi) < len(names) else str(int(yi))
                  for _, yi in items]
    if x.ndim not in (3, 4) or (x.ndim == 4 and x.shape[1] not in (1, 3)):
        raise ValueError(
            f"show_images: expected [N, C, H, W] images with C in (1, 3) or [N, C, L] signals, "
            f"got shape {tuple(x.shape)}"
        )
    n = len(x)
    ncols = max(1, min(ncols, n))
    nrows = math.ceil(n / ncols)
    w = x.shape[-1]
    h = x.shape[-2] if x.ndim == 4 else max(4, round(0.6 * w))
    gx = max(1, round(0.08 * w))
    gy = max(2, round(0.35 * h)) if labels else gx  # room for the labels above each tile
    width, height = ncols * (w + gx) - gx, nrows * (h + gy)
    if ax is None:
        fig = Figure(figsize=(1.0 * ncols, 1.0 * nrows * (h + gy) / (w + gx) + 0.4 * bool(title)))
        ax = fig.add_subplot()
        fig.subplots_adjust(left=0.02, right=0.98, bottom=0.02, top=0.88 if title else 0.98)
    lo, hi = float(x.min()), float(x.max())
    x = (x - lo) / (hi - lo if hi > lo else 1.0)  # scale to [0, 1] for display
    if x.ndim == 4:
        canvas = torch.ones(height, width, x.shape[1])
        for i, img in enumerate(x):
            r, c = divmod(i, ncols)
            top, left = r * (h + gy) + gy, c * (w + gx)
            canvas[top : top + h, left : left + w] = img.permute(1, 2, 0)
        canvas = canvas[..., 0] if x.shape[1] == 1 else canvas
        ax.imshow(canvas.numpy(), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    else:
        t = np.arange(w)
        for i, sig in enumerate(x):
            r, c = divmod(i, ncols)
            top, left = r * (h + gy) + gy, c * (w + gx)
            for j, channel in enumerate(sig):
                ax.plot(left + t, top + (1 - channel.numpy()) * (h - 1), lw=1, color=f"C{j}")
        ax.set_xlim(-0.5, width - 0.5)
        ax.set_ylim(height - 0.5, -0.5)
    for i, label in enumerate(labels or []):
        r, c = divmod(i, ncols)
        ax.text(
            c * (w + gx) + w / 2,
            r * (h + gy) + gy - 0.5,
            label,
            ha="center",
            va="bottom",
            fontsize=8,
        )
    ax.set_axis_off()
    if title:
        ax.set_title(title)
    return ax.figure


def plot_heatmap(matrix, rows: Sequence[str], cols: Sequence[str], *, xlabel: str = "",
                 ylabel: str = "", title: str | None = None, cbar_label: str = "",
                 vmin: float = 0.0, vmax: float = 1.0, ax=None):
    """Heat map of a matrix with its values written in the cells; returns the Figure.

    Chapter 7 draws a :func:`cka_matrix` (rows: layers of model A, columns:
    layers of model B) and a :func:`source_confusion` with it.
    """
    import matplotlib.pyplot as plt

    m = torch.as_tensor(matrix).detach().cpu().double().numpy()
    if m.ndim != 2 or m.shape != (len(rows), len(cols)):
        raise ValueError(f"matrix has shape {m.shape} but got {len(rows)} row and "
                         f"{len(cols)} column names")
    fig, ax = (ax.figure, ax) if ax is not None else plt.subplots(
        figsize=(1.0 + 0.75 * len(cols), 0.8 + 0.6 * len(rows)))
    im = ax.imshow(m, vmin=vmin, vmax=vmax, cmap="viridis")
    ax.set_xticks(range(len(cols)), [str(c) for c in cols])
    ax.set_yticks(range(len(rows)), [str(r) for r in rows])
    mid = (vmin + vmax) / 2
    for i in range(m.shape[0]):
        for j in range(m.shape[1]):
            ax.text(j, i, f"{m[i, j]:.2f}", ha="center", va="center",
                    color="black" if m[i, j] > mid else "white", fontsize=8)
    ax.set(xlabel=xlabel, ylabel=ylabel)
    ax.spines[:].set_visible(False)
    if title:
        ax.set_title(title)
    fig.colorbar(im, ax=ax, label=cbar_label, shrink=0.85)
    fig.tight_layout()
    return fig


def plot_bars(
    data: Mapping[str, Mapping[str, Summary]],
    *,
    ylabel: str = "",
    title: str | None = None,
    ylim: tuple[float, float] | None = None,
    ax=None,
):
    """Grouped bar chart with 95% confidence error bars; returns the Figure.

    ``data`` is ``{series: {group: Summary}}``: one colour per series, one
    cluster of bars per group (groups in first-seen order). Chapter 7 uses it
    for forgetting, domain shift, CKA per layer and membership inference.
    """
    import matplotlib.pyplot as plt

    if not data or not any(data.values()):
        raise ValueError("plot_bars needs {series: {group: Summary}} with at least one value")
    groups: list[str] = []
    for per in data.values():
        groups += [g for g in per if g not in groups]
    fig, ax = (ax.figure, ax) if ax is not None else plt.subplots(
        figsize=(min(8.0, max(5.0, 1.5 + 1.3 * len(groups) * max(1, len(data)) ** 0.5)), 3.6))
    width = 0.8 / len(data)
    for i, (series, per) in enumerate(data.items()):
        xs = [j + (i - (len(data) - 1) / 2) * width for j, g in enumerate(groups) if g in per]
        ss = [per[g] for g in groups if g in per]
        for v in ss:
            if not isinstance(v, Summary):
                raise TypeError(f"values must be Summary objects (tu.summarize), got {type(v)}")
        ax.bar(xs, [v.mean for v in ss], width, yerr=[v.ci95 for v in ss], capsize=3,
               label=series)
    ax.set_xticks(range(len(groups)), [textwrap.fill(g, 14) for g in groups])
    ax.set_ylabel(ylabel)
    if ylim is not None:
        ax.set_ylim(*ylim)
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3, axis="y")
    if len(data) > 1:
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    fig.tight_layout()
    return fig


def plot_decision_guide(points: Mapping[str, tuple[float, float]] | None = None, *,
                        compute: str = "normal", ax=None):
    """Draw :func:`recommend_method` as a map: labels per class (log) against domain similarity.

    Parameters
    ----------
    points : mapping of str to (labels_per_class, similarity), optional
        Measured settings to mark on the map, labelled with their key
        (chapter 8 marks the winners of its own experiment).
    compute : {"normal", "low"}
    ax : matplotlib Axes, optional

    Returns
    -------
    matplotlib.figure.Figure
    """
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.patches import Patch

    if compute not in ("normal", "low"):  # same rule as recommend_method
        raise ValueError(f"compute must be 'normal' or 'low', got {compute!r}")
    fig, ax = (ax.figure, ax) if ax is not None else plt.subplots(figsize=(7.6, 4.0))
    ns = np.logspace(0, 4, 241)
    ss = np.linspace(0, 1, 201)
    codes = np.array([[GUIDE_METHODS.index(recommend_method(n, s, compute=compute))
                       for n in ns] for s in ss])
    colours = [_GUIDE_COLOURS[m] for m in GUIDE_METHODS]
    from matplotlib.colors import BoundaryNorm, ListedColormap

    ax.pcolormesh(ns, ss, codes, cmap=ListedColormap(colours),
                  norm=BoundaryNorm(np.arange(len(GUIDE_METHODS) + 1) - 0.5, len(GUIDE_METHODS)),
                  shading="nearest", rasterized=True)
    for i, (label, (n, s)) in enumerate((points or {}).items()):
        ax.plot(n, s, "k*", ms=11, clip_on=False, zorder=3)
        ax.annotate(label, (n, s), textcoords="offset points", xytext=(4, 8 if i % 2 else -14),
                    fontsize=8, zorder=3)
    ax.set_xscale("log")
    ax.set(xlabel="labelled target examples per class",
           ylabel="source-target similarity (judged)", xlim=(1, 1e4), ylim=(0, 1),
           title=f"Rule of thumb ({compute} training compute)")
    ax.set_yticks([0.0, 0.25, 0.5, 0.75, 1.0], ["unrelated", "distant", "", "related", "same"])
    present = sorted(set(codes.ravel().tolist()))
    # beside the map, not on it: the boundaries are the point of the figure
    ax.legend(handles=[Patch(color=colours[i], label=GUIDE_METHODS[i]) for i in present],
              loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0, fontsize=8,
              frameon=False)
    fig.tight_layout()
    return fig


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


def plot_projection(panels, *, method: str = "pca", classes: Sequence[str] | None = None,
                    seed: int = 0, axes=None):
    """Scatter 2-D projections of features coloured by class, one panel per entry.

    Parameters
    ----------
    panels : mapping ``{title: (X, y)}`` or one ``(X, y)`` pair
    method : {"pca", "tsne"}
        See :func:`project_2d`; each panel is projected on its own.
    classes : list of str, optional
        Legend names of the labels.

    Returns the matplotlib Figure.
    """
    import matplotlib.pyplot as plt

    if isinstance(panels, tuple):
        panels = {"": panels}
    if not panels:
        raise ValueError("plot_projection needs at least one (X, y) panel")
    n = len(panels)
    if axes is None:
        fig, axes = plt.subplots(1, n, figsize=(4.2 * n, 4.0), squeeze=False)
        axes = axes[0]
    else:
        axes = np.atleast_1d(axes)
        fig = axes[0].figure
    if len(axes) != n:
        raise ValueError(f"got {len(axes)} axes for {n} panels")
    cmap = plt.get_cmap("tab10")
    for ax, (title, (X, y)) in zip(axes, panels.items(), strict=True):
        Z = project_2d(X, method=method, seed=seed)
        y = _numpy(y)
        for c in np.unique(y):
            name = classes[c] if classes is not None else str(c)
            ax.scatter(Z[y == c, 0], Z[y == c, 1], s=6, alpha=0.7, color=cmap(int(c) % 10),
                       label=name)
        ax.set_title(title)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_xlabel(f"{method.upper()} 1")
        ax.set_ylabel(f"{method.upper()} 2")
    axes[-1].legend(loc="center left", bbox_to_anchor=(1.0, 0.5), markerscale=2.5, fontsize=8,
                    frameon=False)
    fig.tight_layout()
    return fig


def plot_layerwise(results, *, ylabel: str = "probe accuracy", title: str | None = None,
                   ax=None):
    """Probe accuracy against layer with 95% error bars (from :func:`layerwise_probe`).

    ``results`` is one ``{layer: Summary}`` or several, as ``{label: {layer: Summary}}``
    (e.g. one curve per number of labels). Returns the matplotlib Figure.
    """
    import matplotlib.pyplot as plt

    if not results:
        raise ValueError("plot_layerwise needs results, e.g. tu.layerwise_probe(...)")
    if all(isinstance(v, Summary) for v in results.values()):
        results = {"": results}
    fig, ax = (ax.figure, ax) if ax is not None else plt.subplots(figsize=(6.0, 3.8))
    names: list[str] = []
    for curve in results.values():
        names += [n for n in curve if n not in names]
    for label, curve in results.items():
        xs = [names.index(n) for n in curve]
        ax.errorbar(xs, [s.mean for s in curve.values()], yerr=[s.ci95 for s in curve.values()],
                    marker="o", capsize=3, label=str(label) or None)
    ax.set_xticks(range(len(names)), names, rotation=20)
    ax.set(xlabel="layer", ylabel=ylabel)
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    if any(str(label) for label in results):
        ax.legend()
    fig.tight_layout()
    return fig


def plot_transfer_diagram(
    source: str = "source domain\nMNIST, 8x8\n4,500 labels",
    target: str = "target domain\nscikit-learn digits\na few labels",
):
    """Draw the picture of transfer learning used in chapters 1 and 2; returns the Figure.

    Source data trains a body and a source head; the body's weights are copied to
    the target model, which gets a new head and is trained on the target data.

    Examples
    --------
    >>> import transfer_utils as tu
    >>> fig = tu.plot_transfer_diagram()
    >>> len(fig.axes)
    1
    """
    from matplotlib.figure import Figure
    from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

    fig = Figure(figsize=(8.0, 3.4))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, 10)
    ax.set_ylim(0, 4.2)
    ax.set_axis_off()

    def box(x, y, w, h, text, color):
        ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.05", fc=color,
                                    ec="0.3", lw=1))
        ax.text(x + w / 2, y + h / 2, text, ha="center", va="center", fontsize=9)

    def arrow(x0, y0, x1, y1, text="", **kw):
        ax.add_patch(FancyArrowPatch((x0, y0), (x1, y1), arrowstyle="-|>", mutation_scale=12,
                                     color="0.25", lw=1.2, **kw))
        if text:
            ax.text((x0 + x1) / 2 + 0.1, (y0 + y1) / 2, text, fontsize=8.5, ha="left",
                    va="center", color="0.2")

    src_c, shared_c, task_c, tgt_c = "#dbe9f6", "#fde7c8", "#e3f1dc", "#f6dbe4"
    box(0.2, 2.6, 2.0, 1.2, source, src_c)
    box(3.0, 2.6, 2.6, 1.2, "body $g$\n(conv blocks: features)", shared_c)
    box(6.4, 2.6, 1.6, 1.2, "source head\n$h_S$", task_c)
    ax.text(8.2, 3.2, "source task\n10 MNIST classes", fontsize=8.5, va="center")
    box(0.2, 0.3, 2.0, 1.2, target, tgt_c)
    box(3.0, 0.3, 2.6, 1.2, "body $g$\nstarts from the source weights", shared_c)
    box(6.4, 0.3, 1.6, 1.2, "new head\n$h_T$ (random)", task_c)
    ax.text(8.2, 0.9, "target task\n10 digit classes", fontsize=8.5, va="center")
    arrow(2.25, 3.2, 2.95, 3.2)
    arrow(5.65, 3.2, 6.35, 3.2)
    arrow(2.25, 0.9, 2.95, 0.9)
    arrow(5.65, 0.9, 6.35, 0.9)
    arrow(4.3, 2.55, 4.3, 1.55, "copy the weights\n(shared knowledge)")
    ax.text(7.2, 2.07, "task-specific:\nnot transferred", fontsize=8.5, ha="center",
            va="center", color="0.35")
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
    return _finish(fig, ax, own)


def plot_roc(curves: Mapping[str, AttackMetrics | tuple], *, title: str | None = None,
             min_fpr: float | None = None, ax=None):
    """Membership-inference ROC curves on log-log axes, with the chance diagonal; returns the Figure.

    ``curves`` maps a label to an :class:`transfer_utils.AttackMetrics` (from
    :func:`transfer_utils.attack_metrics`) or to an ``(fpr, tpr)`` pair. Log axes
    show what a linear plot hides: how many members an attack finds while it
    almost never accuses a non-member (Carlini et al. 2022; chapter 7). The
    axes start at ``min_fpr`` (default: the smallest non-zero false-positive
    rate among the curves); the legend gives each curve's AUC when known.
    """
    import matplotlib.pyplot as plt

    if not curves:
        raise ValueError("plot_roc needs at least one curve, e.g. {'attack': tu.attack_metrics(...)}")
    fig, ax = (ax.figure, ax) if ax is not None else plt.subplots(figsize=(5.6, 4.2))
    lows = []
    for label, c in curves.items():
        if isinstance(c, AttackMetrics):
            (fpr, tpr), text = c.roc, f"{label} (AUC {c.auc:.2f})"
        elif isinstance(c, (tuple, list)) and len(c) == 2:
            (fpr, tpr), text = c, str(label)
        else:
            raise TypeError(f"curve {label!r} must be an AttackMetrics or an (fpr, tpr) pair, "
                            f"got {type(c).__name__}")
        fpr, tpr = _numpy(fpr).astype(float), _numpy(tpr).astype(float)
        if fpr.shape != tpr.shape or fpr.ndim != 1:
            raise ValueError(f"curve {label!r}: fpr and tpr must be 1-D of one length")
        lows.append(fpr[fpr > 0].min() if (fpr > 0).any() else 1.0)
        ax.step(fpr, tpr, where="post", label=text)
    low = min_fpr if min_fpr is not None else max(1e-4, min(lows))
    ax.plot([low, 1], [low, 1], "k--", lw=0.8, label="chance")
    ax.set(xscale="log", yscale="log", xlim=(low, 1), ylim=(low, 1.05),
           xlabel="false-positive rate", ylabel="true-positive rate")
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig


def plot_privacy_utility(curves: Mapping[str, Mapping[float, Summary | tuple]], *,
                         ylabel: str = "test accuracy", reference: Mapping[str, float] | None = None,
                         title: str | None = None, ax=None):
    """A value (accuracy, attack success) against the privacy budget epsilon, one line per method.

    ``curves`` is ``{method: {epsilon: value}}``, each value a Summary (its 95%
    interval is drawn) or a ``(value, low, high)`` triple (e.g. a bootstrap
    interval of an attack's TPR); ``math.inf`` (no privacy) is drawn at the right
    end of the log epsilon axis. Error bars are cut to [0, 1]. ``reference`` adds
    horizontal lines, e.g. ``{"public model only": 0.77}``. Chapter 7's
    privacy-utility curve. Returns the Figure.
    """
    import matplotlib.pyplot as plt

    if not curves or not all(curves.values()):
        raise ValueError("plot_privacy_utility needs {method: {epsilon: value}} with values")
    finite = sorted({e for c in curves.values() for e in c if math.isfinite(e)})
    if not finite or any(e <= 0 for e in finite):
        raise ValueError("epsilons must be positive, with at least one finite value")
    inf_x = finite[-1] * 3 if len(finite) == 1 else finite[-1] * (finite[-1] / finite[-2]) ** 1.2

    def x(e):
        return inf_x if math.isinf(e) else e

    def interval(v):
        if isinstance(v, Summary):
            return v.mean, v.mean - v.ci95, v.mean + v.ci95
        if isinstance(v, (tuple, list)) and len(v) == 3:
            return tuple(float(t) for t in v)
        raise TypeError(f"values must be Summary objects (tu.summarize) or (value, low, high) "
                        f"triples, got {type(v).__name__}")

    fig, ax = (ax.figure, ax) if ax is not None else plt.subplots(figsize=(7.0, 3.8))
    for label, curve in curves.items():
        es = sorted(curve, key=x)
        m, lo, hi = np.array([interval(curve[e]) for e in es]).T
        lo, hi = np.clip(lo, 0, 1), np.clip(hi, 0, 1)
        ax.errorbar([x(e) for e in es], m, yerr=[m - lo, hi - m], marker="o", capsize=3,
                    label=label)
    for name, value in (reference or {}).items():
        ax.axhline(value, ls="--", lw=1, color="grey")
        ax.annotate(name, (finite[0], value), textcoords="offset points", xytext=(2, 3),
                    fontsize=8, color="dimgrey")
    ticks = finite + ([inf_x] if any(math.isinf(e) for c in curves.values() for e in c) else [])
    ax.set_xscale("log")
    ax.set_xticks(ticks, [f"{e:g}" for e in finite] + ["∞"] * (len(ticks) - len(finite)))
    ax.minorticks_off()
    ax.set(xlabel="privacy budget ε (smaller = more private)", ylabel=ylabel)
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0, frameon=False,
              fontsize=8)
    fig.tight_layout()
    return fig
