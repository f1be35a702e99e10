"""``make demo``: materialize all seven stages for every category through the Dagster CLI, then summarise.

Run as ``python -m sp_assets.demo [--categories o1_hate...o9_disasters]``. The run goes through
``dagster asset materialize``, exactly as a user would launch it, so it shows up in ``make dev``.
"""

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from sp_assets.core.policy import REPO_ROOT, load_active_policy
from sp_assets.defs.resources import PipelineSettings
from sp_assets.storage import Store

STAGES = ["source_pool", "policy_labels", "edit_instructions", "edited_images", "verified_pairs",
          "benchmark_split", "guard_metrics"]


def materialize(partition_range: str, env: dict[str, str]) -> float:
    dagster = shutil.which("dagster", path=str(Path(sys.executable).parent)) or "dagster"
    cmd = [dagster, "asset", "materialize", "-m", "sp_assets", "--select", ",".join(STAGES),
           "--partition-range", partition_range]
    print("$", " ".join(cmd), flush=True)
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, cwd=REPO_ROOT)
    return time.perf_counter() - t0


def summary(store: Store, data_root: Path) -> str:
    run = store.query("SELECT run_id FROM stage_runs WHERE asset = 'guard_metrics' ORDER BY created_at DESC LIMIT 1")
    if run.is_empty():
        return "no completed run found in stage_runs"
    run_id = run.item()
    out = [f"Run {run_id}", ""]
    per_cat = store.query(
        "SELECT y.category, sum(y.attempts) AS attempts, sum(y.accepted) AS accepted, "
        "any_value(y.rejection_reasons) AS reasons, "
        "(SELECT count(*) FROM source_images s WHERE s.category = y.category) AS sources, "
        "(SELECT count(*) FROM benchmark_split b WHERE b.category = y.category) AS pairs, "
        "(SELECT count(control_sha256) FROM benchmark_split b WHERE b.category = y.category) AS controlled "
        "FROM yield_by_profile y WHERE y.kind = 'flip' GROUP BY y.category ORDER BY y.category")
    out.append(f"{'category':<24}{'sources':>8}{'attempts':>9}{'accepted':>9}{'yield':>7}{'pairs':>7}{'controlled':>11}"
               "  rejection reasons")
    for r in per_cat.iter_rows(named=True):
        y = r["accepted"] / r["attempts"] if r["attempts"] else 0.0
        out.append(f"{r['category']:<24}{r['sources']:>8}{r['attempts']:>9}{r['accepted']:>9}{y:>7.0%}{r['pairs']:>7}"
                   f"{r['controlled']:>11}  {r['reasons'] or '-'}")
    out += ["", "wall time per stage (this run, models included):"]
    times = store.query("SELECT asset, seconds FROM stage_runs WHERE run_id = ? AND category = '*'", [run_id])
    by_asset = {r["asset"]: r["seconds"] for r in times.iter_rows(named=True)}
    for stage in STAGES:
        if stage in by_asset:
            out.append(f"  {stage:<20}{by_asset[stage]:>8.1f} s")
    metrics = store.query(
        "SELECT guard, pair_type, sum(n_pairs) AS pairs, sum(acc_unsafe * n_pairs) / sum(n_pairs) AS acc_unsafe, "
        "sum(acc_safe * n_pairs) / sum(n_pairs) AS acc_safe, sum(pair_accuracy * n_pairs) / sum(n_pairs) AS pair_acc, "
        "avg(roc_auc) AS auc FROM guard_metrics WHERE split = 'all' AND n_pairs > 0 GROUP BY ALL ORDER BY guard, pair_type DESC")
    if not metrics.is_empty():
        out += ["", "guards on all benchmark pairs (pooled over categories; ROC-AUC: mean over categories).",
                "original = source vs edit; controlled = null edit vs edit (both halves went through the editor):"]
        for r in metrics.iter_rows(named=True):
            auc = "n/a" if r["auc"] is None else f"{r['auc']:.2f}"
            out.append(f"  {r['guard']:<12} {r['pair_type']:<11} pairs {r['pairs']:>4}  acc unsafe {r['acc_unsafe']:.2f}  "
                       f"acc safe {r['acc_safe']:.2f}  pair acc {r['pair_acc']:.2f}  ROC-AUC {auc}")
        out.append("  edited_only sees only 'was this image edited': perfect on original pairs, chance on controlled ones.")
    probe = store.query(
        "SELECT features, eval_set, condition, mean, std FROM probe_results WHERE run_id = ? AND k = 32 "
        "AND ((eval_set = 'heldout_pairs' AND metric = 'pair_accuracy') OR (eval_set = 'non_pair' AND metric = 'accuracy')) "
        "ORDER BY features, eval_set, condition", [run_id])
    if not probe.is_empty():
        out += ["", "sample efficiency: linear probe, base set + k = 32 counterfactual pairs vs 64 ordinary images"]
        cells: dict[tuple[str, str], dict[str, str]] = {}
        for r in probe.iter_rows(named=True):
            cells.setdefault((r["features"], r["eval_set"]), {})[r["condition"]] = f"{r['mean']:.2f} ± {r['std'] or 0:.2f}"
        for (features, eval_set), c in cells.items():
            metric = "pair accuracy on held-out pairs" if eval_set == "heldout_pairs" else "accuracy on non-pair images"
            out.append(f"  {features:<11} {metric:<33} pairs {c.get('pairs', 'n/a')}   ordinary {c.get('ordinary', 'n/a')}")
    out += ["", "Where to look:",
            f"  DuckDB       {data_root / 'safetypairs.duckdb'}  (tables per stage; view pair_lineage)",
            f"  images       {data_root / 'images'}",
            f"  benchmark    {data_root / 'export'}  (Hugging Face Parquet, WebDataset, datasheet README.md)",
            f"               load: datasets.load_dataset(\"parquet\", data_dir=\"{data_root / 'export' / 'data'}\")",
            f"  gallery      {data_root / 'export' / 'gallery' / 'index.html'}  (unsafe halves blurred until clicked)",
            f"  figures      {data_root / 'reports' / run_id}",
            "  review       .venv/bin/python -m sp_assets.review export --category <category>",
            "  UI           make dev, then http://127.0.0.1:3000"]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    policy = load_active_policy()
    parser.add_argument("--categories", default=f"{policy.slugs[0]}...{policy.slugs[-1]}",
                        help="partition range <first>...<last> (default: every category)")
    args = parser.parse_args(argv)
    env = dict(os.environ)
    env.setdefault("DAGSTER_HOME", str(REPO_ROOT))
    settings = PipelineSettings.from_env()
    seconds = materialize(args.categories, env)
    store = Store.at(settings.root / "safetypairs.duckdb", read_only=True)
    print()
    print(summary(store, settings.root))
    print(f"\nTotal wall time: {seconds:.0f} s on {os.cpu_count()} cores.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
