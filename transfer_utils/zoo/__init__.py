"""The model zoo: small pretrained source models shipped as safetensors, each with its recipe.

Every model ``NAME`` is two files in this folder: ``NAME.json`` (the recipe that
trains it, its SHA-256, and what it measured) and ``NAME.safetensors`` (the
weights). :func:`load` checks the hash before it loads; :func:`train` re-runs the
recipe, so every shipped number can be reproduced::

    python -m transfer_utils.zoo list
    python -m transfer_utils.zoo build NAME    # retrain, save, record hash and metrics

Experiments too slow for a chapter's time budget ship their results the same way,
under ``runs/``: ``runs/NAME.json`` (what it is, the command that rebuilds it, its
SHA-256) and ``runs/NAME.safetensors`` (the measured tensors, with the full record
in the file's header); :func:`load_run` checks the hash, :func:`save_run` writes them.
"""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path

import torch
from torch import nn

from .. import _validate as V
from .. import data as _data
from .. import models as _models
from ..checkpoint import load_checkpoint, save_checkpoint, sha256_file
from ..runtime import get_device, seed_everything
from ..training import evaluate, evaluate_lm, fit, fit_lm

__all__ = ["available", "info", "load", "train", "build", "source_data", "ZOO_DIR",
           "runs", "run_info", "load_run", "save_run", "RUNS_DIR"]

ZOO_DIR = Path(__file__).resolve().parent
RUNS_DIR = ZOO_DIR / "runs"
_MODEL_CLASSES = {"SmallCNN": _models.SmallCNN, "MLP": _models.MLP,
                  "TinyViT": _models.TinyViT, "CharTransformer": _models.CharTransformer}


def available() -> list[str]:
    """Names of the models in the zoo (those with a recipe), sorted.

    Examples
    --------
    >>> import transfer_utils as tu
    >>> "mnist8_cnn" in tu.zoo.available()
    True
    """
    return _names(ZOO_DIR)


def _names(folder: Path) -> list[str]:
    return sorted(p.stem for p in folder.glob("*.json"))


def _record(folder: Path, name, what: str) -> dict:
    """The JSON record ``folder/name.json``, or a ValueError listing what is there."""
    names = _names(folder)
    if not isinstance(name, str) or name not in names:
        raise ValueError(f"unknown zoo {what} {name!r}; available: {', '.join(names) or 'none'}")
    return json.loads((folder / f"{name}.json").read_text())


def info(name: str) -> dict:
    """The recipe and recorded metadata (data, model, training, sha256, metrics) of a model."""
    return _record(ZOO_DIR, name, "model")


def _build_model(recipe: dict) -> nn.Module:
    spec = recipe["model"]
    cls = _MODEL_CLASSES.get(spec["class"])
    if cls is None:
        raise ValueError(f"recipe names unknown model class {spec['class']!r}; "
                         f"known: {sorted(_MODEL_CLASSES)}")
    return cls(**spec.get("kwargs", {}))


def source_data(name: str) -> tuple[_data.ArrayDataset, _data.ArrayDataset]:
    """The (train, validation) split a zoo model was trained and measured on.

    Chapters use the validation part to measure how much of the source task a
    fine-tuned body forgets. A recipe with ``preprocessing`` (``size``, ``mean``,
    ``std``: what the model expects, chapter 6) gives normalised inputs.
    """
    recipe = info(name)
    d = recipe["data"]
    if d["dataset"] in _data.TEXT_CORPORA:  # a language model: windows of its text
        # training windows overlap by context - stride; validation windows tile the text
        return tuple(_data.TextWindows(_data.encode_text(_data.load_text(d["dataset"], part)),
                                       d["context"], stride=stride)
                     for part, stride in (("train", d.get("stride")), ("val", None)))
    ds = _data.load_dataset(d["dataset"], **d.get("kwargs", {}))
    if d.get("classes") is not None:
        ds = _data.class_split(ds, d["classes"])
    pre = recipe.get("preprocessing")
    if pre is not None:  # the model reads normalised inputs: (x - mean) / std per channel
        ds = _data.normalize(ds, pre["mean"], pre["std"])
    val = d.get("val_fraction", 0.1)
    return _data.split(ds, (1.0 - val, val), seed=d.get("split_seed", 0))


