"""What a model learned, forgot or costs: transferability scores, forgetting, CKA, cost (chapter 7).

Measure layer. Chapter 7 uses these to detect negative transfer before committing
to a source (:func:`logme`, :func:`leep`, :func:`transferability`), to measure what
a fine-tuned body forgot (:func:`forgetting`, :func:`source_task_accuracy`), how far
its weights moved (:func:`relative_change`), which layers changed
(:func:`cka_matrix`) and what each method costs (:func:`memory_footprint`,
:func:`cost_table`).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .analysis import linear_cka, summarize
from .data import ArrayDataset, dataset_classes, make_loader, num_classes
from .experiments import cross_validate
from .features import extract_layers, linear_probe
from .models import count_parameters, get_head, head_name
from .runtime import get_device
from .surgery import has_prefix
from .training import evaluate, predict

__all__ = ["logme", "leep", "transferability", "source_confusion", "forgetting",
           "source_task_accuracy", "relative_change", "cka_matrix", "memory_footprint",
           "cost_table"]



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
        penultimate features, the input of the head
        (:func:`transfer_utils.cross_validate`);
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
        feats, y = extract_layers(nn.Identity(), loader, ["input"], device=device)
        X = feats["input"]
        lp = float("nan")
    else:
        try:
            _, _, head = get_head(model)
        except TypeError as err:
            raise TypeError(f"transferability: {err}; or pass None for raw pixels") from None
        captured: list[torch.Tensor] = []
        hook = head.register_forward_pre_hook(lambda _m, a: captured.append(a[0].flatten(1)))
        try:  # one forward pass: the features that feed the head, and the model's logits
            out, y = extract_layers(model, loader, [""], device=device)
        finally:
            hook.remove()
        X = torch.cat([c.detach().float().cpu() for c in captured])
        lp = leep(torch.softmax(out[""].double(), 1), y)
    feats = ArrayDataset(X, y, dataset_classes(dataset))
    probe = cross_validate(
        lambda tr, va: linear_probe(tr.x, tr.y, va.x, va.y)["accuracy"], feats,
        folds=folds, seed=seed,
    )
    return {"probe": probe.mean, "logme": logme(X, y), "leep": lp}


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
    before = evaluate(source, make_loader(source_val, 512), device=device)["accuracy"]
    after = source_task_accuracy(source, tuned, source_val, device=device)
    return {"before": before, "after": after, "drop": before - after}


@torch.no_grad()
def cka_matrix(
    model_a: nn.Module,
    model_b: nn.Module,
    loader: Iterable,
    layers: Sequence[str],
    layers_b: Sequence[str] | None = None,
    *,
    debiased: bool = False,
    device: str | torch.device | None = None,
) -> torch.Tensor:
    """Linear CKA between every layer of ``model_a`` and every layer of ``model_b``.

    Both models see the same inputs from ``loader``; each named layer's output is
    flattened to ``[n, d]`` and compared with :func:`transfer_utils.linear_cka`.
    Entry ``[i, j]`` compares ``layers[i]`` of ``model_a`` with ``layers_b[j]``
    (default: the same names) of ``model_b``. Chapter 7 plots it for a source
    and its fine-tuned copy: the diagonal shows how much each layer changed.
    ``debiased=True`` uses the unbiased estimator of :func:`transfer_utils.linear_cka`,
    for layers with more features than there are inputs.

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
            out[i, j] = linear_cka(x, y, debiased=debiased)
    return out


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


def relative_change(source: nn.Module | Mapping[str, torch.Tensor], model: nn.Module,
                    prefix: str | None = None) -> float:
    r"""How far fine-tuning moved the weights: :math:`\|\theta - \theta^0\|_2 / \|\theta^0\|_2`.

    Over the parameters under ``prefix`` that ``model`` and ``source`` share
    (same name and shape); by default every parameter outside the head
    (:func:`transfer_utils.head_name`). Chapter 3 uses it to show that a large
    body learning rate carries the weights far from the pretrained ones.

    Examples
    --------
    >>> import transfer_utils as tu
    >>> net = tu.SmallCNN()
    >>> tu.relative_change(net, net)
    0.0
    """
    src = source.state_dict() if isinstance(source, nn.Module) else dict(source)
    head = head_name(model) if prefix is None else None
    num = den = 0.0
    n = 0
    with torch.no_grad():
        for name, p in model.named_parameters():
            if (prefix is None and has_prefix(name, head)) or (
                    prefix is not None and not has_prefix(name, prefix)):
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
            f"relative_change found no parameter {'outside the head' if prefix is None else 'under ' + repr(prefix)} "
            "shared by model and source; pass the pretrained model the target was copied from "
            "first: relative_change(source, model)"
        )
    if den == 0:
        raise ValueError("the source weights under the prefix are all zero: no relative scale")
    return (num / den) ** 0.5


def source_task_accuracy(
    source: nn.Module,
    model: nn.Module,
    data,
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
    if num_classes(data) != head_s.out_features:
        raise ValueError(
            f"data has {num_classes(data)} classes but the source head has "
            f"{head_s.out_features} outputs: pass the source task's data "
            "(tu.zoo.source_data(name)[1] for a zoo model)"
        )
    return evaluate(probe, make_loader(data, 512), device=device)["accuracy"]
