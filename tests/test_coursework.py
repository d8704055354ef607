"""The coursework pack (coursework/): master notebooks, wrong submissions, student copies, helper.

Grading every submission is `make coursework-check`'s job (minutes); these tests read files,
strip the master notebooks with nbgrader's own preprocessors (the ones
`nbgrader generate_assignment` runs) and check that no solution reaches a student, and test
the helper script's logic on small synthetic notebooks.
"""

from __future__ import annotations

import ast
import importlib.util
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
COURSEWORK = ROOT / "coursework"


def _load_helper():
    spec = importlib.util.spec_from_file_location("coursework_helper",
                                                  COURSEWORK / "coursework.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


cw = _load_helper()
IDS = cw.assignment_ids()


def _master(a):
    return nbformat.read(cw.master(a), as_version=4)


def _meta(cell):
    return cell.get("metadata", {}).get("nbgrader", {})


def _student_copy(nb):
    """The student version, made by the preprocessors that generate_assignment runs."""
    from nbgrader.preprocessors import ClearHiddenTests, ClearMarkScheme, ClearSolutions

    nb = nbformat.from_dict(nb)
    resources = {}
    for preprocessor in (ClearSolutions(), ClearHiddenTests(), ClearMarkScheme()):
        nb, resources = preprocessor.preprocess(nb, resources)
    return nb


# --------------------------------------------------------------------------- the pack


def test_the_pack_has_five_assignments_from_the_chapters():
    assert len(IDS) >= 5, f"only {IDS}"
    for topic in ("fine_tuning", "feature_extraction", "distillation", "lora", "challenges"):
        assert any(topic in a for a in IDS), f"no assignment on {topic}: {IDS}"


@pytest.mark.parametrize("assignment", IDS)
def test_master_has_solutions_public_and_hidden_tests_points_and_a_rubric(assignment):
    nb = _master(assignment)
    nbformat.validate(nb)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    text = "\n".join(c.source for c in nb.cells)
    assert text.count("### BEGIN SOLUTION") == text.count("### END SOLUTION") > 0
    assert text.count("### BEGIN HIDDEN TESTS") == text.count("### END HIDDEN TESTS") > 0
    ids = [_meta(c)["grade_id"] for c in nb.cells if _meta(c)]
    assert len(ids) == len(set(ids)), f"duplicate nbgrader grade_id in {assignment}"
    qs = cw.questions(nb)
    auto = [q for q in qs if not q.written]
    written = [q for q in qs if q.written]
    assert auto and all(q.points > 0 for q in qs)
    assert written, f"{assignment}: no written (manually graded) question"
    for cell in nb.cells:
        m = _meta(cell)
        if m.get("grade") and m.get("solution"):
            assert cell.cell_type == "markdown"
            assert "Rubric" in cell.source and "Model answer" in cell.source, (
                f"{assignment}: written question {m['grade_id']} needs a model answer and "
                "a rubric")
        if m.get("grade") and not m.get("solution"):
            public = cell.source.split("### BEGIN HIDDEN TESTS")[0]
            assert public.strip(), f"{assignment}: {m['grade_id']} has no public test"


@pytest.mark.parametrize("assignment", IDS)
def test_every_assert_in_a_test_cell_ends_with_a_hint(assignment):
    """Feedback a student can act on: a failing assert names what to do next."""
    for cell in _master(assignment).cells:
        m = _meta(cell)
        if not (m.get("grade") and not m.get("solution")):
            continue
        source = "\n".join(line for line in cell.source.splitlines()
                           if not line.lstrip().startswith("###"))
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.Assert):
                message = ast.get_source_segment(source, node.msg) if node.msg else ""
                assert "Hint:" in message, (
                    f"{assignment} {m['grade_id']} line {node.lineno}: an assert without a "
                    "'Hint:' in its message")


