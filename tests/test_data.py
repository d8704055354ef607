"""Tests for transfer_utils.data: offline datasets, splits, few-shot sets, loaders and plots."""

from __future__ import annotations

import random
import time
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from matplotlib.figure import Figure

import transfer_utils as tu
from transfer_utils import data


def indexed(n: int = 60, num_classes: int = 3) -> tu.ArrayDataset:
    """Dataset whose x holds each example's own index, so picks can be traced back."""
    return tu.ArrayDataset(
        torch.arange(n, dtype=torch.float32).view(n, 1, 1), torch.arange(n) % num_classes
    )


def ids(ds: tu.ArrayDataset) -> list[int]:
    return ds.x.flatten().long().tolist()


# --------------------------------------------------------------------------- ArrayDataset


def test_array_dataset_converts_dtypes_and_names_classes():
    ds = tu.ArrayDataset(np.zeros((3, 1, 4, 4)), [0, 2, 1], name="toy")
    assert ds.x.dtype == torch.float32 and ds.y.dtype == torch.int64
    assert ds.classes == ["0", "1", "2"] and ds.num_classes == 3
    assert ds.targets is ds.y and len(ds) == 3
    x1, y1 = ds[1]
    assert x1.shape == (1, 4, 4) and int(y1) == 2
    assert repr(ds) == "ArrayDataset('toy', n=3, x=[1, 4, 4], classes=['0', '1', '2'])"


def test_array_dataset_keeps_given_class_names_and_works_with_dataloader():
    ds = tu.ArrayDataset(
        torch.rand(6, 1, 40), torch.tensor([0, 1] * 3), classes=["cat", "dog", "x"]
    )
    assert ds.num_classes == 3 and ds.classes[1] == "dog"
    xb, yb = next(iter(torch.utils.data.DataLoader(ds, batch_size=4)))
    assert xb.shape == (4, 1, 40) and yb.tolist() == [0, 1, 0, 1]


@pytest.mark.parametrize(
    ("x", "y", "classes", "match"),
    [
        (torch.zeros(3, 2), torch.zeros(4), None, r"same length, got 3 inputs and 4 labels"),
        (torch.zeros(3, 2), torch.zeros(3, 2), None, r"y must be 1-D .*y\.argmax\(1\)"),
        (torch.zeros(2, 2), torch.tensor([0.5, 1.0]), None, "integer class ids"),
        (torch.zeros(2, 2), torch.tensor([-1, 0]), None, r"labels must be >= 0"),
        (
            torch.zeros(2, 2),
            torch.tensor([0, 2]),
            ["a", "b"],
            "has 2 names .* up to 2; pass at least 3",
        ),
    ],
)
def test_array_dataset_rejects_bad_inputs(x, y, classes, match):
    with pytest.raises(ValueError, match=match):
        tu.ArrayDataset(x, y, classes)


@pytest.mark.parametrize(
    ("indices", "expected"),
    [
        ([4, 0, 2], [4, 0, 2]),
        (torch.tensor([5, 1]), [5, 1]),
        (slice(1, 3), [1, 2]),
        (np.array([True, False] * 3), [0, 2, 4]),
        ([], []),
        (range(2), [0, 1]),
    ],
)
def test_subset_accepts_lists_tensors_slices_and_masks(indices, expected):
    ds = indexed(6)
    sub = ds.subset(indices)
    assert ids(sub) == expected and sub.y.tolist() == [i % 3 for i in expected]
    assert sub.classes == ds.classes and sub.name == ds.name


def test_to_returns_a_new_dataset_on_the_device():
    ds = indexed(6)
    moved = ds.to("cpu")
    assert moved is not ds and torch.equal(moved.x, ds.x) and moved.x.device.type == "cpu"


# --------------------------------------------------------------------------- loaders


def test_load_mnist_is_5000_balanced_images_in_unit_range():
    ds = tu.load_mnist()
    assert ds.x.shape == (5000, 1, 28, 28) and ds.x.dtype == torch.float32
    assert ds.x.min() == 0 and ds.x.max() == 1 and ds.name == "mnist"
    assert ds.y.bincount().tolist() == [500] * 10
    assert len(ds.y[:50].unique()) >= 8  # shuffled once: no block of one class


def test_load_mnist_returns_fresh_tensors():
    first = tu.load_mnist()
    first.x.zero_()
    first.y.zero_()
    again = tu.load_mnist()
    assert again.x.max() == 1 and again.y.bincount().tolist() == [500] * 10


