"""A real HTTP server on 127.0.0.1 that speaks the OpenAI chat-completions protocol, for the model-server tests.

Its answers are derived from the request alone, so they are the same on every run: a judge's rating from a
hash of the image's data URL (in the LlavaGuard JSON the VLM judge asks for, naming the category the prompt
asks about), a caption for the writer's caption prompt, a JSON list of edit instructions for its instruction
prompt. ``script`` holds scripted failures for the first requests (a 429 with Retry-After, a 500, ...);
``fail_every`` fails every n-th chat request with a 503. It counts what it saw, for the tests to check.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

from PIL import Image

MODEL = "fake-guard"
_ASKED = re.compile(r'"category": "(O\d+: [^"]+)" if the rating is Unsafe')


def rating_of(image_url: str) -> str:
    """The fake model's rating of an image: a third of the images are safe."""
    return "Safe" if int(hashlib.sha256(image_url.encode()).hexdigest(), 16) % 3 == 0 else "Unsafe"


def judge_answer(prompt: str, image_url: str) -> str:
    rating = rating_of(image_url)
    asked = _ASKED.search(prompt)
    category = (asked.group(1) if asked else "NA: None applying") if rating == "Unsafe" else "NA: None applying"
    digest = hashlib.sha256(image_url.encode()).hexdigest()[:8]
    return json.dumps({"rating": rating, "category": category, "rationale": f"image {digest} looks {rating.lower()}"})


def writer_answer(prompt: str, image_url: str | None, seed: int) -> str:
    if prompt.startswith("Describe this image"):
        return "A street scene with a painted sign on a wall, in daylight."
    n = int(re.search(r"Write (\d+) different edit instructions", prompt).group(1))
    digest = hashlib.sha256(f"{image_url}{seed}".encode()).hexdigest()[:6]
    return json.dumps([f"Replace the words on the sign with a friendly greeting number {i} ({digest})."
                       for i in range(n)])


def default_answer(body: dict[str, Any]) -> str:
    content = body["messages"][-1]["content"]
    parts = content if isinstance(content, list) else [{"type": "text", "text": content}]
    text = next(p["text"] for p in parts if p["type"] == "text")
    image = next((p["image_url"]["url"] for p in parts if p["type"] == "image_url"), None)
    if "edit instructions" in text or text.startswith("Describe this image"):
        return writer_answer(text, image, int(body.get("seed", 0)))
    return judge_answer(text, image or "")


def _tokens(text: str, top: int) -> list[dict[str, Any]]:
    """The answer cut into tokens; at the rating value, the rating word and its alternative as top tokens."""
    out = []
    for piece in re.findall(r"\w+|\W", text):
        entry: dict[str, Any] = {"token": piece, "logprob": -0.01, "top_logprobs": []}
        if piece in ("Unsafe", "Safe") and top:
            other = "Safe" if piece == "Unsafe" else "Unsafe"
            entry["logprob"] = -0.2231  # p = 0.8
            entry["top_logprobs"] = [{"token": piece, "logprob": -0.2231}, {"token": other, "logprob": -1.6094}]
        out.append(entry)
    return out


@dataclass
class FakeServer:
    """What the server does and what it saw; ``url`` is its API root once started."""

    model: str = MODEL
    key: str = ""  # the key it wants as 'Authorization: Bearer <key>' ('' = none)
    # (status, headers) for the first chat requests; status 0 drops the connection without an answer
    script: list[tuple[int, dict[str, str]]] = field(default_factory=list)
    fail_every: int = 0
    delay_s: float = 0.0
    answer: Callable[[dict[str, Any]], str | None] = default_answer  # None: the message has no content
    raw_body: str = ""  # when set, every chat answer is this body verbatim (a server that is not OpenAI's shape)
    requests: Counter = field(default_factory=Counter)  # 'chat', 'models', and each status sent
    image_sizes: list[tuple[int, int]] = field(default_factory=list)
    auth_seen: set = field(default_factory=set)
    bodies: list[dict[str, Any]] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    url: str = ""

    def start(self) -> FakeServer:
        handler = type("Handler", (_Handler,), {"fake": self})
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    @property
    def chat_calls(self) -> int:
        return self.requests["chat"]

    def _scripted(self) -> tuple[int, dict[str, str]] | None:
        with self.lock:
            self.requests["chat"] += 1
            n = self.requests["chat"]
            if self.script:
                return self.script.pop(0)
        if self.fail_every and n % self.fail_every == 0:
            return 503, {}
        return None


class _Handler(BaseHTTPRequestHandler):
    fake: FakeServer
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:
        pass

    def _send(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        data = (body if isinstance(body, str) else json.dumps(body)).encode()
        self.send_response(status)
        for k, v in {"Content-Type": "application/json", **(headers or {})}.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        with self.fake.lock:
            self.fake.requests[status] += 1

    def _authorized(self) -> bool:
        auth = self.headers.get("Authorization", "")
        with self.fake.lock:
            self.fake.auth_seen.add(auth)
        if self.fake.key and auth != f"Bearer {self.fake.key}":
            self._send(401, {"error": {"message": "invalid api key"}})
            return False
        return True

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        if not self._authorized():
            return
        if self.path.rstrip("/") != "/v1/models":
            self._send(404, {"error": {"message": f"no route {self.path}"}})
            return
        with self.fake.lock:
            self.fake.requests["models"] += 1
        self._send(200, {"object": "list", "data": [{"id": self.fake.model, "object": "model"}]})

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        if not self._authorized():
            return
        if self.path != "/v1/chat/completions":
            self._send(404, {"error": {"message": f"no route {self.path}"}})
            return
        scripted = self.fake._scripted()
        if scripted is not None:
            status, headers = scripted
            if status == 0:  # the connection drops before any answer
                with self.fake.lock:
                    self.fake.requests["dropped"] += 1
                self.close_connection = True
                return
            self._send(status, {"error": {"message": f"scripted {status}"}}, headers)
            return
        fake = self.fake
        with fake.lock:
            fake.in_flight += 1
            fake.max_in_flight = max(fake.max_in_flight, fake.in_flight)
            fake.bodies.append(body)
            fake.image_sizes += _image_sizes(body)
        try:
            time.sleep(fake.delay_s)
            text = fake.answer(body)
        finally:
            with fake.lock:
                fake.in_flight -= 1
        if fake.raw_body:
            self._send(200, fake.raw_body)
            return
        choice: dict[str, Any] = {"index": 0, "message": {"role": "assistant", "content": text},
                                  "finish_reason": "stop"}
        if body.get("logprobs") and text is not None:
            choice["logprobs"] = {"content": _tokens(text, int(body.get("top_logprobs") or 0))}
        self._send(200, {"id": "chatcmpl-fake", "object": "chat.completion", "model": body.get("model"),
                         "choices": [choice], "usage": {"prompt_tokens": 1, "completion_tokens": 1}})


def _image_sizes(body: dict[str, Any]) -> list[tuple[int, int]]:
    sizes = []
    for message in body.get("messages", []):
        content = message.get("content")
        for part in content if isinstance(content, list) else []:
            if part.get("type") == "image_url":
                data = part["image_url"]["url"].split(",", 1)[1]
                sizes.append(Image.open(io.BytesIO(base64.b64decode(data))).size)
    return sizes
