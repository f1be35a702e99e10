"""The named queries the benchmark release reads: the benchmark, its lineage and the figures of its datasheet.

Each takes a ``Store`` and returns rows; ``sp_assets.release.inputs`` decides which to run from the
tables a database has (an older database can lack some).
"""

from __future__ import annotations

from typing import Any, Collection

import polars as pl

from sp_assets.storage.schema import join_on
from sp_assets.storage.store import Store

# (role, profile column, config hash column) of the pair_lineage view.
LINEAGE_PROFILES = (
    ("judge", "judge_profile", "judge_config_sha256"),
    ("writer", "writer_profile", "writer_config_sha256"),
    ("editor", "editor_profile", "editor_config_sha256"),
)


def table_columns(store: Store) -> dict[str, set[str]]:
    """Table or view name -> its column names, for every table of the database."""
    frame = store.query("SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = ?",
                        ["main"])
    out: dict[str, set[str]] = {}
    for table, column in frame.iter_rows():
        out.setdefault(table, set()).add(column)
    return out


def benchmark_pairs(store: Store) -> pl.DataFrame:
    """Every benchmark pair, all categories, in a stable order (the frame's types decide the Arrow types)."""
    return store.query("SELECT * FROM benchmark_split ORDER BY category, pair_id")


def benchmark_lookalikes(store: Store, has_sources: bool) -> pl.DataFrame:
    """Every look-alike, all categories, in a stable order, with where its source came from when the
    database has the source table."""
    if not has_sources:
        return store.query("SELECT * FROM benchmark_lookalikes ORDER BY category, lookalike_id")
    return store.query(
        "SELECT l.*, s.origin, s.origin_ref AS source_file FROM benchmark_lookalikes l "
        f"LEFT JOIN source_images s ON {join_on('source', 's', 'l')} ORDER BY l.category, l.lookalike_id")


def pair_lineage(store: Store) -> pl.DataFrame:
    """The lineage view of every pair, sorted on every column so a repeated join row always comes first."""
    return store.query("SELECT * FROM pair_lineage ORDER BY ALL")


def verification_yields(store: Store, has_kind: bool) -> list[dict[str, Any]]:
    """Per category and kind: candidates verified and accepted, and the sources behind them.

    ``has_kind``: the table has the ``kind`` column (a database from before controls counts every row as 'flip').
    """
    kind = "coalesce(kind, 'flip') AS kind" if has_kind else "'flip' AS kind"
    return store.query(
        f"SELECT category, {kind}, count(*) AS attempts, count(*) FILTER (WHERE accepted) AS accepted, "
        "count(DISTINCT image_sha256) AS sources, "
        "count(DISTINCT image_sha256) FILTER (WHERE accepted) AS sources_ok "
        "FROM verified_pairs GROUP BY ALL ORDER BY ALL").to_dicts()


def label_counts(store: Store) -> list[dict[str, Any]]:
    """Per category: sources judged, and those judged unsafe."""
    return store.query(
        "SELECT category, count(DISTINCT image_sha256) AS judged, "
        "count(DISTINCT image_sha256) FILTER (WHERE rating = 'unsafe') AS unsafe "
        "FROM policy_labels GROUP BY ALL").to_dicts()


def source_counts(store: Store) -> list[dict[str, Any]]:
    """Per category: sources stored."""
    return store.query("SELECT category, count(*) AS n FROM source_images GROUP BY ALL").to_dicts()


def review_counts(store: Store) -> list[dict[str, Any]]:
    """Per category and verdict: human review decisions and how many people made them."""
    return store.query("SELECT category, verdict, count(*) AS n, count(DISTINCT reviewer) AS reviewers "
                       "FROM review_decisions GROUP BY ALL ORDER BY ALL").to_dicts()


def exported_sources(store: Store, with_lookalikes: bool = False) -> list[dict[str, Any]]:
    """Origin and demo recipe of every source image behind a benchmark pair, and behind a look-alike when
    ``with_lookalikes`` (distinct)."""
    lookalikes = (f" UNION SELECT s.origin, s.recipe_json FROM source_images s JOIN benchmark_lookalikes l ON "
                  f"{join_on('source', 'l', 's')}") if with_lookalikes else ""
    return store.query(
        "SELECT DISTINCT s.origin, s.recipe_json FROM source_images s "
        f"JOIN benchmark_split b ON {join_on('source', 'b', 's')}{lookalikes} ORDER BY ALL").to_dicts()


