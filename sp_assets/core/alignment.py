"""Registration of an edit onto its source's pixel grid before preservation is measured.

Diffusion editors (Qwen-Image-Edit among them) shift and zoom the content by a few pixels; a difference
map of such an edit marks every edge as changed. ``estimate_alignment`` finds the affine motion from the
source to the edit (OpenCV's ECC, coarse to fine on downscaled grey copies; ORB features + RANSAC when
ECC fails or correlates poorly), ``aligned_edit`` warps the edit back onto the source grid and says
which pixels the warp had to bring in from outside the frame.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

#: An estimated motion that moves no corner of the frame this far (pixels) is treated as none: the
#: edit is measured unwarped, exactly as an unaligned pair, so resampling never blurs an aligned edit.
IDENTITY_PX = 0.5

#: Long side (pixels) of the finest and coarsest pyramid level ECC runs on.
FINE_SIDE = 256
COARSE_SIDE = 64

#: Images smaller than this (either side) or with grey-level spread below FLAT_STD carry too little
#: structure to register; they are measured as they are (method 'none').
MIN_SIDE = 16
FLAT_STD = 1.0

#: ECC's correlation below which ORB feature matching is tried as well (the better result is kept).
ECC_FALLBACK_BELOW = 0.8

#: Grey-level difference (0-255) above which a pixel counts as edited while the motion is refined.
CHANGED_GREY = 24

_ECC_CRITERIA = {"coarse": (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 60, 1e-5),
                 "fine": (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 20, 1e-5)}


@dataclass(frozen=True)
class Alignment:
    """The motion from source to edit: ``matrix`` (2x3) maps a source pixel to where its content lies in
    the edit, in source pixels. ``method`` is 'ecc', 'orb' or 'none' (nothing to register); ``correlation``
    is the zero-mean normalised correlation of the source and the aligned edit (grey, finest level), None
    when no motion was found."""

    matrix: np.ndarray
    method: str
    correlation: float | None
    size: tuple[int, int]  # (width, height) of the source

    @property
    def found(self) -> bool:
        return self.correlation is not None or self.method == "none"

    @property
    def shift(self) -> tuple[float, float]:
        """Where the source's centre moved to in the edit, minus where it was (dx, dy), in pixels."""
        c = np.array([(self.size[0] - 1) / 2.0, (self.size[1] - 1) / 2.0])
        moved = self.matrix[:, :2] @ c + self.matrix[:, 2]
        return float(moved[0] - c[0]), float(moved[1] - c[1])

    @property
    def scale(self) -> float:
        return float(np.sqrt(abs(np.linalg.det(self.matrix[:, :2]))))

    @property
    def rotation_deg(self) -> float:
        return float(np.degrees(np.arctan2(self.matrix[1, 0], self.matrix[0, 0])))

    @property
    def corner_motion(self) -> float:
        """The largest distance (pixels) any corner of the frame moves."""
        w, h = self.size
        corners = np.array([[0, 0], [w - 1, 0], [0, h - 1], [w - 1, h - 1]], dtype=np.float64)
        moved = corners @ self.matrix[:, :2].T + self.matrix[:, 2]
        return float(np.max(np.linalg.norm(moved - corners, axis=1)))

    @property
    def warped(self) -> bool:
        """True when the edit has to be resampled onto the source grid before measuring."""
        return self.found and self.method != "none" and self.corner_motion >= IDENTITY_PX

    def record(self) -> dict[str, Any]:
        """The ``align_*`` columns of a verified_pairs row (motion columns NULL when none was found)."""
        if not self.found:
            return {"align_status": "failed", "align_method": self.method}
        dx, dy = self.shift
        return {"align_status": "warped" if self.warped else "identity", "align_method": self.method,
                "align_dx": round(dx, 3), "align_dy": round(dy, 3),
                "align_shift_px": round(float(np.hypot(dx, dy)), 3),
                "align_scale": round(self.scale, 5), "align_rotation_deg": round(self.rotation_deg, 4),
                "align_correlation": None if self.correlation is None else round(self.correlation, 5)}


def _grey(image: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY).astype(np.float32)


