"""The benchmark's rules on realistic synthetic rows: splits by photograph, spread replacements, look-alikes."""

from __future__ import annotations

import hashlib
import itertools
import json
import random
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from sp_assets.core.record_types import TextRegion, Verdict
from sp_assets.backends.writers.template import TemplateWriter
from sp_assets.core.policy import DEFAULT_POLICY_PATH, load_policy
from sp_assets.core.splitting import (
    SPLITS, benchmark_rows, choose_flips, lookalike_rows, phrase_shares, photos_per_split, rows_in_two_splits,
    split_of_photo,
)
from sp_assets.storage import Store

POLICY = load_policy(DEFAULT_POLICY_PATH)
FRACTIONS = {"train": 0.6, "validation": 0.2, "test": 0.2}
PHOTOS = [f"demo:photo{i:02d}" for i in range(15)]  # the demo draws about 15 photographs for every category
MAX_SHARE = 0.15


def _sha(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()


def _image(key: str) -> Image.Image:
    rng = np.random.default_rng(int(_sha(key)[:8], 16))
    return Image.fromarray(rng.integers(0, 255, (24, 32, 3), dtype=np.uint8))


def _verdict(text: str) -> Verdict:
    return Verdict(rating="unsafe", category="", score=0.9, rationale="", raw_output="",
                   regions=(TextRegion(box=(1, 1, 20, 10), text=text, confidence=0.9),))


def _flips(category: str, n_sources: int, seed: int = 0, variants: int = 2, reject: float = 0.15,
           favourite_bonus: float = 0.2) -> list[dict]:
    """Accepted flip candidates as the pipeline makes them: the template writer's replacements (two variants
    per source), an editor that fails some, and quality scores that favour a few texts (as the judge does)."""
    category_obj = POLICY.category(category)
    writer = TemplateWriter()
    favourites = set(category_obj.replacement_texts[:2])
    rng = random.Random(_sha(category, seed))
    rows = []
    for i in range(n_sources):
        sha, text = _sha(category, "source", i), f"VIOLATING SIGN NUMBER {i}"
        verdict = _verdict(text)
        for ins in writer.write(_image(sha), verdict, category_obj, n_variants=variants, seed=seed):
            if rng.random() < reject:
                continue
            replacement = ins.target["replacement"]
            quality = 0.7 + 0.1 * rng.random() + (favourite_bonus if replacement in favourites else 0.0)
            rows.append(_candidate(category, sha, ins.variant, replacement, quality, PHOTOS[i % len(PHOTOS)]))
    return rows


def _candidate(category: str, sha: str, variant: int, replacement: str, quality: float, photo: str) -> dict:
    return {"candidate_id": _sha(category, sha, variant), "image_sha256": sha,
            "edited_sha256": _sha(sha, variant, "edit"),
            "quality_score": quality, "judge_profile": "scene_text", "writer_profile": "template",
            "editor_profile": "text_region", "unsafe_path": f"sources/{sha}.png", "photo_id": photo,
            "edited_path": f"edits/{sha}-{variant}.png", "instruction": f'Replace the text with "{replacement}"',
            "target_json": json.dumps({"replacement": replacement})}


def _best_quality(flips: list[dict]) -> dict[str, dict]:
    """The rule before: the highest quality_score per source."""
    best: dict[str, dict] = {}
    for row in sorted(flips, key=lambda r: (-r["quality_score"], r["candidate_id"])):
        best.setdefault(row["image_sha256"], row)
    return best


def _base(category: str) -> dict:
    return {"category": category, "run_id": "r", "created_at": None}


# --- splits by photograph ---------------------------------------------------------------------


def test_a_photographs_split_depends_on_its_id_and_the_seed_only():
    first = {p: split_of_photo(p, 0, FRACTIONS) for p in PHOTOS}
    assert first == {p: split_of_photo(p, 0, dict(reversed(list(FRACTIONS.items())))) for p in reversed(PHOTOS)}
    assert first != {p: split_of_photo(p, 1, FRACTIONS) for p in PHOTOS}
    many = Counter(split_of_photo(f"photo:{i}", 7, FRACTIONS) for i in range(6000))
    for name, fraction in FRACTIONS.items():  # hashed by weight: the fractions hold approximately
        assert abs(many[name] / 6000 - fraction) < 0.03, many
    assert {split_of_photo(f"p{i}", 0, {"train": 1.0, "validation": 0.0, "test": 0.0}) for i in range(50)} == {"train"}
    with pytest.raises(ValueError):
        split_of_photo("p", 0, {"train": 0.0, "validation": 0.0, "test": 0.0})


def test_no_photograph_is_in_two_splits_over_pairs_and_lookalikes_of_every_category():
    everything = []
    for c in POLICY.slugs:  # each category computed on its own, as separate partition runs do
        pairs = benchmark_rows(_base(c), _flips(c, 12), [], 0, FRACTIONS, "s")
        sources = [{"image_sha256": _sha(c, "safe", i), "image_path": f"s/{i}.png", "photo_id": PHOTOS[(i * 7) % 15],
                    "manifest_rating": "safe", "judge_profile": "scene_text", "rating": "safe"} for i in range(6)]
        everything += pairs + lookalike_rows(_base(c), sources, [], "scene_text", 0, FRACTIONS, "s")
    assert rows_in_two_splits(everything, "photo_id") == []
    assert rows_in_two_splits(everything, "image_sha256") == []
    photos = photos_per_split(everything, FRACTIONS)
    n_photos = len({r["photo_id"] for r in everything})
    assert n_photos > 12 and sum(v["photos"] for v in photos.values()) == n_photos
    assert sum(v["exact_cut"] for v in photos.values()) == n_photos
    # The same rows split by source alone (the rule before) put photographs in several splits.
    by_source = [{**r, "split": SPLITS[int(r["image_sha256"][:8], 16) % 3]} for r in everything]
    assert rows_in_two_splits(by_source, "photo_id")


def test_rows_without_a_photo_id_are_grouped_by_their_image():
    rows = [{"image_sha256": "a", "photo_id": None, "split": "train"}, {"image_sha256": "a", "split": "test"}]
    assert rows_in_two_splits(rows, "photo_id") == ["a"]


def test_photos_in_two_splits_query_sees_every_category_and_both_kinds(tmp_path):
    from sp_assets.storage import queries

    store = Store.at(tmp_path / "db.duckdb")
    store.init()
    pair = benchmark_rows(_base("o1_hate"), _flips("o1_hate", 3), [], 0, FRACTIONS, "s")
    store.replace_slice("benchmark_split", {"category": "o1_hate"}, pair)
    photo = pair[0]["photo_id"]
    other = next(s for s in SPLITS if s != pair[0]["split"])
    look = {**_base("o2_violence"), "lookalike_id": "x", "image_sha256": "b" * 64, "image_path": "p", "photo_id": photo,
            "split": pair[0]["split"], "label": "safe", "label_source": "human"}
    store.replace_slice("benchmark_lookalikes", {"category": "o2_violence"}, [look])
    assert queries.photos_in_two_splits(store) == []
    store.replace_slice("benchmark_lookalikes", {"category": "o2_violence"}, [{**look, "split": other}])
    found = queries.photos_in_two_splits(store)
    assert [r["photo_id"] for r in found] == [photo] and found[0]["categories"] == ["o1_hate", "o2_violence"]
    assert queries.lookalikes_of(store, "o2_violence")[0]["split"] == other


# --- spreading the replacement texts ----------------------------------------------------------


@pytest.mark.parametrize("n_sources", [12, 40])
def test_no_replacement_covers_more_than_15_percent_of_a_category(n_sources):
    # Three instruction variants per source: enough choice for twelve pairs to carry twelve texts.
    worst_before = 0.0
    for c in POLICY.slugs:
        flips = _flips(c, n_sources, variants=3)
        rows = benchmark_rows(_base(c), flips, [], 0, FRACTIONS, "s")
        share = phrase_shares(rows)[c]
        assert share["pairs"] == len({f["image_sha256"] for f in flips}) >= 7
        assert share["top_share"] <= MAX_SHARE, (c, share)
        best = _best_quality(flips)
        worst_before = max(worst_before, max(Counter(r["target_json"] for r in best.values()).values()) / len(best))
    if n_sources == 12:  # the data can fail the test: picking by quality alone exceeds the share there
        assert worst_before > MAX_SHARE


def _fewest_uses_possible(flips: list[dict]) -> int:
    """By exhaustion: the smallest count of the most used text over every choice of one candidate per source."""
    options: dict[str, set[str]] = {}
    for f in flips:
        options.setdefault(f["image_sha256"], set()).add(json.loads(f["target_json"])["replacement"])
    return min(max(Counter(choice).values()) for choice in itertools.product(*map(sorted, options.values())))


def test_with_two_variants_the_spread_is_as_even_as_the_candidates_allow():
    # The pipeline's default: two instructions per source, some edits rejected. Where no choice keeps every
    # text to one pair in twelve, the most used text is used as few times as any choice allows.
    for c in POLICY.slugs:
        flips = _flips(c, 12, variants=2)
        share = phrase_shares(benchmark_rows(_base(c), flips, [], 0, FRACTIONS, "s"))[c]
        assert share["top_count"] == _fewest_uses_possible(flips), c


def test_the_spread_finds_a_choice_that_greedy_order_would_miss():
    # b comes first and prefers x (better quality); a has only x. Least-used greedy gives x twice.
    a = _candidate("o1_hate", "a", 0, "X", 0.9, "p1")
    b_x, b_y = _candidate("o1_hate", "b", 0, "X", 0.95, "p2"), _candidate("o1_hate", "b", 1, "Y", 0.5, "p2")
    for seed in range(8):  # whichever source comes first
        chosen = choose_flips([a, b_x, b_y], seed)
        assert {s: json.loads(r["target_json"])["replacement"] for s, r in chosen.items()} == {"a": "X", "b": "Y"}
    # With room for both, quality decides between equally used texts.
    c_y = _candidate("o1_hate", "c", 0, "Y", 0.1, "p3")
    c_z = _candidate("o1_hate", "c", 1, "Z", 0.2, "p3")
    assert choose_flips([c_y, c_z], 0)["c"]["candidate_id"] == c_z["candidate_id"]


def test_the_choice_is_deterministic_and_independent_of_row_order():
    flips = _flips("o3_sexual", 30)
    first = {s: r["candidate_id"] for s, r in choose_flips(flips, 0).items()}
    assert first == {s: r["candidate_id"] for s, r in choose_flips(list(reversed(flips)), 0).items()}
    assert len(first) == 30


def test_prose_instructions_count_as_their_own_phrase():
    rows = [{**_candidate("o1_hate", str(i), 0, "", 0.5, "p"), "target_json": "{}",
             "instruction": f"Edit the image so it no longer shows thing {i}."} for i in range(5)]
    chosen = choose_flips(rows, 0)
    assert len(chosen) == 5
    out = benchmark_rows(_base("o1_hate"), rows, [], 0, FRACTIONS, "s")
    assert all(r["replacement"] is None for r in out)
    assert phrase_shares(out)["o1_hate"] == {"pairs": 5, "replacements": 0, "top_replacement": None, "top_count": 0,
                                             "top_share": 0.0}


def test_template_writer_spreads_the_same_text_over_the_list():
    category = POLICY.category("o8_animal_cruelty")
    verdict = _verdict("SAME TEXT")
    writer = TemplateWriter()
    firsts = []
    for i in range(60):  # one slogan on many photographs
        out = writer.write(_image(f"img{i}"), verdict, category, n_variants=3, seed=0)
        replacements = [o.target["replacement"] for o in out]
        assert len(set(replacements)) == 3 and set(replacements) <= set(category.replacement_texts)
        assert replacements == [o.target["replacement"] for o in writer.write(_image(f"img{i}"), verdict, category,
                                                                              n_variants=3, seed=0)]
        firsts.append(replacements[0])
    assert len(set(firsts)) >= len(category.replacement_texts) * 2 // 3
    assert max(Counter(firsts).values()) <= 8


# --- look-alikes ------------------------------------------------------------------------------


def _source(sha: str, human: str | None, ratings: dict[str | None, str | None], photo: str = "p") -> list[dict]:
    return [{"image_sha256": sha, "image_path": f"{sha}.png", "photo_id": photo, "manifest_rating": human,
             "judge_profile": profile, "rating": rating} for profile, rating in ratings.items()]


def test_lookalikes_take_the_human_label_first_then_a_safe_judge_rating():
    sources = [
        *_source("h_safe", "safe", {"scene_text": "unsafe", "other": "safe"}),  # over-flagged by the run's judge
        *_source("h_unsafe", "unsafe", {"scene_text": "safe"}),                 # humans say unsafe: not a look-alike
        *_source("j_safe", None, {"other": "unsafe", "scene_text": "safe"}),
        *_source("j_unsafe", "", {"scene_text": "unsafe"}),
        *_source("j_invalid", None, {"scene_text": "invalid"}),
        *_source("unjudged", "compliant", {None: None}),
        *_source("in_a_pair", "safe", {"scene_text": "safe"}),
        *_source("other_judge", None, {"zeta": "safe"}),
    ]
    rows = lookalike_rows(_base("o6_weapons_substances"), sources, ["in_a_pair"], "scene_text", 0, FRACTIONS, "cfg")
    got = {r["image_sha256"]: (r["label_source"], r["judge_profile"], r["judge_rating"]) for r in rows}
    assert got == {"h_safe": ("human", "scene_text", "unsafe"), "j_safe": ("judge", "scene_text", "safe"),
                   "unjudged": ("human", None, None), "other_judge": ("judge", "zeta", "safe")}
    assert all(r["label"] == "safe" and r["split"] == split_of_photo("p", 0, FRACTIONS) for r in rows)
    assert len({r["lookalike_id"] for r in rows}) == len(rows)
    assert [r["image_sha256"] for r in rows] == sorted(got)
