"""Stage 4, ``edited_images``: the editor profile applied to each instruction, one candidate per seed.

A candidate is keyed by (source hash, instruction, editor config hash, seed). A key that already
has a stored, existing edit is reused instead of recomputed, so re-materializing is cheap and an
editor switch adds candidates next to the earlier editor's instead of replacing them.
"""


import json
import time
from typing import Any

from dagster import AssetExecutionContext, MetadataValue, asset
from dagster_duckdb import DuckDBResource

from sp_assets.backends.base import Editor, EditResult, Instruction
from sp_assets.core.hashing import sha256_json
from sp_assets.defs.resources import (
    EditorResource,
    JudgeResource,
    PipelineSettings,
    WriterResource,
)
from sp_assets.defs.stage import (
    Stage,
    asset_kwargs,
    check,
    check_result,
    counts_add_up,
    no_duplicate_keys,
)

ASSET = "edited_images"
BATCH = 8
CHECKS = [
    check(ASSET, f"{ASSET}_counts_add_up", "Every (instruction, seed) attempt is an edit or a failure with its error."),
    check(ASSET, f"{ASSET}_has_unique_keys", "No candidate is stored twice."),
    check(ASSET, "edits_match_source_size", "Every edit was brought back to its source's size."),
]


def candidate_id(image_sha: str, instruction_id: str, editor_sha: str, seed: int) -> str:
    return sha256_json([image_sha, instruction_id, editor_sha, int(seed)])


def _run_batch(editor: Editor, jobs: list[dict[str, Any]], stage: Stage) -> list[tuple[EditResult | None, str, float]]:
    """Edit a batch; if the batch call fails, retry one by one so one bad item fails alone."""
    images = [stage.images.open(j["image_path"]) for j in jobs]
    instructions = [Instruction(text=j["instruction"], target=json.loads(j["target_json"]), keep=j["keep"] or "",
                                variant=j["variant"]) for j in jobs]
    seeds = [j["seed"] for j in jobs]
    t0 = time.perf_counter()
    try:
        results = editor.edit(images, instructions, seeds)
        per = (time.perf_counter() - t0) / max(1, len(jobs))
        return [(r, "", per) for r in results]
    except Exception:  # noqa: BLE001 - isolate the failing item below
        if len(jobs) == 1:
            raise
    out: list[tuple[EditResult | None, str, float]] = []
    for img, ins, seed in zip(images, instructions, seeds, strict=True):
        t1 = time.perf_counter()
        try:
            out.append((editor.edit([img], [ins], [seed])[0], "", time.perf_counter() - t1))
        except Exception as exc:  # noqa: BLE001 - a failed edit is recorded with its error, the batch goes on
            out.append((None, f"{type(exc).__name__}: {exc}", time.perf_counter() - t1))
    return out


