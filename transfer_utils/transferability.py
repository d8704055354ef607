"""When transfer goes wrong, measured (chapter 7): scores, forgetting, CKA, privacy, cost.

Chapter 7 uses these helpers to detect negative transfer before committing to a
source (:func:`logme`, :func:`leep`, :func:`transferability`), to measure what a
fine-tuned body forgot (:func:`forgetting`), to see which layers changed (:func:`cka_matrix`),
to test a model for memorised training examples (:func:`membership_inference`)
and to put the cost of each method side by side (:func:`memory_footprint`,
:func:`cost_table`).
"""

from __future__ import annotations

import copy
import math
import textwrap
from collections.abc import Callable, Iterable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .analysis import Summary, linear_cka, summarize
from .data import ArrayDataset, _stratified_folds, make_loader
from .features import extract_layers, linear_probe
from .finetune import source_task_accuracy
from .models import count_parameters
from .runtime import get_device
from .training import evaluate, predict

__all__ = [
    "logme",
    "leep",
    "transferability",
    "cross_validate",
    "permute_pixels",
    "forgetting",
    "cka_matrix",
    "plot_heatmap",
    "plot_bars",
    "source_confusion",
    "membership_inference",
    "memory_footprint",
    "cost_table",
    "check_leep",
]


# --------------------------------------------------------------------------- scores


def _labels(y, n: int | None = None) -> np.ndarray:
    y = y.detach().cpu().numpy() if isinstance(y, torch.Tensor) else np.asarray(y)
    if y.ndim != 1:
        raise ValueError(f"labels must be 1-D (one class id per example), got shape {y.shape}")
    if n is not None and len(y) != n:
        raise ValueError(f"got {n} rows of features or probabilities but {len(y)} labels")
    if len(y) and (y.min() < 0 or not np.issubdtype(y.dtype, np.integer)):
        raise ValueError("labels must be non-negative integer class ids")
    return y.astype(np.int64)


def logme(features, labels) -> float:
    r"""LogME (You et al. 2021): how well a linear model on ``features`` can explain ``labels``.

    For each class ``c`` a Bayesian linear regression of the one-hot column
    :math:`y_c` on the features :math:`F` (``[n, D]``), with prior
    :math:`w \sim N(0, \alpha^{-1} I)` and noise precision :math:`\beta`, has the
    log evidence

    .. math::

        \log p(y_c \mid F, \alpha, \beta) = \tfrac{D}{2}\log\alpha + \tfrac{n}{2}\log\beta
        - \tfrac{\beta}{2}\|F m - y_c\|^2 - \tfrac{\alpha}{2}\|m\|^2
        - \tfrac12 \log\det(\alpha I + \beta F^\top F) - \tfrac{n}{2}\log 2\pi,

    with :math:`m = \beta (\alpha I + \beta F^\top F)^{-1} F^\top y_c`. LogME
    maximises it over :math:`\alpha, \beta` by MacKay's fixed-point updates and
    returns the average over classes, divided by ``n``. Higher is better; it needs
    no training by gradient descent, only one SVD. Chapter 7 compares it across
    source models (and raw pixels) on the same labelled target set.

    Examples
    --------
    >>> import torch, transfer_utils as tu
    >>> y = torch.arange(60) % 3
    >>> good = torch.nn.functional.one_hot(y).float() + 0.1 * torch.randn(60, 3)
    >>> tu.logme(good, y) > tu.logme(torch.randn(60, 3), y)
    True
    """
    f = torch.as_tensor(features).detach().cpu().to(torch.float64).numpy()
    if f.ndim != 2:
        raise ValueError(f"features must be 2-D [n, d], got shape {f.shape} (flatten them)")
    n, d = f.shape
    y = _labels(labels, n)
    if n < 2:
        raise ValueError("logme needs at least 2 examples")
    if len(np.unique(y)) < 2:
        raise ValueError("logme needs at least two classes among the labels")
    if not np.isfinite(f).all():
        raise ValueError("features contain NaN or inf")
    u, s, _ = np.linalg.svd(f, full_matrices=False)
    sigma = s**2  # nonzero part of the eigenvalues of F^T F; the other d - r are 0
    r = len(sigma)
    evidences = []
    for c in np.unique(y):
        yc = (y == c).astype(np.float64)
        proj = u.T @ yc  # coordinates of y in the column space of F
        out_of_span = float(yc @ yc - proj @ proj)
        alpha, beta = 1.0, 1.0
        for _ in range(100):
            shrink = beta * sigma / (alpha + beta * sigma)
            gamma = shrink.sum()
            m2 = float(np.sum((beta * s / (alpha + beta * sigma)) ** 2 * proj**2))
            res2 = out_of_span + float(np.sum((1 - shrink) ** 2 * proj**2))
            new_alpha = gamma / max(m2, 1e-12)
            new_beta = max(n - gamma, 1e-12) / max(res2, 1e-12)
            done = abs(new_alpha - alpha) / alpha < 1e-6 and abs(new_beta - beta) / beta < 1e-6
            alpha, beta = new_alpha, new_beta
            if done:
                break
        shrink = beta * sigma / (alpha + beta * sigma)
        m2 = float(np.sum((beta * s / (alpha + beta * sigma)) ** 2 * proj**2))
        res2 = out_of_span + float(np.sum((1 - shrink) ** 2 * proj**2))
        logdet = np.sum(np.log(alpha + beta * sigma)) + (d - r) * math.log(alpha)
        ev = (d / 2 * math.log(alpha) + n / 2 * math.log(beta) - beta / 2 * res2
              - alpha / 2 * m2 - logdet / 2 - n / 2 * math.log(2 * math.pi))
        evidences.append(ev / n)
    return float(np.mean(evidences))


