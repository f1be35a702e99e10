"""Judges, guards and writers behind an OpenAI-compatible model server (implementation ``openai_server``),
against a real HTTP server on 127.0.0.1 that speaks the chat-completions protocol (tests/fake_chat_server.py):
retries on 429 (honouring Retry-After), 5xx and dropped connections; fail-closed answers; the key from the
environment and in no hash; a clear stop naming the URL when no server listens; the whole graph with the
server judge and guards, its rows identical on a re-run (no server call) and after a kill and resume."""

from __future__ import annotations

import json
import shutil
import socket
import time
from pathlib import Path

import pytest
import yaml
from PIL import Image, ImageDraw

from sp_assets.backends import registry
from sp_assets.backends.common.chat_server import (
    Answer, ChatClient, ServerRequestError, ServerSettings, ServerUnavailableError, image_data_url, retry_after_s,
)
from sp_assets.backends.judges.openai_server import ServerGuard, ServerJudge, logprob_score
from sp_assets.backends.profiles import get_profile
from sp_assets.backends.writers.openai_server import ServerWriter
from sp_assets.core.policy import REPO_ROOT, load_active_policy
from tests.fake_chat_server import MODEL, FakeServer, rating_of

POLICY = load_active_policy()
CATEGORY = POLICY.category("o2_violence")
FAST = {"backoff_s": 0.01, "max_backoff_s": 1.0}


@pytest.fixture
def server():
    fake = FakeServer().start()
    registry.clear_cache()
    yield fake
    registry.clear_cache()
    fake.stop()


def _images(n: int, size: tuple[int, int] = (120, 80)) -> list[Image.Image]:
    out = []
    for i in range(n):
        image = Image.new("RGB", size, (40 * i % 256, 90, 160))
        ImageDraw.Draw(image).text((5, 5), f"SIGN {i}", fill=(255, 255, 255))
        out.append(image)
    return out


def _judge(server: FakeServer, cls: type = ServerJudge, server_settings: dict | None = None, **params) -> ServerJudge:
    return cls(POLICY, model=MODEL, profile_name="test_server", profile_file="test/judges.yaml",
               server={"base_url": server.url, **FAST, **(server_settings or {})}, **params)


def _expected(images: list[Image.Image], max_side: int | None) -> list[str]:
    return [rating_of(image_data_url(im, max_side)).lower() for im in images]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- retries, backoff, concurrency ---------------------------------------------------------------------


def test_429_with_retry_after_and_500_are_retried_and_the_rows_are_right(server):
    server.script = [(429, {"Retry-After": "0.3"}), (500, {})]
    judge = _judge(server, max_image_side=48)
    waits: list[float] = []
    judge.client.sleep = lambda s: (waits.append(s), time.sleep(s))
    images = _images(4)
    verdicts = judge.judge(images, CATEGORY)
    assert [v.rating for v in verdicts] == _expected(images, 48)
    assert {v.category for v in verdicts if v.rating == "unsafe"} <= {CATEGORY.slug}
    assert all(v.score == pytest.approx(0.8 if v.rating == "unsafe" else 0.2, abs=1e-3) for v in verdicts)
    assert server.requests[429] == 1 and server.requests[500] == 1 and server.chat_calls == 4 + 2
    assert dict(judge.client.retries) == {"HTTP 429": 1, "HTTP 500": 1}
    assert 0.3 in waits and all(w <= 0.01 for w in waits if w != 0.3)  # Retry-After as asked; else backoff
    assert server.image_sizes and all(max(size) <= 48 for size in server.image_sizes)


def test_a_dropped_connection_is_retried(server):
    server.script = [(0, {}), (0, {})]
    judge = _judge(server)
    images = _images(1)
    assert [v.rating for v in judge.judge(images, CATEGORY)] == _expected(images, None)
    assert server.requests["dropped"] == 2 and sum(judge.client.retries.values()) == 2


def test_backoff_doubles_up_to_its_cap_and_retry_after_is_honoured_up_to_it():
    client = ChatClient(ServerSettings(base_url="http://127.0.0.1:9/v1", backoff_s=1.0, max_backoff_s=5.0), "m", "here")
    for attempt, (low, high) in enumerate([(0.5, 1), (1, 2), (2, 4), (2.5, 5), (2.5, 5)]):
        assert low <= client._delay(attempt, None) <= high
    assert client._delay(0, 3.0) == 3.0 and client._delay(0, 100.0) == 5.0
    assert retry_after_s("2") == 2.0 and retry_after_s("soon") is None and retry_after_s(None) is None
    assert 0 <= retry_after_s(time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 30))) <= 31


