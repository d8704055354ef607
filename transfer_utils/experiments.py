"""Experiments: the one k x seeds runner, transfer runs by named method, curves and grids.

Measure layer. :func:`run_grid` is the single loop over labels per class ``k``
and seeds that every grid in the package uses (:func:`transfer_curve`,
:func:`run_variants`, :class:`TransferGrid`, :func:`probe_curve`,
:func:`layerwise_probe`, :func:`run_seeds`, :func:`learning_curve`);
:func:`transfer_run` trains one target model by a named method (chapter 3);
:func:`cross_validate` scores a choice on folds of a small training set.
"""

from __future__ import annotations

import copy
import inspect
import time
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from . import _validate as V
from .analysis import Summary, paired_gain, summarize
from .data import ArrayDataset, few_shot, fold_splits, make_loader, num_classes
from .features import FeatureCache, extract_layers, fit_linear_head, linear_probe
from .finetune import lp_ft
from .models import body_blocks, head_name, replace_head
from .runtime import get_device, progress_enabled, seed_everything
from .surgery import freeze, fresh_copy, param_groups, unfreeze
from .training import evaluate, fit

__all__ = ["METHODS", "run_grid", "transfer_run", "transfer_curve", "run_variants",
           "summarize_runs", "TransferGrid", "probe_curve", "layerwise_probe", "run_seeds",
           "learning_curve", "cross_validate"]

METHODS = ("scratch", "finetune", "frozen", "partial", "lp-ft")


def run_grid(
    fn: Callable[[int | None, int], object],
    *,
    ks: Sequence[int | None] = (None,),
    seeds: Sequence[int] = (0, 1, 2),
    progress: bool | None = None,
    desc: str = "runs",
) -> dict:
    """Call ``fn(k, seed)`` for every ``k`` and seed; return ``{k: [result per seed]}``.

    The one k x seeds loop of the package: seeds are the inner loop and results
    keep the seeds' order, so two grids run with the same seeds can be compared
    seed by seed (paired differences, :func:`transfer_utils.paired_gain`).
    ``ks=(None,)`` runs over seeds only. A progress bar counts the runs. ``fn``
    does its own seeding (every trainer takes ``seed=``).

    Examples
    --------
    >>> import transfer_utils as tu
    >>> tu.run_grid(lambda k, seed: k * 10 + seed, ks=[1, 2], seeds=[0, 1])
    {1: [10, 11], 2: [20, 21]}
    """
    ks = list(ks)
    seeds = [V.seed_value(s, "run_grid") for s in seeds]
    if not ks or not seeds:
        raise ValueError("run_grid: give at least one k and one seed")
    if len(set(ks)) != len(ks) or len(set(seeds)) != len(seeds):
        raise ValueError(f"run_grid: ks {ks} and seeds {seeds} must not repeat")
    for k in ks:
        if k is not None:
            V.positive_int(k, "each k (labelled examples per class)", "run_grid")
    bar = None
    if progress_enabled(progress) and len(ks) * len(seeds) > 1:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(ks) * len(seeds), desc=desc, leave=False, unit="run")
    out: dict = {}
    try:
        for k in ks:
            out[k] = []
            for seed in seeds:
                out[k].append(fn(k, seed))
                if bar is not None:
                    bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    return out


def _require_head(source: nn.Module) -> None:
    if not isinstance(source, nn.Module):
        raise TypeError(f"source must be a pretrained nn.Module, got {type(source).__name__}")
    head_name(source)  # a clear error when the model has no recognisable head


