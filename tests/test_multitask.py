"""Tests for transfer_utils.multitask: multi-task nets, the autoencoder, attribute zero-shot,
accuracy intervals, paired gains, the chapter 1-2 exercise checkers and the diagram."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import transfer_utils as tu

# --------------------------------------------------------------------------- multi-task


def test_multitask_net_has_one_head_per_task_and_shares_the_body():
    net = tu.MultiTaskNet.from_model(tu.SmallCNN(10), {"digit": 10, "high": 2})
    out = net(torch.zeros(4, 1, 8, 8))
    assert set(out) == {"digit", "high"} and out["digit"].shape == (4, 10)
    view = net.task("high")
    assert view.body is net.body and view.head is net.heads["high"]
    assert torch.equal(view(torch.ones(2, 1, 8, 8)), net(torch.ones(2, 1, 8, 8))["high"])
    assert net.tasks == ["digit", "high"]


def test_from_model_copies_the_body():
    base = tu.SmallCNN(10)
    net = tu.MultiTaskNet.from_model(base, {"a": 3})
    assert net.body is not base.body
    assert torch.equal(net.body.block1.conv.weight, base.body.block1.conv.weight)


def test_multitask_net_errors():
    with pytest.raises(ValueError, match="heads is empty"):
        tu.MultiTaskNet(torch.nn.Flatten(), 64, {})
    with pytest.raises(ValueError, match="positive int"):
        tu.MultiTaskNet(torch.nn.Flatten(), 64, {"a": 0})
    with pytest.raises(ValueError, match="identifiers"):
        tu.MultiTaskNet(torch.nn.Flatten(), 64, {"two words": 2})
    with pytest.raises(TypeError, match=r"\.body and \.feature_dim"):
        tu.MultiTaskNet.from_model(torch.nn.Linear(2, 2), {"a": 2})
    net = tu.MultiTaskNet(torch.nn.Flatten(), 64, {"a": 2})
    with pytest.raises(KeyError, match="no task 'b'"):
        net.task("b")


def _two_tasks(toy_images):
    coarse = tu.ArrayDataset(toy_images.x, (toy_images.y >= 2).long())
    return {"fine": toy_images, "coarse": coarse}


def test_fit_multitask_learns_both_tasks(toy_images):
    net = tu.MultiTaskNet.from_model(tu.SmallCNN(4, widths=(8, 16)), {"fine": 4, "coarse": 2})
    hist = tu.fit_multitask(net, _two_tasks(toy_images), epochs=8, lr=3e-3, device="cpu")
    assert hist.epochs == 8 and hist.steps == 8 * 7  # 200 examples in batches of 32
    assert hist.train_loss[-1] < 0.5 * hist.train_loss[0]
    loader = tu.make_loader(toy_images, 256)
    assert tu.evaluate(net.task("fine"), loader)["accuracy"] > 0.9
    assert not net.training


def test_fit_multitask_is_reproducible_and_weights_matter(toy_images):
    def run(weights):
        torch.manual_seed(0)
        net = tu.MultiTaskNet.from_model(tu.SmallCNN(4, widths=(8,)), {"fine": 4, "coarse": 2})
        tu.fit_multitask(net, _two_tasks(toy_images), steps=5, seed=1, weights=weights,
                         device="cpu")
        return net.body[0].conv.weight.detach().clone()

    assert torch.equal(run(None), run(None))
    assert not torch.equal(run(None), run({"coarse": 0.0}))


def test_fit_multitask_with_inputs_of_different_sizes():
    a = tu.ArrayDataset(torch.rand(20, 1, 8, 8), torch.arange(20) % 2)
    b = tu.ArrayDataset(torch.rand(20, 1, 12, 12), torch.arange(20) % 3)
    net = tu.MultiTaskNet.from_model(tu.SmallCNN(2, widths=(4,)), {"a": 2, "b": 3})
    hist = tu.fit_multitask(net, {"a": a, "b": b}, steps=2, device="cpu")
    assert hist.steps == 2


def test_fit_multitask_errors(toy_images):
    net = tu.MultiTaskNet.from_model(tu.SmallCNN(4, widths=(8,)), {"fine": 4, "coarse": 2})
    data = _two_tasks(toy_images)
    with pytest.raises(TypeError, match="tu.MultiTaskNet"):
        tu.fit_multitask(tu.SmallCNN(4), data, steps=1)
    with pytest.raises(ValueError, match="steps must be a positive integer"):
        tu.fit_multitask(net, data, steps=0)
    with pytest.raises(ValueError, match="one dataset per task"):
        tu.fit_multitask(net, {"fine": toy_images}, steps=1)
    with pytest.raises(ValueError, match="weights name unknown tasks"):
        tu.fit_multitask(net, data, steps=1, weights={"other": 1.0})
    with pytest.raises(ValueError, match="labels go up to 3 but its head has 2"):
        tu.fit_multitask(net, {"fine": toy_images, "coarse": toy_images}, steps=1)


# --------------------------------------------------------------------------- autoencoder


def test_autoencoder_shapes_and_classifier():
    ae = tu.Autoencoder((1, 8, 8), hidden=16, code=4)
    x = torch.rand(3, 1, 8, 8)
    assert ae(x).shape == x.shape and ae.encode(x).shape == (3, 4)
    clf = ae.classifier(7)
    assert clf(x).shape == (3, 7)
    assert clf.body is not ae.encoder  # a copy: fine-tuning it leaves the autoencoder alone
    assert tu.replace_head(clf, 2)(x).shape == (3, 2)


def test_autoencoder_errors():
    with pytest.raises(ValueError, match="in_shape"):
        tu.Autoencoder((1, 0, 8))
    with pytest.raises(ValueError, match="code must be a positive int"):
        tu.Autoencoder((1, 8, 8), code=0)


def test_fit_autoencoder_lowers_the_reconstruction_loss_without_labels():
    digits = tu.load_digits()
    ae = tu.Autoencoder((1, 8, 8), hidden=64, code=16)
    hist = tu.fit_autoencoder(ae, digits.x[:300], epochs=30, mask=0.3, device="cpu")
    assert hist.steps == 30 * 5  # 300 inputs in batches of 64
    assert hist.train_loss[-1] < 0.8 * hist.train_loss[0]
    assert not ae.training


def test_fit_autoencoder_is_reproducible():
    x = tu.load_digits().x[:100]

    def run():
        torch.manual_seed(0)
        ae = tu.Autoencoder((1, 8, 8), hidden=8, code=4)
        return tu.fit_autoencoder(ae, x, steps=5, seed=3, device="cpu").train_loss

    assert run() == run()


def test_fit_autoencoder_errors():
    ae = tu.Autoencoder((1, 8, 8), hidden=8, code=4)
    x = torch.rand(10, 1, 8, 8)
    with pytest.raises(TypeError, match="tu.Autoencoder"):
        tu.fit_autoencoder(tu.SmallCNN(), x, steps=1)
    with pytest.raises(ValueError, match="steps must be a positive integer"):
        tu.fit_autoencoder(ae, x, steps=0)
    with pytest.raises(TypeError, match="exactly one of epochs= .* or steps="):
        tu.fit_autoencoder(ae, x)
    with pytest.raises(ValueError, match=r"mask \(the fraction of pixels hidden\) must be"):
        tu.fit_autoencoder(ae, x, steps=1, mask=1.0)
    with pytest.raises(ValueError, match=r"expects \(1, 8, 8\)"):
        tu.fit_autoencoder(ae, torch.rand(10, 1, 28, 28), steps=1)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        tu.fit_autoencoder(ae, x * 16, steps=1)
    with pytest.raises(ValueError, match="no inputs"):
        tu.fit_autoencoder(ae, torch.rand(0, 1, 8, 8), steps=1)


# --------------------------------------------------------------------------- zero-shot


def test_default_digit_attribute_table_tells_every_digit_apart():
    A, names = tu.attribute_table()
    assert A.shape == (10, len(tu.DIGIT_ATTRIBUTES)) and names == list(tu.DIGIT_ATTRIBUTES)
    assert len({tuple(r) for r in A}) == 10
    assert A[8, names.index("loop on top")] == 1 and A[1, names.index("closed loop")] == 0


def test_attribute_table_errors():
    with pytest.raises(ValueError, match="classes 0 and 1 have the same attributes"):
        tu.attribute_table({"round": [2]}, num_classes=3)
    with pytest.raises(ValueError, match="outside 0..2"):
        tu.attribute_table({"round": [3]}, num_classes=3)
    with pytest.raises(ValueError, match="attributes is empty"):
        tu.attribute_table({})


def _synthetic_zero_shot(n_per=40, seed=0):
    """Inputs are noisy attribute vectors: a perfect world for attribute-based zero-shot."""
    rng = np.random.default_rng(seed)
    A = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0], [0, 1, 1]], float)
    y = np.repeat(np.arange(5), n_per)
    X = np.hstack([A[y] + 0.3 * rng.normal(size=(len(y), 3)), rng.normal(size=(len(y), 2))])
    return A, X, y


def test_attribute_zero_shot_recognises_unseen_classes():
    A, X, y = _synthetic_zero_shot()
    seen = y < 3
    zsl = tu.AttributeZeroShot(A, alpha=1.0).fit(X[seen], y[seen])
    assert zsl.seen_ == [0, 1, 2]
    assert zsl.predict_attributes(X[:4]).shape == (4, 3)
    acc = zsl.score(X[~seen], y[~seen], candidates=[3, 4])
    assert acc > 0.9
    assert set(zsl.predict(X[~seen], candidates=[3, 4]).tolist()) <= {3, 4}


def test_attribute_zero_shot_accepts_tensors_and_images():
    A, X, y = _synthetic_zero_shot()
    Xt = torch.tensor(X, dtype=torch.float32).view(len(X), 1, 5)
    zsl = tu.AttributeZeroShot(A).fit(Xt[y < 3], torch.tensor(y[y < 3]))
    assert zsl.score(Xt[y >= 3], torch.tensor(y[y >= 3]), [3, 4]) > 0.9


def test_attribute_zero_shot_errors():
    A, X, y = _synthetic_zero_shot()
    with pytest.raises(ValueError, match=r"\[classes, attributes\]"):
        tu.AttributeZeroShot(np.ones(3))
    with pytest.raises(ValueError, match="0/1"):
        tu.AttributeZeroShot(A * 2)
    with pytest.raises(ValueError, match="alpha must be > 0"):
        tu.AttributeZeroShot(A, alpha=0)
    with pytest.raises(RuntimeError, match="call fit"):
        tu.AttributeZeroShot(A).predict(X, [0])
    with pytest.raises(ValueError, match="index the 5 rows"):
        tu.AttributeZeroShot(A).fit(X, y + 1)
    with pytest.raises(ValueError, match="at least 2 examples"):
        tu.AttributeZeroShot(A).fit(X[:1], y[:1])
    with pytest.raises(ValueError, match="candidate classes"):
        tu.AttributeZeroShot(A).fit(X, y).predict(X, [])


# --------------------------------------------------------------------------- statistics


def test_accuracy_ci_is_wilson_and_contains_the_estimate():
    lo, hi = tu.accuracy_ci(0.9, 100)
    assert (round(lo, 3), round(hi, 3)) == (0.826, 0.945)
    assert tu.accuracy_ci(1.0, 50)[1] == 1.0 and tu.accuracy_ci(1.0, 50)[0] < 1.0
    assert tu.accuracy_ci(0.0, 50)[0] == 0.0
    wide, narrow = tu.accuracy_ci(0.7, 50), tu.accuracy_ci(0.7, 5000)
    assert wide[1] - wide[0] > narrow[1] - narrow[0]
    with pytest.raises(ValueError, match=r"n \(a positive number of test examples\) must be a positive integer"):
        tu.accuracy_ci(0.5, 0)
    with pytest.raises(ValueError, match=r"accuracy must be in \[0, 1\]"):
        tu.accuracy_ci(1.5, 10)


def test_paired_gain_differences_seed_by_seed():
    curves = {"a": {1: tu.summarize([0.9, 0.6, 0.7]), 5: tu.summarize([1, 1, 1])},
              "b": {1: tu.summarize([0.8, 0.5, 0.6]), 5: tu.summarize([0.9, 0.8, 1])}}
    g = tu.paired_gain(curves, "a", "b")
    assert math.isclose(g[1].mean, 0.1) and g[1].std < 1e-9  # constant difference: no spread
    assert math.isclose(g[5].mean, 0.1)
    with pytest.raises(KeyError, match="no curve named 'c'"):
        tu.paired_gain(curves, "c", "b")
    with pytest.raises(ValueError, match="different k"):
        tu.paired_gain({"a": {1: curves["a"][1]}, "b": curves["b"]}, "a", "b")
    with pytest.raises(ValueError, match="same seeds"):
        tu.paired_gain({"a": {1: tu.summarize([1, 1])}, "b": {1: curves["b"][1]}}, "a", "b")


# --------------------------------------------------------------------------- checkers


def _t_ci(values):
    from scipy import stats

    n = len(values)
    return stats.t.ppf(0.975, n - 1) * np.std(values, ddof=1) / math.sqrt(n)


def test_check_ci95_passes_a_correct_solution(capsys):
    tu.check_ci95(_t_ci)
    assert "Correct" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("wrong", "hint"),
    [
        (lambda v: 1.96 * np.std(v, ddof=1) / math.sqrt(len(v)), "Student's t"),
        (lambda v: _t_ci(v) * np.std(v) / np.std(v, ddof=1), "ddof=1"),
        (lambda v: 2 * _t_ci(v), "half-width"),
        (lambda v: np.std(v, ddof=1), "expected"),
        (lambda v: "wide", "one number"),
    ],
)
def test_check_ci95_explains_wrong_solutions(wrong, hint):
    with pytest.raises(AssertionError, match=hint):
        tu.check_ci95(wrong)


def test_check_attribute_map_passes_a_correct_solution(capsys):
    tu.check_attribute_map(
        lambda X, T, a: np.linalg.solve(X.T @ X + a * np.eye(X.shape[1]), X.T @ T)
    )
    assert "Correct" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("wrong", "hint"),
    [
        (lambda X, T, a: np.linalg.lstsq(X, T, rcond=None)[0], "alpha \\* I"),
        (lambda X, T, a: np.linalg.solve(X.T @ X + a * np.eye(X.shape[1]), X.T @ T).T,
         "transposed"),
        (lambda X, T, a: np.linalg.solve(X.T @ X + np.eye(X.shape[1]), X.T @ T), "alpha="),
    ],
)
def test_check_attribute_map_explains_wrong_solutions(wrong, hint):
    with pytest.raises(AssertionError, match=hint):
        tu.check_attribute_map(wrong)


def test_check_attribute_map_accepts_torch():
    tu.check_attribute_map(lambda X, T, a: torch.linalg.solve(
        torch.tensor(X.T @ X + a * np.eye(X.shape[1])), torch.tensor(X.T @ T)))


# --------------------------------------------------------------------------- diagram


def test_plot_transfer_diagram_draws_one_axes_with_labels():
    fig = tu.plot_transfer_diagram(source="S", target="T")
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert "S" in texts and "T" in texts and any("copy the weights" in t for t in texts)
