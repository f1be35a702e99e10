"""The VLM judge and writer on a tiny random-weight LLaVA built here and loaded through the real path.

Random weights write token soup, so the judge must say 'invalid' (fail closed). To check the rest
of the path (parsing, category mapping, the P(unsafe) score), some tests force the tiny model to
write a given answer with a logits processor that runs before the judge's own recorder.
"""

from __future__ import annotations

import inspect
import math
import socket
from pathlib import Path

import pytest
import torch
import transformers
from PIL import Image
from transformers import LogitsProcessor

from sp_assets.core.record_types import RATINGS, Verdict
from sp_assets.backends.common.hf import MissingWeightsError
from sp_assets.backends.judges.vlm import VLMJudge, classify_token_text, score_from_logs
from sp_assets.backends.writers.vlm import VLMWriter
from sp_assets.core.policy import DEFAULT_POLICY_PATH, load_policy
from tiny_vlm import build_tiny_llm, build_tiny_vlm

POLICY = load_policy(DEFAULT_POLICY_PATH)
O2 = POLICY.category("o2_violence")
UNSAFE_VERDICT = Verdict("unsafe", "o2_violence", 0.9, "a knife is held to a person's throat", "{}")
pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    return build_tiny_vlm(tmp_path_factory.mktemp("tiny_vlm") / "model")


@pytest.fixture(scope="module")
def judge(tiny_dir) -> VLMJudge:
    return VLMJudge(POLICY, model=str(tiny_dir), profile_name="tiny_judge", device="cpu",
                    batch_size=2, max_new_tokens=16)


@pytest.fixture(scope="module")
def writer(tiny_dir) -> VLMWriter:
    return VLMWriter(POLICY, model=str(tiny_dir), profile_name="tiny_writer", device="cpu", variants=3,
                     max_new_tokens=16, caption_max_new_tokens=8, attempts=2)


def images(n: int) -> list[Image.Image]:
    colours = [(200, 30, 30), (20, 160, 40), (30, 40, 200), (240, 240, 240)]
    return [Image.new("RGB", (40 + 8 * i, 30 + 4 * i), colours[i % len(colours)]) for i in range(n)]


class Force(LogitsProcessor):
    """Make the model write ``ids`` then stop: hard (only that token) or by a margin over the best logit."""

    def __init__(self, ids: list[int], eos: int, hard: bool):
        self.ids, self.eos, self.hard, self.step = ids, eos, hard, 0

    def __call__(self, input_ids, scores):
        tok = self.ids[self.step] if self.step < len(self.ids) else self.eos
        self.step += 1
        if self.hard:
            forced = torch.full_like(scores, float("-inf"))
            forced[:, tok] = 0.0
            return forced
        forced = scores.clone()
        forced[:, tok] = scores.max(dim=-1).values + 6.0
        return forced


def script(runner, monkeypatch, choose, hard: bool) -> None:
    """Route runner.generate through a Force processor; ``choose(prompts)`` gives the text to write."""
    original = runner.generate
    eos = runner.tokenizer.eos_token_id

    def forced(prompts, images=None, *, logits_processors=(), **kwargs):
        ids = runner.tokenizer.encode(choose(prompts), add_special_tokens=False)
        kwargs["max_new_tokens"] = len(ids) + 2
        return original(prompts, images, logits_processors=[Force(ids, eos, hard), *logits_processors], **kwargs)

    monkeypatch.setattr(runner, "generate", forced)


# -- loading --------------------------------------------------------------------------------------


def test_tiny_vlm_loads_through_the_real_path(tiny_dir):
    files = {p.name for p in tiny_dir.iterdir()}
    assert "model.safetensors" in files and not any(f.endswith(".bin") for f in files)
    model = transformers.AutoModelForImageTextToText.from_pretrained(tiny_dir, local_files_only=True, use_safetensors=True)
    processor = transformers.AutoProcessor.from_pretrained(tiny_dir, local_files_only=True)
    assert type(model).__name__ == "LlavaForConditionalGeneration"
    assert processor.chat_template and processor.image_processor is not None


