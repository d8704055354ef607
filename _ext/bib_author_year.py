"""Author-year labels for the bibliography and the citations: [Pan and Yang, 2010].

pybtex's own label styles would show that entry as [HVD15]. This Sphinx extension
registers a bibliography style, ``authoryear`` (pybtex's "plain" entries, sorted by their
labels), whose labels read like author-year citations; two papers with the same label get
2018a and 2018b. With ``bibtex_reference_style: label`` the text cites by the same labels, so
a citation and its entry always match. _config.yml loads it through ``local_extensions``.
"""

from __future__ import annotations

from collections import Counter

from pybtex.plugin import register_plugin
from pybtex.richtext import Text
from pybtex.style.formatting.plain import Style as PlainStyle
from pybtex.style.labels import BaseLabelStyle
from pybtex.style.sorting import BaseSortingStyle


def _surname(person) -> str:
    name = " ".join(person.prelast_names + person.last_names)  # "van der Maaten"
    return Text.from_latex(name).render_as("text")  # "P{\'o}czos" -> "Póczos"


def author_year_label(entry) -> str:
    """``Pan and Yang, 2010``, ``Hinton et al., 2015``, ``Greydanus, 2020``."""
    people = entry.persons.get("author") or entry.persons.get("editor") or []
    names = [_surname(p) for p in people]
    if not names:
        who = entry.fields.get("title", entry.key)
    elif len(names) == 1:
        who = names[0]
    elif len(names) == 2:
        who = f"{names[0]} and {names[1]}"
    else:
        who = f"{names[0]} et al."
    return f"{who}, {entry.fields.get('year', 'n.d.')}"


class AuthorYearLabels(BaseLabelStyle):
    def format_labels(self, sorted_entries):
        entries = list(sorted_entries)
        labels = [author_year_label(e) for e in entries]
        repeated = {label for label, n in Counter(labels).items() if n > 1}
        seen: Counter = Counter()
        for label in labels:
            if label in repeated:  # two "Li et al., 2018": 2018a, 2018b
                seen[label] += 1
                label += "abcdefghijklmnopqrstuvwxyz"[seen[label] - 1]
            yield label


class AuthorYearSorting(BaseSortingStyle):
    """Alphabetical by label, so "Hugging Face, 2022" sits among the H's."""

    def sorting_key(self, entry):
        return author_year_label(entry).casefold(), entry.fields.get("title", "")


class AuthorYearStyle(PlainStyle):
    default_label_style = "author_year_labels"
    default_sorting_style = "author_year_label_order"


def setup(app):
    register_plugin("pybtex.style.labels", "author_year_labels", AuthorYearLabels)
    register_plugin("pybtex.style.sorting", "author_year_label_order", AuthorYearSorting)
    register_plugin("pybtex.style.formatting", "authoryear", AuthorYearStyle)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
