"""A judge, and a guard, whose model runs behind an OpenAI-compatible server (vLLM, SGLang, ...): the VLM
judge's prompt and fail-closed reading of the answer, sent as chat completions, many in flight."""

from __future__ import annotations

import math
from typing import Any, Literal, Sequence

from PIL import Image
from pydantic import Field

from sp_assets.backends.base import Guard, Judge
from sp_assets.backends.common.chat_server import (
    Answer, connect, image_data_url, user_message,
)
from sp_assets.backends.judges.judge_prompt import (
    SCOPES, JudgePrompt, answer_verdict, classify_token_text, prompt_sha256, score_from_logs,
)
from sp_assets.backends.profiles import ProfileParams
from sp_assets.core.policy import Category, Policy
from sp_assets.core.record_types import ModelInfo, Verdict

JUDGE_VERSION = "1"
SCORE_METHOD = (
    "the server's top log-probs at the generated token holding the rating value: the probability mass of "
    "tokens that start 'unsafe' vs 'safe' among them, renormalised over the two"
)


class ServerJudge(Judge):
    """Rates images under a policy category by asking a chat VLM served over the OpenAI protocol.

    The prompt is the in-process VLM judge's (``judge_prompt.JudgePrompt``: the default, or the profile's
    ``prompt_template`` / ``category_block`` / ``scope``), the image goes as a base64 data URL scaled down to
    ``max_image_side``, and the answer is read by the same fail-closed parser: anything unreadable is
    ``invalid``, never ``safe``. Greedy (temperature 0) and seeded by default. Score, P(unsafe), where the
    server sends log-probs (``top_logprobs`` > 0): at the generated token that holds the rating value, the
    mass of the top tokens that start "unsafe" against those that start "safe" (as ``VLMJudge`` does over
    the whole vocabulary); None when neither is among them.

    Params (hashed): model (the served model name), weights (what the server loaded, e.g. a hub id and
    revision: recorded as the revision), max_tokens, temperature, seed, top_logprobs, max_image_side,
    image_format (png|jpeg), prompt_template, category_block, scope, extra_body (more request fields, e.g.
    vLLM's top_k). The profile's ``server`` section (base URL, key variable, requests in flight, timeouts,
    retries) is not: see ``chat_server.ServerSettings``.
    """

    role_name = "judge"

    class Params(ProfileParams):
        model: str = Field(min_length=1, description="the served model name")
        weights: str = Field("", description="what the server loaded (hub id and revision), for the record")
        max_tokens: int = Field(256, ge=8)
        temperature: float = Field(0.0, ge=0)
        seed: int = 0
        top_logprobs: int = Field(20, ge=0, le=20, description="0: no score")
        max_image_side: int | None = Field(None, ge=16)
        image_format: Literal["png", "jpeg"] = "png"
        prompt_template: str | None = None
        category_block: str | None = None
        scope: Literal[SCOPES] = "category"  # type: ignore[valid-type]
        extra_body: dict[str, Any] | None = None

    def __init__(self, policy: Policy, *, model: str, profile_name: str = "openai_server",
                 server: dict[str, Any] | None = None, profile_file: str = "", weights: str = "",
                 max_tokens: int = 256, temperature: float = 0.0, seed: int = 0, top_logprobs: int = 20,
                 max_image_side: int | None = None, image_format: str = "png", prompt_template: str | None = None,
                 category_block: str | None = None, scope: str = "category", extra_body: dict[str, Any] | None = None):
        where = f"{self.role_name} profile {profile_name!r} ({profile_file or 'its profile file'})"
        self.prompts = JudgePrompt(policy, prompt_template, category_block, scope, profile_name)
        self.policy, self.scope, self.profile_name = policy, scope, profile_name
        self.max_image_side, self.image_format = max_image_side, image_format
        self.sampling = {"max_tokens": int(max_tokens), "temperature": float(temperature), "seed": int(seed),
                         **({"logprobs": True, "top_logprobs": int(top_logprobs)} if int(top_logprobs) else {}),
                         **(extra_body or {})}
        self.client = connect(server, model, where)
        self.info = ModelInfo(model_id=str(model), revision=str(weights), device="server", dtype="",
                              library=self.client.library)

    def prompt(self, category: Category) -> str:
        return self.prompts.text(category)

    def judge(self, images: Sequence[Image.Image], category: Category | str) -> list[Verdict]:
        """One verdict per image; the images are asked about concurrently, up to the server's max_in_flight."""
        prompt, asked = self.prompts.ask(category)
        return self.client.map(lambda image: self._verdict(prompt, image, asked), list(images))

    def _verdict(self, prompt: str, image: Image.Image, asked: Category | None) -> Verdict:
        url = image_data_url(image, self.max_image_side, self.image_format)
        answer = self.client.complete([user_message(prompt, url)], **self.sampling)
        return answer_verdict(answer.text, self.policy, asked, lambda offset: logprob_score(answer, offset))

    @classmethod
    def policy_sha256(cls, policy: Policy, category: Category, params: dict[str, Any]) -> str:
        """The exact prompt the judge sends for ``category`` (see ``judge_prompt.prompt_sha256``)."""
        return prompt_sha256(policy, params, category)

    def config(self) -> dict[str, Any]:
        """Everything that changes this judge's answers (where the server runs does not)."""
        return {"judge": "openai_server", "judge_version": JUDGE_VERSION, "policy": {"name": self.policy.name},
                "model": self.info.model_id, "weights": self.info.revision, **self.prompts.config(),
                "scope": self.scope, "request": self.sampling,
                "image": {"max_side": self.max_image_side, "format": self.image_format},
                "parser": "judge_parsing fail-closed v2",
                "score_method": SCORE_METHOD if "logprobs" in self.sampling else "none (top_logprobs: 0)"}

    def close(self) -> None:
        self.client.close()


