"""Tests for transfer_utils.transferability (chapter 7): every helper, and each headline claim reduced."""

import math

import numpy as np
import pytest
import torch

import transfer_utils as tu


@pytest.fixture(scope="module")
def neg():
    """Chapter 7's running example: digits 0-4 source, digits 5-9 target."""
    src = tu.zoo.load("digits04_cnn", device="cpu")
    _, src_val = tu.zoo.source_data("digits04_cnn")
    target = tu.class_split(tu.load_digits(), [5, 6, 7, 8, 9])
    pool, test = tu.split(target, (0.5, 0.5), seed=0)
    return src, src_val, pool, test


@pytest.fixture(scope="module")
def tuned(neg):
    """Fine-tuned copies at k=5, seed 0: body lr 1e-4 and 1e-2 (shared by several tests)."""
    src, _, pool, test = neg
    return tu.run_variants({"lo": ("finetune", {"body_lr": 1e-4, "head_lr": 1e-3}),
                            "hot": ("finetune", {"body_lr": 1e-2, "head_lr": 1e-3})},
                           src, pool, test, ks=[5], seeds=[0], steps=100, device="cpu")


# --------------------------------------------------------------------------- experiments


def test_run_variants_keeps_models_and_shots(neg):
    src, _, pool, test = neg
    runs = tu.run_variants({"a": "frozen", "b": ("frozen", {"lr": 1e-2})}, src, pool, test,
                           ks=[1, 2], seeds=[0, 1], steps=3, device="cpu")
    assert set(runs) == {"a", "b"} and set(runs["a"]) == {1, 2}
    r = runs["b"][2][1]
    assert r["k"] == 2 and r["seed"] == 1 and len(r["shots"]) == 10
    assert r["model"].head.out_features == 5
    # both variants saw the same shots
    assert torch.equal(runs["a"][2][1]["shots"].y, r["shots"].y)


def test_run_variants_errors(neg):
    src, _, pool, test = neg
    with pytest.raises(ValueError, match="at least one variant"):
        tu.run_variants({}, src, pool, test, ks=[1])
    with pytest.raises(ValueError, match="at least one k"):
        tu.run_variants({"a": "frozen"}, src, pool, test, ks=[])
    with pytest.raises(ValueError, match="method of variant 'a' must be one of .* got 'fine-tune'"):
        tu.run_variants({"a": "fine-tune"}, src, pool, test, ks=[1], seeds=[0], steps=1)


def _fake_runs():
    return {"base": {1: [{"accuracy": 0.5, "seed": 0}, {"accuracy": 0.7, "seed": 1}]},
            "new": {1: [{"accuracy": 0.6, "seed": 0}, {"accuracy": 0.9, "seed": 1}]}}


def test_summarize_runs_plain_paired_and_callable():
    runs = _fake_runs()
    s = tu.summarize_runs(runs)
    assert s["new"][1].mean == pytest.approx(0.75)
    g = tu.summarize_runs(runs, baseline="base")
    assert set(g) == {"new"} and g["new"][1].values == pytest.approx((0.1, 0.2))
    assert tu.summarize_runs(runs, lambda r: 2 * r["accuracy"])["base"][1].mean == pytest.approx(1.2)
    with pytest.raises(ValueError, match="baseline 'nope' is not one of"):
        tu.summarize_runs(runs, baseline="nope")
    runs["new"][1][1]["seed"] = 5
    with pytest.raises(ValueError, match="same seeds"):
        tu.summarize_runs(runs, baseline="base")


# --------------------------------------------------------------------------- scores


def _evidence(f, y, alpha, beta):
    # Bishop (3.86), written out with dense matrices: the independent reference for LogME
    n, d = f.shape
    A = alpha * np.eye(d) + beta * f.T @ f
    m = beta * np.linalg.solve(A, f.T @ y)
    e = beta / 2 * np.sum((y - f @ m) ** 2) + alpha / 2 * m @ m
    return (d / 2 * np.log(alpha) + n / 2 * np.log(beta) - e - np.linalg.slogdet(A)[1] / 2
            - n / 2 * np.log(2 * np.pi))


@pytest.mark.parametrize("n,d", [(40, 5), (12, 20)])
def test_logme_is_the_maximum_evidence(n, d):
    from scipy.optimize import minimize

    rng = np.random.default_rng(0)
    f = rng.normal(size=(n, d))
    y = np.arange(n) % 3
    want = []
    for c in range(3):
        yc = (y == c).astype(float)
        res = minimize(lambda p, yc=yc: -_evidence(f, yc, *np.exp(p)), x0=[0.0, 0.0], method="Nelder-Mead",
                       options={"xatol": 1e-8, "fatol": 1e-10, "maxiter": 4000})
        want.append(-res.fun / n)
    assert tu.logme(f, y) == pytest.approx(np.mean(want), abs=1e-4)