def train(
    name: str,
    *,
    epochs: int | None = None,
    steps: int | None = None,
    max_examples: int | None = None,
    seed: int | None = None,
    device: str | torch.device | None = None,
    progress: bool | None = None,
) -> tuple[nn.Module, dict]:
    """Train a zoo model from its recipe; return ``(model, metrics)``.

    ``epochs`` (or ``steps``) and ``max_examples`` shorten the recipe for a quick
    check (the tests use them); leave them out to reproduce the shipped model.
    Language models (recipes whose data is a text corpus) train for ``steps``.
    """
    recipe = info(name)
    t = recipe["train"]
    if epochs is not None:
        epochs = V.positive_int(epochs, "epochs", "zoo.train")
    if steps is not None:
        steps = V.positive_int(steps, "steps", "zoo.train")
    if max_examples is not None:
        max_examples = V.positive_int(max_examples, "max_examples", "zoo.train")
    if seed is not None:
        seed = V.seed_value(seed, "zoo.train")
    if recipe["data"]["dataset"] in _data.TEXT_CORPORA:
        if epochs is not None:
            raise ValueError(f"{name} is a language model: its recipe counts steps; pass steps=")
        return _train_language_model(name, recipe, steps=steps, max_examples=max_examples,
                                     seed=seed, device=device, progress=progress)
    if epochs is not None and steps is not None:
        raise ValueError("give at most one of epochs= and steps= to shorten the recipe")
    seed_everything(t.get("seed", 0) if seed is None else seed)
    train_ds, val_ds = source_data(name)
    if max_examples is not None:
        train_ds = train_ds.subset(torch.arange(min(max_examples, len(train_ds))))
    shift = t.get("augment_shift", 0)
    loader = _data.make_loader(
        train_ds, t.get("batch_size", 64), shuffle=True, seed=t.get("seed", 0),
        augment=_data.random_shift(shift) if shift else None,
    )
    val_loader = _data.make_loader(val_ds, 512)
    model = _build_model(recipe)
    t0 = time.perf_counter()
    length = {"steps": steps} if steps is not None else {"epochs": epochs or t["epochs"]}
    fit(model, loader, **length, lr=t.get("lr", 1e-3),
        weight_decay=t.get("weight_decay", 0.0), device=device, progress=progress)
    seconds = time.perf_counter() - t0
    metrics = evaluate(model, val_loader, device=device)
    model.eval()
    return model, {"val_accuracy": round(metrics["accuracy"], 4),
                   "val_loss": round(metrics["loss"], 4), "train_seconds": round(seconds, 1)}


def _train_language_model(name, recipe, *, steps, max_examples, seed, device, progress):
    """The recipe of a language model: AdamW for ``steps``, the last ``decay_fraction`` at lr/10."""
    t = recipe["train"]
    seed_everything(t.get("seed", 0) if seed is None else seed)
    train_ds, val_ds = source_data(name)
    if max_examples is not None:
        if max_examples < 1:
            raise ValueError(f"max_examples must be positive, got {max_examples}")
        train_ds.x, train_ds.y = train_ds.x[:max_examples], train_ds.y[:max_examples]
    loader = _data.make_loader(train_ds, t.get("batch_size", 32), shuffle=True,
                               seed=t.get("seed", 0))
    model = _build_model(recipe)
    total = steps or t["steps"]
    late = round(total * t.get("decay_fraction", 0.0))
    opt = torch.optim.AdamW(model.parameters(), lr=t["lr"], weight_decay=t.get("weight_decay", 0))
    t0 = time.perf_counter()
    for length, lr in ((total - late, t["lr"]), (late, t["lr"] / 10)):
        if length:
            for group in opt.param_groups:
                group["lr"] = lr
            fit_lm(model, loader, steps=length, optimizer=opt, device=device, progress=progress)
    seconds = time.perf_counter() - t0
    metrics = evaluate_lm(model, _data.make_loader(val_ds, 256), device=device)
    model.eval()
    return model, {"val_bits_per_char": round(metrics["bits_per_char"], 4),
                   "val_chars": metrics["n"], "train_seconds": round(seconds, 1)}


