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

from sp_assets.backends.judges import scene_text, text_head
from sp_assets.backends.sources.demo import DEMO_PHRASES, generate_demo_pool, load_photo, render_recipe
from sp_assets.backends.judges.scene_text import SceneTextJudge, SceneTextReader
from sp_assets.backends.judges.text_head import judge_examples
from sp_assets.core.judge_examples import JudgeExamples, load_examples
from sp_assets.core.policy import DEFAULT_POLICY_PATH, load_policy

POLICY = load_policy(DEFAULT_POLICY_PATH)
EXAMPLES = judge_examples(POLICY, None)


def with_one_more_example(folder: Path, text: str, category: str = "o1_hate") -> JudgeExamples:
    """The default examples and one more allowed row, as a file of their own."""
    path = folder / "grown.examples.jsonl"
    row = {"text": text, "label": "allowed", "category": category, "origin": "test", "added": "2026-12-05"}
    path.write_bytes(EXAMPLES.path.read_bytes() + (json.dumps(row) + "\n").encode())
    return load_examples(path, set(POLICY.slugs))

# Floors for the unseen demo phrasings (DEMO_PHRASES: 108 violating, 54 look-alikes). Measured on the
# default policy (2-core CPU, scikit-learn 1.x, sentence-transformers, all-mpnet-base-v2, 8,038 training
# rows, the head judge_cv chose on them): exact 0.981, safe-vs-unsafe 0.994, unsafe rated safe 0.000
# (0 of 108), look-alikes rated safe 0.981, category right when flagged 0.981 (all-MiniLM-L6-v2 on 4,584
# rows gave 0.926 / 0.951 / 0.028 / 0.907 / 0.962). Chance is about 0.1 for the exact label.
FLOOR_EXACT = 0.95
FLOOR_BINARY = 0.97
CEILING_FALSE_SAFE = 0.03  # the target
FLOOR_LOOKALIKE_SAFE = 0.93  # the phrases' `allowed` lists: prohibitions, education, help, news ...
FLOOR_ATTRIBUTION = 0.95  # right category among unsafe phrases the judge flagged unsafe
# The held-out set (tests/data/judge_unseen.yaml, 442 texts written apart from the judge's data and never
# used for tuning) measured: exact 0.941, unsafe rated safe 0.014 (3 of 217), look-alikes rated safe
# 0.924 (prevention campaigns the weakest kind, 0.822) with all-mpnet-base-v2, 8,038 rows and the head
# judge_cv chose on them (6,594 rows: 0.939 / 0.032 / 0.933; 5,198 rows: 0.930 / 0.032 / 0.916;
# all-MiniLM-L6-v2 on 4,584 rows: 0.869 / 0.065 / 0.862), with no training text a near copy of a held-out
# one (test below). All three targets (0.90 / 0.03 / 0.90) are met; the floors sit at the target for
# unsafe rated safe and just under today's figures for the other two, so a regression fails. The rows
# were added in blind batches until the targets were met, which flatters this set slightly (it chose
# when to stop). The closest text to a flip sits 0.004 from the decision boundary (P(safe) against
# 0.5), far above run-to-run float noise.
HELD_OUT_FLOORS = {"exact": 0.93, "false_safe": 0.03, "lookalike_safe": 0.92}
HELD_OUT_TARGETS = {"exact": 0.90, "false_safe": 0.03, "lookalike_safe": 0.90}
UNSEEN_FILE = Path(__file__).parent / "data" / "judge_unseen.yaml"  # written by someone else; see its test
LOOKALIKE_KINDS = ("prohibition", "education", "help", "prevention", "news")


def _norm(text: str) -> str:
    return re.sub(r"[^A-Z0-9]", "", text.upper())


@pytest.fixture(scope="module")
def judge() -> SceneTextJudge:
    built = SceneTextJudge(POLICY)
    print(f"\nScene-text judge built in {built.build_seconds:.1f} s "
          f"({len(built.head.train_texts)} training texts, OCR and sentence model loaded)")
    return built


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


def _paste(img: Image.Image, other: Image.Image, box: list[int]) -> Image.Image:
    """``img`` with the part of ``other`` inside ``box`` (a second sign drawn on the same photo)."""
    out = img.copy()
    out.paste(other.crop(tuple(box)), tuple(box[:2]))
    return out


