"""Talking to an OpenAI-compatible model server (vLLM, SGLang, TGI, llama.cpp): chat completions with images
as base64 data URLs, many requests in flight, timeouts, retries with exponential backoff, and a clear stop
naming the URL when no server answers.

Where the server runs is a profile's ``server`` section (``ServerSettings``), which is not hashed: the same
model behind another URL gives the same answers. The key is read from the environment variable the section
names (``api_key_env``) and lives only in the HTTP client's headers: never stored, logged or hashed.
"""

from __future__ import annotations

import base64
import email.utils
import io
import os
import random
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, fields, replace
from typing import Any, Callable, Sequence
from urllib.parse import urlsplit

import httpx
from PIL import Image

from sp_assets.backends.common.versions import package_version
from sp_assets.backends.common.vlm_runner import Generation, fit_image

# Answers worth asking again: rate limits, a server starting or overloaded, a proxy's timeout.
RETRY_STATUSES = frozenset({408, 409, 425, 429, 500, 502, 503, 504})
IMAGE_FORMATS = {"png": ("PNG", "image/png"), "jpeg": ("JPEG", "image/jpeg")}
CLIENT_VERSION = "1"


class ServerUnavailableError(ConnectionError):
    """No model server answers at a profile's URL (connection refused or unreachable, after every retry)."""


