"""Named queries of the pipeline stages: what each stage reads from the ones before it.

Every function takes a ``Store`` and returns plain rows (dicts). Joins between stages go through the
shared keys of ``schema.KEYS``, so no query links two stages on fewer columns than another does.
"""

from __future__ import annotations

import json
from typing import Any, Sequence

from sp_assets.storage.schema import join_on
from sp_assets.storage.store import Store

Rows = list[dict[str, Any]]


# --- policy_labels, edit_instructions ---------------------------------------------------------


def sources_of(store: Store, category: str) -> Rows:
    """The stored source images of a category, in hash order."""
    return store.rows("source_images", {"category": category}, order_by="image_sha256")


def rejections_of(store: Store, category: str) -> Rows:
    """The files and manifest rows a category's intake refused, in the order of their source reference."""
    return store.rows("source_rejections", {"category": category}, order_by="origin_ref")


def last_intake(store: Store, category: str) -> dict[str, Any] | None:
    """The category's last intake (source settings, fingerprint, items in), if it was ever taken in."""
    rows = store.rows("source_intakes", {"category": category})
    return rows[0] if rows else None


def save_intake(store: Store, row: dict[str, Any]) -> None:
    store.replace_slice("source_intakes", {"category": row["category"]}, [row])


def unsafe_labels(store: Store, category: str, judge_profile: str) -> Rows:
    """Sources the judge rated unsafe, with their image path and the source's own (manifest) label: what
    the writer gets instructions for, once core.agreement.editable has left out the human-safe ones."""
    return store.query(
        "SELECT l.*, s.image_path, s.manifest_rating, s.manifest_category FROM policy_labels l "
        "JOIN source_images s ON " + join_on("source", "s", "l")
        + " WHERE l.category = ? AND l.judge_profile = ? AND l.rating = 'unsafe' ORDER BY l.image_sha256",
        [category, judge_profile]).to_dicts()


# --- edited_images ------------------------------------------------------------------------------


def instructions_to_edit(store: Store, category: str, judge_profile: str, writer_profile: str) -> Rows:
    """Every instruction of a category and profile pair, with its source path and size."""
    return store.query(
        "SELECT i.*, s.image_path, s.width AS source_width, s.height AS source_height "
        "FROM edit_instructions i JOIN source_images s ON " + join_on("source", "s", "i")
        + " WHERE i.category = ? AND i.judge_profile = ? AND i.writer_profile = ? ORDER BY i.instruction_id",
        [category, judge_profile, writer_profile]).to_dicts()


# --- verified_pairs -----------------------------------------------------------------------------


def candidates_to_verify(store: Store, category: str, judge_profile: str, writer_profile: str,
                         editor_profiles: Sequence[str]) -> Rows:
    """Every edit candidate of the run's profiles with its kind, source path and the source's label."""
    return store.query(
        "SELECT e.*, i.kind, s.image_path AS source_path, l.rating AS source_rating, l.score AS source_score "
        "FROM edited_images e "
        "JOIN edit_instructions i ON " + join_on("instruction", "i", "e") + " "
        "JOIN source_images s ON " + join_on("source", "s", "e") + " "
        "LEFT JOIN policy_labels l ON " + join_on("label", "l", "e") + " "
        "WHERE e.category = ? AND e.judge_profile = ? AND e.writer_profile = ? "
        "AND e.editor_profile IN (SELECT UNNEST(?)) ORDER BY e.editor_profile, e.candidate_id",
        [category, judge_profile, writer_profile, list(editor_profiles)]).to_dicts()


def yield_by_profile(store: Store, categories: Sequence[str], judge_profile: str, writer_profile: str) -> Rows:
    return store.query(
        "SELECT category, editor_profile, kind, attempts, accepted, yield, rejection_reasons FROM yield_by_profile "
        "WHERE category IN (SELECT UNNEST(?)) AND judge_profile = ? AND writer_profile = ? ORDER BY ALL",
        [list(categories), judge_profile, writer_profile]).to_dicts()


# --- benchmark_split ----------------------------------------------------------------------------


