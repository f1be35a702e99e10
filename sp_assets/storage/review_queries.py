"""Named queries of human review: the candidates a review page shows, the sources whose human label the
judge contradicts, the known candidates, stored decisions."""

from __future__ import annotations

from typing import Any

from sp_assets.storage.schema import join_on
from sp_assets.storage.store import Store

# Every verification of a category with its edit, instruction and source, over all profiles.
# Sorted by source so the page keeps related candidates together.
_CANDIDATES_SQL = f"""
SELECT v.*, e.edited_path, e.seed, e.status AS edit_status, e.error AS edit_error,
       e.instruction_id, i.instruction, i.variant, i.kind AS instruction_kind,
       s.image_path AS source_path, s.origin_ref
FROM verified_pairs v
LEFT JOIN edited_images e ON {join_on("candidate", "e", "v")}
LEFT JOIN edit_instructions i ON {join_on("instruction", "i", "e")}
LEFT JOIN source_images s ON {join_on("source", "s", "v")}
WHERE v.category = ?
ORDER BY s.origin_ref, v.image_sha256, v.candidate_id, v.judge_profile, v.writer_profile,
         v.editor_profile, v.verifier_profile
"""


# The category's labels that carry a human label to compare (see policy_labels.human_rating), with the
# source's file and its manifest row: the review page shows those where human and judge disagree.
_HUMAN_LABELLED_SQL = f"""
SELECT l.category, l.image_sha256, l.judge_profile, l.model_id AS judge_model, l.rating, l.judged_category,
       l.score, l.rationale, l.human_rating, l.human_category, s.image_path AS source_path, s.origin_ref,
       s.manifest_rating, s.manifest_category, s.manifest_rationale
FROM policy_labels l
JOIN source_images s ON {join_on("source", "s", "l")}
WHERE l.category = ? AND l.human_rating IS NOT NULL
ORDER BY s.origin_ref, l.image_sha256, l.judge_profile
"""


def table_exists(store: Store, table: str) -> bool:
    """Whether ``table`` is in the database (a read-only store does not create missing tables)."""
    found = store.query("SELECT count(*) FROM information_schema.tables WHERE table_name = ?", [table])
    return bool(found.item())


def review_candidates(store: Store, category: str) -> list[dict[str, Any]]:
    """verified_pairs rows of ``category`` joined to their edit, instruction and source (see _CANDIDATES_SQL)."""
    return store.query(_CANDIDATES_SQL, [category]).to_dicts()


def human_labelled_sources(store: Store, category: str) -> list[dict[str, Any]]:
    """policy_labels rows of ``category`` that carry a human label, with their source (see _HUMAN_LABELLED_SQL).

    Empty on a database made before policy_labels recorded human labels."""
    known = store.query("SELECT count(*) FROM information_schema.columns WHERE table_name = 'policy_labels' "
                        "AND column_name = 'human_rating'").item()
    return store.query(_HUMAN_LABELLED_SQL, [category]).to_dicts() if known else []


def verified_categories(store: Store) -> list[str]:
    """Categories with at least one row in verified_pairs, sorted."""
    return store.query("SELECT DISTINCT category FROM verified_pairs ORDER BY 1")["category"].to_list()


def known_candidates(store: Store) -> list[tuple[str, str]]:
    """(candidate_id, category) of every candidate in verified_pairs."""
    return list(store.query("SELECT DISTINCT candidate_id, category FROM verified_pairs").iter_rows())


def review_decisions(store: Store, category: str | None = None) -> list[dict[str, Any]]:
    """Stored review_decisions rows, of one category or (``None``) all."""
    if category is None:
        return store.query("SELECT * FROM review_decisions").to_dicts()
    return store.query("SELECT * FROM review_decisions WHERE category = ?", [category]).to_dicts()
