"""Domain adaptation without target labels (transfer_utils.adapt, chapter 10)."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch

import transfer_utils as tu
from transfer_utils.adapt import dann_lambda

# --------------------------------------------------------------------------- helpers


def two_domains(n=240, seed=0, shift=1.5):
    """A 3-class problem on 1x8x8 images and the same classes, brighter and noisier."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 3
    x = 0.2 * torch.rand(n, 1, 8, 8, generator=g)
    for c in range(3):
        x[y == c, 0, :, 2 * c:2 * c + 3] += 1.0
    xt = shift * x + 0.5 + 0.3 * torch.randn(n, 1, 8, 8, generator=g)
    return tu.ArrayDataset(x, y, name="source"), tu.ArrayDataset(xt, y, name="target")


def trained_source(seed=0, steps=60):
    src, tgt = two_domains(seed=seed)
    net = tu.SmallCNN(3, widths=(8, 16))
    tu.fit(net, tu.make_loader(src, 32, shuffle=True, seed=seed), steps=steps, lr=1e-2,
           seed=seed, device="cpu")
    return net.eval(), src, tgt


def np_coral(xs, xt):
    d = xs.shape[1]
    diff = np.cov(xs, rowvar=False) - np.cov(xt, rowvar=False)  # np.cov is unbiased (n - 1)
    return float((diff ** 2).sum() / (4 * d * d))


# --------------------------------------------------------------------------- AdaBN


def test_adapt_batchnorm_changes_only_statistics_and_helps_under_shift():
    """Chapter 7's domain-shift claim: AdaBN lifts MNIST8 accuracy on scikit-learn digits."""
    net = tu.zoo.load("mnist8_cnn", device="cpu")
    before = {k: v.clone() for k, v in net.state_dict().items()}
    pool, test = tu.split(tu.load_digits(), (0.5, 0.5), seed=0)
    adapted = tu.adapt_batchnorm(net, tu.make_loader(pool.subset(range(200)), 64), device="cpu")
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items()), "input changed"
    changed = {k for k, v in adapted.state_dict().items() if not torch.equal(before[k], v)}
    assert changed and all(("running_" in k or "num_batches" in k) for k in changed)
    assert not adapted.training and adapted.body.block1.bn.momentum == net.body.block1.bn.momentum
    loader = tu.make_loader(test, 512)
    assert tu.evaluate(adapted, loader)["accuracy"] > tu.evaluate(net, loader)["accuracy"]


def test_adapt_batchnorm_keeps_frozen_bn_frozen_and_accepts_bare_tensors():
    net = tu.freeze(tu.SmallCNN(3), "body")
    out = tu.adapt_batchnorm(net, [torch.randn(8, 1, 8, 8) for _ in range(2)], inplace=True)
    assert out is net
    net.train()
    assert not net.body.block1.bn.training  # freeze's eval-only BatchNorm survives
    assert net.body.block1.bn.num_batches_tracked.item() == 2


def test_adapt_batchnorm_errors():
    with pytest.raises(ValueError, match="no BatchNorm"):
        tu.adapt_batchnorm(tu.SmallCNN(batchnorm=False), [torch.zeros(2, 1, 8, 8)])
    with pytest.raises(ValueError, match="no batches"):
        tu.adapt_batchnorm(tu.SmallCNN(), [])


def test_adapt_batchnorm_lives_in_adapt_and_nowhere_else():
    import transfer_utils.adapt as adapt
    import transfer_utils.diagnostics as diagnostics

    assert tu.adapt_batchnorm is adapt.adapt_batchnorm
    assert not hasattr(diagnostics, "adapt_batchnorm")


# --------------------------------------------------------------------------- CORAL


def test_coral_loss_matches_the_hand_computation():
    xs = torch.tensor([[0.0, 0.0], [2.0, 0.0]])  # unbiased covariance [[2, 0], [0, 0]]
    xt = torch.tensor([[0.0, 0.0], [0.0, 2.0]])  # [[0, 0], [0, 2]]
    # ||C_s - C_t||_F^2 = 2^2 + 2^2 = 8; / (4 d^2) = 8 / 16
    assert tu.coral_loss(xs, xt).item() == pytest.approx(0.5)
    g = np.random.default_rng(0)
    a, b = g.normal(size=(30, 6)), 3 * g.normal(size=(17, 6)) + 1
    got = tu.coral_loss(torch.tensor(a), torch.tensor(b)).item()
    assert got == pytest.approx(np_coral(a, b), rel=1e-10)


