"""The whole graph on two categories of the demo pool, in a temporary folder, and run again."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
from dagster import DagsterInstance

from sp_assets.defs.report import VOLATILE_COLUMNS
from sp_assets.storage import SCHEMA
from tests.conftest import SHARED_RANGE, assert_same_rows, run_graph, store_at

FIRST, LAST = SHARED_RANGE
TABLES = [t for t in SCHEMA if t != "stage_runs"]


def _snapshot(data: Path) -> dict[str, list[dict]]:
    store = store_at(data)
    out = {}
    for table in TABLES:
        frame = store.query(f"SELECT * FROM {table}")
        frame = frame.drop([c for c in frame.columns if c in VOLATILE_COLUMNS])
        out[table] = sorted(frame.to_dicts(), key=lambda r: json.dumps(r, sort_keys=True, default=str))
    return out


@pytest.fixture(scope="module")
def graph(shared_graph, tmp_path_factory):
    """The session's graph (the first run) and a second run of it on a copy."""
    data = shared_graph.copy_to(tmp_path_factory.mktemp("graph"))
    snap1 = _snapshot(data)
    second = run_graph(data, FIRST, LAST, instance=DagsterInstance.ephemeral())
    return data, shared_graph.result, second, snap1, _snapshot(data)


def test_every_stage_wrote_both_categories(graph):
    data, first, *_ = graph
    store = store_at(data)
    for table in ["source_images", "policy_labels", "edit_instructions", "edited_images", "verified_pairs",
                  "benchmark_split", "guard_metrics"]:
        cats = set(store.query(f"SELECT DISTINCT category FROM {table}")["category"].to_list())
        assert cats == {FIRST, LAST}, table
    keys = {m.asset_key.path[0] for m in first.get_asset_materialization_events()}
    assert len(keys) == 7
    failed = [c.check_name for c in first.get_asset_check_evaluations() if not c.passed]
    assert failed == []


def test_pairs_flip_the_label_and_keep_the_rest(graph):
    data, *_ = graph
    store = store_at(data)
    pairs = store.query("SELECT * FROM verified_pairs WHERE accepted AND kind = 'flip'").to_dicts()
    assert pairs, "the demo should yield pairs"
    for p in pairs:
        assert p["source_rating"] == "unsafe" and p["edit_rating"] == "safe"
        assert p["sizes_match"] and p["ssim_outside"] >= 0.95 and p["embedding_cosine"] >= 0.8
    rejected = store.query("SELECT * FROM verified_pairs WHERE NOT accepted").to_dicts()
    assert all(r["reject_reason"] for r in rejected)


def test_split_is_grouped_by_source_and_written_as_parquet(graph):
    data, *_ = graph
    store = store_at(data)
    split = store.query("SELECT * FROM benchmark_split")
    assert split["image_sha256"].n_unique() == len(split)
    for cat in (FIRST, LAST):
        frame = pl.read_parquet(data / "benchmark" / f"{cat}.parquet")
        assert set(frame["pair_id"]) == set(split.filter(pl.col("category") == cat)["pair_id"])
        for rel in frame["unsafe_path"].to_list() + frame["safe_path"].to_list():
            assert (data / rel).is_file()


def test_lineage_walks_back_from_every_pair(graph):
    data, first, second, *_ = graph
    store = store_at(data)
    lineage = store.query("SELECT * FROM pair_lineage").to_dicts()
    assert len(lineage) == len(store.query("SELECT * FROM benchmark_split"))
    for row in lineage:
        for col in ("source_file", "source_path", "policy_sha256", "judge_profile", "judge_config_sha256",
                    "judge_raw_output", "instruction", "editor_profile", "editor_config_sha256", "seed",
                    "edited_path", "source_run_id", "label_run_id", "instruction_run_id", "edit_run_id",
                    "verify_run_id", "split_run_id"):
            assert row[col] is not None, col
        # The second run rewrote every row but reused the edits the first run computed.
        assert row["source_run_id"] == row["split_run_id"] == second.run_id
        assert row["edit_run_id"] == first.run_id
        assert json.loads(row["target_json"])["replacement"] in row["instruction"]


