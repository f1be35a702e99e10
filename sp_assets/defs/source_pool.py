"""Stage 1, ``source_pool``: the images each category starts from (the source profile's pool)."""

import time
from collections import Counter
from typing import Any

from dagster import AssetExecutionContext, MetadataValue, asset
from dagster_duckdb import DuckDBResource

from sp_assets.backends.base import Source, SourceOptions
from sp_assets.core.hashing import sha256_json
from sp_assets.core.policy import Category
from sp_assets.defs.resources import PipelineSettings, SourceResource
from sp_assets.defs.checks import check, counts_add_up, no_duplicate_keys
from sp_assets.defs.stage import Stage, asset_kwargs
from sp_assets.execution.intake import Intake, intake_category
from sp_assets.storage import queries

ASSET = "source_pool"
CHECKS = [
    check(ASSET, f"{ASSET}_counts_add_up", "Every file that came in is accepted or rejected with a reason."),
    check(ASSET, f"{ASSET}_has_unique_keys", "No image appears twice in a category."),
]


@asset(**asset_kwargs(
    "Source images per category, stored content-addressed. Unusable files and manifest rows are quarantined "
    "in source_rejections with a reason; in = accepted + rejected. Files that are not images and images the "
    "manifest does not list are counted apart (skipped_files, unlisted_images).", CHECKS))
def source_pool(context: AssetExecutionContext, settings: PipelineSettings, duckdb: DuckDBResource,
                source: SourceResource):
    stage = Stage(ASSET, context, settings, duckdb)
    lazy = source.lazy(stage.policy)
    backend = lazy.get()  # its fingerprint (cheap) tells whether the category must be taken in again
    assert isinstance(backend, Source)
    options = settings.source_options(stage.policy)
    config_sha = sha256_json(source.config(settings))
    reasons: Counter[str] = Counter()
    notes = _intake_notes(backend, stage, options)
    kept = 0
    for category in stage.categories():
        with stage.report.timed(category.slug):
            intake, unchanged = _take_in(stage, backend, category, options, config_sha)
            kept += unchanged
        reasons.update(r["reason"] for r in intake.rejected)
        # stage_runs keeps the category's notes with its counts, for the run summary (queries.source_intake_notes).
        stage.report.record(category.slug, intake.n_in, len(intake.accepted), len(intake.rejected),
                     {"source": source.profile, **_notes_of(notes, category.slug)}, intake.accepted)
    checks = [counts_add_up(stage.report, "files"), no_duplicate_keys(stage.report, ["category", "image_sha256"])]
    return stage.result({"source": source.profile, "rejection_reasons": MetadataValue.json(dict(reasons)),
                         "categories_kept": kept,
                         **_notes_metadata(notes)}, checks)


def _take_in(stage: Stage, backend: Source, category: Category, options: SourceOptions, config_sha: str
             ) -> tuple[Intake, bool]:
    """The category's intake, committed: kept when the source is unchanged (same fingerprint, every stored
    file present), else taken in again; the fingerprint is saved after the rows (a run killed in between
    takes the category in again)."""
    base = {**stage.base_row(category.slug), "source_config_sha256": config_sha, "policy_sha256": stage.policy.sha256}
    started = time.monotonic()
    intake, unchanged = intake_category(stage.store, stage.images, backend, category, options, base, config_sha)
    if not unchanged:  # the run's terminal and log count what was read (a kept category reads nothing)
        stage.progress("intake", intake.n_in, intake.n_in, time.monotonic() - started)
    stage.store.replace_slice("source_images", {"category": category.slug}, intake.accepted)
    stage.store.replace_slice("source_rejections", {"category": category.slug}, intake.rejected)
    if not unchanged:
        queries.save_intake(stage.store, {**stage.base_row(category.slug), "source_config_sha256": config_sha,
                                          "fingerprint": intake.fingerprint, "n_in": intake.n_in})
    return intake, unchanged


def _intake_notes(backend: Source, stage: Stage, options: SourceOptions) -> dict[str, dict[str, Any]]:
    """Files the source left out on purpose (not images, not in the manifest), by category and '*'.

    An optional hook: a source that reads a user's folder has one, a generated pool has nothing to report.
    Read in the step, not memoized with the intake, so a reused intake still reports the folder as it is.
    """
    hook = getattr(backend, "intake_notes", None)
    return hook(stage.categories(), options) if hook else {}


def _notes_of(notes: dict[str, dict[str, Any]], category: str) -> dict[str, Any]:
    return {"intake": notes[category]} if category in notes else {}


def _notes_metadata(notes: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Whole-folder counts, with a few names, for the materialization."""
    folder = notes.get("*")
    if folder is None:
        return {}
    return {"skipped_files": folder["skipped_files"],
            "skipped_examples": MetadataValue.text(", ".join(folder["skipped_examples"]) or "none"),
            "unlisted_images": folder["unlisted_images"],
            "unlisted_examples": MetadataValue.text(", ".join(folder["unlisted_examples"]) or "none"),
            "intake_notes": MetadataValue.json({k: v for k, v in notes.items() if k != "*"})}