def test_coral_loss_is_zero_for_equal_covariances_and_symmetric():
    g = torch.Generator().manual_seed(0)
    xs = torch.randn(40, 5, generator=g, dtype=torch.float64)
    assert tu.coral_loss(xs, xs + 3.0).item() == pytest.approx(0.0, abs=1e-12)  # means ignored
    xt = 2 * torch.randn(25, 5, generator=g, dtype=torch.float64)
    assert tu.coral_loss(xs, xt).item() == pytest.approx(tu.coral_loss(xt, xs).item())
    assert tu.coral_loss(xs, xt).item() > 0


def test_coral_loss_gradients_pass_gradcheck():
    g = torch.Generator().manual_seed(1)
    xs = torch.randn(7, 3, generator=g, dtype=torch.float64, requires_grad=True)
    xt = torch.randn(9, 3, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(tu.coral_loss, (xs, xt))


def test_coral_loss_errors_name_the_problem():
    with pytest.raises(ValueError, match="different widths \\(3 and 4\\)"):
        tu.coral_loss(torch.zeros(5, 3), torch.zeros(5, 4))
    with pytest.raises(ValueError, match="target_features must be 2-D"):
        tu.coral_loss(torch.zeros(5, 3), torch.zeros(5))
    with pytest.raises(ValueError, match="source_features has 1 row"):
        tu.coral_loss(torch.zeros(1, 3), torch.zeros(5, 3))
    with pytest.raises(TypeError, match="must be a tensor"):
        tu.coral_loss(np.zeros((5, 3)), torch.zeros(5, 3))


# --------------------------------------------------------------------------- gradient reversal


def test_grad_reverse_is_identity_forward_and_scales_the_gradient_by_minus_lambda():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 3, generator=g, requires_grad=True)
    upstream = torch.randn(4, 3, generator=g)
    out = tu.grad_reverse(x, 0.7)
    assert torch.equal(out, x)
    out.backward(upstream)
    assert torch.allclose(x.grad, -0.7 * upstream)
    x.grad = None
    tu.grad_reverse(x, 0.0).sum().backward()
    assert torch.equal(x.grad, torch.zeros_like(x))


def test_grad_reverse_passes_gradcheck_when_reversed_twice():
    # gradcheck compares the backward with finite differences of the forward, which the
    # reversal deliberately breaks; reversing twice (lambda, then 1/lambda) must give back
    # exactly the true gradient, to first and second order
    x = torch.randn(5, 2, dtype=torch.float64, requires_grad=True)

    def twice(t):
        return tu.grad_reverse(tu.grad_reverse(t, 2.5), 0.4) ** 2

    assert torch.autograd.gradcheck(twice, (x,))
    assert torch.autograd.gradgradcheck(twice, (x,))
    # and once: the analytic Jacobian is -lambda times the numerical one
    analytic = torch.autograd.functional.jacobian(lambda t: tu.grad_reverse(t, 1.5), x)
    assert torch.allclose(analytic.reshape(10, 10), -1.5 * torch.eye(10, dtype=torch.float64))


def test_gradient_reversal_layer_and_errors():
    layer = tu.GradientReversal(2.0)
    assert "lambd=2" in repr(layer)
    x = torch.ones(3, requires_grad=True)
    layer(x).sum().backward()
    assert torch.equal(x.grad, torch.full((3,), -2.0))
    with pytest.raises(ValueError, match="grad_reverse: lambd must be a non-negative number"):
        tu.grad_reverse(x, -1.0)
    with pytest.raises(ValueError, match="GradientReversal: lambd"):
        tu.GradientReversal(float("nan"))
    with pytest.raises(TypeError, match="x must be a tensor"):
        tu.grad_reverse([1.0, 2.0], 1.0)


def test_dann_lambda_schedule():
    assert dann_lambda(0.0) == 0.0
    assert dann_lambda(1.0, 2.0) == pytest.approx(2.0 * (2 / (1 + math.exp(-10)) - 1))
    assert dann_lambda(0.5) == pytest.approx(2 / (1 + math.exp(-5)) - 1)
    assert dann_lambda(5.0) == dann_lambda(1.0) and dann_lambda(-1.0) == 0.0


