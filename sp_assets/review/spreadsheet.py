"""Decisions CSV cells that are safe to open in a spreadsheet, and the undo the import applies.

A spreadsheet evaluates a cell that starts with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return as a
formula, so a reviewer's note such as ``=HYPERLINK(...)`` would run when the CSV is opened (CSV injection).
Such a cell is written with one ``'`` in front (the OWASP rule). A cell that starts with quotes and then
one of those characters gets one too, so the import's undo (take off exactly one leading ``'`` when what
follows would be neutralised) gives back every value exactly. static/csv_cell.js does the same in the page.
"""

from __future__ import annotations

import re

_NEEDS_QUOTE = re.compile(r"'*[=+\-@\t\r]")


def neutralise(value: str) -> str:
    """``value`` as a cell no spreadsheet runs as a formula."""
    return "'" + value if _NEEDS_QUOTE.match(value) else value


def restore(cell: str) -> str:
    """The value :func:`neutralise` was given; any other cell unchanged."""
    return cell[1:] if cell.startswith("'") and _NEEDS_QUOTE.match(cell, 1) else cell