def test_persistent_5xx_gives_up_naming_the_url_and_a_400_is_not_retried(server):
    server.script = [(503, {})] * 3
    judge = _judge(server, server_settings={"max_retries": 2})
    with pytest.raises(ServerRequestError, match=rf"{server.url}/chat/completions still failing after 3 tries"):
        judge.judge(_images(1), CATEGORY)
    server.script = [(400, {})]
    with pytest.raises(ServerRequestError, match=r"answered HTTP 400.*top_logprobs: 0") as caught:
        judge.judge(_images(1), CATEGORY)
    assert caught.value.status == 400 and server.requests[400] == 1


def test_a_batch_is_sent_concurrently_up_to_max_in_flight(server):
    server.delay_s = 0.25
    judge = _judge(server, server_settings={"max_in_flight": 3})
    started = time.monotonic()
    verdicts = judge.judge(_images(9), CATEGORY)
    elapsed = time.monotonic() - started
    assert len(verdicts) == 9 and server.max_in_flight == 3
    assert elapsed < 9 * 0.25 * 0.7, elapsed


# -- fail-closed answers ---------------------------------------------------------------------------------


GARBAGE = ["", "I can't help with that.", "The image is safe.", '{"rating": "Maybe"}', '{"rationale": "fine"}',
           '{"rating": "Safe", "verdict": "Unsafe"}', '{"rating": "Saf', "rating: safe-ish or not safe", None]


@pytest.mark.parametrize("answer", GARBAGE)
def test_an_unreadable_answer_is_invalid_never_safe(server, answer):
    server.answer = lambda body: answer
    [verdict] = _judge(server).judge(_images(1), CATEGORY)
    assert verdict.rating == "invalid"  # (a score may come with it: P(unsafe) never changes a rating)
    assert verdict.raw_output == (answer or "") and verdict.rationale.startswith("invalid answer")


def test_a_body_that_is_not_a_chat_completion_stops_the_batch_rather_than_rating(server):
    server.raw_body = '{"result": "safe"}'
    with pytest.raises(ServerRequestError, match="without 'choices'"):
        _judge(server).judge(_images(1), CATEGORY)
    server.raw_body = "<html>proxy error</html>"
    with pytest.raises(ServerRequestError, match="not JSON"):
        _judge(server).judge(_images(1), CATEGORY)


def test_the_score_comes_from_the_rating_tokens_log_probs():
    text = '{"rating": "Unsafe"}'
    tokens = [{"token": t, "logprob": -0.1} for t in ['{"', "rating", '":', ' "']]
    tokens += [{"token": "Unsafe", "logprob": -0.5, "top_logprobs": [{"token": "Unsafe", "logprob": -0.5},
                                                                       {"token": " Safe", "logprob": -1.5},
                                                                       {"token": "The", "logprob": -2.0}]},
               {"token": '"}', "logprob": -0.1}]
    offset = text.index("Unsafe")
    assert logprob_score(Answer(text, tokens), offset) == pytest.approx(1 / (1 + pow(2.718281828, -1.0)), abs=1e-6)
    assert logprob_score(Answer(text, tokens[:-1]), offset) is None  # the tokens do not spell the answer
    assert logprob_score(Answer(text, None), offset) is None
    plain = [*tokens[:4], {"token": "Unsafe", "logprob": -0.5}, tokens[-1]]
    assert logprob_score(Answer(text, plain), offset) == 1.0  # only the chosen token: all its mass


# -- profiles: the key, the hash, the stop when no server listens ----------------------------------------


def _profiles(folder: Path, url: str, **server) -> Path:
    """A profile folder (the shipped one plus server profiles) pointing at ``url``."""
    shutil.copytree(REPO_ROOT / "resources", folder, dirs_exist_ok=True)
    section = {"base_url": url, **FAST, **server}
    params = {"model": MODEL, "max_image_side": 64, "max_tokens": 128}
    for role, extra in [("judge", {"srv_judge": {"implementation": "openai_server", "server": section,
                                                 "params": params}}),
                        ("guard", {"srv_guard": {"kind": "judge", "judge_profile": "srv_judge"},
                                   "srv_guard_own": {"implementation": "openai_server", "server": section,
                                                     "params": params}}),
                        ("writer", {"srv_writer": {"implementation": "openai_server", "server": section,
                                                   "params": {"model": MODEL, "variants": 2}}})]:
        path = folder / f"{role}s.yaml"
        path.write_text(path.read_text() + "\n" + yaml.safe_dump(extra))
    return folder


