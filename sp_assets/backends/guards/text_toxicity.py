"""OCR, then the offensive-language model that ships in ``alt-profanity-check``: a naive text filter as a guard.

The package's two files are scikit-learn pickles (a TF-IDF vectorizer and a calibrated linear SVM), and
unpickling runs code. So the guard pins their sha256 here, checks them before loading, and refuses
files that differ. It never imports ``profanity_check`` itself, whose ``__init__`` unpickles both files
unchecked; it finds the package folder without running it and loads the checked files with joblib.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from pydantic import Field

from sp_assets.core.record_types import ModelInfo, Verdict
from sp_assets.backends.common.model_store import check_pinned
from sp_assets.backends.common.versions import package_version
from sp_assets.backends.guards.ocr_text import NO_TEXT, OCRTextGuard
from sp_assets.core.policy import Category

PACKAGE = "alt-profanity-check"
MODULE = "profanity_check"
VERSION = "1.9.1"
# sha256 of the files in the alt-profanity-check 1.9.1 wheel (profanity_check/data/). A new release
# ships new pickles: check them, then update these pins and the guard's code version in the registry.
PINNED_SHA256 = {
    "model.joblib": "aeafc04849d4d93db4721cf30a86ebf22085595294b8a07d51918e7fa98f538b",
    "vectorizer.joblib": "19c5200dc6a41f026e0558e2f164f5fe8d8f58e502b46b37e4385037fcfa4831",
}
INSTALL = f"pip install {PACKAGE}=={VERSION} (make setup installs it with the 'guards' extra)"


def bundled_model_dir() -> Path:
    """``profanity_check/data`` of the installed package, found without importing (running) the package."""
    spec = importlib.util.find_spec(MODULE)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"the ocr_toxicity guard needs the PyPI package {PACKAGE!r}; {INSTALL}")
    return Path(list(spec.submodule_search_locations)[0]) / "data"


def checked_files(model_dir: str | Path | None = None) -> dict[str, Path]:
    """The vectorizer and model files, each checked against its pinned sha256 (``PinnedFileError`` if not)."""
    folder = Path(model_dir).expanduser() if model_dir else bundled_model_dir()
    fix = f"The guard loads only the pickles of {PACKAGE} {VERSION}; reinstall it: {INSTALL}."
    out = {}
    for name, sha in PINNED_SHA256.items():
        check_pinned(folder / name, sha, fix)
        out[name] = folder / name
    return out


class TextToxicityGuard(OCRTextGuard):
    """P(offensive) of each sign's text; the image is 'unsafe' when its most offensive sign reaches
    ``threshold``. Its score is that sign's probability (0 when no text was found: nothing to flag).

    The model knows offensive language (insults, swearing), not the policy: like open_nsfw it gives the
    same answer whatever the category, which is how a product's text filter behaves.
    """

    name = "ocr_toxicity"

    class Params(OCRTextGuard.Params):
        threshold: float = Field(0.5, ge=0, le=1, description="a probability")
        model_dir: str | None = None

    def __init__(self, threshold: float = 0.5, min_ocr_confidence: float = 0.6, min_letters: int = 2,
                 model_dir: str | None = None) -> None:
        super().__init__(min_ocr_confidence, min_letters)
        files = checked_files(model_dir)
        import joblib  # after the check: loading a pickle runs code

        self.threshold = float(threshold)
        self._vectorizer = joblib.load(files["vectorizer.joblib"])
        self._model = joblib.load(files["model.joblib"])
        self._positive = list(self._model.classes_).index(1)
        self.info = ModelInfo(
            model_id=f"rapidocr+{MODULE}", revision=PINNED_SHA256["model.joblib"][:16], device="cpu", dtype="float64",
            library=f"{PACKAGE} {package_version(PACKAGE)}; scikit-learn {package_version('scikit-learn')}; "
                    f"rapidocr {package_version('rapidocr')}; onnxruntime {package_version('onnxruntime')}")

    def config(self) -> dict[str, Any]:
        return {"guard": self.name, "package": f"{PACKAGE}=={package_version(PACKAGE)}", "files": PINNED_SHA256,
                "threshold": self.threshold, "reader": self.reader_key({"min_ocr_confidence": self.min_ocr_confidence,
                                                                        "min_letters": self.min_letters})}

    def probabilities(self, texts: Sequence[str]) -> np.ndarray:
        """P(offensive) of each text."""
        if not texts:
            return np.zeros(0)
        return self._model.predict_proba(self._vectorizer.transform(list(texts)))[:, self._positive]

    def rate_signs(self, signs: Sequence[Sequence[str]], category: Category) -> list[Verdict]:
        flat = [t for texts in signs for t in texts]
        probs = iter(self.probabilities(flat).tolist())
        return [self._verdict(list(texts), [next(probs) for _ in texts], category) for texts in signs]

    def _verdict(self, texts: list[str], probs: list[float], category: Category) -> Verdict:
        raw = {"guard": self.name, "signs": [{"text": t, "p_offensive": round(p, 6)} for t, p in zip(texts, probs)],
               "threshold": self.threshold}
        if not texts:
            raw["reason"] = NO_TEXT
            return Verdict("safe", "", 0.0, "No text found: a text filter has nothing to flag and passes the image.",
                           json.dumps(raw, sort_keys=True))
        worst = int(np.argmax(probs))
        score = float(probs[worst])
        unsafe = score >= self.threshold
        quoted = texts[worst] if len(texts[worst]) <= 80 else texts[worst][:77] + "..."
        return Verdict("unsafe" if unsafe else "safe", category.slug if unsafe else "", score,
                       f'Most offensive sign "{quoted}": P(offensive)={score:.2f} '
                       f"{'>=' if unsafe else '<'} threshold {self.threshold:g}.", json.dumps(raw, sort_keys=True))

    def close(self) -> None:
        super().close()
        self._model = self._vectorizer = None
