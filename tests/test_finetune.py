"""Tests for transfer_utils.finetune: L2-SP, gradual unfreezing, LP-FT, k-fold epochs, the grid,
the exercise checker, and reduced re-runs of chapter 3's headline experiments."""

import copy

import numpy as np
import pytest
import torch
from torch import nn

import transfer_utils as tu
from transfer_utils.data import _stratified_folds  # noqa: F401
from transfer_utils.finetune import _choose_epoch


@pytest.fixture(scope="module")
def pair():
    digits = tu.load_digits()
    train, test = tu.split(digits, (0.5, 0.5), seed=0)
    pool, val = tu.split(train, (0.7, 0.3), seed=0)
    return tu.zoo.load("mnist8_cnn"), pool, val, test


def _copy_with_head(src, k=10):
    return tu.replace_head(copy.deepcopy(src), k)


# ---------------------------------------------------------------- L2-SP


def test_l2sp_is_zero_at_the_source_and_exact_after_a_move():
    src = tu.SmallCNN(num_classes=10)
    net = _copy_with_head(src)
    pen = tu.l2sp_penalty(src, net, alpha=0.5)
    assert pen(net).item() == 0.0
    with torch.no_grad():
        net.body.block1.conv.weight.add_(0.1)
    n = net.body.block1.conv.weight.numel()
    assert pen(net).item() == pytest.approx(0.5 / 2 * n * 0.01, rel=1e-4)
    assert pen.distance(net) == pytest.approx((n * 0.01) ** 0.5, rel=1e-4)


def test_l2sp_excludes_the_head_even_when_shapes_match_and_decays_it_with_beta():
    src = tu.SmallCNN(num_classes=10)
    net = _copy_with_head(src, 10)  # same shape as the source head
    pen = tu.l2sp_penalty(src, net, alpha=1.0, beta=2.0)
    assert not any(n.startswith("head") for n in pen.anchors)
    assert set(pen.new) == {"head.weight", "head.bias"}
    expected = sum(p.pow(2).sum() for p in net.head.parameters()).item()  # beta/2 * ||w||^2
    assert pen(net).item() == pytest.approx(expected, rel=1e-5)
    assert "alpha=1" in repr(pen)


def test_l2sp_gradient_pulls_towards_the_anchor():
    src = tu.SmallCNN(num_classes=3)
    net = _copy_with_head(src, 3)
    with torch.no_grad():
        net.body.block2.conv.bias.add_(1.0)
    tu.l2sp_penalty(src, net, alpha=0.3)(net).backward()
    assert torch.allclose(net.body.block2.conv.bias.grad, torch.full_like(net.body.block2.conv.bias, 0.3))
    assert net.body.block1.conv.weight.grad.abs().max() == 0


def test_l2sp_anchor_is_a_copy_of_the_source():
    src = tu.SmallCNN()
    net = _copy_with_head(src)
    pen = tu.l2sp_penalty(src.state_dict(), net, alpha=1.0)
    with torch.no_grad():
        src.body.block1.conv.weight.add_(5.0)
    assert pen(net).item() == 0.0


def test_l2sp_errors():
    src = tu.SmallCNN()
    with pytest.raises(ValueError, match="alpha must be a non-negative number"):
        tu.l2sp_penalty(src, src, alpha=-1)
    with pytest.raises(ValueError, match="beta must be a non-negative number"):
        tu.l2sp_penalty(src, src, alpha=1, beta=-0.1)
    with pytest.raises(TypeError, match=r"source_state \(the pretrained model\) must be"):
        tu.l2sp_penalty([1, 2], src, alpha=1)
    with pytest.raises(TypeError, match="model must be an nn.Module"):
        tu.l2sp_penalty(src, "net", alpha=1)
    with pytest.raises(ValueError, match="anchored nothing"):
        tu.l2sp_penalty(src, tu.MLP(64, hidden=(8,)), alpha=1)
    pen = tu.l2sp_penalty(src, src, alpha=1)
    with pytest.raises(ValueError, match="build the penalty from the model you train"):
        pen(tu.MLP(64, hidden=(8,)))


