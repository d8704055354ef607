"""Transfer experiments in one call: train a target model by a named method, over sizes and seeds.

Chapter 1 uses it for the motivating "scratch versus pretrained" curve, chapter 3
compares every method, chapters 4 and 7 reuse it as the fine-tuning baseline.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Mapping, Sequence

import torch
from torch import nn

from .analysis import Summary, paired_gain, summarize
from .data import ArrayDataset, few_shot, make_loader
from .models import replace_head
from .runtime import get_device, seed_everything
from .surgery import freeze, param_groups, unfreeze
from .training import evaluate, fit

__all__ = ["METHODS", "fresh_copy", "transfer_run", "transfer_curve", "run_variants",
           "summarize_runs"]

METHODS = ("scratch", "finetune", "frozen", "partial", "lp-ft")


def fresh_copy(model: nn.Module) -> nn.Module:
    """Same architecture, new random weights (and reset BatchNorm statistics): a scratch model."""
    clone = copy.deepcopy(model)
    for m in clone.modules():
        if hasattr(m, "reset_parameters"):
            m.reset_parameters()
        if hasattr(m, "reset_running_stats"):
            m.reset_running_stats()
    unfreeze(clone)
    return clone


def transfer_run(
    method: str,
    source: nn.Module,
    train: ArrayDataset,
    test: ArrayDataset,
    *,
    seed: int = 0,
    steps: int = 300,
    batch_size: int = 32,
    lr: float = 1e-3,
    body_lr: float | None = None,
    head_steps: int | None = None,
    freeze_blocks: int = 1,
    augment=None,
    device: str | torch.device | None = None,
) -> dict:
    """Train a target model from ``source`` by ``method`` and measure it on ``test``.

    Methods (chapter 3 explains each):

    ``"scratch"``
        the source architecture with fresh random weights, all layers trained;
    ``"finetune"``
        the source weights, a new head, everything trained (body at ``body_lr``);
    ``"frozen"``
        the source body frozen (BatchNorm in eval mode), only the new head trained;
    ``"partial"``
        the first ``freeze_blocks`` children of ``source.body`` frozen, the rest trained;
    ``"lp-ft"``
        linear probe then fine-tune: the head alone for ``head_steps``, then everything.

    Training runs for about ``steps`` optimizer steps (whole epochs over ``train``),
    so runs with 10 or 1,000 examples cost about the same. The source model is
    never changed.

    Returns
    -------
    dict
        ``{"accuracy": float, "seconds": float, "model": trained model}``.

    Examples
    --------
    >>> import transfer_utils as tu
    >>> src = tu.zoo.load("mnist8_cnn")
    >>> digits = tu.load_digits()
    >>> train, test = tu.split(digits, (0.5, 0.5), seed=0)
    >>> r = tu.transfer_run("frozen", src, tu.few_shot(train, 5, seed=0), test, steps=50)
    >>> 0.0 <= r["accuracy"] <= 1.0
    True
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    if not hasattr(source, "body"):
        raise TypeError(
            f"transfer_run needs a model with .body and a head (tu.SmallCNN, tu.MLP), "
            f"got {type(source).__name__}"
        )
    if steps < 1:
        raise ValueError(f"steps must be positive, got {steps}")
    device = get_device(device)
    seed_everything(seed)
    n_classes = int(train.num_classes)
    model = fresh_copy(source) if method == "scratch" else copy.deepcopy(source)
    unfreeze(model)
    replace_head(model, n_classes)
    loader = make_loader(train, min(batch_size, len(train)), shuffle=True, seed=seed,
                         augment=augment)
    body_lr = lr if body_lr is None else body_lr
    t0 = time.perf_counter()
    if method in ("scratch",):
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        fit(model, loader, steps=steps, optimizer=opt, device=device, progress=False)
    elif method == "finetune":
        opt = torch.optim.Adam(param_groups(model, {"body": body_lr, "head": lr}))
        fit(model, loader, steps=steps, optimizer=opt, device=device, progress=False)
    elif method == "frozen":
        freeze(model, "body")
        fit(model, loader, steps=steps, optimizer=torch.optim.Adam(model.head.parameters(), lr=lr), device=device, progress=False)
    elif method == "partial":
        names = [n for n, _ in model.body.named_children()]
        if not 0 <= freeze_blocks <= len(names):
            raise ValueError(f"freeze_blocks must be between 0 and {len(names)}, got {freeze_blocks}")
        if freeze_blocks:
            freeze(model, *[f"body.{n}" for n in names[:freeze_blocks]])
        opt = torch.optim.Adam(param_groups(model, {"body": body_lr, "head": lr}))
        fit(model, loader, steps=steps, optimizer=opt, device=device, progress=False)
    else:  # lp-ft
        first = steps // 2 if head_steps is None else head_steps
        freeze(model, "body")
        if first > 0:
            fit(model, loader, steps=first, optimizer=torch.optim.Adam(model.head.parameters(), lr=lr),
                device=device, progress=False)
        unfreeze(model, "body")
        rest = max(1, steps - first)
        opt = torch.optim.Adam(param_groups(model, {"body": body_lr, "head": lr}))
        fit(model, loader, steps=rest, optimizer=opt, device=device, progress=False)
    seconds = time.perf_counter() - t0
    acc = evaluate(model, make_loader(test, 512), device=device)["accuracy"]
    return {"accuracy": acc, "seconds": seconds, "model": model.eval()}


