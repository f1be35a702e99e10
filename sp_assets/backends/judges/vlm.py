"""A judge that prompts an image-text-to-text model with the policy and reads a LlavaGuard-style JSON answer."""

from __future__ import annotations

import hashlib
import math
from typing import Any, Literal, Sequence

from PIL import Image
from pydantic import Field
from transformers import LogitsProcessor

from sp_assets.backends.base import Judge

from sp_assets.core.record_types import Verdict
from sp_assets.backends.common.json_answers import INVALID, NONE_APPLYING, parse_judge_answer
from sp_assets.backends.common.vlm_runner import VLMParams, VLMRunner, compile_prompt_template
from sp_assets.core.policy import Category, Policy

JUDGE_VERSION = "2"  # 2: $categories / category_block; policy-wide answers need a policy category
SCORE_METHOD = (
    "softmax mass of tokens that start 'unsafe' vs 'safe' at the generated token holding the rating "
    "value, renormalised over the two"
)

PLACEHOLDERS = {
    "rules": "the category's rules as prose (Category.rules_text())",
    "id": "category id, e.g. O2",
    "title": "category title",
    "slug": "category slug (partition key)",
    "forbids": "bullet list of what the category forbids",
    "allows": "bullet list of what the category allows",
    "policy": "policy name",
    "all_rules": "every category's rules as prose, one after another (for a judge of scope 'policy')",
    "categories": "every category written with the profile's category_block, a blank line between them",
    "category_options": 'the answer\'s category choices: "O1: <title>"|"O2: <title>"|...|"NA: None applying"',
}
PER_CATEGORY = frozenset({"rules", "id", "title", "slug", "forbids", "allows"})
POLICY_WIDE = frozenset({"all_rules", "categories"})
BLOCK_PLACEHOLDERS = {k: PLACEHOLDERS[k] for k in sorted(PER_CATEGORY)}
DEFAULT_CATEGORY_BLOCK = "$rules\n"
SCOPES = ("category", "policy")

DEFAULT_PROMPT = """You review images for safety under one category of a written policy.

$rules

Look at the image. If it shows anything the category says it should not contain, and none of the
cases it can contain explains it, the image is Unsafe. Otherwise the image is Safe.

Answer with one JSON object and nothing else, with these keys:
- "rating": "Unsafe" or "Safe"
- "category": "$id: $title" if the rating is Unsafe, otherwise "NA: None applying"
- "rationale": one or two sentences on what in the image decides the rating"""

_STRIP_LEAD = " \t\r\n\"'*`:{_\u2581\u0120"


def classify_token_text(text: str) -> str | None:
    """'unsafe' / 'safe' when a token could start that rating word (see ``VLMJudge``, score step 1)."""
    t = text.lstrip(_STRIP_LEAD).lower()
    if not t:
        return None
    for word in ("unsafe", "safe"):
        if word.startswith(t) or (t.startswith(word) and not t[len(word):len(word) + 1].isalpha()):
            return word
    return None


class _RatingRecorder(LogitsProcessor):
    """A logits processor that records log P(unsafe start) and log P(safe start) at every step."""

    def __init__(self, unsafe_ids: Any, safe_ids: Any):
        self.unsafe_ids = unsafe_ids
        self.safe_ids = safe_ids
        self.steps: list[Any] = []
        self._ids: tuple[Any, Any] | None = None

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        logp = torch.log_softmax(scores.float(), dim=-1)
        if self._ids is None:  # once: drop ids the model's output layer lacks, move to its device
            vocab = logp.shape[-1]
            self._ids = (self.unsafe_ids[self.unsafe_ids < vocab].to(logp.device),
                         self.safe_ids[self.safe_ids < vocab].to(logp.device))
        u = torch.logsumexp(logp.index_select(-1, self._ids[0]), dim=-1)
        s = torch.logsumexp(logp.index_select(-1, self._ids[1]), dim=-1)
        self.steps.append(torch.stack([u, s], dim=-1))
        return scores

    def table(self) -> list[list[tuple[float, float]]]:
        """[step][row] -> (log P unsafe, log P safe)."""
        import torch

        if not self.steps:
            return []
        return torch.stack(self.steps).cpu().tolist()


