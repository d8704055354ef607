"""Exercise graders: each ``check_*`` runs a reader's function on cases with known answers.

A grader prints one line starting with "Correct:" when every case passes, and
otherwise raises ``AssertionError`` whose message says what went wrong and ends
with "Hint: ...".
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from .param_efficient import LoRALinear

__all__ = ["check_lora_forward", "check_lora_merge"]


def _fail(what: str, hint: str) -> AssertionError:
    return AssertionError(f"{what} Hint: {hint}")


def _lora_cases() -> list[tuple[str, LoRALinear, torch.Tensor]]:
    """LoRA layers with a non-zero B (at init B = 0 hides every mistake) and their inputs."""
    g = torch.Generator().manual_seed(0)
    cases = []
    for n_in, n_out, rank, alpha, shape in ((6, 4, 2, 4.0, (5,)), (8, 3, 1, 1.0, (2, 7)),
                                            (5, 9, 4, 2.0, (3,)), (10, 10, 3, 12.0, (4,))):
        torch.manual_seed(int(torch.randint(0, 10_000, (1,), generator=g)))
        layer = LoRALinear(nn.Linear(n_in, n_out), rank=rank, alpha=alpha)
        with torch.no_grad():
            layer.lora_B.copy_(torch.randn(n_out, rank, generator=g))
        x = torch.randn(*shape, n_in, generator=g)
        desc = (f"a LoRALinear({n_in} -> {n_out}, rank={rank}, alpha={alpha:g}) on an input "
                f"of shape {list(x.shape)}")
        cases.append((desc, layer, x))
    return cases


def check_lora_forward(fn: Callable[[LoRALinear, torch.Tensor], torch.Tensor]) -> None:
    """Check a reader's LoRA forward pass ``fn(layer, x)`` against ``layer(x)`` (chapter 9).

    ``layer`` is a :class:`transfer_utils.LoRALinear` with attributes ``base``
    (the frozen ``nn.Linear``), ``lora_A`` ``[r, in]``, ``lora_B`` ``[out, r]``,
    ``alpha`` and ``rank``; ``x`` has ``in`` features in its last axis and any
    number of leading axes. The cases use a non-zero ``B``. Common mistakes
    (no scaling, ``alpha`` instead of ``alpha / rank``, a missing bias) get a
    specific hint.

    Examples
    --------
    >>> import transfer_utils as tu
    >>> def forward(layer, x):
    ...     delta = x @ layer.lora_A.T @ layer.lora_B.T
    ...     return layer.base(x) + (layer.alpha / layer.rank) * delta
    >>> tu.check_lora_forward(forward)
    Correct: your LoRA forward pass matches tu.LoRALinear on all 4 layers.
    """
    cases = _lora_cases()
    for desc, layer, x in cases:
        with torch.no_grad():
            want = layer(x)
            delta = layer.lora_B @ layer.lora_A
            try:
                got = fn(layer, x.clone())
            except Exception as e:  # noqa: BLE001 - report any failure to the reader
                raise _fail(f"your function raised {type(e).__name__}: {e} on {desc}.",
                            "x has shape [..., in]; x @ A.T has shape [..., r] and "
                            "(x @ A.T) @ B.T has shape [..., out].") from e
        if not isinstance(got, torch.Tensor):
            raise _fail(f"your function returned a {type(got).__name__}, not a tensor, on "
                        f"{desc}.", "return base(x) + (alpha / rank) * (x @ A.T @ B.T).")
        if got.shape != want.shape:
            raise _fail(f"on {desc} the output should have shape {list(want.shape)} but yours "
                        f"has {list(got.shape)}.",
                        "A is [r, in] and B is [out, r]: use x @ A.T @ B.T (or "
                        "F.linear(F.linear(x, A), B)).")
        got = got.detach()
        if torch.allclose(got, want, atol=1e-5):
            continue
        base = layer.base(x).detach()
        low_rank = x @ delta.T
        hint = "the output is base(x) + (alpha / rank) * (x @ A.T @ B.T)."
        if torch.allclose(got, base + low_rank, atol=1e-5):
            hint = "scale the low-rank term by alpha / rank (you left the scaling out)."
        elif torch.allclose(got, base + layer.alpha * low_rank, atol=1e-5):
            hint = "the scale is alpha / rank, not alpha."
        elif torch.allclose(got, base, atol=1e-5):
            hint = "you returned the frozen layer alone: add the low-rank update."
        elif torch.allclose(got, want - layer.base.bias, atol=1e-5):
            hint = "keep the base layer's bias: call layer.base(x), not x @ W.T."
        elif torch.allclose(got, layer.scaling * low_rank, atol=1e-5):
            hint = "add the frozen layer's output base(x) to the update."
        raise _fail(f"on {desc} your output differs from layer(x) by up to "
                    f"{(got - want).abs().max().item():.4g}.", hint)
    print(f"Correct: your LoRA forward pass matches tu.LoRALinear on all {len(cases)} layers.")


def check_lora_merge(fn: Callable[[LoRALinear], torch.Tensor]) -> None:
    """Check a reader's merge ``fn(layer) -> weight``: ``W0 + (alpha/rank) B A``, shape ``[out, in]``.

    With that weight (and the base bias) a plain ``nn.Linear`` computes what the
    LoRA layer computes, at no extra cost (chapter 9).

    Examples
    --------
    >>> import transfer_utils as tu
    >>> tu.check_lora_merge(lambda l: l.base.weight + l.alpha / l.rank * l.lora_B @ l.lora_A)
    Correct: your merged weights reproduce the LoRA layers' outputs on all 4 layers.
    """
    cases = _lora_cases()
    for desc, layer, _ in cases:
        want = layer.base.weight + layer.scaling * layer.lora_B @ layer.lora_A
        try:
            with torch.no_grad():
                got = fn(layer)
        except Exception as e:  # noqa: BLE001 - report any failure to the reader
            raise _fail(f"your function raised {type(e).__name__}: {e} on {desc}.",
                        "B @ A has shape [out, in], like the base weight.") from e
        if not isinstance(got, torch.Tensor) or got.shape != want.shape:
            shape = list(got.shape) if isinstance(got, torch.Tensor) else type(got).__name__
            raise _fail(f"on {desc} the merged weight should be a tensor of shape "
                        f"{list(want.shape)} but yours is {shape}.",
                        "return W0 + (alpha / rank) * (B @ A), not A @ B or a module.")
        got = got.detach()
        if not torch.allclose(got, want.detach(), atol=1e-5):
            hint = "the merged weight is W0 + (alpha / rank) * (B @ A)."
            with torch.no_grad():
                plain = layer.base.weight + layer.lora_B @ layer.lora_A
            if torch.allclose(got, plain, atol=1e-5):
                hint = "multiply B @ A by alpha / rank before adding it."
            raise _fail(f"on {desc} your merged weight differs from W0 + (alpha/r) B A by up "
                        f"to {(got - want).abs().max().item():.4g}.", hint)
    print(f"Correct: your merged weights reproduce the LoRA layers' outputs on all "
          f"{len(cases)} layers.")
