"""The records backends exchange: a judge's ``Verdict`` (with the ``TextRegion``s it read), a writer's
``Instruction``, an editor's ``EditResult``, and the ``ModelInfo`` of what produced each.

Images are RGB ``PIL.Image.Image`` objects; boxes are pixel coordinates ``(x0, y0, x1, y1)`` with x1/y1
exclusive.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from PIL import Image

RATINGS = ("unsafe", "safe", "invalid")
Box = tuple[int, int, int, int]


@dataclass(frozen=True)
class ModelInfo:
    """What produced a result: recorded with every row a backend contributes to."""

    model_id: str
    revision: str = ""
    device: str = "cpu"
    dtype: str = ""
    library: str = ""  # e.g. "rapidocr 3.10.0; sentence-transformers 6.2.0"

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


@dataclass(frozen=True)
class TextRegion:
    """A piece of scene text found in an image."""

    box: Box
    text: str
    confidence: float
    polygon: tuple[tuple[float, float], ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {
            "box": list(self.box),
            "text": self.text,
            "confidence": round(float(self.confidence), 6),
            "polygon": [list(p) for p in self.polygon],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TextRegion":
        return cls(
            box=tuple(int(v) for v in d["box"]),  # type: ignore[arg-type]
            text=str(d["text"]),
            confidence=float(d.get("confidence", 0.0)),
            polygon=tuple(tuple(float(v) for v in p) for p in d.get("polygon", ())),  # type: ignore[misc]
        )


@dataclass(frozen=True)
class Verdict:
    """A judge's decision about one image under one category.

    rating:   'unsafe', 'safe' or 'invalid' (the judge could not decide; never treated as safe)
    category: the slug the judge found violated ('' when safe or invalid)
    score:    probability that the image is unsafe, when the judge gives one
    regions:  evidence regions (the scene text the judge read), used by the writer and editor
    raw_output: the model's raw answer, verbatim, for provenance
    """

    rating: str
    category: str
    score: float | None
    rationale: str
    raw_output: str
    regions: tuple[TextRegion, ...] = ()

    def __post_init__(self) -> None:
        if self.rating not in RATINGS:
            raise ValueError(f"rating must be one of {RATINGS}, got {self.rating!r}")

    def as_dict(self) -> dict[str, Any]:
        """The verdict as JSON-able values (how the memo stores it; ``from_dict`` reads it back)."""
        return {"rating": self.rating, "category": self.category, "score": self.score, "rationale": self.rationale,
                "raw_output": self.raw_output, "regions": [r.as_dict() for r in self.regions]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Verdict":
        return cls(d["rating"], d["category"], d["score"], d["rationale"], d["raw_output"],
                   tuple(TextRegion.from_dict(r) for r in d["regions"]))


@dataclass(frozen=True)
class Instruction:
    """An edit instruction for one source image.

    text:   what a person (or an instruction-following editor) reads
    target: machine-readable detail for editors that use it, e.g.
            {"regions": [TextRegion.as_dict(), ...], "replacement": "NEW TEXT"}
    keep:   what must stay unchanged
    variant: index among the variants written for this image
    """

    text: str
    target: dict[str, Any] = field(default_factory=dict)
    keep: str = ""
    variant: int = 0

    def target_json(self) -> str:
        return json.dumps(self.target, sort_keys=True, separators=(",", ":"))


@dataclass
class EditResult:
    """An editor's output, already brought back to the source size.

    region: boxes the editor changed, when it knows them (None when it does not)
    raw_size: the size the editor produced before resizing back, (width, height)
    """

    image: Image.Image
    raw_size: tuple[int, int]
    region: list[Box] | None = None
    detail: dict[str, Any] = field(default_factory=dict)
