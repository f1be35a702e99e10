"""Image embeddings through the memo: each distinct image embedded once, whatever asks for it."""

from __future__ import annotations

from typing import Any, Iterable

import numpy as np

from sp_assets.execution.calls import embed_call, text_embed_call
from sp_assets.execution.lazy import LazyBackend
from sp_assets.execution.memo import Memo
from sp_assets.execution.tasks import Work


def embed_images(memo: Memo, lazy: LazyBackend, images: Iterable[tuple[str, str]]) -> dict[str, np.ndarray]:
    """image hash -> embedding, for (hash, stored path) pairs; the embedder loads only for missing ones."""
    items = [{"image_sha256": sha, "image_path": path} for sha, path in dict(images).items()]
    return {item["image_sha256"]: out.result for item, out in
            memo.run(embed_call(lazy.config_sha256), lazy.work("embed", str(memo.images.root)), items)}


def pair_embeddings(memo: Memo, lazy: LazyBackend, candidates: Iterable[dict[str, Any]]) -> dict[str, np.ndarray]:
    """Embeddings of the sources and edits of successful candidates."""
    pairs = []
    for c in candidates:
        pairs += [(c["image_sha256"], c["source_path"]), (c["edited_sha256"], c["edited_path"])]
    return embed_images(memo, lazy, pairs)


def embed_texts(memo: Memo, texts: list[str]) -> np.ndarray:
    """The probe's text features (all-MiniLM-L6-v2, 384-d, zero for no text), one row per text, memoized."""
    items = [{"text": t or ""} for t in texts]
    results = memo.run(text_embed_call(), Work("text_embed", str(memo.images.root), memo.policy), items)
    return np.stack([out.result for _, out in results]) if results else np.zeros((0, 384), dtype=np.float32)
