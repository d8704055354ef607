"""nbgrader configuration of the coursework pack; the build copies it into the course directory.

See coursework/README.md. Every path is relative to the course directory, the folder
nbgrader runs in (_build/coursework/autograder/ after `make coursework`).
"""

c = get_config()  # noqa: F821 - nbgrader defines get_config when it reads this file

c.CourseDirectory.course_id = "transfer-learning-book"
# Student copies: what replaces a solution region, and a written answer.
c.ClearSolutions.code_stub = {"python": "# YOUR CODE HERE\nraise NotImplementedError()"}
c.ClearSolutions.text_stub = "YOUR ANSWER HERE"
# Grading: a cell may train a small model; no cell of the reference solutions needs
# more than a few seconds, so five minutes means a stuck cell, not a slow laptop.
c.Execute.timeout = 300
