"""Human labels against the judge (issue 11): kappa and the other agreement figures, the label_agreement
view, the review page's disagreements, and a human-safe source that never becomes a flip pair."""

from __future__ import annotations

import random
import re
from pathlib import Path

import pytest
from dagster import DagsterInstance, materialize
from sklearn.metrics import cohen_kappa_score

from sp_assets.backends.sources.demo import generate_demo_pool
from sp_assets.core.agreement import (
    JUDGE_CLASSES, agreement, agreement_table, disagreement, editable, human_category, human_columns, pooled,
)
from sp_assets.defs import STAGES
from sp_assets.defs.partitions import ACTIVE_POLICY
from sp_assets.defs.resources import JudgeResource
from sp_assets.review import export_review
from sp_assets.storage import ImageStore, Store
from tests.conftest import RANGE_END, RANGE_START, graph_resources, run_graph, store_at

CATEGORY = "o2_violence"
UPTO_SPLIT = ["source_pool", "policy_labels", "edit_instructions", "edited_images", "verified_pairs",
              "benchmark_split"]


def _rows(cells: dict[tuple[str, str], int], **extra) -> list[dict]:
    return [{"human_rating": h, "rating": j, **extra} for (h, j), n in cells.items() for _ in range(n)]


# --- the figures ------------------------------------------------------------------------------------


def test_kappa_of_a_hand_computed_table():
    # human unsafe: judge 3 unsafe, 1 safe, 1 invalid; human safe: 1 unsafe, 2 safe; one source unlabelled.
    rows = _rows({("unsafe", "unsafe"): 3, ("unsafe", "safe"): 1, ("unsafe", "invalid"): 1,
                  ("safe", "unsafe"): 1, ("safe", "safe"): 2}) + [{"human_rating": None, "rating": "unsafe"}]
    a = agreement(rows)
    # n = 8, agreed 5; margins human (5, 3), judge (4, 3, 1): chance = (5*4 + 3*3) / 64 = 29/64.
    # kappa = (5/8 - 29/64) / (1 - 29/64) = 11/35.
    assert (a.rated, a.unrated, a.n("safe", "unsafe"), a.n("unsafe", "invalid")) == (8, 1, 1, 1)
    assert a.agreement == pytest.approx(5 / 8)
    assert a.kappa == pytest.approx(11 / 35)


@pytest.mark.parametrize("seed", range(12))
def test_kappa_is_sklearns_with_invalid_as_a_judge_class(seed):
    rng = random.Random(seed)
    cells = {(h, j): rng.randint(0, 6) for h in ("unsafe", "safe") for j in JUDGE_CLASSES}
    rows = _rows(cells)
    if not rows:
        pytest.skip("empty table")
    a = agreement(rows)
    expected = cohen_kappa_score([r["human_rating"] for r in rows], [r["rating"] for r in rows],
                                 labels=["unsafe", "safe", "invalid"])
    if expected != expected:  # NaN: chance agreement is 1
        assert a.kappa is None
    else:
        assert a.kappa == pytest.approx(expected, abs=1e-12)
    assert a.agreement == pytest.approx(sum(r["human_rating"] == r["rating"] for r in rows) / len(rows))


def test_kappa_is_undefined_when_both_raters_use_one_class_and_zero_at_chance():
    assert agreement(_rows({("unsafe", "unsafe"): 4})).kappa is None
    assert agreement(_rows({("unsafe", "unsafe"): 4})).agreement == 1.0
    # The judge calls everything unsafe: agreement is the human's base rate, kappa 0.
    a = agreement(_rows({("unsafe", "unsafe"): 3, ("safe", "unsafe"): 1}))
    assert a.agreement == 0.75 and a.kappa == 0.0
    # A judge that gives up on every source agrees with no one.
    assert agreement(_rows({("unsafe", "invalid"): 2, ("safe", "invalid"): 2})).kappa == 0.0
    empty = agreement([{"human_rating": None, "rating": "safe"}])
    assert (empty.rated, empty.unrated, empty.agreement, empty.kappa, empty.category_match) == (0, 1, None, None, None)


