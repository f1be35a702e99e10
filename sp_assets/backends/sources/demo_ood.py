"""The sample-efficiency probe's out-of-distribution pairs: signs on photographs, in fonts and with phrasings
that the demo pool (the probe's whole training pool) never held.

Each pair draws a violating phrase and a safe phrase on the same photo, in the same sign (style, colours,
place, font and size), so its two images differ only in the words: a counterfactual pair by construction,
labelled by what the phrases were written to mean. ``demo_ood.yaml`` holds the photos, fonts and phrases;
the same arguments always give byte-identical PNGs.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from sp_assets.backends.common.fonts import load_font
from sp_assets.backends.sources.demo import load_photo, render_recipe, sign_layout, split_lines, stable_seed
from sp_assets.backends.sources.photos import ood_spec
from sp_assets.core.encoding import png_bytes

OOD_VERSION = 1


@dataclass(frozen=True)
class HeldOutPair:
    """One out-of-distribution pair: the same sign with a violating and with a safe phrase."""

    pair_id: str  # e.g. ood-o2_violence-01
    category: str
    photo: str
    font: str
    recipes: dict[str, dict[str, Any]]  # 'unsafe' / 'safe' -> the recipe that draws that half

    def png(self, half: str) -> bytes:
        return png_bytes(render_recipe(self.recipes[half]))


def ood_categories() -> list[str]:
    """The category slugs the out-of-distribution set has phrases for (the default policy's)."""
    return list(ood_spec()["categories"])


def ood_pairs(slug: str, seed: int = 0) -> list[HeldOutPair]:
    """The out-of-distribution pairs of one default-policy category (none for a category it lacks).

    Pair i takes the i-th violating and the i-th safe phrase in a seeded order, on the photo and font
    combination ``(offset + i) mod (photos x fonts)``.
    """
    spec = ood_spec()
    entry = spec["categories"].get(slug)
    if entry is None:
        return []
    combos = [(photo, font) for photo in spec["photos"] for font in spec["fonts"]]
    order = random.Random(stable_seed("ood-order", OOD_VERSION, slug, seed))
    violating, safe = list(entry["violating"]), list(entry["safe"])
    order.shuffle(violating)
    order.shuffle(safe)
    offset = order.randrange(len(combos))
    out = []
    for i, (bad, good) in enumerate(zip(violating, safe)):
        photo, font = combos[(offset + i) % len(combos)]
        rng = random.Random(stable_seed("ood-sign", OOD_VERSION, slug, i, seed))
        recipes = _pair_recipes({"unsafe": bad, "safe": good}, photo, font, rng)
        out.append(HeldOutPair(f"ood-{slug}-{i:02d}", slug, photo, font, recipes))
    return out


def _pair_recipes(texts: dict[str, str], photo: str, font: str, rng: random.Random) -> dict[str, dict[str, Any]]:
    """One sign for both texts: the layout each text would get from the same draws, at the smaller of their
    font sizes, in a box that holds the wider of the two."""
    base = load_photo(photo)
    width, height = base.size
    state = rng.getstate()
    layouts = {}
    for half, text in texts.items():
        rng.setstate(state)
        layouts[half] = sign_layout(text, width, height, rng, font)
    sign = dict(layouts["unsafe"])
    size = min(layout["font_size"] for layout in layouts.values())
    max_text_w = int(width * 0.86) - 2 * int(size * 0.5)
    lines = {half: split_lines(text, size, max_text_w, font) for half, text in texts.items()}
    face = load_font(size, font)
    text_w = max(face.getlength(line) for half_lines in lines.values() for line in half_lines)
    ascent, descent = face.getmetrics()
    n_lines = max(len(half_lines) for half_lines in lines.values())
    line_gap, pad_x, pad_y = int(size * 0.25), int(size * 0.5), int(size * 0.4)
    box_w = width if sign["style"] == "caption" else int(text_w) + 2 * pad_x
    box_h = n_lines * (ascent + descent) + (n_lines - 1) * line_gap + 2 * pad_y
    x0 = min(sign["box"][0], max(0, width - box_w))
    if sign["style"] == "caption":  # a band along the top or the bottom edge, as the demo draws one
        y0 = 0 if sign["box"][1] == 0 else height - box_h
    else:
        y0 = min(sign["box"][1], max(0, height - box_h))
    sign.update(font_size=size, line_gap=line_gap, border=max(2, size // 9), box=[x0, y0, x0 + box_w, y0 + box_h])
    return {half: {**sign, "version": OOD_VERSION, "photo": photo, "size": [width, height], "text": text,
                   "intended": half, "lines": lines[half]} for half, text in texts.items()}
