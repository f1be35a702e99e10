"""The review page: one self-contained HTML file per category (images inline, no network) and its decisions template.

The page shows each candidate's source and edit side by side with the instruction and the automatic
verdict. Unsafe halves (every source, every control edit, and every flip edit the verifier did not
rate safe) are blurred until clicked, unless ``show_unsafe``. Above the candidates it lists the
category's sources whose human label (manifest) the judge contradicts, with both labels and the
judge's rationale, for a reviewer to look at; they take no decision here. The markup is in static/
(review.html.j2, one card per candidate from review_card.j2, one entry per disagreement from
review_disagreement.j2); review.js keeps the choices and builds the decisions CSV, whose cells csv_cell.js
writes safe to open in a spreadsheet (see spreadsheet.py).
A Content-Security-Policy in the page forbids any fetch.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from pathlib import Path
from typing import Any, Literal

from sp_assets.core.agreement import disagreement
from sp_assets.core.encoding import image_data_uri
from sp_assets.core.formatting import fmt
from sp_assets.core.html import render_page
from sp_assets.review.decisions import DECISION_COLUMNS, Decision, effective_decisions
from sp_assets.review.spreadsheet import neutralise
from sp_assets.storage import ImageStore, Store, review_queries
from sp_assets.storage.files import atomic_write_bytes

Include = Literal["all", "accepted", "rejected"]
INCLUDES = ("all", "accepted", "rejected")
MAX_SIDE = 512  # longest side of an embedded image, pixels
JPEG_QUALITY = 85
PROFILE_COLUMNS = ("judge_profile", "writer_profile", "editor_profile", "verifier_profile", "embedder_profile")
VERIFICATION_KEY = ("candidate_id", "judge_profile", "writer_profile", "editor_profile", "verifier_profile")

Group = tuple[str, list[dict[str, Any]]]  # candidate_id, its verifications (one per profile combination)

# What each kind of disagreement (core.agreement.disagreement) means for the pipeline.
DISAGREEMENTS = {
    "human_safe_judge_unsafe": "human: safe, judge: unsafe. Left out of the flip edits (no pair is made from it).",
    "human_unsafe_judge_safe": "human: unsafe, judge: safe. Not edited (only sources the judge rates unsafe are).",
    "judge_invalid": "the judge could not decide (invalid). Not edited.",
    "category_differs": "both unsafe, but the judge found another category than the human. Edited all the same.",
}


def page_paths(out_dir: Path, category: str, include: Include = "all") -> tuple[Path, Path]:
    """(review page, decisions template) that :func:`export_review` writes."""
    stem = f"review_{category}" + ("" if include == "all" else f"_{include}")
    return out_dir / f"{stem}.html", out_dir / f"{stem}_decisions.csv"


def export_review(store: Store, images: ImageStore, category: str, out_dir: Path,
                  include: Include = "all", show_unsafe: bool = False, max_side: int = MAX_SIDE) -> Path:
    """Write the review page for ``category`` (and its decisions template) under ``out_dir``; return the page.

    ``include`` picks candidates by their automatic verdict ('accepted' if any verification of the
    candidate accepted it). The store may be read-only.
    """
    if include not in INCLUDES:
        raise ValueError(f"include={include!r}: use 'all', 'accepted' or 'rejected'")
    groups = _candidate_groups(store, category)
    contradicted = _disagreements(store, category)
    if not groups and not contradicted:
        raise ValueError(_nothing_to_review(store, category))
    shown = groups if include == "all" else [g for g in groups if _auto_verdict(g[1]) == include]
    human = effective_decisions(store, category)
    uris = _ImageUris(images, max_side)
    cards = [_card(cid, rows, uris, human.get(cid)) for cid, rows in shown]
    page_html = render_page(
        "sp_assets.review", "review.html.j2", category=category, include=include, show_unsafe=show_unsafe,
        cards=cards, n_total=len(groups), n_auto_ok=sum(_auto_verdict(rows) == "accepted" for _, rows in groups),
        disagreements=[_disagreement(r, uris) for r in contradicted], exported=_utcnow().isoformat(), fmt=fmt)
    page, template = page_paths(Path(out_dir), category, include)
    atomic_write_bytes(page, page_html.encode("utf-8"))
    atomic_write_bytes(template, _template_csv(category, shown).encode("utf-8"))
    return page


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None, microsecond=0)


def _auto_verdict(rows: list[dict[str, Any]]) -> str:
    """A candidate counts as accepted automatically if any of its verifications accepted it."""
    return "accepted" if any(r["accepted"] for r in rows) else "rejected"


def _candidate_groups(store: Store, category: str) -> list[Group]:
    """The category's candidates with their verifications, in page order (none before verified_pairs ran)."""
    if not review_queries.table_exists(store, "verified_pairs"):
        return []
    return _group(_unique_verifications(review_queries.review_candidates(store, category)))


def _nothing_to_review(store: Store, category: str) -> str:
    if not review_queries.table_exists(store, "verified_pairs"):
        return "the database has no verified_pairs table yet: materialize verified_pairs first"
    known = review_queries.verified_categories(store)
    return (f"no candidates for category {category!r} in verified_pairs, and no source whose human label the "
            f"judge contradicts; categories with candidates: {', '.join(known) or 'none (materialize verified_pairs first)'}")


