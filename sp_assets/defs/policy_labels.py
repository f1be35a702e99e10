"""Stage 2, ``policy_labels``: every source image judged under its category by the judge profile."""


import json
from typing import Any

from dagster import AssetExecutionContext, MetadataValue, asset
from dagster_duckdb import DuckDBResource

from sp_assets.backends.base import RecordJudge, Verdict
from sp_assets.defs.resources import JudgeResource, PipelineSettings
from sp_assets.defs.stage import Stage, asset_kwargs, check, counts_add_up, no_duplicate_keys

ASSET = "policy_labels"
BATCH = 16
CHECKS = [
    check(ASSET, f"{ASSET}_counts_add_up", "Every source image has exactly one label (unsafe, safe or invalid)."),
    check(ASSET, f"{ASSET}_has_unique_keys", "One label per image, category and judge profile."),
]


def verdict_row(verdict: Verdict) -> dict[str, Any]:
    return {
        "rating": verdict.rating,
        "judged_category": verdict.category or None,
        "score": verdict.score,
        "rationale": verdict.rationale,
        "regions_json": json.dumps([r.as_dict() for r in verdict.regions]),
        "raw_output": verdict.raw_output,
    }


@asset(deps=["source_pool"], **asset_kwargs(
    "Each source image rated unsafe / safe / invalid under its category, with score, rationale, "
    "evidence regions and the judge's raw output. Unparseable answers are invalid, never safe.", CHECKS))
def policy_labels(context: AssetExecutionContext, settings: PipelineSettings, duckdb: DuckDBResource,
                  judge: JudgeResource):
    stage = Stage(ASSET, context, settings, duckdb)
    profile = judge.resolve()
    judge_sha = judge.config_sha256()
    backend = judge.load(stage.policy)
    ratings: dict[str, dict[str, int]] = {}
    for category in stage.categories():
        with stage.timed(category.slug):
            sources = stage.store.rows("source_images", {"category": category.slug}, order_by="image_sha256")
            rows = []
            for start in range(0, len(sources), BATCH):
                batch = sources[start:start + BATCH]
                if isinstance(backend, RecordJudge):
                    verdicts = backend.judge_records(batch, category)
                else:
                    verdicts = backend.judge([stage.images.open(r["image_path"]) for r in batch], category)
                for src, verdict in zip(batch, verdicts, strict=True):
                    rows.append({
                        **stage.base_row(category.slug), "image_sha256": src["image_sha256"],
                        "judge_profile": profile.name, "judge_config_sha256": judge_sha, **verdict_row(verdict),
                        "model_id": backend.info.model_id, "model_revision": backend.info.revision,
                        "model_device": backend.info.device, "policy_sha256": stage.policy.sha256,
                    })
            stage.store.replace_slice("policy_labels", {"category": category.slug, "judge_profile": profile.name}, rows)
        tally = {r: sum(1 for row in rows if row["rating"] == r) for r in ("unsafe", "safe", "invalid")}
        ratings[category.slug] = tally
        # Every image gets a label; 'invalid' ones are counted as rejected (they go no further).
        stage.record(category.slug, len(sources), tally["unsafe"] + tally["safe"], tally["invalid"],
                     {"judge": judge.describe()}, rows)
    checks = [counts_add_up(stage, "source images"),
              no_duplicate_keys(stage, ["category", "image_sha256", "judge_profile"])]
    return stage.result({
        "judge_profile": profile.name, "judge_config_sha256": judge_sha, "judge_model": backend.info.model_id,
        "ratings": MetadataValue.json(ratings),
    }, checks)
