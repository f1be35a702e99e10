"""Stage 6, ``benchmark_split``: one pair per source and the category's look-alikes, split by photograph.

Candidates from every profile compete; each source contributes one accepted flip, chosen so that no
replacement text dominates the category's safe halves (least used first, then quality_score). A
photograph's split is a hash of its photo_id and the seed, the same in every category and run. The
look-alikes are the category's sources whose reference label is safe (hard negatives). The rules are
in ``core/splitting.py``.
"""

from typing import Any

import polars as pl
from dagster import AssetExecutionContext, MetadataValue, asset
from dagster_duckdb import DuckDBResource

from sp_assets.core import guard_evaluation as ge
from sp_assets.core import policy_variants as pv
from sp_assets.core.hashing import sha256_json
from sp_assets.core.reports import table
from sp_assets.core.splitting import (
    SPLITS, benchmark_rows, lookalike_rows, phrase_shares, photos_per_split, rows_in_two_splits,
    split_counts_of,
)
from sp_assets.defs.resources import JudgeResource, PipelineSettings
from sp_assets.defs.checks import check, check_result, no_duplicate_keys
from sp_assets.defs.stage import Stage, asset_kwargs
from sp_assets.execution import variants as run_variants
from sp_assets.storage import queries
from sp_assets.storage.files import atomic_write

ASSET = "benchmark_split"
CHECKS = [
    check(ASSET, f"{ASSET}_has_unique_keys", "One pair or look-alike per source image."),
    check(ASSET, "sources_in_one_split", "No source image appears in two splits."),
    check(ASSET, "photos_in_one_split", "No photograph appears in two splits, over pairs and look-alikes of every "
                                        "category in the database."),
]


@asset(deps=["verified_pairs"], **asset_kwargs(
    "Benchmark pairs (one accepted flip candidate per source over all profiles, the replacement texts spread "
    "evenly, with the best null-edit control of the same source and editor) and look-alikes (sources whose "
    "reference label is safe), split train / validation / test by photograph (the same split in every "
    "category); also written as Parquet under <data_root>/benchmark/.", CHECKS))
def benchmark_split(context: AssetExecutionContext, settings: PipelineSettings, duckdb: DuckDBResource,
                    judge: JudgeResource):
    stage = Stage(ASSET, context, settings, duckdb)
    split_config = settings.split_config()
    pairs: list[dict[str, Any]] = []
    lookalikes: list[dict[str, Any]] = []
    labels: list[dict[str, Any]] = []
    variants = settings.variants(stage.policy)
    for category in stage.categories():
        with stage.report.timed(category.slug):
            rows, looks = _category_rows(stage, category.slug, judge.profile, sha256_json(split_config))
            stage.store.replace_slice("benchmark_split", {"category": category.slug}, rows)
            stage.store.replace_slice("benchmark_lookalikes", {"category": category.slug}, looks)
            _write_parquet(rows, settings.root / "benchmark" / f"{category.slug}.parquet")
            _write_parquet(looks, settings.root / "benchmark" / "lookalikes" / f"{category.slug}.parquet")
            labelled = run_variants.labels(stage.memo, judge.lazy, judge.profile, variants, category,
                                           ge.rated_items(rows, looks), stage.base_row(category.slug),
                                           queries.variant_human_labels(stage.store, category.slug) if variants else {})
            stage.store.replace_slice("variant_labels", {"category": category.slug}, labelled)
        labels += labelled
        pairs += rows
        lookalikes += looks
        stage.report.record(category.slug, len(rows), len(rows), 0, {"split": split_config}, rows + looks)
    checks = [no_duplicate_keys(stage.report, ["category", "image_sha256"]), _one_split_check(pairs + lookalikes),
              _photo_check(queries.photos_in_two_splits(stage.store))]
    return stage.result({**_split_metadata(pairs, lookalikes, settings.split_fractions()),
                         "parquet": MetadataValue.path(str(settings.root / "benchmark")),
                         "split_config": MetadataValue.json(split_config),
                         **_variant_metadata(variants, labels), **stage.model_calls()}, checks)


