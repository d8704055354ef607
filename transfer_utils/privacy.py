"""Privacy: what a trained model leaks about its training examples (chapter 7).

Methods layer: membership-inference attacks.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .data import make_loader
from .training import predict

__all__ = ["membership_inference"]



def membership_inference(
    model: nn.Module,
    members,
    nonmembers,
    *,
    device: str | torch.device | None = None,
) -> dict:
    """A confidence-threshold membership-inference test (the simplest attack of Shokri et al. 2017).

    The attacker sees the model's softmax confidence in the true label and
    guesses "was in the training set" when it is high. ``members`` were in the
    training set, ``nonmembers`` were not (same distribution). Returns

    ``"auc"``
        area under the ROC curve of that guess: 0.5 means no leak, 1.0 means
        every member is more confident than every non-member;
    ``"advantage"``
        the best threshold's true-positive minus false-positive rate;
    ``"member_conf"``, ``"nonmember_conf"``
        mean confidence in the true label on each set (their gap is the leak).

    Examples
    --------
    >>> import transfer_utils as tu
    >>> src = tu.zoo.load("mnist8_cnn")
    >>> train, val = tu.zoo.source_data("mnist8_cnn")
    >>> r = tu.membership_inference(src, train.subset(range(300)), val.subset(range(300)))
    >>> r["auc"] > 0.5
    True
    """
    from sklearn.metrics import roc_auc_score, roc_curve

    if len(members) == 0 or len(nonmembers) == 0:
        raise ValueError("members and nonmembers must both hold examples")
    conf = []
    for ds in (members, nonmembers):
        logits, y = predict(model, make_loader(ds, 512), device=device)
        conf.append(torch.softmax(logits.double(), 1).gather(1, y[:, None])[:, 0].numpy())
    scores = np.concatenate(conf)
    truth = np.r_[np.ones(len(conf[0])), np.zeros(len(conf[1]))]
    fpr, tpr, _ = roc_curve(truth, scores)
    return {"auc": float(roc_auc_score(truth, scores)), "advantage": float(np.max(tpr - fpr)),
            "member_conf": float(conf[0].mean()), "nonmember_conf": float(conf[1].mean())}