def transfer_run(
    method: str,
    source: nn.Module,
    train,
    test,
    *,
    seed: int = 0,
    steps: int = 300,
    batch_size: int = 32,
    lr: float = 1e-3,
    body_lr: float | None = None,
    head_lr: float | None = None,
    C: float = 1.0,
    freeze_blocks: int = 1,
    augment=None,
    device: str | torch.device | None = None,
) -> dict:
    """Train a target model from ``source`` by ``method`` and measure it on ``test``.

    Methods (chapter 3 explains each):

    ``"scratch"``
        the source architecture with fresh random weights, all layers trained at ``lr``;
    ``"finetune"``
        the source weights, a new head, everything trained (body at ``body_lr``,
        head at ``head_lr``; both ``lr`` by default);
    ``"frozen"``
        the source body frozen (BatchNorm in eval mode) and the new linear head
        fitted to convergence on its features (multinomial logistic regression
        with inverse regularisation ``C``, :func:`transfer_utils.fit_linear_head`):
        a convex problem, so ``steps`` does not apply;
    ``"partial"``
        the first ``freeze_blocks`` blocks before the head frozen
        (:func:`transfer_utils.body_blocks`), the rest trained as in ``"finetune"``;
    ``"lp-ft"``
        the head fitted as in ``"frozen"``, then everything fine-tuned as in
        ``"finetune"`` (:func:`transfer_utils.lp_ft`).

    ``train`` and ``test`` are any datasets of ``(x, y)`` items and ``source`` any
    model whose head :func:`transfer_utils.get_head` finds (the book's models, a
    torchvision ResNet). Gradient training runs for exactly ``steps`` optimizer
    steps, so runs with 10 or 1,000 examples cost about the same. The run seeds
    itself from ``seed``; the source model is never changed.

    Returns
    -------
    dict
        ``{"accuracy": float, "seconds": float, "model": trained model}``.

    Examples
    --------
    >>> import transfer_utils as tu
    >>> src = tu.zoo.load("mnist8_cnn")
    >>> train, test = tu.split(tu.load_digits(), (0.5, 0.5), seed=0)
    >>> r = tu.transfer_run("frozen", src, tu.few_shot(train, 5, seed=0), test)
    >>> 0.0 <= r["accuracy"] <= 1.0
    True
    """
    V.one_of(method, "method", METHODS, "transfer_run")
    _require_head(source)
    steps = V.positive_int(steps, "steps", "transfer_run")
    batch_size = V.positive_int(batch_size, "batch_size", "transfer_run")
    V.positive(lr, "lr", "transfer_run")
    if (body_lr is None) != (head_lr is None):
        raise TypeError(
            "transfer_run: give both body_lr and head_lr (the head's rate is never implied when "
            f"the body's differs), got body_lr={body_lr!r}, head_lr={head_lr!r}"
        )
    body_lr = lr if body_lr is None else V.nonneg(body_lr, "body_lr", "transfer_run")
    head_lr = lr if head_lr is None else V.positive(head_lr, "head_lr", "transfer_run")
    device = get_device(device)
    seed_everything(V.seed_value(seed, "transfer_run"))
    n_classes = num_classes(train)
    model = fresh_copy(source) if method == "scratch" else copy.deepcopy(source)
    unfreeze(model)
    replace_head(model, n_classes)
    head = head_name(model)
    loader = make_loader(train, min(batch_size, len(train)), shuffle=True, seed=seed,
                         augment=augment)

    def train_all() -> None:
        opt = torch.optim.Adam(param_groups(model, {head: head_lr}, default_lr=body_lr))
        fit(model, loader, steps=steps, optimizer=opt, device=device, progress=False)

    t0 = time.perf_counter()
    if method == "scratch":
        fit(model, loader, steps=steps, lr=lr, device=device, progress=False)
    elif method == "finetune":
        train_all()
    elif method == "frozen":
        freeze(model)
        unfreeze(model, head)  # the head is what this method trains (for cost counts)
        fit_linear_head(model, make_loader(train, 512), C=C, device=device)
    elif method == "partial":
        blocks = body_blocks(model)
        if not V.is_int(freeze_blocks) or not 0 <= freeze_blocks <= len(blocks):
            raise ValueError(f"transfer_run: freeze_blocks must be an integer between 0 and "
                             f"{len(blocks)} (the blocks {blocks}), got {freeze_blocks!r}")
        if freeze_blocks:
            freeze(model, *blocks[:freeze_blocks])
        train_all()
    else:  # lp-ft
        lp_ft(model, loader, steps=steps, head_lr=head_lr, body_lr=body_lr, C=C, head=head,
              probe_data=make_loader(train, 512), device=device, progress=False)
    seconds = time.perf_counter() - t0
    acc = evaluate(model, make_loader(test, 512), device=device)["accuracy"]
    return {"accuracy": acc, "seconds": seconds, "model": model.eval()}


