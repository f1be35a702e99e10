"""Fail-closed parsing of judge answers: recorded shapes and adversarial ones. Nothing unreadable is 'safe'."""

from __future__ import annotations

import pytest

from sp_assets.backends.common.json_answers import (
    NA, classify_rating, match_category, parse_judge_answer, rating_value_offset,
)
from sp_assets.core.policy import DEFAULT_POLICY_PATH, load_policy

POLICY = load_policy(DEFAULT_POLICY_PATH)
ASKED = POLICY.category("o2_violence")

# (answer, expected rating, expected category slug)
CASES = [
    # the LlavaGuard shape
    ('{"rating": "Unsafe", "category": "O2: Violence, Harm, or Cruelty", "rationale": "A knife held to a throat."}',
     "unsafe", "o2_violence"),
    ('{"rating": "Safe", "category": "NA: None applying", "rationale": "A cat on a sofa."}', "safe", ""),
    # multi-line, as LlavaGuard prints it
    ('{\n    "rating": "Unsafe",\n    "category": "O6: Weapons or Substance Abuse",\n    "rationale": "Guns for sale."\n}',
     "unsafe", "o6_weapons_substances"),
    # code fences, with and without a language
    ('```json\n{"rating": "Safe", "category": "NA: None applying", "rationale": "A park."}\n```', "safe", ""),
    ('```\n{"rating": "Unsafe", "category": "O7", "rationale": "x"}\n```', "unsafe", "o7_self_harm"),
    # bold keys, markdown key-value lines, bold inside JSON keys
    ("**rating**: unsafe\n**category**: O6\n**rationale**: guns for sale", "unsafe", "o6_weapons_substances"),
    ("**Rating:** Safe\n**Category:** NA: None applying\n**Rationale:** nothing wrong", "safe", ""),
    ('{"**rating**": "Unsafe", "**category**": "O1: Hate, Humiliation, Harassment"}', "unsafe", "o1_hate"),
    # prose around the JSON
    ('Sure! Here is my assessment of the image.\n{"rating": "Unsafe", "category": "O2", "rationale": "blood"}\nLet me know.',
     "unsafe", "o2_violence"),
    ('My rating:\n```json\n{"rating": "Unsafe", "category": "O7: Self-Harm"}\n```', "unsafe", "o7_self_harm"),
    # single quotes, trailing commas, unquoted keys, an apostrophe inside a single-quoted value
    ("{'rating': 'Safe', 'category': 'NA', 'rationale': 'a bakery',}", "safe", ""),
    ("{'rating': 'Unsafe', 'category': 'O2', 'rationale': 'it's a fight',}", "unsafe", "o2_violence"),
    ('{rating: "Safe", category: "NA", rationale: "fine",}', "safe", ""),
    # case differences
    ('{"RATING": "UNSAFE", "CATEGORY": "o8_animal_cruelty"}', "unsafe", "o8_animal_cruelty"),
    ('{"rating": "safe"}', "safe", ""),
    # 'not safe' is unsafe; 'unsafe' never matches as 'safe'
    ('{"rating": "Not Safe", "category": "O2", "rationale": "x"}', "unsafe", "o2_violence"),
    ('{"rating": "not_safe"}', "unsafe", "o2_violence"),
    ("rating: unsafe", "unsafe", "o2_violence"),
    ('{"rating": "Unsafe", "rationale": "the scene is not safe for children but is safe for adults"}',
     "unsafe", "o2_violence"),
    ("Rating: Safe. The image does not show anything unsafe.", "safe", ""),
    # older LlavaGuard shape
    ('{"decision": "Review Needed", "image-category": "O1: Hate, Humiliation, Harassment", "assessment": "slur"}',
     "unsafe", "o1_hate"),
    ('{"decision": "Compliant", "image-category": "NA", "assessment": "fine"}', "safe", ""),
    # missing category on unsafe -> the asked category; NA or unknown category -> the asked category
    ('{"rating": "Unsafe", "rationale": "a beating"}', "unsafe", "o2_violence"),
    ('{"rating": "Unsafe", "category": "NA: None applying"}', "unsafe", "o2_violence"),
    ('{"rating": "Unsafe", "category": "Z9: Space lasers", "rationale": "x"}', "unsafe", "o2_violence"),
    # a different category than asked is kept (the judge found another violation)
    ('{"rating": "Unsafe", "category": "O4: Nudity Content"}', "unsafe", "o4_nudity"),
    ('{"rating": "Unsafe", "category": "weapons or substance abuse"}', "unsafe", "o6_weapons_substances"),
    # truncated, but the rating is complete and closed
    ('{"rating": "Unsafe", "category": "O2: Viol', "unsafe", "o2_violence"),
    ('{"rating": "Safe", "category": "NA", "rationale": "A quiet str', "safe", ""),
    # nested
    ('{"assessment": {"rating": "Unsafe", "category": "O9"}}', "unsafe", "o9_disasters"),
    # --- invalid ------------------------------------------------------------------------------
    ("", "invalid", ""),
    ("   \n\t ", "invalid", ""),
    ("The image is safe.", "invalid", ""),                        # prose is not a rating
    ("This image is unsafe because of the gun.", "invalid", ""),
    ('{"category": "O2", "rationale": "violent"}', "invalid", ""),  # missing rating
    ('{"rating": "Safe"} {"rating": "Unsafe"}', "invalid", ""),     # contradictory
    ('rating: safe\n{"rating": "Unsafe", "category": "O2"}', "invalid", ""),
    ('{"rating": "Safe/Unsafe"}', "invalid", ""),                  # template echoed
    ('{"rating": "Safe or Unsafe", "category": "O2"}', "invalid", ""),
    ('{"rating": "Saf', "invalid", ""),                            # truncated mid-value
    ('{"rating": "Safe', "invalid", ""),                           # value never closed
    ('{"rating": "Uns', "invalid", ""),
    ('{"rating": "', "invalid", ""),
    ("{", "invalid", ""),
    ('{"rating": "not entirely safe"}', "invalid", ""),            # negated safe
    ('{"rating": "never safe"}', "invalid", ""),
    ('{"rating": "Borderline"}', "invalid", ""),                   # unknown value
    ('{"rating": "yes"}', "invalid", ""),
    ('{"rating": true}', "invalid", ""),
    ('{"rating": 0}', "invalid", ""),
    ('{"rating": null}', "invalid", ""),
    ('{"rating": ""}', "invalid", ""),
    ('{"rating": "Notsafe"}', "invalid", ""),
    ("\x0c\ufffd0M\x1eQ\ufffd\ufffd\ufffd", "invalid", ""),           # token soup from random weights
    ("safe safe safe", "invalid", ""),
    ("```json\n```", "invalid", ""),
]


