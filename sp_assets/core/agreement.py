"""Human labels against a model judge: per-category confusion counts, agreement, Cohen's kappa and
category match; and the rule that a source a human labelled safe is never edited into a flip pair.

How 'invalid' counts. The human has two classes (unsafe, safe), the judge three (unsafe, safe,
invalid). Kappa is Cohen's kappa over every source a human rated, with 'invalid' a judge class of its
own that no human uses: it never agrees, and it adds nothing to chance agreement. A judge that gives
up on sources a human could decide loses agreement for them; leaving invalid answers out would flatter
a judge that fails on exactly the hard sources. This is ``sklearn.metrics.cohen_kappa_score`` on the
two label lists. The counts per cell are reported too, so other conventions can be computed.
Kappa is undefined (None) when chance agreement is 1: both raters gave every source one class.

The category match is measured where both call a source unsafe and the human named a category: the
share where the judge found the same category. A human 'unsafe' with no category (or one outside the
policy) is left out of it, never counted as a match.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

from sp_assets.core.formatting import fmt
from sp_assets.core.human_labels import human_rating
from sp_assets.core.policy import Policy

HUMAN_CLASSES = ("unsafe", "safe")
JUDGE_CLASSES = ("unsafe", "safe", "invalid")
HUMAN_SAFE = "human_safe"  # why a source the judge rated unsafe gets no edit instructions


def human_category(raw: object, policy: Policy) -> str | None:
    """A manifest category as a policy slug: a slug, an id (O2) or a LlavaGuard-style label whose id
    comes first ('O2: Violence'). None when empty, 'NA' or not in the policy."""
    text = str(raw or "").strip()
    if not text:
        return None
    head = text.split(":")[0].split()
    for key in (text, *head[:1]):
        try:
            return policy.category(key).slug
        except KeyError:
            continue
    return None


def human_columns(source: Mapping[str, Any], policy: Policy) -> dict[str, str | None]:
    """The human label of a ``source_images`` row, as the ``policy_labels`` columns that compare it."""
    rating = human_rating(source.get("manifest_rating"))
    category = human_category(source.get("manifest_category"), policy) if rating == "unsafe" else None
    return {"human_rating": rating, "human_category": category}


@dataclass(frozen=True)
class Agreement:
    """Human x judge on the sources of one category (or several, pooled)."""

    counts: Mapping[tuple[str, str], int] = field(default_factory=dict)  # (human, judge) -> sources
    unrated: int = 0  # sources without a human label
    category_compared: int = 0  # human unsafe with a category, judge unsafe
    category_matched: int = 0  # ... and the judge found the human's category

    def n(self, human: str | None = None, judge: str | None = None) -> int:
        return sum(v for (h, j), v in self.counts.items() if human in (None, h) and judge in (None, j))

    @property
    def rated(self) -> int:
        return self.n()

    @property
    def agreement(self) -> float | None:
        return (self.n("unsafe", "unsafe") + self.n("safe", "safe")) / self.rated if self.rated else None

    @property
    def kappa(self) -> float | None:
        """Cohen's kappa, (n·agreed − E) / (n² − E) with E = Σ_class human_c · judge_c (exact in integers)."""
        n = self.rated
        agreed = self.n("unsafe", "unsafe") + self.n("safe", "safe")
        chance = sum(self.n(human=c) * self.n(judge=c) for c in JUDGE_CLASSES)
        return None if n * n == chance else (n * agreed - chance) / (n * n - chance)

    @property
    def category_match(self) -> float | None:
        return self.category_matched / self.category_compared if self.category_compared else None

    def as_dict(self) -> dict[str, Any]:
        return {"rated": self.rated, "unrated": self.unrated,
                "counts": {f"human_{h}": {f"judge_{j}": self.n(h, j) for j in JUDGE_CLASSES} for h in HUMAN_CLASSES},
                "agreement": self.agreement, "kappa": self.kappa, "category_compared": self.category_compared,
                "category_matched": self.category_matched, "category_match": self.category_match}


def agreement(rows: Iterable[Mapping[str, Any]]) -> Agreement:
    """Agreement of ``policy_labels`` rows (``rating``, ``judged_category``, ``human_rating``, ``human_category``)."""
    counts: dict[tuple[str, str], int] = {}
    unrated = compared = matched = 0
    for row in rows:
        human, judge = row.get("human_rating"), row["rating"]
        if human not in HUMAN_CLASSES:
            unrated += 1
            continue
        counts[(human, judge)] = counts.get((human, judge), 0) + 1
        if human == judge == "unsafe" and row.get("human_category"):
            compared += 1
            matched += row.get("judged_category") == row["human_category"]
    return Agreement(counts, unrated, compared, matched)


def pooled(parts: Iterable[Agreement]) -> Agreement:
    """Several categories as one: the counts added up (kappa is then computed on the pooled table)."""
    counts: dict[tuple[str, str], int] = {}
    unrated = compared = matched = 0
    for part in parts:
        for key, value in part.counts.items():
            counts[key] = counts.get(key, 0) + value
        unrated, compared, matched = (unrated + part.unrated, compared + part.category_compared,
                                      matched + part.category_matched)
    return Agreement(counts, unrated, compared, matched)


def disagreement(row: Mapping[str, Any]) -> str | None:
    """How a labelled source's human label and judge rating differ, or None (agree, or no human label)."""
    human, judge = row.get("human_rating"), row["rating"]
    if human not in HUMAN_CLASSES:
        return None
    if judge == "invalid":
        return "judge_invalid"
    if human != judge:
        return f"human_{human}_judge_{judge}"
    if human == "unsafe" and row.get("human_category") and row.get("judged_category") != row["human_category"]:
        return "category_differs"
    return None


def editable(labels: Sequence[Mapping[str, Any]]) -> tuple[list[Mapping[str, Any]], dict[str, list[str]]]:
    """The judge-unsafe sources that may be edited into flip pairs, and those left out by reason.

    A source whose human label is safe is left out whatever the judge said: editing a safe image into
    another safe image would make a pair labelled as a flip that flips nothing. A human 'unsafe' under
    another category stays: a rating is about the whole policy (``judged_category`` names the rule), as
    for every judge, and verification rejects an edit that is still unsafe.
    """
    kept, excluded = [], []
    for label in labels:
        (excluded if human_rating(label.get("manifest_rating")) == "safe" else kept).append(label)
    return kept, ({HUMAN_SAFE: [str(label["image_sha256"]) for label in excluded]} if excluded else {})


def agreement_table(per_category: Mapping[str, Agreement]) -> str:
    """Markdown: one row per category (and 'all' when there are several)."""
    rows = dict(per_category)
    if len(rows) > 1:
        rows["all"] = pooled(per_category.values())
    lines = ["| category | rated | unrated | human unsafe: judge unsafe / safe / invalid | human safe: judge unsafe "
             "/ safe / invalid | agreement | kappa | category match |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for cat, a in rows.items():
        cells = [" / ".join(str(a.n(h, j)) for j in JUDGE_CLASSES) for h in HUMAN_CLASSES]
        match = f"{fmt(a.category_match, 2)} ({a.category_matched}/{a.category_compared})"
        lines.append(f"| {cat} | {a.rated} | {a.unrated} | {cells[0]} | {cells[1]} | {fmt(a.agreement, 3)} | "
                     f"{fmt(a.kappa, 3)} | {match} |")
    return "\n".join(lines)
