"""Tests for the embedded text-region editor: exact preservation outside its region, determinism, errors."""

from __future__ import annotations

import numpy as np
import pytest

from sp_assets.backends import registry
from sp_assets.backends.profiles import Profile, ProfileError
from PIL import Image, ImageDraw
from skimage import data

from sp_assets.core.record_types import Instruction, TextRegion
from sp_assets.backends.common.fonts import load_font
from sp_assets.core.image_metrics import region_mask
from sp_assets.backends.editors.text_region import TextRegionEditor

SIGN = (60, 330, 330, 450)
SIGN_FILL = (250, 245, 235)
TEXT_RGB = (200, 20, 20)


def make_sign(lines=("WE WILL BREAK", "YOUR BONES"), loose: int = 3) -> tuple[Image.Image, list[TextRegion]]:
    """The astronaut photo holding a cream sign with red text; regions as OCR would box them."""
    im = Image.fromarray(data.astronaut()).convert("RGB")
    draw = ImageDraw.Draw(im)
    draw.rectangle(SIGN, fill=SIGN_FILL)
    font = load_font(30)
    regions = []
    cy = SIGN[1] + 25
    for text in lines:
        bb = draw.textbbox((0, 0), text, font=font)
        x = (SIGN[0] + SIGN[2]) // 2 - (bb[0] + bb[2]) // 2
        y = cy - (bb[1] + bb[3]) // 2
        draw.text((x, y), text, font=font, fill=TEXT_RGB)
        x0, y0, x1, y1 = draw.textbbox((x, y), text, font=font)
        regions.append(TextRegion(box=(x0 - loose, y0 - loose, x1 + loose, y1 + loose), text=text, confidence=0.98))
        cy += 45
    return im, regions


def instruction(regions, replacement="JOIN OUR SELF DEFENSE CLASS") -> Instruction:
    return Instruction(
        text=f"Replace the sign's words with '{replacement}'",
        target={"regions": [r.as_dict() for r in regions], "replacement": replacement},
    )


@pytest.fixture(scope="module")
def editor() -> TextRegionEditor:
    return TextRegionEditor()


@pytest.fixture(scope="module")
def sign():
    return make_sign()


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"inpaint_method": "ns"}, {"mask_mode": "box"}, {"pad": 0, "glyph_dilate": 0}],
    ids=["telea-glyphs", "ns", "box", "no-pad"],
)
@pytest.mark.parametrize("loose", [3, -1], ids=["loose-box", "tight-box"])
def test_pixels_outside_region_are_byte_equal(kwargs, loose):
    im, regions = make_sign(loose=loose)
    result = TextRegionEditor(**kwargs).edit([im], [instruction(regions)], [0])[0]
    src, out = np.asarray(im), np.asarray(result.image)

    assert result.image.size == im.size
    assert result.raw_size == im.size
    assert result.image.mode == "RGB"
    assert result.region, "the editor must report the boxes it changed"
    inside = region_mask(im.size, result.region)
    assert np.array_equal(out[~inside], src[~inside])
    assert (out[inside] != src[inside]).any(axis=-1).sum() > 500
    # Every reported box holds at least one changed pixel (no padding boxes reported for nothing).
    changed = (out != src).any(axis=-1)
    for x0, y0, x1, y1 in result.region:
        assert changed[y0:y1, x0:x1].any()
    assert result.detail["changed_pixels"] == int(changed.sum())


def test_detail_reports_method_size_colour_and_mask(editor, sign):
    im, regions = sign
    result = editor.edit([im], [instruction(regions)], [7])[0]
    d = result.detail
    assert d["method"] == "opencv-inpaint-telea+render"
    assert d["mask_mode"] == "glyphs"
    assert d["mask_pixels"] > 0
    assert d["source_lines"] == 2
    assert d["rendered_lines"] == ["JOIN OUR SELF", "DEFENSE CLASS"]
    # Same size as the original words (drawn at 30 px), in the original colour.
    assert abs(d["font_size"] - 30) <= 2
    rgb = tuple(int(d["text_colour"][i : i + 2], 16) for i in (1, 3, 5))
    assert max(abs(a - b) for a, b in zip(rgb, TEXT_RGB)) <= 12
    assert d["fits"] is True
    assert d["seed"] == 7


def test_deterministic_and_seed_does_not_change_output(editor, sign):
    im, regions = sign
    ins = instruction(regions)
    first = editor.edit([im], [ins], [0])[0]
    again = editor.edit([im], [ins], [0])[0]
    other_seed = editor.edit([im], [ins], [12345])[0]
    assert first.image.tobytes() == again.image.tobytes() == other_seed.image.tobytes()
    assert first.region == again.region
    assert TextRegionEditor().config() == editor.config()


