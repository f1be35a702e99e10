"""CLIP/SigLIP embedder and ShieldGemma 2 judge on tiny random-weight checkpoints (no network).

The checkpoints are built from configs by ``tests/tiny_hf_models.py``, saved with
``save_pretrained`` and loaded back through the backends' real loading path (``ModelSource``:
local files only, safetensors). Every test here runs with outgoing sockets blocked and the
Hugging Face hub in offline mode.
"""

from __future__ import annotations

import inspect
import json
import math
import socket
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))

from sp_assets.backends.common.hf import MissingWeightsError  # noqa: E402
from sp_assets.core.policy import DEFAULT_POLICY_PATH, load_policy  # noqa: E402

torch = pytest.importorskip("torch")

HAS_CUDA = torch.cuda.is_available()
CUDA_SKIP = pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU; none on this machine")
DEVICES = ["cpu", pytest.param("cuda", marks=CUDA_SKIP)]


@pytest.fixture(scope="module", autouse=True)
def offline():
    """No test in this module may reach the network: sockets refuse, the hub is offline."""
    import huggingface_hub.constants as hub_constants

    def refuse(self, address, *args, **kwargs):
        if self.family in (socket.AF_INET, socket.AF_INET6):
            raise OSError(f"network access attempted in an offline test: {address!r}")
        return real_connect(self, address, *args, **kwargs)

    real_connect = socket.socket.connect
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(socket.socket, "connect", refuse)
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setattr(hub_constants, "HF_HUB_OFFLINE", True)
        yield


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, offline) -> dict[str, Path]:
    import tiny_hf_models as th

    root = tmp_path_factory.mktemp("tiny_hf")
    return {
        "clip": th.build_tiny_clip(root / "clip"),
        "siglip": th.build_tiny_siglip(root / "siglip"),
        "shieldgemma2": th.build_tiny_shieldgemma2(root / "shieldgemma2"),
    }


@pytest.fixture(scope="module")
def policy():
    return load_policy(DEFAULT_POLICY_PATH)


def _images(n: int = 4) -> list[Image.Image]:
    """Random photos-as-noise of different sizes (and one grey-scale), deterministic."""
    out = []
    for i in range(n):
        rng = np.random.default_rng(i)
        h, w = 30 + 7 * i, 50 - 4 * i
        out.append(Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)))
    out[-1] = out[-1].convert("L")  # the backends convert to RGB themselves
    return out


# -- CLIP / SigLIP embedder ----------------------------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kind,dim,model_type", [("clip", 8, "clip"), ("siglip", 16, "siglip")])
def test_embedder_unit_vectors_deterministic_and_batch_invariant(tiny, kind, dim, model_type, device):
    from sp_assets.backends.embedders.clip import CLIPEmbedder

    images = _images(4)
    one = CLIPEmbedder(model=str(tiny[kind]), batch_size=1, device=device, profile_name=f"tiny_{kind}")
    vectors = one.embed(images)
    assert vectors.shape == (4, dim) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert np.array_equal(vectors, one.embed(images))  # deterministic
    assert np.abs(vectors[0] - vectors[1]).max() > 1e-3  # the image matters

    four = CLIPEmbedder(model=str(tiny[kind]), batch_size=4, device=device)
    three = CLIPEmbedder(model=str(tiny[kind]), batch_size=3, device=device)
    assert np.allclose(vectors, four.embed(images), atol=1e-5)
    assert np.allclose(vectors, three.embed(images), atol=1e-5)

    cfg = one.config()
    assert cfg["model_type"] == model_type and cfg["dim"] == dim and cfg["device"] == device
    assert cfg["revision_resolved"].startswith("sha256:") and one.info.revision == cfg["revision_resolved"]
    assert cfg == four.config()  # the batch size is not part of what changes the vectors
    assert one.info.model_id == str(tiny[kind]) and one.info.dtype == "float32"
    assert one.embed([]).shape == (0, dim)