def leep(source_probs, labels) -> float:
    r"""LEEP (Nguyen et al. 2020): log expected empirical prediction of a source classifier.

    ``source_probs`` ``[n, Z]`` are the source model's softmax outputs over its
    own ``Z`` classes on the ``n`` target examples, ``labels`` their target
    classes. With the empirical joint :math:`\hat P(y, z) = \frac1n \sum_i
    \theta_z(x_i)\,[y_i = y]` and conditional :math:`\hat P(y \mid z) = \hat P(y,
    z) / \hat P(z)`,

    .. math::

        \mathrm{LEEP} = \frac1n \sum_i \log \sum_z \hat P(y_i \mid z)\, \theta_z(x_i).

    It is at most 0; higher means the source's predictions map better onto the
    target labels. Chapter 7 computes it for each candidate source; the exercise
    there asks you to write it yourself (:func:`check_leep`).

    Examples
    --------
    >>> import torch, transfer_utils as tu
    >>> y = torch.tensor([0, 0, 1, 1])
    >>> tu.leep(torch.tensor([[1., 0.], [1., 0.], [0., 1.], [0., 1.]]), y)
    0.0
    """
    p = torch.as_tensor(source_probs).detach().cpu().to(torch.float64)
    if p.dim() != 2:
        raise ValueError(f"source_probs must be 2-D [n, source classes], got {tuple(p.shape)}")
    y = torch.as_tensor(_labels(labels, p.shape[0]))
    if p.shape[0] == 0:
        raise ValueError("leep needs at least one example")
    if (p < 0).any() or not torch.allclose(p.sum(1), torch.ones(p.shape[0], dtype=p.dtype),
                                           atol=1e-4):
        raise ValueError("source_probs rows must be probabilities that sum to 1 "
                         "(pass softmax(logits), not the logits)")
    onehot = F.one_hot(y, int(y.max()) + 1).to(p.dtype)  # [n, Y]
    joint = onehot.T @ p / p.shape[0]  # [Y, Z]
    cond = joint / joint.sum(0, keepdim=True).clamp_min(1e-300)  # P(y | z)
    eep = (p @ cond.T).gather(1, y[:, None])[:, 0]
    return float(torch.log(eep.clamp_min(1e-300)).mean())


