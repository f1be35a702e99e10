"""Photographs as people have them (sideways phone JPEGs, GPS tags, animations) and files that are hostile
by accident: each is taken in upright and clean, or refused with its own reason; no file stops the step."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageCms

from sp_assets.backends.base import SourceOptions
from sp_assets.backends.sources import folder as folder_module
from sp_assets.backends.sources.folder import FolderSource
from sp_assets.core.hashing import sha256_bytes
from sp_assets.core.image_clean import clean_image, container_is_clean
from sp_assets.core.policy import load_active_policy
from sp_assets.execution.intake import Intake, take_in
from sp_assets.backends.base import SourceItem
from sp_assets.storage import ImageStore

POLICY = load_active_policy()
GPS_IFD, MAKE, SERIAL, ORIENTATION = 0x8825, 0x010F, 0xA431, 0x0112


def _photo(width: int = 48, height: int = 32) -> Image.Image:
    """A picture whose orientation can be told apart: red on the left, blue on the right, a noisy middle."""
    rng = np.random.default_rng(0)
    pixels = rng.integers(80, 160, (height, width, 3), dtype=np.uint8)
    pixels[:, : width // 4] = (220, 20, 20)
    pixels[:, -width // 4:] = (20, 20, 220)
    return Image.fromarray(pixels)


def _phone_jpeg(upright: Image.Image, orientation: int = 6, gps: bool = True, icc: bool = True) -> bytes:
    """What a phone writes for a picture taken upright: pixels stored sideways, EXIF saying how to turn them,
    GPS, the camera's make and serial, a comment and an ICC profile."""
    stored = upright.transpose(Image.Transpose.ROTATE_90) if orientation == 6 else upright
    exif = Image.Exif()
    exif[ORIENTATION] = orientation
    exif[MAKE] = "PhoneMaker"
    exif[SERIAL] = "SN-0042"
    if gps:
        exif.get_ifd(GPS_IFD)[2] = (52.0, 31.0, 12.0)
    extra = {"icc_profile": ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()} if icc else {}
    buf = io.BytesIO()
    stored.save(buf, "JPEG", quality=95, exif=exif, comment=b"taken at home", **extra)
    return buf.getvalue()


def _png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return buf.getvalue()


def _take(root: Path, manifest: Path | None = None, category: str = "o2_violence", **limits) -> Intake:
    options = SourceOptions(policy=POLICY, source_dir=str(root), manifest=str(manifest) if manifest else "", **limits)
    items = FolderSource(POLICY).scan(POLICY.category(category), options)
    return take_in(items, ImageStore(root.parent / "data"), {"category": category}, "folder")


def _reasons(intake: Intake) -> dict[str, str]:
    return {r["origin_ref"]: r["reason"] for r in intake.rejected}


def _assert_counts(intake: Intake, n_in: int) -> None:
    assert intake.n_in == n_in == len(intake.accepted) + len(intake.rejected)


def _stored(root: Path, row: dict) -> bytes:
    return ImageStore(root.parent / "data").read_bytes(row["image_path"])


# --- orientation, metadata, frames ---------------------------------------------------------------------

def test_portrait_phone_photo_is_stored_upright_with_its_displayed_size(tmp_path):
    root = tmp_path / "images"
    root.mkdir()
    upright = _photo(48, 32)
    (root / "portrait.jpg").write_bytes(_phone_jpeg(upright))
    intake = _take(root)
    [row] = intake.accepted
    assert (row["width"], row["height"]) == (48, 32)  # as displayed, not the stored 32x48
    with Image.open(io.BytesIO(_stored(root, row))) as im:
        assert im.size == (48, 32)
        left, right = np.asarray(im.convert("RGB"))[16, 2], np.asarray(im.convert("RGB"))[16, -3]
    assert left[0] > 150 > left[2] and right[2] > 150 > right[0]  # red still on the left: turned the right way
    # Every reader of the store sees that same size (the blocking size check compares against it).
    assert ImageStore(tmp_path / "data").open(row["image_path"]).size == (48, 32)


