"""Human labels: the words annotators write in a manifest, read one way everywhere.

A manifest's ``rating`` column is free text. ``human_rating`` maps it to 'unsafe', 'safe' or None
(no label, or a word we do not recognise): the manifest judge, the label-agreement figures and the
rule that a human-safe source never becomes a flip pair all read it through this one function.
"""

from __future__ import annotations

UNSAFE_WORDS = frozenset({"unsafe", "1", "true", "yes", "harmful", "review needed", "unsafe_image"})
SAFE_WORDS = frozenset({"safe", "0", "false", "no", "compliant", "safe_image"})


def normalised(value: object) -> str:
    return str(value or "").strip().lower()


def human_rating(value: object) -> str | None:
    """'unsafe', 'safe', or None when the value is empty or not a rating word."""
    word = normalised(value)
    if word in UNSAFE_WORDS:
        return "unsafe"
    if word in SAFE_WORDS:
        return "safe"
    return None
