"""Chapter 10's headline claims, re-run small (one seed or a few draws) with the chapter's settings."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

import transfer_utils as tu

STEPS, LR, TENT_LR = 20, 1e-4, 1e-3
KNOBS = {"coral": {"weight": 1.0}, "dann": {"lambd": 1.0, "discriminator_lr": 1e-3},
         "self-training": {"threshold": 0.9, "rounds": 2}}


def _adapt(method, model, source, pool, seed=0, **knobs):
    return tu.domain_adapt(method, model, source, pool, steps=STEPS, seed=seed,
                           lr=TENT_LR if method == "tent" else LR, device="cpu",
                           **{**KNOBS.get(method, {}), **knobs})


def _acc(model, test):
    return tu.evaluate(model, tu.make_loader(test, 512), device="cpu")["accuracy"]


@pytest.fixture(scope="module")
def mnist_to_digits():
    source, _ = tu.zoo.source_data("mnist8_cnn")
    pool, test = tu.split(tu.load_digits(), (0.5, 0.5), seed=0)
    return tu.zoo.load("mnist8_cnn", device="cpu"), source, pool, test


def test_every_method_beats_the_source_model_on_mnist_to_digits(mnist_to_digits):
    model, source, pool, test = mnist_to_digits
    base = _acc(model, test)
    accs = {m: _acc(_adapt(m, model, source, pool), test)
            for m in ("adabn", "tent", "dann", "self-training")}
    assert all(a > base + 0.01 for a in accs.values()), (base, accs)
    shots = tu.few_shot(pool, 5, 0)
    tuned = copy.deepcopy(model)
    tu.fit(tuned, tu.make_loader(shots, 32, shuffle=True), steps=STEPS, lr=LR, seed=0,
           device="cpu", progress=False)
    assert _acc(tuned, test) > max(accs.values()) + 0.03, "5 labels per class beat them all"


def test_the_coral_term_adds_nothing_over_its_control_on_mnist_to_digits(mnist_to_digits):
    model, source, pool, test = mnist_to_digits
    coral = _acc(_adapt("coral", model, source, pool), test)
    control = _acc(_adapt("coral", model, source, pool, weight=0.0), test)
    adabn = _acc(_adapt("adabn", model, source, pool), test)
    assert abs(coral - control) < 0.01 and abs(control - adabn) < 0.015


@pytest.fixture(scope="module")
def mnist1d():
    model = tu.zoo.load("mnist1d_mlp", device="cpu")
    source, _ = tu.split(tu.load_mnist1d(1000, seed=1), (0.5, 0.5), seed=0)
    levels = {lv: tu.split(tu.load_mnist1d(400, seed=100 + lv, shear=sh, scale=sc),
                           (0.5, 0.5), seed=0)
              for lv, (sh, sc) in {0: (0.75, 0.4), 3: (3.0, 1.6)}.items()}
    return model, source, levels


def test_batchnorm_methods_recover_most_under_a_severe_mnist1d_shift(mnist1d):
    model, source, levels = mnist1d
    pool, test = levels[3]
    base = _acc(model, test)
    acc = {m: _acc(_adapt(m, model, source, pool), test)
           for m in ("adabn", "tent", "dann", "self-training")}
    control = _acc(_adapt("coral", model, source, pool, weight=0.0), test)
    assert min(acc["adabn"], acc["tent"]) > control + 0.03 > base + 0.03
    assert abs(acc["dann"] - control) < 0.01
    assert base < acc["self-training"] < control


def test_no_method_gains_without_a_shift(mnist1d):
    model, source, levels = mnist1d
    pool, test = levels[0]
    base = _acc(model, test)
    for m in ("adabn", "tent", "coral", "dann", "self-training"):
        assert _acc(_adapt(m, model, source, pool), test) < base + 0.01, m


def test_bbse_corrects_label_shift_and_adabn_hurts_under_it(mnist1d):
    model, _, levels = mnist1d
    source_val = tu.split(tu.load_mnist1d(1000, seed=1), (0.5, 0.5), seed=0)[1]
    pool, test = levels[0]
    base = tu.ArrayDataset(torch.cat([pool.x, test.x]), torch.cat([pool.y, test.y]))
    val_logits, val_y = tu.predict(model, tu.make_loader(source_val, 512))
    by_class = [torch.nonzero(base.y == c)[:, 0] for c in range(10)]
    gains, adabn_gains = [], []
    for seed in range(8):
        rng = np.random.default_rng(seed)
        ys = rng.choice(10, size=400, p=rng.dirichlet([0.1] * 10))
        target = base.subset([int(rng.choice(by_class[c])) for c in ys])
        logits, y = tu.predict(model, tu.make_loader(target, 512))
        w = tu.bbse_weights(val_logits.argmax(1), val_y, logits.argmax(1), num_classes=10)
        before = float((logits.argmax(1) == y).float().mean())
        after = float((tu.reweight_logits(logits, w).argmax(1) == y).float().mean())
        adabn = tu.adapt_batchnorm(model, tu.make_loader(target, 32, shuffle=True, seed=seed))
        adabn_acc = float((tu.predict(adabn, tu.make_loader(target, 512))[0].argmax(1) == y)
                          .float().mean())
        gains.append(after - before)
        adabn_gains.append(adabn_acc - before)
    assert np.mean(gains) > 0.05 and np.mean(np.array(gains) > 0) >= 0.75
    assert np.mean(adabn_gains) < -0.1


def test_labels_would_pick_a_lower_self_training_threshold_than_the_default(mnist1d):
    model, source, _ = mnist1d
    pool, test = tu.split(tu.load_mnist1d(400, seed=102, shear=2.25, scale=1.2), (0.5, 0.5),
                          seed=0)
    pool_loader = tu.make_loader(pool, 512)
    acc = {}
    for threshold in (0.5, 0.9):
        m = _adapt("self-training", model, source, pool, threshold=threshold)
        acc[threshold] = (tu.evaluate(m, pool_loader)["accuracy"], _acc(m, test))
    assert acc[0.5][0] > acc[0.9][0] and acc[0.5][1] > acc[0.9][1]
