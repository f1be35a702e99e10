"""The embedded offline demo source pool: scikit-image photographs carrying a sign with policy-relevant text.

Every image is rebuilt from a small JSON-able *recipe* (photo, sign style and box, colours, font size,
text lines, seed), so the pool needs no download and no stored files, and the same arguments always
give byte-identical PNGs.

The phrases (``demo_phrases.yaml``) are the judge's unseen test set: they are deliberately worded
differently from the policy's ``judge_examples`` and ``replacement_texts`` (tests/test_demo_pool.py
enforces it). The photographs and their licences are listed in ``demo_photos.yaml``.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, Iterator

import yaml
from PIL import Image, ImageDraw

from sp_assets.backends.base import Source, SourceItem, SourceOptions

from sp_assets.core.record_types import ModelInfo
from sp_assets.backends.common.fonts import DEFAULT_FONT, load_font
from sp_assets.backends.sources.photos import demo_photos, ood_photos
from sp_assets.core.encoding import png_bytes
from sp_assets.core.policy import DEFAULT_POLICY_PATH, Category, Policy, load_policy
from sp_assets.backends.profiles import ProfileParams

RECIPE_VERSION = 1
MAX_SIDE = 512
MIN_FONT_SIZE = 18  # below this RapidOCR starts to drop letters on busy photos

DEMO_PHOTOS: dict[str, str] = {key: photo.file for key, photo in demo_photos().items()}

# (fill, text, border) triples with strong contrast, so OCR reads every combination.
SIGN_COLOURS: tuple[tuple[tuple[int, int, int], tuple[int, int, int], tuple[int, int, int]], ...] = (
    ((255, 255, 255), (20, 20, 20), (200, 30, 30)),
    ((250, 215, 40), (15, 15, 15), (15, 15, 15)),
    ((200, 30, 35), (255, 255, 255), (255, 255, 255)),
    ((25, 40, 90), (255, 255, 255), (240, 200, 40)),
    ((30, 110, 60), (255, 255, 255), (240, 240, 240)),
    ((245, 235, 210), (120, 20, 20), (90, 60, 30)),
    ((20, 20, 20), (250, 220, 60), (250, 220, 60)),
    ((210, 230, 250), (20, 40, 100), (20, 40, 100)),
    ((250, 140, 30), (10, 10, 10), (10, 10, 10)),
)
SIGN_STYLES = ("placard", "sticker", "caption")



def _load_phrases() -> dict[str, tuple[tuple[str, ...], tuple[str, ...]]]:
    text = resources.files("sp_assets.backends.sources").joinpath("demo_phrases.yaml").read_text(encoding="utf-8")
    return {slug: (tuple(entry["violating"]), tuple(entry["allowed"])) for slug, entry in yaml.safe_load(text).items()}


# Nine default categories: (violating phrases, safe look-alikes the category's "allows" rules permit).
DEMO_PHRASES = _load_phrases()


@dataclass(frozen=True, eq=False)
class DemoImage:
    """One demo source image and the recipe that rebuilds it (``render_recipe(recipe) == image``)."""

    category: str
    intended: str  # 'unsafe' or 'safe': the label the phrase was written to have
    text: str
    photo: str
    recipe: dict[str, Any]
    image: Image.Image

    @property
    def name(self) -> str:
        """A stable, readable id such as ``o2_violence-unsafe-003-s0``."""
        r = self.recipe
        return f"{self.category}-{self.intended}-{r['index']:03d}-s{r['seed']}"

    def png_bytes(self) -> bytes:
        return png_bytes(self.image)


def demo_phrases(slug: str) -> tuple[list[str], list[str]]:
    """(violating phrases, safe look-alikes) for one of the nine default categories."""
    _check_slug(slug)
    unsafe, safe = DEMO_PHRASES[slug]
    return list(unsafe), list(safe)


def _check_slug(slug: str) -> None:
    if slug not in DEMO_PHRASES:
        raise ValueError(
            f"the demo pool has no phrases for category {slug!r}; it covers the default policy's "
            f"categories only ({', '.join(DEMO_PHRASES)}). Use policies/default.yaml, or give a "
            "custom policy a real source pool instead of the demo."
        )


def stable_seed(*parts: object) -> int:
    # Python's hash() is salted per process; sha256 keeps the layout identical across runs.
    digest = hashlib.sha256("|".join(str(p) for p in parts).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big")


def _photo_file(photo: str) -> Path:
    """Where a photo's file lies: a demo photo in scikit-image's package files, an out-of-distribution one
    (``demo_ood.yaml``) in scikit-learn's or matplotlib's."""
    import skimage.data

    if photo in DEMO_PHOTOS:
        return Path(skimage.data.__file__).parent / DEMO_PHOTOS[photo]
    held_out = ood_photos()
    if photo in held_out:
        return held_out[photo].path()
    raise ValueError(f"unknown demo photo {photo!r}; choose one of {', '.join([*DEMO_PHOTOS, *held_out])}.")


@lru_cache(maxsize=32)
def _cached_photo(photo: str) -> Image.Image:
    """The photo as RGB, long side at most MAX_SIDE. Read straight from the package that ships it."""
    path = _photo_file(photo)
    if not path.is_file():
        raise FileNotFoundError(f"photo {path} is missing; reinstall the package that ships it.")
    with Image.open(path) as raw:
        img = raw.convert("RGB")  # grayscale photos (camera, moon, coins...) become 3-channel
    scale = MAX_SIDE / max(img.size)
    if scale < 1:
        size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
        img = img.resize(size, Image.Resampling.LANCZOS)
    return img


def load_photo(photo: str) -> Image.Image:
    """A fresh copy of a demo photo (RGB, downscaled), safe to draw on."""
    return _cached_photo(photo).copy()


def split_lines(text: str, font_size: int, max_width: int, font_name: str = DEFAULT_FONT) -> list[str]:
    """One line if it fits, else the most balanced two-line split at a space."""
    font = load_font(font_size, font_name)
    if font.getlength(text) <= max_width:
        return [text]
    words = text.split()
    best: list[str] = [text]
    best_width = float("inf")
    for cut in range(1, len(words)):
        lines = [" ".join(words[:cut]), " ".join(words[cut:])]
        width = max(font.getlength(line) for line in lines)
        if width < best_width:
            best, best_width = lines, width
    return best


def sign_layout(text: str, width: int, height: int, rng: random.Random, font_name: str = DEFAULT_FONT) -> dict[str, Any]:
    """Choose style, colours, font size, lines and box for one sign. All randomness comes from rng."""
    style = rng.choice(SIGN_STYLES)
    colours = rng.choice(SIGN_COLOURS)
    # Font size scales with the photo so the sign reads like part of the scene, not a banner.
    font_size = rng.randint(max(MIN_FONT_SIZE, width // 22), max(MIN_FONT_SIZE + 2, width // 14))
    max_text_w = int(width * 0.86) - 2 * int(font_size * 0.5)
    while True:
        lines = split_lines(text, font_size, max_text_w, font_name)
        font = load_font(font_size, font_name)
        text_w = max(font.getlength(line) for line in lines)
        if (text_w <= max_text_w and len(lines) <= 2) or font_size <= MIN_FONT_SIZE:
            break
        font_size -= 1
    ascent, descent = font.getmetrics()
    line_h = ascent + descent
    line_gap = int(font_size * 0.25)
    pad_x, pad_y = int(font_size * 0.5), int(font_size * 0.4)
    box_h = len(lines) * line_h + (len(lines) - 1) * line_gap + 2 * pad_y
    border = max(2, font_size // 9)
    if style == "caption":
        # A band across the photo, at the top or bottom edge, like a meme caption or shop banner.
        box_w = width
        x0 = 0
        y0 = 0 if rng.random() < 0.5 else height - box_h
    else:
        box_w = int(text_w) + 2 * pad_x
        margin = max(4, width // 40)
        x0 = rng.randint(margin, max(margin, width - box_w - margin))
        y0 = rng.randint(margin, max(margin, height - box_h - margin))
    return {
        "style": style,
        "fill": list(colours[0]),
        "text_color": list(colours[1]),
        "border_color": list(colours[2]),
        "border": border,
        "font": font_name,
        "font_size": font_size,
        "lines": lines,
        "line_gap": line_gap,
        "box": [x0, y0, x0 + box_w, y0 + box_h],
    }


def render_recipe(recipe: dict[str, Any]) -> Image.Image:
    """Draw the sign a recipe describes onto its photo. Pure function of the recipe."""
    img = load_photo(recipe["photo"])
    draw = ImageDraw.Draw(img)
    x0, y0, x1, y1 = recipe["box"]
    fill, border_color = tuple(recipe["fill"]), tuple(recipe["border_color"])
    # PIL rectangles include the end pixel; recipe boxes are exclusive like every Box in the project.
    shape = (x0, y0, x1 - 1, y1 - 1)
    if recipe["style"] == "sticker":
        radius = recipe["font_size"] // 2
        draw.rounded_rectangle(shape, radius=radius, fill=fill, outline=border_color, width=recipe["border"])
    else:
        draw.rectangle(shape, fill=fill, outline=border_color, width=recipe["border"])
    font = load_font(recipe["font_size"], recipe["font"])
    ascent, descent = font.getmetrics()
    line_h = ascent + descent
    lines = recipe["lines"]
    block_h = len(lines) * line_h + (len(lines) - 1) * recipe["line_gap"]
    y = y0 + ((y1 - y0) - block_h) // 2
    for line in lines:
        x = x0 + ((x1 - x0) - int(font.getlength(line))) // 2
        draw.text((x, y), line, font=font, fill=tuple(recipe["text_color"]))
        y += line_h + recipe["line_gap"]
    return img


def make_recipe(
    category_slug: str, intended: str, index: int, text: str, phrase_index: int, photo: str, seed: int
) -> dict[str, Any]:
    base = load_photo(photo)
    rng = random.Random(stable_seed(RECIPE_VERSION, category_slug, intended, index, seed))
    recipe: dict[str, Any] = {
        "version": RECIPE_VERSION,
        "category": category_slug,
        "intended": intended,
        "index": index,
        "seed": seed,
        "phrase_index": phrase_index,
        "text": text,
        "photo": photo,
        "size": [base.width, base.height],
    }
    recipe.update(sign_layout(text, base.width, base.height, rng))
    return recipe


def generate_demo_pool(
    category_slug: str, n_unsafe: int = 12, n_safe: int = 6, seed: int = 0
) -> list[DemoImage]:
    """``n_unsafe`` violating then ``n_safe`` look-alike demo images for one default category.

    The seed permutes the phrase order and the photo rotation and drives every layout choice.
    When more images are asked for than there are phrases, the phrases repeat in the same order;
    image ``i`` uses photo ``(offset + i) mod 17``, so a repeated phrase lands on a different photo
    (and gets a new layout) until 17 rounds have passed.
    """
    _check_slug(category_slug)
    if n_unsafe < 0 or n_safe < 0:
        raise ValueError(f"n_unsafe and n_safe must be >= 0, got {n_unsafe} and {n_safe}.")
    photos = list(DEMO_PHOTOS)
    out: list[DemoImage] = []
    unsafe, safe = DEMO_PHRASES[category_slug]
    for intended, phrases, count in (("unsafe", unsafe, n_unsafe), ("safe", safe, n_safe)):
        order_rng = random.Random(stable_seed("order", category_slug, intended, seed))
        order = list(range(len(phrases)))
        order_rng.shuffle(order)
        offset = order_rng.randrange(len(photos))
        for i in range(count):
            phrase_index = order[i % len(order)]
            photo = photos[(offset + i) % len(photos)]
            text = phrases[phrase_index]
            recipe = make_recipe(category_slug, intended, i, text, phrase_index, photo, seed)
            out.append(
                DemoImage(
                    category=category_slug,
                    intended=intended,
                    text=text,
                    photo=photo,
                    recipe=recipe,
                    image=render_recipe(recipe),
                )
            )
    return out


def demo_slug_for(category: Category, policy: Policy) -> str:
    """The demo pool speaks the default policy; map another policy's category to it by slug or id."""
    if category.slug in DEMO_PHRASES:
        return category.slug
    try:
        return load_policy(DEFAULT_POLICY_PATH).category(category.id).slug
    except KeyError:
        raise ValueError(
            f"{policy.path}: category {category.slug!r} (id {category.id}) has no demo images; the demo pool "
            f"covers {', '.join(DEMO_PHRASES)}. Use source 'folder' with your own images for this policy."
        ) from None


