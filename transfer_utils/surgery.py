"""Model surgery: freezing, weight transfer and per-layer learning rates (chapters 3 and 6)."""

from __future__ import annotations

import types
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import nn

__all__ = [
    "freeze",
    "unfreeze",
    "transfer_weights",
    "TransferReport",
    "param_groups",
    "trainable_summary",
]

_BN_TYPES = (nn.modules.batchnorm._BatchNorm,)


def _matches(name: str, prefix: str) -> bool:
    return prefix == "" or name == prefix or name.startswith(prefix + ".")


def _check_prefixes(model: nn.Module, prefixes: tuple[str, ...]) -> None:
    names = [n for n, _ in model.named_modules()] + [n for n, _ in model.named_parameters()]
    for p in prefixes:
        if not isinstance(p, str):
            raise TypeError(f"prefixes must be strings such as 'body.block1', got {p!r}")
        if not any(_matches(n, p) for n in names):
            top = sorted({n.split(".")[0] for n in names if n})
            raise ValueError(
                f"no module or parameter of {type(model).__name__} is named {p!r}; "
                f"top-level names are {top} (use dotted prefixes such as 'body.block1')"
            )


def _eval_only_train(self: nn.Module, mode: bool = True) -> nn.Module:
    # Installed on frozen BatchNorm layers: model.train() passes through them as eval().
    return nn.Module.train(self, False)


def freeze(model: nn.Module, *prefixes: str, bn_eval: bool = True) -> nn.Module:
    """Stop gradient updates for the parameters under ``prefixes`` (all when none are given).

    With ``bn_eval=True`` the BatchNorm layers under those prefixes are also put in
    eval mode, and stay there even after ``model.train()``: otherwise a "frozen"
    body keeps updating its running statistics on target batches and its outputs
    drift although no weight changes (chapter 3 shows this pitfall).

    Parameters
    ----------
    model : nn.Module
    *prefixes : str
        Dotted name prefixes such as ``"body"`` or ``"body.block1"``.
    bn_eval : bool
        Keep frozen BatchNorm layers in eval mode.

    Returns
    -------
    nn.Module
        The same model, for chaining.

    Examples
    --------
    >>> import transfer_utils as tu
    >>> net = tu.freeze(tu.SmallCNN(), "body")
    >>> tu.trainable_summary(net).startswith("trainable: 650")
    True
    """
    _check_prefixes(model, prefixes)
    prefixes = prefixes or ("",)
    for name, p in model.named_parameters():
        if any(_matches(name, pre) for pre in prefixes):
            p.requires_grad_(False)
    if bn_eval:
        for name, m in model.named_modules():
            if isinstance(m, _BN_TYPES) and any(_matches(name, pre) for pre in prefixes):
                m.train = types.MethodType(_eval_only_train, m)
                nn.Module.train(m, False)
    return model


def unfreeze(model: nn.Module, *prefixes: str) -> nn.Module:
    """Undo :func:`freeze` for the parameters under ``prefixes`` (all when none are given).

    BatchNorm layers there follow ``model.train()`` / ``model.eval()`` again; they
    take the model's current mode.
    """
    _check_prefixes(model, prefixes)
    prefixes = prefixes or ("",)
    for name, p in model.named_parameters():
        if any(_matches(name, pre) for pre in prefixes):
            p.requires_grad_(True)
    for name, m in model.named_modules():
        if any(_matches(name, pre) for pre in prefixes) and "train" in m.__dict__:
            del m.__dict__["train"]
            nn.Module.train(m, model.training)
    return model


@dataclass
class TransferReport:
    """What :func:`transfer_weights` did, tensor by tensor."""

    copied: list[str] = field(default_factory=list)
    skipped_shape: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)

    @property
    def n_copied(self) -> int:
        return len(self.copied)

    def __str__(self) -> str:
        lines = [
            f"copied {len(self.copied)} tensors, skipped {len(self.skipped_shape)} for shape, "
            f"{len(self.missing)} missing in source (left as initialised), "
            f"{len(self.unexpected)} unexpected (source only)"
        ]
        for name, (s, d) in self.skipped_shape.items():
            lines += [f"  shape      {name}",  # two lines: fits a notebook's width
                      f"             source {list(s)}, target {list(d)}"]
        lines += [f"  missing    {n}" for n in self.missing]
        lines += [f"  unexpected {n}" for n in self.unexpected]
        return "\n".join(lines)


