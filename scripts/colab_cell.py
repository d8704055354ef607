"""Write the Colab install cell, for this version of the package, into every notebook.

The first code cell of each chapter (hidden in the book by its ``remove-cell`` tag) installs
``transfer_utils`` when the notebook runs on Colab, and does nothing anywhere else. It
installs the release the notebook was written for: the git tag ``v<version>``, with the
version from pyproject.toml. When that tag does not exist (a version not yet released, as
on ``main`` between releases) it says so and installs ``main`` instead.

    python scripts/colab_cell.py          # update (or insert) the cell in book/*.ipynb
    python scripts/colab_cell.py --check  # exit 1 if a notebook's cell is not the current one

Only that cell changes; the rest of each file is written back byte for byte. Run it after
adding a chapter and after changing the version; tests/test_notebooks.py checks it was run.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
TAG = "remove-cell"

TEMPLATE = '''\
# Colab: install the transfer_utils release this notebook was written for (git tag
# "v" + TU_VERSION, or main while that is not released); elsewhere this does nothing.
# Written by scripts/colab_cell.py: edit that script, not this cell.
import os
import subprocess
import sys

TU_VERSION = "@VERSION@"
if "google.colab" in sys.modules and not os.environ.get("TU_SKIP_INSTALL"):

    def _install(ref):
        url = "git+@REPOSITORY@@" + ref
        pip = [sys.executable, "-m", "pip", "install", "-q", "transfer-utils @ " + url]
        return subprocess.run(pip, capture_output=True, text=True)

    if _install("v" + TU_VERSION).returncode == 0:
        print(f"Installed transfer_utils {TU_VERSION} (release v{TU_VERSION}).")
    else:
        print(f"transfer_utils v{TU_VERSION} is not released: installing main instead, "
              "which can be newer than this notebook.")
        _result = _install("main")
        if _result.returncode != 0:
            print(_result.stderr)
            raise RuntimeError("pip could not install transfer_utils (see above)")'''


def _project() -> dict:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def cell_source(version: str | None = None) -> str:
    """The install cell's code for ``version`` (default: pyproject.toml's)."""
    project = _project()
    repository = project["urls"]["Homepage"]
    if not re.fullmatch(r"https://github\.com/[\w.-]+/[\w.-]+", repository):
        raise ValueError(f"pyproject.toml: Homepage {repository!r} is not a GitHub repository")
    return (TEMPLATE.replace("@VERSION@", version or project["version"])
            .replace("@REPOSITORY@", repository))


def is_colab_cell(cell) -> bool:
    return cell.cell_type == "code" and "google.colab" in cell.source


def update(path: Path, source: str) -> bool:
    """Put ``source`` in the notebook's install cell (inserted first if it has none).

    Returns whether the file changed.
    """
    text = path.read_text(encoding="utf-8")
    nb = nbformat.reads(text, as_version=4)
    first = next((c for c in nb.cells if c.cell_type == "code"), None)
    if first is not None and is_colab_cell(first):
        first.source = source
    else:
        cell = nbformat.v4.new_code_cell(source, metadata={"tags": [TAG]})
        nb.cells.insert(0, cell)
    new = nbformat.writes(nb) + "\n"
    if new == text:
        return False
    path.write_text(new, encoding="utf-8")
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="change nothing; exit 1 if a notebook's cell is out of date")
    parser.add_argument("notebooks", nargs="*", type=Path,
                        help="notebooks (default: book/*.ipynb)")
    args = parser.parse_args(argv)
    paths = args.notebooks or sorted((ROOT / "book").glob("*.ipynb"))
    source = cell_source()
    if args.check:
        stale = []
        for path in paths:
            nb = nbformat.read(path, as_version=4)
            first = next((c for c in nb.cells if c.cell_type == "code"), None)
            if first is None or first.source != source:
                stale.append(str(path))
        for path in stale:
            print(f"{path}: the Colab cell is out of date: run python scripts/colab_cell.py")
        return 1 if stale else 0
    for path in paths:
        if update(path, source):
            print(f"updated {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
