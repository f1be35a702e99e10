"""The size each diffusers editor pipeline reads and draws a source at, so a source is resampled once.

FLUX.1 Kontext and Qwen-Image-Edit choose their own working size from the source's aspect ratio
(Kontext: the nearest of its preferred resolutions; Qwen: about one megapixel). The rules here make
the same choice with diffusers' own table and helper, ask the pipeline to draw at that size with
``height``/``width`` (otherwise Kontext draws a square 1024x1024 whatever the source), and hand the
source over untouched when the pipeline resizes it itself.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from sp_assets.backends.profiles import ProfileError

KONTEXT = "FluxKontextPipeline"
QWEN_EDIT = "QwenImageEditPipeline"
QWEN_EDIT_PLUS = "QwenImageEditPlusPipeline"
# Call arguments a size rule sets; a profile picks another size with resolution / max_side instead.
SIZE_CALL_ARGS = {KONTEXT: ("height", "width", "max_area"), QWEN_EDIT: ("height", "width"),
                  QWEN_EDIT_PLUS: ("height", "width")}
RULES = {
    "input": "the input as given, each side rounded to the pipeline's multiple only where it is not one",
    "configured": "about resolution² pixels and/or the longer side capped at max_side (aspect kept), "
                  "resampled once by the editor; Kontext is told _auto_resize=False so it keeps that size",
    "kontext_preferred_resolution": "the Kontext preferred resolution nearest the source's aspect, the one "
                                    "FluxKontextPipeline snaps the reference to; the source goes in untouched",
    "qwen_one_megapixel": "about one megapixel at the source's aspect (diffusers' calculate_dimensions), the "
                          "size the Qwen pipeline reads the reference at; the source goes in untouched",
    "qwen_configured_output": "the reference read at about one megapixel by the pipeline (source untouched); "
                              "the output drawn at the configured size",
}

Size = tuple[int, int]  # (width, height), as PIL


@dataclass(frozen=True)
class SizePlan:
    """How one source goes through the pipeline. Sizes are (width, height)."""

    rule: str                 # a key of RULES, recorded with the result
    input_size: Size          # the image the editor hands over (the source's own size when untouched)
    reference_size: Size      # what the pipeline resizes that image to before encoding it
    draw_size: Size           # the size the output should come back at
    call_args: tuple[tuple[str, Any], ...] = ()  # height / width / max_area / _auto_resize passed
    vision_size: Size | None = None  # Qwen: the copy its vision-language encoder reads

    @property
    def batch_key(self) -> tuple[Any, ...]:
        """Candidates with equal keys can share one call: a pipeline brings a batch to one size."""
        return self.reference_size, self.draw_size, self.call_args

    def detail(self) -> dict[str, Any]:
        """What a result records of its plan: the rule, the height/width asked and the sizes read and drawn."""
        return {
            "size_rule": self.rule,
            "size_call_args": dict(self.call_args),
            "reference_size": list(self.reference_size),
            "draw_size": list(self.draw_size),
            **({"vision_size": list(self.vision_size)} if self.vision_size else {}),
        }


def target_size(width: int, height: int, resolution: int | None, max_side: int | None,
                multiple_of: int) -> Size:
    """The size the pipeline is given: scaled to about ``resolution``² pixels (aspect kept) when set,
    the longer side capped at ``max_side`` when set, each side snapped to ``multiple_of``."""
    w, h = float(width), float(height)
    if resolution:
        scale = math.sqrt(resolution * resolution / (w * h))
        w, h = w * scale, h * scale
    if max_side and max(w, h) > max_side:
        scale = max_side / max(w, h)
        w, h = w * scale, h * scale
    m = max(1, int(multiple_of))
    return max(m, int(round(w / m)) * m), max(m, int(round(h / m)) * m)


def pipeline_multiple(pipe: Any) -> int:
    """The side multiple the pipeline's image processor cuts images down to (1 when it has none)."""
    config = getattr(getattr(pipe, "image_processor", None), "config", None)
    value = getattr(config, "vae_scale_factor", None)
    return value if isinstance(value, int) and value > 0 else 1


