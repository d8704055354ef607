"""Chapter 6, "Your own images": the example folder, checkpoint -> predictor, the RGB zoo model.

Also the fast re-runs of the chapter's headline claims about the example folder.
"""

from __future__ import annotations

import pytest
import torch
from PIL import Image

import transfer_utils as tu

# --------------------------------------------------------------------------- load_shapes


def test_load_shapes_is_rgb_balanced_and_reproducible():
    a = tu.load_shapes(50, image_size=16, seed=3)
    b = tu.load_shapes(50, image_size=16, seed=3)
    assert a.x.shape == (50, 3, 16, 16) and a.name == "shapes"
    assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)
    assert a.classes == list(tu.SOURCE_SHAPES) and a.y.bincount().tolist() == [5] * 10
    assert 0 <= float(a.x.min()) and float(a.x.max()) <= 1
    assert not torch.equal(a.x, tu.load_shapes(50, image_size=16, seed=4).x)
    assert tu.load_dataset("shapes", n=20, image_size=8).name == "shapes"


def test_load_shapes_draws_any_listed_shapes():
    ds = tu.load_shapes(8, image_size=12, shapes=["heart", "arrow"])
    assert ds.classes == ["heart", "arrow"] and ds.y.bincount().tolist() == [4, 4]


def test_every_shape_is_drawn_and_the_shapes_differ():
    """Each shape covers a sensible part of its box and no two masks are the same."""
    g = torch.linspace(-1, 1, 64)
    v, u = torch.meshgrid(-g, g, indexing="ij")
    masks = {}
    for name in tu.SHAPES:
        m = tu.data._inside_shape(name, u[None], v[None])[0].float()
        masks[name] = m
        assert 0.1 < float(m.mean()) < 0.75, name
    names = list(masks)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            assert float((masks[a] - masks[b]).abs().mean()) > 0.03, (a, b)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"n": 5}, ValueError, r"n must be an int >= 10"),
        ({"shapes": ["circle", "blob"]}, ValueError, r"unknown shapes \['blob'\]"),
        ({"shapes": "circle"}, ValueError, "at least 2 distinct names"),
        ({"shapes": ["circle", "circle"]}, ValueError, "at least 2 distinct names"),
        ({"image_size": 0}, ValueError, "image_size must be a positive int"),
        ({"noise": -1}, ValueError, "noise"),
    ],
)
def test_load_shapes_errors(kwargs, error, match):
    with pytest.raises(error, match=match):
        tu.load_shapes(**{"n": 20, **kwargs})


# --------------------------------------------------------------------------- make_image_folder


def test_make_image_folder_writes_class_folders_of_varied_rgb_images(tmp_path):
    root = tu.make_image_folder(tmp_path / "imgs", per_class=6, min_size=30, max_size=90)
    assert root == tmp_path / "imgs"
    assert sorted(p.name for p in root.iterdir()) == sorted(tu.FOLDER_SHAPES)
    files = sorted(root.glob("*/*"))
    assert len(files) == 6 * len(tu.FOLDER_SHAPES)
    assert {p.suffix for p in files} == {".png", ".jpg"}
    sizes = set()
    for p in files:
        with Image.open(p) as img:
            assert img.mode == "RGB"
            assert 30 <= min(img.size) and max(img.size) <= 90
            sizes.add(img.size)
    assert len(sizes) > len(files) // 2, "the images have varied sizes"


def test_make_image_folder_is_reproducible_and_read_by_imagefolder(tmp_path):
    from torchvision import datasets, transforms

    a = tu.make_image_folder(tmp_path / "a", per_class=3, shapes=["ring", "heart"], seed=5)
    b = tu.make_image_folder(tmp_path / "b", per_class=3, shapes=["ring", "heart"], seed=5)
    for fa in sorted(a.glob("*/*.png")):
        assert fa.read_bytes() == (b / fa.parent.name / fa.name).read_bytes()
    ds = datasets.ImageFolder(a, transform=transforms.Compose(
        [transforms.Resize((16, 16)), transforms.ToTensor()]))
    assert ds.classes == ["heart", "ring"] and len(ds) == 6
    assert tu.dataset_labels(ds).tolist() == [0, 0, 0, 1, 1, 1]
    x, _ = next(iter(tu.make_loader(ds, 6)))
    assert x.shape == (6, 3, 16, 16)


def test_make_image_folder_never_overwrites(tmp_path):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "photo.jpg").write_bytes(b"mine")
    with pytest.raises(FileExistsError, match="not an empty folder; choose a new path"):
        tu.make_image_folder(tmp_path / "full", per_class=2)
    assert (tmp_path / "full" / "photo.jpg").read_bytes() == b"mine"
    (tmp_path / "empty").mkdir()
    assert len(list(tu.make_image_folder(tmp_path / "empty", per_class=1).glob("*/*"))) == 6


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"per_class": 0}, ValueError, "per_class must be a positive int"),
        ({"min_size": 50, "max_size": 40}, ValueError, "min_size <= max_size"),
        ({"min_size": 4}, ValueError, "8 <= min_size"),
        ({"shapes": ["heart"]}, ValueError, "at least 2 distinct names"),
        ({"seed": -1}, ValueError, "seed"),
    ],
)
def test_make_image_folder_errors(tmp_path, kwargs, error, match):
    with pytest.raises(error, match=match):
        tu.make_image_folder(tmp_path / "x", **{"per_class": 2, **kwargs})


def test_make_image_folder_root_must_be_a_path():
    with pytest.raises(TypeError, match="root must be a folder path"):
        tu.make_image_folder(3)
