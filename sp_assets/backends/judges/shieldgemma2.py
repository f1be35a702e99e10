"""ShieldGemma 2 as a judge: one custom policy per category, P(violates) from the Yes/No logits."""

from __future__ import annotations

import hashlib
import json
import logging
import math
from typing import Any, Literal, Sequence

from PIL import Image
from pydantic import Field

from sp_assets.backends.base import Judge

from sp_assets.core.record_types import Verdict
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
from sp_assets.core.policy import Category, Policy

log = logging.getLogger(__name__)

DEFAULT_MODEL = "google/shieldgemma-2-4b-it"
POLICY_STYLES = ("shieldgemma", "rules")


def _join(items: Sequence[str], last: str) -> str:
    items = [i.strip().rstrip(".;") for i in items if i.strip()]
    if len(items) <= 1:
        return "".join(items)
    return "; ".join(items[:-1]) + f"; {last} " + items[-1]


def render_policy(category: Category, style: str = "shieldgemma") -> str:
    """The policy definition ShieldGemma 2 reads for ``category``.

    'shieldgemma' writes it in the form of ShieldGemma 2's built-in definitions (transformers'
    ``DEFAULT_SHIELDGEMMA2_POLICIES``, e.g. "No Dangerous Content: The image shall not contain content
    that ..."): the name unquoted, then one "The image shall not contain ..." sentence. The category's
    allowances end that same sentence as an exception ("..., except ..."), so the model reads a single
    definition, as it was trained on, that still says what stays acceptable. 'rules' uses
    ``Category.rules_text()`` verbatim (the same prose the VLM judge is prompted with).
    """
    if style == "rules":
        return category.rules_text()
    if style != "shieldgemma":
        raise ValueError(f"policy_style must be one of {', '.join(POLICY_STYLES)}, got {style!r}")
    text = f"No {category.title}: The image shall not contain {_join(category.forbids, 'or')}"
    if category.allows:
        text += f", except {_join(category.allows, 'or')}"
    return text + "."


