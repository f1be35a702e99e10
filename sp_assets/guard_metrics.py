"""Stage 7, ``guard_metrics``: every configured guard evaluated on the benchmark pairs."""


from typing import Any

from dagster import AssetExecutionContext, MetadataValue, asset
from dagster_duckdb import DuckDBResource

from sp_assets.backends.base import Guard, Judge, RecordJudge, Verdict
from sp_assets.backends.hf import MissingWeightsError
from sp_assets.backends.registry import load_guard
from sp_assets.evaluation import PairOutcome, score_pairs
from sp_assets.profiles import ProfileError
from sp_assets.resources import PipelineSettings
from sp_assets.stage import Stage, asset_kwargs, check, check_result

ASSET = "guard_metrics"
BATCH = 16
CHECKS = [
    check(ASSET, "every_pair_has_two_predictions", "Each guard rated both halves of every pair."),
]


def stored_verdicts(stage: Stage, category: str, config_sha: str) -> dict[str, tuple[Verdict, str]]:
    """Verdicts this exact judge config already gave in this category (sources and edits), by image hash.

    A judge that also serves as a guard need not read the same image twice: its stored answer, made
    under the same policy, is the answer it would give again.
    """
    rows = stage.store.query(
        "SELECT image_sha256 AS sha, rating, judged_category AS cat, score, rationale, raw_output, "
        "'policy_labels' AS origin FROM policy_labels "
        "WHERE category = ? AND judge_config_sha256 = ? AND policy_sha256 = ? "
        "UNION ALL "
        "SELECT v.edited_sha256, v.edit_rating, v.edit_judged_category, v.edit_score, v.edit_rationale, "
        "v.edit_raw_output, 'verified_pairs' FROM verified_pairs v JOIN policy_labels l "
        "ON l.category = v.category AND l.image_sha256 = v.image_sha256 AND l.judge_profile = v.judge_profile "
        "WHERE v.category = ? AND v.verifier_config_sha256 = ? AND l.policy_sha256 = ? AND v.edit_rating IS NOT NULL",
        [category, config_sha, stage.policy.sha256, category, config_sha, stage.policy.sha256]).to_dicts()
    return {r["sha"]: (Verdict(r["rating"], r["cat"] or "", r["score"], r["rationale"] or "", r["raw_output"] or ""),
                       r["origin"]) for r in rows}


def _fmt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.2f}"


@asset(deps=["benchmark_split"], **asset_kwargs(
    "Guards evaluated on the benchmark pairs: accuracy on the unsafe and safe halves, pair accuracy "
    "(both halves right) and ROC-AUC, per category, on the test split and on all pairs.", CHECKS))
def guard_metrics(context: AssetExecutionContext, settings: PipelineSettings, duckdb: DuckDBResource):
    stage = Stage(ASSET, context, settings, duckdb)
    guards: dict[str, tuple[Any, str]] = {}
    skipped: dict[str, str] = {}
    for name in settings.guards:
        try:
            backend, sha = load_guard(name, stage.policy)
        except (ProfileError, MissingWeightsError, FileNotFoundError, ImportError, OSError) as exc:
            skipped[name] = str(exc)
            context.log.warning(f"guard {name!r} skipped: {exc}")
            continue
        if isinstance(backend, RecordJudge):
            skipped[name] = "judges from manifest records only; cannot rate edited images"
            continue
        guards[name] = (backend, sha)
    summary: list[dict[str, Any]] = []
    incomplete: list[str] = []
    for category in stage.categories():
        with stage.timed(category.slug):
            pairs = stage.store.rows("benchmark_split", {"category": category.slug}, order_by="pair_id")
            predictions: list[dict[str, Any]] = []
            metrics: list[dict[str, Any]] = []
            for name, (backend, sha) in guards.items():
                outcomes: dict[str, dict[str, Any]] = {}
                known = stored_verdicts(stage, category.slug, sha) if isinstance(backend, Judge) else {}
                for start in range(0, len(pairs), BATCH):
                    batch = pairs[start:start + BATCH]
                    halves = [(p, "unsafe", p["image_sha256"], p["unsafe_path"]) for p in batch]
                    halves += [(p, "safe", p["safe_sha256"], p["safe_path"]) for p in batch]
                    todo = [h for h in halves if h[2] not in known]
                    images = [stage.images.open(h[3]) for h in todo]
                    if not todo:
                        fresh = []
                    elif isinstance(backend, Judge):
                        fresh = backend.judge(images, category)
                    else:
                        assert isinstance(backend, Guard)
                        fresh = backend.predict(images, category)
                    new = {h[2]: v for h, v in zip(todo, fresh, strict=True)}
                    for pair, half, sha_img, _ in halves:
                        v, origin = known[sha_img] if sha_img in known else (new[sha_img], None)
                        outcomes.setdefault(pair["pair_id"], {})[half] = v
                        predictions.append({
                            **stage.base_row(category.slug), "guard": name, "pair_id": pair["pair_id"],
                            "split": pair["split"], "half": half, "image_sha256": sha_img, "label": half,
                            "rating": v.rating, "score": v.score, "raw_output": v.raw_output,
                            "reused_from": origin, "guard_config_sha256": sha,
                        })
                if len(outcomes) != len(pairs) or any(len(o) != 2 for o in outcomes.values()):
                    incomplete.append(f"{category.slug}/{name}")
                for split in ("test", "all"):
                    chosen = [p for p in pairs if split == "all" or p["split"] == split]
                    scores = score_pairs([
                        PairOutcome(outcomes[p["pair_id"]]["unsafe"].rating, outcomes[p["pair_id"]]["safe"].rating,
                                    outcomes[p["pair_id"]]["unsafe"].score, outcomes[p["pair_id"]]["safe"].score)
                        for p in chosen])
                    row = {**stage.base_row(category.slug), "guard": name, "split": split, "n_pairs": scores.n_pairs,
                           "acc_unsafe": scores.acc_unsafe, "acc_safe": scores.acc_safe,
                           "pair_accuracy": scores.pair_accuracy, "roc_auc": scores.roc_auc,
                           "n_invalid": scores.n_invalid, "guard_config_sha256": sha}
                    metrics.append(row)
                    summary.append(row)
            stage.store.replace_slice("guard_predictions", {"category": category.slug}, predictions)
            stage.store.replace_slice("guard_metrics", {"category": category.slug}, metrics)
        stage.record(category.slug, len(pairs), len(pairs), 0, {"guards": sorted(guards)}, metrics)
    lines = ["| category | guard | split | pairs | acc unsafe | acc safe | pair acc | ROC-AUC |",
             "|---|---|---|---:|---:|---:|---:|---:|"]
    for r in summary:
        lines.append(f"| {r['category']} | {r['guard']} | {r['split']} | {r['n_pairs']} | {_fmt(r['acc_unsafe'])} | "
                     f"{_fmt(r['acc_safe'])} | {_fmt(r['pair_accuracy'])} | {_fmt(r['roc_auc'])} |")
    checks = [check_result("every_pair_has_two_predictions", not incomplete,
                           "every guard rated both halves of every pair" if not incomplete else f"incomplete: {incomplete}")]
    meta: dict[str, Any] = {"metrics": MetadataValue.md("\n".join(lines)), "guards": MetadataValue.json(sorted(guards))}
    if skipped:
        meta["skipped_guards"] = MetadataValue.json(skipped)
    return stage.result(meta, checks)
