"""Memoized model calls: an unchanged re-run makes none, a missing file is recomputed, a policy edit redoes
only what reads the policy. Calls are counted at the backends themselves (backends.base.MODEL_CALLS)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from dagster import DagsterInstance

from sp_assets.backends import registry
from sp_assets.backends.base import MODEL_CALLS
from sp_assets.core.policy import DEFAULT_POLICY_PATH
from tests.conftest import run_graph, store_at
from tests.test_crash_safety import _env, _run, _snapshot

FIRST, LAST = "o1_hate", "o2_violence"


def _fresh_process_state() -> None:
    """What a new process starts with: no model loaded, no call counted."""
    registry.clear_cache()
    registry.LOAD_COUNTS.clear()
    MODEL_CALLS.clear()


@pytest.fixture(scope="module")
def graph(tmp_path_factory):
    data = tmp_path_factory.mktemp("memo") / "data"
    instance = DagsterInstance.ephemeral()
    _fresh_process_state()
    run_graph(data, FIRST, LAST, instance=instance)
    cold = dict(MODEL_CALLS)
    return data, instance, cold


def test_an_unchanged_rerun_makes_no_model_call_and_loads_no_model(graph):
    data, instance, cold = graph
    assert cold.get("OcrOnly.read", 0) > 0 and cold.get("TextRegionEditor.edit", 0) > 0
    before = _snapshot(data / "safetypairs.duckdb")
    _fresh_process_state()
    run_graph(data, FIRST, LAST, instance=instance)
    assert sum(MODEL_CALLS.values()) == 0, dict(MODEL_CALLS)
    assert dict(registry.LOAD_COUNTS) == {"source:demo": 1}  # the source profile is read; no model loads
    assert _snapshot(data / "safetypairs.duckdb") == before


def test_scene_text_is_read_once_per_image_for_every_category(graph):
    data, _, cold = graph
    store = store_at(data)
    distinct_images = store.query(
        "SELECT count(DISTINCT image_sha256) FROM (SELECT image_sha256 FROM source_images UNION ALL "
        "SELECT edited_sha256 FROM edited_images WHERE status = 'ok')").item()
    assert cold["OcrOnly.read"] == distinct_images  # the reading half alone reads (no classifier loaded)
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
    run_graph(data, FIRST, LAST, instance=instance, selection=["edited_images"])
    assert MODEL_CALLS["TextRegionEditor.edit"] == 1, dict(MODEL_CALLS)
    assert (data / path).is_file()  # the same bytes, so the same content-addressed name
    assert _snapshot(data / "safetypairs.duckdb") == before


def test_a_policy_edit_redoes_only_what_reads_the_policy(tmp_path):
    policy = yaml.safe_load(DEFAULT_POLICY_PATH.read_text())
    policy["categories"][0]["judge_examples"]["allowed"].append("SPRING FLOWER MARKET ON SUNDAY")
    edited = tmp_path / "edited_policy.yaml"
    edited.write_text(yaml.safe_dump(policy, sort_keys=False))
    data = tmp_path / "data"
    env = _env(tmp_path / "home", data)
    parts = ["--partition", FIRST]
    select = "source_pool,policy_labels,edit_instructions,edited_images,verified_pairs"
    _run(env, parts, tmp_path / "first.log", select=select)
    first = _computed_by_role(data)
    _run({**env, "SP_POLICY": str(edited)}, parts, tmp_path / "second.log", select=select)
    second = {role: n - first.get(role, 0) for role, n in _computed_by_role(data).items()}
    # The scene-text judge's classifier is trained on the whole policy: every verdict is decided again.
    assert second.get("judge", 0) > 0
    # What does not read the policy is not redone: OCR readings, embeddings, preservation measures.
    assert second.get("reader", 0) == 0 and second.get("embedder", 0) == 0 and second.get("metrics", 0) == 0
    assert second.get("source", 0) == 0


def _computed_by_role(data: Path) -> dict[str, int]:
    return dict(store_at(data).query("SELECT role, count(*) FROM model_calls GROUP BY ALL").rows())
