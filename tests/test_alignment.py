"""Alignment before measuring: an edit without a reported region is registered to its source first, so the
few pixels of drift and zoom a diffusion editor adds are not taken for changes; an edit that cannot be
aligned is rejected as 'misaligned'. Pairs are built from real photographs (skimage.data)."""

from __future__ import annotations

import json
import shutil
import time

import cv2
import numpy as np
import pytest
import yaml
from PIL import Image
from skimage import data

from sp_assets.backends import registry
from sp_assets.core.record_types import EditResult, Verdict
from sp_assets.backends.editors.text_region import TextRegionEditor
from sp_assets.core.alignment import aligned_edit, estimate_alignment
from sp_assets.core.image_metrics import diff_region, psnr_outside, region_mask, ssim_outside
from sp_assets.core.policy import REPO_ROOT
from sp_assets.core.records import verification_row
from sp_assets.core.verification import measure_preservation, misaligned, reasons_for
from sp_assets.defs.resources import PipelineSettings
from sp_assets.storage import Store
from tests.conftest import run_graph, store_at

THRESHOLDS = PipelineSettings(data_root="data").thresholds()
SIDE = 256
BOX = (60, 80, 110, 120)  # x0, y0, x1, y1: the local change, in source pixels
PRESERVATION = {"changed_too_much", "ssim_outside_low", "psnr_outside_low", "misaligned"}


def _photo(name: str, side: int = SIDE) -> np.ndarray:
    return cv2.resize(getattr(data, name)(), (side, side), interpolation=cv2.INTER_AREA)


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    return _photo("astronaut")


def changed(photo: np.ndarray, box=BOX) -> np.ndarray:
    out = photo.copy()
    x0, y0, x1, y1 = box
    out[y0:y1, x0:x1] = 255 - out[y0:y1, x0:x1]
    return out


def moved(image: np.ndarray, dx: float, dy: float, zoom: float = 1.0) -> np.ndarray:
    """``image`` zoomed about its centre and shifted by (dx, dy): content at source point p lands at
    zoom * (p - c) + c + (dx, dy). Reflected borders stand in for what an editor would paint there."""
    h, w = image.shape[:2]
    c = np.array([(w - 1) / 2.0, (h - 1) / 2.0])
    t = c + np.array([dx, dy]) - zoom * c
    m = np.array([[zoom, 0, t[0]], [0, zoom, t[1]]])
    return cv2.warpAffine(image, m, (w, h), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)


def measured(source: np.ndarray, edit: np.ndarray, region_json: str | None = None) -> dict:
    return measure_preservation(Image.fromarray(source), Image.fromarray(edit), region_json, 1.0)


def unaligned(source: np.ndarray, edit: np.ndarray) -> dict:
    """The measures as they were before alignment: the difference map of the edit as it is."""
    mask = diff_region(source, edit).mask
    return {"changed_fraction": float(round(mask.mean(), 6)),
            "ssim_outside": float(round(ssim_outside(source, edit, mask), 6)),
            "psnr_outside": float(round(psnr_outside(source, edit, mask), 4))}


def row(measures: dict) -> dict:
    return {"kind": "flip", "source_rating": "unsafe", "edit_rating": "safe", "embedding_cosine": 1.0, **measures}


def iou(a, b) -> float:
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0])) * max(0, min(a[3], b[3]) - max(a[1], b[1]))
    area = lambda r: (r[2] - r[0]) * (r[3] - r[1])  # noqa: E731
    return ix / (area(a) + area(b) - ix)


def test_drift_fails_without_alignment_and_passes_with_it(photo):
    edit = moved(changed(photo), 3, 0, 1.015)
    before = reasons_for(row({"sizes_match": True, **unaligned(photo, edit)}), THRESHOLDS)
    assert before and set(before) <= PRESERVATION, before  # every edge looked changed
    got = measured(photo, edit)
    assert got["region_source"] == "diff" and got["align_status"] == "warped" and got["align_method"] == "ecc"
    assert got["align_dx"] == pytest.approx(3.0, abs=0.25) and got["align_dy"] == pytest.approx(0.0, abs=0.25)
    assert got["align_shift_px"] == pytest.approx(3.0, abs=0.25)
    assert got["align_scale"] == pytest.approx(1.015, abs=0.002)
    assert abs(got["align_rotation_deg"]) < 0.1 and got["align_correlation"] > 0.9
    assert reasons_for(row(got), THRESHOLDS) == []
    assert got["ssim_outside"] > 0.97 and got["psnr_outside"] > 33