def build(name: str, *, progress: bool | None = None) -> dict:
    """Re-run the full recipe, save the weights and record hash and metrics in the recipe file."""
    model, metrics = train(name, device="cpu", progress=progress)
    recipe = info(name)
    weights = ZOO_DIR / f"{name}.safetensors"
    extra = {}
    if "preprocessing" in recipe:  # enough for tu.load_predictor to use the file as it is
        extra = {"preprocessing": recipe["preprocessing"], "classes": source_data(name)[1].classes,
                 "architecture": {"name": recipe["model"]["class"],
                                  "kwargs": recipe["model"].get("kwargs", {})}}
    save_checkpoint(weights, model, name=name, recipe=json.dumps(
        {k: recipe[k] for k in ("data", "model", "train") + (("preprocessing",) if extra else ())},
        sort_keys=True), **extra)
    recipe["sha256"] = sha256_file(weights)
    recipe["metrics"] = metrics
    recipe["built_with"] = {"torch": torch.__version__, "python": platform.python_version()}
    (ZOO_DIR / f"{name}.json").write_text(json.dumps(recipe, indent=2) + "\n")
    return recipe


def load(name: str, *, device: str | torch.device | None = None) -> nn.Module:
    """Load a pretrained zoo model (in eval mode) after checking its SHA-256.

    Examples
    --------
    >>> import transfer_utils as tu
    >>> net = tu.zoo.load("mnist8_cnn")
    >>> net.training
    False
    """
    recipe = info(name)
    weights = ZOO_DIR / f"{name}.safetensors"
    if not weights.exists() or "sha256" not in recipe:
        raise FileNotFoundError(
            f"zoo model {name!r} has a recipe but no weights yet; build them with "
            f"`python -m transfer_utils.zoo build {name}` or train one with tu.zoo.train({name!r})"
        )
    model = _build_model(recipe)
    load_checkpoint(weights, model, sha256=recipe["sha256"], device=get_device(device))
    return model.eval()


def runs() -> list[str]:
    """Names of the shipped experiment results (``runs/NAME.json``), sorted.

    Examples
    --------
    >>> import transfer_utils as tu
    >>> "private_digits" in tu.zoo.runs()
    True
    """
    return _names(RUNS_DIR)


def run_info(name: str) -> dict:
    """What a shipped run is: description, the command that rebuilds it, sha256, summary."""
    return _record(RUNS_DIR, name, "run")


def load_run(name: str) -> tuple[dict, dict[str, torch.Tensor]]:
    """The record and tensors of a shipped experiment, after checking the file's SHA-256.

    Chapter 7 loads ``"private_digits"``: the differentially private training
    runs and membership scores that take too long to recompute in the chapter
    (the recipe is in the record, the command in :func:`run_info`).

    Returns
    -------
    (dict, dict)
        The record (settings, results, timings) and ``{name: tensor}``.

    Examples
    --------
    >>> import transfer_utils as tu
    >>> record, tensors = tu.zoo.load_run("private_digits")
    >>> "recipe" in record and "mask" in tensors
    True
    """
    meta = run_info(name)
    path = RUNS_DIR / f"{name}.safetensors"
    if not path.exists():
        raise FileNotFoundError(f"zoo run {name!r} has a description but no results file; "
                                f"rebuild it with `{meta.get('command', '?')}`")
    ckpt = load_checkpoint(path, sha256=meta["sha256"])
    return ckpt.meta["record"], dict(ckpt.state_dict)


def save_run(name: str, record: dict, tensors: dict[str, torch.Tensor], *,
             description: str, command: str) -> dict:
    """Write a run's results to ``runs/NAME.safetensors`` and its description to ``runs/NAME.json``.

    The record (JSON-serialisable) goes into the file's header beside the tensors;
    the description file gets the file's SHA-256, which :func:`load_run` verifies.
    """
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"a run name is a plain identifier such as 'private_digits', got "
                         f"{name!r}")
    path = RUNS_DIR / f"{name}.safetensors"
    save_checkpoint(path, tensors, record=record)
    meta = {"name": name, "description": description, "command": command,
            "sha256": sha256_file(path),
            "built_with": {"torch": torch.__version__, "python": platform.python_version()}}
    (RUNS_DIR / f"{name}.json").write_text(json.dumps(meta, indent=2) + "\n")
    return meta