def test_logme_prefers_informative_features_and_checks_inputs():
    g = torch.Generator().manual_seed(0)
    y = torch.arange(90) % 3
    good = torch.nn.functional.one_hot(y).float() + 0.2 * torch.randn(90, 3, generator=g)
    assert tu.logme(good, y) > tu.logme(torch.randn(90, 3, generator=g), y)
    with pytest.raises(ValueError, match="2-D"):
        tu.logme(torch.zeros(4, 2, 2), y[:4])
    with pytest.raises(ValueError, match="4 rows .* 3 labels"):
        tu.logme(torch.zeros(4, 2), y[:3])
    with pytest.raises(ValueError, match="two classes"):
        tu.logme(torch.randn(4, 2), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="NaN"):
        tu.logme(torch.full((4, 2), float("nan")), y[:4])


def test_leep_extremes_and_errors():
    y = torch.tensor([0, 1, 0, 1])
    assert tu.leep(torch.eye(2)[y], y) == pytest.approx(0.0)
    # an uninformative source predicts only the class prior
    assert tu.leep(torch.full((4, 3), 1 / 3), y) == pytest.approx(math.log(0.5))
    p = torch.softmax(torch.randn(30, 4, generator=torch.Generator().manual_seed(1)), 1)
    yy = torch.arange(30) % 3
    assert math.log(1 / 3) - 1e-9 <= tu.leep(p, yy) <= 0
    with pytest.raises(ValueError, match="softmax"):
        tu.leep(torch.randn(4, 2), y)
    with pytest.raises(ValueError, match="2-D"):
        tu.leep(torch.ones(4) / 4, y)
    with pytest.raises(ValueError, match="4 rows .* 3 labels"):
        tu.leep(torch.eye(2)[y], y[:3])


def test_source_confusion_rows_are_distributions_and_explain_negative_transfer(neg):
    src, _, _, test = neg
    conf = tu.source_confusion(src, test, device="cpu")
    assert conf.shape == (5, 5)
    assert torch.allclose(conf.sum(1), torch.ones(5, dtype=conf.dtype))
    # chapter 7's "why": several target digits look like the same source digit
    assert len(set(conf.argmax(1).tolist())) < 5
    with pytest.raises(ValueError, match="no examples"):
        tu.source_confusion(src, tu.ArrayDataset(test.x[:3], torch.zeros(3), classes="ab"))


def test_cross_validate_uses_every_example_once_and_checks_folds():
    ds = tu.few_shot(tu.load_digits(), 4, seed=0)
    seen = []

    def fn(tr, va):
        assert len(tr) + len(va) == len(ds)
        assert sorted(va.y.tolist()) == list(range(10))  # stratified: one per class
        seen.append(va.x.flatten(1).sum(1))
        return 1.0

    s = tu.cross_validate(fn, ds, folds=4, seed=0)
    assert s.n == 4 and s.mean == 1.0
    assert sorted(torch.cat(seen).tolist()) == sorted(ds.x.flatten(1).sum(1).tolist())
    with pytest.raises(ValueError, match="folds must be an integer >= 2"):
        tu.cross_validate(fn, ds, folds=1)
    with pytest.raises(ValueError, match="use folds <= 4"):
        tu.cross_validate(fn, ds, folds=5)


def test_transferability_ranks_sources_like_the_chapter(neg):
    """Chapter 7's detection claim, one 5-shot set: digits-0-4 features < raw pixels < MNIST."""
    src, _, pool, _ = neg
    shots = tu.few_shot(pool, 5, seed=0)
    pix = tu.transferability(None, shots, device="cpu")
    bad = tu.transferability(src, shots, device="cpu")
    good = tu.transferability(tu.zoo.load("mnist8_cnn"), shots, device="cpu")
    assert math.isnan(pix["leep"]) and bad["leep"] < good["leep"] <= 0
    for key in ("probe", "logme"):
        assert bad[key] < pix[key] < good[key], key
    with pytest.raises(TypeError, match="pass None for raw pixels"):
        tu.transferability(torch.nn.Linear(64, 5), shots)


