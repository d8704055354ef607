"""Tests for transfer_utils.param_efficient: LoRA, BitFit, adapters, and agreement with peft."""


import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import transfer_utils as tu


def _mlp():
    torch.manual_seed(0)
    return tu.MLP(12, hidden=(16, 8), num_classes=3)


def _randomise_b(model):
    with torch.no_grad():
        for layer in tu.lora_layers(model).values():
            layer.lora_B.normal_()
    return model


# --------------------------------------------------------------------------- LoRALinear


def test_lora_linear_contract_shapes_and_zero_b():
    base = nn.Linear(7, 5)
    layer = tu.LoRALinear(base, rank=3, alpha=6)
    assert isinstance(layer.lora_A, nn.Parameter) and isinstance(layer.lora_B, nn.Parameter)
    assert tuple(layer.lora_A.shape) == (3, 7) and tuple(layer.lora_B.shape) == (5, 3)
    assert torch.count_nonzero(layer.lora_B) == 0
    assert torch.count_nonzero(layer.lora_A) > 0
    assert layer.scaling == 2.0 and layer.base is base


@settings(max_examples=25, deadline=None)
@given(rank=st.integers(1, 8), alpha=st.floats(0.1, 32), n_in=st.integers(1, 20),
       n_out=st.integers(1, 20))
def test_lora_output_unchanged_at_init(rank, alpha, n_in, n_out):
    base = nn.Linear(n_in, n_out)
    x = torch.randn(4, 3, n_in)
    assert torch.equal(tu.LoRALinear(base, rank, alpha)(x), base(x))


def test_lora_forward_is_base_plus_scaled_low_rank_product():
    base = nn.Linear(6, 4)
    layer = tu.LoRALinear(base, rank=2, alpha=3)
    with torch.no_grad():
        layer.lora_B.normal_()
    x = torch.randn(5, 6)
    expected = base(x) + (3 / 2) * x @ layer.lora_A.T @ layer.lora_B.T
    assert torch.allclose(layer(x), expected, atol=1e-6)


def test_lora_freezes_base_and_trains_only_a_and_b():
    layer = tu.LoRALinear(nn.Linear(6, 4), rank=2, alpha=2)
    trainable = [n for n, p in layer.named_parameters() if p.requires_grad]
    assert trainable == ["lora_A", "lora_B"]


@settings(max_examples=20, deadline=None)
@given(rank=st.integers(1, 16), n_in=st.integers(1, 64), n_out=st.integers(1, 64))
def test_parameter_count_is_r_times_in_plus_out(rank, n_in, n_out):
    layer = tu.LoRALinear(nn.Linear(n_in, n_out), rank, alpha=1.0)
    assert tu.count_parameters(layer, trainable_only=True) == rank * (n_in + n_out)


def test_gradients_reach_a_only_after_b_moves():
    # B = 0 at init: the first gradient reaches B, not A (dL/dA is proportional to B)
    layer = tu.LoRALinear(nn.Linear(6, 4), rank=2, alpha=2)
    layer(torch.randn(8, 6)).pow(2).sum().backward()
    assert torch.count_nonzero(layer.lora_A.grad) == 0
    assert torch.count_nonzero(layer.lora_B.grad) > 0


def test_merged_layer_equals_lora_layer():
    layer = tu.LoRALinear(nn.Linear(6, 4), rank=2, alpha=3)
    with torch.no_grad():
        layer.lora_B.normal_()
    merged = layer.merged()
    x = torch.randn(10, 6)
    assert type(merged) is nn.Linear
    assert torch.allclose(merged(x), layer(x), atol=1e-5)
    assert not any(p.requires_grad for p in merged.parameters())


@pytest.mark.parametrize("bad", [0, -1, 1.5, "2", True])
def test_lora_rank_must_be_a_positive_int(bad):
    with pytest.raises(ValueError, match="rank must be a positive integer"):
        tu.LoRALinear(nn.Linear(3, 3), rank=bad, alpha=1)


