"""Memoized model calls: an unchanged re-run makes none, a missing file is recomputed, a policy edit redoes
only what reads the policy. Calls are counted by each step (its ``model_calls`` metadata)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from dagster import DagsterInstance

from sp_assets.backends import registry
from sp_assets.core.judge_examples import examples_path
from sp_assets.core.policy import DEFAULT_POLICY_PATH
from tests.conftest import SHARED_RANGE, assert_same_rows, model_calls_made, run_graph, store_at, total_calls
from tests.cli_runs import cli_env, run_to_end
from tests.test_crash_safety import _snapshot

FIRST, LAST = SHARED_RANGE


def _fresh_process_state() -> None:
    """What a new process starts with: no model loaded."""
    registry.clear_cache()
    registry.LOAD_COUNTS.clear()


@pytest.fixture(scope="module")
def graph(shared_graph, tmp_path_factory):
    """A copy of the session's graph (these tests run it again and delete files) and its cold call counts."""
    return shared_graph.copy_to(tmp_path_factory.mktemp("memo")), DagsterInstance.ephemeral(), shared_graph.cold_calls


def test_an_unchanged_rerun_makes_no_model_call_and_loads_no_model(graph):
    data, instance, cold = graph
    assert cold["policy_labels"].get("reader", 0) > 0 and cold["edited_images"].get("editor", 0) > 0
    before = _snapshot(data / "safetypairs.duckdb")
    _fresh_process_state()
    again = model_calls_made(run_graph(data, FIRST, LAST, instance=instance))
    assert set(again) == set(cold) and total_calls(again) == 0, again
    assert dict(registry.LOAD_COUNTS) == {"source:demo": 1}  # the source profile is read; no model loads
    assert_same_rows(before, _snapshot(data / "safetypairs.duckdb"))


def test_scene_text_is_read_once_per_image_for_every_category(graph):
    data, _, cold = graph
    store = store_at(data)
    distinct_images = store.query(
        "SELECT count(DISTINCT image_sha256) FROM (SELECT image_sha256 FROM source_images UNION ALL "
        "SELECT edited_sha256 FROM edited_images WHERE status = 'ok')").item()
    made = cold["policy_labels"].get("reader", 0) + cold["verified_pairs"].get("reader", 0)
    assert made == distinct_images
    # The scene-text readings are made by the stages that judge (open_nsfw's own readings come later).
    reads = store.query("SELECT count(*) FROM model_calls WHERE role = 'reader' "
                        "AND stage IN ('policy_labels', 'verified_pairs')").item()
    assert reads == distinct_images


def test_a_missing_image_file_is_recomputed_not_trusted(graph):
    data, instance, _ = graph
    store = store_at(data)
    path = store.query("SELECT edited_path FROM edited_images WHERE status = 'ok' ORDER BY candidate_id LIMIT 1").item()
    before = _snapshot(data / "safetypairs.duckdb")
    (data / path).unlink()
    _fresh_process_state()
    made = model_calls_made(run_graph(data, FIRST, LAST, instance=instance, selection=["edited_images"]))
    assert made == {"edited_images": {"editor": 1}}, made
    assert (data / path).is_file()  # the same bytes, so the same content-addressed name
    assert _snapshot(data / "safetypairs.duckdb") == before


def test_one_more_judge_example_redoes_only_the_scene_text_decisions(tmp_path):
    """The examples file is read by the scene-text judge alone: one more row redoes its decisions and what
    follows from a changed decision, and keeps every reading, embedding, measurement and edit."""
    policy = tmp_path / "policy" / DEFAULT_POLICY_PATH.name
    policy.parent.mkdir()
    shutil.copy(DEFAULT_POLICY_PATH, policy)  # the same rules, byte for byte
    row = {"text": "SPRING FLOWER MARKET ON SUNDAY", "label": "allowed", "category": FIRST}
    examples_path(policy).write_bytes(examples_path(DEFAULT_POLICY_PATH).read_bytes() + (json.dumps(row) + "\n").encode())
    data = tmp_path / "data"
    env = cli_env(tmp_path / "home", data)
    parts = ["--partition", FIRST]
    select = "source_pool,policy_labels,edit_instructions,edited_images,verified_pairs"
    run_to_end(env, parts, tmp_path / "first.log", select=select)
    first = _computed_by_role(data)
    before = _writer_inputs(data)
    intakes = store_at(data).query("SELECT * FROM source_intakes").rows()
    run_to_end({**env, "SP_POLICY": str(policy)}, parts, tmp_path / "second.log", select=select)
    second = {role: n - first.get(role, 0) for role, n in _computed_by_role(data).items()}
    # Every scene-text decision is taken again (its classifier learned from one more row)...
    assert second.get("judge", 0) > 0
    # ... and nothing that does not read the examples: readings, embeddings, measurements, sources.
    assert second.get("reader", 0) == 0 and second.get("embedder", 0) == 0 and second.get("metrics", 0) == 0
    assert store_at(data).query("SELECT * FROM source_intakes").rows() == intakes  # sources not taken in again
    # A writer is asked again only where the judge's finding on that source changed.
    after = _writer_inputs(data)
    changed = sum(1 for key, finding in after.items() if before.get(key) != finding)
    assert second.get("writer", 0) == changed, (second, changed)
    if changed == 0:
        assert second.get("editor", 0) == 0


def _writer_inputs(data: Path) -> dict[str, tuple]:
    """The judge's finding on each unsafe source, as the writer receives it."""
    rows = store_at(data).query(
        "SELECT image_sha256, rating, judged_category, score, rationale, regions_json, raw_output FROM policy_labels "
        "WHERE rating = 'unsafe'").rows()
    return {r[0]: tuple(r[1:]) for r in rows}


def _computed_by_role(data: Path) -> dict[str, int]:
    return dict(store_at(data).query("SELECT role, count(*) FROM model_calls GROUP BY ALL").rows())
