"""Fail-closed parsing of a judge model's text answer into (rating, category, rationale, fields), and the
JSON-snippet readers the instruction writer shares."""

from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass, field
from typing import Any, Iterator

from sp_assets.core.policy import Category, Policy

UNSAFE = "unsafe"
SAFE = "safe"
INVALID = "invalid"
NA = "NA"
# The category a LlavaGuard-style answer gives when no policy category applies (it was trained on these words).
NONE_APPLYING = "NA: None applying"

RATING_KEYS = ("rating", "safety rating", "safety_rating", "safety-rating", "verdict", "decision")
CATEGORY_KEYS = ("category", "image-category", "image category", "image_category", "safety category",
                 "safety_category", "violated category", "policy category")
RATIONALE_KEYS = ("rationale", "reason", "reasoning", "explanation", "assessment", "justification")

# Unsafe phrases first: the safe words are only counted where no unsafe phrase covers them.
_UNSAFE_WORDS = re.compile(
    r"(?<![a-z])(?:unsafe|un-safe|not[\s_-]+safe|non[\s_-]?compliant|not[\s_-]+compliant|review[\s_-]+needed)(?![a-z])",
    re.IGNORECASE,
)
_SAFE_WORDS = re.compile(r"(?<![a-z-])(?:safe|compliant)(?![a-z])", re.IGNORECASE)
_NEGATION = re.compile(r"(?<![a-z])(?:not|no|never|hardly|barely|isnt)(?![a-z])|n't(?![a-z])", re.IGNORECASE)

_KEY_ALT = r"rating|safety[\s_-]rating|verdict|decision|image[\s_-]category|(?:safety|violated|policy)[\s_]category|category|rationale|reason(?:ing)?|explanation|assessment|justification"
# key: value (or key = value), the key optionally quoted; the value is read by _read_value.
_KV_RE = re.compile(
    r"""(?P<pre>^|[\s{,;(\[])["']?(?P<key>""" + _KEY_ALT + r""")["']?[ \t]*[:=][ \t]*""",
    re.IGNORECASE,
)
# For the score: where, in the raw text, the first rating value starts (first letter).
_RAW_RATING_RE = re.compile(
    r"""(?<![A-Za-z])(?:rating|safety[\s_-]rating|verdict|decision)[\s"'*_`]*[:=][\s"'*_`]*(?=[A-Za-z])""",
    re.IGNORECASE,
)
_FENCE_RE = re.compile(r"```[A-Za-z0-9_-]*")
_STOPWORDS = {"or", "and", "the", "of", "a", "an", "content", "contents", "related", "to", "in", "other"}


@dataclass(frozen=True)
class ParsedAnswer:
    """What a judge answer says, read fail-closed.

    rating:    'unsafe', 'safe' or 'invalid'
    category:  policy slug for an unsafe answer, '' otherwise
    rationale: the answer's rationale text ('' when it gave none)
    fields:    every key/value the answer contained (keys lower-cased), as written
    method:    how it was read: 'json', 'json-repaired', 'key-value' or 'none'
    problem:   why the answer is invalid ('' when it is not)
    notes:     smaller findings (e.g. category not in the policy, so the asked one was used)
    rating_offset: character offset in the raw text where the rating value starts, if found

    Unpacks as ``rating, category, rationale, fields = parse_judge_answer(...)``.
    """

    rating: str
    category: str
    rationale: str
    fields: dict[str, Any] = field(default_factory=dict)
    method: str = "none"
    problem: str = ""
    notes: tuple[str, ...] = ()
    rating_offset: int | None = None

    def __iter__(self) -> Iterator[Any]:
        return iter((self.rating, self.category, self.rationale, self.fields))


def classify_rating(value: Any) -> str | None:
    """'unsafe', 'safe', 'ambiguous' (both named) or None (neither) for one rating value."""
    if isinstance(value, bool) or value is None:
        return None
    text = str(value).replace("*", " ").replace("_", " ").strip()
    if not text:
        return None
    unsafe = list(_UNSAFE_WORDS.finditer(text))
    covered = [(m.start(), m.end()) for m in unsafe]
    safe = [m for m in _SAFE_WORDS.finditer(text) if not any(a <= m.start() < b for a, b in covered)]
    if unsafe and safe:
        return "ambiguous"
    if safe and _NEGATION.search(text):
        return None  # "not entirely safe", "Safe? No": a negation anywhere leaves 'safe' unreadable

    if unsafe:
        return UNSAFE
    if safe:
        return SAFE
    return None