def test_embedder_bfloat16_still_returns_float32_unit_vectors(tiny):
    from sp_assets.backends.embedders.clip import CLIPEmbedder

    emb = CLIPEmbedder(model=str(tiny["siglip"]), dtype="bfloat16", device="cpu")
    vectors = emb.embed(_images(2))
    assert vectors.dtype == np.float32 and np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-3)
    assert emb.info.dtype == "bfloat16" and emb.config()["dtype"] == "bfloat16"


def test_embedder_built_by_the_registry_factory(tiny, policy):
    from sp_assets.backends.embedders.clip import CLIPEmbedder
    from sp_assets.backends.registry import FACTORIES
    from sp_assets.backends.profiles import Profile

    profile = Profile(role="embedder", name="tiny_clip", implementation="clip",
                      params={"model": str(tiny["clip"]), "batch_size": 2, "device": "cpu"})
    backend = FACTORIES["embedder"]["clip"](profile, policy)
    assert isinstance(backend, CLIPEmbedder) and backend.profile_name == "tiny_clip"
    assert backend.embed(_images(3)).shape == (3, 8)
    backend.close()


def test_embedder_profiles_in_resources_match_the_constructor():
    from sp_assets.backends.embedders.clip import CLIPEmbedder
    from sp_assets.backends.profiles import load_profiles

    profiles = load_profiles("embedder")
    expected = {"clip_vit_l14": "openai/clip-vit-large-patch14", "siglip_so400m": "google/siglip-so400m-patch14-384"}
    for name, model in expected.items():
        assert profiles[name].implementation == "clip" and profiles[name].params["model"] == model
        assert profiles[name].params.get("allow_download", False) is False
        inspect.signature(CLIPEmbedder).bind(profile_name=name, **profiles[name].params)


# -- ShieldGemma 2 judge -------------------------------------------------------------------------


class _Spy:
    """Wraps the processor and records the keyword arguments of every call."""

    def __init__(self, real):
        self.real, self.calls = real, []

    def __call__(self, *args, **kwargs):
        self.calls.append(kwargs)
        result = self.real(*args, **kwargs)
        self.calls[-1]["_input_ids"] = result["input_ids"]
        return result

    def __getattr__(self, name):
        return getattr(self.real, name)


@pytest.mark.parametrize("device", DEVICES)
def test_shieldgemma2_judge_scores_and_records_the_custom_policy(tiny, policy, device):
    from sp_assets.backends.judges.shieldgemma2 import ShieldGemma2Judge, render_policy

    category = policy.category("o2_violence")
    judge = ShieldGemma2Judge(policy, model=str(tiny["shieldgemma2"]), batch_size=2, device=device,
                              profile_name="tiny_sg2")
    spy = _Spy(judge._processor)
    judge._processor = spy
    images = _images(3)
    verdicts = judge.judge(images, category)

    text = render_policy(category)
    assert text.startswith("No Violence, harm or cruelty: The image shall not contain ")
    assert all(rule.rstrip(".") in text for rule in category.forbids + category.allows)
    assert len(verdicts) == 3 and len(spy.calls) == 2  # batches of 2 and 1
    for call in spy.calls:
        assert call["policies"] == ["o2_violence"]  # only our policy, not the built-in ones
        assert call["custom_policies"] == {"o2_violence": text}
        prompt = spy.real.tokenizer.decode(call["_input_ids"][0])
        assert text in prompt  # the policy reached the model's input
    for v in verdicts:
        assert v.rating in ("safe", "unsafe") and 0.0 <= v.score <= 1.0
        assert (v.rating == "unsafe") == (v.score >= 0.5)
        assert v.category == ("o2_violence" if v.rating == "unsafe" else "")
        raw = json.loads(v.raw_output)
        assert raw["policy_key"] == "o2_violence" and raw["policy_text"] == text
        assert math.isclose(raw["probabilities"]["yes"] + raw["probabilities"]["no"], 1.0, abs_tol=1e-5)
        assert math.isclose(raw["probabilities"]["yes"], v.score, abs_tol=1e-6)
        assert raw["answer_tokens"]["check"] == "ok"
    scores = [v.score for v in verdicts]
    assert len({round(s, 6) for s in scores}) == 3  # the model sees the image

    # Deterministic, and the batch size does not change the scores.
    again = ShieldGemma2Judge(policy, model=str(tiny["shieldgemma2"]), batch_size=3, device=device)
    assert np.allclose(scores, [v.score for v in again.judge(images, "o2_violence")], atol=1e-5)
    cfg = judge.config()
    # The rules are in each answer's memo key (per category), not the config: a rule edit elsewhere keeps it.
    assert cfg["threshold"] == 0.5 and cfg["policy"] == {"name": policy.name, "style": judge.policy_style}
    assert cfg["revision_resolved"].startswith("sha256:") and cfg == again.config()


