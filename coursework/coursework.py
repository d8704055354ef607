"""Build and check the coursework pack with nbgrader: student copies, autograder, a results table.

Run from the repository root (the Makefile's `coursework` and `coursework-check` targets):

    python coursework/coursework.py build   # _build/coursework/{student,autograder}/
    python coursework/coursework.py check   # grade three submissions per assignment

`build` copies the master notebooks (``coursework/source/<id>/<id>.ipynb``, nbgrader's
layout) into an nbgrader course directory, ``_build/coursework/autograder/``, runs
``nbgrader generate_assignment`` there, copies each student version to
``_build/coursework/student/<id>.ipynb`` and refuses any student copy that still holds a
solution marker, a hidden test, a rubric or a line of the instructors' answers.

`check` grades, with ``nbgrader autograde``, three submissions of every assignment: the
master notebook itself ("instructor"), the untouched student copy ("blank") and the
deliberately wrong answers kept in ``coursework/wrong/<id>.ipynb`` ("wrong"). Each
assignment is graded in its own copy of the course directory (nbgrader's gradebook is one
SQLite file, and its autograder grades one notebook at a time), so assignments run in
parallel. It prints one table and the feedback of the wrong submissions, and exits with
status 1 unless the instructor gets full marks, the blank copy no marks, and the wrong
answers partial marks with a hint on every failed test.

The grading itself, solution stripping included, is nbgrader's; this file only drives its
command line and reads its gradebook.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SOURCE = HERE / "source"
WRONG = HERE / "wrong"
CONFIG = HERE / "nbgrader_config.py"
DEFAULT_OUT = ROOT / "_build" / "coursework"
SUBMISSIONS = ("instructor", "blank", "wrong")

# What nbgrader's generate_assignment must have removed from a student copy.
MARKERS = (
    "BEGIN SOLUTION",
    "END SOLUTION",
    "BEGIN HIDDEN TESTS",
    "END HIDDEN TESTS",
    "BEGIN MARK SCHEME",
    "Model answer",
    "Rubric",
)
MIN_ANSWER_LINE = 16  # shorter solution lines ("return model") may also occur in the handout


# --------------------------------------------------------------------------- sources


def assignment_ids(source: Path = SOURCE) -> list[str]:
    """The assignments: every ``source/<id>/<id>.ipynb``, in name order."""
    ids = sorted(p.parent.name for p in source.glob("*/*.ipynb") if p.stem == p.parent.name)
    if not ids:
        raise SystemExit(f"no master notebooks found as {source}/<id>/<id>.ipynb")
    return ids


def master(assignment: str, source: Path = SOURCE) -> Path:
    return source / assignment / f"{assignment}.ipynb"


def _nbgrader(cell) -> dict:
    return cell.get("metadata", {}).get("nbgrader", {})


@dataclass
class Question:
    """One graded cell of a master notebook."""

    grade_id: str
    points: float
    written: bool  # graded by hand (a solution cell that is also graded)


def questions(nb) -> list[Question]:
    """The graded cells of a notebook, in order: autograder tests and written answers."""
    out = []
    for cell in nb.cells:
        meta = _nbgrader(cell)
        if meta.get("grade"):
            out.append(Question(meta["grade_id"], float(meta.get("points", 0)),
                                bool(meta.get("solution"))))
    return out


def answer_lines(nb) -> set[str]:
    """Lines that only the instructors' version holds: solutions, hidden tests, model answers.

    Lines that also occur outside those regions (in the instructions or in the locked code)
    are left out, and so are short ones, so that a hit means the answer itself leaked.
    """
    secret, public = set(), set()
    for cell in nb.cells:
        meta = _nbgrader(cell)
        whole_cell_secret = cell.cell_type == "markdown" and meta.get("solution")
        region = None
        for raw in cell.source.splitlines():
            line = raw.strip()
            if "BEGIN SOLUTION" in line or "BEGIN HIDDEN TESTS" in line:
                region = True
                continue
            if "END SOLUTION" in line or "END HIDDEN TESTS" in line:
                region = None
                continue
            (secret if (region or whole_cell_secret) else public).add(line)
    return {s for s in secret - public if len(s) >= MIN_ANSWER_LINE}


def leaks(master_nb, student_nb) -> list[str]:
    """What a student copy must not contain: nbgrader's markers and the instructors' answers."""
    text = "\n".join(c.source for c in student_nb.cells)
    found = [f"marker {m!r}" for m in MARKERS if m in text]
    lines = {raw.strip() for raw in text.splitlines()}
    found += [f"answer line {s!r}" for s in sorted(answer_lines(master_nb) & lines)]
    return found


# --------------------------------------------------------------------------- nbgrader


def _env() -> dict:
    """The environment for nbgrader: this interpreter's scripts first on PATH.

    nbgrader runs ``alembic`` (its database migrations) as a command, so the virtual
    environment's bin/ must be on PATH even when the venv is not activated.
    """
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env.setdefault("TU_PROGRESS", "0")
    return env


def nbgrader(course: Path, *args: str, log: Path | None = None) -> None:
    """Run ``nbgrader ARGS`` in the course directory ``course``; raise with its log on failure."""
    cmd = [sys.executable, "-m", "nbgrader", *args]
    result = subprocess.run(cmd, cwd=course, env=_env(), capture_output=True, text=True)
    output = result.stdout + result.stderr
    if log is not None:
        log.write_text(output)
    if result.returncode != 0:
        raise RuntimeError(f"`nbgrader {' '.join(args)}` failed in {course}:\n{output[-4000:]}")


def build(out: Path = DEFAULT_OUT, source: Path = SOURCE) -> list[str]:
    """Make ``out/autograder`` (an nbgrader course) and ``out/student/<id>.ipynb``."""
    ids = assignment_ids(source)
    course, student = out / "autograder", out / "student"
    for d in (course, student):
        shutil.rmtree(d, ignore_errors=True)
    course.mkdir(parents=True)
    student.mkdir(parents=True)
    shutil.copy(CONFIG, course / "nbgrader_config.py")
    for a in ids:
        (course / "source" / a).mkdir(parents=True)
        shutil.copy(master(a, source), course / "source" / a / f"{a}.ipynb")
    # One run for every assignment ("*" is nbgrader's glob over source/): nbgrader takes
    # seconds to start, and the gradebook is one SQLite file.
    nbgrader(course, "generate_assignment", "*", "--force", log=course / "generate.log")
    problems = []
    for a in ids:
        handout = course / "release" / a / f"{a}.ipynb"
        shutil.copy(handout, student / f"{a}.ipynb")
        found = leaks(nbformat.read(master(a, source), 4), nbformat.read(handout, 4))
        problems += [f"{a}: {f}" for f in found]
    if problems:
        raise SystemExit("student copies hold instructor material:\n  " + "\n  ".join(problems))
    return ids


# --------------------------------------------------------------------------- check


@dataclass
class Result:
    """What nbgrader recorded for one submission of one assignment."""

    auto: float = 0.0
    auto_max: float = 0.0
    written_max: float = 0.0
    scores: dict = field(default_factory=dict)  # grade_id -> autograded score
    feedback: dict = field(default_factory=dict)  # grade_id -> error shown in the test cell
    setup_errors: list = field(default_factory=list)  # errors before the first answer cell
    graded: bool = False


def _error_text(cell) -> str:
    for output in cell.get("outputs", []):
        if output.get("output_type") == "error":
            return f"{output.get('ename')}: {output.get('evalue')}".strip()
    return ""


def read_result(course: Path, assignment: str, student: str) -> Result:
    """Scores from the gradebook and feedback from the autograded notebook of one student."""
    from nbgrader.api import Gradebook, MissingEntry

    qs = questions(nbformat.read(course / "source" / assignment / f"{assignment}.ipynb", 4))
    r = Result(auto_max=sum(q.points for q in qs if not q.written),
               written_max=sum(q.points for q in qs if q.written))
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb:
        try:
            gb.find_submission(assignment, student)
        except MissingEntry:
            return r
        for q in qs:
            if q.written:
                continue
            try:
                grade = gb.find_grade(q.grade_id, assignment, assignment, student)
            except MissingEntry:
                continue
            r.scores[q.grade_id] = float(grade.auto_score or 0.0)
    r.graded = len(r.scores) == sum(1 for q in qs if not q.written)
    r.auto = sum(r.scores.values())
    graded_nb = course / "autograded" / student / assignment / f"{assignment}.ipynb"
    if graded_nb.exists():
        nb = nbformat.read(graded_nb, 4)
        before_answers = True
        for cell in nb.cells:
            meta = _nbgrader(cell)
            if meta.get("solution"):
                before_answers = False
            error = _error_text(cell) if cell.cell_type == "code" else ""
            if before_answers and error:
                r.setup_errors.append(error)
            if meta.get("grade") and not meta.get("solution") and error:
                r.feedback[meta["grade_id"]] = error
    else:
        r.graded = False
    return r


def grade_assignment(assignment: str, out: Path, wrong: Path = WRONG) -> dict[str, Result]:
    """Autograde the instructor, blank and wrong submissions in a private copy of the course."""
    course = out / "check" / assignment
    shutil.rmtree(course, ignore_errors=True)
    src = out / "autograder"
    course.mkdir(parents=True)
    for name in ("nbgrader_config.py", "gradebook.db"):
        shutil.copy(src / name, course / name)
    for sub in ("source", "release"):
        shutil.copytree(src / sub / assignment, course / sub / assignment)
    files = {
        "instructor": src / "source" / assignment / f"{assignment}.ipynb",
        "blank": src / "release" / assignment / f"{assignment}.ipynb",
        "wrong": wrong / f"{assignment}.ipynb",
    }
    for student, path in files.items():
        if not path.exists():
            raise SystemExit(f"missing submission for {assignment}: {path}")
        target = course / "submitted" / student / assignment
        target.mkdir(parents=True)
        shutil.copy(path, target / f"{assignment}.ipynb")
    nbgrader(course, "autograde", assignment, "--create", "--force", log=course / "autograde.log")
    return {s: read_result(course, assignment, s) for s in files}


def expectation_problems(assignment: str, results: dict[str, Result]) -> list[str]:
    """Every way in which the three gradings differ from what the pack promises."""
    p = []
    full, blank, wrong = (results[s] for s in SUBMISSIONS)
    for s, r in results.items():
        if not r.graded:
            p.append(f"{assignment}/{s}: nbgrader did not grade every test cell")
        if r.setup_errors:
            p.append(f"{assignment}/{s}: the setup cells failed: {r.setup_errors[0]}")
    if full.auto != full.auto_max or full.auto_max <= 0:
        lost = {q: e for q, e in full.feedback.items()}
        p.append(f"{assignment}/instructor: {full.auto:g} of {full.auto_max:g} points {lost}")
    if blank.auto != 0:
        p.append(f"{assignment}/blank: {blank.auto:g} points for unanswered questions")
    if not 0 < wrong.auto < wrong.auto_max:
        p.append(f"{assignment}/wrong: {wrong.auto:g} of {wrong.auto_max:g}, not partial marks")
    failed = [q for q, s in wrong.scores.items() if s == 0]
    for q in failed:
        if "Hint:" not in wrong.feedback.get(q, ""):
            p.append(f"{assignment}/wrong: test {q} failed without a hint: "
                     f"{wrong.feedback.get(q, '(no error shown)')!r}")
    return p


def results_table(results: dict[str, dict[str, Result]]) -> str:
    """One line per assignment, one column per submission: autograded points of the maximum."""
    header = ["assignment", *SUBMISSIONS, "written (by hand)"]
    rows = [header]
    for a, per in results.items():
        any_r = next(iter(per.values()))
        rows.append([a, *(f"{per[s].auto:g} / {per[s].auto_max:g}" for s in SUBMISSIONS),
                     f"{any_r.written_max:g}"])
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w)
                       in enumerate(zip(r, widths, strict=True))) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def check(out: Path = DEFAULT_OUT, jobs: int | None = None, ids: Iterable[str] | None = None,
          wrong: Path = WRONG) -> int:
    """Grade every assignment's three submissions in parallel; print the table; 0 if all is well."""
    ids = list(ids or assignment_ids())
    if not (out / "autograder" / "gradebook.db").exists():
        raise SystemExit(f"no autograder in {out}: run `make coursework` first")
    jobs = jobs or int(os.environ.get("COURSEWORK_JOBS", 0)) or os.cpu_count() or 1
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = {a: pool.submit(grade_assignment, a, out, wrong) for a in ids}
        results = {a: f.result() for a, f in futures.items()}
    seconds = time.perf_counter() - start
    problems = [q for a, r in results.items() for q in expectation_problems(a, r)]
    for a in ids:  # the handed-out copies, as built
        handout = nbformat.read(out / "student" / f"{a}.ipynb", 4)
        problems += [f"{a}: student copy holds {f}"
                     for f in leaks(nbformat.read(master(a), 4), handout)]
    print("\nAutograded points (nbgrader), by assignment and submission:\n")
    print(results_table(results))
    print("\nFeedback on the wrong submissions (what the student sees under each failed test):")
    for a, per in results.items():
        for q, text in per["wrong"].feedback.items():
            print(f"  {a} {q}: {' / '.join(text.splitlines())}")
    summary = {a: {s: {"points": r.auto, "max": r.auto_max} for s, r in per.items()}
               for a, per in results.items()}
    (out / "check" / "results.json").write_text(json.dumps(summary, indent=2))
    print(f"\n{len(ids)} assignments x {len(SUBMISSIONS)} submissions graded in {seconds:.0f} s "
          f"with {jobs} parallel jobs; logs in {out / 'check'}")
    if problems:
        print("\nFAILED expectations:\n  " + "\n  ".join(problems))
        return 1
    print("All expectations met: instructor full marks, blank copies 0, wrong answers partial "
          "with a hint on every failed test; student copies hold no instructor material.")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=("build", "check"))
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help="build folder (default: _build/coursework)")
    parser.add_argument("--jobs", type=int, default=None,
                        help="assignments graded at once (default: COURSEWORK_JOBS or all cores)")
    parser.add_argument("assignments", nargs="*", help="only these assignment ids (check)")
    args = parser.parse_args(argv)
    if args.command == "build":
        ids = build(args.out)
        print(f"built {len(ids)} assignments: student copies in {args.out / 'student'}, "
              f"nbgrader course in {args.out / 'autograder'}")
        return 0
    return check(args.out, args.jobs, args.assignments or None)


if __name__ == "__main__":
    sys.exit(main())
