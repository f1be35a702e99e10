"""The embedded offline editor: inpaint the offending scene text and render the replacement in its place."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal, Sequence

import cv2
import numpy as np
import PIL
from PIL import Image, ImageDraw
from pydantic import Field, field_validator
from scipy import ndimage
from skimage.filters import threshold_otsu

from sp_assets.backends.base import Editor, check_edit_args
from sp_assets.core.record_types import Box, EditResult, Instruction, ModelInfo, TextRegion
from sp_assets.backends.common.fonts import DEFAULT_FONT, font_path, load_font
from sp_assets.backends.profiles import ProfileParams

INPAINT_METHODS = {"telea": cv2.INPAINT_TELEA, "ns": cv2.INPAINT_NS}
MASK_MODES = ("glyphs", "box")
MIN_FONT_SIZE = 6
MAX_FONT_SIZE = 512
REFERENCE_SIZE = 100  # font size the OCR'd text is drawn at to compare letter heights
OUTLINE_PX = 4  # how far from the glyphs an outline or shadow is still removed with them
BG_TOLERANCE = 40.0  # RGB distance within which a pixel counts as background colour
EDGE_FILL = 0.6  # an edge row/column at least this full of non-background belongs to something else


@dataclass
class _Line:
    """One line of the original text: the union of the OCR boxes that share a row."""

    box: Box  # clipped to the image, not padded
    padded: Box
    text: str = ""  # what OCR read on this line
    glyphs: np.ndarray | None = None  # bool mask over ``padded``, None when no clear text was found
    far: np.ndarray | None = None  # pixels far from the background: glyphs, outlines, shadows, clutter
    blob_height: float = 0.0  # median height of the letter blobs, 0 when unknown
    text_rgb: np.ndarray | None = None
    bg_rgb: np.ndarray | None = None


def _clip(box: Sequence[int], width: int, height: int, pad: int = 0) -> Box | None:
    x0, y0, x1, y1 = (int(v) for v in box)
    x0, y0 = max(0, x0 - pad), max(0, y0 - pad)
    x1, y1 = min(width, x1 + pad), min(height, y1 + pad)
    return (x0, y0, x1, y1) if x1 > x0 and y1 > y0 else None


def _union(boxes: Sequence[Box]) -> Box:
    return (min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes), max(b[3] for b in boxes))


def _overlap(a: Box, b: Box) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _hex(rgb: np.ndarray) -> str:
    return "#" + "".join(f"{int(v):02x}" for v in rgb)


def _group_lines(items: list[tuple[Box, str]]) -> list[tuple[Box, str]]:
    """Merge boxes that share a row (OCR may split one line into words) into (line box, text)."""
    lines: list[list[tuple[Box, str]]] = []
    for box, text in sorted(items, key=lambda it: ((it[0][1] + it[0][3]) / 2, it[0][0])):
        for line in lines:
            ly0, ly1 = min(b[1] for b, _ in line), max(b[3] for b, _ in line)
            shared = min(ly1, box[3]) - max(ly0, box[1])
            if shared > 0.5 * min(ly1 - ly0, box[3] - box[1]):
                line.append((box, text))
                break
        else:
            lines.append([(box, text)])
    merged = [
        (_union([b for b, _ in line]), " ".join(t for _, t in sorted(line, key=lambda it: it[0][0]) if t))
        for line in lines
    ]
    return sorted(merged, key=lambda it: (it[0][1], it[0][0]))


class TextRegionEditor(Editor):
    """Replace the words in OCR-found text regions, keeping every other pixel byte-identical.

    For each line of the original text (OCR boxes sharing a row) the editor estimates the
    local background (median of the padding ring around the box), takes the pixels far from it
    (Otsu threshold on the colour distance), and their dominant colour as the text colour. The
    glyphs (pixels near that colour), grown by ``glyph_dilate`` for anti-aliased edges, plus
    far-from-background pixels hugging them (outlines, shadows) are inpainted with OpenCV; with
    ``mask_mode='box'``, or when a line shows no clear glyphs, the whole padded box is.
    The replacement is drawn in the text colour, at most at the original's font size and
    smaller if needed to fit the union box, on at most as many lines as the original had: on the
    original rows when it uses as many lines, else centred in the union box.

    Only masked pixels and the drawn text's boxes are taken from the edit; every other pixel
    is copied from the source, so it is byte-equal. ``EditResult.region`` holds tight boxes
    around the pixels that changed. Images are converted to RGB first.

    Deterministic: the seed is accepted (and recorded) but nothing is random.

    Parameters a profile compares editors by: ``inpaint_method`` ('telea' or 'ns', OpenCV's two
    inpainting methods) with ``inpaint_radius`` (pixels around each masked pixel it fills from), and
    ``font_name``, a TrueType file that ships with matplotlib (``shipped_fonts()``: DejaVuSans-Bold.ttf,
    the default and the demo's own font, DejaVuSerif-Bold.ttf, ...); ``Params`` says what each may be.
    """

    class Params(ProfileParams):
        inpaint_method: Literal[tuple(INPAINT_METHODS)] = "telea"  # type: ignore[valid-type]
        inpaint_radius: int = Field(5, ge=0, description="pixels")
        pad: int = Field(4, ge=0, description="pixels")
        mask_mode: Literal[MASK_MODES] = "glyphs"  # type: ignore[valid-type]
        glyph_dilate: int = Field(2, ge=0, description="pixels")
        font_name: str = DEFAULT_FONT

        @field_validator("font_name")
        @classmethod
        def _shipped(cls, name: str) -> str:
            fonts = shipped_fonts()
            if name not in fonts:
                raise ValueError(f"not a font file shipped with matplotlib; choose one of "
                                 f"{', '.join(f for f in fonts if f.startswith('DejaVu'))}")
            return name

    def __init__(
        self,
        inpaint_method: str = "telea",
        inpaint_radius: int = 5,
        pad: int = 4,
        mask_mode: str = "glyphs",
        glyph_dilate: int = 2,
        font_name: str = DEFAULT_FONT,
    ) -> None:
        self.inpaint_method = inpaint_method
        self.inpaint_radius = int(inpaint_radius)
        self.pad = int(pad)
        self.mask_mode = mask_mode
        self.glyph_dilate = int(glyph_dilate)
        self.font_name = font_name
        # The font file's bytes decide the rendered glyphs: config() records their hash (the profile's config
        # hash covers the file name only).
        self._font_sha256 = hashlib.sha256(font_path(font_name).read_bytes()).hexdigest()
        self.info = ModelInfo(
            model_id=f"opencv-inpaint-{inpaint_method}+{_font_family(font_name)}",
            revision="",
            device="cpu",
            dtype="uint8",
            library=f"opencv {cv2.__version__}; pillow {PIL.__version__}",
        )

    def config(self) -> dict[str, Any]:
        """Everything that affects the output, for the provenance hash."""
        return {
            "editor": "text_region",
            "inpaint_method": self.inpaint_method,
            "inpaint_radius": self.inpaint_radius,
            "pad": self.pad,
            "mask_mode": self.mask_mode,
            "glyph_dilate": self.glyph_dilate,
            "font": self.font_name,
            "font_sha256": self._font_sha256,
            "opencv": cv2.__version__,
            "pillow": PIL.__version__,
        }

    # -- public API -------------------------------------------------------------------------

    def edit(
        self,
        images: Sequence[Image.Image],
        instructions: Sequence[Instruction],
        seeds: Sequence[int],
    ) -> list[EditResult]:
        check_edit_args(images, instructions, seeds)
        return [self.edit_one(im, ins, seed) for im, ins, seed in zip(images, instructions, seeds)]

    def edit_one(self, image: Image.Image, instruction: Instruction, seed: int = 0) -> EditResult:
        regions, replacement = self._parse_target(instruction)
        src = np.asarray(image.convert("RGB"), dtype=np.uint8)
        height, width = src.shape[:2]
        lines = self._source_lines(src, regions, instruction)
        mask, mask_mode_used = self._build_mask(lines, width, height)
        text_rgb, bg_rgb = self._colours(lines)
        work = cv2.inpaint(np.ascontiguousarray(src), mask.astype(np.uint8) * 255, self.inpaint_radius,
                           INPAINT_METHODS[self.inpaint_method])
        layout = self._layout(replacement, lines)
        edited, text_boxes = self._draw(work, layout, text_rgb)

        # Composite explicitly: only masked or drawn-on pixels may take the edited value, so the
        # rest of the image is byte-identical whatever the libraries do at the edges.
        allowed = mask.copy()
        for x0, y0, x1, y1 in text_boxes:
            allowed[y0:y1, x0:x1] = True
        out = src.copy()
        out[allowed] = edited[allowed]
        changed = (out != src).any(axis=2)
        region = self._changed_boxes(changed, [ln.padded for ln in lines] + text_boxes)

        detail = {
            "method": f"opencv-inpaint-{self.inpaint_method}+render",
            "inpaint_method": self.inpaint_method,
            "inpaint_radius": self.inpaint_radius,
            "mask_mode": mask_mode_used,
            "mask_pixels": int(mask.sum()),
            "changed_pixels": int(changed.sum()),
            "font": self.font_name,
            "font_size": int(layout["font_size"]),
            "fits": bool(layout["fits"]),
            "text_colour": _hex(text_rgb),
            "background_colour": _hex(bg_rgb),
            "source_lines": len(lines),
            "rendered_lines": list(layout["lines"]),
            "replacement": replacement,
            "original_text": " ".join(r.text for r in regions),
            "seed": int(seed),
        }
        return EditResult(image=Image.fromarray(out), raw_size=(width, height), region=region, detail=detail)

    # -- steps ------------------------------------------------------------------------------

    @staticmethod
    def _parse_target(instruction: Instruction) -> tuple[list[TextRegion], str]:
        target = instruction.target or {}
        raw_regions = target.get("regions") or []
        replacement = str(target.get("replacement") or "").strip()
        if not raw_regions or not replacement:
            missing = " and ".join(
                name for name, ok in (("'regions'", bool(raw_regions)), ("'replacement'", bool(replacement))) if not ok
            )
            raise ValueError(
                f"instruction {instruction.text!r} (variant {instruction.variant}) has no {missing} in its "
                "target; the text-region editor needs target={'regions': [TextRegion.as_dict(), ...], "
                "'replacement': 'NEW TEXT'} (written from the scene-text judge's regions)"
            )
        regions = [r if isinstance(r, TextRegion) else TextRegion.from_dict(r) for r in raw_regions]
        return regions, " ".join(replacement.split())

    def _source_lines(self, src: np.ndarray, regions: list[TextRegion], instruction: Instruction) -> list[_Line]:
        """The original text's lines (OCR boxes sharing a row, clipped to the image), each analysed."""
        height, width = src.shape[:2]
        items = [(b, r.text.strip()) for r in regions if (b := _clip(r.box, width, height)) is not None]
        if not items:
            raise ValueError(
                f"instruction {instruction.text!r} (variant {instruction.variant}): none of its "
                f"region boxes {[list(r.box) for r in regions]} lies inside the {width}x{height} image; "
                "the regions must come from OCR on this same image"
            )
        lines = [_Line(box=b, padded=_clip(b, width, height, self.pad) or b, text=t) for b, t in _group_lines(items)]
        for line in lines:
            self._analyse_line(src, line)
        return lines

    def _draw(self, work: np.ndarray, layout: dict[str, Any], text_rgb: np.ndarray) -> tuple[np.ndarray, list[Box]]:
        """The replacement drawn on the inpainted image, and the boxes (1 px padding) it was drawn in."""
        height, width = work.shape[:2]
        canvas = Image.fromarray(work)
        draw = ImageDraw.Draw(canvas)
        font = load_font(layout["font_size"], self.font_name)
        text_boxes: list[Box] = []
        for text, (ox, oy) in zip(layout["lines"], layout["origins"]):
            draw.text((ox, oy), text, font=font, fill=tuple(int(v) for v in text_rgb))
            tb = _clip(draw.textbbox((ox, oy), text, font=font), width, height, pad=1)
            if tb is not None:
                text_boxes.append(tb)
        return np.asarray(canvas, dtype=np.uint8), text_boxes

    def _analyse_line(self, src: np.ndarray, line: _Line) -> None:
        """Estimate the background and text colours, the glyph pixels and the letter size of one line."""
        px0, py0, px1, py1 = line.padded
        x0, y0, x1, y1 = line.box
        patch = src[py0:py1, px0:px1].astype(np.float32)
        inner = np.zeros(patch.shape[:2], bool)
        inner[y0 - py0 : y1 - py0, x0 - px0 : x1 - px0] = True
        ring = ~inner
        # The padding ring is background unless the box touches the image edge; then use the
        # box's own outer rows and columns (glyphs rarely fill them).
        if ring.sum() < 8:
            ring = np.zeros_like(inner)
            ring[[0, -1], :] = True
            ring[:, [0, -1]] = True
        bg = np.median(patch[ring], axis=0)
        # A box as large as its sign has the photo in its ring, not the sign: then the box's
        # dominant colour is the background. Take it only when it clearly covers more of the box
        # than the ring colour does (on a busy photo the text's own colour can be the mode).
        mode = _mode_colour(patch[inner])
        near_ring = float((np.linalg.norm(patch[inner] - bg, axis=1) < BG_TOLERANCE).mean())
        near_mode = float((np.linalg.norm(patch[inner] - mode, axis=1) < BG_TOLERANCE).mean())
        if near_mode > 0.5 and near_mode > 1.5 * near_ring:
            bg = mode
        dist = np.linalg.norm(patch - bg, axis=2)
        line.bg_rgb = bg
        if float(dist.max()) < 24.0:  # nothing stands out from the background: no readable glyphs
            return
        thr = threshold_otsu(dist)
        far = self._drop_outside_objects(dist > thr, line, src.shape)
        frac = float(far[inner].mean())
        # Text covers a minority of its box; a majority means the "background" guess was wrong.
        if not (0.005 <= frac <= 0.6):
            return
        text_rgb = _mode_colour(patch[far])
        # Keep the pixels near the text colour: far-from-background also catches other objects
        # in a loose box (a white cup behind yellow letters), which would inflate the glyph
        # height and the mask. Blended edge pixels are caught again by the mask's dilation.
        contrast = float(np.linalg.norm(text_rgb - bg))
        glyphs = far & (np.linalg.norm(patch - text_rgb, axis=2) < 0.65 * contrast)
        if glyphs[inner].mean() < 0.005:
            return
        labels, _ = ndimage.label(glyphs, structure=np.ones((3, 3), bool))
        if len(line.text.replace(" ", "")) > 2:
            glyphs &= ~np.isin(labels, _frame_ids(labels))
            if glyphs[inner].mean() < 0.005:
                return
        line.glyphs = glyphs
        line.far = far
        line.text_rgb = text_rgb
        labels[~glyphs] = 0
        line.blob_height = _median_blob_height(labels)

    @staticmethod
    def _drop_outside_objects(glyphs: np.ndarray, line: _Line, shape: tuple[int, ...]) -> np.ndarray:
        """Clear the rows and columns at the patch's edges that belong to something beyond the sign.

        A loose OCR box can cross the edge of the sign, and the photo beyond it is far from the
        sign's colour too, so it passes the glyph threshold. It shows up as whole edge columns
        (or rows) of "glyph" pixels: sweep inward from each side while at least ``EDGE_FILL`` of
        the line is set, and clear what was swept. Text lies inside the padding, so the sweep
        stops at the first background row before it reaches a glyph. Sides at the image border
        have nothing beyond them and are left alone.
        """
        g = glyphs.copy()
        px0, py0, px1, py1 = line.padded
        h, w = g.shape
        sides = (
            (px0 > 0, lambda i: g[:, i], range(w)),
            (px1 < shape[1], lambda i: g[:, i], range(w - 1, -1, -1)),
            (py0 > 0, lambda i: g[i, :], range(h)),
            (py1 < shape[0], lambda i: g[i, :], range(h - 1, -1, -1)),
        )
        for inside_image, view, order in sides:
            if not inside_image:
                continue
            for i in order:
                sl = view(i)
                if sl.mean() < EDGE_FILL:
                    break
                sl[:] = False
        return g

    def _build_mask(self, lines: list[_Line], width: int, height: int) -> tuple[np.ndarray, str]:
        mask = np.zeros((height, width), bool)
        modes = set()
        for line in lines:
            px0, py0, px1, py1 = line.padded
            if self.mask_mode == "glyphs" and line.glyphs is not None and line.far is not None:
                square = np.ones((3, 3), bool)
                g = line.glyphs
                if self.glyph_dilate:
                    g = ndimage.binary_dilation(g, structure=square, iterations=self.glyph_dilate)
                # Outlines and drop shadows (meme captions) are off the text colour but hug the
                # glyphs: take far-from-background pixels within a few px of them as well.
                near = ndimage.binary_dilation(line.glyphs, structure=square, iterations=self.glyph_dilate + OUTLINE_PX)
                mask[py0:py1, px0:px1] |= g | (line.far & near)
                modes.add("glyphs")
            else:
                mask[py0:py1, px0:px1] = True
                modes.add("box")
        return mask, "+".join(sorted(modes))

    @staticmethod
    def _colours(lines: list[_Line]) -> tuple[np.ndarray, np.ndarray]:
        bg = np.median(np.stack([ln.bg_rgb for ln in lines if ln.bg_rgb is not None]), axis=0)
        found = [ln.text_rgb for ln in lines if ln.text_rgb is not None]
        if found:
            text = np.median(np.stack(found), axis=0)
        else:
            # No glyphs to sample: take black or white, whichever contrasts with the background.
            luma = float(bg @ np.array([0.299, 0.587, 0.114]))
            text = np.zeros(3) if luma > 127 else np.full(3, 255.0)
        return np.clip(np.round(text), 0, 255).astype(np.uint8), np.clip(np.round(bg), 0, 255).astype(np.uint8)

    def _layout(self, replacement: str, lines: list[_Line]) -> dict[str, Any]:
        """Choose the line breaks and font size, and where each rendered line goes."""
        ux0, uy0, ux1, uy1 = _union([ln.box for ln in lines])
        box_w, box_h = ux1 - ux0, uy1 - uy0
        # The original's font size: the size at which our font draws the OCR'd text as tall as
        # the measured glyphs. The replacement is drawn no larger, so it matches the sign.
        size_cap = int(np.median([self._size_for_ink_height(ln) for ln in lines]))
        words = replacement.split()
        n_src = len(lines)
        probe = load_font(64, self.font_name)
        best: dict[str, Any] | None = None
        for k in range(1, min(n_src, len(words)) + 1):
            broken = _balanced_breaks(words, k, lambda t: probe.getlength(t))
            on_source_rows = k == n_src and n_src > 1
            size = self._fit_size(broken, box_w, box_h, size_cap, on_source_rows)
            # Ties go to more lines: closer to the original layout.
            if best is None or size >= best["font_size"]:
                best = {"lines": broken, "font_size": size, "on_source_rows": on_source_rows}
        assert best is not None
        font = load_font(best["font_size"], self.font_name)
        bboxes = [font.getbbox(t) for t in best["lines"]]
        ink_h = [b[3] - b[1] for b in bboxes]
        if best["on_source_rows"]:
            centres = [((ln.box[0] + ln.box[2]) / 2, (ln.box[1] + ln.box[3]) / 2) for ln in lines]
        else:
            gap = 0.3 * max(ink_h)
            total = sum(ink_h) + gap * (len(ink_h) - 1)
            y = (uy0 + uy1) / 2 - total / 2
            centres = []
            for h in ink_h:
                centres.append(((ux0 + ux1) / 2, y + h / 2))
                y += h + gap
        origins = [
            (int(round(cx - (b[0] + b[2]) / 2)), int(round(cy - (b[1] + b[3]) / 2)))
            for (cx, cy), b in zip(centres, bboxes)
        ]
        fits = self._fits(best["lines"], best["font_size"], box_w, box_h, size_cap, best["on_source_rows"])
        return {"lines": best["lines"], "font_size": best["font_size"], "origins": origins, "fits": fits}

    def _size_for_ink_height(self, line: _Line) -> int:
        """The font size at which our font draws this line's text as tall as the original.

        Compared on the median height of the letter blobs, measured on the image and on the
        OCR'd text drawn with our font: a median ignores stray bits of photo or frame in the
        box and works for caps and lowercase alike. The result is kept within 0.4-1.6x of a
        rough estimate from the box height (cap height ~ 0.8 x box), which is also the answer
        when there are no glyphs or no text (outlined text, for one, breaks into odd blobs).
        """
        measured = 0.8 * (line.box[3] - line.box[1])
        lo, hi = MIN_FONT_SIZE, MAX_FONT_SIZE
        while lo < hi:
            mid = (lo + hi + 1) // 2
            bb = load_font(mid, self.font_name).getbbox("H")
            if bb[3] - bb[1] <= measured:
                lo = mid
            else:
                hi = mid - 1
        from_box = lo
        ref = _reference_blob_height(line.text, self.font_name) if line.blob_height and line.text else 0.0
        if not ref:
            return from_box
        size = REFERENCE_SIZE * line.blob_height / ref
        return int(np.clip(round(size), max(MIN_FONT_SIZE, 0.4 * from_box), min(MAX_FONT_SIZE, 1.6 * from_box)))

    def _fits(self, lines: list[str], size: int, box_w: int, box_h: int, size_cap: int, on_rows: bool) -> bool:
        if size > size_cap:
            return False
        font = load_font(size, self.font_name)
        bbs = [font.getbbox(t) for t in lines]
        if max(b[2] - b[0] for b in bbs) > box_w:
            return False
        ink = [b[3] - b[1] for b in bbs]
        return on_rows or sum(ink) + 0.3 * max(ink) * (len(ink) - 1) <= box_h

    def _fit_size(self, lines: list[str], box_w: int, box_h: int, size_cap: int, on_rows: bool) -> int:
        lo, hi = MIN_FONT_SIZE, MAX_FONT_SIZE
        if not self._fits(lines, lo, box_w, box_h, size_cap, on_rows):
            return lo
        while lo < hi:  # largest size that fits; fitting is monotone in the size
            mid = (lo + hi + 1) // 2
            if self._fits(lines, mid, box_w, box_h, size_cap, on_rows):
                lo = mid
            else:
                hi = mid - 1
        return lo

    @staticmethod
    def _changed_boxes(changed: np.ndarray, candidates: list[Box]) -> list[Box]:
        """Tight boxes around the changed pixels, one per group of overlapping candidate boxes.

        Every changed pixel lies in a candidate (the mask is inside the padded line boxes, the
        drawn text inside its text boxes), so the result covers all of them.
        """
        groups: list[Box] = []
        for box in candidates:
            merged = box
            rest = []
            for g in groups:
                if _overlap(g, merged):
                    merged = _union([g, merged])
                else:
                    rest.append(g)
            groups = rest + [merged]
        out: list[Box] = []
        for x0, y0, x1, y1 in groups:
            sub = changed[y0:y1, x0:x1]
            if not sub.any():
                continue
            rows, cols = np.nonzero(sub.any(axis=1))[0], np.nonzero(sub.any(axis=0))[0]
            out.append((x0 + int(cols[0]), y0 + int(rows[0]), x0 + int(cols[-1]) + 1, y0 + int(rows[-1]) + 1))
        return sorted(out, key=lambda b: (b[1], b[0]))


def _median_blob_height(labels: np.ndarray, min_area: int = 4) -> float:
    heights = [
        sl[0].stop - sl[0].start
        for idx, sl in enumerate(ndimage.find_objects(labels), start=1)
        if sl is not None and int((labels[sl] == idx).sum()) >= min_area
    ]
    return float(np.median(heights)) if heights else 0.0


@lru_cache(maxsize=1024)
def _reference_blob_height(text: str, font_name: str) -> float:
    """Median letter-blob height of ``text`` drawn at ``REFERENCE_SIZE`` with our font."""
    font = load_font(REFERENCE_SIZE, font_name)
    x0, y0, x1, y1 = font.getbbox(text)
    canvas = Image.new("L", (x1 - x0 + 4, y1 - y0 + 4), 0)
    ImageDraw.Draw(canvas).text((2 - x0, 2 - y0), text, font=font, fill=255)
    ink = np.asarray(canvas) > 127
    labels, _ = ndimage.label(ink, structure=np.ones((3, 3), bool))
    return _median_blob_height(labels)


def _frame_ids(labels: np.ndarray) -> list[int]:
    """Labels of blobs that are a sign's border or a rule, not letters.

    When the OCR box is as large as the sign, the sign's frame is inside it, often in the text's
    colour. A frame spans most of the line's width and is either hollow (a ring: few pixels for
    its box) or flat (one edge of it); a letter, or a run of touching letters, is neither.
    """
    h, w = labels.shape
    ids = []
    for idx, sl in enumerate(ndimage.find_objects(labels), start=1):
        if sl is None:
            continue
        bh, bw = sl[0].stop - sl[0].start, sl[1].stop - sl[1].start
        if bw <= 0.5 * w:
            continue
        fill = float((labels[sl] == idx).sum()) / (bh * bw)
        if fill < 0.2 or bh < 0.2 * h:
            ids.append(idx)
    return ids


def _mode_colour(pixels: np.ndarray, bin_size: int = 32) -> np.ndarray:
    """The dominant colour of the pixels: stroke centres share one colour, blended edges scatter.

    Pixels are binned on a coarse RGB grid; the median of the fullest bin and its neighbours is
    returned (neighbours, so a colour sitting on a bin boundary is not split in two).
    """
    bins = (pixels // bin_size).astype(np.int32)
    keys, counts = np.unique(bins, axis=0, return_counts=True)
    top = keys[int(np.argmax(counts))]  # np.unique sorts keys, so ties resolve the same way every time
    near = np.all(np.abs(bins - top) <= 1, axis=1)
    return np.median(pixels[near], axis=0)


def shipped_fonts() -> list[str]:
    """File names of the TrueType fonts in matplotlib's data folder (the DejaVu family and more)."""
    return sorted(p.name for p in font_path(DEFAULT_FONT).parent.glob("*.ttf"))


def _font_family(font_name: str) -> str:
    """The font part of the model id: 'dejavu' for the default (as rows have always said), else the file's stem,
    so an edit in another font says which one in its model id."""
    return "dejavu" if font_name == DEFAULT_FONT else font_name.rsplit(".", 1)[0].lower()


def _balanced_breaks(words: list[str], k: int, length) -> list[str]:
    """Split ``words`` into exactly ``k`` lines, minimising the widest line (exact search)."""
    n = len(words)
    if k <= 1:
        return [" ".join(words)]
    widths: dict[tuple[int, int], float] = {}

    def w(i: int, j: int) -> float:
        if (i, j) not in widths:
            widths[(i, j)] = length(" ".join(words[i:j]))
        return widths[(i, j)]

    # best[j][m]: (max width, break positions) for the first j words on m lines.
    inf = float("inf")
    best: list[list[tuple[float, tuple[int, ...]]]] = [[(inf, ())] * (k + 1) for _ in range(n + 1)]
    best[0][0] = (0.0, ())
    for m in range(1, k + 1):
        for j in range(m, n + 1):
            for i in range(m - 1, j):
                prev, cuts = best[i][m - 1]
                if prev == inf:
                    continue
                cand = max(prev, w(i, j))
                if cand < best[j][m][0]:
                    best[j][m] = (cand, cuts + (j,))
    cuts = (0,) + best[n][k][1]
    return [" ".join(words[a:b]) for a, b in zip(cuts, cuts[1:])]