def accepted_candidates(store: Store, category: str, kind: str) -> Rows:
    """Accepted candidates of one kind ('flip' or 'null') over all profiles, best first per source."""
    return store.query(
        "SELECT v.candidate_id, v.image_sha256, v.edited_sha256, v.quality_score, v.judge_profile, "
        "v.writer_profile, v.editor_profile, s.image_path AS unsafe_path, s.photo_id, e.edited_path, i.instruction, "
        "i.target_json "
        "FROM verified_pairs v "
        "JOIN source_images s ON " + join_on("source", "s", "v") + " "
        "JOIN edited_images e ON " + join_on("candidate", "e", "v") + " "
        "JOIN edit_instructions i ON " + join_on("instruction", "i", "e") + " "
        "WHERE v.category = ? AND v.accepted AND v.kind = ? "
        "ORDER BY v.image_sha256, v.quality_score DESC, v.candidate_id",
        [category, kind]).to_dicts()


def lookalike_sources(store: Store, category: str) -> Rows:
    """Every source of a category with its human label and each judge's rating of it (one row per
    source and judge profile; NULL profile where none rated it): the candidates for look-alikes."""
    return store.query(
        "SELECT s.image_sha256, s.image_path, s.photo_id, s.manifest_rating, l.judge_profile, l.rating "
        "FROM source_images s LEFT JOIN policy_labels l ON " + join_on("source", "l", "s") + " "
        "WHERE s.category = ? ORDER BY s.image_sha256, l.judge_profile", [category]).to_dicts()


def photos_in_two_splits(store: Store) -> Rows:
    """Photographs that sit in more than one split anywhere in the benchmark (pairs and look-alikes, every
    category), with the splits and categories they are in: must be none."""
    return store.query(
        "WITH placed AS (SELECT category, coalesce(photo_id, image_sha256) AS photo_id, split FROM benchmark_split "
        "UNION ALL SELECT category, coalesce(photo_id, image_sha256), split FROM benchmark_lookalikes) "
        "SELECT photo_id, list(DISTINCT split ORDER BY split) AS splits, "
        "list(DISTINCT category ORDER BY category) AS categories FROM placed GROUP BY photo_id "
        "HAVING count(DISTINCT split) > 1 ORDER BY photo_id").to_dicts()


# --- guard_metrics ------------------------------------------------------------------------------


def benchmark_pairs(store: Store, category: str) -> Rows:
    return store.rows("benchmark_split", {"category": category}, order_by="pair_id")


def lookalikes_of(store: Store, category: str) -> Rows:
    """The benchmark's look-alikes (safe source images of the category: hard negatives), by image hash."""
    return store.rows("benchmark_lookalikes", {"category": category}, order_by="image_sha256")


def pair_selectors(store: Store, category: str) -> list[str]:
    """Config hashes of the judges that chose a category's benchmark pairs: the verifier that rated each
    pair's edit and the judge that labelled its source."""
    frame = store.query(
        "SELECT DISTINCT unnest([v.verifier_config_sha256, l.judge_config_sha256]) AS sha "
        "FROM benchmark_split b JOIN verified_pairs v ON " + join_on("candidate", "v", "b") + " "
        "JOIN policy_labels l ON " + join_on("label", "l", "v") + " WHERE b.category = ?", [category])
    return sorted(s for s in frame["sha"].to_list() if s) if not frame.is_empty() else []


def probe_pairs(store: Store, categories: Sequence[str]) -> Rows:
    """Benchmark pairs of the run's categories with the verifier's raw answers (the scene text it read)."""
    return store.query(
        "SELECT b.pair_id, b.category, b.split, b.image_sha256, b.unsafe_path, b.safe_sha256, b.safe_path, "
        "b.control_sha256, b.control_path, v.edit_raw_output, "
        "(SELECT c.edit_raw_output FROM verified_pairs c WHERE c.candidate_id = b.control_candidate_id "
        "  AND c.category = b.category LIMIT 1) AS control_raw_output "
        "FROM benchmark_split b JOIN verified_pairs v ON " + join_on("candidate", "v", "b") + " "
        "WHERE b.category IN (SELECT UNNEST(?)) ORDER BY b.pair_id", [list(categories)]).to_dicts()


def rated_sources(store: Store, categories: Sequence[str], judge_profile: str) -> Rows:
    """Source images the judge rated unsafe or safe, with the judge's raw answer."""
    return store.query(
        "SELECT DISTINCT s.image_sha256, s.image_path, l.rating, l.raw_output FROM source_images s "
        "JOIN policy_labels l ON " + join_on("source", "l", "s") + " AND l.judge_profile = ? "
        "WHERE s.category IN (SELECT UNNEST(?)) AND l.rating IN ('unsafe', 'safe') ORDER BY s.image_sha256",
        [judge_profile, list(categories)]).to_dicts()


