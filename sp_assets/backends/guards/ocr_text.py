"""Guards that read an image's scene text and filter the text, as content filters in products do.

The reading is the scene_text judge's own: the same reader settings give the same memo key
(``SceneTextJudge.reader_key``) and the same value (OCR lines as dicts), so an image the judge already
read while labelling or verifying is not read again. Only the text filter after it differs.

No text found means the filter has nothing to flag: the image passes ('safe', P(unsafe) 0). That is
what such filters do in products, so it is what the benchmark measures; the scene_text judge, which
must not call an unread image safe, says 'invalid' there instead.
"""

from __future__ import annotations

import threading
from typing import Any, Mapping, Sequence

from PIL import Image
from pydantic import Field

from sp_assets.backends.base import Guard, TwoStep
from sp_assets.backends.profiles import ProfileParams

from sp_assets.core.record_types import TextRegion, Verdict
from sp_assets.backends.judges.scene_text import SceneTextJudge, SceneTextReader, group_signs
from sp_assets.core.policy import Category

NO_TEXT = "no_text"


def sign_texts(reading: Sequence[Mapping[str, Any]]) -> list[str]:
    """One text per sign of a stored reading (lines grouped as ``SceneTextReader.read_signs`` groups them)."""
    regions = [TextRegion.from_dict(dict(d)) for d in reading]
    return [" ".join(r.text for r in sign) for sign in group_signs(regions)]


class OCRTextGuard(TwoStep, Guard):
    """OCR with the scene-text judge's reader, then ``rate_signs`` on the text of each sign.

    The reader loads on the first ``read``: when every reading is in the memo (the judge made them),
    only the text filter is loaded.
    """

    name = "ocr_text"

    class Params(ProfileParams):
        """The reader's settings, the scene_text judge's words for them (the same settings share readings)."""

        min_ocr_confidence: float = Field(0.6, ge=0, le=1)
        min_letters: int = Field(2, ge=0)

    def __init__(self, min_ocr_confidence: float = 0.6, min_letters: int = 2):
        self.min_ocr_confidence = float(min_ocr_confidence)
        self.min_letters = int(min_letters)
        self._reader: SceneTextReader | None = None
        self._reader_lock = threading.Lock()

    @property
    def reader(self) -> SceneTextReader:
        with self._reader_lock:
            if self._reader is None:
                self._reader = SceneTextReader(min_confidence=self.min_ocr_confidence, min_letters=self.min_letters)
        return self._reader

    @classmethod
    def reader_key(cls, params: dict[str, Any]) -> dict[str, Any]:
        """The scene_text judge's key for the same reader settings: the two share their readings."""
        return SceneTextJudge.reader_key(params)

    @classmethod
    def make_reader(cls, params: dict[str, Any]) -> Any:
        """The scene_text judge's reading half for the same settings (a worker that only reads loads no
        text filter, and one reader serves the judge and these guards)."""
        return SceneTextJudge.make_reader(params)

    def read(self, images: Sequence[Image.Image]) -> list[list[dict[str, Any]]]:
        """OCR lines of each image as dicts, exactly as the scene_text judge stores them."""
        return [[r.as_dict() for r in self.reader.read(im)] for im in images]

    def decide(self, readings: Sequence[Sequence[Mapping[str, Any]]], category: Category) -> list[Verdict]:
        return self.rate_signs([sign_texts(r) for r in readings], category)

    def predict(self, images: Sequence[Image.Image], category: Category) -> list[Verdict]:
        return self.decide(self.read(images), category)

    def rate_signs(self, signs: Sequence[Sequence[str]], category: Category) -> list[Verdict]:
        """One verdict per image from the texts of its signs (an empty list: no text found)."""
        raise NotImplementedError

    def close(self) -> None:
        self._reader = None