def test_private_metadata_is_removed_and_said(tmp_path):
    root = tmp_path / "images"
    root.mkdir()
    original = _phone_jpeg(_photo(), orientation=1)
    (root / "gps.jpg").write_bytes(original)
    [row] = _take(root).accepted
    data = _stored(root, row)
    with Image.open(io.BytesIO(data)) as im:
        assert not im.getexif() and "comment" not in im.info and "icc_profile" not in im.info
        assert not getattr(im, "text", {})
    assert container_is_clean(data)
    assert row["original_sha256"] == sha256_bytes(original) != row["image_sha256"]
    assert row["original_format"] == "JPEG" and row["format"] == "PNG"
    assert row["metadata_removed"].split(",") == ["exif", "gps", "camera", "icc_to_srgb", "comment"]


def test_a_clean_file_is_kept_byte_for_byte(tmp_path):
    root = tmp_path / "images"
    root.mkdir()
    plain = _png(_photo())
    (root / "plain.png").write_bytes(plain)
    [row] = _take(root).accepted
    assert _stored(root, row) == plain and row["original_sha256"] == row["image_sha256"]
    assert row["metadata_removed"] == ""


def test_icc_profile_is_converted_to_srgb_not_dropped():
    profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 100, 50)).save(buf, "PNG", icc_profile=profile.tobytes(),
                                                  pnginfo=_text_chunk("Author", "someone"))
    clean = clean_image(buf.getvalue())
    assert "icc_to_srgb" in clean.removed and "text" in clean.removed
    with Image.open(io.BytesIO(clean.data)) as out:
        assert "icc_profile" not in out.info and not out.text
        # sRGB -> sRGB keeps the colour (within rounding): converted, not replaced by something else.
        assert np.abs(np.asarray(out, dtype=int)[0, 0] - (200, 100, 50)).max() <= 2


def test_an_unreadable_icc_profile_is_dropped_and_said():
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (10, 20, 30)).save(buf, "PNG", icc_profile=b"not a profile at all")
    clean = clean_image(buf.getvalue())
    assert "icc_unreadable" in clean.removed and "icc_to_srgb" not in clean.removed


def _text_chunk(key: str, value: str):
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text(key, value)
    return info


@pytest.mark.parametrize("fmt,reason", [("GIF", "animated"), ("PNG", "animated"), ("WEBP", "animated"),
                                        ("TIFF", "multi_page")])
def test_animated_and_multi_page_files_are_refused_with_their_own_reason(tmp_path, fmt, reason):
    root = tmp_path / "images"
    root.mkdir()
    frames = [Image.new("RGB", (16, 16), c) for c in ((255, 0, 0), (0, 0, 255))]
    buf = io.BytesIO()
    frames[0].save(buf, fmt, save_all=True, append_images=frames[1:])
    (root / f"moving.{fmt.lower()}").write_bytes(buf.getvalue())
    (root / "still.png").write_bytes(_png(_photo()))
    intake = _take(root)
    assert _reasons(intake) == {f"moving.{fmt.lower()}": reason}
    assert "2 frames" in intake.rejected[0]["detail"] and "PNG or JPEG" in intake.rejected[0]["detail"]
    _assert_counts(intake, 2)


def test_a_multi_picture_jpeg_keeps_its_primary_picture():
    first, second = Image.new("RGB", (20, 10), (200, 0, 0)), Image.new("RGB", (20, 10), (0, 0, 200))
    buf = io.BytesIO()
    first.save(buf, "MPO", save_all=True, append_images=[second])
    clean = clean_image(buf.getvalue())
    assert "extra_frames" in clean.removed and (clean.width, clean.height) == (20, 10)
    with Image.open(io.BytesIO(clean.data)) as out:
        assert getattr(out, "n_frames", 1) == 1 and out.getpixel((5, 5))[0] > 150


def test_another_sources_unclean_bytes_are_cleaned_at_intake(tmp_path):
    """Intake cleans whatever a source hands over, not only what the folder source checked."""
    data = _phone_jpeg(_photo(48, 32))
    item = SourceItem(ref="plugin-item", data=data, suffix=".jpg", width=32, height=48, format="JPEG")
    [row] = take_in([item], ImageStore(tmp_path / "data"), {"category": "c"}, "plugin").accepted
    assert (row["width"], row["height"]) == (48, 32) and "gps" in row["metadata_removed"]
    assert container_is_clean((tmp_path / "data" / row["image_path"]).read_bytes())


