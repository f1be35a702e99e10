"""Stage 5, ``verified_pairs``: each edit judged again and its preservation measured; accepted or rejected
with reasons (the rules: ``core/verification.py``). A human review decision overrides the automatic one."""

from typing import Any

import numpy as np
from dagster import AssetExecutionContext, MetadataValue, asset
from dagster_duckdb import DuckDBResource

from sp_assets.core.hashing import sha256_json
from sp_assets.core.image_metrics import lpips_scorer
from sp_assets.core.policy import Category
from sp_assets.core.previews import pairs_markdown
from sp_assets.core.records import verification_row, with_review
from sp_assets.core.reports import category_yield, profile_yield_table, yield_table
from sp_assets.core.verification import alignment_summary
from sp_assets.defs.resources import EditorResource, EmbedderResource, JudgeResource, PipelineSettings, WriterResource
from sp_assets.defs.checks import check, check_result, counts_add_up, no_duplicate_keys
from sp_assets.defs.stage import Stage, asset_kwargs
from sp_assets.execution.metrics import measure_pairs, preservation_call
from sp_assets.execution.embedder import pair_embeddings
from sp_assets.execution.judge import judged, prefetch_readings
from sp_assets.execution.lazy import LazyBackend
from sp_assets.execution.work import Work
from sp_assets.review import apply_review, effective_decisions
from sp_assets.storage import queries

ASSET = "verified_pairs"
CHECKS = [
    check(ASSET, f"{ASSET}_counts_add_up", "Every candidate is accepted or rejected with a reason."),
    check(ASSET, f"{ASSET}_has_unique_keys", "One verification per candidate and profile set."),
    check(ASSET, "pairs_have_matching_sizes", "No accepted pair whose halves differ in size."),
    check(ASSET, "yield_above_floor", "Accepted / attempted is at least settings.min_yield.", blocking=False),
]


@asset(deps=["edited_images"], **asset_kwargs(
    "Each candidate re-judged and measured for preservation; accepted or rejected with reasons. "
    "Yield = accepted / attempted.", CHECKS, judges=True))
def verified_pairs(context: AssetExecutionContext, settings: PipelineSettings, duckdb: DuckDBResource,
                   judge: JudgeResource, writer: WriterResource, editor: EditorResource, embedder: EmbedderResource):
    stage = Stage(ASSET, context, settings, duckdb)
    thresholds = settings.thresholds()
    lineage = _lineage(judge, writer, embedder, thresholds)
    lpips, lpips_note = lpips_scorer() if settings.lpips else (None, "LPIPS off (settings.lpips)")
    models = {"verifier": judge.lazy(stage.policy, judge.verifier_name), "embedder": embedder.lazy(stage.policy)}
    yields: dict[str, dict[str, Any]] = {}
    inputs = {c.slug: queries.candidates_to_verify(stage.store, c.slug, judge.profile, writer.profile, editor.names)
              for c in stage.categories()}
    paths = {c["candidate_id"]: c for cs in inputs.values() for c in cs}
    _prefetch(stage, models, [c for c in paths.values() if c["status"] == "ok"], (lpips, lpips_note))
    for category in stage.categories():
        with stage.report.timed(category.slug):
            candidates = inputs[category.slug]
            decisions = effective_decisions(stage.store, category.slug)
            rows = [with_review(row, decisions.get(row["candidate_id"]), apply_review)
                    for row in _verify(stage, category, candidates, models, lineage, thresholds, (lpips, lpips_note))]
            for name in editor.names:
                stage.store.replace_slice("verified_pairs", {
                    "category": category.slug, "judge_profile": judge.profile, "writer_profile": writer.profile,
                    "editor_profile": name}, [r for r in rows if r["editor_profile"] == name])
        yields[category.slug] = category_yield(rows)
        n_acc = sum(1 for r in rows if r["accepted"])
        stage.report.record(category.slug, len(rows), n_acc, len(rows) - n_acc,
                     {"judge": judge.profile, "verifier": judge.verifier_name, "writer": writer.profile,
                      "editors": editor.names, "embedder": embedder.describe()}, rows)
    meta = {"thresholds": MetadataValue.json(thresholds), "lpips": MetadataValue.text(lpips_note),
            "alignment": MetadataValue.text(alignment_summary(stage.report.written)),
            "editor_profiles": MetadataValue.json(editor.names), "verifier_profile": judge.verifier_name,
            "embedder_profile": embedder.profile, **_yield_metadata(stage, yields, judge, writer, paths),
            **stage.model_calls()}
    return stage.result(meta, _checks(stage, yields))


