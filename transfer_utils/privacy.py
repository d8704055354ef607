"""Privacy: what a trained model leaks about its training examples, and training that bounds it (chapter 7).

Methods layer. Membership-inference attacks and their metrics:
:func:`membership_scores` (the logit-scaled confidence in the true label),
:func:`threshold_attack` (one global threshold set on held-out data, Yeom et al.
2018 and Salem et al. 2019), :func:`lira` (the likelihood-ratio attack of
Carlini et al. 2022 with shadow models), and :func:`attack_metrics` (ROC, AUC,
true-positive rate at a low false-positive rate, bootstrap intervals inside
[0, 1]). Differentially private training with Opacus: :func:`make_private_model`
(BatchNorm replaced by GroupNorm, checked by Opacus' validator) and
:func:`fit_private` (DP-SGD: per-example clipping, Gaussian noise, the
accountant's epsilon at a stated delta).
"""

from __future__ import annotations

import copy
import functools
import math
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from . import _validate as V
from .data import make_loader, num_classes
from .models import head_name
from .runtime import get_device, seed_everything
from .surgery import freeze, fresh_copy
from .training import evaluate, fit, predict

__all__ = ["membership_inference", "membership_scores", "logit_confidence", "attack_roc",
           "attack_auc", "tpr_at_fpr", "attack_metrics", "AttackMetrics", "threshold_attack",
           "balanced_membership", "lira", "make_private_model", "fit_private",
           "NotPrivatizableError", "privacy_sweep", "SWEEP_METHODS"]

_BN_TYPES = (nn.modules.batchnorm._BatchNorm,)
# RDP orders for Opacus' RDP accountant: integers only. Any set of orders gives a valid
# (epsilon, delta) bound; Opacus' default adds fractional orders, which tighten epsilon by a
# few per cent and cost seconds per evaluation (calibrating the noise evaluates it ~20 times).
RDP_ORDERS = [*range(2, 64), 80, 128, 256]


# --------------------------------------------------------------------------- scores


def logit_confidence(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    r"""The logit-scaled confidence in the true label, :math:`\log\frac{p_y}{1-p_y}`, per example.

    Computed stably as :math:`z_y - \log\sum_{j\ne y} e^{z_j}` from the logits
    ``z``, so confidences of 0.999999 and 0.9999999 stay apart instead of both
    rounding to 1.0. Carlini et al. (2022) use this scaling because it makes the
    scores of one example across retrained models close to Gaussian (chapter 7).

    Examples
    --------
    >>> import torch, transfer_utils as tu
    >>> z = torch.tensor([[2.0, 0.0], [0.0, 0.0]])
    >>> [round(v, 4) for v in tu.logit_confidence(z, torch.tensor([0, 1])).tolist()]
    [2.0, 0.0]
    """
    z = torch.as_tensor(logits).detach().to("cpu", torch.float64)
    y = torch.as_tensor(labels).detach().to("cpu")
    if z.dim() != 2 or z.shape[1] < 2:
        raise ValueError(f"logits must be [n, classes] with at least 2 classes, got "
                         f"{tuple(z.shape)}")
    if y.dim() != 1 or y.shape[0] != z.shape[0]:
        raise ValueError(f"labels must be [n] with n = {z.shape[0]} (one per row of logits), "
                         f"got {tuple(y.shape)}")
    y = y.long()
    if len(y) and (int(y.min()) < 0 or int(y.max()) >= z.shape[1]):
        raise ValueError(f"labels must lie in [0, {z.shape[1] - 1}], got {int(y.min())}.."
                         f"{int(y.max())}")
    zy = z.gather(1, y[:, None])[:, 0]
    others = z.scatter(1, y[:, None], -math.inf)
    return zy - torch.logsumexp(others, 1)


def membership_scores(
    model: nn.Module, data, *, device: str | torch.device | None = None
) -> torch.Tensor:
    """Membership score of every example of ``data`` under ``model``: high means "seen in training".

    The score is :func:`logit_confidence` of the model's logits (eval mode, no
    gradients), a float64 tensor ``[len(data)]``. Every attack of chapter 7
    starts from it: a model is more confident on the examples it was trained on.

    Examples
    --------
    >>> import transfer_utils as tu
    >>> s = tu.membership_scores(tu.SmallCNN(), tu.few_shot(tu.load_digits(), 2, seed=0))
    >>> tuple(s.shape)
    (20,)
    """
    if len(data) == 0:
        raise ValueError("membership_scores: data holds no examples")
    logits, y = predict(model, make_loader(data, 512), device=device)
    return logit_confidence(logits, y)


# --------------------------------------------------------------------------- metrics


def _scores(a, name: str) -> np.ndarray:
    x = np.asarray(a.detach().cpu() if isinstance(a, torch.Tensor) else a, dtype=np.float64)
    x = x.reshape(-1)
    if x.size == 0:
        raise ValueError(f"{name} holds no scores: an attack needs members and non-members")
    if not np.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or inf; membership scores must be finite")
    return x


def attack_roc(member_scores, nonmember_scores) -> tuple[np.ndarray, np.ndarray]:
    """ROC of the attack "member if score >= t" over every threshold ``t``: ``(fpr, tpr)``.

    The curve runs from ``(0, 0)`` (threshold above every score) to ``(1, 1)``;
    tied scores move both rates in one step. The false-positive rate is the
    fraction of non-members called members, the true-positive rate the fraction
    of members found (chapter 7 plots both on log axes, as Carlini et al. 2022
    recommend, because an attack matters when it is right at a low FPR).

    Examples
    --------
    >>> import transfer_utils as tu
    >>> fpr, tpr = tu.attack_roc([3.0, 2.0], [1.0, 2.0])
    >>> fpr.tolist(), tpr.tolist()
    ([0.0, 0.0, 0.5, 1.0], [0.0, 0.5, 1.0, 1.0])
    """
    m = np.sort(_scores(member_scores, "member_scores"))
    n = np.sort(_scores(nonmember_scores, "nonmember_scores"))
    thresholds = np.unique(np.concatenate([m, n]))[::-1]
    tpr = (len(m) - np.searchsorted(m, thresholds, side="left")) / len(m)
    fpr = (len(n) - np.searchsorted(n, thresholds, side="left")) / len(n)
    return np.r_[0.0, fpr], np.r_[0.0, tpr]


def attack_auc(member_scores, nonmember_scores) -> float:
    """Area under the attack's ROC: P(member's score > non-member's), ties counted as one half.

    0.5 means the scores tell nothing; 1.0 that every member scores above every
    non-member. It equals scikit-learn's ``roc_auc_score`` on the same scores.

    Examples
    --------
    >>> import transfer_utils as tu
    >>> tu.attack_auc([3.0, 2.0], [1.0, 2.0])
    0.875
    """
    fpr, tpr = attack_roc(member_scores, nonmember_scores)
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))