@pytest.mark.parametrize("size", [14, 32])
def test_load_mnist_resizes(size):
    ds = tu.load_mnist(image_size=size)
    assert ds.x.shape == (5000, 1, size, size)
    assert 0 <= ds.x.min() and ds.x.max() <= 1
    base = tu.load_mnist().x.mean()
    assert abs(float(ds.x.mean() - base)) < 0.01  # resizing keeps the average brightness


def test_load_mnist_timing_after_first_call_is_cached():
    tu.load_mnist()
    start = time.perf_counter()
    tu.load_mnist()
    assert time.perf_counter() - start < 0.5


@pytest.mark.parametrize("bad", [0, -3, 2.5, "28"])
def test_image_size_must_be_positive_int(bad):
    with pytest.raises(ValueError, match="load_mnist: image_size must be a positive int"):
        tu.load_mnist(image_size=bad)


def test_load_digits_is_scaled_to_unit_range():
    ds = tu.load_digits()
    assert ds.x.shape == (1797, 1, 8, 8) and ds.name == "digits"
    assert ds.x.min() == 0 and ds.x.max() == 1 and ds.y.dtype == torch.int64
    assert sorted(ds.y.unique().tolist()) == list(range(10))
    assert tu.load_digits(image_size=28).x.shape == (1797, 1, 28, 28)


def test_load_mnist1d_shapes_balance_and_reproducibility():
    ds = tu.load_mnist1d(503, seed=1)
    assert ds.x.shape == (503, 1, 40) and ds.x.dtype == torch.float32 and ds.name == "mnist1d"
    assert ds.y.bincount().tolist() == [51, 51, 51] + [50] * 7
    assert torch.equal(ds.x, tu.load_mnist1d(503, seed=1).x)
    assert not torch.equal(ds.x, tu.load_mnist1d(503, seed=2).x)


def test_load_mnist1d_knobs_change_the_domain():
    base = tu.load_mnist1d(200, seed=0)
    for knob in ({"noise": 0.0}, {"shear": 0.0}, {"scale": 0.0}):
        assert not torch.equal(base.x, tu.load_mnist1d(200, seed=0, **knob).x), knob
    smooth, noisy = tu.load_mnist1d(200, noise=0.0), tu.load_mnist1d(200, noise=1.0)
    roughness = [float(d.x.diff(dim=-1).abs().mean()) for d in (smooth, noisy)]
    assert roughness[0] < roughness[1]


def test_load_mnist1d_leaves_global_rng_state_alone():
    np.random.seed(123)
    random.seed(123)
    expected = (np.random.rand(), random.random())
    np.random.seed(123)
    random.seed(123)
    tu.load_mnist1d(100, seed=7, shear=0.1)  # uncached call: the package reseeds globally
    assert (np.random.rand(), random.random()) == expected


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"n": 5}, r"n must be an int >= 10"), ({"noise": -1.0}, r"noise .*must be a non-negative number")],
)
def test_load_mnist1d_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        tu.load_mnist1d(**{"n": 100, **kwargs})


# --------------------------------------------------------------------------- glyphs


def test_load_glyphs_10k_is_fast_balanced_and_mnist_like():
    data._glyph_templates.cache_clear()  # time the cold path, font rendering included
    start = time.perf_counter()
    ds = tu.load_glyphs(10000, seed=0)
    elapsed = time.perf_counter() - start
    assert elapsed < 15, f"rendering 10,000 glyphs took {elapsed:.1f} s"
    assert ds.x.shape == (10000, 1, 28, 28) and ds.x.dtype == torch.float32 and ds.name == "glyphs"
    assert ds.y.bincount().tolist() == [1000] * 10 and ds.classes == list("0123456789")
    assert ds.x.min() >= 0 and (ds.x.flatten(1).amax(1) == 1).all()  # saturated strokes
    assert (
        ds.x[:, :, [0, -1], :].mean() < 0.01 and ds.x[:, :, :, [0, -1]].mean() < 0.01
    )  # black rim
    assert 0.08 < float(ds.x.mean()) < 0.25  # about as much ink as MNIST (0.13)
    mass = ds.x[:, 0].sum((0, 1))  # column profile of the ink: centred
    centre = float((mass * torch.arange(28)).sum() / mass.sum())
    assert abs(centre - 13.5) < 1


def test_glyph_one_has_less_ink_than_eight():
    templates, ok = data._glyph_templates(tuple(data._font_path(f) for f in tu.glyph_fonts()), "18")
    assert ok.all()
    ink = templates.sum((2, 3))
    assert (ink[:, 0] < ink[:, 1]).all()
    ds = tu.load_glyphs(200, seed=3)
    assert ds.x[ds.y == 1].mean() < ds.x[ds.y == 8].mean()


