"""Choose the scene-text judge's head by cross-validation on the policy's own examples (<policy>.examples.jsonl).

    .venv/bin/python benchmarks/judge_cv.py [policies/default.yaml] [--folds 5]
        [--sentence-model all-mpnet-base-v2 | all-MiniLM-L6-v2] [--model-path LOCAL_FOLDER]

Only the policy's training rows are used (never the demo phrases, which are the judge's test set):
stratified k-fold over the (text, label) rows, the word TF-IDF refitted on each training fold. For
every combination of head kind, C, safe_weight, bow_weight and safe_prior it prints the three figures
the judge is held to, on the held-out folds, with the judge's own decision rule at the profile's
thresholds (0.5 / 0.5):

  exact       label right (the category for a violating row, 'safe' for an allowed one)
  false_safe  violating rows rated safe (the judge must keep this near 0)
  allowed     allowed rows (look-alikes) rated safe

and picks the best by ``_objective``: the smallest miss of the targets (false_safe <= 0.03, allowed
>= 0.90), each miss in units of its budget, then the best exact. About 11 minutes on 2 cores with
all-mpnet-base-v2 once the training vectors are cached (a cold encode adds about 9); 34 minutes cold
on 8,038 rows. On the default policy (8,038 rows) it chooses svc C=30 safe_weight=1 bow_weight=0
safe_prior=0.4: exact 0.919, false_safe 0.026, allowed 0.905 (on 6,594 rows it had chosen C=10
safe_weight=1 bow_weight=1 safe_prior=0.5; on 5,198, safe_weight=2 safe_prior=0.4).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from sp_assets.backends.judges.text_head import (
    DEFAULT_SENTENCE_MODEL,
    SENTENCE_MODELS,
    SAFE_LABEL,
    HeadSettings,
    PolicyTextHead,
    decision,
    fit_bow,
    fit_head,
    head_probs,
    normalise,
    training_examples,
)
from sp_assets.core.policy import DEFAULT_POLICY_PATH, load_policy

# (kind, C, safe_weight, bow_weight) fitted per fold; every safe_prior is applied to the same fit.
GRID = [("svc", C, w, bow) for C in (3.0, 10.0, 30.0) for w in (1.0, 2.0) for bow in (0.0, 1.0)] + [
    ("logreg", C, w, bow) for C in (10.0, 30.0) for w in (3.0, 5.0) for bow in (0.0, 1.0)
]
SAFE_PRIORS = (0.3, 0.4, 0.5, 0.6, 0.8, 1.0)
TARGETS = {"false_safe": 0.03, "allowed": 0.90}  # the judge's floors (tests/test_scene_text.py)
THRESHOLDS = (0.5, 0.5)  # resources/judges.yaml, scene_text


def _scores(pred: list[str], gold: list[str]) -> dict[str, float]:
    unsafe = [g != SAFE_LABEL for g in gold]
    return {
        "exact": float(np.mean([p == g for p, g in zip(pred, gold)])),
        "false_safe": float(np.mean([p == SAFE_LABEL for p, u in zip(pred, unsafe) if u])),
        "allowed": float(np.mean([p == SAFE_LABEL for p, u in zip(pred, unsafe) if not u])),
        "invalid": float(np.mean([p == "invalid" for p in pred])),
    }


def _objective(s: dict[str, float]) -> tuple[float, float]:
    """Miss the targets by as little as possible, each miss measured in its own budget (0.03 of
    violating rows may be rated safe, 0.10 of allowed rows may be rated unsafe or invalid); then exact."""
    miss = max(0.0, s["false_safe"] - TARGETS["false_safe"]) / TARGETS["false_safe"]
    miss += max(0.0, TARGETS["allowed"] - s["allowed"]) / (1.0 - TARGETS["allowed"])
    return -round(miss, 6), s["exact"]


def _cv_probs(dense: np.ndarray, texts: list[str], y: np.ndarray, folds, settings: HeadSettings) -> np.ndarray:
    """Held-out probabilities (P(safe) unscaled) for every row."""
    out = np.zeros((len(y), int(y.max()) + 1))
    for train, test in folds:
        x = dense
        if settings.bow_weight:
            bow = fit_bow([texts[i] for i in train]).transform(texts).toarray()
            x = np.hstack([dense, settings.bow_weight * bow])
        head = fit_head(x[train], y[train], settings)
        out[test] = head_probs(head, x[test], out.shape[1], 1.0)
    return out


def main() -> None:
    from sklearn.model_selection import StratifiedKFold

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("policy", nargs="?", default=str(DEFAULT_POLICY_PATH))
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--sentence-model", default=DEFAULT_SENTENCE_MODEL, choices=SENTENCE_MODELS)
    ap.add_argument("--model-path", default=None, help="a local sentence-transformers folder (instead of the named model)")
    args = ap.parse_args()
    policy = load_policy(Path(args.policy))
    t0 = time.perf_counter()
    head = PolicyTextHead(policy, None, HeadSettings(kind="logreg"), model_path=args.model_path,
                          sentence_model=args.sentence_model)  # loads the encoder; its own fit is not used
    texts, labels = training_examples(policy, head.examples)
    texts = [normalise(t) for t in texts]
    y = np.array([head.classes.index(label) for label in labels])
    dense = head.training_embeddings()  # the judge's own cached vectors of these rows
    print(f"{len(texts)} rows ({int((y == 0).sum())} allowed) in {len(head.classes) - 1} categories; "
          f"embeddings in {time.perf_counter() - t0:.1f} s")
    folds = list(StratifiedKFold(n_splits=args.folds, shuffle=True, random_state=0).split(texts, y))
    results = []
    for kind, C, w, bow in GRID:
        probs = _cv_probs(dense, texts, y, folds, HeadSettings(kind=kind, C=C, safe_weight=w, bow_weight=bow))
        for prior in SAFE_PRIORS:
            scaled = probs.copy()
            scaled[:, 0] *= prior
            scaled /= scaled.sum(axis=1, keepdims=True)
            s = _scores([decision(p, head.classes, *THRESHOLDS) for p in scaled], labels)
            settings = HeadSettings(kind=kind, C=C, safe_weight=w, safe_prior=prior, bow_weight=bow)
            results.append((settings, s))
            print(f"{kind:6s} C={C:<4g} safe_weight={w:<3g} bow_weight={bow:<3g} safe_prior={prior:<3g}: "
                  + " ".join(f"{k} {v:.3f}" for k, v in s.items()), flush=True)
    best, s = max(results, key=lambda r: _objective(r[1]))
    print(f"\nchosen: {best}", {k: round(v, 3) for k, v in s.items()}, f"({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
