"""CLIP / SigLIP image embeddings through transformers (``AutoModel`` + ``AutoImageProcessor``)."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from PIL import Image
from pydantic import Field

from sp_assets.backends.base import Embedder
from sp_assets.backends.common.hf import (
    HFParams,
    ModelSource,
    free_cuda_cache,
    hf_model_info,
    processor_sha256,
    resolve_device,
    resolve_dtype,
    resolved_revision,
)
from sp_assets.backends.common.versions import package_version

DEFAULT_MODEL = "openai/clip-vit-large-patch14"


def image_features_tensor(output: Any) -> Any:
    """``get_image_features`` returns a tensor in transformers 4.x and a ModelOutput in 5.x.

    In 5.x, CLIP and SigLIP put the final image embedding in ``pooler_output`` (CLIP has already
    applied its visual projection there). ``image_embeds`` is taken first where a model has it.
    """
    import torch

    if isinstance(output, torch.Tensor):
        return output
    for name in ("image_embeds", "pooler_output"):
        value = getattr(output, name, None) if not isinstance(output, dict) else output.get(name)
        if isinstance(value, torch.Tensor):
            return value
    if isinstance(output, (tuple, list)) and len(output) > 1 and isinstance(output[1], torch.Tensor):
        return output[1]  # (last_hidden_state, pooler_output)
    raise TypeError(
        f"get_image_features returned {type(output).__name__} without an image embedding "
        "(no tensor, image_embeds or pooler_output); this model is not a CLIP/SigLIP-style embedder."
    )


class CLIPEmbedder(Embedder):
    """Image embeddings from a CLIP or SigLIP checkpoint (any model with ``get_image_features``).

    Weights come from a local folder or the local Hugging Face cache (``ModelSource``: no download
    unless the profile sets ``allow_download``, safetensors only, no remote code). The vectors are the
    model's own image embedding (``get_image_features``: CLIP's projected pooled output, SigLIP's
    attention-pooled head), cast to float32 and L2-normalised.

    Only the image processor is loaded: embedding images needs no tokenizer, so a checkpoint folder
    without tokenizer files works too.

    Params (from the profile):
      model           hub id (resolved in the local cache) or a local folder
      revision        hub revision (commit, tag or branch); pin a commit for reproducible vectors
      dtype           'auto' (bfloat16 on CUDA, float32 on CPU), 'float32', 'float16', 'bfloat16'
      device          'auto' (CUDA when available), 'cpu', 'cuda', 'cuda:1'...
      batch_size      images per forward pass; the vectors do not depend on it (up to float noise)
      allow_download  fetch missing weights from the hub at load time (off by default)
    """

    class Params(HFParams):
        model: str = Field(DEFAULT_MODEL, min_length=1)
        batch_size: int = Field(16, ge=1)

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        revision: str | None = None,
        dtype: str = "auto",
        device: str = "auto",
        batch_size: int = 16,
        allow_download: bool = False,
        profile_name: str = "clip",
    ) -> None:
        import torch
        from transformers import AutoImageProcessor, AutoModel

        self.profile_name = profile_name
        self.source = ModelSource(str(model), revision or None, bool(allow_download))
        self.batch_size = int(batch_size)
        self.device = resolve_device(str(device))
        self.dtype_name = str(dtype)
        self.torch_dtype = resolve_dtype(self.dtype_name, self.device)

        net = self.source.load(profile_name, AutoModel.from_pretrained, dtype=self.torch_dtype,
                               trust_remote_code=False)
        if not callable(getattr(net, "get_image_features", None)):
            raise ValueError(
                f"embedder profile {profile_name!r}: {self.source.model!r} loads as "
                f"{type(net).__name__}, which has no get_image_features; use a CLIP or SigLIP checkpoint."
            )
        self._processor = self.source.load(profile_name, AutoImageProcessor.from_pretrained, weights=False,
                                           trust_remote_code=False)
        self._model = net.to(self.device).eval()
        self._torch = torch
        self.revision = resolved_revision(self.source)
        self.processor_sha256 = processor_sha256(self._processor)
        self.dim = self._embedding_dim()
        self.info = hf_model_info(self.source, self.revision, self.device, self.torch_dtype)

    def _embedding_dim(self) -> int:
        cfg = self._model.config
        dim = getattr(cfg, "projection_dim", None)
        if not dim:
            vision = getattr(cfg, "vision_config", None)
            dim = getattr(vision, "hidden_size", 0) if vision is not None else getattr(cfg, "hidden_size", 0)
        return int(dim or 0)

    def config(self) -> dict[str, Any]:
        """Everything that affects the vectors, for provenance (not the batch size)."""
        cfg = self._model.config
        return {
            "embedder": "clip",
            "model": self.source.model,
            "revision_requested": self.source.revision or "",
            "revision_resolved": self.revision,
            "model_type": getattr(cfg, "model_type", ""),
            "model_class": type(self._model).__name__,
            "processor_class": type(self._processor).__name__,
            "processor_sha256": self.processor_sha256,
            "dtype": self.info.dtype,
            "device": self.device,
            "attn_implementation": getattr(cfg, "_attn_implementation", None) or "",
            "dim": self.dim,
            "normalize": "l2",
            "versions": {d: package_version(d) for d in ("transformers", "torch")},
        }

    def embed(self, images: Sequence[Image.Image]) -> np.ndarray:
        torch = self._torch
        if self._model is None:
            raise RuntimeError(f"embedder profile {self.profile_name!r} was closed")
        chunks: list[np.ndarray] = []
        with torch.no_grad():
            for start in range(0, len(images), self.batch_size):
                batch = [im.convert("RGB") for im in images[start : start + self.batch_size]]
                inputs = self._processor(images=batch, return_tensors="pt")
                pixels = inputs["pixel_values"].to(self.device, dtype=self.torch_dtype)
                feats = image_features_tensor(self._model.get_image_features(pixel_values=pixels))
                feats = feats.float()
                if feats.ndim != 2 or feats.shape[0] != len(batch):
                    raise ValueError(
                        f"embedder profile {self.profile_name!r}: expected ({len(batch)}, d) image "
                        f"features, got shape {tuple(feats.shape)}"
                    )
                feats = torch.nn.functional.normalize(feats, dim=1)
                chunks.append(feats.cpu().numpy().astype(np.float32, copy=False))
        if not chunks:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.ascontiguousarray(np.concatenate(chunks, axis=0), dtype=np.float32)

    def close(self) -> None:
        self._model = None  # type: ignore[assignment]
        free_cuda_cache(self.device)
