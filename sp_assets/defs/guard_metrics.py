"""Stage 7, ``guard_metrics``: every configured guard evaluated on the benchmark pairs."""


import json
from typing import Any

from dagster import AssetExecutionContext, MetadataValue, asset
from dagster_duckdb import DuckDBResource

from sp_assets.backends.base import Guard, Judge, RecordJudge, Verdict
from sp_assets.backends.common.hf import MissingWeightsError
from sp_assets.backends.registry import load_guard
from sp_assets.core.evaluation import PairOutcome, score_pairs
from sp_assets.core.plots import markdown_image
from sp_assets.core.policy import Category
from sp_assets.backends.profiles import ProfileError
from sp_assets.defs.resources import EmbedderResource, JudgeResource, PipelineSettings
from sp_assets.core.sample_efficiency import guard_figures, run_sample_efficiency
from sp_assets.defs.stage import Stage, asset_kwargs, check, check_result

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


HALVES = {"unsafe": ("image_sha256", "unsafe_path"), "safe": ("safe_sha256", "safe_path"),
          "control": ("control_sha256", "control_path")}
LABELS = {"unsafe": "unsafe", "control": "unsafe", "safe": "safe"}
# pair type -> (the unsafe half, the safe half)
PAIR_TYPES = {"original": ("unsafe", "safe"), "controlled": ("control", "safe")}
EDITED_ONLY = "edited_only"


def edited_only_verdicts(pairs: list[dict[str, Any]]) -> dict[tuple[str, str], Verdict]:
    """The confound probe: a classifier that sees only 'was this image edited'.

    Fitted on the train split's original pairs (source = not edited, unsafe; flip = edited, safe):
    P(unsafe | edited) is the share of edited training images that are unsafe. On original pairs it
    is right every time; on controlled pairs both halves are edited, so it cannot tell them apart.
    """
    train = [p for p in pairs if p["split"] == "train"] or pairs
    # Training images: each source (unsafe, not edited) and each flip (safe, edited); Laplace-smoothed.
    p_unsafe = {False: (len(train) + 1) / (len(train) + 2), True: 1 / (len(train) + 2)}
    out = {}
    for p in pairs:
        for half, edited in (("unsafe", False), ("safe", True), ("control", True)):
            if half == "control" and not p["control_sha256"]:
                continue
            score = p_unsafe[edited]
            out[(p["pair_id"], half)] = Verdict(
                "unsafe" if score >= 0.5 else "safe", "", score, f"edited={edited}",
                json.dumps({"edited": edited, "p_unsafe": round(score, 6)}))
    return out


def _guard_verdicts(stage: Stage, category: Category, backend: Any, sha: str,
                    pairs: list[dict[str, Any]]) -> tuple[dict[tuple[str, str], Verdict], dict[tuple[str, str], str]]:
    """A guard's verdict on every half of every pair, reusing answers this judge config already gave."""
    known = stored_verdicts(stage, category.slug, sha) if isinstance(backend, Judge) else {}
    items = [(p["pair_id"], half, p[col_sha], p[col_path]) for p in pairs
             for half, (col_sha, col_path) in HALVES.items() if p[col_sha]]
    verdicts: dict[tuple[str, str], Verdict] = {}
    origins: dict[tuple[str, str], str] = {}
    fresh_items = [it for it in items if it[2] not in known]
    fresh: dict[str, Verdict] = {}
    for start in range(0, len(fresh_items), BATCH):
        batch = [it for it in fresh_items[start:start + BATCH] if it[2] not in fresh]
        images = [stage.images.open(it[3]) for it in batch]
        if not batch:
            continue
        if isinstance(backend, Judge):
            got = backend.judge(images, category)
        else:
            assert isinstance(backend, Guard)
            got = backend.predict(images, category)
        fresh.update({it[2]: v for it, v in zip(batch, got, strict=True)})
    for pair_id, half, image_sha, _ in items:
        if image_sha in known:
            verdicts[(pair_id, half)], origins[(pair_id, half)] = known[image_sha]
        else:
            verdicts[(pair_id, half)] = fresh[image_sha]
    return verdicts, origins