@torch.no_grad()
def source_confusion(
    source: nn.Module, dataset: ArrayDataset, *, device: str | torch.device | None = None
) -> torch.Tensor:
    """``[target classes, source classes]``: the source head's mean softmax on each target class.

    Row ``y`` says which *source* classes the source model sees in images of
    target class ``y``. When several target classes land on the same source
    class, the source features do not tell them apart: chapter 7 uses this to
    explain negative transfer. (Normalised by columns instead, the joint of
    this table is the one LEEP uses.)
    """
    logits, y = predict(source, make_loader(dataset, 512), device=device)
    p = torch.softmax(logits.double(), 1)
    classes = range(int(dataset.num_classes))
    missing = [c for c in classes if not (y == c).any()]
    if missing:
        raise ValueError(f"target classes {missing} have no examples in the dataset")
    return torch.stack([p[y == c].mean(0) for c in classes])


def cross_validate(
    fn: Callable[[ArrayDataset, ArrayDataset], float],
    dataset: ArrayDataset,
    *,
    folds: int = 5,
    seed: int = 0,
) -> Summary:
    """Stratified ``folds``-fold cross-validation: ``fn(train_part, val_part) -> score`` per fold.

    With a few labelled examples there is no room for a separate validation set;
    cross-validation reuses every example for validation once, so choices such as
    a learning rate are made without touching the test set (chapter 7).

    Examples
    --------
    >>> import transfer_utils as tu
    >>> ds = tu.few_shot(tu.load_digits(), 4, seed=0)
    >>> s = tu.cross_validate(lambda tr, va: len(va) / 40, ds, folds=4)
    >>> s.n, round(s.mean, 2)
    (4, 0.25)
    """
    if isinstance(folds, bool) or not isinstance(folds, int) or folds < 2:
        raise ValueError(f"folds must be an integer >= 2, got {folds!r}")
    y = dataset.y.cpu().numpy()
    smallest = int(np.bincount(y)[np.unique(y)].min())
    if smallest < folds:
        raise ValueError(
            f"the smallest class has {smallest} examples, fewer than folds={folds}: every "
            f"validation fold needs each class; use folds <= {smallest}"
        )
    parts = _stratified_folds(dataset.y.cpu(), folds, seed)
    scores = []
    for f, val_idx in enumerate(parts):
        train_idx = torch.cat([p for g, p in enumerate(parts) if g != f]).sort().values
        scores.append(float(fn(dataset.subset(train_idx), dataset.subset(val_idx))))
    return summarize(scores)


def transferability(
    model: nn.Module | None,
    dataset: ArrayDataset,
    *,
    folds: int = 5,
    seed: int = 0,
    device: str | torch.device | None = None,
) -> dict:
    """Cheap checks of a source model on a labelled target set, before any fine-tuning.

    Computes, from one forward pass over ``dataset``:

    ``"probe"``
        cross-validated accuracy of a linear probe (logistic regression) on the
        penultimate features ``model.body(x)`` (:func:`cross_validate`);
    ``"logme"``
        :func:`logme` of those features;
    ``"leep"``
        :func:`leep` of the source head's softmax (``nan`` when ``model`` is None).

    With ``model=None`` the "features" are the raw pixels, flattened: the
    reference a useful source should beat. Chapter 7 explains how to read them.

    Examples
    --------
    >>> import transfer_utils as tu
    >>> ds = tu.few_shot(tu.load_digits(), 5, seed=0)
    >>> sorted(tu.transferability(None, ds))
    ['leep', 'logme', 'probe']
    """
    loader = make_loader(dataset, 512)
    if model is None:
        X, y = dataset.x.flatten(1).cpu(), dataset.y.cpu()
        lp = float("nan")
    else:
        if not hasattr(model, "body") or not hasattr(model, "head"):
            raise TypeError(f"transferability needs a model with .body and .head (tu.SmallCNN, "
                            f"tu.MLP), got {type(model).__name__}; pass None for raw pixels")
        # one forward pass: the body's features and the model's logits together
        out, y = extract_layers(model, loader, ["body", ""], device=device)
        X = out["body"]
        lp = leep(torch.softmax(out[""].double(), 1), y)
    feats = ArrayDataset(X, y, dataset.classes)
    probe = cross_validate(
        lambda tr, va: linear_probe(tr.x, tr.y, va.x, va.y)["accuracy"], feats,
        folds=folds, seed=seed,
    )
    return {"probe": probe.mean, "logme": logme(X, y), "leep": lp}