def test_l2sp_keeps_the_body_closer_in_fit(toy_images):
    src = tu.SmallCNN(num_classes=4, widths=(8, 16))
    tu.fit(src, tu.make_loader(toy_images, 50, shuffle=True), epochs=2, progress=False)
    moved = {}
    for alpha in (0.0, 10.0):
        torch.manual_seed(0)
        net = _copy_with_head(src, 4)
        pen = tu.l2sp_penalty(src, net, alpha=alpha)
        tu.fit(net, tu.make_loader(toy_images, 50, shuffle=True), epochs=3, lr=1e-2, penalty=pen,
               progress=False)
        moved[alpha] = tu.relative_change(src, net)
    assert moved[10.0] < 0.5 * moved[0.0]


# ---------------------------------------------------------------- relative change, table


def test_relative_change_values_and_errors():
    src = tu.SmallCNN()
    net = copy.deepcopy(src)
    assert tu.relative_change(src, net) == 0.0
    with torch.no_grad():
        for p in net.body.parameters():
            p.mul_(3.0)
    assert tu.relative_change(src, net) == pytest.approx(2.0, rel=1e-5)  # the body: all but the head
    assert tu.relative_change(src, net, prefix="head") == 0.0
    with pytest.raises(ValueError, match="found no parameter under 'trunk'.*relative_change\\(source, model\\)"):
        tu.relative_change(src, net, prefix="trunk")


def test_results_table_formats_summaries_numbers_and_strings():
    text = tu.results_table({"a": {1: tu.summarize([0.5, 0.7]), "n": 3},
                             "bb": {1: 0.25, "n": "x"}}, title="method")
    lines = text.splitlines()
    assert lines[0].split("|")[1].strip() == "k=1" and set(lines[1]) <= {"-", "+"}
    assert "0.600 ± 0.141" in lines[2] and "0.250" in lines[3] and lines[3].endswith("x")
    assert "lr 0.001" in tu.results_table({"r": {1e-3: 1.0}}, column_format="lr {:g}")
    with pytest.raises(ValueError, match="no rows to format"):
        tu.results_table({})
    with pytest.raises(TypeError, match="each row must be a mapping"):
        tu.results_table({"a": 1})


# ---------------------------------------------------------------- gradual unfreezing


def test_gradual_unfreezing_unfreezes_top_down_every_n_epochs():
    net = tu.SmallCNN()
    opt = torch.optim.Adam(tu.param_groups(net, {"body": 1e-4, "head": 1e-3}))
    sched = tu.GradualUnfreezing(net, opt, ["body.block3", ["body.block2", "body.block1"]], every=2)
    trainable = lambda: sorted({n.split(".")[1] for n, p in net.named_parameters()  # noqa: E731
                                if p.requires_grad and n.startswith("body")})
    assert trainable() == [] and net.head.weight.requires_grad
    net.train()
    assert not net.body.block3.bn.training  # frozen BatchNorm stays in eval mode
    sched(1, net, None)
    assert trainable() == []
    sched(2, net, None)
    assert trainable() == ["block3"] and net.body.block3.bn.training
    sched(4, net, None)
    assert trainable() == ["block1", "block2", "block3"] and sched.done
    sched(6, net, None)  # nothing left: no error
    assert [e for e, _ in sched.log] == [0, 2, 4]
    assert "2 unfrozen" in repr(sched)


