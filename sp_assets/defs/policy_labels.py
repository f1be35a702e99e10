"""Stage 2, ``policy_labels``: every source image judged under its category by the judge profile.

Where the sources carry human labels (manifest ratings) and the judge is a model, each row records the
human label next to the verdict, and the materialization reports how far they agree (core.agreement;
the view ``label_agreement`` gives the same figures).
"""

from collections import Counter
from typing import Any

from dagster import AssetExecutionContext, MetadataValue, asset
from dagster_duckdb import DuckDBResource

from sp_assets.backends.base import RecordJudge
from sp_assets.core.agreement import agreement, agreement_table, human_columns, pooled
from sp_assets.core.records import label_row
from sp_assets.defs.resources import JudgeResource, PipelineSettings
from sp_assets.defs.checks import check, counts_add_up, no_duplicate_keys
from sp_assets.defs.stage import Stage, asset_kwargs
from sp_assets.execution.judge import judged, prefetch_readings
from sp_assets.storage import queries

ASSET = "policy_labels"
CHECKS = [
    check(ASSET, f"{ASSET}_counts_add_up", "Every source image has exactly one label (unsafe, safe or invalid)."),
    check(ASSET, f"{ASSET}_has_unique_keys", "One label per image, category and judge profile."),
]


@asset(deps=["source_pool"], **asset_kwargs(
    "Each source image rated unsafe / safe / invalid under its category, with score, rationale, "
    "evidence regions and the judge's raw output. Unparseable answers are invalid, never safe.", CHECKS, judges=True))
def policy_labels(context: AssetExecutionContext, settings: PipelineSettings, duckdb: DuckDBResource,
                  judge: JudgeResource):
    stage = Stage(ASSET, context, settings, duckdb)
    lazy = judge.lazy(stage.policy)
    who = {"profile": judge.profile, "config_sha256": lazy.config_sha256}
    compare = not issubclass(lazy.cls, RecordJudge)  # a record judge's verdict is the human label itself
    ratings: dict[str, dict[str, int]] = {}
    inputs = {c.slug: queries.sources_of(stage.store, c.slug) for c in stage.categories()}
    prefetch_readings(stage.memo, lazy, [s for rows in inputs.values() for s in rows])  # every category at once
    for category in stage.categories():
        with stage.report.timed(category.slug):
            sources = inputs[category.slug]
            rows = [label_row(stage.base_row(category.slug), src, who, out.result.verdict, out.result.info,
                              stage.policy.sha256, out.computed_run_id,
                              human_columns(src, stage.policy) if compare else None)
                    for src, out in judged(stage.memo, lazy, category, sources)]
            stage.store.replace_slice("policy_labels", {"category": category.slug, "judge_profile": judge.profile}, rows)
        tally = Counter(row["rating"] for row in rows)
        ratings[category.slug] = {r: tally[r] for r in ("unsafe", "safe", "invalid")}
        # Every image gets a label; 'invalid' ones are counted as rejected (they go no further).
        stage.report.record(category.slug, len(sources), tally["unsafe"] + tally["safe"], tally["invalid"],
                     {"judge": judge.describe()}, rows)
    checks = [counts_add_up(stage.report, "source images"),
              no_duplicate_keys(stage.report, ["category", "image_sha256", "judge_profile"])]
    return stage.result({"judge_profile": judge.profile, "judge_config_sha256": who["config_sha256"],
                         "judge_model": next((r["model_id"] for r in stage.report.written), ""),
                         "ratings": MetadataValue.json(ratings), **_agreement_report(stage.report.written),
                         **stage.model_calls()}, checks)


def _agreement_report(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Human labels against the judge, per category: empty when no row carries a human label."""
    by_category: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_category.setdefault(row["category"], []).append(row)
    figures = {cat: agreement(part) for cat, part in by_category.items() if any(r.get("human_rating") for r in part)}
    if not figures:
        return {}
    as_json = {cat: a.as_dict() for cat, a in figures.items()}
    if len(figures) > 1:
        as_json["all"] = pooled(figures.values()).as_dict()
    return {"human_agreement": MetadataValue.md(agreement_table(figures)),
            "human_agreement_json": MetadataValue.json(as_json)}