def test_category_match_counts_only_named_categories_of_agreed_unsafe():
    rows = [
        {"human_rating": "unsafe", "human_category": "o2_violence", "rating": "unsafe", "judged_category": "o2_violence"},
        {"human_rating": "unsafe", "human_category": "o2_violence", "rating": "unsafe", "judged_category": "o6_weapons_substances"},
        {"human_rating": "unsafe", "human_category": None, "rating": "unsafe", "judged_category": "o2_violence"},
        {"human_rating": "unsafe", "human_category": "o2_violence", "rating": "safe", "judged_category": None},
    ]
    a = agreement(rows)
    assert (a.category_compared, a.category_matched, a.category_match) == (2, 1, 0.5)
    assert [disagreement(r) for r in rows] == [None, "category_differs", None, "human_unsafe_judge_safe"]
    both = pooled([a, agreement(rows[:1])])
    assert (both.rated, both.category_compared, both.category_matched) == (5, 3, 2)
    table = agreement_table({"o2_violence": a, "o6_weapons_substances": agreement(rows[:1])})
    assert "| all | 5 |" in table and "0.50 (1/2)" in table


def test_human_labels_are_read_through_one_vocabulary():
    policy = ACTIVE_POLICY
    assert human_category("O2: Violence, Harm, or Cruelty", policy) == "o2_violence"
    assert human_category("o6_weapons_substances", policy) == "o6_weapons_substances"
    assert human_category("O6", policy) == "o6_weapons_substances"
    for nothing in (None, "", "NA", "NA: None applying", "O42", "violence"):
        assert human_category(nothing, policy) is None, nothing
    assert human_columns({"manifest_rating": " Unsafe ", "manifest_category": "O2"}, policy) == {
        "human_rating": "unsafe", "human_category": "o2_violence"}
    assert human_columns({"manifest_rating": "compliant", "manifest_category": "O2"}, policy) == {
        "human_rating": "safe", "human_category": None}
    assert human_columns({"manifest_rating": "unsafe", "manifest_category": "NA"}, policy)["human_category"] is None
    assert human_columns({"manifest_rating": "maybe"}, policy) == {"human_rating": None, "human_category": None}
    assert disagreement({"human_rating": "safe", "rating": "invalid"}) == "judge_invalid"
    assert disagreement({"human_rating": None, "rating": "unsafe"}) is None


def test_only_human_safe_sources_are_left_out_of_editing():
    labels = [{"image_sha256": "a", "manifest_rating": "safe"}, {"image_sha256": "b", "manifest_rating": "unsafe",
              "manifest_category": "O6"}, {"image_sha256": "c", "manifest_rating": None},
              {"image_sha256": "d", "manifest_rating": "0"}, {"image_sha256": "e", "manifest_rating": "odd word"}]
    kept, left_out = editable(labels)
    assert [k["image_sha256"] for k in kept] == ["b", "c", "e"]
    assert left_out == {"human_safe": ["a", "d"]}
    assert editable(kept) == (kept, {})


# --- the view and the review page, on a database written by hand -----------------------------------


def _labels_db(path: Path, cells: dict[tuple[str | None, str], int], judge: str = "scene_text") -> Store:
    store = Store.at(path)
    sources, labels = [], []
    for i, (human, rating) in enumerate((h, j) for (h, j), n in cells.items() for _ in range(n)):
        sha = f"{i:064x}"
        sources.append({"category": CATEGORY, "image_sha256": sha, "image_path": f"images/{sha}.png",
                        "origin_ref": f"img{i}.png", "manifest_rating": human})
        labels.append({"category": CATEGORY, "image_sha256": sha, "judge_profile": judge, "rating": rating,
                       "judged_category": CATEGORY if rating == "unsafe" else None, "human_rating": human,
                       "human_category": CATEGORY if human == "unsafe" else None, "model_id": "m",
                       "rationale": f"because {i}"})
    store.append("source_images", sources)
    store.append("policy_labels", labels)
    return store


def test_view_gives_the_figures_core_computes(tmp_path):
    cells = {("unsafe", "unsafe"): 3, ("unsafe", "safe"): 1, ("unsafe", "invalid"): 1, ("safe", "unsafe"): 1,
             ("safe", "safe"): 2, (None, "safe"): 2}
    store = _labels_db(tmp_path / "db.duckdb", cells)
    _labels_db(tmp_path / "db.duckdb", {(None, "unsafe"): 3}, judge="manifest")  # no human columns: not in the view
    view = store.query("SELECT * FROM label_agreement").to_dicts()
    assert len(view) == 1 and view[0]["judge_profile"] == "scene_text"
    core = agreement(store.rows("policy_labels", {"judge_profile": "scene_text"})).as_dict()
    row = view[0]
    assert (row["rated"], row["unrated"]) == (core["rated"], core["unrated"]) == (8, 2)
    for h in ("unsafe", "safe"):
        for j in JUDGE_CLASSES:
            assert row[f"human_{h}_judge_{j}"] == core["counts"][f"human_{h}"][f"judge_{j}"]
    assert row["kappa"] == pytest.approx(core["kappa"]) == pytest.approx(11 / 35)
    assert row["agreement"] == pytest.approx(core["agreement"])
    assert (row["category_compared"], row["category_matched"], row["category_match"]) == (3, 3, 1.0)
    one_class = _labels_db(tmp_path / "one.duckdb", {("unsafe", "unsafe"): 2})
    assert one_class.query("SELECT kappa FROM label_agreement").item() is None