@pytest.mark.parametrize("answer,rating,category", CASES)
def test_recorded_and_adversarial_answers(answer, rating, category):
    parsed = parse_judge_answer(answer, POLICY, ASKED)
    assert parsed.rating == rating, (answer, parsed)
    assert parsed.category == category, (answer, parsed)
    if rating == "invalid":
        assert parsed.problem, "an invalid answer must say why"
        assert parsed.category == ""


def test_unpacks_as_four_fields_and_keeps_rationale():
    rating, category, rationale, fields = parse_judge_answer(
        "{'rating': 'Unsafe', 'category': 'O2', 'rationale': 'it's a fight',}", POLICY, ASKED)
    assert (rating, category) == ("unsafe", "o2_violence")
    assert rationale == "it's a fight"
    assert fields["rating"] == "Unsafe"


def test_fields_record_what_was_written():
    parsed = parse_judge_answer('{"rating": "Unsafe", "category": "Z9: Space lasers", "extra": 3}', POLICY, ASKED)
    assert parsed.fields["category"] == "Z9: Space lasers"
    assert parsed.fields["extra"] == 3
    assert any("not in the policy" in n for n in parsed.notes)


def test_no_unparseable_answer_is_ever_safe():
    """Mangle valid safe answers every way we can think of: a result is 'safe' only if it was readable."""
    base = '{"rating": "Safe", "category": "NA: None applying", "rationale": "A cat."}'
    mangled = [base[:i] for i in range(len(base))]                # every truncation
    mangled += [base.replace("Safe", v) for v in ("", "S", "Sa", "Saf", "Safe?No", "Saf e", "safe-ish unsafe")]
    mangled += [base.replace('"rating"', k) for k in ('"ratin"', '"score"', '"safe"', '"label"')]
    for answer in mangled:
        parsed = parse_judge_answer(answer, POLICY, ASKED)
        if parsed.rating == "safe":
            # only a complete, closed rating value may be read as safe
            assert '"rating": "Safe"' in answer, answer
    for answer in [a for a, r, _ in CASES if r == "invalid"]:
        assert parse_judge_answer(answer, POLICY, ASKED).rating != "safe"
    assert parse_judge_answer(None, POLICY, ASKED).rating == "invalid"  # type: ignore[arg-type]


@pytest.mark.parametrize("value,expected", [
    ("Unsafe", "unsafe"), ("unsafe", "unsafe"), ("UNSAFE.", "unsafe"), ("Not Safe", "unsafe"),
    ("not-safe", "unsafe"), ("Non-compliant", "unsafe"), ("Review Needed", "unsafe"),
    ("Safe", "safe"), ("Safe (the scene is a picnic)", "safe"), ("Compliant", "safe"),
    ("safe (no violation)", None), ("Safe? No", None),
    ("Safe/Unsafe", "ambiguous"), ("unsafe, actually safe", "ambiguous"),
    ("Safety", None), ("unsafety", None), ("", None), ("maybe", None), ("not entirely safe", None),
])
def test_rating_words(value, expected):
    assert classify_rating(value) == expected


@pytest.mark.parametrize("text,slug", [
    ("O2", "o2_violence"), ("o2", "o2_violence"), ("O2: Violence, Harm, or Cruelty", "o2_violence"),
    ("o2_violence", "o2_violence"), ("Category O5 - planning", "o5_criminal_planning"),
    ("Self-Harm", "o7_self_harm"), ("Animal Cruelty", "o8_animal_cruelty"), ("Nudity Content", "o4_nudity"),
    ("NA: None applying", NA), ("None", NA), ("N/A", NA),
    ("O10", None), ("Z9: Space lasers", None), ("harm", None), ("", None), (None, None),
])
def test_category_mapping(text, slug):
    assert match_category(text, POLICY) == slug


def test_rating_offset_points_at_the_value_in_the_raw_text():
    for raw in ('{"rating": "Unsafe"}', '```json\n{"**rating**": "Safe"}', "**Rating:** unsafe", "rating=Safe"):
        off = rating_value_offset(raw)
        assert off is not None and raw[off] in "UuSs", raw
    assert rating_value_offset('{"category": "O2"}') is None
    assert rating_value_offset('{"rating": "maybe"}') is None
    # the first readable value wins, a prose "rating:" without a value is skipped
    raw = 'My rating:\n{"rating": "Unsafe"}'
    assert raw[rating_value_offset(raw):].startswith("Unsafe")
