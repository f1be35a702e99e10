"""Stage 5, ``verified_pairs``: each edit judged again and its preservation measured; accepted or rejected with reasons.

A flip candidate is accepted when the source was rated unsafe, the edit is rated safe, the two
have the same size, the edited region is small, and the image outside it is preserved (SSIM and
PSNR outside the region, whole-image embedding cosine) above the configured thresholds. A null
(control) candidate passes the same preservation tests but must still be rated unsafe.

quality_score ranks accepted candidates (benchmark_split keeps the best per source):
    0.5 * P(intended label | edit) + 0.25 * SSIM outside the region + 0.25 * embedding cosine
where the intended label is safe for a flip and unsafe for a null edit, so a confident label and a
faithful edit both count.
"""


import json
from typing import Any

import numpy as np
from dagster import AssetExecutionContext, MetadataValue, asset
from dagster_duckdb import DuckDBResource

from sp_assets.backends.base import Embedder, Judge
from sp_assets.core.image_metrics import (
    diff_region,
    lpips_scorer,
    psnr_outside,
    region_mask,
    ssim_outside,
)
from sp_assets.defs.policy_labels import verdict_row
from sp_assets.core.previews import pairs_markdown
from sp_assets.core.hashing import sha256_json
from sp_assets.defs.resources import (
    EditorResource,
    EmbedderResource,
    JudgeResource,
    PipelineSettings,
    WriterResource,
)
from sp_assets.core.verification import quality_score, reasons_for
from sp_assets.review import apply_review, effective_decisions
from sp_assets.defs.stage import (
    Stage,
    asset_kwargs,
    check,
    check_result,
    counts_add_up,
    no_duplicate_keys,
)

ASSET = "verified_pairs"
BATCH = 16
CHECKS = [
    check(ASSET, f"{ASSET}_counts_add_up", "Every candidate is accepted or rejected with a reason."),
    check(ASSET, f"{ASSET}_has_unique_keys", "One verification per candidate and profile set."),
    check(ASSET, "pairs_have_matching_sizes", "No accepted pair whose halves differ in size."),
    check(ASSET, "yield_above_floor", "Accepted / attempted is at least settings.min_yield.", blocking=False),
]


@asset(deps=["edited_images"], **asset_kwargs(
    "Each candidate re-judged and measured for preservation; accepted or rejected with reasons. "
    "Yield = accepted / attempted.", CHECKS))
