"""Policy variants: the same images labelled under two policies, policy pairs, and guards scored on following
the policy. Unit tests of the figures (fast) and the graph on one category with two variants (full tier)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from sp_assets.core import policy_variants as pv
from sp_assets.core.policy import DEFAULT_POLICY_PATH, REPO_ROOT, PolicyError, load_policy
from sp_assets.core.record_types import Verdict

from conftest import model_calls_made, run_graph, store_at
from test_demo_pool import _norm, near_copy

MAIN = load_policy(DEFAULT_POLICY_PATH)
STRICT = REPO_ROOT / "policies" / "strict_weapons.yaml"
FAMILY = REPO_ROOT / "policies" / "family.yaml"
BASE = {"category": "o6_weapons_substances", "run_id": "r1"}


def _items() -> list[dict]:
    """A pair (source unsafe, flip safe) and a look-alike (safe) of the run's O6."""
    return [{"pair_id": "p1", "half": "unsafe", "split": "test", "label": "unsafe", "image_sha256": "a"},
            {"pair_id": "p1", "half": "safe", "split": "test", "label": "safe", "image_sha256": "b"},
            {"pair_id": "l1", "half": "lookalike", "split": "train", "label": "safe", "image_sha256": "c"}]


def _labels(variant_ratings: dict[tuple[str, str], str]) -> list[dict]:
    variant = pv.load_variants(MAIN, [str(STRICT)])[0]
    verdicts = {k: Verdict(r, "", None, f"judged {r}", "") for k, r in variant_ratings.items()}
    return pv.label_rows(BASE, variant, MAIN.category("O6"), _items(), verdicts, "scene_text", "sha", {})


def test_variants_map_onto_the_run_policy_by_id():
    strict, family = pv.load_variants(MAIN, [str(STRICT), str(FAMILY)])
    assert strict.category_for("o6_weapons_substances").slug == "o6_weapons_strict"
    assert strict.category_for("o7_self_harm").slug == "o7_self_harm"
    assert strict.category_for("o1_hate") is None  # not named by the variant: not labelled under it
    assert family.category_for("o3_sexual").slug == "o3_sexual_dating"
    assert pv.split_paths(f" {STRICT}, {FAMILY} ,") == [str(STRICT), str(FAMILY)]


