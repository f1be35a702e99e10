"""The embedded offline judge: RapidOCR reads scene text, a head over sentence embeddings rates each sign of it."""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Sequence

import numpy as np
from PIL import Image
from pydantic import Field

from sp_assets.backends.base import Judge, TwoStep
from sp_assets.backends.profiles import ProfileParams

from sp_assets.core.record_types import ModelInfo, TextRegion, Verdict
from sp_assets.backends.common.threads import worker_threads
from sp_assets.backends.common.versions import package_version
from sp_assets.backends.judges.text_head import (
    DEFAULT_SENTENCE_MODEL,
    INVALID_LABEL,
    SAFE_LABEL,
    HeadSettings,
    PolicyTextHead,
    decision,
    files_sha256,
    judge_examples,
    normalise,
)
from sp_assets.core.hashing import sha256_json
from sp_assets.core.policy import Category, Policy

JUDGE_VERSION = "2"  # 2: each sign group judged on its own; unsafe evidence = the offending blocks only
logger = logging.getLogger(__name__)

# The three ONNX files rapidocr 3.x ships in its wheel. Passing their paths explicitly keeps rapidocr
# off its download path: given only a model directory, it re-downloads any file whose sha256 differs.
_RAPIDOCR_MODELS = {
    "Det": "PP-OCRv6_det_small.onnx",
    "Cls": "ch_ppocr_mobile_v2.0_cls_mobile.onnx",
    "Rec": "PP-OCRv6_rec_small.onnx",
}


def _letters(text: str) -> int:
    return sum(ch.isalpha() for ch in text)


def _union_box(regions: Sequence[TextRegion]) -> tuple[int, int, int, int]:
    return (
        min(r.box[0] for r in regions),
        min(r.box[1] for r in regions),
        max(r.box[2] for r in regions),
        max(r.box[3] for r in regions),
    )