class DemoSource(Source):
    """The embedded offline pool: generated on the fly, the same images for the same settings and seed."""

    origin = "demo"
    Params = ProfileParams  # none: its sizes and seed are the run's settings (SP_DEMO_UNSAFE, SP_SEED, ...)

    def __init__(self, policy: Policy):
        self.policy = policy
        self.info = ModelInfo(model_id="demo", revision=str(RECIPE_VERSION), device="none")

    def fingerprint(self, category: Category, options: SourceOptions) -> Any:
        """The pool is a pure function of these (and of the phrase and photo files)."""
        return {"recipe_version": RECIPE_VERSION, "demo": demo_slug_for(category, options.policy),
                "ref_category": category.slug, "unsafe": options.demo_unsafe_per_category,
                "safe": options.demo_safe_per_category, "seed": options.seed, "phrases": DEMO_PHRASES[
                    demo_slug_for(category, options.policy)], "photos": DEMO_PHOTOS}

    def scan(self, category: Category, options: SourceOptions) -> Iterator[SourceItem]:
        pool = generate_demo_pool(demo_slug_for(category, options.policy), n_unsafe=options.demo_unsafe_per_category,
                                  n_safe=options.demo_safe_per_category, seed=options.seed)
        for item in pool:
            yield SourceItem(
                ref=f"demo:{category.slug}:{item.intended}:{item.recipe['index']}", data=item.png_bytes(),
                suffix=".png", width=item.image.width, height=item.image.height, format="PNG",
                # The generator's intended label is the demo's human label: the phrase was written to have it.
                columns={"manifest_rating": item.intended, "manifest_category": category.slug if item.intended == "unsafe"
                         else None, "manifest_rationale": f"demo phrase written to be {item.intended}",
                         "photo_id": f"demo:{item.recipe['photo']}", "demo_intended": item.intended, "demo_text": item.text,
                         "recipe_json": json.dumps(item.recipe, sort_keys=True)})