def test_the_region_found_after_alignment_is_the_local_change(photo):
    edit = moved(changed(photo), 3, 0, 1.015)
    back, inside = aligned_edit(photo, edit, estimate_alignment(photo, edit))
    assert inside is not None and 0.9 < inside.mean() < 1.0  # a thin border came from outside the frame
    boxes = diff_region(photo, back).boxes
    best = max(boxes, key=lambda b: iou(b, BOX))
    assert iou(best, BOX) > 0.8, (boxes, BOX)
    assert measured(photo, edit)["changed_fraction"] == pytest.approx(region_mask((SIDE, SIDE), [BOX]).mean(), rel=0.25)


@pytest.mark.parametrize("make", [
    lambda p: changed(p),
    lambda p: p.copy(),
    lambda p: np.clip(cv2.GaussianBlur(changed(p), (0, 0), 0.8) * 1.05 + 6, 0, 255).astype(np.uint8),
], ids=["local-change", "identical", "blurred-relit"])
def test_an_unmoved_edit_is_measured_exactly_as_before(photo, make):
    edit = make(photo)
    got = measured(photo, edit)
    assert got["align_status"] == "identity" and got["align_shift_px"] < 0.1
    assert {k: got[k] for k in ("changed_fraction", "ssim_outside", "psnr_outside")} == unaligned(photo, edit)
    assert not misaligned(got, THRESHOLDS)


def test_a_reported_region_is_never_aligned(photo):
    edit = moved(changed(photo), 3, 0, 1.015)  # even a drifted edit: the editor's own region is trusted
    got = measured(photo, edit, json.dumps([list(BOX)]))
    assert got["region_source"] == "editor" and not any(k.startswith("align_") for k in got)
    mask = region_mask((SIDE, SIDE), [BOX])
    assert got["ssim_outside"] == float(round(ssim_outside(photo, edit, mask), 6))
    assert got["psnr_outside"] == float(round(psnr_outside(photo, edit, mask), 4))


