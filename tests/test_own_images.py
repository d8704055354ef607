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


# --------------------------------------------------------------------------- checkpoint -> predictor


@pytest.fixture(scope="module")
def small_folder(tmp_path_factory):
    return tu.make_image_folder(tmp_path_factory.mktemp("own") / "imgs", per_class=4,
                                shapes=["ring", "heart", "arrow"], min_size=24, max_size=48)


def _eval_transform(size, mean, std):
    from torchvision import transforms

    return transforms.Compose([transforms.Resize((size, size)), transforms.ToTensor(),
                               transforms.Normalize(mean, std)])


def _trained_looking(model):
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))  # not the initialisation a rebuilt model gets
    return model.eval()


@pytest.mark.parametrize("arch", ["SmallCNN", "resnet18"])
def test_predictor_round_trip_keeps_predictions(tmp_path, small_folder, arch):
    from torchvision import datasets

    mean, std = [0.5, 0.4, 0.3], [0.2, 0.25, 0.3]
    ds = datasets.ImageFolder(small_folder, transform=_eval_transform(24, mean, std))
    net = (tu.SmallCNN(3, in_channels=3, widths=[8, 16]) if arch == "SmallCNN"
           else tu.resnet18_for(3, in_channels=3))
    net = _trained_looking(net)
    with torch.no_grad():
        expected = net(torch.stack([ds[i][0] for i in range(len(ds))])).argmax(1)
    path = tu.save_checkpoint(tmp_path / "best.safetensors", net,
                              architecture=tu.architecture_of(net), classes=ds.classes,
                              preprocessing={"size": 24, "mean": mean, "std": std})
    predictor = tu.load_predictor(path, device="cpu")
    assert predictor.classes == ds.classes == ["arrow", "heart", "ring"]
    names = [predictor(p) for p, _ in ds.samples]
    assert names == [ds.classes[int(i)] for i in expected]
    rows = predictor.predict_folder(small_folder, batch_size=5)
    assert [r["path"] for r in rows] == sorted(p for p, _ in ds.samples)
    assert {r["path"]: r["prediction"] for r in rows} == dict(
        zip([p for p, _ in ds.samples], names, strict=True))
    probs = predictor.probabilities(ds.samples[0][0])
    assert list(probs) == ds.classes and sum(probs.values()) == pytest.approx(1, abs=1e-5)
    assert max(probs, key=probs.get) == names[0]
    with Image.open(ds.samples[0][0]) as img:
        assert predictor(img.convert("L")) in ds.classes  # a grey PIL image is converted


def test_predictor_three_lines_from_file_to_class_name(tmp_path, small_folder):
    net = _trained_looking(tu.SmallCNN(3, in_channels=3, widths=[8]))
    path = tu.save_checkpoint(tmp_path / "m.safetensors", net, architecture=tu.architecture_of(net),
                              classes=["arrow", "heart", "ring"],
                              preprocessing={"size": 16, "mean": [0.5] * 3, "std": [0.3] * 3})
    image = next(small_folder.glob("heart/*"))
    assert tu.load_predictor(path)(image) in ("arrow", "heart", "ring")


def test_predictor_with_resize_and_centre_crop_and_a_given_model(tmp_path, small_folder):
    net = _trained_looking(tu.SmallCNN(3, in_channels=1, widths=[4]))
    path = tu.save_checkpoint(tmp_path / "m.safetensors", net, classes=["a", "b", "c"],
                              preprocessing={"size": 20, "resize": 24, "mean": [0.5],
                                             "std": [0.3]})
    with pytest.raises(ValueError, match="no architecture in its metadata"):
        tu.load_predictor(path)
    predictor = tu.load_predictor(path, model=tu.SmallCNN(3, in_channels=1, widths=[4]))
    x = predictor.transform(Image.open(next(small_folder.glob("ring/*"))))
    assert x.shape == (1, 20, 20)
    assert predictor(next(small_folder.glob("ring/*"))) in ("a", "b", "c")


