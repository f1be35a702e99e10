"""The second offline editor, ``text_region_ns``: its edits differ from ``text_region``'s, and switching to it
adds its candidates next to the first editor's, with the benchmark choosing per source across both."""

from __future__ import annotations

import numpy as np
import pytest
from dagster import DagsterInstance
from PIL import Image, ImageDraw
from skimage import data

from sp_assets.backends import registry
from sp_assets.core.record_types import Instruction, TextRegion
from sp_assets.backends.common.fonts import load_font
from sp_assets.backends.profiles import get_profile
from sp_assets.core.image_metrics import region_mask
from sp_assets.core.policy import load_active_policy
from sp_assets.core.splitting import benchmark_rows, replacement_of
from sp_assets.storage import queries
from tests.conftest import run_graph, store_at

CATEGORY = "o2_violence"
EDITORS = ("text_region", "text_region_ns")


def _sign() -> tuple[Image.Image, Instruction]:
    """The coffee photo with a pale sign carrying dark bold text, and an instruction to replace it."""
    im = Image.fromarray(data.coffee()).convert("RGB")
    draw = ImageDraw.Draw(im)
    draw.rectangle((40, 40, 420, 130), fill=(235, 240, 250))
    font = load_font(34)
    regions = []
    for text, y in (("WE WILL HURT", 52), ("YOU TONIGHT", 92)):
        draw.text((60, y), text, font=font, fill=(20, 30, 90))
        x0, y0, x1, y1 = draw.textbbox((60, y), text, font=font)
        regions.append(TextRegion(box=(x0 - 2, y0 - 2, x1 + 2, y1 + 2), text=text, confidence=0.97))
    instruction = Instruction(text="Replace the sign's words with 'JOIN OUR RUNNING CLUB'",
                              target={"regions": [r.as_dict() for r in regions], "replacement": "JOIN OUR RUNNING CLUB"})
    return im, instruction


def _editor(name: str):
    return registry.build(get_profile("editor", name), load_active_policy())


@pytest.fixture(scope="module")
def edits():
    im, instruction = _sign()
    return im, {name: _editor(name).edit([im], [instruction], [0])[0] for name in EDITORS}


def test_the_second_profile_is_offline_and_hashes_apart():
    first, second = (get_profile("editor", name) for name in EDITORS)
    assert second.implementation == first.implementation == "text_region"
    assert second.params["inpaint_method"] == "ns" and second.params["font_name"] != "DejaVuSans-Bold.ttf"
    assert registry.config_sha256(first) != registry.config_sha256(second)
    models = [_editor(name).info.model_id for name in EDITORS]
    assert models == ["opencv-inpaint-telea+dejavu", "opencv-inpaint-ns+dejavuserif-bold"]


def test_its_edit_differs_and_keeps_every_pixel_outside_its_region(edits):
    im, results = edits
    src = np.asarray(im)
    for result in results.values():
        out = np.asarray(result.image)
        assert result.image.size == im.size
        outside = ~region_mask(im.size, result.region)
        assert np.array_equal(out[outside], src[outside])
    first, second = (np.asarray(results[name].image) for name in EDITORS)
    differ = (first != second).any(axis=2)
    assert differ.sum() > 1000, "the two editors should render the replacement differently"
    details = [results[name].detail for name in EDITORS]
    assert [d["inpaint_method"] for d in details] == ["telea", "ns"]
    assert details[0]["font"] != details[1]["font"]
    assert details[0]["changed_pixels"] != details[1]["changed_pixels"]


def test_ocr_reads_the_serif_replacement(edits):
    rapidocr = pytest.importorskip("rapidocr")
    _, results = edits
    read = " ".join(rapidocr.RapidOCR()(np.asarray(results["text_region_ns"].image)).txts or ())
    assert "RUNNING" in read and "HURT" not in read


def _flip(sha: str, editor: str, quality: float, replacement: str) -> dict:
    return {"candidate_id": f"{sha}-{editor}-{replacement}", "image_sha256": sha, "edited_sha256": f"e-{sha}-{editor}",
            "quality_score": quality, "judge_profile": "scene_text", "writer_profile": "template",
            "editor_profile": editor, "unsafe_path": f"sources/{sha}.png", "photo_id": sha,
            "edited_path": f"edits/{sha}-{editor}.png", "instruction": "replace",
            "target_json": f'{{"replacement": "{replacement}"}}'}


def test_the_split_takes_each_sources_better_editor_and_its_control():
    flips, controls = [], []
    for i in range(6):
        sha = f"{i:064x}"
        ns_better = i % 2 == 0
        flips += [_flip(sha, "text_region", 0.80 if ns_better else 0.95, f"TEXT {i}"),
                  _flip(sha, "text_region_ns", 0.95 if ns_better else 0.80, f"TEXT {i}")]
        controls += [dict(_flip(sha, name, 0.9, "same"), candidate_id=f"null-{sha}-{name}") for name in EDITORS]
    rows = benchmark_rows({"category": CATEGORY}, flips, controls, 0, {"train": 0.6, "validation": 0.2, "test": 0.2},
                          "x")
    assert len(rows) == 6
    for i, row in enumerate(sorted(rows, key=lambda r: r["image_sha256"])):
        assert row["editor_profile"] == ("text_region_ns" if i % 2 == 0 else "text_region")
        assert row["quality_score"] == 0.95 and row["n_accepted_candidates"] == 2
        assert row["control_candidate_id"] == f"null-{row['image_sha256']}-{row['editor_profile']}"


