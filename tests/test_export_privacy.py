"""What the published benchmark does not say about people: image metadata, reviewers, and markup from policies.

Each test exports a one-pair database built here (no graph run): a source photo with GPS, camera, a
comment and an ICC profile, stored as an older version of the pipeline would have kept it, and a clean edit.
"""

from __future__ import annotations

import importlib.machinery
import io
import json
import shutil
import stat
import sys
import tarfile
import types
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest
import yaml
from PIL import Image, ImageCms

from sp_assets.core.encoding import png_bytes
from sp_assets.core.policy import parse_policy
from sp_assets.defs.partitions import ACTIVE_POLICY
from sp_assets.release import ExportError, export_benchmark
from sp_assets.release.markdown import md_code, md_text
from sp_assets.release.publishable import publishable_bytes
from sp_assets.release.reviewers import KEY_FILE, PREFIX, pseudonym
from sp_assets.release.shards import StoredImages
from sp_assets.storage import ImageStore, Store

CATEGORY = "o1_hate"
PROFILES = {"judge_profile": "scene_text", "writer_profile": "template", "editor_profile": "text_region"}
REVIEWER, NOTE = "Alice Example", "I know the woman in this photo"
EVIL = "x | <script>alert(1)</script> [link](http://e)"


def _dirty_jpeg() -> bytes:
    """A phone photo: GPS position, camera make and model, a comment and an ICC profile."""
    exif = Image.Exif()
    exif[0x010F], exif[0x0110] = "PhoneMaker", "Model X"
    gps = exif.get_ifd(0x8825)
    gps[1], gps[2] = "N", (52.0, 31.0, 0.0)
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    buf = io.BytesIO()
    Image.new("RGB", (16, 12), (200, 30, 40)).save(buf, "JPEG", exif=exif, comment=b"home address", icc_profile=icc)
    return buf.getvalue()


def _clean_png() -> bytes:
    return png_bytes(Image.new("RGB", (16, 12), (30, 200, 40)))


def _assert_no_metadata(data: bytes) -> None:
    with Image.open(io.BytesIO(data)) as im:
        assert len(im.getexif()) == 0, dict(im.getexif())
        assert "comment" not in im.info and "icc_profile" not in im.info and "exif" not in im.info, im.info
        assert not getattr(im, "text", {}), im.text


def _set(con: duckdb.DuckDBPyConnection, table: str, values: dict) -> None:
    columns = ", ".join(values)
    con.execute(f"INSERT INTO {table} ({columns}) VALUES ({', '.join('?' for _ in values)})", list(values.values()))


def _database(root: Path, source: bytes, edit: bytes) -> Store:
    """One reviewed pair of CATEGORY, its lineage complete; intake recorded what it removed from the source."""
    images = ImageStore(root)
    src_sha, src_rel = images.put_bytes(source, ".jpg")
    edit_sha, edit_rel = images.put_bytes(edit, ".png")
    store = Store.at(root / "safetypairs.duckdb")
    store.init()
    con = duckdb.connect(str(root / "safetypairs.duckdb"))
    key = {"category": CATEGORY, "image_sha256": src_sha}
    _set(con, "source_images", {**key, "image_path": src_rel, "origin": "folder", "origin_ref": "me/IMG_1.jpg",
                                "metadata_removed": "exif,gps,camera"})
    _set(con, "policy_labels", {**key, "judge_profile": PROFILES["judge_profile"], "rating": "unsafe"})
    candidate = {"category": CATEGORY, "candidate_id": "c1", **PROFILES}
    _set(con, "edit_instructions", {"category": CATEGORY, "instruction_id": "i1", "image_sha256": src_sha,
                                    "judge_profile": PROFILES["judge_profile"],
                                    "writer_profile": PROFILES["writer_profile"], "instruction": "replace the sign"})
    _set(con, "edited_images", {**candidate, "image_sha256": src_sha, "instruction_id": "i1", "edited_path": edit_rel})
    _set(con, "verified_pairs", {**candidate, "image_sha256": src_sha, "accepted": True, "review_verdict": "accept",
                                 "reviewer": REVIEWER, "review_note": NOTE})
    _set(con, "benchmark_split", {**candidate, "pair_id": "p1", "split": "test", "image_sha256": src_sha,
                                  "unsafe_path": src_rel, "safe_sha256": edit_sha, "safe_path": edit_rel,
                                  "photo_id": "photo1"})
    con.close()
    return Store.at(root / "safetypairs.duckdb", read_only=True)


