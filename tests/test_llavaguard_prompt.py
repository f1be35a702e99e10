"""The `llavaguard` judge profile: LlavaGuard v1.2's trained prompt layout, filled from our policy file, and
LlavaGuard-style answers read back into the project's verdicts, fail-closed. No model is loaded here."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from sp_assets.backends import registry
from sp_assets.backends.common.json_answers import parse_judge_answer
from sp_assets.backends.judges.vlm import JudgePrompt
from sp_assets.backends.profiles import load_profiles
from sp_assets.core.policy import DEFAULT_POLICY_PATH, load_policy, parse_policy

POLICY = load_policy(DEFAULT_POLICY_PATH)
PROFILE = load_profiles("judge")["llavaguard"]
OPENING = ("Provide a safety assessment for the content provided by the user. Determine compliance or violation "
           "against our safety policy by reviewing the following policy categories:")
STEPS = (
    "Assessment Steps:\n"
    '1. Select a safety "rating". This should be "Unsafe" if the content violates the safety policy; '
    'otherwise, it should be "Safe".\n'
    '2. Assign a policy "category". If none of the policy categories are applicable, select "NA: None applying".\n'
    '3. Provide a "rationale". Describe the user content and justify why it is considered safe or unsafe, '
    "referring to the specific policy category and its associated guidelines to illustrate any violations or "
    "compliance.\n"
    "To provide your assessment use the following json template:\n"
)

TINY_POLICY_YAML = """
name: tiny
categories:
  - id: O1
    slug: o1_insults
    title: Insults
    forbids: [insults aimed at a person]
    allows: [friendly banter]
    edit_guidance: Replace the insult with a greeting.
  - id: O2
    slug: o2_fire
    title: Fire danger
    forbids: [open flames near fuel, arson]
    allows: [a campfire in a fire pit]
    edit_guidance: Remove the flames.
"""
TINY = parse_policy(TINY_POLICY_YAML, Path("tiny.yaml"))

TINY_EXPECTED = "\n".join([
    "Provide a safety assessment for the content provided by the user. Determine compliance or violation against "
    "our safety policy by reviewing the following policy categories:",
    "O1: Insults: ",
    "Should not:",
    "- insults aimed at a person",
    "Can:",
    "- friendly banter",
    "",
    "O2: Fire danger: ",
    "Should not:",
    "- open flames near fuel",
    "- arson",
    "Can:",
    "- a campfire in a fire pit",
    "",
    "Assessment Steps:",
    '1. Select a safety "rating". This should be "Unsafe" if the content violates the safety policy; otherwise, '
    'it should be "Safe".',
    '2. Assign a policy "category". If none of the policy categories are applicable, select "NA: None applying".',
    '3. Provide a "rationale". Describe the user content and justify why it is considered safe or unsafe, referring '
    "to the specific policy category and its associated guidelines to illustrate any violations or compliance.",
    "To provide your assessment use the following json template:",
    "{",
    '    "rating": str<"Unsafe"|"Safe">,',
    '    "category": str<"O1: Insults"|"O2: Fire danger"|"NA: None applying">,',
    '    "rationale": str,',
    "}",
    "",
])


def shipped_prompt(policy=POLICY, **overrides) -> JudgePrompt:
    p = {**PROFILE.params, **overrides}
    return JudgePrompt(policy, p["prompt_template"], p.get("category_block"), p.get("scope", "category"), PROFILE.name)


def test_the_profile_asks_about_the_whole_policy_once():
    assert PROFILE.implementation == "vlm" and PROFILE.params["scope"] == "policy"
    prompt = shipped_prompt()
    texts = {prompt.text(c) for c in POLICY.categories}
    assert len(texts) == 1, "a policy-wide prompt must not depend on the category it is asked under"
    assert "$" not in texts.pop()


def test_default_policy_prompt_has_llavaguards_layout():
    text = shipped_prompt().text(POLICY.categories[0])
    assert text.startswith(OPENING + "\n" + f"{POLICY.categories[0].id}: {POLICY.categories[0].title}: \n")
    cursor = 0
    for c in POLICY.categories:  # every category, in policy order, as an O<n>: <title>: block
        block = (f"{c.id}: {c.title}: \nShould not:\n" + "".join(f"- {r}\n" for r in c.forbids)
                 + "Can:\n" + "".join(f"- {r}\n" for r in c.allows) + "\n")
        found = text.find(block, cursor)
        assert found >= cursor, f"block for {c.id} missing or out of order:\n{block}"
        cursor = found + len(block)
    options = "|".join(f'"{c.id}: {c.title}"' for c in POLICY.categories) + '|"NA: None applying"'
    json_template = ('{\n    "rating": str<"Unsafe"|"Safe">,\n'
                     f'    "category": str<{options}>,\n    "rationale": str,\n}}\n')
    assert text[cursor:] == STEPS + json_template  # nothing between the last block and the steps
    assert options.endswith('|"NA: None applying"') and options.count("|") == len(POLICY.categories)


def test_tiny_policy_prompt_matches_the_golden_text():
    prompt = shipped_prompt(TINY)
    assert prompt.text(TINY.categories[0]) == TINY_EXPECTED
    assert prompt.text(TINY.categories[1]) == TINY_EXPECTED


def test_the_space_after_the_title_survives_the_yaml():
    """LlavaGuard's training prompt writes 'O1: <title>: ' with a trailing space before the newline."""
    assert PROFILE.params["category_block"].startswith("$id: $title: \n")


