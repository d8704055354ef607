"""Tests for chapter 4's additions to transfer_utils.features: layers, probes, caches, checker.

The last group re-runs reduced versions of the chapter's headline experiments and asserts
their direction (MNIST 8x8 source -> scikit-learn digits).
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

import transfer_utils as tu
from tests.conftest import blobs as _blobs

# --------------------------------------------------------------------------- extract_layers


def test_extract_layers_matches_extract_features_and_restores(toy_images):
    net = tu.SmallCNN(num_classes=4, widths=(8, 16), dropout=0.5).train()
    loader = tu.make_loader(toy_images, 64)
    feats, y = tu.extract_layers(net, loader, ["input", "body.block1", "body"])
    assert torch.equal(y, toy_images.y)
    assert feats["input"].shape == (200, 64) and torch.equal(feats["input"],
                                                             toy_images.x.flatten(1))
    X1, _ = tu.extract_features(net, loader, layer="body.block1")
    Xb, _ = tu.extract_features(net.body, loader)
    assert torch.allclose(feats["body.block1"], X1) and torch.allclose(feats["body"], Xb)
    assert net.training and all(m.training for m in net.modules())
    assert not net.body.block1._forward_hooks and not net.body._forward_hooks
    kept, _ = tu.extract_layers(net, loader, ["body.block1"], flatten=False)
    assert kept["body.block1"].shape == (200, 8, 4, 4)


def test_extract_layers_errors_and_cleanup(toy_images):
    net = tu.SmallCNN(num_classes=4, widths=(8, 16))
    loader = tu.make_loader(toy_images, 64)
    with pytest.raises(ValueError, match="at least one layer"):
        tu.extract_layers(net, loader, [])
    with pytest.raises(ValueError, match="repeats"):
        tu.extract_layers(net, loader, ["body.block1", "body.block1"])
    with pytest.raises(ValueError, match="no submodule named 'body.nope'"):
        tu.extract_layers(net, loader, ["body.nope"])
    with pytest.raises(ValueError, match="no batches"):
        tu.extract_layers(net, [], ["body.block1"])

    class Skips(nn.Module):
        def __init__(self):
            super().__init__()
            self.used, self.unused = nn.Linear(64, 2), nn.Linear(64, 2)

        def forward(self, x):
            return self.used(x.flatten(1))

    m = Skips().train()
    with pytest.raises(ValueError, match="'unused' did not run"):
        tu.extract_layers(m, loader, ["unused"])
    assert m.training and not m.unused._forward_hooks


# --------------------------------------------------------------------------- probes


def test_nearest_class_mean_by_hand():
    X, y = _blobs()
    for metric in ("cosine", "euclidean"):
        for center in (False, True):
            clf = tu.NearestClassMean(metric, center=center).fit(X[:90], y[:90])
            Xp = X.double() - (X[:90].double().mean(0) if center else 0)
            means = torch.stack([Xp[:90][y[:90] == c].mean(0) if metric == "euclidean" else
                                 torch.nn.functional.normalize(Xp[:90][y[:90] == c], dim=1).mean(0)
                                 for c in range(3)])
            if metric == "cosine":
                expected = (torch.nn.functional.normalize(Xp[90:], dim=1)
                            @ torch.nn.functional.normalize(means, dim=1).T).argmax(1)
            else:
                expected = torch.cdist(Xp[90:], means).argmin(1)
            assert torch.equal(clf.predict(X[90:]), expected)
    res = tu.ncm_probe(X[:90], y[:90], X[90:], y[90:])
    assert res["accuracy"] > 0.9 and isinstance(res["model"], tu.NearestClassMean)
    # labels that are not 0..K-1 come back as given
    clf = tu.NearestClassMean().fit(X[:90], y[:90] * 10 + 3)
    assert set(clf.predict(X[90:]).tolist()) <= {3, 13, 23}


def test_nearest_class_mean_errors():
    X, y = _blobs()
    with pytest.raises(ValueError, match="metric must be one of 'cosine', 'euclidean'"):
        tu.NearestClassMean("manhattan")
    with pytest.raises(RuntimeError, match="fit"):
        tu.NearestClassMean().predict(X)
    with pytest.raises(ValueError, match=r"X \[n, d\] and y \[n\]"):
        tu.NearestClassMean().fit(X, y[:3])
    with pytest.raises(ValueError, match="rows but y_train has"):
        tu.ncm_probe(X, y[:5], X, y)


def test_train_head_linear_and_mlp():
    X, y = _blobs(200)
    lin = tu.train_head(X, y, steps=150, lr=1e-2)
    assert not lin.training and isinstance(lin[-1], nn.Linear) and lin[-1].out_features == 3
    assert (lin(X).argmax(1) == y).float().mean() > 0.95
    mlp = tu.train_head(X * 100 + 5, y, hidden=[16, 8], steps=150, lr=1e-2)  # standardised
    assert [m.out_features for m in mlp if isinstance(m, nn.Linear)] == [16, 8, 3]
    assert (mlp(X * 100 + 5).argmax(1) == y).float().mean() > 0.95
    wide = tu.train_head(X, y, num_classes=7, steps=5, standardize=False)
    assert wide[-1].out_features == 7 and isinstance(wide[0], nn.Linear)
    # same seed, same head
    a, b = tu.train_head(X, y, steps=20, seed=3), tu.train_head(X, y, steps=20, seed=3)
    assert torch.equal(a[-1].weight, b[-1].weight)
    with pytest.raises(ValueError, match="steps must be a positive integer"):
        tu.train_head(X, y, steps=0)
    with pytest.raises(ValueError, match=r"X \[n, d\] and y \[n\]"):
        tu.train_head(X[:, None], y)


def test_mlp_probe_learns_nonlinear_boundary_that_linear_cannot():
    g = torch.Generator().manual_seed(0)
    X = torch.rand(600, 2, generator=g) * 2 - 1
    y = ((X[:, 0] * X[:, 1]) > 0).long()  # XOR: not linearly separable
    lin = tu.linear_probe(X[:400], y[:400], X[400:], y[400:])["accuracy"]
    mlp = tu.mlp_probe(X[:400], y[:400], X[400:], y[400:], hidden=32, steps=600, lr=1e-2)
    assert lin < 0.7 and mlp["accuracy"] > 0.9
    assert tu.mlp_probe(X[:400], y[:400], X[400:], y[400:], hidden=None, steps=50)["accuracy"] < 0.7


# --------------------------------------------------------------------------- FeatureCache


def test_feature_cache_build_subset_few_shot(toy_images):
    net = tu.SmallCNN(num_classes=4, widths=(8, 16)).train()
    cache = tu.FeatureCache.build(net.body, toy_images, note="toy")
    assert len(cache) == 200 and cache.dim == 16 and cache.meta == {"note": "toy"}
    assert cache.classes == toy_images.classes and cache.seconds > 0 and not cache.loaded
    assert net.training
    assert "FeatureCache(n=200, d=16" in repr(cache)
    X, _ = tu.extract_features(net.body, tu.make_loader(toy_images, 64))
    assert torch.allclose(cache.X, X)
    shots = cache.few_shot(3, seed=5)
    images = tu.few_shot(toy_images, 3, seed=5)
    X_shots, _ = tu.extract_features(net.body, tu.make_loader(images))
    assert torch.equal(shots.y, images.y) and torch.allclose(shots.X, X_shots, atol=1e-5)
    assert len(cache.subset([0, 2, 4])) == 3
    ds = cache.dataset()
    assert isinstance(ds, tu.ArrayDataset) and ds.x.shape == (200, 16)
    from_loader = tu.FeatureCache.build(net.body, tu.make_loader(toy_images, 50), layer="block1")
    assert from_loader.dim == 8 * 4 * 4 and from_loader.layer == "block1"
    with pytest.raises(ValueError, match=r"X \[n, d\] and y \[n\]"):
        tu.FeatureCache(torch.zeros(3, 2), torch.zeros(4), ["0"])


def test_feature_cache_save_load_roundtrip(tmp_path, toy_images):
    cache = tu.FeatureCache.build(tu.SmallCNN(widths=(8,)).body, toy_images, source="toy")
    path = cache.save(tmp_path / "c.safetensors")
    back = tu.FeatureCache.load(path)
    assert back.loaded and torch.equal(back.X, cache.X) and torch.equal(back.y, cache.y)
    assert back.classes == cache.classes and back.meta == {"source": "toy"}
    assert back.layer is None and back.seconds == pytest.approx(cache.seconds)
    assert not list(tmp_path.glob("*.tmp"))  # atomic write leaves no temp file
    tu.save_checkpoint(tmp_path / "model.safetensors", tu.SmallCNN())
    with pytest.raises(ValueError, match="not a feature cache"):
        tu.FeatureCache.load(tmp_path / "model.safetensors")
    with pytest.raises(ValueError, match=r"\.safetensors"):
        cache.save(tmp_path / "c.pt")


def test_cache_features_load_or_compute_and_stale(tmp_path, toy_images):
    net = tu.SmallCNN(num_classes=4, widths=(8, 16))
    path = tmp_path / "toy.safetensors"
    first = tu.cache_features(net.body, toy_images, path=path)
    assert not first.loaded and path.exists()
    second = tu.cache_features(net.body, toy_images, path=path)
    assert second.loaded and torch.equal(first.X, second.X)
    with torch.no_grad():
        net.body.block1.conv.weight[0] += 1.0  # other weights: the cache is stale
    third = tu.cache_features(net.body, toy_images, path=path)
    assert not third.loaded and not torch.equal(third.X, first.X)
    assert tu.cache_features(net.body, toy_images, path=path).loaded  # rewritten
    other_data = toy_images.subset(torch.arange(100))
    assert not tu.cache_features(net.body, other_data, path=path).loaded
    assert not tu.cache_features(net.body, other_data, path=path, layer="block1").loaded
    # BatchNorm buffers are part of the fingerprint too
    with torch.no_grad():
        net.body.block1.bn.running_mean += 0.5
    assert not tu.cache_features(net.body, other_data, path=path, layer="block1").loaded
    assert not tu.cache_features(net.body, toy_images).loaded  # no path: compute only
    with pytest.raises(TypeError, match="needs a dataset"):
        tu.cache_features(net.body, tu.make_loader(toy_images), path=path)


# --------------------------------------------------------------------------- experiments


def test_probe_curve_same_examples_and_seed_passing(toy_images):
    cache = tu.FeatureCache.build(tu.SmallCNN(num_classes=4, widths=(8, 16)).body, toy_images)
    seen = []

    def spy(Xtr, ytr, Xte, yte, seed=None):
        seen.append((len(ytr), seed, Xtr.sum().item()))
        return {"accuracy": 0.5}

    def plain(Xtr, ytr, Xte, yte):
        return 0.25  # a bare number is accepted too

    curves, secs = tu.probe_curve(cache, cache, {"spy": spy, "plain": plain}, ks=(1, 3),
                                  seeds=(0, 7))
    assert [(n, s) for n, s, _ in seen] == [(4, 0), (4, 7), (12, 0), (12, 7)]
    assert seen[0][2] == pytest.approx(cache.few_shot(1, seed=0).X.sum().item())
    assert curves["spy"][3].mean == 0.5 and curves["plain"][1].n == 2
    assert set(secs) == {"spy", "plain"} and all(s >= 0 for s in secs.values())
    with pytest.raises(ValueError, match="at least one probe"):
        tu.probe_curve(cache, cache, {}, ks=(1,))
    with pytest.raises(ValueError, match="at least one k and one seed"):
        tu.probe_curve(cache, cache, {"spy": spy}, ks=())
    with pytest.raises(TypeError, match="FeatureCache"):
        tu.probe_curve(toy_images, cache, {"spy": spy}, ks=(1,))


def test_layerwise_probe_orders_layers_and_finds_signal(toy_images):
    train, test = tu.split(toy_images, (0.5, 0.5), seed=0)
    net = tu.SmallCNN(num_classes=4, widths=(8, 16))
    res = tu.layerwise_probe(net, train, tu.make_loader(test, 32), ["input", "body.block2"],
                             k=5, seeds=(0, 1))
    assert list(res) == ["input", "body.block2"] and res["input"].n == 2
    assert res["input"].mean > 0.9  # quadrant classes are linearly separable in pixels
    full = tu.layerwise_probe(net, train, test, ["input"], probe=tu.ncm_probe)
    assert full["input"].n == 1
    with pytest.raises(ValueError, match="one seed"):
        tu.layerwise_probe(net, train, test, ["input"], seeds=())


def test_project_2d_and_plots(toy_images):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    X = toy_images.x.flatten(1)
    Z = tu.project_2d(X)
    assert Z.shape == (200, 2)
    assert np.isfinite(Z).all() and Z[:, 0].var() >= Z[:, 1].var()  # PCA: first axis first
    assert tu.project_2d(X[:40], method="tsne").shape == (40, 2)
    with pytest.raises(ValueError, match="method must be one of 'pca', 'tsne'"):
        tu.project_2d(X, method="umap")
    with pytest.raises(ValueError, match="n >= 3"):
        tu.project_2d(X[:2])
    fig = tu.plot_projection({"a": (X, toy_images.y), "b": (X * 2, toy_images.y)},
                             classes=["w", "x", "y", "z"])
    assert len(fig.axes) == 2 and fig.axes[0].get_title() == "a"
    labels = [t.get_text() for t in fig.axes[1].get_legend().get_texts()]
    assert labels == ["w", "x", "y", "z"]
    fig1 = tu.plot_projection((X, toy_images.y))
    assert len(fig1.axes) == 1
    with pytest.raises(ValueError, match="at least one"):
        tu.plot_projection({})
    s = tu.summarize([0.5, 0.6, 0.7])
    fig2 = tu.plot_layerwise({"k=1": {"a": s, "b": s}, "k=5": {"a": s, "b": s, "c": s}})
    ax = fig2.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["a", "b", "c"]
    assert len(ax.get_legend().get_texts()) == 2
    fig3 = tu.plot_layerwise({"a": s})
    assert fig3.axes[0].get_legend() is None
    with pytest.raises(ValueError, match="needs results"):
        tu.plot_layerwise({})
    plt.close("all")


# --------------------------------------------------------------------------- exercise checker


def _good(model, loader):
    was = model.training
    model.eval()
    xs, ys = [], []
    try:
        with torch.no_grad():
            for x, y in loader:
                xs.append(model(x))
                ys.append(y)
    finally:
        model.train(was)
    return torch.cat(xs), torch.cat(ys)


def test_check_extract_features_passes_good_versions(capsys):
    tu.check_extract_features(_good)
    tu.check_extract_features(tu.extract_features)
    assert "Correct: extract_features" in capsys.readouterr().out


def _no_eval(model, loader):
    with torch.no_grad():
        out = [(model(x), y) for x, y in loader]
    return torch.cat([o for o, _ in out]), torch.cat([y for _, y in out])


def _no_grad_missing(model, loader):
    was = model.training
    model.eval()
    try:
        out = [(model(x), y) for x, y in loader]
    finally:
        model.train(was)
    return torch.cat([o for o, _ in out]), torch.cat([y for _, y in out])


def _no_restore(model, loader):
    model.eval()
    with torch.no_grad():
        out = [(model(x), y) for x, y in loader]
    return torch.cat([o for o, _ in out]), torch.cat([y for _, y in out])


def _always_train(model, loader):
    model.eval()
    try:
        with torch.no_grad():
            out = [(model(x), y) for x, y in loader]
    finally:
        model.train()
    return torch.cat([o for o, _ in out]), torch.cat([y for _, y in out])


def _no_finally(model, loader):
    was = model.training
    model.eval()
    with torch.no_grad():
        out = [(model(x), y) for x, y in loader]
    model.train(was)
    return torch.cat([o for o, _ in out]), torch.cat([y for _, y in out])


def _swallows(model, loader):
    try:
        return _good(model, loader)
    except RuntimeError:
        return torch.zeros(0, 16), torch.zeros(0)


def _shuffled_labels(model, loader):
    X, y = _good(model, loader)
    return X, y.flip(0)


def _dropout_on(model, loader):
    was = model.training
    model.eval()
    for m in model.modules():
        if isinstance(m, nn.Dropout):
            m.train()
    try:
        with torch.no_grad():
            out = [(model(x), y) for x, y in loader]
    finally:
        model.train(was)
    return torch.cat([o for o, _ in out]), torch.cat([y for _, y in out])


@pytest.mark.parametrize("fn, message", [
    (lambda m, loader: _good(m, loader)[0], "return a pair"),
    (lambda m, loader: (_good(m, loader)[0][:10], _good(m, loader)[1]), "has shape"),
    (_shuffled_labels, "labels do not match"),
    (_no_grad_missing, "gradient graph"),
    (_no_eval, "running statistics changed"),
    (_dropout_on, "differ from the model's test-time"),
    (_no_restore, "was in train mode but is not any more"),
    (_always_train, "was in eval mode but fn left it in train mode"),
    (_swallows, "swallowed"),
    (_no_finally, "finally"),
])
def test_check_extract_features_catches_mistakes_with_hints(fn, message):
    with pytest.raises(AssertionError, match=message) as err:
        tu.check_extract_features(fn)
    assert "Hint:" in str(err.value)


def test_check_extract_features_leaves_global_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    tu.check_extract_features(_good)
    assert torch.equal(torch.rand(3), expected)


# --------------------------------------------------------------------------- chapter 4 headlines
# The chapter's protocol: few-shot sets drawn from a pool, every choice on a validation split,
# the test set only to report, and claims read from paired differences over the same seeds.

SEEDS = (0, 1, 2)
C_GRID = (0.1, 1.0, 10.0)


@pytest.fixture(scope="module")
def digits_setup():
    source = tu.zoo.load("mnist8_cnn", device="cpu")
    train, test = tu.split(tu.load_digits(), (0.5, 0.5), seed=0)
    pool, val = tu.split(train, (0.7, 0.3), seed=0)  # chapter 4's (and 3's) split
    caches = {n: tu.FeatureCache.build(source.body, d)
              for n, d in (("pool", pool), ("val", val), ("test", test))}
    return source, pool, val, test, caches


def _above_zero(s):
    return s.mean - s.ci95 > 0


def _probe_test_acc(shots_per_seed, val_xy, test_xy):
    """Linear probe with C chosen on validation (mean over seeds): test accuracy per seed."""
    fits = [[tu.linear_probe(sh[0], sh[1], *val_xy, C=C) for C in C_GRID]
            for sh in shots_per_seed]
    best = int(np.argmax([np.mean([f[i]["accuracy"] for f in fits]) for i in range(len(C_GRID))]))
    return [f[best]["model"].score(np.asarray(test_xy[0]), np.asarray(test_xy[1])) for f in fits]


def test_headline_cached_head_equals_uncached_and_is_faster(digits_setup):
    import time

    source, pool, *_ = digits_setup
    torch.manual_seed(0)
    init = nn.Linear(source.feature_dim, 10)
    net = nn.Sequential(tu.freeze(copy.deepcopy(source.body)), copy.deepcopy(init))
    t0 = time.perf_counter()
    tu.fit(net, tu.make_loader(pool, 64, shuffle=True, seed=0), epochs=10,
           optimizer=torch.optim.Adam(net[1].parameters(), lr=1e-2), device="cpu")
    slow = time.perf_counter() - t0
    head = copy.deepcopy(init)
    t0 = time.perf_counter()
    cache = tu.FeatureCache.build(source.body, pool, device="cpu")
    tu.fit(head, tu.make_loader(cache.dataset(), 64, shuffle=True, seed=0), epochs=10,
           optimizer=torch.optim.Adam(head.parameters(), lr=1e-2), device="cpu")
    fast = time.perf_counter() - t0
    assert torch.allclose(net[1].weight, head.weight, atol=1e-5)
    assert fast < slow


def test_headline_layerwise_block2_beats_block3_with_many_labels(digits_setup):
    """Section 4.3: with 50 labels per class block2 beats block3, and blocks beat the pixels
    and the source's class scores (paired); with 1 label block3 beats the pixels."""
    source, pool, val, test, _ = digits_setup
    layers = ["input", "body.block2", "body.block3", "head"]
    F = {n: tu.extract_layers(source, tu.make_loader(d, 512), layers)
         for n, d in (("pool", pool), ("val", val), ("test", test))}
    acc = {}
    for k in (1, 50):
        for layer in layers:
            ds = tu.ArrayDataset(F["pool"][0][layer], F["pool"][1])
            shots = [(sh.x, sh.y) for sh in (tu.few_shot(ds, k, seed=s) for s in SEEDS)]
            acc[k, layer] = _probe_test_acc(shots, (F["val"][0][layer], F["val"][1]),
                                            (F["test"][0][layer], F["test"][1]))

    def gap(k, a, b):
        return tu.summarize(np.subtract(acc[k, a], acc[k, b]))

    assert _above_zero(gap(50, "body.block2", "body.block3"))
    assert _above_zero(gap(50, "body.block3", "head"))
    assert _above_zero(gap(50, "body.block2", "input"))
    assert _above_zero(gap(50, "body.block3", "input"))
    assert _above_zero(gap(1, "body.block3", "input"))
    assert np.mean(acc[1, "body.block3"]) > np.mean(acc[1, "body.block2"])