@pytest.fixture
def data_root(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    root.mkdir()
    _database(root, _dirty_jpeg(), _clean_png())
    return root


def _export(data_root: Path, out: str, policy=ACTIVE_POLICY, **options):
    """Export to ``<data_root>/<out>``, as the pipeline exports to ``<data_root>/export``."""
    store = Store.at(data_root / "safetypairs.duckdb", read_only=True)
    return export_benchmark(store, ImageStore(data_root), data_root / out, policy=policy, 
                            thresholds={}, **{"fiftyone": False, **options})


def _published(report) -> dict[str, list[bytes]]:
    """Every image the export wrote, by where it went."""
    out: dict[str, list[bytes]] = {"parquet": [], "webdataset": [], "gallery": []}
    for files in report.parquet_files.values():
        table = pq.read_table(files[0]).to_pylist()
        out["parquet"] += [row[c]["bytes"] for row in table for c in ("unsafe_image", "safe_image")]
    for tars in report.webdataset_files.values():
        with tarfile.open(tars[0]) as tar:
            out["webdataset"] += [tar.extractfile(m).read() for m in tar.getmembers() if m.name.endswith(".png")
                                  or m.name.endswith(".jpg")]
    out["gallery"] = [p.read_bytes() for p in sorted((report.gallery.parent / "images").iterdir())]
    return out


def test_publishable_bytes_keeps_clean_files_and_cleans_the_rest():
    clean = _clean_png()
    assert publishable_bytes(clean) is clean
    _assert_no_metadata(publishable_bytes(_dirty_jpeg()))


def test_the_export_publishes_no_image_metadata_and_clean_files_unchanged(data_root, tmp_path):
    report = _export(data_root, "out")
    again = _export(data_root, "again")
    for rel in ("data/test-00000-of-00001.parquet", "webdataset/test-000000.tar", "README.md"):
        assert (data_root / "out" / rel).read_bytes() == (data_root / "again" / rel).read_bytes(), rel
    assert again.n_cleaned_at_export == 1
    edit = _clean_png()
    for where, blobs in _published(report).items():
        assert len(blobs) == 2, where
        for data in blobs:
            _assert_no_metadata(data)
        assert edit in blobs, f"{where}: the clean edit is not published byte for byte"
    manifest = json.loads((data_root / "out" / "export_manifest.json").read_text())
    cleaned = manifest["cleaned_at_export"]
    assert cleaned["n_images"] == 1 == report.n_cleaned_at_export
    assert {"gps", "camera", "comment", "icc_to_srgb"} <= set(cleaned["removed"])
    card = report.datasheet.read_text(encoding="utf-8")
    section = card.split("## Personal data and metadata")[1].split("\n## ")[0]
    assert "**Cleaned at export:** 1 stored images" in section
    assert "| GPS position (`gps`) | 1 |" in section  # intake's record, over the exported sources
    assert "`source_file`" in section  # the sources came from a folder: their file names are published


def test_an_animated_stored_file_stops_the_export_with_the_file_named(tmp_path):
    frames = [Image.new("RGB", (8, 8), c) for c in ((255, 0, 0), (0, 255, 0))]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:])
    images = ImageStore(tmp_path)
    sha, rel = images.put_bytes(buf.getvalue(), ".gif")
    pair = {"pair_id": "p1", "category": CATEGORY, "unsafe_path": rel, "source_sha256": sha}
    with pytest.raises(ExportError, match=rf"{rel}.*2 frames.*source_pool"):
        StoredImages(images).read(pair, "unsafe")


def _fake_fiftyone(copied: list[bytes]) -> types.ModuleType:
    """A stand-in ``fiftyone`` whose export copies each sample's file, as ``export_media=True`` does."""
    class Dataset:
        def __init__(self, name):
            self.samples = []

        def add_group_field(self, field, default):
            pass

        def add_samples(self, samples):
            self.samples += samples

        def export(self, export_dir, dataset_type, export_media):
            Path(export_dir).mkdir(parents=True)
            copied.extend(Path(s["filepath"]).read_bytes() for s in self.samples)

        def delete(self):
            pass

    class Sample(dict):
        def __init__(self, filepath, group, tags):
            super().__init__(filepath=filepath)

    fake = types.ModuleType("fiftyone")
    fake.__spec__ = importlib.machinery.ModuleSpec("fiftyone", None)
    fake.Dataset, fake.Sample = Dataset, Sample
    fake.Group = type("Group", (), {"element": lambda self, name: name})
    fake.Classification = lambda label: label
    fake.types = types.SimpleNamespace(FiftyOneDataset="FiftyOneDataset")
    return fake


def test_fiftyone_gets_clean_copies_and_the_export_keeps_none_of_them(data_root, tmp_path, monkeypatch):
    copied: list[bytes] = []
    monkeypatch.setitem(sys.modules, "fiftyone", _fake_fiftyone(copied))
    report = _export(data_root, "out", webdataset=False, gallery=False, fiftyone=True)
    assert report.fiftyone_dir is not None and len(copied) == 2
    for data in copied:
        _assert_no_metadata(data)
    assert _clean_png() in copied
    assert not list((data_root / "out").rglob(".fiftyone-media"))


def _all_bytes(folder: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file())


def _reviewers(report) -> tuple[list[str], list[str]]:
    """(the reviewer column, the column names) of the exported Parquet."""
    table = pq.read_table(report.parquet_files["test"][0])
    return table.column("reviewer").to_pylist(), table.column_names


