"""What the export reads from the database: the benchmark pairs with their lineage, and the datasheet's figures.

Every query runs here, through the named queries of ``sp_assets.storage.release_queries``, before any
file is written.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import polars as pl
import pyarrow as pa

from sp_assets.core.guard_evaluation import pooled_intervals
from sp_assets.core.policy_variants import count_rows, pooled
from sp_assets.release.columns import arrow_type
from sp_assets.storage import Store
from sp_assets.storage import release_queries as queries
from sp_assets.storage.queries import policy_answers, variant_label_kinds

# Lineage columns that repeat a benchmark column under another name.
REDUNDANT_LINEAGE = {"source_path": "unsafe_path", "edited_path": "safe_path"}
# Benchmark columns renamed to the lineage view's names (same values).
BENCH_RENAMES = {"image_sha256": "source_sha256", "run_id": "split_run_id"}
# Columns never published, whatever a query selects: the hash of the file as the user gave it (with its
# EXIF and GPS) would let anyone holding that file confirm the person's photo is in the benchmark.
NEVER_PUBLISHED = frozenset({"original_sha256"})


@dataclass
class ExportInputs:
    """The rows and figures of one export. ``types``: column -> Arrow type, in the order the columns came."""

    pairs: list[dict[str, Any]] = field(default_factory=list)
    types: dict[str, pa.DataType] = field(default_factory=dict)
    has_controls: bool = False
    lookalikes: list[dict[str, Any]] = field(default_factory=list)  # safe sources of each category (hard negatives)
    lookalike_types: dict[str, pa.DataType] = field(default_factory=dict)
    yields: list[dict[str, Any]] = field(default_factory=list)
    reviews: list[dict[str, Any]] = field(default_factory=list)
    sources: list[dict[str, Any]] = field(default_factory=list)  # distinct (origin, recipe_json) of the pairs
    profiles_used: list[dict[str, Any]] = field(default_factory=list)
    policy_hashes: list[str] = field(default_factory=list)
    split_configs: list[str] = field(default_factory=list)
    verify_configs: list[dict[str, Any]] = field(default_factory=list)
    guards: list[str] = field(default_factory=list)
    guard_results: list[dict[str, Any]] = field(default_factory=list)  # guard_metrics_overall, all pairs
    # What intake removed from each exported source image (``source_images.metadata_removed``: comma-separated
    # kinds, '' for nothing, None where not recorded); None when the database has no such column.
    metadata_removed: list[str | None] | None = None
    # Policy variants: the policy pairs (view ``policy_pairs`` with image paths), their counts per category and
    # variant, and each guard's policy-pair figures pooled over categories (``core.policy_variants.pooled``).
    policy_pairs: list[dict[str, Any]] = field(default_factory=list)
    policy_pair_counts: list[dict[str, Any]] = field(default_factory=list)
    policy_metrics: list[dict[str, Any]] = field(default_factory=list)

    @property
    def origins(self) -> list[str]:
        """Where the exported sources came from ('demo', 'folder'), sorted; 'unknown' where not recorded."""
        return sorted({s.get("origin") or "unknown" for s in self.sources})

    @property
    def demo_photos_used(self) -> dict[str, int]:
        """Demo photograph key -> number of exported sources drawn on it, sorted by key."""
        photos: dict[str, int] = {}
        for s in self.sources:
            photo = _recipe_photo(s.get("recipe_json"))
            if photo:
                photos[photo] = photos.get(photo, 0) + 1
        return dict(sorted(photos.items()))


def _recipe_photo(recipe_json: str | None) -> str | None:
    if not recipe_json:
        return None
    try:
        return json.loads(recipe_json).get("photo")
    except ValueError:  # a recipe that is not JSON names no photo
        return None


def read_inputs(store: Store) -> ExportInputs:
    """Everything the export needs; empty inputs for a database without a benchmark."""
    tables = queries.table_columns(store)
    if "benchmark_split" not in tables:
        return ExportInputs()
    pairs, types = _benchmark(store)
    if "pair_lineage" in tables:
        types = _add_lineage(pairs, types, queries.pair_lineage(store))
    verify_configs = queries.verification_configs(store) if "verified_pairs" in tables else []
    lookalikes, lookalike_types = _lookalikes(store, tables)
    return ExportInputs(
        pairs=pairs,
        types=types,
        has_controls={"control_sha256", "control_path"} <= tables["benchmark_split"],
        lookalikes=lookalikes,
        lookalike_types=lookalike_types,
        yields=_yields(store, tables),
        reviews=queries.review_counts(store) if "review_decisions" in tables else [],
        sources=queries.exported_sources(store, bool(lookalikes)) if "source_images" in tables else [],
        profiles_used=queries.profiles_used(store, tables["pair_lineage"]) if "pair_lineage" in tables else [],
        policy_hashes=sorted({p.get("policy_sha256") for p in pairs if p.get("policy_sha256")}),
        split_configs=sorted({p.get("split_config_sha256") for p in pairs if p.get("split_config_sha256")}),
        verify_configs=verify_configs,
        guards=queries.guards_evaluated(store) if "guard_metrics" in tables else [],
        guard_results=_with_intervals(queries.guard_results(store), queries.guard_answers(store))
        if "guard_metrics" in tables else [],
        metadata_removed=_metadata_removed(store, tables, bool(lookalikes)),
        **_policy_variants(store, tables),
    )


def _policy_variants(store: Store, tables: dict[str, set[str]]) -> dict[str, Any]:
    if "variant_labels" not in tables:
        return {}
    answers = policy_answers(store) if "variant_predictions" in tables else []
    return {"policy_pairs": queries.policy_pairs(store), "policy_pair_counts": count_rows(variant_label_kinds(store)),
            "policy_metrics": pooled(answers)}


def _metadata_removed(store: Store, tables: dict[str, set[str]], with_lookalikes: bool) -> list[str | None] | None:
    if "metadata_removed" not in tables.get("source_images", set()):
        return None  # a database from before intake cleaned its images
    return [r["metadata_removed"] for r in queries.exported_source_metadata(store, with_lookalikes)]


def _benchmark(store: Store) -> tuple[list[dict[str, Any]], dict[str, pa.DataType]]:
    """The benchmark rows under the lineage view's column names, without the columns that vary between runs."""
    bench = queries.benchmark_pairs(store)
    types: dict[str, pa.DataType] = {}
    for name, dtype in bench.schema.items():
        t = arrow_type(dtype)
        if t is not None and name not in NEVER_PUBLISHED:
            types[BENCH_RENAMES.get(name, name)] = t
    pairs = [{BENCH_RENAMES.get(k, k): v for k, v in r.items() if BENCH_RENAMES.get(k, k) in types}
             for r in bench.to_dicts()]
    return pairs, types


