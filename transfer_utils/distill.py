"""Knowledge distillation: the KD loss and a teacher-to-student training loop (chapter 5)."""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from .runtime import get_device
from .training import History, train_loop

__all__ = ["kd_loss", "distill", "soften"]


def soften(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Softmax with temperature: ``softmax(logits / T)`` over the last dimension."""
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    return F.softmax(logits / temperature, dim=-1)


def kd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    targets: torch.Tensor | None = None,
    *,
    temperature: float = 4.0,
    alpha: float = 0.9,
) -> torch.Tensor:
    r"""The knowledge-distillation loss of Hinton et al. (2015).

    .. math::

        \alpha T^2\,\mathrm{KL}\big(\mathrm{softmax}(t/T)\,\|\,\mathrm{softmax}(s/T)\big)
        + (1-\alpha)\,\mathrm{CE}(s, y)

    with the KL divergence summed over classes and averaged over the batch
    (``F.kl_div(..., reduction="batchmean")``). The ``T**2`` factor keeps the
    gradient of the soft term on the same scale for every temperature. With
    ``targets=None`` only the soft term is used (``alpha`` still scales it).

    Parameters
    ----------
    student_logits, teacher_logits : Tensor ``[batch, classes]``
    targets : Tensor ``[batch]``, optional
        Hard labels for the cross-entropy term.
    temperature : float
        ``T > 0``.
    alpha : float
        Weight of the soft term, in ``[0, 1]``.

    Examples
    --------
    >>> import torch, transfer_utils as tu
    >>> z = torch.randn(4, 10)
    >>> float(tu.kd_loss(z, z))
    0.0
    """
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"student logits {tuple(student_logits.shape)} and teacher logits "
            f"{tuple(teacher_logits.shape)} must have the same shape [batch, classes]"
        )
    if student_logits.dim() != 2:
        raise ValueError(f"logits must be 2-D [batch, classes], got {tuple(student_logits.shape)}")
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    T = float(temperature)
    soft = F.kl_div(
        F.log_softmax(student_logits / T, dim=1),
        F.log_softmax(teacher_logits.detach() / T, dim=1),
        reduction="batchmean",
        log_target=True,
    ) * (T * T)
    if targets is None:
        return alpha * soft
    if targets.dim() != 1 or targets.shape[0] != student_logits.shape[0]:
        raise ValueError(
            f"targets must be 1-D with one label per row ({student_logits.shape[0]}), "
            f"got shape {tuple(targets.shape)}"
        )
    return alpha * soft + (1.0 - alpha) * F.cross_entropy(student_logits, targets)


def distill(
    student: nn.Module,
    teacher: nn.Module,
    loader: Iterable[tuple[torch.Tensor, torch.Tensor]],
    *,
    epochs: int,
    temperature: float = 4.0,
    alpha: float = 0.9,
    use_labels: bool = True,
    optimizer: torch.optim.Optimizer | None = None,
    lr: float = 1e-3,
    val_loader=None,
    early_stopping: int | None = None,
    device: torch.device | str | None = None,
    progress: bool | None = None,
) -> History:
    """Train ``student`` to match ``teacher`` with :func:`kd_loss`.

    The teacher runs in eval mode under ``torch.no_grad()`` (no gradient ever
    reaches it, its weights and BatchNorm statistics stay as they are) and gets
    its previous mode back at the end. With ``use_labels=False`` the loader's
    labels are ignored, so unlabelled transfer data works (pass any placeholder
    labels). Other arguments are those of :func:`transfer_utils.fit`.

    Examples
    --------
    >>> import transfer_utils as tu
    >>> ds = tu.load_digits()
    >>> teacher, student = tu.SmallCNN(), tu.MLP(64, hidden=(32,))
    >>> h = tu.distill(student, teacher, tu.make_loader(ds), epochs=1, progress=False)
    >>> h.epochs
    1
    """
    if student is teacher:
        raise ValueError("student and teacher are the same module; distil into a separate model")
    device = get_device(device)
    teacher_was_training = teacher.training
    teacher.to(device).eval()
    if optimizer is None:
        optimizer = torch.optim.Adam([p for p in student.parameters() if p.requires_grad], lr=lr)

    def step(model: nn.Module, x: torch.Tensor, y: torch.Tensor):
        with torch.no_grad():
            t_logits = teacher(x)
        s_logits = model(x)
        loss = kd_loss(s_logits, t_logits, y if use_labels else None,
                       temperature=temperature, alpha=alpha if use_labels else 1.0)
        return loss, s_logits

    try:
        return train_loop(
            student, loader, step, epochs=epochs, optimizer=optimizer, val_loader=val_loader,
            early_stopping=early_stopping, device=device, progress=progress, desc="distill",
        )
    finally:
        teacher.train(teacher_was_training)
