"""Tests for chapter 9's core pieces: text corpora, character ids, windows, transformers, LM loops."""

import pytest
import torch

import transfer_utils as tu

# --------------------------------------------------------------------------- text


def test_text_splits_are_disjoint_documents_covering_the_corpus():
    for corpus in tu.TEXT_CORPORA:
        parts = {s: {t for t, _ in tu.text_documents(corpus, s)} for s in ("train", "val", "test")}
        assert not parts["train"] & parts["val"] and not parts["train"] & parts["test"]
        assert not parts["val"] & parts["test"]
        n = sum(len(p) for p in parts.values())
        assert 0.7 < len(parts["train"]) / n < 0.9  # 80% of the documents


def test_load_text_is_deterministic_and_truncates():
    assert tu.load_text("prose", "val") == tu.load_text("prose", "val")
    assert len(tu.load_text("code", "test", max_chars=123)) == 123


def test_load_text_errors():
    with pytest.raises(ValueError, match="unknown text corpus 'poems'"):
        tu.load_text("poems")
    with pytest.raises(ValueError, match="split must be one of"):
        tu.load_text("prose", "validation")
    with pytest.raises(ValueError, match="max_chars must be a positive integer"):
        tu.load_text("prose", max_chars=0)


def test_encode_decode_round_trip_and_unknowns():
    text = "def f(x):\n    return x ** 2  # ok ~"
    assert tu.decode_text(tu.encode_text(text)) == text
    assert tu.decode_text(tu.encode_text("\u2018a\u2019\t\u00e9")) == "'a'    \ufffd"
    assert len(tu.TEXT_VOCAB) == 97 and tu.encode_text("").shape == (0,)
    with pytest.raises(TypeError, match="takes a str"):
        tu.encode_text(b"bytes")
    with pytest.raises(ValueError, match="ids must be in 0..96"):
        tu.decode_text([200])


def test_text_windows_shift_by_one_and_errors():
    ids = tu.encode_text("abcdefghijklmnop")
    w = tu.TextWindows(ids, 4, stride=2)
    assert len(w) == 6 and torch.equal(w.x[:, 1:], w.y[:, :-1])
    assert len(tu.TextWindows(ids, 4, windows=2)) == 2
    with pytest.raises(ValueError, match="too few for one window"):
        tu.TextWindows(ids[:3], 4)
    with pytest.raises(ValueError, match="context must be a positive integer"):
        tu.TextWindows(ids, 0)
    with pytest.raises(ValueError, match="1-D tensor of character ids"):
        tu.TextWindows(ids.float(), 4)


def test_center_pad_frames_images_and_refuses_large_ones():
    ds = tu.center_pad(tu.load_digits(image_size=16), 28)
    assert ds.x.shape[-2:] == (28, 28) and ds.x[..., 6:22, 6:22].sum() > 0
    assert ds.x[..., :6, :].abs().sum() == 0 and ds.x[..., 22:, :].abs().sum() == 0
    with pytest.raises(ValueError, match="no larger than 8x8"):
        tu.center_pad(tu.load_digits(image_size=16), 8)


# --------------------------------------------------------------------------- models


def test_tiny_vit_shapes_names_and_errors():
    vit = tu.TinyViT(num_classes=5, dim=32, depth=1, heads=2)
    assert vit(torch.zeros(3, 1, 28, 28)).shape == (3, 5)
    assert vit.body(torch.zeros(3, 1, 28, 28)).shape == (3, 32)
    assert "body.blocks.0.attn.q" in tu.linear_names(vit)
    with pytest.raises(ValueError, match="16 patches of 7x7"):
        vit(torch.zeros(1, 1, 8, 8))
    with pytest.raises(ValueError, match="multiple of patch_size"):
        tu.TinyViT(image_size=28, patch_size=5)
    with pytest.raises(ValueError, match="multiple of heads"):
        tu.TinyViT(dim=30, heads=4)
    tu.replace_head(vit, 3)
    assert vit(torch.zeros(1, 1, 28, 28)).shape == (1, 3)