@pytest.mark.parametrize("make", [
    lambda p: _photo("chelsea"),
    lambda p: _photo("coffee"),
    lambda p: moved(changed(p), SIDE // 4, 0),
], ids=["unrelated-cat", "unrelated-coffee", "shifted-25pct"])
def test_an_edit_that_cannot_be_aligned_is_rejected_as_misaligned(photo, make):
    got = measured(photo, make(photo))
    assert misaligned(got, THRESHOLDS), got
    assert "misaligned" in reasons_for(row(got), THRESHOLDS)


def test_a_quarter_frame_shift_is_found_and_refused(photo):
    got = measured(photo, moved(changed(photo), SIDE // 4, 0))
    assert got["align_status"] == "warped"
    assert got["align_dx"] == pytest.approx(SIDE / 4, abs=1.0)
    assert got["align_shift_px"] > THRESHOLDS["max_align_shift_px"]


@pytest.mark.parametrize("change, bad", [
    ({}, False),
    ({"align_status": "failed", "align_dx": None}, True),
    ({"align_shift_px": 30.0}, True),
    ({"align_scale": 0.94}, True),
    ({"align_scale": 1.06}, True),
    ({"align_rotation_deg": -2.5}, True),
    ({"align_correlation": 0.5}, True),
    ({"align_status": None}, False),  # the editor reported its region: not aligned, never misaligned
    ({"align_method": "none", "align_correlation": None}, False),  # too flat to register: measured as is
])
def test_each_alignment_limit_is_a_reason(change, bad):
    r = {"align_status": "warped", "align_method": "ecc", "align_shift_px": 3.0, "align_scale": 1.015,
         "align_rotation_deg": 0.1, "align_correlation": 0.95, **change}
    assert misaligned(r, THRESHOLDS) is bad


def test_the_limits_are_settings_recorded_with_every_verdict(photo):
    settings = PipelineSettings(data_root="data", max_align_shift_px=2.0)
    got = measured(photo, moved(changed(photo), 3, 0, 1.015))
    assert "misaligned" in reasons_for(row(got), settings.thresholds())
    candidate = {"candidate_id": "c1", "kind": "flip", "image_sha256": "a" * 64, "edited_sha256": "b" * 64,
                 "editor_profile": "qwen_image_edit", "source_rating": "unsafe", "source_score": 0.9, "status": "ok"}
    verdict = Verdict("safe", "", 0.1, "no violation", "{}")
    for limits, accepted in ((THRESHOLDS, True), (settings.thresholds(), False)):
        out = verification_row({"category": "o2_violence"}, candidate, {}, limits, verdict, got)
        assert out["accepted"] is accepted and out["align_shift_px"] == got["align_shift_px"]
        assert json.loads(out["thresholds_json"])["max_align_shift_px"] == limits["max_align_shift_px"]
        assert out["reject_reason"] == (None if accepted else "misaligned")


def test_alignment_is_cheap(photo):
    big = _photo("astronaut", 512)
    edit = moved(changed(big, (120, 160, 220, 240)), 3, -2, 1.015)
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        estimate_alignment(big, edit)  # warm-up
        t0 = time.perf_counter()
        for _ in range(5):
            estimate_alignment(big, edit)
        per = (time.perf_counter() - t0) / 5
        t0 = time.perf_counter()
        measured(big, edit)
        whole = time.perf_counter() - t0
    finally:
        cv2.setNumThreads(threads)
    print(f"\nalignment of a 512x512 edit on 1 core: {per * 1000:.1f} ms (measure_preservation: {whole * 1000:.0f} ms)")


def test_an_old_database_gains_the_alignment_columns(tmp_path):
    path = tmp_path / "old.duckdb"
    import duckdb

    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE verified_pairs (candidate_id VARCHAR, category VARCHAR, region_source VARCHAR)")
    con.execute("INSERT INTO verified_pairs VALUES ('c1', 'o2_violence', 'editor')")
    con.close()
    store = Store.at(path)
    rows = store.query("SELECT candidate_id, align_status, align_shift_px FROM verified_pairs").rows()
    assert rows == [("c1", None, None)]


class DriftingEditor(TextRegionEditor):
    """The text-region editor as a diffusion editor looks to the verifier: its output shifted 3 px and
    zoomed 1.5%, and no region reported."""

    def edit(self, images, instructions, seeds):
        return [EditResult(image=Image.fromarray(moved(np.asarray(r.image.convert("RGB")), 3, 0, 1.015)),
                           raw_size=r.raw_size, region=None, detail=r.detail)
                for r in super().edit(images, instructions, seeds)]


@pytest.fixture
def drifting(tmp_path, monkeypatch):
    folder = tmp_path / "profiles"
    shutil.copytree(REPO_ROOT / "resources", folder)
    editors = yaml.safe_load((folder / "editors.yaml").read_text())
    editors["drifting"] = {"implementation": "drifting", "params": editors["text_region"]["params"]}
    (folder / "editors.yaml").write_text(yaml.safe_dump(editors))
    monkeypatch.setenv("SP_PROFILES_DIR", str(folder))
    factory = registry.Factory("tests.test_alignment:DriftingEditor")
    monkeypatch.setitem(registry.FACTORIES["editor"], "drifting", factory)
    monkeypatch.setitem(registry.CODE_VERSIONS, "drifting", "1")
    return "drifting"


def test_the_stage_aligns_a_drifting_editor(tmp_path, drifting):
    data_root = tmp_path / "data"
    stages = ["source_pool", "policy_labels", "edit_instructions", "edited_images", "verified_pairs"]
    result = run_graph(data_root, "o2_violence", "o2_violence", selection=stages, editor_profile="text_region",
                       editor_also=[drifting], instruction_variants=1)
    rows = store_at(data_root).query(
        "SELECT editor_profile, candidate_id, region_source, align_status, align_dx, align_scale, accepted, "
        "reject_reason FROM verified_pairs ORDER BY candidate_id").to_dicts()
    drifted = [r for r in rows if r["editor_profile"] == "drifting"]
    exact = [r for r in rows if r["editor_profile"] == "text_region"]
    assert drifted and len(drifted) == len(exact)
    assert all(r["region_source"] == "editor" and r["align_status"] is None for r in exact)
    assert all(r["region_source"] == "diff" and r["align_status"] == "warped" for r in drifted)
    assert all(abs(r["align_dx"] - 3.0) < 0.5 and abs(r["align_scale"] - 1.015) < 0.004 for r in drifted)
    for r in drifted:  # the drift is not taken for a change: no preservation test fails
        assert not PRESERVATION & set((r["reject_reason"] or "").split(";")), r
    assert any(r["accepted"] for r in drifted)
    meta = result.asset_materializations_for_node("verified_pairs")[0].metadata
    assert "warped onto their source" in meta["alignment"].text