def test_checkpoint_without_preprocessing_gets_a_clear_error(tmp_path):
    net = tu.SmallCNN(3, in_channels=3, widths=[4])
    path = tu.save_checkpoint(tmp_path / "plain.safetensors", net, accuracy=0.9)
    with pytest.raises(ValueError) as err:
        tu.load_predictor(path)
    msg = str(err.value)
    assert "plain.safetensors has no preprocessing or classes or architecture" in msg
    assert "(size, mean, std)" in msg and "tu.save_checkpoint(path, model, architecture=" in msg
    bad = tu.save_checkpoint(tmp_path / "bad.safetensors", net, classes=["a", "b", "c"],
                             architecture=tu.architecture_of(net), preprocessing={"size": 32})
    with pytest.raises(ValueError, match="must give size, mean and std"):
        tu.load_predictor(bad)
    wrong = tu.save_checkpoint(tmp_path / "wrong.safetensors", net, classes=["a", "b"],
                               architecture=tu.architecture_of(net),
                               preprocessing={"size": 8, "mean": [0.5] * 3, "std": [0.2] * 3})
    with pytest.raises(ValueError, match="names 2 classes but the model has 3 outputs"):
        tu.load_predictor(wrong)


def test_predictor_input_errors(tmp_path, small_folder):
    net = tu.SmallCNN(2, in_channels=3, widths=[4])
    path = tu.save_checkpoint(tmp_path / "m.safetensors", net, architecture=tu.architecture_of(net),
                              classes=["a", "b"],
                              preprocessing={"size": 8, "mean": [0.5] * 3, "std": [0.2] * 3})
    predictor = tu.load_predictor(path)
    with pytest.raises(FileNotFoundError, match="no image file at"):
        predictor(tmp_path / "missing.png")
    with pytest.raises(TypeError, match="an image file path or a PIL image"):
        predictor(torch.zeros(3, 8, 8))
    with pytest.raises(NotADirectoryError, match="for one image call predictor"):
        predictor.predict_folder(tmp_path / "m.safetensors")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no image files"):
        predictor.predict_folder(tmp_path / "empty")


def test_image_transform_and_architecture_errors():
    with pytest.raises(ValueError, match="one mean and one std > 0 per channel"):
        tu.image_transform(8, [0.5, 0.5], [0.2, 0.2])
    with pytest.raises(ValueError, match=r"size must be a positive int or \[height, width\]"):
        tu.image_transform(0, [0.5], [0.2])
    with pytest.raises(TypeError, match="knows SmallCNN, MLP and ResNet-18"):
        tu.architecture_of(torch.nn.Sequential(torch.nn.Linear(2, 2)))
    with pytest.raises(ValueError, match="unknown architecture 'vgg'"):
        tu.build_architecture({"name": "vgg"})
    spec = tu.architecture_of(tu.resnet18_for(4, in_channels=1))
    assert spec == {"name": "resnet18", "kwargs": {"num_classes": 4, "in_channels": 1}}
    assert tu.build_architecture(spec).conv1.in_channels == 1


def test_predict_on_a_path_points_to_load_predictor():
    with pytest.raises(TypeError, match=r"tu.load_predictor\(checkpoint_path\)\(image_path\)"):
        tu.predict(tu.SmallCNN(), "img.png")


# --------------------------------------------------------------------------- resnet18_for reload


def test_resnet18_for_reload_keeps_a_fine_tuned_head_of_the_same_size(tmp_path):
    tuned = _trained_looking(tu.resnet18_for(6, in_channels=3))
    path = tu.save_checkpoint(tmp_path / "tuned.safetensors", tuned)
    again = tu.resnet18_for(6, in_channels=3, weights=path).eval()
    assert torch.equal(again.fc.weight, tuned.fc.weight)
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(again(x), tuned(x)), "same head, same body: same outputs"
    other = tu.resnet18_for(4, in_channels=3, weights=path)  # another task: a new head
    assert other.fc.out_features == 4
    assert torch.equal(other.layer4[1].conv2.weight, tuned.layer4[1].conv2.weight)


