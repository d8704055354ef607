"""Interactive demos (ipywidgets) and their static stand-ins for the HTML book (chapter 5)."""

from __future__ import annotations

import io
import math
from collections.abc import Sequence

import torch

from .distill import soften

__all__ = ["plot_softened", "temperature_widget"]


def _one_example(logits) -> torch.Tensor:
    z = torch.as_tensor(logits).detach().float().cpu()
    if z.dim() == 2 and z.shape[0] == 1:
        z = z[0]
    if z.dim() != 1 or z.numel() < 2:
        raise ValueError(
            f"logits must be one example's scores, shape [classes] with at least 2 classes, "
            f"got {tuple(z.shape)}; pick a row, e.g. logits[0]"
        )
    if not torch.isfinite(z).all():
        raise ValueError("logits must be finite")
    return z


def _names(class_names: Sequence[str] | None, k: int) -> list[str]:
    if class_names is None:
        return [str(i) for i in range(k)]
    names = [str(c) for c in class_names]
    if len(names) != k:
        raise ValueError(f"class_names has {len(names)} names but the logits have {k} classes")
    return names


def _temperature_list(temperatures) -> list[float]:
    temps = [float(t) for t in temperatures]
    if not temps or any(not (t > 0 and math.isfinite(t)) for t in temps):
        raise ValueError(f"temperatures must be positive numbers, got {list(temperatures)}")
    return temps


def _draw_bars(ax, p: torch.Tensor, names: list[str], title: str) -> None:
    top = int(p.argmax())
    colors = ["C1" if i == top else "C0" for i in range(len(p))]
    ax.bar(range(len(p)), p.numpy(), color=colors)
    ax.set_xticks(range(len(p)), names)
    ax.set_ylim(0, 1)
    ax.set_title(title, fontsize=10)
    ax.grid(axis="y", alpha=0.3)


def _entropy(p: torch.Tensor) -> float:
    return float(-(p * p.clamp_min(1e-30).log()).sum())


def plot_softened(
    logits,
    class_names: Sequence[str] | None = None,
    temperatures: Sequence[float] = (1, 2, 4, 10),
    *,
    title: str | None = None,
):
    """Bar charts of ``softmax(logits / T)`` for one example at several temperatures.

    The static version of :func:`temperature_widget`, for pages read without a
    kernel (the HTML book). The most probable class is drawn in orange; the
    others are the "dark knowledge" that higher temperatures reveal (chapter 5).

    Parameters
    ----------
    logits : Tensor ``[classes]`` (or ``[1, classes]``)
        One example's logits (temperature 1).
    class_names : sequence of str, optional
    temperatures : sequence of float
        One panel per temperature.
    title : str, optional

    Returns
    -------
    matplotlib.figure.Figure
        Made with pyplot: end the cell with ``;`` or assign it.

    Examples
    --------
    >>> import torch, transfer_utils as tu
    >>> fig = tu.plot_softened(torch.tensor([5.0, 2.0, 0.0]), temperatures=[1, 5])
    >>> len(fig.axes)
    2
    """
    import matplotlib.pyplot as plt

    z = _one_example(logits)
    names = _names(class_names, len(z))
    temps = _temperature_list(temperatures)
    # two panels per row: readable at the width of a book page or a notebook
    ncols = min(2, len(temps))
    nrows = -(-len(temps) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.6 * ncols, 2.5 * nrows), sharey=True,
                             squeeze=False)
    for ax, T in zip(axes.flat, temps, strict=False):
        p = soften(z, T)
        _draw_bars(ax, p, names, f"T = {T:g} (entropy {_entropy(p):.2f})")
    for ax in list(axes.flat)[len(temps):]:
        fig.delaxes(ax)
    for row in axes:
        row[0].set_ylabel("probability")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def _png(p: torch.Tensor, names: list[str], T: float) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.0, 2.8), dpi=90)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    _draw_bars(ax, p, names, f"softmax(z / T) at T = {T:.3g}")
    ax.set_ylabel("probability")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _summary_html(p: torch.Tensor, names: list[str]) -> str:
    order = p.argsort(descending=True).tolist()
    top, rest = order[0], order[1:4]
    wrong = ", ".join(f"{names[i]}: {p[i]:.3f}" for i in rest)
    return (f"<b>{names[top]}</b>: {p[top]:.3f} &nbsp;|&nbsp; next: {wrong} &nbsp;|&nbsp; "
            f"entropy {_entropy(p):.2f} nats (uniform: {math.log(len(p)):.2f})")


def temperature_widget(
    logits,
    class_names: Sequence[str] | None = None,
    *,
    temperature: float = 1.0,
    min_temperature: float = 0.5,
    max_temperature: float = 50.0,
):
    """A temperature slider that redraws one example's softened distribution ``softmax(z / T)``.

    Built from ipywidgets (a logarithmic slider, an image of the bar chart and
    a line of text with the top probabilities and the entropy). It needs a
    running kernel to react; the HTML book shows :func:`plot_softened` instead.

    Parameters
    ----------
    logits : Tensor ``[classes]`` (or ``[1, classes]``)
        One example's logits, e.g. a teacher's output for one image.
    class_names : sequence of str, optional
    temperature : float
        Starting value of the slider.
    min_temperature, max_temperature : float
        Slider range (logarithmic).

    Returns
    -------
    ipywidgets.VBox
        Display it as the last expression of a cell. ``widget.slider``,
        ``widget.image`` and ``widget.text`` are its parts.

    Examples
    --------
    >>> import torch, transfer_utils as tu
    >>> w = tu.temperature_widget(torch.tensor([4.0, 1.0, 0.0]), ["a", "b", "c"])
    >>> w.slider.value = 10.0
    >>> "entropy" in w.text.value
    True
    """
    import ipywidgets as widgets

    z = _one_example(logits)
    names = _names(class_names, len(z))
    lo, hi = _temperature_list([min_temperature, max_temperature])
    if not lo < hi:
        raise ValueError(f"min_temperature ({lo}) must be below max_temperature ({hi})")
    if not lo <= temperature <= hi:
        raise ValueError(f"temperature {temperature} is outside [{lo}, {hi}]")
    slider = widgets.FloatLogSlider(
        value=temperature, base=10, min=math.log10(lo), max=math.log10(hi), step=0.02,
        description="T", readout_format=".3g", continuous_update=True,
        layout=widgets.Layout(width="420px"),
    )
    image = widgets.Image(format="png")
    text = widgets.HTML()

    def update(_change=None) -> None:
        p = soften(z, slider.value)
        image.value = _png(p, names, slider.value)
        text.value = _summary_html(p, names)

    slider.observe(update, names="value")
    update()
    box = widgets.VBox([slider, image, text])
    box.slider, box.image, box.text = slider, image, text
    return box