def _pyramid(grey: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """Levels from coarse to fine, each (image, 3x3 map from full-size pixel coordinates to the level's)."""
    h, w = grey.shape
    side = min(FINE_SIDE, max(h, w))
    levels = []
    while True:
        f = side / max(h, w)
        lw, lh = max(1, round(w * f)), max(1, round(h * f))
        sx, sy = lw / w, lh / h
        to_level = np.array([[sx, 0, 0.5 * sx - 0.5], [0, sy, 0.5 * sy - 0.5], [0, 0, 1]])
        img = grey if (lw, lh) == (w, h) else cv2.resize(grey, (lw, lh), interpolation=cv2.INTER_AREA)
        levels.append((img, to_level))
        if side <= COARSE_SIDE or min(lw, lh) < 2 * MIN_SIDE:
            return levels[::-1]
        side //= 2


def _at_level(matrix: np.ndarray, to_level: np.ndarray) -> np.ndarray:
    full = np.vstack([matrix, [0, 0, 1]])
    return (to_level @ full @ np.linalg.inv(to_level))[:2].astype(np.float32)


def _at_full(matrix: np.ndarray, to_level: np.ndarray) -> np.ndarray:
    level = np.vstack([matrix.astype(np.float64), [0, 0, 1]])
    return (np.linalg.inv(to_level) @ level @ to_level)[:2]


def _ecc(levels: list[tuple[np.ndarray, np.ndarray]], edit_levels: list[np.ndarray],
         start: np.ndarray) -> np.ndarray | None:
    """ECC affine motion refined level by level from ``start``; None when it does not converge."""
    matrix = start
    for i, ((src, to_level), edit) in enumerate(zip(levels, edit_levels)):
        criteria = _ECC_CRITERIA["fine" if i else "coarse"]
        try:
            _, warp = cv2.findTransformECC(src, edit, _at_level(matrix, to_level), cv2.MOTION_AFFINE, criteria,
                                           None, 3)
        except cv2.error:
            return None
        matrix = _at_full(warp, to_level)
    return matrix


def _orb(source: np.ndarray, edit: np.ndarray) -> np.ndarray | None:
    """A similarity motion from ORB matches and RANSAC (full-size pixels); None with too few inliers."""
    orb = cv2.ORB_create(nfeatures=800)
    ka, da = orb.detectAndCompute(source.astype(np.uint8), None)
    kb, db = orb.detectAndCompute(edit.astype(np.uint8), None)
    if da is None or db is None or len(ka) < 8 or len(kb) < 8:
        return None
    matches = cv2.BFMatcher(cv2.NORM_HAMMING, crossCheck=True).match(da, db)
    if len(matches) < 8:
        return None
    pa = np.float32([ka[m.queryIdx].pt for m in matches])
    pb = np.float32([kb[m.trainIdx].pt for m in matches])
    matrix, inliers = cv2.estimateAffinePartial2D(pa, pb, method=cv2.RANSAC, ransacReprojThreshold=3.0)
    if matrix is None or inliers is None or int(inliers.sum()) < 8:
        return None
    return matrix.astype(np.float64)


def _correlation(source: np.ndarray, edit: np.ndarray, matrix: np.ndarray, to_level: np.ndarray) -> float | None:
    """Zero-mean normalised correlation of the source and the edit warped onto it, over the pixels the warp
    could fill from inside the frame; None when too few remain."""
    m = _at_level(matrix, to_level)
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    h, w = source.shape
    back = cv2.warpAffine(edit, m, (w, h), flags=flags)
    inside = cv2.warpAffine(np.ones_like(edit), m, (w, h), flags=flags) > 0.999
    if inside.sum() < 0.25 * inside.size:
        return None
    a, b = source[inside] - source[inside].mean(), back[inside] - back[inside].mean()
    denom = float(np.sqrt((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / denom) if denom > 0 else None


def _unchanged_in_edit(source: np.ndarray, edit: np.ndarray, m: np.ndarray) -> np.ndarray:
    """The edit's pixels (uint8 mask, edit coordinates as ECC's input mask wants them) whose content
    matches the source after the warp ``m`` (level pixels), the edited area grown by two pixels left out."""
    h, w = source.shape
    back = cv2.warpAffine(edit, m, (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP)
    changed = cv2.dilate((np.abs(source - back) > CHANGED_GREY).astype(np.uint8), np.ones((5, 5), np.uint8))
    return cv2.warpAffine((changed == 0).astype(np.uint8), m, (w, h), flags=cv2.INTER_NEAREST)


def _refined(levels: list[tuple[np.ndarray, np.ndarray]], edit_levels: list[np.ndarray],
             matrix: np.ndarray) -> np.ndarray:
    """The motion re-estimated on the finest level with the edited area masked out, so that the edit
    itself does not pull the estimate (skipped when the edit leaves under half the frame unchanged)."""
    (src, to_level), edit = levels[-1], edit_levels[-1]
    m = _at_level(matrix, to_level)
    keep = _unchanged_in_edit(src, edit, m)
    if keep.mean() < 0.5:
        return matrix
    try:
        _, warp = cv2.findTransformECC(src, edit, m, cv2.MOTION_AFFINE, _ECC_CRITERIA["fine"], keep, 3)
    except cv2.error:
        return matrix
    return _at_full(warp, to_level)


def _best(grey_src: np.ndarray, grey_edit: np.ndarray) -> tuple[float, str, np.ndarray] | None:
    """(correlation, method, matrix) of the best motion found: ECC from the identity, and ORB (refined by
    ECC) as well when ECC fails or correlates poorly; then refined with the edited area masked out."""
    levels = _pyramid(grey_src)
    edit_levels = [img for img, _ in _pyramid(grey_edit)]
    score = lambda m: _correlation(levels[-1][0], edit_levels[-1], m, levels[-1][1])  # noqa: E731
    found = []
    ecc = _ecc(levels, edit_levels, np.eye(2, 3))
    if ecc is not None and (corr := score(ecc)) is not None:
        found.append((corr, "ecc", ecc))
    if not found or found[0][0] < ECC_FALLBACK_BELOW:
        orb = _orb(grey_src, grey_edit)
        if orb is not None:
            matrix = _ecc(levels[-1:], edit_levels[-1:], orb)
            matrix = orb if matrix is None else matrix
            if (corr := score(matrix)) is not None:
                found.append((corr, "orb", matrix))
    if not found:
        return None
    corr, method, matrix = max(found, key=lambda f: f[0])
    refined = _refined(levels, edit_levels, matrix)
    corr_refined = score(refined)
    return (corr, method, matrix) if corr_refined is None else (corr_refined, method, refined)


def estimate_alignment(source: np.ndarray, edit: np.ndarray) -> Alignment:
    """The affine motion from ``source`` to ``edit`` (HxWx3 uint8 arrays of one size).

    ``correlation`` is None when no motion was found (ECC did not converge and ORB found too few
    matches); method 'none' when the images are too small or too flat to register.
    """
    h, w = source.shape[:2]
    grey_src, grey_edit = _grey(source), _grey(edit)
    if min(h, w) < MIN_SIDE or grey_src.std() < FLAT_STD or grey_edit.std() < FLAT_STD:
        return Alignment(np.eye(2, 3), "none", None, (w, h))
    best = _best(grey_src, grey_edit)
    if best is None:
        return Alignment(np.eye(2, 3), "ecc", None, (w, h))
    corr, method, matrix = best
    return Alignment(matrix, method, corr, (w, h))


def aligned_edit(source: np.ndarray, edit: np.ndarray, alignment: Alignment) -> tuple[np.ndarray, np.ndarray | None]:
    """The edit on the source grid and the mask of pixels the warp filled from inside the frame.

    An alignment that needs no warp returns the edit itself and None (every pixel valid). Pixels the warp
    brings in from outside the frame are filled with the source's own, so the difference map does not
    mark them; callers leave them out of the metrics through the mask.
    """
    if not alignment.warped:
        return edit, None
    h, w = source.shape[:2]
    flags = cv2.INTER_CUBIC | cv2.WARP_INVERSE_MAP
    m = alignment.matrix.astype(np.float32)
    back = cv2.warpAffine(np.ascontiguousarray(edit), m, (w, h), flags=flags, borderMode=cv2.BORDER_REPLICATE)
    ones = np.ones((h, w), np.float32)
    inside = cv2.warpAffine(ones, m, (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP) > 0.999
    back = np.where(inside[:, :, None], back, source)
    return back, inside