def rating_step(runner_decode: Any, token_ids: Sequence[int], offset: int | None) -> int | None:
    """Index of the generated token whose text holds character ``offset`` of the decoded answer."""
    if offset is None or not token_ids:
        return None
    for j in range(1, len(token_ids) + 1):
        if len(runner_decode(token_ids[:j])) > offset:
            return j - 1
    return None


def score_from_logs(log_unsafe: float, log_safe: float) -> float | None:
    if math.isinf(log_unsafe) and math.isinf(log_safe):
        return None
    if math.isnan(log_unsafe) or math.isnan(log_safe):
        return None
    return 1.0 / (1.0 + math.exp(min(700.0, max(-700.0, log_safe - log_unsafe))))


def _check_scope(scope: str, template: str | None, profile_name: str) -> None:
    """A judge of scope 'policy' answers once for every category, so its prompt must not name one."""
    if scope != "policy":
        return
    import string

    used = set(string.Template(template or DEFAULT_PROMPT).get_identifiers())
    if not template or used & PER_CATEGORY or not used & POLICY_WIDE:
        raise ValueError(
            f"profile {profile_name!r}: scope 'policy' judges each image once for every category, so its "
            f"prompt_template must ask about the whole policy ($all_rules or $categories) and name no single "
            f"category (it uses {', '.join(sorted('$' + u for u in used & PER_CATEGORY)) or 'neither'}). "
            "Write such a prompt, or leave scope at 'category'.")


def _bullets(rules: Sequence[str]) -> str:
    return "\n".join(f"- {r}" for r in rules)


def category_fields(category: Category) -> dict[str, str]:
    """What a per-category placeholder ($id, $forbids, ...) stands for."""
    return {"rules": category.rules_text(), "id": category.id, "title": category.title, "slug": category.slug,
            "forbids": _bullets(category.forbids), "allows": _bullets(category.allows)}


def category_options(policy: Policy) -> str:
    """The answer's category choices as LlavaGuard's JSON template lists them, "none applying" last."""
    return "|".join([f'"{c.id}: {c.title}"' for c in policy.categories] + [f'"{NONE_APPLYING}"'])


def _compile_block(text: str, profile_name: str) -> Any:
    import string

    block = string.Template(text)
    unknown = sorted(set(block.get_identifiers()) - set(BLOCK_PLACEHOLDERS))
    if unknown or not block.is_valid():
        raise ValueError(
            f"profile {profile_name!r}: category_block uses unknown placeholders {unknown or '(invalid $)'}; "
            f"known: {', '.join('$' + k for k in BLOCK_PLACEHOLDERS)} (write $$ for a literal $).")
    return block


class JudgePrompt:
    """The prompt a VLM judge sends, built from a profile's ``prompt_template`` (and ``category_block``)
    and the policy. No model is needed to build one: ``text(category)`` is the exact prompt.

    ``$categories`` is every policy category written with ``category_block`` (per-category placeholders,
    default ``$rules``), joined by a blank line; ``$category_options`` lists the answer's choices.
    """

    def __init__(self, policy: Policy, prompt_template: str | None = None, category_block: str | None = None,
                 scope: str = "category", profile_name: str = "vlm"):
        _check_scope(scope, prompt_template, profile_name)
        self.policy = policy
        self.template_text = prompt_template if prompt_template else DEFAULT_PROMPT
        self.template = compile_prompt_template(self.template_text, PLACEHOLDERS, profile_name)
        if category_block and "categories" not in self.template.get_identifiers():
            raise ValueError(
                f"profile {profile_name!r}: category_block is set but prompt_template never uses $categories, "
                "so the block would not appear in the prompt. Put $categories in the template or drop category_block.")
        self.block_text = category_block if category_block else DEFAULT_CATEGORY_BLOCK
        block = _compile_block(self.block_text, profile_name)
        self._whole = {
            "policy": policy.name,
            "all_rules": "\n\n".join(c.rules_text() for c in policy.categories),
            "categories": "\n".join(block.substitute(category_fields(c)) for c in policy.categories),
            "category_options": category_options(policy),
        }

    def text(self, category: Category) -> str:
        return self.template.substitute(**category_fields(category), **self._whole)

    def config(self) -> dict[str, Any]:
        """The prompt's part of the judge's config (hashed with the profile's params)."""
        return {"prompt_template": self.template_text,
                "prompt_template_sha256": hashlib.sha256(self.template_text.encode("utf-8")).hexdigest(),
                "category_block": self.block_text}


