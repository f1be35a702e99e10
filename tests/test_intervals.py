"""95% intervals of the guard figures: a seeded percentile bootstrap over sources."""

from __future__ import annotations

import numpy as np

from sp_assets.core.evaluation import PairOutcome, bootstrap_intervals, roc_auc, score_pairs, seeded_rng
from sp_assets.core.guard_evaluation import pooled_intervals, with_interval

PAIRS = [PairOutcome("unsafe", "safe", 0.9, 0.1), PairOutcome("unsafe", "unsafe", 0.8, 0.7),
         PairOutcome("safe", "safe", 0.4, 0.2), PairOutcome("invalid", "safe", 0.5, 0.6)] * 6
LOOKS = ["safe", "unsafe", "safe", "invalid", "safe"] * 4


def test_the_intervals_hold_the_figures_and_are_the_same_for_the_same_seed():
    a = bootstrap_intervals(PAIRS, LOOKS, seeded_rng(0, "o1", "g"))
    assert a == bootstrap_intervals(PAIRS, LOOKS, seeded_rng(0, "o1", "g"))
    assert a != bootstrap_intervals(PAIRS, LOOKS, seeded_rng(0, "o2", "g"))
    scores = score_pairs(PAIRS)
    for name in ("acc_unsafe", "acc_safe", "pair_accuracy", "roc_auc"):
        lo, hi = a[name]
        assert lo < getattr(scores, name) < hi, name
    lo, hi = a["lookalike_fpr"]
    assert lo < 8 / 20 < hi  # 'invalid' counts as a false positive


def test_the_vectorised_auc_is_the_auc_of_each_resample():
    """Each draw's AUC from the count vector equals roc_auc computed on the resampled pairs themselves."""
    rng = np.random.default_rng(3)
    n = len(PAIRS)
    counts = rng.multinomial(n, np.full(n, 1 / n), size=5)
    pos = np.array([p.unsafe_score for p in PAIRS])
    neg = np.array([p.safe_score for p in PAIRS])
    wins = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])
    for c in counts:
        idx = np.repeat(np.arange(n), c)
        expected = roc_auc([1] * n + [0] * n, list(pos[idx]) + list(neg[idx]))
        assert abs((c @ wins @ c) / n ** 2 - expected) < 1e-12


def test_undefined_figures_have_no_interval():
    none = bootstrap_intervals([PairOutcome("unsafe", "safe", None, None)], [], seeded_rng(0))
    assert none["roc_auc"] == (None, None) and none["lookalike_fpr"] == (None, None)
    assert bootstrap_intervals([], [], seeded_rng(0))["pair_accuracy"] == (None, None)


def test_pooled_intervals_resample_every_categorys_pairs_together():
    answers = []
    for cat in ("o1", "o2"):
        for i, p in enumerate(PAIRS[:8]):
            answers += [{"category": cat, "guard": "g", "pair_id": f"p{i}", "half": "unsafe", "rating": p.unsafe_rating,
                         "score": p.unsafe_score},
                        {"category": cat, "guard": "g", "pair_id": f"p{i}", "half": "safe", "rating": p.safe_rating,
                         "score": p.safe_score}]
        answers.append({"category": cat, "guard": "g", "pair_id": "l1", "half": "lookalike", "rating": "unsafe",
                        "score": None})
    got = pooled_intervals(answers)
    assert got[("g", "controlled")]["pair_accuracy_low"] is None  # no control halves: no controlled pairs
    row = got[("g", "original")]
    assert row["lookalike_fpr_low"] == row["lookalike_fpr_high"] == 1.0
    assert row["pair_accuracy_low"] <= 0.25 <= row["pair_accuracy_high"]
    assert with_interval(0.25, row, "pair_accuracy").startswith("0.25 [")
    assert with_interval(None, row, "pair_accuracy") == "n/a"