def test_a_variant_with_an_unknown_id_the_same_rules_or_a_taken_name_is_refused(tmp_path: Path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(STRICT.read_text().replace("id: O6", "id: O42"))
    with pytest.raises(PolicyError, match=r"bad\.yaml.*O42.*not in the run's policy.*O1"):
        pv.load_variants(MAIN, [str(bad)])
    with pytest.raises(PolicyError, match="same rules as the run's policy"):
        pv.load_variants(MAIN, [str(DEFAULT_POLICY_PATH)])
    twin = tmp_path / "twin.yaml"
    twin.write_text(STRICT.read_text().replace("weapon free campus", "a weapon free campus", 1)
                    .replace("Weapons of any kind are", "All weapons are"))
    with pytest.raises(PolicyError, match="already used"):
        pv.load_variants(MAIN, [str(STRICT), str(twin)])


def test_an_image_allowed_by_one_policy_and_forbidden_by_the_other_is_a_policy_pair():
    # The look-alike (a hunting sign, allowed by the default) is forbidden by strict-weapons; the source is
    # forbidden by both; the flip edit allowed by both.
    rows = _labels({("p1", "unsafe"): "unsafe", ("p1", "safe"): "safe", ("l1", "lookalike"): "unsafe"})
    pairs = [r for r in rows if pv.is_policy_pair(r)]
    assert [(r["pair_id"], r["half"], r["main_label"], r["label"]) for r in pairs] == [
        ("l1", "lookalike", "safe", "unsafe")]
    rules = json.loads(pairs[0]["deciding_rules"])
    assert any("hunting and sport guns" in r for r in rules)  # what strict forbids and the default does not
    assert all(json.loads(r["deciding_rules"]) == [] for r in rows if not pv.is_policy_pair(r))
    assert {r["variant"] for r in rows} == {"strict-weapons"} and rows[0]["variant_category"] == "o6_weapons_strict"
    # An 'invalid' label under the variant is no policy pair (it is not a label).
    assert not any(pv.is_policy_pair(r) for r in _labels({("p1", "unsafe"): "invalid", ("p1", "safe"): "invalid",
                                                         ("l1", "lookalike"): "safe"}))
    counted = pv.counts(rows)[("o6_weapons_substances", "strict-weapons")]
    assert counted == {"images": 3, "policy_pairs": 1, "unsafe_only_main": 0, "unsafe_only_variant": 1, "invalid": 0}


def _metrics(labels, main, variant, conditioned=True):
    return {r["split"]: r for r in pv.metric_rows(BASE, "g", "strict-weapons", labels, main, variant,
                                                  conditioned=conditioned, config_sha256="x", selected=False)}


def test_a_guard_that_ignores_the_policy_scores_zero_on_policy_pairs():
    # Source: unsafe under both. Flip: safe under the default, unsafe under the variant. Look-alike: safe under
    # the default, unsafe under the variant. Two policy pairs.
    labels = _labels({("p1", "unsafe"): "unsafe", ("p1", "safe"): "unsafe", ("l1", "lookalike"): "unsafe"})
    fixed = {("p1", "unsafe"): "unsafe", ("p1", "safe"): "safe", ("l1", "lookalike"): "safe"}
    ignoring = _metrics(labels, fixed, fixed, conditioned=False)["all"]
    assert ignoring["n_policy_pairs"] == 2
    assert ignoring["policy_pair_accuracy"] == 0.0 and ignoring["ignores_policy"] == 1.0
    assert (ignoring["policy_pair_accuracy_low"], ignoring["policy_pair_accuracy_high"]) == (0.0, 0.0)
    # The 2x2 by hand: the source is right under both; the flip right under the default only.
    assert (ignoring["acc_unsafe_main"], ignoring["acc_unsafe_variant"]) == (1.0, 1.0)
    assert (ignoring["acc_safe_main"], ignoring["acc_safe_variant"]) == (1.0, 0.0)
    # A guard that follows the policy is right under both.
    following = _metrics(labels, fixed, {("p1", "unsafe"): "unsafe", ("p1", "safe"): "unsafe",
                                         ("l1", "lookalike"): "unsafe"})
    assert following["all"]["policy_pair_accuracy"] == 1.0 and following["all"]["ignores_policy"] == 0.0
    assert following["test"]["n_policy_pairs"] == 1  # the look-alike is in train
    # One right of two, and an answer it could not give (fail closed: wrong under every policy).
    half = _metrics(labels, fixed, {("p1", "unsafe"): "unsafe", ("p1", "safe"): "unsafe",
                                    ("l1", "lookalike"): "invalid"})["all"]
    assert half["policy_pair_accuracy"] == 0.5 and half["n_invalid"] == 1
    assert 0.0 <= half["policy_pair_accuracy_low"] <= 0.5 <= half["policy_pair_accuracy_high"] <= 1.0


@pytest.mark.parametrize("policy_file", [STRICT, FAMILY])
def test_demo_phrases_are_kept_apart_from_the_variants_texts(policy_file: Path):
    # The demo phrases are the variant judge's unseen test set too; the run's replacement texts (on the flip
    # edits it labels) are not its training rows either.
    from sp_assets.backends.judges.text_head import judge_examples
    from sp_assets.backends.sources.demo import DEMO_PHRASES

    policy = load_policy(policy_file)
    trained = {_norm(r.text) for r in judge_examples(policy, None).rows} | {
        _norm(t) for c in policy.categories for t in (*c.forbids, *c.allows)}
    phrases = [p for unsafe, safe in DEMO_PHRASES.values() for p in (*unsafe, *safe)]
    replacements = [t for c in MAIN.categories for t in c.replacement_texts]
    own = {_norm(t) for c in policy.categories for t in c.replacement_texts}
    for phrase, texts in [*((p, trained | own) for p in phrases), *((r, trained) for r in replacements)]:
        for text in texts:
            why = near_copy(phrase, text)
            assert why is None, f"{policy_file.name}: demo text {phrase!r} is {why} {text!r}"


def _variant_copy(folder: Path, source: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(source, folder / source.name)
    shutil.copy(source.with_suffix(".examples.jsonl"), folder / source.with_suffix(".examples.jsonl").name)
    return folder / source.name


@pytest.mark.full  # the graph on one category with two variants, then a variant edited: about 2 minutes
def test_variants_through_the_graph_and_an_edited_variant_redoes_only_its_labels(data_root: Path, tmp_path: Path):
    strict, family = _variant_copy(tmp_path / "v", STRICT), _variant_copy(tmp_path / "v", FAMILY)
    settings = {"demo_unsafe_per_category": 2, "demo_safe_per_category": 6, "probe_seeds": 0,
                "policy_variants": [str(strict), str(family)]}
    first = run_graph(data_root, "o6_weapons_substances", "o6_weapons_substances", **settings)
    store = store_at(data_root)
    labels = store.query("SELECT * FROM variant_labels").to_dicts()
    assert {r["variant"] for r in labels} == {"strict-weapons", "family"}
    n_items = len(store.query("SELECT * FROM guard_predictions WHERE guard = 'scene_text'"))
    assert len(labels) == 2 * n_items  # every benchmark image under both variants
    # The demo's hunting look-alike: allowed by the default, forbidden by strict-weapons, allowed by family.
    hunting = {r["variant"]: r for r in store.query(
        "SELECT l.* FROM variant_labels l JOIN source_images s ON s.category = l.category AND "
        "s.image_sha256 = l.image_sha256 WHERE s.demo_text = 'DUCK HUNTING SEASON OPENS'").to_dicts()}
    assert hunting["strict-weapons"]["main_label"] == "safe" and hunting["strict-weapons"]["label"] == "unsafe"
    assert pv.is_policy_pair(hunting["strict-weapons"]) and not pv.is_policy_pair(hunting["family"])
    view = store.query("SELECT * FROM policy_pairs").to_dicts()
    assert len(view) == sum(pv.is_policy_pair(r) for r in labels) > 0
    metrics = {(r["guard"], r["variant"]): r for r in store.query(
        "SELECT * FROM policy_guard_metrics WHERE split = 'all'").to_dicts()}
    fixed = metrics[("open_nsfw", "strict-weapons")]
    assert not fixed["conditioned"] and fixed["policy_pair_accuracy"] == 0.0 and fixed["ignores_policy"] == 1.0
    judge_guard = metrics[("scene_text", "strict-weapons")]
    assert judge_guard["conditioned"] and judge_guard["selected_pairs"]  # it gave the labels: optimistic
    # Asked under each variant, the judge-as-guard gives the labels themselves (the same memo answers); under
    # the run's policy it may still miss a look-alike, so its policy-pair accuracy is high but not always 1.
    asked = {(r["variant"], r["pair_id"], r["half"]): r["rating"] for r in store.query(
        "SELECT * FROM variant_predictions WHERE guard = 'scene_text'").to_dicts()}
    assert asked == {(r["variant"], r["pair_id"], r["half"]): r["label"] for r in labels}
    assert judge_guard["policy_pair_accuracy"] > fixed["policy_pair_accuracy"]
    # make demo's summary prints the policy pairs per variant and every guard's figures.
    from sp_assets.demo import summary

    printed = summary(store, data_root)
    assert "policy variants: the same benchmark images labelled under other policies" in printed
    assert re.search(r"strict-weapons +images +\d+ +policy pairs +[1-9]", printed), printed
    assert re.search(r"open_nsfw +strict-weapons +fixed answer +pairs +\d+ +policy-pair acc 0\.00", printed), printed
    # The export: the policy_pairs config loads, one row per policy pair, and the datasheet counts them.
    import datasets

    export = data_root / "export"
    loaded = datasets.load_dataset(str(export), "policy_pairs")
    assert sum(len(split) for split in loaded.values()) == len(view)
    row = next(iter(loaded.values()))[0]
    assert {row["label_a"], row["label_b"]} == {"unsafe", "safe"} and row["policy_a"] == "safetypairs-default"
    assert row["image"].size[0] > 0 and row["deciding_rules"]
    assert "## The same images under other policies" in (export / "README.md").read_text()

    # Edit family's rules: only family's labels are judged again; strict-weapons' are reused.
    family.write_text(family.read_text().replace("family celebrations such as weddings",
                                                 "family celebrations and school events such as weddings"))
    second = run_graph(data_root, "o6_weapons_substances", "o6_weapons_substances",
                       selection=["benchmark_split"], **settings)
    again = store_at(data_root).query("SELECT variant, computed_run_id, run_id FROM variant_labels").to_dicts()
    assert {r["computed_run_id"] for r in again if r["variant"] == "strict-weapons"} == {first.run_id}
    assert {r["computed_run_id"] for r in again if r["variant"] == "family"} == {second.run_id}
    assert model_calls_made(second)["benchmark_split"]["judge"] == n_items


def test_a_human_label_under_a_variant_wins_over_the_judge_and_a_bad_one_is_no_label(tmp_path: Path):
    from sp_assets.backends.sources.folder import iter_entries

    manifest = tmp_path / "manifest.csv"
    manifest.write_text("path,rating,category,rating@strict-weapons\n"
                        "a.png,safe,O6,Unsafe\nb.png,unsafe,O6,\nc.png,safe,O6,maybe\n")
    entries = {e.ref: e for e in iter_entries(tmp_path, manifest, MAIN)}
    assert entries["a.png"].variant_ratings == {"strict-weapons": "Unsafe"}
    assert entries["b.png"].variant_ratings == {}  # empty cell: the judge decides
    # The look-alike 'c' was labelled by a person under strict-weapons; the judge said safe.
    human = {"c": {"strict-weapons": "Unsafe"}}
    rows = {r["half"]: r for r in _labels_with({("p1", "unsafe"): "unsafe", ("p1", "safe"): "safe",
                                                ("l1", "lookalike"): "safe"}, human)}
    assert rows["lookalike"]["label"] == "unsafe" and rows["lookalike"]["labelled_by"] == "human"
    assert pv.is_policy_pair(rows["lookalike"])
    assert rows["safe"]["labelled_by"] == "judge"
    bad = {r["half"]: r for r in _labels_with({("p1", "unsafe"): "unsafe", ("p1", "safe"): "safe",
                                               ("l1", "lookalike"): "safe"}, {"c": {"strict-weapons": "maybe"}})}
    assert bad["lookalike"]["label"] == "invalid" and "maybe" in bad["lookalike"]["rationale"]


def _labels_with(ratings: dict[tuple[str, str], str], human: dict) -> list[dict]:
    variant = pv.load_variants(MAIN, [str(STRICT)])[0]
    verdicts = {k: Verdict(r, "", None, f"judged {r}", "") for k, r in ratings.items()}
    return pv.label_rows(BASE, variant, MAIN.category("O6"), _items(), verdicts, "scene_text", "sha", {}, human)