@pytest.fixture(scope="module")
def finetuned(digits_setup):
    """Fine-tuning with the body rates chapter 4's validation chose (k=5: 1e-3, k=20: 1e-2)."""
    source, pool, _, test, _ = digits_setup
    return {k: [tu.transfer_run("finetune", source, tu.few_shot(pool, k, seed=s), test, seed=s,
                                steps=100, body_lr=lr, head_lr=1e-3, device="cpu")
                for s in SEEDS] for k, lr in ((5, 1e-3), (20, 1e-2))}


def test_headline_finetuning_beats_probe_at_five_labels_and_costs_more(digits_setup,
                                                                      finetuned):
    """Section 4.4: paired over the same draws, fine-tuning beats the probe at k=5, and one
    fine-tuning run costs far more than one probe fit."""
    import time

    *_, caches = digits_setup
    shots = [caches["pool"].few_shot(5, seed=s) for s in SEEDS]
    t0 = time.perf_counter()
    lp = _probe_test_acc([(sh.X, sh.y) for sh in shots], (caches["val"].X, caches["val"].y),
                         (caches["test"].X, caches["test"].y))
    lp_secs = (time.perf_counter() - t0) / (len(SEEDS) * len(C_GRID))
    ft = [r["accuracy"] for r in finetuned[5]]
    gap = tu.summarize(np.subtract(ft, lp))
    assert _above_zero(gap), f"fine-tuning minus probe at k=5: {gap}"
    ft_secs = np.mean([r["seconds"] for runs in finetuned.values() for r in runs])
    assert ft_secs > 5 * lp_secs