def guard_predictions(store: Store, categories: Sequence[str]) -> Rows:
    """Every guard's predictions on the unsafe and safe halves of the categories' pairs."""
    return store.query(
        "SELECT guard, pair_id, half, label, rating, score FROM guard_predictions "
        "WHERE category IN (SELECT UNNEST(?)) AND half IN ('unsafe', 'safe') ORDER BY guard, pair_id, half",
        [list(categories)]).to_dicts()


def pair_similarity(store: Store, categories: Sequence[str]) -> dict[str, float | None]:
    """pair_id -> embedding cosine of its halves."""
    rows = store.query(
        "SELECT b.pair_id, v.embedding_cosine FROM benchmark_split b JOIN verified_pairs v ON "
        + join_on("candidate", "v", "b") + " WHERE b.category IN (SELECT UNNEST(?))", [list(categories)]).rows()
    return dict(rows)


# --- make demo: the run summary -----------------------------------------------------------------


def latest_complete_run(store: Store) -> str | None:
    """The last run that reached guard_metrics."""
    frame = store.query("SELECT run_id FROM stage_runs WHERE asset = 'guard_metrics' ORDER BY created_at DESC LIMIT 1")
    return None if frame.is_empty() else frame.item()


def flip_yield_per_category(store: Store) -> Rows:
    return store.query(
        "SELECT y.category, sum(y.attempts) AS attempts, sum(y.accepted) AS accepted, "
        "any_value(y.rejection_reasons) AS reasons, "
        "(SELECT count(*) FROM source_images s WHERE s.category = y.category) AS sources, "
        "(SELECT count(*) FROM benchmark_split b WHERE b.category = y.category) AS pairs, "
        "(SELECT count(control_sha256) FROM benchmark_split b WHERE b.category = y.category) AS controlled "
        "FROM yield_by_profile y WHERE y.kind = 'flip' GROUP BY y.category ORDER BY y.category").to_dicts()


def flip_yield_per_editor(store: Store) -> Rows:
    """Flip candidates per category and editor profile, to compare editors: attempts, accepted, yield, how many
    of the category's benchmark pairs came from the editor (``chosen``), and the mean embedding cosine,
    changed fraction and quality_score of its accepted candidates (NULL when none was accepted)."""
    return store.query(
        "WITH v AS (SELECT category, editor_profile, count(*) AS attempts, count(*) FILTER (WHERE accepted) AS accepted, "
        "avg(embedding_cosine) FILTER (WHERE accepted) AS embedding_cosine, "
        "avg(changed_fraction) FILTER (WHERE accepted) AS changed_fraction, "
        "avg(quality_score) FILTER (WHERE accepted) AS quality_score "
        "FROM verified_pairs WHERE kind = 'flip' GROUP BY category, editor_profile), "
        "b AS (SELECT category, editor_profile, count(*) AS chosen FROM benchmark_split GROUP BY category, editor_profile) "
        "SELECT v.category, v.editor_profile, v.attempts, v.accepted, round(v.accepted / v.attempts, 4) AS yield, "
        "coalesce(b.chosen, 0) AS chosen, round(v.embedding_cosine, 4) AS embedding_cosine, "
        "round(v.changed_fraction, 5) AS changed_fraction, round(v.quality_score, 4) AS quality_score "
        "FROM v LEFT JOIN b USING (category, editor_profile) ORDER BY v.category, v.editor_profile").to_dicts()


def stage_seconds(store: Store, run_id: str) -> dict[str, float]:
    """Wall time of each stage of a run, models included (the per-step rows)."""
    rows = store.query("SELECT asset, seconds FROM stage_runs WHERE run_id = ? AND category = '*'", [run_id])
    return {r["asset"]: r["seconds"] for r in rows.iter_rows(named=True)}