def permute_pixels(dataset: ArrayDataset, seed: int = 0) -> ArrayDataset:
    """The same dataset with one fixed random permutation applied to every image's pixels.

    A network trained on permuted images learns nothing about strokes or local
    shapes: chapter 7 uses it as a source whose features do not fit natural images.

    Examples
    --------
    >>> import torch, transfer_utils as tu
    >>> ds = tu.load_digits()
    >>> p = tu.permute_pixels(ds, seed=0)
    >>> torch.equal(p.x.flatten(1).sort(1).values, ds.x.flatten(1).sort(1).values)
    True
    """
    x = dataset.x
    if x.dim() < 3:
        raise ValueError(f"permute_pixels needs [N, C, ...] inputs, got shape {tuple(x.shape)}")
    per_channel = x[0, 0].numel()
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(per_channel, generator=g).to(x.device)
    px = x.flatten(2)[:, :, perm].reshape(x.shape)
    return ArrayDataset(px, dataset.y, dataset.classes, f"{dataset.name}-permuted")


# --------------------------------------------------------------------------- forgetting


def forgetting(
    source: nn.Module,
    tuned: nn.Module,
    source_val: ArrayDataset,
    *,
    device: str | torch.device | None = None,
) -> dict:
    """How much of the source task a fine-tuned body still solves (catastrophic forgetting).

    The fine-tuned model's body is put under a copy of the *source* head and
    evaluated on the source task's validation split; ``before`` is the source
    model itself. Neither model is changed.

    Returns
    -------
    dict
        ``{"before": accuracy, "after": accuracy, "drop": before - after}``.

    Examples
    --------
    >>> import transfer_utils as tu
    >>> src = tu.zoo.load("digits04_cnn")
    >>> _, val = tu.zoo.source_data("digits04_cnn")
    >>> tu.forgetting(src, src, val)["drop"]
    0.0
    """
    for name, m in (("source", source), ("tuned", tuned)):
        if not hasattr(m, "body") or not hasattr(m, "head"):
            raise TypeError(f"{name} must have .body and .head (tu.SmallCNN, tu.MLP), "
                            f"got {type(m).__name__}")
    before = evaluate(source, make_loader(source_val, 512), device=device)["accuracy"]
    after = source_task_accuracy(tuned, source, source_val, device=device)
    return {"before": before, "after": after, "drop": before - after}


# --------------------------------------------------------------------------- CKA


@torch.no_grad()
def cka_matrix(
    model_a: nn.Module,
    model_b: nn.Module,
    loader: Iterable,
    layers: Sequence[str],
    layers_b: Sequence[str] | None = None,
    *,
    device: str | torch.device | None = None,
) -> torch.Tensor:
    """Linear CKA between every layer of ``model_a`` and every layer of ``model_b``.

    Both models see the same inputs from ``loader``; each named layer's output is
    flattened to ``[n, d]`` and compared with :func:`transfer_utils.linear_cka`.
    Entry ``[i, j]`` compares ``layers[i]`` of ``model_a`` with ``layers_b[j]``
    (default: the same names) of ``model_b``. Chapter 7 plots it for a source
    and its fine-tuned copy: the diagonal shows how much each layer changed.

    Examples
    --------
    >>> import transfer_utils as tu
    >>> net = tu.SmallCNN()
    >>> M = tu.cka_matrix(net, net, tu.make_loader(tu.load_digits(), 512), ["body.block1", "body.block2"])
    >>> [round(v, 4) for v in M.diagonal().tolist()]
    [1.0, 1.0]
    """
    layers = list(layers)
    layers_b = layers if layers_b is None else list(layers_b)
    if not layers or not layers_b:
        raise ValueError("give at least one layer name, e.g. ['body.block1', 'body.block2']")
    device = get_device(device)
    batches = [b for b in loader]
    feats_a, _ = extract_layers(model_a, batches, layers, device=device)
    feats_b, _ = extract_layers(model_b, batches, layers_b, device=device)
    fa, fb = [feats_a[n] for n in layers], [feats_b[n] for n in layers_b]
    out = torch.empty(len(layers), len(layers_b), dtype=torch.float64)
    for i, x in enumerate(fa):
        for j, y in enumerate(fb):
            out[i, j] = linear_cka(x, y)
    return out


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