class ServerRequestError(RuntimeError):
    """The server answered with an error that asking again does not fix, or kept failing after every retry."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status  # the HTTP status of a refused request


@dataclass(frozen=True)
class ServerSettings:
    """A profile's ``server`` section: where the server is and how to talk to it (none of it hashed).

    base_url         the OpenAI-compatible API root, e.g. http://127.0.0.1:8000/v1 (vLLM) or :30000/v1 (SGLang)
    api_key_env      name of the environment variable that holds the key ('' when the server needs none)
    max_in_flight    requests sent at once (a batch's images go concurrently)
    timeout_s        seconds to wait for one answer; connect_timeout_s to open the connection
    max_retries      times a request is sent again after a connection error, a timeout, 429 or 5xx
    backoff_s        first wait before a retry, doubled each time (with jitter) up to max_backoff_s; a
                     server's Retry-After is honoured up to max_backoff_s
    check_model      at start, ask GET /models and stop if the profile's model is not served there
    """

    base_url: str
    api_key_env: str = ""
    max_in_flight: int = 8
    timeout_s: float = 120.0
    connect_timeout_s: float = 10.0
    max_retries: int = 5
    backoff_s: float = 1.0
    max_backoff_s: float = 60.0
    check_model: bool = True

    @classmethod
    def from_section(cls, section: dict[str, Any], where: str) -> ServerSettings:
        known = [f.name for f in fields(cls)]
        unknown = sorted(set(section) - set(known))
        if unknown:
            raise ValueError(f"{where}: 'server' has unknown keys {unknown}; known: {', '.join(known)}.")
        url = str(section.get("base_url") or "").strip()
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"{where}: server.base_url must be the server's http(s) API root, e.g. "
                             f"http://127.0.0.1:8000/v1; got {url!r}.")
        settings = cls(**{**section, "base_url": url.rstrip("/")})
        numbers = {"max_in_flight": 1, "timeout_s": 0.001, "connect_timeout_s": 0.001, "max_retries": 0,
                   "backoff_s": 0, "max_backoff_s": 0}
        bad = [f"{k}={getattr(settings, k)!r}" for k, least in numbers.items()
               if isinstance(getattr(settings, k), bool) or not isinstance(getattr(settings, k), (int, float))
               or getattr(settings, k) < least]
        if bad:
            raise ValueError(f"{where}: server settings out of range: {', '.join(bad)} (max_in_flight >= 1, "
                             "timeouts > 0, retries and backoff >= 0).")
        return replace(settings, max_in_flight=int(settings.max_in_flight), max_retries=int(settings.max_retries),
                       check_model=bool(settings.check_model))


def api_key(variable: str, where: str) -> str:
    """The key from the environment variable a profile names ('' when it names none)."""
    if not variable:
        return ""
    value = os.environ.get(variable, "").strip()
    if not value:
        raise ValueError(f"{where}: server.api_key_env names the environment variable {variable!r}, which is not "
                         f"set here. Export it (export {variable}=...) or remove api_key_env if the server needs "
                         "no key.")
    return value


def retry_after_s(value: str | None) -> float | None:
    """Seconds a Retry-After header asks for (a number or an HTTP date); None when absent or unreadable."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def image_data_url(image: Image.Image, max_side: int | None, image_format: str = "png") -> str:
    """The image as a base64 data URL, scaled down to ``max_side`` first (what the server's model sees)."""
    pil_format, mime = IMAGE_FORMATS[image_format]
    buffer = io.BytesIO()
    fit_image(image, max_side).save(buffer, format=pil_format, **({"quality": 95} if pil_format == "JPEG" else {}))
    return f"data:{mime};base64,{base64.b64encode(buffer.getvalue()).decode('ascii')}"


def user_message(text: str, image_url: str | None = None) -> dict[str, Any]:
    """One user turn: the image first, then the text (the order the in-process VLM renders)."""
    if image_url is None:
        return {"role": "user", "content": text}
    return {"role": "user", "content": [{"type": "image_url", "image_url": {"url": image_url}},
                                        {"type": "text", "text": text}]}


@dataclass(frozen=True)
class Answer:
    """A chat completion's first choice: its text ('' when the server gave none) and its token log-probs
    (``logprobs.content``: one entry per generated token, with its ``top_logprobs``) where it sent them."""

    text: str
    logprobs: list[dict[str, Any]] | None = None
    finish_reason: str = ""


class ChatClient:
    """Chat completions from one served model, ``max_in_flight`` at a time, with retries.

    ``where`` names the profile and its file in every error. ``sleep`` is how the client waits between
    retries (tests replace it to record the waits); ``retries`` counts why it retried.
    """

    def __init__(self, settings: ServerSettings, model: str, where: str):
        if not model:
            raise ValueError(f"{where}: param 'model' is required: the served model name (what the server's "
                             "GET /v1/models lists, e.g. vLLM's --served-model-name).")
        self.settings, self.model, self.where = settings, str(model), where
        headers = {"User-Agent": f"safetypairs-openai-server/{CLIENT_VERSION}"}
        key = api_key(settings.api_key_env, where)
        if key:
            headers["Authorization"] = f"Bearer {key}"
        self._http = httpx.Client(
            headers=headers,
            timeout=httpx.Timeout(settings.timeout_s, connect=settings.connect_timeout_s),
            limits=httpx.Limits(max_connections=settings.max_in_flight,
                                max_keepalive_connections=settings.max_in_flight),
        )
        self._slots = threading.BoundedSemaphore(settings.max_in_flight)
        self._count_lock = threading.Lock()
        self.sleep: Callable[[float], None] = time.sleep
        self.retries: Counter[str] = Counter()
        self.library = f"openai-compatible chat completions; httpx {package_version('httpx')}"

    def __repr__(self) -> str:  # never the headers: they hold the key
        return f"ChatClient({self.settings.base_url!r}, model={self.model!r})"

    # -- requests -----------------------------------------------------------------------------------

    def complete(self, messages: list[dict[str, Any]], **sampling: Any) -> Answer:
        """One chat completion of ``messages`` with the sampling settings given (max_tokens, temperature, ...)."""
        body = self.request("POST", "/chat/completions", {"model": self.model, "messages": messages, **sampling})
        return _first_choice(body, self._describe("/chat/completions"))

    def served_models(self) -> list[str] | None:
        """The model names GET /models lists; None when the server has no such route."""
        try:
            body = self.request("GET", "/models")
        except ServerRequestError as exc:
            if exc.status == 404:
                return None
            raise
        data = body.get("data") if isinstance(body, dict) else None
        return [str(m.get("id")) for m in data if isinstance(m, dict)] if isinstance(data, list) else None

    def check_served(self) -> None:
        """Stop at once when the server is not there, or does not serve this profile's model."""
        if not self.settings.check_model:
            return
        names = self.served_models()
        if names is not None and self.model not in names:
            raise ServerRequestError(
                f"{self.where}: the server at {self.settings.base_url} serves {names or 'no models'}, not "
                f"{self.model!r}. Set params.model to the served model name (vLLM: --served-model-name).")

    def request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        """The JSON answer to one request, sent again after connection errors, timeouts, 429 and 5xx (waiting
        as the server's Retry-After asks, else with exponential backoff) up to ``max_retries`` times."""
        url = self.settings.base_url + path
        started, failures = time.monotonic(), []
        for attempt in range(self.settings.max_retries + 1):
            try:
                with self._slots:
                    response = self._http.request(method, url, json=body)
            except httpx.TransportError as exc:
                failures.append(type(exc).__name__)
                wait = None
            else:
                if response.status_code < 400:
                    return _json(response, self._describe(path))
                if response.status_code not in RETRY_STATUSES:
                    raise ServerRequestError(self._refused(path, response), response.status_code)
                failures.append(f"HTTP {response.status_code}")
                wait = retry_after_s(response.headers.get("Retry-After"))
            with self._count_lock:
                self.retries[failures[-1]] += 1
            if attempt < self.settings.max_retries:
                self.sleep(self._delay(attempt, wait))
        raise self._gave_up(path, failures, time.monotonic() - started)

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        cap = self.settings.max_backoff_s
        if retry_after is not None:
            return min(retry_after, cap)
        return min(cap, self.settings.backoff_s * 2 ** attempt) * (0.5 + random.random() / 2)

    # -- errors ---------------------------------------------------------------------------------------

    def _describe(self, path: str) -> str:
        return f"{self.where}: {self.settings.base_url}{path}"

    def _refused(self, path: str, response: httpx.Response) -> str:
        text = " ".join(response.text.split())[:500]
        hint = ""
        if response.status_code in (401, 403):
            hint = (f" Check the key: server.api_key_env names {self.settings.api_key_env!r}"
                    if self.settings.api_key_env else " The server wants a key: set server.api_key_env")
        elif response.status_code == 404:
            hint = " Check server.base_url (the API root, usually ending in /v1) and params.model."
        elif response.status_code in (400, 413, 422):
            hint = (" Check the profile's params: a server may refuse logprobs (params.top_logprobs: 0), a "
                    "seed, or an image too large for its context (params.max_image_side).")
        return f"{self._describe(path)} answered HTTP {response.status_code}: {text}.{hint}"

    def _gave_up(self, path: str, failures: list[str], seconds: float) -> Exception:
        tries = f"{len(failures)} tries over {seconds:.1f} s"
        if all(f in ("ConnectError", "ConnectTimeout") for f in failures):
            return ServerUnavailableError(self._not_there(failures[-1], tries))
        return ServerRequestError(f"{self._describe(path)} still failing after {tries} ({', '.join(failures)}). "
                                  "Raise server.max_retries or server.timeout_s, or lower server.max_in_flight.")

    def _not_there(self, last: str, tries: str) -> str:
        parts = urlsplit(self.settings.base_url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        return (
            f"No model server answers at {self.settings.base_url} ({self.where}): {last} after {tries}. Start "
            f"one that serves {self.model!r} there, e.g.\n"
            f"  vllm serve <weights> --served-model-name {self.model} --host {parts.hostname} --port {port}\n"
            f"  python -m sglang.launch_server --model-path <weights> --served-model-name {self.model} "
            f"--host {parts.hostname} --port {port}\n"
            "or point server.base_url in that profile file at where it runs (README: 'Models behind a server')."
        )

    # -- concurrency ------------------------------------------------------------------------------------

    def map(self, fn: Callable[[Any], Any], items: Sequence[Any]) -> list[Any]:
        """``fn`` over ``items`` on up to ``max_in_flight`` threads; results in item order."""
        items = list(items)
        if len(items) <= 1 or self.settings.max_in_flight == 1:
            return [fn(item) for item in items]
        with ThreadPoolExecutor(max_workers=min(self.settings.max_in_flight, len(items)),
                                thread_name_prefix="model-server") as pool:
            return list(pool.map(fn, items))

    def close(self) -> None:
        self._http.close()


def _json(response: httpx.Response, where: str) -> Any:
    try:
        return response.json()
    except ValueError as exc:
        raise ServerRequestError(f"{where} answered HTTP {response.status_code} with a body that is not JSON: "
                                 f"{' '.join(response.text.split())[:300]!r}. Is base_url an OpenAI-compatible "
                                 "API root?") from exc


def _first_choice(body: Any, where: str) -> Answer:
    """The first choice of a chat completion. A body without one is the server's fault, not an answer: it
    stops the batch (nothing is stored), where an empty or unreadable answer is read fail-closed later."""
    choices = body.get("choices") if isinstance(body, dict) else None
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise ServerRequestError(f"{where} answered without 'choices': {str(body)[:300]!r}; not a chat completion.")
    choice = choices[0]
    message = choice.get("message") if isinstance(choice.get("message"), dict) else {}
    content = message.get("content")
    if isinstance(content, list):  # content parts
        content = "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    logprobs = choice.get("logprobs")
    tokens = logprobs.get("content") if isinstance(logprobs, dict) else None
    return Answer(content if isinstance(content, str) else "", tokens if isinstance(tokens, list) else None,
                  str(choice.get("finish_reason") or ""))


class ServerRunner:
    """What ``ChatWriter`` asks of a runner (``generate``, ``has_vision``, ``info``, ``config``), answered
    by a model server: each prompt (with its image) is one chat completion, all of them sent concurrently."""

    def __init__(self, client: ChatClient, *, max_image_side: int | None, image_format: str, vision: bool,
                 extra_body: dict[str, Any]):
        self.client, self.max_image_side, self.image_format = client, max_image_side, image_format
        self.has_vision, self.extra_body = bool(vision), dict(extra_body)

    def generate(self, prompts: Sequence[str], images: Sequence[Image.Image] | None = None, *,
                 max_new_tokens: int = 256, do_sample: bool = False, temperature: float = 0.7, top_p: float = 0.95,
                 seed: int = 0, **_: Any) -> list[Generation]:
        """One answer per prompt: greedy (temperature 0) unless ``do_sample``, seeded either way."""
        sampling = {"max_tokens": int(max_new_tokens), "seed": int(seed), **self.extra_body,
                    **({"temperature": float(temperature), "top_p": float(top_p)} if do_sample else
                       {"temperature": 0.0})}
        pictures: list[Image.Image | None] = list(images) if images is not None else [None] * len(prompts)

        def one(job: tuple[str, Image.Image | None]) -> Generation:
            prompt, image = job
            url = image_data_url(image, self.max_image_side, self.image_format) if image is not None else None
            return Generation(self.client.complete([user_message(prompt, url)], **sampling).text, ())

        return self.client.map(one, list(zip(prompts, pictures)))

    def config(self) -> dict[str, Any]:
        return {"client_version": CLIENT_VERSION, "model": self.client.model, "has_vision": self.has_vision,
                "max_image_side": self.max_image_side, "image_format": self.image_format,
                "extra_body": self.extra_body}

    def close(self) -> None:
        self.client.close()


def connect(server: dict[str, Any] | None, model: str, where: str) -> ChatClient:
    """A client for a profile's ``server`` section, checked against the server at once (it is there and serves
    ``model``), so a missing server stops the step before any work, naming the URL and the profile file."""
    client = ChatClient(ServerSettings.from_section(server or {}, where), model, where)
    try:
        client.check_served()
    except Exception:
        client.close()
        raise
    return client