def tpr_at_fpr(member_scores, nonmember_scores, fpr: float) -> float:
    """The highest true-positive rate of a threshold whose false-positive rate is at most ``fpr``.

    With ``n`` non-members the smallest non-zero false-positive rate is ``1/n``;
    below that this is the rate of members scoring above every non-member.

    Examples
    --------
    >>> import numpy as np, transfer_utils as tu
    >>> nonmembers = np.arange(1000.0)            # scores 0..999
    >>> members = np.arange(950.0, 1050.0)        # 100 scores 950..1049
    >>> tu.tpr_at_fpr(members, nonmembers, 0.01)  # threshold 990: 10 false positives
    0.6
    """
    V.probability(fpr, "fpr", "tpr_at_fpr")
    f, t = attack_roc(member_scores, nonmember_scores)
    return float(t[f <= fpr + 1e-12].max())


@dataclass(frozen=True)
class AttackMetrics:
    """How well a membership-inference score separates members from non-members.

    ``auc`` and ``tpr[fpr]`` are point estimates; ``auc_ci`` and ``tpr_ci[fpr]``
    are 95% percentile-bootstrap intervals (always inside [0, 1]); ``roc`` is the
    ``(fpr, tpr)`` curve; ``min_fpr = 1 / n_nonmembers`` is the smallest
    false-positive rate the data can resolve.
    """

    auc: float
    auc_ci: tuple[float, float]
    tpr: dict
    tpr_ci: dict
    roc: tuple[np.ndarray, np.ndarray] = field(repr=False)
    n_members: int
    n_nonmembers: int

    @property
    def min_fpr(self) -> float:
        return 1.0 / self.n_nonmembers

    def row(self) -> dict[str, str]:
        """Table cells: AUC and each TPR with its 95% interval, as text."""
        out = {"AUC [95% CI]": f"{self.auc:.3f} [{self.auc_ci[0]:.3f}, {self.auc_ci[1]:.3f}]"}
        for f in self.tpr:
            lo, hi = self.tpr_ci[f]
            out[f"TPR at {f:.1%} FPR [95% CI]"] = (
                f"{self.tpr[f]:.1%} [{lo:.1%}, {hi:.1%}]")
        return out