def _verify(stage: Stage, category: Category, candidates: list[dict[str, Any]], models: dict[str, LazyBackend],
            lineage: dict[str, Any], thresholds: dict[str, float], lpips: tuple[Any, str]) -> list[dict[str, Any]]:
    """Every candidate's row: the verifier's verdict on the edit, the embedding cosine of the pair and the
    preservation measures, each a memoized call (a reused answer costs no model time)."""
    ok = [c for c in candidates if c["status"] == "ok"]
    verdicts = {c["candidate_id"]: out for c, out in
                judged(stage.memo, models["verifier"], category, ok, "edited_sha256", "edited_path")}
    vectors = pair_embeddings(stage.memo, models["embedder"], ok)
    measured = _measures(stage, ok, lpips)
    rows = []
    for c in candidates:
        judged_edit = verdicts.get(c["candidate_id"])
        measures = None
        if judged_edit is not None:
            cosine = np.sum(vectors[c["image_sha256"]] * vectors[c["edited_sha256"]])
            measures = {**measured[c["candidate_id"]], "embedding_cosine": float(round(cosine, 6))}
        row = verification_row(stage.base_row(category.slug), c, lineage, thresholds,
                               judged_edit.result.verdict if judged_edit else None, measures)
        rows.append({**row, "computed_run_id": judged_edit.computed_run_id if judged_edit else stage.run_id})
    return rows


def _measures(stage: Stage, ok: list[dict[str, Any]], lpips: tuple[Any, str]) -> dict[str, dict[str, Any]]:
    work = Work(measure_pairs, str(stage.images.root), stage.policy, args={"lpips": lpips[0] is not None})
    call = preservation_call(lpips[1] if lpips[0] is not None else None)
    return {c["candidate_id"]: out.result for c, out in stage.memo.run(call, work, ok)}


def _prefetch(stage: Stage, models: dict[str, LazyBackend], ok: list[dict[str, Any]], lpips: tuple[Any, str]) -> None:
    """The category-independent work of every category at once (readings of the edits, embeddings,
    preservation measures), so all workers stay busy; judging per category then finds it in the memo."""
    prefetch_readings(stage.memo, models["verifier"], ok, "edited_sha256", "edited_path")
    pair_embeddings(stage.memo, models["embedder"], ok)
    _measures(stage, ok, lpips)


def _lineage(judge: JudgeResource, writer: WriterResource, embedder: EmbedderResource,
             thresholds: dict[str, float]) -> dict[str, Any]:
    """The profile columns every verification row of the run carries."""
    verifier_sha = judge.config_sha256(judge.verifier_name)
    return {"judge_profile": judge.profile, "verifier_profile": judge.verifier_name,
            "verifier_config_sha256": verifier_sha, "writer_profile": writer.profile,
            "embedder_profile": embedder.profile,
            "verify_config_sha256": sha256_json({"thresholds": thresholds, "verifier": verifier_sha,
                                                 "embedder": embedder.config_sha256()})}


def _yield_metadata(stage: Stage, yields: dict[str, dict[str, Any]], judge: JudgeResource,
                    writer: WriterResource, paths: dict[str, dict[str, Any]]) -> dict[str, Any]:
    attempts = sum(y["attempts"] for y in yields.values())
    overall = sum(y["accepted"] for y in yields.values()) / attempts if attempts else 0.0
    by_profile = queries.yield_by_profile(stage.store, list(yields), judge.profile, writer.profile)
    meta = {"yield": round(overall, 4), "yield_table": MetadataValue.md(yield_table(yields)),
            "yield_by_profile": MetadataValue.md(profile_yield_table(by_profile))}
    previews = _previews(stage, paths, stage.settings.preview_pairs)
    if previews:
        meta["preview"] = MetadataValue.md(pairs_markdown(previews, stage.settings.preview_unsafe))
    return meta


def _previews(stage: Stage, paths: dict[str, dict[str, Any]], n: int) -> list[tuple[str, Any, Any, str]]:
    """The first flips the verifier rated safe: (category, source, edit, rationale) for the UI preview."""
    shown = [r for r in stage.report.written if r["kind"] == "flip" and r["edit_rating"] == "safe"][:n]
    return [(r["category"], stage.images.open(paths[r["candidate_id"]]["source_path"]),
             stage.images.open(paths[r["candidate_id"]]["edited_path"]), (r["edit_rationale"] or "")[:120])
            for r in shown]


def _checks(stage: Stage, yields: dict[str, dict[str, Any]]) -> list:
    attempts = sum(y["attempts"] for y in yields.values())
    overall = sum(y["accepted"] for y in yields.values()) / attempts if attempts else 0.0
    floor = stage.settings.min_yield
    low = {c: y["yield"] for c, y in yields.items() if y["attempts"] and y["yield"] < floor}
    mismatched = [r["candidate_id"] for r in stage.report.written if r["accepted"] and not r["sizes_match"]]
    return [
        counts_add_up(stage.report, "candidates"),
        no_duplicate_keys(stage.report, ["category", "candidate_id", "judge_profile", "writer_profile", "editor_profile"]),
        check_result("pairs_have_matching_sizes", not mismatched,
                     "every accepted pair has halves of one size" if not mismatched else f"{len(mismatched)} size mismatches"),
        check_result("yield_above_floor", attempts > 0 and not low,
                     f"yield {overall:.1%} overall; floor {floor:.0%}" + (f"; below floor: {low}" if low else ""),
                     blocking=False, overall_yield=round(overall, 4)),
    ]
