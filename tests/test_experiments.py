"""Tests for transfer_utils.experiments: each method trains what it should; the headline direction."""

import pytest
import torch

import transfer_utils as tu


@pytest.fixture(scope="module")
def pair():
    digits = tu.load_digits()
    train, test = tu.split(digits, (0.5, 0.5), seed=0)
    return tu.zoo.load("mnist8_cnn"), train, test


def test_fresh_copy_has_new_weights_same_shapes():
    src = tu.freeze(tu.SmallCNN(), "body")
    new = tu.fresh_copy(src)
    assert all(a.shape == b.shape for a, b in zip(src.parameters(), new.parameters(), strict=True))
    assert not torch.equal(src.body.block1.conv.weight, new.body.block1.conv.weight)
    assert all(p.requires_grad for p in new.parameters())


@pytest.mark.parametrize("method", tu.METHODS)
def test_each_method_runs_and_leaves_source_untouched(pair, method):
    src, train, test = pair
    before = {k: v.clone() for k, v in src.state_dict().items()}
    shots = tu.few_shot(train, 2, seed=0)
    r = tu.transfer_run(method, src, shots, test, steps=5, device="cpu")
    assert 0.0 <= r["accuracy"] <= 1.0 and r["seconds"] > 0
    assert r["model"].head.out_features == 10
    assert all(torch.equal(before[k], v) for k, v in src.state_dict().items())
    body_same = torch.equal(r["model"].body.block1.conv.weight, src.body.block1.conv.weight)
    # frozen keeps the body; partial (1 block) keeps block1; the others change it
    assert body_same == (method in ("frozen", "partial"))


def test_transfer_run_errors(pair):
    src, train, test = pair
    with pytest.raises(ValueError, match="method must be one of .*finetune.*got 'fine-tune'"):
        tu.transfer_run("fine-tune", src, train, test)
    with pytest.raises(TypeError, match="cannot find the output layer \\(head\\) of Linear"):
        tu.transfer_run("scratch", torch.nn.Linear(2, 2), train, test)
    with pytest.raises(ValueError, match="freeze_blocks must be an integer between 0 and 6"):
        tu.transfer_run("partial", src, tu.few_shot(train, 1), test, steps=1, freeze_blocks=99)
    with pytest.raises(ValueError, match="steps must be a positive integer"):
        tu.transfer_run("scratch", src, train, test, steps=0)


def test_transfer_curve_errors(pair):
    src, train, test = pair
    with pytest.raises(ValueError, match="at least one method"):
        tu.transfer_curve([], src, train, test, ks=[1])
    with pytest.raises(ValueError, match="not being run"):
        tu.transfer_curve(["scratch"], src, train, test, ks=[1], method_kwargs={"frozen": {}})


def test_headline_pretrained_beats_scratch_with_few_labels(pair):
    """Chapter 1's claim, reduced: with 1 label per class, MNIST pretraining helps on digits."""
    src, train, test = pair
    res = tu.transfer_curve(["scratch", "lp-ft"], src, train, test, ks=[1], seeds=[0, 1, 2],
                            steps=100, device="cpu")
    assert res["lp-ft"][1].mean > res["scratch"][1].mean + 0.05
