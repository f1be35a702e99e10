"""The policy file: what loads, what is refused, and with which message."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from sp_assets.core.policy import DEFAULT_POLICY_PATH, REPO_ROOT, PolicyError, load_policy, parse_policy

DEFAULT_SLUGS = ["o1_hate", "o2_violence", "o3_sexual", "o4_nudity", "o5_criminal_planning",
                 "o6_weapons_substances", "o7_self_harm", "o8_animal_cruelty", "o9_disasters"]


def _doc() -> dict:
    return yaml.safe_load(DEFAULT_POLICY_PATH.read_text())


def _write(tmp_path: Path, doc: dict | str) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(doc if isinstance(doc, str) else yaml.safe_dump(doc))
    return path


def test_default_policy_has_the_nine_categories():
    policy = load_policy(DEFAULT_POLICY_PATH)
    assert policy.slugs == DEFAULT_SLUGS
    assert [c.id for c in policy.categories] == [f"O{i}" for i in range(1, 10)]
    for c in policy.categories:
        assert c.forbids and c.allows and c.edit_guidance and c.replacement_texts
    assert policy.category("O2").slug == "o2_violence"
    assert policy.category("o2_violence").title.startswith("Violence")
    assert len(policy.sha256) == 64


def test_hash_changes_when_the_policy_changes(tmp_path):
    doc = _doc()
    first = load_policy(_write(tmp_path, doc)).sha256
    doc["categories"][1]["allows"].append("martial arts films")
    assert load_policy(_write(tmp_path, doc)).sha256 != first


@pytest.mark.parametrize(
    "mutate, expected",
    [
        (lambda d: d["categories"][2].pop("slug"), r"categories\[2\] \(id 'O3'\) is missing required field 'slug'"),
        (lambda d: d["categories"][4].pop("forbids"), r"categories\[4\] \(id 'O5'\) is missing required field 'forbids'"),
        (lambda d: d["categories"][3].update(slug="o1_hate"), r"repeats slug 'o1_hate' already used by categories\[0\]"),
        (lambda d: d["categories"][5].update(id="o2"), r"repeats id 'o2' already used by categories\[1\]"),
        (lambda d: d["categories"][0].update(slug="O1 Hate!"), r"slug 'O1 Hate!' is not a valid partition key"),
        (lambda d: d.update(categories=[]), r"'categories' must be a non-empty list"),
        (lambda d: d.pop("name"), r"top-level 'name' is missing"),
        (lambda d: d["categories"][0].update(allows="ok"), None),  # a single string is accepted as a list
    ],
)
def test_malformed_policies_name_the_file_entry_and_fix(tmp_path, mutate, expected):
    doc = _doc()
    mutate(doc)
    path = _write(tmp_path, doc)
    if expected is None:
        load_policy(path)
        return
    with pytest.raises(PolicyError, match=expected) as info:
        load_policy(path)
    assert str(path) in str(info.value)


def test_a_lone_surrogate_in_a_text_names_the_row_and_the_fix(tmp_path):
    """JSON-style escapes of an emoji read back from YAML as two lone surrogates: refused, with the row."""
    text = DEFAULT_POLICY_PATH.read_text().replace("replacement_texts:\n",
                                                   'replacement_texts:\n      - "cheers \\ud83c\\udf7a"\n', 1)
    path = _write(tmp_path, text)
    with pytest.raises(PolicyError, match=r"categories\[0\].*replacement_texts' row 0 'cheers .*"
                                          r"surrogate code points \(\\ud83c\\udf7a\).*\\U0001F37A") as info:
        load_policy(path)
    assert str(path) in str(info.value)
    fixed = text.replace("\\ud83c\\udf7a", "\\U0001F37A")
    assert "cheers \U0001F37A" in load_policy(_write(tmp_path, fixed)).categories[0].replacement_texts


def test_bad_yaml_reports_the_line(tmp_path):
    path = _write(tmp_path, "name: x\ncategories:\n  - id: O1\n    slug: [unclosed\n")
    with pytest.raises(PolicyError, match=r"not valid YAML at line \d+"):
        load_policy(path)


def test_missing_file_says_how_to_point_at_one(tmp_path):
    with pytest.raises(PolicyError, match="SP_POLICY"):
        load_policy(tmp_path / "nope.yaml")


def test_parse_policy_is_independent_of_disk():
    policy = parse_policy(DEFAULT_POLICY_PATH.read_text(), DEFAULT_POLICY_PATH)
    assert policy.sha256 == load_policy(DEFAULT_POLICY_PATH).sha256


def _load_definitions(policy: Path) -> subprocess.CompletedProcess:
    code = ("from sp_assets.definitions import defs; from sp_assets.defs.partitions import category_partitions as p; "
            "print(','.join(p.get_partition_keys())); print(len(list(defs.assets)))")
    env = {**os.environ, "SP_POLICY": str(policy)}
    return subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)


def test_the_graph_loads_with_the_example_policy():
    example = REPO_ROOT / "policies" / "strict_weapons.yaml"
    policy = load_policy(example)
    assert policy.slugs != DEFAULT_SLUGS
    done = _load_definitions(example)
    assert done.returncode == 0, done.stderr
    keys, n_assets = done.stdout.strip().splitlines()[-2:]
    assert keys.split(",") == policy.slugs
    assert n_assets == "7"


def test_a_broken_policy_stops_the_code_location_with_its_message(tmp_path):
    doc = _doc()
    doc["categories"][1]["slug"] = "o1_hate"
    done = _load_definitions(_write(tmp_path, doc))
    assert done.returncode != 0
    assert "repeats slug 'o1_hate'" in done.stderr
