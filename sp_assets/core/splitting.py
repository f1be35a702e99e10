"""The benchmark of one category: which candidate each source contributes, its split, and the look-alikes.

Splits are grouped by photograph: a photograph's split is a seeded hash of its ``photo_id`` cut by the
split weights, so it depends on nothing else (not the category, not the other sources), and
categories materialized in separate runs agree. Every source and look-alike on that photograph goes
with it. Within a source, the candidate is chosen so that the replacement texts of the safe halves
are spread as evenly as the candidates allow (``choose_flips``): a guard must not learn one phrase.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import Counter
from typing import Any, Iterable, Mapping, Sequence

from sp_assets.core.hashing import sha256_json
from sp_assets.core.human_labels import human_rating

SPLITS = ("train", "validation", "test")
SPLIT_METHOD = "photo-hash-v1"  # part of the split config hash: a new method gives a new hash
Row = dict[str, Any]


def split_counts(n: int, fractions: dict[str, float]) -> dict[str, int]:
    """Exact counts per split for n items (largest remainder; ties go to train, then validation)."""
    total = _total(fractions)
    raw = {k: n * v / total for k, v in fractions.items()}
    counts = {k: math.floor(v) for k, v in raw.items()}
    left = n - sum(counts.values())
    for k in sorted(raw, key=lambda k: (-(raw[k] - counts[k]), SPLITS.index(k)))[:left]:
        counts[k] += 1
    return counts


def assign_splits(sources: list[str], seed: int, fractions: dict[str, float]) -> dict[str, str]:
    """source hash -> split name, exact proportions over one list (the split before photographs)."""
    order = sorted(sources, key=lambda s: hashlib.sha256(f"{seed}:{s}".encode()).hexdigest())
    counts = split_counts(len(order), fractions)
    out: dict[str, str] = {}
    i = 0
    for name in SPLITS:
        for sha in order[i:i + counts[name]]:
            out[sha] = name
        i += counts[name]
    return out


def _total(fractions: Mapping[str, float]) -> float:
    total = sum(fractions.values())
    if total <= 0 or any(v < 0 for v in fractions.values()):
        raise ValueError(f"split fractions must be >= 0 and sum to more than 0, got {dict(fractions)}")
    return total


# --- splits by photograph ---------------------------------------------------------------------


def photo_key(row: Mapping[str, Any]) -> str:
    """The photograph a row shows: its ``photo_id``, else (older rows) the image itself."""
    return row.get("photo_id") or row["image_sha256"]


def split_of_photo(photo_id: str, seed: int, fractions: Mapping[str, float]) -> str:
    """The split of a photograph: a point in [0, 1) hashed from (seed, photo_id), cut by the split weights."""
    total = _total(fractions)
    digest = hashlib.sha256(f"{seed}:photo:{photo_id}".encode("utf-8")).digest()
    point = int.from_bytes(digest[:8], "big") / 2 ** 64
    edge = 0.0
    for name in SPLITS:
        edge += fractions.get(name, 0.0) / total
        if point < edge:
            return name
    return [name for name in SPLITS if fractions.get(name, 0.0) > 0][-1]  # rounding at the top edge


def rows_in_two_splits(rows: Iterable[Mapping[str, Any]], key: str) -> list[str]:
    """Values of ``key`` (image_sha256, photo_id) that appear in more than one split (must be none)."""
    seen: dict[str, str] = {}
    bad: list[str] = []
    for r in rows:
        value = photo_key(r) if key == "photo_id" else r[key]
        if seen.setdefault(value, r["split"]) != r["split"] and value not in bad:
            bad.append(value)
    return bad


# --- spreading the replacement texts ----------------------------------------------------------


def phrase_of(candidate: Mapping[str, Any]) -> str:
    """What the safe half says instead of the violation: the writer's replacement text when it gave one
    (``target_json``), else the instruction itself (a prose instruction is its own phrase)."""
    replacement = replacement_of(candidate)
    return f"replacement:{replacement}" if replacement is not None else f"instruction:{candidate.get('instruction')}"


def replacement_of(candidate: Mapping[str, Any]) -> str | None:
    if candidate.get("replacement") is not None:
        return candidate["replacement"]
    try:
        target = json.loads(candidate.get("target_json") or "{}")
    except ValueError:
        return None
    value = target.get("replacement") if isinstance(target, dict) else None
    return str(value) if value else None


def seeded_order(keys: Iterable[str], seed: int) -> list[str]:
    return sorted(set(keys), key=lambda k: (hashlib.sha256(f"{seed}:{k}".encode("utf-8")).hexdigest(), k))


def _preference(candidate: Mapping[str, Any]) -> tuple[float, str]:
    quality = candidate.get("quality_score")
    return (-(quality if quality is not None else -math.inf), str(candidate["candidate_id"]))


class _Spread:
    """One phrase per source with no phrase used more than ``cap`` times, found by augmenting paths
    (a capacitated bipartite matching), so it succeeds whenever any such choice exists."""

    def __init__(self, options: Mapping[str, list[Row]], order: Sequence[str], cap: int):
        self.options, self.order, self.cap = options, order, cap
        self.rank = {s: i for i, s in enumerate(order)}
        self.chosen: dict[str, Row] = {}
        self.holders: dict[str, list[str]] = {}  # phrase -> sources that use it

    def load(self, phrase: str) -> int:
        return len(self.holders.get(phrase, ()))

    def place(self, source: str, candidate: Row) -> None:
        old = self.chosen.get(source)
        if old is not None:
            self.holders[phrase_of(old)].remove(source)
        self.chosen[source] = candidate
        holders = self.holders.setdefault(phrase_of(candidate), [])
        holders.append(source)
        holders.sort(key=self.rank.__getitem__)

    def add(self, source: str) -> bool:
        """Give ``source`` its least-used phrase (ties: best quality, then candidate id); when every
        phrase it has is at the cap, move other sources along a shortest chain to free one."""
        ranked = sorted(self.options[source], key=lambda c: (self.load(phrase_of(c)), _preference(c)))
        if self.load(phrase_of(ranked[0])) < self.cap:
            self.place(source, ranked[0])
            return True
        parent: dict[str, tuple[str, Row]] = {}
        queue: list[str] = []
        for c in ranked:
            if phrase_of(c) not in parent:
                parent[phrase_of(c)] = (source, c)
                queue.append(phrase_of(c))
        for phrase in queue:  # grows while it is read: a breadth-first search over phrases
            for holder in list(self.holders.get(phrase, ())):
                for c in sorted(self.options[holder], key=_preference):
                    nxt = phrase_of(c)
                    if nxt in parent:
                        continue
                    parent[nxt] = (holder, c)
                    if self.load(nxt) < self.cap:
                        self._shift(parent, nxt)
                        return True
                    queue.append(nxt)
        return False

    def _shift(self, parent: Mapping[str, tuple[str, Row]], free: str) -> None:
        """Walk the chain back from the phrase with room: each source on it moves one step."""
        phrase = free
        while True:
            source, candidate = parent[phrase]
            old = self.chosen.get(source)
            self.place(source, candidate)
            if old is None:
                return
            phrase = phrase_of(old)


def choose_flips(flips: Sequence[Row], seed: int) -> dict[str, Row]:
    """source -> the accepted flip candidate it contributes.

    Sources are taken in a seeded hash order; each prefers the phrase used least so far in the
    category, ties broken by quality_score, then candidate id. The cap on any phrase's uses is the
    smallest one the candidates allow (tried upwards from an even spread), so one source's best edit
    gives way to an equally valid one when that keeps a phrase from dominating the category.
    """
    options: dict[str, list[Row]] = {}
    for row in flips:
        options.setdefault(row["image_sha256"], []).append(row)
    if not options:
        return {}
    order = seeded_order(options, seed)
    phrases = {phrase_of(c) for cs in options.values() for c in cs}
    cap = max(1, math.ceil(len(order) / len(phrases)))
    while True:
        spread = _Spread(options, order, cap)
        if all(spread.add(source) for source in order):
            return spread.chosen
        cap += 1


def phrase_shares(rows: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """category -> pairs, distinct replacement texts, the most common one and its share of the pairs."""
    out: dict[str, dict[str, Any]] = {}
    for category in sorted({r["category"] for r in rows}):
        pairs = [r for r in rows if r["category"] == category]
        texts = Counter(r.get("replacement") for r in pairs if r.get("replacement"))
        top, n_top = min(texts.items(), key=lambda kv: (-kv[1], kv[0])) if texts else (None, 0)
        out[category] = {"pairs": len(pairs), "replacements": len(texts), "top_replacement": top,
                         "top_count": n_top, "top_share": n_top / len(pairs) if pairs else 0.0}
    return out


# --- benchmark rows ---------------------------------------------------------------------------


def benchmark_rows(base: dict, flips: list[dict], controls: list[dict], seed: int, fractions: dict[str, float],
                   split_sha256: str) -> list[dict]:
    """One benchmark pair per source: its flip (``choose_flips``), the best accepted control of the same
    source and editor, and its photograph's split. ``controls`` come best first."""
    chosen = choose_flips(flips, seed)
    n_candidates = Counter(row["image_sha256"] for row in flips)
    control_of: dict[tuple[str, str], dict] = {}
    for row in controls:
        control_of.setdefault((row["image_sha256"], row["editor_profile"]), row)
    rows = []
    for sha, row in sorted(chosen.items()):
        control = control_of.get((sha, row["editor_profile"])) or {}
        rows.append({
            **base, "pair_id": sha256_json([sha, row["edited_sha256"]]), "image_sha256": sha,
            "split": split_of_photo(photo_key(row), seed, fractions), "photo_id": photo_key(row),
            "unsafe_path": row["unsafe_path"], "candidate_id": row["candidate_id"], "safe_sha256": row["edited_sha256"],
            "safe_path": row["edited_path"], "instruction": row["instruction"], "replacement": replacement_of(row),
            "judge_profile": row["judge_profile"], "writer_profile": row["writer_profile"],
            "editor_profile": row["editor_profile"], "quality_score": row["quality_score"],
            "n_accepted_candidates": n_candidates[sha], "split_config_sha256": split_sha256,
            "control_candidate_id": control.get("candidate_id"), "control_sha256": control.get("edited_sha256"),
            "control_path": control.get("edited_path"),
        })
    return rows


