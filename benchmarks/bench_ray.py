"""The heavy stages on a local Ray: one worker against two on the same inputs, in one run of this script.

Prints ``ray_seconds_1_worker``, ``ray_seconds_2_workers`` (edited_images + verified_pairs, each step's
wall time as the run recorded it, model loading in the workers included), ``ray_speedup_2_workers``
and ``ray_rows_identical`` (the two-worker run's rows against an in-process run of the same stages).

Usage: ``python benchmarks/bench_ray.py [--categories o1_hate...o9_disasters] [--keep DIR]``.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.bench_execution import bench_args, make_env, query, run, say, snapshot  # noqa: E402

UPSTREAM = "source_pool,policy_labels,edit_instructions"
MEASURED = "edited_images,verified_pairs"


def stage_seconds(db: Path) -> float:
    rows = query(db, "SELECT asset, seconds FROM stage_runs WHERE category = '*' AND asset IN ('edited_images', "
                     "'verified_pairs') AND run_id = (SELECT run_id FROM stage_runs WHERE asset = 'verified_pairs' "
                     "ORDER BY created_at DESC LIMIT 1)")
    return sum(s for _, s in rows)


def main(argv: list[str] | None = None) -> int:
    args, root = bench_args(argv, __doc__, "sp-bench-ray-")
    try:
        base = root / "upstream" / "data"
        run(make_env(root, base), args.categories, root / "upstream.log", select=UPSTREAM)
        seconds = {}
        for label, extra in (("in_process", {}), ("1", {"SP_EXECUTION": "ray", "SP_RAY_WORKERS": "1"}),
                             ("2", {"SP_EXECUTION": "ray", "SP_RAY_WORKERS": "2"})):
            data = root / f"run_{label}" / "data"
            shutil.copytree(base, data)  # the same inputs for every run
            run({**make_env(root, data), **extra}, args.categories, root / f"run_{label}.log", select=MEASURED)
            seconds[label] = stage_seconds(data / "safetypairs.duckdb")
        say("cores", os.cpu_count())
        say("ray_seconds_1_worker", f"{seconds['1']:.1f}")
        say("ray_seconds_2_workers", f"{seconds['2']:.1f}")
        say("ray_speedup_2_workers", f"{seconds['1'] / seconds['2']:.2f}")
        same = snapshot(root / "run_2" / "data" / "safetypairs.duckdb") == \
            snapshot(root / "run_in_process" / "data" / "safetypairs.duckdb")
        say("ray_rows_identical", "yes" if same else "no")
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
