"""nbval on book/ that also hands each executed notebook to the book build (`make nbval`).

`make test` runs every notebook once: nbval executes them (one notebook per core with
pytest-xdist) and, with ``--book-cache``, this plugin stores every notebook whose code
cells all passed in the Jupyter Book execution cache (``execute.cache`` in _config.yml).
`jupyter-book build` then finds each notebook there and renders it without executing
it again (``execute_notebooks: cache``).

The stored outputs are rebuilt from the kernel messages nbval received, by nbclient's
own message handler: the code the book build executes notebooks with. So the cached
notebook is the one the build would have made itself (streams, displays, images,
``clear_output``, display updates, widget state). A notebook that fails, is deselected
in part, or cannot be rebuilt is not stored; the build then executes it itself.
"""

from __future__ import annotations

import copy
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_KEY = "book_cache"  # this plugin's entry in pytest-xdist's worker output


def pytest_addoption(parser):
    parser.addoption(
        "--book-cache", action="store_true",
        help="store each notebook whose cells all pass in the Jupyter Book execution cache "
             "(execute.cache in _config.yml), so that `jupyter-book build` reuses it",
    )


def pytest_configure(config):
    if config.getoption("--book-cache") and config.pluginmanager.hasplugin("nbval"):
        config.pluginmanager.register(BookCache(config), "book-cache")


def cache_path() -> Path:
    """The execution cache that `jupyter-book build` reads (``execute.cache``)."""
    import yaml

    execute = yaml.safe_load((ROOT / "_config.yml").read_text())["execute"]
    assert execute.get("execute_notebooks") == "cache", "_config.yml: execute_notebooks: cache"
    return ROOT / execute["cache"]


def store(notebooks: list[tuple[str, str, float]]) -> None:
    """Put executed notebooks ``(path, json, seconds)`` in the book's execution cache.

    The same call myst-nb makes after executing a notebook itself (``execute_notebooks:
    cache``), so the build treats them as its own.
    """
    import nbformat
    from jupyter_cache import get_cache
    from jupyter_cache.base import CacheBundleIn

    cache = get_cache(str(cache_path()))
    for path, text, seconds in notebooks:
        bundle = CacheBundleIn(nbformat.reads(text, as_version=4), path,
                               data={"execution_seconds": seconds})
        cache.cache_notebook_bundle(bundle, check_validity=False, overwrite=True)


def rebuild(nb, messages: dict[int, list[dict]], language_info: dict | None):
    """The notebook ``nb`` with the outputs nbclient makes from each code cell's messages.

    ``messages[i]``: the iopub messages of code cell ``i`` (in order of code cells).
    """
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionComplete

    client = NotebookClient(nb, record_timing=False)
    if language_info:
        nb.metadata["language_info"] = language_info
    code = [(index, cell) for index, cell in enumerate(nb.cells) if cell.cell_type == "code"]
    count = 0
    for i, (index, cell) in enumerate(code):
        # nbclient skips empty cells and those tagged skip-execution (nbval runs them)
        if not cell.source.strip() or "skip-execution" in cell.metadata.get("tags", []):
            continue
        cell.outputs = []
        client.clear_before_next_output = False
        count += 1
        (parent,) = {m["parent_header"]["msg_id"] for m in messages[i]
                     if m["msg_type"] == "execute_input"}
        for msg in messages[i]:
            if msg["parent_header"].get("msg_id") != parent:
                continue
            try:
                client.process_message(msg, cell, index)
            except CellExecutionComplete:
                break
        # nbval runs cells with store_history=False, and IPython then misses a trailing
        # ";" (it reads the cell from the history): drop the value it shows, as a kernel
        # with history (nbclient, Jupyter) does not show it. Else a pyplot figure ending
        # in ";" appears twice in the book (once drawn, once as the cell's value).
        if _quiet(cell.source):
            cell.outputs = [o for o in cell.outputs if o.get("output_type") != "execute_result"]
        # ... and number them as nbclient does
        cell.execution_count = count
        for output in cell.outputs:
            if output.output_type == "execute_result":
                output.execution_count = count
    client.set_widgets_metadata()
    return nb


