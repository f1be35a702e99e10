"""Stage 3, ``edit_instructions``: for each image judged unsafe, instructions that remove only the violation.

A source whose human label (its manifest rating) is safe gets none, whatever the judge said: it is
counted as rejected with the reason ``human_safe`` (core.agreement.editable).
"""

from dagster import AssetExecutionContext, MetadataValue, asset
from dagster_duckdb import DuckDBResource

from sp_assets.core.agreement import editable
from sp_assets.core.records import instruction_rows
from sp_assets.defs.resources import JudgeResource, PipelineSettings, WriterResource
from sp_assets.defs.checks import check, counts_add_up, no_duplicate_keys
from sp_assets.defs.stage import Stage, asset_kwargs
from sp_assets.execution.writer import write_instructions, writer_call
from sp_assets.storage import queries

ASSET = "edit_instructions"
CHECKS = [
    check(ASSET, f"{ASSET}_counts_add_up", "Every unsafe image gets instructions or is counted as skipped, "
          "with its reason (human_safe, no_flip_instruction)."),
    check(ASSET, f"{ASSET}_has_unique_keys", "No instruction is stored twice."),
]


@asset(deps=["policy_labels"], **asset_kwargs(
    "Edit instructions for each image rated unsafe: what to change (from the judge's finding and the "
    "policy's edit guidance) and what to keep; plus one null (control) instruction per image that "
    "changes nothing the policy cares about. Images a human labelled safe get none.", CHECKS))
def edit_instructions(context: AssetExecutionContext, settings: PipelineSettings, duckdb: DuckDBResource,
                      judge: JudgeResource, writer: WriterResource):
    stage = Stage(ASSET, context, settings, duckdb)
    lazy = writer.lazy(stage.policy)
    lineage = {"judge_profile": judge.profile, "writer_profile": writer.profile,
               "writer_config_sha256": lazy.config_sha256, "seed": settings.seed, "policy_sha256": stage.policy.sha256}
    reasons: dict[str, dict[str, int]] = {}  # judge-unsafe sources without a flip instruction, by reason
    for category in stage.categories():
        with stage.report.timed(category.slug):
            judged_unsafe = queries.unsafe_labels(stage.store, category.slug, judge.profile)
            labels, left_out = editable(judged_unsafe)
            call = writer_call(lazy.config_sha256, category, settings.instruction_variants, settings.seed,
                               settings.control_pairs)
            work = lazy.work(write_instructions, str(stage.images.root), category=category.slug,
                             variants=settings.instruction_variants, seed=settings.seed,
                             control_pairs=settings.control_pairs)
            rows = [row for label, out in stage.memo.run(call, work, labels)
                    for row in instruction_rows(stage.base_row(category.slug), label, out.result.flips, out.result.null,
                                                {**lineage, "model_id": out.result.model_id,
                                                 "computed_run_id": out.computed_run_id})]
            stage.store.replace_slice("edit_instructions", {"category": category.slug, "judge_profile": judge.profile,
                                                            "writer_profile": writer.profile}, rows)
        n_written, reasons[category.slug] = _outcome(judged_unsafe, left_out, rows)
        stage.report.record(category.slug, len(judged_unsafe), n_written, sum(reasons[category.slug].values()),
                     {"judge": judge.profile, "writer": writer.describe()}, rows)
    checks = [counts_add_up(stage.report, "unsafe images"),
              no_duplicate_keys(stage.report, ["category", "instruction_id", "judge_profile", "writer_profile"])]
    return stage.result({"writer_profile": writer.profile, "writer_config_sha256": lineage["writer_config_sha256"],
                         "rejected_by_reason": MetadataValue.json(reasons), **stage.model_calls()}, checks)


def _outcome(judged_unsafe: list[dict], left_out: dict[str, list[str]], rows: list[dict]) -> tuple[int, dict[str, int]]:
    """(sources with a flip instruction, the others by reason): left out before writing (``human_safe``),
    or the writer gave none (``no_flip_instruction``). Counted apart, so the counts check sees an image
    that was both left out and written for."""
    with_flip = {r["image_sha256"] for r in rows if r["kind"] == "flip"}
    skipped = {i for images in left_out.values() for i in images}
    no_flip = {label["image_sha256"] for label in judged_unsafe} - with_flip - skipped
    return len(with_flip), {**{reason: len(images) for reason, images in left_out.items()},
                            **({"no_flip_instruction": len(no_flip)} if no_flip else {})}
