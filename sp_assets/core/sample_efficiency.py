"""The run-level experiments of ``guard_metrics``: the sample-efficiency probe and the guard figures.

Pooled over the categories of the run (about a dozen pairs per category is too few for a curve).
Labels of ordinary (non-pair) images come from the judge's ratings in ``policy_labels``, so the
experiment works on any source, not only the demo. The caller reads the rows and embeds the images;
everything here is computed from what it is given.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from sp_assets.core.plots import pair_error_rows, plot_error_vs_similarity, plot_roc_curves
from sp_assets.core.probe import (
    ProbeResult,
    concat_features,
    fit_probe,
    plot_probe_curves,
    run_probe_experiment,
)

N_BASE = 4  # unpaired unsafe and safe images every probe starts from
Features = dict[str, np.ndarray]


def _text(raw: str | None) -> str:
    try:
        return str(json.loads(raw or "{}").get("text") or "")
    except (json.JSONDecodeError, AttributeError):
        return ""


@dataclass
class Roles:
    """Which images play which part in the probe experiment (all lists of image hashes)."""

    train: list[dict[str, Any]]  # train-split pairs: the counterfactual pairs a probe may add
    held: list[dict[str, Any]]  # validation + test pairs: evaluation
    base_unsafe: list[str]
    base_safe: list[str]
    pool_unsafe: list[str]  # ordinary images a probe may add instead of pairs
    pool_safe: list[str]
    held_sources: list[str]
    eval_safe: list[str]

    def summary(self) -> dict[str, Any]:
        return {"base": [len(self.base_unsafe), len(self.base_safe)], "train_pairs": len(self.train),
                "heldout_pairs": len(self.held), "ordinary_pool": [len(self.pool_unsafe), len(self.pool_safe)],
                "non_pair_eval": [len(self.held_sources), len(self.eval_safe)]}


def assign_roles(pairs: Sequence[dict[str, Any]], sources: Sequence[dict[str, Any]], seed: int) -> Roles | str:
    """The experiment's roles, or why it cannot run.

    base = N_BASE unpaired unsafe + N_BASE safe sources; pairs = the train split; ordinary pool = the
    other sources not held out; evaluation = validation + test pairs and the held-out pairs' sources
    with the remaining safe images (non-pair).
    """
    train = [p for p in pairs if p["split"] == "train"]
    held = [p for p in pairs if p["split"] != "train"]
    if len(train) < 2 or not held:
        return f"needs at least 2 train pairs and 1 held-out pair; have {len(train)} and {len(held)}"
    rng = np.random.default_rng(seed)
    held_src = {p["image_sha256"] for p in held}
    paired = {p["image_sha256"] for p in train}
    unsafe = [s["image_sha256"] for s in sources if s["rating"] == "unsafe" and s["image_sha256"] not in held_src]
    safe = [str(s) for s in rng.permutation([s["image_sha256"] for s in sources if s["rating"] == "safe"])]
    unpaired = [str(s) for s in rng.permutation([s for s in unsafe if s not in paired])]
    base_unsafe, base_safe = unpaired[:N_BASE], safe[:N_BASE]
    rest_safe = safe[N_BASE:]
    if not base_unsafe or not base_safe:
        return "needs unpaired unsafe and safe source images for the base set"
    return Roles(train, held, base_unsafe, base_safe, [s for s in unsafe if s not in base_unsafe],
                 rest_safe[: len(rest_safe) // 2], sorted(held_src), rest_safe[len(rest_safe) // 2:])


def image_paths_and_texts(pairs: Sequence[dict[str, Any]], sources: Sequence[dict[str, Any]],
                          ood: Sequence[dict[str, Any]] = ()) -> tuple[dict[str, str], dict[str, str]]:
    """Every image of the experiment: hash -> stored path, and hash -> the scene text the judge read."""
    paths = {s["image_sha256"]: s["image_path"] for s in sources}
    texts = {s["image_sha256"]: _text(s["raw_output"]) for s in sources}
    for p in ood:
        for half in ("unsafe", "safe"):
            paths[p[f"{half}_sha256"]] = p[f"{half}_path"]
            texts[p[f"{half}_sha256"]] = _text(p[f"{half}_raw_output"])
    for p in pairs:
        paths.setdefault(p["image_sha256"], p["unsafe_path"])
        paths[p["safe_sha256"]] = p["safe_path"]
        texts[p["safe_sha256"]] = _text(p["edit_raw_output"])
        if p["control_sha256"]:
            paths[p["control_sha256"]] = p["control_path"]
            texts[p["control_sha256"]] = _text(p["control_raw_output"])
    return paths, texts


def feature_sets(paths: Mapping[str, str], texts: Mapping[str, str],
                 embed_images: Callable[[list[tuple[str, str]]], Mapping[str, np.ndarray]],
                 embed_texts: Callable[[list[str]], np.ndarray]) -> dict[str, Features]:
    """'image' features for every hash, and 'image+text' when any image carries scene text.

    ``embed_images``: (hash, stored path) pairs -> hash -> vector; ``embed_texts``: texts -> one row each.
    """
    shas = sorted(paths)
    vectors = embed_images([(s, paths[s]) for s in shas])
    image_feat = {s: vectors[s] for s in shas}
    out = {"image": image_feat}
    if any(texts.get(s) for s in shas):
        text_vecs = embed_texts([texts.get(s, "") for s in shas])
        out["image+text"] = {s: concat_features(image_feat[s][None], text_vecs[i][None])[0] for i, s in enumerate(shas)}
    return out


def _stack(feat: Features, keys: Sequence[str]) -> np.ndarray:
    return np.stack([feat[k] for k in keys])


def _pair_set(feat: Features, unsafe: Sequence[str], safe: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """An eval set of pairs: the unsafe halves' rows, then the safe halves' (pair i is row i and row n + i)."""
    n = len(unsafe)
    return (np.vstack([_stack(feat, unsafe), _stack(feat, safe)]), np.r_[np.ones(n, int), np.zeros(n, int)],
            np.r_[np.arange(n), np.arange(n)])


def probe_curve(roles: Roles, feat: Features, seeds: int, ks: Sequence[int],
                ood: Sequence[dict[str, Any]] = ()) -> ProbeResult:
    """Held-out accuracy of a probe on base + k pairs against base + 2k ordinary images, over seeds; with
    ``ood`` pairs also on them (eval set 'ood_pairs')."""
    evals = {
        "heldout_pairs": _pair_set(feat, [p["image_sha256"] for p in roles.held], [p["safe_sha256"] for p in roles.held]),
        "non_pair": (_stack(feat, roles.held_sources + roles.eval_safe),
                     np.r_[np.ones(len(roles.held_sources), int), np.zeros(len(roles.eval_safe), int)], None),
    }
    if ood:
        evals["ood_pairs"] = _pair_set(feat, [p["unsafe_sha256"] for p in ood], [p["safe_sha256"] for p in ood])
    return run_probe_experiment(
        _stack(feat, roles.base_unsafe + roles.base_safe), [1] * len(roles.base_unsafe) + [0] * len(roles.base_safe),
        _stack(feat, [p["image_sha256"] for p in roles.train]), _stack(feat, [p["safe_sha256"] for p in roles.train]),
        _stack(feat, roles.pool_unsafe + roles.pool_safe), [1] * len(roles.pool_unsafe) + [0] * len(roles.pool_safe),
        evals, ks=tuple(ks), seeds=range(seeds))


def probe_guards(roles: Roles, name: str, feat: Features) -> dict[str, dict[str, Any]]:
    """The trained probes as guards: base + every train pair, against base + the whole ordinary pool.

    guard_metrics scores them on the test split like any other guard.
    """
    base = roles.base_unsafe + roles.base_safe
    base_y = [1] * len(roles.base_unsafe) + [0] * len(roles.base_safe)
    n_train = len(roles.train)
    pair_probe = fit_probe(np.vstack([_stack(feat, base), _stack(feat, [p["image_sha256"] for p in roles.train]),
                                      _stack(feat, [p["safe_sha256"] for p in roles.train])]),
                           base_y + [1] * n_train + [0] * n_train)
    ordinary_probe = fit_probe(_stack(feat, base + roles.pool_unsafe + roles.pool_safe),
                               base_y + [1] * len(roles.pool_unsafe) + [0] * len(roles.pool_safe))
    all_shas = sorted(feat)
    guards = {}
    for guard, probe in (("probe_pairs", pair_probe), ("probe_ordinary", ordinary_probe)):
        p_unsafe = probe.predict_proba(_stack(feat, all_shas))[:, list(probe.classes_).index(1)]
        guards[guard] = {"features": name, "p_unsafe": dict(zip(all_shas, map(float, p_unsafe)))}
    return guards


def run_sample_efficiency(pairs: Sequence[dict[str, Any]], sources: Sequence[dict[str, Any]],
                          embed_images: Callable[[list[tuple[str, str]]], Mapping[str, np.ndarray]],
                          embed_texts: Callable[[list[str]], np.ndarray], seed: int, out_dir: Path, seeds: int,
                          ks: tuple[int, ...] = (0, 2, 4, 8, 16, 32), ood: Sequence[dict[str, Any]] = ()
                          ) -> dict[str, Any]:
    """Probe trained on a base set plus k counterfactual pairs vs the same number of ordinary images.

    ``pairs``: benchmark pairs with the verifier's raw answers; ``sources``: rated source images;
    ``embed_images`` and ``embed_texts`` compute (or recall) the embeddings. Features: image embeddings, plus the embedding of the
    scene text the judge read when there is any. ``ood``: out-of-distribution pairs (unsafe / safe halves'
    hashes, paths and the judge's raw answers, labelled by construction), an extra eval set.
    """
    roles = assign_roles(pairs, sources, seed)
    if isinstance(roles, str):
        return {"skipped": roles}
    features = feature_sets(*image_paths_and_texts(pairs, sources, ood), embed_images, embed_texts)
    results: dict[str, ProbeResult] = {}
    figures: dict[str, Path] = {}
    for name, feat in features.items():
        results[name] = probe_curve(roles, feat, seeds, ks, ood)
        figures[name] = plot_probe_curves(results[name], out_dir / f"probe_{name.replace('+', '_')}.png",
                                          title=f"linear probe on {name} features")
    richest, feat = list(features.items())[-1]
    return {"results": results, "figures": figures, "probe_guards": probe_guards(roles, richest, feat),
            "pairs": list(pairs), "roles": {**roles.summary(), **ood_summary(ood)}}


def ood_summary(ood: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """How many out-of-distribution pairs there were, and how often the run's judge agreed with their labels
    (they are labelled by construction; a low share says the set is hard for the judge too)."""
    if not ood:
        return {}
    agree = [p["unsafe_rating"] == "unsafe" for p in ood] + [p["safe_rating"] == "safe" for p in ood]
    return {"ood_pairs": len(ood), "ood_judge_agrees": round(sum(agree) / len(agree), 4)}


def guard_figures(predictions: Sequence[dict[str, Any]], similarity: Mapping[str, float | None],
                  out_dir: Path) -> dict[str, Path]:
    """ROC curves of every guard (original pairs, all splits) and error rate against pair similarity."""
    if not predictions:
        return {}
    curves: dict[str, tuple[list[int], list[float | None]]] = {}
    for r in predictions:
        labels, scores = curves.setdefault(r["guard"], ([], []))
        labels.append(1 if r["label"] == "unsafe" else 0)
        scores.append(r["score"])
    return {
        "roc": plot_roc_curves(curves, out_dir / "roc_curves.png"),
        "error_vs_similarity": plot_error_vs_similarity(
            pair_error_rows(predictions, similarity, "embedding_cosine"), out_dir / "error_vs_similarity.png",
            similarity="embedding_cosine"),
    }
