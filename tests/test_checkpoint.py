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
    with pytest.raises(ValueError, match="truncated, its header is damaged, or it is not a"):
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
    with pytest.raises(ValueError, match=r"(?s)does not fit MLP \(nothing was loaded\): 0 tensors missing.*3 of another "
                       r"shape.*strict=False"):
        tu.load_checkpoint(path, tu.MLP(4, (5,), 2))
    with pytest.raises(TypeError, match="model must be an nn.Module"):
        tu.load_checkpoint(path, {"a": 1})
    with pytest.raises(IsADirectoryError, match="is a folder"):
        tu.load_checkpoint(tmp_path)
    with pytest.raises(TypeError, match="values must be tensors"):
        tu.save_checkpoint(tmp_path / "y.safetensors", {"w": [1.0]})
    with pytest.raises(ValueError, match="reserved"):
        tu.save_checkpoint(tmp_path / "y.safetensors", tu.MLP(4),
                           transfer_utils_tensors_sha256="x")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_loading_to_absent_device_is_clear(tmp_path):
    path = tu.save_checkpoint(tmp_path / "x.safetensors", tu.MLP(4, (3,), 2), device="cuda")
    with pytest.raises(RuntimeError, match="no cuda device"):
        tu.load_checkpoint(path, device="cuda")
    assert tu.load_checkpoint(path).state_dict["head.weight"].device.type == "cpu"


def _flip_a_data_bit(path):
    """Flip one bit in the tensor data (after the header) of a safetensors file."""
    data = bytearray(path.read_bytes())
    header = int.from_bytes(data[:8], "little")
    data[8 + header + 5] ^= 0x10
    path.write_bytes(bytes(data))


def test_a_flipped_bit_in_the_tensors_is_an_error(tmp_path):
    path = tu.save_checkpoint(tmp_path / "m.safetensors", tu.MLP(4, (3,), 2))
    _flip_a_data_bit(path)
    with pytest.raises(ValueError, match="does not match the SHA-256 recorded when it was saved"):
        tu.load_checkpoint(path)


def test_damaged_metadata_gets_the_package_message(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "m.safetensors"
    save_file({"w": torch.zeros(2)}, str(path), metadata={"transfer_utils": "{not json"})
    with pytest.raises(ValueError, match="metadata of m.safetensors is damaged"):
        tu.load_checkpoint(path)
    data = bytearray(path.read_bytes())
    data[10] = ord("!")  # break the JSON header itself
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="could not read m.safetensors.*header is damaged"):
        tu.load_checkpoint(path)


def test_a_failed_load_leaves_the_model_untouched(tmp_path):
    path = tu.save_checkpoint(tmp_path / "m.safetensors", tu.MLP(4, (3,), 2))
    target = tu.MLP(4, (3,), 3)  # same body, other head
    before = {k: v.clone() for k, v in target.state_dict().items()}
    with pytest.raises(ValueError, match="head.weight: file \\[2, 3\\], model \\[3, 3\\]"):
        tu.load_checkpoint(path, target)
    assert all(torch.equal(before[k], v) for k, v in target.state_dict().items())


def test_non_strict_loads_what_matches_and_reports_the_rest(tmp_path):
    src = tu.MLP(4, (3,), 2)
    path = tu.save_checkpoint(tmp_path / "m.safetensors", src)
    target = tu.MLP(4, (3,), 3)
    with pytest.warns(UserWarning, match="2 skipped for shape"):
        ckpt = tu.load_checkpoint(path, target, strict=False)
    assert sorted(ckpt.report.skipped_shape) == ["head.bias", "head.weight"]
    assert ckpt.report.loaded == ["body.fc1.weight", "body.fc1.bias"]
    assert torch.equal(target.body.fc1.weight, src.body.fc1.weight)


def test_a_killed_save_leaves_no_temporary_for_long(tmp_path):
    import subprocess
    import sys

    path = tmp_path / "m.safetensors"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    stale = tmp_path / f".m.safetensors.{dead}.abc123.tmp"
    stale.write_bytes(b"x" * 1000)  # what a save killed before its rename leaves
    foreign = tmp_path / ".other.safetensors.1.abc.tmp"
    foreign.write_bytes(b"y")
    tu.save_checkpoint(path, tu.MLP(4))
    assert not stale.exists() and foreign.exists()  # only this checkpoint's, only dead writers'
    assert sorted(p.name for p in tmp_path.iterdir()) == [foreign.name, "m.safetensors"]


def test_saved_files_get_the_usual_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        path = tu.save_checkpoint(tmp_path / "m.safetensors", tu.MLP(4))
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644
