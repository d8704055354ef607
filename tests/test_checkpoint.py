"""Tests for transfer_utils.checkpoint: round trip, atomicity, hashes, refusing pickled code."""

import os
import pickle

import pytest
import torch

import transfer_utils as tu


def test_round_trip_with_metadata(tmp_path):
    net = tu.SmallCNN(num_classes=3)
    path = tu.save_checkpoint(tmp_path / "a.safetensors", net, accuracy=0.9, data={"k": 5})
    ckpt = tu.load_checkpoint(path, tu.SmallCNN(num_classes=3))
    assert ckpt.meta == {"accuracy": 0.9, "data": {"k": 5}}
    for k, v in net.state_dict().items():
        assert torch.equal(v, ckpt.state_dict[k])
        assert torch.equal(v, ckpt.model.state_dict()[k])


def test_atomic_write_keeps_old_file_when_saving_fails(tmp_path, monkeypatch):
    path = tmp_path / "m.safetensors"
    tu.save_checkpoint(path, tu.MLP(4, (3,), 2), version=1)
    import safetensors.torch as st

    def crash(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(st, "save_file", crash)
    with pytest.raises(OSError, match="disk full"):
        tu.save_checkpoint(path, tu.MLP(4, (3,), 2), version=2)
    assert tu.load_checkpoint(path).meta["version"] == 1
    assert os.listdir(tmp_path) == ["m.safetensors"]  # no temp file left behind


def test_wrong_hash_and_truncated_file(tmp_path):
    path = tu.save_checkpoint(tmp_path / "m.safetensors", tu.MLP(4, (3,), 2))
    good = tu.sha256_file(path)
    assert tu.load_checkpoint(path, sha256=good).state_dict
    with pytest.raises(ValueError, match="SHA-256 .* was expected.*re-download"):
        tu.load_checkpoint(path, sha256="0" * 64)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="truncated or not a safetensors file"):
        tu.load_checkpoint(path)


def test_pickle_with_code_is_refused(tmp_path):
    class Payload:
        def __reduce__(self):
            return (print, ("this ran code",))

    path = tmp_path / "evil.pt"
    with open(path, "wb") as f:
        pickle.dump({"w": Payload()}, f)
    with pytest.raises(ValueError, match="refused to load evil.pt"):
        tu.load_checkpoint(path)


def test_plain_state_dict_pt_loads(tmp_path):
    net = tu.MLP(4, (3,), 2)
    torch.save(net.state_dict(), tmp_path / "w.pt")
    ckpt = tu.load_checkpoint(tmp_path / "w.pt", tu.MLP(4, (3,), 2))
    assert torch.equal(ckpt.model.head.weight, net.head.weight)


def test_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        tu.load_checkpoint(tmp_path / "none.safetensors")
    with pytest.raises(ValueError, match="end in .safetensors"):
        tu.save_checkpoint(tmp_path / "x.bin", tu.MLP(4))
    with pytest.raises(TypeError, match="JSON-serialisable"):
        tu.save_checkpoint(tmp_path / "x.safetensors", tu.MLP(4), bad=object())
    with pytest.raises(ValueError, match="empty"):
        tu.save_checkpoint(tmp_path / "x.safetensors", {})
    path = tu.save_checkpoint(tmp_path / "x.safetensors", tu.MLP(4, (3,), 2))
    with pytest.raises(RuntimeError, match="size mismatch"):
        tu.load_checkpoint(path, tu.MLP(4, (5,), 2))


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_loading_to_absent_device_is_clear(tmp_path):
    path = tu.save_checkpoint(tmp_path / "x.safetensors", tu.MLP(4, (3,), 2), device="cuda")
    with pytest.raises(RuntimeError, match="no cuda device"):
        tu.load_checkpoint(path, device="cuda")
    assert tu.load_checkpoint(path).state_dict["head.weight"].device.type == "cpu"