def test_load_glyphs_reproducible_per_seed():
    a, b, c = (tu.load_glyphs(300, seed=s) for s in (5, 5, 6))
    assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)
    assert not torch.equal(a.x, c.x)


def test_load_glyphs_spreads_the_remainder_and_resizes():
    ds = tu.load_glyphs(1005, image_size=32, chars="0123456789")
    assert ds.y.bincount().tolist() == [101] * 5 + [100] * 5
    assert ds.x.shape == (1005, 1, 32, 32)


def test_load_glyphs_other_chars_and_one_font():
    ds = tu.load_glyphs(40, chars="AxZ?", fonts=["DejaVuSans"])
    assert ds.classes == ["A", "x", "Z", "?"] and ds.num_classes == 4
    assert (ds.x.flatten(1).amax(1) > 0.5).all()  # every image has a glyph


def test_glyph_fonts_skips_symbol_fonts_and_all_draw_digits():
    fonts = tu.glyph_fonts()
    assert "DejaVuSans" in fonts and "cmr10" in fonts
    assert not any(
        bad in f for f in fonts for bad in ("cmsy", "cmex", "cmmi", "LastResort", "STIXSiz")
    )
    _, ok = data._glyph_templates(tuple(data._font_path(f) for f in fonts), "0123456789")
    assert ok.all()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"fonts": ["NoSuchFont"]}, r"unknown font 'NoSuchFont'; pass a path .* DejaVuSans"),
        ({"fonts": []}, "fonts is empty; pass None"),
        ({"chars": "1\u4e00"}, r"draws \['\u4e00'\]; drop those characters"),
        ({"chars": "11"}, "no repeats"),
        ({"chars": "01", "n": 1}, r"n must be an int >= len\(chars\) = 2"),
        ({"image_size": 0}, "image_size must be a positive int"),
    ],
)
def test_load_glyphs_errors(kwargs, match):
    with warnings.catch_warnings(), pytest.raises(ValueError, match=match):
        warnings.simplefilter("error")  # and no "glyph missing" warnings from matplotlib
        tu.load_glyphs(**{"n": 20, **kwargs})


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [("mnist", {}), ("digits", {}), ("mnist1d", {"n": 100}), ("glyphs", {"n": 50})],
)
def test_load_dataset_dispatches_every_name(name, kwargs):
    assert name in tu.DATASETS
    assert tu.load_dataset(name, **kwargs).name == name


def test_load_dataset_unknown_name_lists_choices():
    with pytest.raises(ValueError) as err:
        tu.load_dataset("cifar")
    assert (
        str(err.value) == "unknown dataset 'cifar'; choose one of: mnist, digits, mnist1d, glyphs, shapes"
    )


# --------------------------------------------------------------------------- subsets


def test_class_split_relabels_in_given_order():
    ds = indexed(60, num_classes=6)
    ds.classes = list("abcdef")
    sub = tu.class_split(ds, [4, 1])
    assert sub.classes == ["e", "b"] and len(sub) == 20
    assert all(
        (i % 6, label) in {(4, 0), (1, 1)}
        for i, label in zip(ids(sub), sub.y.tolist(), strict=True)
    )
    assert ids(sub) == sorted(ids(sub))  # original order kept


def test_class_split_without_relabel_keeps_labels():
    ds = indexed(60, num_classes=6)
    sub = tu.class_split(ds, (5, 2), relabel=False)
    assert sorted(sub.y.unique().tolist()) == [2, 5] and sub.classes == ds.classes


@pytest.mark.parametrize(
    ("classes", "match"),
    [
        ([], "classes is empty"),
        ([1, 1], "has repeats"),
        ([0, 7], r"labels \[7\] have no examples in .*choose from the labels present: \[0, 1, 2\]"),
    ],
)
def test_class_split_errors(classes, match):
    with pytest.raises(ValueError, match=match):
        tu.class_split(indexed(), classes)


def test_few_shot_picks_exactly_k_per_class_reproducibly():
    ds = indexed(60, num_classes=3)
    shots = tu.few_shot(ds, 4, seed=1)
    assert shots.y.bincount().tolist() == [4, 4, 4]
    assert all(i % 3 == label for i, label in zip(ids(shots), shots.y.tolist(), strict=True))
    assert len(set(ids(shots))) == 12
    assert ids(shots) == ids(tu.few_shot(ds, 4, seed=1))
    assert set(ids(shots)) != set(ids(tu.few_shot(ds, 4, seed=2)))
    assert shots.y.tolist() != sorted(shots.y.tolist())  # shuffled, not grouped by class


