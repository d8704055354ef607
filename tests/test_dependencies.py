"""Every third-party module that the code imports is a declared dependency (pyproject.toml).

A package that arrives only through another one (pandas through mlxtend, say) works until
that other package drops it; then a reader's fresh install, or Colab, breaks. So:

- the notebooks and `transfer_utils` at import time may use only ``[project] dependencies``:
  that is all that `pip install transfer-utils` (and the Colab cell) installs;
- an import inside a function of `transfer_utils` (an optional feature) may also use an extra;
- tests, scripts, benchmarks and the book's Sphinx extension may use anything that
  ``.[dev]`` installs.

Imports are read with ``ast`` (never executed); the standard library and this
repository's own modules are fine. Import names map to distribution names through the
installed packages' metadata (``sklearn`` -> scikit-learn), with a table for the rest.
"""

from __future__ import annotations

import ast
import functools
import importlib.metadata
import re
import sys
from pathlib import Path

import nbformat
import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
# standard library from Python 3.11 on (imported above with a fallback for 3.10)
NEWER_STDLIB = {"tomllib"}
# import name -> distribution, for names whose distribution is not installed here
KNOWN = {"sklearn": "scikit-learn", "PIL": "pillow", "yaml": "pyyaml", "cv2": "opencv-python",
         "skimage": "scikit-image", "bs4": "beautifulsoup4", "jupyter_cache": "jupyter-cache"}


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@functools.cache
def _declared() -> tuple[frozenset[str], frozenset[str]]:
    """(``[project] dependencies``, those plus every extra), as normalised names."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]

    def names(reqs):
        return {_norm(re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", r.strip()).group()) for r in reqs}

    base = names(project["dependencies"])
    everything = base.union(*(names(v) for v in project["optional-dependencies"].values()))
    return frozenset(base), frozenset(everything - {_norm(project["name"])})


def _imports(source: str, filename: str) -> list[tuple[str, bool]]:
    """``(top-level module, inside a function)`` for each absolute import in ``source``."""
    found = []

    def visit(node, in_function):
        for child in ast.iter_child_nodes(node):
            nested = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            if isinstance(child, ast.Import):
                found.extend((a.name.split(".")[0], nested) for a in child.names)
            elif isinstance(child, ast.ImportFrom) and child.level == 0 and child.module:
                found.append((child.module.split(".")[0], nested))
            visit(child, nested)

    visit(ast.parse(source, filename), False)
    return found


def _notebook_source(path: Path) -> str:
    """The code cells of a notebook as one Python file (IPython ``%``/``!`` lines dropped)."""
    cells = [c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"]
    lines = "\n".join(cells).splitlines()
    return "\n".join("" if line.lstrip().startswith(("%", "!")) else line for line in lines)


def _third_party(module: str, path: Path) -> bool:
    if module in sys.stdlib_module_names or module in NEWER_STDLIB:
        return False
    local = [ROOT / module, ROOT / f"{module}.py", path.parent / f"{module}.py"]
    return not any(p.exists() for p in local)


@functools.cache
def _installed() -> dict[str, list[str]]:
    return importlib.metadata.packages_distributions()


def _distributions(module: str) -> set[str]:
    installed = _installed().get(module, [])
    return {_norm(d) for d in installed} | {_norm(KNOWN.get(module, module))}


def _files() -> list[tuple[Path, str]]:
    """Every file that imports, and which declared set it may draw on."""
    files = [(p, "base") for p in sorted((ROOT / "book").glob("*.ipynb"))]
    files += [(p, "package") for p in sorted((ROOT / "transfer_utils").rglob("*.py"))]
    for folder in ("tests", "tests_browser", "benchmarks", "scripts", "_ext", "book"):
        files += [(p, "dev") for p in sorted((ROOT / folder).glob("*.py"))]
    return files


FILES = _files()


def test_scan_finds_the_notebooks_and_the_package():
    kinds = {kind for _, kind in FILES}
    assert {"base", "package", "dev"} <= kinds, kinds


def test_pandas_and_scipy_are_declared():
    base, _ = _declared()
    assert {"pandas", "scipy"} <= base


@pytest.mark.parametrize("path,kind", FILES, ids=[str(p.relative_to(ROOT)) for p, _ in FILES])
def test_every_import_is_declared(path, kind):
    base, everything = _declared()
    source = _notebook_source(path) if path.suffix == ".ipynb" else path.read_text()
    missing = set()
    for module, in_function in _imports(source, str(path)):
        if not _third_party(module, path):
            continue
        allowed = base if kind == "base" or (kind == "package" and not in_function) else everything
        if not _distributions(module) & allowed:
            missing.add(module)
    where = {"base": "[project] dependencies (all that `pip install transfer-utils` and the "
                     "Colab cell install)",
             "package": "[project] dependencies, or an extra if imported inside a function",
             "dev": "[project] dependencies or an extra of pyproject.toml"}[kind]
    assert not missing, (
        f"{path.relative_to(ROOT)} imports {sorted(missing)}, which pyproject.toml does not "
        f"declare: add each distribution to {where}, as a range (e.g. 'name>=1.2')"
    )


def test_the_check_catches_an_undeclared_import(tmp_path):
    path = tmp_path / "x.py"
    source = "import os\nimport sklearn\nfrom yaml import safe_load\ndef f():\n    import pytest\n"
    found = _imports(source, str(path))
    assert found == [("os", False), ("sklearn", False), ("yaml", False), ("pytest", True)]
    assert not _third_party("os", path) and _third_party("sklearn", path)
    assert "scikit-learn" in _distributions("sklearn")
    base, everything = _declared()
    assert "pytest" not in base and "pytest" in everything
    assert not _distributions("surely_not_a_real_module_x") & everything