# --- in the graph: the first editor, then the second --------------------------------------------


@pytest.fixture(scope="module")
def graph(tmp_path_factory):
    data_root = tmp_path_factory.mktemp("second_editor") / "data"
    instance = DagsterInstance.ephemeral()
    run_graph(data_root, CATEGORY, CATEGORY, instance=instance,
              selection=["source_pool", "policy_labels", "edit_instructions", "edited_images", "verified_pairs",
                         "benchmark_split"])
    before = {t: store_at(data_root).query(f"SELECT * FROM {t} ORDER BY candidate_id").to_dicts()
              for t in ("edited_images", "verified_pairs")}
    run_graph(data_root, CATEGORY, CATEGORY, instance=instance, editor_profile="text_region_ns",
              selection=["edited_images", "verified_pairs", "benchmark_split"])
    return data_root, before


def test_the_second_editor_keeps_the_first_editors_rows_and_adds_its_own(graph):
    data_root, before = graph
    store = store_at(data_root)
    for table, old in before.items():
        assert old and {r["editor_profile"] for r in old} == {"text_region"}
        kept = store.query(f"SELECT * FROM {table} WHERE editor_profile = 'text_region' ORDER BY candidate_id").to_dicts()
        assert kept == old, f"{table}: the first editor's rows changed"
        added = store.query(f"SELECT * FROM {table} WHERE editor_profile = 'text_region_ns'").to_dicts()
        assert len(added) == len(old)
        assert not {r["candidate_id"] for r in added} & {r["candidate_id"] for r in old}


def test_the_two_editors_candidates_and_metrics_differ(graph):
    data_root, _ = graph
    pairs = store_at(data_root).query(
        "SELECT a.edited_sha256 AS a_sha, b.edited_sha256 AS b_sha, va.embedding_cosine AS a_cos, "
        "vb.embedding_cosine AS b_cos, va.changed_fraction AS a_frac, vb.changed_fraction AS b_frac "
        "FROM edited_images a JOIN edited_images b USING (category, instruction_id, seed) "
        "JOIN verified_pairs va ON va.candidate_id = a.candidate_id "
        "JOIN verified_pairs vb ON vb.candidate_id = b.candidate_id "
        "WHERE a.editor_profile = 'text_region' AND b.editor_profile = 'text_region_ns'").to_dicts()
    assert pairs
    assert all(p["a_sha"] != p["b_sha"] for p in pairs)
    assert sum(p["a_cos"] != p["b_cos"] for p in pairs) >= 0.8 * len(pairs)
    assert sum(p["a_frac"] != p["b_frac"] for p in pairs) >= 0.8 * len(pairs)


def test_the_split_holds_one_pair_per_source_chosen_across_both_editors(graph):
    data_root, _ = graph
    store = store_at(data_root)
    split = store.query("SELECT * FROM benchmark_split").to_dicts()
    flips = queries.accepted_candidates(store, CATEGORY, "flip")
    sources = {r["image_sha256"] for r in flips}
    assert split and len(split) == len({r["image_sha256"] for r in split}) == len(sources)
    for row in split:
        mine = [c for c in flips if c["image_sha256"] == row["image_sha256"]]
        assert {c["editor_profile"] for c in mine} == set(EDITORS)
        assert row["n_accepted_candidates"] == len(mine)
        # Within the replacement text it was given, the pair is the best candidate over both editors.
        same_text = [c for c in mine if replacement_of(c) == row["replacement"]]
        assert row["quality_score"] == max(c["quality_score"] for c in same_text)


def test_flip_yield_per_editor_counts_each_editor_and_what_the_split_took(graph):
    data_root, _ = graph
    store = store_at(data_root)
    rows = queries.flip_yield_per_editor(store)
    assert [(r["category"], r["editor_profile"]) for r in rows] == [(CATEGORY, name) for name in EDITORS]
    counts = dict(store.query("SELECT editor_profile, count(*) FROM verified_pairs WHERE kind = 'flip' "
                              "GROUP BY ALL").rows())
    chosen = dict(store.query("SELECT editor_profile, count(*) FROM benchmark_split GROUP BY ALL").rows())
    for r in rows:
        assert r["attempts"] == counts[r["editor_profile"]]
        assert r["yield"] == pytest.approx(r["accepted"] / r["attempts"], abs=1e-4)
        assert r["chosen"] == chosen.get(r["editor_profile"], 0)
        assert 0.0 < r["embedding_cosine"] <= 1.0 and r["quality_score"] is not None
    assert sum(r["chosen"] for r in rows) == len(store.query("SELECT * FROM benchmark_split"))
    from sp_assets.demo import _editor_lines  # the demo summary shows the same rows

    shown = _editor_lines(store)
    for r in rows:
        assert any(r["editor_profile"] in line and line.rstrip().endswith(str(r["chosen"])) for line in shown)