def _disagreements(store: Store, category: str) -> list[dict[str, Any]]:
    """The category's labels where the judge contradicts the source's human label, with how."""
    rows = review_queries.human_labelled_sources(store, category)
    return [{**r, "disagreement": kind} for r in rows if (kind := disagreement(r))]


def _disagreement(row: dict[str, Any], uris: _ImageUris) -> dict[str, Any]:
    """What the template shows for one source the judge and the human label differently."""
    return {
        "kind": row["disagreement"], "meaning": DISAGREEMENTS[row["disagreement"]], "sha": row["image_sha256"],
        "origin_ref": _text(row["origin_ref"]), "source_uri": uris.uri(row["source_path"]),
        # Blurred unless neither the human nor the judge calls it unsafe.
        "unsafe": "unsafe" in (row["human_rating"], row["rating"]),
        "human": {"rating": row["human_rating"], "category": row["human_category"],
                  "written": " / ".join(_text(row[k]) for k in ("manifest_rating", "manifest_category") if row[k]),
                  "rationale": _text(row["manifest_rationale"])},
        "judge": {"profile": row["judge_profile"], "model": _text(row["judge_model"]), "rating": row["rating"],
                  "category": row["judged_category"], "score": row["score"], "rationale": _text(row["rationale"])},
    }


def _unique_verifications(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each verification once (a join that matched twice must not show it twice), with its kind."""
    seen: set[tuple] = set()
    out = []
    for r in rows:
        # kind: on verified_pairs since control edits; older databases have it on the instruction only
        r["kind"] = r.get("kind") or r.get("instruction_kind") or "flip"
        key = tuple(r[k] for k in VERIFICATION_KEY)
        if key not in seen:
            seen.add(key)
            out.append(r)
    return out


def _group(rows: list[dict[str, Any]]) -> list[Group]:
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault(r["candidate_id"], []).append(r)
    # By source, its flip edits before its control edit, so related candidates sit together.
    return sorted(groups.items(), key=lambda g: (g[1][0]["origin_ref"] or "", g[1][0]["image_sha256"],
                                                 g[1][0]["kind"] != "flip", g[0]))


class _ImageUris:
    """Stored images as JPEG data URIs, each file encoded once (several candidates share a source)."""

    def __init__(self, images: ImageStore, max_side: int):
        self.images, self.max_side = images, max_side
        self._cache: dict[str, str | None] = {}

    def uri(self, rel: str | None) -> str | None:
        """None when there is no file, or it cannot be read: the page shows a placeholder instead."""
        if not rel:
            return None
        if rel not in self._cache:
            try:
                image = self.images.open(rel)
            except (OSError, ValueError):
                self._cache[rel] = None
            else:
                self._cache[rel] = image_data_uri(image, self.max_side, fmt="JPEG", quality=JPEG_QUALITY)
        return self._cache[rel]


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def _card(cid: str, rows: list[dict[str, Any]], uris: _ImageUris, human: Decision | None) -> dict[str, Any]:
    """What the template's card macro shows for one candidate."""
    first = rows[0]
    return {
        "cid": cid, "category": first["category"], "kind": first["kind"], "auto": _auto_verdict(rows),
        "human": None if human is None else {
            "accepted": human.accepted, "verdict": human.verdict, "reviewer": human.reviewer,
            "note": _text(human.note), "when": human.decided_at.isoformat()},
        "source_uri": uris.uri(first["source_path"]),
        "edit_uri": uris.uri(first["edited_path"]),
        # Blur the edit too unless it is a flip every verifier rated safe: a failed flip is still
        # unsafe, and a control (null) edit is meant to stay unsafe.
        "edit_unsafe": first["kind"] != "flip" or not all(r["edit_rating"] == "safe" for r in rows),
        "origin_ref": _text(first["origin_ref"]), "source_rating": _text(first["source_rating"]),
        "source_score": first["source_score"], "seed": _text(first.get("seed")),
        "edit_rating": first["edit_rating"] or None, "edit_score": first["edit_score"],
        "failed": first.get("edit_error") or first.get("reject_reason") or "missing file",
        "instruction": first.get("instruction") or "(not found)",
        "verifications": [_verification(r) for r in rows],
    }


def _verification(row: dict[str, Any]) -> dict[str, Any]:
    """One row of a card's metrics table: one verification of the candidate."""
    return {
        "profiles": [_text(row.get(k)) for k in PROFILE_COLUMNS],
        "accepted": row["accepted"], "reasons": (row["reject_reason"] or "").replace(";", ", "),
        "edit_rating": row["edit_rating"] or None,
        **{k: row[k] for k in ("edit_score", "ssim_outside", "psnr_outside", "embedding_cosine",
                               "changed_fraction", "quality_score")},
        "rationale": row.get("edit_rationale"),
    }


def _template_csv(category: str, groups: list[Group]) -> str:
    """The decisions template: one empty decision per candidate shown, for reviewers who prefer a spreadsheet.

    No cell holds text a reviewer typed, but every cell goes through ``neutralise`` all the same, as the
    page's CSV does, so a category name can never become a formula either."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\r\n")
    writer.writerow(DECISION_COLUMNS + ["kind", "auto_verdict"])  # the last two are for reading only
    for cid, rows in groups:
        cells = [cid, category, "", "", "", "", rows[0]["kind"], _auto_verdict(rows)]
        writer.writerow([neutralise(c) for c in cells])
    return buf.getvalue()