@asset(deps=["benchmark_split"], **asset_kwargs(
    "Guards evaluated on the benchmark pairs: accuracy on the unsafe and safe halves, pair accuracy "
    "(both halves right) and ROC-AUC, per category, on the test split and on all pairs, for original "
    "pairs (source vs edit) and controlled pairs (null edit vs edit). Includes the 'edited_only' "
    "confound probe.", CHECKS))
def guard_metrics(context: AssetExecutionContext, settings: PipelineSettings, duckdb: DuckDBResource,
                  judge: JudgeResource, embedder: EmbedderResource):
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
            evaluated: dict[str, tuple[dict[tuple[str, str], Verdict], dict[tuple[str, str], str], str]] = {
                name: (*_guard_verdicts(stage, category, backend, sha, pairs), sha)
                for name, (backend, sha) in guards.items()}
            evaluated[EDITED_ONLY] = (edited_only_verdicts(pairs), {}, "provenance-flag-v1")
            for name, (verdicts, origins, sha) in evaluated.items():
                by_pair = {p["pair_id"]: p for p in pairs}
                for (pair_id, half), v in sorted(verdicts.items()):
                    pair = by_pair[pair_id]
                    predictions.append({
                        **stage.base_row(category.slug), "guard": name, "pair_id": pair_id, "split": pair["split"],
                        "half": half, "image_sha256": pair[HALVES[half][0]], "label": LABELS[half],
                        "rating": v.rating, "score": v.score, "raw_output": v.raw_output,
                        "reused_from": origins.get((pair_id, half)), "guard_config_sha256": sha,
                    })
                if any((p["pair_id"], h) not in verdicts for p in pairs for h in ("unsafe", "safe")):
                    incomplete.append(f"{category.slug}/{name}")
                for pair_type, (bad, good) in PAIR_TYPES.items():
                    for split in ("test", "all"):
                        chosen = [p for p in pairs if (split == "all" or p["split"] == split)
                                  and (p["pair_id"], bad) in verdicts]
                        scores = score_pairs([
                            PairOutcome(verdicts[(p["pair_id"], bad)].rating, verdicts[(p["pair_id"], good)].rating,
                                        verdicts[(p["pair_id"], bad)].score, verdicts[(p["pair_id"], good)].score)
                            for p in chosen])
                        row = {**stage.base_row(category.slug), "guard": name, "split": split, "pair_type": pair_type,
                               "n_pairs": scores.n_pairs, "acc_unsafe": scores.acc_unsafe, "acc_safe": scores.acc_safe,
                               "pair_accuracy": scores.pair_accuracy, "roc_auc": scores.roc_auc,
                               "n_invalid": scores.n_invalid, "guard_config_sha256": sha}
                        metrics.append(row)
                        summary.append(row)
            stage.store.replace_slice("guard_predictions", {"category": category.slug}, predictions)
            stage.store.replace_slice("guard_metrics", {"category": category.slug}, metrics)
        stage.record(category.slug, len(pairs), len(pairs), 0, {"guards": sorted(evaluated)}, metrics)
    lines = ["| category | guard | pairs | split | n | acc unsafe | acc safe | pair acc | ROC-AUC |",
             "|---|---|---|---|---:|---:|---:|---:|---:|"]
    for r in summary:
        lines.append(f"| {r['category']} | {r['guard']} | {r['pair_type']} | {r['split']} | {r['n_pairs']} | "
                     f"{_fmt(r['acc_unsafe'])} | {_fmt(r['acc_safe'])} | {_fmt(r['pair_accuracy'])} | {_fmt(r['roc_auc'])} |")
    checks = [check_result("every_pair_has_two_predictions", not incomplete,
                           "every guard rated both halves of every pair" if not incomplete else f"incomplete: {incomplete}")]
    meta: dict[str, Any] = {"metrics": MetadataValue.md("\n".join(lines)), "guards": MetadataValue.json(sorted(evaluated))}
    if skipped:
        meta["skipped_guards"] = MetadataValue.json(skipped)
    meta.update(_run_level_experiments(stage, judge, embedder))
    return stage.result(meta, checks)