def _mean(values: list[bool]) -> float:
    return float(np.mean(values)) if values else float("nan")


def _scores(labels: list[str], gold: list[str]) -> dict[str, float]:
    unsafe = [g != "safe" for g in gold]
    flagged = [lab not in ("safe", "invalid") for lab in labels]
    hits = [lab == g for lab, g, u, f in zip(labels, gold, unsafe, flagged) if u and f]
    return {
        "exact": _mean([lab == g for lab, g in zip(labels, gold)]),
        "binary": _mean([f == u and lab != "invalid" for f, u, lab in zip(flagged, unsafe, labels)]),
        "false_safe": _mean([lab == "safe" for lab, u in zip(labels, unsafe) if u]),
        "lookalike_safe": _mean([lab == "safe" for lab, u in zip(labels, unsafe) if not u]),
        "attribution": _mean(hits) if hits else 0.0,
        "invalid": _mean([lab == "invalid" for lab in labels]),
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


@pytest.mark.full
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
        f"look-alikes rated safe {s['lookalike_safe']:.3f}, "
        f"category right when flagged {s['attribution']:.3f}, invalid {s['invalid']:.3f}"
    )
    print("Per category (unsafe phrases, exact):", {k: round(v, 2) for k, v in per_cat.items()})
    assert s["exact"] >= FLOOR_EXACT
    assert s["binary"] >= FLOOR_BINARY
    assert s["false_safe"] <= CEILING_FALSE_SAFE
    assert s["lookalike_safe"] >= FLOOR_LOOKALIKE_SAFE
    assert s["attribution"] >= FLOOR_ATTRIBUTION


@pytest.mark.full
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
        f"safe-vs-unsafe {s['binary']:.3f}, unsafe rated safe {s['false_safe']:.3f}, "
        f"look-alikes rated safe {s['lookalike_safe']:.3f}"
    )
    assert read_ok >= 0.95
    assert agree >= 0.95  # OCR loses (almost) nothing relative to the clean text
    # A 54-image sample of the 162 phrases: its accuracy wanders about +-0.06 around the full set's.
    assert s["exact"] >= FLOOR_EXACT - 0.07
    assert s["binary"] >= FLOOR_BINARY - 0.07
    assert s["false_safe"] <= CEILING_FALSE_SAFE + 0.07
    assert s["lookalike_safe"] >= FLOOR_LOOKALIKE_SAFE - 0.12  # 18 look-alike images: one miss is 0.06
    for v in verdicts:
        raw = json.loads(v.raw_output)
        assert raw["ocr"] and raw["text"] and set(raw["probs"]) == set(judge.classes)
        assert len(raw["blocks"]) == 1 and raw["blocks"][0]["text"] == raw["text"]  # one sign per demo image
        assert raw["decision"] == (v.category or v.rating)
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
    assert cfg["policy"] == {"name": POLICY.name}  # what it read of the rules and examples: the training rows' hash
    assert cfg["head"]["n_examples"] == 8038 and len(cfg["head"]["examples_sha256"]) == 64
    assert cfg["thresholds"] == judge.thresholds()
    assert cfg["head"]["classes"][0] == "safe" and set(cfg["head"]["classes"][1:]) == set(POLICY.slugs)
    assert cfg["reader"]["min_confidence"] == judge.reader.min_confidence
    assert judge.info.model_id and POLICY.rules_sha256[:12] in judge.info.revision
    assert f"examples-{EXAMPLES.sha256[:12]}" in judge.info.revision


def test_judge_does_not_learn_from_the_demo_pool():
    for module in (scene_text, text_head):
        source = Path(module.__file__).read_text(encoding="utf-8")
        assert "demo_pool" not in source and "DEMO_PHRASES" not in source and "demo_phrases" not in source


# -- block by block ---------------------------------------------------------------------------------

PLACARD = ["BUY HEROIN AND", "AMMO, NO QUESTIONS"]


def _placard_with_caption(caption: str, *, photo: str = "astronaut") -> Image.Image:
    """A big placard at the top, and a small caption far below it (the photo's own text)."""
    img = _sign(photo, PLACARD, [30, 30, 480, 140])
    small = _sign(photo, [caption], [250, 440, 500, 490], font_size=18)
    return _paste(img, small, [250, 440, 500, 490])