def test_domain_discriminator_shape_and_errors():
    d = tu.DomainDiscriminator(10, hidden=8)
    assert d(torch.zeros(6, 10)).shape == (6, 1)
    with pytest.raises(ValueError, match="in_features must be a positive integer"):
        tu.DomainDiscriminator(0)


# --------------------------------------------------------------------------- batches


def test_domain_pairs_stacks_source_then_target_cycles_and_drops_target_labels():
    src, tgt = two_domains(n=60)
    pairs = tu.DomainPairs(tu.make_loader(src, 20), tu.make_loader(tgt.subset(range(15)), 10))
    batches = list(pairs)
    assert len(pairs) == 3 and len(batches) == 3
    x, y = batches[0]
    assert x.shape == (30, 1, 8, 8) and torch.equal(y, src.y[:20])
    assert torch.equal(x[:20], src.x[:20]) and torch.equal(x[20:], tgt.x[:10])
    assert torch.equal(batches[1][0][20:], tgt.x[10:15])  # the short last target batch
    assert torch.equal(batches[2][0][20:], tgt.x[:10])  # then the target loader restarts
    labelled = next(iter(tu.DomainPairs(tu.make_loader(src, 4), tu.make_loader(tgt, 2),
                                        target_labels=True)))
    assert torch.equal(labelled[1], torch.cat([src.y[:4], tgt.y[:2]]))


def test_domain_pairs_errors():
    src, _ = two_domains(n=20)
    with pytest.raises(TypeError, match="target_loader must be a loader of batches"):
        tu.DomainPairs(tu.make_loader(src), src)
    with pytest.raises(ValueError, match=r"source inputs are \[1, 8, 8\] but target inputs are "
                                         r"\[1, 28, 28\]"):
        next(iter(tu.DomainPairs(tu.make_loader(src), [torch.zeros(4, 1, 28, 28)])))
    with pytest.raises(ValueError, match="target loader yielded no batch"):
        next(iter(tu.DomainPairs(tu.make_loader(src), [])))


def test_features_and_logits_are_the_head_input_and_the_output():
    net = tu.SmallCNN(4, widths=(8, 16)).eval()
    x = torch.randn(5, 1, 8, 8)
    f, logits = tu.features_and_logits(net, x)
    assert torch.allclose(f, net.body(x)) and torch.allclose(logits, net(x))
    assert f.requires_grad
    with pytest.raises(TypeError, match="cannot find the output layer"):
        tu.features_and_logits(torch.nn.Linear(3, 3), torch.zeros(2, 3))


# --------------------------------------------------------------------------- trainers


@pytest.mark.parametrize("trainer", ["train_coral", "train_dann", "self_train"])
def test_trainers_take_exactly_one_length(trainer):
    net, src, tgt = trained_source(steps=1)
    fn = getattr(tu, trainer)
    with pytest.raises(TypeError, match="give exactly one of epochs="):
        fn(net, tu.make_loader(src), tu.make_loader(tgt))
    with pytest.raises(TypeError, match="give exactly one of epochs="):
        fn(net, tu.make_loader(src), tu.make_loader(tgt), epochs=1, steps=1)
    with pytest.raises(TypeError, match="give exactly one of epochs="):
        tu.tent(net, tu.make_loader(tgt))


def test_train_coral_shrinks_the_covariance_gap_it_penalises():
    net, src, tgt = trained_source()

    def gap(model):
        fs, _ = tu.extract_features(model, tu.make_loader(src, 256), layer="body")
        ft, _ = tu.extract_features(model, tu.make_loader(tgt, 256), layer="body")
        return tu.coral_loss(fs, ft).item()

    runs = {}
    for weight in (0.0, 100.0):
        m = copy.deepcopy(net)
        h = tu.train_coral(m, tu.make_loader(src, 32, shuffle=True), tu.make_loader(tgt, 32),
                           weight=weight, steps=40, lr=1e-3, seed=0, device="cpu")
        assert h.steps == 40 and h.train_acc[-1] > 0.5  # source accuracy, from source labels
        runs[weight] = gap(m)
    assert runs[100.0] < runs[0.0]
    h = tu.train_coral(copy.deepcopy(net), tu.make_loader(src, 60), tu.make_loader(tgt, 60),
                       epochs=2, seed=0, device="cpu")
    assert h.epochs == 2 and h.steps == 8


