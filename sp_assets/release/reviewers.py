"""Who reviewed a pair, as the public benchmark shows it: a pseudonym by default, the name only when asked.

A review decision names a person and may carry a free-text note about the image. Neither is needed to
use the benchmark, and both outlive the project once published. By default the export replaces each
reviewer by ``reviewer-`` + 10 hex digits of HMAC-SHA256 under a secret key, and leaves the notes out.
The key is made once and kept beside the export, in the data root (never inside the export): the same
reviewer gets the same pseudonym in every export of that data root, and no one without the key can test
a guessed name against a pseudonym (a plain hash of the name could be).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from sp_assets.release.report import ExportError

KEY_FILE = ".reviewer_pseudonym.key"
PREFIX = "reviewer-"
NAME_COLUMN = "reviewer"
NOTE_COLUMN = "review_note"
_KEY_BYTES = 32


@dataclass(frozen=True)
class ReviewerChoice:
    """What the export publishes about reviewers: their names (else pseudonyms) and their notes (else nothing)."""

    names: bool = False
    notes: bool = False

    @property
    def withheld_columns(self) -> frozenset[str]:
        return frozenset() if self.notes else frozenset({NOTE_COLUMN})


def pseudonym(name: str, key: bytes) -> str:
    """The reviewer's stable pseudonym under ``key``."""
    return PREFIX + hmac.new(key, name.encode("utf-8"), hashlib.sha256).hexdigest()[:10]


def reviewer_key(folder: Path) -> bytes:
    """The data root's pseudonym key, made on first use (random, readable by its owner only)."""
    path = folder / KEY_FILE
    if not path.exists():
        _create_key(path)
    text = path.read_text(encoding="ascii", errors="replace").strip()
    try:
        key = bytes.fromhex(text)
    except ValueError:
        key = b""
    if len(key) != _KEY_BYTES:
        raise ExportError(f"{path} does not hold a reviewer pseudonym key ({_KEY_BYTES * 2} hex digits, got "
                          f"{len(text)} characters). Delete it to make a new key: every reviewer then gets a new "
                          "pseudonym in the next export.")
    return key


def _create_key(path: Path) -> None:
    # Written aside and linked into place: two exports starting at once agree on one key, and none reads half.
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{uuid.uuid4().hex[:8]}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as fh:
            fh.write(secrets.token_hex(_KEY_BYTES) + "\n")
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass  # another export made it first: use theirs
    finally:
        tmp.unlink(missing_ok=True)


def publish_reviewers(rows: Sequence[dict[str, Any]], choice: ReviewerChoice, key_folder: Path) -> list[dict[str, Any]]:
    """The rows as published: reviewers pseudonymised unless ``choice.names``, notes dropped unless ``choice.notes``.

    The key is read (or made) only when some row names a reviewer and names are not published.
    """
    named = any(r.get(NAME_COLUMN) for r in rows)
    key = reviewer_key(key_folder) if named and not choice.names else b""
    out = []
    for row in rows:
        row = {k: v for k, v in row.items() if k not in choice.withheld_columns}
        if key and row.get(NAME_COLUMN):
            row[NAME_COLUMN] = pseudonym(str(row[NAME_COLUMN]), key)
        out.append(row)
    return out
