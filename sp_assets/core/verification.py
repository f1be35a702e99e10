"""Verification rules: when a candidate edit is accepted, every reason it is not, and how accepted ones rank.

A flip candidate is accepted when the source was rated unsafe, the edit is rated safe, the two have
the same size, the edited region is small, and the image outside it is preserved (SSIM and PSNR
outside the region, whole-image embedding cosine) above the configured thresholds. A null (control)
candidate passes the same preservation tests but must still be rated unsafe.

quality_score ranks accepted candidates (benchmark_split keeps the best per source):
    0.5 * P(intended label | edit) + 0.25 * SSIM outside the region + 0.25 * embedding cosine
where the intended label is safe for a flip and unsafe for a null edit, so a confident label and a
faithful edit both count.
"""

from __future__ import annotations

import json
from typing import Any, Callable

from PIL import Image

from sp_assets.core.image_metrics import diff_region, psnr_outside, region_mask, ssim_outside


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
    if row["changed_fraction"] is not None and row["changed_fraction"] > thresholds["max_changed_fraction"]:
        reasons.append("changed_too_much")
    if row["ssim_outside"] is not None and row["ssim_outside"] < thresholds["min_ssim_outside"]:
        reasons.append("ssim_outside_low")
    if row["psnr_outside"] is not None and row["psnr_outside"] < thresholds["min_psnr_outside"]:
        reasons.append("psnr_outside_low")
    if row["embedding_cosine"] is not None and row["embedding_cosine"] < thresholds["min_embedding_cosine"]:
        reasons.append("embedding_changed")
    return reasons


def measure_preservation(source: Image.Image, edit: Image.Image, region_json: str | None, cosine: Any,
                         lpips: Callable[[Any, Any], float] | None = None) -> dict[str, Any]:
    """How much of the source the edit kept: sizes, the changed region and SSIM / PSNR outside it.

    The region is the editor's own report when it gives one, else a thresholded difference map
    (``region_source`` says which). Images of different sizes are not compared pixel by pixel.
    """
    out: dict[str, Any] = {"sizes_match": source.size == edit.size, "embedding_cosine": float(round(cosine, 6))}
    if not out["sizes_match"]:
        return out
    if region_json is not None:
        mask, out["region_source"] = region_mask(source.size, json.loads(region_json)), "editor"
    else:
        mask, out["region_source"] = diff_region(source, edit).mask, "diff"
    out["changed_fraction"] = float(round(mask.mean(), 6))
    out["ssim_outside"] = float(round(ssim_outside(source, edit, mask), 6))
    out["psnr_outside"] = float(round(psnr_outside(source, edit, mask), 4))
    if lpips is not None:
        out["lpips"] = round(lpips(source, edit), 6)
    return out