def test_judge_records_model_info_and_config(judge, tiny_dir):
    assert judge.info.model_id == str(tiny_dir)
    assert (judge.info.device, judge.info.dtype) == ("cpu", "float32")
    assert "transformers 5." in judge.info.library
    cfg = judge.config()
    assert cfg["runner"]["trust_remote_code"] is False and cfg["runner"]["allow_download"] is False
    assert cfg["runner"]["padding_side"] == "left" and cfg["generation"]["do_sample"] is False
    assert "$rules" in cfg["prompt_template"] and cfg["score_method"].startswith("softmax")
    prompt = judge.prompt(O2)
    assert O2.rules_text() in prompt and '"rating"' in prompt and "O2: Violence" in prompt


# -- judging --------------------------------------------------------------------------------------


def test_random_weights_fail_closed(judge):
    """Token soup from random weights: one verdict per image (3 images = 2 batches), none 'safe'."""
    verdicts = judge.judge(images(3), O2)
    assert len(verdicts) == 3
    for v in verdicts:
        assert v.rating in RATINGS and v.rating != "safe"
        assert isinstance(v.raw_output, str)
        assert v.score is None or 0.0 <= v.score <= 1.0
        if v.rating == "invalid":
            assert v.category == "" and v.rationale.startswith("invalid answer")
    assert judge.judge([], O2) == []
    assert len(judge.judge(images(1), "o2_violence")) == 1  # a slug works as the category


def test_forced_unsafe_answer_is_parsed_and_scored(judge, monkeypatch):
    answer = '{"rating": "Unsafe", "category": "O2", "rationale": "a knife"}'
    script(judge.runner, monkeypatch, lambda prompts: answer, hard=False)
    verdicts = judge.judge(images(2), O2)
    assert [v.rating for v in verdicts] == ["unsafe", "unsafe"]
    for v in verdicts:
        assert v.category == "o2_violence" and v.rationale == "a knife"
        assert v.raw_output == answer
        assert v.score is not None and 0.5 < v.score <= 1.0


def test_forced_safe_answer_with_fence_is_parsed_and_scored(judge, monkeypatch):
    answer = '```json\n{"**rating**": "Safe", "category": "NA: None applying", "rationale": "a cat"}\n```'
    script(judge.runner, monkeypatch, lambda prompts: answer, hard=False)
    (v,) = judge.judge(images(1), O2)
    assert (v.rating, v.category, v.raw_output) == ("safe", "", answer)
    assert v.score is not None and 0.0 <= v.score < 0.5


def test_forced_unreadable_answer_is_invalid_without_score(judge, monkeypatch):
    script(judge.runner, monkeypatch, lambda prompts: "The image looks safe to me.", hard=True)
    (v,) = judge.judge(images(1), O2)
    assert v.rating == "invalid" and v.score is None and v.raw_output == "The image looks safe to me."


@pytest.mark.parametrize("text,expected", [
    ("U", "unsafe"), ("Uns", "unsafe"), ('"Unsafe', "unsafe"), (" unsafe", "unsafe"), ("\u0120Unsafe", "unsafe"),
    ("S", "safe"), (" Safe", "safe"), ('"safe",', "safe"), ("Not", None), ("Safety", None), ('"', None), ("", None),
])
def test_rating_token_classes(text, expected):
    assert classify_token_text(text) == expected


def test_score_from_logs():
    assert score_from_logs(0.0, 0.0) == pytest.approx(0.5)
    assert score_from_logs(-1.0, -3.0) == pytest.approx(1 / (1 + math.exp(-2.0)))
    assert score_from_logs(float("-inf"), float("-inf")) is None
    assert score_from_logs(0.0, float("-inf")) == 1.0


