"""How numbers and missing values are shown in tables, pages and reports: one format everywhere."""

from __future__ import annotations

from typing import Any

MISSING = "n/a"


def fmt(value: Any, digits: int = 3) -> str:
    """A value for a table cell: floats to ``digits`` places, None as ``n/a``."""
    if value is None:
        return MISSING
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def md_cell(value: Any) -> str:
    """Text safe inside a markdown table cell (no pipe, no line break)."""
    return str(value if value is not None else "").replace("|", "\\|").replace("\n", " ")