def test_the_key_comes_from_the_environment_and_is_in_no_hash_the_url_neither(server, tmp_path, monkeypatch):
    server.key = "s3cret-key-123"
    a = _profiles(tmp_path / "a", server.url, api_key_env="SP_TEST_SERVER_KEY")
    b = _profiles(tmp_path / "b", "http://10.1.2.3:9999/v1", api_key_env="OTHER_KEY_VAR", max_in_flight=2,
                  timeout_s=5)
    monkeypatch.setenv("SP_PROFILES_DIR", str(a))
    monkeypatch.setenv("SP_TEST_SERVER_KEY", server.key)
    profile = get_profile("judge", "srv_judge")
    sha = registry.config_sha256(profile)
    judge = registry.build(profile, POLICY)
    [verdict] = judge.judge(_images(1), CATEGORY)
    assert server.auth_seen == {f"Bearer {server.key}"} and verdict.rating != "invalid"
    for text in (json.dumps(profile.resolved(registry.code_version(profile))), json.dumps(judge.config()),
                 repr(judge.client), json.dumps(verdict.as_dict()), str(judge.info)):
        assert server.key not in text and server.url not in json.dumps(judge.config())
    monkeypatch.setenv("SP_TEST_SERVER_KEY", "another-key")
    assert registry.config_sha256(get_profile("judge", "srv_judge")) == sha
    monkeypatch.setenv("SP_PROFILES_DIR", str(b))  # another URL, key variable, in-flight and timeout
    assert registry.config_sha256(get_profile("judge", "srv_judge")) == sha
    assert registry.config_sha256(get_profile("guard", "srv_guard")) == sha  # the judge-guard shares its answers
    for change in ({"model": "other"}, {"temperature": 0.5}, {"max_tokens": 64}, {"seed": 1},
                   {"max_image_side": 32}, {"prompt_template": "Rate it: $rules"}):
        changed = get_profile("judge", "srv_judge")
        changed = type(changed)(**{**changed.__dict__, "params": {**changed.params, **change}})
        assert registry.config_sha256(changed) != sha, change


def test_a_profile_that_extends_a_server_profile_merges_its_server_section(tmp_path, monkeypatch):
    folder = _profiles(tmp_path / "p", "http://127.0.0.1:8000/v1", max_in_flight=4)
    judges = folder / "judges.yaml"
    judges.write_text(judges.read_text() + "\n" + yaml.safe_dump(
        {"srv_far": {"extends": "srv_judge", "server": {"base_url": "http://gpu-box:8000/v1"}}}))
    monkeypatch.setenv("SP_PROFILES_DIR", str(folder))
    near, far = get_profile("judge", "srv_judge"), get_profile("judge", "srv_far")
    assert far.server == {**near.server, "base_url": "http://gpu-box:8000/v1"} and far.params == near.params
    assert "server" not in far.extra and "gpu-box" not in json.dumps(far.resolved())


def test_a_missing_or_wrong_key_stops_with_the_variable_not_the_value(server, tmp_path, monkeypatch):
    server.key = "s3cret-key-123"
    monkeypatch.setenv("SP_PROFILES_DIR", str(_profiles(tmp_path / "p", server.url, api_key_env="SP_TEST_KEY_X")))
    monkeypatch.delenv("SP_TEST_KEY_X", raising=False)
    with pytest.raises(ValueError, match=r"srv_judge.*SP_TEST_KEY_X.*not set"):
        registry.build(get_profile("judge", "srv_judge"), POLICY)
    monkeypatch.setenv("SP_TEST_KEY_X", "not-the-key-4711")
    with pytest.raises(ServerRequestError, match=r"HTTP 401.*SP_TEST_KEY_X") as caught:
        registry.build(get_profile("judge", "srv_judge"), POLICY)
    assert "not-the-key-4711" not in str(caught.value)


def test_no_server_listening_stops_naming_the_url_the_profile_file_and_how_to_start_one(tmp_path, monkeypatch):
    url = f"http://127.0.0.1:{_free_port()}/v1"
    folder = _profiles(tmp_path / "p", url, max_retries=2)
    monkeypatch.setenv("SP_PROFILES_DIR", str(folder))
    registry.clear_cache()
    with pytest.raises(ServerUnavailableError) as caught:
        registry.build(get_profile("judge", "srv_judge"), POLICY)
    message = str(caught.value)
    for part in (url, str(folder / "judges.yaml"), "srv_judge", "ConnectError after 3 tries", "vllm serve",
                 "--served-model-name fake-guard", "python -m sglang.launch_server", "server.base_url"):
        assert part in message, (part, message)


def test_a_model_the_server_does_not_serve_stops_listing_what_it_serves(server):
    with pytest.raises(ServerRequestError, match=r"serves \['fake-guard'\], not 'llavaguard'"):
        ServerJudge(POLICY, model="llavaguard", server={"base_url": server.url, **FAST})