def test_prompt_template_override_and_unknown_placeholder(tiny_dir):
    j = VLMJudge(POLICY, model=str(tiny_dir), profile_name="custom", device="cpu", max_new_tokens=8,
                 prompt_template="Policy $policy, $id ($slug): $forbids. Answer JSON {\"rating\": ...}")
    assert j.prompt(O2).startswith(f"Policy {POLICY.name}, O2 (o2_violence): - ")
    with pytest.raises(ValueError, match=r"\$bogus|bogus"):
        VLMJudge(POLICY, model=str(tiny_dir), profile_name="custom", device="cpu", prompt_template="$bogus")


def test_a_judge_of_scope_policy_is_asked_once_per_image_for_every_category(tiny_dir):
    from sp_assets.backends.profiles import Profile
    from sp_assets.execution.judge import judge_call
    from sp_assets.execution.lazy import LazyBackend

    whole = "Policy:\n$all_rules\nAnswer JSON {\"rating\": ...}"
    j = VLMJudge(POLICY, model=str(tiny_dir), profile_name="whole", device="cpu", max_new_tokens=8,
                 prompt_template=whole, scope="policy")
    assert j.prompt(O2) == j.prompt(POLICY.categories[0]) and POLICY.categories[-1].title in j.prompt(O2)
    for template in (None, "Rules: $rules", "$all_rules for $slug"):  # a per-category prompt is refused
        with pytest.raises(ValueError, match="scope 'policy'"):
            VLMJudge(POLICY, model=str(tiny_dir), profile_name="whole", device="cpu", prompt_template=template,
                     scope="policy")
    # The memo key of a policy-wide judge leaves the category out: one call serves every partition.
    item = {"image_sha256": "a" * 64}
    keys = {}
    for scope in ("category", "policy"):
        lazy = LazyBackend(Profile("judge", "whole", "vlm", {"model": str(tiny_dir), "scope": scope,
                                                               "prompt_template": whole}), POLICY)
        keys[scope] = {judge_call(lazy, c, "image_sha256").inputs(item)["category"] for c in POLICY.categories}
    assert keys == {"category": set(POLICY.slugs), "policy": {None}}


def test_llavaguard_profile_prompt_and_answers_on_the_tiny_model(tiny_dir, monkeypatch):
    """The shipped llavaguard params on the tiny model: its prompt goes to the model, its answers are read
    policy-wide (an unsafe answer must name a policy category; there is no asked one to fall back on)."""
    from sp_assets.backends.judges.vlm import JudgePrompt
    from sp_assets.backends.profiles import load_profiles

    params = {**load_profiles("judge")["llavaguard"].params, "model": str(tiny_dir), "device": "cpu",
              "max_new_tokens": 8}
    j = VLMJudge(POLICY, profile_name="llavaguard", **params)
    expected = JudgePrompt(POLICY, params["prompt_template"], params["category_block"], "policy").text(O2)
    assert j.scope == "policy" and j.prompt(POLICY.categories[0]) == expected
    sent: list[str] = []
    answers = iter([
        '{\n    "rating": "Unsafe",\n    "category": "O2: Violence, Harm, or Cruelty",\n    "rationale": "a knife",\n}',
        '{\n    "rating": "Unsafe",\n    "category": "NA: None applying",\n    "rationale": "a knife",\n}',
    ])

    def choose(prompts):
        sent.extend(prompts)
        return next(answers)

    script(j.runner, monkeypatch, choose, hard=False)
    (v,) = j.judge(images(1), POLICY.categories[0])
    assert (v.rating, v.category, v.rationale) == ("unsafe", "o2_violence", "a knife")
    assert v.score is not None and v.score > 0.5
    (bad,) = j.judge(images(1), O2)
    assert bad.rating == "invalid" and "none applying" in bad.rationale and bad.category == ""
    assert sent == [expected, expected]
    cfg = j.config()
    assert cfg["category_block"] == params["category_block"] and cfg["scope"] == "policy"
    assert cfg["prompt_template"] == params["prompt_template"]


# -- writing --------------------------------------------------------------------------------------


