"""Tests for transfer_utils.zoo: shipped models load with verified hashes; recipes learn."""

import json
import shutil

import pytest
import torch

import transfer_utils as tu
from transfer_utils import zoo


def test_available_lists_shipped_models():
    names = tu.zoo.available()
    assert "mnist8_cnn" in names and names == sorted(names)


@pytest.mark.parametrize("name", zoo.available())
def test_every_model_loads_and_has_its_metadata(name):
    meta = tu.zoo.info(name)
    assert {"data", "model", "train", "sha256", "metrics"} <= set(meta)
    assert meta["data"]["dataset"] in tu.DATASETS + tu.TEXT_CORPORA
    net = tu.zoo.load(name)
    assert not net.training
    assert all(p.device.type == "cpu" for p in net.parameters())


def test_shipped_source_model_is_accurate_on_its_validation_split():
    net = tu.zoo.load("mnist8_cnn")
    _, val = tu.zoo.source_data("mnist8_cnn")
    acc = tu.evaluate(net, tu.make_loader(val, 512), device="cpu")["accuracy"]
    assert acc == pytest.approx(tu.zoo.info("mnist8_cnn")["metrics"]["val_accuracy"], abs=0.01)
    assert acc > 0.9


def test_fast_run_of_the_recipe_learns():
    net, metrics = tu.zoo.train("mnist8_cnn", epochs=2, max_examples=1500, device="cpu",
                                progress=False)
    assert metrics["val_accuracy"] > 0.5  # chance is 0.1
    assert not net.training


def test_unknown_name_lists_the_valid_ones():
    with pytest.raises(ValueError, match="unknown zoo model 'resnet9000'; available: .*mnist8_cnn"):
        tu.zoo.load("resnet9000")


def _copy_zoo(tmp_path, monkeypatch, name="mnist8_cnn"):
    for ext in ("json", "safetensors"):
        shutil.copy(zoo.ZOO_DIR / f"{name}.{ext}", tmp_path / f"{name}.{ext}")
    monkeypatch.setattr(zoo, "ZOO_DIR", tmp_path)
    return tmp_path


def test_tampered_weights_are_refused(tmp_path, monkeypatch):
    d = _copy_zoo(tmp_path, monkeypatch)
    w = d / "mnist8_cnn.safetensors"
    data = bytearray(w.read_bytes())
    data[-1] ^= 0xFF
    w.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="SHA-256"):
        tu.zoo.load("mnist8_cnn")


def test_missing_weights_say_how_to_build(tmp_path, monkeypatch):
    d = _copy_zoo(tmp_path, monkeypatch)
    (d / "mnist8_cnn.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="python -m transfer_utils.zoo build mnist8_cnn"):
        tu.zoo.load("mnist8_cnn")


def test_build_records_hash_and_metrics(tmp_path, monkeypatch):
    d = _copy_zoo(tmp_path, monkeypatch)
    recipe = json.loads((d / "mnist8_cnn.json").read_text())
    recipe["train"]["epochs"] = 1
    recipe["data"]["kwargs"] = {"image_size": 8}
    for key in ("sha256", "metrics"):
        recipe.pop(key)
    (d / "mnist8_cnn.json").write_text(json.dumps(recipe))
    (d / "mnist8_cnn.safetensors").unlink()
    out = tu.zoo.build("mnist8_cnn", progress=False)
    assert out["sha256"] == tu.sha256_file(d / "mnist8_cnn.safetensors")
    assert isinstance(tu.zoo.load("mnist8_cnn"), torch.nn.Module)