def test_train_coral_errors():
    net, src, tgt = trained_source(steps=1)
    with pytest.raises(ValueError, match="train_coral: weight must be a non-negative number"):
        tu.train_coral(net, tu.make_loader(src), tu.make_loader(tgt), weight=-1, steps=1)
    with pytest.raises(ValueError, match="train_coral: lr must be a positive number"):
        tu.train_coral(net, tu.make_loader(src), tu.make_loader(tgt), lr=0, steps=1)
    with pytest.raises(ValueError, match="no trainable parameters"):
        tu.train_coral(tu.freeze(copy.deepcopy(net)), tu.make_loader(src), tu.make_loader(tgt),
                       steps=1)


def test_train_dann_trains_model_and_discriminator_and_is_reproducible():
    net, src, tgt = trained_source()
    disc = tu.DomainDiscriminator(16, hidden=16)
    d0 = copy.deepcopy(disc.state_dict())
    a = copy.deepcopy(net)
    h = tu.train_dann(a, tu.make_loader(src, 32, shuffle=True), tu.make_loader(tgt, 32),
                      steps=12, lr=1e-3, discriminator=disc, seed=3, device="cpu")
    assert h.steps == 12
    assert any(not torch.equal(d0[k], v) for k, v in disc.state_dict().items())
    assert any(not torch.equal(p, q) for p, q in zip(a.parameters(), net.parameters(),
                                                        strict=True))
    c = copy.deepcopy(net)  # the default discriminator is built after seeding
    tu.train_dann(c, tu.make_loader(src, 32, shuffle=True), tu.make_loader(tgt, 32), steps=5,
                  seed=1, device="cpu")
    d = copy.deepcopy(net)
    tu.train_dann(d, tu.make_loader(src, 32, shuffle=True), tu.make_loader(tgt, 32), steps=5,
                  seed=1, device="cpu")
    assert all(torch.equal(p, q) for p, q in zip(c.parameters(), d.parameters(), strict=True))


def test_train_dann_errors():
    net, src, tgt = trained_source(steps=1)
    with pytest.raises(ValueError, match="train_dann: lambd must be a non-negative number"):
        tu.train_dann(net, tu.make_loader(src), tu.make_loader(tgt), lambd=-0.1, steps=1)
    with pytest.raises(TypeError, match="discriminator must be an nn.Module"):
        tu.train_dann(net, tu.make_loader(src), tu.make_loader(tgt), steps=1,
                      discriminator="mlp")
    with pytest.raises(TypeError, match="epochs= needs a source loader with a length"):
        tu.train_dann(net, iter(tu.make_loader(src)), tu.make_loader(tgt), epochs=1)


def test_self_train_thresholds_and_never_reads_target_labels():
    net, src, tgt = trained_source()
    garbage = tu.ArrayDataset(tgt.x, torch.full((len(tgt),), 99))  # labels out of range
    log = tu.self_train(copy.deepcopy(net), tu.make_loader(src, 32, shuffle=True),
                        tu.make_loader(garbage, 64), threshold=0.0, rounds=2, steps=3, seed=0,
                        device="cpu")
    assert [r["round"] for r in log] == [1, 2]
    assert all(r["kept"] == r["pool"] == len(tgt) for r in log)
    assert all(r["history"].steps == 3 for r in log)
    m = copy.deepcopy(net)
    log = tu.self_train(m, tu.make_loader(src, 32), tu.make_loader(tgt, 64), threshold=1.0,
                        rounds=1, steps=3, device="cpu")
    probs = tu.predict(net, tu.make_loader(tgt, 512))[0].softmax(1)
    assert log[0]["kept"] == int((probs.max(1).values >= 1.0).sum())
    if log[0]["kept"] == 0:
        assert log[0]["history"] is None
        assert all(torch.equal(p, q) for p, q in zip(m.parameters(), net.parameters(),
                                                        strict=True))