# --------------------------------------------------------------------------- privacy


def membership_inference(
    model: nn.Module,
    members: ArrayDataset,
    nonmembers: ArrayDataset,
    *,
    device: str | torch.device | None = None,
) -> dict:
    """A confidence-threshold membership-inference test (the simplest attack of Shokri et al. 2017).

    The attacker sees the model's softmax confidence in the true label and
    guesses "was in the training set" when it is high. ``members`` were in the
    training set, ``nonmembers`` were not (same distribution). Returns

    ``"auc"``
        area under the ROC curve of that guess: 0.5 means no leak, 1.0 means
        every member is more confident than every non-member;
    ``"advantage"``
        the best threshold's true-positive minus false-positive rate;
    ``"member_conf"``, ``"nonmember_conf"``
        mean confidence in the true label on each set (their gap is the leak).

    Examples
    --------
    >>> import transfer_utils as tu
    >>> src = tu.zoo.load("mnist8_cnn")
    >>> train, val = tu.zoo.source_data("mnist8_cnn")
    >>> r = tu.membership_inference(src, train.subset(range(300)), val.subset(range(300)))
    >>> r["auc"] > 0.5
    True
    """
    from sklearn.metrics import roc_auc_score, roc_curve

    if len(members) == 0 or len(nonmembers) == 0:
        raise ValueError("members and nonmembers must both hold examples")
    conf = []
    for ds in (members, nonmembers):
        logits, y = predict(model, make_loader(ds, 512), device=device)
        conf.append(torch.softmax(logits.double(), 1).gather(1, y[:, None])[:, 0].numpy())
    scores = np.concatenate(conf)
    truth = np.r_[np.ones(len(conf[0])), np.zeros(len(conf[1]))]
    fpr, tpr, _ = roc_curve(truth, scores)
    return {"auc": float(roc_auc_score(truth, scores)), "advantage": float(np.max(tpr - fpr)),
            "member_conf": float(conf[0].mean()), "nonmember_conf": float(conf[1].mean())}


# --------------------------------------------------------------------------- cost


def memory_footprint(model: nn.Module, batch: torch.Tensor, *, optimizer_states: int = 2,
                     device: str | torch.device | None = None) -> dict:
    """Bytes one training step needs, measured on ``batch``: weights, gradients, optimizer, activations.

    ``weights`` counts every parameter; ``gradients`` and ``optimizer`` (Adam
    keeps ``optimizer_states=2`` tensors per parameter) only the trainable ones;
    ``activations`` is what autograd saves for the backward pass during one
    forward pass in training mode, measured with
    ``torch.autograd.graph.saved_tensors_hooks``. A frozen body saves nothing
    for backward, which is why feature extraction is cheap (chapter 7). It runs
    on a copy of the model (so BatchNorm statistics and the train/eval mode are
    left alone), on the device of its parameters unless ``device`` is given.

    Examples
    --------
    >>> import torch, transfer_utils as tu
    >>> net = tu.SmallCNN()
    >>> full = tu.memory_footprint(net, torch.zeros(32, 1, 8, 8))
    >>> frozen = tu.memory_footprint(tu.freeze(net, "body"), torch.zeros(32, 1, 8, 8))
    >>> frozen["activations"] < full["activations"], frozen["gradients"] < full["gradients"]
    (True, True)
    """
    if not isinstance(batch, torch.Tensor):
        raise TypeError(f"batch must be an input tensor such as x[:32], got {type(batch).__name__}")
    params = list(model.parameters())
    if not params:
        raise ValueError("the model has no parameters")
    device = params[0].device if device is None else get_device(device)
    model = copy.deepcopy(model)  # the training-mode pass must not touch BatchNorm statistics
    params = list(model.parameters())
    weights = sum(p.numel() * p.element_size() for p in params)
    trainable = sum(p.numel() * p.element_size() for p in params if p.requires_grad)
    seen: dict[int, int] = {}
    param_ptrs = {p.data_ptr() for p in params}

    def pack(t: torch.Tensor):
        ptr = t.untyped_storage().data_ptr()
        if ptr not in param_ptrs:  # parameters are counted as weights already
            seen[ptr] = max(seen.get(ptr, 0), t.untyped_storage().nbytes())
        return t

    model.to(device).train()  # frozen BatchNorm stays in eval mode (tu.freeze)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = model(batch.to(device))
    del out
    return {"weights": weights, "gradients": trainable, "optimizer": optimizer_states * trainable,
            "activations": sum(seen.values()),
            "total": weights + trainable * (1 + optimizer_states) + sum(seen.values())}


