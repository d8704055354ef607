"""Tests for transfer_utils.features: extraction (mode, hooks, grads) and probes."""

import pytest
import torch
from torch import nn

import transfer_utils as tu
from tests.conftest import blobs as _blobs


def test_extract_features_shapes_eval_mode_and_restores(toy_images):
    net = tu.SmallCNN(num_classes=4, widths=(8, 16), dropout=0.5).train()
    loader = tu.make_loader(toy_images, 64)
    X1, y = tu.extract_features(net.body, loader)
    X2, _ = tu.extract_features(net.body, loader)
    assert X1.shape == (200, 16) and torch.equal(y, toy_images.y)
    assert torch.equal(X1, X2)  # eval mode: dropout off, BN uses running stats
    assert net.training and net.body.training  # caller's mode restored
    assert not X1.requires_grad


def test_extract_features_layer_hook(toy_images):
    net = tu.SmallCNN(num_classes=4, widths=(8, 16))
    loader = tu.make_loader(toy_images, 64)
    X, _ = tu.extract_features(net, loader, layer="body.block1")
    assert X.shape == (200, 8 * 4 * 4)
    X, _ = tu.extract_features(net, loader, layer="body.block1", flatten=False)
    assert X.shape == (200, 8, 4, 4)
    assert not net.body.block1._forward_hooks  # hook removed


def test_extract_features_restores_mode_on_error(toy_images):
    class Boom(nn.Module):
        def forward(self, x):
            raise RuntimeError("boom")

    m = Boom().train()
    with pytest.raises(RuntimeError, match="boom"):
        tu.extract_features(m, tu.make_loader(toy_images, 64))
    assert m.training


def test_extract_features_errors(toy_images):
    with pytest.raises(ValueError, match="no submodule named 'body.block9'.*body.block1"):
        tu.extract_features(tu.SmallCNN(), tu.make_loader(toy_images), layer="body.block9")
    with pytest.raises(ValueError, match="no batches"):
        tu.extract_features(tu.SmallCNN(), [])


def test_linear_and_knn_probe_learn_separable_features():
    X, y = _blobs()
    lin = tu.linear_probe(X[:90], y[:90], X[90:], y[90:])
    knn = tu.knn_probe(X[:90], y[:90], X[90:], y[90:], k=3)
    assert lin["accuracy"] > 0.9 and knn["accuracy"] > 0.9
    assert hasattr(lin["model"], "predict")
    Xr = torch.randn_like(X)  # features with no signal
    assert tu.linear_probe(Xr[:90], y[:90], Xr[90:], y[90:])["accuracy"] < 0.7


def test_probe_errors():
    X, y = _blobs()
    with pytest.raises(ValueError, match="2-D"):
        tu.linear_probe(X[:, None], y, X, y)
    with pytest.raises(ValueError, match="rows but y_train has"):
        tu.linear_probe(X, y[:5], X, y)
    with pytest.raises(ValueError, match="5 dims but test features 4"):
        tu.knn_probe(X, y, X[:, :4], y)
    with pytest.raises(ValueError, match="two classes"):
        tu.linear_probe(X, torch.zeros_like(y), X, y)
    with pytest.raises(ValueError, match="n_neighbors must be a positive integer, got 0"):
        tu.knn_probe(X, y, X, y, n_neighbors=0)
    with pytest.raises(ValueError, match="between 1 and the"):
        tu.knn_probe(X, y, X, y, n_neighbors=len(X) + 1)
    with pytest.warns(DeprecationWarning, match="use n_neighbors="):
        assert tu.knn_probe(X, y, X, y, k=1)["accuracy"] == 1.0
