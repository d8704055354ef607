"""The chapter-9 zoo models: the shipped weights are as good as recorded; the recipes learn."""

import pytest
import torch

import transfer_utils as tu


def test_vit_recipe_learns_in_a_short_run():
    net, metrics = tu.zoo.train("mnist28_vit", steps=120, max_examples=2000, device="cpu",
                                progress=False)
    assert metrics["val_accuracy"] > 0.35  # chance is 0.1
    assert isinstance(net, tu.TinyViT) and not net.training


def test_language_model_recipe_learns_in_a_short_run():
    net, metrics = tu.zoo.train("prose_char_lm", steps=60, device="cpu", progress=False)
    # uniform guessing over 97 characters costs log2(97) = 6.6 bits per character
    assert metrics["val_bits_per_char"] < 4.5
    assert isinstance(net, tu.CharTransformer)


def test_language_model_recipe_counts_steps_not_epochs():
    with pytest.raises(ValueError, match="counts steps; pass steps="):
        tu.zoo.train("prose_char_lm", epochs=1)


def test_shipped_vit_is_accurate_and_small():
    net = tu.zoo.load("mnist28_vit")
    _, val = tu.zoo.source_data("mnist28_vit")
    acc = tu.evaluate(net, tu.make_loader(val, 512), device="cpu")["accuracy"]
    assert acc == pytest.approx(tu.zoo.info("mnist28_vit")["metrics"]["val_accuracy"], abs=0.01)
    assert acc > 0.9
    assert tu.count_parameters(net) < 300_000


def test_shipped_language_model_matches_its_recorded_bits_per_char():
    lm = tu.zoo.load("prose_char_lm")
    _, val = tu.zoo.source_data("prose_char_lm")
    bpc = tu.evaluate_lm(lm, tu.make_loader(val, 256), device="cpu")["bits_per_char"]
    recorded = tu.zoo.info("prose_char_lm")["metrics"]["val_bits_per_char"]
    assert bpc == pytest.approx(recorded, abs=0.01)
    assert bpc < 2.5
    # prose -> code is a real domain shift: the prose model is much worse on code
    code = tu.encode_text(tu.load_text("code", "val", max_chars=20_000))
    code_bpc = tu.evaluate_lm(lm, tu.text_loader(code, 64, 256), device="cpu")["bits_per_char"]
    assert code_bpc > bpc + 0.8


def test_language_model_samples_repeat_with_a_seeded_generator():
    lm = tu.zoo.load("prose_char_lm")
    start = tu.encode_text("The ")[None]
    a = lm.generate(start, 20, generator=torch.Generator().manual_seed(0))
    b = lm.generate(start, 20, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a, b) and a.shape == (1, 24)