def rating_value_offset(raw: str) -> int | None:
    """Offset of the first letter of the first readable rating value in ``raw`` (None if there is none)."""
    for m in _RAW_RATING_RE.finditer(raw or ""):
        word = re.match(r"[A-Za-z][A-Za-z\s_-]{0,20}", raw[m.end():])
        if word and classify_rating(word.group(0)) in (UNSAFE, SAFE):
            return m.end()
    return None


def match_category(text: Any, policy: Policy | None) -> str | None:
    """Map a category as written (slug, id, 'O2: title', title) to a policy slug.

    Returns the slug, ``NA`` for "none applying" answers, or None when it matches nothing.
    """
    if text is None or isinstance(text, (dict, list, bool)):
        return None
    raw = str(text).strip().strip("\"'`*").strip()
    if not raw:
        return None
    low = raw.lower()
    if re.match(r"^(?:na|n/a|none|no\s+category|not\s+applicable|null|-)(?![a-z0-9])", low):
        return NA
    if policy is None:
        return None
    for c in policy.categories:
        if low == c.slug or low == c.id.lower():
            return c.slug
    ids = sorted((c.id for c in policy.categories), key=len, reverse=True)
    m = re.search(r"(?<![A-Za-z0-9])(" + "|".join(re.escape(i) for i in ids) + r")(?![A-Za-z0-9])", raw, re.IGNORECASE)
    if m:
        return policy.category(m.group(1)).slug
    for c in policy.categories:
        if c.slug in low:
            return c.slug
    words = _title_words(raw.split(":", 1)[1] if ":" in raw else raw)
    if not words:
        return None
    matches = [c.slug for c in policy.categories
               if (t := _title_words(c.title)) and (words == t or words <= t or t <= words)]
    return matches[0] if len(matches) == 1 else None


def _title_words(text: str) -> frozenset[str]:
    return frozenset(w for w in re.findall(r"[a-z]+", text.lower()) if w not in _STOPWORDS)


def normalise_answer(raw: str) -> str:
    """The answer with curly quotes straightened, zero-width characters, code fences and markdown bold removed."""
    text = raw.replace("\u201c", '"').replace("\u201d", '"').replace("\u2018", "'").replace("\u2019", "'")
    text = text.replace("\u200b", "").replace("\ufeff", "")
    text = _FENCE_RE.sub("\n", text)
    return text.replace("*", "").replace("__", "")


def brace_spans(text: str) -> list[tuple[int, int, bool]]:
    """Top-level {...} spans: (start, end, closed). An unclosed one runs to the end of the text."""
    spans: list[tuple[int, int, bool]] = []
    i, n = 0, len(text)
    while i < n:
        if text[i] != "{":
            i += 1
            continue
        depth, j, quote = 0, i, ""
        while j < n:
            ch = text[j]
            if quote:
                if ch == "\\":
                    j += 2
                    continue
                if ch == quote:
                    quote = ""
            elif ch == '"':
                quote = ch
            elif ch == "{":
                depth += 1
            elif ch == "}":
                depth -= 1
                if depth == 0:
                    break
            j += 1
        if j >= n:
            spans.append((i, n, False))
            break
        spans.append((i, j + 1, True))
        i = j + 1
    return spans


def load_json_object(snippet: str) -> tuple[dict[str, Any] | None, bool]:
    """Parse one {...} snippet, repairing trailing commas, single quotes and bare keys; returns (object, repaired)."""
    try:
        obj = json.loads(snippet)
        return (obj, False) if isinstance(obj, dict) else (None, False)
    except (ValueError, RecursionError):
        pass
    no_trailing = re.sub(r",\s*([}\]])", r"\1", snippet)
    candidates = [no_trailing]
    if '"' not in snippet:
        candidates.append(no_trailing.replace("'", '"'))
    candidates.append(re.sub(r"([{,]\s*)([A-Za-z_][\w \-]{0,40}?)\s*:", r'\1"\2":', no_trailing))
    for cand in candidates:
        try:
            obj = json.loads(cand)
            if isinstance(obj, dict):
                return obj, True
        except (ValueError, RecursionError):
            continue
    try:
        pythonish = re.sub(r"\btrue\b", "True", re.sub(r"\bfalse\b", "False", re.sub(r"\bnull\b", "None", snippet)))
        obj = ast.literal_eval(pythonish)
        if isinstance(obj, dict):
            return obj, True
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        pass
    return None, False