def test_gradual_unfreezing_in_fit_keeps_lower_blocks_fixed_until_their_turn(toy_images):
    net = tu.SmallCNN(num_classes=4, widths=(8, 8, 8))
    block1 = net.body.block1.conv.weight.detach().clone()
    opt = torch.optim.Adam(tu.param_groups(net, {"body": 1e-2, "head": 1e-2}))
    sched = tu.GradualUnfreezing(net, opt, ["body.block3", "body.block2", "body.block1"], every=1)
    tu.fit(net, tu.make_loader(toy_images, 50), epochs=2, optimizer=opt, on_epoch_end=sched,
           progress=False)
    assert torch.equal(block1, net.body.block1.conv.weight)  # block1 joins after epoch 3
    assert not sched.done
    sched(3, net, None)
    tu.fit(net, tu.make_loader(toy_images, 50), epochs=1, optimizer=opt, progress=False)
    assert not torch.equal(block1, net.body.block1.conv.weight)


def test_gradual_unfreezing_errors():
    net = tu.SmallCNN()
    head_only = torch.optim.Adam(net.head.parameters())
    with pytest.raises(ValueError, match="the optimizer does not hold"):
        tu.GradualUnfreezing(net, head_only, ["body.block3"])
    assert all(p.requires_grad for p in net.parameters())  # the failed schedule undid its freeze
    opt = torch.optim.Adam(net.parameters())
    with pytest.raises(ValueError, match=r"every \(epochs between unfreezing steps\) must be a positive integer"):
        tu.GradualUnfreezing(net, opt, ["body.block3"], every=0)
    with pytest.raises(ValueError, match="non-empty list of name prefixes"):
        tu.GradualUnfreezing(net, opt, "body.block3")
    with pytest.raises(ValueError, match="no module or parameter"):
        tu.GradualUnfreezing(net, opt, ["body.block9"])


# ---------------------------------------------------------------- LP-FT


def test_lp_ft_fits_the_head_to_convergence_then_a_zero_body_rate_keeps_the_body(toy_images):
    net = tu.SmallCNN(num_classes=4, widths=(8, 8))
    conv = net.body.block1.conv.weight.detach().clone()
    head = net.head.weight.detach().clone()
    probe, ft = tu.lp_ft(net, tu.make_loader(toy_images, 50, shuffle=True), epochs=1,
                         body_lr=0.0, head_lr=1e-3, progress=False)
    assert probe["train_accuracy"] > 0.9 and probe["iterations"] > 0 and ft.epochs == 1
    assert torch.equal(conv, net.body.block1.conv.weight)
    assert not torch.equal(head, net.head.weight)
    assert all(p.requires_grad for p in net.parameters())


def test_lp_ft_probe_equals_fit_linear_head_and_stage_two_moves_the_body(toy_images):
    torch.manual_seed(0)
    net = tu.SmallCNN(num_classes=4, widths=(8, 8))
    twin = copy.deepcopy(net)
    conv = net.body.block1.conv.weight.detach().clone()
    data = tu.make_loader(toy_images, 50)
    probe, ft = tu.lp_ft(net, tu.make_loader(toy_images, 50, shuffle=True), steps=3, lr=1e-2,
                         probe_data=data, progress=False)
    assert ft.steps == 3 and not torch.equal(conv, net.body.block1.conv.weight)
    tu.fit_linear_head(twin, data)
    assert probe["train_accuracy"] == tu.fit_linear_head(copy.deepcopy(twin), data)[
        "train_accuracy"]


def test_lp_ft_errors(toy_images):
    net = tu.SmallCNN(num_classes=4)
    loader = tu.make_loader(toy_images, 50)
    with pytest.raises(TypeError, match="exactly one of epochs="):
        tu.lp_ft(net, loader)
    with pytest.raises(TypeError, match="builds its own optimizer"):
        tu.lp_ft(net, loader, epochs=1, optimizer=None)
    with pytest.raises(TypeError, match="give both body_lr and head_lr"):
        tu.lp_ft(net, loader, epochs=1, body_lr=1e-4)
    with pytest.raises(TypeError, match="cannot find the head"):
        tu.lp_ft(nn.Sequential(nn.Flatten(), nn.Linear(64, 4)), loader, epochs=1)