def test_bad_server_settings_name_the_profile_and_the_fix():
    with pytest.raises(ValueError, match=r"'server' has unknown keys \['url'\]"):
        ServerSettings.from_section({"url": "http://x/v1"}, "judge profile 'p'")
    with pytest.raises(ValueError, match="base_url must be the server's http"):
        ServerSettings.from_section({}, "judge profile 'p'")
    with pytest.raises(ValueError, match="max_in_flight=0"):
        ServerSettings.from_section({"base_url": "http://x/v1", "max_in_flight": 0}, "judge profile 'p'")


def test_the_shipped_server_profiles_resolve_to_the_server_classes():
    for role, name, cls in [("judge", "llavaguard_server", ServerJudge), ("judge", "qwen_vl_server_judge", ServerJudge),
                            ("guard", "llavaguard_server", ServerJudge), ("guard", "qwen_vl_server", ServerGuard),
                            ("writer", "qwen_vl_server_writer", ServerWriter)]:
        profile = get_profile(role, name)
        assert registry.backend_class(profile) is cls and registry.runs(profile).server["base_url"]
    llavaguard = get_profile("judge", "llavaguard_server").params
    assert llavaguard["prompt_template"] == get_profile("judge", "llavaguard").params["prompt_template"]


# -- guard and writer ------------------------------------------------------------------------------------


def test_the_server_guard_rates_as_the_server_judge_does(server):
    images = _images(3)
    guard = _judge(server, ServerGuard)
    assert [v.rating for v in guard.predict(images, CATEGORY)] == _expected(images, None)


def test_the_writer_asks_with_the_vlm_writers_prompts_and_reads_fail_closed(server):
    writer = ServerWriter(POLICY, model=MODEL, server={"base_url": server.url, **FAST}, variants=3,
                          max_image_side=64)
    from sp_assets.core.record_types import Verdict

    verdict = Verdict("unsafe", CATEGORY.slug, 0.9, "the sign threatens violence", "")
    images = _images(4)
    written = writer.each(lambda image: writer.write(image, verdict, CATEGORY, 3, 7), images)
    assert [len(w) for w in written] == [3, 3, 3, 3]
    first = written[0][0]
    assert first.target["writer"] == "openai_server" and first.target["parsed_as"] == "json"
    assert first.target["caption"].startswith("A street scene") and "greeting number 0" in first.text
    asks = [b for b in server.bodies if "edit instructions" in json.dumps(b)]
    assert all(b["temperature"] == 0.8 and b["top_p"] == 0.95 and b["seed"] == 7 for b in asks)
    assert any("You write instructions for an image-editing model." in json.dumps(b) for b in asks)
    server.answer = lambda body: "Sorry, no."
    [fallback] = writer.write(images[0], verdict, CATEGORY, 3, 7)
    assert fallback.target["fallback"] == "template" and "Sorry, no." in fallback.target["raw_output"]


# -- the whole graph -------------------------------------------------------------------------------------

GRAPH_CATEGORY = "o2_violence"
GRAPH_GUARDS = ["srv_guard", "srv_guard_own", "open_nsfw"]


@pytest.fixture(scope="module")
def graph_server(tmp_path_factory):
    """A chat server for the graph tests (every 7th chat request fails with a 503, so retries happen
    throughout) and a profile folder whose server profiles point at it, active through SP_PROFILES_DIR."""
    fake = FakeServer(fail_every=7).start()
    folder = _profiles(tmp_path_factory.mktemp("profiles") / "p", fake.url)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SP_PROFILES_DIR", str(folder))
        yield fake, folder
    fake.stop()


def _run_served_graph(data: Path):
    """The whole graph on one category: the scene-text judge labels (its regions steer the text editor), the
    server judge verifies the edits, and the server guards (its judge's answers, and one of its own) are
    evaluated beside open_nsfw."""
    from dagster import DagsterInstance, materialize

    from sp_assets.defs import STAGES
    from sp_assets.defs.resources import JudgeResource
    from tests.conftest import RANGE_END, RANGE_START, graph_resources

    registry.clear_cache()
    resources = graph_resources(data, guards=GRAPH_GUARDS, batch_items=2)
    resources["judge"] = JudgeResource(profile="scene_text", verify_profile="srv_judge")
    result = materialize(STAGES, resources=resources, instance=DagsterInstance.ephemeral(),
                         tags={RANGE_START: GRAPH_CATEGORY, RANGE_END: GRAPH_CATEGORY}, raise_on_error=True)
    assert result.success
    return result


