"""The run-level experiments of ``guard_metrics``: the sample-efficiency probe and the guard figures.

Pooled over the categories of the run (about a dozen pairs per category is too few for a curve).
Labels of ordinary (non-pair) images come from the judge's ratings in ``policy_labels``, so the
experiment works on any source, not only the demo.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from sp_assets.core.plots import pair_error_rows, plot_error_vs_similarity, plot_roc_curves
from sp_assets.core.probe import (
    ProbeResult,
    concat_features,
    fit_probe,
    plot_probe_curves,
    run_probe_experiment,
    text_embedding_features,
)

N_BASE = 4  # unpaired unsafe and safe images every probe starts from


def _text(raw: str | None) -> str:
    try:
        return str(json.loads(raw or "{}").get("text") or "")
    except (json.JSONDecodeError, AttributeError):
        return ""


def probe_inputs(stage: Any, judge_profile: str, categories: list[str]) -> dict[str, Any]:
    """Pairs (by split), rated source images, their paths and the scene text the judge read."""
    pairs = stage.store.query(
        "SELECT b.pair_id, b.category, b.split, b.image_sha256, b.unsafe_path, b.safe_sha256, b.safe_path, "
        "b.control_sha256, b.control_path, v.edit_raw_output, "
        "(SELECT c.edit_raw_output FROM verified_pairs c WHERE c.candidate_id = b.control_candidate_id "
        "  AND c.category = b.category LIMIT 1) AS control_raw_output "
        "FROM benchmark_split b JOIN verified_pairs v ON v.candidate_id = b.candidate_id AND v.category = b.category "
        "  AND v.judge_profile = b.judge_profile AND v.writer_profile = b.writer_profile "
        "  AND v.editor_profile = b.editor_profile "
        "WHERE b.category IN (SELECT UNNEST(?)) ORDER BY b.pair_id", [categories]).to_dicts()
    sources = stage.store.query(
        "SELECT DISTINCT s.image_sha256, s.image_path, l.rating, l.raw_output FROM source_images s "
        "JOIN policy_labels l ON l.category = s.category AND l.image_sha256 = s.image_sha256 AND l.judge_profile = ? "
        "WHERE s.category IN (SELECT UNNEST(?)) AND l.rating IN ('unsafe', 'safe') ORDER BY s.image_sha256",
        [judge_profile, categories]).to_dicts()
    return {"pairs": pairs, "sources": sources}


def run_sample_efficiency(stage: Any, embedder: Any, judge_profile: str, categories: list[str], out_dir: Path,
                          seeds: int, ks: tuple[int, ...] = (0, 2, 4, 8, 16, 32)) -> dict[str, Any]:
    """Probe trained on a base set plus k counterfactual pairs vs the same number of ordinary images.

    Roles: base = N_BASE unpaired unsafe + N_BASE safe sources; pairs = the train split; ordinary
    pool = the other sources not held out; evaluation = validation + test pairs (held out) and the
    held-out pairs' sources with the remaining safe images (non-pair). Features: image embeddings,
    plus the embedding of the scene text the judge read when there is any.
    """
    data = probe_inputs(stage, judge_profile, categories)
    pairs, sources = data["pairs"], data["sources"]
    train = [p for p in pairs if p["split"] == "train"]
    held = [p for p in pairs if p["split"] != "train"]
    if len(train) < 2 or not held:
        return {"skipped": f"needs at least 2 train pairs and 1 held-out pair; have {len(train)} and {len(held)}"}
    rng = np.random.default_rng(stage.settings.seed)
    held_src = {p["image_sha256"] for p in held}
    paired = {p["image_sha256"] for p in train}
    unsafe = [s["image_sha256"] for s in sources if s["rating"] == "unsafe" and s["image_sha256"] not in held_src]
    safe = [str(s) for s in rng.permutation([s["image_sha256"] for s in sources if s["rating"] == "safe"])]
    unpaired = [str(s) for s in rng.permutation([s for s in unsafe if s not in paired])]
    base_unsafe, base_safe = unpaired[:N_BASE], safe[:N_BASE]
    rest_safe = safe[N_BASE:]
    pool_safe, eval_safe = rest_safe[: len(rest_safe) // 2], rest_safe[len(rest_safe) // 2:]
    pool_unsafe = [s for s in unsafe if s not in base_unsafe]
    if not base_unsafe or not base_safe:
        return {"skipped": "needs unpaired unsafe and safe source images for the base set"}

    paths = {s["image_sha256"]: s["image_path"] for s in sources}
    texts = {s["image_sha256"]: _text(s["raw_output"]) for s in sources}
    for p in pairs:
        paths.setdefault(p["image_sha256"], p["unsafe_path"])
        paths[p["safe_sha256"]] = p["safe_path"]
        texts[p["safe_sha256"]] = _text(p["edit_raw_output"])
        if p["control_sha256"]:
            paths[p["control_sha256"]] = p["control_path"]
            texts[p["control_sha256"]] = _text(p["control_raw_output"])
    shas = sorted(paths)
    vectors: list[np.ndarray] = []
    for start in range(0, len(shas), 32):  # stream: never hold the whole pool of images
        vectors.append(embedder.embed([stage.images.open(paths[s]) for s in shas[start:start + 32]]))
    image_feat = dict(zip(shas, np.vstack(vectors)))
    feature_sets = {"image": image_feat}
    if any(texts.get(s) for s in shas):
        text_vecs = text_embedding_features([texts.get(s, "") for s in shas])
        feature_sets["image+text"] = {s: concat_features(image_feat[s][None], text_vecs[i][None])[0]
                                      for i, s in enumerate(shas)}

    results: dict[str, ProbeResult] = {}
    figures: dict[str, Path] = {}
    for name, feat in feature_sets.items():
        def F(keys: list[str], feat: dict[str, np.ndarray] = feat) -> np.ndarray:
            return np.stack([feat[k] for k in keys])

        n = len(held)
        evals = {
            "heldout_pairs": (np.vstack([F([p["image_sha256"] for p in held]), F([p["safe_sha256"] for p in held])]),
                              np.r_[np.ones(n, int), np.zeros(n, int)], np.r_[np.arange(n), np.arange(n)]),
            "non_pair": (F(sorted(held_src) + eval_safe),
                         np.r_[np.ones(len(held_src), int), np.zeros(len(eval_safe), int)], None),
        }
        result = run_probe_experiment(
            F(base_unsafe + base_safe), [1] * len(base_unsafe) + [0] * len(base_safe),
            F([p["image_sha256"] for p in train]), F([p["safe_sha256"] for p in train]),
            F(pool_unsafe + pool_safe), [1] * len(pool_unsafe) + [0] * len(pool_safe), evals,
            ks=ks, seeds=range(seeds))
        results[name] = result
        figures[name] = plot_probe_curves(result, out_dir / f"probe_{name.replace('+', '_')}.png",
                                          title=f"linear probe on {name} features")
    # The trained probes as guards: base + every train pair, against base + the whole ordinary pool,
    # on the richest feature set; guard_metrics scores them on the test split like any other guard.
    name, feat = list(feature_sets.items())[-1]
    X = lambda keys: np.stack([feat[k] for k in keys])  # noqa: E731
    pair_probe = fit_probe(np.vstack([X(base_unsafe + base_safe), X([p["image_sha256"] for p in train]),
                                      X([p["safe_sha256"] for p in train])]),
                           [1] * len(base_unsafe) + [0] * len(base_safe) + [1] * len(train) + [0] * len(train))
    ordinary_probe = fit_probe(X(base_unsafe + base_safe + pool_unsafe + pool_safe),
                               [1] * len(base_unsafe) + [0] * len(base_safe) + [1] * len(pool_unsafe) + [0] * len(pool_safe))
    all_shas = sorted(feat)
    guards = {}
    for guard, probe in (("probe_pairs", pair_probe), ("probe_ordinary", ordinary_probe)):
        p_unsafe = probe.predict_proba(X(all_shas))[:, list(probe.classes_).index(1)]
        guards[guard] = {"features": name, "p_unsafe": dict(zip(all_shas, map(float, p_unsafe)))}
    return {"results": results, "figures": figures, "probe_guards": guards, "pairs": pairs,
            "roles": {"base": [len(base_unsafe), len(base_safe)], "train_pairs": len(train), "heldout_pairs": len(held),
                      "ordinary_pool": [len(pool_unsafe), len(pool_safe)], "non_pair_eval": [len(held_src), len(eval_safe)]}}


def guard_figures(stage: Any, categories: list[str], out_dir: Path) -> dict[str, Path]:
    """ROC curves of every guard (original pairs, all splits) and error rate against pair similarity."""
    preds = stage.store.query(
        "SELECT guard, pair_id, half, label, rating, score FROM guard_predictions "
        "WHERE category IN (SELECT UNNEST(?)) AND half IN ('unsafe', 'safe') ORDER BY guard, pair_id, half",
        [categories]).to_dicts()
    if not preds:
        return {}
    curves: dict[str, tuple[list[int], list[float | None]]] = {}
    for r in preds:
        labels, scores = curves.setdefault(r["guard"], ([], []))
        labels.append(1 if r["label"] == "unsafe" else 0)
        scores.append(r["score"])
    similarity = dict(stage.store.query(
        "SELECT b.pair_id, v.embedding_cosine FROM benchmark_split b JOIN verified_pairs v "
        "ON v.candidate_id = b.candidate_id AND v.category = b.category AND v.judge_profile = b.judge_profile "
        "AND v.writer_profile = b.writer_profile AND v.editor_profile = b.editor_profile "
        "WHERE b.category IN (SELECT UNNEST(?))", [categories]).rows())
    return {
        "roc": plot_roc_curves(curves, out_dir / "roc_curves.png"),
        "error_vs_similarity": plot_error_vs_similarity(
            pair_error_rows(preds, similarity, "embedding_cosine"), out_dir / "error_vs_similarity.png",
            similarity="embedding_cosine"),
    }