# ---------------------------------------------------------------- k-fold epochs


def test_stratified_folds_partition_and_balance_classes():
    y = torch.arange(50) % 10
    folds = _stratified_folds(y, 5, seed=0)
    assert sorted(torch.cat(folds).tolist()) == list(range(50))
    assert all(sorted(y[f].tolist()) == list(range(10)) for f in folds)


def test_choose_epoch_best_and_one_standard_error_rule():
    mean = np.array([1.0, 0.5, 0.42, 0.40, 0.41])
    se = np.full(5, 0.05)
    assert _choose_epoch(mean, se, True, "best") == 4
    assert _choose_epoch(mean, se, True, "1se") == 3
    acc = np.array([0.5, 0.8, 0.9, 0.88])
    assert _choose_epoch(acc, np.full(4, 0.02), False, "best") == 3
    assert _choose_epoch(acc, np.full(4, 0.02), False, "1se") == 3
    assert _choose_epoch(acc, np.full(4, 0.15), False, "1se") == 2


def test_kfold_epochs_records_every_fold_and_epoch(toy_images):
    ds = tu.few_shot(toy_images, 6, seed=0)
    res = tu.kfold_epochs(lambda: tu.SmallCNN(num_classes=4, widths=(8,)), ds, max_epochs=3,
                          folds=3, seed=1)
    assert res.val_loss.shape == res.val_acc.shape == (3, 3)
    assert 1 <= res.best_epoch <= 3 and res.folds == 3 and res.max_epochs == 3
    mean, se = res.curve("accuracy")
    assert mean.shape == (3,) and (se >= 0).all()
    assert "best_epoch" in repr(res)
    fig = tu.plot_kfold(res)
    assert fig.axes and fig.axes[0].get_xlabel() == "epoch"
    with pytest.raises(ValueError, match="reference has no validation curve"):
        tu.plot_kfold(res, reference=tu.History(train_loss=[1.0], train_acc=[0.5]))
    with pytest.raises(ValueError, match="metric must be"):
        res.curve("f1")


def test_kfold_epochs_errors(toy_images):
    ds = tu.few_shot(toy_images, 2, seed=0)
    make = lambda: tu.SmallCNN(num_classes=4)  # noqa: E731
    with pytest.raises(ValueError, match="at least 3 examples of every class"):
        tu.kfold_epochs(make, ds, max_epochs=1, folds=3)
    with pytest.raises(ValueError, match="folds must be an integer >= 2"):
        tu.kfold_epochs(make, ds, max_epochs=1, folds=1)
    with pytest.raises(ValueError, match="folds must be a positive integer"):
        tu.kfold_epochs(make, ds, max_epochs=1, folds=2.0)
    with pytest.raises(ValueError, match="max_epochs must be a positive"):
        tu.kfold_epochs(make, ds, max_epochs=0, folds=2)
    with pytest.raises(ValueError, match="criterion must be"):
        tu.kfold_epochs(make, ds, max_epochs=1, folds=2, criterion="f1")
    with pytest.raises(ValueError, match="rule must be"):
        tu.kfold_epochs(make, ds, max_epochs=1, folds=2, rule="2se")
    with pytest.raises(TypeError, match="expected a dataset of \\(x, y\\) items, got a list"):
        tu.kfold_epochs(make, [(1, 2)], max_epochs=1, folds=2)


# ---------------------------------------------------------------- forgetting


def test_source_task_accuracy_puts_the_source_head_back(pair):
    src, _, _, _ = pair
    _, source_val = tu.zoo.source_data("mnist8_cnn")
    net = _copy_with_head(src, 10)
    head = net.head.weight.detach().clone()
    direct = tu.evaluate(src, tu.make_loader(source_val, 512))["accuracy"]
    assert tu.source_task_accuracy(src, net, source_val) == pytest.approx(direct)
    assert torch.equal(head, net.head.weight)  # the model itself is not changed
    with pytest.raises(ValueError, match="data has 5 classes"):
        tu.source_task_accuracy(src, net, tu.class_split(source_val, [0, 1, 2, 3, 4]))
    with pytest.raises(ValueError, match="source head reads 128 features"):
        tu.source_task_accuracy(src, tu.SmallCNN(), source_val)


