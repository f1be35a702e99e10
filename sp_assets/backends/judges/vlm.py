"""A judge that prompts an image-text-to-text model with the policy and reads a LlavaGuard-style JSON answer."""

from __future__ import annotations

from typing import Any, Literal, Sequence

from PIL import Image
from pydantic import Field
from transformers import LogitsProcessor

from sp_assets.backends.base import Judge

from sp_assets.core.record_types import Verdict
from sp_assets.backends.common.vlm_runner import VLMParams, VLMRunner
from sp_assets.backends.judges.judge_prompt import (  # the prompt's names, also importable from here
    DEFAULT_PROMPT, PLACEHOLDERS, SCOPES, JudgePrompt, answer_verdict, category_fields, category_options,
    classify_token_text, prompt_sha256, score_from_logs,
)
from sp_assets.core.policy import Category, Policy

JUDGE_VERSION = "2"  # 2: $categories / category_block; policy-wide answers need a policy category
SCORE_METHOD = (
    "softmax mass of tokens that start 'unsafe' vs 'safe' at the generated token holding the rating "
    "value, renormalised over the two"
)


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
        prompt, asked = self.prompts.ask(category)
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
        def score_at(offset: int) -> float | None:
            step = rating_step(self.runner.decode, gen.token_ids, offset)
            return score_from_logs(*table[step][row]) if step is not None and step < len(table) else None

        return answer_verdict(gen.text, self.policy, asked, score_at)

    @classmethod
    def policy_sha256(cls, policy: Policy, category: Category, params: dict[str, Any]) -> str:
        """The exact prompt the judge sends for ``category`` (see ``judge_prompt.prompt_sha256``)."""
        return prompt_sha256(policy, params, category)

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