def test_self_train_errors():
    net, src, tgt = trained_source(steps=1)
    with pytest.raises(ValueError, match="threshold must be a number in \\[0, 1\\]"):
        tu.self_train(net, tu.make_loader(src), tu.make_loader(tgt), threshold=1.5, steps=1)
    with pytest.raises(ValueError, match="rounds must be a positive integer"):
        tu.self_train(net, tu.make_loader(src), tu.make_loader(tgt), rounds=0, steps=1)
    with pytest.raises(ValueError, match="target loader yielded no batch"):
        tu.self_train(net, tu.make_loader(src), [], steps=1)


def test_tent_changes_only_batchnorm_affine_lowers_entropy_and_restores_flags():
    net, src, tgt = trained_source()
    m = copy.deepcopy(net)
    m.head.weight.requires_grad_(False)  # a caller's flag, kept as it was
    loader = tu.make_loader(tgt, 64, shuffle=True)
    h = tu.tent(m, loader, steps=30, lr=1e-2, seed=0, device="cpu")
    assert h.steps == 30 and math.isnan(h.train_acc[0])
    before, after = dict(net.named_parameters()), dict(m.named_parameters())
    for name, p in after.items():
        moved = not torch.equal(p, before[name])
        assert moved == (".bn." in name), name
    assert not m.head.weight.requires_grad and m.head.bias.requires_grad
    assert not m.training  # evaluated like every other model, on target statistics

    def entropy(model):
        p = tu.predict(model, tu.make_loader(tgt, 512))[0].softmax(1)
        return float(-(p * p.clamp_min(1e-12).log()).sum(1).mean())

    assert entropy(m) < entropy(tu.adapt_batchnorm(net, tu.make_loader(tgt, 64)))


def test_tent_errors():
    _, _, tgt = trained_source(steps=1)
    with pytest.raises(ValueError, match="no BatchNorm layer with affine parameters"):
        tu.tent(tu.SmallCNN(3, batchnorm=False), tu.make_loader(tgt), steps=1)
    with pytest.raises(ValueError, match="tent: lr must be a positive number"):
        tu.tent(tu.SmallCNN(3), tu.make_loader(tgt), steps=1, lr=-1)


# --------------------------------------------------------------------------- label shift


def test_joint_confusion_by_hand_and_errors():
    c = tu.joint_confusion(torch.tensor([0, 0, 1, 1]), torch.tensor([0, 1, 1, 1]))
    assert torch.allclose(c, torch.tensor([[0.25, 0.25], [0.0, 0.5]], dtype=torch.float64))
    c3 = tu.joint_confusion(torch.tensor([2]), torch.tensor([0]), num_classes=4)
    assert c3.shape == (4, 4) and c3[2, 0] == 1.0 and c3.sum() == 1.0
    with pytest.raises(ValueError, match="3 predictions but 2 labels"):
        tu.joint_confusion(torch.tensor([0, 1, 1]), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="predictions must be a 1-D tensor of integer class ids"):
        tu.joint_confusion(torch.rand(3, 2), torch.tensor([0, 1, 1]))
    with pytest.raises(ValueError, match="class id 2 is outside num_classes=2"):
        tu.joint_confusion(torch.tensor([0, 2]), torch.tensor([0, 1]), num_classes=2)


def test_bbse_weights_invert_the_confusion_matrix_by_hand():
    # source held-out: 10 examples of each class, the classifier right 8 of 10 times on each
    y_s = torch.tensor([0] * 10 + [1] * 10)
    p_s = torch.tensor([0] * 8 + [1] * 2 + [1] * 8 + [0] * 2)
    # C = [[0.4, 0.1], [0.1, 0.4]]; target predictions 70% class 0 -> mu = [0.7, 0.3]
    p_t = torch.tensor([0] * 7 + [1] * 3)
    w = tu.bbse_weights(p_s, y_s, p_t)
    # solve [[0.4, 0.1], [0.1, 0.4]] w = [0.7, 0.3]: w = [5/3, 1/3]
    assert torch.allclose(w, torch.tensor([5 / 3, 1 / 3], dtype=torch.float64))


def test_bbse_recovers_the_true_prior_ratios_of_a_noisy_classifier():
    g = torch.Generator().manual_seed(0)
    k, n = 4, 20000
    confusion = torch.full((k, k), 0.1) + 0.6 * torch.eye(k)  # p(pred | true), columns
    def sample(priors):
        y = torch.multinomial(priors, n, replacement=True, generator=g)
        pred = torch.multinomial(confusion[:, y].T, 1, generator=g)[:, 0]
        return pred, y
    p_s, y_s = sample(torch.full((k,), 0.25))
    q = torch.tensor([0.55, 0.25, 0.15, 0.05])
    p_t, _ = sample(q)
    w = tu.bbse_weights(p_s, y_s, p_t, num_classes=k)
    assert torch.allclose(w.float(), q / 0.25, atol=0.08)


