"""Stage 6, ``benchmark_split``: the best accepted pair per source, split train / validation / test by source.

Candidates from every profile compete: for each source image the accepted candidate with the highest
quality_score wins (ties broken by candidate id); the rules are in ``core/splitting.py``.
"""

import polars as pl
from dagster import AssetExecutionContext, MetadataValue, asset
from dagster_duckdb import DuckDBResource

from sp_assets.core.reports import split_table
from sp_assets.core.splitting import benchmark_rows, sources_in_two_splits, split_counts_of
from sp_assets.defs.resources import PipelineSettings
from sp_assets.defs.stage import Stage, asset_kwargs, check, check_result, no_duplicate_keys
from sp_assets.release import export_benchmark
from sp_assets.storage import queries
from sp_assets.storage.files import atomic_write

ASSET = "benchmark_split"
CHECKS = [
    check(ASSET, f"{ASSET}_has_unique_keys", "One pair per source image."),
    check(ASSET, "sources_in_one_split", "No source image appears in two splits."),
]


@asset(deps=["verified_pairs"], **asset_kwargs(
    "Benchmark pairs (best accepted flip candidate per source over all profiles, with the best null-edit "
    "control of the same source and editor), split train / validation / test grouped by source and "
    "stratified by category; also written as Parquet under <data_root>/benchmark/.", CHECKS))
def benchmark_split(context: AssetExecutionContext, settings: PipelineSettings, duckdb: DuckDBResource):
    stage = Stage(ASSET, context, settings, duckdb)
    per_split: dict[str, dict[str, int]] = {}
    for category in stage.categories():
        with stage.timed(category.slug):
            rows = benchmark_rows(stage.base_row(category.slug),
                                  queries.accepted_candidates(stage.store, category.slug, "flip"),
                                  queries.accepted_candidates(stage.store, category.slug, "null"),
                                  settings.seed, settings.split_fractions(), settings.split_config_sha256())
            stage.store.replace_slice("benchmark_split", {"category": category.slug}, rows)
            _write_parquet(rows, settings.root / "benchmark" / f"{category.slug}.parquet")
        per_split[category.slug] = split_counts_of(rows)
        stage.record(category.slug, len(rows), len(rows), 0, {"split": settings.split_config()}, rows)
    leaks = sources_in_two_splits(stage.written)
    checks = [no_duplicate_keys(stage, ["category", "image_sha256"]),
              check_result("sources_in_one_split", not leaks,
                           "every source is in exactly one split" if not leaks else f"{len(leaks)} sources in two splits")]
    # The release: Parquet with image columns, WebDataset tars, datasheet and gallery, over every
    # category in the database (not only this run's), rebuilt whole so it never mixes versions.
    report = export_benchmark(stage.store, stage.images, settings.root / "export", policy=stage.policy,
                              profiles_info={}, thresholds=settings.thresholds(), show_unsafe=settings.preview_unsafe)
    return stage.result({"splits": MetadataValue.md(split_table(per_split)),
                         "parquet": MetadataValue.path(str(settings.root / "benchmark")),
                         "split_config": MetadataValue.json(settings.split_config()),
                         "export": MetadataValue.md(report.markdown()),
                         "export_dir": MetadataValue.path(str(report.out_dir)),
                         "gallery": MetadataValue.path(str(report.out_dir / "gallery" / "index.html"))}, checks)


def _write_parquet(rows: list[dict], dest) -> None:
    """The category's pairs as one Parquet file (without the write time, so equal pairs give equal files)."""
    frame = pl.DataFrame(rows, schema_overrides={"created_at": pl.Datetime("us")}).drop(["created_at"]) if rows \
        else pl.DataFrame()
    atomic_write(dest, lambda tmp: frame.write_parquet(tmp))