def test_unsafe_placard_beside_other_text_keeps_only_the_placard_as_evidence(judge: SceneTextJudge):
    img = _placard_with_caption("CITY BAKERY EST. 1987")
    (verdict,) = judge.judge([img], POLICY.category("o6_weapons_substances"))
    raw = json.loads(verdict.raw_output)
    assert [_norm(b["text"]) for b in raw["blocks"]] == ["BUYHEROINANDAMMONOQUESTIONS", "CITYBAKERYEST1987"]
    assert [b["decision"] for b in raw["blocks"]] == ["o6_weapons_substances", "safe"]
    assert verdict.rating == "unsafe" and verdict.category == "o6_weapons_substances"
    assert _norm(" ".join(r.text for r in verdict.regions)) == "BUYHEROINANDAMMONOQUESTIONS"
    assert all(r.box[3] <= 140 for r in verdict.regions)  # nothing from the caption
    assert len(raw["ocr"]) > len(verdict.regions)  # the caption was read, and left alone
    assert raw["evidence_blocks"] == [raw["lead_block"]] == [0]
    assert abs(verdict.score - (1.0 - raw["blocks"][0]["probs"]["safe"])) < 1e-5
    assert "1 other text block" in verdict.rationale


def test_safe_placard_beside_garbled_text_is_invalid_not_safe(judge: SceneTextJudge):
    img = _sign("astronaut", ["WEAPONS ARE NOT", "ALLOWED INSIDE"], [30, 30, 480, 140])
    junk = _sign("astronaut", ["XQZV BRWK TLMPH"], [250, 440, 500, 490], font_size=18)
    (verdict,) = judge.judge([_paste(img, junk, [250, 440, 500, 490])], "o6_weapons_substances")
    raw = json.loads(verdict.raw_output)
    assert [b["decision"] for b in raw["blocks"]] == ["safe", "invalid"]
    assert raw["blocks"][1]["reason"] == raw["reason"] == "unreadable"
    assert verdict.rating == "invalid" and verdict.category == ""
    assert len(verdict.regions) == len(raw["ocr"])  # nothing is offending: every region is kept
    assert "not legible" in verdict.rationale


def _reading(*signs: tuple[str, int]) -> list[dict]:
    """OCR lines as ``read`` returns them: one line per sign, at the given top y, far apart."""
    return [{"box": [20, y, 300, y + 30], "text": text, "confidence": 0.99, "polygon": []} for text, y in signs]


def test_a_torn_block_makes_the_image_invalid(judge: SceneTextJudge, monkeypatch: pytest.MonkeyPatch):
    real = judge.head.probs

    def torn_for_the_second(texts):
        out = real(texts)
        for i, t in enumerate(texts):
            if "garden" in t.lower():
                out[i] = 1.0 / len(judge.classes)  # no class wins: the head is torn
        return out

    monkeypatch.setattr(judge.head, "probs", torn_for_the_second)
    (verdict,) = judge.decide([_reading(("FREE CHESS CLUB TONIGHT", 20), ("COMMUNITY GARDEN OPEN", 300))],
                              POLICY.category("o1_hate"))
    raw = json.loads(verdict.raw_output)
    assert [b["decision"] for b in raw["blocks"]] == ["safe", "invalid"]
    assert verdict.rating == "invalid" and raw["reason"] == "not_confident" and raw["lead_block"] == 1


def test_two_offending_blocks_are_both_evidence(judge: SceneTextJudge):
    reading = _reading(("BUY HEROIN HERE", 20), ("OPEN 9 TO 5", 200), ("KILL THEM ALL", 400))
    (verdict,) = judge.decide([reading], POLICY.category("o2_violence"))
    raw = json.loads(verdict.raw_output)
    assert [b["decision"] for b in raw["blocks"]] == ["o6_weapons_substances", "safe", "o2_violence"]
    assert verdict.rating == "unsafe"
    assert [r.text for r in verdict.regions] == ["BUY HEROIN HERE", "KILL THEM ALL"]
    lead = raw["blocks"][raw["lead_block"]]
    assert verdict.category == lead["decision"] and raw["evidence_blocks"] == [0, 2]
    assert abs(verdict.score - max(1.0 - raw["blocks"][i]["probs"]["safe"] for i in (0, 2))) < 1e-5


