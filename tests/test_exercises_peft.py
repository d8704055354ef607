"""Tests for the chapter-9 graders: right answers pass, each common mistake gets its hint."""

import pytest
import torch.nn.functional as F

import transfer_utils as tu


def _right(layer, x):
    return layer.base(x) + (layer.alpha / layer.rank) * (x @ layer.lora_A.T @ layer.lora_B.T)


def test_right_forward_passes(capsys):
    tu.check_lora_forward(_right)
    assert capsys.readouterr().out.startswith("Correct:")


def test_forward_with_f_linear_passes_too(capsys):
    tu.check_lora_forward(lambda lay, x: lay.base(x) + lay.scaling * F.linear(F.linear(x, lay.lora_A),
                                                                          lay.lora_B))
    assert "Correct:" in capsys.readouterr().out


@pytest.mark.parametrize("wrong, hint", [
    (lambda lay, x: lay.base(x) + x @ lay.lora_A.T @ lay.lora_B.T, "left the scaling out"),
    (lambda lay, x: lay.base(x) + lay.alpha * (x @ lay.lora_A.T @ lay.lora_B.T), "not alpha"),
    (lambda lay, x: lay.base(x), "frozen layer alone"),
    (lambda lay, x: x @ lay.base.weight.T + lay.scaling * (x @ lay.lora_A.T @ lay.lora_B.T), "bias"),
    (lambda lay, x: lay.scaling * (x @ lay.lora_A.T @ lay.lora_B.T), "add the frozen layer's output"),
    (lambda lay, x: lay.base(x) + lay.scaling * (x @ lay.lora_B @ lay.lora_A), "x @ A.T"),
    (lambda lay, x: None, "not a tensor"),
])
def test_common_forward_mistakes_get_their_hint(wrong, hint):
    with pytest.raises(AssertionError, match=hint) as err:
        tu.check_lora_forward(wrong)
    assert "Hint: " in str(err.value)


def test_merge_grader(capsys):
    tu.check_lora_merge(lambda lay: lay.base.weight + lay.scaling * lay.lora_B @ lay.lora_A)
    assert capsys.readouterr().out.startswith("Correct:")
    with pytest.raises(AssertionError, match="Hint: multiply B @ A by alpha / rank"):
        tu.check_lora_merge(lambda lay: lay.base.weight + lay.lora_B @ lay.lora_A)
    with pytest.raises(AssertionError, match=r"(?s)shape \[4, 6\].*Hint:"):
        tu.check_lora_merge(lambda lay: lay.lora_A.T @ lay.lora_B.T)
    with pytest.raises(AssertionError, match="Hint:"):
        tu.check_lora_merge(lambda lay: lay.merged())
