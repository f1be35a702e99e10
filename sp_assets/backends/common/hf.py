"""Shared loading rules for Hugging Face models (transformers, diffusers): local only, safetensors, no
remote code; plus the device, dtype, provenance and clean-up helpers every model backend uses."""

from __future__ import annotations

import hashlib
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal, Sequence, TypeVar

from pydantic import Field

from sp_assets.backends.common.packages import MissingPackageError, missing_message
from sp_assets.backends.common.versions import package_version
from sp_assets.backends.profiles import ProfileParams
from sp_assets.core.hashing import sha256_file

T = TypeVar("T")
log = logging.getLogger(__name__)

DTYPES = ("auto", "float32", "float16", "bfloat16")
# transformers' and diffusers' words for a missing backend: "X requires the Torchvision library but it was
# not found in your environment" (LLaVA-OneVision and Qwen2-VL processors build a video processor).
_REQUIRES_LIBRARY = re.compile(r"requires the (\w[\w.-]*) library")
# The last resort of ``missing_weights``: the words of the bare OSError (no cause) that transformers and
# diffusers raise for a file missing from a folder or a processor not in the cache.
_BARE_MISSING = re.compile(r"no file named|does not appear to have a file named|Can't load")


class HFParams(ProfileParams):
    """The parameters every Hugging Face backend takes, in diffusers' and transformers' words."""

    model: str = Field(min_length=1, description="a local folder or a hub id in the local cache")
    revision: str | None = None
    dtype: Literal[DTYPES] = "auto"  # type: ignore[valid-type]
    device: str = "auto"
    allow_download: bool = False


class MissingWeightsError(RuntimeError):
    """A profile's weights are not on this machine (and the profile does not allow downloads)."""


