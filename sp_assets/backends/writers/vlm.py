"""An instruction writer that captions the image and writes edit instructions with a chat VLM (or LLM)."""

from __future__ import annotations

import ast
import hashlib
import json
import re
from typing import Any, Literal

from PIL import Image
from pydantic import Field

from sp_assets.backends.base import InstructionWriter
from sp_assets.backends.profiles import ProfileParams

from sp_assets.core.record_types import Instruction, Verdict
from sp_assets.backends.common.json_answers import brace_spans, load_json_object, normalise_answer
from sp_assets.backends.writers.template import KEEP
from sp_assets.backends.common.vlm_runner import VLMParams, VLMRunner, compile_prompt_template
from sp_assets.core.policy import Category, Policy

WRITER_VERSION = "1"

CAPTION_PROMPT = (
    "Describe this image in one or two sentences: the main subjects, what they are doing, any "
    "visible text (quote it), and the setting."
)

PLACEHOLDERS = {
    "n": "number of instructions asked for",
    "rules": "the category's rules as prose (Category.rules_text())",
    "id": "category id", "title": "category title",
    "guidance": "the category's edit_guidance",
    "rationale": "the judge's rationale for rating the image unsafe",
    "caption": "the caption written in step 1",
}

DEFAULT_PROMPT = """You write instructions for an image-editing model.

The image was rated unsafe under this policy category:
$rules

What the reviewer found: $rationale
What the image shows: $caption
How to fix it: $guidance

Write $n different edit instructions. Each one must remove or replace only what the category says
the image should not contain, so that the edited image becomes acceptable, and must keep everything
else as it is: the people, animals, objects, background, layout, lighting, colours and style.
Each instruction is one or two short imperative sentences an image editor can follow.
Answer with a JSON list of $n strings and nothing else."""

_LIST_ITEM = re.compile(
    r"^\s*(?:\d{1,2}\s*[.):\]-]|\(\d{1,2}\)|[-\u2022*+]|(?:instruction|edit|variant|option)\s*\d{0,2}\s*[:.)-])\s*(?P<text>.+?)\s*$",
    re.IGNORECASE | re.MULTILINE,
)
_ITEM_KEYS = ("instruction", "text", "edit", "prompt", "edit_instruction", "description")
_LIST_KEYS = ("instructions", "edits", "variants", "edit_instructions", "options")


def _plausible(text: str) -> bool:
    """Readable prose of a sensible length, not token soup."""
    if not 8 <= len(text) <= 600:
        return False
    if sum(ch.isprintable() for ch in text) < 0.97 * len(text):
        return False
    letters = sum(ch.isalpha() and ch.isascii() for ch in text)
    if letters < 0.6 * len(text.replace(" ", "")):
        return False
    words = re.findall(r"[A-Za-z]{2,}", text)
    return len(words) >= 3


def _clean_item(text: str) -> str:
    text = re.sub(r"\s+", " ", str(text)).strip()
    text = re.sub(r"^(?:instruction|edit|variant|option)\s*\d{0,2}\s*[:.)-]\s*", "", text, flags=re.IGNORECASE)
    return text.strip().strip("\"'`").strip().rstrip(",").strip().strip("\"'`").strip()


def _dedupe_key(text: str) -> str:
    return " ".join(re.findall(r"[a-z0-9]+", text.lower()))