def source_intake_notes(store: Store, run_id: str | None = None) -> dict[str, dict[str, Any]]:
    """Per category, what the latest source_pool step (of ``run_id``, if given) left out of its intake:
    ``skipped_files`` (not images: manifests, notes, hidden files) and ``unlisted_images`` (on disk, named
    by no manifest row), each with a few ``..._examples``. Categories of a source with nothing to note
    (the demo pool) are absent."""
    rows = store.query(
        "SELECT category, profiles_json FROM stage_runs WHERE asset = 'source_pool' AND category <> '*' "
        "AND (CAST(? AS VARCHAR) IS NULL OR run_id = ?) "
        "QUALIFY row_number() OVER (PARTITION BY category ORDER BY created_at DESC) = 1 ORDER BY category",
        [run_id, run_id]).rows()
    notes = {category: json.loads(profiles or "{}").get("intake") for category, profiles in rows}
    return {category: n for category, n in notes.items() if n}


def pooled_guard_metrics(store: Store) -> Rows:
    """Each guard on all pairs and look-alikes (view ``guard_metrics_overall``), ROC-AUC averaged over categories."""
    return store.query(
        "SELECT o.guard, o.pair_type, o.n_pairs AS pairs, o.acc_unsafe, o.acc_safe, o.pair_accuracy, o.n_lookalikes, "
        "o.lookalike_fpr, o.lookalike_invalid, o.selected_pairs, "
        "(SELECT avg(m.roc_auc) FROM guard_metrics m WHERE m.guard = o.guard AND m.pair_type = o.pair_type "
        " AND m.split = 'all' AND m.n_pairs > 0) AS auc "
        "FROM guard_metrics_overall o WHERE o.split = 'all' AND o.n_pairs > 0 ORDER BY o.guard, o.pair_type DESC").to_dicts()


def probe_headline(store: Store, run_id: str, k: int = 32) -> Rows:
    """The sample-efficiency figures at one k: pair accuracy on held-out and on out-of-distribution pairs,
    accuracy on other images, each with its interval."""
    return store.query(
        "SELECT features, eval_set, condition, mean, std, ci_low, ci_high FROM probe_results WHERE run_id = ? "
        "AND k = ? AND ((eval_set IN ('heldout_pairs', 'ood_pairs') AND metric = 'pair_accuracy') "
        "OR (eval_set = 'non_pair' AND metric = 'accuracy')) ORDER BY features, eval_set, condition", [run_id, k]).to_dicts()


def variant_labels_of(store: Store, category: str) -> Rows:
    """The category's labels under each policy variant (``variant_labels``)."""
    return store.query("SELECT * FROM variant_labels WHERE category = ? ORDER BY variant, pair_id, half",
                       [category]).to_dicts()


def variant_human_labels(store: Store, category: str) -> dict[str, dict[str, str]]:
    """Source image hash -> variant policy name (lower case) -> the manifest's human label under it."""
    rows = store.query("SELECT image_sha256, manifest_variant_ratings FROM source_images WHERE category = ? "
                       "AND manifest_variant_ratings IS NOT NULL", [category]).to_dicts()
    return {r["image_sha256"]: {k.lower(): v for k, v in json.loads(r["manifest_variant_ratings"]).items()}
            for r in rows}


def policy_answers(store: Store) -> Rows:
    """Every guard's answer on every image labelled under a variant, under the run's policy and under the
    variant, beside both labels (every category in the database)."""
    return store.query(
        "SELECT l.category, l.variant, l.pair_id, l.half, l.split, l.main_label, l.label, v.guard, "
        "g.rating AS main_rating, v.rating AS variant_rating, v.conditioned, "
        "coalesce((SELECT bool_or(p.selected_pairs) FROM policy_guard_metrics p WHERE p.guard = v.guard "
        "AND p.category = l.category AND p.variant = l.variant), false) AS selected_pairs "
        "FROM variant_labels l "
        "JOIN variant_predictions v ON v.category = l.category AND v.variant = l.variant AND v.pair_id = l.pair_id "
        "AND v.half = l.half "
        "JOIN guard_predictions g ON g.category = l.category AND g.guard = v.guard AND g.pair_id = l.pair_id "
        "AND g.half = l.half "
        "ORDER BY v.guard, l.variant, l.category, l.pair_id, l.half").to_dicts()


def variant_label_kinds(store: Store) -> Rows:
    """Every image's label under each variant beside its run's label (category, variant, main_label, label), for
    ``core.policy_variants.counts``."""
    return store.query("SELECT category, variant, main_label, label FROM variant_labels").to_dicts()