@pytest.mark.parametrize("assignment", IDS)
def test_master_starts_with_the_colab_cell_and_a_title_and_has_no_outputs(assignment):
    nb = _master(assignment)
    first = nb.cells[0]
    assert first.cell_type == "code" and "google.colab" in first.source
    assert "remove-cell" in first.metadata.get("tags", [])
    intro = nb.cells[1].source
    assert intro.startswith("# Assignment") and "Learning goals" in intro
    indented = [line for line in intro.splitlines() if line.startswith("    ")]
    assert not indented, f"{assignment}: the introduction would render as code: {indented[:1]}"
    dirty = [i for i, c in enumerate(nb.cells)
             if c.cell_type == "code" and (c.get("outputs") or c.get("execution_count"))]
    assert not dirty, f"{assignment}: clear the outputs of cells {dirty}"
    source = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    assert "import transfer_utils as tu" in source and "tu.setup(seed=0)" in source
    for name in ("tu.LoRALinear", "tu.add_lora", "tu.merge_lora"):
        assert name not in source, f"{assignment}: the students write LoRA themselves"


# --------------------------------------------------------------------------- student copies


@pytest.mark.parametrize("assignment", IDS)
def test_student_copy_holds_no_solution_marker_hidden_test_or_answer(assignment):
    master = _master(assignment)
    student = _student_copy(master)
    assert cw.leaks(master, student) == []
    text = "\n".join(c.source for c in student.cells)
    solutions = [c for c in master.cells if _meta(c).get("solution")]
    code_solutions = [c for c in solutions if c.cell_type == "code"]
    assert text.count("raise NotImplementedError()") >= len(code_solutions)
    assert text.count("YOUR ANSWER HERE") == len(solutions) - len(code_solutions)
    lines = cw.answer_lines(master)
    assert len(lines) >= 5, "the leak check would have too little to look for"
    assert not lines & {line.strip() for line in text.splitlines()}


def test_leak_check_finds_markers_and_answer_lines():
    master = _master(IDS[0])
    found = cw.leaks(master, master)  # the master handed out as it is
    assert any("BEGIN SOLUTION" in f for f in found)
    assert any("BEGIN HIDDEN TESTS" in f for f in found)
    assert any(f.startswith("answer line") for f in found)


# --------------------------------------------------------------------------- wrong submissions


@pytest.mark.parametrize("assignment", IDS)
def test_wrong_submission_answers_every_question_of_the_master(assignment):
    path = COURSEWORK / "wrong" / f"{assignment}.ipynb"
    assert path.exists(), f"missing the deliberately wrong submission {path}"
    wrong, master = nbformat.read(path, as_version=4), _master(assignment)
    want = {_meta(c)["grade_id"] for c in master.cells if _meta(c).get("solution")}
    got = {_meta(c)["grade_id"]: c.source for c in wrong.cells if _meta(c).get("solution")}
    assert set(got) == want, "the wrong submission's answer cells differ from the master's"
    assert not any("NotImplementedError" in s or "YOUR ANSWER HERE" in s for s in got.values())
    markers = [f for f in cw.leaks(master, wrong) if f.startswith("marker")]
    assert not markers, f"the wrong submission must be made from a student copy: {markers}"
    dirty = [i for i, c in enumerate(wrong.cells) if c.cell_type == "code" and c.get("outputs")]
    assert not dirty


# --------------------------------------------------------------------------- the helper


def _nb(*cells):
    nb = nbformat.v4.new_notebook()
    for kind, source, meta in cells:
        make = nbformat.v4.new_code_cell if kind == "code" else nbformat.v4.new_markdown_cell
        nb.cells.append(make(source, metadata={"nbgrader": meta} if meta else {}))
    return nb


SOLUTION = {"grade_id": "q1", "solution": True, "grade": False, "locked": False}
TESTS = {"grade_id": "q1_tests", "solution": False, "grade": True, "locked": True,
         "points": 3}
WRITTEN = {"grade_id": "q2", "solution": True, "grade": True, "locked": False, "points": 2}