@pytest.mark.parametrize("bad", [0, -1.0, float("nan"), float("inf")])
def test_lora_alpha_must_be_positive(bad):
    with pytest.raises(ValueError, match="alpha must be a positive number"):
        tu.LoRALinear(nn.Linear(3, 3), rank=1, alpha=bad)


def test_lora_linear_refuses_a_conv():
    with pytest.raises(TypeError, match="wraps an nn.Linear, got Conv2d"):
        tu.LoRALinear(nn.Conv2d(1, 2, 3), rank=1, alpha=1)


# --------------------------------------------------------------------------- add / merge


def test_add_lora_replaces_in_place_and_keeps_the_function():
    net = _mlp()
    x = torch.randn(4, 12)
    before = net(x)
    out = tu.add_lora(net, ["body.fc1", "head"], rank=2, alpha=4)
    assert out is net
    assert isinstance(net.body.fc1, tu.LoRALinear) and isinstance(net.head, tu.LoRALinear)
    assert isinstance(net.body.fc2, nn.Linear) and not isinstance(net.body.fc2, tu.LoRALinear)
    assert torch.equal(net(x), before)


def test_add_lora_leaves_only_lora_matrices_trainable():
    net = tu.add_lora(_mlp(), ["body.fc1", "body.fc2"], rank=2, alpha=4)
    trainable = sorted(n for n, p in net.named_parameters() if p.requires_grad)
    assert trainable == ["body.fc1.lora_A", "body.fc1.lora_B", "body.fc2.lora_A",
                         "body.fc2.lora_B"]
    assert tu.count_parameters(net, trainable_only=True) == 2 * (12 + 16) + 2 * (16 + 8)


def test_add_lora_accepts_a_single_name():
    net = tu.add_lora(_mlp(), "head", rank=1, alpha=1)
    assert isinstance(net.head, tu.LoRALinear)


def test_add_lora_missing_target_names_close_matches():
    with pytest.raises(ValueError, match=r"no submodule named 'body.fc3'.*did you mean"):
        tu.add_lora(_mlp(), ["body.fc3"], rank=2, alpha=4)


def test_add_lora_non_linear_target_is_a_type_error():
    with pytest.raises(TypeError, match="'body' is a Sequential, not an nn.Linear"):
        tu.add_lora(_mlp(), ["body"], rank=2, alpha=4)
    with pytest.raises(TypeError, match="'body.relu1' is a ReLU"):
        tu.add_lora(_mlp(), ["body.relu1"], rank=2, alpha=4)


@pytest.mark.parametrize("rank, alpha, match", [(0, 1, "add_lora: rank must be a positive"),
                                                (2, 0, "add_lora: alpha must be a positive number"),
                                                (2, -3, "alpha must be")])
def test_add_lora_bad_rank_or_alpha_leaves_the_model_unchanged(rank, alpha, match):
    net = _mlp()
    with pytest.raises(ValueError, match=match):
        tu.add_lora(net, ["body.fc1"], rank=rank, alpha=alpha)
    assert type(net.body.fc1) is nn.Linear and all(p.requires_grad for p in net.parameters())


def test_add_lora_twice_on_the_same_layer_is_refused():
    net = tu.add_lora(_mlp(), ["head"], rank=1, alpha=1)
    with pytest.raises(ValueError, match="already adapted"):
        tu.add_lora(net, ["head"], rank=1, alpha=1)


def test_add_lora_empty_targets():
    with pytest.raises(ValueError, match="targets is empty"):
        tu.add_lora(_mlp(), [], rank=1, alpha=1)
    with pytest.raises(TypeError, match="submodule names"):
        tu.add_lora(_mlp(), [3], rank=1, alpha=1)


