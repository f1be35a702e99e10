"""``make demo``: materialize all seven stages for every category through the Dagster CLI, then summarise.

Run as ``python -m sp_assets.demo [--categories o1_hate...o9_disasters]``. The run goes through
``dagster asset materialize``, exactly as a user would launch it, so it shows up in ``make dev``. Its
event stream goes to ``<data root>/logs/demo-<time>.log``; the terminal shows progress per stage and
category (``core.run_display``) and the run's warnings and errors.
"""

import argparse
import datetime as dt
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

from sp_assets.core.guard_evaluation import SELECTED_NOTE, headline, pooled_intervals, with_interval
from sp_assets.core import policy_variants as pv
from sp_assets.core.policy import DEFAULT_POLICY_PATH, REPO_ROOT, load_active_policy
from sp_assets.core.probe import summary_cell
from sp_assets.core.reports import SELECTED_MARK, guard_name
from sp_assets.core.run_display import RunDisplay
from sp_assets.defs.resources import PipelineSettings
from sp_assets.storage import Store, queries, release_queries

from sp_assets.defs import STAGE_NAMES as STAGES


# The demo labels its benchmark under two shipped variants of the default policy too (policy pairs).
DEMO_VARIANTS = ("policies/strict_weapons.yaml", "policies/family.yaml")
INTERRUPT_GRACE_S = 60  # after Ctrl-C, how long Dagster may take to mark the run cancelled


def materialize(partition_range: str, env: dict[str, str], log_path: Path) -> tuple[int, float, RunDisplay]:
    """Run the CLI with its whole output in ``log_path`` and its progress and problems on the terminal:
    (exit status, seconds, the display, which holds the lines that mattered)."""
    dagster = shutil.which("dagster", path=str(Path(sys.executable).parent)) or "dagster"
    cmd = [dagster, "asset", "materialize", "-m", "sp_assets", "--select", ",".join(STAGES),
           "--partition-range", partition_range]
    print("$", " ".join(cmd), flush=True)
    print(f"Dagster's events go to {log_path}; progress, warnings and errors below.", flush=True)
    display = RunDisplay(sys.stdout, STAGES, live=sys.stdout.isatty())
    log_path.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with log_path.open("w", encoding="utf-8") as log:
        status = _stream(cmd, {**env, "PYTHONUNBUFFERED": "1"}, log, display)
    display.close()
    return status, time.perf_counter() - t0, display


def _stream(cmd: list[str], env: dict[str, str], log: IO[str], display: RunDisplay) -> int:
    """Every line of the run's output into the log as it arrives, and to the display."""
    proc = subprocess.Popen(cmd, env=env, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, encoding="utf-8", errors="replace", bufsize=1)
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            log.write(line)
            log.flush()
            display.feed(line)
        return proc.wait()
    except KeyboardInterrupt:
        return _interrupted(proc, log, display)