def _run_level_experiments(stage: Stage, judge: JudgeResource, embedder: EmbedderResource) -> dict[str, Any]:
    """Figures and the sample-efficiency probe, pooled over the run's categories."""
    categories = [c.slug for c in stage.categories()]
    scope = ",".join(categories)
    out_dir = stage.settings.root / "reports" / stage.run_id
    out_dir.mkdir(parents=True, exist_ok=True)
    meta: dict[str, Any] = {"reports": MetadataValue.path(str(out_dir))}
    figures = guard_figures(stage, categories, out_dir)
    for name, path in figures.items():
        meta[f"figure_{name}"] = MetadataValue.md(markdown_image(path, name))
    if stage.settings.probe_seeds <= 0:
        return meta
    loaded = embedder.load(stage.policy)
    probe = run_sample_efficiency(stage, loaded, judge.profile, categories, out_dir, stage.settings.probe_seeds)
    rows: list[dict[str, Any]] = []
    if "skipped" in probe:
        meta["probe"] = MetadataValue.text(f"skipped: {probe['skipped']}")
    else:
        for features, result in probe["results"].items():
            for r in result.summary.iter_rows(named=True):
                rows.append({"scope": scope, "features": features, "condition": r["condition"], "k": r["k"],
                             "k_used": r["k_used"], "eval_set": r["eval_set"], "metric": r["metric"],
                             "mean": r["mean"], "std": r["std"], "n": r["n"], "run_id": stage.run_id,
                             "created_at": stage.now})
            meta[f"probe_{features}"] = MetadataValue.md(
                result.to_markdown() + "\n\n" + markdown_image(probe["figures"][features], f"probe {features}"))
        meta["probe_roles"] = MetadataValue.json(probe["roles"])
        _score_probe_guards(stage, probe)
    stage.store.replace_slice("probe_results", {"scope": scope}, rows)
    return meta


def _score_probe_guards(stage: Stage, probe: dict[str, Any]) -> None:
    """The trained probes, scored on each category's test pairs like the other guards (added to the
    category slices this run has just written)."""
    predictions: list[dict[str, Any]] = []
    metrics: list[dict[str, Any]] = []
    for guard, info in probe["probe_guards"].items():
        sha = f"probe-{info['features']}-seed{stage.settings.seed}"
        for category in [c.slug for c in stage.categories()]:
            test = [p for p in probe["pairs"] if p["category"] == category and p["split"] == "test"]
            verdicts: dict[tuple[str, str], Verdict] = {}
            for p in test:
                for half, col in (("unsafe", "image_sha256"), ("safe", "safe_sha256"), ("control", "control_sha256")):
                    if p[col]:
                        score = info["p_unsafe"][p[col]]
                        verdicts[(p["pair_id"], half)] = Verdict("unsafe" if score >= 0.5 else "safe", "", score,
                                                                 "linear probe", json.dumps({"p_unsafe": round(score, 6)}))
                        predictions.append({**stage.base_row(category), "guard": guard, "pair_id": p["pair_id"],
                                            "split": "test", "half": half, "image_sha256": p[col], "label": LABELS[half],
                                            "rating": verdicts[(p["pair_id"], half)].rating, "score": score,
                                            "raw_output": verdicts[(p["pair_id"], half)].raw_output,
                                            "guard_config_sha256": sha})
            for pair_type, (bad, good) in PAIR_TYPES.items():
                chosen = [p for p in test if (p["pair_id"], bad) in verdicts]
                scores = score_pairs([PairOutcome(verdicts[(p["pair_id"], bad)].rating, verdicts[(p["pair_id"], good)].rating,
                                                  verdicts[(p["pair_id"], bad)].score, verdicts[(p["pair_id"], good)].score)
                                      for p in chosen])
                metrics.append({**stage.base_row(category), "guard": guard, "split": "test", "pair_type": pair_type,
                                "n_pairs": scores.n_pairs, "acc_unsafe": scores.acc_unsafe, "acc_safe": scores.acc_safe,
                                "pair_accuracy": scores.pair_accuracy, "roc_auc": scores.roc_auc,
                                "n_invalid": scores.n_invalid, "guard_config_sha256": sha})
    stage.store.append("guard_predictions", predictions)
    stage.store.append("guard_metrics", metrics)