def test_permute_pixels_is_one_fixed_permutation():
    ds = tu.load_digits()
    p = tu.permute_pixels(ds, seed=3)
    assert p.x.shape == ds.x.shape and torch.equal(p.y, ds.y)
    assert not torch.equal(p.x, ds.x)
    # the same permutation for every image: recover it from one image, apply to all
    assert torch.equal(tu.permute_pixels(ds, seed=3).x, p.x)
    flat, pflat = ds.x.flatten(1), p.x.flatten(1)
    assert torch.equal(flat.sum(1), pflat.sum(1))
    with pytest.raises(ValueError, match=r"\[N, C, ...\]"):
        tu.permute_pixels(tu.ArrayDataset(torch.zeros(3, 4), torch.zeros(3)))


# --------------------------------------------------------------------------- forgetting


def test_forgetting_grows_with_body_learning_rate(neg, tuned):
    """Chapter 7's forgetting claim, reduced to one seed."""
    src, src_val, _, _ = neg
    lo = tu.forgetting(src, tuned["lo"][5][0]["model"], src_val, device="cpu")
    hot = tu.forgetting(src, tuned["hot"][5][0]["model"], src_val, device="cpu")
    assert lo["before"] == hot["before"] > 0.95
    assert lo["drop"] < 0.05 and hot["drop"] > 0.3
    # while the target accuracy hardly differs
    assert abs(tuned["lo"][5][0]["accuracy"] - tuned["hot"][5][0]["accuracy"]) < 0.08
    assert tu.forgetting(src, src, src_val)["drop"] == 0.0
    with pytest.raises(TypeError, match=r"cannot find the output layer \(head\) of Linear"):
        tu.forgetting(src, torch.nn.Linear(2, 2), src_val)


# --------------------------------------------------------------------------- CKA


def test_cka_matrix_identity_shape_and_depth_claim(neg, tuned):
    src, _, _, test = neg
    layers = ["body.block1", "body.block2", "body.block3"]
    loader = tu.make_loader(test, 512)
    same = tu.cka_matrix(src, src, loader, layers, device="cpu")
    assert same.shape == (3, 3) and torch.allclose(same.diagonal(), torch.ones(3, dtype=same.dtype))
    M = tu.cka_matrix(src, tuned["hot"][5][0]["model"], loader, layers, ["body.block3"])
    assert M.shape == (3, 1)
    d = tu.cka_matrix(src, tuned["hot"][5][0]["model"], loader, layers).diagonal()
    assert d[0] > d[2], "chapter 7: fine-tuning changes the last block more than the first"
    same_debiased = tu.cka_matrix(src, src, loader, layers, debiased=True)
    assert torch.allclose(same_debiased.diagonal(), torch.ones(3, dtype=same_debiased.dtype))
    db = tu.cka_matrix(src, tuned["hot"][5][0]["model"], loader, layers,
                       debiased=True).diagonal()
    # chapter 7: on these trained layers the two estimators agree (512 features, 448 images)
    assert db[0] > db[2] and (db - d).abs().max() < 0.01
    with pytest.raises(ValueError, match="at least one layer"):
        tu.cka_matrix(src, src, loader, [])
    with pytest.raises(ValueError, match="no submodule named 'body.nope'"):
        tu.cka_matrix(src, src, loader, ["body.nope"])


def test_plots_return_figures_and_check_shapes():
    import matplotlib.pyplot as plt

    fig = tu.plot_heatmap(torch.eye(2), ["a", "b"], ["c", "d"], title="t")
    assert fig.axes and fig.axes[0].get_title() == "t"
    with pytest.raises(ValueError, match="2 row and 3 column"):
        tu.plot_heatmap(torch.eye(2), ["a", "b"], ["c", "d", "e"])
    s = tu.summarize([0.5, 0.6])
    fig2 = tu.plot_bars({"x": {"g1": s, "g2": s}, "y": {"g1": s}}, ylabel="acc", ylim=(0, 1))
    assert len(fig2.axes[0].patches) == 3
    with pytest.raises(ValueError, match="at least one value"):
        tu.plot_bars({})
    with pytest.raises(TypeError, match="Summary"):
        tu.plot_bars({"x": {"g": 0.5}})
    plt.close("all")


# --------------------------------------------------------------------------- privacy


