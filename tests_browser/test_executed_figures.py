"""Every cell that draws a figure shows it, once (DESIGN.md section 8, rule 6).

Reads the executed notebooks the book was rendered from: the book's execution cache
(``execute.cache`` in _config.yml, filled by nbval or by the build; run by `make browser`,
after `make book`). A pyplot figure returned as a cell's last value is
shown twice in Jupyter (once by the inline backend, once as the value); a figure made
with ``matplotlib.figure.Figure`` and hidden by a trailing ``;`` is not shown at all.
Both happened in this book; this test finds either from the outputs alone.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("TU_EXECUTION_CACHE", ROOT / "_build" / ".jupyter_cache"))
# a call that draws: tu.plot_*, tu.show_images, or pyplot's show
DRAWS = re.compile(r"\btu\.(plot_\w+|show_images)\(|\bplt\.show\(\)")
IMAGE_TYPES = ("image/png", "image/svg+xml", "image/jpeg")


def _executed() -> dict[str, dict]:
    """``{chapter name: executed notebook}`` from the book's execution cache."""
    if not CACHE.exists():
        return {}
    from jupyter_cache import get_cache

    cache = get_cache(str(CACHE))
    found = {}
    for record in cache.list_cache_records():
        name = Path(record.uri).stem
        if re.match(r"\d\d_", name):
            found[name] = cache.get_cache_bundle(record.pk).nb
    return dict(sorted(found.items()))


EXECUTED = _executed()


def _images(cell: dict) -> list[str]:
    found = []
    for out in cell.get("outputs", []):
        data = out.get("data", {})
        for kind in IMAGE_TYPES:
            if kind in data:
                value = data[kind]
                found.append(value if isinstance(value, str) else "".join(value))
    return found


def _problems(nb: dict) -> list[str]:
    problems = []
    for i, cell in enumerate(nb["cells"]):
        if cell["cell_type"] != "code":
            continue
        source = cell["source"] if isinstance(cell["source"], str) else "".join(cell["source"])
        code = "\n".join(line for line in source.splitlines()
                         if not line.lstrip().startswith("#"))
        images = _images(cell)
        first = source.strip().splitlines()[0][:60] if source.strip() else ""
        if DRAWS.search(code) and not images:
            problems.append(f"cell {i} draws but shows no figure: {first!r}")
        if len(images) != len(set(images)):
            problems.append(f"cell {i} shows the same figure twice: {first!r}")
    return problems


def test_the_check_finds_both_faults():
    png = {"data": {"image/png": "iVBOR..."}, "output_type": "display_data"}
    twice = {"cells": [{"cell_type": "code", "source": "tu.plot_bars(x)",
                        "outputs": [png, {**png, "output_type": "execute_result"}]}]}
    hidden = {"cells": [{"cell_type": "code", "source": "tu.show_images(ds);", "outputs": []}]}
    fine = {"cells": [{"cell_type": "code", "source": "tu.plot_bars(x);", "outputs": [png]},
                      {"cell_type": "code", "source": "# tu.plot_bars(x)\nx = 1", "outputs": []}]}
    assert "twice" in _problems(twice)[0]
    assert "no figure" in _problems(hidden)[0]
    assert _problems(fine) == []


@pytest.mark.parametrize("name", list(EXECUTED))
def test_every_drawing_cell_shows_its_figure_once(name):
    problems = _problems(EXECUTED[name])
    assert not problems, f"{name}.ipynb:\n" + "\n".join(problems)


def test_every_chapter_is_in_the_execution_cache():
    chapters = sorted(p.stem for p in (ROOT / "book").glob("[0-9][0-9]_*.ipynb"))
    assert list(EXECUTED) == chapters, f"run `make book` first (cache: {CACHE})"