def test_merge_lora_restores_plain_linears_with_the_same_outputs():
    net = _randomise_b(tu.add_lora(_mlp(), ["body.fc1", "body.fc2", "head"], rank=3, alpha=5))
    x = torch.randn(9, 12)
    y = net(x)
    merged = tu.merge_lora(net)
    assert not tu.lora_layers(merged)
    assert all(type(m) is nn.Linear for n, m in merged.named_modules() if "fc" in n or n == "head")
    assert torch.allclose(merged(x), y, atol=1e-5)
    assert set(merged.state_dict()) == set(_mlp().state_dict())


def test_merge_lora_weight_is_w0_plus_scaled_ba():
    net = _randomise_b(tu.add_lora(_mlp(), ["body.fc1"], rank=2, alpha=4))
    layer = net.body.fc1
    expected = layer.base.weight + 2.0 * layer.lora_B @ layer.lora_A
    merged = tu.merge_lora(net)
    assert torch.allclose(merged.body.fc1.weight, expected)


def test_merge_lora_without_lora_layers_says_so():
    with pytest.raises(ValueError, match="no LoRALinear layers"):
        tu.merge_lora(_mlp())


def test_lora_on_transformers_targets_attention_or_all_linears():
    lm = tu.CharTransformer(dim=16, depth=2, heads=2, context=8)
    attn = tu.linear_names(lm, "attn.q", "attn.v")
    every = tu.linear_names(lm, exclude=["head"])
    assert attn == ["blocks.0.attn.q", "blocks.0.attn.v", "blocks.1.attn.q", "blocks.1.attn.v"]
    assert len(every) == 12
    tu.add_lora(lm, attn, rank=2, alpha=2)
    assert tu.count_parameters(lm, trainable_only=True) == 4 * 2 * (16 + 16)


# --------------------------------------------------------------------------- BitFit, adapters


def test_bitfit_trains_biases_and_named_prefixes():
    net = tu.bitfit(_mlp(), "head")
    trainable = sorted(n for n, p in net.named_parameters() if p.requires_grad)
    assert trainable == ["body.fc1.bias", "body.fc2.bias", "head.bias", "head.weight"]


def test_bitfit_errors():
    with pytest.raises(ValueError, match="no bias parameters"):
        tu.bitfit(nn.Linear(3, 3, bias=False))
    with pytest.raises(ValueError, match=r"no parameters under \['classifier'\]"):
        tu.bitfit(_mlp(), "classifier")


def test_adapters_start_as_identity_and_count_parameters():
    lm = tu.CharTransformer(dim=16, depth=2, heads=2, context=8)
    x = torch.randint(0, 97, (2, 8))
    before = lm(x)
    tu.add_adapters(lm, tu.linear_names(lm, "attn.out", "mlp.fc2"), bottleneck=4)
    assert torch.equal(lm(x), before)
    per_adapter = 2 * 16 * 4 + 16 + 4
    assert tu.count_parameters(lm, trainable_only=True) == 4 * per_adapter


def test_adapter_errors():
    with pytest.raises(ValueError, match="bottleneck must be a positive integer"):
        tu.add_adapters(_mlp(), ["head"], bottleneck=0)
    with pytest.raises(TypeError, match="not an nn.Linear"):
        tu.add_adapters(_mlp(), ["body"], bottleneck=2)


# --------------------------------------------------------------------------- swapping add-ons


def test_trainable_state_round_trip_swaps_tasks_on_one_base():
    net = tu.add_lora(_mlp(), ["body.fc1"], rank=2, alpha=2)
    x = torch.randn(3, 12)
    _randomise_b(net)
    task_a, out_a = tu.trainable_state(net), net(x)
    _randomise_b(net)
    task_b, out_b = tu.trainable_state(net), net(x)
    assert not torch.allclose(out_a, out_b)
    tu.load_trainable_state(net, task_a)
    assert torch.equal(net(x), out_a)
    tu.load_trainable_state(net, task_b)
    assert torch.equal(net(x), out_b)


