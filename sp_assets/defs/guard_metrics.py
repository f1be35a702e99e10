"""Stage 7, ``guard_metrics``: every configured guard evaluated on the benchmark pairs and look-alikes, plus
the run-level experiments (figures, the sample-efficiency probe and the probes scored as guards)."""

from dataclasses import dataclass
from functools import partial
from typing import Any

from dagster import AssetExecutionContext, MetadataValue, asset
from dagster_duckdb import DuckDBResource

from sp_assets.backends.base import RecordJudge

from sp_assets.core.record_types import Verdict
from sp_assets.backends.common.hf import MissingWeightsError
from sp_assets.backends.profiles import ProfileError
from sp_assets.core import guard_evaluation as ge
from sp_assets.core.hashing import sha256_json
from sp_assets.core.plots import markdown_image
from sp_assets.core.policy import Category
from sp_assets.core.reports import guard_table
from sp_assets.defs.resources import EmbedderResource, GuardResource, JudgeResource, PipelineSettings
from sp_assets.defs.checks import check, check_result
from sp_assets.defs.stage import Stage, asset_kwargs
from sp_assets.core import policy_variants as pv
from sp_assets.execution import experiments
from sp_assets.execution import variants as run_variants
from sp_assets.execution.embedder import text_embed_call
from sp_assets.execution.embedder import embed_images, embed_texts
from sp_assets.execution.judge import judged, prefetch_readings
from sp_assets.execution.lazy import LazyBackend
from sp_assets.release import export_benchmark
from sp_assets.storage import queries

ASSET = "guard_metrics"
CHECKS = [check(ASSET, "every_pair_has_two_predictions",
                "Each guard rated both halves of every pair, and every look-alike.")]
REUSED_FROM = ("policy_labels", "verified_pairs")  # stages whose judge answers a judge-guard reuses


@dataclass(frozen=True)
class CategoryInputs:
    """What a category's guards rate, and the config hashes of the judges that chose its pairs."""

    pairs: list[dict[str, Any]]
    lookalikes: list[dict[str, Any]]
    selectors: frozenset[str]

    @property
    def items(self) -> list[dict[str, Any]]:
        return ge.rated_items(self.pairs, self.lookalikes)


@asset(deps=["benchmark_split"], **asset_kwargs(
    "Guards evaluated on the benchmark pairs: accuracy on the unsafe and safe halves, pair accuracy "
    "(both halves right) and ROC-AUC, per category, on the test split and on all pairs, for original "
    "pairs (source vs edit) and controlled pairs (null edit vs edit), beside the false-positive rate on "
    "the safe look-alikes. A guard that selected the pairs is marked (selected_pairs). Includes the "
    "'edited_only' confound probe.", CHECKS, judges=True))
def guard_metrics(context: AssetExecutionContext, settings: PipelineSettings, duckdb: DuckDBResource,
                  judge: JudgeResource, embedder: EmbedderResource, guards: GuardResource):
    stage = Stage(ASSET, context, settings, duckdb)
    loaded, skipped = _load_guards(stage, guards)
    summary: list[dict[str, Any]] = []
    incomplete: list[str] = []
    inputs = {c.slug: _inputs(stage, judge, c.slug) for c in stage.categories()}
    variants = settings.variants(stage.policy)
    _prefetch(stage, loaded, skipped, [item for given in inputs.values() for item in given.items])
    for category in stage.categories():
        with stage.report.timed(category.slug):
            given = inputs[category.slug]
            evaluated = _evaluate(stage, category, loaded, skipped, given)
            predictions, metrics = _rows(stage.base_row(category.slug), given, evaluated)
            incomplete += [f"{category.slug}/{name}" for name, (v, *_) in evaluated.items()
                           if ge.incomplete(given.pairs, v, given.lookalikes)]
            stage.store.replace_slice("guard_predictions", {"category": category.slug}, predictions)
            stage.store.replace_slice("guard_metrics", {"category": category.slug}, metrics)
            policy_predictions, policy_metrics = _policy_rows(stage, guards, variants, category, given, evaluated)
            stage.store.replace_slice("variant_predictions", {"category": category.slug}, policy_predictions)
            stage.store.replace_slice("policy_guard_metrics", {"category": category.slug}, policy_metrics)
        summary += metrics
        stage.report.record(category.slug, len(given.pairs), len(given.pairs), 0, {"guards": sorted(evaluated)}, metrics)
    checks = [check_result("every_pair_has_two_predictions", not incomplete,
                           "every guard rated both halves of every pair and every look-alike" if not incomplete
                           else f"incomplete: {incomplete}")]
    meta: dict[str, Any] = {"metrics": MetadataValue.md(guard_table(summary)),
                            "guards": MetadataValue.json(sorted([*loaded, ge.EDITED_ONLY]))}
    if skipped:
        meta["skipped_guards"] = MetadataValue.json(skipped)
    meta.update(_policy_metadata(stage, variants))
    meta.update(_run_level_experiments(stage, judge, embedder))
    meta.update(_headline_and_release(stage))
    return stage.result(meta, checks)