def verified_pairs(context: AssetExecutionContext, settings: PipelineSettings, duckdb: DuckDBResource,
                   judge: JudgeResource, writer: WriterResource, editor: EditorResource, embedder: EmbedderResource):
    stage = Stage(ASSET, context, settings, duckdb)
    thresholds = settings.thresholds()
    verifier_sha = judge.config_sha256(judge.verifier_name)
    verify_sha = sha256_json({"thresholds": thresholds, "verifier": verifier_sha, "embedder": embedder.config_sha256()})
    lpips, lpips_note = lpips_scorer() if settings.lpips else (None, "LPIPS off (settings.lpips)")
    verifier: Judge | None = None
    embed: Embedder | None = None
    yields: dict[str, dict[str, Any]] = {}
    previews: list[tuple[str, Any, Any, str]] = []
    for category in stage.categories():
        with stage.timed(category.slug):
            candidates = stage.store.query(
                "SELECT e.*, i.kind, s.image_path AS source_path, l.rating AS source_rating, l.score AS source_score "
                "FROM edited_images e "
                "JOIN edit_instructions i ON i.category = e.category AND i.instruction_id = e.instruction_id "
                "  AND i.judge_profile = e.judge_profile AND i.writer_profile = e.writer_profile "
                "JOIN source_images s ON s.category = e.category AND s.image_sha256 = e.image_sha256 "
                "LEFT JOIN policy_labels l ON l.category = e.category AND l.image_sha256 = e.image_sha256 "
                "  AND l.judge_profile = e.judge_profile "
                "WHERE e.category = ? AND e.judge_profile = ? AND e.writer_profile = ? "
                "  AND e.editor_profile IN (SELECT UNNEST(?)) "
                "ORDER BY e.editor_profile, e.candidate_id",
                [category.slug, judge.profile, writer.profile, editor.names]).to_dicts()
            ok = [c for c in candidates if c["status"] == "ok"]
            if ok and verifier is None:
                verifier = judge.load(stage.policy, judge.verifier_name)  # type: ignore[assignment]
                embed = embedder.load(stage.policy)  # type: ignore[assignment]
            rows = []
            for start in range(0, len(candidates), BATCH):
                batch = candidates[start:start + BATCH]
                good = [c for c in batch if c["status"] == "ok"]
                sources = [stage.images.open(c["source_path"]) for c in good]
                edits = [stage.images.open(c["edited_path"]) for c in good]
                verdicts = verifier.judge(edits, category) if good else []  # type: ignore[union-attr]
                if good:
                    vectors = embed.embed(sources + edits)  # type: ignore[union-attr]
                    cosines = np.sum(vectors[: len(good)] * vectors[len(good):], axis=1)
                measured = {}
                for i, (cand, src, edt, verdict) in enumerate(zip(good, sources, edits, verdicts, strict=True)):
                    sizes_match = src.size == edt.size
                    row: dict[str, Any] = {"sizes_match": sizes_match, "embedding_cosine": float(round(cosines[i], 6))}
                    if sizes_match:
                        if cand["region_json"] is not None:
                            mask = region_mask(src.size, json.loads(cand["region_json"]))
                            row["region_source"] = "editor"
                        else:
                            mask = diff_region(src, edt).mask
                            row["region_source"] = "diff"
                        row["changed_fraction"] = float(round(mask.mean(), 6))
                        row["ssim_outside"] = float(round(ssim_outside(src, edt, mask), 6))
                        row["psnr_outside"] = float(round(psnr_outside(src, edt, mask), 4))
                        if lpips is not None:
                            row["lpips"] = round(lpips(src, edt), 6)
                    edit_view = verdict_row(verdict)
                    row.update(edit_rating=verdict.rating, edit_score=verdict.score,
                               edit_judged_category=edit_view["judged_category"],
                               edit_rationale=verdict.rationale, edit_raw_output=verdict.raw_output)
                    measured[cand["candidate_id"]] = row
                    if len(previews) < settings.preview_pairs and verdict.rating == "safe" and cand["kind"] == "flip":
                        previews.append((category.slug, src, edt, verdict.rationale[:120]))
                for cand in batch:
                    row = {
                        **stage.base_row(category.slug), "candidate_id": cand["candidate_id"], "kind": cand["kind"],
                        "image_sha256": cand["image_sha256"], "edited_sha256": cand["edited_sha256"],
                        "judge_profile": judge.profile, "verifier_profile": judge.verifier_name,
                        "verifier_config_sha256": verifier_sha, "writer_profile": writer.profile,
                        "editor_profile": cand["editor_profile"],
                        "embedder_profile": embedder.profile, "verify_config_sha256": verify_sha,
                        "source_rating": cand["source_rating"], "source_score": cand["source_score"],
                        "edit_rating": None, "edit_score": None, "ssim_outside": None, "psnr_outside": None,
                        "embedding_cosine": None, "changed_fraction": None, "sizes_match": False,
                        "thresholds_json": json.dumps(thresholds, sort_keys=True),
                    }
                    if cand["status"] != "ok":
                        row.update(accepted=False, reject_reason="edit_failed")
                    else:
                        row.update(measured[cand["candidate_id"]])
                        reasons = reasons_for(row, thresholds)
                        row.update(accepted=not reasons, reject_reason=";".join(reasons) or None)
                        if not reasons:
                            row["quality_score"] = quality_score(row["edit_score"], row["ssim_outside"],
                                                                 row["embedding_cosine"], row["kind"])
                    rows.append(row)
            # Human review overrides the automatic verdict; both are kept in the row.
            decisions = effective_decisions(stage.store, category.slug)
            for i, row in enumerate(rows):
                row.update(auto_accepted=row["accepted"], auto_reject_reason=row["reject_reason"])
                decision = decisions.get(row["candidate_id"])
                if decision is not None:
                    rows[i] = {**apply_review(row, decision), "review_verdict": decision.verdict,
                               "reviewer": decision.reviewer, "reviewed_at": decision.decided_at,
                               "review_note": decision.note, "review_decisions_sha256": decision.decisions_sha256}
            n_reviewed = sum(1 for r in rows if r.get("review_verdict"))
            for name in editor.names:
                stage.store.replace_slice("verified_pairs", {
                    "category": category.slug, "judge_profile": judge.profile, "writer_profile": writer.profile,
                    "editor_profile": name}, [r for r in rows if r["editor_profile"] == name])
        n_acc = sum(1 for r in rows if r["accepted"])
        flips = [r for r in rows if r["kind"] == "flip"]
        n_flip_acc = sum(1 for r in flips if r["accepted"])
        reasons: dict[str, int] = {}
        for r in flips:
            for code in (r["reject_reason"] or "").split(";"):
                if code:
                    reasons[code] = reasons.get(code, 0) + 1
        # Yield counts flip edits: the attempts to make a pair. Null edits are controls, reported apart.
        yields[category.slug] = {"attempts": len(flips), "accepted": n_flip_acc, "reviewed": n_reviewed,
                                 "yield": round(n_flip_acc / len(flips), 3) if flips else None, "reasons": reasons,
                                 "controls": len(rows) - len(flips), "controls_accepted": n_acc - n_flip_acc}
        stage.record(category.slug, len(rows), n_acc, len(rows) - n_acc,
                     {"judge": judge.profile, "verifier": judge.verifier_name, "writer": writer.profile,
                      "editors": editor.names, "embedder": embedder.describe()}, rows)
    attempts = sum(y["attempts"] for y in yields.values())
    accepted = sum(y["accepted"] for y in yields.values())
    overall = accepted / attempts if attempts else 0.0
    low = {c: y["yield"] for c, y in yields.items() if y["attempts"] and y["yield"] < settings.min_yield}
    mismatched = [r["candidate_id"] for r in stage.written if r["accepted"] and not r["sizes_match"]]
    checks = [
        counts_add_up(stage, "candidates"),
        no_duplicate_keys(stage, ["category", "candidate_id", "judge_profile", "writer_profile", "editor_profile"]),
        check_result("pairs_have_matching_sizes", not mismatched,
                     "every accepted pair has halves of one size" if not mismatched else f"{len(mismatched)} size mismatches"),
        check_result("yield_above_floor", attempts > 0 and not low,
                     f"yield {overall:.1%} overall; floor {settings.min_yield:.0%}" + (f"; below floor: {low}" if low else ""),
                     blocking=False, overall_yield=round(overall, 4)),
    ]
    lines = ["| category | attempts | accepted | yield | rejection reasons | controls accepted |",
             "|---|---:|---:|---:|---|---:|"]
    for cat, y in yields.items():
        yv = "n/a" if y["yield"] is None else f"{y['yield']:.0%}"
        why = ", ".join(f"{k}: {v}" for k, v in sorted(y["reasons"].items(), key=lambda kv: -kv[1])) or "-"
        lines.append(f"| {cat} | {y['attempts']} | {y['accepted']} | {yv} | {why} | {y['controls_accepted']}/{y['controls']} |")
    meta = {"yield": round(overall, 4), "yield_table": MetadataValue.md("\n".join(lines)),
            "thresholds": MetadataValue.json(thresholds), "lpips": MetadataValue.text(lpips_note), "editor_profiles": MetadataValue.json(editor.names),
            "verifier_profile": judge.verifier_name, "embedder_profile": embedder.profile}
    by_profile = stage.store.query(
        "SELECT category, editor_profile, kind, attempts, accepted, yield, rejection_reasons FROM yield_by_profile "
        "WHERE category IN (SELECT UNNEST(?)) AND judge_profile = ? AND writer_profile = ? ORDER BY ALL",
        [list(yields), judge.profile, writer.profile]).to_dicts()
    profile_lines = ["| category | editor | kind | attempts | accepted | yield | rejection reasons |",
                     "|---|---|---|---:|---:|---:|---|"]
    profile_lines += [f"| {r['category']} | {r['editor_profile']} | {r['kind']} | {r['attempts']} | {r['accepted']} | "
                      f"{r['yield']:.0%} | {r['rejection_reasons'] or '-'} |" for r in by_profile]
    meta["yield_by_profile"] = MetadataValue.md("\n".join(profile_lines))
    if previews:
        meta["preview"] = MetadataValue.md(pairs_markdown(previews, settings.preview_unsafe))
    return stage.result(meta, checks)
