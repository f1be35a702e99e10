"""The offline demo pool: deterministic, complete, kept apart from the judge's training texts."""

from __future__ import annotations

import difflib
import json
import re

import numpy as np
import pytest

from sp_assets.backends.sources.demo import (
    DEMO_PHOTOS,
    DEMO_PHRASES,
    MAX_SIDE,
    demo_phrases,
    generate_demo_pool,
    load_photo,
    render_recipe,
)
from sp_assets.backends.judges.text_head import judge_examples
from sp_assets.core.policy import DEFAULT_POLICY_PATH, load_policy

POLICY = load_policy(DEFAULT_POLICY_PATH)


def _norm(text: str) -> str:
    return " ".join(re.sub(r"[^a-z0-9 ]", " ", text.lower()).split())


def test_covers_every_default_category_with_enough_phrases():
    assert set(DEMO_PHRASES) == set(POLICY.slugs)
    seen: set[str] = set()
    for slug in POLICY.slugs:
        unsafe, safe = demo_phrases(slug)
        assert len(unsafe) >= 12 and len(safe) >= 6, slug
        for phrase in unsafe + safe:
            assert phrase == phrase.upper() and len(phrase) <= 40, phrase
            assert _norm(phrase) not in seen, f"phrase repeated across the pool: {phrase}"
            seen.add(_norm(phrase))


@pytest.mark.full  # a text-similarity sweep over every training row: minutes
def test_phrases_are_not_copies_of_policy_texts():
    # The demo phrases are the judge's unseen test set: no exact, contained or near copy of anything
    # the judge trains on (examples, replacement texts, rules).
    policy_texts = {_norm(r.text) for r in judge_examples(POLICY, None).rows} | {
        _norm(t) for c in POLICY.categories for t in (*c.replacement_texts, *c.forbids, *c.allows)
    }
    for slug in POLICY.slugs:
        unsafe, safe = demo_phrases(slug)
        for phrase in unsafe + safe:
            for q in policy_texts:
                why = near_copy(phrase, q)
                assert why is None, f"{phrase!r} is {why} policy text {q!r}"


def near_copy(text: str, other: str) -> str | None:
    """How ``text`` copies ``other`` (normalised): the same, contained, similar letters (difflib ratio
    0.8 or more) or most words shared (Jaccard 0.6 or more); None when it does not."""
    p, q = _norm(text), _norm(other)
    if p == q or p in q or q in p:
        return "a copy of (or contained in)"
    ratio = difflib.SequenceMatcher(None, p, q).ratio()
    if ratio >= 0.8:
        return f"a near copy (similarity {ratio:.2f}) of"
    a, b = set(p.split()), set(q.split())
    if len(a & b) / len(a | b) >= 0.6:
        return "sharing most words with"
    return None


@pytest.mark.parametrize("policy_file", ["default.yaml", "strict_weapons.yaml", "family.yaml"])
def test_replacement_texts_are_not_judge_training_examples(policy_file):
    # The verifier judges each edit's new text; trained on that very text, verification would be no test.
    policy = load_policy(DEFAULT_POLICY_PATH.parent / policy_file)
    found = judge_examples(policy, None)
    examples = {_norm(r.text) for r in found.rows}
    copied = sorted({t for c in policy.categories for t in c.replacement_texts if _norm(t) in examples})
    assert not copied, f"{found.path}: replacement texts also judge examples: {copied}; remove them there"


def test_same_arguments_give_byte_identical_pngs():
    first = generate_demo_pool("o2_violence", n_unsafe=4, n_safe=2, seed=3)
    second = generate_demo_pool("o2_violence", n_unsafe=4, n_safe=2, seed=3)
    assert [d.png_bytes() for d in first] == [d.png_bytes() for d in second]
    assert [d.recipe for d in first] == [d.recipe for d in second]
    other = generate_demo_pool("o2_violence", n_unsafe=4, n_safe=2, seed=4)
    assert [d.png_bytes() for d in first] != [d.png_bytes() for d in other]


def test_counts_labels_and_names():
    pool = generate_demo_pool("o7_self_harm")
    assert [d.intended for d in pool] == ["unsafe"] * 12 + ["safe"] * 6
    unsafe, safe = demo_phrases("o7_self_harm")
    assert sorted(d.text for d in pool if d.intended == "unsafe") == sorted(unsafe)
    assert sorted(d.text for d in pool if d.intended == "safe") == sorted(safe)
    assert len({d.name for d in pool}) == len(pool)
    assert all(d.category == "o7_self_harm" for d in pool)
    assert generate_demo_pool("o7_self_harm", n_unsafe=0, n_safe=0) == []


def test_more_images_than_phrases_cycle_onto_other_photos():
    n_phrases = len(demo_phrases("o5_criminal_planning")[0])
    pool = generate_demo_pool("o5_criminal_planning", n_unsafe=n_phrases + 5, n_safe=0)
    by_text: dict[str, list[str]] = {}
    for d in pool:
        by_text.setdefault(d.text, []).append(d.photo)
    repeated = [photos for photos in by_text.values() if len(photos) > 1]
    assert len(repeated) == 5
    assert all(len(set(photos)) == len(photos) for photos in repeated)


def test_unknown_category_is_rejected_with_the_known_ones():
    with pytest.raises(ValueError, match="o2_violence"):
        generate_demo_pool("o10_spam")
    with pytest.raises(ValueError):
        demo_phrases("O2")
    with pytest.raises(ValueError, match=">= 0"):
        generate_demo_pool("o2_violence", n_unsafe=-1)


def test_images_are_rgb_photos_with_the_sign_only_inside_its_box():
    pool = generate_demo_pool("o6_weapons_substances", n_unsafe=12, n_safe=6)
    assert {d.photo for d in pool} <= set(DEMO_PHOTOS)
    assert len({d.photo for d in pool}) >= 6
    for d in pool:
        img = d.image
        assert img.mode == "RGB" and max(img.size) <= MAX_SIDE
        assert list(img.size) == d.recipe["size"]
        x0, y0, x1, y1 = d.recipe["box"]
        assert 0 <= x0 < x1 <= img.width and 0 <= y0 < y1 <= img.height
        drawn = np.asarray(img).astype(int)
        bare = np.asarray(load_photo(d.photo)).astype(int)
        changed = (drawn != bare).any(axis=2)
        outside = changed.copy()
        outside[y0:y1, x0:x1] = False
        assert not outside.any(), f"{d.name}: pixels changed outside the sign box"
        inside = drawn[y0:y1, x0:x1]
        fill_share = (inside == np.array(d.recipe["fill"])).all(axis=2).mean()
        text_share = (inside == np.array(d.recipe["text_color"])).all(axis=2).mean()
        assert fill_share > 0.4, f"{d.name}: sign background covers only {fill_share:.0%} of its box"
        assert text_share > 0.02, f"{d.name}: no text drawn"
        assert 1 <= len(d.recipe["lines"]) <= 2
        assert " ".join(d.recipe["lines"]) == d.text


def test_recipe_is_json_and_regenerates_the_image():
    for d in generate_demo_pool("o9_disasters", n_unsafe=2, n_safe=1, seed=11):
        recipe = json.loads(json.dumps(d.recipe))
        assert render_recipe(recipe).tobytes() == d.image.tobytes()
        needed = ("photo", "box", "fill", "text_color", "border_color", "font_size", "seed", "phrase_index")
        assert all(key in recipe for key in needed)