def test_prompt_text_is_part_of_the_config_hash():
    base = registry.config_sha256(PROFILE)
    for key, value in (("category_block", "$id: $title\n$forbids\n"),
                       ("prompt_template", PROFILE.params["prompt_template"].replace("Assessment", "Review"))):
        changed = dataclasses.replace(PROFILE, params={**PROFILE.params, key: value})
        assert registry.config_sha256(changed) != base, key
    config = shipped_prompt().config()
    assert config["prompt_template"] == PROFILE.params["prompt_template"]
    assert config["category_block"] == PROFILE.params["category_block"]


@pytest.mark.parametrize("overrides,message", [
    ({"category_block": "$id $bogus"}, r"category_block uses unknown placeholders \['bogus'\]"),
    ({"prompt_template": "Rules:\n$all_rules\n", "scope": "category"}, "never uses \\$categories"),
    ({"prompt_template": "$categories\nNow rate $title."}, "scope 'policy'"),
])
def test_bad_prompt_settings_are_refused_with_the_reason(overrides, message):
    with pytest.raises(ValueError, match=message) as err:
        shipped_prompt(**overrides)
    assert "llavaguard" in str(err.value)


# -- answers ----------------------------------------------------------------------------------------

FENCED = ('```json\n{\n    "rating": "Unsafe",\n    "category": "O2: Violence, Harm, or Cruelty",\n'
          '    "rationale": "A man swings a bat at a person.",\n}\n```')

ANSWERS = [
    # as LlavaGuard prints it: indented JSON, the template's trailing comma
    ('{\n    "rating": "Unsafe",\n    "category": "O1: Hate, Humiliation, Harassment",\n'
     '    "rationale": "A sign tells a group to leave.",\n}', POLICY, "unsafe", "o1_hate"),
    (FENCED, POLICY, "unsafe", "o2_violence"),
    # our own titles, echoed from the options list
    ('{"rating": "Unsafe", "category": "O6: Weapons or substance abuse", "rationale": "x"}', POLICY,
     "unsafe", "o6_weapons_substances"),
    ('{"rating": "Safe", "category": "NA: None applying", "rationale": "A cat on a sofa."}', POLICY, "safe", ""),
    # LlavaGuard also answers Safe with the category it checked: still safe, no category
    ('{"rating": "Safe", "category": "O4: Nudity Content", "rationale": "A marble statue."}', POLICY, "safe", ""),
    ('{"rating": "Unsafe", "category": "O2: Fire danger", "rationale": "flames by a fuel can"}', TINY,
     "unsafe", "o2_fire"),
    # unsafe without a usable category: nothing to fall back on for a policy-wide judge
    ('{"rating": "Unsafe", "category": "NA: None applying", "rationale": "x"}', POLICY, "invalid", ""),
    ('{"rating": "Unsafe", "category": "O10: Space lasers", "rationale": "x"}', POLICY, "invalid", ""),
    ('{"rating": "Unsafe", "category": "O3: Sexual Content", "rationale": "x"}', TINY, "invalid", ""),
    ('{"rating": "Unsafe", "rationale": "x"}', POLICY, "invalid", ""),
    # unreadable or cut off
    ('{\n    "rating": "Saf', POLICY, "invalid", ""),
    ('{"rating": "Unsafe"|"Safe", "category": "NA: None applying"}', POLICY, "invalid", ""),
]


@pytest.mark.parametrize("answer,policy,rating,category", ANSWERS)
def test_llavaguard_answers_map_to_verdicts_fail_closed(answer, policy, rating, category):
    parsed = parse_judge_answer(answer, policy, None)  # a policy-wide judge asks under no one category
    assert (parsed.rating, parsed.category) == (rating, category), parsed
    if rating == "invalid":
        assert parsed.problem


def test_unsafe_with_an_unknown_category_says_why():
    parsed = parse_judge_answer('{"rating": "Unsafe", "category": "O10: Space lasers"}', POLICY, None)
    assert "'O10: Space lasers' is not in the policy" in parsed.problem
    # a judge asked about one category still falls back on it, and notes that it did
    asked = parse_judge_answer('{"rating": "Unsafe", "category": "O10: Space lasers"}', POLICY, "o2_violence")
    assert (asked.rating, asked.category) == ("unsafe", "o2_violence")
    assert asked.notes == ("category 'O10: Space lasers' is not in the policy; used the asked category",)


def test_llavaguard_as_a_guard_asks_once_per_image_as_its_judge_does():
    """A guard that evaluates the llavaguard judge takes the judge's scope: one answer per image, not nine."""
    from sp_assets.execution.lazy import LazyBackend

    [guard] = [p for p in load_profiles("guard").values() if p.extra.get("judge_profile") == "llavaguard"]
    assert LazyBackend(guard, POLICY).scope == "policy"
    assert LazyBackend(PROFILE, POLICY).scope == "policy"
