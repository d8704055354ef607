"""Checks on the book's sources: clean notebooks, the Colab cell, the table of contents, citations.

These read files only; executing the notebooks is nbval's job (`make test`).
"""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
BOOK = ROOT / "book"
NOTEBOOKS = sorted(BOOK.glob("*.ipynb"))
MARKDOWN = sorted(BOOK.glob("*.md"))
COLAB_TAGS = {"remove-cell", "hide-cell"}


def _read(path: Path) -> nbformat.NotebookNode:
    return nbformat.read(path, as_version=4)


def _ids(paths):
    return [p.name for p in paths]


def test_book_has_notebooks():
    assert NOTEBOOKS, f"no notebooks found in {BOOK}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_notebook_is_valid_nbformat4_with_python3_kernel(path):
    nb = _read(path)
    nbformat.validate(nb)
    assert nb.nbformat == 4
    assert nb.metadata.get("kernelspec", {}).get("name") == "python3", (
        f"{path.name}: set the kernelspec to python3 (the book build and nbval start that kernel)"
    )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_notebook_is_committed_without_outputs(path):
    nb = _read(path)
    dirty = [
        i
        for i, cell in enumerate(nb.cells)
        if cell.cell_type == "code" and (cell.get("outputs") or cell.get("execution_count"))
    ]
    assert not dirty, (
        f"{path.name}: code cells {dirty} have outputs or execution counts; clear them before "
        f"committing, e.g. `jupyter nbconvert --clear-output --inplace {path.relative_to(ROOT)}`"
    )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_notebook_starts_with_a_title(path):
    nb = _read(path)
    first_md = next((c for c in nb.cells if c.cell_type == "markdown"), None)
    assert first_md is not None, f"{path.name}: no markdown cell"
    assert first_md.source.lstrip().startswith("# "), (
        f"{path.name}: the first markdown cell must start with a '# Title' header "
        "(the book uses it as the page title)"
    )


class _RecordingIPython:
    """A stand-in for IPython's shell that records every call made through it."""

    def __init__(self):
        self.calls: list[tuple[str, tuple]] = []

    def __getattr__(self, name):
        def record(*args, **kwargs):
            self.calls.append((name, args))

        return record


def _first_code_cell(path: Path):
    nb = _read(path)
    return next(c for c in nb.cells if c.cell_type == "code")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_first_code_cell_is_the_hidden_colab_install_cell(path):
    cell = _first_code_cell(path)
    tags = set(cell.metadata.get("tags", []))
    assert tags & COLAB_TAGS, (
        f"{path.name}: tag the first code cell (the Colab install cell) 'remove-cell' or "
        f"'hide-cell'; it has tags {sorted(tags)}"
    )
    assert "google.colab" in cell.source and "pip" in cell.source, (
        f"{path.name}: the first code cell must be the Colab install cell "
        "(copy it from another chapter)"
    )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_colab_install_cell_does_nothing_outside_colab(path, monkeypatch):
    import sys

    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    monkeypatch.delenv("TU_SKIP_INSTALL", raising=False)
    shell = _RecordingIPython()
    source = _first_code_cell(path).source
    code = compile(source, f"{path.name}[cell 0]", "exec")  # plain Python: no `!` magics
    exec(code, {"get_ipython": lambda: shell, "__name__": "__colab_cell__"})
    assert shell.calls == [], f"{path.name}: the install cell ran {shell.calls} outside Colab"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_colab_install_cell_installs_on_colab(path, monkeypatch):
    import sys
    import types

    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    monkeypatch.delenv("TU_SKIP_INSTALL", raising=False)
    shell = _RecordingIPython()
    exec(_first_code_cell(path).source, {"get_ipython": lambda: shell})
    assert len(shell.calls) == 1, f"{path.name}: expected one pip call on Colab, got {shell.calls}"
    name, args = shell.calls[0]
    assert name == "system" and "pip" in args[0] and "transfer-utils" in args[0]


