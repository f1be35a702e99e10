"""Review rules: which human decision counts for a candidate, and how it overrides the automatic verdict.

Which decision counts: per candidate, the decision with the latest ``decided_at`` wins, whoever made
it. On a tie, ``reject`` wins over ``accept`` (the conservative choice), then the reviewer name
(alphabetical) decides, so the rule is deterministic.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Iterable, Mapping, Protocol, TypeVar

from sp_assets.core.verification import quality_score

# Verification results a human accept cannot override: the pair does not physically exist.
HARD_REASONS = frozenset({"edit_failed", "size_mismatch"})


class ReviewDecision(Protocol):
    """What the rules read of a decision (sp_assets.review.Decision has these fields)."""

    @property
    def candidate_id(self) -> str: ...
    @property
    def reviewer(self) -> str: ...
    @property
    def decided_at(self) -> dt.datetime: ...  # naive UTC
    @property
    def verdict(self) -> str: ...  # 'accept' | 'reject'


D = TypeVar("D", bound=ReviewDecision)


def precedence(decision: ReviewDecision) -> tuple[dt.timedelta, bool, str]:
    """Sort key under which the decision that counts comes first: latest, then 'reject', then reviewer A-Z."""
    return dt.datetime.max - decision.decided_at, decision.verdict != "reject", decision.reviewer


def pick_effective(decisions: Iterable[D]) -> dict[str, D]:
    """candidate_id -> the decision that counts among ``decisions`` (see the module docstring)."""
    best: dict[str, D] = {}
    for decision in decisions:
        current = best.get(decision.candidate_id)
        if current is None or precedence(decision) < precedence(current):
            best[decision.candidate_id] = decision
    return best


def apply_review(row: Mapping[str, Any], decision: ReviewDecision | None) -> dict[str, Any]:
    """A verified_pairs row with a human decision applied (a copy; ``row`` unchanged).

    The verdict means what the automatic one means for the row's kind: for a flip, 'accept' = the
    edit removes the violation and keeps the rest; for a control (null) edit, 'accept' = the edit
    keeps the violation and changes nothing else that matters.

    'reject' rejects with reason ``human_rejected`` added to the automatic reasons. 'accept'
    accepts and clears the automatic reasons, except a pair that does not exist as a pair
    (``edit_failed``, ``size_mismatch``: see HARD_REASONS), which stays rejected with
    ``human_accept_ignored`` added. An accepted row gets a quality_score if it had none.
    """
    out = dict(row)
    if decision is None:
        return out
    reasons = [c for c in (row.get("reject_reason") or "").split(";") if c]
    if decision.verdict == "reject":
        out["accepted"] = False
        out["reject_reason"] = ";".join(reasons + ["human_rejected"])
        out["quality_score"] = None
    elif HARD_REASONS.intersection(reasons):
        out["accepted"] = False
        out["reject_reason"] = ";".join(reasons + ["human_accept_ignored"])
    else:
        out["accepted"] = True
        out["reject_reason"] = None
        if out.get("quality_score") is None:
            out["quality_score"] = quality_score(row.get("edit_score"), row.get("ssim_outside") or 0.0,
                                                 row.get("embedding_cosine") or 0.0, row.get("kind") or "flip")
    return out