# --------------------------------------------------------------------------- the RGB zoo model


def test_shapes24_cnn_loads_with_its_hash_and_is_a_predictor_as_shipped():
    # chapter 6, section 6.4: the RGB source model, its recipe and its preprocessing
    info = tu.zoo.info("shapes24_cnn")
    path = tu.zoo.ZOO_DIR / "shapes24_cnn.safetensors"
    assert tu.sha256_file(path) == info["sha256"]
    net = tu.zoo.load("shapes24_cnn", device="cpu")  # verifies the hash before loading
    assert info["preprocessing"] == {"size": 24, "mean": [0.5] * 3, "std": [0.26] * 3}
    assert info["data"]["dataset"] == "shapes" and info["model"]["kwargs"]["in_channels"] == 3
    _, val = tu.zoo.source_data("shapes24_cnn")
    assert val.classes == list(tu.SOURCE_SHAPES)
    assert not set(tu.SOURCE_SHAPES) & set(tu.FOLDER_SHAPES), "the folder's shapes are new"
    acc = tu.evaluate(net, tu.make_loader(val, 512), device="cpu")["accuracy"]
    assert acc == pytest.approx(info["metrics"]["val_accuracy"], abs=0.01)
    assert acc > 0.3  # chance is 0.1
    predictor = tu.load_predictor(path, device="cpu")  # the file carries its preprocessing
    assert predictor.classes == list(tu.SOURCE_SHAPES)
    x = val.x[:8]
    with torch.no_grad():
        assert torch.equal(predictor.model(x).argmax(1), net(x).argmax(1))


def test_shapes24_cnn_refuses_tampered_weights(tmp_path, monkeypatch):
    import shutil

    for suffix in (".json", ".safetensors"):
        shutil.copy(tu.zoo.ZOO_DIR / f"shapes24_cnn{suffix}", tmp_path / f"shapes24_cnn{suffix}")
    with open(tmp_path / "shapes24_cnn.safetensors", "r+b") as f:
        f.seek(-4, 2)
        f.write(b"\x00\x01\x02\x03")
    monkeypatch.setattr(tu.zoo, "ZOO_DIR", tmp_path)
    with pytest.raises(ValueError, match="(?i)sha-?256"):
        tu.zoo.load("shapes24_cnn")


def test_ch6_the_shapes_model_beats_scratch_on_the_example_folder(tmp_path):
    # chapter 6, section 6.4: a small version of the measurement (decoded once, no
    # augmentation, one rate, two seeds): starting from shapes24_cnn beats random weights
    from torchvision import datasets, transforms

    pre = tu.zoo.info("shapes24_cnn")["preprocessing"]
    tf = transforms.Compose([transforms.Resize((pre["size"], pre["size"])),
                             transforms.ToTensor(), transforms.Normalize(pre["mean"], pre["std"])])

    def tensors(folder):
        ds = datasets.ImageFolder(folder, transform=tf)
        x = torch.stack([ds[i][0] for i in range(len(ds))])
        return tu.ArrayDataset(x, torch.tensor(ds.targets), ds.classes, "folder")

    train = tensors(tu.make_image_folder(tmp_path / "photos", per_class=30, seed=0))
    test = tensors(tu.make_image_folder(tmp_path / "new", per_class=20, seed=1))
    source = tu.zoo.load("shapes24_cnn", device="cpu")

    def acc(method, seed):
        return tu.transfer_run(method, source, train, test, seed=seed, steps=40, lr=3e-3,
                               device="cpu")["accuracy"]

    gains = [acc("finetune", s) - acc("scratch", s) for s in (0, 1)]
    assert min(gains) > 0.05, gains