def test_writer_survives_token_soup_on_a_batch_of_two(writer):
    for i, image in enumerate(images(2)):
        out = writer.write(image, UNSAFE_VERDICT, O2, 3, seed=i)
        assert 1 <= len(out) <= 3
        for ins in out:
            assert ins.text and ins.keep
            assert ins.target["model"] == writer.info.model_id and "raw_output" in ins.target
            assert "caption" in ins.target
        # random weights: nothing parseable, so the marked template fallback
        assert out[0].target.get("fallback") == "template" and "a knife is held" in out[0].text


def test_writer_without_fallback_returns_nothing_rather_than_crashing(writer, monkeypatch):
    monkeypatch.setattr(writer, "fallback", "none")
    assert writer.write(images(1)[0], UNSAFE_VERDICT, O2, 2, seed=0) == []


def test_writer_parses_and_dedupes_a_scripted_answer(writer, monkeypatch):
    caption = "A man holds a knife in a kitchen."
    answer = '["Replace the knife with a banana.", "Remove the knife from his hand.", "replace the knife with a banana"]'
    script(writer.runner, monkeypatch, lambda p: caption if p[0] == writer.caption_prompt else answer, hard=True)
    out = writer.write(images(1)[0], UNSAFE_VERDICT, O2, 3, seed=7)
    assert [i.text for i in out] == ["Replace the knife with a banana.", "Remove the knife from his hand."]
    assert [i.variant for i in out] == [0, 1]
    t = out[0].target
    assert t["caption"] == caption and t["raw_output"] == answer and t["seed"] == 7 and t["parsed_as"] == "json"
    assert "fallback" not in t


def test_writer_sampling_is_seeded(writer):
    a = writer.runner.generate(["Say hi"], images(1), max_new_tokens=8, do_sample=True, seed=5)
    b = writer.runner.generate(["Say hi"], images(1), max_new_tokens=8, do_sample=True, seed=5)
    assert a == b


def test_writer_prompt_carries_policy_rationale_and_guidance(writer):
    prompt = writer.prompt(O2, UNSAFE_VERDICT, "A man in a kitchen.", 3)
    assert O2.edit_guidance in prompt and UNSAFE_VERDICT.rationale in prompt and "A man in a kitchen." in prompt
    assert "3 different" in prompt and "JSON list" in prompt


def test_text_only_llm_writer(tmp_path):
    folder = build_tiny_llm(tmp_path / "llm")
    w = VLMWriter(POLICY, model=str(folder), profile_name="tiny_llm", device="cpu", variants=2,
                  max_new_tokens=8, attempts=1)
    assert w.runner.has_vision is False
    out = w.write(images(1)[0], UNSAFE_VERDICT, O2, 2, seed=0)
    assert len(out) <= 2 and all(i.target["caption"] == "" for i in out)


# -- safety of loading ----------------------------------------------------------------------------


@pytest.fixture
def no_network(monkeypatch, tmp_path):
    def refuse(*args, **kwargs):
        raise AssertionError("a test tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty_hf_home"))
    import huggingface_hub.constants as hub_constants

    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path / "empty_hf_home" / "hub"))


@pytest.mark.parametrize("cls", [VLMJudge, VLMWriter])
def test_missing_local_folder_names_profile_and_path(cls, tmp_path, no_network):
    missing = tmp_path / "no_such_model"
    with pytest.raises(MissingWeightsError) as err:
        cls(POLICY, model=str(missing), profile_name="my_vlm_profile")
    assert "my_vlm_profile" in str(err.value) and str(missing) in str(err.value)


@pytest.mark.parametrize("cls", [VLMJudge, VLMWriter])
def test_missing_hub_model_names_profile_model_and_fetch_command(cls, no_network):
    with pytest.raises(MissingWeightsError) as err:
        cls(POLICY, model="safetypairs-tests/no-such-vlm", profile_name="my_vlm_profile")
    text = str(err.value)
    assert "my_vlm_profile" in text and "safetypairs-tests/no-such-vlm" in text and "hf download" in text