def _category_rows(stage: Stage, category: str, judge_profile: str, split_sha256: str) -> tuple[list, list]:
    """The category's pairs and look-alikes, from its accepted candidates and its sources."""
    settings, base = stage.settings, stage.base_row(category)
    rows = benchmark_rows(base, queries.accepted_candidates(stage.store, category, "flip"),
                          queries.accepted_candidates(stage.store, category, "null"),
                          settings.seed, settings.split_fractions(), split_sha256)
    looks = lookalike_rows(base, queries.lookalike_sources(stage.store, category), [r["image_sha256"] for r in rows],
                           judge_profile, settings.seed, settings.split_fractions(), split_sha256)
    return rows, looks


def _one_split_check(rows: list[dict[str, Any]]):
    leaks = rows_in_two_splits(rows, "image_sha256")
    return check_result("sources_in_one_split", not leaks, "every source is in exactly one split" if not leaks
                        else f"{len(leaks)} sources in two splits, e.g. {leaks[:3]}")


def _photo_check(cross: list[dict[str, Any]]):
    """Over the whole database: categories split under another seed or method disagree with this run's."""
    if not cross:
        return check_result("photos_in_one_split", True, "every photograph is in exactly one split, over the "
                            "pairs and look-alikes of every category", n_photos_in_two_splits=0)
    categories = sorted({c for r in cross for c in r["categories"]})
    return check_result(
        "photos_in_one_split", False,
        f"{len(cross)} photographs are in two splits, e.g. {cross[0]['photo_id']} in {cross[0]['splits']}; "
        f"categories involved: {', '.join(categories)}. They were split with another seed or split method: "
        "materialize benchmark_split for all of them with the same settings.", n_photos_in_two_splits=len(cross))


def _split_metadata(pairs: list[dict], lookalikes: list[dict], fractions: dict[str, float]) -> dict[str, Any]:
    """Counts per category and split (pairs, controls, look-alikes), photographs per split, and how much
    of each category's safe halves its most common replacement text covers."""
    per_category = {c: split_counts_of([r for r in pairs if r["category"] == c],
                                       [r for r in lookalikes if r["category"] == c])
                    for c in sorted({r["category"] for r in pairs + lookalikes})}
    splits = table(["category", *SPLITS, "with control", *(f"look-alikes {s}" for s in SPLITS)],
                   [(c, *(v[s] for s in SPLITS), v["controlled"], *(v[f"lookalikes_{s}"] for s in SPLITS))
                    for c, v in per_category.items()], "l" + "r" * 7)
    shares = phrase_shares(pairs)
    photos = photos_per_split(pairs + lookalikes, fractions)
    return {
        "splits": MetadataValue.md(splits),
        "replacement_spread": MetadataValue.md(table(
            ["category", "pairs", "replacement texts", "most common", "its share"],
            [(c, v["pairs"], v["replacements"], v["top_replacement"] or "n/a", f"{v['top_share']:.0%}")
             for c, v in shares.items()], "lrrlr")),
        "top_replacement_share": max((v["top_share"] for v in shares.values()), default=0.0),
        "photos_per_split": MetadataValue.json(photos),
        "lookalikes": len(lookalikes),
    }


def _variant_metadata(variants: list[pv.Variant], labels: list[dict[str, Any]]) -> dict[str, Any]:
    """The run's policy variants and, per category and variant, the images labelled and the policy pairs."""
    if not variants:
        return {"policy_variants": MetadataValue.text(f"none (set {pv.VARIANTS_ENV_VAR} to label the benchmark "
                                                      "under other policies too)")}
    counted = pv.count_rows(labels)
    return {
        "policy_variants": MetadataValue.json({v.name: {"file": str(v.policy.path), "rules_sha256": v.policy.rules_sha256,
                                                        "categories": {k: c.slug for k, c in v.by_main_slug.items()}}
                                               for v in variants}),
        "policy_pairs": MetadataValue.md(pv.count_table(counted)),
        "n_policy_pairs": sum(r["policy_pairs"] for r in counted),
    }


def _write_parquet(rows: list[dict], dest) -> None:
    """Rows as one Parquet file (without the write time, so equal rows give equal files)."""
    frame = pl.DataFrame(rows, schema_overrides={"created_at": pl.Datetime("us")}).drop(["created_at"]) if rows \
        else pl.DataFrame()
    atomic_write(dest, lambda tmp: frame.write_parquet(tmp))
