"""A human decision, imported from the review page's CSV, overrides the automatic verdict in verified_pairs."""

from __future__ import annotations

from dagster import DagsterInstance

from sp_assets.review import import_decisions
from sp_assets.storage import Store
from tests.conftest import run_graph, store_at


def test_review_overrides_and_is_kept_in_provenance(tmp_path):
    data = tmp_path / "data"
    instance = DagsterInstance.ephemeral()
    run_graph(data, "o2_violence", "o2_violence", instance=instance, demo_unsafe_per_category=2,
              demo_safe_per_category=0, probe_seeds=0)
    before = store_at(data).query(
        "SELECT candidate_id FROM verified_pairs WHERE accepted AND kind = 'flip' ORDER BY candidate_id").to_dicts()
    assert before
    victim = before[0]["candidate_id"]
    decisions = tmp_path / "decisions.csv"
    decisions.write_text("candidate_id,category,reviewer,decided_at,verdict,note\n"
                         f"{victim},o2_violence,ana,2026-11-01T10:00:00Z,reject,replacement text is unreadable\n")
    report = import_decisions(Store.at(data / "safetypairs.duckdb"), decisions)
    assert report.imported == 1
    run_graph(data, "o2_violence", "o2_violence", instance=instance, demo_unsafe_per_category=2,
              demo_safe_per_category=0, probe_seeds=0, selection=["verified_pairs", "benchmark_split"])
    row = store_at(data).rows("verified_pairs", {"candidate_id": victim})[0]
    assert row["auto_accepted"] is True and row["accepted"] is False
    assert "human_rejected" in row["reject_reason"]
    assert (row["review_verdict"], row["reviewer"], row["review_note"]) == ("reject", "ana", "replacement text is unreadable")
    assert row["review_decisions_sha256"] == report.sha256
    in_split = store_at(data).query("SELECT count(*) FROM benchmark_split WHERE candidate_id = ?", [victim]).item()
    assert in_split == 0
