"""The offline instruction writer: fills a template from the judge's finding and the policy's edit guidance."""

from __future__ import annotations

import hashlib
from typing import Sequence

from PIL import Image
from pydantic import Field

from sp_assets.backends.base import InstructionWriter
from sp_assets.backends.profiles import ProfileParams

from sp_assets.core.record_types import Instruction, ModelInfo, Verdict
from sp_assets.core.policy import Category

KEEP = (
    "everything else: the people, animals, objects, background, lighting and camera view, "
    "and the sign's position, size, font and colour"
)


class TemplateWriter(InstructionWriter):
    """Writes one instruction per variant.

    For scene text (the judge reported text regions) the instruction replaces the text with one of
    the category's ``replacement_texts``. Every replacement is ranked by a hash of (seed, the image's
    pixels, the source text, the replacement) and the variants take the first ones: reproducible,
    distinct between variants, and spread evenly over the list, also for sources that carry the same
    text on different photographs. Adding a text to the list leaves the others' order unchanged.
    Without regions it writes a prose instruction from the rationale and guidance, which a
    text-region editor cannot apply but a diffusion editor can.
    """

    class Params(ProfileParams):
        variants: int = Field(1, ge=1)

    def __init__(self, variants: int = 1):
        self.variants = variants
        self.info = ModelInfo(model_id="template", revision="2", device="none")

    def write(
        self,
        image: Image.Image,
        verdict: Verdict,
        category: Category,
        n_variants: int | None = None,
        seed: int = 0,
    ) -> list[Instruction]:
        n = n_variants or self.variants
        found = " / ".join(r.text for r in verdict.regions).strip()
        ranked = _ranked(category.replacement_texts, seed, _pixels_sha256(image), found) if verdict.regions else []
        out: list[Instruction] = []
        for variant in range(n):
            if ranked:
                if variant >= len(ranked):
                    break
                replacement = ranked[variant]
                text = (
                    f'Replace the text "{found}" with "{replacement}" in the same place, size, font '
                    f"and colour. {category.edit_guidance}"
                )
                target = {
                    "regions": [r.as_dict() for r in verdict.regions],
                    "replacement": replacement,
                    "original": found,
                }
            else:
                if variant > 0:
                    break
                reason = verdict.rationale or f"content that violates {category.id} {category.title}"
                text = f"Edit the image so it no longer shows {reason.rstrip('.')}. {category.edit_guidance}"
                target = {}
            out.append(Instruction(text=text, target=target, keep=f"Keep {KEEP}.", variant=variant))
        return out


    def write_null(self, image: Image.Image, verdict: Verdict, category: Category, seed: int) -> Instruction | None:
        """Redraw the same text in the same place: the image goes through the editor (inpainting and
        re-rendering leave their traces) but still says what made it unsafe."""
        if not verdict.regions:
            return super().write_null(image, verdict, category, seed)
        found = " / ".join(r.text for r in verdict.regions).strip()
        return Instruction(
            text=f'Redraw the text "{found}" exactly as it is, in the same place, size, font and colour.',
            # The editor wraps the text onto the sign's lines itself, so give it the words, not the slashes.
            target={"regions": [r.as_dict() for r in verdict.regions],
                    "replacement": " ".join(r.text for r in verdict.regions), "original": found, "null_edit": True},
            keep=f"Keep {KEEP}.",
            variant=0,
        )


def _pixels_sha256(image: Image.Image) -> str:
    """The image's identity for the choice (its decoded pixels: the writer is not given the file)."""
    return hashlib.sha256(f"{image.mode}:{image.size}:".encode("ascii") + image.tobytes()).hexdigest()


def _ranked(options: Sequence[str], seed: int, image_key: str, text: str) -> list[str]:
    """The distinct replacements, in the order of a hash of (seed, image, source text, replacement)."""
    def key(option: str) -> str:
        return hashlib.sha256(f"{seed}:{image_key}:{text}:{option}".encode("utf-8")).hexdigest()

    return sorted(dict.fromkeys(options), key=lambda o: (key(o), o))
