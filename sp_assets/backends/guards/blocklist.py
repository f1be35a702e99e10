"""OCR, then a keyword blocklist: the simplest text filter a product ships, evaluated as a guard.

The list is data (``blocklist.yaml`` beside this module, or a file the profile names), pinned by its
sha256 in the profile, so the profile's config hash changes with the list and no verdict made with an
older list is reused.
"""

from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Sequence

import yaml
from pydantic import Field

from sp_assets.core.record_types import ModelInfo, Verdict
from sp_assets.backends.common.model_store import check_pinned
from sp_assets.backends.common.versions import package_version
from sp_assets.backends.guards.ocr_text import NO_TEXT, OCRTextGuard
from sp_assets.core.policy import Category

DEFAULT_LIST = Path(__file__).with_name("blocklist.yaml")


def normalise(text: str) -> str:
    """Lower case, compatibility forms folded (full-width letters, ligatures), accents dropped, and every
    run of characters other than letters and digits one space."""
    folded = unicodedata.normalize("NFKD", unicodedata.normalize("NFKC", text).casefold())
    plain = "".join(ch for ch in folded if not unicodedata.combining(ch))
    return " ".join(re.sub(r"[^0-9a-z]+", " ", plain).split())


@dataclass(frozen=True)
class Blocklist:
    """Normalised terms per category, and one whole-word pattern per category."""

    path: str
    sha256: str
    terms: dict[str, tuple[str, ...]]

    @cached_property
    def patterns(self) -> dict[str, re.Pattern[str]]:
        # Longest first, so a phrase wins over a word inside it ("kill yourself" before "kill").
        return {cat: re.compile(r"(?<![0-9a-z])(" + "|".join(re.escape(t) for t in sorted(terms, key=len, reverse=True))
                                + r")(?![0-9a-z])") for cat, terms in self.terms.items() if terms}

    def hits(self, text: str) -> list[tuple[str, str]]:
        """(category, term) of every listed term in ``text``, in list order of the categories."""
        norm = normalise(text)
        return [(cat, m.group(1)) for cat, pattern in self.patterns.items() for m in pattern.finditer(norm)]


def load_blocklist(path: str | Path, expected_sha256: str) -> Blocklist:
    """The list at ``path``, after checking its sha256 against the profile's pin."""
    path = Path(path).expanduser()
    sha = check_pinned(path, expected_sha256, "If you changed the list on purpose, set blocklist_sha256 to the new "
                       "hash in the guard's profile (resources/guards.yaml).")
    doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(doc, dict):
        raise ValueError(f"{path}: expected a mapping of category -> list of words or phrases.")
    terms: dict[str, tuple[str, ...]] = {}
    for cat, items in doc.items():
        if not isinstance(items, list) or not all(isinstance(t, str) for t in items):
            raise ValueError(f"{path}: category {cat!r} must be a list of strings, got {items!r}.")
        empty = [t for t in items if not normalise(t)]
        if empty:
            raise ValueError(f"{path}: category {cat!r} has terms with no letters or digits: {empty}; remove them.")
        terms[str(cat)] = tuple(dict.fromkeys(normalise(t) for t in items))
    return Blocklist(str(path), sha, terms)


class BlocklistGuard(OCRTextGuard):
    """'unsafe' when any sign holds a listed word or phrase of any category (a product's filter blocks on
    any hit, whatever the category asked about), else 'safe'. It has no probability: score None."""

    name = "ocr_blocklist"

    class Params(OCRTextGuard.Params):
        blocklist_sha256: str = Field(pattern="^[0-9a-f]{64}$", description="the list file's sha256, pinned")
        blocklist: str = ""

    def __init__(self, blocklist_sha256: str, blocklist: str = "", min_ocr_confidence: float = 0.6,
                 min_letters: int = 2) -> None:
        super().__init__(min_ocr_confidence, min_letters)
        self.blocklist = load_blocklist(blocklist or DEFAULT_LIST, str(blocklist_sha256))
        self.info = ModelInfo(model_id="rapidocr+blocklist", revision=self.blocklist.sha256[:16], device="cpu",
                              library=f"rapidocr {package_version('rapidocr')}; "
                                      f"onnxruntime {package_version('onnxruntime')}")

    def config(self) -> dict[str, Any]:
        return {"guard": self.name, "blocklist": Path(self.blocklist.path).name, "blocklist_sha256": self.blocklist.sha256,
                "n_terms": sum(len(t) for t in self.blocklist.terms.values()),
                "reader": self.reader_key({"min_ocr_confidence": self.min_ocr_confidence, "min_letters": self.min_letters})}

    def rate_signs(self, signs: Sequence[Sequence[str]], category: Category) -> list[Verdict]:
        return [self._verdict(list(texts)) for texts in signs]

    def _verdict(self, texts: list[str]) -> Verdict:
        hits = [{"sign": i, "category": cat, "term": term} for i, t in enumerate(texts) for cat, term in self.blocklist.hits(t)]
        raw: dict[str, Any] = {"guard": self.name, "signs": texts, "hits": hits, "blocklist_sha256": self.blocklist.sha256}
        if not texts:
            raw["reason"] = NO_TEXT
            return Verdict("safe", "", None, "No text found: a text filter has nothing to flag and passes the image.",
                           json.dumps(raw, sort_keys=True))
        if not hits:
            return Verdict("safe", "", None, "No listed word or phrase in the text.", json.dumps(raw, sort_keys=True))
        found = ", ".join(dict.fromkeys(f'"{h["term"]}" ({h["category"]})' for h in hits))
        return Verdict("unsafe", hits[0]["category"], None, f"Listed terms in the text: {found}.",
                       json.dumps(raw, sort_keys=True))
