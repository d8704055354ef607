"""The package's shape (DESIGN.md §4): four layers, imports only downward, one concept per module.

These read the package's source with ``ast``; they fail when a change makes a module
import upward, import another module's private name, or export a name twice.
"""

from __future__ import annotations

import ast
import importlib
import inspect
from pathlib import Path

import pytest

import transfer_utils as tu

PKG = Path(tu.__file__).resolve().parent

# The order of the README's package table: a module may import the private helpers
# (_validate) and any module listed before it, never one listed after it.
LAYERS = {
    "core": ["runtime", "data", "checkpoint", "surgery", "models", "training", "inference",
             "zoo"],
    "methods": ["features", "finetune", "param_efficient", "distill", "adapt", "multitask",
                "zeroshot", "privacy", "distributed"],
    "measure": ["analysis", "experiments", "diagnostics"],
    "present": ["guide", "plots", "widgets", "exercises"],
}
ORDER = [m for mods in LAYERS.values() for m in mods]
PRIVATE = {"_validate"}


def _modules() -> list[str]:
    names = sorted(p.stem for p in PKG.glob("*.py") if p.stem != "__init__")
    return names + ["zoo"]


def _source(module: str) -> str:
    path = PKG / f"{module}.py"
    return (path if path.exists() else PKG / module / "__init__.py").read_text()


def _imports(module: str) -> list[tuple[str, list[str]]]:
    """``[(imported module, [names])]`` for the package-relative imports of ``module``."""
    tree = ast.parse(_source(module))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = (node.module or "").split(".")[0]
            if module == "zoo" and node.level == 1:
                continue  # zoo's own submodules
            if base:
                out.append((base, [a.name for a in node.names]))
            else:  # "from . import x"
                out.extend((a.name, []) for a in node.names)
    return out


def test_every_module_is_in_one_layer():
    unknown = [m for m in _modules() if m not in ORDER and m not in PRIVATE]
    assert not unknown, f"modules {unknown} are in no layer: add them to LAYERS and the README"


@pytest.mark.parametrize("module", [m for m in ORDER if m in _modules()])
def test_imports_only_go_down(module):
    upward = [imp for imp, _ in _imports(module)
              if imp in ORDER and ORDER.index(imp) >= ORDER.index(module)]
    assert not upward, f"{module} imports {upward}, which come after it in the layer order"


@pytest.mark.parametrize("module", _modules())
def test_no_module_imports_another_private_name(module):
    private = [(imp, n) for imp, names in _imports(module) for n in names if n.startswith("_")]
    assert not private, f"{module} imports private names {private}: make them public or move them"


@pytest.mark.parametrize("module", [m for m in _modules() if m not in PRIVATE])
def test_module_docstring_first_line_says_what_it_is(module):
    doc = ast.get_docstring(ast.parse(_source(module)))
    assert doc and len(doc.splitlines()[0]) > 20, f"{module} needs a one-line docstring summary"


def test_public_names_are_exported_once_and_documented():
    seen: dict[str, str] = {}
    for module in _modules():
        if module in PRIVATE or module == "zoo":
            continue
        mod = importlib.import_module(f"transfer_utils.{module}")
        for name in mod.__all__:
            assert name not in seen, f"{name} is exported by both {seen[name]} and {module}"
            seen[name] = module
            obj = getattr(tu, name)
            assert getattr(tu, name) is getattr(mod, name), f"tu.{name} is not {module}.{name}"
            if inspect.isfunction(obj) or inspect.isclass(obj):
                assert inspect.getdoc(obj), f"tu.{name} ({module}) has no docstring"


def test_exercise_graders_all_live_in_exercises():
    graders = [n for n in dir(tu) if n.startswith("check_")]
    assert graders and all(getattr(tu, n).__module__ == "transfer_utils.exercises" for n in graders)


@pytest.mark.parametrize("module", _modules())
def test_private_helpers_are_not_named_check(module):
    tree = ast.parse(_source(module))
    named = [n.name for n in ast.walk(tree)
             if isinstance(n, (ast.FunctionDef, ast.ClassDef)) and n.name.startswith("_check")]
    assert not named, f"{module}: private helpers {named} look like exercise graders; rename them"


def test_every_grader_speaks_in_one_style(capsys):
    """Success prints one line starting with 'Correct:'; failure ends with 'Hint: ...'."""
    import numpy as np

    tu.check_ci95(lambda v: tu.summarize(v).ci95)
    tu.check_attribute_map(lambda X, T, a: np.linalg.solve(X.T @ X + a * np.eye(X.shape[1]),
                                                           X.T @ T))
    tu.check_leep(tu.leep)
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 3 and all(line.startswith("Correct: ") for line in out)
    for grader, wrong in ((tu.check_ci95, lambda v: 0.0), (tu.check_leep, lambda p, y: 0.0),
                          (tu.check_kd_loss, lambda s, t, y, temperature, alpha: 0.0 * s.sum()),
                          (tu.check_attribute_map, lambda X, T, a: X.T @ T)):
        with pytest.raises(AssertionError) as err:
            grader(wrong)
        lines = str(err.value).splitlines()
        assert len(lines) >= 2 and lines[-1].startswith("Hint: ") and lines[0], grader.__name__