def _lookalikes(store: Store, tables: dict[str, set[str]]) -> tuple[list[dict[str, Any]], dict[str, pa.DataType]]:
    """The look-alike rows and their column types, without the columns that vary between runs."""
    if "benchmark_lookalikes" not in tables:
        return [], {}
    frame = queries.benchmark_lookalikes(store, has_sources="source_images" in tables)
    types = {name: t for name, dtype in frame.schema.items()
             if (t := arrow_type(dtype)) is not None and name not in NEVER_PUBLISHED}
    rows = [{k: v for k, v in r.items() if k in types} for r in frame.to_dicts()]
    return rows, types


def _add_lineage(pairs: list[dict[str, Any]], types: dict[str, pa.DataType],
                 lineage: pl.DataFrame) -> dict[str, pa.DataType]:
    """Fill each pair's lineage columns in place; returns the column types in the lineage view's order."""
    lineage_types: dict[str, pa.DataType] = {}
    ordered: dict[str, pa.DataType] = {}
    for name, dtype in lineage.schema.items():
        t = arrow_type(dtype)
        if t is None or name in REDUNDANT_LINEAGE or name in NEVER_PUBLISHED:
            continue
        if name in types:
            ordered[name] = types[name]  # the benchmark's value wins; the lineage decides the order
        else:
            lineage_types[name] = ordered[name] = t
    by_pair: dict[tuple[str, str], dict[str, Any]] = {}
    for r in lineage.to_dicts():
        by_pair.setdefault((r["category"], r["pair_id"]), r)  # first of sorted rows, if a join repeats
    for p in pairs:
        found = by_pair.get((p["category"], p["pair_id"]), {})
        for name in lineage_types:
            p[name] = found.get(name)
        p["_has_lineage"] = bool(found)
    return {**ordered, **{k: v for k, v in types.items() if k not in ordered}}


def _yields(store: Store, tables: dict[str, set[str]]) -> list[dict[str, Any]]:
    """Verification yield per category and kind, with the sources stored and judged unsafe before it."""
    if "verified_pairs" not in tables:
        return []
    yields = queries.verification_yields(store, has_kind="kind" in tables["verified_pairs"])
    labels = {r["category"]: r for r in queries.label_counts(store)} if "policy_labels" in tables else {}
    stored = {r["category"]: r["n"] for r in queries.source_counts(store)} if "source_images" in tables else {}
    for y in yields:
        y.update({"stored": stored.get(y["category"]), "judged": labels.get(y["category"], {}).get("judged"),
                  "judged_unsafe": labels.get(y["category"], {}).get("unsafe")})
    return yields


def _with_intervals(results: list[dict[str, Any]], answers: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The pooled guard figures with their 95% intervals (``core.guard_evaluation.pooled_intervals``)."""
    intervals = pooled_intervals(answers)
    return [{**r, **intervals.get((r["guard"], r["pair_type"]), {})} for r in results]