def test_trust_remote_code_stays_off_unless_the_profile_sets_it(tiny_dir, monkeypatch):
    calls: list[tuple[str, dict]] = []
    for name in ("AutoConfig", "AutoProcessor", "AutoModelForImageTextToText"):
        cls = getattr(transformers, name)
        original = cls.from_pretrained

        def spy(*args, _original=original, _name=name, **kwargs):
            calls.append((_name, kwargs))
            return _original(*args, **kwargs)

        monkeypatch.setattr(cls, "from_pretrained", spy)
    j = VLMJudge(POLICY, model=str(tiny_dir), profile_name="t", device="cpu", max_new_tokens=8)
    assert {n for n, _ in calls} == {"AutoConfig", "AutoProcessor", "AutoModelForImageTextToText"}
    assert all(kw.get("trust_remote_code") is False and kw.get("local_files_only") is True for _, kw in calls)
    assert [kw.get("use_safetensors") for n, kw in calls if n == "AutoModelForImageTextToText"] == [True]
    assert j.config()["runner"]["trust_remote_code"] is False
    calls.clear()
    j2 = VLMJudge(POLICY, model=str(tiny_dir), profile_name="t", device="cpu", max_new_tokens=8, trust_remote_code=True)
    assert calls and all(kw.get("trust_remote_code") is True for _, kw in calls)
    assert j2.config()["runner"]["trust_remote_code"] is True


# -- profiles and registry --------------------------------------------------------------------------


def test_registry_builds_the_vlm_profiles(tiny_dir):
    from sp_assets.backends import registry
    from sp_assets.backends.profiles import Profile

    params = {"model": str(tiny_dir), "device": "cpu", "max_new_tokens": 8}
    judge_profile = Profile(role="judge", name="tiny_vlm_judge", implementation="vlm", params=params)
    writer_profile = Profile(role="writer", name="tiny_vlm_writer", implementation="vlm",
                             params={**params, "variants": 2})
    try:
        j = registry.build(judge_profile, POLICY)
        w = registry.build(writer_profile, POLICY)
        assert isinstance(j, VLMJudge) and j.profile_name == "tiny_vlm_judge"
        assert isinstance(w, VLMWriter) and w.variants == 2
    finally:
        registry.clear_cache()


def test_shipped_profiles_name_parameters_the_classes_accept():
    from sp_assets.backends.profiles import load_profiles

    judges = load_profiles("judge")
    writers = load_profiles("writer")
    for name in ("llavaguard", "qwen_vl_judge"):
        p = judges[name]
        assert p.implementation == "vlm" and p.params.get("trust_remote_code", False) is False
        inspect.signature(VLMJudge).bind(POLICY, profile_name=name, **p.params)
    p = writers["qwen_vl_writer"]
    assert p.implementation == "vlm" and p.params["variants"] == 3
    inspect.signature(VLMWriter).bind(POLICY, profile_name="qwen_vl_writer", **p.params)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU on this machine")
def test_judge_and_writer_on_cuda(tiny_dir):
    j = VLMJudge(POLICY, model=str(tiny_dir), profile_name="cuda", device="cuda", dtype="bfloat16",
                 batch_size=2, max_new_tokens=12)
    assert j.info.device.startswith("cuda") and j.info.dtype == "bfloat16"
    verdicts = j.judge(images(3), O2)
    assert len(verdicts) == 3 and all(v.rating != "safe" for v in verdicts)
    w = VLMWriter(POLICY, model=str(tiny_dir), profile_name="cuda", device="cuda", max_new_tokens=8,
                  caption_max_new_tokens=8)
    assert len(w.write(images(1)[0], UNSAFE_VERDICT, O2, 2, seed=1)) <= 2
    j.close()
    w.close()


def test_left_padded_batch_matches_one_by_one(judge):
    """Prompts of different lengths in one batch give the same greedy answers as one at a time."""
    prompts = ["Rate it.", "Rate this image under the policy, please, and explain why in detail."]
    pics = images(2)
    batched = judge.runner.generate(prompts, pics, max_new_tokens=6)
    single = [judge.runner.generate([p], [im], max_new_tokens=6)[0] for p, im in zip(prompts, pics)]
    assert [g.token_ids for g in batched] == [g.token_ids for g in single]