def exported_source_metadata(store: Store, with_lookalikes: bool = False) -> list[dict[str, Any]]:
    """What intake removed from each source image behind a benchmark pair (and a look-alike when
    ``with_lookalikes``), one row per image: ``metadata_removed`` as recorded, NULL where intake did not record
    it (needs the column ``source_images.metadata_removed``)."""
    lookalikes = (f" UNION SELECT s.image_sha256, s.metadata_removed FROM source_images s JOIN benchmark_lookalikes l "
                  f"ON {join_on('source', 'l', 's')}") if with_lookalikes else ""
    # An image stored in several categories has one row per category; any recorded value stands for it.
    return store.query(
        "SELECT image_sha256, max(metadata_removed) AS metadata_removed FROM ("
        "SELECT s.image_sha256, s.metadata_removed FROM source_images s "
        f"JOIN benchmark_split b ON {join_on('source', 'b', 's')}{lookalikes}) GROUP BY ALL ORDER BY ALL").to_dicts()


def guard_results(store: Store) -> list[dict[str, Any]]:
    """Each guard on all pairs and look-alikes, pooled over categories (view ``guard_metrics_overall``), by
    guard and pair type; no run ids, so the same figures give the same datasheet."""
    return store.query(
        "SELECT guard, pair_type, categories, n_pairs, acc_unsafe, acc_safe, pair_accuracy, n_invalid, n_lookalikes, "
        "lookalike_fpr, lookalike_invalid, selected_pairs FROM guard_metrics_overall WHERE split = 'all' "
        "ORDER BY guard, pair_type DESC").to_dicts()


def guard_answers(store: Store) -> list[dict[str, Any]]:
    """Every guard's answer on every image of every category's pairs and look-alikes (split 'all'), for
    intervals over the pooled figures."""
    return store.query(
        "SELECT category, guard, pair_id, half, rating, score FROM guard_predictions "
        "ORDER BY guard, category, pair_id, half").to_dicts()


def profiles_used(store: Store, lineage_columns: Collection[str]) -> list[dict[str, Any]]:
    """role, profile, config_sha256 and pairs for each profile behind the pairs (roles whose columns exist)."""
    rows: list[dict[str, Any]] = []
    for role, profile, config in LINEAGE_PROFILES:
        if {profile, config} <= set(lineage_columns):
            frame = store.query(f"SELECT DISTINCT {profile} AS profile, {config} AS config_sha256, count(*) AS pairs "
                                "FROM pair_lineage GROUP BY ALL ORDER BY ALL")
            rows += [{"role": role, **r} for r in frame.to_dicts()]
    return rows


def verification_configs(store: Store) -> list[dict[str, Any]]:
    """The verifier, embedder and thresholds behind the benchmark pairs, with how many pairs each made."""
    return store.query(
        "SELECT DISTINCT v.verifier_profile, v.verifier_config_sha256, v.embedder_profile, v.verify_config_sha256, "
        "v.thresholds_json, count(*) AS pairs FROM verified_pairs v "
        f"JOIN benchmark_split b ON {join_on('candidate', 'b', 'v')} GROUP BY ALL ORDER BY ALL").to_dicts()


def guards_evaluated(store: Store) -> list[str]:
    """Names of the guards with metrics, sorted."""
    return [r["guard"] for r in store.query("SELECT DISTINCT guard FROM guard_metrics ORDER BY 1").to_dicts()]


def policy_pairs(store: Store) -> list[dict[str, Any]]:
    """Every policy pair (view ``policy_pairs``) with its image's stored path, in a stable order."""
    return store.query(
        "SELECT p.*, CASE p.half WHEN 'unsafe' THEN b.unsafe_path WHEN 'safe' THEN b.safe_path "
        "WHEN 'control' THEN b.control_path ELSE la.image_path END AS image_path "
        "FROM policy_pairs p "
        "LEFT JOIN benchmark_split b ON p.half <> 'lookalike' AND b.category = p.category AND b.pair_id = p.pair_id "
        "LEFT JOIN benchmark_lookalikes la ON p.half = 'lookalike' AND la.category = p.category "
        "AND la.lookalike_id = p.pair_id "
        "ORDER BY p.split, p.category, p.variant, p.pair_id, p.half").to_dicts()
