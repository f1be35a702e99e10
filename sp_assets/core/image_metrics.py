"""Preservation metrics: how much of an image stayed the same outside the edited region."""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple, Sequence

import numpy as np
from PIL import Image
from scipy import ndimage
from skimage.metrics import structural_similarity

from sp_assets.core.record_types import Box

#: PSNR reported for two identical images (the MSE is 0, so the true value is infinite).
#: A finite cap keeps the value storable and comparable; any real difference scores below it.
PSNR_CAP_DB = 100.0

#: skimage's default SSIM window (uniform, 7x7).
SSIM_WIN_SIZE = 7

ImageLike = Image.Image | np.ndarray


class DiffRegion(NamedTuple):
    """Where two images differ: one box per connected changed area, and the pixel mask."""

    boxes: list[Box]
    mask: np.ndarray  # bool, HxW
    changed_pixels: int


def as_rgb_array(image: ImageLike) -> np.ndarray:
    """An HxWx3 uint8 array from a PIL image or an array (grey arrays are repeated to RGB)."""
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"), dtype=np.uint8)
    arr = np.asarray(image)
    if arr.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image array, got dtype {arr.dtype}; convert to uint8 0-255 first")
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4):
        raise ValueError(f"expected an HxW, HxWx3 or HxWx4 image array, got shape {arr.shape}")
    return arr[:, :, :3]


def _pair(a: ImageLike, b: ImageLike) -> tuple[np.ndarray, np.ndarray]:
    xa, xb = as_rgb_array(a), as_rgb_array(b)
    if xa.shape != xb.shape:
        raise ValueError(
            f"images differ in size: {xa.shape[1]}x{xa.shape[0]} vs {xb.shape[1]}x{xb.shape[0]} "
            "(width x height); resize the edit back to the source size before comparing"
        )
    return xa, xb


