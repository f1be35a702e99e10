"""An instruction writer whose model runs behind an OpenAI-compatible server: the VLM writer's prompts and
its reading of the answers, sent as chat completions, a batch's images concurrently."""

from __future__ import annotations

from typing import Any, Literal, Sequence

from pydantic import Field

from sp_assets.backends.common.chat_server import ServerRunner, connect
from sp_assets.backends.writers.vlm import ChatWriter
from sp_assets.core.policy import Policy
from sp_assets.core.record_types import ModelInfo


class ServerWriter(ChatWriter):
    """``ChatWriter`` (caption, then ``variants`` instructions, read robustly, template fallback) asking a chat
    model served over the OpenAI protocol. One variant is asked greedily (temperature 0); several are sampled
    with ``temperature`` / ``top_p``, seeded with the row's seed (attempt ``a`` with ``seed + a``): a server
    that honours ``seed`` (vLLM, SGLang) then gives the same instructions again.

    Params (hashed): model (the served model name), weights (what the server loaded), max_image_side,
    image_format (png|jpeg), vision (false for a text-only model: no caption, no image), extra_body, and
    ``ChatWriter``'s variants, max_new_tokens, caption_max_new_tokens, temperature, top_p, attempts,
    fallback, prompt_template, caption_prompt. The ``server`` section is not hashed.
    """

    kind = "openai_server"

    class Params(ChatWriter.Params):
        model: str = Field(min_length=1, description="the served model name")
        weights: str = Field("", description="what the server loaded (hub id and revision), for the record")
        max_image_side: int | None = Field(None, ge=16)
        image_format: Literal["png", "jpeg"] = "png"
        vision: bool = Field(True, description="false for a text-only model: no caption, no image")
        extra_body: dict[str, Any] | None = None

    def __init__(self, policy: Policy, *, model: str, profile_name: str = "openai_server_writer",
                 server: dict[str, Any] | None = None, profile_file: str = "", weights: str = "",
                 max_image_side: int | None = None, image_format: str = "png", vision: bool = True,
                 extra_body: dict[str, Any] | None = None, variants: int = 3, max_new_tokens: int = 320,
                 caption_max_new_tokens: int = 96, temperature: float = 0.8, top_p: float = 0.95, attempts: int = 2,
                 fallback: str = "template", prompt_template: str | None = None, caption_prompt: str | None = None):
        super().__init__(policy, profile_name=profile_name, variants=variants, max_new_tokens=max_new_tokens,
                         caption_max_new_tokens=caption_max_new_tokens, temperature=temperature, top_p=top_p,
                         attempts=attempts, fallback=fallback, prompt_template=prompt_template,
                         caption_prompt=caption_prompt)
        where = f"writer profile {profile_name!r} ({profile_file or 'its profile file'})"
        client = connect(server, model, where)
        self.runner = ServerRunner(client, max_image_side=max_image_side, image_format=image_format,
                                   vision=vision, extra_body=extra_body or {})
        self.info = ModelInfo(model_id=str(model), revision=str(weights), device="server", dtype="",
                              library=client.library)

    def each(self, fn: Any, items: Sequence[Any]) -> list[Any]:
        """A batch's rows concurrently (each row's caption and instructions in turn), up to max_in_flight."""
        return self.runner.client.map(fn, items)


__all__ = ["ServerWriter"]