def _judge_row(labels: Sequence[Mapping[str, Any]], judge_profile: str | None) -> Mapping[str, Any]:
    """The rating shown for a source: the run's judge when it rated it, else the first profile by name."""
    rated = sorted((r for r in labels if r.get("judge_profile")), key=lambda r: r["judge_profile"])
    return next((r for r in rated if r["judge_profile"] == judge_profile), rated[0] if rated else {})


def lookalike_rows(base: dict, sources: Sequence[Mapping[str, Any]], pair_sources: Iterable[str],
                   judge_profile: str | None, seed: int, fractions: dict[str, float], split_sha256: str) -> list[dict]:
    """The category's look-alikes: sources whose reference label is safe, and that are not in a pair.

    ``sources``: one row per (source, judge profile that rated it) with ``manifest_rating``,
    ``judge_profile`` and ``rating`` (None where no judge rated it). The reference label is the human
    one (``human_rating`` of the manifest) when there is one, else the judge's rating when it is safe.
    """
    by_source: dict[str, list[Mapping[str, Any]]] = {}
    for r in sources:
        by_source.setdefault(r["image_sha256"], []).append(r)
    skip = set(pair_sources)
    rows = []
    for sha, labels in sorted(by_source.items()):
        human, judged = human_rating(labels[0].get("manifest_rating")), _judge_row(labels, judge_profile)
        if sha in skip or human == "unsafe" or (human is None and judged.get("rating") != "safe"):
            continue
        photo = photo_key(labels[0])
        rows.append({
            **base, "lookalike_id": sha256_json([base["category"], sha]), "image_sha256": sha,
            "image_path": labels[0]["image_path"], "photo_id": photo, "split": split_of_photo(photo, seed, fractions),
            "label": "safe", "label_source": "human" if human == "safe" else "judge",
            "judge_profile": judged.get("judge_profile"), "judge_rating": judged.get("rating"),
            "split_config_sha256": split_sha256,
        })
    return rows


def split_counts_of(rows: list[dict], lookalikes: Sequence[Mapping[str, Any]] = ()) -> dict[str, int]:
    """Pairs per split, how many carry a control, and look-alikes per split."""
    out = {name: sum(1 for r in rows if r["split"] == name) for name in SPLITS}
    out["controlled"] = sum(1 for r in rows if r["control_sha256"])
    out.update({f"lookalikes_{name}": sum(1 for r in lookalikes if r["split"] == name) for name in SPLITS})
    return out


def photos_per_split(rows: Iterable[Mapping[str, Any]], fractions: Mapping[str, float]) -> dict[str, dict[str, int]]:
    """Distinct photographs per split, against the count an exact cut by the fractions would give."""
    split_of: dict[str, str] = {photo_key(r): r["split"] for r in rows}
    actual = Counter(split_of.values())
    target = split_counts(len(split_of), dict(fractions))
    return {name: {"photos": actual.get(name, 0), "exact_cut": target.get(name, 0)} for name in SPLITS}