def test_char_transformer_is_causal():
    torch.manual_seed(0)
    lm = tu.CharTransformer(context=16, dim=16, depth=2, heads=2)
    x = torch.randint(0, 97, (1, 10))
    y = x.clone()
    y[0, 7] = (y[0, 7] + 1) % 97
    with torch.no_grad():
        a, b = lm(x), lm(y)
    assert torch.allclose(a[:, :7], b[:, :7]) and not torch.allclose(a[:, 7:], b[:, 7:])


def test_char_transformer_errors_and_generation():
    lm = tu.CharTransformer(context=8, dim=16, depth=1, heads=2)
    with pytest.raises(ValueError, match="longer than the context"):
        lm(torch.zeros(1, 9, dtype=torch.long))
    with pytest.raises(ValueError, match="integer token ids"):
        lm(torch.zeros(1, 4))
    with pytest.raises(ValueError, match="temperature must be > 0"):
        lm.generate(torch.zeros(1, 2, dtype=torch.long), 3, temperature=0)
    lm.train()
    out = lm.generate(torch.zeros(1, 2, dtype=torch.long), 12)  # longer than the context
    assert out.shape == (1, 14) and lm.training


# --------------------------------------------------------------------------- LM training


def _lm_data():
    ids = tu.encode_text(tu.load_text("prose", max_chars=3000))
    return tu.text_loader(ids, 16, 8, shuffle=True), tu.text_loader(ids, 16, 64)


def test_fit_lm_lowers_the_loss_and_takes_steps_or_epochs():
    torch.manual_seed(0)
    lm = tu.CharTransformer(context=16, dim=16, depth=1, heads=2)
    train, ev = _lm_data()
    before = tu.evaluate_lm(lm, ev)
    hist = tu.fit_lm(lm, train, steps=30, lr=3e-3, seed=0, progress=False)
    after = tu.evaluate_lm(lm, ev)
    assert hist.steps == 30 and after["bits_per_char"] < before["bits_per_char"] - 0.5
    assert after["n"] == len(ev.dataset) * 16
    assert tu.fit_lm(lm, train, epochs=1, progress=False).steps == len(train)
    with pytest.raises(TypeError, match="exactly one of epochs="):
        tu.fit_lm(lm, train, progress=False)


def test_fit_lm_trains_only_lora_when_the_base_is_frozen():
    lm = tu.CharTransformer(context=16, dim=16, depth=1, heads=2)
    tu.add_lora(lm, tu.linear_names(lm, "attn.q", "attn.v"), rank=2, alpha=2)
    frozen = {n: p.clone() for n, p in lm.named_parameters() if not p.requires_grad}
    tu.fit_lm(lm, _lm_data()[0], steps=3, lr=1e-2, progress=False)
    assert all(torch.equal(p, frozen[n]) for n, p in lm.named_parameters() if n in frozen)
    assert tu.lora_layers(lm)["blocks.0.attn.q"].lora_B.abs().sum() > 0


def test_lm_loss_and_fit_lm_errors():
    with pytest.raises(ValueError, match=r"a language model returns \[B, T, vocab\]"):
        tu.lm_loss(tu.MLP(4, hidden=(4,)), torch.zeros(2, 4), torch.zeros(2, 4, dtype=torch.long))
    lm = tu.CharTransformer(context=16, dim=16, depth=1, heads=2).requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        tu.fit_lm(lm, _lm_data()[0], steps=1)
    with pytest.raises(ValueError, match="lr must be a positive number"):
        tu.fit_lm(tu.CharTransformer(context=16, dim=16, depth=1, heads=2), _lm_data()[0],
                  steps=1, lr=0)


def test_plot_tradeoff_errors():
    with pytest.raises(ValueError, match="at least one point"):
        tu.plot_tradeoff({})
    with pytest.raises(TypeError, match="Summary objects"):
        tu.plot_tradeoff({"a": {1: 0.5}})
