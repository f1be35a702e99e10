"""Stage 4, ``edited_images``: the editor profiles applied to each instruction, one candidate per seed.

A candidate is keyed by (source hash, instruction, editor config hash, seed): its edit is a memoized
model call, so re-materializing is cheap and an editor switch adds candidates next to the earlier
editor's instead of replacing them.
"""

from typing import Any

from dagster import AssetExecutionContext, MetadataValue, asset
from dagster_duckdb import DuckDBResource

from sp_assets.core.records import edit_jobs, edit_row
from sp_assets.defs.resources import EditorResource, JudgeResource, PipelineSettings, WriterResource
from sp_assets.defs.checks import check, check_result, counts_add_up, no_duplicate_keys
from sp_assets.defs.stage import Stage, asset_kwargs
from sp_assets.execution.lazy import LazyBackend
from sp_assets.execution.editor import edit_call, edit_images
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
    editors = {name: editor.lazy(stage.policy, name) for name in editor.names}
    inputs = {c.slug: queries.instructions_to_edit(stage.store, c.slug, judge.profile, writer.profile)
              for c in stage.categories()}
    edits = {name: _edit_all(stage, lazy, inputs) for name, lazy in editors.items()}  # every category at once
    for category in stage.categories():
        rows: list[dict[str, Any]] = []
        with stage.report.timed(category.slug):
            for name, lazy in editors.items():
                lineage = {"judge_profile": judge.profile, "writer_profile": writer.profile, "editor_profile": name}
                made = [edit_row(stage.base_row(category.slug), lineage, job, lazy.config_sha256, out.result,
                                 out.computed_run_id) for job, out in edits[name][category.slug]]
                stage.store.replace_slice("edited_images", {"category": category.slug, **lineage}, made)
                rows += made
        ok = sum(1 for r in rows if r["status"] == "ok")
        stage.report.record(category.slug, len(inputs[category.slug]) * len(settings.edit_seeds) * len(editors), ok,
                     len(rows) - ok, {"judge": judge.profile, "writer": writer.profile,
                                      "editors": editor.describe_all()}, rows)
    checks = [counts_add_up(stage.report, "edit attempts"),
              no_duplicate_keys(stage.report, ["category", "candidate_id", "judge_profile", "writer_profile", "editor_profile"]),
              _sizes_check(stage.report.written)]
    return stage.result({"editor_profiles": MetadataValue.json(editor.describe_all()),
                         "computed": stage.memo.computed["editor"], "reused_from_cache": stage.memo.reused["editor"],
                         **stage.model_calls()}, checks)


def _edit_all(stage: Stage, lazy: LazyBackend, inputs: dict[str, list[dict[str, Any]]]
              ) -> dict[str, list[tuple[dict[str, Any], Any]]]:
    """category -> (job, outcome) for every job of one editor: one pass over all categories' jobs, so all
    workers stay busy, each candidate edited at most once."""
    jobs = {cat: edit_jobs(rows, stage.settings.edit_seeds, lazy.config_sha256) for cat, rows in inputs.items()}
    flat = [(cat, job) for cat, js in jobs.items() for job in js]
    done = stage.memo.run(edit_call(lazy.config_sha256), lazy.work(edit_images, str(stage.images.root)),
                          [job for _, job in flat])
    out: dict[str, list[tuple[dict[str, Any], Any]]] = {cat: [] for cat in inputs}
    for (cat, _), (job, outcome) in zip(flat, done):
        out[cat].append((job, outcome))
    return out


def _sizes_check(rows: list[dict[str, Any]]):
    bad = [r["candidate_id"] for r in rows if r["status"] == "ok"
           and (r["width"], r["height"]) != (r["source_width"], r["source_height"])]
    return check_result("edits_match_source_size", not bad,
                        "every edit has its source's size" if not bad else f"{len(bad)} edits differ in size",
                        examples=MetadataValue.json(bad[:5]))