def _interrupted(proc: subprocess.Popen, log: IO[str], display: RunDisplay) -> int:
    """Ctrl-C: Dagster got it too (same terminal) and cancels the run; it is asked again if it did not,
    and killed if it has not stopped after INTERRUPT_GRACE_S. The rest of its output still goes to the log."""
    try:
        rest, _ = proc.communicate(timeout=5)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGINT)
        try:
            rest, _ = proc.communicate(timeout=INTERRUPT_GRACE_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            rest, _ = proc.communicate()
    log.write(rest or "")
    for line in (rest or "").splitlines():
        display.feed(line)
    return 130


def log_file(data_root: Path) -> Path:
    """Where this demo run's Dagster events go: one file per run, under the data root."""
    return data_root / "logs" / f"demo-{dt.datetime.now():%Y%m%d-%H%M%S}.log"


def failure_message(status: int, log_path: Path, relevant: list[str]) -> str:
    """What a failed run tells: the exit status, where the whole log is, its last lines that matter."""
    if not relevant:  # nothing looked like an error: the log's own last lines
        lines = log_path.read_text(encoding="utf-8", errors="replace").splitlines() if log_path.exists() else []
        relevant = lines[-12:]
    head = "interrupted" if status == 130 else f"failed (dagster exited with status {status})"
    return "\n".join([f"\nmake demo {head}. Dagster's whole event log: {log_path}", "Last relevant lines:",
                      *(f"  {line}" for line in relevant)])


def _yield_lines(store: Store) -> list[str]:
    out = [f"{'category':<24}{'sources':>8}{'attempts':>9}{'accepted':>9}{'yield':>7}{'pairs':>7}{'controlled':>11}"
           "  rejection reasons"]
    for r in queries.flip_yield_per_category(store):
        y = r["accepted"] / r["attempts"] if r["attempts"] else 0.0
        out.append(f"{r['category']:<24}{r['sources']:>8}{r['attempts']:>9}{r['accepted']:>9}{y:>7.0%}{r['pairs']:>7}"
                   f"{r['controlled']:>11}  {r['reasons'] or '-'}")
    return out


def _editor_lines(store: Store) -> list[str]:
    """Yield per editor, when more than one editor made candidates (SP_EDITOR switched, SP_EDITORS_ALSO)."""
    rows = queries.flip_yield_per_editor(store)
    if len({r["editor_profile"] for r in rows}) < 2:
        return []
    out = ["", "flip candidates per editor (benchmark_split keeps the best accepted one per source):",
           f"  {'category':<24}{'editor':<18}{'attempts':>9}{'accepted':>9}{'yield':>7}{'chosen':>7}"]
    for r in rows:
        out.append(f"  {r['category']:<24}{r['editor_profile']:<18}{r['attempts']:>9}{r['accepted']:>9}"
                   f"{r['yield']:>7.0%}{r['chosen']:>7}")
    return out


def _intake_lines(store: Store, run_id: str) -> list[str]:
    """Files of the user's folder that are not in the pool without being rejected: not images, or unlisted."""
    notes = queries.source_intake_notes(store, run_id)
    out = []
    for category, n in notes.items():
        if n.get("skipped_files"):
            out.append(f"  {category}: {n['skipped_files']} non-image files skipped "
                       f"(e.g. {', '.join(n.get('skipped_examples') or [])})")
        if n.get("unlisted_images"):
            out.append(f"  {category}: {n['unlisted_images']} files on disk named by no manifest row, not taken in "
                       f"(e.g. {', '.join(n.get('unlisted_examples') or [])})")
    return ["", "source folder notes:"] + out if out else []


def _time_lines(store: Store, run_id: str) -> list[str]:
    by_asset = queries.stage_seconds(store, run_id)
    return ["", "wall time per stage (this run, models included):"] + [
        f"  {stage:<20}{by_asset[stage]:>8.1f} s" for stage in STAGES if stage in by_asset]


def _guard_lines(store: Store) -> list[str]:
    metrics = queries.pooled_guard_metrics(store)
    if not metrics:
        return []
    intervals = pooled_intervals(release_queries.guard_answers(store))
    metrics = [{**r, **intervals.get((r["guard"], r["pair_type"]), {})} for r in metrics]
    out = ["", "guards on all benchmark pairs and look-alikes (pooled over categories, ROC-AUC too).",
           "original = source vs edit; controlled = null edit vs edit (both halves went through the editor);",
           "look-alike FPR = share of safe look-alikes not rated safe ('invalid' counts as a false positive);",
           "[in brackets: 95% interval, bootstrap over sources, all categories together]:"]
    for r in metrics:
        out.append(f"  {guard_name(r):<15} {r['pair_type']:<11} pairs {r['pairs']:>4}  "
                   f"acc unsafe {with_interval(r['acc_unsafe'], r, 'acc_unsafe')}  "
                   f"acc safe {with_interval(r['acc_safe'], r, 'acc_safe')}  "
                   f"pair acc {with_interval(r['pair_accuracy'], r, 'pair_accuracy')}  "
                   f"ROC-AUC {with_interval(r.get('roc_auc_pooled'), r, 'roc_auc')}  "
                   f"look-alikes {r['n_lookalikes']:>3}  FPR {with_interval(r['lookalike_fpr'], r, 'lookalike_fpr')}")
    if any(r["selected_pairs"] for r in metrics):
        out.append(f"  {SELECTED_MARK} {SELECTED_NOTE}: not a measure of the guard's quality.")
    out.append("  edited_only sees only 'was this image edited': perfect on original pairs, chance on controlled ones.")
    return out + _headline_lines(metrics)


def _headline_lines(metrics: list[dict]) -> list[str]:
    """The headline: the best guard that did not select the pairs (diagnostics and the verifier excluded)."""
    best = headline(metrics)
    if best is None:
        return ["", "headline: no independent guard rated any pair."]
    controlled = headline([r for r in metrics if r["guard"] == best["guard"]], "controlled")
    fpr = "n/a" if best["lookalike_fpr"] is None else f"{best['lookalike_fpr']:.2f} of {best['n_lookalikes']}"
    return ["", f"headline: best independent guard {best['guard']}: pair accuracy {best['pair_accuracy']:.2f} on "
                f"original pairs" + (f", {controlled['pair_accuracy']:.2f} on controlled" if controlled else "")
            + f"; look-alike FPR {fpr}."]


def _probe_lines(store: Store, run_id: str) -> list[str]:
    probe = queries.probe_headline(store, run_id, k=32)
    if not probe:
        return []
    out = ["", "sample efficiency: linear probe, base set + k = 32 counterfactual pairs vs 64 ordinary images"]
    cells: dict[tuple[str, str], dict[str, str]] = {}
    for r in probe:
        cells.setdefault((r["features"], r["eval_set"]), {})[r["condition"]] = summary_cell(r)
    for (features, eval_set), c in cells.items():
        out.append(f"  {features:<11} {PROBE_SETS[eval_set]:<37} pairs {c.get('pairs', 'n/a'):<24} "
                   f"ordinary {c.get('ordinary', 'n/a')}")
    return out + ["  (mean ± std over seeds [95% interval]; out-of-distribution: photos, fonts and phrasings the "
                  "pool never held)"]


def _policy_lines(store: Store) -> list[str]:
    """Policy pairs per variant and each guard's policy-pair figures (pooled over categories)."""
    counted = pv.count_rows(queries.variant_label_kinds(store))
    if not counted:
        return []
    out = ["", "policy variants: the same benchmark images labelled under other policies (policy pairs: the label "
               "differs from the run's policy's):"]
    for variant in sorted({r["variant"] for r in counted}):
        rows = [r for r in counted if r["variant"] == variant]
        per = ", ".join(f"{r['category']} {r['policy_pairs']}" for r in rows if r["policy_pairs"])
        out.append(f"  {variant:<15} images {sum(r['images'] for r in rows):>4}  policy pairs "
                   f"{sum(r['policy_pairs'] for r in rows):>3} ({per or 'none'})")
    out.append("guards on the policy pairs (right under both policies; 'ignores' = same answer under both) "
               "[95% interval]:")
    for r in pv.pooled(queries.policy_answers(store)):
        mark = f" {SELECTED_MARK}" if r["selected_pairs"] else ""
        out.append(f"  {r['guard'] + mark:<15} {r['variant']:<15} "
                   f"{'takes the policy' if r['conditioned'] else 'fixed answer':<16} pairs {r['n_policy_pairs']:>3}  "
                   f"policy-pair acc {pv.cell(r, 'policy_pair_accuracy')}  ignores {pv.cell(r, 'ignores_policy')}")
    return out + ["  (a guard with one answer for every policy is right under only one policy of each pair: 0 by "
                  "construction)"]


PROBE_SETS = {"heldout_pairs": "pair accuracy on held-out pairs", "non_pair": "accuracy on non-pair images",
              "ood_pairs": "pair accuracy, out-of-distribution"}


def _where_lines(data_root: Path, run_id: str) -> list[str]:
    export = data_root / "export"
    return ["", "Where to look:",
            f"  DuckDB       {data_root / 'safetypairs.duckdb'}  (tables per stage; view pair_lineage)",
            f"  images       {data_root / 'images'}",
            f"  benchmark    {export}  (Hugging Face Parquet, WebDataset, datasheet README.md)",
            f"               load: datasets.load_dataset(\"parquet\", data_dir=\"{export / 'data'}\")",
            f"  gallery      {export / 'gallery' / 'index.html'}  (unsafe halves blurred until clicked)",
            f"  figures      {data_root / 'reports' / run_id}",
            "  review       .venv/bin/python -m sp_assets.review export --category <category>",
            "  UI           make dev, then http://127.0.0.1:3000"]


def summary(store: Store, data_root: Path) -> str:
    """The run's headline figures: yield per category, time per stage, guards, the probe, where to look."""
    run_id = queries.latest_complete_run(store)
    if run_id is None:
        return "no completed run found in stage_runs"
    lines = [f"Run {run_id}", ""] + _yield_lines(store) + _intake_lines(store, run_id) + _editor_lines(store)
    lines += _time_lines(store, run_id) + _guard_lines(store) + _policy_lines(store)
    return "\n".join(lines + _probe_lines(store, run_id) + _where_lines(data_root, run_id))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    policy = load_active_policy()
    parser.add_argument("--categories", default=f"{policy.slugs[0]}...{policy.slugs[-1]}",
                        help="partition range <first>...<last> (default: every category)")
    args = parser.parse_args(argv)
    env = dict(os.environ)
    env.setdefault("DAGSTER_HOME", str(REPO_ROOT))
    if policy.path.resolve() == DEFAULT_POLICY_PATH.resolve() and not env.get(pv.VARIANTS_ENV_VAR, "").strip():
        env[pv.VARIANTS_ENV_VAR] = ",".join(str(REPO_ROOT / v) for v in DEMO_VARIANTS)
    settings = PipelineSettings.from_env()
    log_path = log_file(settings.root)
    status, seconds, display = materialize(args.categories, env, log_path)
    if status != 0:
        print(failure_message(status, log_path, list(display.relevant)), file=sys.stderr, flush=True)
        return status if status > 0 else 128 - status  # killed by a signal: the shell's convention
    store = Store.at(settings.root / "safetypairs.duckdb", read_only=True)
    print()
    print(summary(store, settings.root))
    print(f"\nTotal wall time: {seconds:.0f} s on {os.cpu_count()} cores.")
    print(f"Dagster's events of this run: {log_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