def cost_table(runs: Mapping[str, Sequence[dict]], batch: torch.Tensor) -> list[dict]:
    """One row per method: training time over seeds, trainable parameters and memory per step.

    ``runs`` maps a label to the results of :func:`transfer_utils.transfer_run`
    (each a dict with ``"seconds"`` and ``"model"``) for several seeds; ``batch``
    is one training batch of inputs. Print it with :func:`format_table`.
    """
    if not runs:
        raise ValueError("runs is empty: pass {label: [transfer_run results]}")
    rows = []
    for label, results in runs.items():
        if not results:
            raise ValueError(f"no results for {label!r}")
        model = results[0]["model"]
        mem = memory_footprint(model, batch)
        rows.append({
            "method": label,
            "seconds": summarize([r["seconds"] for r in results]),
            "trainable": count_parameters(model, trainable_only=True),
            "train memory (KiB)": (mem["total"] - mem["weights"]) / 1024,
            "activations (KiB)": mem["activations"] / 1024,
        })
    return rows


# --------------------------------------------------------------------------- exercise


def check_leep(fn: Callable) -> None:
    """Check a reader's LEEP implementation ``fn(source_probs, labels) -> float`` (chapter 7).

    Compares it with :func:`leep` on a few cases (a perfect source, an
    uninformative one, random ones). Prints a message when it passes; raises
    ``AssertionError`` with a hint when it does not.
    """
    g = torch.Generator().manual_seed(0)
    cases = [
        ("a source that predicts the target perfectly",
         torch.eye(3)[torch.tensor([0, 1, 2, 0, 1, 2])], torch.tensor([0, 1, 2, 0, 1, 2])),
        ("an uninformative source (uniform predictions)",
         torch.full((8, 4), 0.25), torch.tensor([0, 1, 0, 1, 0, 1, 0, 1])),
    ]
    for n, z, k in ((20, 5, 3), (50, 10, 4)):
        probs = torch.softmax(2 * torch.randn(n, z, generator=g), 1)
        cases.append((f"random source outputs ({n} examples, {z} source classes, {k} target "
                      "classes)", probs, torch.arange(n) % k))
    for what, probs, y in cases:
        want = leep(probs, y)
        try:
            got = fn(probs.clone(), y.clone())
        except Exception as e:  # noqa: BLE001 - report any failure to the reader
            raise AssertionError(f"your function raised {type(e).__name__}: {e} on {what}") from e
        got = float(got)
        if not math.isfinite(got) or abs(got - want) > 1e-4:
            hint = ("Hint: build the joint P(y, z) as one_hot(y).T @ probs / n, divide each "
                    "column by P(z) = its sum to get P(y | z), then average "
                    "log(sum_z P(y_i | z) probs[i, z]) over the examples.")
            if math.isfinite(got) and abs(got - want * len(y)) < 1e-3 * max(1, abs(want * len(y))):
                hint = "Hint: LEEP is the mean over examples, not the sum."
            raise AssertionError(f"on {what} LEEP should be {want:.5f} but your function "
                                 f"returned {got:.5f}. {hint}")
    print(f"Well done: your LEEP matches the reference on all {len(cases)} cases.")