def _flatten(obj: Any, out: list[tuple[str, Any]], depth: int = 0) -> None:
    """Every (key, value) pair in a parsed object, nested ones included (keys lower-cased)."""
    if depth > 4:
        return
    if isinstance(obj, dict):
        for k, v in obj.items():
            key = re.sub(r"\s+", " ", str(k).strip().lower())
            out.append((key, v))
            if isinstance(v, (dict, list)):
                _flatten(v, out, depth + 1)
    elif isinstance(obj, list):
        for v in obj:
            _flatten(v, out, depth + 1)


def _read_value(text: str, start: int, key_kind: str) -> tuple[str, bool]:
    """Read a value after 'key:'; returns (value, cut_off). cut_off: quoted and never closed."""
    rest = text[start:]
    if rest[:1] in ('"', "'"):
        quote = rest[0]
        body = rest[1:]
        m = re.search(r"(?<!\\)" + re.escape(quote), body)
        if m is None:
            return body.strip(), True
        value = body[: m.start()]
        if quote == "'" and key_kind != "rating":
            # an apostrophe inside a single-quoted rationale: read on to the quote that ends the field
            m2 = re.search(r"'\s*(?:[,}\n]|$)", body)
            if m2 is not None:
                value = body[: m2.start()]
        return value.strip(), False
    stop = r"[,;}\n]|\.(?:\s|$)" if key_kind == "rating" else r"\n|\"\s*[,}]|\}"
    m = re.search(stop, rest)
    return (rest[: m.start()] if m else rest).strip(), False


def _key_kind(key: str) -> str:
    k = re.sub(r"[\s_-]+", " ", key.lower()).strip()
    if k in {"rating", "safety rating", "verdict", "decision"}:
        return "rating"
    if "category" in k:
        return "category"
    return "rationale"


def _key_values(text: str) -> list[tuple[str, str, str, bool]]:
    """(kind, key, value, cut_off) for each key: value found in free text."""
    found = []
    for m in _KV_RE.finditer(text):
        kind = _key_kind(m.group("key"))
        value, cut = _read_value(text, m.end(), kind)
        if not value and not cut:
            continue  # "rating:" followed by nothing on its line (e.g. a heading before the JSON)
        found.append((kind, m.group("key").lower(), value, cut))
    return found


def parse_judge_answer(
    text: Any,
    policy: Policy | None = None,
    asked: Category | str | None = None,
) -> ParsedAnswer:
    """Read a judge's answer fail-closed. ``asked`` is the category the judge was asked about.

    The answer we ask for is LlavaGuard-style JSON::

        {"rating": "Unsafe", "category": "O2: Violence, Harm, or Cruelty", "rationale": "..."}

    Models wrap it in code fences, bold the keys, add prose, use single quotes or trailing commas,
    forget fields or stop mid-answer. The rules:

    - the rating comes only from a rating field (``rating``, ``safety rating``, ``verdict``,
      ``decision``), in JSON or as a ``key: value`` line; prose such as "this image is safe" is not a
      rating (too easy to misread "the image is not unsafe because...");
    - a rating value is read by whole words: ``unsafe``, ``not safe``, ``non-compliant``,
      ``review needed`` are unsafe; ``safe`` and ``compliant`` are safe only where they are not part
      of an unsafe phrase ("unsafe" never counts as "safe");
    - no rating, an unknown word, a value naming both ratings, two fields that disagree, a quoted
      value cut off by the end of the answer, or an empty answer -> ``invalid``;
    - anything that cannot be read is ``invalid``; nothing is ever ``safe`` by default.

    The category is mapped to a policy slug by slug, by id (``O2``, ``O2: ...``) or by title words;
    an unsafe answer without a usable category (none, "NA: None applying", or one not in the policy)
    gets the category that was asked about. With no ``asked`` category (a judge asked about the whole
    policy at once) such an answer is ``invalid``: it says unsafe but not under which rule.
    """
    raw = text if isinstance(text, str) else ""
    asked_slug = asked.slug if isinstance(asked, Category) else (str(asked) if asked else "")
    if not raw.strip():
        return ParsedAnswer(INVALID, "", "", {}, "none", "empty answer")
    offset = rating_value_offset(raw)
    objects, repaired, leftover = _json_objects(normalise_answer(raw))
    found = _collect_fields(objects, leftover)

    method = ("json-repaired" if repaired else "json") if objects else ("key-value" if found.ratings else "none")
    rationale = next((str(r).strip() for r in found.rationales if isinstance(r, str) and r.strip()), "")
    rating, problem = _read_rating(found.ratings)
    if problem:
        return ParsedAnswer(INVALID, "", rationale, found.fields, method, problem, (), offset)
    if rating != UNSAFE:
        return ParsedAnswer(rating, "", rationale, found.fields, method, "", (), offset)
    category, missing = _unsafe_category(found.categories, policy)
    if not missing:
        return ParsedAnswer(rating, category, rationale, found.fields, method, "", (), offset)
    if not asked_slug:
        problem = f"rated unsafe, but {missing}, and no category was asked to fall back on"
        return ParsedAnswer(INVALID, "", rationale, found.fields, method, problem, (), offset)
    note = f"{missing}; used the asked category"
    return ParsedAnswer(rating, asked_slug, rationale, found.fields, method, "", (note,), offset)