def _toc_files() -> list[str]:
    import yaml

    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    assert toc.get("format") == "jb-book", "_toc.yml: expected `format: jb-book`"
    files = [toc["root"]]

    def walk(entries):
        for entry in entries or []:
            if "file" in entry:
                files.append(entry["file"])
            walk(entry.get("sections"))
            walk(entry.get("chapters"))
            for part in entry.get("parts", []) or []:
                walk(part.get("chapters"))

    walk(toc.get("chapters"))
    for part in toc.get("parts", []) or []:
        walk(part.get("chapters"))
    return files


def _resolve(entry: str) -> Path | None:
    base = ROOT / entry
    if base.suffix and base.exists():
        return base
    for suffix in (".ipynb", ".md"):
        if base.with_suffix(suffix).exists():
            return base.with_suffix(suffix)
    return None


def test_every_toc_entry_exists():
    missing = [f for f in _toc_files() if _resolve(f) is None]
    assert not missing, f"_toc.yml lists files that do not exist: {missing}"


def test_toc_lists_every_notebook_once():
    listed = [_resolve(f) for f in _toc_files()]
    not_listed = [p.name for p in NOTEBOOKS if p not in listed]
    assert not not_listed, f"add these notebooks to _toc.yml: {not_listed}"
    dupes = {p.name for p in listed if p is not None and listed.count(p) > 1}
    assert not dupes, f"_toc.yml lists these more than once: {sorted(dupes)}"


def test_toc_root_is_the_intro_and_chapters_are_in_order():
    files = _toc_files()
    assert files[0] == "book/intro"
    chapters = [f for f in files if re.fullmatch(r"book/\d\d_\w+", f)]
    # DESIGN §2: the FAQ stays last among the chapters; the others are in numeric order
    faq = [f for f in chapters if f.endswith("_faq")]
    others = [f for f in chapters if f not in faq]
    assert others == sorted(others), f"chapters out of numeric order in _toc.yml: {chapters}"
    assert not faq or chapters[-len(faq):] == faq, f"the FAQ must be the last chapter: {chapters}"


# {cite}`a,b`, {cite:p}`a`, {cite:t}`a; b`, {footcite}`a`, ... (MyST role syntax)
_CITE = re.compile(r"\{(?:foot)?cite(?::[a-z]+)?\}`([^`]+)`")
_BIBKEY = re.compile(r"^\s*@\s*(\w+)\s*\{\s*([^,\s]+)\s*,", re.MULTILINE)


def _bib_keys() -> set[str]:
    text = (BOOK / "references.bib").read_text(encoding="utf-8")
    special = {"comment", "string", "preamble"}
    return {key for kind, key in _BIBKEY.findall(text) if kind.lower() not in special}


def _cited_keys() -> dict[str, set[str]]:
    cited: dict[str, set[str]] = {}
    texts = [(p.name, "\n".join(c.source for c in _read(p).cells if c.cell_type == "markdown"))
             for p in NOTEBOOKS]
    texts += [(p.name, p.read_text(encoding="utf-8")) for p in MARKDOWN]
    for name, text in texts:
        for group in _CITE.findall(text):
            for key in re.split(r"[,;]", group):
                if key.strip():
                    cited.setdefault(key.strip(), set()).add(name)
    return cited


def test_bib_keys_are_unique():
    text = (BOOK / "references.bib").read_text(encoding="utf-8")
    keys = [key for _, key in _BIBKEY.findall(text)]
    dupes = sorted({k for k in keys if keys.count(k) > 1})
    assert not dupes, f"references.bib defines these keys more than once: {dupes}"


def test_every_cited_key_is_in_references_bib():
    known = _bib_keys()
    unknown = {k: sorted(v) for k, v in _cited_keys().items() if k not in known}
    assert not unknown, f"cited but not in book/references.bib (key: files): {unknown}"


def test_references_bib_parses():
    pybtex = pytest.importorskip("pybtex.database")
    data = pybtex.parse_file(str(BOOK / "references.bib"))
    assert set(data.entries) == _bib_keys()
    for key, entry in data.entries.items():
        for field in ("title", "year"):
            assert field in entry.fields, f"references.bib: entry {key} has no {field}"
