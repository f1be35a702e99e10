"""Guard figures: ROC points and similarity bins against hand-computed values; the PNGs are small and valid."""

from __future__ import annotations

import base64

import numpy as np
import pytest

from sp_assets.core.encoding import file_data_uri
from sp_assets.core.evaluation import roc_auc
from sp_assets.core.plots import (
    error_by_similarity_bins,
    markdown_image,
    pair_error_rows,
    plot_error_vs_similarity,
    plot_roc_curves,
    roc_curve_points,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_roc_curve_points_four_point_example():
    # thresholds from high to low: 0.8 catches 1 of 2 unsafe; 0.4 adds a safe; 0.35 the other unsafe
    fpr, tpr, thr = roc_curve_points([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    np.testing.assert_allclose(fpr, [0.0, 0.0, 0.5, 0.5, 1.0])
    np.testing.assert_allclose(tpr, [0.0, 0.5, 0.5, 1.0, 1.0])
    np.testing.assert_allclose(thr[1:], [0.8, 0.4, 0.35, 0.1])
    # the trapezoid under those points is the pairwise AUC of the evaluation module
    area = float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))
    assert area == pytest.approx(roc_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])) == pytest.approx(0.75)
    # string labels as stored in guard_predictions; one class -> no curve
    fpr2, _, _ = roc_curve_points(["safe", "safe", "unsafe", "unsafe"], [0.1, 0.4, 0.35, 0.8])
    np.testing.assert_allclose(fpr2, fpr)
    assert roc_curve_points([1, 1], [0.3, 0.4]) is None
    with pytest.raises(ValueError, match="finite"):
        roc_curve_points([0, 1], [0.3, None])


def test_error_by_similarity_bins_tiny_table():
    sim = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, None]
    err = [True, True, False, True, False, False, True]  # the last row has no similarity: left out
    t = error_by_similarity_bins(sim, err, n_bins=2)
    assert t["n"].to_list() == [3, 3]
    assert t["n_errors"].to_list() == [2, 1]
    assert t["error_rate"].to_list() == pytest.approx([2 / 3, 1 / 3])
    assert t["lo"].to_list() == pytest.approx([0.1, 0.35]) and t["hi"].to_list() == pytest.approx([0.35, 0.6])
    assert t["mean_similarity"].to_list() == pytest.approx([0.2, 0.5])
    assert t["stderr"][0] == pytest.approx(np.sqrt(2 / 9 / 3))
    # fixed edges: an empty bin is kept with n = 0; the top edge is inclusive
    t2 = error_by_similarity_bins([0.0, 0.1, 1.0], [1, 0, 1], edges=[0.0, 0.5, 0.9, 1.0])
    assert t2["n"].to_list() == [2, 0, 1]
    assert t2["error_rate"].to_list() == [0.5, None, 1.0]
    # uniform bins, and every similarity equal -> one bin
    assert error_by_similarity_bins([0, 0.1, 0.9, 1.0], [0, 0, 1, 1], 2, strategy="uniform")["error_rate"].to_list() == [0.0, 1.0]
    assert error_by_similarity_bins([0.99] * 3, [1, 0, 0], 4)["n"].to_list() == [3]


def test_pair_error_rows_invalid_is_wrong():
    preds = [
        {"guard": "g", "pair_id": "a", "half": "unsafe", "rating": "unsafe"},
        {"guard": "g", "pair_id": "a", "half": "safe", "rating": "safe"},
        {"guard": "g", "pair_id": "b", "half": "unsafe", "rating": "invalid"},
        {"guard": "g", "pair_id": "b", "half": "safe", "rating": "safe"},
        {"guard": "g", "pair_id": "c", "half": "unsafe", "rating": "unsafe"},  # half missing: left out
    ]
    rows = pair_error_rows(preds, {"a": 0.99, "b": 0.95}, "ssim_outside")
    assert [(r["pair_id"], r["error"], r["ssim_outside"]) for r in rows] == [("a", False, 0.99), ("b", True, 0.95)]


def test_figures_are_small_valid_pngs(tmp_path):
    rng = np.random.default_rng(0)
    labels = [1] * 20 + [0] * 20
    curves = {"good": (labels, list(rng.uniform(0.5, 1, 20)) + list(rng.uniform(0, 0.6, 20))),
              "coin": (labels, list(rng.uniform(0, 1, 40))),
              "no_scores": (labels, [None] * 40),
              "one_class": ([1] * 4, [0.2, 0.3, 0.4, 0.5])}
    roc = plot_roc_curves(curves, tmp_path / "roc.png")
    rows = [{"guard": g, "similarity": float(s), "error": bool(rng.uniform() < 1 - s)}
            for g in ("a", "b") for s in rng.uniform(0.8, 1.0, 30)]
    err = plot_error_vs_similarity(rows, tmp_path / "err.png", n_bins=3)
    empty = plot_error_vs_similarity([], tmp_path / "empty.png")
    for path in (roc, err, empty):
        raw = path.read_bytes()
        assert raw.startswith(PNG_MAGIC) and len(raw) < 150_000
    uri = file_data_uri(roc)
    assert uri.startswith("data:image/png;base64,") and base64.b64decode(uri.split(",", 1)[1]) == roc.read_bytes()
    assert markdown_image(b"\x89PNG", "roc").startswith("![roc](data:image/png;base64,")
