"""The model-time floor of a cold run: the bare backend and metric calls the graph needs, made once each on
the distinct inputs of a finished run, with no Dagster and no database in between.

Counted: loading every model once, the source backend making its images, each distinct image read
and embedded once, each candidate edited once and its result stored as the pipeline stores it, the
preservation metrics, the guards, the text embeddings and the probe's fits. Not counted: Python imports.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np


def _inputs(store: Any) -> dict[str, list[dict[str, Any]]]:
    q = lambda sql: store.query(sql).to_dicts()  # noqa: E731 - benchmark reads, not pipeline queries
    return {
        "sources": q("SELECT category, image_sha256, image_path FROM source_images ORDER BY category, image_sha256"),
        "labels": q("SELECT l.*, s.image_path FROM policy_labels l JOIN source_images s USING (category, image_sha256) "
                    "WHERE l.rating = 'unsafe' ORDER BY l.category, l.image_sha256"),
        "jobs": q("SELECT e.candidate_id, e.category, e.seed, e.edited_sha256, e.edited_path, e.region_json, "
                  "e.image_sha256, s.image_path, i.instruction, i.target_json, i.keep, i.variant FROM edited_images e "
                  "JOIN edit_instructions i USING (category, instruction_id, judge_profile, writer_profile) "
                  "JOIN source_images s ON s.category = e.category AND s.image_sha256 = e.image_sha256 "
                  "WHERE e.status = 'ok' ORDER BY e.candidate_id"),
        "halves": q("SELECT category, image_sha256 AS sha, unsafe_path AS path FROM benchmark_split UNION "
                    "SELECT category, safe_sha256, safe_path FROM benchmark_split UNION "
                    "SELECT category, control_sha256, control_path FROM benchmark_split WHERE control_sha256 IS NOT NULL"),
    }


def _batches(items: list, size: int = 16):
    for i in range(0, len(items), size):
        yield items[i:i + size]


def model_time_floor(data: Path, env: dict[str, str]) -> float:
    """Seconds of model and metric work on the distinct inputs of the run stored under ``data``."""
    os.environ["SP_PROFILES_DIR"] = env["SP_PROFILES_DIR"]
    from sp_assets.backends import registry
    from sp_assets.backends.base import SourceOptions
    from sp_assets.core.record_types import Instruction, TextRegion, Verdict
    from sp_assets.backends.profiles import get_profile
    from sp_assets.core.policy import load_active_policy
    from sp_assets.core.probe import text_embedding_features
    from sp_assets.core.verification import measure_preservation
    from sp_assets.storage import ImageStore, Store

    policy = load_active_policy()
    inputs = _inputs(Store.at(data / "safetypairs.duckdb", read_only=True))
    images = ImageStore(data)
    scratch = ImageStore(data.parent / "floor-scratch")
    t0 = time.perf_counter()
    build = lambda role, name: registry.build(get_profile(role, name), policy)  # noqa: E731
    source = build("source", "demo")
    options = SourceOptions(policy=policy)
    for cat in policy.categories:
        for item in source.scan(cat, options):
            scratch.put_bytes(item.data, item.suffix)
    judge, writer = build("judge", "scene_text"), build("writer", "template")
    editor, embedder, guard = build("editor", "text_region"), build("embedder", "efficientnet_lite0"), \
        build("guard", "open_nsfw")
    # Each distinct image read once (sources and edits), then decided per category.
    paths = {s["image_sha256"]: s["image_path"] for s in inputs["sources"]}
    paths.update({j["edited_sha256"]: j["edited_path"] for j in inputs["jobs"]})
    readings = {}
    for batch in _batches(sorted(paths)):
        readings.update(zip(batch, judge.read([images.open(paths[s]) for s in batch])))
    for cat in policy.categories:
        shas = [s["image_sha256"] for s in inputs["sources"] if s["category"] == cat.slug]
        shas += [j["edited_sha256"] for j in inputs["jobs"] if j["category"] == cat.slug]
        for batch in _batches(shas):
            judge.decide([readings[s] for s in batch], cat)
    for label in inputs["labels"]:
        verdict = Verdict(label["rating"], label["judged_category"] or "", label["score"], label["rationale"] or "",
                          label["raw_output"] or "",
                          tuple(TextRegion.from_dict(d) for d in json.loads(label["regions_json"] or "[]")))
        im = images.open(label["image_path"])
        writer.write(im, verdict, policy.category(label["category"]), 2, 0)
        writer.write_null(im, verdict, policy.category(label["category"]), 0)
    for batch in _batches(inputs["jobs"]):
        for result in editor.edit([images.open(j["image_path"]) for j in batch],
                                  [Instruction(j["instruction"], json.loads(j["target_json"]), j["keep"] or "",
                                               j["variant"]) for j in batch], [j["seed"] for j in batch]):
            scratch.put_image(result.image)
    for j in inputs["jobs"]:
        measure_preservation(images.open(j["image_path"]), images.open(j["edited_path"]), j["region_json"], 0.0)
    for batch in _batches(sorted(paths)):  # every source and edit embedded once
        embedder.embed([images.open(paths[s]) for s in batch])
    halves = {h["sha"]: h["path"] for h in inputs["halves"]}
    for batch in _batches(sorted(halves)):
        guard.read([images.open(halves[s]) for s in batch])
    texts = sorted({" ".join(r["text"] for r in reading) for reading in readings.values()})
    text_embedding_features(texts)
    return time.perf_counter() - t0 + _probe_seconds(inputs, np.random.default_rng(0))


def _probe_seconds(inputs: dict[str, list[dict[str, Any]]], rng: np.random.Generator) -> float:
    """The probe experiment's own fitting, on features of the real shapes (1280 + 384 dims)."""
    from sp_assets.core.probe import run_probe_experiment

    n_pairs = max(2, len(inputs["halves"]) // 3)
    m = 2 * max(1, n_pairs // 4)
    X = lambda n: rng.normal(size=(n, 1664)).astype(np.float32)  # noqa: E731
    t0 = time.perf_counter()
    for _ in range(2):  # image and image+text features
        run_probe_experiment(X(8), [1] * 4 + [0] * 4, X(n_pairs), X(n_pairs), X(80), [1, 0] * 40,
                             {"heldout": (X(m), [1, 0] * (m // 2), None)}, seeds=range(10))
    return time.perf_counter() - t0