def test_every_safe_block_makes_a_safe_image_with_every_region(judge: SceneTextJudge):
    reading = _reading(("FRESH BREAD DAILY", 20), ("PARKING AT THE REAR", 300))
    (verdict,) = judge.decide([reading], "o1_hate")
    raw = json.loads(verdict.raw_output)
    assert verdict.rating == "safe" and len(verdict.regions) == 2
    assert abs(verdict.score - max(1.0 - b["probs"]["safe"] for b in raw["blocks"])) < 1e-5


# -- the held-out set another engineer writes ---------------------------------------------------------

def _unseen_set() -> tuple[list[str], list[str], list[str]]:
    """(texts, gold labels, kind) from tests/data/judge_unseen.yaml; kind is 'violating' or a look-alike kind."""
    import yaml

    data = yaml.safe_load(UNSEEN_FILE.read_text(encoding="utf-8")) or {}
    texts, gold, kinds = [], [], []
    unknown = sorted(set(data) - set(POLICY.slugs))
    assert not unknown, f"{UNSEEN_FILE}: categories not in the default policy: {unknown}"
    for slug, entry in data.items():
        violating = list(entry.get("violating") or [])
        texts += violating
        gold += [slug] * len(violating)
        kinds += ["violating"] * len(violating)
        for kind, items in (entry.get("lookalikes") or {}).items():
            texts += list(items)
            gold += ["safe"] * len(items)
            kinds += [kind] * len(items)
    return texts, gold, kinds


@pytest.mark.full
@pytest.mark.skipif(not UNSEEN_FILE.is_file(), reason=f"held-out set {UNSEEN_FILE.name} not written yet "
                    "(another engineer writes it; it is never used for tuning)")
def test_accuracy_on_the_held_out_set(judge: SceneTextJudge):
    texts, gold, kinds = _unseen_set()
    assert texts, f"{UNSEEN_FILE} holds no texts"
    labels = [label for label, _ in judge.classify_texts(texts)]
    s = _scores(labels, gold)
    present = [k for k in dict.fromkeys(kinds) if k != "violating"]
    order = [k for k in LOOKALIKE_KINDS if k in present] + [k for k in present if k not in LOOKALIKE_KINDS]
    per_kind = {k: _mean([lab == "safe" for lab, kd in zip(labels, kinds) if kd == k]) for k in order}
    print(
        f"\nHeld-out set, {len(texts)} texts ({kinds.count('violating')} violating): exact {s['exact']:.3f}, "
        f"unsafe rated safe {s['false_safe']:.3f}, look-alikes rated safe {s['lookalike_safe']:.3f}, "
        f"invalid {s['invalid']:.3f}"
    )
    print("Look-alikes rated safe, per kind:", {k: round(v, 3) for k, v in per_kind.items()})
    met = {"exact": s["exact"] >= HELD_OUT_TARGETS["exact"],
           "false_safe": s["false_safe"] <= HELD_OUT_TARGETS["false_safe"],
           "lookalike_safe": s["lookalike_safe"] >= HELD_OUT_TARGETS["lookalike_safe"]}
    print("Targets:", HELD_OUT_TARGETS, "met:", met)
    assert s["exact"] >= HELD_OUT_FLOORS["exact"]
    assert s["false_safe"] <= HELD_OUT_FLOORS["false_safe"]
    assert s["lookalike_safe"] >= HELD_OUT_FLOORS["lookalike_safe"]


@pytest.mark.full  # a text-similarity sweep over every training row: minutes
@pytest.mark.skipif(not UNSEEN_FILE.is_file(), reason=f"held-out set {UNSEEN_FILE.name} not written yet")
def test_held_out_texts_are_not_copies_of_training_texts():
    """A held-out text the judge trained on (or on a near copy of it) would flatter the held-out figures."""
    from tests.test_demo_pool import near_copy

    trained = {r.text for r in EXAMPLES.rows} | {t for c in POLICY.categories for t in (*c.forbids, *c.allows)}
    copies = [f"{text!r} is {why} {q!r}" for text in _unseen_set()[0] for q in trained
              if (why := near_copy(text, q))]
    assert not copies, f"remove these rows from {EXAMPLES.path}:\n" + "\n".join(copies[:20])


