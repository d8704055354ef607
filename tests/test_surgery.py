"""Tests for transfer_utils.surgery: freezing (with BatchNorm), weight transfer, param groups."""

import copy

import pytest
import torch
from torch import nn

import transfer_utils as tu


def _bns(model):
    return [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]


def test_freeze_prefix_only_stops_those_grads():
    net = tu.freeze(tu.SmallCNN(), "body.block1")
    for name, p in net.named_parameters():
        assert p.requires_grad == (not name.startswith("body.block1."))


def test_freeze_all_then_unfreeze_head():
    net = tu.freeze(tu.SmallCNN())
    assert not any(p.requires_grad for p in net.parameters())
    tu.unfreeze(net, "head")
    assert [n for n, p in net.named_parameters() if p.requires_grad] == ["head.weight", "head.bias"]


def test_prefix_matches_on_module_boundary():
    net = tu.MLP(4, hidden=(3,) * 11, num_classes=2)
    tu.freeze(net, "body.fc1")
    assert not net.body.fc1.weight.requires_grad
    assert net.body.fc11.weight.requires_grad  # "fc1" must not swallow "fc11"


def test_frozen_batchnorm_stays_in_eval_after_train():
    net = tu.freeze(tu.SmallCNN(), "body")
    net.train()
    assert net.training and all(not bn.training for bn in _bns(net))
    stats = copy.deepcopy(net.body.block1.bn.running_mean)
    net(torch.randn(8, 1, 28, 28) * 5 + 3)
    assert torch.equal(stats, net.body.block1.bn.running_mean)


def test_bn_eval_false_lets_statistics_drift():
    net = tu.freeze(tu.SmallCNN(), "body", bn_eval=False)
    net.train()
    stats = net.body.block1.bn.running_mean.clone()
    net(torch.randn(8, 1, 28, 28) * 5 + 3)
    assert not torch.equal(stats, net.body.block1.bn.running_mean)


def test_unfreeze_restores_batchnorm_training_and_deepcopy_works():
    net = tu.freeze(tu.SmallCNN(), "body")
    clone = copy.deepcopy(net)
    clone.train()
    assert all(not bn.training for bn in _bns(clone))
    tu.unfreeze(net, "body")
    net.train()
    assert all(bn.training for bn in _bns(net))
    assert all(p.requires_grad for p in net.parameters())


def test_freeze_unknown_prefix_names_the_options():
    with pytest.raises(ValueError, match=r"no module or parameter .* named 'bdy'.*\['body', 'head'\]"):
        tu.freeze(tu.SmallCNN(), "bdy")
    with pytest.raises(TypeError, match="strings"):
        tu.freeze(tu.SmallCNN(), 3)


def test_transfer_weights_report():
    src, dst = tu.SmallCNN(num_classes=10), tu.SmallCNN(num_classes=5)
    report = tu.transfer_weights(src, dst)
    assert set(report.skipped_shape) == {"head.weight", "head.bias"}
    assert report.skipped_shape["head.weight"] == ((10, 64), (5, 64))
    assert "body.block1.bn.running_mean" in report.copied  # buffers too
    assert torch.equal(src.body.block2.conv.weight, dst.body.block2.conv.weight)
    assert not report.missing and not report.unexpected
    assert "skipped 2 for shape" in str(report)


def test_transfer_weights_missing_and_unexpected():
    src = tu.SmallCNN(widths=(16, 32))
    dst = tu.SmallCNN(widths=(16, 32, 64))
    report = tu.transfer_weights(src.state_dict(), dst)
    assert any(n.startswith("body.block3") for n in report.missing)
    assert report.copied and "body.block1.conv.weight" in report.copied
    src2 = tu.SmallCNN(widths=(16, 32, 64, 64))
    assert any(n.startswith("body.block4") for n in tu.transfer_weights(src2, dst).unexpected)


def test_transfer_weights_nothing_is_an_error():
    with pytest.raises(ValueError, match="copied nothing"):
        tu.transfer_weights(nn.Linear(3, 3), tu.SmallCNN())
    with pytest.raises(TypeError, match="nn.Module"):
        tu.transfer_weights(tu.SmallCNN(), {})


def test_param_groups_longest_prefix_and_frozen_excluded():
    net = tu.SmallCNN()
    tu.freeze(net, "body.block1")
    groups = tu.param_groups(net, {"body": 1e-4, "body.block3": 5e-4, "head": 1e-3})
    by = {g["name"]: g for g in groups}
    assert by["body.block3"]["lr"] == 5e-4
    ids = {id(p) for g in groups for p in g["params"]}
    assert id(net.body.block1.conv.weight) not in ids
    assert id(net.body.block3.conv.weight) in {id(p) for p in by["body.block3"]["params"]}
    assert sum(len(g["params"]) for g in groups) == len(ids)
    torch.optim.SGD(groups)  # accepted by an optimizer


def test_param_groups_default_and_errors():
    net = tu.SmallCNN()
    with pytest.raises(ValueError, match="match no prefix.*default_lr"):
        tu.param_groups(net, {"head": 1e-3})
    groups = tu.param_groups(net, {"head": 1e-3}, default_lr=1e-5)
    assert groups[-1]["name"] == "default" and groups[-1]["lr"] == 1e-5
    with pytest.raises(ValueError, match="must be a non-negative number"):
        tu.param_groups(net, {"head": -1.0})
    with pytest.raises(ValueError, match="named 'neck'"):
        tu.param_groups(net, {"neck": 1e-3})
    with pytest.raises(ValueError, match="no trainable"):
        tu.param_groups(tu.freeze(tu.SmallCNN()), {"head": 1e-3})


def test_trainable_summary():
    net = tu.MLP(4, hidden=(3,), num_classes=2)
    assert tu.trainable_summary(net) == "trainable: 23 / 23 (100.0%)"
    tu.freeze(net, "body")
    assert tu.trainable_summary(net) == "trainable: 8 / 23 (34.8%)"