def test_membership_inference_fine_tuned_few_shot_model_leaks_more(neg, tuned):
    """Chapter 7's privacy claim: a model fit to 25 images leaks membership, the zoo model little."""
    src, src_val, _, test = neg
    r = tuned["lo"][5][0]
    small = tu.membership_inference(r["model"], r["shots"], tu.few_shot(test, 5, seed=100))
    train, val = tu.zoo.source_data("digits04_cnn")
    big = tu.membership_inference(src, train.subset(range(len(val))), val)
    assert 0.0 <= big["auc"] <= 1.0 and 0.0 <= big["advantage"] <= 1.0
    assert big["auc"] < 0.6 and small["auc"] > big["auc"] + 0.25
    assert small["member_conf"] > small["nonmember_conf"]
    with pytest.raises(ValueError, match="both hold examples"):
        tu.membership_inference(src, val.subset([]), val)


def test_membership_inference_is_half_for_identical_sets():
    ds = tu.few_shot(tu.load_digits(), 3, seed=0)
    r = tu.membership_inference(tu.SmallCNN(), ds, ds)
    assert r["auc"] == pytest.approx(0.5) and r["advantage"] == pytest.approx(0.0)


# --------------------------------------------------------------------------- cost


def test_memory_footprint_frozen_body_is_cheap_and_exact_for_weights():
    net = tu.SmallCNN(5, widths=(32, 64, 128))
    x = torch.zeros(25, 1, 8, 8)
    full = tu.memory_footprint(net, x)
    n = sum(p.numel() for p in net.parameters())
    assert full["weights"] == full["gradients"] == 4 * n and full["optimizer"] == 8 * n
    assert full["total"] == full["weights"] * 4 + full["activations"]
    frozen = tu.memory_footprint(tu.freeze(net, "body"), x, optimizer_states=0)
    assert frozen["optimizer"] == 0 and frozen["gradients"] == 4 * (128 * 5 + 5)
    assert frozen["activations"] < 0.1 * full["activations"]
    assert net.training is True  # mode kept (SmallCNN starts in train mode)
    fresh = tu.SmallCNN().eval()
    stats = fresh.body.block2.bn.running_mean.clone()
    tu.memory_footprint(fresh, torch.randn(25, 1, 8, 8))
    assert not fresh.training and torch.equal(fresh.body.block2.bn.running_mean, stats)
    with pytest.raises(TypeError, match="input tensor"):
        tu.memory_footprint(net, [x])
    with pytest.raises(ValueError, match="no parameters"):
        tu.memory_footprint(torch.nn.ReLU(), x)


def test_cost_table_and_format_table(neg):
    src, _, pool, test = neg
    runs = tu.run_variants({"frozen": "frozen", "fine-tune": "finetune"}, src, pool, test,
                           ks=[1], seeds=[0, 1], steps=3, device="cpu")
    rows = tu.cost_table({m: runs[m][1] for m in runs}, pool.x[:5])
    by = {r["method"]: r for r in rows}
    assert by["frozen"]["trainable"] == 645 and by["fine-tune"]["trainable"] > 90_000
    assert by["frozen"]["train memory (KiB)"] < by["fine-tune"]["train memory (KiB)"]
    assert by["frozen"]["seconds"].n == 2
    text = tu.format_table(rows)
    lines = text.splitlines()
    assert lines[0].startswith("method") and "93,765" in text and len(lines) == 4
    assert " ± " in lines[2]
    with pytest.raises(ValueError, match="runs is empty"):
        tu.cost_table({}, pool.x[:5])
    with pytest.raises(ValueError, match="no results for 'x'"):
        tu.cost_table({"x": []}, pool.x[:5])
    with pytest.raises(ValueError, match="no rows"):
        tu.format_table([])


# --------------------------------------------------------------------------- headline runs


def test_headline_negative_transfer_frozen_features_lose_to_scratch(neg):
    """Chapter 7, reduced: with the settings its validation split chose (scratch lr 3e-3,
    C = 0.1 for the frozen head, C = 1 on pixels), frozen digits 0-4 features lose to
    scratch and to a linear classifier on the raw pixels at k=5."""
    src, _, pool, test = neg
    scratch, frozen, pixels = [], [], []
    for seed in (0, 1):
        shots = tu.few_shot(pool, 5, seed)
        scratch.append(tu.transfer_run("scratch", src, shots, test, seed=seed, steps=100,
                                       lr=3e-3, device="cpu")["accuracy"])
        frozen.append(tu.transfer_run("frozen", src, shots, test, seed=seed, C=0.1,
                                      device="cpu")["accuracy"])
        pixels.append(tu.linear_probe(shots.x.flatten(1), shots.y, test.x.flatten(1),
                                      test.y, C=1.0)["accuracy"])
    assert np.mean(frozen) < np.mean(pixels) and np.mean(frozen) < np.mean(scratch)