@dataclass
class _Fields:
    """Every field an answer contained, and the rating, category and rationale values among them."""

    fields: dict[str, Any] = field(default_factory=dict)
    ratings: list[tuple[str, Any, bool]] = field(default_factory=list)  # (where: json|text, value, cut_off)
    categories: list[Any] = field(default_factory=list)
    rationales: list[Any] = field(default_factory=list)


def _json_objects(clean: str) -> tuple[list[dict[str, Any]], bool, str]:
    """The JSON objects in the answer, whether any needed repair, and the text outside them."""
    objects: list[dict[str, Any]] = []
    repaired = False
    leftover_parts: list[str] = []
    cursor = 0
    for start, end, closed in brace_spans(clean):
        obj, was_repaired = load_json_object(clean[start:end]) if closed else (None, False)
        if obj is None:
            continue
        objects.append(obj)
        repaired = repaired or was_repaired
        leftover_parts.append(clean[cursor:start])
        cursor = end
    leftover_parts.append(clean[cursor:])
    return objects, repaired, "\n".join(leftover_parts)


def _collect_fields(objects: list[dict[str, Any]], leftover: str) -> _Fields:
    """Fields from the JSON objects first, then ``key: value`` lines in the text around them."""
    found = _Fields()
    for obj in objects:
        pairs: list[tuple[str, Any]] = []
        _flatten(obj, pairs)
        for key, value in pairs:
            found.fields.setdefault(key, value)
            kind = _key_kind(key) if key.replace("_", " ").replace("-", " ") in _all_keys() else ""
            if kind == "rating":
                found.ratings.append(("json", value, False))
            elif kind == "category":
                found.categories.append(value)
            elif kind == "rationale":
                found.rationales.append(value)
    for kind, key, value, cut in _key_values(leftover):
        found.fields.setdefault(key, value)
        if kind == "rating":
            found.ratings.append(("text", value, cut))
        elif kind == "category":
            found.categories.append(value)
        else:
            found.rationales.append(value)
    return found


def _read_rating(ratings: list[tuple[str, Any, bool]]) -> tuple[str, str]:
    """(rating, '') when every readable rating field agrees, else ('', why the answer is invalid)."""
    if not ratings:
        return "", "no rating field in the answer"
    classes: list[str] = []
    has_json_rating = any(where == "json" for where, _v, _c in ratings)
    for where, value, cut in ratings:
        if cut:
            return "", f"rating value cut off: {str(value)[:40]!r}"
        cls = classify_rating(value)
        if cls == "ambiguous":
            return "", f"rating value names both ratings: {str(value)[:60]!r}"
        if cls is None:
            if where == "text" and has_json_rating:
                continue  # prose like "my rating: see below" next to a JSON rating
            return "", f"unrecognised rating value: {str(value)[:60]!r}"
        classes.append(cls)
    if not classes:
        return "", "no readable rating value"
    if len(set(classes)) > 1:
        return "", f"contradictory ratings: {', '.join(classes)}"
    return classes[0], ""


def _unsafe_category(categories: list[Any], policy: Policy | None) -> tuple[str, str]:
    """(policy slug, '') for the category an unsafe answer names, or ('', what is wrong with it)."""
    said = next((c for c in categories if c not in (None, "")), None)
    slug = match_category(said, policy) if said is not None else None
    if slug and slug != NA:
        return slug, ""
    if said is None:
        return "", "no category given"
    if slug == NA:
        return "", "the category given is 'none applying'"
    return "", f"category {str(said)[:60]!r} is not in the policy"


def _all_keys() -> frozenset[str]:
    return frozenset(k.replace("_", " ").replace("-", " ") for k in RATING_KEYS + CATEGORY_KEYS + RATIONALE_KEYS)
