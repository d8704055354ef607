"""Tests for transfer_utils.analysis: linear CKA properties and multi-seed summaries."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import transfer_utils as tu

seeds = st.integers(0, 100_000)


def _xy(seed, n=30, d1=6, d2=4):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d1, generator=g, dtype=torch.float64), torch.randn(
        n, d2, generator=g, dtype=torch.float64)


@settings(max_examples=30, deadline=None)
@given(seed=seeds, scale=st.floats(0.01, 100))
def test_cka_bounds_identity_scaling_and_rotation(seed, scale):
    X, Y = _xy(seed)
    v = tu.linear_cka(X, Y)
    assert 0.0 <= v <= 1.0
    assert tu.linear_cka(X, X) == pytest.approx(1.0)
    Q, _ = torch.linalg.qr(torch.randn(6, 6, generator=torch.Generator().manual_seed(seed),
                                       dtype=torch.float64))
    assert tu.linear_cka(X @ Q * scale, Y) == pytest.approx(v, abs=1e-9)
    assert tu.linear_cka(X + 5.0, Y) == pytest.approx(v, abs=1e-9)  # centring


def test_cka_matches_formula_and_is_symmetric():
    X, Y = _xy(1)
    Xc, Yc = X - X.mean(0), Y - Y.mean(0)
    expected = (torch.linalg.norm(Yc.T @ Xc) ** 2 /
                (torch.linalg.norm(Xc.T @ Xc) * torch.linalg.norm(Yc.T @ Yc))).item()
    assert tu.linear_cka(X, Y) == pytest.approx(expected)
    assert tu.linear_cka(Y, X) == pytest.approx(expected)
    assert tu.linear_cka(X.numpy(), Y.numpy()) == pytest.approx(expected)


def test_cka_of_independent_noise_is_low_and_related_is_high():
    X, Y = _xy(2, n=2000, d1=5, d2=5)
    assert tu.linear_cka(X, Y) < 0.05
    assert tu.linear_cka(X, X[:, :3]) > 0.5


def test_cka_errors():
    with pytest.raises(ValueError, match="same examples: got 30 and 29"):
        tu.linear_cka(torch.randn(30, 2), torch.randn(29, 2))
    with pytest.raises(ValueError, match="2-D"):
        tu.linear_cka(torch.randn(30), torch.randn(30, 2))
    with pytest.raises(ValueError, match="at least 2"):
        tu.linear_cka(torch.randn(1, 2), torch.randn(1, 2))
    with pytest.raises(ValueError, match="constant"):
        tu.linear_cka(torch.ones(5, 2), torch.randn(5, 2))


def _hsic1(K, L):
    """Song et al. (2012)'s unbiased HSIC estimator written out on Gram matrices (reference)."""
    n = K.shape[0]
    K, L = K - torch.diag(torch.diag(K)), L - torch.diag(torch.diag(L))
    one = torch.ones(n, dtype=K.dtype)
    return ((K * L).sum() + (one @ K @ one) * (one @ L @ one) / ((n - 1) * (n - 2))
            - 2 / (n - 2) * (one @ K @ L @ one)) / (n * (n - 3))


def test_debiased_cka_matches_the_unbiased_hsic_formula():
    X, Y = _xy(3, n=25, d1=40, d2=7)
    Xc, Yc = X - X.mean(0), Y - Y.mean(0)
    K, L = Xc @ Xc.T, Yc @ Yc.T
    expected = (_hsic1(K, L) / torch.sqrt(_hsic1(K, K) * _hsic1(L, L))).item()
    assert tu.linear_cka(X, Y, debiased=True) == pytest.approx(expected, rel=1e-9, abs=1e-12)
    assert tu.linear_cka(Y, X, debiased=True) == pytest.approx(expected, rel=1e-9, abs=1e-12)
    # the unbiased estimator does not depend on the features' means (uncentred Gram matrices)
    K0, L0 = X @ X.T, Y @ Y.T
    assert (_hsic1(K0, L0) / torch.sqrt(_hsic1(K0, K0) * _hsic1(L0, L0))).item() == \
        pytest.approx(expected, rel=1e-9, abs=1e-12)


@settings(max_examples=30, deadline=None)
@given(seed=seeds, scale=st.floats(0.01, 100))
def test_debiased_cka_bounds_identity_and_invariances(seed, scale):
    X, Y = _xy(seed, n=12, d1=6, d2=30)
    v = tu.linear_cka(X, Y, debiased=True)
    assert -1.0 <= v <= 1.0
    assert tu.linear_cka(Y, Y, debiased=True) == pytest.approx(1.0)
    Q, _ = torch.linalg.qr(torch.randn(6, 6, generator=torch.Generator().manual_seed(seed),
                                       dtype=torch.float64))
    assert tu.linear_cka(X @ Q * scale, Y, debiased=True) == pytest.approx(v, abs=1e-9)
    assert tu.linear_cka(X + 5.0, Y, debiased=True) == pytest.approx(v, abs=1e-9)


