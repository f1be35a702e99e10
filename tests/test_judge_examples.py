"""The judge's examples as a dataset of their own, and memo keys that carry only what each backend reads."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from sp_assets.backends.base import InstructionWriter, policy_key
from sp_assets.backends.judges.scene_text import SceneTextJudge
from sp_assets.backends.judges.shieldgemma2 import ShieldGemma2Judge
from sp_assets.backends.judges.text_head import judge_examples, training_examples
from sp_assets.backends.judges.vlm import VLMJudge
from sp_assets.core.judge_examples import EXAMPLES_SUFFIX, ExamplesError, examples_path, load_examples
from sp_assets.core.policy import DEFAULT_POLICY_PATH, REPO_ROOT, PolicyError, load_policy

POLICY = load_policy(DEFAULT_POLICY_PATH)


def _copy_policy(folder: Path, mutate=None, extra_rows: list[dict] | None = None) -> Path:
    """The default policy (rules edited by ``mutate``) and its examples (plus ``extra_rows``) in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "default.yaml"
    if mutate is None:
        path.write_bytes(DEFAULT_POLICY_PATH.read_bytes())
    else:
        doc = yaml.safe_load(DEFAULT_POLICY_PATH.read_text())
        mutate(doc)
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
    extra = "".join(json.dumps(r) + "\n" for r in extra_rows or [])
    examples_path(path).write_bytes(examples_path(DEFAULT_POLICY_PATH).read_bytes() + extra.encode())
    return path


def test_the_default_policy_holds_rules_and_its_examples_sit_beside_it():
    assert len(DEFAULT_POLICY_PATH.read_text().splitlines()) < 500  # what a person reads and copies
    examples = judge_examples(POLICY, None)
    assert examples.path == DEFAULT_POLICY_PATH.with_name("default" + EXAMPLES_SUFFIX)
    assert len(examples.rows) > 7000
    for slug in POLICY.slugs:
        assert examples.texts(slug, "violating") and examples.texts(slug, "allowed"), slug
    assert all(r.origin and r.added and r.kind == "sign" for r in examples.rows)
    card = DEFAULT_POLICY_PATH.with_name("default.examples.md").read_text()
    assert "judge_unseen.yaml" in card and "demo" in card  # how the rows were kept apart from the test sets
    texts, labels = training_examples(POLICY, examples)
    assert len(texts) == 8038 and labels.count("safe") > 3000  # the rows the held-out figures were measured on


def test_every_bad_row_is_reported_with_its_line_value_and_fix(tmp_path):
    path = tmp_path / "mine.examples.jsonl"
    path.write_text("\n".join([
        json.dumps({"text": "NO ENTRY", "label": "allowed", "category": "o1_hate"}),
        json.dumps({"text": "guns here", "label": "unsafe", "category": "o6_weapons_substances"}),
        "{not json",
        json.dumps({"text": "x", "label": "allowed", "category": "o99_other"}),
        json.dumps({"text": "   ", "label": "allowed", "category": "o1_hate"}),
        json.dumps({"label": "allowed", "category": "o1_hate"}),
        json.dumps(["a list"]),
        json.dumps({"text": "ok", "label": "allowed", "category": "o1_hate", "colour": "red"}),
    ]) + "\n")
    with pytest.raises(ExamplesError) as info:
        load_examples(path, set(POLICY.slugs))
    message = str(info.value)
    assert str(path) in message and "7 row(s)" in message
    for expected in ("line 2: label 'unsafe' is not one of violating, allowed", "line 3: not a JSON object",
                     "line 4: category 'o99_other' is not in the policy", "line 5: text must be a non-empty string",
                     "line 6: missing text", "line 7: expected a JSON object", "line 8: unknown field(s) colour",
                     '"label": "violating" | "allowed"'):
        assert expected in message, expected
    assert "\n  line 1:" not in message


def test_a_missing_examples_file_names_the_file_and_the_judges_that_need_none(tmp_path):
    policy = tmp_path / "mine.yaml"
    policy.write_bytes(DEFAULT_POLICY_PATH.read_bytes())
    mine = load_policy(policy)
    with pytest.raises(FileNotFoundError) as info:
        SceneTextJudge.policy_sha256(mine, mine.categories[0], {})  # before any model loads
    message = str(info.value)
    assert str(tmp_path / "mine.examples.jsonl") in message
    assert "'examples' parameter" in message and "llavaguard" in message and "manifest" in message
    # The profile's 'examples' parameter, relative to the policy's folder, is the other way to give them.
    (tmp_path / "rows").mkdir()
    (tmp_path / "rows" / "signs.jsonl").write_bytes(examples_path(DEFAULT_POLICY_PATH).read_bytes())
    assert judge_examples(mine, "rows/signs.jsonl").rows == judge_examples(POLICY, None).rows