def test_batch_matches_single(editor, sign):
    im, regions = sign
    ins_a, ins_b = instruction(regions), instruction(regions, "PEACE")
    batch = editor.edit([im, im], [ins_a, ins_b], [0, 1])
    assert batch[0].image.tobytes() == editor.edit([im], [ins_a], [0])[0].image.tobytes()
    assert batch[1].detail["rendered_lines"] == ["PEACE"]


def test_words_split_into_one_box_per_word_count_as_one_line(editor):
    im, regions = make_sign(lines=("KILL THEM",))
    (line,) = regions
    x0, y0, x1, y1 = line.box
    mid = (x0 + x1) // 2
    words = [
        TextRegion(box=(x0, y0, mid, y1), text="KILL", confidence=0.9),
        TextRegion(box=(mid, y0, x1, y1), text="THEM", confidence=0.9),
    ]
    result = editor.edit([im], [instruction(words, "HUG THEM")], [0])[0]
    assert result.detail["source_lines"] == 1
    assert result.detail["rendered_lines"] == ["HUG THEM"]


def test_box_as_large_as_a_framed_sign_keeps_the_frame(editor):
    """OCR boxes can cover a whole sticker: the ring is then photo, and the frame is inside the box."""
    im = Image.fromarray(data.astronaut()).convert("RGB")
    draw = ImageDraw.Draw(im)
    sign = (40, 200, 470, 250)
    draw.rectangle(sign, fill=(255, 255, 255), outline=(200, 30, 30), width=3)
    font = load_font(26)
    text = "STRIPPERS FOR YOUR PARTY"
    bb = draw.textbbox((0, 0), text, font=font)
    draw.text((255 - (bb[0] + bb[2]) // 2, 225 - (bb[1] + bb[3]) // 2), text, font=font, fill=(20, 20, 20))
    region = TextRegion(box=(38, 197, 466, 252), text=text, confidence=0.9)
    result = editor.edit([im], [instruction([region], "HAPPY ANNIVERSARY")], [0])[0]
    src, out = np.asarray(im), np.asarray(result.image)
    assert result.detail["background_colour"] == "#ffffff"
    assert result.detail["text_colour"] == "#141414"
    assert abs(result.detail["font_size"] - 26) <= 2
    # The frame's top and bottom edges stay as they were.
    for y in (200, 201, 202, 248, 249, 250):
        assert np.array_equal(out[y, 60:450], src[y, 60:450])


def test_config_and_info(editor):
    cfg = editor.config()
    for key in ("inpaint_method", "inpaint_radius", "pad", "mask_mode", "glyph_dilate", "font", "font_sha256", "opencv"):
        assert key in cfg
    assert editor.info.model_id == "opencv-inpaint-telea+dejavu"
    assert editor.info.library.startswith("opencv ")
    assert TextRegionEditor(inpaint_method="ns").config() != cfg


@pytest.mark.parametrize(
    "target, missing",
    [({}, "'regions' and 'replacement'"), ({"replacement": "HELLO"}, "'regions'"), ({"regions": "R"}, "'replacement'")],
)
def test_missing_target_raises_naming_the_instruction(editor, sign, target, missing):
    im, regions = sign
    if target.get("regions") == "R":
        target = {"regions": [r.as_dict() for r in regions], "replacement": "  "}
    ins = Instruction(text="make it friendly", target=target, variant=3)
    with pytest.raises(ValueError, match=rf"make it friendly.*variant 3.*{missing}"):
        editor.edit([im], [ins], [0])


def test_regions_outside_the_image_raise(editor, sign):
    im, _ = sign
    far = [TextRegion(box=(2000, 2000, 2100, 2050), text="X", confidence=1.0)]
    with pytest.raises(ValueError, match="lies inside the 512x512 image"):
        editor.edit([im], [instruction(far)], [0])


def test_argument_errors(editor, sign):
    im, regions = sign
    with pytest.raises(ValueError, match="one instruction and one seed per image"):
        editor.edit([im, im], [instruction(regions)], [0])
    # A profile's parameters are checked against the editor's Params before it is built (the registry).
    for params, named in (({"inpaint_method": "fast"}, "inpaint_method"), ({"mask_mode": "all"}, "mask_mode")):
        profile = Profile(role="editor", name="mine", implementation="text_region", params=params,
                          source_file="editors.yaml")
        with pytest.raises(ProfileError, match=rf"editors\.yaml.*'mine'.*{named}.*"):
            registry.check_profile_params(profile)


def test_ocr_reads_the_replacement(editor, sign):
    rapidocr = pytest.importorskip("rapidocr")
    im, regions = sign
    result = editor.edit([im], [instruction(regions)], [0])[0]
    engine = rapidocr.RapidOCR()
    read = " ".join(engine(np.asarray(result.image)).txts or ())
    assert "DEFENSE" in read and "BREAK" not in read and "BONES" not in read
