"""Stage 3, ``edit_instructions``: for each image judged unsafe, instructions that remove only the violation."""


import json

from dagster import AssetExecutionContext, asset
from dagster_duckdb import DuckDBResource

from sp_assets.backends.base import InstructionWriter, TextRegion, Verdict
from sp_assets.core.hashing import sha256_json
from sp_assets.defs.resources import JudgeResource, PipelineSettings, WriterResource
from sp_assets.defs.stage import Stage, asset_kwargs, check, counts_add_up, no_duplicate_keys

ASSET = "edit_instructions"
CHECKS = [
    check(ASSET, f"{ASSET}_counts_add_up", "Every unsafe image gets instructions or is counted as skipped."),
    check(ASSET, f"{ASSET}_has_unique_keys", "No instruction is stored twice."),
]


def stored_verdict(row: dict) -> Verdict:
    return Verdict(
        rating=row["rating"], category=row.get("judged_category") or "", score=row.get("score"),
        rationale=row.get("rationale") or "", raw_output=row.get("raw_output") or "",
        regions=tuple(TextRegion.from_dict(d) for d in json.loads(row.get("regions_json") or "[]")),
    )


@asset(deps=["policy_labels"], **asset_kwargs(
    "Edit instructions for each image rated unsafe: what to change (from the judge's finding and the "
    "policy's edit guidance) and what to keep; plus one null (control) instruction per image that "
    "changes nothing the policy cares about.", CHECKS))
def edit_instructions(context: AssetExecutionContext, settings: PipelineSettings, duckdb: DuckDBResource,
                      judge: JudgeResource, writer: WriterResource):
    stage = Stage(ASSET, context, settings, duckdb)
    profile = writer.resolve()
    writer_sha = writer.config_sha256()
    backend = writer.load(stage.policy)
    assert isinstance(backend, InstructionWriter)
    for category in stage.categories():
        with stage.timed(category.slug):
            labels = stage.store.query(
                "SELECT l.*, s.image_path FROM policy_labels l JOIN source_images s "
                "ON s.category = l.category AND s.image_sha256 = l.image_sha256 "
                "WHERE l.category = ? AND l.judge_profile = ? AND l.rating = 'unsafe' ORDER BY l.image_sha256",
                [category.slug, judge.profile],
            ).to_dicts()
            rows, skipped = [], 0
            for label in labels:
                verdict = stored_verdict(label)
                target_category = category
                if verdict.category:
                    try:
                        target_category = stage.policy.category(verdict.category)
                    except KeyError:
                        pass
                image = stage.images.open(label["image_path"])
                flips = backend.write(image, verdict, target_category, settings.instruction_variants, settings.seed)
                if not flips:
                    skipped += 1
                    continue
                null = backend.write_null(image, verdict, target_category, settings.seed) if settings.control_pairs else None
                for kind, ins in [("flip", i) for i in flips] + ([("null", null)] if null else []):
                    rows.append({
                        **stage.base_row(category.slug),
                        "instruction_id": sha256_json([label["image_sha256"], ins.text, ins.target, ins.keep]),
                        "image_sha256": label["image_sha256"], "judge_profile": judge.profile,
                        "writer_profile": profile.name, "writer_config_sha256": writer_sha, "variant": ins.variant,
                        "kind": kind, "instruction": ins.text, "keep": ins.keep, "target_json": ins.target_json(),
                        "model_id": backend.info.model_id, "seed": settings.seed, "policy_sha256": stage.policy.sha256,
                    })
            stage.store.replace_slice(
                "edit_instructions",
                {"category": category.slug, "judge_profile": judge.profile, "writer_profile": profile.name}, rows)
        n_written = len({r["image_sha256"] for r in rows if r["kind"] == "flip"})
        stage.record(category.slug, len(labels), n_written, skipped, {"judge": judge.profile, "writer": writer.describe()}, rows)
    checks = [counts_add_up(stage, "unsafe images"), no_duplicate_keys(stage, ["category", "instruction_id", "judge_profile", "writer_profile"])]
    return stage.result({"writer_profile": profile.name, "writer_config_sha256": writer_sha}, checks)