@pytest.fixture(scope="module")
def served_graph(graph_server, tmp_path_factory):
    fake, _ = graph_server
    data = tmp_path_factory.mktemp("served") / "data"
    _run_served_graph(data)
    return data, fake.chat_calls


@pytest.mark.full
def test_the_server_judge_and_guards_run_through_the_whole_graph(served_graph, graph_server):
    from sp_assets.storage.compare import read_only_query

    data, calls = served_graph
    fake, _ = graph_server
    db = data / "safetypairs.duckdb"
    assert calls > 0 and fake.requests[503] > 0  # answered, and retried through the scripted failures
    rows = read_only_query(db, "SELECT DISTINCT e.edited_path, v.edit_rating, v.verifier_profile FROM verified_pairs v "
                               "JOIN edited_images e USING (edited_sha256) WHERE v.edit_rating IS NOT NULL")
    assert rows and {v for *_, v in rows} == {"srv_judge"}
    for path, rating, _ in rows:  # the verifier's rating is the server's answer on the edit (scaled to 64 px)
        assert rating == rating_of(image_data_url(Image.open(data / path), 64)).lower(), path
    guards = {g for (g,) in read_only_query(db, "SELECT DISTINCT guard FROM guard_metrics")}
    assert {"srv_guard", "srv_guard_own"} <= guards
    predicted = read_only_query(db, "SELECT guard, count(*) FROM guard_predictions GROUP BY ALL")
    assert dict(predicted)["srv_guard"] == dict(predicted)["srv_guard_own"] > 0


@pytest.mark.full
def test_a_re_run_makes_no_server_call_and_gives_identical_rows(served_graph, graph_server, tmp_path):
    from sp_assets.storage.compare import stable_rows
    from tests.conftest import assert_same_rows

    data, _ = served_graph
    fake, _ = graph_server
    copy = Path(shutil.copytree(data, tmp_path / "data"))
    before, chat, models = stable_rows(copy / "safetypairs.duckdb"), fake.chat_calls, fake.requests["models"]
    _run_served_graph(copy)
    assert (fake.chat_calls, fake.requests["models"]) == (chat, models)  # every answer from the memo
    assert_same_rows(before, stable_rows(copy / "safetypairs.duckdb"))


@pytest.mark.full
def test_a_killed_run_resumes_with_the_rows_of_an_uninterrupted_one(served_graph, graph_server, tmp_path):
    """A Dagster CLI run with the server verifier and guards, killed (SIGKILL) once the verifier has committed
    some answers, then started again: its rows are those of the uninterrupted run, and what the killed run
    committed is reused, not asked again."""
    import os
    import signal

    from sp_assets.storage.compare import read_only_query, stable_rows
    from tests.cli_runs import cli_env, run_to_end, start_run, stop_run

    reference, _ = served_graph
    fake, folder = graph_server
    data = tmp_path / "data"
    db = data / "safetypairs.duckdb"
    env = cli_env(tmp_path / "home", data, SP_BATCH_ITEMS="2", SP_PROFILES_DIR=str(folder),
                  SP_VERIFY_JUDGE="srv_judge", SP_GUARDS=",".join(GRAPH_GUARDS))
    verifier_calls = ("SELECT count(*) FROM model_calls WHERE stage = 'verified_pairs' AND role = 'judge'")
    fake.delay_s = 0.5  # slow answers: the kill lands while the verifier is at work
    proc = start_run(env, ["--partition", GRAPH_CATEGORY], tmp_path / "killed.log")
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and proc.poll() is None:
            done = read_only_query(db, verifier_calls, timeout_s=10)
            if done and done[0][0] >= 2:
                break
            time.sleep(0.2)
        assert proc.poll() is None, (tmp_path / "killed.log").read_text()[-3000:]
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=20)
    finally:
        stop_run(proc)
        fake.delay_s = 0.0
    committed = {r for (r,) in read_only_query(db, "SELECT DISTINCT computed_run_id FROM model_calls "
                                                   "WHERE stage = 'verified_pairs' AND role = 'judge'")}
    asked_before = fake.chat_calls
    run_to_end(env, ["--partition", GRAPH_CATEGORY], tmp_path / "resumed.log")
    from tests.conftest import assert_same_rows

    assert_same_rows(stable_rows(reference / "safetypairs.duckdb"), stable_rows(db))
    by_run = dict(read_only_query(db, "SELECT computed_run_id, count(*) FROM model_calls WHERE stage = "
                                      "'verified_pairs' AND role = 'judge' GROUP BY ALL"))
    assert committed and set(by_run) & committed and set(by_run) - committed, by_run
    assert fake.chat_calls > asked_before
