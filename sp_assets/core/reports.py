"""Summaries the stages report in their materialization metadata: yields and markdown tables."""

from __future__ import annotations

from collections import Counter
from typing import Any, Iterable, Mapping, Sequence

from sp_assets.core.formatting import fmt
from sp_assets.core.guard_evaluation import SELECTED_NOTE


def table(header: Sequence[str], rows: Iterable[Sequence[Any]], align: str) -> str:
    """A markdown table; ``align`` has one letter per column, ``l`` (text) or ``r`` (numbers)."""
    rule = ["---:" if a == "r" else "---" for a in align]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(rule) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def category_yield(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Attempts, acceptances and rejection reasons of one category's verified candidates.

    Yield counts flip edits, the attempts to make a pair; null edits are controls, reported apart.
    """
    flips = [r for r in rows if r["kind"] == "flip"]
    accepted = sum(1 for r in rows if r["accepted"])
    flips_accepted = sum(1 for r in flips if r["accepted"])
    reasons = Counter(code for r in flips for code in (r["reject_reason"] or "").split(";") if code)
    return {"attempts": len(flips), "accepted": flips_accepted,
            "reviewed": sum(1 for r in rows if r.get("review_verdict")),
            "yield": round(flips_accepted / len(flips), 3) if flips else None, "reasons": dict(reasons),
            "controls": len(rows) - len(flips), "controls_accepted": accepted - flips_accepted}


def reasons_text(reasons: Mapping[str, int]) -> str:
    return ", ".join(f"{k}: {v}" for k, v in sorted(reasons.items(), key=lambda kv: -kv[1])) or "-"


def yield_table(yields: Mapping[str, Mapping[str, Any]]) -> str:
    return table(
        ["category", "attempts", "accepted", "yield", "rejection reasons", "controls accepted"],
        [(cat, y["attempts"], y["accepted"], "n/a" if y["yield"] is None else f"{y['yield']:.0%}",
          reasons_text(y["reasons"]), f"{y['controls_accepted']}/{y['controls']}") for cat, y in yields.items()],
        "lrrrlr")


def profile_yield_table(rows: Sequence[Mapping[str, Any]]) -> str:
    return table(
        ["category", "editor", "kind", "attempts", "accepted", "yield", "rejection reasons"],
        [(r["category"], r["editor_profile"], r["kind"], r["attempts"], r["accepted"], f"{r['yield']:.0%}",
          r["rejection_reasons"] or "-") for r in rows], "lllrrrl")


SELECTED_MARK = "\u2020"  # dagger: the guard selected the pairs


def guard_name(row: Mapping[str, Any]) -> str:
    """The guard's name, marked when it selected the pairs (optimistic by construction)."""
    return f"{row['guard']} {SELECTED_MARK}" if row.get("selected_pairs") else str(row["guard"])


def guard_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """Per category, guard, pair type and split: accuracies, ROC-AUC, and the look-alike false-positive rate."""
    out = table(
        ["category", "guard", "pairs", "split", "n", "acc unsafe", "acc safe", "pair acc", "ROC-AUC", "look-alikes",
         "look-alike FPR"],
        [(r["category"], guard_name(r), r["pair_type"], r["split"], r["n_pairs"], fmt(r["acc_unsafe"], 2),
          fmt(r["acc_safe"], 2), fmt(r["pair_accuracy"], 2), fmt(r["roc_auc"], 2), r.get("n_lookalikes") or 0,
          fmt(r.get("lookalike_fpr"), 2)) for r in rows], "llllrrrrrrr")
    if any(r.get("selected_pairs") for r in rows):
        out += f"\n\n{SELECTED_MARK} {SELECTED_NOTE}: not a measure of the guard's quality."
    return out + ("\n\nLook-alike FPR: share of safe look-alikes not rated safe ('invalid' counts as a false "
                  "positive); the same on both pair types' rows.")
