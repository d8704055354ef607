"""Chapter 9's headline claims, each re-run small and checked for its direction.

The chapter runs three seeds with learning rates chosen on validation; these tests
reuse the learning rates it chose (printed in the chapter) on one or two seeds.
"""

import copy

import pytest
import torch

import transfer_utils as tu

CTX, STEPS, BATCH = 64, 20, 4


@pytest.fixture(scope="module")
def lm_runs():
    torch.set_num_threads(1)
    base = tu.zoo.load("prose_char_lm", device="cpu")
    train = tu.encode_text(tu.load_text("code", "train", max_chars=300_000))
    test = tu.text_loader(tu.encode_text(tu.load_text("code", "test")), CTX, 128, windows=64)
    prose = tu.text_loader(tu.encode_text(tu.load_text("prose", "val")), CTX, 128, windows=32)
    attn = tu.linear_names(base, "attn.q", "attn.v")
    every = tu.linear_names(base, exclude=["head"])
    methods = {  # name: (make, learning rate the chapter chose on validation)
        "full": (lambda m: m, 3e-4),
        "lora attention": (lambda m: tu.add_lora(m, attn, 4, 8.0), 3e-3),
        "lora all": (lambda m: tu.add_lora(m, every, 4, 8.0), 3e-3),
    }
    out = {"base": {"code": [tu.evaluate_lm(base, test)["bits_per_char"]] * 2,
                    "prose": [tu.evaluate_lm(base, prose)["bits_per_char"]] * 2}}
    for name, (make, lr) in methods.items():
        out[name] = {"code": [], "prose": []}
        for seed in (0, 1):
            tu.seed_everything(seed)
            model = make(copy.deepcopy(base))
            loader = tu.text_loader(train, CTX, BATCH, shuffle=True, seed=seed)
            tu.fit_lm(model, loader, steps=STEPS, lr=lr, progress=False)
            out[name]["code"].append(tu.evaluate_lm(model, test)["bits_per_char"])
            out[name]["prose"].append(tu.evaluate_lm(model, prose)["bits_per_char"])
    return out


def _mean(xs):
    return sum(xs) / len(xs)


def test_every_method_learns_code(lm_runs):
    for name in ("full", "lora attention", "lora all"):
        assert _mean(lm_runs[name]["code"]) < _mean(lm_runs["base"]["code"]) - 0.05


def test_lora_trails_full_fine_tuning_on_a_large_domain_shift(lm_runs):
    full = lm_runs["full"]["code"]
    for name in ("lora attention", "lora all"):
        assert all(a > b for a, b in zip(lm_runs[name]["code"], full, strict=True))


def test_lora_on_all_linear_layers_beats_attention_only(lm_runs):
    assert all(a < b for a, b in zip(lm_runs["lora all"]["code"],
                                     lm_runs["lora attention"]["code"], strict=True))


def test_every_method_forgets_prose_and_attention_lora_forgets_less(lm_runs):
    for name in ("full", "lora attention", "lora all"):
        assert _mean(lm_runs[name]["prose"]) > _mean(lm_runs["base"]["prose"])
    assert _mean(lm_runs["lora attention"]["prose"]) < _mean(lm_runs["full"]["prose"])


def test_lora_cuts_optimizer_memory_but_hardly_the_activations():
    base = tu.zoo.load("prose_char_lm", device="cpu")
    batch = torch.zeros(4, CTX, dtype=torch.long)
    lora = tu.add_lora(copy.deepcopy(base), tu.linear_names(base, exclude=["head"]), 8, 8.0)
    full, low = tu.memory_footprint(base, batch), tu.memory_footprint(lora, batch)
    assert low["total"] < 0.8 * full["total"]
    assert low["gradients"] + low["optimizer"] < 0.2 * (full["gradients"] + full["optimizer"])
    assert low["activations"] > 0.9 * full["activations"]
    n_lora = sum(v.numel() for v in tu.trainable_state(lora).values())
    assert n_lora < 0.2 * tu.count_parameters(base)


def test_framing_digits_like_mnist_is_what_lets_the_vit_read_them():
    vit = tu.zoo.load("mnist28_vit", device="cpu")
    stretched = tu.load_digits(image_size=28)
    framed = tu.center_pad(tu.load_digits(image_size=16), 28)
    acc = {name: tu.evaluate(vit, tu.make_loader(ds, 512))["accuracy"]
           for name, ds in (("stretched", stretched), ("framed", framed))}
    assert acc["stretched"] < 0.2 < 0.45 < acc["framed"]


@pytest.fixture(scope="module")
def vit_setup():
    vit = tu.zoo.load("mnist28_vit", device="cpu")
    digits = tu.center_pad(tu.load_digits(image_size=16), 28)
    pool, test = tu.split(digits, (0.5, 0.5), seed=0)
    pool, _ = tu.split(pool, (0.8, 0.2), seed=0)
    return vit, pool, test


def _lora_head(model):
    tu.add_lora(model, tu.linear_names(model, exclude=["head", "body.patch_embed"]), 4, 8.0)
    model.head.requires_grad_(True)
    return model


def test_few_shot_vit_lora_matches_full_fine_tuning_and_both_beat_the_source(vit_setup):
    vit, pool, test = vit_setup
    source = tu.evaluate(vit, tu.make_loader(test, 512))["accuracy"]
    acc = {}
    for name, make, lr in (("full", lambda m: m, 3e-4), ("lora", _lora_head, 3e-3)):
        tu.seed_everything(0)
        model = make(copy.deepcopy(vit))
        tu.fit(model, tu.make_loader(tu.few_shot(pool, 5, 0), 32, shuffle=True), steps=14,
               lr=lr, progress=False)
        acc[name] = tu.evaluate(model, tu.make_loader(test, 512))["accuracy"]
    assert min(acc.values()) > source + 0.15
    assert abs(acc["lora"] - acc["full"]) < 0.05


def test_swapping_adapters_on_one_base_keeps_each_task_exactly(vit_setup):
    vit, pool, test = vit_setup
    letters = tu.load_glyphs(400, chars="ABCDEFGHIJ", seed=1)
    shared = _lora_head(copy.deepcopy(vit))
    start = tu.trainable_state(shared)
    states, accs = {}, {}
    for name, train, evaluate_on in (("digits", tu.few_shot(pool, 5, 0), test),
                                     ("letters", letters, letters)):
        tu.load_trainable_state(shared, start)
        tu.fit(shared, tu.make_loader(train, 32, shuffle=True), steps=5, lr=3e-3, seed=0,
               progress=False)
        states[name] = tu.trainable_state(shared)
        accs[name] = tu.evaluate(shared, tu.make_loader(evaluate_on, 512))["accuracy"]
    tu.load_trainable_state(shared, states["digits"])
    assert tu.evaluate(shared, tu.make_loader(test, 512))["accuracy"] == accs["digits"]
    body = [n for n in tu.trainable_state(shared) if not n.startswith("head")]
    assert all(".lora_" in n for n in body)  # only LoRA matrices (and the head) were swapped


def test_merged_vit_computes_the_same_function(vit_setup):
    vit, pool, test = vit_setup
    tuned = _lora_head(copy.deepcopy(vit))
    with torch.no_grad():
        for layer in tu.lora_layers(tuned).values():
            layer.lora_B.normal_(std=0.05)
    x = test.x[:64]
    with torch.no_grad():
        before = tuned(x)
        after = tu.merge_lora(tuned)(x)
    assert torch.allclose(before, after, atol=1e-4)
    assert not tu.lora_layers(tuned)
