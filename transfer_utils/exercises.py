"""Graders for the book's exercises: each ``check_*`` prints one "Correct: ..." line or raises.

A grader runs the reader's function on a few cases with known answers. When
one fails it raises ``AssertionError`` whose message says which case failed,
what was expected and what came back, and ends with "Hint: ...".
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .adapt import coral_loss

__all__ = ["check_coral_loss"]


def _fail(msg: str, hint: str) -> AssertionError:
    return AssertionError(f"{msg}\nHint: {hint}")


def check_coral_loss(fn: Callable) -> None:
    """Check a reader's Deep CORAL loss ``fn(source_features, target_features)`` (chapter 10).

    It must return :math:`\\lVert C_S - C_T \\rVert_F^2 / (4 d^2)` with unbiased
    covariances (divided by ``n - 1``), as a scalar tensor that gradients flow
    through, for batches of different sizes. Prints one line starting with
    "Correct:" when all cases pass; raises ``AssertionError`` ending with a hint
    otherwise.

    Examples
    --------
    >>> import transfer_utils as tu
    >>> tu.check_coral_loss(tu.coral_loss)
    Correct: your CORAL loss matches the reference on 4 cases and passes gradients.
    """
    g = torch.Generator().manual_seed(0)
    cases = [
        ("two points per domain in 2-D (covariances [[2, 0], [0, 0]] and [[0, 0], [0, 2]])",
         torch.tensor([[0.0, 0.0], [2.0, 0.0]]), torch.tensor([[0.0, 0.0], [0.0, 2.0]])),
        ("a target that is the source moved by a constant (same covariance)",
         (s := torch.randn(20, 3, generator=g, dtype=torch.float64)), s + 5.0),
        ("16 source and 24 target rows of width 5",
         torch.randn(16, 5, generator=g, dtype=torch.float64),
         2 * torch.randn(24, 5, generator=g, dtype=torch.float64)),
        ("8 source and 8 target rows of width 12",
         torch.randn(8, 12, generator=g, dtype=torch.float64),
         torch.randn(8, 12, generator=g, dtype=torch.float64) @ torch.randn(
             12, 12, generator=g, dtype=torch.float64)),
    ]
    for what, xs, xt in cases:
        want = float(coral_loss(xs, xt))
        try:
            got = fn(xs.clone(), xt.clone())
        except Exception as e:  # noqa: BLE001 - report any failure to the reader
            raise _fail(f"On {what} your function raised {type(e).__name__}: {e}",
                        "center each feature on its own batch mean, then "
                        "C = centred.T @ centred / (n - 1); both batches may differ in n.") from e
        if not isinstance(got, torch.Tensor) or got.numel() != 1:
            raise _fail(f"On {what} your function returned {type(got).__name__} "
                        f"{getattr(got, 'shape', '')}, not a scalar tensor",
                        "return a 0-d tensor (the sum of squared differences, scaled) so "
                        "that it can be added to the cross-entropy and back-propagated.")
        value = float(got)
        if abs(value - want) <= 1e-6 * max(1.0, abs(want)):
            continue
        hint = ("CORAL is the squared Frobenius norm of C_S - C_T, divided by 4 d^2, with "
                "each covariance computed on its own batch.")
        for slip, wrong in _slips(xs, xt).items():
            if abs(value - wrong) <= 1e-6 * max(1.0, abs(wrong)):
                hint = slip
                break
        raise _fail(f"On {what} the CORAL loss should be {want:.6g} but your function "
                    f"returned {value:.6g}", hint)
    xs = torch.randn(10, 4, generator=g, dtype=torch.float64, requires_grad=True)
    xt = torch.randn(12, 4, generator=g, dtype=torch.float64)
    out = fn(xs, xt)
    if not isinstance(out, torch.Tensor) or not out.requires_grad:
        raise _fail("The loss does not carry gradients back to the source features",
                    "compute it with torch operations on the tensors you are given, without "
                    ".detach(), .item(), .numpy() or torch.no_grad().")
    out.backward()
    xs2 = xs.detach().clone().requires_grad_(True)
    coral_loss(xs2, xt).backward()
    if xs.grad is None or not torch.allclose(xs.grad, xs2.grad, atol=1e-8):
        raise _fail("The gradient of your loss with respect to the source features differs "
                    "from the reference",
                    "keep the whole computation in torch, from the features to the scalar.")
    print(f"Correct: your CORAL loss matches the reference on {len(cases)} cases and passes "
          "gradients.")


def _slips(xs: torch.Tensor, xt: torch.Tensor) -> dict[str, float]:
    """What common slips return on ``xs``, ``xt``, keyed by the hint that names them."""
    d = xs.shape[1]

    def cov(f: torch.Tensor, ddof: int) -> torch.Tensor:
        c = f - f.mean(0)
        return c.T @ c / (len(f) - ddof)

    sq = float(((cov(xs, 1) - cov(xt, 1)) ** 2).sum())
    biased = float(((cov(xs, 0) - cov(xt, 0)) ** 2).sum()) / (4 * d * d)
    return {
        "you forgot to divide by 4 d^2 (d = the feature width).": sq,
        "you took the Frobenius norm; CORAL uses its square, ||C_S - C_T||_F ** 2.":
            sq ** 0.5 / (4 * d * d),
        "use the unbiased covariance: divide by n - 1, not n.": biased,
        "divide by 4 d^2, not by 4 d.": sq / (4 * d),
    }