def test_questions_and_answer_lines_of_a_small_master():
    nb = _nb(("markdown", "# Title\nreturn the_answer_of_everyone()", None),
             ("code", "def f():\n    ### BEGIN SOLUTION\n    return the_answer_of_everyone()\n"
                      "    secret_line_of_code = 42 * 42\n    ### END SOLUTION", SOLUTION),
             ("code", "assert f() == 42, 'Hint: x'\n### BEGIN HIDDEN TESTS\n"
                      "assert f() + 1 == 43, 'Hint: hidden one'\n### END HIDDEN TESTS", TESTS),
             ("markdown", "**Model answer.** Because the long explanation.", WRITTEN))
    qs = cw.questions(nb)
    assert [(q.grade_id, q.points, q.written) for q in qs] == [("q1_tests", 3.0, False),
                                                               ("q2", 2.0, True)]
    lines = cw.answer_lines(nb)
    assert "secret_line_of_code = 42 * 42" in lines
    assert "assert f() + 1 == 43, 'Hint: hidden one'" in lines
    assert "**Model answer.** Because the long explanation." in lines
    assert "return the_answer_of_everyone()" not in lines  # also in the handout's text
    student = _nb(("code", "def f():\n    # YOUR CODE HERE\n    raise NotImplementedError()",
                   SOLUTION))
    assert cw.leaks(nb, student) == []
    student.cells[0].source += "\nsecret_line_of_code = 42 * 42"
    assert cw.leaks(nb, student) == ["answer line 'secret_line_of_code = 42 * 42'"]


def _results(instructor=(3, 3), blank=(0, 3), wrong=(1, 3), hint=True):
    def result(points, maximum, feedback=None):
        return cw.Result(auto=points, auto_max=maximum, written_max=2, graded=True,
                         scores={"q1_tests": points}, feedback=feedback or {})

    msg = "AssertionError: wrong. Hint: do this" if hint else "AssertionError: wrong"
    return {"instructor": result(*instructor), "blank": result(*blank),
            "wrong": result(*wrong, {"q2_tests": msg})}


def test_expectations_hold_for_full_blank_and_partial_marks():
    r = _results()
    r["wrong"].scores = {"q1_tests": 1.0, "q2_tests": 0.0}
    assert cw.expectation_problems("a", r) == []


@pytest.mark.parametrize(("change", "complaint"), [
    ({"instructor": (2, 3)}, "a/instructor: 2 of 3 points"),
    ({"blank": (1, 3)}, "a/blank: 1 points for unanswered questions"),
    ({"wrong": (3, 3)}, "a/wrong: 3 of 3, not partial marks"),
    ({"wrong": (0, 3)}, "a/wrong: 0 of 3, not partial marks"),
    ({"hint": False}, "a/wrong: test q2_tests failed without a hint"),
])
def test_expectations_flag_each_broken_promise(change, complaint):
    r = _results(**change)
    r["wrong"].scores = {"q1_tests": r["wrong"].auto, "q2_tests": 0.0}
    problems = cw.expectation_problems("a", r)
    assert any(p.startswith(complaint) for p in problems), problems


def test_expectations_flag_an_ungraded_submission_and_failing_setup():
    r = _results()
    r["wrong"].scores = {"q1_tests": 1.0, "q2_tests": 0.0}
    r["blank"].graded = False
    r["instructor"].setup_errors = ["ModuleNotFoundError: No module named 'x'"]
    problems = cw.expectation_problems("a", r)
    assert "a/blank: nbgrader did not grade every test cell" in problems
    assert any(p.startswith("a/instructor: the setup cells failed") for p in problems)


def test_results_table_has_one_row_per_assignment_and_a_column_per_submission():
    table = cw.results_table({"a1_x": _results(), "a2_longer_name": _results(wrong=(2, 3))})
    lines = table.splitlines()
    assert lines[0].split() == ["assignment", "instructor", "blank", "wrong", "written",
                                "(by", "hand)"]
    assert set(lines[1]) <= {"-", " "}
    assert lines[2].split() == ["a1_x", "3", "/", "3", "0", "/", "3", "1", "/", "3", "2"]
    assert lines[3].split()[0] == "a2_longer_name" and "2 / 3" in lines[3]
    assert len({len(line) for line in lines}) == 1  # aligned columns


def test_check_refuses_to_run_without_a_build(tmp_path):
    with pytest.raises(SystemExit, match="make coursework"):
        cw.check(tmp_path, jobs=1, ids=["a1"])


def test_assignment_ids_need_the_nbgrader_layout(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "other.ipynb").write_text("{}")
    with pytest.raises(SystemExit, match="no master notebooks"):
        cw.assignment_ids(tmp_path)
    (tmp_path / "b2").mkdir()
    (tmp_path / "b2" / "b2.ipynb").write_text("{}")
    (tmp_path / "a1").mkdir()
    (tmp_path / "a1" / "a1.ipynb").write_text("{}")
    assert cw.assignment_ids(tmp_path) == ["a1", "b2"]
