"""Real processes on one DuckDB file: a run killed with SIGKILL mid-stage, then the same command again;
two runs of different categories at once. Each test stops what it started by process group."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import duckdb
import pytest

from sp_assets.storage.compare import read_only_query, stable_rows
from tests.cli_runs import DAGSTER, REPO, cli_env, run_to_end, start_run, stop_run


def _query(db: Path, sql: str) -> list[tuple]:
    return read_only_query(db, sql, timeout_s=10)


def _snapshot(db: Path) -> dict[str, list[str]]:
    return stable_rows(db)


def _referenced_files_exist(data: Path) -> None:
    con = duckdb.connect(str(data / "safetypairs.duckdb"), read_only=True)
    try:
        paths = [p for (p,) in con.execute(
            "SELECT image_path FROM source_images UNION ALL SELECT edited_path FROM edited_images "
            "WHERE edited_path IS NOT NULL UNION ALL SELECT safe_path FROM benchmark_split").fetchall()]
    finally:
        con.close()
    missing = [p for p in paths if not (data / p).is_file()]
    assert paths and not missing, missing[:5]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    base = tmp_path_factory.mktemp("whole")
    data = base / "data"
    run_to_end(cli_env(base / "home", data, SP_BATCH_ITEMS="2"), ["--partition-range", "o1_hate...o2_violence"],
         base / "run.log")
    return data


@pytest.mark.full
def test_a_run_killed_mid_stage_resumes_with_identical_rows(uninterrupted, tmp_path):
    data = tmp_path / "data"
    env = cli_env(tmp_path / "home", data, SP_BATCH_ITEMS="2")
    db = data / "safetypairs.duckdb"
    partitions = ["--partition-range", "o1_hate...o2_violence"]
    proc = start_run(env, partitions, tmp_path / "killed.log")
    try:
        deadline = time.monotonic() + 600
        # Kill once verified_pairs has committed a few batches of verdicts, and long before it is done.
        while time.monotonic() < deadline and proc.poll() is None:
            done = _query(db, "SELECT count(*) FROM model_calls WHERE stage = 'verified_pairs' AND role = 'judge'")
            if done and done[0][0] >= 4:
                break
            time.sleep(0.2)
        assert proc.poll() is None, "the run ended before it could be killed"
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=20)
    finally:
        stop_run(proc)
    killed_run = {r for (r,) in _query(db, "SELECT DISTINCT computed_run_id FROM model_calls")}
    run_to_end(env, partitions, tmp_path / "resumed.log")
    assert _snapshot(db) == _snapshot(uninterrupted / "safetypairs.duckdb")
    _referenced_files_exist(data)
    # What the killed run committed was reused, not recomputed: its verdicts are still the stored ones.
    by_run = dict(_query(db, "SELECT computed_run_id, count(*) FROM model_calls WHERE stage = 'verified_pairs' "
                             "AND role = 'judge' GROUP BY ALL"))
    assert set(by_run) - killed_run and set(by_run) & killed_run, by_run


@pytest.mark.full
def test_two_runs_of_different_categories_at_once_both_succeed_and_overlap(tmp_path):
    data = tmp_path / "data"
    env = cli_env(tmp_path / "home", data)
    # Dagster's SQLite instance storage must exist before two processes open it at once (both would try
    # to create its schema); a shared deployment uses PostgreSQL (deploy/dagster.yaml).
    subprocess.run([DAGSTER, "instance", "migrate"], cwd=REPO, env=env, check=True, capture_output=True, timeout=120)
    procs = [start_run(env, ["--partition", cat], tmp_path / f"{cat}.log") for cat in ("o1_hate", "o3_sexual")]
    try:
        for proc, cat in zip(procs, ("o1_hate", "o3_sexual")):
            assert proc.wait(timeout=900) == 0, (tmp_path / f"{cat}.log").read_text()[-4000:]
    finally:
        for proc in procs:
            stop_run(proc)
    cats = {c for (c,) in _query(data / "safetypairs.duckdb", "SELECT DISTINCT category FROM guard_metrics")}
    assert cats == {"o1_hate", "o3_sexual"}
    # Their model work overlapped in time: each run's judge calls span a window the other's reaches into.
    spans = _query(data / "safetypairs.duckdb",
                   "SELECT computed_run_id, min(created_at), max(created_at) FROM model_calls "
                   "WHERE role IN ('reader', 'judge') GROUP BY ALL")
    assert len(spans) == 2
    (_, a0, a1), (_, b0, b1) = spans
    assert a0 < b1 and b0 < a1, spans
    _referenced_files_exist(data)
