"""Reduced re-runs of the headline experiments of chapters 1 and 2, asserting their direction.

Each test mirrors a claim in the text of book/01_background.ipynb or book/02_concepts.ipynb
with fewer seeds or steps, so that a change in the package that breaks a claim fails here.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

import transfer_utils as tu


@pytest.fixture(scope="module")
def digits_halves():
    return tu.split(tu.load_digits(), (0.5, 0.5), seed=0)


@pytest.fixture(scope="module")
def mnist8():
    return tu.zoo.load("mnist8_cnn", device="cpu")


def test_ch1_finetuning_beats_scratch_with_one_label_and_the_gain_shrinks(digits_halves, mnist8):
    train, test = digits_halves
    curves = tu.transfer_curve(["scratch", "finetune"], mnist8, train, test, ks=[1, 87],
                               seeds=(0, 1), steps=120, device="cpu")
    gain = tu.paired_gain(curves, "finetune", "scratch")
    assert gain[1].mean > 0.03, f"fine-tuning should beat scratch at k=1, gain {gain[1]}"
    assert gain[1].mean > gain[87].mean, "the gain should shrink with all labels"


def test_ch2_each_source_is_best_on_its_own_domain(digits_halves, mnist8):
    _, test = digits_halves
    glyph8 = tu.zoo.load("glyphs8_cnn", device="cpu")
    domains = {"glyphs": tu.load_glyphs(500, image_size=8, seed=1),
               "mnist": tu.zoo.source_data("mnist8_cnn")[1], "digits": test}

    def acc(model, name):
        ds = domains[name]
        a = tu.evaluate(model, tu.make_loader(ds, 512), device="cpu")["accuracy"]
        return tu.accuracy_ci(a, len(ds))

    for model, home in ((mnist8, "mnist"), (glyph8, "glyphs")):
        own_lo = acc(model, home)[0]
        for other in set(domains) - {home}:
            assert own_lo > acc(model, other)[1], f"{home} model should lose accuracy on {other}"
    # synthetic-to-real: printed digits alone still read most handwritten ones
    assert acc(glyph8, "digits")[0] > 0.5


def test_ch2_autoencoder_code_beats_raw_pixels_with_one_label(digits_halves):
    train, test = digits_halves
    gains = []
    for seed in (0, 1):
        ae = tu.Autoencoder((1, 8, 8), hidden=256, code=64)
        tu.fit_autoencoder(ae, train.x, steps=1000, mask=0.5, seed=seed, device="cpu")
        shots = tu.few_shot(train, 1, seed=seed)
        with torch.no_grad():
            code = tu.linear_probe(ae.encode(shots.x), shots.y, ae.encode(test.x), test.y)
        raw = tu.linear_probe(shots.x.flatten(1), shots.y, test.x.flatten(1), test.y)
        gains.append(code["accuracy"] - raw["accuracy"])
    assert np.mean(gains) > 0, f"autoencoder code should beat raw pixels at k=1: {gains}"


def test_ch2_distilled_mlp_reaches_most_of_the_teachers_accuracy(digits_halves, mnist8):
    train, test = digits_halves
    loader = tu.make_loader(test, 512)
    teacher = tu.evaluate(mnist8, loader, device="cpu")["accuracy"]
    tu.seed_everything(0)
    student = tu.MLP(64, hidden=(128,), num_classes=10)
    tu.distill(student, mnist8, tu.make_loader(train, 32, shuffle=True, seed=0), epochs=10,
               lr=3e-3, use_labels=False, progress=False, device="cpu")
    assert tu.evaluate(student, loader, device="cpu")["accuracy"] > 0.8 * teacher


def test_ch2_attribute_zero_shot_beats_chance_on_unseen_classes(digits_halves):
    train, test = digits_halves
    A, _ = tu.attribute_table()
    Xtr, ytr, Xte, yte = train.x.flatten(1), train.y, test.x.flatten(1), test.y
    accs = []
    for unseen in itertools.combinations(range(10), 3):
        u = torch.tensor(unseen)
        seen, rows = ~torch.isin(ytr, u), torch.isin(yte, u)
        zsl = tu.AttributeZeroShot(A).fit(Xtr[seen], ytr[seen])
        accs.append(zsl.score(Xte[rows], yte[rows], candidates=list(unseen)))
    s = tu.summarize(accs)
    assert s.mean - s.ci95 > 1 / 3, f"zero-shot should beat chance (1/3): {s}"


def test_ch2_multitask_and_sequential_beat_scratch(digits_halves):
    train, test = digits_halves
    high = tu.ArrayDataset(train.x, (train.y > 4).long())
    loader = tu.make_loader(test, 512)
    res = {"scratch": [], "sequential": [], "multi-task": []}
    for seed in (0, 1, 2):
        shots = tu.few_shot(train, 5, seed=seed)
        tu.seed_everything(seed)
        res["scratch"].append(tu.transfer_run("scratch", tu.SmallCNN(10), shots, test,
                                              seed=seed, steps=150, device="cpu")["accuracy"])
        tu.seed_everything(seed)
        net_a = tu.SmallCNN(2)
        tu.fit(net_a, tu.make_loader(high, 32, shuffle=True, seed=seed), epochs=5,
               device="cpu", progress=False)
        res["sequential"].append(tu.transfer_run("finetune", net_a, shots, test, seed=seed,
                                                 steps=150, device="cpu")["accuracy"])
        tu.seed_everything(seed)
        net = tu.MultiTaskNet.from_model(tu.SmallCNN(10), {"digit": 10, "high": 2})
        tu.fit_multitask(net, {"digit": shots, "high": high}, steps=150, seed=seed, device="cpu")
        res["multi-task"].append(tu.evaluate(net.task("digit"), loader, device="cpu")["accuracy"])
    mean = {k: float(np.mean(v)) for k, v in res.items()}
    assert mean["sequential"] > mean["scratch"], mean
    assert mean["multi-task"] > mean["scratch"], mean