# ---------------------------------------------------------------- the grid


def test_transfer_grid_trains_each_configuration_once(pair):
    src, pool, val, _ = pair
    grid = tu.TransferGrid(src, pool, seeds=(0, 1), steps=3, device="cpu")
    s = grid.accuracy("frozen", 1, val)
    assert s.n == 2 and len(grid) == 2
    again = grid.accuracy("frozen", 1, val)
    assert again.values == s.values and len(grid) == 2
    curve = grid.curve("finetune", [1, 2], val, body_lr=1e-4, head_lr=1e-3)
    assert sorted(curve) == [1, 2] and len(grid) == 6
    grid.models("finetune", 1, body_lr=1e-3, head_lr=1e-3)
    assert len(grid) == 8  # a different body_lr is a different run
    assert grid.score(lambda m: 1.0, "frozen", 1).mean == 1.0
    assert "8 trained runs" in repr(grid)


def test_transfer_grid_partial_extremes(pair):
    """Chapter 3 reads 0 frozen blocks as `finetune`; with every block frozen only the head moves."""
    src, pool, val, _ = pair
    grid = tu.TransferGrid(src, pool, seeds=(0,), steps=4, device="cpu")
    lrs = {"body_lr": 1e-4, "head_lr": 1e-3}
    a = grid.accuracy("partial", 1, val, freeze_blocks=0, **lrs)
    assert a.values == grid.accuracy("finetune", 1, val, **lrs).values
    blocks = tu.body_blocks(src)
    frozen = grid.model("partial", 1, 0, freeze_blocks=len(blocks), **lrs)
    assert tu.relative_change(src, frozen) == 0.0


def test_transfer_grid_errors(pair):
    src, pool, val, _ = pair
    with pytest.raises(TypeError, match="train must be a dataset"):
        tu.TransferGrid(src, [1, 2])
    with pytest.raises(ValueError, match="at least one seed"):
        tu.TransferGrid(src, pool, seeds=())
    grid = tu.TransferGrid(src, pool, seeds=(0,), steps=2)
    with pytest.raises(TypeError, match="data must be a dataset"):
        grid.accuracy("frozen", 1, "val")
    with pytest.raises(ValueError, match="at least one k"):
        grid.curve("frozen", [], val)


# ---------------------------------------------------------------- exercise checker


def _groups(net, body_lr, head_lr):
    return [{"params": net.body.parameters(), "lr": body_lr},
            {"params": net.head.parameters(), "lr": head_lr}]


def test_check_param_groups_accepts_correct_answers(capsys):
    net = tu.SmallCNN()
    tu.check_param_groups(_groups(net, 1e-4, 1e-3), net)
    assert "Correct" in capsys.readouterr().out
    tu.check_param_groups(tu.param_groups(net, {"body": 3e-5, "head": 3e-4}), net)
    tu.check_param_groups(torch.optim.Adam(_groups(net, 1e-4, 1e-3)), net)
    tu.check_param_groups(_groups(net, 1e-4, 2e-4), net, ratio=2)


