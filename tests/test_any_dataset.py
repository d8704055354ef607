"""Any map-style torch Dataset of (x, y) items works wherever the package takes a dataset.

A TensorDataset and a small torchvision ImageFolder written with PIL into a temporary
folder go through few_shot, split, class_split, fold_splits, make_loader, fit, evaluate,
extract_features, cache_features, dataset_stats/normalize and transfer_run with a
torchvision ResNet (DESIGN.md §4, issue "One package, organised by concept").
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import transfer_utils as tu

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (40, 60, 230)}


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    """6 RGB images per class, of varied sizes, in class sub-folders; an ImageFolder over them."""
    from torchvision import datasets, transforms

    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for name, rgb in COLOURS.items():
        (root / name).mkdir()
        for i in range(6):
            h, w = int(rng.integers(20, 40)), int(rng.integers(20, 40))
            pixels = np.clip(np.array(rgb) + rng.normal(0, 20, (h, w, 3)), 0, 255)
            Image.fromarray(pixels.astype(np.uint8)).save(root / name / f"{i}.png")
    tf = transforms.Compose([transforms.Resize((16, 16)), transforms.ToTensor()])
    return datasets.ImageFolder(root, transform=tf)


@pytest.fixture
def tensors():
    g = torch.Generator().manual_seed(0)
    y = torch.arange(60) % 3
    x = torch.rand(60, 1, 8, 8, generator=g) + y.view(-1, 1, 1, 1).float()
    return torch.utils.data.TensorDataset(x, y)


def test_labels_and_classes_are_read_without_loading_images(image_folder, tensors):
    assert tu.dataset_labels(image_folder).tolist() == [0] * 6 + [1] * 6 + [2] * 6
    assert tu.dataset_classes(image_folder) == ["blue", "green", "red"]
    assert tu.dataset_labels(tensors).bincount().tolist() == [20, 20, 20]
    assert tu.dataset_classes(tensors) == ["0", "1", "2"] and tu.num_classes(tensors) == 3


def test_splitters_return_views_with_labels_and_names(image_folder, tensors):
    shots = tu.few_shot(image_folder, 2, seed=0)
    assert isinstance(shots, tu.LabelledSubset) and len(shots) == 6
    assert shots.classes == ["blue", "green", "red"]
    assert sorted(shots.targets.tolist()) == [0, 0, 1, 1, 2, 2]
    assert [shots[i][1] for i in range(6)] == shots.targets.tolist()
    assert shots[0][0].shape == (3, 16, 16)
    train, test = tu.split(image_folder, (0.5, 0.5), seed=0)
    assert len(train) + len(test) == 18 and set(train.indices).isdisjoint(test.indices)
    two = tu.class_split(image_folder, [2, 0])
    assert two.classes == ["red", "blue"] and sorted(set(two.targets.tolist())) == [0, 1]
    assert {two[i][1] for i in range(len(two))} == {0, 1}
    assert all(two[i][1] == (0 if two.dataset.targets[two.indices[i]] == 2 else 1)
               for i in range(len(two)))
    assert len(tu.fold_splits(tensors, 4)) == 4
    nested = tu.few_shot(tu.split(tensors, (0.5, 0.5))[0], 3, seed=1)
    assert isinstance(nested.dataset, torch.utils.data.TensorDataset)  # one level, not nested


def test_loaders_training_and_features(image_folder, tensors):
    loader = tu.make_loader(image_folder, 4, shuffle=True, seed=0)
    xb, yb = next(iter(loader))
    assert xb.shape == (4, 3, 16, 16) and yb.dtype == torch.int64
    again = next(iter(tu.make_loader(image_folder, 4, shuffle=True, seed=0)))[1]
    assert torch.equal(yb, again)  # seeded shuffling
    net = tu.SmallCNN(num_classes=3, in_channels=3, widths=(8,))
    hist = tu.fit(net, loader, epochs=2, lr=1e-2, progress=False, device="cpu")
    assert hist.epochs == 2 and hist.steps == 10
    m = tu.evaluate(net, tu.make_loader(image_folder, 8), device="cpu")
    assert m["n"] == 18
    X, y = tu.extract_features(net.body, tu.make_loader(image_folder, 8), device="cpu")
    assert X.shape == (18, 8) and y.tolist() == tu.dataset_labels(image_folder).tolist()
    mlp = tu.MLP(64, (16,), 3)
    tu.fit(mlp, tu.make_loader(tensors, 16, shuffle=True), steps=20, lr=1e-2, progress=False)
    assert tu.evaluate(mlp, tu.make_loader(tensors, 60))["accuracy"] > 0.6


def test_feature_cache_fingerprints_the_folder(image_folder, tmp_path):
    net = tu.SmallCNN(num_classes=3, in_channels=3, widths=(8,))
    path = tmp_path / "feats.safetensors"
    first = tu.cache_features(net.body, image_folder, path=path, device="cpu")
    second = tu.cache_features(net.body, image_folder, path=path, device="cpu")
    assert not first.loaded and second.loaded and torch.equal(first.X, second.X)
    assert second.classes == ["blue", "green", "red"]
    sub = tu.few_shot(image_folder, 2, seed=0)
    third = tu.cache_features(net.body, sub, path=path, device="cpu")  # other data: recomputed
    assert not third.loaded and len(third) == 6


def test_per_channel_statistics_and_normalisation(image_folder):
    stats = tu.dataset_stats(image_folder)
    assert len(stats["mean"]) == 3 and len(stats["std"]) == 3
    allx = torch.stack([image_folder[i][0] for i in range(len(image_folder))])
    assert stats["mean"] == pytest.approx(tuple(allx.mean((0, 2, 3)).tolist()), abs=1e-5)
    assert stats["std"] == pytest.approx(tuple(allx.std((0, 2, 3)).tolist()), abs=1e-4)
    z = tu.normalize(image_folder, **stats)
    allx = torch.stack([z[i][0] for i in range(len(z))])
    assert allx.mean((0, 2, 3)).abs().max() < 1e-4
    assert torch.allclose(allx.std((0, 2, 3)), torch.ones(3), atol=1e-3)
    assert tu.dataset_labels(z).tolist() == tu.dataset_labels(image_folder).tolist()
    with pytest.raises(ValueError, match="mean has 2 values but the inputs have 3 channels"):
        tu.normalize(image_folder, (0.5, 0.5), (1.0, 1.0, 1.0))


def test_transfer_run_on_an_image_folder_with_a_torchvision_resnet(image_folder):
    import torchvision

    src = torchvision.models.resnet18(weights=None, num_classes=5)
    train, test = tu.split(image_folder, (0.5, 0.5), seed=0)
    for method in ("frozen", "finetune", "partial", "lp-ft", "scratch"):
        r = tu.transfer_run(method, src, tu.few_shot(train, 2, seed=0), test, steps=2,
                            batch_size=6, freeze_blocks=4, device="cpu")
        assert r["model"].fc.out_features == 3 and 0.0 <= r["accuracy"] <= 1.0, method
    assert src.fc.out_features == 5  # the source is never changed


def test_items_that_are_not_pairs_get_a_clear_error():
    class Triples(torch.utils.data.Dataset):
        def __len__(self):
            return 4

        def __getitem__(self, i):
            return torch.zeros(2), i % 2, "extra"

    with pytest.raises(TypeError, match=r"must be \(x, y\) pairs .* got a tuple of 3 items"):
        tu.few_shot(Triples(), 1)
    with pytest.raises(TypeError, match="a TensorDataset of 3 tensors"):
        tu.few_shot(torch.utils.data.TensorDataset(torch.zeros(4, 2), torch.zeros(4),
                                                   torch.zeros(4)), 1)
    with pytest.raises(TypeError, match="got a Tensor; wrap tensors with tu.ArrayDataset"):
        tu.few_shot(torch.zeros(4, 2), 1)
