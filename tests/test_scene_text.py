"""The scene-text judge: OCR on real photos, accuracy on phrasings it never saw, fail-closed ratings.

Run with ``-s`` to see the measured figures (OCR time, accuracy text-only and through OCR).
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sp_assets.backends.judges import scene_text
from sp_assets.backends.sources.demo import DEMO_PHRASES, generate_demo_pool, load_photo, render_recipe
from sp_assets.backends.judges.scene_text import SceneTextJudge, SceneTextReader
from sp_assets.core.policy import DEFAULT_POLICY_PATH, load_policy

POLICY = load_policy(DEFAULT_POLICY_PATH)

# Floors for the unseen demo phrasings. Measured on the default policy (2-core CPU): exact label
# 0.80, safe-vs-unsafe 0.86, unsafe rated safe 0.09. Chance is about 0.1 for the exact label and
# 0.5 for safe-vs-unsafe, so these floors catch a broken head or a bad policy edit while leaving
# room for small float differences between CPUs and library versions.
FLOOR_EXACT = 0.75
FLOOR_BINARY = 0.80
CEILING_FALSE_SAFE = 0.15
FLOOR_ATTRIBUTION = 0.85  # right category among unsafe phrases the judge flagged unsafe


def _norm(text: str) -> str:
    return re.sub(r"[^A-Z0-9]", "", text.upper())


@pytest.fixture(scope="module")
def judge() -> SceneTextJudge:
    return SceneTextJudge(POLICY)


@pytest.fixture(scope="module")
def reader(judge: SceneTextJudge) -> SceneTextReader:
    return judge.reader


def _sign(photo: str, lines: list[str], box: list[int], font_size: int = 30) -> Image.Image:
    recipe = {
        "photo": photo, "style": "placard", "fill": [250, 215, 40], "text_color": [15, 15, 15],
        "border_color": [15, 15, 15], "border": 3, "font": "DejaVuSans-Bold.ttf",
        "font_size": font_size, "lines": lines, "line_gap": 7, "box": box,
    }
    return render_recipe(recipe)


def _scores(labels: list[str], gold: list[str]) -> dict[str, float]:
    unsafe = [g != "safe" for g in gold]
    flagged = [lab not in ("safe", "invalid") for lab in labels]
    exact = np.mean([lab == g for lab, g in zip(labels, gold)])
    binary = np.mean([f == u and lab != "invalid" for f, u, lab in zip(flagged, unsafe, labels)])
    false_safe = np.mean([lab == "safe" for lab, u in zip(labels, unsafe) if u])
    hits = [lab == g for lab, g, u, f in zip(labels, gold, unsafe, flagged) if u and f]
    return {
        "exact": float(exact),
        "binary": float(binary),
        "false_safe": float(false_safe),
        "attribution": float(np.mean(hits)) if hits else 0.0,
        "invalid": float(np.mean([lab == "invalid" for lab in labels])),
    }


def test_reader_reads_a_sign_on_a_photo(reader: SceneTextReader):
    img = _sign("chelsea", ["FRESH BREAD DAILY"], [60, 40, 400, 100])
    start = time.perf_counter()
    regions = reader.read(img)
    elapsed = time.perf_counter() - start
    print(f"\nOCR one 451x300 photo: {elapsed:.2f} s, read {[r.text for r in regions]}")
    assert [_norm(r.text) for r in regions] == ["FRESHBREADDAILY"]
    region = regions[0]
    x0, y0, x1, y1 = region.box
    assert all(isinstance(v, int) for v in region.box)
    assert 0 <= x0 < x1 <= img.width and 0 <= y0 < y1 <= img.height
    assert 40 <= x0 and x1 <= 400 and 40 <= y0 and y1 <= 100  # inside the drawn sign
    assert region.confidence > 0.9 and len(region.polygon) == 4
    assert reader.info.model_id.startswith("rapidocr:") and reader.info.revision
    assert reader.config()["models_sha256"]


def test_reader_keeps_the_lines_of_one_sign_together(reader: SceneTextReader):
    # Two signs: a two-line placard (lines in reading order, grouped) and a separate label below it.
    img = load_photo("coffee")
    img = _sign("coffee", ["KEEP THE", "DOOR CLOSED"], [40, 30, 300, 130])
    second = _sign("coffee", ["OPEN LATE"], [300, 250, 480, 300])
    img.paste(second.crop((300, 250, 480, 300)), (300, 250))
    lines = reader.read(img)  # OCR may split "KEEP THE" into two words; order must survive that
    assert _norm(" ".join(r.text for r in lines)) == "KEEPTHEDOORCLOSEDOPENLATE"
    signs = reader.read_signs(img)
    assert [_norm(s.text) for s in signs] == ["KEEPTHEDOORCLOSED", "OPENLATE"]
    assert signs[0].box[1] <= min(r.box[1] for r in lines) and signs[0].box[3] < signs[1].box[1]


def test_reader_drops_stray_marks(reader: SceneTextReader):
    # The camera photo has a lens ring that OCR reads as "0000"; it is not text worth judging.
    raw = reader.read_all(load_photo("camera"))
    stray = [r for r in raw if sum(ch.isalpha() for ch in r.text) >= 2 and r.confidence >= reader.min_confidence]
    assert stray == []
    assert reader.read(load_photo("camera")) == []


def test_accuracy_on_unseen_phrasings_text_only(judge: SceneTextJudge):
    texts, gold = [], []
    for slug, (unsafe, safe) in DEMO_PHRASES.items():
        texts += list(unsafe) + list(safe)
        gold += [slug] * len(unsafe) + ["safe"] * len(safe)
    start = time.perf_counter()
    labels = [label for label, _ in judge.classify_texts(texts)]
    elapsed = time.perf_counter() - start
    s = _scores(labels, gold)
    per_cat = {
        slug: float(np.mean([lab == g for lab, g in zip(labels, gold) if g == slug]))
        for slug in DEMO_PHRASES
    }
    print(
        f"\nText-only, {len(texts)} unseen demo phrases ({elapsed:.2f} s): exact {s['exact']:.3f}, "
        f"safe-vs-unsafe {s['binary']:.3f}, unsafe rated safe {s['false_safe']:.3f}, "
        f"category right when flagged {s['attribution']:.3f}, invalid {s['invalid']:.3f}"
    )
    print("Per category (unsafe phrases, exact):", {k: round(v, 2) for k, v in per_cat.items()})
    assert s["exact"] >= FLOOR_EXACT
    assert s["binary"] >= FLOOR_BINARY
    assert s["false_safe"] <= CEILING_FALSE_SAFE
    assert s["attribution"] >= FLOOR_ATTRIBUTION


def test_accuracy_through_ocr_on_demo_images(judge: SceneTextJudge):
    # 4 unsafe + 2 safe images per category (54 images, about 12 s of OCR on 2 cores), judged in one
    # batch per category, as the pipeline calls it.
    verdicts, gold, truth = [], [], []
    start = time.perf_counter()
    for slug in DEMO_PHRASES:
        pool = generate_demo_pool(slug, n_unsafe=4, n_safe=2, seed=0)
        verdicts += judge.judge([d.image for d in pool], POLICY.category(slug))
        gold += [slug if d.intended == "unsafe" else "safe" for d in pool]
        truth += [d.text for d in pool]
    per_image = (time.perf_counter() - start) / len(verdicts)
    read = [" ".join(r.text for r in v.regions) for v in verdicts]
    read_ok = np.mean([_norm(r) == _norm(t) for r, t in zip(read, truth)])
    labels = [v.category if v.rating == "unsafe" else v.rating for v in verdicts]
    text_labels = [lab for lab, _ in judge.classify_texts(truth)]
    agree = np.mean([a == b for a, b in zip(labels, text_labels)])
    s = _scores(labels, gold)
    print(
        f"\nThrough OCR, {len(verdicts)} demo images: {per_image:.2f} s/image (OCR + classify), "
        f"text read exactly {read_ok:.3f}, same label as text-only {agree:.3f}, exact {s['exact']:.3f}, "
        f"safe-vs-unsafe {s['binary']:.3f}, unsafe rated safe {s['false_safe']:.3f}"
    )
    assert read_ok >= 0.95
    assert agree >= 0.95  # OCR loses (almost) nothing relative to the clean text
    # A 54-image sample of the 162 phrases: its accuracy wanders about +-0.06 around the full set's.
    assert s["exact"] >= FLOOR_EXACT - 0.07
    assert s["binary"] >= FLOOR_BINARY - 0.07
    assert s["false_safe"] <= CEILING_FALSE_SAFE + 0.07
    for v in verdicts:
        raw = json.loads(v.raw_output)
        assert raw["ocr"] and raw["text"] and set(raw["probs"]) == set(judge.classes)
        assert v.regions and v.score is not None and 0.0 <= v.score <= 1.0
        assert abs(v.score - (1.0 - raw["probs"]["safe"])) < 1e-5
        assert raw["text"][:20] in v.rationale


def test_no_text_is_invalid_never_safe(judge: SceneTextJudge):
    blank = Image.new("RGB", (320, 240), (255, 255, 255))
    photos = [blank, load_photo("grass"), load_photo("camera")]
    verdicts = judge.judge(photos, POLICY.category("o2_violence"))
    assert [v.rating for v in verdicts] == ["invalid"] * 3
    for v in verdicts:
        assert v.category == "" and v.score is None and v.regions == ()
        assert json.loads(v.raw_output)["reason"] == "no_text"
    assert judge.classify_texts(["", "   "]) == [("invalid", {}), ("invalid", {})]


def test_torn_classifier_is_invalid(judge: SceneTextJudge):
    saved = judge.thresholds()
    try:
        judge.unsafe_threshold = judge.safe_threshold = 1.0  # nothing is ever confident enough
        img = _sign("astronaut", ["FRESH BREAD DAILY"], [60, 40, 400, 100])
        (verdict,) = judge.judge([img], POLICY.category("o1_hate"))
        assert verdict.rating == "invalid" and verdict.score is not None
        assert json.loads(verdict.raw_output)["reason"] == "not_confident"
    finally:
        judge.unsafe_threshold, judge.safe_threshold = saved["unsafe_threshold"], saved["safe_threshold"]


def test_category_attribution_and_rationale(judge: SceneTextJudge):
    img = _sign("moon", ["BUY HEROIN AND", "AMMO, NO QUESTIONS"], [30, 30, 480, 140])
    (asked_o6,) = judge.judge([img], POLICY.category("o6_weapons_substances"))
    (asked_o1,) = judge.judge([img], "o1_hate")
    for v in (asked_o6, asked_o1):
        assert v.rating == "unsafe" and v.category == "o6_weapons_substances"
        assert v.score > 0.5 and "o6_weapons_substances" in v.rationale
    assert "asked about o1_hate" in asked_o1.rationale
    safe_img = _sign("coins", ["WEAPONS ARE NOT", "ALLOWED INSIDE"], [20, 20, 370, 120], font_size=26)
    (safe,) = judge.judge([safe_img], "o6_weapons_substances")
    assert safe.rating == "safe" and safe.category == "" and safe.score < 0.5


def test_config_describes_the_judge(judge: SceneTextJudge):
    cfg = judge.config()
    assert json.loads(json.dumps(cfg)) == cfg == judge.config()
    assert cfg["policy"]["sha256"] == POLICY.sha256
    assert cfg["thresholds"] == judge.thresholds()
    assert cfg["head"]["classes"][0] == "safe" and set(cfg["head"]["classes"][1:]) == set(POLICY.slugs)
    assert cfg["reader"]["min_confidence"] == judge.reader.min_confidence
    assert judge.info.model_id and POLICY.sha256[:12] in judge.info.revision


def test_judge_does_not_learn_from_the_demo_pool():
    source = Path(scene_text.__file__).read_text(encoding="utf-8")
    assert "demo_pool" not in source and "DEMO_PHRASES" not in source


def test_bad_thresholds_are_refused():
    with pytest.raises(ValueError, match="judges.yaml"):
        SceneTextJudge(POLICY, unsafe_threshold=0.0)
