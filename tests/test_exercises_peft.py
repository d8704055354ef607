"""Tests for the chapter-9 graders: right answers pass, each common mistake gets its hint."""

import pytest
import torch
import torch.nn.functional as F

import transfer_utils as tu


def _right(layer, x):
    return layer.base(x) + (layer.alpha / layer.rank) * (x @ layer.lora_A.T @ layer.lora_B.T)


def test_right_forward_passes(capsys):
    tu.check_lora_forward(_right)
    assert capsys.readouterr().out.startswith("Correct:")


def test_forward_with_f_linear_passes_too(capsys):
    tu.check_lora_forward(lambda l, x: l.base(x) + l.scaling * F.linear(F.linear(x, l.lora_A),
                                                                          l.lora_B))
    assert "Correct:" in capsys.readouterr().out


@pytest.mark.parametrize("wrong, hint", [
    (lambda l, x: l.base(x) + x @ l.lora_A.T @ l.lora_B.T, "left the scaling out"),
    (lambda l, x: l.base(x) + l.alpha * (x @ l.lora_A.T @ l.lora_B.T), "not alpha"),
    (lambda l, x: l.base(x), "frozen layer alone"),
    (lambda l, x: x @ l.base.weight.T + l.scaling * (x @ l.lora_A.T @ l.lora_B.T), "bias"),
    (lambda l, x: l.scaling * (x @ l.lora_A.T @ l.lora_B.T), "add the frozen layer's output"),
    (lambda l, x: l.base(x) + l.scaling * (x @ l.lora_B @ l.lora_A), "x @ A.T"),
    (lambda l, x: None, "not a tensor"),
])
def test_common_forward_mistakes_get_their_hint(wrong, hint):
    with pytest.raises(AssertionError, match=hint) as err:
        tu.check_lora_forward(wrong)
    assert "Hint: " in str(err.value)


def test_merge_grader(capsys):
    tu.check_lora_merge(lambda l: l.base.weight + l.scaling * l.lora_B @ l.lora_A)
    assert capsys.readouterr().out.startswith("Correct:")
    with pytest.raises(AssertionError, match="Hint: multiply B @ A by alpha / rank"):
        tu.check_lora_merge(lambda l: l.base.weight + l.lora_B @ l.lora_A)
    with pytest.raises(AssertionError, match=r"shape \[4, 6\].*Hint:"):
        tu.check_lora_merge(lambda l: l.lora_A.T @ l.lora_B.T)
    with pytest.raises(AssertionError, match="Hint:"):
        tu.check_lora_merge(lambda l: l.merged())