class ServerGuard(ServerJudge, Guard):
    """The server judge evaluated as a guard on its own (a guard profile of ``kind: judge`` that names a
    server judge profile instead reuses that judge's answers)."""

    role_name = "guard"
    Params = ServerJudge.Params  # its own, so the registry checks a guard profile of this class too

    def predict(self, images: Sequence[Image.Image], category: Category) -> list[Verdict]:
        return self.judge(images, category)


def logprob_score(answer: Answer, offset: int) -> float | None:
    """P(unsafe) at the generated token holding character ``offset`` of the answer, from the server's
    top log-probs; None without log-probs, when the tokens do not spell the answer, or when no top token
    starts either rating word."""
    tokens = answer.logprobs
    if not tokens:
        return None
    texts = [str(t.get("token", "")) if isinstance(t, dict) else "" for t in tokens]
    if "".join(texts) != answer.text:
        return None
    end = 0
    for token, text in zip(tokens, texts):
        end += len(text)
        if end > offset:
            return _rating_mass(token)
    return None


def _rating_mass(token: dict[str, Any]) -> float | None:
    found: dict[str, list[float]] = {"unsafe": [], "safe": []}
    seen: set[str] = set()
    for candidate in [token, *(token.get("top_logprobs") or [])]:
        text, logprob = candidate.get("token"), candidate.get("logprob")
        if not isinstance(text, str) or text in seen or not isinstance(logprob, (int, float)):
            continue
        seen.add(text)
        kind = classify_token_text(text)
        if kind is not None and math.isfinite(logprob):
            found[kind].append(float(logprob))
    return score_from_logs(_logsumexp(found["unsafe"]), _logsumexp(found["safe"]))


def _logsumexp(values: list[float]) -> float:
    if not values:
        return -math.inf
    top = max(values)
    return top + math.log(sum(math.exp(v - top) for v in values))


__all__ = ["ServerGuard", "ServerJudge", "logprob_score"]