def _items_from_json(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        for key in _LIST_KEYS:
            for k, v in value.items():
                if str(k).strip().lower() == key:
                    return _items_from_json(v)
        for key in _ITEM_KEYS:
            for k, v in value.items():
                if str(k).strip().lower() == key and isinstance(v, str):
                    return [v]
        return []
    if isinstance(value, list):
        out: list[str] = []
        for v in value:
            out.extend(_items_from_json(v) if isinstance(v, (str, dict)) else [])
        return out
    return []


def _json_lists(text: str) -> list[Any]:
    """JSON arrays and objects found in the text (repaired where reasonable)."""
    found: list[Any] = []
    start = text.find("[")
    end = text.rfind("]")
    if start != -1 and end > start:
        snippet = text[start:end + 1]
        for cand in (snippet, re.sub(r",\s*([}\]])", r"\1", snippet)):
            try:
                found.append(json.loads(cand))
                break
            except ValueError:
                continue
        else:
            try:
                found.append(ast.literal_eval(snippet))
            except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
                pass
    for s, e, closed in brace_spans(text):
        if closed:
            obj, _ = load_json_object(text[s:e])
            if obj is not None:
                found.append(obj)
    return found


def parse_instructions(text: Any, limit: int | None = None) -> tuple[list[str], str]:
    """Read edit instructions from a model's answer; returns (instructions, how it was read).

    Tries a JSON list (or an object with an "instructions" list), then numbered or bulleted lines,
    then the whole answer as one instruction. Drops implausible and duplicate items.
    """
    raw = text if isinstance(text, str) else ""
    if not raw.strip():
        return [], "empty"
    clean = normalise_answer(raw)
    candidates: list[str] = []
    method = "none"
    for value in _json_lists(clean):
        items = _items_from_json(value)
        if items:
            candidates, method = items, "json"
            break
    if not candidates:
        items = [m.group("text") for m in _LIST_ITEM.finditer(clean)]
        if items:
            candidates, method = items, "list"
    if not candidates:
        paragraph = next((p for p in re.split(r"\n\s*\n", clean.strip()) if p.strip()), "")
        if paragraph and "\n" not in paragraph.strip():
            candidates, method = [paragraph], "single"
    out: list[str] = []
    seen: set[str] = set()
    for item in candidates:
        cleaned = _clean_item(item)
        key = _dedupe_key(cleaned)
        if not key or key in seen or not _plausible(cleaned):
            continue
        seen.add(key)
        out.append(cleaned)
        if limit is not None and len(out) >= limit:
            break
    return out, (method if out else "unparseable")


def clean_caption(text: str, max_chars: int = 400) -> str:
    caption = re.sub(r"\s+", " ", normalise_answer(text or "")).strip().strip("\"'")
    caption = caption[:max_chars].rsplit(" ", 1)[0] if len(caption) > max_chars else caption
    return caption if _plausible(caption) else ""


class ChatWriter(InstructionWriter):
    """Writes up to ``n_variants`` edit instructions per image with a chat model behind ``self.runner`` (a
    subclass sets it: ``VLMWriter`` loads the model here, ``ServerWriter`` asks a model server).

    For each unsafe image:
    1. caption it (greedy; skipped for a text-only model, which works from the judge's finding alone);
    2. ask for ``n`` different edit instructions that remove only what the category forbids (its
       rules, the judge's rationale and the policy's edit_guidance are in the prompt) and keep
       everything else, answered as a JSON list. One variant is written greedily; several are
       sampled, seeded with the row's seed (attempt ``a`` uses ``seed + a``);
    3. read the answer robustly (a JSON list or object, a numbered or bulleted list, or a single
       sentence), drop implausible text, and deduplicate (case, spacing and punctuation ignored);
       if fewer than ``n`` came back, sample again, up to ``attempts`` answers in all.
    An answer that yields nothing never fails the batch: the writer returns fewer instructions, and
    with ``fallback: template`` (the default) one instruction built from the rationale and the
    guidance, marked as such. Every instruction's ``target`` records the caption, the raw model
    output it came from and the model, so the decision can be traced.
    """

    kind = "vlm"  # recorded in every instruction's target and in config()
    runner: Any

    class Params(ProfileParams):
        variants: int = Field(3, ge=1)
        max_new_tokens: int = Field(320, ge=1)
        caption_max_new_tokens: int = Field(96, ge=1)
        temperature: float = Field(0.8, ge=0)
        top_p: float = Field(0.95, gt=0, le=1)
        attempts: int = Field(2, ge=1, description="answers sampled in all to get the variants")
        fallback: Literal["template", "none"] = "template"
        prompt_template: str | None = None
        caption_prompt: str | None = None

    def __init__(
        self,
        policy: Policy,
        *,
        profile_name: str = "vlm_writer",
        variants: int = 3,
        max_new_tokens: int = 320,
        caption_max_new_tokens: int = 96,
        temperature: float = 0.8,
        top_p: float = 0.95,
        attempts: int = 2,
        fallback: str = "template",
        prompt_template: str | None = None,
        caption_prompt: str | None = None,
    ):
        self.policy = policy
        self.profile_name = profile_name
        self.variants = int(variants)
        self.max_new_tokens = int(max_new_tokens)
        self.caption_max_new_tokens = int(caption_max_new_tokens)
        self.temperature = float(temperature)
        self.top_p = float(top_p)
        self.attempts = int(attempts)
        self.fallback = fallback
        self.caption_prompt = caption_prompt or CAPTION_PROMPT
        self.template_text = prompt_template or DEFAULT_PROMPT
        self.template = compile_prompt_template(self.template_text, PLACEHOLDERS, profile_name)

    def caption(self, image: Image.Image) -> tuple[str, str]:
        """(cleaned caption, raw caption output); ('', '') for a text-only model."""
        if not self.runner.has_vision:
            return "", ""
        gen = self.runner.generate([self.caption_prompt], [image], max_new_tokens=self.caption_max_new_tokens)[0]
        return clean_caption(gen.text), gen.text

    def prompt(self, category: Category, verdict: Verdict, caption: str, n: int) -> str:
        return self.template.substitute(
            n=n, rules=category.rules_text(), id=category.id, title=category.title,
            guidance=category.edit_guidance,
            rationale=(verdict.rationale or "(no rationale given)").strip(),
            caption=caption or "(no description available)",
        )

    def write(
        self,
        image: Image.Image,
        verdict: Verdict,
        category: Category | str,
        n_variants: int | None = None,
        seed: int = 0,
    ) -> list[Instruction]:
        if isinstance(category, str):
            category = self.policy.category(category)
        n = int(n_variants or self.variants)
        caption, caption_raw = self.caption(image)
        prompt = self.prompt(category, verdict, caption, n)
        found, raws = self._generate_instructions(image, prompt, n, int(seed))
        base = {
            "writer": self.kind,
            "model": self.info.model_id,
            "revision": self.info.revision,
            "caption": caption,
            "caption_raw_output": caption_raw,
            "seed": int(seed),
            "prompt_sha256": hashlib.sha256(prompt.encode("utf-8")).hexdigest(),
        }
        out = [
            Instruction(
                text=text,
                target={**base, "raw_output": raw, "attempt": attempt, "parsed_as": method},
                keep=f"Keep {KEEP}.",
                variant=i,
            )
            for i, (text, attempt, raw, method) in enumerate(found[:n])
        ]
        if not out and self.fallback == "template":
            out.append(self._template_instruction(verdict, category, base, raws))
        return out

    def _generate_instructions(
        self, image: Image.Image, prompt: str, n: int, seed: int,
    ) -> tuple[list[tuple[str, int, str, str]], list[str]]:
        """Distinct instructions as (text, attempt, raw output, parsed_as), and every raw output.

        One variant is written greedily; several are sampled, attempt ``a`` seeded with ``seed + a``,
        until ``n`` distinct ones came back or ``attempts`` answers were written.
        """
        sample = n > 1
        found: list[tuple[str, int, str, str]] = []
        seen: set[str] = set()
        raws: list[str] = []
        for attempt in range(self.attempts if sample else 1):
            gen = self.runner.generate(
                [prompt], [image] if self.runner.has_vision else None,
                max_new_tokens=self.max_new_tokens, do_sample=sample,
                temperature=self.temperature, top_p=self.top_p, seed=seed + attempt,
            )[0]
            raws.append(gen.text)
            items, method = parse_instructions(gen.text)
            for item in items:
                key = _dedupe_key(item)
                if key not in seen:
                    seen.add(key)
                    found.append((item, attempt, gen.text, method))
            if len(found) >= n:
                break
        return found, raws

    @staticmethod
    def _template_instruction(
        verdict: Verdict, category: Category, base: dict[str, Any], raws: list[str],
    ) -> Instruction:
        """The fallback when no answer gave a usable instruction: one built from the rationale and guidance."""
        reason = (verdict.rationale or f"content that violates {category.id} {category.title}").strip().rstrip(".")
        return Instruction(
            text=f"Edit the image so it no longer shows {reason}. {category.edit_guidance}",
            target={**base, "raw_output": "\n---\n".join(raws), "fallback": "template",
                    "problem": "no usable instruction in the model's answer"},
            keep=f"Keep {KEEP}.",
            variant=0,
        )

    def config(self) -> dict[str, Any]:
        return {
            "writer": self.kind,
            "writer_version": WRITER_VERSION,
            "policy": {"name": self.policy.name},  # the category's rules: memo key
            "runner": self.runner.config(),
            "variants": self.variants,
            "prompt_template": self.template_text,
            "caption_prompt": self.caption_prompt,
            "generation": {
                "max_new_tokens": self.max_new_tokens, "caption_max_new_tokens": self.caption_max_new_tokens,
                "temperature": self.temperature, "top_p": self.top_p, "attempts": self.attempts,
                "greedy_when_one_variant": True,
            },
            "fallback": self.fallback,
        }

    def close(self) -> None:
        self.runner.close()


class VLMWriter(ChatWriter):
    """A ``ChatWriter`` over a transformers chat VLM (or LLM) loaded in this process (``VLMRunner``).

    ``settings`` are ``ChatWriter``'s: variants, max_new_tokens, caption_max_new_tokens, temperature, top_p,
    attempts, fallback, prompt_template, caption_prompt.
    """

    class Params(VLMParams, ChatWriter.Params):
        pass

    def __init__(self, policy: Policy, *, model: str, profile_name: str = "vlm_writer", revision: str | None = None,
                 dtype: str = "auto", device: str = "auto", allow_download: bool = False,
                 trust_remote_code: bool = False, max_image_side: int | None = None, variants: int = 3,
                 max_new_tokens: int = 320, caption_max_new_tokens: int = 96, temperature: float = 0.8,
                 top_p: float = 0.95, attempts: int = 2, fallback: str = "template", prompt_template: str | None = None,
                 caption_prompt: str | None = None):
        super().__init__(policy, profile_name=profile_name, variants=variants, max_new_tokens=max_new_tokens,
                         caption_max_new_tokens=caption_max_new_tokens, temperature=temperature, top_p=top_p,
                         attempts=attempts, fallback=fallback, prompt_template=prompt_template,
                         caption_prompt=caption_prompt)
        self.runner = VLMRunner(
            model, profile_name=profile_name, revision=revision, dtype=dtype, device=device,
            allow_download=allow_download, trust_remote_code=trust_remote_code, max_image_side=max_image_side,
        )
        self.info = self.runner.info


__all__ = ["ChatWriter", "VLMWriter", "parse_instructions", "clean_caption", "DEFAULT_PROMPT", "CAPTION_PROMPT"]