def _chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and what it was raised from or during (transformers wraps the hub's errors in an OSError)."""
    out: list[BaseException] = []
    while exc is not None and exc not in out:
        out.append(exc)
        exc = exc.__cause__ or exc.__context__
    return out


def missing_weights(exc: BaseException) -> str | None:
    """Why a load failed for want of files, or None when ``exc`` says something else.

    Decided by exception type, anywhere in the chain: huggingface_hub's errors for a repo, revision or file
    that is not in the cache (or not reachable: gated, offline), and a ``FileNotFoundError``. Only a bare
    ``OSError`` with nothing chained (transformers and diffusers raise one for a file missing from a local
    folder, and for an image processor not in the cache) is read by its words.
    """
    from huggingface_hub import errors

    for link in _chain(exc):
        if isinstance(link, errors.GatedRepoError):
            return "the repository is gated: accept its terms on the model page and log in (`hf auth login`)"
        if isinstance(link, errors.RevisionNotFoundError):
            return "that revision is not in the cache"
        if isinstance(link, (errors.LocalEntryNotFoundError, errors.OfflineModeIsEnabled)):
            return "not in the local cache, and downloads are off"
        if isinstance(link, (errors.RepositoryNotFoundError, errors.EntryNotFoundError, FileNotFoundError)):
            return "files not found"
    if type(exc) is OSError and exc.__cause__ is None and exc.__context__ is None and _BARE_MISSING.search(str(exc)):
        return "files not found"
    return None


def resolve_device(device: str = "auto") -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device {device!r} was asked for but CUDA is not available here; use 'auto' or 'cpu'.")
    return device


def resolve_dtype(dtype: str, device: str) -> Any:
    """'auto' is bfloat16 on CUDA (what current editors and VLMs are trained in), float32 on CPU."""
    import torch

    if dtype not in DTYPES:
        raise ValueError(f"dtype {dtype!r} is not one of {', '.join(DTYPES)}")
    if dtype == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    return getattr(torch, dtype)


@dataclass(frozen=True)
class ModelSource:
    """Where a profile's weights come from: a local folder, or a hub id resolved in the local cache.

    ``load`` turns a missing-weights failure into a ``MissingWeightsError`` that names the profile,
    what it looked for, and the command that fetches it.
    """

    model: str
    revision: str | None = None
    allow_download: bool = False

    @property
    def is_local_path(self) -> bool:
        return Path(self.model).expanduser().exists() or self.model.startswith(("/", "./", "../", "~"))

    @property
    def path_or_id(self) -> str:
        return str(Path(self.model).expanduser()) if self.is_local_path else self.model

    def load_kwargs(self, weights: bool = True) -> dict[str, Any]:
        # Weights only from safetensors files (no pickle); processors and tokenizers have no weights.
        kwargs: dict[str, Any] = {"use_safetensors": True} if weights else {}
        if not self.is_local_path:
            kwargs["local_files_only"] = not self.allow_download
            if self.revision:
                kwargs["revision"] = self.revision
        else:
            kwargs["local_files_only"] = True
        return kwargs

    def fetch_hint(self) -> str:
        if self.is_local_path:
            return f"put the model files in {self.path_or_id} (or point the profile's 'model' at them)"
        rev = f" --revision {self.revision}" if self.revision else ""
        # Weights are read from safetensors only, so pickled copies are not worth fetching (the `hf` CLI
        # takes one pattern per --exclude flag).
        return (f'hf download {self.model}{rev} --exclude "*.bin" --exclude "*.pth"   (then run again; HF_HOME '
                f"decides the cache folder; a gated repo needs its terms accepted on the model page and "
                f"`hf auth login` first)")

    def load(self, profile_name: str, loader: Callable[..., T], weights: bool = True, **kwargs: Any) -> T:
        """Call ``loader(path_or_id, **load_kwargs, **kwargs)``; a missing model becomes a clear error.

        ``weights=False`` for processors and tokenizers (no safetensors flag).
        """
        if self.is_local_path and not Path(self.path_or_id).exists():
            raise MissingWeightsError(
                f"profile {profile_name!r}: no model at {self.path_or_id}. Fix: {self.fetch_hint()}."
            )
        try:
            return loader(self.path_or_id, **self.load_kwargs(weights), **kwargs)
        except ImportError as exc:
            clear = self._missing_package(profile_name, exc)
            if clear is exc:
                raise
            raise clear from exc
        except Exception as exc:
            why = missing_weights(exc)
            if why is None:
                raise
            raise MissingWeightsError(
                f"profile {profile_name!r}: weights for {self.model!r}"
                f"{' at revision ' + self.revision if self.revision else ''} are not on this machine ({why}; "
                f"looked in {'that folder' if self.is_local_path else 'the local Hugging Face cache, ' + _hf_cache()}). "
                f"Fix: {self.fetch_hint()}. SafetyPairs never downloads at run time unless the profile sets "
                f"allow_download: true."
            ) from None

    def _missing_package(self, profile_name: str, exc: ImportError) -> ImportError:
        """A library the model needs is not installed: an error naming the profile, the package and the
        install command; any other import error unchanged. (A profile lists such packages under
        ``requires:`` to be stopped before any weights load; this catches what a profile did not list.)"""
        if isinstance(exc, MissingPackageError):
            return exc
        found = _REQUIRES_LIBRARY.search(str(exc))
        if found:
            package = found.group(1).lower()
        elif isinstance(exc, ModuleNotFoundError) and exc.name and "." not in exc.name:
            package = exc.name
        else:
            return exc
        problem = f"ModuleNotFoundError: No module named '{package}'"
        return MissingPackageError(missing_message(f"profile {profile_name!r}", package, problem,
                                                   f" to load {self.model!r}"), name=package)


def _hf_cache() -> str:
    from huggingface_hub import constants  # read when asked: HF_HOME / HF_HUB_CACHE as huggingface_hub sees them

    return constants.HF_HUB_CACHE


def files_sha256(folder: Path, patterns: Sequence[str] = ("*.safetensors",)) -> str:
    """sha256 over the named files in ``folder`` (name and content), in sorted order.

    Reads every byte: about 1-2 GB/s, so a few seconds for a multi-gigabyte checkpoint, once per
    load. '' when no file matches.
    """
    files = sorted({p for pattern in patterns for p in folder.glob(pattern) if p.is_file()})
    if not files:
        return ""
    outer = hashlib.sha256()
    for path in files:
        outer.update(f"{path.name}\0{sha256_file(path)}\n".encode("utf-8"))
    return outer.hexdigest()


def resolved_revision(source: ModelSource) -> str:
    """What exactly was loaded: the hub commit for a cached hub id, a content hash for a folder.

    Looks only at the local cache (never the network). Falls back to the requested revision.
    """
    if source.is_local_path:
        digest = files_sha256(Path(source.path_or_id))
        return f"sha256:{digest}" if digest else ""
    if source.revision and re.fullmatch(r"[0-9a-f]{40}", source.revision):
        return source.revision
    # The cache keeps refs/<branch or tag> -> commit sha next to snapshots/<commit sha>/.
    ref = Path(_hf_cache()) / f"models--{source.model.replace('/', '--')}" / "refs" / (source.revision or "main")
    try:
        return ref.read_text(encoding="utf-8").strip() or (source.revision or "")
    except OSError:
        return source.revision or ""


def hf_model_info(source: ModelSource, revision: str, device: str, torch_dtype: Any) -> Any:
    """The ModelInfo every transformers backend records: model, resolved revision, device, dtype, versions."""
    import torch

    from sp_assets.core.record_types import ModelInfo

    return ModelInfo(
        model_id=source.model,
        revision=revision,
        device=device,
        dtype=str(torch_dtype).removeprefix("torch."),
        library=f"transformers {package_version('transformers')}; torch {torch.__version__}",
    )


def processor_sha256(processor: Any) -> str:
    """Hash of an image processor's settings (size, crop, mean, std, resampling...)."""
    try:
        settings = processor.to_dict()
    except (AttributeError, TypeError, ValueError):  # no to_dict, or settings it cannot copy
        settings = {k: v for k, v in vars(processor).items() if not k.startswith("_")}
    text = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def quiet_load(load: Callable[[], T]) -> T:
    """Run ``load`` with transformers' weight-loading progress bar off, then restore the setting."""
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:
        return load()
    was_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        return load()
    finally:
        if was_on:
            hf_logging.enable_progress_bar()


def free_cuda_cache(device: str) -> None:
    """Hand the memory a dropped model held back to the GPU (nothing to do off CUDA).

    A CUDA error here is logged, not raised: the model is gone either way, and ``close`` often runs
    while another error is on its way up.
    """
    if not device.startswith("cuda"):
        return
    import torch

    if not torch.cuda.is_available():
        return
    try:
        torch.cuda.empty_cache()
    except RuntimeError as exc:
        log.warning("could not empty the CUDA cache on %s (%s: %s)", device, type(exc).__name__, exc)
