"""Stage 6, ``benchmark_split``: the best accepted pair per source, split train / validation / test by source.

Candidates from every profile compete: for each source image the accepted candidate with the
highest quality_score wins (ties broken by candidate id). Sources are ordered by a seeded hash and
cut into splits with exact per-category proportions (largest remainder), so each category is
stratified, no source is in two splits, and the same inputs and seed give the same split.
"""


import hashlib
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import polars as pl
from dagster import AssetExecutionContext, MetadataValue, asset
from dagster_duckdb import DuckDBResource

from sp_assets.release import export_benchmark
from sp_assets.core.hashing import sha256_json
from sp_assets.core.splitting import SPLITS, assign_splits
from sp_assets.defs.resources import PipelineSettings
from sp_assets.defs.stage import Stage, asset_kwargs, check, check_result, no_duplicate_keys

ASSET = "benchmark_split"
CHECKS = [
    check(ASSET, f"{ASSET}_has_unique_keys", "One pair per source image."),
    check(ASSET, "sources_in_one_split", "No source image appears in two splits."),
]


def write_parquet(frame: pl.DataFrame, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=".tmp-", suffix=".parquet")
    os.close(fd)
    frame.write_parquet(tmp)
    os.replace(tmp, dest)


@asset(deps=["verified_pairs"], **asset_kwargs(
    "Benchmark pairs (best accepted flip candidate per source over all profiles, with the best null-edit "
    "control of the same source and editor), split train / validation / test grouped by source and "
    "stratified by category; also written as Parquet under <data_root>/benchmark/.", CHECKS))
def benchmark_split(context: AssetExecutionContext, settings: PipelineSettings, duckdb: DuckDBResource):
    stage = Stage(ASSET, context, settings, duckdb)
    fractions = {"train": settings.split_train, "validation": settings.split_validation, "test": settings.split_test}
    split_sha = settings.split_config_sha256()
    per_split: dict[str, dict[str, int]] = {}
    files: list[str] = []
    for category in stage.categories():
        with stage.timed(category.slug):
            accepted = stage.store.query(
                "SELECT v.candidate_id, v.image_sha256, v.edited_sha256, v.quality_score, v.judge_profile, "
                "v.writer_profile, v.editor_profile, s.image_path AS unsafe_path, e.edited_path AS safe_path, "
                "i.instruction "
                "FROM verified_pairs v "
                "JOIN source_images s ON s.category = v.category AND s.image_sha256 = v.image_sha256 "
                "JOIN edited_images e ON e.category = v.category AND e.candidate_id = v.candidate_id "
                "  AND e.judge_profile = v.judge_profile AND e.writer_profile = v.writer_profile "
                "  AND e.editor_profile = v.editor_profile "
                "JOIN edit_instructions i ON i.category = e.category AND i.instruction_id = e.instruction_id "
                "  AND i.judge_profile = e.judge_profile AND i.writer_profile = e.writer_profile "
                "WHERE v.category = ? AND v.accepted AND v.kind = ? "
                "ORDER BY v.image_sha256, v.quality_score DESC, v.candidate_id",
                [category.slug, "flip"]).to_dicts()
            # Controls: the best accepted null edit of each source, per editor profile.
            controls: dict[tuple[str, str], dict[str, Any]] = {}
            for row in stage.store.query(
                "SELECT v.candidate_id, v.image_sha256, v.editor_profile, v.judge_profile, v.writer_profile, "
                "e.edited_sha256, e.edited_path FROM verified_pairs v "
                "JOIN edited_images e ON e.category = v.category AND e.candidate_id = v.candidate_id "
                "  AND e.judge_profile = v.judge_profile AND e.writer_profile = v.writer_profile "
                "  AND e.editor_profile = v.editor_profile "
                "WHERE v.category = ? AND v.accepted AND v.kind = ? "
                "ORDER BY v.image_sha256, v.quality_score DESC, v.candidate_id", [category.slug, "null"]).to_dicts():
                controls.setdefault((row["image_sha256"], row["editor_profile"]), row)
            best: dict[str, dict[str, Any]] = {}
            n_candidates: dict[str, int] = {}
            for row in accepted:
                n_candidates[row["image_sha256"]] = n_candidates.get(row["image_sha256"], 0) + 1
                best.setdefault(row["image_sha256"], row)  # first row is the best: see ORDER BY
            splits = assign_splits(list(best), settings.seed, fractions)
            rows = []
            for sha, row in sorted(best.items()):
                control = controls.get((sha, row["editor_profile"])) or {}
                rows.append({
                    **stage.base_row(category.slug), "pair_id": sha256_json([sha, row["edited_sha256"]]),
                    "split": splits[sha], "image_sha256": sha, "unsafe_path": row["unsafe_path"],
                    "candidate_id": row["candidate_id"], "safe_sha256": row["edited_sha256"],
                    "safe_path": row["safe_path"], "instruction": row["instruction"],
                    "judge_profile": row["judge_profile"], "writer_profile": row["writer_profile"],
                    "editor_profile": row["editor_profile"], "quality_score": row["quality_score"],
                    "n_accepted_candidates": n_candidates[sha], "split_config_sha256": split_sha,
                    "control_candidate_id": control.get("candidate_id"), "control_sha256": control.get("edited_sha256"),
                    "control_path": control.get("edited_path"),
                })
            stage.store.replace_slice("benchmark_split", {"category": category.slug}, rows)
            dest = settings.root / "benchmark" / f"{category.slug}.parquet"
            frame = pl.DataFrame(rows, schema_overrides={"created_at": pl.Datetime("us")}) if rows else pl.DataFrame()
            write_parquet(frame.drop(["created_at"]) if rows else frame, dest)
            files.append(str(dest))
        per_split[category.slug] = {name: sum(1 for r in rows if r["split"] == name) for name in SPLITS}
        per_split[category.slug]["controlled"] = sum(1 for r in rows if r["control_sha256"])
        stage.record(category.slug, len(best), len(rows), 0, {"split": settings.split_config()}, rows)
    seen: dict[str, str] = {}
    leaks = []
    for r in stage.written:
        if seen.setdefault(r["image_sha256"], r["split"]) != r["split"]:
            leaks.append(r["image_sha256"])
    checks = [
        no_duplicate_keys(stage, ["category", "image_sha256"]),
        check_result("sources_in_one_split", not leaks,
                     "every source is in exactly one split" if not leaks else f"{len(leaks)} sources in two splits"),
    ]
    # The release: Parquet with image columns, WebDataset tars, datasheet and gallery, over every
    # category in the database (not only this run's), rebuilt whole so it never mixes versions.
    report = export_benchmark(stage.store, stage.images, settings.root / "export", policy=stage.policy,
                              profiles_info={}, thresholds=settings.thresholds(), show_unsafe=settings.preview_unsafe)
    table = ["| category | train | validation | test | with control |", "|---|---:|---:|---:|---:|"]
    table += [f"| {c} | {v['train']} | {v['validation']} | {v['test']} | {v['controlled']} |" for c, v in per_split.items()]
    return stage.result({"splits": MetadataValue.md("\n".join(table)),
                         "parquet": MetadataValue.path(str(settings.root / "benchmark")),
                         "split_config": MetadataValue.json(settings.split_config()),
                         "export": MetadataValue.md(report.markdown()),
                         "export_dir": MetadataValue.path(str(report.out_dir)),
                         "gallery": MetadataValue.path(str(report.out_dir / "gallery" / "index.html"))}, checks)