def test_load_trainable_state_errors():
    net = tu.add_lora(_mlp(), ["body.fc1"], rank=2, alpha=2)
    with pytest.raises(KeyError, match="no parameters"):
        tu.load_trainable_state(_mlp(), tu.trainable_state(net))
    bad = {"body.fc1.lora_A": torch.zeros(3, 12)}
    with pytest.raises(ValueError, match=r"shape \[3, 12\] in the state but \[2, 12\]"):
        tu.load_trainable_state(net, bad)
    with pytest.raises(ValueError, match="no trainable parameters"):
        tu.trainable_state(_mlp().requires_grad_(False))


# --------------------------------------------------------------------------- Hugging Face peft


def test_our_lora_and_peft_give_the_same_outputs_for_the_same_a_and_b(tmp_path):
    peft = pytest.importorskip("peft")
    torch.manual_seed(0)
    base = tu.CharTransformer(dim=16, depth=2, heads=2, context=8)
    targets = ["attn.q", "attn.v", "mlp.fc1"]
    rank, alpha = 4, 8
    ours = tu.add_lora(_clone(base), tu.linear_names(base, *targets), rank, alpha)
    _randomise_b(ours)
    config = peft.LoraConfig(r=rank, lora_alpha=alpha, target_modules=targets, lora_dropout=0.0)
    theirs = peft.get_peft_model(_clone(base), config)
    with torch.no_grad():
        for name, layer in tu.lora_layers(ours).items():
            mod = theirs.base_model.model.get_submodule(name)
            mod.lora_A["default"].weight.copy_(layer.lora_A)
            mod.lora_B["default"].weight.copy_(layer.lora_B)
    x = torch.randint(0, 97, (3, 8))
    assert torch.allclose(ours(x), theirs(x), atol=1e-5)
    # trainable parameter counts agree too
    n_ours = tu.count_parameters(ours, trainable_only=True)
    assert n_ours == sum(p.numel() for p in theirs.parameters() if p.requires_grad)
    assert n_ours == rank * sum(m.in_features + m.out_features
                                for m in tu.lora_layers(ours).values())
    # saved and reloaded from a local folder, then merged: still the same function
    theirs.save_pretrained(tmp_path / "adapter")
    reloaded = peft.PeftModel.from_pretrained(_clone(base), tmp_path / "adapter")
    assert torch.allclose(reloaded(x), ours(x), atol=1e-5)
    merged_theirs = reloaded.merge_and_unload()
    merged_ours = tu.merge_lora(ours)
    assert torch.allclose(merged_theirs(x), merged_ours(x), atol=1e-5)
    for name in tu.linear_names(merged_ours):
        assert torch.allclose(merged_theirs.get_submodule(name).weight,
                              merged_ours.get_submodule(name).weight, atol=1e-6)


def _clone(model):
    import copy

    return copy.deepcopy(model)


def _update_norms(alpha_of_rank):
    norms = []
    for rank in (1, 4, 16):
        torch.manual_seed(0)
        layer = tu.LoRALinear(nn.Linear(64, 64), rank, alpha=alpha_of_rank(rank))
        opt = torch.optim.Adam([layer.lora_A, layer.lora_B], lr=1e-2)
        x = torch.randn(256, 64)
        target = layer.base(x) + 0.1 * x @ torch.randn(64, 64)
        for _ in range(10):
            opt.zero_grad()
            (layer(x) - target).pow(2).mean().backward()
            opt.step()
        norms.append(layer.delta_weight().norm().item())
    return norms


def test_alpha_over_rank_keeps_the_update_size_when_rank_changes():
    # chapter 9: with alpha fixed, ||(alpha/r) B A|| after ten Adam steps barely depends on r;
    # without the 1/r (alpha = r, scale 1) it grows with r
    fixed_alpha = _update_norms(lambda r: 4.0)
    scale_one = _update_norms(lambda r: float(r))
    assert max(fixed_alpha) / min(fixed_alpha) < 2
    assert scale_one[-1] / scale_one[0] > 3