def test_debiased_cka_removes_the_bias_of_many_features_on_few_examples():
    """Chapter 7: independent random features, d >> n: plug-in CKA is high, debiased about 0."""
    vals = [(tu.linear_cka(*_xy(s, n=40, d1=512, d2=512)),
             tu.linear_cka(*_xy(s, n=40, d1=512, d2=512), debiased=True)) for s in range(5)]
    biased, unbiased = np.array(vals).T
    assert biased.min() > 0.85 and np.abs(unbiased).max() < 0.05
    # with many examples and few features both agree that there is nothing shared
    X, Y = _xy(7, n=2000, d1=5, d2=5)
    assert abs(tu.linear_cka(X, Y, debiased=True)) < 0.01
    # a shared part survives debiasing (population value 64 / (sqrt(512) * 10) = 0.28)
    X, Y = _xy(8, n=40, d1=512, d2=512)
    assert 0.2 < tu.linear_cka(X, X[:, :64] + 0.5 * Y[:, :64], debiased=True) < 0.36


def test_debiased_cka_errors():
    with pytest.raises(ValueError, match="at least 4 examples"):
        tu.linear_cka(torch.randn(3, 2), torch.randn(3, 2), debiased=True)
    with pytest.raises(ValueError, match="constant"):
        tu.linear_cka(torch.ones(6, 2), torch.randn(6, 2), debiased=True)


def test_summarize():
    s = tu.summarize([0.8, 0.9, 1.0])
    assert s.mean == pytest.approx(0.9) and s.std == pytest.approx(0.1)
    assert s.ci95 == pytest.approx(4.303 * 0.1 / math.sqrt(3))
    assert s.n == 3 and "0.900 ± 0.100" in str(s) and f"{s:.2f}" == "0.90 ± 0.10"
    one = tu.summarize([0.5])
    assert one.std == 0.0 and one.ci95 == 0.0
    with pytest.raises(ValueError, match="at least one"):
        tu.summarize([])
    with pytest.raises(ValueError, match="finite"):
        tu.summarize([1.0, float("nan")])


def test_run_seeds_seeds_each_run_and_learning_curve():
    a = tu.run_seeds(lambda seed: torch.rand(()).item(), seeds=[0, 1])
    b = tu.run_seeds(lambda seed: torch.rand(()).item(), seeds=[0, 2])
    assert a.values[0] == b.values[0] and a.values[1] != b.values[1]
    with pytest.raises(ValueError, match="must not repeat"):
        tu.run_seeds(lambda s: 0.0, seeds=[0, 0, 1])
    curve = tu.learning_curve(lambda k, seed: k + seed, ks=[1, 5], seeds=[0, 1])
    assert curve[1].values == (1.0, 2.0) and curve[5].mean == 5.5
    with pytest.raises(ValueError, match="at least one k and one seed"):
        tu.run_seeds(lambda s: 0.0, seeds=[])
    with pytest.raises(ValueError, match="at least one k"):
        tu.learning_curve(lambda k, s: 0.0, ks=[])


def test_plots_return_figures():
    curve = tu.learning_curve(lambda k, seed: k / 10 + seed / 100, ks=[1, 5], seeds=[0, 1, 2])
    fig = tu.plot_curves({"a": curve, "b": curve}, title="t")
    assert len(fig.axes[0].get_lines()) >= 2
    fig.canvas.draw()  # on its own figure the legend is right of the axes, over no point
    legend = fig.axes[0].get_legend().get_window_extent()
    assert legend.x0 >= fig.axes[0].get_window_extent().x1
    fig = tu.plot_curves({"a": {0: curve[1], 1: curve[5], 3: curve[1]}}, logx=False)
    assert list(fig.axes[0].get_xticks()) == [0, 1, 3]  # integer settings, no 0.5 ticks
    h = tu.History(train_loss=[1, 0.5], train_acc=[0.5, 0.7], val_loss=[1, 1], val_acc=[0.4, 0.6])
    fig = tu.plot_history({"run": h})
    assert len(fig.axes[0].get_lines()) == 2
    with pytest.raises(ValueError, match="at least one curve"):
        tu.plot_curves({})
    with pytest.raises(ValueError, match="at least one epoch"):
        tu.plot_history(tu.History())