def _check_mask(mask: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    m = np.asarray(mask, dtype=bool)
    if m.shape != shape[:2]:
        raise ValueError(
            f"mask shape {m.shape} does not match the image ({shape[0]}, {shape[1]}); "
            "build it with region_mask((width, height), boxes)"
        )
    return m


def region_mask(size: tuple[int, int], boxes: Sequence[Sequence[int]] | None, pad: int = 0) -> np.ndarray:
    """A bool HxW mask, True inside any box (grown by ``pad`` pixels, clipped to the image).

    ``size`` is (width, height), as PIL gives it; boxes are (x0, y0, x1, y1) with exclusive ends.
    """
    width, height = int(size[0]), int(size[1])
    mask = np.zeros((height, width), dtype=bool)
    for box in boxes or ():
        x0, y0, x1, y1 = (int(v) for v in box)
        x0, y0 = max(0, x0 - pad), max(0, y0 - pad)
        x1, y1 = min(width, x1 + pad), min(height, y1 + pad)
        if x1 > x0 and y1 > y0:
            mask[y0:y1, x0:x1] = True
    return mask


def ssim_outside(a: ImageLike, b: ImageLike, mask: np.ndarray, win_size: int = SSIM_WIN_SIZE) -> float:
    """Mean SSIM over the pixels outside ``mask``, from skimage's per-pixel SSIM map.

    Two groups of pixels are left out of the mean:
    - pixels within ``win_size // 2`` of the mask: their SSIM window overlaps edited pixels, so
      an unchanged pixel there would be penalised for its neighbour's edit;
    - the image border of the same width, which skimage also crops from its own mean (the
      filter there sees reflected padding). With an empty mask the result equals
      ``structural_similarity(a, b)``.
    Returns 0.0 when no pixel is left (the region covers the image): nothing is shown to be
    preserved, and 0.0 (unlike NaN) fails a threshold test written either way round.
    """
    xa, xb = _pair(a, b)
    m = _check_mask(mask, xa.shape)
    _, smap = structural_similarity(
        xa, xb, win_size=win_size, channel_axis=2, data_range=255, full=True
    )
    smap = smap.mean(axis=2)
    r = win_size // 2
    ignore = ndimage.binary_dilation(m, structure=np.ones((2 * r + 1, 2 * r + 1), bool)) if m.any() else m.copy()
    if r:
        ignore[:r, :] = ignore[-r:, :] = True
        ignore[:, :r] = ignore[:, -r:] = True
    keep = ~ignore
    if not keep.any():
        return 0.0
    return float(smap[keep].mean(dtype=np.float64))


def psnr_outside(a: ImageLike, b: ImageLike, mask: np.ndarray, cap: float = PSNR_CAP_DB) -> float:
    """PSNR in dB (data range 255) from the MSE over the pixels outside ``mask``.

    Identical outside pixels give ``cap`` (default 100 dB) rather than infinity; values above
    the cap are clipped to it. 0.0 when the mask covers the whole image (fails any threshold).
    """
    xa, xb = _pair(a, b)
    m = _check_mask(mask, xa.shape)
    keep = ~m
    if not keep.any():
        return 0.0
    diff = xa[keep].astype(np.float64) - xb[keep].astype(np.float64)
    mse = float(np.mean(diff * diff))
    if mse == 0.0:
        return float(cap)
    return float(min(cap, 10.0 * np.log10(255.0**2 / mse)))


def diff_region(
    a: ImageLike,
    b: ImageLike,
    threshold: int = 24,
    close_px: int = 3,
    min_area: int = 16,
) -> DiffRegion:
    """The changed region of an edit whose editor does not report one.

    A pixel is changed when any channel differs by more than ``threshold`` (0-255); the default
    ignores the small everywhere-drift of a VAE round trip while catching real edits (use 0 for
    exact editors). Changed pixels closer than ``close_px`` are joined (a morphological closing)
    so one edited object gives one box; components smaller than ``min_area`` pixels are noise
    and dropped. Boxes are (x0, y0, x1, y1), exclusive ends, sorted top-to-bottom, left-to-right.
    """
    xa, xb = _pair(a, b)
    delta = np.abs(xa.astype(np.int16) - xb.astype(np.int16)).max(axis=2)
    changed = delta > threshold
    joined = changed
    if close_px > 0 and changed.any():
        st = np.ones((2 * close_px + 1, 2 * close_px + 1), bool)
        # Pad before closing so areas touching the image edge are not eroded away.
        padded = np.pad(changed, close_px + 1)
        joined = ndimage.binary_closing(padded, structure=st)[close_px + 1 : -close_px - 1, close_px + 1 : -close_px - 1]
        joined |= changed
    labels, n = ndimage.label(joined)
    boxes: list[Box] = []
    mask = np.zeros_like(changed)
    for idx, sl in enumerate(ndimage.find_objects(labels), start=1):
        if sl is None:
            continue
        comp = (labels[sl] == idx) & changed[sl]
        if int(comp.sum()) < min_area:
            continue
        mask[sl] |= comp
        # Box the changed pixels themselves, not the pixels the closing filled in.
        rows, cols = np.nonzero(comp)
        y0, x0 = sl[0].start, sl[1].start
        boxes.append((x0 + int(cols.min()), y0 + int(rows.min()), x0 + int(cols.max()) + 1, y0 + int(rows.max()) + 1))
    boxes.sort(key=lambda bx: (bx[1], bx[0]))
    return DiffRegion(boxes=boxes, mask=mask, changed_pixels=int(mask.sum()))


# LPIPS backbones torchvision caches under torch.hub's checkpoints folder.
LPIPS_BACKBONES = {"alex": "alexnet-owt-7be5be79.pth", "vgg": "vgg16-397923af.pth", "squeeze": "squeezenet1_1-b8a52dc0.pth"}


def lpips_scorer(net: str = "alex") -> tuple[Any, str]:
    """(score(a, b) -> LPIPS distance over the whole image, note), or (None, why it is skipped).

    LPIPS needs torchvision's pretrained backbone, which this project does not install (PyPI's
    torchvision does not import beside the CPU torch wheel). It runs only when torchvision imports
    and the backbone is already in the torch hub cache, so it never downloads.
    """
    if net not in LPIPS_BACKBONES:
        raise ValueError(f"LPIPS net {net!r} is not one of {', '.join(LPIPS_BACKBONES)}")
    import importlib
    import importlib.util

    try:
        # Optional, never a dependency: only a torchvision the user installed themselves is used.
        if importlib.util.find_spec("torchvision") is None:
            raise ImportError("not installed")
        importlib.import_module("torchvision")
    except Exception as exc:  # noqa: BLE001 - any import failure means LPIPS cannot run here
        return None, f"LPIPS skipped: torchvision is not importable ({type(exc).__name__}); install it with a matching torch to enable LPIPS"
    import torch

    checkpoint = Path(torch.hub.get_dir()) / "checkpoints" / LPIPS_BACKBONES[net]
    if not checkpoint.is_file():
        return None, f"LPIPS skipped: {net} backbone weights are not cached at {checkpoint}"
    from torchmetrics.image.lpip import LearnedPerceptualImagePatchSimilarity

    metric = LearnedPerceptualImagePatchSimilarity(net_type=net, normalize=True).eval()

    def score(a: ImageLike, b: ImageLike) -> float:
        xa, xb = _pair(a, b)
        to_tensor = lambda x: torch.from_numpy(x).permute(2, 0, 1)[None].float() / 255.0  # noqa: E731
        with torch.no_grad():
            return float(metric(to_tensor(xa), to_tensor(xb)))

    return score, f"LPIPS ({net}, whole image)"
