"""Shared loading and generation for transformers image-text-to-text models (and plain LLMs), used by the
VLM judge and the VLM writer."""

from __future__ import annotations

import gc
from dataclasses import dataclass
from typing import Any, Sequence

from PIL import Image
from pydantic import Field

from sp_assets.core.record_types import ModelInfo
from sp_assets.backends.common.hf import (
    HFParams,
    ModelSource,
    free_cuda_cache,
    resolve_device,
    resolve_dtype,
)
from sp_assets.backends.common.versions import package_version

RUNNER_VERSION = "1"


class VLMParams(HFParams):
    """What a VLM judge and a VLM writer both take: the model and how it loads, the prompt, the image size."""

    trust_remote_code: bool = False
    prompt_template: str | None = None
    max_image_side: int | None = Field(None, ge=16)


@dataclass(frozen=True)
class Generation:
    """One generated answer: the decoded text (special tokens skipped) and the generated token ids
    (the prompt, the end-of-sequence token and any padding after it removed)."""

    text: str
    token_ids: tuple[int, ...]


class VLMRunner:
    """Load once, generate many times. All parameters that change output are in ``config()``.

    A runner holds a model and its processor, loaded through ``ModelSource`` (local folder or the
    local Hugging Face cache; downloads only when the profile allows them; safetensors only;
    ``trust_remote_code`` off unless the profile turns it on). It renders a one-turn chat (an image
    and a text, or text alone) with the processor's chat template, runs batched generation with left
    padding, greedy unless asked to sample, seeded, and returns the generated text verbatim with its
    token ids.

    A model whose config is not an image-text-to-text architecture is loaded as a causal LM with its
    tokenizer (``has_vision`` is False); the writer then works from the judge's finding alone.
    """

    def __init__(
        self,
        model: str,
        *,
        profile_name: str = "vlm",
        revision: str | None = None,
        dtype: str = "auto",
        device: str = "auto",
        allow_download: bool = False,
        trust_remote_code: bool = False,
        max_image_side: int | None = None,
    ):
        import torch

        self.profile_name = profile_name
        self.model_name = str(model)
        self.revision = str(revision) if revision else None
        self.allow_download = bool(allow_download)
        self.trust_remote_code = bool(trust_remote_code)
        self.max_image_side = int(max_image_side) if max_image_side else None
        self.device = resolve_device(device)
        self.torch_dtype = resolve_dtype(dtype, self.device)
        self.dtype_name = str(self.torch_dtype).replace("torch.", "")
        self.source = ModelSource(self.model_name, self.revision, self.allow_download)

        config = self._load_config()
        self._load_processor()
        self._load_model(config)
        self.info = ModelInfo(
            model_id=self.model_name,
            revision=self.resolved_revision,
            device=self.device,
            dtype=self.dtype_name,
            library=f"transformers {package_version('transformers')}; torch {package_version('torch')}",
        )
        self._torch = torch

    # -- loading ------------------------------------------------------------------------------------

    def _load(self, loader: Any, weights: bool = True, **kwargs: Any) -> Any:
        return self.source.load(self.profile_name, loader, weights=weights,
                                trust_remote_code=self.trust_remote_code, **kwargs)

    def _load_config(self) -> Any:
        """The model's config; it decides whether this is a vision model (``has_vision``)."""
        import transformers

        config = self._load(transformers.AutoConfig.from_pretrained, weights=False)
        auto_map = getattr(config, "auto_map", None) or {}
        self.has_vision = (
            type(config) in transformers.MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING
            or "AutoModelForImageTextToText" in auto_map
        )
        return config

    def _load_processor(self) -> None:
        """The processor (or, for a text-only model, the tokenizer), set up for left-padded batches."""
        import transformers

        if self.has_vision:
            self.processor = self._load(transformers.AutoProcessor.from_pretrained, weights=False)
            self.tokenizer = getattr(self.processor, "tokenizer", None)
            if self.tokenizer is None or getattr(self.processor, "image_processor", None) is None:
                raise ValueError(
                    f"profile {self.profile_name!r}: {self.model_name} is an image-text-to-text model but its "
                    f"processor ({type(self.processor).__name__}) has no tokenizer or image processor; check the "
                    "model folder."
                )
        else:
            self.tokenizer = self._load(transformers.AutoTokenizer.from_pretrained, weights=False)
            self.processor = self.tokenizer
        if not getattr(self.processor, "chat_template", None):
            raise ValueError(
                f"profile {self.profile_name!r}: the processor of {self.model_name} has no chat template, so "
                "prompts cannot be formatted for it. Use an instruction-tuned (chat) model."
            )
        self.tokenizer.padding_side = "left"  # batched generation: prompts end where generation starts
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token

    def _load_model(self, config: Any) -> None:
        """The weights, on the device, in eval mode; and the ids that end or pad an answer."""
        import transformers

        model_cls = transformers.AutoModelForImageTextToText if self.has_vision else transformers.AutoModelForCausalLM
        load_kwargs: dict[str, Any] = {"dtype": self.torch_dtype, "config": config}
        if self.device.startswith("cuda"):
            load_kwargs["device_map"] = self.device
        self.model = self._load(model_cls.from_pretrained, **load_kwargs)
        if not self.device.startswith("cuda"):
            self.model.to(self.device)
        self.model.eval()
        self.model_class = type(self.model).__name__
        self.resolved_revision = self.revision or getattr(config, "_commit_hash", None) or ""
        eos = self.model.generation_config.eos_token_id
        eos_ids = set(eos if isinstance(eos, (list, tuple)) else ([eos] if eos is not None else []))
        if self.tokenizer.eos_token_id is not None:
            eos_ids.add(int(self.tokenizer.eos_token_id))
        self.eos_ids = frozenset(int(e) for e in eos_ids)
        self.pad_id = int(self.tokenizer.pad_token_id) if self.tokenizer.pad_token_id is not None else None

    # -- prompts ------------------------------------------------------------------------------------

    def render(self, text: str, with_image: bool) -> str:
        """The chat-formatted prompt for one user turn (an image, then the text), ready for generation."""
        if with_image and not self.has_vision:
            raise ValueError(f"profile {self.profile_name!r}: {self.model_name} is a text-only model; it cannot take an image.")
        if with_image:
            content: Any = [{"type": "image"}, {"type": "text", "text": text}]
        else:
            content = [{"type": "text", "text": text}] if self.has_vision else text
        messages = [{"role": "user", "content": content}]
        return self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

    def prepare_image(self, image: Image.Image) -> Image.Image:
        return fit_image(image, self.max_image_side)

    # -- generation ---------------------------------------------------------------------------------

    def generate(
        self,
        prompts: Sequence[str],
        images: Sequence[Image.Image] | None = None,
        *,
        max_new_tokens: int = 256,
        do_sample: bool = False,
        temperature: float = 0.7,
        top_p: float = 0.95,
        seed: int = 0,
        num_return_sequences: int = 1,
        logits_processors: Sequence[Any] = (),
    ) -> list[Generation]:
        """Generate for one batch: ``prompts`` are user texts (rendered here), ``images`` one per prompt or None.

        Returns ``len(prompts) * num_return_sequences`` answers, grouped by prompt.
        Greedy unless ``do_sample``; sampling is seeded with ``seed`` (the global torch RNG is left as it was).
        """
        if not prompts:
            return []
        if images is not None and len(images) != len(prompts):
            raise ValueError(f"got {len(prompts)} prompts but {len(images)} images")
        inputs = self._encode(prompts, images)
        prompt_len = int(inputs["input_ids"].shape[1])
        gen_kwargs = self._generation_kwargs(max_new_tokens, do_sample, temperature, top_p,
                                             num_return_sequences, logits_processors)
        sequences = self._run_seeded(inputs, gen_kwargs, seed)
        out: list[Generation] = []
        for row in sequences[:, prompt_len:].tolist():
            ids = self._trim(row)
            out.append(Generation(text=self.decode(ids), token_ids=tuple(ids)))
        return out

    def _encode(self, prompts: Sequence[str], images: Sequence[Image.Image] | None) -> dict[str, Any]:
        """Chat-rendered, left-padded model inputs on the device (floating tensors in the model's dtype)."""
        torch = self._torch
        texts = [self.render(p, with_image=images is not None) for p in prompts]
        bos = self.tokenizer.bos_token
        add_special = not (bos and texts[0].startswith(bos))
        if images is not None:
            batch = self.processor(
                text=texts, images=[[self.prepare_image(im)] for im in images],
                return_tensors="pt", padding=True, padding_side="left", add_special_tokens=add_special,
            )
        else:
            batch = self.tokenizer(texts, return_tensors="pt", padding=True, padding_side="left",
                                   add_special_tokens=add_special)
        return {
            k: (v.to(self.device, self.torch_dtype) if torch.is_floating_point(v) else v.to(self.device))
            if isinstance(v, torch.Tensor) else v
            for k, v in batch.items()
        }

    def _generation_kwargs(self, max_new_tokens: int, do_sample: bool, temperature: float, top_p: float,
                           num_return_sequences: int, logits_processors: Sequence[Any]) -> dict[str, Any]:
        from transformers import LogitsProcessorList

        gen_kwargs: dict[str, Any] = {
            "max_new_tokens": int(max_new_tokens),
            "do_sample": bool(do_sample),
            "num_return_sequences": int(num_return_sequences),
            "pad_token_id": self.pad_id,
        }
        if do_sample:
            gen_kwargs.update(temperature=float(temperature), top_p=float(top_p))
        if logits_processors:
            gen_kwargs["logits_processor"] = LogitsProcessorList(list(logits_processors))
        return gen_kwargs

    def _run_seeded(self, inputs: dict[str, Any], gen_kwargs: dict[str, Any], seed: int) -> Any:
        """``model.generate`` under ``seed``, on a forked RNG so the caller's torch RNG is left as it was."""
        torch = self._torch
        rng_devices = [torch.cuda.current_device()] if self.device.startswith("cuda") else []
        with torch.random.fork_rng(devices=rng_devices), torch.inference_mode():
            torch.manual_seed(int(seed))
            sequences = self.model.generate(**inputs, **gen_kwargs)
        return sequences if isinstance(sequences, torch.Tensor) else sequences.sequences

    def _trim(self, ids: list[int]) -> list[int]:
        for i, t in enumerate(ids):
            if t in self.eos_ids:
                return ids[:i]
        while ids and self.pad_id is not None and ids[-1] == self.pad_id:
            ids = ids[:-1]
        return ids

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=True, clean_up_tokenization_spaces=False)

    def token_texts(self) -> list[str]:
        """The text of every token in the vocabulary, decoded on its own (for scoring)."""
        n = len(self.tokenizer)
        return self.tokenizer.batch_decode([[i] for i in range(n)], skip_special_tokens=False,
                                           clean_up_tokenization_spaces=False)

    # -- provenance ---------------------------------------------------------------------------------

    def config(self) -> dict[str, Any]:
        return {
            "runner_version": RUNNER_VERSION,
            "model": self.model_name,
            "revision": self.revision or "",
            "resolved_revision": self.resolved_revision,
            "model_class": self.model_class,
            "has_vision": self.has_vision,
            "dtype": self.dtype_name,
            "device": self.device,
            "allow_download": self.allow_download,
            "trust_remote_code": self.trust_remote_code,
            "max_image_side": self.max_image_side,
            "padding_side": "left",
            "versions": {d: package_version(d) for d in ("transformers", "torch", "tokenizers")},
        }

    def close(self) -> None:
        self.model = None  # type: ignore[assignment]
        gc.collect()
        free_cuda_cache(self.device)


def fit_image(image: Image.Image, max_side: int | None) -> Image.Image:
    """The image in RGB, scaled down (bicubic, aspect kept) so that its longer side is at most ``max_side``."""
    image = image.convert("RGB")
    if max_side and max(image.size) > max_side:
        scale = max_side / max(image.size)
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        image = image.resize(size, Image.Resampling.BICUBIC)
    return image


def compile_prompt_template(text: str, placeholders: Any, profile_name: str) -> Any:
    """A profile's prompt template, refused up front if it names a placeholder we do not fill."""
    import string

    template = string.Template(text)
    unknown = sorted(set(template.get_identifiers()) - set(placeholders))
    if unknown or not template.is_valid():
        raise ValueError(
            f"profile {profile_name!r}: prompt_template uses unknown placeholders {unknown or '(invalid $)'}; "
            f"known: {', '.join('$' + k for k in placeholders)} (write $$ for a literal $)."
        )
    return template