def attack_metrics(
    scores,
    members,
    *,
    fprs: Sequence[float] = (0.01, 0.001),
    groups=None,
    n_boot: int = 1000,
    seed: int = 0,
) -> AttackMetrics:
    """ROC, AUC and true-positive rate at low false-positive rates of an attack, with intervals.

    ``scores`` are attack scores (higher = "member") and ``members`` a boolean
    array of the same shape saying which were really in the training set; both
    are flattened, so a ``[models, examples]`` grid of :func:`lira` scores works
    directly. Intervals are 95% percentile bootstraps, so they stay inside
    [0, 1]; with ``groups`` (same shape, e.g. the example index of each score)
    whole groups are resampled, which keeps the dependence between the scores
    of one example under several models (chapter 7).

    Examples
    --------
    >>> import numpy as np, transfer_utils as tu
    >>> rng = np.random.default_rng(0)
    >>> s = np.r_[rng.normal(1, 1, 500), rng.normal(0, 1, 500)]
    >>> m = tu.attack_metrics(s, np.r_[np.ones(500), np.zeros(500)] > 0, n_boot=200)
    >>> 0.7 < m.auc < 0.8 and m.auc_ci[0] < m.auc < m.auc_ci[1]
    True
    """
    s = _scores(scores, "scores")
    mem = np.asarray(members.cpu() if isinstance(members, torch.Tensor) else members)
    if mem.size != s.size:
        raise ValueError(f"members must say, for each of the {s.size} scores, whether it is a "
                         f"member; got {mem.size} values")
    if mem.dtype != bool:
        if not np.isin(mem, (0, 1)).all():
            raise ValueError("members must be booleans (or 0/1): True for a training example")
        mem = mem.astype(bool)
    mem = mem.reshape(-1)
    if mem.all() or not mem.any():
        raise ValueError("an attack needs both members and non-members; members is all "
                         f"{bool(mem[0])}")
    fprs = [V.probability(f, "each fpr", "attack_metrics") for f in fprs]
    n_boot = V.positive_int(n_boot, "n_boot", "attack_metrics")
    if groups is None:
        g = np.arange(s.size)
    else:
        g = np.asarray(groups.cpu() if isinstance(groups, torch.Tensor) else groups).reshape(-1)
        if g.size != s.size:
            raise ValueError(f"groups must give one group per score ({s.size}), got {g.size}")

    def measure(sc, mm):
        f, t = attack_roc(sc[mm], sc[~mm])
        auc = float(np.sum(np.diff(f) * (t[1:] + t[:-1]) / 2))
        return [auc, *(float(t[f <= x + 1e-12].max()) for x in fprs)]

    point = measure(s, mem)
    ids, inverse = np.unique(g, return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    counts = np.bincount(inverse)
    starts = np.r_[0, np.cumsum(counts)]
    if (counts == counts[0]).all():  # equal groups (a models x examples grid): one gather
        members_of = order.reshape(len(ids), counts[0])
    else:
        members_of = [order[starts[i]:starts[i + 1]] for i in range(len(ids))]
    rng = np.random.default_rng(V.seed_value(seed, "attack_metrics"))
    boot = []
    for _ in range(n_boot):
        pick = rng.integers(0, len(ids), len(ids))
        if isinstance(members_of, np.ndarray):
            idx = members_of[pick].ravel()
        else:
            idx = np.concatenate([members_of[i] for i in pick])
        mm = mem[idx]
        if mm.all() or not mm.any():
            continue
        boot.append(measure(s[idx], mm))
    lo, hi = np.percentile(np.asarray(boot), [2.5, 97.5], axis=0)
    return AttackMetrics(
        auc=point[0], auc_ci=(float(lo[0]), float(hi[0])),
        tpr={f: point[1 + i] for i, f in enumerate(fprs)},
        tpr_ci={f: (float(lo[1 + i]), float(hi[1 + i])) for i, f in enumerate(fprs)},
        roc=attack_roc(s[mem], s[~mem]), n_members=int(mem.sum()),
        n_nonmembers=int((~mem).sum()),
    )


# --------------------------------------------------------------------------- attacks


def threshold_attack(member_scores, nonmember_scores, reference_scores, *,
                     fpr: float = 0.01) -> dict:
    """The confidence-threshold attack with its threshold set on held-out data (Yeom et al. 2018).

    The attacker knows ``reference_scores`` of examples that were certainly not
    in the training set (held-out data; Salem et al. 2019 even use random
    inputs) and calls "member" every example scoring above the value that only
    a fraction ``fpr`` of them exceed. The threshold is fixed before the
    evaluation sets are seen, so the false-positive rate it reaches on them is
    measured, not assumed.

    Returns
    -------
    dict
        ``{"threshold", "tpr", "fpr", "advantage"}`` on the evaluation sets
        (advantage = tpr - fpr, Yeom et al.'s membership advantage).

    Examples
    --------
    >>> import numpy as np, transfer_utils as tu
    >>> r = tu.threshold_attack([5.0, 0.5], [0.0, 2.0], np.arange(100.0) / 100, fpr=0.1)
    >>> r["threshold"], r["tpr"], r["fpr"]
    (0.9, 0.5, 0.5)
    """
    V.probability(fpr, "fpr", "threshold_attack")
    m = _scores(member_scores, "member_scores")
    n = _scores(nonmember_scores, "nonmember_scores")
    ref = _scores(reference_scores, "reference_scores")
    t = float(np.quantile(ref, 1.0 - fpr, method="higher"))
    tpr, f = float((m > t).mean()), float((n > t).mean())
    return {"threshold": t, "tpr": tpr, "fpr": f, "advantage": tpr - f}


def balanced_membership(n_examples: int, n_models: int, *, seed: int) -> torch.Tensor:
    """Which examples each of ``n_models`` shadow models trains on: each example in exactly half.

    Returns a boolean ``[n_models, n_examples]`` mask. Carlini et al. (2022)
    train their shadow models this way, so every example has as many models
    that saw it as models that did not: the two distributions :func:`lira`
    compares.

    Examples
    --------
    >>> import transfer_utils as tu
    >>> m = tu.balanced_membership(10, 4, seed=0)
    >>> tuple(m.shape), m.sum(0).tolist() == [2] * 10
    ((4, 10), True)
    """
    n_examples = V.positive_int(n_examples, "n_examples", "balanced_membership")
    n_models = V.positive_int(n_models, "n_models", "balanced_membership")
    if n_models < 2 or n_models % 2:
        raise ValueError(f"balanced_membership: n_models must be even and at least 2 (half of "
                         f"them see each example), got {n_models}")
    g = torch.Generator().manual_seed(V.seed_value(seed, "balanced_membership"))
    order = torch.rand(n_models, n_examples, generator=g).argsort(0)
    return order < n_models // 2


def lira(scores, in_mask, *, online: bool = True) -> np.ndarray:
    r"""Likelihood-ratio membership attack (LiRA, Carlini et al. 2022), leaving one model out.

    ``scores[m, i]`` is model ``m``'s :func:`membership_scores` on pool example
    ``i`` and ``in_mask[m, i]`` says whether ``m`` trained on it
    (:func:`balanced_membership`). Each model in turn is the target and the
    others are its shadow models. For every example, the shadow models that
    trained on it give the mean "in" score :math:`\mu_{in}`, the others the
    mean "out" score :math:`\mu_{out}`; with the spreads :math:`\sigma` pooled
    over examples (the fixed-variance variant, for few shadow models) the attack
    score of the target's score ``s`` is

    .. math::

        \log \mathcal{N}(s; \mu_{in}, \sigma_{in}^2) - \log \mathcal{N}(s; \mu_{out}, \sigma_{out}^2)

    (online) or :math:`(s - \mu_{out}) / \sigma_{out}` (offline: only models
    that did not train on the example are needed). The per-example means are
    what a single global threshold lacks: an example that every model finds
    easy is no evidence of membership.

    Returns
    -------
    numpy.ndarray
        Attack scores ``[models, examples]``, higher = "member"; evaluate them
        with :func:`attack_metrics` against ``in_mask``.

    Examples
    --------
    >>> import torch, transfer_utils as tu
    >>> mask = tu.balanced_membership(200, 8, seed=0)
    >>> s = torch.randn(1, 200) * 3 + torch.randn(8, 200) * 0.5 + 1.0 * mask
    >>> tu.attack_metrics(tu.lira(s, mask), mask, n_boot=50).auc > 0.8
    True
    """
    s = np.asarray(scores.detach().cpu() if isinstance(scores, torch.Tensor) else scores,
                   dtype=np.float64)
    mask = np.asarray(in_mask.cpu() if isinstance(in_mask, torch.Tensor) else in_mask)
    if s.ndim != 2 or mask.shape != s.shape:
        raise ValueError(f"scores and in_mask must both be [models, examples] of one shape; got "
                         f"{s.shape} and {mask.shape}")
    if not np.isfinite(s).all():
        raise ValueError("scores contain NaN or inf")
    mask = mask.astype(bool)
    n_models = s.shape[0]
    if n_models < 3:
        raise ValueError(f"lira needs at least 3 models (one target, shadows on both sides), "
                         f"got {n_models}")
    out = np.empty_like(s)
    for t in range(n_models):
        sh, m = np.delete(s, t, 0), np.delete(mask, t, 0)
        n_in, n_out = m.sum(0), (~m).sum(0)
        if (n_out < 1).any() or (online and (n_in < 1).any()):
            raise ValueError("lira: every example needs shadow models that trained on it and "
                             "models that did not; build in_mask with tu.balanced_membership")
        mu_out = np.where(~m, sh, 0).sum(0) / n_out
        var_out = (np.where(~m, sh - mu_out, 0) ** 2).sum() / max(1, (~m).sum() - s.shape[1])
        sd_out = math.sqrt(max(var_out, 1e-12))
        if not online:
            out[t] = (s[t] - mu_out) / sd_out
            continue
        mu_in = np.where(m, sh, 0).sum(0) / n_in
        var_in = (np.where(m, sh - mu_in, 0) ** 2).sum() / max(1, m.sum() - s.shape[1])
        sd_in = math.sqrt(max(var_in, 1e-12))
        out[t] = (-((s[t] - mu_in) / sd_in) ** 2 / 2 - math.log(sd_in)
                  + ((s[t] - mu_out) / sd_out) ** 2 / 2 + math.log(sd_out))
    return out


def membership_inference(
    model: nn.Module,
    members,
    nonmembers,
    *,
    device: str | torch.device | None = None,
) -> dict:
    """The confidence-threshold attack on one model, summarised by its ROC (Yeom et al. 2018).

    The attacker sees the model's confidence in the true label
    (:func:`membership_scores`) and guesses "was in the training set" when it is
    high. ``members`` were in the training set, ``nonmembers`` were not (same
    distribution). Returns

    ``"auc"``
        area under the ROC curve: 0.5 means no leak, 1.0 means every member
        scores above every non-member;
    ``"tpr@1%"``
        the fraction of members found at a false-positive rate of at most 1%
        (with fewer than 100 non-members: above every non-member);
    ``"advantage"``
        the *best* threshold's true-positive minus false-positive rate, chosen
        on these very sets: an upper bound on what an attacker who must fix the
        threshold beforehand gets (:func:`threshold_attack` does that);
    ``"member_conf"``, ``"nonmember_conf"``
        mean softmax confidence in the true label on each set.

    Examples
    --------
    >>> import transfer_utils as tu
    >>> src = tu.zoo.load("mnist8_cnn")
    >>> train, val = tu.zoo.source_data("mnist8_cnn")
    >>> r = tu.membership_inference(src, train.subset(range(300)), val.subset(range(300)))
    >>> r["auc"] > 0.5
    True
    """
    if len(members) == 0 or len(nonmembers) == 0:
        raise ValueError("members and nonmembers must both hold examples")
    sm, sn = (membership_scores(model, ds, device=device) for ds in (members, nonmembers))
    fpr, tpr = attack_roc(sm, sn)
    return {"auc": attack_auc(sm, sn), "tpr@1%": tpr_at_fpr(sm, sn, 0.01),
            "advantage": float(np.max(tpr - fpr)),
            "member_conf": float(torch.sigmoid(sm).mean()),
            "nonmember_conf": float(torch.sigmoid(sn).mean())}


# --------------------------------------------------------------------------- DP training


class NotPrivatizableError(ValueError):
    """The model holds a layer that DP-SGD (Opacus) cannot train privately; the message says which."""


def _bn_names(model: nn.Module, trainable: bool) -> list[str]:
    return [name for name, m in model.named_modules() if isinstance(m, _BN_TYPES)
            and any(p.requires_grad for p in m.parameters(recurse=False)) == trainable]


def make_private_model(model: nn.Module) -> nn.Module:
    """A copy of ``model`` that Opacus can train with DP-SGD: trainable BatchNorm becomes GroupNorm.

    BatchNorm normalises each example with statistics of its whole batch, so one
    example's output (and gradient) depends on the others and per-example
    clipping bounds nothing. Opacus' ``ModuleValidator.fix`` replaces each
    trainable BatchNorm by a GroupNorm (per-example statistics, fresh affine
    weights: the pretrained running statistics are lost). Frozen BatchNorm
    layers may stay if they are in eval mode (fixed statistics: a per-channel
    affine map, :func:`transfer_utils.freeze` keeps them so); in training mode
    they would still mix the examples of a batch, and that is refused.
    The caller's model is not changed (chapter 7).

    Raises
    ------
    NotPrivatizableError
        When Opacus' validator or its per-example gradient layer still refuses
        the copy; the message names the layers and what to do.

    Examples
    --------
    >>> import transfer_utils as tu
    >>> net = tu.make_private_model(tu.SmallCNN())
    >>> type(net.body.block1.bn).__name__
    'GroupNorm'
    """
    from opacus.grad_sample import GradSampleModule
    from opacus.validators import ModuleValidator

    if not isinstance(model, nn.Module):
        raise TypeError(f"make_private_model: model must be an nn.Module, got "
                        f"{type(model).__name__}")
    if not any(p.requires_grad for p in model.parameters()):
        raise NotPrivatizableError("make_private_model: the model has no trainable parameters; "
                                   "unfreeze what DP-SGD should train")
    copy_ = copy.deepcopy(model).train()
    moving = [n for n in _bn_names(copy_, trainable=False) if copy_.get_submodule(n).training]
    if moving:
        raise NotPrivatizableError(
            f"make_private_model: the frozen BatchNorm layers {moving} are in training mode, so "
            "they normalise each example with its batch's statistics and mix the examples; "
            "keep them in eval mode (tu.freeze(model, ..., bn_eval=True)) or unfreeze them "
            "(then they become GroupNorm)")
    # tu.freeze keeps frozen BatchNorm in eval mode with a per-instance train(); Opacus clones
    # the model by pickling it, which that method does not survive: take it off, put it back
    kept = [n for n, m in copy_.named_modules() if isinstance(m, _BN_TYPES) and "train" in vars(m)]
    for n in kept:
        del copy_.get_submodule(n).train
    fixed = ModuleValidator.fix(copy_)
    if kept:
        freeze(fixed, *kept)
    problems = ModuleValidator.validate(fixed, strict=False)
    problems += GradSampleModule.validate(fixed, strict=False)
    if problems:
        text = "; ".join(str(p) for p in problems)
        raise NotPrivatizableError(
            f"make_private_model: Opacus cannot train this model privately: {text}. Replace "
            "or freeze those layers (Opacus computes per-example gradients for Linear, Conv, "
            "normalisation, embedding and its DP versions of RNN and attention layers)")
    return fixed


def _orders(accountant: str) -> dict:
    return {"alphas": RDP_ORDERS} if accountant == "rdp" else {}


@functools.lru_cache(maxsize=256)
def _noise_multiplier(epsilon: float, delta: float, sample_rate: float, steps: int,
                      accountant: str) -> float:
    # the smallest noise multiplier whose accountant epsilon after `steps` is <= epsilon
    # (Opacus' binary search, to 0.01 in epsilon); cached: runs of one setting share it
    from opacus.accountants.utils import get_noise_multiplier

    return float(get_noise_multiplier(target_epsilon=epsilon, target_delta=delta,
                                      sample_rate=sample_rate, steps=steps,
                                      accountant=accountant, **_orders(accountant)))


def fit_private(
    model: nn.Module,
    train,
    *,
    epsilon: float,
    delta: float,
    epochs: int | None = None,
    steps: int | None = None,
    batch_size: int = 64,
    lr: float = 1e-3,
    optimizer: str = "adam",
    max_grad_norm: float = 1.0,
    accountant: str = "rdp",
    seed: int = 0,
    device: str | torch.device | None = None,
    progress: bool | None = None,
) -> dict:
    r"""Train a copy of ``model`` on ``train`` with DP-SGD (Opacus) to an (epsilon, delta) budget.

    The copy comes from :func:`make_private_model` (trainable BatchNorm becomes
    GroupNorm; only parameters with ``requires_grad`` train, so a frozen body
    with a trainable head is "DP training of the head"). Each step samples
    every example independently with probability ``q = batch_size / len(train)``
    (Poisson sampling), clips each example's gradient to norm ``max_grad_norm``,
    sums, adds Gaussian noise of standard deviation ``sigma * max_grad_norm``
    and divides by the expected batch size. ``sigma`` is the smallest noise
    multiplier for which the ``accountant`` (Opacus' RDP accountant, integer
    orders :data:`RDP_ORDERS`; ``"prv"`` is tighter and slower) certifies
    (epsilon, delta)-differential privacy after all the steps:

    .. math::

        P[M(D) \in S] \le e^{\varepsilon} P[M(D') \in S] + \delta

    for any two training sets ``D, D'`` differing in one example and any set of
    outcomes ``S`` (chapter 7 says what this promises and what it does not).

    ``epsilon=math.inf`` trains the same copy the same way without clipping or
    noise (shuffled batches of ``batch_size``): the non-private reference.
    The noise is pseudo-random (Opacus' ``secure_mode=False``), reproducible
    from ``seed``; a deployment would use a cryptographic generator.

    Returns
    -------
    dict
        ``{"model", "epsilon", "delta", "noise_multiplier", "sample_rate",
        "steps", "replaced", "history"}``: the trained model (plain module, eval
        mode), the epsilon the accountant reports at ``delta``, and the names of
        the BatchNorm layers replaced by GroupNorm.

    Examples
    --------
    >>> import transfer_utils as tu
    >>> data = tu.few_shot(tu.load_digits(), 10, seed=0)
    >>> r = tu.fit_private(tu.SmallCNN(10), data, epsilon=8.0, delta=1e-5, steps=5,
    ...                    batch_size=20, progress=False)
    >>> r["epsilon"] <= 8.0 + 0.1, r["replaced"][0]
    (True, 'body.block1.bn')
    """
    from opacus import PrivacyEngine

    name = "fit_private"
    kind, length = V.epochs_or_steps(epochs, steps, name)
    if isinstance(epsilon, bool) or not isinstance(epsilon, (int, float)) or not epsilon > 0:
        raise ValueError(f"{name}: epsilon must be a positive number (math.inf for the "
                         f"non-private reference), got {epsilon!r}")
    V.probability(delta, "delta", name)
    if not 0 < delta < 1:
        raise ValueError(f"{name}: delta must be in (0, 1), well below 1/len(train); got "
                         f"{delta!r}")
    batch_size = V.positive_int(batch_size, "batch_size", name)
    V.positive(lr, "lr", name)
    V.positive(max_grad_norm, "max_grad_norm", name)
    V.one_of(optimizer, "optimizer", ("adam", "sgd"), name)
    V.one_of(accountant, "accountant", ("prv", "rdp"), name)
    seed = V.seed_value(seed, name)
    n = len(train)
    if n < 2:
        raise ValueError(f"{name}: train must hold at least 2 examples, got {n}")
    batch_size = min(batch_size, n)
    device = get_device(device)
    replaced = _bn_names(model, trainable=True)
    net = make_private_model(model).to(device)
    seed_everything(seed)
    params = [p for p in net.parameters() if p.requires_grad]
    opt = (torch.optim.Adam(params, lr=lr) if optimizer == "adam"
           else torch.optim.SGD(params, lr=lr, momentum=0.9))
    loader = make_loader(train, batch_size, shuffle=True, seed=seed)
    per_epoch = math.ceil(n / batch_size)
    n_steps = length * per_epoch if kind == "epochs" else length
    if math.isinf(epsilon):
        history = fit(net, loader, steps=n_steps, optimizer=opt, seed=seed, device=device,
                      progress=progress)
        return {"model": net.eval(), "epsilon": math.inf, "delta": delta,
                "noise_multiplier": 0.0, "sample_rate": batch_size / n, "steps": n_steps,
                "replaced": replaced, "history": history}
    # Opacus re-samples the dataset behind a torch DataLoader (Poisson sampling)
    loader = torch.utils.data.DataLoader(
        train, batch_size=batch_size, shuffle=True,
        generator=torch.Generator().manual_seed(seed))
    sample_rate = 1 / len(loader)
    sigma = _noise_multiplier(float(epsilon), float(delta), sample_rate, n_steps, accountant)
    with warnings.catch_warnings():
        # secure_mode=False (pseudo-random noise, reproducible from the seed) is what research
        # code uses; Opacus says so at every call. And a frozen first layer makes torch warn
        # that its backward hooks see no input gradients, which is expected here.
        warnings.filterwarnings("ignore", message="Secure RNG turned off")
        warnings.filterwarnings("ignore", message="Full backward hook is firing")
        engine = PrivacyEngine(accountant=accountant)
        gsm, dp_opt, dp_loader = engine.make_private(
            module=net, optimizer=opt, data_loader=loader, noise_multiplier=sigma,
            max_grad_norm=max_grad_norm, poisson_sampling=True)
        history = fit(gsm, dp_loader, steps=n_steps, optimizer=dp_opt, seed=seed,
                      device=device, progress=progress)
    spent = float(engine.accountant.get_epsilon(delta=delta, **_orders(accountant)))
    # remove Opacus' hooks and per-example gradients: a plain module again
    (getattr(gsm, "_close", None) or gsm.remove_hooks)()
    return {"model": net.eval(), "epsilon": spent, "delta": delta,
            "noise_multiplier": float(sigma), "sample_rate": sample_rate, "steps": n_steps,
            "replaced": replaced, "history": history}


# --------------------------------------------------------------------------- the chapter's sweep

SWEEP_METHODS = ("scratch", "fine-tune, GroupNorm", "fine-tune, BatchNorm frozen", "head only")


def _eps_key(eps: float) -> str:
    return "inf" if math.isinf(eps) else f"{eps:g}"


def _sweep_model(method: str, source: nn.Module) -> nn.Module:
    net = copy.deepcopy(source)
    if method == "scratch":
        net = fresh_copy(source)
    elif method == "fine-tune, BatchNorm frozen":
        freeze(net, *[n for n, m in net.named_modules() if isinstance(m, _BN_TYPES)])
    elif method == "head only":
        freeze(net, *[n for n, _ in net.named_children() if n != head_name(net)])
    return net


def privacy_sweep(
    *,
    source: str = "mnist8_cnn",
    dataset: str = "digits",
    split_seed: int = 0,
    n_models: int = 8,
    mask_seed: int = 0,
    methods: Sequence[str] = SWEEP_METHODS,
    epsilons: Sequence[float] = (1.0, 3.0, 8.0, math.inf),
    delta: float = 1e-5,
    epochs: int = 20,
    batch_size: int = 64,
    lrs: Sequence[float] = (3e-4, 1e-3, 3e-3, 1e-2),
    max_grad_norm: float = 1.0,
    tune_seed: int = 1000,
    pool_size: int | None = None,
    device: str | torch.device | None = "cpu",
    log=None,
) -> tuple[dict, dict[str, torch.Tensor]]:
    """Chapter 7's privacy-utility experiment: private training on a public model, attacked.

    The public model is the zoo's ``source`` (pretrained on MNIST); the private
    data are ``dataset`` (scikit-learn's digits, the same ten classes), split
    in half by ``split_seed`` into a membership pool and a test set. For each
    method and each epsilon (``math.inf`` = the same training without clipping
    or noise):

    1. the learning rate is chosen from ``lrs`` on a validation split of the
       pool (train on a random half drawn with ``tune_seed``, score on the other
       half; the test set is never used), the grid recorded;
    2. ``n_models`` models are trained with :func:`fit_private`, model ``m`` on
       the pool examples of row ``m`` of :func:`balanced_membership` (each
       example in exactly half of the models), with ``seed=m``;
    3. each model's test accuracy, the epsilon its accountant reports, and its
       :func:`membership_scores` on every pool and test example are recorded,
       so the attacks (threshold, :func:`lira`) can be run on them later.

    Methods: ``"scratch"`` (the source architecture, fresh weights, BatchNorm
    replaced by GroupNorm), ``"fine-tune, GroupNorm"`` (every weight, Opacus'
    BatchNorm-to-GroupNorm fix), ``"fine-tune, BatchNorm frozen"`` (every weight
    but the BatchNorm layers, kept in eval mode with the public statistics),
    ``"head only"`` (the source head, on the frozen public body). The source
    head is kept: the label sets agree.

    Returns ``(record, tensors)`` for :func:`transfer_utils.zoo.save_run`;
    ``scripts/privacy_sweep.py`` runs it and saves ``private_digits``.
    """
    from . import zoo as _zoo
    from .data import load_dataset, split

    unknown = [m for m in methods if m not in SWEEP_METHODS]
    if unknown or not methods:
        raise ValueError(f"privacy_sweep: methods must be from {SWEEP_METHODS}, got {unknown}")
    if not epsilons or not lrs:
        raise ValueError("privacy_sweep: give at least one epsilon and one learning rate")
    say = log or (lambda *a: None)
    public = _zoo.load(source, device="cpu")
    pool, test = split(load_dataset(dataset), (0.5, 0.5), seed=split_seed)
    if pool_size is not None:
        pool = pool.subset(torch.arange(V.positive_int(pool_size, "pool_size", "privacy_sweep")))
    if num_classes(pool) != public.head.out_features:
        raise ValueError("privacy_sweep keeps the source head: the label sets must agree")
    mask = balanced_membership(len(pool), n_models, seed=mask_seed)
    g = torch.Generator().manual_seed(tune_seed)
    half = torch.randperm(len(pool), generator=g)
    tune_train, tune_val = pool.subset(half[: len(pool) // 2]), pool.subset(half[len(pool) // 2:])
    test_loader = make_loader(test, 512)
    common = dict(delta=delta, epochs=epochs, batch_size=batch_size,
                  max_grad_norm=max_grad_norm, device=device, progress=False)
    record = {
        "recipe": dict(source=source, dataset=dataset, split_seed=split_seed, n_models=n_models,
                       mask_seed=mask_seed, methods=list(methods),
                       epsilons=[_eps_key(e) for e in epsilons], delta=delta, epochs=epochs,
                       batch_size=batch_size, lrs=list(lrs), max_grad_norm=max_grad_norm,
                       tune_seed=tune_seed, pool_size=pool_size, optimizer="adam",
                       accountant="rdp"),
        "public_only_accuracy": evaluate(public, test_loader, device=device)["accuracy"],
        "n_pool": len(pool), "n_test": len(test), "tuning": {}, "lr": {}, "results": {},
    }
    tensors = {"mask": mask.to(torch.uint8)}
    t_all = time.perf_counter()
    for method in methods:
        base = _sweep_model(method, public)
        record["tuning"][method], record["lr"][method], record["results"][method] = {}, {}, {}
        for eps in epsilons:
            key = _eps_key(eps)
            grid = {}
            for lr in lrs:
                r = fit_private(base, tune_train, epsilon=eps, lr=lr, seed=tune_seed, **common)
                grid[f"{lr:g}"] = evaluate(r["model"], make_loader(tune_val, 512),
                                           device=device)["accuracy"]
            best = max(lrs, key=lambda lr, grid=grid: grid[f"{lr:g}"])
            record["tuning"][method][key], record["lr"][method][key] = grid, best
            accs, spent, pool_s, test_s, secs = [], [], [], [], []
            for m in range(n_models):
                t0 = time.perf_counter()
                r = fit_private(base, pool.subset(torch.nonzero(mask[m])[:, 0]), epsilon=eps,
                                lr=best, seed=m, **common)
                secs.append(time.perf_counter() - t0)
                accs.append(evaluate(r["model"], test_loader, device=device)["accuracy"])
                spent.append(None if math.isinf(r["epsilon"]) else r["epsilon"])
                pool_s.append(membership_scores(r["model"], pool, device=device))
                test_s.append(membership_scores(r["model"], test, device=device))
            record["results"][method][key] = {
                "accuracy": accs, "epsilon": spent, "noise_multiplier": r["noise_multiplier"],
                "steps": r["steps"], "seconds": secs, "replaced": r["replaced"]}
            tensors[f"{method}|{key}|pool"] = torch.stack(pool_s).float()
            tensors[f"{method}|{key}|test"] = torch.stack(test_s).float()
            say(f"{method:28s} eps={key:>4s} lr={best:g} (grid {grid}) accuracy "
                f"{np.mean(accs):.3f} sigma={r['noise_multiplier']:.2f} "
                f"{np.mean(secs):.1f} s/model")
    record["seconds"] = time.perf_counter() - t_all
    return record, tensors