def test_two_files_of_the_same_picture_are_one_image(tmp_path):
    root = tmp_path / "images"
    root.mkdir()
    picture = _photo()
    (root / "a.jpg").write_bytes(_phone_jpeg(picture, orientation=1, icc=False))
    exif_other = _phone_jpeg(picture, orientation=1, icc=False).replace(b"SN-0042", b"SN-0043")
    (root / "b.jpg").write_bytes(exif_other)
    intake = _take(root)
    assert len(intake.accepted) == 1 and _reasons(intake) == {"b.jpg": "duplicate"}


# --- files that used to stop the step -------------------------------------------------------------------

def test_a_symlink_loop_is_refused(tmp_path):
    root = tmp_path / "images"
    root.mkdir()
    os.symlink("loop.png", root / "loop.png")
    (root / "ok.png").write_bytes(_png(_photo()))
    intake = _take(root)
    assert _reasons(intake) == {"loop.png": "symlink_loop"}
    assert "link" in intake.rejected[0]["detail"]
    _assert_counts(intake, 2)


def test_a_fifo_gets_its_own_reason_and_never_blocks(tmp_path):
    root = tmp_path / "images"
    root.mkdir()
    os.mkfifo(root / "pipe.png")  # no writer: a blocking open would hang the step forever
    (root / "ok.png").write_bytes(_png(_photo()))
    intake = _take(root)
    assert _reasons(intake) == {"pipe.png": "not_a_file"}
    assert "FIFO" in intake.rejected[0]["detail"]
    _assert_counts(intake, 2)