def test_headline_validation_split_chooses_a_high_body_rate(neg):
    """Chapter 7's tuning draw: on the validation half of the pool, body lr 1e-2 beats 1e-4."""
    src, _, pool, _ = neg
    tune_pool, tune_val = tu.split(pool, (0.5, 0.5), seed=100)
    shots = tu.few_shot(tune_pool, 5, seed=100)
    val = {lr: tu.transfer_run("finetune", src, shots, tune_val, seed=100, steps=100,
                               body_lr=lr, head_lr=1e-3, device="cpu")["accuracy"]
           for lr in (1e-4, 1e-2)}
    assert val[1e-2] > val[1e-4]


def test_headline_chosen_body_rate_beats_scratch_and_forgets_the_source(neg, tuned):
    """Chapter 7, reduced: at k=5 fine-tuning with body lr 1e-2 beats scratch (lr 3e-3) and
    the very low body rate 1e-4 on the target, while forgetting most of the source task."""
    src, src_val, pool, test = neg
    runs = tu.run_variants({"scratch": ("scratch", {"lr": 3e-3}),
                            "lo": ("finetune", {"body_lr": 1e-4, "head_lr": 1e-3}),
                            "hot": ("finetune", {"body_lr": 1e-2, "head_lr": 1e-3})},
                           src, pool, test, ks=[5], seeds=[0, 1, 2], steps=100, device="cpu")
    s = tu.summarize_runs(runs)
    assert s["hot"][5].mean > s["scratch"][5].mean and s["hot"][5].mean > s["lo"][5].mean
    lo = tu.forgetting(src, tuned["lo"][5][0]["model"], src_val)
    hot = tu.forgetting(src, tuned["hot"][5][0]["model"], src_val)
    assert hot["drop"] > 0.3 and lo["drop"] < 0.02


def test_headline_slow_frozen_head_underfits(neg):
    """A head trained by 100 Adam steps on a frozen body ("partial", all blocks frozen)
    under-fits 100 images at lr 1e-3, fits them at 1e-2; the converged head fits best."""
    src, _, pool, test = neg
    shots = tu.few_shot(pool, 20, seed=0)
    train_acc = {}
    for lr in (1e-3, 1e-2):
        r = tu.transfer_run("partial", src, shots, test, freeze_blocks=3, body_lr=0.0,
                            head_lr=lr, steps=100, device="cpu")
        train_acc[lr] = tu.evaluate(r["model"], tu.make_loader(shots, 512))["accuracy"]
    conv = tu.transfer_run("frozen", src, shots, test, C=0.1, device="cpu")
    train_acc["converged"] = tu.evaluate(conv["model"], tu.make_loader(shots, 512))["accuracy"]
    assert train_acc[1e-3] < 0.95 and train_acc[1e-2] > train_acc[1e-3]
    assert train_acc["converged"] >= train_acc[1e-2]


def test_headline_few_shot_models_high_auc_but_chance_tpr_at_low_fpr(neg, tuned):
    """Chapter 7: the threshold attack separates a 25-image model's members on average
    (AUC well above 0.5) yet at 1% FPR finds about as many members as chance."""
    _, _, _, test = neg
    r = tuned["hot"][5][0]
    nonmembers, _ = tu.split(test, (0.5, 0.5), seed=100)
    sm = tu.membership_scores(r["model"], r["shots"], device="cpu")
    sn = tu.membership_scores(r["model"], nonmembers, device="cpu")
    assert tu.attack_auc(sm, sn) > 0.8 and tu.tpr_at_fpr(sm, sn, 0.01) <= 0.08


# --------------------------------------------------------------------------- exercise


def test_check_leep_accepts_a_correct_solution(capsys):
    tu.check_leep(lambda p, y: tu.leep(p, y))
    assert capsys.readouterr().out.startswith("Correct: your LEEP matches")


def test_check_leep_explains_a_sum_instead_of_a_mean():
    with pytest.raises(AssertionError, match="mean over examples, not the sum"):
        tu.check_leep(lambda p, y: tu.leep(p, y) * len(y))


def test_check_leep_reports_wrong_values_and_crashes():
    with pytest.raises(AssertionError, match=r"should be .* returned 0.00000\nHint: build the joint"):
        tu.check_leep(lambda p, y: 0.0 if p.shape[1] != 3 else tu.leep(p, y))
    with pytest.raises(AssertionError, match="raised NotImplementedError"):
        tu.check_leep(lambda p, y: (_ for _ in ()).throw(NotImplementedError("todo")))
