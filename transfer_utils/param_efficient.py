"""Parameter-efficient fine-tuning from scratch: LoRA, BitFit and bottleneck adapters (chapter 9).

Each method freezes a pretrained model and trains a small add-on:

- :class:`LoRALinear`, :func:`add_lora`, :func:`merge_lora`: low-rank updates
  ``W0 + (alpha/r) B A`` of chosen ``nn.Linear`` layers (Hu et al. 2021);
- :func:`bitfit`: only the bias terms (Ben Zaken et al. 2022);
- :class:`BottleneckAdapter`, :func:`add_adapters`: small residual MLPs after chosen
  layers (Houlsby et al. 2019);
- :func:`trainable_state`, :func:`load_trainable_state`: save and swap the add-on
  alone, so one frozen base serves many tasks.

The layers here are for teaching; the chapter shows that Hugging Face ``peft``
(imported as ``peft``; this module is named ``param_efficient`` so as not to shadow
it) computes the same thing.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from . import _validate as V

__all__ = [
    "LoRALinear",
    "add_lora",
    "merge_lora",
    "lora_layers",
    "linear_names",
    "bitfit",
    "BottleneckAdapter",
    "AdaptedLayer",
    "add_adapters",
    "trainable_state",
    "load_trainable_state",
]


class LoRALinear(nn.Module):
    """A frozen ``nn.Linear`` plus a trainable low-rank update: ``base(x) + (alpha/rank) x A^T B^T``.

    In matrix form, for one input vector :math:`x`,

    .. math:: h = W_0 x + b + \\frac{\\alpha}{r} B A x,

    with :math:`A` (``lora_A``, shape ``[rank, in_features]``) initialised like an
    ``nn.Linear`` weight (Kaiming-uniform, as Hugging Face ``peft`` does) and
    :math:`B` (``lora_B``, ``[out_features, rank]``) initialised to **zeros**, so
    the layer starts as exactly the pretrained one. Only ``lora_A`` and ``lora_B``
    are trained: ``rank * (in_features + out_features)`` numbers instead of
    ``in_features * out_features``. Chapter 9 derives it.

    Parameters
    ----------
    base : nn.Linear
        The pretrained layer; its parameters are frozen (``requires_grad=False``).
    rank : int
        ``r >= 1``, the rank of the update.
    alpha : float
        ``> 0``; the update is scaled by ``alpha / rank``, so changing ``rank``
        does not change the size of the first steps (keep ``alpha`` fixed and the
        learning rate needs no retuning).

    Examples
    --------
    >>> import torch, transfer_utils as tu
    >>> base = torch.nn.Linear(8, 4)
    >>> lora = tu.LoRALinear(base, rank=2, alpha=4)
    >>> tuple(lora.lora_A.shape), tuple(lora.lora_B.shape), lora.scaling
    ((2, 8), (4, 2), 2.0)
    >>> x = torch.randn(3, 8)
    >>> bool(torch.equal(lora(x), base(x)))  # B = 0: the pretrained function
    True
    """

    def __init__(self, base: nn.Linear, rank: int, alpha: float):
        super().__init__()
        if not isinstance(base, nn.Linear):
            raise TypeError(
                f"LoRALinear wraps an nn.Linear, got {type(base).__name__}; pick a Linear "
                "submodule (tu.linear_names(model) lists them)"
            )
        rank = V.positive_int(rank, "rank", "LoRALinear")
        alpha = V.positive(alpha, "alpha", "LoRALinear")
        self.base, self.rank, self.alpha = base, rank, alpha
        for p in base.parameters():
            p.requires_grad_(False)
        w = base.weight
        self.lora_A = nn.Parameter(torch.empty(rank, base.in_features, device=w.device,
                                               dtype=w.dtype))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, rank, device=w.device,
                                               dtype=w.dtype))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))

    @property
    def scaling(self) -> float:
        """``alpha / rank``, the factor in front of ``B A``."""
        return self.alpha / self.rank

    @property
    def in_features(self) -> int:
        return self.base.in_features

    @property
    def out_features(self) -> int:
        return self.base.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + self.scaling * F.linear(F.linear(x, self.lora_A), self.lora_B)

    def delta_weight(self) -> torch.Tensor:
        """The update ``(alpha/rank) B A`` as a full ``[out, in]`` matrix."""
        return self.scaling * (self.lora_B @ self.lora_A)

    def merged(self) -> nn.Linear:
        """A plain ``nn.Linear`` with weight ``W0 + (alpha/rank) B A`` (same bias, frozen)."""
        base = self.base
        out = nn.Linear(base.in_features, base.out_features, bias=base.bias is not None,
                        device=base.weight.device, dtype=base.weight.dtype)
        with torch.no_grad():
            out.weight.copy_(base.weight + self.delta_weight())
            if base.bias is not None:
                out.bias.copy_(base.bias)
        out.requires_grad_(False)
        return out

    def extra_repr(self) -> str:
        return f"rank={self.rank}, alpha={self.alpha:g}"


def linear_names(model: nn.Module, *suffixes: str, exclude: Iterable[str] = ()) -> list[str]:
    """Names of the model's ``nn.Linear`` submodules, for :func:`add_lora` targets.

    With ``suffixes``, only names equal to one of them or ending in ``"." + suffix``
    (the rule Hugging Face ``peft`` applies to ``target_modules``); names that
    start with a prefix in ``exclude`` (e.g. ``"head"``) are left out.

    Examples
    --------
    >>> import transfer_utils as tu
    >>> lm = tu.CharTransformer(dim=32, depth=2)
    >>> tu.linear_names(lm, "attn.q", "attn.v")
    ['blocks.0.attn.q', 'blocks.0.attn.v', 'blocks.1.attn.q', 'blocks.1.attn.v']
    >>> len(tu.linear_names(lm, exclude=["head"]))  # 6 per block
    12
    """
    exclude = [exclude] if isinstance(exclude, str) else list(exclude)
    names = []
    for name, module in model.named_modules():
        if not isinstance(module, nn.Linear) or _under(name, exclude):
            continue
        if suffixes and not any(name == s or name.endswith("." + s) for s in suffixes):
            continue
        names.append(name)
    return names


def _under(name: str, prefixes: Iterable[str]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def _target_list(targets, fn: str) -> list[str]:
    if isinstance(targets, str):
        targets = [targets]
    try:
        targets = list(targets)
    except TypeError:
        raise TypeError(f"{fn}: targets must be a list of submodule names, got "
                        f"{type(targets).__name__}") from None
    if not targets:
        raise ValueError(f"{fn}: targets is empty; name the layers to adapt, e.g. "
                         "tu.linear_names(model, 'attn.q', 'attn.v')")
    bad = [t for t in targets if not isinstance(t, str)]
    if bad:
        raise TypeError(f"{fn}: targets must be submodule names (str), got {bad[0]!r}")
    return list(dict.fromkeys(targets))


def _resolve_targets(model: nn.Module, targets: list[str], fn: str) -> dict[str, nn.Module]:
    modules = dict(model.named_modules())
    found = {}
    for t in targets:
        if t not in modules or t == "":
            close = difflib.get_close_matches(t, linear_names(model), n=3)
            hint = f"; did you mean {close}?" if close else ""
            raise ValueError(
                f"{fn}: the model has no submodule named {t!r}{hint} Names are those of "
                "model.named_modules(); tu.linear_names(model) lists the Linear layers"
            )
        m = modules[t]
        if isinstance(m, (LoRALinear, AdaptedLayer)):
            raise ValueError(f"{fn}: {t!r} is already adapted ({type(m).__name__}); merge or "
                             "reload the base model before adding another")
        if not isinstance(m, nn.Linear):
            raise TypeError(
                f"{fn}: {t!r} is a {type(m).__name__}, not an nn.Linear; target its Linear "
                f"layers instead: {linear_names(m)[:4] or 'it has none'}"
            )
        found[t] = m
    return found


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, new)


def add_lora(model: nn.Module, targets: str | Iterable[str], rank: int, alpha: float) -> nn.Module:
    """Replace the named ``nn.Linear`` layers by :class:`LoRALinear` and freeze everything else.

    The model is changed in place and returned. Afterwards only the ``lora_A`` and
    ``lora_B`` matrices are trainable, as with Hugging Face ``peft``'s
    ``get_peft_model``; to train a new head as well, unfreeze it afterwards
    (``tu.unfreeze(model, "head")``). Chapter 9 explains the method.

    Parameters
    ----------
    model : nn.Module
    targets : str or list of str
        Submodule names as in ``model.named_modules()``, e.g.
        ``tu.linear_names(model, "attn.q", "attn.v")``.
    rank : int
        Rank ``r >= 1`` of every update.
    alpha : float
        Scale ``> 0``; each update is multiplied by ``alpha / rank``.

    Raises
    ------
    ValueError
        For a name that is not a submodule, a layer that already has LoRA, a
        ``rank < 1`` or an ``alpha <= 0`` (the model is left unchanged).
    TypeError
        For a target that is not an ``nn.Linear``.

    Examples
    --------
    >>> import torch, transfer_utils as tu
    >>> net = tu.MLP(16, hidden=(32,), num_classes=4)
    >>> x = torch.randn(5, 16); before = net(x)
    >>> net = tu.add_lora(net, ["body.fc1"], rank=2, alpha=4)
    >>> bool(torch.equal(net(x), before)), tu.count_parameters(net, trainable_only=True)
    (True, 96)
    """
    targets = _target_list(targets, "add_lora")
    rank = V.positive_int(rank, "rank", "add_lora")
    alpha = V.positive(alpha, "alpha", "add_lora")
    found = _resolve_targets(model, targets, "add_lora")
    model.requires_grad_(False)
    for name, layer in found.items():
        _replace(model, name, LoRALinear(layer, rank, alpha))
    return model


def lora_layers(model: nn.Module) -> dict[str, LoRALinear]:
    """The model's :class:`LoRALinear` layers by name.

    Examples
    --------
    >>> import transfer_utils as tu
    >>> net = tu.add_lora(tu.MLP(16, hidden=(32,)), ["body.fc1", "head"], rank=1, alpha=1)
    >>> list(tu.lora_layers(net))
    ['body.fc1', 'head']
    """
    return {n: m for n, m in model.named_modules() if isinstance(m, LoRALinear)}


def merge_lora(model: nn.Module) -> nn.Module:
    """Fold every LoRA update into its layer: plain ``nn.Linear`` layers with ``W0 + (alpha/r) B A``.

    The merged model computes the same function (up to float rounding) with no
    extra cost at inference; its parameter names are those of the original model
    again. Changed in place and returned; the merged layers are frozen like the
    base weights they replace.

    Examples
    --------
    >>> import torch, transfer_utils as tu
    >>> net = tu.add_lora(tu.MLP(16, hidden=(32,)), ["body.fc1"], rank=2, alpha=4)
    >>> with torch.no_grad():
    ...     _ = net.body.fc1.lora_B.normal_()
    >>> x = torch.randn(3, 16); y = net(x)
    >>> merged = tu.merge_lora(net)
    >>> type(merged.body.fc1).__name__, bool(torch.allclose(merged(x), y, atol=1e-5))
    ('Linear', True)
    """
    layers = lora_layers(model)
    if not layers:
        raise ValueError("merge_lora: the model has no LoRALinear layers (add them with "
                         "tu.add_lora, or it was merged already)")
    if isinstance(model, LoRALinear):
        raise TypeError("merge_lora takes the model that holds LoRA layers; for one layer "
                        "call layer.merged()")
    for name, layer in layers.items():
        _replace(model, name, layer.merged())
    return model


def bitfit(model: nn.Module, *prefixes: str) -> nn.Module:
    """BitFit: freeze every weight, train only the bias terms (and the submodules in ``prefixes``).

    Ben Zaken et al. (2022) showed that the biases alone (under 0.1% of a BERT's
    parameters) adapt a pretrained transformer surprisingly well. ``prefixes``
    keeps whole submodules trainable, typically a new head: ``tu.bitfit(model,
    "head")``. In place; returns the model (chapter 9).

    Examples
    --------
    >>> import transfer_utils as tu
    >>> net = tu.bitfit(tu.MLP(16, hidden=(32,), num_classes=4))
    >>> [n for n, p in net.named_parameters() if p.requires_grad]
    ['body.fc1.bias', 'head.bias']
    """
    names = [n for n, _ in model.named_parameters()]
    if not any(n.endswith("bias") for n in names):
        raise ValueError("bitfit: the model has no bias parameters to train")
    missing = [p for p in prefixes if not any(_under(n, [p]) for n in names)]
    if missing:
        raise ValueError(f"bitfit: no parameters under {missing}; prefixes are submodule "
                         f"names such as {sorted({n.split('.')[0] for n in names})}")
    for name, p in model.named_parameters():
        p.requires_grad_(name.rsplit(".", 1)[-1] == "bias" or _under(name, prefixes))
    return model


class BottleneckAdapter(nn.Module):
    """A residual bottleneck MLP: ``x + up(gelu(down(x)))``, with ``up`` zero at init.

    Houlsby et al. (2019) insert one after each attention and each feed-forward
    sublayer of a frozen transformer; ``2 * dim * bottleneck + dim + bottleneck``
    parameters each. Starting with ``up = 0`` makes it the identity, so training
    starts at the pretrained function (chapter 9).

    Examples
    --------
    >>> import torch, transfer_utils as tu
    >>> ad = tu.BottleneckAdapter(16, bottleneck=4)
    >>> x = torch.randn(2, 16)
    >>> bool(torch.equal(ad(x), x)), tu.count_parameters(ad)
    (True, 148)
    """

    def __init__(self, dim: int, bottleneck: int):
        super().__init__()
        dim = V.positive_int(dim, "dim", "BottleneckAdapter")
        bottleneck = V.positive_int(bottleneck, "bottleneck", "BottleneckAdapter")
        self.down, self.act, self.up = nn.Linear(dim, bottleneck), nn.GELU(), nn.Linear(
            bottleneck, dim)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.up(self.act(self.down(x)))


class AdaptedLayer(nn.Module):
    """A frozen layer followed by a :class:`BottleneckAdapter` on its output (see :func:`add_adapters`)."""

    def __init__(self, base: nn.Linear, bottleneck: int):
        super().__init__()
        self.base = base
        self.adapter = BottleneckAdapter(base.out_features, bottleneck)
        self.adapter.to(device=base.weight.device, dtype=base.weight.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.adapter(self.base(x))


def add_adapters(model: nn.Module, targets: str | Iterable[str], bottleneck: int) -> nn.Module:
    """Put a :class:`BottleneckAdapter` after each named ``nn.Linear`` and freeze everything else.

    For Houlsby et al.'s placement in the book's transformers, target each
    block's attention output and second MLP layer:
    ``tu.linear_names(model, "attn.out", "mlp.fc2")``. In place; returns the model.

    Examples
    --------
    >>> import torch, transfer_utils as tu
    >>> lm = tu.CharTransformer(dim=32, depth=1)
    >>> x = torch.zeros(1, 5, dtype=torch.long); before = lm(x)
    >>> lm = tu.add_adapters(lm, tu.linear_names(lm, "attn.out", "mlp.fc2"), bottleneck=4)
    >>> bool(torch.equal(lm(x), before)), tu.count_parameters(lm, trainable_only=True)
    (True, 584)
    """
    targets = _target_list(targets, "add_adapters")
    bottleneck = V.positive_int(bottleneck, "bottleneck", "add_adapters")
    found = _resolve_targets(model, targets, "add_adapters")
    model.requires_grad_(False)
    for name, layer in found.items():
        _replace(model, name, AdaptedLayer(layer, bottleneck))
    return model


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """A copy of the trainable parameters only: what a parameter-efficient method adds.

    Save it with ``safetensors.torch.save_file``; a few kilobytes instead of the
    whole model. :func:`load_trainable_state` puts it back into a model with the
    same add-on layers, so one frozen base can switch between tasks.

    Examples
    --------
    >>> import transfer_utils as tu
    >>> net = tu.add_lora(tu.MLP(16, hidden=(32,)), ["body.fc1"], rank=2, alpha=4)
    >>> sorted(tu.trainable_state(net))
    ['body.fc1.lora_A', 'body.fc1.lora_B']
    """
    state = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    if not state:
        raise ValueError("trainable_state: the model has no trainable parameters")
    return state


def load_trainable_state(model: nn.Module, state: Mapping[str, torch.Tensor]) -> nn.Module:
    """Copy a :func:`trainable_state` into the model's parameters of the same names (in place).

    Every name must be a parameter of the model with the same shape; the values
    move to that parameter's device. Returns the model.

    Examples
    --------
    >>> import torch, transfer_utils as tu
    >>> net = tu.add_lora(tu.MLP(16, hidden=(32,)), ["body.fc1"], rank=2, alpha=4)
    >>> saved = tu.trainable_state(net)
    >>> with torch.no_grad():
    ...     _ = net.body.fc1.lora_A.zero_()
    >>> bool(torch.equal(tu.load_trainable_state(net, saved).body.fc1.lora_A,
    ...                  saved["body.fc1.lora_A"]))
    True
    """
    params = dict(model.named_parameters())
    missing = [n for n in state if n not in params]
    if missing:
        raise KeyError(f"load_trainable_state: the model has no parameters {missing[:3]}; "
                       "add the same LoRA or adapter layers to it first")
    for name, value in state.items():
        if tuple(value.shape) != tuple(params[name].shape):
            raise ValueError(f"load_trainable_state: {name} has shape {list(value.shape)} in "
                             f"the state but {list(params[name].shape)} in the model")
    with torch.no_grad():
        for name, value in state.items():
            params[name].copy_(value)
    return model
