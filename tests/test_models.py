"""Tests for transfer_utils.models: shapes, names, head replacement (also torchvision ResNet)."""

import pytest
import torch
from torch import nn

import transfer_utils as tu


@pytest.mark.parametrize("size", [8, 28, 32])
def test_small_cnn_any_image_size(size):
    net = tu.SmallCNN(num_classes=7)
    assert net(torch.zeros(2, 1, size, size)).shape == (2, 7)


def test_small_cnn_1d_and_names():
    net = tu.SmallCNN(num_classes=10, dims=1, widths=(8, 16))
    assert net(torch.zeros(3, 1, 40)).shape == (3, 10)
    names = dict(net.named_children())
    assert set(names) == {"body", "head"}
    assert [n for n, _ in net.body.named_children()][:2] == ["block1", "block2"]
    assert not any(isinstance(m, nn.BatchNorm1d) for m in tu.SmallCNN(batchnorm=False).modules())


@pytest.mark.parametrize("kwargs,match", [
    ({"dims": 3}, "dims must be 1"),
    ({"widths": ()}, "widths"),
    ({"num_classes": 0}, "num_classes"),
])
def test_small_cnn_bad_args(kwargs, match):
    with pytest.raises(ValueError, match=match):
        tu.SmallCNN(**kwargs)


def test_mlp_shapes_and_errors():
    net = tu.MLP(64, hidden=(32, 16), num_classes=3, dropout=0.1)
    assert net(torch.zeros(5, 1, 8, 8)).shape == (5, 3)
    assert net.feature_dim == 16
    with pytest.raises(ValueError, match="in_features"):
        tu.MLP(0)
    with pytest.raises(ValueError, match="hidden"):
        tu.MLP(10, hidden=(0,))


def test_mlp_batchnorm_option_puts_a_batchnorm_before_each_relu():
    net = tu.MLP(40, hidden=(16, 8), num_classes=3, batchnorm=True)
    names = [n for n, _ in net.body.named_children()]
    assert names == ["flatten", "fc1", "bn1", "relu1", "fc2", "bn2", "relu2"]
    assert net.config["batchnorm"] is True and net(torch.zeros(4, 1, 40)).shape == (4, 3)
    assert not any(isinstance(m, torch.nn.BatchNorm1d) for m in tu.MLP(40).modules())


def test_replace_head_keeps_body_and_changes_outputs():
    net = tu.SmallCNN(num_classes=10)
    before = {k: v.clone() for k, v in net.body.state_dict().items()}
    old_head = net.head
    tu.replace_head(net, 4)
    assert net.head is not old_head and net.head.out_features == 4
    assert all(torch.equal(before[k], v) for k, v in net.body.state_dict().items())
    assert net(torch.zeros(1, 1, 28, 28)).shape == (1, 4)
    assert net.config["num_classes"] == 4


def test_replace_head_resnet_and_sequential_classifier():
    from torchvision.models import resnet18

    r = tu.replace_head(resnet18(weights=None), 3)
    assert r.fc.out_features == 3
    assert r.eval()(torch.zeros(1, 3, 32, 32)).shape == (1, 3)

    class VGGish(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = nn.Flatten()
            self.classifier = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 10))

        def forward(self, x):
            return self.classifier(self.features(x))

    v = tu.replace_head(VGGish(), 2)
    assert v(torch.zeros(1, 4)).shape == (1, 2)


def test_replace_head_unknown_architecture():
    with pytest.raises(TypeError, match=r"cannot find the output layer \(head\) of Sequential"):
        tu.replace_head(nn.Sequential(nn.Linear(3, 3)), 2)
    with pytest.raises(ValueError, match="num_classes"):
        tu.replace_head(tu.SmallCNN(), -1)


def test_count_parameters():
    net = tu.MLP(4, hidden=(3,), num_classes=2)
    assert tu.count_parameters(net) == 4 * 3 + 3 + 3 * 2 + 2
    net.head.weight.requires_grad_(False)
    assert tu.count_parameters(net, trainable_only=True) == 4 * 3 + 3 + 2