def transfer_weights(
    src: nn.Module | Mapping[str, torch.Tensor], dst: nn.Module, *, verbose: bool = False
) -> TransferReport:
    """Copy every parameter and buffer whose name and shape match from ``src`` into ``dst``.

    Everything else is reported, not silently dropped: tensors skipped because the
    shapes differ (with both shapes), target tensors the source lacks (``missing``)
    and source tensors the target lacks (``unexpected``). Copying nothing at all
    is an error: it almost always means the two models name their layers
    differently.

    Parameters
    ----------
    src : nn.Module or state dict
    dst : nn.Module
        Changed in place.
    verbose : bool
        Print the report.

    Examples
    --------
    >>> import transfer_utils as tu
    >>> report = tu.transfer_weights(tu.SmallCNN(num_classes=10), tu.SmallCNN(num_classes=5))
    >>> sorted(report.skipped_shape)
    ['head.bias', 'head.weight']
    """
    src_state = src.state_dict() if isinstance(src, nn.Module) else dict(src)
    if not isinstance(dst, nn.Module):
        raise TypeError(f"dst must be an nn.Module, got {type(dst).__name__}")
    dst_state = dst.state_dict()
    report = TransferReport()
    new_state = {}
    for name, target in dst_state.items():
        if name not in src_state:
            report.missing.append(name)
            continue
        source = src_state[name]
        if tuple(source.shape) != tuple(target.shape):
            report.skipped_shape[name] = (tuple(source.shape), tuple(target.shape))
            continue
        new_state[name] = source.detach().to(device=target.device, dtype=target.dtype)
        report.copied.append(name)
    report.unexpected = [n for n in src_state if n not in dst_state]
    if not report.copied:
        raise ValueError(
            "transfer_weights copied nothing: no tensor has the same name and shape in both "
            f"models (source names start {list(src_state)[:3]}, target names start "
            f"{list(dst_state)[:3]}); check that both use the same architecture family, or "
            "rename the source keys before transferring"
        )
    dst.load_state_dict(new_state, strict=False)
    if verbose:
        print(report)
    return report


def param_groups(
    model: nn.Module, lrs: Mapping[str, float], default_lr: float | None = None
) -> list[dict]:
    """Optimizer parameter groups with one learning rate per name prefix.

    Each trainable parameter goes to the group of the longest prefix that matches
    its name; the rest go to a ``"default"`` group with ``default_lr``. Frozen
    parameters are left out. Pass the result to any ``torch.optim`` optimizer.
    This is how chapter 3 gives a pretrained body a smaller learning rate than a
    new head (discriminative learning rates).

    Parameters
    ----------
    model : nn.Module
    lrs : mapping of str to float
        For example ``{"body": 1e-4, "head": 1e-3}``.
    default_lr : float, optional
        Learning rate of parameters no prefix matches; required if there are any.

    Examples
    --------
    >>> import torch, transfer_utils as tu
    >>> groups = tu.param_groups(tu.SmallCNN(), {"body": 1e-4, "head": 1e-3})
    >>> [(g["name"], g["lr"]) for g in groups]
    [('body', 0.0001), ('head', 0.001)]
    >>> opt = torch.optim.Adam(groups)
    """
    if not isinstance(lrs, Mapping):
        raise TypeError("lrs must be a mapping from name prefix to learning rate")
    for pre, lr in lrs.items():
        if not isinstance(lr, (int, float)) or lr < 0:
            raise ValueError(f"learning rate for {pre!r} must be a non-negative number, got {lr!r}")
    _check_prefixes(model, tuple(lrs))
    buckets: dict[str, list[nn.Parameter]] = {pre: [] for pre in lrs}
    rest: list[nn.Parameter] = []
    rest_names: list[str] = []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        hits = [pre for pre in lrs if _matches(name, pre)]
        if hits:
            buckets[max(hits, key=len)].append(p)
        else:
            rest.append(p)
            rest_names.append(name)
    groups = [{"params": ps, "lr": float(lrs[pre]), "name": pre} for pre, ps in buckets.items() if ps]
    if rest:
        if default_lr is None:
            raise ValueError(
                f"parameters {rest_names[:4]} match no prefix in lrs; add a prefix for them "
                "or pass default_lr"
            )
        groups.append({"params": rest, "lr": float(default_lr), "name": "default"})
    if not groups:
        raise ValueError("the model has no trainable parameters: unfreeze something first")
    return groups


def trainable_summary(model: nn.Module) -> str:
    """One line: trainable versus total parameters, e.g. ``trainable: 650 / 24,042 (2.7%)``."""
    total = sum(p.numel() for p in model.parameters())
    train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    pct = 100.0 * train / total if total else 0.0
    return f"trainable: {train:,} / {total:,} ({pct:.1f}%)"
