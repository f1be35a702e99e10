"""The sample-efficiency probe: metric definitions by hand, and the expected direction on synthetic data.

The synthetic set: the label lives in feature 0 (weak and noisy), while ordinary images also differ
in a clean 'style' feature 1 (unsafe images have style +2, safe -2). A probe trained on ordinary
images leans on style. Counterfactual pairs share their style (drawn at random per pair) and differ
only in feature 0, so they teach the probe that style says nothing. Test pairs share style within a
pair, and the non-pair test images have the style flipped.
"""

from __future__ import annotations

import numpy as np
import pytest

from sp_assets.core.evaluation import PairOutcome, roc_auc, score_pairs
from sp_assets.core.probe import (
    ProbeResult,
    concat_features,
    plot_probe_curves,
    run_probe_experiment,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
D = 10


def _ordinary(rng: np.random.Generator, n: int, flip: bool = False) -> tuple[np.ndarray, np.ndarray]:
    y = np.repeat([1, 0], n // 2)
    X = rng.normal(size=(n, D))
    X[:, 0] = 0.8 * (2 * y - 1) + rng.normal(size=n)
    X[:, 1] = 2.0 * (2 * y - 1) * (-1 if flip else 1) + 0.3 * rng.normal(size=n)
    return X, y


def _pairs(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    base = rng.normal(size=(n, D))
    base[:, 1] = 2.0 * rng.choice([-1, 1], size=n) + 0.3 * rng.normal(size=n)
    unsafe, safe = base.copy(), base.copy()
    unsafe[:, 0] += 0.8
    safe[:, 0] -= 0.8
    return unsafe, safe


def _synthetic():
    rng = np.random.default_rng(1234)
    base_X, base_y = _ordinary(rng, 4)
    pu, ps = _pairs(rng, 40)
    extra_X, extra_y = _ordinary(rng, 80)
    tu, ts = _pairs(rng, 50)
    eval_sets = {
        "test_pairs": (np.vstack([tu, ts]), np.r_[np.ones(50, int), np.zeros(50, int)], np.r_[np.arange(50), np.arange(50)]),
        "non_pair": _ordinary(rng, 60, flip=True) + (None,),
    }
    return base_X, base_y, pu, ps, extra_X, extra_y, eval_sets


@pytest.fixture(scope="module")
def synthetic_result() -> ProbeResult:
    base_X, base_y, pu, ps, extra_X, extra_y, eval_sets = _synthetic()
    return run_probe_experiment(base_X, base_y, pu, ps, extra_X, extra_y, eval_sets)


# -- the guard metrics by hand --------------------------------------------------------------------


def test_roc_auc_hand_computed():
    # positives 0.35, 0.8 vs negatives 0.1, 0.4: 0.35 beats 0.1 only, 0.8 beats both -> 3/4
    assert roc_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == 0.75
    # a tie counts half: positives 0.5, 0.7 vs negatives 0.5, 0.1 -> (0.5 + 1 + 1 + 1) / 4
    assert roc_auc([1, 0, 1, 0], [0.5, 0.5, 0.7, 0.1]) == 0.875
    assert roc_auc([1, 1], [0.2, 0.9]) is None  # one class: undefined, not 0.5


def test_score_pairs_hand_computed():
    pairs = [
        PairOutcome("unsafe", "safe", 0.9, 0.2),     # both right
        PairOutcome("unsafe", "unsafe", 0.8, 0.6),   # safe half wrong
        PairOutcome("invalid", "safe", 0.4, 0.1),    # invalid unsafe half: wrong
    ]
    s = score_pairs(pairs)
    assert s.n_pairs == 3 and s.n_invalid == 1
    assert s.acc_unsafe == pytest.approx(2 / 3)
    assert s.acc_safe == pytest.approx(2 / 3)
    assert s.pair_accuracy == pytest.approx(1 / 3)
    # positives 0.9, 0.8, 0.4 vs negatives 0.2, 0.6, 0.1: 3 + 3 + 2 wins of 9
    assert s.roc_auc == pytest.approx(8 / 9)
    # an invalid safe half is wrong too; a missing score leaves the AUC undefined
    s2 = score_pairs([PairOutcome("unsafe", "invalid", 0.9, None), PairOutcome("unsafe", "safe", 0.7, 0.3)])
    assert (s2.acc_unsafe, s2.acc_safe, s2.pair_accuracy, s2.n_invalid, s2.roc_auc) == (1.0, 0.5, 0.5, 1, None)
    assert score_pairs([]).pair_accuracy is None


# -- the experiment -------------------------------------------------------------------------------


def test_pairs_beat_ordinary_on_confounded_synthetic_data(synthetic_result: ProbeResult):
    r = synthetic_result
    assert not r.skipped and not r.capped
    pairs16 = r.mean("pairs", 16, "test_pairs", "pair_accuracy")
    ordinary16 = r.mean("ordinary", 16, "test_pairs", "pair_accuracy")
    assert pairs16 > ordinary16 + 0.2, (pairs16, ordinary16)
    # the non-pair images with the style flipped: the pairs-trained probe generalises, the other does not
    assert r.mean("pairs", 16, "non_pair", "accuracy") > r.mean("ordinary", 16, "non_pair", "accuracy") + 0.2
    # k = 0 is the base set alone: the same model in both conditions, seed for seed
    k0 = r.table.filter(r.table["k"] == 0).sort(["eval_set", "metric", "seed", "condition"])
    a = k0.filter(k0["condition"] == "pairs")["value"].to_list()
    b = k0.filter(k0["condition"] == "ordinary")["value"].to_list()
    assert a == b and len(a) == 5 * (6 + 4)


def test_table_shape_and_determinism(synthetic_result: ProbeResult):
    r = synthetic_result
    assert r.table.columns == ["condition", "k", "k_used", "seed", "eval_set", "metric", "value"]
    # 2 conditions x 6 ks x 5 seeds x (6 pair metrics + 4 image metrics)
    assert r.table.height == 2 * 6 * 5 * 10
    assert set(r.table["metric"].unique()) == {"acc_unsafe", "acc_safe", "pair_accuracy", "pair_ranking",
                                               "accuracy", "roc_auc"}
    assert {"mean", "std", "n"} <= set(r.summary.columns)
    assert r.summary.height == 2 * 6 * 10
    assert "| test_pairs | pair_accuracy | 16 |" in r.to_markdown()
    base_X, base_y, pu, ps, extra_X, extra_y, eval_sets = _synthetic()
    again = run_probe_experiment(base_X, base_y, pu, ps, extra_X, extra_y, eval_sets, ks=(16,), seeds=[2])
    want = r.table.filter((r.table["k"] == 16) & (r.table["seed"] == 2)).sort(["condition", "eval_set", "metric"])
    got = again.table.sort(["condition", "eval_set", "metric"])
    assert got["value"].to_list() == want["value"].to_list()


def test_k_is_capped_and_single_class_sets_are_skipped():
    rng = np.random.default_rng(0)
    pu, ps = _pairs(rng, 3)
    extra_X, extra_y = _ordinary(rng, 20)
    ev = {"pairs": (np.vstack([pu, ps]), [1, 1, 1, 0, 0, 0], [0, 1, 2, 0, 1, 2])}
    # empty base set: k = 0 has nothing to learn from; k = 8 is capped to the 3 pairs there are
    r = run_probe_experiment(np.zeros((0, D)), [], pu, ps, extra_X, extra_y, ev, ks=(0, 2, 8), seeds=[0, 1])
    assert r.capped == {8: 3}
    assert set(r.table.filter(r.table["k"] == 8)["k_used"].to_list()) == {3}
    assert {(s["condition"], s["k"]) for s in r.skipped} == {("pairs", 0), ("ordinary", 0)}
    assert all(s["reason"] == "empty training set" for s in r.skipped)
    # a base set of one class, and an ordinary pool of that class only: skipped with the reason
    base_X, base_y = extra_X[:2], [1, 1]
    only_unsafe = extra_X[extra_y == 1]
    r2 = run_probe_experiment(base_X, base_y, pu, ps, only_unsafe, np.ones(len(only_unsafe), int), ev,
                              ks=(0, 2), seeds=[0])
    reasons = {(s["condition"], s["k"]): s["reason"] for s in r2.skipped}
    assert set(reasons) == {("pairs", 0), ("ordinary", 0), ("ordinary", 2)}
    assert "one class only (unsafe" in reasons[("ordinary", 2)]
    assert r2.mean("pairs", 2, "pairs", "pair_accuracy") is not None  # pairs bring both classes
    assert r2.mean("ordinary", 2, "pairs", "pair_accuracy") is None


def test_bad_inputs_are_named():
    rng = np.random.default_rng(0)
    pu, ps = _pairs(rng, 3)
    X, y = _ordinary(rng, 6)
    with pytest.raises(ValueError, match="pair 0 must have one unsafe"):
        run_probe_experiment(X, y, pu, ps, X, y, {"bad": (pu[:2], [1, 1], [0, 0])}, ks=(0,), seeds=[0])
    with pytest.raises(ValueError, match="pair_X_safe has 2"):
        run_probe_experiment(X, y, pu, ps[:2], X, y, {}, ks=(0,), seeds=[0])
    with pytest.raises(ValueError, match="4 features"):
        run_probe_experiment(X[:, :4], y, pu, ps, X, y, {}, ks=(0,), seeds=[0])
    # string labels work as well as 1/0
    r = run_probe_experiment(X, ["unsafe"] * 3 + ["safe"] * 3, pu, ps, X, y, {"imgs": (X, y, None)}, ks=(0,), seeds=[0])
    assert r.mean("pairs", 0, "imgs", "accuracy") is not None


def test_curve_plot_is_a_small_png(synthetic_result: ProbeResult, tmp_path):
    path = plot_probe_curves(synthetic_result, tmp_path / "probe.png")
    raw = path.read_bytes()
    assert raw.startswith(PNG_MAGIC) and 1000 < len(raw) < 150_000


def test_concat_features():
    a = np.array([[3.0, 4.0], [0.0, 0.0]])
    b = np.array([[2.0], [5.0]])
    out = concat_features(a, b)
    np.testing.assert_allclose(out, [[0.6, 0.8, 1.0], [0.0, 0.0, 1.0]])
    with pytest.raises(ValueError, match="different numbers of rows"):
        concat_features(a, b[:1])


def test_text_embedding_features_offline_model():
    from sp_assets.backends.embedders.sentence import text_embedding_features

    X = text_embedding_features(["KILL THEM ALL", "kill   them all", "Fresh bread daily", "", None])
    assert X.shape == (5, 384) and X.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(X[:3], axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(X[0], X[1], atol=1e-6)  # case and whitespace do not matter
    assert not X[3].any() and not X[4].any()  # nothing read -> zero vector
    assert float(X[0] @ X[2]) < 0.5