def test_shieldgemma2_threshold_and_policy_style(tiny, policy):
    from sp_assets.backends.judges.shieldgemma2 import ShieldGemma2Judge

    category = policy.category("O7")
    images = _images(2)
    low = ShieldGemma2Judge(policy, model=str(tiny["shieldgemma2"]), threshold=1e-9, policy_style="rules")
    verdicts = low.judge(images, category)
    assert [v.rating for v in verdicts] == ["unsafe", "unsafe"]
    assert all(v.category == category.slug for v in verdicts)
    assert json.loads(verdicts[0].raw_output)["policy_text"] == category.rules_text()

    high = ShieldGemma2Judge(policy, model=str(tiny["shieldgemma2"]), threshold=1.0)
    assert [v.rating for v in high.judge(images, category)] == ["safe", "safe"]
    assert high.config()["policy"]["style"] == "shieldgemma"


def test_shieldgemma2_fails_closed_on_unusable_probabilities(tiny, policy, monkeypatch):
    from sp_assets.backends.judges.shieldgemma2 import ShieldGemma2Judge

    judge = ShieldGemma2Judge(policy, model=str(tiny["shieldgemma2"]), batch_size=8)
    fake = [(math.nan, math.nan), (math.inf, 0.0), (0.7, 0.7), (-0.5, 1.5), (0.3, 0.7), (0.9, 0.1)]
    monkeypatch.setattr(judge, "_probabilities", lambda images, key, text: fake[: len(images)])
    verdicts = judge.judge(_images(6), "o1_hate")
    assert [v.rating for v in verdicts] == ["invalid", "invalid", "invalid", "invalid", "safe", "unsafe"]
    assert all(v.score is None for v in verdicts[:4])
    for v in verdicts[:4]:
        raw = json.loads(v.raw_output)  # still valid JSON with NaN/inf written as text
        assert raw["reason"] == "non_finite_or_not_a_probability" and raw["policy_key"] == "o1_hate"
    assert verdicts[5].category == "o1_hate" and verdicts[5].score == pytest.approx(0.9)


def test_shieldgemma2_rejects_bad_params_before_loading(policy):
    """The registry checks the params (``ShieldGemma2Judge.Params``) before it builds: no weights are looked for."""
    from sp_assets.backends import registry
    from sp_assets.backends.profiles import Profile, ProfileError

    for bad in ({"threshold": 0.0}, {"threshold": 1.5}, {"batch_size": 0}, {"policy_style": "prose"}):
        profile = Profile(role="judge", name="sg", implementation="shieldgemma2", source_file="judges.yaml",
                          params={"model": "/nonexistent/never-loaded", **bad})
        with pytest.raises(ProfileError, match=f"judges.yaml: judge profile 'sg' .*parameter '{next(iter(bad))}'"):
            registry.build(profile, policy)


