"""Checks on the book's sources: clean notebooks, the Colab cell, the table of contents, citations.

These read files only; executing the notebooks is nbval's job (`make test`).
"""

from __future__ import annotations

import re
import sys
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


def _first_code_cell(path: Path):
    nb = _read(path)
    return next(c for c in nb.cells if c.cell_type == "code")


def _colab_cell_script():
    """scripts/colab_cell.py, which writes the install cell into every notebook."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("colab_cell", ROOT / "scripts" / "colab_cell.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _project_version() -> str:
    return re.search(r'^version = "([^"]+)"', (ROOT / "pyproject.toml").read_text(),
                     re.MULTILINE).group(1)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_first_code_cell_is_the_hidden_colab_install_cell(path):
    cell = _first_code_cell(path)
    tags = set(cell.metadata.get("tags", []))
    assert tags & COLAB_TAGS, (
        f"{path.name}: tag the first code cell (the Colab install cell) 'remove-cell' or "
        f"'hide-cell'; it has tags {sorted(tags)}"
    )
    assert cell.source == _colab_cell_script().cell_source(), (
        f"{path.name}: the first code cell is not the Colab install cell of version "
        f"{_project_version()}: run `python scripts/colab_cell.py` (it writes that cell "
        "into every notebook and changes nothing else)"
    )


def test_package_version_is_pyprojects():
    import transfer_utils as tu

    assert tu.__version__ == _project_version(), (
        "transfer_utils.__version__ and pyproject.toml's version differ; the Colab cell "
        "installs the release tagged v<pyproject.toml's version>"
    )


class _FakePip:
    """Stands in for subprocess.run: records each pip command; fails refs in ``missing``."""

    def __init__(self, missing=()):
        self.calls: list[list[str]] = []
        self.missing = set(missing)

    def __call__(self, cmd, **kwargs):
        import subprocess

        self.calls.append(cmd)
        ref = cmd[-1].rsplit("@", 1)[1]
        failed = ref in self.missing
        return subprocess.CompletedProcess(cmd, 1 if failed else 0, "",
                                           f"no such ref {ref}" if failed else "")


def _run_cell(path, monkeypatch, *, colab: bool, missing=()):
    import subprocess
    import types

    if colab:
        monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    else:
        monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    monkeypatch.delenv("TU_SKIP_INSTALL", raising=False)
    pip = _FakePip(missing)
    monkeypatch.setattr(subprocess, "run", pip)
    source = _first_code_cell(path).source
    code = compile(source, f"{path.name}[cell 0]", "exec")  # plain Python: no `!` magics
    namespace = {"__name__": "__colab_cell__"}
    exec(code, namespace)
    return pip, namespace


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_colab_install_cell_does_nothing_outside_colab(path, monkeypatch):
    pip, _ = _run_cell(path, monkeypatch, colab=False)
    assert pip.calls == [], f"{path.name}: the install cell ran {pip.calls} outside Colab"


def test_colab_install_cell_installs_the_release_of_its_version(monkeypatch, capsys):
    pip, namespace = _run_cell(NOTEBOOKS[0], monkeypatch, colab=True)
    version = _project_version()
    assert namespace["TU_VERSION"] == version
    assert len(pip.calls) == 1, pip.calls
    cmd = pip.calls[0]
    assert cmd[:4] == [sys.executable, "-m", "pip", "install"]
    assert cmd[-1] == ("transfer-utils @ git+https://github.com/transfer-utils/"
                       f"transfer-learning-book@v{version}")
    assert f"Installed transfer_utils {version}" in capsys.readouterr().out


def test_colab_install_cell_falls_back_to_main_and_says_so(monkeypatch, capsys):
    version = _project_version()
    pip, _ = _run_cell(NOTEBOOKS[0], monkeypatch, colab=True, missing={f"v{version}"})
    assert [cmd[-1].rsplit("@", 1)[1] for cmd in pip.calls] == [f"v{version}", "main"]
    assert f"v{version} is not released: installing main" in capsys.readouterr().out


def test_colab_install_cell_stops_when_nothing_installs(monkeypatch, capsys):
    version = _project_version()
    with pytest.raises(RuntimeError, match="pip could not install transfer_utils"):
        _run_cell(NOTEBOOKS[0], monkeypatch, colab=True, missing={f"v{version}", "main"})
    assert "no such ref main" in capsys.readouterr().out


def test_colab_cell_script_changes_only_that_cell(tmp_path):
    script = _colab_cell_script()
    original = NOTEBOOKS[0].read_text(encoding="utf-8")
    copy = tmp_path / NOTEBOOKS[0].name
    copy.write_text(original, encoding="utf-8")
    assert not script.update(copy, script.cell_source())  # already current: untouched
    assert script.update(copy, script.cell_source("9.9.9"))
    before, after = _read(NOTEBOOKS[0]), _read(copy)
    assert 'TU_VERSION = "9.9.9"' in after.cells[0].source
    assert [c.source for c in after.cells[1:]] == [c.source for c in before.cells[1:]]
    assert after.cells[0].metadata == before.cells[0].metadata
    assert script.update(copy, script.cell_source())
    assert copy.read_text(encoding="utf-8") == original  # byte for byte

    bare = tmp_path / "new.ipynb"  # a new chapter without the cell gets it first, tagged
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# New")]),
                   bare)
    assert script.update(bare, script.cell_source())
    cells = _read(bare).cells
    assert cells[0].source == script.cell_source() and cells[0].metadata.tags == ["remove-cell"]
    assert cells[1].source == "# New"


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


APPENDICES = {"book/11_distributed"}


def test_toc_root_is_the_intro_and_the_faq_is_the_last_chapter():
    """DESIGN §2: parts may group the chapters; the FAQ stays last among them, then appendices."""
    files = _toc_files()
    assert files[0] == "book/intro"
    numbered = [f for f in files if re.fullmatch(r"book/\d\d_\w+", f)]
    chapters = [f for f in numbered if f not in APPENDICES]
    assert chapters[-1] == "book/08_faq", f"the FAQ must be the last chapter, got {chapters}"
    first = {f: numbered.index(f) for f in numbered}
    assert all(first[a] > first["book/08_faq"] for a in APPENDICES & set(numbered)), \
        "appendices come after the FAQ"
    ordered = [f for f in chapters if f != "book/08_faq"]
    early = [f for f in ordered if f < "book/08"]
    assert early == sorted(early), f"chapters 1-7 keep their order: {early}"


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