@pytest.mark.parametrize("make, hint", [
    (lambda n: [{"params": n.parameters(), "lr": 1e-3}], "both learn at 0.001"),
    (lambda n: _groups(n, 1e-3, 1e-3), "both learn at 0.001"),
    (lambda n: _groups(n, 1e-3, 1e-4), "wrong way round"),
    (lambda n: _groups(n, 1e-4, 3e-4), "3x faster"),
    (lambda n: _groups(n, 0.0, 1e-3), "freezes the body"),
    (lambda n: [{"params": n.head.parameters(), "lr": 1e-3}], "in no group"),
    (lambda n: _groups(n, 1e-4, 1e-3) + [{"params": n.head.parameters(), "lr": 1e-3}],
     "appears in two groups"),
    (lambda n: [{"params": n.body.parameters()}, {"params": n.head.parameters(), "lr": 1e-3}],
     "has no 'lr'"),
    (lambda n: {"body": 1e-4, "head": 1e-3}, "list of dicts"),
    (lambda n: _groups(tu.SmallCNN(), 1e-4, 1e-3), "not the model's"),
    (lambda n: [{"params": n.body.block1.parameters(), "lr": 1e-5},
                {"params": [p for name, p in n.body.named_parameters()
                            if not name.startswith("block1")], "lr": 1e-4},
                {"params": n.head.parameters(), "lr": 1e-3}], "one rate for the whole body"),
])
def test_check_param_groups_rejects_with_a_hint(make, hint):
    net = tu.SmallCNN()
    with pytest.raises(AssertionError, match=hint):
        tu.check_param_groups(make(net), net)


# ---------------------------------------------------------------- chapter 3, reduced


CHOSEN = {"scratch": {"lr": 1e-2}, "finetune": {"body_lr": 1e-3, "head_lr": 1e-3},
          "frozen": {"C": 1.0}}  # what chapter 3 chooses on its validation split


@pytest.fixture(scope="module")
def ch3_grid(pair):
    src, pool, _, _ = pair
    return tu.TransferGrid(src, pool, seeds=(0, 1), steps=60, device="cpu")


def test_headline_transfer_beats_scratch_most_when_labels_are_few(pair, ch3_grid):
    """Chapter 3's method comparison, reduced: with each method's chosen setting every
    transfer method beats scratch at k=1, and fine-tuning's gain over scratch is larger
    at k=1 than at k=20."""
    _, _, _, test = pair
    kw = {**CHOSEN, "lp-ft": {**CHOSEN["finetune"], **CHOSEN["frozen"]}}
    acc = {(m, k): ch3_grid.accuracy(m, k, test, **kw[m]).mean
           for m in ("scratch", "finetune", "frozen", "lp-ft") for k in (1, 20)}
    for m in ("finetune", "frozen", "lp-ft"):
        assert acc[(m, 1)] > acc[("scratch", 1)] + 0.05, m
    gain = {k: acc[("finetune", k)] - acc[("scratch", k)] for k in (1, 20)}
    assert gain[1] > gain[20]


def test_headline_converged_frozen_head_ties_finetuning_then_falls_behind(pair, ch3_grid):
    """Chapter 3: a frozen body with a head fitted to convergence is within noise of
    fine-tuning at k=5, and behind it at k=20 (where it is no better than scratch)."""
    _, _, _, test = pair
    acc = {(m, k): ch3_grid.accuracy(m, k, test, **CHOSEN[m]).values
           for m in ("scratch", "finetune", "frozen") for k in (5, 20)}
    gap5 = np.subtract(acc[("frozen", 5)], acc[("finetune", 5)])
    gap20 = np.subtract(acc[("frozen", 20)], acc[("finetune", 20)])
    assert abs(gap5.mean()) < 0.03
    assert (gap20 < 0).all()
    assert abs(np.mean(acc[("frozen", 20)]) - np.mean(acc[("scratch", 20)])) < 0.03


def test_headline_too_high_body_rate_loses_the_transfer(pair, ch3_grid):
    """Chapter 3's rate grid, reduced: body lr 1e-2 moves the body more than five times
    as far as 1e-3 and loses validation accuracy; a head ten times slower than the body
    changes little."""
    src, _, val, _ = pair
    acc = {(b, h): ch3_grid.accuracy("finetune", 5, val, body_lr=b, head_lr=h).mean
           for b, h in ((1e-3, 1e-3), (1e-2, 1e-3), (1e-3, 1e-4))}
    assert acc[(1e-2, 1e-3)] < acc[(1e-3, 1e-3)] - 0.01
    assert abs(acc[(1e-3, 1e-4)] - acc[(1e-3, 1e-3)]) < 0.02
    moved = [ch3_grid.score(lambda m: tu.relative_change(src, m), "finetune", 5, body_lr=lr,
                            head_lr=1e-3).mean
             for lr in (1e-3, 1e-2)]
    assert moved[1] > 5 * moved[0]