def test_headline_finetuning_separates_classes(digits_setup, finetuned):
    from sklearn.metrics import silhouette_score

    *_, test, caches = digits_setup
    before = silhouette_score(caches["test"].X, caches["test"].y)
    after = [silhouette_score(tu.FeatureCache.build(r["model"].body, test).X, test.y)
             for r in finetuned[20]]
    assert min(after) > before


def test_headline_forgetting_eval_corrupts_batchnorm(digits_setup):
    source, pool, *_ = digits_setup
    _, val = tu.zoo.source_data("mnist8_cnn")
    model = copy.deepcopy(source)
    before = tu.evaluate(model, tu.make_loader(val, 512))["accuracy"]
    model.train()
    with torch.no_grad():
        for x, _ in tu.make_loader(pool, 64):
            model.body(x)
    assert tu.evaluate(model, tu.make_loader(val, 512))["accuracy"] < before - 0.03
    model2 = copy.deepcopy(source).train()
    tu.extract_features(model2.body, tu.make_loader(pool, 64))  # the right way: no change
    assert tu.evaluate(model2, tu.make_loader(val, 512))["accuracy"] == before


def test_headline_preprocessing_mismatch_hurts_head_more_than_probe(digits_setup):
    source, pool, _, test, _ = digits_setup

    def both(f):
        te = tu.ArrayDataset(f(test.x), test.y)
        head = tu.evaluate(source, tu.make_loader(te, 512))["accuracy"]
        c, _ = tu.probe_curve(tu.FeatureCache.build(source.body, tu.ArrayDataset(f(pool.x), pool.y)),
                              tu.FeatureCache.build(source.body, te), {"lp": tu.linear_probe},
                              ks=(5,), seeds=SEEDS)
        return head, np.array(c["lp"][5].values)

    ok_head, ok_probe = both(lambda x: x)
    for f in (lambda x: 16 * x, lambda x: (x - 0.1307) / 0.3081):
        head, probe = both(f)
        drop = tu.summarize(ok_probe - probe)
        assert ok_head - head > 0.05 and drop.mean + drop.ci95 < ok_head - head
    assert _above_zero(tu.summarize(ok_probe - both(lambda x: 1 - x)[1] - 0.05))