class ShieldGemma2Judge(Judge):
    """Judge images under one policy category with ShieldGemma 2.

    ShieldGemma 2 (``ShieldGemma2ForImageClassification``) answers one question per (image, policy)
    pair: does the image violate this policy? Its processor builds the prompt from a chat template
    that wraps a policy *definition*; ``custom_policies={key: text}`` adds definitions and
    ``policies=[key]`` picks which ones to ask about (without it the processor asks about every
    built-in policy too). We pass exactly one: the category's rules, rendered from the policy file.

    The model returns ``probabilities`` of shape (n, 2): column 0 is the 'Yes' token (violates),
    column 1 'No'. (The transformers docstring's "violated = probabilities[:, 1]" contradicts its own
    code, which selects logits at [yes_token_index, no_token_index]; we follow the code.)
    The score is P(Yes); rating 'unsafe' when score >= threshold, 'safe' below it, and 'invalid' when
    the model's numbers are not finite probabilities (fail-closed).

    Params (from the profile):
      model           hub id (resolved in the local cache) or a local folder
      revision        hub revision; pin a commit for reproducible verdicts
      dtype           'auto' (bfloat16 on CUDA, float32 on CPU), 'float32', 'float16', 'bfloat16'
      device          'auto', 'cpu', 'cuda', 'cuda:1'...
      batch_size      images per forward pass (one prompt per image: one policy is asked)
      threshold       P(violates) at or above which the image is rated unsafe, in (0, 1]
      policy_style    'shieldgemma' (default) or 'rules': how a category is written as a policy
      allow_download  fetch missing weights from the hub at load time (off by default; the
                      model is gated: accept its licence on the hub and log in first)
    """

    policy_dependency = "category"  # asked one custom policy: the category's own rules

    class Params(HFParams):
        model: str = Field(DEFAULT_MODEL, min_length=1)
        batch_size: int = Field(4, ge=1)
        threshold: float = Field(0.5, gt=0, le=1, allow_inf_nan=False)
        policy_style: Literal[POLICY_STYLES] = "shieldgemma"  # type: ignore[valid-type]

    def __init__(
        self,
        policy: Policy,
        model: str = DEFAULT_MODEL,
        revision: str | None = None,
        dtype: str = "auto",
        device: str = "auto",
        batch_size: int = 4,
        threshold: float = 0.5,
        policy_style: str = "shieldgemma",
        allow_download: bool = False,
        profile_name: str = "shieldgemma2",
    ) -> None:
        import torch
        from transformers import AutoProcessor, ShieldGemma2ForImageClassification

        threshold = float(threshold)
        self.policy = policy
        self.profile_name = profile_name
        self.threshold = threshold
        self.batch_size = int(batch_size)
        self.policy_style = policy_style
        self.source = ModelSource(str(model), revision or None, bool(allow_download))
        self.device = resolve_device(str(device))
        self.torch_dtype = resolve_dtype(str(dtype), self.device)

        net = self.source.load(profile_name, ShieldGemma2ForImageClassification.from_pretrained,
                               dtype=self.torch_dtype, trust_remote_code=False)
        self._processor = self.source.load(profile_name, AutoProcessor.from_pretrained, weights=False,
                                           trust_remote_code=False)
        if not getattr(self._processor, "chat_template", None):
            raise ValueError(
                f"judge profile {profile_name!r}: the processor at {self.source.path_or_id} has no chat "
                "template; ShieldGemma 2 needs the one that ships with the model (chat_template.jinja)."
            )
        self.processor_class = type(self._processor).__name__
        self._model = net.to(self.device).eval()
        self._torch = torch
        self.revision = resolved_revision(self.source)
        self.processor_sha256 = processor_sha256(getattr(self._processor, "image_processor", self._processor))
        self.chat_template_sha256 = hashlib.sha256(str(self._processor.chat_template).encode("utf-8")).hexdigest()
        self.yes_token_index = int(self._model.yes_token_index)
        self.no_token_index = int(self._model.no_token_index)
        self.token_check = self._check_answer_tokens()
        self.info = hf_model_info(self.source, self.revision, self.device, self.torch_dtype)

    def _check_answer_tokens(self) -> str:
        """Does the tokenizer agree that 'Yes'/'No' are the tokens the model reads the answer from?

        'ok', 'mismatch' (logged: the scores would not mean P(violates)), or 'unknown' when the
        tokenizer cannot say. Recorded in the config and every verdict.
        """
        tokenizer = getattr(self._processor, "tokenizer", None)
        if tokenizer is None or not callable(getattr(tokenizer, "convert_tokens_to_ids", None)):
            return "unknown"
        try:
            yes, no = (tokenizer.convert_tokens_to_ids(t) for t in ("Yes", "No"))
        except (KeyError, TypeError, ValueError):  # a tokenizer that cannot look the words up
            return "unknown"
        unk = getattr(tokenizer, "unk_token_id", None)
        if yes is None or no is None or unk in (yes, no):
            return "unknown"
        if (int(yes), int(no)) == (self.yes_token_index, self.no_token_index):
            return "ok"
        log.warning(
            "judge profile %r: the tokenizer's 'Yes'/'No' ids (%s, %s) differ from the model's "
            "yes/no token indices (%s, %s); its scores may not be P(violates).",
            self.profile_name, yes, no, self.yes_token_index, self.no_token_index,
        )
        return "mismatch"

    def policy_text(self, category: Category) -> str:
        return render_policy(category, self.policy_style)

    def config(self) -> dict[str, Any]:
        """Everything that changes this judge's output (not the batch size)."""
        cfg = self._model.config
        return {
            "judge": "shieldgemma2",
            "model": self.source.model,
            "revision_requested": self.source.revision or "",
            "revision_resolved": self.revision,
            "dtype": self.info.dtype,
            "device": self.device,
            "attn_implementation": getattr(cfg, "_attn_implementation", None) or "",
            "threshold": self.threshold,
            "policy": {"name": self.policy.name, "style": self.policy_style},  # the rules: memo key
            "processor_class": self.processor_class,
            "image_processor_sha256": self.processor_sha256,
            "chat_template_sha256": self.chat_template_sha256,
            "answer_tokens": {"yes": self.yes_token_index, "no": self.no_token_index, "check": self.token_check},
            "versions": {d: package_version(d) for d in ("transformers", "torch")},
        }

    # -- judging --------------------------------------------------------------------------------

    def judge(self, images: Sequence[Image.Image], category: Category | str) -> list[Verdict]:
        cat = category if isinstance(category, Category) else self.policy.category(category)
        text = self.policy_text(cat)
        verdicts: list[Verdict] = []
        for start in range(0, len(images), self.batch_size):
            batch = [im.convert("RGB") for im in images[start : start + self.batch_size]]
            probs = self._probabilities(batch, cat.slug, text)
            if len(probs) != len(batch):
                raise RuntimeError(
                    f"judge profile {self.profile_name!r}: expected {len(batch)} answers, got {len(probs)}"
                )
            verdicts += [self._verdict(p, cat, text) for p in probs]
        return verdicts

    def _probabilities(self, images: list[Image.Image], key: str, text: str) -> list[tuple[float, float]]:
        """One (P(Yes), P(No)) per image, asking only the policy ``key`` defined by ``text``."""
        torch = self._torch
        inputs = self._processor(
            images=images, custom_policies={key: text}, policies=[key], return_tensors="pt",
        )
        feeds: dict[str, Any] = {}
        for name, value in inputs.items():
            if isinstance(value, torch.Tensor):
                value = value.to(self.device)
                if value.is_floating_point():
                    value = value.to(self.torch_dtype)
            feeds[name] = value
        with torch.no_grad():
            out = self._model(**feeds)
        probs = out.probabilities.float().cpu().tolist()
        return [(float(row[0]), float(row[1])) for row in probs]

    def _verdict(self, probs: tuple[float, float], category: Category, text: str) -> Verdict:
        p_yes, p_no = probs
        raw: dict[str, Any] = {
            "judge": "shieldgemma2",
            "policy_key": category.slug,
            "policy_text": text,
            "policy_text_sha256": hashlib.sha256(text.encode("utf-8")).hexdigest(),
            "probabilities": {"yes": _num(p_yes), "no": _num(p_no)},
            "threshold": self.threshold,
            "answer_tokens": {"yes": self.yes_token_index, "no": self.no_token_index, "check": self.token_check},
        }
        valid = all(math.isfinite(p) and -1e-6 <= p <= 1 + 1e-6 for p in (p_yes, p_no))
        if not valid or abs(p_yes + p_no - 1.0) > 1e-3:
            raw["reason"] = "non_finite_or_not_a_probability"
            return Verdict(
                "invalid", "", None,
                f"ShieldGemma 2 gave no usable probability for {category.id} (P(Yes)={p_yes}, P(No)={p_no}).",
                json.dumps(raw, sort_keys=True),
            )
        score = min(1.0, max(0.0, p_yes))
        if score >= self.threshold:
            raw["decision"] = "unsafe"
            return Verdict(
                "unsafe", category.slug, score,
                f"ShieldGemma 2: violates {category.id} ({category.title}), "
                f"P(violates)={score:.3f} >= {self.threshold:g}.",
                json.dumps(raw, sort_keys=True),
            )
        raw["decision"] = "safe"
        return Verdict(
            "safe", "", score,
            f"ShieldGemma 2: does not violate {category.id} ({category.title}), "
            f"P(violates)={score:.3f} < {self.threshold:g}.",
            json.dumps(raw, sort_keys=True),
        )

    def close(self) -> None:
        self._model = None  # type: ignore[assignment]
        free_cuda_cache(self.device)


def _num(value: float) -> float | str:
    """A JSON-safe number: NaN/inf are written as strings so the raw output stays valid JSON."""
    return round(value, 6) if math.isfinite(value) else str(value)