def test_few_shot_sets_are_nested_in_k():
    ds = indexed(300, num_classes=10)
    small, large = (set(ids(tu.few_shot(ds, k, seed=0))) for k in (3, 9))
    assert small < large
    assert tu.few_shot(tu.load_digits(), 5).x.shape == (50, 1, 8, 8)


def test_few_shot_k_too_large_names_the_class():
    ds = indexed(7, num_classes=3)  # class 0 has 3 examples, classes 1 and 2 have 2
    with pytest.raises(ValueError, match=r"class '1' \(label 1\) has only 2 examples.*use k <= 2"):
        tu.few_shot(ds, 3)


@pytest.mark.parametrize("bad", [0, -1, 1.5])
def test_few_shot_rejects_bad_k(bad):
    with pytest.raises(ValueError, match="k .* must be a positive integer"):
        tu.few_shot(indexed(), bad)


def test_split_is_disjoint_stratified_and_reproducible():
    ds = indexed(100, num_classes=4)
    train, test = tu.split(ds, (0.8, 0.2), seed=0)
    assert set(ids(train)).isdisjoint(ids(test)) and len(train) + len(test) == 100
    assert train.y.bincount().tolist() == [20] * 4 and test.y.bincount().tolist() == [5] * 4
    assert ids(train) == ids(tu.split(ds, seed=0)[0])
    assert ids(train) != ids(tu.split(ds, seed=1)[0])


def test_split_three_ways_and_unstratified():
    ds = indexed(90, num_classes=3)
    parts = tu.split(ds, (0.6, 0.2, 0.2), seed=3, stratify=False)
    assert [len(p) for p in parts] == [54, 18, 18]
    assert sorted(sum((ids(p) for p in parts), [])) == list(range(90))


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(3, 80),
    k=st.integers(1, 5),
    f=st.floats(0.05, 0.95),
    seed=st.integers(0, 99),
    stratify=st.booleans(),
)
def test_split_partitions_any_dataset(n, k, f, seed, stratify):
    ds = indexed(n, k)
    try:
        parts = tu.split(ds, (f, 1 - f), seed=seed, stratify=stratify)
    except ValueError as err:  # never an empty part or a training part missing a class
        assert "would be empty" in str(err) or "no example of classes" in str(err)
        return
    assert sorted(ids(parts[0]) + ids(parts[1])) == list(range(n))
    assert min(len(p) for p in parts) > 0
    assert set(parts[0].y.tolist()) == set(ds.y.tolist())


@pytest.mark.parametrize("fractions", [(0.5, 0.4), (1.0,), (0.25,) * 4, (1.2, -0.2)])
def test_split_rejects_bad_fractions(fractions):
    with pytest.raises(
        ValueError, match=r"2 or 3 positive numbers summing to 1, got .*e\.g\. \(0\.8, 0\.2\)"
    ):
        tu.split(indexed(), fractions)


def test_dataset_stats_and_normalize():
    ds = tu.load_digits()
    stats = tu.dataset_stats(ds)
    assert stats["mean"] == pytest.approx((float(ds.x.mean()),))
    assert stats["std"] == pytest.approx((float(ds.x.std()),), rel=1e-5)
    z = tu.normalize(ds, **stats)
    assert abs(float(z.x.mean())) < 1e-5 and float(z.x.std()) == pytest.approx(1, abs=1e-4)
    assert torch.equal(z.y, ds.y) and z.name == "digits"
    with pytest.raises(ValueError, match="std must be > 0, got 0.0; compute it with dataset_stats"):
        tu.normalize(ds, 0.0, 0.0)


# --------------------------------------------------------------------------- batches


@pytest.mark.parametrize("shuffle", [False, True])
def test_fast_loader_visits_every_index_once_per_epoch(shuffle):
    loader = tu.FastLoader(indexed(103), batch_size=10, shuffle=shuffle, seed=4)
    assert len(loader) == 11 and loader.dataset.x.shape[0] == 103
    for _ in range(2):
        batches = list(loader)
        assert all(torch.equal(xb.flatten().long() % 3, yb) for xb, yb in batches)  # pairs kept
        seen = [i for xb, _ in batches for i in xb.flatten().long().tolist()]
        assert sorted(seen) == list(range(103))
        assert (seen == list(range(103))) != shuffle


def test_fast_loader_reshuffles_each_epoch_and_repeats_with_the_seed():
    def epochs(seed):
        loader = tu.FastLoader(indexed(50), batch_size=8, shuffle=True, seed=seed)
        return [torch.cat([xb.flatten() for xb, _ in loader]) for _ in range(2)]

    first, second = epochs(0)
    assert not torch.equal(first, second)
    again = epochs(0)
    assert torch.equal(first, again[0]) and torch.equal(second, again[1])
    assert not torch.equal(first, epochs(1)[0])


