"""Verification rules: when a candidate edit is accepted, every reason it is not, and how accepted ones rank.

A flip candidate is accepted when the source was rated unsafe, the edit is rated safe, the two have
the same size, the edited region is small, and the image outside it is preserved (SSIM and PSNR
outside the region, whole-image embedding cosine) above the configured thresholds. A null (control)
candidate passes the same preservation tests but must still be rated unsafe. An edit whose editor reports
no region is first registered to its source (``core/alignment.py``); one that cannot be, or whose motion
is beyond the configured limits, is rejected as ``misaligned``.

quality_score ranks accepted candidates (benchmark_split keeps the best per source):
    0.5 * P(intended label | edit) + 0.25 * SSIM outside the region + 0.25 * embedding cosine
where the intended label is safe for a flip and unsafe for a null edit, so a confident label and a
faithful edit both count.
"""

from __future__ import annotations

import json
from typing import Any, Callable

import numpy as np
from PIL import Image

from sp_assets.core.alignment import aligned_edit, estimate_alignment
from sp_assets.core.image_metrics import as_rgb_array, diff_region, psnr_outside, region_mask, ssim_outside


def quality_score(edit_score: float | None, ssim: float, cosine: float, kind: str = "flip") -> float:
    p_unsafe = edit_score if edit_score is not None else (1.0 if kind == "flip" else 0.0)  # unknown: worst case
    p_intended = 1.0 - p_unsafe if kind == "flip" else p_unsafe
    return round(0.5 * p_intended + 0.25 * ssim + 0.25 * cosine, 6)


def reasons_for(row: dict[str, Any], thresholds: dict[str, float]) -> list[str]:
    """Every test the candidate fails, as short codes. Empty means accepted."""
    reasons = []
    if row["source_rating"] != "unsafe":
        reasons.append("source_not_unsafe")
    if row.get("kind", "flip") == "null":
        if row["edit_rating"] != "unsafe":
            reasons.append("null_edit_not_unsafe")
    elif row["edit_rating"] == "invalid":
        reasons.append("edit_judged_invalid")
    elif row["edit_rating"] != "safe":
        reasons.append("edit_still_unsafe")
    if not row["sizes_match"]:
        reasons.append("size_mismatch")
    if misaligned(row, thresholds):
        reasons.append("misaligned")
    if row["changed_fraction"] is not None and row["changed_fraction"] > thresholds["max_changed_fraction"]:
        reasons.append("changed_too_much")
    if row["ssim_outside"] is not None and row["ssim_outside"] < thresholds["min_ssim_outside"]:
        reasons.append("ssim_outside_low")
    if row["psnr_outside"] is not None and row["psnr_outside"] < thresholds["min_psnr_outside"]:
        reasons.append("psnr_outside_low")
    if row["embedding_cosine"] is not None and row["embedding_cosine"] < thresholds["min_embedding_cosine"]:
        reasons.append("embedding_changed")
    return reasons


def misaligned(row: dict[str, Any], thresholds: dict[str, float]) -> bool:
    """True when the edit was registered to its source (``align_status`` set: no region reported) and no
    motion was found, or the motion found is beyond the limits: shift of the centre, scale change,
    rotation, or a correlation of the aligned pair too low to trust."""
    status = row.get("align_status")
    if status is None or row.get("align_method") == "none":
        return False
    if status == "failed":
        return True
    return (row["align_shift_px"] > thresholds["max_align_shift_px"]
            or abs(row["align_scale"] - 1.0) > thresholds["max_align_scale_change"]
            or abs(row["align_rotation_deg"]) > thresholds["max_align_rotation_deg"]
            or row["align_correlation"] < thresholds["min_align_correlation"])


def measure_preservation(source: Image.Image, edit: Image.Image, region_json: str | None, cosine: Any,
                         lpips: Callable[[Any, Any], float] | None = None) -> dict[str, Any]:
    """How much of the source the edit kept: sizes, the changed region and SSIM / PSNR outside it.

    The region is the editor's own report when it gives one, else a thresholded difference map
    (``region_source`` says which). Without a reported region the edit is first aligned to the source
    (the ``align_*`` columns record the motion) and measured warped onto the source grid, the pixels the
    warp brought in from outside the frame left out; a motion under ``alignment.IDENTITY_PX`` leaves the
    edit unwarped. Images of different sizes are not compared pixel by pixel.
    """
    out: dict[str, Any] = {"sizes_match": source.size == edit.size, "embedding_cosine": float(round(cosine, 6))}
    if not out["sizes_match"]:
        return out
    src, compared, inside = as_rgb_array(source), as_rgb_array(edit), None
    if region_json is not None:
        mask, out["region_source"] = region_mask(source.size, json.loads(region_json)), "editor"
    else:
        alignment = estimate_alignment(src, compared)
        compared, inside = aligned_edit(src, compared, alignment)
        mask, out["region_source"] = diff_region(src, compared).mask, "diff"
        out.update(alignment.record())
    out.update(_outside(src, compared, mask, inside))
    if lpips is not None:
        out["lpips"] = round(lpips(src, compared), 6)
    return out


def _outside(source: np.ndarray, edit: np.ndarray, mask: np.ndarray, inside: np.ndarray | None) -> dict[str, float]:
    """Changed share and SSIM / PSNR outside ``mask``, over the pixels ``inside`` (all when None)."""
    exclude = mask if inside is None else mask | ~inside
    changed = mask.mean() if inside is None else (mask[inside].mean() if inside.any() else 1.0)
    return {"changed_fraction": float(round(changed, 6)),
            "ssim_outside": float(round(ssim_outside(source, edit, exclude), 6)),
            "psnr_outside": float(round(psnr_outside(source, edit, exclude), 4))}


def alignment_summary(rows: list[dict[str, Any]]) -> str:
    """One line for the stage's metadata: how many edits were aligned, how far they had moved, how many
    were rejected as misaligned."""
    aligned = [r for r in rows if r.get("align_status")]
    if not aligned:
        return "no edit was aligned: every editor reported the region it changed"
    shifts = sorted(r["align_shift_px"] for r in aligned if r["align_status"] == "warped")
    bad = sum(1 for r in aligned if "misaligned" in (r.get("auto_reject_reason") or r.get("reject_reason") or ""))
    moved = (f"{len(shifts)} warped onto their source (median shift {shifts[len(shifts) // 2]:.1f} px, "
             f"largest {shifts[-1]:.1f} px)") if shifts else "none had moved"
    return f"{len(aligned)} edits without a reported region aligned first: {moved}; {bad} rejected as misaligned"