def _edit_category(stage: Stage, category: str, instructions: list[dict[str, Any]], editor: EditorResource,
                   name: str, backends: dict[str, Editor], tally: dict[str, int]) -> list[dict[str, Any]]:
    """Every (instruction, seed) candidate of one category under one editor profile: reused or computed."""
    editor_sha = editor.config_sha256(name)
    jobs = [{**ins, "seed": int(seed), "candidate_id": candidate_id(ins["image_sha256"], ins["instruction_id"], editor_sha, seed)}
            for ins in instructions for seed in stage.settings.edit_seeds]
    cached: dict[str, dict[str, Any]] = {}
    if jobs:
        found = stage.store.query(
            "SELECT * FROM edited_images WHERE status = 'ok' AND candidate_id IN (SELECT UNNEST(?))",
            [[j["candidate_id"] for j in jobs]]).to_dicts()
        cached = {r["candidate_id"]: r for r in found if stage.images.exists(r["edited_path"])}
    rows: list[dict[str, Any]] = []
    lineage = {"judge_profile": instructions[0]["judge_profile"], "writer_profile": instructions[0]["writer_profile"],
               "editor_profile": name} if instructions else {}
    for j in jobs:
        if j["candidate_id"] in cached:
            rows.append({**cached[j["candidate_id"]], **stage.base_row(category), **lineage})
            tally["reused"] += 1
    todo = [j for j in jobs if j["candidate_id"] not in cached]
    if todo and name not in backends:
        loaded = editor.load(stage.policy, name)  # at most once per run, and only on a cache miss
        assert isinstance(loaded, Editor)
        backends[name] = loaded
    for start in range(0, len(todo), BATCH):
        batch = todo[start:start + BATCH]
        backend = backends[name]
        for job, (result, error, seconds) in zip(batch, _run_batch(backend, batch, stage), strict=True):
            tally["computed"] += 1
            row: dict[str, Any] = {
                **stage.base_row(category), **lineage, "candidate_id": job["candidate_id"],
                "image_sha256": job["image_sha256"], "instruction_id": job["instruction_id"],
                "editor_config_sha256": editor_sha, "seed": job["seed"],
                "source_width": job["source_width"], "source_height": job["source_height"],
                "model_id": backend.info.model_id, "model_revision": backend.info.revision,
                "model_device": backend.info.device, "seconds": round(seconds, 4), "computed_run_id": stage.run_id,
            }
            if result is None:
                row.update(status="failed", error=error)
            else:
                sha, rel = stage.images.put_image(result.image)
                row.update(
                    status="ok", edited_sha256=sha, edited_path=rel, raw_width=result.raw_size[0],
                    raw_height=result.raw_size[1], width=result.image.width, height=result.image.height,
                    region_json=json.dumps(result.region) if result.region is not None else None,
                    detail_json=json.dumps(result.detail, sort_keys=True, default=str),
                )
            rows.append(row)
    return rows


@asset(deps=["edit_instructions"], **asset_kwargs(
    "Edited candidates: each editor profile of the run applied to each instruction and seed, brought back "
    "to the source size, cached by provenance key.", CHECKS))
def edited_images(context: AssetExecutionContext, settings: PipelineSettings, duckdb: DuckDBResource,
                  judge: JudgeResource, writer: WriterResource, editor: EditorResource):
    stage = Stage(ASSET, context, settings, duckdb)
    backends: dict[str, Editor] = {}
    tally = {"reused": 0, "computed": 0}
    for category in stage.categories():
        n_jobs = 0
        rows: list[dict[str, Any]] = []
        with stage.timed(category.slug):
            instructions = stage.store.query(
                "SELECT i.*, s.image_path, s.width AS source_width, s.height AS source_height "
                "FROM edit_instructions i JOIN source_images s ON s.category = i.category AND s.image_sha256 = i.image_sha256 "
                "WHERE i.category = ? AND i.judge_profile = ? AND i.writer_profile = ? ORDER BY i.instruction_id",
                [category.slug, judge.profile, writer.profile]).to_dicts()
            for name in editor.names:
                made = _edit_category(stage, category.slug, instructions, editor, name, backends, tally)
                stage.store.replace_slice("edited_images", {
                    "category": category.slug, "judge_profile": judge.profile, "writer_profile": writer.profile,
                    "editor_profile": name}, made)
                n_jobs += len(instructions) * len(settings.edit_seeds)
                rows += made
        ok = sum(1 for r in rows if r["status"] == "ok")
        stage.record(category.slug, n_jobs, ok, len(rows) - ok,
                     {"judge": judge.profile, "writer": writer.profile, "editors": editor.describe_all()}, rows)
    bad_sizes = [r["candidate_id"] for r in stage.written if r["status"] == "ok"
                 and (r["width"], r["height"]) != (r["source_width"], r["source_height"])]
    checks = [
        counts_add_up(stage, "edit attempts"),
        no_duplicate_keys(stage, ["category", "candidate_id", "judge_profile", "writer_profile", "editor_profile"]),
        check_result("edits_match_source_size", not bad_sizes,
                     "every edit has its source's size" if not bad_sizes else f"{len(bad_sizes)} edits differ in size",
                     examples=MetadataValue.json(bad_sizes[:5])),
    ]
    return stage.result({"editor_profiles": MetadataValue.json(editor.describe_all()),
                         "computed": tally["computed"], "reused_from_cache": tally["reused"]}, checks)