def test_inline_examples_are_refused_with_the_command_that_moves_them(tmp_path):
    doc = yaml.safe_load(DEFAULT_POLICY_PATH.read_text())
    doc["categories"][0]["judge_examples"] = {"violating": ["go home, outsiders"], "allowed": ["welcome all"]}
    doc["categories"][3]["judge_examples"] = {"allowed": ["art class: life drawing"]}
    old = tmp_path / "old.yaml"
    old.write_text("# my policy\n" + yaml.safe_dump(doc, sort_keys=False))
    with pytest.raises(PolicyError, match=r"python -m sp_assets.core.judge_examples extract .*old.yaml"):
        load_policy(old)
    done = subprocess.run([sys.executable, "-m", "sp_assets.core.judge_examples", "extract", str(old)],
                          cwd=REPO_ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "3 example rows" in done.stdout
    moved = load_policy(old)  # loads now, with the same rules and the comment kept
    assert old.read_text().startswith("# my policy\n")
    assert [c.forbids for c in moved.categories] == [c.forbids for c in POLICY.categories]
    rows = load_examples(examples_path(old), set(moved.slugs)).rows
    assert [(r.category, r.label, r.text) for r in rows] == [
        ("o1_hate", "violating", "go home, outsiders"), ("o1_hate", "allowed", "welcome all"),
        ("o4_nudity", "allowed", "art class: life drawing")]
    again = subprocess.run([sys.executable, "-m", "sp_assets.core.judge_examples", "extract", str(old)],
                           cwd=REPO_ROOT, capture_output=True, text=True)
    assert again.returncode == 1 and "exists already" in again.stderr  # never overwrites rows


def _keys(policy_file: Path, cls: type, params: dict | None = None) -> dict[str, str]:
    policy = load_policy(policy_file)
    return {c.slug: policy_key(cls, policy, c, params) for c in policy.categories}


@pytest.fixture(scope="module")
def variants(tmp_path_factory):
    base = tmp_path_factory.mktemp("variants")
    row = {"text": "SPRING FLOWER MARKET ON SUNDAY", "label": "allowed", "category": "o1_hate"}
    return {
        "same": _copy_policy(base / "same"),
        "one_more_example": _copy_policy(base / "example", extra_rows=[row]),
        "o2_rule": _copy_policy(base / "rule", lambda d: d["categories"][1]["forbids"].append("a new rule")),
        "o2_title": _copy_policy(base / "title", lambda d: d["categories"][1].update(title="Violence (all)")),
    }


# The classes whose answers are memoized per category (a writer, ShieldGemma 2, a VLM judge asked one
# category) and the VLM judge asked once for the whole policy.
PER_CATEGORY = [(InstructionWriter, None), (ShieldGemma2Judge, None), (VLMJudge, {})]
WHOLE_POLICY_PROMPT = "Rate this image under the policy.\n$all_rules\nAnswer with JSON: $category_options"


def test_one_more_example_changes_only_the_scene_text_judges_key(variants):
    for cls, params in PER_CATEGORY + [(VLMJudge, {"scope": "policy", "prompt_template": WHOLE_POLICY_PROMPT})]:
        assert _keys(variants["same"], cls, params) == _keys(variants["one_more_example"], cls, params), cls
    same, grown = _keys(variants["same"], SceneTextJudge, {}), _keys(variants["one_more_example"], SceneTextJudge, {})
    assert same == _keys(DEFAULT_POLICY_PATH, SceneTextJudge, {})  # the file's place is not in the key
    assert all(same[slug] != grown[slug] for slug in same)  # its head learns from every row


def test_one_categorys_rule_changes_only_that_categorys_per_category_answers(variants):
    for cls, params in PER_CATEGORY:
        before, after = _keys(variants["same"], cls, params), _keys(variants["o2_rule"], cls, params)
        assert [s for s in before if before[s] != after[s]] == ["o2_violence"], cls
    # Answers over the whole policy read every category's rules: all change.
    for cls, params in [(SceneTextJudge, {}), (VLMJudge, {"scope": "policy", "prompt_template": WHOLE_POLICY_PROMPT})]:
        before, after = _keys(variants["same"], cls, params), _keys(variants["o2_rule"], cls, params)
        assert all(before[s] != after[s] for s in before), cls
    # A title is read where the prompt shows it: the default prompt names only the asked category, a
    # prompt listing every category as an answer option ($category_options) names them all.
    before, after = _keys(variants["same"], VLMJudge, {}), _keys(variants["o2_title"], VLMJudge, {})
    assert [s for s in before if before[s] != after[s]] == ["o2_violence"]
    options = {"prompt_template": "$rules\nAnswer one of: $category_options"}
    before, after = _keys(variants["same"], VLMJudge, options), _keys(variants["o2_title"], VLMJudge, options)
    assert all(before[s] != after[s] for s in before)


def test_stage_code_versions_carry_the_rules_and_only_judging_stages_the_examples():
    from sp_assets.definitions import defs

    graph = defs.resolve_asset_graph()
    versions = {key.path[-1]: graph.get(key).code_version for key in graph.get_all_asset_keys()}
    rules = f"policy.{POLICY.rules_sha256[:12]}"
    assert all(rules in v for v in versions.values()), versions
    judging = {name for name, v in versions.items() if "+examples." in v}
    assert judging == {"policy_labels", "verified_pairs", "guard_metrics"}, versions