def run_variants(
    variants: Mapping[str, str | tuple[str, dict]],
    source: nn.Module,
    train,
    test,
    *,
    ks: Sequence[int],
    seeds: Sequence[int] = (0, 1, 2),
    progress: bool | None = None,
    **kwargs,
) -> dict[str, dict[int, list[dict]]]:
    """Run labelled variants of :func:`transfer_utils.transfer_run` and keep every result.

    A method may appear several times with different settings
    (``{"fine-tune, body lr 1e-4": ("finetune", {"body_lr": 1e-4, "head_lr": 1e-3})}``)
    and the trained models are kept, so chapter 7 can measure forgetting, CKA,
    privacy and cost on the very models whose accuracy it reports. For each ``k``
    and seed every variant gets the same ``k``-shot set (``tu.few_shot(train, k,
    seed)``), stored with the result under ``"shots"`` (with ``"k"`` and
    ``"seed"``). ``kwargs`` go to every run; a variant's own settings win.

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
        V.one_of(method, f"the method of variant {label!r}", METHODS, "run_variants")
        specs[label] = (method, dict(kw))
    _require_head(source)

    def one(k, seed):
        shots = few_shot(train, k, seed=seed)
        out = {}
        for label, (method, kw) in specs.items():
            r = transfer_run(method, source, shots, test, seed=seed, **{**kwargs, **kw})
            r.update(shots=shots, k=k, seed=seed)
            out[label] = r
        return out

    grid = run_grid(one, ks=ks, seeds=seeds, progress=progress, desc="transfer runs")
    return {label: {k: [cell[label] for cell in cells] for k, cells in grid.items()}
            for label in specs}


def transfer_curve(
    methods: Sequence[str],
    source: nn.Module,
    train,
    test,
    *,
    ks: Sequence[int],
    seeds: Sequence[int] = (0, 1, 2),
    method_kwargs: dict[str, dict] | None = None,
    **kwargs,
) -> dict[str, dict[int, Summary]]:
    """Accuracy against labels per class: ``{method: {k: Summary over seeds}}``.

    For each ``k`` and seed the same ``k``-shot training set is given to every
    method, so the methods are compared on equal data and
    :func:`transfer_utils.paired_gain` can pair them. ``method_kwargs`` overrides
    arguments per method, e.g. ``{"finetune": {"body_lr": 1e-4, "head_lr": 1e-3}}``;
    other ``kwargs`` go to every :func:`transfer_run`. It is :func:`run_variants`
    with one variant per method, summarised by :func:`summarize_runs`.
    """
    if isinstance(methods, str) or not methods:
        raise ValueError(f"give at least one method, as a list from {METHODS}, e.g. "
                         "['scratch', 'finetune']")
    method_kwargs = method_kwargs or {}
    unknown = set(method_kwargs) - set(methods)
    if unknown:
        raise ValueError(f"method_kwargs names methods not being run: {sorted(unknown)}")
    runs = run_variants({m: (m, method_kwargs.get(m, {})) for m in methods}, source, train, test,
                        ks=ks, seeds=seeds, **kwargs)
    return summarize_runs(runs)


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


class TransferGrid:
    """Train each (method, k, seed, settings) once; evaluate the trained models on any split.

    Chapter 3 runs many overlapping experiments: the learning-rate sweep on a
    validation split picks the rates, the method comparison reports the chosen
    setting on the test split, the layer-freezing experiment reuses the
    fine-tuned and frozen runs, and the forgetting experiment measures the same
    models on the source task. A grid trains each configuration with
    :func:`transfer_run` the first time it is asked for (over its seeds, with
    :func:`run_grid`) and keeps the models, so nothing is trained twice.

    Parameters
    ----------
    source : nn.Module
        The pretrained model (never changed).
    train : Dataset
        The pool that ``tu.few_shot(train, k, seed)`` draws the training sets from.
    seeds : sequence of int
        Every query is answered over these seeds.
    **defaults
        Arguments for every :func:`transfer_run` call (``steps``, ``lr``,
        ``device``, ...); a query's own arguments override them.

    Examples
    --------
    >>> import transfer_utils as tu
    >>> pool, val = tu.split(tu.load_digits(), (0.8, 0.2), seed=0)
    >>> grid = tu.TransferGrid(tu.zoo.load("mnist8_cnn"), pool, seeds=(0, 1), steps=5)
    >>> s = grid.accuracy("finetune", 1, val)
    >>> s.n, len(grid)
    (2, 2)
    >>> _ = grid.accuracy("finetune", 1, val)  # cached: nothing is trained again
    >>> len(grid)
    2
    """

    def __init__(self, source: nn.Module, train, *, seeds: Sequence[int] = (0, 1, 2),
                 **defaults):
        _require_head(source)
        if not isinstance(train, torch.utils.data.Dataset):
            raise TypeError(f"train must be a dataset, got {type(train).__name__}")
        seeds = tuple(V.seed_value(s, "TransferGrid") for s in seeds)
        if not seeds:
            raise ValueError("TransferGrid needs at least one seed")
        self.source = source
        self.train = train
        self.seeds = seeds
        self.defaults = defaults
        self.seconds = 0.0
        self._models: dict[tuple, nn.Module] = {}
        self._scores: dict[tuple, float] = {}
        self._data: dict[int, object] = {}

    @staticmethod
    def _key(method: str, k: int, seed: int, kwargs: dict) -> tuple:
        return (method, int(k), int(seed), tuple(sorted(kwargs.items())))

    def model(self, method: str, k: int, seed: int, **kwargs) -> nn.Module:
        """The model trained by ``method`` on ``few_shot(train, k, seed)`` (trained once)."""
        kw = {**self.defaults, **kwargs}
        key = self._key(method, k, seed, kw)
        if key not in self._models:
            shots = few_shot(self.train, k, seed=seed)
            run = transfer_run(method, self.source, shots, shots, seed=seed, **kw)
            self.seconds += run["seconds"]
            self._models[key] = run["model"]
        return self._models[key]

    def models(self, method: str, k: int, **kwargs) -> list[nn.Module]:
        """One trained model per seed."""
        return run_grid(lambda k_, s: self.model(method, k_, s, **kwargs), ks=[k],
                        seeds=self.seeds, progress=False)[k]

    def score(self, fn: Callable[[nn.Module], float], method: str, k: int, *,
              name: str | None = None, **kwargs) -> Summary:
        """Summarise ``fn(model)`` over seeds; cached when ``name`` is given."""
        def one(k_, s):
            m = self.model(method, k_, s, **kwargs)
            key = (name, self._key(method, k_, s, {**self.defaults, **kwargs}))
            if name is None:
                return float(fn(m))
            if key not in self._scores:
                self._scores[key] = float(fn(m))
            return self._scores[key]

        return summarize(run_grid(one, ks=[k], seeds=self.seeds, progress=False)[k])

    def accuracy(self, method: str, k: int, data, **kwargs) -> Summary:
        """Accuracy on ``data`` (any dataset) over seeds (mean, std, 95% CI)."""
        if not isinstance(data, torch.utils.data.Dataset):
            raise TypeError(f"data must be a dataset, got {type(data).__name__}")
        self._data[id(data)] = data  # keep it alive so its id stays unique
        loader = make_loader(data, 512)
        device = self.defaults.get("device")
        return self.score(lambda m: evaluate(m, loader, device=device)["accuracy"],
                          method, k, name=f"accuracy@{id(data)}", **kwargs)

    def curve(self, method: str, ks: Sequence[int], data, **kwargs) -> dict[int, Summary]:
        """``{k: accuracy Summary}`` for :func:`transfer_utils.plot_curves`."""
        if not list(ks):
            raise ValueError("curve needs at least one k")
        return {k: self.accuracy(method, k, data, **kwargs) for k in ks}

    def __len__(self) -> int:
        return len(self._models)

    def __repr__(self) -> str:
        return (f"TransferGrid({len(self)} trained runs, seeds {list(self.seeds)}, "
                f"{self.seconds:.1f} s of training)")


def _as_feature_dataset(data, what: str) -> ArrayDataset:
    if isinstance(data, FeatureCache):
        return data.dataset()
    if isinstance(data, ArrayDataset) and data.x.ndim == 2:
        return data
    raise TypeError(f"{what} must be a FeatureCache (or an ArrayDataset of [n, d] features), "
                    f"got {type(data).__name__}")


def _call_probe(probe: Callable, Xtr, ytr, Xte, yte, seed: int) -> float:
    try:
        takes_seed = "seed" in inspect.signature(probe).parameters
    except (TypeError, ValueError):
        takes_seed = False
    out = probe(Xtr, ytr, Xte, yte, seed=seed) if takes_seed else probe(Xtr, ytr, Xte, yte)
    return float(out["accuracy"] if isinstance(out, Mapping) else out)


def probe_curve(
    train: FeatureCache,
    test: FeatureCache,
    probes: Mapping[str, Callable],
    *,
    ks: Sequence[int],
    seeds: Sequence[int] = (0, 1, 2),
) -> tuple[dict[str, dict[int, Summary]], dict[str, float]]:
    """Accuracy of several probes against labels per class, on cached features.

    For each ``k`` and seed every probe gets ``train.few_shot(k, seed)``: the same
    examples that :func:`transfer_curve` fine-tunes on, so the two curves compare
    methods on equal data (pair them seed by seed). A probe is called as
    ``probe(X_train, y_train, X_test, y_test)`` (plus ``seed=`` if it takes one)
    and returns ``{"accuracy": ...}``, like :func:`transfer_utils.linear_probe`.

    Returns
    -------
    (curves, seconds)
        ``curves[name][k]`` is a :class:`Summary` over seeds (plot it with
        ``tu.plot_curves``); ``seconds[name]`` is the mean wall time of one run.
    """
    if not probes:
        raise ValueError("give at least one probe, e.g. {'linear': tu.linear_probe}")
    train_ds = _as_feature_dataset(train, "train")
    test_ds = _as_feature_dataset(test, "test")
    times: dict[str, list[float]] = {n: [] for n in probes}

    def one(k, seed):
        shots = few_shot(train_ds, k, seed=seed)
        out = {}
        for name, probe in probes.items():
            t0 = time.perf_counter()
            out[name] = _call_probe(probe, shots.x, shots.y, test_ds.x, test_ds.y, seed)
            times[name].append(time.perf_counter() - t0)
        return out

    grid = run_grid(one, ks=ks, seeds=seeds, progress=False)
    curves = {n: {k: summarize([cell[n] for cell in cells]) for k, cells in grid.items()}
              for n in probes}
    return curves, {n: float(np.mean(t)) for n, t in times.items()}


def layerwise_probe(
    model: nn.Module,
    train,
    test,
    layers: Sequence[str],
    *,
    k: int | None = None,
    seeds: Sequence[int] = (0,),
    probe: Callable = linear_probe,
    batch_size: int = 512,
    device: str | torch.device | None = None,
) -> dict[str, Summary]:
    """Probe accuracy of every layer in ``layers``: which layer's features transfer best?

    Features of all layers are extracted in one pass each over ``train`` and
    ``test`` (datasets or loaders) with :func:`transfer_utils.extract_layers`;
    ``"input"`` is the raw input. With ``k`` each seed draws ``k`` training
    examples per class (``tu.few_shot``); without it all training examples are
    used and a deterministic probe gives the same number for every seed.

    Returns
    -------
    dict
        ``{layer: Summary over seeds}``, in the order of ``layers``; plot it with
        :func:`transfer_utils.plot_layerwise`.

    Examples
    --------
    >>> import transfer_utils as tu
    >>> train, test = tu.split(tu.load_digits(), (0.5, 0.5))
    >>> res = tu.layerwise_probe(tu.SmallCNN(), train, test, ["input", "body.block1"], k=5)
    >>> list(res)
    ['input', 'body.block1']
    """
    def as_loader(data):
        return make_loader(data, batch_size) if isinstance(data, torch.utils.data.Dataset) \
            else data

    Ftr, ytr = extract_layers(model, as_loader(train), layers, device=device)
    Fte, yte = extract_layers(model, as_loader(test), layers, device=device)
    feats = {name: ArrayDataset(Ftr[name], ytr) for name in layers}

    def one(k_, seed):
        out = {}
        for name, ds in feats.items():
            shots = ds if k_ is None else few_shot(ds, k_, seed=seed)
            out[name] = _call_probe(probe, shots.x, shots.y, Fte[name], yte, seed)
        return out

    cells = run_grid(one, ks=[k], seeds=seeds, progress=False)[k]
    return {name: summarize([c[name] for c in cells]) for name in layers}


def run_seeds(fn: Callable[[int], float], seeds: Sequence[int] = (0, 1, 2)) -> Summary:
    """Call ``fn(seed)`` for each seed (seeding everything first) and summarise the results.

    Examples
    --------
    >>> import transfer_utils as tu, torch
    >>> s = tu.run_seeds(lambda seed: torch.rand(()).item(), seeds=[0, 1, 2])
    >>> s.n
    3
    """
    return learning_curve(lambda k, seed: fn(seed), [None], seeds)[None]


def learning_curve(
    fn: Callable[[int, int], float], ks: Sequence[int], seeds: Sequence[int] = (0, 1, 2)
) -> dict[int, Summary]:
    """Run ``fn(k, seed)`` for every size ``k`` and seed (seeding everything first).

    Returns ``{k: Summary}`` for "accuracy against labels per class" curves
    (chapters 1, 3, 4); the runs go through :func:`run_grid`.
    """
    def one(k, seed):
        seed_everything(seed)
        v = fn(k, seed)
        return float(v.item() if isinstance(v, torch.Tensor) else v)

    grid = run_grid(one, ks=ks, seeds=seeds, progress=False)
    return {k: summarize(v) for k, v in grid.items()}


def cross_validate(
    fn: Callable,
    dataset,
    *,
    folds: int = 5,
    seed: int = 0,
) -> Summary:
    """Stratified ``folds``-fold cross-validation: ``fn(train_part, val_part) -> score`` per fold.

    With a few labelled examples there is no room for a separate validation set;
    cross-validation reuses every example for validation once, so choices such as
    a learning rate are made without touching the test set (chapter 7). The
    folds come from :func:`transfer_utils.fold_splits`.

    Examples
    --------
    >>> import transfer_utils as tu
    >>> ds = tu.few_shot(tu.load_digits(), 4, seed=0)
    >>> s = tu.cross_validate(lambda tr, va: len(va) / 40, ds, folds=4)
    >>> s.n, round(s.mean, 2)
    (4, 0.25)
    """
    if not callable(fn):
        raise TypeError(f"cross_validate: fn must be a function of (train_part, val_part), "
                        f"got {type(fn).__name__}")
    return summarize([float(fn(tr, va)) for tr, va in fold_splits(dataset, folds, seed=seed)])