def test_reviewers_are_pseudonyms_and_notes_are_left_out_by_default(data_root, tmp_path):
    first, second = _export(data_root, "a"), _export(data_root, "b", shard_size=7)
    (alias,), columns = _reviewers(first)
    assert alias.startswith(PREFIX) and len(alias) == len(PREFIX) + 10 and "review_note" not in columns
    assert _reviewers(second)[0] == [alias]  # stable across exports of one data root
    key = (data_root / KEY_FILE).read_bytes()
    assert alias == pseudonym(REVIEWER, bytes.fromhex(key.decode().strip()))
    assert alias != pseudonym(REVIEWER, b"\0" * 32)  # keyed: not a hash anyone can recompute from the name
    assert stat.S_IMODE((data_root / KEY_FILE).stat().st_mode) == 0o600
    for out in (data_root / "a", data_root / "b"):
        published = _all_bytes(out)
        assert REVIEWER.encode() not in published and NOTE.encode() not in published and key.strip() not in published
    assert "Free-text review notes are not published" in first.datasheet.read_text(encoding="utf-8")


def test_names_and_notes_are_published_when_asked(data_root, tmp_path):
    report = _export(data_root, "named", reviewer_names=True, review_notes=True)
    names, columns = _reviewers(report)
    assert names == [REVIEWER] and "review_note" in columns
    with tarfile.open(report.webdataset_files["test"][0]) as tar:
        meta = json.loads(tar.extractfile("p1.json").read())
    assert (meta["reviewer"], meta["review_note"]) == (REVIEWER, NOTE)
    card = report.datasheet.read_text(encoding="utf-8")
    assert "the publisher chose to publish them" in card and "review notes (`review_note`) are published" in card
    assert not (data_root / KEY_FILE).exists()  # no pseudonyms to make: no key


def test_a_key_dir_inside_the_export_is_refused(data_root, tmp_path):
    with pytest.raises(ValueError, match="inside the export"):
        _export(data_root, "out", key_dir=data_root / "out" / "keys")


def _evil_policy(tmp_path: Path):
    text = yaml.safe_dump({"name": EVIL, "version": "1\n---\nlicense: mit", "categories": [{
        "id": "O1 <b>|", "slug": CATEGORY, "title": "Hate | <img src=x onerror=alert(1)>\n| injected | row |",
        "forbids": ["a"], "allows": ["b"], "edit_guidance": "c"}]})
    return parse_policy(text, tmp_path / "evil <i>x</i> [a](http:e).yaml")


def test_policy_text_cannot_inject_markup_into_the_card(data_root, tmp_path):
    markdown_it = pytest.importorskip("markdown_it")
    report = _export(data_root, "out", policy=_evil_policy(tmp_path))
    card = report.datasheet.read_text(encoding="utf-8")
    front = yaml.safe_load(card.split("---\n")[1])
    assert front["pretty_name"] == f"SafetyPairs: {report.name}" and front["license"] == "other"
    html = markdown_it.MarkdownIt("commonmark").enable("table").render(card.split("---\n", 2)[2])
    for raw in ("<script", "<img", "<b>", "<i>", "<a href"):
        assert raw not in html, raw
    row = next(line for line in card.splitlines() if line.startswith(f"| {CATEGORY} |"))
    header = next(line for line in card.splitlines() if line.startswith("| category | id | title |"))
    assert _cells(row) == _cells(header)  # the title's pipes and line break stayed inside its cell
    assert not [line for line in card.splitlines() if line.startswith("| injected")]


def _cells(line: str) -> int:
    """Cells of a GFM table row: pipes not escaped by a backslash, less the outer two."""
    return sum(1 for i, ch in enumerate(line) if ch == "|" and (i == 0 or line[i - 1] != "\\")) - 1


@pytest.mark.parametrize("value, expected", [
    ("o1_hate", "o1_hate"),
    ("a | b\nc", "a \\| b c"),
    ("<b>x</b>", "\\<b\\>x\\</b\\>"),
    ("[l](http://e) www.e.org", "\\[l\\](http\\://e) www\\.e.org"),
    ("_x_ *y* `z`", "\\_x\\_ \\*y\\* \\`z\\`"),
    ("# title", "\\# title"),
])
def test_md_text_escapes_what_markdown_would_read_as_markup(value, expected):
    assert md_text(value) == expected


def test_md_code_fences_backticks_and_escapes_pipes_in_tables():
    assert md_code("a`b") == "``a`b``" and md_code("`x") == "`` `x ``"
    assert md_code("a|b", in_table=True) == "`a\\|b`" and md_code("a\nb") == "`a b`"


def test_a_copy_of_the_data_root_keeps_its_pseudonyms_and_another_data_root_does_not(data_root, tmp_path):
    alias = _reviewers(_export(data_root, "a"))[0]
    copy, other = tmp_path / "copy", tmp_path / "other"
    shutil.copytree(data_root, copy)
    assert _reviewers(_export(copy, "b"))[0] == alias
    other.mkdir()
    _database(other, _dirty_jpeg(), _clean_png())
    assert _reviewers(_export(other, "b"))[0] != alias
