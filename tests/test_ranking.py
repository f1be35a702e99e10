"""Candidate ranking and verdict rules: pure functions, checked on hand-made rows."""

from __future__ import annotations

import pytest

from sp_assets.core.splitting import assign_splits, split_counts
from sp_assets.core.verification import quality_score, reasons_for

THRESHOLDS = {"min_ssim_outside": 0.95, "min_psnr_outside": 30.0, "min_embedding_cosine": 0.8,
              "max_changed_fraction": 0.5}


def _row(**kw):
    row = {"kind": "flip", "source_rating": "unsafe", "edit_rating": "safe", "sizes_match": True,
           "changed_fraction": 0.1, "ssim_outside": 0.99, "psnr_outside": 45.0, "embedding_cosine": 0.95}
    row.update(kw)
    return row


def test_quality_score_weighs_the_flip_against_preservation():
    assert quality_score(0.1, 1.0, 1.0) == pytest.approx(0.5 * 0.9 + 0.25 + 0.25)
    confident = quality_score(0.05, 0.96, 0.90)
    faithful = quality_score(0.40, 1.00, 0.99)
    assert confident > faithful  # 0.5*0.95+0.24+0.225 = 0.94 vs 0.5*0.6+0.25+0.2475 = 0.7975
    # A null edit is ranked by how surely it stayed unsafe.
    assert quality_score(0.9, 1.0, 1.0, kind="null") == pytest.approx(0.5 * 0.9 + 0.5)
    # No score: the worst case, never a bonus.
    assert quality_score(None, 1.0, 1.0) == pytest.approx(0.5)
    assert quality_score(None, 1.0, 1.0, kind="null") == pytest.approx(0.5)


@pytest.mark.parametrize("change, reason", [
    ({}, None),
    ({"edit_rating": "unsafe"}, "edit_still_unsafe"),
    ({"edit_rating": "invalid"}, "edit_judged_invalid"),
    ({"sizes_match": False}, "size_mismatch"),
    ({"changed_fraction": 0.6}, "changed_too_much"),
    ({"ssim_outside": 0.9}, "ssim_outside_low"),
    ({"psnr_outside": 20.0}, "psnr_outside_low"),
    ({"embedding_cosine": 0.5}, "embedding_changed"),
    ({"source_rating": "invalid"}, "source_not_unsafe"),
    ({"kind": "null", "edit_rating": "unsafe"}, None),
    ({"kind": "null", "edit_rating": "safe"}, "null_edit_not_unsafe"),
    ({"kind": "null", "edit_rating": "invalid"}, "null_edit_not_unsafe"),
])
def test_every_failed_test_is_a_reason(change, reason):
    got = reasons_for(_row(**change), THRESHOLDS)
    assert got == ([] if reason is None else [reason])


def test_split_counts_are_exact_and_grouped():
    # 7.2, 2.4, 2.4: the one left over goes to the largest remainder, ties to validation before test.
    assert split_counts(12, {"train": 0.6, "validation": 0.2, "test": 0.2}) == {"train": 7, "validation": 3, "test": 2}
    assert split_counts(10, {"train": 0.6, "validation": 0.2, "test": 0.2}) == {"train": 6, "validation": 2, "test": 2}
    assert split_counts(1, {"train": 0.6, "validation": 0.2, "test": 0.2}) == {"train": 1, "validation": 0, "test": 0}
    sources = [f"{i:064x}" for i in range(20)]
    first = assign_splits(sources, seed=0, fractions={"train": 0.6, "validation": 0.2, "test": 0.2})
    assert first == assign_splits(list(reversed(sources)), seed=0, fractions={"train": 0.6, "validation": 0.2, "test": 0.2})
    assert first != assign_splits(sources, seed=1, fractions={"train": 0.6, "validation": 0.2, "test": 0.2})
    assert sorted(first.values()).count("test") == 4