def test_bbse_weights_errors():
    with pytest.raises(ValueError, match="confusion matrix is singular"):
        tu.bbse_weights(torch.tensor([0, 0, 0]), torch.tensor([0, 1, 1]), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="target_predictions is empty"):
        tu.bbse_weights(torch.tensor([0, 1]), torch.tensor([0, 1]), torch.tensor([], dtype=int))
    with pytest.raises(ValueError, match="target prediction 5 is outside num_classes=2"):
        tu.bbse_weights(torch.tensor([0, 1]), torch.tensor([0, 1]), torch.tensor([5]),
                        num_classes=2)


def test_reweight_logits_multiplies_probabilities_by_the_weights():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 3, generator=g)
    w = torch.tensor([0.5, 2.0, 0.0])
    p = tu.reweight_logits(logits, w).softmax(1)
    want = logits.softmax(1) * w
    assert torch.allclose(p, want / want.sum(1, keepdim=True), atol=1e-6)
    assert (tu.reweight_logits(logits, w).argmax(1) != 2).all()
    with pytest.raises(ValueError, match="\\(2,\\) weights for 3 classes"):
        tu.reweight_logits(logits, torch.ones(2))
    with pytest.raises(ValueError, match="finite and >= 0"):
        tu.reweight_logits(logits, torch.tensor([1.0, -1.0, 1.0]))


# --------------------------------------------------------------------------- no target labels


def test_domain_weights_favour_target_like_source_points_and_are_flat_without_shift():
    g = torch.Generator().manual_seed(0)
    s = torch.randn(400, 2, generator=g)
    t = torch.randn(400, 2, generator=g) + torch.tensor([1.0, 0.0])
    w = tu.domain_weights(s, t)
    assert w.shape == (400,) and (w > 0).all()
    assert w[s[:, 0] > 1].mean() > 2 * w[s[:, 0] < -1].mean()
    # true ratio N(1, 1) / N(0, 1) = exp(x - 1/2): the logistic fit gets the slope about right
    slope = np.polyfit(s[:, 0].numpy(), np.log(w.numpy()), 1)[0]
    assert 0.7 < slope < 1.3
    same = tu.domain_weights(s, torch.randn(400, 2, generator=g))
    assert tu.effective_sample_size(same) > 0.9 * 400
    assert tu.domain_weights(s, t, max_weight=1.5).max() <= 1.5


def test_effective_sample_size_and_errors():
    assert tu.effective_sample_size(torch.ones(10)) == pytest.approx(10.0)
    assert tu.effective_sample_size([3.0, 0.0, 0.0]) == pytest.approx(1.0)
    assert tu.effective_sample_size([1.0, 3.0]) == pytest.approx(16 / 10)
    with pytest.raises(ValueError, match="finite, >= 0, not all zero"):
        tu.effective_sample_size([0.0, 0.0])
    with pytest.raises(ValueError, match="finite, >= 0"):
        tu.effective_sample_size([1.0, -1.0])


def test_importance_weighted_evaluate_weights_each_example():
    net, src, _ = trained_source(steps=5)
    loader = tu.make_loader(src, 64)
    plain = tu.evaluate(net, loader)
    iw = tu.importance_weighted_evaluate(net, loader, torch.ones(len(src)))
    assert iw["accuracy"] == pytest.approx(plain["accuracy"])
    assert iw["loss"] == pytest.approx(plain["loss"], rel=1e-5)
    assert iw["ess"] == pytest.approx(len(src)) and iw["n"] == len(src)
    logits, y = tu.predict(net, loader)
    right = (logits.argmax(1) == y).nonzero()[:, 0]
    one = torch.zeros(len(src))
    one[right[0]] = 1.0
    r = tu.importance_weighted_evaluate(net, loader, one)
    assert r["accuracy"] == 1.0 and r["ess"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="3 weights for 240 examples"):
        tu.importance_weighted_evaluate(net, loader, torch.ones(3))