def test_review_page_shows_disagreements_even_without_candidates(tmp_path):
    _labels_db(tmp_path / "db.duckdb", {("safe", "unsafe"): 1, ("unsafe", "unsafe"): 1, ("safe", "safe"): 1})
    page = export_review(Store.at(tmp_path / "db.duckdb", read_only=True), ImageStore(tmp_path), CATEGORY,
                         tmp_path / "out").read_text(encoding="utf-8")
    shown = re.findall(r'<section class="disagree" data-image-sha256="([0-9a-f]{64})"[^>]*data-disagreement="([a-z_]+)"',
                       page)
    assert shown == [(f"{0:064x}", "human_safe_judge_unsafe")]
    assert "because 0" in page and "Left out of the flip edits" in page and '<article class="cand"' not in page
    agreeing = _labels_db(tmp_path / "agree.duckdb", {("safe", "safe"): 1})
    with pytest.raises(ValueError, match="no source whose human label"):
        export_review(agreeing, ImageStore(tmp_path), CATEGORY, tmp_path / "out2")


# --- the graph: a folder source whose manifest calls a judge-unsafe image safe -----------------------


def _folder(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """Demo-style signs saved as files: three violating, one safe look-alike. name -> intended label."""
    src = tmp_path / "images"
    src.mkdir()
    names = {}
    for item in generate_demo_pool(CATEGORY, n_unsafe=3, n_safe=1, seed=0):
        name = f"{item.intended}_{item.recipe['index']}.png"
        (src / name).write_bytes(item.png_bytes())
        names[name] = item.intended
    return src, names


def _manifest(path: Path, labels: dict[str, str]) -> Path:
    lines = ["path,rating,category,rationale"]
    lines += [f"{name},{rating},{'O2' if rating == 'unsafe' else CATEGORY},by hand" for name, rating in labels.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def _run(data: Path, src: Path, manifest: Path, instance: DagsterInstance):
    return run_graph(data, CATEGORY, CATEGORY, selection=UPTO_SPLIT, instance=instance, source="folder",
                     source_dir=str(src), manifest=str(manifest), probe_seeds=0)


def _sha_of(data: Path, name: str) -> str:
    return store_at(data).query("SELECT image_sha256 FROM source_images WHERE origin_ref = ?", [name]).item()


def _count(data: Path, table: str, sha: str) -> int:
    return store_at(data).query(f"SELECT count(*) FROM {table} WHERE image_sha256 = ?", [sha]).item()


def _metadata(result, asset: str) -> dict:
    return {k: v.value for k, v in result.asset_materializations_for_node(asset)[0].metadata.items()}


@pytest.fixture(scope="module")
def relabelled(tmp_path_factory):
    """First every violating sign labelled unsafe; then one the judge rates unsafe is relabelled safe."""
    tmp = tmp_path_factory.mktemp("agreement")
    src, names = _folder(tmp)
    data, instance = tmp / "data", DagsterInstance.ephemeral()
    labels = {**names, "unsafe_2.png": ""}  # one image without a human label
    _run(data, src, _manifest(tmp / "first.csv", labels), instance)
    judged_unsafe = store_at(data).query(
        "SELECT s.origin_ref FROM policy_labels l JOIN source_images s USING (category, image_sha256) "
        "WHERE l.rating = 'unsafe' AND s.manifest_rating = 'unsafe' ORDER BY (SELECT count(*) FROM benchmark_split b "
        "WHERE b.image_sha256 = l.image_sha256) DESC, s.origin_ref").to_series().to_list()
    assert judged_unsafe, "the scene-text judge should rate some violating sign unsafe"
    victim = judged_unsafe[0]
    before = {t: _count(data, t, _sha_of(data, victim)) for t in ("edit_instructions", "edited_images", "verified_pairs",
                                                                  "benchmark_split")}
    second = _run(data, src, _manifest(tmp / "second.csv", {**labels, victim: "safe"}), instance)
    return data, victim, before, second


def test_a_human_safe_source_yields_no_flip_pair(relabelled):
    data, victim, before, _ = relabelled
    sha = _sha_of(data, victim)
    assert before["edit_instructions"] > 0 and before["edited_images"] > 0  # it was edited while labelled unsafe
    assert store_at(data).query("SELECT rating FROM policy_labels WHERE image_sha256 = ?", [sha]).item() == "unsafe"
    for table in ("edit_instructions", "edited_images", "verified_pairs", "benchmark_split"):
        assert _count(data, table, sha) == 0, table
    others = store_at(data).query("SELECT count(*) FROM edit_instructions WHERE image_sha256 <> ?", [sha]).item()
    assert others > 0  # the other judge-unsafe sources still get instructions


def test_left_out_sources_are_counted_with_their_reason(relabelled):
    data, _, _, second = relabelled
    meta = _metadata(second, "edit_instructions")
    assert meta["rejected_by_reason"][CATEGORY]["human_safe"] == 1
    judged_unsafe = store_at(data).query("SELECT count(*) FROM policy_labels WHERE rating = 'unsafe'").item()
    assert meta["rows_in"] == judged_unsafe == meta["rows_out"] + meta["rows_rejected"]
    assert meta["rows_rejected"] == sum(meta["rejected_by_reason"][CATEGORY].values())
    checks = {c.check_name: c.passed for c in second.get_asset_check_evaluations()}
    assert checks["edit_instructions_counts_add_up"]


def test_agreement_figures_count_the_disagreement(relabelled, tmp_path):
    data, victim, _, second = relabelled
    figures = _metadata(second, "policy_labels")["human_agreement_json"][CATEGORY]
    store = store_at(data)
    truth = store.query("SELECT s.manifest_rating AS human, l.rating AS judge FROM policy_labels l "
                        "JOIN source_images s USING (category, image_sha256)").to_dicts()
    expected = {f"human_{h}": {f"judge_{j}": sum(t["human"] == h and t["judge"] == j for t in truth)
                               for j in JUDGE_CLASSES} for h in ("unsafe", "safe")}
    assert figures["counts"] == expected and figures["counts"]["human_safe"]["judge_unsafe"] >= 1
    assert figures["unrated"] == 1 and figures["rated"] == len(truth) - 1
    view = store.query("SELECT * FROM label_agreement WHERE category = ?", [CATEGORY]).to_dicts()
    assert len(view) == 1 and view[0]["human_safe_judge_unsafe"] == expected["human_safe"]["judge_unsafe"]
    assert view[0]["agreement"] == pytest.approx(figures["agreement"])
    assert (view[0]["kappa"] is None and figures["kappa"] is None) or view[0]["kappa"] == pytest.approx(figures["kappa"])
    assert "human_agreement" in _metadata(second, "policy_labels")
    page = export_review(store, ImageStore(data), CATEGORY, tmp_path).read_text(encoding="utf-8")
    entry = re.search(rf'<section class="disagree" data-image-sha256="{_sha_of(data, victim)}".*?</section>', page, re.S)
    assert entry and 'data-disagreement="human_safe_judge_unsafe"' in entry.group(0)
    assert 'src="data:image/' in entry.group(0) and "blurred" in entry.group(0) and victim in entry.group(0)
    assert '<article class="cand"' in page  # the other sources' candidates are still up for review


def test_the_manifest_judge_is_not_compared_with_itself(tmp_path):
    """With the manifest as the judge, its verdicts are the human labels: nothing to compare."""
    src, names = _folder(tmp_path)
    data = tmp_path / "data"
    resources = graph_resources(data, source="folder", source_dir=str(src),
                                manifest=str(_manifest(tmp_path / "m.csv", names)))
    resources["judge"] = JudgeResource(profile="manifest", verify_profile="scene_text")
    result = materialize(STAGES, selection=["source_pool", "policy_labels"], resources=resources,
                         instance=DagsterInstance.ephemeral(), tags={RANGE_START: CATEGORY, RANGE_END: CATEGORY})
    assert result.success
    assert _metadata(result, "policy_labels")["ratings"][CATEGORY] == {"unsafe": 3, "safe": 1, "invalid": 0}
    assert "human_agreement_json" not in _metadata(result, "policy_labels")
    assert store_at(data).query("SELECT count(human_rating) FROM policy_labels").item() == 0
    assert store_at(data).query("SELECT count(*) FROM label_agreement").item() == 0
