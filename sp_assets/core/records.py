"""Rows of the stage tables, built from the records backends give (``core.record_types``), and those records
read back from rows.

Every function here is pure: it takes what a stage computed and the provenance of the run and returns
the row (a dict keyed by column name) that the stage writes.
"""

from __future__ import annotations

import json
from typing import Any, Mapping, Sequence

from sp_assets.core.hashing import sha256_json
from sp_assets.core.record_types import Instruction, ModelInfo, TextRegion, Verdict
from sp_assets.core.verification import quality_score, reasons_for

Row = dict[str, Any]

def verdict_columns(verdict: Verdict) -> Row:
    """A verdict as the columns of ``policy_labels``."""
    return {
        "rating": verdict.rating,
        "judged_category": verdict.category or None,
        "score": verdict.score,
        "rationale": verdict.rationale,
        "regions_json": json.dumps([r.as_dict() for r in verdict.regions]),
        "raw_output": verdict.raw_output,
    }


def stored_verdict(row: Mapping[str, Any]) -> Verdict:
    """The verdict a ``policy_labels`` row records."""
    return Verdict(
        rating=row["rating"], category=row.get("judged_category") or "", score=row.get("score"),
        rationale=row.get("rationale") or "", raw_output=row.get("raw_output") or "",
        regions=tuple(TextRegion.from_dict(d) for d in json.loads(row.get("regions_json") or "[]")),
    )


def model_columns(info: ModelInfo) -> Row:
    return {"model_id": info.model_id, "model_revision": info.revision, "model_device": info.device}


def label_row(base: Row, source: Mapping[str, Any], judge: Mapping[str, str], verdict: Verdict, info: ModelInfo,
              policy_sha256: str, computed_run_id: str, human: Mapping[str, Any] | None = None) -> Row:
    """A ``policy_labels`` row. ``judge``: {"profile", "config_sha256"}; ``human``: the source's human
    label to compare the verdict with (core.agreement.human_columns), None when the judge is that label."""
    return {**base, "image_sha256": source["image_sha256"], "judge_profile": judge["profile"],
            "judge_config_sha256": judge["config_sha256"], **verdict_columns(verdict), **model_columns(info),
            "policy_sha256": policy_sha256, "computed_run_id": computed_run_id, **(human or {})}


def instruction_id(image_sha256: str, ins: Instruction) -> str:
    return sha256_json([image_sha256, ins.text, ins.target, ins.keep])


def instruction_rows(base: Row, label: Mapping[str, Any], flips: Sequence[Instruction], null: Instruction | None,
                     lineage: Mapping[str, Any]) -> list[Row]:
    """The ``edit_instructions`` rows of one source: its flip instructions, then its control.

    ``lineage``: judge_profile, writer_profile, writer_config_sha256, model_id, seed, policy_sha256.
    """
    kinds = [("flip", i) for i in flips] + ([("null", null)] if null else [])
    return [{**base, **lineage, "instruction_id": instruction_id(label["image_sha256"], ins),
             "image_sha256": label["image_sha256"], "variant": ins.variant, "kind": kind, "instruction": ins.text,
             "keep": ins.keep, "target_json": ins.target_json()} for kind, ins in kinds]


def candidate_id(image_sha: str, instruction_id: str, editor_sha: str, seed: int) -> str:
    """The edit cache key: (source, instruction, editor config, seed)."""
    return sha256_json([image_sha, instruction_id, editor_sha, int(seed)])


def edit_jobs(instructions: Sequence[Mapping[str, Any]], seeds: Sequence[int], editor_sha: str) -> list[Row]:
    """One edit job per (instruction, seed), keyed by its candidate id."""
    return [{**ins, "seed": int(seed), "candidate_id": candidate_id(ins["image_sha256"], ins["instruction_id"],
                                                                    editor_sha, seed)}
            for ins in instructions for seed in seeds]


def edit_row(base: Row, lineage: Row, job: Mapping[str, Any], editor_sha: str, edited: Any, computed_run_id: str) -> Row:
    """An ``edited_images`` row (``edited``: execution.editor.EditOutput, computed now or reused)."""
    row: Row = {
        **base, **lineage, "candidate_id": job["candidate_id"], "image_sha256": job["image_sha256"],
        "instruction_id": job["instruction_id"], "editor_config_sha256": editor_sha, "seed": job["seed"],
        "source_width": job["source_width"], "source_height": job["source_height"], "model_id": edited.model_id,
        "model_revision": edited.model_revision, "model_device": edited.model_device,
        "seconds": round(edited.seconds, 4), "computed_run_id": computed_run_id,
    }
    if edited.error:
        return {**row, "status": "failed", "error": edited.error}
    return {**row, "status": "ok", "edited_sha256": edited.edited_sha256, "edited_path": edited.edited_path,
            "raw_width": edited.raw_size[0], "raw_height": edited.raw_size[1], "width": edited.size[0],
            "height": edited.size[1], "region_json": edited.region_json, "detail_json": edited.detail_json}


def verification_row(base: Row, candidate: Mapping[str, Any], lineage: Row, thresholds: dict[str, float],
                     verdict: Verdict | None, measures: Mapping[str, Any] | None) -> Row:
    """A ``verified_pairs`` row: measured, judged, accepted or rejected with every reason.

    ``verdict`` and ``measures`` are None when the edit failed.
    """
    row: Row = {
        **base, **lineage, "candidate_id": candidate["candidate_id"], "kind": candidate["kind"],
        "image_sha256": candidate["image_sha256"], "edited_sha256": candidate["edited_sha256"],
        "editor_profile": candidate["editor_profile"], "source_rating": candidate["source_rating"],
        "source_score": candidate["source_score"], "edit_rating": None, "edit_score": None, "ssim_outside": None,
        "psnr_outside": None, "embedding_cosine": None, "changed_fraction": None, "sizes_match": False,
        "thresholds_json": json.dumps(thresholds, sort_keys=True),
    }
    if candidate["status"] != "ok" or verdict is None or measures is None:
        return {**row, "accepted": False, "reject_reason": "edit_failed"}
    row.update(measures, edit_rating=verdict.rating, edit_score=verdict.score,
               edit_judged_category=verdict_columns(verdict)["judged_category"], edit_rationale=verdict.rationale,
               edit_raw_output=verdict.raw_output)
    reasons = reasons_for(row, thresholds)
    row.update(accepted=not reasons, reject_reason=";".join(reasons) or None)
    if not reasons:
        row["quality_score"] = quality_score(row["edit_score"], row["ssim_outside"], row["embedding_cosine"],
                                             row["kind"])
    return row


def with_review(row: Row, decision: Any, apply_review: Any) -> Row:
    """The row with its automatic verdict kept and a human decision (if any) applied over it."""
    row = {**row, "auto_accepted": row["accepted"], "auto_reject_reason": row["reject_reason"]}
    if decision is None:
        return row
    return {**apply_review(row, decision), "review_verdict": decision.verdict, "reviewer": decision.reviewer,
            "reviewed_at": decision.decided_at, "review_note": decision.note,
            "review_decisions_sha256": decision.decisions_sha256}
