"""Execution figures on the demo pool, each printed as one ``name: value`` line (``make bench``).

- cold, unchanged re-run and their ratio: the whole graph through the Dagster CLI, as a user runs it;
- an editor switch: seconds and model calls by role, and the judge calls it made on source images;
- the model-time floor: the bare backend and metric calls on the same distinct inputs (models loaded,
  each distinct image read and embedded once, each candidate edited once), no Dagster and no database;
- kill then resume: a run killed with SIGKILL during verified_pairs, then the same command again.

Usage: ``python benchmarks/bench_execution.py [--categories o1_hate...o9_disasters] [--keep DIR]``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
DAGSTER = str(Path(sys.executable).parent / "dagster")
STAGES = "source_pool,policy_labels,edit_instructions,edited_images,verified_pairs,benchmark_split,guard_metrics"
SECOND_EDITOR = {"text_region_ns": {
    "implementation": "text_region", "description": "The offline editor with Navier-Stokes inpainting.",
    "params": {"inpaint_method": "ns", "inpaint_radius": 3, "pad": 3}}}


def say(name: str, value: object) -> None:
    print(f"{name}: {value}", flush=True)


def bench_args(argv: list[str] | None, doc: str, prefix: str) -> tuple[argparse.Namespace, Path]:
    """A benchmark's ``--categories`` and ``--keep`` options, and the folder it works in."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--categories", default="o1_hate...o9_disasters")
    parser.add_argument("--keep", type=Path, help="work in this folder and keep it (default: a temporary one)")
    args = parser.parse_args(argv)
    return args, args.keep or Path(tempfile.mkdtemp(prefix=prefix))


def make_env(root: Path, data: Path) -> dict[str, str]:
    home = root / "home"
    home.mkdir(parents=True, exist_ok=True)
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    profiles = root / "profiles"
    if not profiles.exists():
        shutil.copytree(REPO / "resources", profiles)
        import yaml

        editors = yaml.safe_load((profiles / "editors.yaml").read_text())
        (profiles / "editors.yaml").write_text(yaml.safe_dump({**editors, **SECOND_EDITOR}, sort_keys=False))
    return {**os.environ, "DAGSTER_HOME": str(home), "SP_DATA_ROOT": str(data), "SP_PROFILES_DIR": str(profiles)}


def start(env: dict[str, str], categories: str, log: Path, select: str = STAGES) -> subprocess.Popen:
    cmd = [DAGSTER, "asset", "materialize", "-m", "sp_assets", "--select", select, "--partition-range", categories]
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT,  # noqa: SIM115
                            start_new_session=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def run(env: dict[str, str], categories: str, log: Path, select: str = STAGES) -> float:
    t0 = time.perf_counter()
    proc = start(env, categories, log, select)
    if proc.wait() != 0:
        raise SystemExit(f"run failed, see {log}")
    return time.perf_counter() - t0


def query(db: Path, sql: str, params: list | None = None) -> list[tuple]:
    from sp_assets.storage.compare import read_only_query

    return read_only_query(db, sql, params, timeout_s=60)


def snapshot(db: Path) -> dict[str, list[str]]:
    from sp_assets.storage.compare import stable_rows

    return stable_rows(db)


def calls_by_role(db: Path, known_runs: set[str]) -> dict[str, int]:
    rows = query(db, "SELECT role, computed_run_id, count(*) FROM model_calls GROUP BY ALL")
    out: dict[str, int] = {}
    for role, run_id, n in rows:
        if run_id not in known_runs:
            out[role] = out.get(role, 0) + n
    return out


def runs(db: Path) -> set[str]:
    return {r for (r,) in query(db, "SELECT DISTINCT computed_run_id FROM model_calls")}


def editor_switch(env: dict[str, str], categories: str, db: Path, log: Path) -> None:
    before = runs(db)
    seconds = run({**env, "SP_EDITOR": "text_region_ns"}, categories, log)
    made = calls_by_role(db, before)
    source_judge = query(db, "SELECT count(*) FROM model_calls WHERE role = 'judge' AND stage = 'policy_labels' "
                             "AND computed_run_id NOT IN (SELECT UNNEST(?))", [sorted(before)])[0][0]
    say("editor_switch_seconds", f"{seconds:.1f}")
    say("editor_switch_model_calls", json.dumps(dict(sorted(made.items()))))
    say("editor_switch_source_judge_calls", source_judge)


def kill_then_resume(root: Path, categories: str, reference: Path) -> None:
    data = root / "killed" / "data"
    env = make_env(root, data)
    db = data / "safetypairs.duckdb"
    total = query(reference, "SELECT count(*) FROM model_calls WHERE role = 'judge' AND stage = 'verified_pairs'")[0][0]
    proc = start(env, categories, root / "killed.log")
    while proc.poll() is None:
        done = query(db, "SELECT count(*) FROM model_calls WHERE role = 'judge' AND stage = 'verified_pairs'")
        if done and done[0][0] >= total // 2:
            os.killpg(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.2)
    proc.wait()
    seconds = run(env, categories, root / "resumed.log")
    say("kill_resume_seconds", f"{seconds:.1f}")
    say("kill_resume_rows_identical", "yes" if snapshot(db) == snapshot(reference) else "no")


def main(argv: list[str] | None = None) -> int:
    from benchmarks.floor import model_time_floor

    args, root = bench_args(argv, __doc__, "sp-bench-")
    try:
        data = root / "cold" / "data"
        env = make_env(root, data)
        db = data / "safetypairs.duckdb"
        say("cores", os.cpu_count())
        cold = run(env, args.categories, root / "cold.log")
        say("cold_seconds", f"{cold:.1f}")
        rerun = run(env, args.categories, root / "rerun.log")
        say("rerun_seconds", f"{rerun:.1f}")
        say("rerun_speedup", f"{cold / rerun:.1f}")
        floor = model_time_floor(data, env)
        say("model_time_floor_seconds", f"{floor:.1f}")
        say("cold_over_floor", f"{cold / floor:.2f}")
        reference = root / "reference.duckdb"
        shutil.copy(db, reference)
        editor_switch(env, args.categories, db, root / "switch.log")
        kill_then_resume(root, args.categories, reference)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