def test_guard_metrics_cover_both_guards(graph):
    data, *_ = graph
    store = store_at(data)
    got = store.query("SELECT DISTINCT guard FROM guard_metrics ORDER BY guard")["guard"].to_list()
    assert got == ["edited_only", "ocr_blocklist", "ocr_toxicity", "open_nsfw", "scene_text"]
    pairs = store.query("SELECT count(*) FROM benchmark_split").item()
    controls = store.query("SELECT count(control_sha256) FROM benchmark_split").item()
    lookalikes = store.query("SELECT count(*) FROM benchmark_lookalikes").item()
    per_guard = dict(store.query("SELECT guard, count(*) FROM guard_predictions GROUP BY guard").rows())
    assert per_guard == {g: 2 * pairs + controls + lookalikes for g in got}
    # The default judge already rated every image while labelling and verifying: reused, not re-read.
    reuse = dict(store.query("SELECT guard, count(reused_from) FROM guard_predictions GROUP BY guard").rows())
    assert reuse == {"scene_text": 2 * pairs + controls + lookalikes, "open_nsfw": 0, "edited_only": 0,
                     "ocr_toxicity": 0, "ocr_blocklist": 0}
    selected = dict(store.query("SELECT guard, bool_or(selected_pairs) FROM guard_metrics GROUP BY guard").rows())
    assert selected == {g: g == "scene_text" for g in got}


def test_control_pairs_are_edited_and_still_unsafe(graph):
    data, *_ = graph
    store = store_at(data)
    rows = store.query(
        "SELECT b.editor_profile, v.kind, v.edit_rating, v.editor_profile AS control_editor, v.image_sha256, b.image_sha256 AS src "
        "FROM benchmark_split b JOIN verified_pairs v ON v.candidate_id = b.control_candidate_id AND v.category = b.category"
    ).to_dicts()
    total = store.query("SELECT count(*) FROM benchmark_split").item()
    assert rows and len(rows) >= total * 0.8
    for r in rows:
        assert r["kind"] == "null" and r["edit_rating"] == "unsafe"
        assert r["control_editor"] == r["editor_profile"] and r["image_sha256"] == r["src"]


def test_edited_only_classifier_is_at_chance_on_controlled_pairs(graph):
    data, *_ = graph
    store = store_at(data)
    got = {r["pair_type"]: r for r in store.query(
        "SELECT pair_type, sum(n_pairs) AS n, sum(acc_unsafe * n_pairs) / sum(n_pairs) AS acc_unsafe, "
        "sum(acc_safe * n_pairs) / sum(n_pairs) AS acc_safe, sum(pair_accuracy * n_pairs) / sum(n_pairs) AS pair_acc "
        "FROM guard_metrics WHERE guard = 'edited_only' AND split = 'all' AND n_pairs > 0 GROUP BY pair_type").to_dicts()}
    assert got["original"]["pair_acc"] == 1.0
    overall = dict(store.query("SELECT pair_type, pair_accuracy FROM guard_metrics_overall "
                               "WHERE guard = 'edited_only' AND split = 'all'").rows())
    assert overall == {"original": 1.0, "controlled": 0.0}
    controlled = got["controlled"]
    assert (controlled["acc_unsafe"] + controlled["acc_safe"]) / 2 == 0.5 and controlled["pair_acc"] == 0.0


def test_rematerializing_gives_the_same_rows(graph):
    _, first, second, snap1, snap2 = graph
    assert_same_rows(snap1, snap2)
    mat = {m.asset_key.path[0]: m for m in second.asset_materializations_for_node("edited_images")}
    meta = mat["edited_images"].metadata
    assert meta["computed"].value == 0 and meta["reused_from_cache"].value > 0


def test_yield_is_reported_per_category_and_profile(graph):
    data, first, *_ = graph
    meta = first.asset_materializations_for_node("verified_pairs")[0].metadata
    assert "| o1_hate | text_region | flip |" in meta["yield_by_profile"].value
    assert "| o2_violence | text_region | null |" in meta["yield_by_profile"].value
    view = store_at(data).query("SELECT sum(attempts) FROM yield_by_profile").item()
    assert view == store_at(data).query("SELECT count(*) FROM verified_pairs").item()


def test_preview_blurs_unsafe_halves_by_default(graph):
    _, first, *_ = graph
    mat = first.asset_materializations_for_node("verified_pairs")[0]
    assert "blurred" in mat.metadata["preview"].value


def test_guard_metrics_reports_figures_and_the_probe(graph):
    data, first, *_ = graph
    meta = first.asset_materializations_for_node("guard_metrics")[0].metadata
    assert meta["figure_roc"].value.startswith("![roc](data:image/png;base64,")
    assert "figure_error_vs_similarity" in meta
    # The tiny test pool is too small for the probe; it says why instead of failing.
    rows = store_at(data).query("SELECT count(*) FROM probe_results").item()
    assert rows > 0 or meta["probe"].value.startswith("skipped: ")