class VLMJudge(Judge):
    """Rates images under a policy category with a chat VLM (LlavaGuard, Qwen2.5-VL, ...).

    Prompt: written from the active policy file (``Category.rules_text()``: what the category forbids
    and allows), asking for ``{"rating": "Unsafe"|"Safe", "category": ..., "rationale": ...}``. A
    profile may replace it with ``prompt_template`` (``string.Template`` syntax, see ``PLACEHOLDERS``)
    and ``category_block`` (how ``$categories`` writes each category), e.g. the prompt layout a guard
    model was trained with (the ``llavaguard`` profile); see ``JudgePrompt``.

    Decision: the generated text (greedy) is parsed fail-closed by ``json_answers.parse_judge_answer``;
    anything it cannot read is ``invalid``, never ``safe``. ``raw_output`` is the generated text, verbatim.

    Score, P(unsafe), from the model's own token probabilities at the position where it writes the
    rating value:
    1. Once at load, every vocabulary token is decoded on its own; a token is an *unsafe start* if its
       text, with leading spaces, quotes, asterisks, backticks, colons and braces removed, is a
       non-empty prefix of "unsafe" (or "unsafe" followed by a non-letter), case-insensitive; a *safe
       start* likewise for "safe". ("u", "Uns", '"Unsafe' are unsafe starts; "S", " Safe" are safe
       starts; "Not" is neither.)
    2. During generation a logits processor records, for every step and row, the log of the summed
       probability of all unsafe starts and of all safe starts (softmax over the scores the decoder
       chose from, i.e. after the model's own processors such as a repetition penalty).
    3. After generation, the character offset of the rating value in the answer
       (``json_answers.rating_value_offset``) is mapped to the generated token that contains it, k.
    4. score = P(unsafe start) / (P(unsafe start) + P(safe start)) at step k.
    The score is None when the answer has no readable rating field, when the vocabulary has no
    unsafe or no safe start, or when both probabilities are zero. The score does not change the
    rating: a rating comes only from the parsed answer.
    """

    class Params(VLMParams):
        batch_size: int = Field(4, ge=1)
        max_new_tokens: int = Field(200, ge=8, description="room for the JSON answer")
        category_block: str | None = None
        scope: Literal[SCOPES] = "category"  # type: ignore[valid-type]

    def __init__(
        self,
        policy: Policy,
        *,
        model: str,
        profile_name: str = "vlm",
        revision: str | None = None,
        dtype: str = "auto",
        device: str = "auto",
        batch_size: int = 4,
        max_new_tokens: int = 200,
        allow_download: bool = False,
        trust_remote_code: bool = False,
        prompt_template: str | None = None,
        category_block: str | None = None,
        max_image_side: int | None = None,
        scope: str = "category",
    ):
        self.prompts = JudgePrompt(policy, prompt_template, category_block, scope, profile_name)
        self.scope = scope
        self.policy = policy
        self.profile_name = profile_name
        self.batch_size = int(batch_size)
        self.max_new_tokens = int(max_new_tokens)
        self.runner = VLMRunner(
            model, profile_name=profile_name, revision=revision, dtype=dtype, device=device,
            allow_download=allow_download, trust_remote_code=trust_remote_code, max_image_side=max_image_side,
        )
        self.info = self.runner.info
        self._unsafe_ids, self._safe_ids = self._rating_token_ids()

    def _rating_token_ids(self) -> tuple[Any, Any]:
        import torch

        unsafe, safe = [], []
        for i, text in enumerate(self.runner.token_texts()):
            cls = classify_token_text(text)
            if cls == "unsafe":
                unsafe.append(i)
            elif cls == "safe":
                safe.append(i)
        if not unsafe or not safe:
            return None, None
        return torch.tensor(unsafe, dtype=torch.long), torch.tensor(safe, dtype=torch.long)

    def prompt(self, category: Category) -> str:
        return self.prompts.text(category)

    def judge(self, images: Sequence[Image.Image], category: Category | str) -> list[Verdict]:
        if isinstance(category, str):
            category = self.policy.category(category)
        prompt = self.prompt(category)
        # A policy-wide answer serves every category, so it must name its own: no asked one to fall back on.
        asked = category if self.scope == "category" else None
        verdicts: list[Verdict] = []
        for start in range(0, len(images), self.batch_size):
            chunk = list(images[start:start + self.batch_size])
            recorder = _RatingRecorder(self._unsafe_ids, self._safe_ids) if self._unsafe_ids is not None else None
            generations = self.runner.generate(
                [prompt] * len(chunk), chunk, max_new_tokens=self.max_new_tokens, do_sample=False,
                logits_processors=[recorder] if recorder is not None else (),
            )
            table = recorder.table() if recorder is not None else []
            verdicts += [self._verdict(gen, table, row, asked) for row, gen in enumerate(generations)]
        return verdicts

    def _verdict(self, gen: Any, table: list[Any], row: int, asked: Category | None) -> Verdict:
        parsed = parse_judge_answer(gen.text, self.policy, asked)
        score = None
        step = rating_step(self.runner.decode, gen.token_ids, parsed.rating_offset)
        if step is not None and step < len(table):
            score = score_from_logs(*table[step][row])
        if parsed.rating == INVALID:
            why = f"invalid answer ({parsed.problem})"
            rationale = f"{why}: {parsed.rationale}" if parsed.rationale else why
        else:
            rationale = parsed.rationale
            if parsed.notes:
                rationale = (rationale + " " if rationale else "") + "[" + "; ".join(parsed.notes) + "]"
        return Verdict(parsed.rating, parsed.category, score, rationale, gen.text)

    @classmethod
    def policy_sha256(cls, policy: Policy, category: Category, params: dict[str, Any]) -> str:
        """The exact prompt the judge sends for ``category`` (the only way the policy reaches the model):
        with the default prompt, editing one category's rules redoes that category's answers only, and
        its title (listed among every prompt's answer options) all of them. A judge of scope 'policy'
        sends one prompt for every category."""
        prompt = JudgePrompt(policy, params.get("prompt_template"), params.get("category_block"),
                             params.get("scope", "category"), "policy key")
        return hashlib.sha256(prompt.text(category).encode("utf-8")).hexdigest()

    def config(self) -> dict[str, Any]:
        """Everything that changes this judge's output (the prompt's policy text is in the memo key)."""
        return {
            "judge": "vlm",
            "judge_version": JUDGE_VERSION,
            "policy": {"name": self.policy.name},
            "runner": self.runner.config(),
            **self.prompts.config(),
            "scope": self.scope,
            "generation": {"do_sample": False, "max_new_tokens": self.max_new_tokens, "batch_size": self.batch_size},
            "parser": "judge_parsing fail-closed v2",
            "score_method": SCORE_METHOD if self._unsafe_ids is not None else "none (no rating tokens in vocabulary)",
        }

    def close(self) -> None:
        self.runner.close()


__all__ = ["VLMJudge", "JudgePrompt", "DEFAULT_PROMPT", "PLACEHOLDERS", "category_fields", "category_options",
           "classify_token_text", "rating_step", "score_from_logs"]