def test_headline_batchnorm_drift_in_a_frozen_body(pair):
    """Chapter 3's BatchNorm pitfall: train-mode passes change a frozen body's outputs and its
    source accuracy unless bn_eval=True, and no weight changes either way."""
    src, pool, _, test = pair
    _, source_val = tu.zoo.source_data("mnist8_cnn")
    shots = tu.few_shot(pool, 1, seed=0)
    out = {}
    for bn_eval in (False, True):
        net = tu.freeze(_copy_with_head(src), "body", bn_eval=bn_eval)
        conv = net.body.block2.conv.weight.detach().clone()
        before = net.eval().body(test.x[:64]).detach()
        net.train()
        with torch.no_grad():
            for _ in range(20):
                net(shots.x)
        after = net.eval().body(test.x[:64]).detach()
        assert torch.equal(conv, net.body.block2.conv.weight)
        out[bn_eval] = ((after - before).norm() / before.norm()).item(), \
            tu.source_task_accuracy(src, net, source_val)
    source_acc = tu.evaluate(src, tu.make_loader(source_val, 512))["accuracy"]
    assert out[True] == (0.0, source_acc)
    assert out[False][0] > 0.05 and out[False][1] < source_acc - 0.05


def _with_source_statistics(src, net):
    out = copy.deepcopy(net)
    out.load_state_dict({n: t for n, t in src.state_dict().items() if "running_" in n},
                        strict=False)
    return out


def test_headline_l2sp_and_low_body_rate_keep_the_body_closer(pair, ch3_grid):
    """Chapter 3's forgetting experiment, reduced: L2-SP and a low body rate move the body
    less than equal rates (60 steps, k=5)."""
    src, pool, _, _ = pair
    moved = {}
    for alpha in (0.0, 0.1):
        per_seed = []
        for seed in (0, 1):
            tu.seed_everything(seed)
            net = _copy_with_head(src)
            loader = tu.make_loader(tu.few_shot(pool, 5, seed=seed), 32, shuffle=True, seed=seed)
            pen = tu.l2sp_penalty(src, net, alpha) if alpha else None
            tu.fit(net, loader, steps=60, lr=1e-3, penalty=pen, progress=False, device="cpu")
            per_seed.append(tu.relative_change(src, net))
        moved[alpha] = np.mean(per_seed)
    low = ch3_grid.score(lambda m: tu.relative_change(src, m), "finetune", 5, body_lr=1e-4,
                         head_lr=1e-3).mean
    assert moved[0.1] < moved[0.0]
    assert low < moved[0.0]


def test_headline_source_statistics_help_only_a_body_that_barely_moved(pair, ch3_grid):
    """Chapter 3's ablation: putting the source's BatchNorm statistics back into a body
    fine-tuned at body lr 1e-4 raises its source accuracy; at equal rates (1e-3) it does
    not (the weights have adapted to the target's statistics)."""
    src, _, _, _ = pair
    _, source_val = tu.zoo.source_data("mnist8_cnn")

    def gain(body_lr):
        nets = ch3_grid.models("finetune", 5, body_lr=body_lr, head_lr=1e-3)
        return np.mean([tu.source_task_accuracy(src, _with_source_statistics(src, n), source_val)
                        - tu.source_task_accuracy(src, n, source_val) for n in nets])

    low, equal = gain(1e-4), gain(1e-3)
    assert low > 0.03
    assert equal < low