def test_proxy_a_distance_from_same_to_separable_and_errors():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(300, 4, generator=g)
    assert tu.proxy_a_distance(a, torch.randn(300, 4, generator=g)) < 0.4
    assert tu.proxy_a_distance(a, torch.randn(300, 4, generator=g) + 4) > 1.9
    with pytest.raises(ValueError, match="different widths \\(4 and 3\\)"):
        tu.proxy_a_distance(a, torch.zeros(10, 3))
    with pytest.raises(ValueError, match="target_features must be 2-D"):
        tu.proxy_a_distance(a, torch.zeros(10))
    with pytest.raises(ValueError, match="NaN or inf"):
        tu.proxy_a_distance(a, torch.full((10, 4), float("nan")))


# --------------------------------------------------------------------------- exercise


def test_check_coral_loss_accepts_the_reference_and_names_common_slips(capsys):
    tu.check_coral_loss(tu.coral_loss)
    assert capsys.readouterr().out.startswith("Correct:")

    def cov(f, ddof):
        c = f - f.mean(0)
        return c.T @ c / (len(f) - ddof)

    def unscaled(xs, xt):
        return ((cov(xs, 1) - cov(xt, 1)) ** 2).sum()

    def biased(xs, xt):
        d = xs.shape[1]
        return ((cov(xs, 0) - cov(xt, 0)) ** 2).sum() / (4 * d * d)

    def detached(xs, xt):
        return tu.coral_loss(xs.detach(), xt.detach())

    for fn, hint in ((unscaled, "divide by 4 d\\^2"), (biased, "divide by n - 1"),
                     (detached, "without\n?.*detach"), (lambda xs, xt: 0.0, "0-d tensor")):
        with pytest.raises(AssertionError, match=f"(?s)Hint: .*{hint}"):
            tu.check_coral_loss(fn)
    with pytest.raises(AssertionError, match="raised ZeroDivisionError"):
        tu.check_coral_loss(lambda xs, xt: 1 / 0)


# --------------------------------------------------------------------------- domain_adapt


@pytest.mark.parametrize("method", tu.ADAPT_METHODS)
def test_domain_adapt_returns_an_adapted_copy_and_never_reads_target_labels(method):
    net, src, tgt = trained_source()
    before = copy.deepcopy(net.state_dict())
    garbage = tu.ArrayDataset(tgt.x, torch.full((len(tgt),), 99))  # labels out of range
    out = tu.domain_adapt(method, net, src, garbage, steps=3, seed=0, lr=1e-3,
                          batch_size=16, device="cpu")
    assert out is not net and not out.training
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    changed = any(not torch.equal(before[k], v) for k, v in out.state_dict().items())
    assert changed == (method != "source")


def test_domain_adapt_is_reproducible_and_passes_knobs():
    net, src, tgt = trained_source()
    a = tu.domain_adapt("dann", net, src, tgt, steps=4, seed=2, lambd=0.5, device="cpu")
    b = tu.domain_adapt("dann", net, src, tgt, steps=4, seed=2, lambd=0.5, device="cpu")
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))
    c = tu.domain_adapt("coral", net, src, tgt, epochs=1, seed=0, weight=0.0, device="cpu")
    assert not c.training
    tu.domain_adapt("self-training", net, src, tgt, steps=4, threshold=0.0, rounds=2,
                    device="cpu")


def test_domain_adapt_errors():
    net, src, tgt = trained_source(steps=1)
    with pytest.raises(ValueError, match="method must be one of 'source', 'adabn'"):
        tu.domain_adapt("mmd", net, src, tgt, steps=1)
    with pytest.raises(TypeError, match="'coral' has no knob 'lambd'; its knobs: weight"):
        tu.domain_adapt("coral", net, src, tgt, steps=1, lambd=1.0)
    with pytest.raises(TypeError, match="'tent' has no knob 'weight'; its knobs: none"):
        tu.domain_adapt("tent", net, src, tgt, steps=1, weight=1.0)
    with pytest.raises(TypeError, match="give exactly one of epochs="):
        tu.domain_adapt("dann", net, src, tgt)
    with pytest.raises(TypeError, match="target must be a tu.ArrayDataset"):
        tu.domain_adapt("adabn", net, src, tu.make_loader(tgt))
    tu.domain_adapt("adabn", net, src, tgt)  # no budget needed without training