def transfer_curve(
    methods: Sequence[str],
    source: nn.Module,
    train: ArrayDataset,
    test: ArrayDataset,
    *,
    ks: Sequence[int],
    seeds: Sequence[int] = (0, 1, 2),
    method_kwargs: dict[str, dict] | None = None,
    **kwargs,
) -> dict[str, dict[int, Summary]]:
    """Accuracy against labels per class: ``{method: {k: Summary over seeds}}``.

    For each ``k`` and seed the same ``k``-shot training set (``tu.few_shot(train,
    k, seed)``) is given to every method, so the methods are compared on equal
    data. ``method_kwargs`` overrides arguments per method, e.g.
    ``{"finetune": {"body_lr": 1e-4}}``; other ``kwargs`` go to every
    :func:`transfer_run`. Plot the result with :func:`transfer_utils.plot_curves`.

    It is :func:`run_variants` with one variant per method, summarised by
    :func:`summarize_runs`; use those two to keep the trained models.
    """
    if not methods:
        raise ValueError(f"give at least one method from {METHODS}")
    for m in methods:
        if m not in METHODS:
            raise ValueError(f"unknown method {m!r}; choose one of {', '.join(METHODS)}")
    method_kwargs = method_kwargs or {}
    unknown = set(method_kwargs) - set(methods)
    if unknown:
        raise ValueError(f"method_kwargs names methods not being run: {sorted(unknown)}")
    runs = run_variants({m: (m, method_kwargs.get(m, {})) for m in methods}, source, train, test,
                        ks=ks, seeds=seeds, **kwargs)
    return summarize_runs(runs)


def run_variants(
    variants: Mapping[str, str | tuple[str, dict]],
    source: nn.Module,
    train: ArrayDataset,
    test: ArrayDataset,
    *,
    ks: Sequence[int],
    seeds: Sequence[int] = (0, 1, 2),
    **kwargs,
) -> dict[str, dict[int, list[dict]]]:
    """Run labelled variants of :func:`transfer_utils.transfer_run` and keep every result.

    The engine of :func:`transfer_curve`, but a method may appear several
    times with different settings (``{"fine-tune, body lr 1e-4": ("finetune",
    {"body_lr": 1e-4})}``) and the trained models are kept, so chapter 7 can
    measure forgetting, CKA, privacy and cost on the very models whose accuracy
    it reports. For each ``k`` and seed every variant gets the same ``k``-shot
    set, stored with the result under ``"shots"`` (with ``"k"`` and ``"seed"``).

    Returns
    -------
    dict
        ``{label: {k: [result per seed]}}``; summarise with :func:`summarize_runs`.
    """
    if not variants:
        raise ValueError('give at least one variant, e.g. {"scratch": "scratch"}')
    specs = {}
    for label, spec in variants.items():
        method, kw = (spec, {}) if isinstance(spec, str) else spec
        specs[label] = (method, dict(kw))
    if not list(ks) or not list(seeds):
        raise ValueError("give at least one k and one seed")
    runs: dict[str, dict[int, list[dict]]] = {label: {k: [] for k in ks} for label in specs}
    for k in ks:
        for seed in seeds:
            shots = few_shot(train, k, seed=seed)
            for label, (method, kw) in specs.items():
                r = transfer_run(method, source, shots, test, seed=seed, **{**kwargs, **kw})
                r.update(shots=shots, k=k, seed=seed)
                runs[label][k].append(r)
    return runs


def summarize_runs(
    runs: Mapping[str, Mapping[int, Sequence[dict]]],
    metric: str | Callable[[dict], float] = "accuracy",
    *,
    baseline: str | None = None,
) -> dict[str, dict[int, Summary]]:
    """``{label: {k: Summary}}`` of a metric over the seeds of :func:`run_variants` results.

    ``metric`` is a result key or a function of one result. With ``baseline``
    (a label) the summary is of the paired difference ``metric(variant) -
    metric(baseline)`` seed by seed: the transfer gain of chapter 7, whose error
    bar is smaller than that of the two accuracies because both runs saw the
    same training examples. The baseline itself is left out.
    """
    get = (lambda r: r[metric]) if isinstance(metric, str) else metric
    if baseline is not None and baseline not in runs:
        raise ValueError(f"baseline {baseline!r} is not one of the labels {list(runs)}")
    plain = {label: {k: summarize([float(get(r)) for r in results]) for k, results in per_k.items()}
             for label, per_k in runs.items()}
    if baseline is None:
        return plain
    for label, per_k in runs.items():
        for k, results in per_k.items():
            if [r["seed"] for r in runs[baseline][k]] != [r["seed"] for r in results]:
                raise ValueError(f"{label!r} and {baseline!r} were not run on the same seeds")
    return {label: paired_gain(plain, label, baseline) for label in runs if label != baseline}
