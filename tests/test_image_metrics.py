"""Tests for the preservation metrics on synthetic edits with a known changed region."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from skimage import data
from skimage.metrics import structural_similarity

from sp_assets.core.image_metrics import (
    PSNR_CAP_DB,
    diff_region,
    psnr_outside,
    region_mask,
    ssim_outside,
)

BOX = (100, 150, 220, 200)  # x0, y0, x1, y1


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    return data.astronaut()  # 512x512 RGB uint8


def edited_inside(photo: np.ndarray, box=BOX) -> np.ndarray:
    out = photo.copy()
    x0, y0, x1, y1 = box
    out[y0:y1, x0:x1] = 255 - out[y0:y1, x0:x1]
    return out


def test_region_mask_pads_and_clips():
    m = region_mask((50, 40), [(10, 5, 20, 15), (45, 35, 60, 60)], pad=2)
    assert m.shape == (40, 50) and m.dtype == bool
    assert m[3:17, 8:22].all() and m.sum() == 14 * 14 + 7 * 7
    assert not region_mask((50, 40), None).any()
    assert not region_mask((50, 40), [(60, 60, 70, 70)]).any()


def test_identical_images_score_perfect(photo):
    mask = region_mask((512, 512), [BOX])
    assert ssim_outside(photo, photo, mask) == pytest.approx(1.0)
    assert psnr_outside(photo, photo, mask) == PSNR_CAP_DB
    assert isinstance(psnr_outside(photo, photo, mask), float)


def test_change_only_inside_mask_keeps_outside_metrics_perfect(photo):
    edited = edited_inside(photo)
    mask = region_mask((512, 512), [BOX])
    assert ssim_outside(photo, edited, mask) == pytest.approx(1.0)
    assert psnr_outside(photo, edited, mask) == PSNR_CAP_DB
    # Without the region the same edit is visible.
    empty = np.zeros_like(mask)
    assert ssim_outside(photo, edited, empty) < 0.99
    assert psnr_outside(photo, edited, empty) < 30


def test_change_outside_mask_lowers_both(photo):
    edited = edited_inside(photo, (300, 300, 400, 380))
    mask = region_mask((512, 512), [BOX])
    assert ssim_outside(photo, edited, mask) < 0.99
    assert psnr_outside(photo, edited, mask) < 40


def test_mild_noise_outside_gives_finite_psnr_below_cap(photo):
    rng = np.random.default_rng(0)
    noisy = np.clip(photo.astype(int) + rng.integers(-3, 4, photo.shape), 0, 255).astype(np.uint8)
    mask = region_mask((512, 512), [BOX])
    psnr = psnr_outside(photo, noisy, mask)
    assert 35 < psnr < PSNR_CAP_DB
    assert 0.8 < ssim_outside(photo, noisy, mask) < 1.0


def test_empty_mask_matches_skimage_mean(photo):
    edited = edited_inside(photo)
    expected = structural_similarity(photo, edited, channel_axis=2, data_range=255)
    assert ssim_outside(photo, edited, np.zeros((512, 512), bool)) == pytest.approx(expected, abs=1e-9)


def test_accepts_pil_images(photo):
    a, b = Image.fromarray(photo), Image.fromarray(edited_inside(photo))
    mask = region_mask(a.size, [BOX])
    assert ssim_outside(a, b, mask) == pytest.approx(1.0)


def test_mask_covering_everything_fails_closed(photo):
    full = np.ones((512, 512), bool)
    assert ssim_outside(photo, photo, full) == 0.0
    assert psnr_outside(photo, photo, full) == 0.0


def test_size_mismatch_names_both_sizes(photo):
    small = photo[:200, :300]
    mask = np.zeros((512, 512), bool)
    for fn in (lambda: ssim_outside(photo, small, mask), lambda: psnr_outside(photo, small, mask),
               lambda: diff_region(photo, small)):
        with pytest.raises(ValueError, match="512x512 vs 300x200"):
            fn()
    with pytest.raises(ValueError, match="mask shape"):
        ssim_outside(photo, photo, np.zeros((10, 10), bool))


def test_diff_region_finds_the_known_box(photo):
    edited = edited_inside(photo)
    found = diff_region(photo, edited)
    assert found.boxes == [BOX]
    assert found.mask.shape == (512, 512)
    x0, y0, x1, y1 = BOX
    assert found.mask[y0:y1, x0:x1].mean() > 0.9 and not found.mask[:y0].any()


def test_diff_region_two_boxes_and_noise_floor(photo):
    edited = edited_inside(edited_inside(photo), (400, 20, 450, 60))
    rng = np.random.default_rng(1)
    # A VAE-like drift everywhere stays under the threshold.
    drift = np.clip(edited.astype(int) + rng.integers(-5, 6, photo.shape), 0, 255).astype(np.uint8)
    found = diff_region(photo, drift)
    assert found.boxes == [(400, 20, 450, 60), BOX]
    assert diff_region(photo, photo).boxes == []
    # With threshold 0 every drifted pixel counts.
    assert diff_region(photo, drift, threshold=0).changed_pixels > 0.5 * 512 * 512


def test_lpips_is_skipped_with_a_reason_when_it_cannot_run_offline():
    from sp_assets.core.image_metrics import lpips_scorer

    import importlib
    import importlib.util

    score, note = lpips_scorer()
    try:
        if importlib.util.find_spec("torchvision") is None:
            raise ImportError("not installed")
        importlib.import_module("torchvision")
    except Exception:  # noqa: BLE001
        assert score is None and note.startswith("LPIPS skipped: torchvision")
        return
    if score is None:
        assert "not cached" in note
    else:
        a = np.zeros((32, 32, 3), np.uint8)
        assert score(a, a) == pytest.approx(0.0, abs=1e-6)