def _inputs(stage: Stage, judge: JudgeResource, category: str) -> CategoryInputs:
    """A category's pairs and look-alikes, and who chose its pairs: the judges in the pairs' lineage, and
    the run's own judge and verifier (a guard with one of their configs agrees with the pairs by construction)."""
    selectors = {*queries.pair_selectors(stage.store, category), judge.config_sha256(),
                 judge.config_sha256(judge.verifier_name)}
    return CategoryInputs(queries.benchmark_pairs(stage.store, category), queries.lookalikes_of(stage.store, category),
                          frozenset(selectors))


def _rows(base: dict[str, Any], given: CategoryInputs, evaluated: dict[str, tuple]
          ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The category's guard_predictions and guard_metrics rows."""
    items = given.items
    predictions = [row for name, (v, origins, computed, sha) in evaluated.items()
                   for row in ge.prediction_rows(base, name, sha, items, v, origins, computed)]
    metrics = [row for name, (v, _, _, sha) in evaluated.items()
               for row in ge.metric_rows(base, name, sha, given.pairs, v, lookalikes=given.lookalikes,
                                         selected_pairs=sha in given.selectors)]
    return predictions, metrics


def _policy_rows(stage: Stage, guards: GuardResource, variants: list[pv.Variant], category: Category,
                 given: CategoryInputs, evaluated: dict[str, tuple]) -> tuple[list[dict], list[dict]]:
    """Every guard under each policy variant of the category: its answers and its policy-pair figures (a guard
    whose weights turn out missing under a variant is left out with the reason in the log)."""
    labels = queries.variant_labels_of(stage.store, category.slug) if variants else []
    predictions: list[dict[str, Any]] = []
    metrics: list[dict[str, Any]] = []
    if not labels:
        return predictions, metrics
    for name, (verdicts, _, _, sha) in evaluated.items():
        if name == ge.EDITED_ONLY:
            continue
        try:
            got = run_variants.guard_rows(stage.memo, partial(guards.lazy, name=name), name, verdicts, variants,
                                          category, given.items, labels, stage.base_row(category.slug),
                                          sha in given.selectors)
        except (MissingWeightsError, FileNotFoundError, ImportError, OSError) as exc:
            stage.context.log.warning(f"guard {name!r} not asked under the policy variants: {exc}")
            continue
        predictions += got[0]
        metrics += got[1]
    return predictions, metrics


def _policy_metadata(stage: Stage, variants: list[pv.Variant]) -> dict[str, Any]:
    """Each guard's policy-pair figures under each variant, pooled over every category in the database."""
    if not variants:
        return {"policy_variants": MetadataValue.text(f"none (set {pv.VARIANTS_ENV_VAR} to score guards on "
                                                      "following the policy)")}
    rows = pv.pooled(queries.policy_answers(stage.store))
    return {"policy_variants": MetadataValue.json(sorted(v.name for v in variants)),
            "policy_pair_metrics": MetadataValue.md(pv.pooled_table(rows))}


def _headline_and_release(stage: Stage) -> dict[str, Any]:
    """The best independent guard over every category in the database, and the release: Parquet with image
    columns, WebDataset tars, datasheet (with these guard figures) and gallery, over every category in the
    database (not only this run's), rebuilt whole so it never mixes versions; written once per run, here."""
    best = ge.headline(queries.pooled_guard_metrics(stage.store))
    report = export_benchmark(stage.store, stage.images, stage.settings.root / "export", policy=stage.policy,
                              thresholds=stage.settings.thresholds(),
                              show_unsafe=stage.settings.preview_unsafe,
                              reviewer_names=stage.settings.export_reviewer_names,
                              review_notes=stage.settings.export_review_notes)
    headline = ("no independent guard rated any pair" if best is None else
                f"{best['guard']}: pair accuracy {best['pair_accuracy']:.2f} on original pairs, look-alike FPR "
                + ("n/a" if best["lookalike_fpr"] is None else f"{best['lookalike_fpr']:.2f}"))
    return {"headline_guard": MetadataValue.text(headline), "export": MetadataValue.md(report.markdown()),
            "export_dir": MetadataValue.path(str(report.out_dir)),
            "gallery": MetadataValue.path(str(report.out_dir / "gallery" / "index.html"))}


def _load_guards(stage: Stage, guards: GuardResource) -> tuple[dict[str, LazyBackend], dict[str, str]]:
    """Every guard profile that can run here (loaded only when it has images to rate); the others with why."""
    loaded: dict[str, LazyBackend] = {}
    skipped: dict[str, str] = {}
    for name in guards.profiles:
        try:
            lazy = guards.lazy(stage.policy, name)
            record_only = issubclass(lazy.cls, RecordJudge)
        except (ProfileError, ImportError) as exc:
            skipped[name] = str(exc)
            stage.context.log.warning(f"guard {name!r} skipped: {exc}")
            continue
        if record_only:
            skipped[name] = "judges from manifest records only; cannot rate edited images"
            continue
        loaded[name] = lazy
    return loaded, skipped


def _prefetch(stage: Stage, loaded: dict[str, LazyBackend], skipped: dict[str, str],
              items: list[dict[str, Any]]) -> None:
    """Every guard's category-independent readings of every category's images at once (all workers busy)."""
    for name, lazy in list(loaded.items()):
        try:
            prefetch_readings(stage.memo, lazy, items)
        except (MissingWeightsError, FileNotFoundError, ImportError, OSError) as exc:
            skipped[name] = str(exc)
            del loaded[name]
            stage.context.log.warning(f"guard {name!r} skipped: {exc}")


def _evaluate(stage: Stage, category: Category, loaded: dict[str, LazyBackend], skipped: dict[str, str],
              given: CategoryInputs) -> dict[str, tuple]:
    """guard -> (verdicts, reuse origins, computing runs, config hash), the confound probe included.

    A guard whose weights turn out to be missing when it first has to run is skipped with the reason.
    """
    out: dict[str, tuple] = {}
    for name, lazy in list(loaded.items()):
        try:
            out[name] = (*_guard_verdicts(stage, category, lazy, given.items), lazy.config_sha256)
        except (MissingWeightsError, FileNotFoundError, ImportError, OSError) as exc:
            skipped[name] = str(exc)
            del loaded[name]
            stage.context.log.warning(f"guard {name!r} skipped: {exc}")
    out[ge.EDITED_ONLY] = (ge.edited_only_verdicts(given.pairs, given.lookalikes), {}, {}, ge.EDITED_ONLY_SHA)
    return out


def _guard_verdicts(stage: Stage, category: Category, lazy: LazyBackend, items: list[dict[str, Any]]
                    ) -> tuple[dict[ge.Key, Verdict], dict[ge.Key, str], dict[ge.Key, str]]:
    """A guard's verdict on every pair half and look-alike, with where a reused answer came from and the run
    that computed it.

    A judge that also serves as a guard need not read the same image twice: its answer in
    policy_labels or verified_pairs, made under the same policy and config, is the answer it would
    give again (the memo holds it under the same key).
    """
    verdicts, origins, computed = {}, {}, {}
    for item, out in judged(stage.memo, lazy, category, items):
        key = (item["pair_id"], item["half"])
        verdicts[key], computed[key] = out.result.verdict, out.computed_run_id
        if out.reused and out.stage in REUSED_FROM:
            origins[key] = out.stage
    return verdicts, origins, computed


def _run_level_experiments(stage: Stage, judge: JudgeResource, embedder: EmbedderResource) -> dict[str, Any]:
    """Figures and the sample-efficiency probe, pooled over the run's categories."""
    categories = [c.slug for c in stage.categories()]
    out_dir = stage.settings.root / "reports" / stage.run_id
    out_dir.mkdir(parents=True, exist_ok=True)
    meta: dict[str, Any] = {"reports": MetadataValue.path(str(out_dir))}
    shown = experiments.figures(stage.memo, queries.guard_predictions(stage.store, categories),
                                queries.pair_similarity(stage.store, categories), out_dir)
    meta.update({f"figure_{name}": MetadataValue.md(markdown_image(path, name)) for name, path in shown.items()})
    if stage.settings.probe_seeds <= 0:
        return meta
    lazy = embedder.lazy(stage.policy)
    held_out = (partial(experiments.held_out_pairs, stage.memo, judge.lazy(stage.policy), stage.categories(),
                        stage.settings.seed) if stage.settings.probe_ood else None)
    probe = experiments.sample_efficiency(
        stage.memo, queries.probe_pairs(stage.store, categories),
        queries.rated_sources(stage.store, categories, judge.profile),
        lambda images: embed_images(stage.memo, lazy, images), partial(embed_texts, stage.memo),
        sha256_json([lazy.config_sha256, text_embed_call().config_sha256]), stage.settings.seed, out_dir,
        stage.settings.probe_seeds, held_out)
    meta.update(_store_probe(stage, probe, ",".join(categories)))
    return meta


def _store_probe(stage: Stage, probe: dict[str, Any], scope: str) -> dict[str, Any]:
    """The probe's results into probe_results, its trained probes scored as guards, and its metadata."""
    if "skipped" in probe:
        stage.store.replace_slice("probe_results", {"scope": scope}, [])
        return {"probe": MetadataValue.text(f"skipped: {probe['skipped']}")}
    rows, meta = [], {}
    for features, result in probe["results"].items():
        rows += [{"scope": scope, "features": features, **{k: r[k] for k in ("condition", "k", "k_used", "eval_set",
                  "metric", "mean", "std", "n", "ci_low", "ci_high")}, "run_id": stage.run_id, "created_at": stage.now}
                 for r in result.summary.iter_rows(named=True)]
        meta[f"probe_{features}"] = MetadataValue.md(
            result.to_markdown() + "\n\n" + markdown_image(probe["figures"][features], f"probe {features}"))
    meta["probe_roles"] = MetadataValue.json(probe["roles"])
    _score_probe_guards(stage, probe)
    stage.store.replace_slice("probe_results", {"scope": scope}, rows)
    return meta


def _score_probe_guards(stage: Stage, probe: dict[str, Any]) -> None:
    """The trained probes, scored on each category's test pairs like the other guards (added to the
    category slices this run has just written). Not on the look-alikes: they are safe sources, which the
    probes may have been trained on."""
    predictions, metrics = [], []
    for guard, info in probe["probe_guards"].items():
        sha = f"probe-{info['features']}-seed{stage.settings.seed}"
        for category in [c.slug for c in stage.categories()]:
            test = [p for p in probe["pairs"] if p["category"] == category and p["split"] == "test"]
            verdicts = ge.probe_verdicts(test, info["p_unsafe"])
            base = stage.base_row(category)
            predictions += [{k: v for k, v in r.items() if k != "reused_from"}
                            for r in ge.prediction_rows(base, guard, sha, ge.rated_items(test), verdicts)]
            metrics += ge.metric_rows(base, guard, sha, test, verdicts, splits=("test",))
    stage.store.append("guard_predictions", predictions)
    stage.store.append("guard_metrics", metrics)
