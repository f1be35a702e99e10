"""Text from outside the project (a policy file, profile files, the database) made inert in the dataset card.

A policy file is often someone else's: its names and titles must read as text on the Hub, never become
HTML, links, images or table cells of their own. ``md_text`` escapes a value for running text and table
cells alike; ``md_code`` shows an identifier (a profile name, a hash) as code; ``one_line`` is for the YAML
front matter, whose values ``yaml.safe_dump`` quotes.
"""

from __future__ import annotations

import re
from typing import Any

# Characters that start markup anywhere in a line: emphasis, code, links and images, raw HTML, entities,
# strikethrough, table cells, and the Hub's maths.
_ALWAYS = frozenset("\\`*[]<>|~&$@")
# Characters that start a block only at the start of a line (heading, list, setext underline).
_LEADING = frozenset("#+-=")


def one_line(value: Any) -> str:
    """``value`` as text on one line: every line break (CR, LF, and Unicode's) becomes a space."""
    return " ".join(str("" if value is None else value).splitlines())


def md_text(value: Any) -> str:
    """``value`` as literal markdown text, safe in running text and in a table cell."""
    text = one_line(value)
    out = []
    for i, ch in enumerate(text):
        if ch in _ALWAYS or (i == 0 and ch in _LEADING) or (ch == "_" and not _inside_word(text, i)) \
                or _starts_bare_link(text, i):
            out.append("\\" + ch)
        else:
            out.append(ch)
    return "".join(out)


def _starts_bare_link(text: str, i: int) -> bool:
    # GFM links bare URLs (scheme://..., www....) without brackets; an escaped ':' or '.' breaks the pattern.
    if text[i] == ":":
        return text.startswith("//", i + 1)
    return text[i] == "." and text[max(0, i - 3):i].lower() == "www"


def _inside_word(text: str, i: int) -> bool:
    # An underscore between letters or digits never starts emphasis (so slugs such as o1_hate stay legible).
    return 0 < i < len(text) - 1 and text[i - 1].isalnum() and text[i + 1].isalnum()


def md_code(value: Any, in_table: bool = False) -> str:
    """``value`` as an inline code span (nothing inside is markup); ``in_table``: escape its pipes, which
    GFM reads as cell borders even inside code."""
    text = one_line(value)
    if not text:
        return ""  # an empty code span is not one: two backticks would show
    runs = [len(r) for r in re.findall(r"`+", text)]
    fence = "`" * (max(runs, default=0) + 1)
    if text.startswith("`") or text.endswith("`"):
        text = f" {text} "  # CommonMark strips one space on each side
    span = f"{fence}{text}{fence}"
    return span.replace("|", "\\|") if in_table else span