def test_a_file_the_process_cannot_read_is_refused(tmp_path, monkeypatch):
    root = tmp_path / "images"
    root.mkdir()
    (root / "secret.png").write_bytes(_png(_photo()))
    (root / "ok.png").write_bytes(_png(_photo(40, 30)))
    real_open = os.open

    def deny(path, flags, *args, **kwargs):  # tests run as root, for whom chmod 000 changes nothing
        if str(path).endswith("secret.png"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(folder_module.os, "open", deny)
    intake = _take(root)
    assert _reasons(intake) == {"secret.png": "unreadable"}
    assert "chmod" in intake.rejected[0]["detail"]


def test_a_file_name_that_is_not_utf8_is_refused_and_storable(tmp_path):
    root = tmp_path / "images"
    root.mkdir()
    fd = os.open(os.path.join(os.fsencode(root), b"caf\xe9.png"), os.O_WRONLY | os.O_CREAT, 0o644)
    os.write(fd, _png(_photo()))
    os.close(fd)
    intake = _take(root)
    [row] = intake.rejected
    assert row["reason"] == "bad_file_name" and row["origin_ref"] == "caf\\xe9.png"
    row["origin_ref"].encode("utf-8")  # what is stored and shown is valid text
    assert "UTF-8" in row["detail"]


def test_a_file_that_changes_while_it_is_read_is_refused(tmp_path, monkeypatch):
    root = tmp_path / "images"
    root.mkdir()
    target = root / "growing.png"
    target.write_bytes(_png(_photo()))
    real_fstat, calls = os.fstat, []

    def fstat_while_written(fd):
        calls.append(fd)
        if len(calls) == 2:  # after the read: another process appended to the file
            with target.open("ab") as fh:
                fh.write(b"\0" * 1000)
        return real_fstat(fd)

    monkeypatch.setattr(folder_module.os, "fstat", fstat_while_written)
    intake = _take(root)
    assert _reasons(intake) == {"growing.png": "changed_while_read"}


def test_the_bytes_checked_are_the_bytes_stored(tmp_path, monkeypatch):
    """Decoding reads the buffer that was read, never the path again: a file swapped after the read (here a
    much larger picture) cannot be what is decoded or stored."""
    root = tmp_path / "images"
    root.mkdir()
    target = root / "swap.png"
    small = _png(_photo(16, 12))
    target.write_bytes(small)
    real_open = Image.open

    def open_and_swap(fp, *args, **kwargs):
        target.write_bytes(_png(_photo(400, 300)))
        return real_open(fp, *args, **kwargs)

    monkeypatch.setattr(folder_module.Image, "open", open_and_swap)
    [row] = _take(root).accepted
    assert (row["width"], row["height"]) == (16, 12) and _stored(root, row) == small


def test_a_truncated_file_is_refused_not_stored(tmp_path):
    root = tmp_path / "images"
    root.mkdir()
    (root / "cut.jpg").write_bytes(_phone_jpeg(_photo(64, 64))[:-400])
    intake = _take(root)
    assert _reasons(intake) == {"cut.jpg": "truncated"}


# --- manifest rows that used to stop the step -----------------------------------------------------------

def _jsonl_manifest(tmp_path: Path, lines: list[str]) -> tuple[Path, Path]:
    root = tmp_path / "images"
    root.mkdir()
    (root / "ok.png").write_bytes(_png(_photo()))
    manifest = tmp_path / "manifest.jsonl"
    manifest.write_text("\n".join(lines + [json.dumps({"path": "ok.png", "category": "O2"})]) + "\n")
    return root, manifest


@pytest.mark.parametrize("line,words", [
    ('{"path": "a.png", "x": ' + "[" * 100_000 + "]" * 100_000 + "}", "nests too deeply"),
    ('{"path": "a.png", "x": ' + "9" * 5000 + "}", "cannot be read"),
    (json.dumps({"path": "a\u0000.png", "category": "O2"}), "NUL"),
])
def test_a_hostile_jsonl_row_is_refused_and_the_rest_go_on(tmp_path, line, words):
    root, manifest = _jsonl_manifest(tmp_path, [line])
    intake = _take(root, manifest)
    assert [r["origin_ref"] for r in intake.accepted] == ["ok.png"]
    [bad] = intake.rejected
    assert bad["reason"] == "bad_manifest_row" and "line 1" in bad["detail"] and words in bad["detail"]
    bad["origin_ref"].encode("utf-8")
    assert "\x00" not in bad["origin_ref"] + bad["detail"]


def test_a_manifest_path_too_long_for_the_file_system_is_refused(tmp_path):
    root, manifest = _jsonl_manifest(tmp_path, [json.dumps({"path": "x" * 300 + ".png", "category": "O2"})])
    intake = _take(root, manifest)
    assert sorted(_reasons(intake).values()) == ["bad_path"]
    assert "too long" in intake.rejected[0]["detail"]
    _assert_counts(intake, 2)


def test_a_csv_field_over_128_kb_refuses_its_row_not_the_manifest(tmp_path):
    root = tmp_path / "images"
    root.mkdir()
    for name in ("a.png", "b.png"):
        (root / name).write_bytes(_png(_photo(20 + len(name), 20)))
    (root / "b.png").write_bytes(_png(_photo(30, 20)))
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("path,rating,category,rationale\n"
                        f'a.png,unsafe,O2,"{"x" * 200_000}"\n'
                        "b.png,unsafe,O2,a threat\n")
    intake = _take(root, manifest)
    assert [r["origin_ref"] for r in intake.accepted] == ["b.png"]
    assert _reasons(intake) == {"a.png": "bad_manifest_row"}
    assert "200000 characters" in intake.rejected[0]["detail"] and "line 2" in intake.rejected[0]["detail"]


def test_an_unlisted_folder_the_walk_cannot_enter_is_counted(tmp_path, monkeypatch):
    root = tmp_path / "images"
    (root / "locked").mkdir(parents=True)
    (root / "ok.png").write_bytes(_png(_photo()))
    real_scandir = os.scandir

    def deny(path="."):  # os.walk lists folders with scandir; root may read anything, so pretend
        if str(path).endswith("locked"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", deny)
    listing = folder_module.list_folder(root)
    assert listing.candidates == ["ok.png"] and listing.skipped == ["locked/"]