def test_format_table_aligns_columns_and_formats_cells():
    rows = [{"method": "scratch", "acc": tu.summarize([0.5, 0.7]), "params": 93765},
            {"method": "frozen", "acc": np.float32(0.25), "note": "k=1", "flag": True},
            {"method": "big", "acc": 123456.7}]
    lines = tu.format_table(rows).splitlines()
    assert [c.strip() for c in lines[0].split("|")] == ["method", "acc", "params", "note", "flag"]
    assert set(lines[1]) == {"-", "+"} and len(lines) == 5
    assert {len(line.split("|")[0]) for line in lines[:1] + lines[2:]} == {len("scratch ")}
    assert "0.600 ± 0.141" in lines[2] and "93,765" in lines[2]
    assert "0.250" in lines[3] and lines[3].endswith("True")
    assert "123,457" in lines[4]  # large floats without decimals
    # a cell missing from a row stays blank, it does not shift the other columns
    assert lines[4].split("|")[2].strip() == ""
    assert "0.6 ± 0.1" in tu.format_table(rows[:1], floatfmt=".1f")


def test_format_table_errors():
    with pytest.raises(ValueError, match="no rows"):
        tu.format_table([])
    with pytest.raises(TypeError, match="each row must be a mapping"):
        tu.format_table({"a": 1})
    with pytest.raises(ValueError, match="spread must be"):
        tu.format_table([{"a": 1}], spread="sem")
    two = [{"a": tu.summarize([0.4, 0.6])}]  # std 0.141; 95% half-width 12.706 * 0.1 = 1.271
    assert "0.500 ± 0.141" in tu.format_table(two)
    assert "0.500 ± 1.271" in tu.format_table(two, spread="ci95")
    with pytest.raises(TypeError, match="each row must be a dict"):
        tu.format_table([{"a": 1}, 2])


def test_format_table_is_text_and_an_html_table_in_notebooks():
    t = tu.format_table([{"model": "a<b", "auc": 0.5, "n": 1234}, {"model": "c", "auc": -0.25}])
    assert isinstance(t, tu.Table) and isinstance(t, str) and t.startswith("model")
    assert t.header == ("model", "auc", "n") and t.body[1] == ("c", "-0.250", "")
    html = t._repr_html_()
    assert html.count("<tr>") == 3 and "<th>auc</th>" in html
    assert "a&lt;b" in html and "a<b" not in html  # cells are escaped
    def cell(*parts):  # right-aligned; each part unbreakable, a line break only before "±"
        spans = " ".join(f'<span style="white-space: nowrap">{p}</span>' for p in parts)
        return f'<td style="text-align: right">{spans}</td>'

    assert cell("1,234") in html and cell("-0.250") in html and "<td>c</td>" in html
    for number in ("1.0e-04", "12%", "93,765", "+0.035"):
        assert cell(number) in tu.format_table([{"x": number}])._repr_html_()
    assert cell("0.600", "± 0.141") in tu.format_table([{"x": "0.600 ± 0.141"}])._repr_html_()
    assert "<td>body lr 1e\u20114</td>" in tu.format_table([{"x": "body lr 1e-4"}])._repr_html_()
    assert "<th>gain 1e\u20113</th>" in tu.format_table([{"gain 1e-3": 1}])._repr_html_()
    for text in ("40 epochs", "k=1", "seed 0", "a-b"):  # labels stay left-aligned
        assert f"<td>{text}</td>" in tu.format_table([{"x": text}])._repr_html_()

    class Printer:
        def __init__(self):
            self.out = ""

        def text(self, s):
            self.out += s

    p = Printer()
    t._repr_pretty_(p, False)
    assert p.out == str(t)  # IPython's plain view is the table, not its repr with quotes
    assert isinstance(tu.results_table({"r": {1: 0.5}}), tu.Table)


def test_plot_curves_cuts_accuracy_error_bars_at_one():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    near_one = tu.summarize([0.95, 1.0, 1.0])  # t interval reaches past 1
    assert near_one.mean + near_one.ci95 > 1.0
    fig = tu.plot_curves({"a": {1: near_one, 5: tu.summarize([0.5, 0.6, 0.7])}})
    tops = [seg[:, 1].max() for coll in fig.axes[0].collections for seg in coll.get_segments()]
    assert max(tops) == pytest.approx(1.0)
    plt.close(fig)
    # a quantity that is not bounded by 1 (bits per character) keeps its full interval
    bits = tu.summarize([2.0, 2.5, 3.0])
    fig = tu.plot_curves({"lm": {1: bits}}, ylabel="bits per character")
    tops = [seg[:, 1].max() for coll in fig.axes[0].collections for seg in coll.get_segments()]
    assert max(tops) == pytest.approx(bits.mean + bits.ci95)
    plt.close(fig)