def test_fast_loader_drop_last_and_batch_shapes():
    loader = tu.FastLoader(indexed(103), batch_size=10, drop_last=True)
    sizes = [len(xb) for xb, yb in loader]
    assert len(loader) == 10 and sizes == [10] * 10
    xb, yb = next(iter(loader))
    assert xb.shape == (10, 1, 1) and yb.dtype == torch.int64


@pytest.mark.parametrize("bad", [0, -2, 1.5])
def test_fast_loader_rejects_bad_batch_size(bad):
    with pytest.raises(ValueError, match="FastLoader: batch_size must be a positive integer"):
        tu.FastLoader(indexed(), batch_size=bad)


def test_fast_loader_augment_is_applied_without_changing_the_order():
    calls = []

    def augment(xb, generator):
        calls.append(generator)
        return xb + 1000 + 0.5 * torch.rand(len(xb), 1, 1, generator=generator)

    plain = tu.make_loader(indexed(30), 7, shuffle=True, seed=2)
    aug = tu.make_loader(indexed(30), 7, shuffle=True, seed=2, augment=augment)
    assert isinstance(aug, tu.FastLoader) and aug.batch_size == 7 and aug.shuffle
    for _ in range(2):  # the augmentation's draws must not change the next epoch's order
        for (xp, yp), (xa, ya) in zip(plain, aug, strict=True):
            assert torch.equal(yp, ya) and ((xa - xp - 1000).abs() <= 0.5).all()
    assert len(calls) == 10 and all(isinstance(g, torch.Generator) for g in calls)


def test_random_shift_moves_images_by_at_most_max_shift():
    x = torch.zeros(64, 1, 9, 9)
    x[:, 0, 4, 4] = 1.0
    out = tu.random_shift(2)(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and torch.equal(out.sum((1, 2, 3)), torch.ones(64))
    rows, cols = out[:, 0].amax(2).argmax(1), out[:, 0].amax(1).argmax(1)
    assert set(rows.tolist()) == set(range(2, 7)) and set(cols.tolist()) == set(range(2, 7))


def test_random_shift_zero_fills_signals_and_is_reproducible():
    x = torch.ones(32, 2, 10)
    shift = tu.random_shift(3)
    a, b = shift(x, torch.Generator().manual_seed(1)), shift(x, torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and a.shape == x.shape
    lost = 10 - a[:, 0].sum(1)  # ones pushed out at one end, zeros in at the other
    assert lost.max() == 3 and lost.min() == 0
    assert torch.equal(a[:, 0], a[:, 1])  # channels move together
    assert torch.equal(tu.random_shift(0)(x, None), x)


def test_random_shift_errors():
    with pytest.raises(ValueError, match="max_shift must be a non-negative integer"):
        tu.random_shift(-1)
    with pytest.raises(ValueError, match=r"expects \[N, C, L\] or \[N, C, H, W\].*unsqueeze\(1\)"):
        tu.random_shift(1)(torch.zeros(4, 10), None)


# --------------------------------------------------------------------------- plots


def test_show_images_titles_each_image_with_its_class():
    ds = tu.ArrayDataset(torch.rand(5, 1, 8, 8), [0, 1, 2, 1, 0], classes=["a", "b", "c"])
    fig = tu.show_images(ds, n=4, ncols=2, title="toy")
    assert isinstance(fig, Figure) and len(fig.axes) == 1
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.texts] == ["a", "b", "c", "b"]
    assert ax.get_title() == "toy" and len(ax.images) == 1


def test_show_images_draws_signals_as_lines_and_tensors_without_labels():
    fig = tu.show_images(tu.load_mnist1d(100), n=6)
    assert len(fig.axes[0].lines) == 6 and len(fig.axes[0].texts) == 6
    fig = tu.show_images(torch.rand(3, 3, 5, 5))
    assert len(fig.axes[0].texts) == 0 and fig.axes[0].images[0].get_array().shape == (6, 17, 3)


def test_show_images_draws_into_a_given_axes():
    fig = Figure()
    left, right = fig.subplots(1, 2)
    assert tu.show_images(tu.load_digits(), n=3, ax=right) is fig
    assert len(right.images) == 1 and len(left.images) == 0


def test_show_images_errors():
    with pytest.raises(ValueError, match=r"C in \(1, 3\).*got shape \(2, 5, 4, 4\)"):
        tu.show_images(torch.rand(2, 5, 4, 4))
    with pytest.raises(ValueError, match="dataset is empty"):
        tu.show_images(indexed().subset([]))
