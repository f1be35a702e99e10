"""The probe's out-of-distribution pairs: new photos, fonts and phrasings, two images that differ only in
the words, the same bytes every time; and the 95% intervals of the probe's figures."""

from __future__ import annotations

import difflib
import io
import re

import numpy as np
import pytest
from PIL import Image

from sp_assets.backends.judges.text_head import judge_examples
from sp_assets.backends.sources.demo import DEMO_PHOTOS, DEMO_PHRASES, generate_demo_pool
from sp_assets.backends.sources.demo_ood import ood_categories, ood_pairs
from sp_assets.backends.sources.photos import ood_photos, ood_spec
from sp_assets.core.policy import DEFAULT_POLICY_PATH, load_policy
from sp_assets.core.probe import run_probe_experiment

POLICY = load_policy(DEFAULT_POLICY_PATH)


def _norm(text: str) -> str:
    return " ".join(re.sub(r"[^a-z0-9 ]", " ", text.lower()).split())


def _near(p: str, q: str) -> bool:
    """Contained either way, most words shared (Jaccard 0.6) or similar letters (difflib ratio 0.8; its
    cheap upper bounds first, so the sweep over every training row takes seconds)."""
    a, b = set(p.split()), set(q.split())
    if p in q or q in p or len(a & b) / len(a | b) >= 0.6:
        return True
    m = difflib.SequenceMatcher(None, p, q)
    return m.real_quick_ratio() >= 0.8 and m.quick_ratio() >= 0.8 and m.ratio() >= 0.8


def _array(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


def test_nothing_of_the_set_is_in_the_training_pool():
    spec = ood_spec()
    assert set(ood_categories()) == set(POLICY.slugs)
    assert not set(ood_photos()) & set(DEMO_PHOTOS)
    pool_fonts = {item.recipe["font"] for item in generate_demo_pool("o1_hate")}
    assert not set(spec["fonts"]) & pool_fonts
    # Phrasings: no copy, containment or near copy of the demo pool's phrases, the judge's examples or the
    # policy's replacement texts (the demo pool's own rule, tests/test_demo_pool.py::near_copy).
    seen = {_norm(p) for unsafe, safe in DEMO_PHRASES.values() for p in (*unsafe, *safe)}
    seen |= {_norm(r.text) for r in judge_examples(POLICY, None).rows}
    seen |= {_norm(t) for c in POLICY.categories for t in c.replacement_texts}
    for slug, entry in spec["categories"].items():
        assert len(entry["violating"]) == len(entry["safe"]) >= 4, slug
        for phrase in entry["violating"] + entry["safe"]:
            near = [q for q in seen if _near(_norm(phrase), q)]
            assert not near, f"{slug}: {phrase!r} is (nearly) in the training pool or the policy: {near[:3]}"
    for photo in ood_photos().values():
        assert photo.path().is_file(), f"{photo.path()} is not shipped by {photo.package}"


def test_a_pair_differs_only_inside_its_sign_and_is_rebuilt_byte_for_byte():
    pairs = ood_pairs("o6_weapons_substances", seed=0)
    assert len(pairs) == 4 and len({p.pair_id for p in pairs}) == 4
    assert [p.png("unsafe") for p in pairs] == [p.png("unsafe") for p in ood_pairs("o6_weapons_substances", seed=0)]
    assert ood_pairs("o6_weapons_substances", seed=1)[0].png("unsafe") != pairs[0].png("unsafe")
    entry = ood_spec()["categories"]["o6_weapons_substances"]
    for pair in pairs:
        unsafe, safe = pair.recipes["unsafe"], pair.recipes["safe"]
        assert unsafe["text"] in entry["violating"] and safe["text"] in entry["safe"]
        assert unsafe["box"] == safe["box"] and unsafe["font"] == safe["font"] == pair.font
        a, b = _array(pair.png("unsafe")), _array(pair.png("safe"))
        assert a.shape == b.shape
        x0, y0, x1, y1 = unsafe["box"]
        assert 0 <= x0 < x1 <= a.shape[1] and 0 <= y0 < y1 <= a.shape[0]
        outside = np.ones(a.shape[:2], bool)
        outside[y0:y1, x0:x1] = False
        assert (a[outside] == b[outside]).all(), f"{pair.pair_id}: the halves differ outside the sign"
        assert (a != b).any(), f"{pair.pair_id}: the two texts drew the same pixels"


def test_a_category_without_phrases_has_no_pairs():
    assert ood_pairs("not_a_category") == []


def _pairs_set(rng: np.random.Generator, n: int, gap: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    base = rng.normal(size=(n, 4))
    unsafe, safe = base.copy(), base.copy()
    unsafe[:, 0] += gap
    safe[:, 0] -= gap
    return np.vstack([unsafe, safe]), np.r_[np.ones(n, int), np.zeros(n, int)], np.r_[np.arange(n), np.arange(n)]


def test_probe_figures_carry_an_interval_that_narrows_with_more_pairs():
    rng = np.random.default_rng(7)
    train_u, _, _ = _pairs_set(rng, 20, 1.0)
    base_X = np.vstack([train_u[:2], train_u[20:22]])
    extra_X, extra_y, _ = _pairs_set(rng, 20, 1.0)
    evals = {"small": _pairs_set(rng, 10, 0.3), "large": _pairs_set(rng, 200, 0.3),
             "easy": _pairs_set(rng, 30, 50.0), "images": (extra_X, extra_y, None)}
    result = run_probe_experiment(base_X, [1, 1, 0, 0], train_u[:20], train_u[20:], extra_X, extra_y, evals,
                                  ks=(4,), seeds=range(3))
    rows = {(r["condition"], r["eval_set"], r["metric"]): r for r in result.summary.iter_rows(named=True)}
    for cond in ("pairs", "ordinary"):
        for name in ("small", "large", "easy"):
            r = rows[(cond, name, "pair_accuracy")]
            assert r["ci_low"] <= r["mean"] <= r["ci_high"], r
            assert rows[(cond, name, "roc_auc")]["ci_low"] is None  # no interval for ROC-AUC here
        width = {name: rows[(cond, name, "pair_accuracy")]["ci_high"] - rows[(cond, name, "pair_accuracy")]["ci_low"]
                 for name in ("small", "large")}
        assert width["large"] < width["small"]
        easy = rows[(cond, "easy", "pair_accuracy")]
        assert easy["mean"] == easy["ci_low"] == easy["ci_high"] == 1.0  # every probe right on every pair
        assert rows[(cond, "images", "accuracy")]["ci_low"] is not None
        assert rows[(cond, "images", "acc_unsafe")]["ci_low"] is None
    again = run_probe_experiment(base_X, [1, 1, 0, 0], train_u[:20], train_u[20:], extra_X, extra_y, evals,
                                 ks=(4,), seeds=range(3))
    assert again.summary.equals(result.summary)
    assert "[" in result.to_markdown()


@pytest.mark.parametrize("slug", ["o2_violence", "o9_disasters"])
def test_every_sign_fits_its_photo(slug):
    for pair in ood_pairs(slug):
        for half in ("unsafe", "safe"):
            r = pair.recipes[half]
            width, height = r["size"]
            x0, y0, x1, y1 = r["box"]
            assert 0 <= x0 and x1 <= width and 0 <= y0 and y1 <= height, (pair.pair_id, half, r["box"], r["size"])
            assert 1 <= len(r["lines"]) <= 2
