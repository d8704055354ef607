"""Model surgery: freezing, weight transfer, per-layer learning rates, first-layer and BatchNorm surgery.

Core layer (chapters 3 and 6): :func:`freeze` keeps frozen BatchNorm in eval
mode, :func:`transfer_weights` reports what it copied, :func:`param_groups` gives
per-prefix learning rates, :func:`adapt_first_conv` changes the input channels of
a pretrained first layer, :func:`rename_keys` maps state-dict keys, and
:func:`fresh_copy` re-initialises a model for a from-scratch baseline.
"""

from __future__ import annotations

import copy
import types
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import nn

from . import _validate as V

__all__ = [
    "freeze",
    "unfreeze",
    "has_prefix",
    "batchnorm_layers",
    "transfer_weights",
    "TransferReport",
    "param_groups",
    "trainable_summary",
    "adapt_first_conv",
    "rename_keys",
    "fresh_copy",
]

_BN_TYPES = (nn.modules.batchnorm._BatchNorm,)


def has_prefix(name: str, prefix: str) -> bool:
    """True if the dotted ``name`` is ``prefix`` or lies under it (``""`` matches everything).

    Examples
    --------
    >>> has_prefix("body.block1.conv.weight", "body.block1"), has_prefix("body.block10", "body.block1")
    (True, False)
    """
    return prefix == "" or name == prefix or name.startswith(prefix + ".")


def batchnorm_layers(model: nn.Module) -> list[nn.Module]:
    """Every BatchNorm layer (1-D, 2-D, 3-D, SyncBatchNorm) of ``model``, in module order."""
    return [m for m in model.modules() if isinstance(m, _BN_TYPES)]


def _require_prefixes(model: nn.Module, prefixes: tuple[str, ...]) -> None:
    names = [n for n, _ in model.named_modules()] + [n for n, _ in model.named_parameters()]
    for p in prefixes:
        if not isinstance(p, str):
            raise TypeError(f"prefixes must be strings such as 'body.block1', got {p!r}")
        if not any(has_prefix(n, p) for n in names):
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
    _require_prefixes(model, prefixes)
    prefixes = prefixes or ("",)
    for name, p in model.named_parameters():
        if any(has_prefix(name, pre) for pre in prefixes):
            p.requires_grad_(False)
    if bn_eval:
        for name, m in model.named_modules():
            if isinstance(m, _BN_TYPES) and any(has_prefix(name, pre) for pre in prefixes):
                m.train = types.MethodType(_eval_only_train, m)
                nn.Module.train(m, False)
    return model