class BookCache:
    """Records each notebook cell's kernel messages; stores passed notebooks at the end."""

    def __init__(self, config):
        self.config = config
        self.files: dict[str, dict] = {}  # nodeid of a notebook -> what ran
        self.from_workers: list[tuple[str, str, float]] = []

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_call(self, item):
        from nbval.plugin import IPyNbCell

        if not isinstance(item, IPyNbCell):
            yield
            return
        notebook = item.parent
        run = self.files.setdefault(notebook.nodeid, {
            "notebook": notebook, "messages": {}, "passed": set(), "start": time.perf_counter(),
            "language_info": _language_info(notebook.kernel),
        })
        messages = run["messages"][item.cell_num] = []
        read = notebook.get_kernel_message

        def recording(*args, **kwargs):
            msg = read(*args, **kwargs)
            messages.append(msg)
            return msg

        notebook.get_kernel_message = recording  # this notebook, this cell only
        try:
            outcome = yield
        finally:
            del notebook.get_kernel_message
        if outcome.excinfo is None:
            run["passed"].add(item.cell_num)
        run["end"] = time.perf_counter()

    def executed(self) -> list[tuple[str, str, float]]:
        """``(path, json, seconds)`` of each notebook whose code cells all passed."""
        import nbformat

        done = []
        for run in self.files.values():
            notebook = run["notebook"]
            nb = copy.deepcopy(notebook.nb)  # as nbval read it: the cache key is its code
            cells = sum(cell.cell_type == "code" for cell in nb.cells)
            if run["passed"] != set(range(cells)):
                continue
            try:
                nb = rebuild(nb, run["messages"], run["language_info"])
            except Exception as err:  # the build executes it instead: slower, still right
                print(f"\nbook cache: not storing {notebook.path.name} ({err!r}); "
                      "the book build will execute it")
                continue
            done.append((str(notebook.path), nbformat.writes(nb), run["end"] - run["start"]))
        return done

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node, error):  # pytest-xdist, on the controller
        self.from_workers += node.workeroutput.get(_KEY, [])

    def pytest_sessionfinish(self, session):
        done = self.executed()
        workeroutput = getattr(session.config, "workeroutput", None)
        if workeroutput is not None:  # a pytest-xdist worker: the controller stores them
            workeroutput[_KEY] = done
            return
        done += self.from_workers
        if done:
            store(done)
            times = ", ".join(f"{Path(path).stem} {seconds:.0f} s"
                              for path, _, seconds in sorted(done))
            print(f"\nbook cache: stored {len(done)} executed notebooks for the book build "
                  f"in {cache_path().relative_to(ROOT)} ({times}; "
                  f"{sum(s for _, _, s in done):.0f} s in all)")


def _quiet(source: str) -> bool:
    """Whether IPython suppresses a cell's value: its code ends with ``;`` (comments aside).

    The rule of IPython's ``DisplayHook.semicolon_at_end_of_expression``.
    """
    import io
    import tokenize

    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(source).readline))
    except (tokenize.TokenError, SyntaxError):
        return False
    skip = (tokenize.ENDMARKER, tokenize.NL, tokenize.NEWLINE, tokenize.COMMENT,
            tokenize.INDENT, tokenize.DEDENT)
    for token in reversed(tokens):
        if token.type in skip:
            continue
        return token.type == tokenize.OP and token.string == ";"
    return False


def _language_info(kernel) -> dict | None:
    """The kernel's ``language_info``, which nbclient writes into the notebook's metadata."""
    try:
        reply = kernel.kc.kernel_info(reply=True, timeout=30)
    except Exception:
        return None
    return reply["content"].get("language_info")
