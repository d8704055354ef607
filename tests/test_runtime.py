"""Tests for transfer_utils.runtime: seeding, device choice, progress policy."""

import random

import numpy as np
import pytest
import torch

import transfer_utils as tu


def test_seed_everything_repeats_torch_numpy_and_python():
    tu.seed_everything(3)
    a = (torch.rand(3), np.random.rand(3), random.random())
    tu.seed_everything(3)
    b = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2] == b[2]
    tu.seed_everything(4)
    assert not torch.equal(a[0], torch.rand(3))


def test_seed_everything_returns_seed():
    assert tu.seed_everything(7) == 7


@pytest.mark.parametrize("bad", [-1, 1.5, "0", None, True])
def test_seed_everything_rejects_bad_seed(bad):
    with pytest.raises(ValueError, match="non-negative integer"):
        tu.seed_everything(bad)


def test_get_device_cpu_and_auto(monkeypatch):
    monkeypatch.delenv("TU_DEVICE", raising=False)
    assert tu.get_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert tu.get_device().type == expected
    assert tu.get_device(torch.device("cpu")).type == "cpu"


def test_env_overrides_default(monkeypatch):
    monkeypatch.setenv("TU_DEVICE", "cpu")
    assert tu.get_device() == torch.device("cpu")


def test_argument_beats_env(monkeypatch):
    monkeypatch.setenv("TU_DEVICE", "cuda:7")
    assert tu.get_device("cpu").type == "cpu"


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_absent_device_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("TU_DEVICE", "cuda")
    with pytest.raises(RuntimeError, match="TU_DEVICE.*no cuda device"):
        tu.get_device()
    with pytest.raises(RuntimeError, match="no cuda device"):
        tu.get_device("cuda:0")


def test_unknown_device_name():
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        tu.get_device("tpu")
    with pytest.raises(TypeError, match="string or torch.device"):
        tu.get_device(3)


def test_progress_policy(monkeypatch):
    monkeypatch.setenv("TU_PROGRESS", "0")
    assert tu.progress_enabled() is False
    assert tu.progress_enabled(True) is True
    monkeypatch.setenv("TU_PROGRESS", "1")
    assert tu.progress_enabled() is True
    tu.set_progress(False)
    try:
        assert tu.progress_enabled() is False
    finally:
        tu.set_progress(None)
    with pytest.raises(TypeError, match="True, False or None"):
        tu.set_progress("yes")


def test_setup_seeds_and_returns_device(monkeypatch):
    monkeypatch.delenv("TU_DEVICE", raising=False)
    assert tu.setup(seed=5, device="cpu") == torch.device("cpu")
    a = torch.rand(2)
    tu.setup(seed=5, device="cpu")
    assert torch.equal(a, torch.rand(2))
    with pytest.raises(ValueError, match="unknown device"):
        tu.setup(device="gpu0")


def test_setup_sets_cpu_threads(monkeypatch):
    before = torch.get_num_threads()
    try:
        monkeypatch.delenv("TU_THREADS", raising=False)
        tu.setup(device="cpu")
        assert torch.get_num_threads() == 1
        monkeypatch.setenv("TU_THREADS", "2")
        tu.setup(device="cpu")
        assert torch.get_num_threads() == 2
        tu.setup(device="cpu", threads=1)
        assert torch.get_num_threads() == 1
        monkeypatch.setenv("TU_THREADS", "many")
        with pytest.raises(ValueError, match="TU_THREADS must be a positive integer"):
            tu.setup(device="cpu")
        with pytest.raises(ValueError, match="threads must be a positive integer"):
            tu.setup(device="cpu", threads=0)
    finally:
        torch.set_num_threads(before)
