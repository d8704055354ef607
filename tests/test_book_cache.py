"""The notebooks execute once per `make test`: nbval's runs are what the book build renders.

`make nbval` runs nbval with ``--book-cache`` (book/conftest.py): each notebook whose cells
all pass goes into the Jupyter Book execution cache, with the outputs nbclient (the book
build's executor) would have given it. These tests run that plugin on small notebooks in
a scratch copy of the layout and compare with nbclient executing the same notebooks.
"""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

ROOT = Path(__file__).resolve().parents[1]

CELLS = [
    "print('hello')\nprint('world')",
    "from IPython.display import HTML, clear_output, display\n"
    "print('gone'); clear_output(); print('kept')",
    "h = display(HTML('<b>one</b>'), display_id=True)\nh.update(HTML('<b>two</b>'))",
    "import ipywidgets\nipywidgets.IntSlider(value=3)",
    "1 + 1",
    "2 + 2;  # a trailing semicolon hides the value in Jupyter, and must here too",
]


def _notebook(cells):
    nb = new_notebook(cells=[new_markdown_cell("# Title")] + [new_code_cell(c) for c in cells])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    return nb


def _comparable(nb):
    """Outputs and counts of the code cells, widget model ids replaced by model names."""
    state = nb.metadata.get("widgets", {}).get(
        "application/vnd.jupyter.widget-state+json", {}).get("state", {})
    text = nbformat.writes(nb)
    for model_id, model in state.items():  # ids are random; the names are unique here
        text = text.replace(model_id, model["model_name"])
    nb = nbformat.reads(text, as_version=4)
    cells = [(c.execution_count, c.outputs) for c in nb.cells if c.cell_type == "code"]
    names = sorted(m["model_name"] for m in state.values())
    return cells, names, nb.metadata.get("language_info")


@pytest.mark.slow
def test_nbval_runs_are_stored_as_nbclient_would_execute_them(tmp_path):
    from jupyter_cache import get_cache
    from jupyter_cache.executors.utils import single_nb_execution

    (tmp_path / "book").mkdir()
    shutil.copy(ROOT / "book" / "conftest.py", tmp_path / "book" / "conftest.py")
    (tmp_path / "_config.yml").write_text(
        "execute:\n  execute_notebooks: cache\n  cache: _build/.jupyter_cache\n")
    good, bad = _notebook(CELLS), _notebook(["x = 1", "raise ValueError('no')", "y = 2"])
    nbformat.write(good, tmp_path / "book" / "good.ipynb")
    nbformat.write(bad, tmp_path / "book" / "bad.ipynb")

    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-n", "2",
         "--dist", "loadfile", "--nbval-lax", "--nbval-current-env", "--book-cache",
         "book/"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )
    assert run.returncode == 1, run.stdout + run.stderr  # bad.ipynb fails
    assert "stored 1 executed notebooks" in run.stdout, run.stdout
    assert "(good " in run.stdout, run.stdout

    cache = get_cache(str(tmp_path / "_build" / ".jupyter_cache"))
    assert len(cache.list_cache_records()) == 1
    with pytest.raises(KeyError):  # a failed notebook is left for the build to execute
        cache.match_cache_notebook(bad)
    _, stored = cache.merge_match_into_notebook(copy.deepcopy(good))

    expected = copy.deepcopy(good)
    result = single_nb_execution(expected, cwd=str(tmp_path / "book"), timeout=60,
                                 allow_errors=False)
    assert result.err is None, result.exc_string
    assert _comparable(stored) == _comparable(result.nb)
    outputs = [c.outputs for c in stored.cells if c.cell_type == "code"]
    assert outputs[1][0]["text"] == "kept\n"  # clear_output honoured
    assert outputs[2][0]["data"]["text/html"] == "<b>two</b>"  # display updated


def test_rebuild_replays_messages_through_nbclient():
    """Without a kernel: the messages of one cell become nbclient's outputs."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("book_conftest", ROOT / "book" / "conftest.py")
    plugin = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(plugin)

    nb = _notebook(["print('a')"])

    def msg(kind, content, parent="m1"):
        return {"msg_type": kind, "content": content, "parent_header": {"msg_id": parent},
                "header": {"msg_type": kind}, "metadata": {}}

    messages = {0: [
        msg("status", {"execution_state": "busy"}),
        msg("execute_input", {"code": "print('a')", "execution_count": 7}),
        msg("stream", {"name": "stdout", "text": "a\n"}),
        msg("stream", {"name": "stdout", "text": "ignored\n"}, parent="other"),
        msg("status", {"execution_state": "idle"}),
    ]}
    out = plugin.rebuild(nb, messages, {"name": "python", "pygments_lexer": "ipython3"})
    cell = out.cells[1]
    assert cell.execution_count == 1
    assert [(o.output_type, o.text) for o in cell.outputs] == [("stream", "a\n")]
    assert out.metadata["language_info"]["pygments_lexer"] == "ipython3"

    # nbval runs without history, so IPython shows the value of "expr;"; the book must not
    for source, shown in (("fig = 1\nfig;", []), ("fig", ["execute_result"])):
        nb = _notebook([source])
        value = msg("execute_result", {"data": {"text/plain": "1"}, "metadata": {},
                                       "execution_count": 1})
        messages = {0: [msg("execute_input", {"code": source, "execution_count": 1}), value,
                        msg("status", {"execution_state": "idle"})]}
        out = plugin.rebuild(nb, messages, None)
        assert [o.output_type for o in out.cells[1].outputs] == shown, source


@pytest.mark.slow
def test_make_book_executes_only_uncached_notebooks_in_parallel(tmp_path):
    """scripts/execute_notebooks.py: what `make book` runs before `jupyter-book build`."""
    from jupyter_cache import get_cache

    (tmp_path / "book").mkdir()
    (tmp_path / "scripts").mkdir()
    shutil.copy(ROOT / "scripts" / "execute_notebooks.py", tmp_path / "scripts")
    (tmp_path / "_config.yml").write_text(
        "execute:\n  execute_notebooks: cache\n  cache: _build/.jupyter_cache\n  timeout: 60\n")
    good, bad = _notebook(CELLS[:2]), _notebook(["raise ValueError('no')"])
    nbformat.write(good, tmp_path / "book" / "good.ipynb")
    nbformat.write(bad, tmp_path / "book" / "bad.ipynb")
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}

    def run():
        return subprocess.run([sys.executable, "scripts/execute_notebooks.py", "--jobs", "2"],
                              cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=600)

    first = run()
    assert first.returncode == 1, first.stdout + first.stderr
    assert "executing 2, 2 at a time" in first.stdout
    assert "book/bad.ipynb FAILED" in first.stdout and "ValueError" in first.stdout
    cache = get_cache(str(tmp_path / "_build" / ".jupyter_cache"))
    _, stored = cache.merge_match_into_notebook(copy.deepcopy(good))
    assert stored.cells[1].outputs[0]["text"] == "hello\nworld\n"

    (tmp_path / "book" / "bad.ipynb").unlink()
    second = run()  # the good notebook is cached: nothing to execute
    assert second.returncode == 0, second.stdout + second.stderr
    assert "1 of 1 notebooks already in _build/.jupyter_cache; executing 0" in second.stdout