@pytest.mark.full  # two cold encodes of the MiniLM training set: ~100 s on 2 cores
def test_training_embeddings_come_back_from_the_cache_unchanged(tmp_path, monkeypatch):
    """A second build reads the training vectors from SP_CACHE_DIR and classifies exactly as the first.

    Run on the lighter all-MiniLM-L6-v2 (the cache does not depend on the model; a cold all-mpnet-base-v2
    build encodes for minutes)."""
    from sp_assets.backends.common.model_store import models_dir
    from sp_assets.backends.judges.text_head import MINILM, PolicyTextHead, embedding_cache_dir

    monkeypatch.setenv("SP_MODELS_DIR", str(models_dir()))  # the installed models stay where they are
    monkeypatch.setenv("SP_CACHE_DIR", str(tmp_path))
    texts = ["NO WEAPONS ALLOWED", "WE WILL BREAK YOUR BONES", "SEX EDUCATION WORKSHOP", "FREE PUPPIES"]
    cold = PolicyTextHead(POLICY, sentence_model=MINILM)
    assert cold.head_source == "fitted"  # the shipped head is all-mpnet-base-v2's: passed over
    files = list(embedding_cache_dir().glob("*.sqlite"))
    assert len(files) == 1 and embedding_cache_dir().is_relative_to(tmp_path)
    start = time.perf_counter()
    warm = PolicyTextHead(POLICY, sentence_model=MINILM, reuse_head=False)  # vectors cached, head fitted again
    print(f"\nwarm build {time.perf_counter() - start:.1f} s")
    assert np.array_equal(cold.probs(texts), warm.probs(texts))
    files[0].write_bytes(b"not a database")  # a damaged cache is recomputed, not trusted
    again = PolicyTextHead(POLICY, sentence_model=MINILM, reuse_head=False)
    assert np.array_equal(cold.probs(texts), again.probs(texts))
    cached = PolicyTextHead(POLICY, sentence_model=MINILM)  # the head fitted above, read back
    assert cached.head_source == "cache" and np.array_equal(cold.probs(texts), cached.probs(texts))


def test_a_shipped_head_is_used_only_for_the_rows_it_was_fitted_on(tmp_path, monkeypatch, caplog):
    """A head shipped beside the examples spares a new machine the encoding; it is checked against a
    rebuild, and passed over (saying so) once the examples change. No path changes a probability."""
    from sp_assets.backends.common.model_store import models_dir
    from sp_assets.backends.judges.build_head import main as build_head
    from sp_assets.backends.judges.rbf_head import RBFMachine, save_head
    from sp_assets.backends.judges.text_head import MINILM, PolicyTextHead

    monkeypatch.setenv("SP_MODELS_DIR", str(models_dir()))
    texts = ["NO WEAPONS ALLOWED", "WE WILL BREAK YOUR BONES", "SPRING FLOWER MARKET ON SUNDAY"]
    grown = with_one_more_example(tmp_path, "SPRING FLOWER MARKET ON SUNDAY")
    args = [str(POLICY.path), "--examples", str(grown.path), "--sentence-model", MINILM]
    assert build_head(args) == 0  # fitted here, written beside the examples
    fitted = PolicyTextHead(POLICY, grown, sentence_model=MINILM, reuse_head=False)
    shipped = fitted.shipped_head_path()
    assert shipped == tmp_path / "grown.examples.head.safetensors" and shipped.is_file()
    assert build_head(args + ["--check"]) == 0

    with monkeypatch.context() as new_machine:  # nothing cached: the shipped file, no encoding
        new_machine.setenv("SP_CACHE_DIR", str(tmp_path / "new-machine"))
        encoded: list[str] = []
        new_machine.setattr(PolicyTextHead, "canonical_vectors", lambda self, s: encoded.extend(s))
        on_arrival = PolicyTextHead(POLICY, grown, sentence_model=MINILM)
    assert on_arrival.head_source == f"shipped:{shipped.name}" and not encoded
    assert np.array_equal(fitted.probs(texts), on_arrival.probs(texts))

    arrays = fitted._head.arrays()
    arrays["dual_coef"] = arrays["dual_coef"] * 1.01  # a shipped file that a rebuild does not reproduce
    save_head(shipped, RBFMachine(**arrays), fitted.head_key, fitted.head_info())
    assert build_head(args + ["--check"]) == 1

    lines = grown.path.read_text(encoding="utf-8").splitlines()
    grown.path.write_text("\n".join(lines[:-1]) + "\n", encoding="utf-8")  # the example taken out again
    with caplog.at_level("INFO"):
        refit = PolicyTextHead(POLICY, load_examples(grown.path, set(POLICY.slugs)), sentence_model=MINILM)
    assert refit.head_source in ("fitted", "cache") and "was built for other examples" in caplog.text