def _same_row(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> bool:
    shared = min(a[3], b[3]) - max(a[1], b[1])
    return shared > 0.5 * min(a[3] - a[1], b[3] - b[1])


def _reading_order(regions: Sequence[TextRegion]) -> list[TextRegion]:
    """Rows top to bottom (regions sharing most of their height are one row), left to right in a row."""
    rows: list[list[TextRegion]] = []
    for r in sorted(regions, key=lambda r: ((r.box[1] + r.box[3]) / 2, r.box[0])):
        for row in rows:
            if _same_row(row[0].box, r.box):
                row.append(r)
                break
        else:
            rows.append([r])
    return [r for row in rows for r in sorted(row, key=lambda r: r.box[0])]


def group_signs(lines: Sequence[TextRegion]) -> list[list[TextRegion]]:
    """Group OCR detections that belong to one sign, each group in reading order.

    Two detections join when they are words of one row (OCR sometimes splits a short line at a wide
    space) or stacked lines of similar height with little gap between them. Groups come top to
    bottom, then left to right.
    """
    n = len(lines)
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i in range(n):
        for j in range(i + 1, n):
            a, b = lines[i].box, lines[j].box
            ha, hb = a[3] - a[1], b[3] - b[1]
            if max(ha, hb) > 1.6 * max(1, min(ha, hb)):
                continue  # a caption and a headline of very different size are separate texts
            gap_x = max(a[0], b[0]) - min(a[2], b[2])
            gap_y = max(a[1], b[1]) - min(a[3], b[3])
            words_of_a_row = _same_row(a, b) and gap_x <= 1.5 * min(ha, hb)
            stacked_lines = gap_y <= 0.9 * min(ha, hb) and gap_x < 0
            if words_of_a_row or stacked_lines:
                parent[find(i)] = find(j)
    groups: dict[int, list[TextRegion]] = {}
    for i in range(n):
        groups.setdefault(find(i), []).append(lines[i])
    ordered = [_reading_order(g) for g in groups.values()]
    return sorted(ordered, key=lambda g: (_union_box(g)[1], _union_box(g)[0]))


class SceneTextReader:
    """RapidOCR 3.x with the models from its wheel, loaded once per instance; CPU only.

    ``read`` returns one TextRegion per OCR detection, usually a line and sometimes a word of one
    (the editor re-flows text line by line, so it needs them unmerged). It drops reads below
    ``min_confidence`` and signs with fewer than ``min_letters`` letters in all: on the demo photos
    the detector finds stray "0" / "0000" shapes in coins, lenses and eyes.
    """

    def __init__(self, *, min_confidence: float = 0.6, min_letters: int = 2, use_cls: bool = True):
        try:
            import rapidocr
            from rapidocr import RapidOCR
        except ImportError as exc:  # onnxruntime is not a hard dependency of the rapidocr wheel
            raise ImportError(
                "the scene-text reader needs `rapidocr>=3.10,<4` and `onnxruntime`; install both "
                "(pip install 'rapidocr>=3.10,<4' onnxruntime)."
            ) from exc
        model_dir = Path(rapidocr.__file__).parent / "models"
        paths = {role: model_dir / name for role, name in _RAPIDOCR_MODELS.items()}
        missing = [str(p) for p in paths.values() if not p.is_file()]
        if missing:
            raise FileNotFoundError(
                f"rapidocr model files missing: {', '.join(missing)}. This reader only uses the models "
                f"shipped in the rapidocr {package_version('rapidocr')} wheel; reinstall `rapidocr>=3.10,<4`."
            )
        self.min_confidence = float(min_confidence)
        self.min_letters = int(min_letters)
        self.use_cls = bool(use_cls)
        params: dict[str, Any] = {"Global.log_level": "error", "Global.use_cls": self.use_cls}
        threads = worker_threads()
        if threads:  # a worker of a pool: its share of the cores, not all of them
            params["EngineConfig.onnxruntime.intra_op_num_threads"] = threads
            params["EngineConfig.onnxruntime.inter_op_num_threads"] = 1
        for role, path in paths.items():
            params[f"{role}.model_path"] = str(path)
        self._engine = RapidOCR(params=params)
        # rapidocr's logger has its own handler and does not propagate; silence it once more in case
        # another instance set it back to INFO.
        logging.getLogger("RapidOCR").setLevel(logging.ERROR)
        self._lock = threading.Lock()  # the engine keeps per-call state; one call at a time
        ordered = tuple(str(paths[r]) for r in ("Det", "Cls", "Rec"))
        self._model_files = ordered
        self.info = ModelInfo(
            model_id="rapidocr:" + "+".join(Path(p).stem for p in ordered),
            revision=files_sha256(ordered)[:16],
            device="cpu",
            dtype="float32",
            library=f"rapidocr {package_version('rapidocr')}; onnxruntime {package_version('onnxruntime')}",
        )

    def config(self) -> dict[str, Any]:
        return {
            "reader": "rapidocr",
            "models": [Path(p).name for p in self._model_files],
            "models_sha256": files_sha256(self._model_files),
            "min_confidence": self.min_confidence,
            "min_letters": self.min_letters,
            "use_cls": self.use_cls,
            "versions": {"rapidocr": package_version("rapidocr"), "onnxruntime": package_version("onnxruntime")},
        }

    def read_all(self, image: Image.Image) -> list[TextRegion]:
        """Every line RapidOCR returns, unfiltered, in its order."""
        rgb = image if image.mode == "RGB" else image.convert("RGB")
        width, height = rgb.size
        with self._lock:
            out = self._engine(rgb)  # a PIL image: rapidocr converts RGB to BGR itself
        boxes = getattr(out, "boxes", None)
        txts = getattr(out, "txts", None)
        scores = getattr(out, "scores", None)
        if boxes is None or txts is None or scores is None:
            return []
        regions: list[TextRegion] = []
        for poly, text, score in zip(boxes, txts, scores):
            pts = np.asarray(poly, dtype=float).reshape(-1, 2)
            x0 = int(np.clip(np.floor(pts[:, 0].min()), 0, width))
            y0 = int(np.clip(np.floor(pts[:, 1].min()), 0, height))
            x1 = int(np.clip(np.ceil(pts[:, 0].max()) + 1, 0, width))
            y1 = int(np.clip(np.ceil(pts[:, 1].max()) + 1, 0, height))
            if x1 <= x0 or y1 <= y0:
                continue
            polygon = tuple((round(float(x), 2), round(float(y), 2)) for x, y in pts)
            regions.append(
                TextRegion(box=(x0, y0, x1, y1), text=str(text).strip(), confidence=float(score), polygon=polygon)
            )
        return regions

    def read(self, image: Image.Image) -> list[TextRegion]:
        """OCR detections worth judging, sign by sign, each sign in reading order."""
        kept = [r for r in self.read_all(image) if r.text and r.confidence >= self.min_confidence]
        # Judge letters per sign, not per detection: a lone "4" beside "CLASS ROOM" belongs to the sign.
        signs = [g for g in group_signs(kept) if sum(_letters(r.text) for r in g) >= self.min_letters]
        return [line for sign in signs for line in sign]

    def read_signs(self, image: Image.Image) -> list[TextRegion]:
        """One region per sign: lines merged (text joined by spaces, box = union, confidence = min)."""
        signs = []
        for group in group_signs(self.read(image)):
            x0, y0, x1, y1 = _union_box(group)
            signs.append(
                TextRegion(
                    box=(x0, y0, x1, y1),
                    text=" ".join(r.text for r in group),
                    confidence=min(r.confidence for r in group),
                    polygon=((x0, y0), (x1, y0), (x1, y1), (x0, y1)),
                )
            )
        return signs


@dataclass(frozen=True)
class BlockDecision:
    """The judge's decision on one block of text (one sign's lines, see ``group_signs``)."""

    text: str
    lines: tuple[int, ...]  # indices of the block's lines among the image's OCR lines
    label: str  # 'safe', a category slug, or 'invalid'
    probs: dict[str, float]  # class -> probability ({} when the text is empty)
    reason: str = ""  # why 'invalid': 'not_confident' or 'unreadable'

    @property
    def unsafe(self) -> bool:
        return self.label not in (SAFE_LABEL, INVALID_LABEL)

    @property
    def p_unsafe(self) -> float | None:
        return 1.0 - self.probs[SAFE_LABEL] if self.probs else None

    def as_dict(self) -> dict[str, Any]:
        out = {"text": self.text, "lines": list(self.lines), "decision": self.label,
               "probs": {k: round(v, 6) for k, v in self.probs.items()}}
        return {**out, "reason": self.reason} if self.reason else out


def _quote(text: str) -> str:
    return text if len(text) <= 80 else text[:77] + "..."


class SceneTextJudge(TwoStep, Judge):
    """Judge scene text against a policy, block by block, with a head fitted on the policy's own examples.

    Each block of text (one sign's lines) is classified on its own (``PolicyTextHead``: an RBF SVC over
    sentence-model features, trained on ``judge_examples``). The image is unsafe if
    any block is, invalid if any block is invalid (unreadable or the head torn: fail closed), else
    safe; no readable text at all is invalid. An unsafe verdict's regions are the offending blocks'
    lines only, so the editor leaves the photo's other text alone.

    The head's defaults are ``HeadSettings``'s, chosen by 5-fold cross-validation on the default
    policy's examples only (``benchmarks/judge_cv.py`` with all-mpnet-base-v2, the default
    ``sentence_model``), never on the demo phrases or the held-out set.
    """

    class Params(ProfileParams):
        unsafe_threshold: float = Field(0.5, gt=0, le=1)
        safe_threshold: float = Field(0.5, gt=0, le=1)
        min_ocr_confidence: float = Field(0.6, ge=0, le=1)
        min_letters: int = Field(2, ge=0)
        head: Literal["svc", "logreg"] = HeadSettings.kind  # see HeadSettings for these five
        C: float = Field(HeadSettings.C, gt=0)
        safe_weight: float = Field(HeadSettings.safe_weight, gt=0)
        safe_prior: float = Field(HeadSettings.safe_prior, gt=0)
        bow_weight: float = Field(HeadSettings.bow_weight, ge=0)
        min_known_share: float = Field(0.5, ge=0, le=1)
        use_rules: bool = True
        use_replacements: bool = False
        batch_size: int = Field(64, ge=1)
        model_path: str | None = None
        sentence_model: str = DEFAULT_SENTENCE_MODEL
        examples: str | None = None

    def __init__(
        self,
        policy: Policy,
        *,
        unsafe_threshold: float = 0.5,
        safe_threshold: float = 0.5,
        min_ocr_confidence: float = 0.6,
        min_letters: int = 2,
        head: str = HeadSettings.kind,
        C: float = HeadSettings.C,
        safe_weight: float = HeadSettings.safe_weight,
        safe_prior: float = HeadSettings.safe_prior,
        bow_weight: float = HeadSettings.bow_weight,
        min_known_share: float = 0.5,
        use_rules: bool = True,
        use_replacements: bool = False,
        batch_size: int = 64,
        model_path: str | None = None,
        sentence_model: str = DEFAULT_SENTENCE_MODEL,
        examples: str | None = None,
        reader: SceneTextReader | None = None,
    ):
        settings = HeadSettings(kind=head, C=C, safe_weight=safe_weight, safe_prior=safe_prior, bow_weight=bow_weight)
        start = time.perf_counter()
        self.policy = policy
        self.unsafe_threshold = float(unsafe_threshold)
        self.safe_threshold = float(safe_threshold)
        self.examples = judge_examples(policy, examples)
        self.reader = reader or SceneTextReader(min_confidence=min_ocr_confidence, min_letters=min_letters)
        self.head = PolicyTextHead(policy, self.examples, settings, use_rules=use_rules, use_replacements=use_replacements,
                                   batch_size=batch_size, model_path=model_path, min_known_share=min_known_share,
                                   sentence_model=sentence_model)
        self.classes: list[str] = self.head.classes
        self.info = ModelInfo(
            model_id=f"scene_text:{self.reader.info.model_id}+{sentence_model}+{settings.kind}",
            revision=(
                f"ocr-{self.reader.info.revision}/st-{self.head.encoder_sha256[:16]}/policy-{policy.rules_sha256[:12]}"
                f"/examples-{self.examples.sha256[:12]}"
            ),
            device="cpu",
            dtype="float32",
            library=(
                f"{self.reader.info.library}; sentence-transformers {package_version('sentence-transformers')}; "
                f"torch {package_version('torch')}; scikit-learn {package_version('scikit-learn')}"
            ),
        )
        self.build_seconds = time.perf_counter() - start
        logger.info("scene-text judge built in %.1f s (%d examples)", self.build_seconds, len(self.head.train_texts))

    # -- classification -------------------------------------------------------------------------

    def _classify(self, texts: Sequence[str]) -> list[tuple[str, dict[str, float], str]]:
        """(label, probabilities, reason) for each text (the rule: ``text_head.decision``; no readable text
        is 'invalid' before the head is asked). Illegible text is 'invalid' whatever the head says."""
        keep = [i for i, t in enumerate(texts) if normalise(t)]
        probs = self.head.probs([texts[i] for i in keep])
        results: list[tuple[str, dict[str, float], str]] = [(INVALID_LABEL, {}, "no_text") for _ in texts]
        for row, i in enumerate(keep):
            p = {c: float(v) for c, v in zip(self.classes, probs[row])}
            if not self.head.legible(texts[i]):
                results[i] = (INVALID_LABEL, p, "unreadable")
                continue
            label = decision(probs[row], self.classes, self.unsafe_threshold, self.safe_threshold)
            results[i] = (label, p, "not_confident" if label == INVALID_LABEL else "")
        return results

    def classify_texts(self, texts: Sequence[str]) -> list[tuple[str, dict[str, float]]]:
        """Label each text 'safe', a category slug, or 'invalid' (empty, illegible or not confident either way)."""
        return [(label, probs) for label, probs, _ in self._classify(texts)]

    @classmethod
    def policy_sha256(cls, policy: Policy, category: Category, params: dict[str, Any]) -> str:
        """What a decision reads besides the image and the profile: every category's rules (the head is
        trained on all of them) and the examples file's rows. Nothing else in the memo depends on the
        examples, so adding one redoes only these decisions."""
        examples = judge_examples(policy, params.get("examples"))
        return sha256_json({"rules": policy.rules_sha256, "examples": examples.content_sha256})

    def thresholds(self) -> dict[str, float]:
        return {"unsafe_threshold": self.unsafe_threshold, "safe_threshold": self.safe_threshold}

    def config(self) -> dict[str, Any]:
        """Everything that changes this judge's output; hash it for provenance and caching."""
        return {
            "judge": "scene_text",
            "judge_version": JUDGE_VERSION,
            # The rules and examples it reads are in head.examples_sha256 (its training rows) and
            # head.classes; the memo key adds the rules' hash (policy_dependency 'policy').
            "policy": {"name": self.policy.name},
            "reader": self.reader.config(),
            "encoder": {"model": self.head.sentence_model, "sha256": self.head.encoder_sha256, "normalize": True},
            "head": self.head.config(),
            "blocks": "per_sign_group",
            "thresholds": self.thresholds(),
            "versions": {
                d: package_version(d) for d in ("sentence-transformers", "torch", "scikit-learn", "transformers")
            },
        }

    def close(self) -> None:
        """Drop the models; the judge cannot be used afterwards."""
        self.head.close()
        self.reader = None

    # -- judging images -------------------------------------------------------------------------

    def judge(self, images: Sequence[Image.Image], category: Category | str) -> list[Verdict]:
        return self.decide(self.read(images), category)

    @classmethod
    def reader_key(cls, params: dict[str, Any]) -> dict[str, Any]:
        """What the OCR reading depends on: the reader's settings and the rapidocr wheel (its models),
        not the policy or the classifier."""
        return {"reader": "rapidocr", "min_confidence": float(params.get("min_ocr_confidence", 0.6)),
                "min_letters": int(params.get("min_letters", 2)), "use_cls": True, "models": sorted(_RAPIDOCR_MODELS.items()),
                "versions": {"rapidocr": package_version("rapidocr"), "onnxruntime": package_version("onnxruntime")}}

    @classmethod
    def make_reader(cls, params: dict[str, Any]) -> "OcrOnly":
        """The reading half alone (OCR, no sentence model, no head): what a worker that only reads builds."""
        return OcrOnly(SceneTextReader(min_confidence=float(params.get("min_ocr_confidence", 0.6)),
                                       min_letters=int(params.get("min_letters", 2))))

    def read(self, images: Sequence[Image.Image]) -> list[list[dict[str, Any]]]:
        """The scene text of each image (OCR lines as dicts): the same for every category."""
        return [[r.as_dict() for r in self.reader.read(im)] for im in images]

    def decide(self, readings: Sequence[Sequence[dict[str, Any]]], category: Category | str) -> list[Verdict]:
        """One verdict per reading; every block of every image goes through the head in one batch."""
        asked = category.slug if isinstance(category, Category) else self.policy.category(category).slug
        images = [[TextRegion.from_dict(d) for d in regions] for regions in readings]
        blocks = [self.blocks(regions) for regions in images]
        results = iter(self._classify([text for image in blocks for text, _ in image]))
        verdicts = []
        for regions, image in zip(images, blocks):
            decided = [BlockDecision(text, lines, *next(results)) for text, lines in image]
            verdicts.append(self._verdict(regions, decided, asked))
        return verdicts

    @staticmethod
    def blocks(regions: Sequence[TextRegion]) -> list[tuple[str, tuple[int, ...]]]:
        """The image's blocks of text (sign groups, top to bottom): (text, indices of its lines)."""
        index = {id(r): i for i, r in enumerate(regions)}
        return [(" ".join(r.text for r in group), tuple(index[id(r)] for r in group))
                for group in group_signs(list(regions))]

    def _verdict(self, regions: list[TextRegion], blocks: list[BlockDecision], asked: str) -> Verdict:
        raw: dict[str, Any] = {
            "judge": "scene_text",
            "asked_category": asked,
            "ocr": [r.as_dict() for r in regions],
            "text": ". ".join(b.text for b in blocks),  # separate signs read as separate sentences
            "blocks": [b.as_dict() for b in blocks],
            "thresholds": self.thresholds(),
        }
        if not blocks:
            raw.update(decision=INVALID_LABEL, probs={}, reason="no_text")
            return Verdict("invalid", "", None, "No readable text found; the scene-text judge sees only text, "
                           "so it cannot call the image safe.", json.dumps(raw, sort_keys=True), tuple(regions))
        unsafe = [b for b in blocks if b.unsafe]
        if unsafe:
            return self._unsafe_verdict(regions, blocks, unsafe, asked, raw)
        scores = [b.p_unsafe for b in blocks if b.p_unsafe is not None]
        score = max(scores) if scores else None
        invalid = [b for b in blocks if b.label == INVALID_LABEL]
        if invalid:
            lead = invalid[0]
            raw.update(decision=INVALID_LABEL, probs=lead.as_dict()["probs"], reason=lead.reason,
                       lead_block=blocks.index(lead))
            return Verdict("invalid", "", score, self._invalid_rationale(lead, len(blocks)),
                           json.dumps(raw, sort_keys=True), tuple(regions))
        lead = max(blocks, key=lambda b: b.p_unsafe)
        raw.update(decision=SAFE_LABEL, probs=lead.as_dict()["probs"], lead_block=blocks.index(lead))
        p_safe = min(b.probs[SAFE_LABEL] for b in blocks)
        return Verdict("safe", "", score, f'Read "{_quote(raw["text"])}": allowed text (P(safe)={p_safe:.2f}'
                       f"{' for the least sure block' if len(blocks) > 1 else ''}).",
                       json.dumps(raw, sort_keys=True), tuple(regions))

    def _unsafe_verdict(self, regions: list[TextRegion], blocks: list[BlockDecision], unsafe: list[BlockDecision],
                        asked: str, raw: dict[str, Any]) -> Verdict:
        lead = max(unsafe, key=lambda b: b.p_unsafe)  # the first of equals: blocks come in reading order
        raw.update(decision=lead.label, probs=lead.as_dict()["probs"], lead_block=blocks.index(lead),
                   evidence_blocks=[blocks.index(b) for b in unsafe])
        title = self.policy.category(lead.label).title
        other = "" if lead.label == asked else f" (asked about {asked})"
        more = f"; {len(unsafe) - 1} more offending block(s)" if len(unsafe) > 1 else ""
        rest = len(blocks) - len(unsafe)
        left = f" {rest} other text block(s) left as they are." if rest else ""
        evidence = tuple(regions[i] for b in unsafe for i in b.lines)
        return Verdict(
            "unsafe", lead.label, lead.p_unsafe,
            f'Read "{_quote(lead.text)}": violates {lead.label} ({title}), P(unsafe)={lead.p_unsafe:.2f}'
            f"{other}{more}.{left}",
            json.dumps(raw, sort_keys=True), evidence,
        )

    @staticmethod
    def _invalid_rationale(lead: BlockDecision, n_blocks: int) -> str:
        where = f"; {n_blocks - 1} other text block(s) in the image" if n_blocks > 1 else ""
        if lead.reason == "unreadable":
            return (f'Read "{_quote(lead.text)}" but it is not legible text{where}; the judge cannot call '
                    "an image with unreadable text safe.")
        best = max(lead.probs, key=lead.probs.get)
        return (f'Read "{_quote(lead.text)}" but the classifier is not confident (best {best} at '
                f"{lead.probs[best]:.2f}, P(unsafe)={lead.p_unsafe:.2f}){where}.")


class OcrOnly:
    """A scene-text judge's reading without its classifier: the same ``read`` code on the same reader."""

    def __init__(self, reader: SceneTextReader):
        self.reader = reader
        self.info = reader.info

    read = SceneTextJudge.read

    def close(self) -> None:
        self.reader = None
