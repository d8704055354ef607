"""Analysis: statistics and tables: multi-seed summaries, intervals, paired gains, linear CKA.

Measure layer. :func:`summarize` turns repeated runs into a mean, a standard
deviation and a 95% interval; :func:`paired_gain` pairs two methods seed by seed;
:func:`accuracy_ci` is the Wilson interval of one test accuracy;
:func:`format_table` prints any results as one table; :func:`linear_cka` compares
two representations.
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from . import _validate as V

__all__ = ["linear_cka", "summarize", "Summary", "format_table", "results_table", "Table",
           "accuracy_ci", "paired_gain"]


def linear_cka(X, Y, *, debiased: bool = False) -> float:
    r"""Linear centred kernel alignment (Kornblith et al. 2019) between two representations.

    With column-centred ``X`` ``[n, d1]`` and ``Y`` ``[n, d2]`` of the same ``n`` examples,

    .. math::

        \mathrm{CKA}(X, Y) = \frac{\|Y^\top X\|_F^2}{\|X^\top X\|_F\,\|Y^\top Y\|_F}.

    It lies in ``[0, 1]``, is 1 for identical inputs, and does not change under
    orthogonal transforms or isotropic scaling of either input, so it compares
    layers of different widths (chapter 7 uses it to see which layers fine-tuning
    changed).

    This plug-in estimate is biased upward when the features are many compared
    with the examples: two *independent* random representations with more
    features than examples already score far above 0. With ``debiased=True``
    each HSIC term is replaced by the unbiased estimator of Song et al. (2012),
    as in Kornblith et al.'s code and Nguyen et al. (2021): with the linear
    kernels ``K = X X^T`` and ``L = Y Y^T`` and their diagonals set to zero
    (:math:`\tilde K`, :math:`\tilde L`),

    .. math::

        \mathrm{HSIC}_1(K, L) = \frac{1}{n(n-3)}\Big[\operatorname{tr}(\tilde K \tilde L)
        + \frac{\mathbf 1^\top \tilde K \mathbf 1\,\mathbf 1^\top \tilde L \mathbf 1}{(n-1)(n-2)}
        - \frac{2}{n-2}\,\mathbf 1^\top \tilde K \tilde L \mathbf 1\Big],

    and CKA is :math:`\mathrm{HSIC}_1(K, L) / \sqrt{\mathrm{HSIC}_1(K, K)\,\mathrm{HSIC}_1(L, L)}`.
    It is about 0 for independent representations, still 1 for identical ones and
    invariant to the same transforms, and lies in ``[-1, 1]`` (it needs ``n >= 4``).

    Examples
    --------
    >>> import torch, transfer_utils as tu
    >>> X = torch.randn(50, 8)
    >>> round(tu.linear_cka(X, 3 * X), 6)
    1.0
    >>> g = torch.Generator().manual_seed(0)
    >>> A, B = torch.randn(40, 400, generator=g), torch.randn(40, 400, generator=g)
    >>> round(tu.linear_cka(A, B), 2), abs(tu.linear_cka(A, B, debiased=True)) < 0.05
    (0.91, True)
    """
    X = torch.as_tensor(X).detach().to("cpu", torch.float64)
    Y = torch.as_tensor(Y).detach().to("cpu", torch.float64)
    if X.dim() != 2 or Y.dim() != 2:
        raise ValueError(
            f"inputs must be 2-D [n, d]; got {tuple(X.shape)} and {tuple(Y.shape)} "
            "(flatten features with .flatten(1))"
        )
    if X.shape[0] != Y.shape[0]:
        raise ValueError(
            f"X and Y must hold the same examples: got {X.shape[0]} and {Y.shape[0]} rows"
        )
    if X.shape[0] < 2:
        raise ValueError("linear_cka needs at least 2 examples")
    if debiased and X.shape[0] < 4:
        raise ValueError(f"linear_cka(debiased=True) needs at least 4 examples (the unbiased "
                         f"HSIC estimator divides by n - 3), got {X.shape[0]}")
    if not (torch.isfinite(X).all() and torch.isfinite(Y).all()):
        raise ValueError("linear_cka: the inputs contain NaN or inf; CKA of non-finite features "
                         "is undefined (check the model or the data that produced them)")
    X = X - X.mean(0, keepdim=True)
    Y = Y - Y.mean(0, keepdim=True)
    xy = torch.linalg.norm(Y.T @ X) ** 2
    xx, yy = torch.linalg.norm(X.T @ X) ** 2, torch.linalg.norm(Y.T @ Y) ** 2
    if debiased:
        # Song et al.'s HSIC_1 written in feature space (Kornblith et al.'s code); with
        # centred columns the terms 1^T K~ 1 reduce to -||x_i||^2 sums.
        n = X.shape[0]
        rx, ry = (X * X).sum(1), (Y * Y).sum(1)  # squared row norms = diagonals of K, L

        def unbiased(dot, ra, rb):
            return dot - n / (n - 2) * (ra @ rb) + ra.sum() * rb.sum() / ((n - 1) * (n - 2))

        xy, xx, yy = unbiased(xy, rx, ry), unbiased(xx, rx, rx), unbiased(yy, ry, ry)
    if xx <= 0 or yy <= 0:
        raise ValueError("an input is constant across examples (zero variance): CKA is undefined")
    value = xy / torch.sqrt(xx * yy)
    return float(value.clamp(-1.0 if debiased else 0.0, 1.0))


# Two-sided 97.5% quantiles of Student's t for small samples (df 1..30); normal beyond.
_T975 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179,
         2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064,
         2.060, 2.056, 2.052, 2.048, 2.045, 2.042]


@dataclass(frozen=True)
class Summary:
    """Mean, sample standard deviation and 95% confidence half-width of repeated runs."""

    values: tuple[float, ...]
    mean: float
    std: float
    ci95: float

    @property
    def n(self) -> int:
        return len(self.values)

    def __str__(self) -> str:
        return f"{self.mean:.3f} ± {self.std:.3f} (n={self.n}, 95% CI ±{self.ci95:.3f})"

    def __format__(self, spec: str) -> str:
        if not spec:
            return str(self)
        return f"{format(self.mean, spec)} ± {format(self.std, spec)}"


def summarize(values: Iterable[float]) -> Summary:
    """Summarise repeated measurements: mean, std (ddof=1) and a t-based 95% interval.

    Examples
    --------
    >>> import transfer_utils as tu
    >>> s = tu.summarize([0.8, 0.9, 1.0])
    >>> round(s.mean, 3), round(s.std, 3)
    (0.9, 0.1)
    """
    vals = tuple(float(v) for v in values)
    if not vals:
        raise ValueError("summarize needs at least one value")
    if not all(math.isfinite(v) for v in vals):
        raise ValueError(f"values must be finite, got {vals}")
    mean = float(np.mean(vals))
    if len(vals) == 1:
        return Summary(vals, mean, 0.0, 0.0)
    std = float(np.std(vals, ddof=1))
    df = len(vals) - 1
    t = _T975[df - 1] if df <= len(_T975) else 1.96
    return Summary(vals, mean, std, t * std / math.sqrt(len(vals)))


_NUM = r"[+-]?(?:\d[\d,]*(?:\.\d*)?|\.\d+)(?:e[+-]?\d+)?%?"
_NUMBER = re.compile(rf"{_NUM}(?: ± {_NUM})?$")
_SCI_HYPHEN = re.compile(r"(?<=\de)-(?=\d)")


class Table(str):
    """The text of a :func:`format_table` table, which Jupyter shows as an HTML table.

    It is a ``str`` (``print`` it in a terminal, compare it in tests); a notebook
    that ends a cell with it, or calls ``display`` on it, gets a real table that
    fits the page and wraps long cells instead of a line that runs off the right edge.
    """

    header: tuple[str, ...]
    body: tuple[tuple[str, ...], ...]

    def __new__(cls, text: str, header: Sequence[str], body: Sequence[Sequence[str]]) -> Table:
        table = super().__new__(cls, text)
        table.header = tuple(header)
        table.body = tuple(tuple(row) for row in body)
        return table

    def _repr_pretty_(self, printer, cycle) -> None:  # IPython's plain-text view: the table
        printer.text(str(self))

    def _repr_html_(self) -> str:
        def td(text: str, tag: str = "td") -> str:
            if tag == "th" or not _NUMBER.match(text):
                # "1e-4" in a label stays on one line (a non-breaking hyphen)
                return f"<{tag}>{html.escape(_SCI_HYPHEN.sub(chr(0x2011), text))}</{tag}>"
            # Numbers are right-aligned and never broken; a narrow column may put
            # "± spread" under its mean, but never splits "0.763 ±" from "0.075".
            parts = [html.escape(x) for x in text.split(" ± ")]
            cell = '<span style="white-space: nowrap">{}</span>'
            inner = cell.format(parts[0]) + "".join(" " + cell.format("± " + x) for x in parts[1:])
            return f'<td style="text-align: right">{inner}</td>'

        head = "".join(td(h, "th") for h in self.header)
        rows = "".join("<tr>" + "".join(td(c) for c in row) + "</tr>" for row in self.body)
        return (f'<table class="dataframe tu-table"><thead><tr>{head}</tr></thead>'
                f"<tbody>{rows}</tbody></table>")


def format_table(rows: Sequence[Mapping] | Mapping[str, Mapping], *, floatfmt: str = ".3f",
                 spread: str = "std", title: str = "", column_format: str = "k={}") -> Table:
    """A table of results: one column per key (first-seen order), one line per row.

    ``rows`` is a list of dicts ``[{column: value}, ...]``, or a mapping
    ``{row label: {column: value}}`` whose row labels form a first column headed
    ``title`` (column keys that are not strings are shown with
    ``column_format``: ``"k={}"`` for labels per class, ``"{:g}"`` for learning
    rates). Summaries print as ``mean ± std``, or ``mean ± 95% half-width`` with
    ``spread="ci95"`` (say which in a header or caption); floats with
    ``floatfmt`` (large ones as ``12,345``); integers with thousands separators;
    a key missing from a row leaves its cell blank. Every table the book prints
    goes through here. The result is a :class:`Table`: aligned text when
    printed, an HTML table when a notebook displays it.

    Examples
    --------
    >>> import transfer_utils as tu
    >>> print(tu.format_table([{"method": "scratch", "k=1": tu.summarize([0.5, 0.7])},
    ...                        {"method": "fine-tune", "k=1": 0.75}]))
    method    | k=1
    ----------+--------------
    scratch   | 0.600 ± 0.141
    fine-tune | 0.750
    >>> print(tu.format_table({"scratch": {1: 0.5}}, title="method"))
    method  | k=1
    --------+------
    scratch | 0.500
    """
    V.one_of(spread, "spread", ("std", "ci95"), "format_table")
    if isinstance(rows, Mapping):
        if not rows:
            raise ValueError("no rows to format: pass {row: {column: value}} or a list of dicts")
        if not all(isinstance(row, Mapping) for row in rows.values()):
            raise TypeError("each row must be a mapping {column: value}")

        def head(c) -> str:
            return c if isinstance(c, str) else column_format.format(c)

        rows = [{title: str(r), **{head(c): v for c, v in row.items()}}
                for r, row in rows.items()]
    if not rows:
        raise ValueError("no rows to format: pass a non-empty list of dicts {column: value}")
    columns: list = []
    for row in rows:
        if not isinstance(row, Mapping):
            raise TypeError(f"each row must be a dict {{column: value}}, got {type(row).__name__}")
        columns += [c for c in row if c not in columns]

    def cell(v) -> str:
        if v is None:
            return ""
        if isinstance(v, Summary):
            half = v.std if spread == "std" else v.ci95
            return f"{format(v.mean, floatfmt)} ± {format(half, floatfmt)}"
        if isinstance(v, bool):
            return str(v)
        if isinstance(v, (float, np.floating)):
            return format(v, floatfmt) if abs(v) < 1e4 else f"{v:,.0f}"
        if isinstance(v, (int, np.integer)):
            return f"{v:,}"
        return str(v)

    header = [str(c) for c in columns]
    body = [[cell(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(columns))]
    lines = [" | ".join(x.ljust(w) for x, w in zip(line, widths, strict=True)).rstrip()
             for line in [header, *body]]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return Table("\n".join(lines), header, body)


def accuracy_ci(accuracy: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson 95% interval for an accuracy measured on ``n`` independent test examples.

    One fixed model evaluated once has no seeds to average over; the uncertainty
    left is that of the test sample (chapter 2 uses it for domain shift).

    Examples
    --------
    >>> import transfer_utils as tu
    >>> lo, hi = tu.accuracy_ci(0.9, 100)
    >>> round(lo, 3), round(hi, 3)
    (0.826, 0.945)
    """
    V.positive_int(n, "n (a positive number of test examples)", "accuracy_ci")
    if not 0.0 <= accuracy <= 1.0:
        raise ValueError(f"accuracy must be in [0, 1], got {accuracy!r}")
    denom = 1 + z * z / n
    centre = (accuracy + z * z / (2 * n)) / denom
    half = z * math.sqrt(accuracy * (1 - accuracy) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def paired_gain(
    curves: Mapping[str, Mapping[int, Summary]], method: str, baseline: str
) -> dict[int, Summary]:
    """Per-``k`` summary of the seed-by-seed difference ``method - baseline``.

    Both methods must have been run on the same seeds (as :func:`tu.transfer_curve`
    does: same k-shot set per seed), so the differences are paired and their
    interval is narrower than the two curves' error bars suggest (chapter 1).

    Examples
    --------
    >>> import transfer_utils as tu
    >>> curves = {"a": {5: tu.summarize([0.9, 0.8, 0.7])},
    ...           "b": {5: tu.summarize([0.8, 0.7, 0.6])}}
    >>> round(tu.paired_gain(curves, "a", "b")[5].mean, 6)
    0.1
    """
    for name in (method, baseline):
        if name not in curves:
            raise KeyError(f"no curve named {name!r}; curves are {sorted(curves)}")
    a, b = curves[method], curves[baseline]
    if set(a) != set(b):
        raise ValueError(f"the curves have different k: {sorted(a)} and {sorted(b)}")
    out = {}
    for k in sorted(a):
        if a[k].n != b[k].n:
            raise ValueError(f"k={k}: {a[k].n} and {b[k].n} seeds; pair runs on the same seeds")
        out[k] = summarize([x - y for x, y in zip(a[k].values, b[k].values, strict=True)])
    return out


def results_table(results: Mapping[str, Mapping], *, title: str = "", fmt: str = ".3f",
                  column_format: str = "k={}", spread: str = "std") -> Table:
    """:func:`format_table` of a mapping ``{row: {column: value}}`` (kept for chapter 3's calls).

    Examples
    --------
    >>> import transfer_utils as tu
    >>> print(tu.results_table({"scratch": {1: tu.summarize([0.5, 0.7])}}, title="method"))
    method  | k=1
    --------+--------------
    scratch | 0.600 ± 0.141
    """
    if not isinstance(results, Mapping):
        raise ValueError("results_table needs a non-empty mapping {row: {column: value}}")
    return format_table(results, floatfmt=fmt, title=title, column_format=column_format,
                        spread=spread)