def kontext_preferred_size(width: int, height: int, multiple: int) -> Size:
    """The preferred resolution FluxKontextPipeline (auto-resize on) snaps a reference of this size to:
    the image cut down to ``multiple`` first (as its image processor does), then the nearest aspect."""
    from diffusers.pipelines.flux.pipeline_flux_kontext import PREFERRED_KONTEXT_RESOLUTIONS

    w, h = width - width % multiple, height - height % multiple
    if w < 1 or h < 1:
        raise ValueError(f"a {width}x{height} source is smaller than FluxKontextPipeline's {multiple}-pixel "
                         f"multiple; give it a source of at least {multiple}x{multiple} pixels")
    _, pw, ph = min((abs(w / h - cw / ch), cw, ch) for cw, ch in PREFERRED_KONTEXT_RESOLUTIONS)
    return pw - pw % multiple, ph - ph % multiple


def qwen_area_size(width: int, height: int, area: int) -> Size:
    """About ``area`` pixels at this aspect, sides multiples of 32, as the Qwen edit pipelines compute it."""
    from diffusers.pipelines.qwenimage.pipeline_qwenimage_edit_plus import calculate_dimensions

    w, h = calculate_dimensions(area, width / height)[:2]
    return int(w), int(h)


def plan_size(pipeline: str, source: Size, *, resolution: int | None, max_side: int | None,
              multiple_of: int, pipe_multiple: int, auto_resize: bool = True) -> SizePlan:
    """The sizes one source is read and drawn at by ``pipeline`` (a diffusers class name)."""
    m = math.lcm(int(multiple_of), int(pipe_multiple))
    configured = target_size(*source, resolution, max_side, m) if (resolution or max_side) else None
    if pipeline == KONTEXT:
        return _kontext_plan(source, configured, m, pipe_multiple, auto_resize)
    if pipeline in (QWEN_EDIT, QWEN_EDIT_PLUS):
        return _qwen_plan(pipeline, source, configured)
    size = configured or target_size(*source, None, None, m)
    return SizePlan("configured" if configured else "input", size, size, size)


def _kontext_plan(source: Size, configured: Size | None, m: int, pipe_multiple: int,
                  auto_resize: bool) -> SizePlan:
    auto = configured is None and auto_resize
    if auto:  # the pipeline resamples the untouched source once, to the same preferred size
        size, given, rule = kontext_preferred_size(*source, pipe_multiple), source, "kontext_preferred_resolution"
    else:  # the editor resamples once; _auto_resize=False keeps the pipeline from doing it again
        size = configured or target_size(*source, None, None, m)
        given, rule = size, "configured" if configured else "input"
    # Kontext rescales height x width to max_area: asking for exactly that area keeps the size.
    args = (("height", size[1]), ("width", size[0]), ("max_area", size[0] * size[1]), ("_auto_resize", auto))
    return SizePlan(rule, given, size, size, args)


def _qwen_plan(pipeline: str, source: Size, configured: Size | None) -> SizePlan:
    from diffusers.pipelines.qwenimage.pipeline_qwenimage_edit_plus import CONDITION_IMAGE_SIZE, VAE_IMAGE_SIZE

    # Both pipelines read the reference at VAE_IMAGE_SIZE (QwenImageEditPipeline spells it 1024 * 1024);
    # the Plus pipeline's vision encoder reads a smaller copy. Either way from the source, untouched.
    reference = qwen_area_size(*source, VAE_IMAGE_SIZE)
    vision = qwen_area_size(*source, CONDITION_IMAGE_SIZE) if pipeline == QWEN_EDIT_PLUS else reference
    draw = configured or reference
    rule = "qwen_configured_output" if configured else "qwen_one_megapixel"
    return SizePlan(rule, source, reference, draw, (("height", draw[1]), ("width", draw[0])), vision)


def check_size_args(profile_name: str, pipeline: str, extra: dict[str, Any], resolution: int | None,
                    max_side: int | None) -> None:
    """Refuse extra_call_args that would fight the size rule of ``pipeline``."""
    taken = [k for k in SIZE_CALL_ARGS.get(pipeline, ()) if k in extra]
    if taken:
        raise ProfileError(
            f"editor profile {profile_name!r}: extra_call_args may not set {taken} for {pipeline}: the editor asks "
            f"for the size its rule picks and records it with every edit. Fix: remove them, and set "
            f"params.resolution (about resolution² pixels, aspect kept) or params.max_side for another size."
        )
    if pipeline == KONTEXT and extra.get("_auto_resize") is True and (resolution or max_side):
        raise ProfileError(
            f"editor profile {profile_name!r}: extra_call_args _auto_resize: true would snap the reference back "
            f"to a Kontext preferred resolution, against resolution/max_side. Fix: remove _auto_resize (the editor "
            f"turns it off when a size is configured) or remove resolution and max_side."
        )
