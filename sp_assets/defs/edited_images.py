"""Stage 4, ``edited_images``: the editor profiles applied to each instruction, one candidate per seed.

A candidate is keyed by (source hash, instruction, editor config hash, seed). A key that already has a
stored, existing edit is reused instead of recomputed, so re-materializing is cheap and an editor
switch adds candidates next to the earlier editor's instead of replacing them.
"""

from typing import Any

from dagster import AssetExecutionContext, MetadataValue, asset
from dagster_duckdb import DuckDBResource

from sp_assets.backends.base import Editor
from sp_assets.core.records import edit_jobs, edit_row
from sp_assets.defs.resources import EditorResource, JudgeResource, PipelineSettings, WriterResource
from sp_assets.defs.stage import Stage, asset_kwargs, check, check_result, counts_add_up, no_duplicate_keys
from sp_assets.execution.tasks import edit_task
from sp_assets.storage import queries

ASSET = "edited_images"
CHECKS = [
    check(ASSET, f"{ASSET}_counts_add_up", "Every (instruction, seed) attempt is an edit or a failure with its error."),
    check(ASSET, f"{ASSET}_has_unique_keys", "No candidate is stored twice."),
    check(ASSET, "edits_match_source_size", "Every edit was brought back to its source's size."),
]


@asset(deps=["edit_instructions"], **asset_kwargs(
    "Edited candidates: each editor profile of the run applied to each instruction and seed, brought back "
    "to the source size, cached by provenance key.", CHECKS))
def edited_images(context: AssetExecutionContext, settings: PipelineSettings, duckdb: DuckDBResource,
                  judge: JudgeResource, writer: WriterResource, editor: EditorResource):
    stage = Stage(ASSET, context, settings, duckdb)
    loaded: dict[str, Editor] = {}
    tally = {"reused": 0, "computed": 0}
    for category in stage.categories():
        rows: list[dict[str, Any]] = []
        with stage.timed(category.slug):
            instructions = queries.instructions_to_edit(stage.store, category.slug, judge.profile, writer.profile)
            for name in editor.names:
                made = _edit_category(stage, category.slug, instructions, editor, name, loaded, tally)
                stage.store.replace_slice("edited_images", {
                    "category": category.slug, "judge_profile": judge.profile, "writer_profile": writer.profile,
                    "editor_profile": name}, made)
                rows += made
        ok = sum(1 for r in rows if r["status"] == "ok")
        stage.record(category.slug, len(instructions) * len(settings.edit_seeds) * len(editor.names), ok,
                     len(rows) - ok, {"judge": judge.profile, "writer": writer.profile,
                                      "editors": editor.describe_all()}, rows)
    checks = [counts_add_up(stage, "edit attempts"),
              no_duplicate_keys(stage, ["category", "candidate_id", "judge_profile", "writer_profile", "editor_profile"]),
              _sizes_check(stage.written)]
    return stage.result({"editor_profiles": MetadataValue.json(editor.describe_all()),
                         "computed": tally["computed"], "reused_from_cache": tally["reused"]}, checks)


def _edit_category(stage: Stage, category: str, instructions: list[dict[str, Any]], editor: EditorResource,
                   name: str, loaded: dict[str, Editor], tally: dict[str, int]) -> list[dict[str, Any]]:
    """Every (instruction, seed) candidate of one category under one editor profile: reused or computed."""
    editor_sha = editor.config_sha256(name)
    jobs = edit_jobs(instructions, stage.settings.edit_seeds, editor_sha)
    cached = {r["candidate_id"]: r for r in queries.stored_edits(stage.store, [j["candidate_id"] for j in jobs])
              if stage.images.exists(r["edited_path"])}
    lineage = {"judge_profile": instructions[0]["judge_profile"], "writer_profile": instructions[0]["writer_profile"],
               "editor_profile": name} if instructions else {}
    base = stage.base_row(category)
    rows = [{**cached[j["candidate_id"]], **base, **lineage} for j in jobs if j["candidate_id"] in cached]
    tally["reused"] += len(rows)
    todo = [j for j in jobs if j["candidate_id"] not in cached]
    if todo and name not in loaded:
        backend = editor.load(stage.policy, name)  # at most once per run, and only on a cache miss
        assert isinstance(backend, Editor)
        loaded[name] = backend
    for job, edited in stage.run(edit_task(loaded[name], stage.images), todo) if todo else []:
        rows.append(edit_row(base, lineage, job, editor_sha, loaded[name].info, edited, stage.run_id))
        tally["computed"] += 1
    return rows


def _sizes_check(rows: list[dict[str, Any]]):
    bad = [r["candidate_id"] for r in rows if r["status"] == "ok"
           and (r["width"], r["height"]) != (r["source_width"], r["source_height"])]
    return check_result("edits_match_source_size", not bad,
                        "every edit has its source's size" if not bad else f"{len(bad)} edits differ in size",
                        examples=MetadataValue.json(bad[:5]))

