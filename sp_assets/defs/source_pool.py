"""Stage 1, ``source_pool``: the images each category starts from (the source profile's pool)."""

from collections import Counter

from dagster import AssetExecutionContext, MetadataValue, asset
from dagster_duckdb import DuckDBResource

from sp_assets.backends.base import Source
from sp_assets.core.hashing import sha256_json
from sp_assets.defs.resources import PipelineSettings, SourceResource
from sp_assets.defs.stage import Stage, asset_kwargs, check, counts_add_up, no_duplicate_keys
from sp_assets.execution.calls import source_call

ASSET = "source_pool"
CHECKS = [
    check(ASSET, f"{ASSET}_counts_add_up", "Every file that came in is accepted or rejected with a reason."),
    check(ASSET, f"{ASSET}_has_unique_keys", "No image appears twice in a category."),
]


@asset(**asset_kwargs(
    "Source images per category, stored content-addressed. Unusable files are quarantined in "
    "source_rejections with a reason; in = accepted + rejected.", CHECKS))
def source_pool(context: AssetExecutionContext, settings: PipelineSettings, duckdb: DuckDBResource,
                source: SourceResource):
    stage = Stage(ASSET, context, settings, duckdb)
    lazy = source.lazy(stage.policy)
    backend = lazy.get()  # its fingerprint (cheap) tells whether the category must be taken in again
    assert isinstance(backend, Source)
    options = settings.source_options(stage.policy)
    config_sha = sha256_json(source.config(settings))
    reasons: Counter[str] = Counter()
    for category in stage.categories():
        with stage.timed(category.slug):
            base = {**stage.base_row(category.slug), "source_config_sha256": config_sha,
                    "policy_sha256": stage.policy.sha256}
            # An unchanged source (same fingerprint, every stored file present) is not read again.
            work = lazy.work("intake", str(stage.images.root), category=category.slug, options=options, base=base)
            [(_, out)] = stage.memo.run(source_call(config_sha), work,
                                        [{"fingerprint": backend.fingerprint(category, options)}])
            intake = out.result.with_base(stage.base_row(category.slug))
            stage.store.replace_slice("source_images", {"category": category.slug}, intake.accepted)
            stage.store.replace_slice("source_rejections", {"category": category.slug}, intake.rejected)
        reasons.update(r["reason"] for r in intake.rejected)
        stage.record(category.slug, intake.n_in, len(intake.accepted), len(intake.rejected),
                     {"source": source.profile}, intake.accepted)
    checks = [counts_add_up(stage, "files"), no_duplicate_keys(stage, ["category", "image_sha256"])]
    return stage.result({"source": source.profile, "rejection_reasons": MetadataValue.json(dict(reasons)),
                         **stage.memo_report()}, checks)