def test_shieldgemma2_built_by_the_registry_factory(tiny, policy):
    from sp_assets.backends.registry import FACTORIES
    from sp_assets.backends.judges.shieldgemma2 import ShieldGemma2Judge
    from sp_assets.backends.profiles import Profile

    profile = Profile(role="judge", name="tiny_sg2", implementation="shieldgemma2",
                      params={"model": str(tiny["shieldgemma2"]), "threshold": 0.4, "device": "cpu"})
    judge = FACTORIES["judge"]["shieldgemma2"](profile, policy)
    assert isinstance(judge, ShieldGemma2Judge) and judge.threshold == 0.4
    assert len(judge.judge(_images(1), policy.categories[0])) == 1
    judge.close()


def test_shieldgemma2_custom_policy_is_written_like_its_built_in_definitions():
    """One definition in the built-ins' form ('No <name>: The image shall not contain ...'): the name is
    not quoted, and the allowances end the same sentence as an exception."""
    from transformers.models.shieldgemma2.processing_shieldgemma2 import DEFAULT_SHIELDGEMMA2_POLICIES

    from sp_assets.backends.judges.shieldgemma2 import render_policy
    from sp_assets.core.policy import Category

    category = Category(id="O2", slug="o2_violence", title="Violence, harm or cruelty",
                        forbids=("threats of violence against people", "graphic injury shown to shock."),
                        allows=("news reporting on conflict", "regulated sports"), edit_guidance="-")
    assert render_policy(category) == (
        "No Violence, harm or cruelty: The image shall not contain threats of violence against people; "
        "or graphic injury shown to shock, except news reporting on conflict; or regulated sports.")
    strict = Category(id="O9", slug="o9_x", title="Weapons", forbids=("firearms",), allows=(), edit_guidance="-")
    assert render_policy(strict) == "No Weapons: The image shall not contain firearms."
    for built_in in DEFAULT_SHIELDGEMMA2_POLICIES.values():  # the form copied, as transformers ships it
        name, _, definition = built_in.partition(": ")
        assert name.startswith("No ") and '"' not in name and definition.startswith("The image shall not contain ")
    assert render_policy(category, "rules") == category.rules_text()


def test_shieldgemma2_profile_in_resources_matches_the_constructor():
    from sp_assets.backends.judges.shieldgemma2 import ShieldGemma2Judge
    from sp_assets.backends.profiles import load_profiles

    profiles = {k: v for k, v in load_profiles("judge").items() if v.implementation == "shieldgemma2"}
    if not profiles:
        pytest.skip("resources/judges.yaml has no shieldgemma2 profile yet")
    for name, profile in profiles.items():
        inspect.signature(ShieldGemma2Judge).bind(None, profile_name=name, **profile.params)


# -- missing weights and devices -----------------------------------------------------------------


@pytest.fixture
def empty_hf_cache(tmp_path, monkeypatch):
    """An empty HF_HOME, offline: what a fresh machine without the weights looks like."""
    import huggingface_hub.constants as hub_constants

    home = tmp_path / "hf_home"
    home.mkdir()
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setattr(hub_constants, "HF_HOME", str(home))
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(home / "hub"))
    return home


def _make(kind: str, policy, **params):
    if kind == "embedder":
        from sp_assets.backends.embedders.clip import CLIPEmbedder

        return CLIPEmbedder(profile_name="my_profile", **params)
    from sp_assets.backends.judges.shieldgemma2 import ShieldGemma2Judge

    return ShieldGemma2Judge(policy, profile_name="my_profile", **params)


@pytest.mark.parametrize("kind", ["embedder", "judge"])
def test_missing_local_folder_names_profile_and_path(kind, policy, tmp_path):
    missing = tmp_path / "no_such_model"
    with pytest.raises(MissingWeightsError) as err:
        _make(kind, policy, model=str(missing))
    assert "'my_profile'" in str(err.value) and str(missing) in str(err.value)