def unfreeze(model: nn.Module, *prefixes: str) -> nn.Module:
    """Undo :func:`freeze` for the parameters under ``prefixes`` (all when none are given).

    BatchNorm layers there follow ``model.train()`` / ``model.eval()`` again; they
    take the model's current mode.
    """
    _require_prefixes(model, prefixes)
    prefixes = prefixes or ("",)
    for name, p in model.named_parameters():
        if any(has_prefix(name, pre) for pre in prefixes):
            p.requires_grad_(True)
    for name, m in model.named_modules():
        if any(has_prefix(name, pre) for pre in prefixes) and "train" in m.__dict__:
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
    src: nn.Module | Mapping[str, torch.Tensor], dst: nn.Module, *, verbose: bool = False,
    allow_partial: bool = False,
) -> TransferReport:
    """Copy every parameter and buffer whose name and shape match from ``src`` into ``dst``.

    Everything else is reported, not silently dropped: tensors skipped because the
    shapes differ (with both shapes), target tensors the source lacks (``missing``)
    and source tensors the target lacks (``unexpected``). Copying nothing at all
    is an error: it almost always means the two models name their layers
    differently. So is copying only biases and buffers (BatchNorm statistics)
    without a single weight, unless ``allow_partial=True``: what a network learned
    lives in its weights.

    Parameters
    ----------
    src : nn.Module or state dict
        The source; for a file, load it first: ``tu.load_checkpoint(path).state_dict``.
    dst : nn.Module
        Changed in place.
    verbose : bool
        Print the report.
    allow_partial : bool
        Accept a transfer that copies no weight (only biases or buffers).

    Examples
    --------
    >>> import transfer_utils as tu
    >>> report = tu.transfer_weights(tu.SmallCNN(num_classes=10), tu.SmallCNN(num_classes=5))
    >>> sorted(report.skipped_shape)
    ['head.bias', 'head.weight']
    """
    if isinstance(src, (str, bytes)) or hasattr(src, "__fspath__"):
        raise TypeError(
            f"transfer_weights takes a model or a state dict, got the path {str(src)!r}; load "
            "it first: tu.transfer_weights(tu.load_checkpoint(path).state_dict, model)"
        )
    if isinstance(src, nn.Module):
        src_state = src.state_dict()
    elif isinstance(src, Mapping):
        src_state = dict(src)
    elif isinstance(getattr(src, "state_dict", None), Mapping):
        raise TypeError(
            f"transfer_weights got a {type(src).__name__} (a loaded checkpoint); pass its "
            "tensors: tu.transfer_weights(ckpt.state_dict, model)"
        )
    else:
        raise TypeError(f"src must be an nn.Module or a state dict, got {type(src).__name__}")
    bad = [k for k, v in src_state.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise TypeError(f"src holds non-tensor values (e.g. {bad[0]!r}); pass a state dict of "
                        "tensors such as model.state_dict()")
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
            "rename the source keys before transferring (tu.rename_keys)"
        )
    params = dict(dst.named_parameters())
    weights = [n for n in report.copied if n in params and not n.endswith("bias")]
    if not weights and not allow_partial:
        raise ValueError(
            f"transfer_weights would copy only biases and buffers ({report.copied[:4]}), no "
            f"weight: {len(report.skipped_shape)} tensors differ in shape and "
            f"{len(report.missing)} are missing in the source, so the two models hardly "
            "match; check the architecture, or pass allow_partial=True if this is intended"
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
        V.nonneg(lr, f"the learning rate for {pre!r}", "param_groups")
    if default_lr is not None:
        V.nonneg(default_lr, "default_lr", "param_groups")
    _require_prefixes(model, tuple(lrs))
    buckets: dict[str, list[nn.Parameter]] = {pre: [] for pre in lrs}
    rest: list[nn.Parameter] = []
    rest_names: list[str] = []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        hits = [pre for pre in lrs if has_prefix(name, pre)]
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


_CONV_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


def _first_conv(model: nn.Module) -> tuple[nn.Module, str, nn.Module]:
    for name, module in model.named_modules():
        if isinstance(module, _CONV_TYPES):
            parent_name, _, attr = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            return parent, attr, module
    raise ValueError(
        f"{type(model).__name__} has no Conv1d/Conv2d/Conv3d layer: adapt_first_conv changes "
        "the input channels of a convolutional network; for an MLP change in_features instead"
    )


def _adapted_conv(conv: nn.Module, in_channels: int, reduce: str) -> nn.Module:
    if conv.groups != 1:
        raise ValueError(
            f"adapt_first_conv handles ordinary convolutions (groups=1), got groups={conv.groups}"
        )
    w = conv.weight.detach()
    if reduce == "sum":
        # each new channel gets sum_c W_c / in_channels: an input whose channels are all equal
        # (a grey image copied into every channel) gives exactly the old response
        base = w.sum(1, keepdim=True) / in_channels
    else:
        base = w.mean(1, keepdim=True)
    new = type(conv)(
        in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride,
        padding=conv.padding, dilation=conv.dilation, groups=1, bias=conv.bias is not None,
        padding_mode=conv.padding_mode,
    ).to(device=w.device, dtype=w.dtype)
    with torch.no_grad():
        new.weight.copy_(base.expand_as(new.weight))
        if conv.bias is not None:
            new.bias.copy_(conv.bias.detach())
    new.weight.requires_grad_(conv.weight.requires_grad)
    if conv.bias is not None:
        new.bias.requires_grad_(conv.bias.requires_grad)
    return new


def adapt_first_conv(model_or_conv: nn.Module, in_channels: int, *, reduce: str = "sum"):
    """Change the number of input channels of a network's first convolution, keeping its filters.

    A model pretrained on RGB images has a first layer with weights
    ``[out, 3, kh, kw]``. For greyscale inputs, chapter 6 replaces it by a layer with
    one input channel whose filter is the *sum* of the three colour filters: a grey
    image copied into R, G and B gives ``sum_c W_c * x``, so the new layer gives the
    same response to the grey image alone. In general every new channel gets
    ``sum_c W_c / in_channels`` (``reduce="sum"``, the default), which keeps the
    response to any input whose channels are equal, also when going from 1 to 3
    channels. ``reduce="mean"`` gives every new channel ``mean_c W_c`` instead (the
    response shrinks by ``old_channels / in_channels``; BatchNorm after the layer
    absorbs a scale, but nothing else does).

    Parameters
    ----------
    model_or_conv : nn.Module
        A ``Conv1d``/``Conv2d``/``Conv3d`` (a new layer is returned, the old one is
        left unchanged) or a model (its first convolution, in ``named_modules``
        order, is replaced in place and the model is returned).
    in_channels : int
        Input channels of the new layer.
    reduce : {"sum", "mean"}

    Examples
    --------
    >>> import torch, torchvision, transfer_utils as tu
    >>> net = torchvision.models.resnet18(weights=None)
    >>> grey = torch.rand(2, 1, 32, 32)
    >>> before = net.eval()(grey.expand(-1, 3, -1, -1))
    >>> after = tu.adapt_first_conv(net, 1)(grey)
    >>> net.conv1.weight.shape[1], torch.allclose(before, after, atol=1e-5)
    (1, True)
    """
    V.positive_int(in_channels, "in_channels", "adapt_first_conv")
    V.one_of(reduce, "reduce", ("sum", "mean"), "adapt_first_conv")
    if not isinstance(model_or_conv, nn.Module):
        raise TypeError(f"expected a conv layer or a model, got {type(model_or_conv).__name__}")
    if isinstance(model_or_conv, _CONV_TYPES):
        return _adapted_conv(model_or_conv, in_channels, reduce)
    parent, attr, conv = _first_conv(model_or_conv)
    new = _adapted_conv(conv, in_channels, reduce)
    setattr(parent, attr, new)  # also right for nn.Sequential children named "0", "1", ...
    config = getattr(model_or_conv, "config", None)
    if isinstance(config, dict) and "in_channels" in config:
        config["in_channels"] = in_channels
    return model_or_conv


def rename_keys(state_dict: Mapping[str, torch.Tensor], mapping: Mapping[str, str]) -> dict:
    """New state dict with key prefixes renamed, e.g. ``{"module.": ""}`` after DataParallel.

    Each old prefix in ``mapping`` must match at least one key; a prefix that
    matches nothing raises, so a typo cannot silently skip a layer (the bug that
    ``strict=False`` hides in chapter 6). The longest matching prefix wins.

    Examples
    --------
    >>> import torch, transfer_utils as tu
    >>> sd = {"module.fc.weight": torch.zeros(1), "module.fc.bias": torch.zeros(1)}
    >>> sorted(tu.rename_keys(sd, {"module.": ""}))
    ['fc.bias', 'fc.weight']
    """
    if not isinstance(mapping, Mapping) or not mapping:
        raise ValueError("mapping must be a non-empty {old_prefix: new_prefix} dict")
    used = dict.fromkeys(mapping, 0)
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        hits = [old for old in mapping if key.startswith(old)]
        new_key = key
        if hits:
            old = max(hits, key=len)
            used[old] += 1
            new_key = mapping[old] + key[len(old):]
        if new_key in out:
            raise ValueError(f"renaming gives the key {new_key!r} twice; check the mapping")
        out[new_key] = value
    unused = [old for old, n in used.items() if n == 0]
    if unused:
        raise ValueError(
            f"prefixes {unused} match no key; keys start like {list(state_dict)[:4]}"
        )
    return out


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