@pytest.mark.full  # fits the default head again: minutes on 2 cores when the vector cache is empty
def test_the_shipped_default_head_matches_a_rebuild():
    """policies/default.examples.head.safetensors is what the rebuild script makes from the examples."""
    from sp_assets.backends.judges.build_head import main as build_head

    assert build_head([str(DEFAULT_POLICY_PATH), "--check"]) == 0


def test_a_strings_vector_is_the_same_bits_whatever_it_is_encoded_with(judge: SceneTextJudge):
    """The per-text cache may be filled all at once or a few strings at a time (a policy that grows by one
    example): each string's vector must not depend on the others."""
    head = judge.head
    strings = ["NO WEAPONS ALLOWED", "a sign that says: no weapons allowed", "bones", "FREE PUPPIES",
               "WE WILL BREAK YOUR BONES", "knife", "ammo", "SPRING FLOWER MARKET ON SUNDAY"]
    together = head.canonical_vectors(strings)
    halves = np.vstack([head.canonical_vectors(strings[:3]), head.canonical_vectors(strings[3:])])
    alone = np.vstack([head.canonical_vectors([s]) for s in strings])
    assert np.array_equal(together, halves) and np.array_equal(together, alone)


def test_worker_processes_give_the_same_bits_as_one_process(judge: SceneTextJudge, monkeypatch):
    """A cold cache is encoded in several processes; the vectors must be those of one process."""
    head = judge.head
    strings = [f"{word} {n}" for n in range(40) for word in ("NO WEAPONS", "free puppies today", "knife")]
    alone = head.canonical_vectors(strings)
    monkeypatch.setattr(text_head, "PARALLEL_MIN_BATCHES", 1)
    monkeypatch.setenv(text_head.ENCODE_WORKERS_ENV_VAR, "2")
    started: list[int] = []
    real = text_head.PolicyTextHead._encode_batches

    def counting(self, batches):
        started.append(min(text_head.encode_workers(), len(batches) // text_head.PARALLEL_MIN_BATCHES))
        return real(self, batches)

    monkeypatch.setattr(text_head.PolicyTextHead, "_encode_batches", counting)
    shared = head.canonical_vectors(strings)
    assert started == [2]  # two worker processes did the encoding
    assert np.array_equal(alone, shared)


def test_a_failed_encoding_worker_leaves_its_batches_to_the_caller(tmp_path, caplog):
    """A worker that cannot load the encoder delivers nothing and says why; the caller encodes those batches."""
    from sp_assets.backends.judges.encode_workers import encode_in_workers

    batches = [["no weapons"] * 32, ["free puppies"] * 32, ["knife"] * 32]
    got = sorted(encode_in_workers(batches, str(tmp_path / "no-model"), 64, 768, 2), key=lambda r: r[0])
    assert [(i, v) for i, v in got] == [(0, None), (1, None), (2, None)]
    assert "encoding worker stopped after 0 of" in caplog.text and "no-model" in caplog.text


def test_one_more_example_encodes_only_its_own_strings(tmp_path, monkeypatch):
    """Adding a labelled example costs its own strings, not every example again."""
    from sp_assets.backends.common.model_store import models_dir
    from sp_assets.backends.judges.text_head import MINILM, PolicyTextHead

    monkeypatch.setenv("SP_MODELS_DIR", str(models_dir()))
    PolicyTextHead(POLICY, sentence_model=MINILM, reuse_head=False)  # fills the vector cache (or finds it filled)
    grown = with_one_more_example(tmp_path, "SPRING FLOWER MARKET ON SUNDAY")
    encoded: list[str] = []
    real = PolicyTextHead.canonical_vectors

    def counting(self, strings):
        encoded.extend(strings)
        return real(self, strings)

    monkeypatch.setattr(PolicyTextHead, "canonical_vectors", counting)
    PolicyTextHead(POLICY, grown, sentence_model=MINILM)
    assert set(encoded) <= {"spring flower market on sunday", "a sign that says: spring flower market on sunday",
                            "spring", "flower", "market", "sunday"}, encoded