@pytest.mark.parametrize("kind,model,revision", [
    ("embedder", "google/siglip-so400m-patch14-384", None),
    ("embedder", "openai/clip-vit-large-patch14", "0123456789abcdef0123456789abcdef01234567"),
    ("judge", "google/shieldgemma-2-4b-it", None),
])
def test_missing_hub_weights_name_profile_model_and_fetch_command(kind, model, revision, policy, empty_hf_cache):
    with pytest.raises(MissingWeightsError) as err:
        _make(kind, policy, model=model, revision=revision)
    message = str(err.value)
    assert "'my_profile'" in message and model in message
    assert f"hf download {model}" in message and str(empty_hf_cache) in message
    if revision:
        assert f"--revision {revision}" in message


@pytest.mark.skipif(HAS_CUDA, reason="checks the error on machines without CUDA")
@pytest.mark.parametrize("kind", ["embedder", "judge"])
def test_cuda_without_a_gpu_is_a_clear_error(kind, tiny, policy):
    with pytest.raises(RuntimeError, match="CUDA is not available"):
        _make(kind, policy, model=str(tiny["clip" if kind == "embedder" else "shieldgemma2"]), device="cuda")


# -- "are the weights missing?" decided by exception type -------------------------------------------

def _hub_errors() -> list[BaseException]:
    import httpx
    from huggingface_hub import errors

    response = httpx.Response(401, request=httpx.Request("GET", "https://huggingface.co/api/models/org/model"))
    wrapped = OSError("We couldn't connect to 'https://huggingface.co' to load the files")  # as transformers does
    wrapped.__cause__ = errors.LocalEntryNotFoundError("Cannot find the requested files in the disk cache")
    during = OSError("a wrapper that raised while handling it")
    during.__context__ = errors.RepositoryNotFoundError("404", response=response)
    return [errors.LocalEntryNotFoundError("not cached"), errors.EntryNotFoundError("no such file"),
            errors.RepositoryNotFoundError("404", response=response), errors.GatedRepoError("401", response=response),
            errors.RevisionNotFoundError("404", response=response), wrapped, during,
            FileNotFoundError("config.json"), OSError("Error no file named model.safetensors found in directory /m.")]


@pytest.mark.parametrize("error", _hub_errors(), ids=lambda e: f"{type(e).__name__}-{str(e)[:12]}")
def test_a_missing_model_is_known_by_its_exception_and_the_message_says_the_fix(error):
    from sp_assets.backends.common.hf import ModelSource

    def loader(path_or_id, **kwargs):
        raise error

    with pytest.raises(MissingWeightsError) as err:
        ModelSource("org/model", revision="v2").load("my_profile", loader)
    text = str(err.value)
    assert "profile 'my_profile'" in text and "'org/model' at revision v2 are not on this machine" in text
    assert "Fix: hf download org/model --revision v2" in text and "allow_download: true" in text
    if "Gated" in type(error).__name__:
        assert "gated: accept its terms" in text


@pytest.mark.parametrize("error", [OSError("disk quota exceeded"), ValueError("bad config"),
                                   RuntimeError("CUDA out of memory")])
def test_other_load_errors_pass_through_unchanged(error):
    from sp_assets.backends.common.hf import ModelSource

    def loader(path_or_id, **kwargs):
        raise error

    with pytest.raises(type(error)) as err:
        ModelSource("org/model").load("my_profile", loader)
    assert err.value is error


def test_a_local_folder_that_does_not_exist_is_found_before_loading(tmp_path):
    from sp_assets.backends.common.hf import ModelSource

    calls = []
    with pytest.raises(MissingWeightsError) as err:
        ModelSource(str(tmp_path / "nowhere")).load("my_profile", lambda *a, **k: calls.append(a))
    assert calls == [] and f"no model at {tmp_path / 'nowhere'}" in str(err.value)
    assert "Fix: put the model files in" in str(err.value)
