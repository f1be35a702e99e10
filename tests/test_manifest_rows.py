"""Forgiving manifests: a bad row is rejected with its file and line and the other rows go on; files that
are not images are skipped and counted, and images the manifest does not list are counted."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from PIL import Image

from sp_assets.backends.base import SourceOptions
from sp_assets.backends.sources.folder import FolderSource, ManifestError
from sp_assets.core.policy import load_active_policy
from sp_assets.execution.intake import Intake, take_in
from sp_assets.storage import ImageStore
from sp_assets.storage.queries import source_intake_notes
from tests.conftest import run_graph, store_at

POLICY = load_active_policy()
NAMES = [f"img{i}.png" for i in range(10)]


def _png(seed: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (24, 32, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def _images(root: Path, names=NAMES) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(_png(i))
    return root


def _take(root: Path, manifest: Path | None, category: str = "o2_violence") -> Intake:
    options = SourceOptions(policy=POLICY, source_dir=str(root), manifest=str(manifest) if manifest else "")
    items = FolderSource(POLICY).scan(POLICY.category(category), options)
    return take_in(items, ImageStore(root.parent / "data"), {"category": category}, "folder")


def _notes(root: Path, manifest: Path | None, *categories: str) -> dict:
    options = SourceOptions(policy=POLICY, source_dir=str(root), manifest=str(manifest) if manifest else "")
    return FolderSource(POLICY).intake_notes([POLICY.category(c) for c in categories], options)


def _csv(path: Path) -> tuple[str, str]:
    rows = [f"{name},unsafe,O2,sign" for name in NAMES]
    rows[4] = "img4.png,unsafe,O2,a threat, on a sign"  # an unquoted comma: five fields, physical line 6
    path.write_text("path,rating,category,rationale\n" + "\n".join(rows) + "\n")
    return "line 6", "a threat"


def _jsonl(path: Path) -> tuple[str, str]:
    lines = [json.dumps({"path": name, "rating": "unsafe", "category": "O2"}) for name in NAMES[:9]]
    path.write_text("\n".join(lines + ["this is not json"]) + "\n")  # line 10 of 10
    return "line 10", "this is not json"


def _parquet(path: Path) -> tuple[str, str]:
    paths: list[str | None] = list(NAMES)
    paths[3] = None  # no path
    pl.DataFrame({"path": paths, "rating": ["unsafe"] * 10, "category": ["O2"] * 10}).write_parquet(path)
    return "row index 3", "'path': None"


@pytest.mark.parametrize("write, suffix", [(_csv, ".csv"), (_jsonl, ".jsonl"), (_parquet, ".parquet")])
def test_one_bad_row_is_rejected_with_file_and_line_and_the_rest_go_on(tmp_path, write, suffix):
    root = _images(tmp_path / "images")
    manifest = tmp_path / f"manifest{suffix}"
    at, value = write(manifest)
    intake = _take(root, manifest)
    [bad] = intake.rejected
    assert bad["reason"] == "bad_manifest_row"
    assert str(manifest) in bad["detail"] and f": {at} " in bad["detail"] and value in bad["detail"]
    assert len(intake.accepted) == 9
    assert intake.n_in == len(intake.accepted) + len(intake.rejected) == 10


def test_csv_lines_are_physical_lines(tmp_path):
    root = _images(tmp_path / "images", NAMES[:3])
    manifest = tmp_path / "m.csv"
    # A quoted rationale over two lines and a blank line: the bad row is still named by its own line (7).
    manifest.write_text('path,rating,rationale\nimg0.png,unsafe,"two\nlines"\n\nimg1.png,safe,\n'
                        "img2.png,unsafe,fine\nimg9.png,unsafe\n")
    intake = _take(root, manifest)
    assert [r["origin_ref"] for r in intake.accepted] == ["img0.png", "img1.png", "img2.png"]
    [bad] = intake.rejected
    assert "m.csv: line 7 has 2 fields where the header has 3" in bad["detail"]
    assert "'img9.png,unsafe'" in bad["detail"] and "quote values" in bad["detail"]


def test_values_of_the_wrong_type_are_named_and_counted_where_they_belong(tmp_path):
    root = _images(tmp_path / "images", NAMES[:2])
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("\n".join([
        json.dumps({"path": "img0.png", "rating": "unsafe", "category": "O2"}),
        json.dumps({"path": 42, "category": "O2"}),  # category readable: counted under O2 only
        json.dumps({"path": "img1.png", "rating": ["unsafe", "safe"], "category": "O2"}),
        "",
        "[1, 2]",  # category unreadable: counted in every category
        json.dumps({"path": "x" * 300, "rating": 7, "category": "O2"}),
    ]) + "\n")
    o2, o1 = _take(root, manifest), _take(root, manifest, "o1_hate")
    details = {r["origin_ref"]: r["detail"] for r in o2.rejected}
    assert {r["reason"] for r in o2.rejected} == {"bad_manifest_row"}
    assert "line 2 has 'path' = 42 (a number)" in details["m.jsonl line 2"]
    assert "line 3 has 'rating' = ['unsafe', 'safe'] (a list)" in details["img1.png"]
    assert "line 5 is a JSON list, not an object: '[1, 2]'" in details["m.jsonl line 5"]
    long = details["x" * 300]
    assert "line 6 has 'rating' = 7" in long and len(long) < 300  # the long path is not repeated in full
    assert [r["origin_ref"] for r in o2.accepted] == ["img0.png"]
    assert o2.n_in == 5 == len(o2.accepted) + len(o2.rejected)
    assert [r["origin_ref"] for r in o1.rejected] == ["m.jsonl line 5"] and o1.n_in == 1 and not o1.accepted


@pytest.mark.parametrize("suffix, text", [
    (".csv", "file,rating\na.png,unsafe\n"),
    (".jsonl", '{"file": "a.png"}\n{"file": "b.png"}\n'),
    (".jsonl", "path,rating\na.png,unsafe\n"),  # a CSV named .jsonl: no line is a JSON object
    (".csv", ""),
])
def test_a_manifest_that_cannot_be_read_at_all_still_raises(tmp_path, suffix, text):
    root = _images(tmp_path / "images", NAMES[:1])
    manifest = tmp_path / f"m{suffix}"
    manifest.write_text(text)
    with pytest.raises(ManifestError, match=r"m\.(csv|jsonl): (manifest has no 'path' column|no line is a JSON object)"):
        _take(root, manifest)


def test_unreadable_parquet_and_missing_manifest_raise(tmp_path):
    root = _images(tmp_path / "images", NAMES[:1])
    (tmp_path / "m.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(ManifestError, match="could not read the manifest"):
        _take(root, tmp_path / "m.parquet")
    with pytest.raises(ManifestError, match="manifest not found"):
        _take(root, tmp_path / "gone.csv")


NOT_IMAGES = ["manifest.csv", "notes.txt", "README.md", "labels.json", ".DS_Store", "cfg.yaml", ".git/HEAD"]


def _with_other_files(root: Path) -> None:
    for name in NOT_IMAGES[1:]:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text("not an image")


def test_non_image_files_are_skipped_and_counted_not_rejected(tmp_path):
    root = _images(tmp_path / "images", NAMES[:3])
    _with_other_files(root)
    manifest = root / "manifest.csv"  # the manifest sits among the images
    manifest.write_text("path,rating\n" + "".join(f"{n},unsafe\n" for n in NAMES[:2]))
    intake = _take(root, manifest)
    assert [r["origin_ref"] for r in intake.accepted] == NAMES[:2] and not intake.rejected and intake.n_in == 2
    notes = _notes(root, manifest, "o2_violence")
    assert notes["o2_violence"]["skipped_files"] == len(NOT_IMAGES)  # the hidden .git folder counts once
    assert set(notes["o2_violence"]["skipped_examples"]) <= {*NOT_IMAGES[:-1], ".git/"}
    assert notes["o2_violence"]["unlisted_images"] == 1 and notes["o2_violence"]["unlisted_examples"] == ["img2.png"]


def test_without_a_manifest_only_non_image_names_are_skipped(tmp_path):
    root = _images(tmp_path / "images", ["o2_violence/a.png", "O6/b.png", "loose.png"])
    _with_other_files(root)
    (root / "O6" / "notes.txt").write_text("about the weapons folder")
    (root / "photo.bin").write_bytes(b"\x00junk")  # an unknown extension may be an image: checked, rejected
    intake = _take(root, None)
    assert [r["origin_ref"] for r in intake.accepted] == ["loose.png", "o2_violence/a.png"]
    assert [(r["origin_ref"], r["reason"]) for r in intake.rejected] == [("photo.bin", "not_an_image")]
    notes = _notes(root, None, "o2_violence", "o6_weapons_substances")
    assert notes["o2_violence"]["skipped_files"] == len(NOT_IMAGES) - 1  # no manifest.csv here
    assert notes["o6_weapons_substances"]["skipped_files"] == len(NOT_IMAGES)  # and O6/notes.txt
    assert notes["*"]["unlisted_images"] == 0


def test_unlisted_images_are_counted_per_category_folder(tmp_path):
    root = _images(tmp_path / "images", ["o2_violence/a.png", "o2_violence/b.png", "O6/c.png", "d.png"])
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(json.dumps({"path": "./o2_violence/a.png"}) + "\n" + json.dumps({"path": "O6/c.png", "rating": 1}))
    notes = _notes(root, manifest, "o2_violence", "o6_weapons_substances")
    # a.png is named (as ./o2_violence/a.png), c.png by a rejected row: neither is unlisted.
    assert notes["o2_violence"]["unlisted_examples"] == ["d.png", "o2_violence/b.png"]
    assert notes["o6_weapons_substances"]["unlisted_examples"] == ["d.png"]
    assert notes["*"]["unlisted_images"] == 2 and notes["*"]["skipped_files"] == 0


def test_the_asset_reports_bad_rows_skipped_and_unlisted_files(tmp_path):
    root = _images(tmp_path / "images")
    _with_other_files(root)
    manifest = root / "manifest.jsonl"
    _jsonl(manifest)  # names img0..img8 and has a bad line 10: img9.png is on disk but not listed
    data = tmp_path / "data"
    result = run_graph(data, "o2_violence", "o2_violence", selection=["source_pool"], source="folder",
                       source_dir=str(root), manifest=str(manifest))
    meta = {k: v.value for k, v in result.asset_materializations_for_node("source_pool")[0].metadata.items()}
    assert (meta["rows_in"], meta["rows_out"], meta["rows_rejected"]) == (10, 9, 1)
    assert meta["rejection_reasons"] == {"bad_manifest_row": 1}
    assert meta["skipped_files"] == len(NOT_IMAGES)  # manifest.jsonl in the place of manifest.csv
    assert (meta["unlisted_images"], meta["unlisted_examples"]) == (1, "img9.png")
    assert all(c.passed for c in result.get_asset_check_evaluations())
    store = store_at(data)
    [bad] = store.rows("source_rejections", {"category": "o2_violence"})
    assert bad["reason"] == "bad_manifest_row" and "manifest.jsonl: line 10 is not valid JSON" in bad["detail"]
    notes = source_intake_notes(store)
    assert list(notes) == ["o2_violence"]
    assert notes["o2_violence"]["skipped_files"] == meta["skipped_files"]
    assert notes["o2_violence"]["unlisted_examples"] == ["img9.png"]
    assert source_intake_notes(store, result.run_id) == notes and source_intake_notes(store, "another run") == {}
    # ... and the demo runner's summary says so
    from sp_assets.demo import _intake_lines

    told = "\n".join(_intake_lines(store, result.run_id))
    assert f"o2_violence: {len(NOT_IMAGES)} non-image files skipped" in told
    assert "o2_violence: 1 files on disk named by no manifest row, not taken in (e.g. img9.png)" in told
