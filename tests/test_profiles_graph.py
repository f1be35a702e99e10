"""Profiles in the graph: switching the editor keeps both editors' rows, models load once per run,
and a profile whose weights are missing stops its step with a message that says what to fetch."""

from __future__ import annotations

import shutil

import pytest
import yaml
from dagster import DagsterInstance, materialize

from sp_assets.backends import registry
from sp_assets.defs import STAGES
from sp_assets.core.policy import REPO_ROOT
from tests.conftest import RANGE_END, RANGE_START, graph_resources, run_graph, store_at


@pytest.fixture
def profiles(tmp_path, monkeypatch):
    """A private copy of resources/ with extra editor profiles, active through SP_PROFILES_DIR."""
    folder = tmp_path / "profiles"
    shutil.copytree(REPO_ROOT / "resources", folder)
    editors = yaml.safe_load((folder / "editors.yaml").read_text())
    editors["text_region_ns"] = {"implementation": "text_region",
                                 "params": {**editors["text_region"]["params"], "inpaint_method": "ns"}}
    editors["ghost"] = {"implementation": "diffusers",
                        "params": {"pipeline": "StableDiffusionInstructPix2PixPipeline",
                                   "model": str(tmp_path / "no-such-model")}}
    (folder / "editors.yaml").write_text(yaml.safe_dump(editors))
    monkeypatch.setenv("SP_PROFILES_DIR", str(folder))
    return folder


def test_switching_the_editor_keeps_both_editors_rows(tmp_path, profiles):
    data = tmp_path / "data"
    instance = DagsterInstance.ephemeral()
    run_graph(data, "o2_violence", "o2_violence", instance=instance)
    store = store_at(data)
    before = store.query("SELECT * FROM verified_pairs ORDER BY candidate_id").to_dicts()
    run_graph(data, "o2_violence", "o2_violence", instance=instance, editor_profile="text_region_ns",
              selection=["edited_images", "verified_pairs", "benchmark_split"])
    store = store_at(data)
    editors = store.query("SELECT editor_profile, count(*) FROM edited_images GROUP BY ALL ORDER BY 1").rows()
    assert [e for e, _ in editors] == ["text_region", "text_region_ns"]
    kept = store.query("SELECT * FROM verified_pairs WHERE editor_profile = 'text_region' ORDER BY candidate_id").to_dicts()
    assert [r["candidate_id"] for r in kept] == [r["candidate_id"] for r in before]
    assert [r["run_id"] for r in kept] == [r["run_id"] for r in before]  # untouched, not rewritten
    # The split sees both editors' accepted candidates and keeps one per source.
    split = store.query("SELECT image_sha256, n_accepted_candidates, editor_profile FROM benchmark_split").to_dicts()
    editors_per_source = dict(store.query(
        "SELECT image_sha256, count(DISTINCT editor_profile) FROM verified_pairs WHERE accepted AND kind = 'flip' "
        "GROUP BY ALL").rows())
    assert split and all(editors_per_source[r["image_sha256"]] == 2 for r in split)
    assert all(r["n_accepted_candidates"] >= 2 for r in split)
    assert len({r["image_sha256"] for r in split}) == len(split)


def test_a_three_category_backfill_loads_each_model_once(tmp_path, profiles):
    registry.clear_cache()
    registry.LOAD_COUNTS.clear()
    data = tmp_path / "data"
    run_graph(data, "o1_hate", "o3_sexual", demo_unsafe_per_category=2, demo_safe_per_category=1,
              editor_also=["text_region_ns"])
    assert dict(registry.LOAD_COUNTS) == {
        "source:demo": 1, "judge:scene_text": 1, "writer:template": 1, "editor:text_region": 1, "editor:text_region_ns": 1,
        "embedder:efficientnet_lite0": 1, "guard:open_nsfw": 1, "guard:ocr_toxicity": 1, "guard:ocr_blocklist": 1,
        "reader:scene_text": 1,  # the OCR half alone, shared by the judge and the text guards
    }
    # Both editors of the run made and verified candidates for every category (best of N across editors).
    got = store_at(data).query("SELECT category, count(DISTINCT editor_profile) FROM verified_pairs GROUP BY ALL").rows()
    assert sorted(got) == [("o1_hate", 2), ("o2_violence", 2), ("o3_sexual", 2)]


def test_missing_weights_stop_the_step_with_the_fix(tmp_path, profiles):
    data = tmp_path / "data"
    instance = DagsterInstance.ephemeral()
    run_graph(data, "o2_violence", "o2_violence", instance=instance,
              selection=["source_pool", "policy_labels", "edit_instructions"])
    result = materialize(
        STAGES, selection=["edited_images"], instance=instance, raise_on_error=False,
        resources=graph_resources(data, editor_profile="ghost"),
        tags={RANGE_START: "o2_violence", RANGE_END: "o2_violence"},
    )
    assert not result.success
    failure = result.failure_data_for_node("edited_images")
    message = failure.error.message if failure.error.cause is None else failure.error.cause.message
    text = "".join([failure.error.message, message])
    assert "MissingWeightsError" in text or "ghost" in text
    assert "'ghost'" in text and str(tmp_path / "no-such-model") in text
