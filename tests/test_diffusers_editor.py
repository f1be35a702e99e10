"""DiffusersEditor: a tiny random-weight InstructPix2Pix saved to disk and loaded through the real path.

No test touches the network: the tiny model is built from configs, hub lookups run with the hub
offline, an empty cache and sockets blocked.
"""

from __future__ import annotations

import hashlib
import shutil
import socket
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from sp_assets.core.record_types import EditResult, Instruction
from sp_assets.backends.editors.diffusers_pipeline import (
    DiffusersEditor, accepted_call_args, pipeline_class,
)
from sp_assets.backends.editors.diffusers_sizes import target_size
from sp_assets.backends.common.hf import MissingWeightsError
from sp_assets.core.policy import REPO_ROOT
from sp_assets.backends.profiles import Profile, ProfileError

sys.path.insert(0, str(Path(__file__).parent))
from tiny_diffusers import build_tiny_instruct_pix2pix  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py
STEPS = 2
INSTRUCTION = Instruction(text='Replace the text "GO AWAY" with "WELCOME".', keep="Keep everything else.",
                          target={"replacement": "WELCOME", "original": "GO AWAY"})


def _photo(width: int, height: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def _sha(im: Image.Image) -> str:
    return hashlib.sha256(np.asarray(im).tobytes()).hexdigest()


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_instruct_pix2pix(tmp_path_factory.mktemp("tiny_ip2p"))


def _editor(model: Path, **params) -> DiffusersEditor:
    base = dict(pipeline="StableDiffusionInstructPix2PixPipeline", model=str(model), device="cpu", steps=STEPS,
                guidance_scale=7.5, image_guidance_scale=1.5, batch_size=4)
    base.update(params)
    return DiffusersEditor(profile_name="tiny", **base)


@pytest.fixture(scope="module")
def editor(tiny_model: Path) -> DiffusersEditor:
    return _editor(tiny_model)


@pytest.fixture
def offline_empty_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Hub offline, an empty cache, and any network connection an error."""
    import huggingface_hub.constants as hf_constants

    home = tmp_path / "hf_home"
    (home / "hub").mkdir(parents=True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    # huggingface_hub reads these at import time; patch its constants too.
    monkeypatch.setattr(hf_constants, "HF_HOME", str(home))
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(home / "hub"))
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)

    real_connect = socket.socket.connect

    def guarded(sock, address):
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            raise AssertionError(f"a test tried to reach the network: {address}")
        return real_connect(sock, address)

    monkeypatch.setattr(socket.socket, "connect", guarded)
    return home


# -- the real path: save, load, edit ------------------------------------------------------------


def test_edits_two_sizes_in_one_batch_and_brings_them_back(editor: DiffusersEditor) -> None:
    # 90x60 is not a multiple of 16: the pipeline gets 96x64 and the edit is resized back.
    images = [_photo(90, 60, 0), _photo(64, 64, 1)]
    results = editor.edit(images, [INSTRUCTION, INSTRUCTION], [1, 2])
    assert [type(r) for r in results] == [EditResult, EditResult]
    assert [r.image.size for r in results] == [(90, 60), (64, 64)]
    assert [r.raw_size for r in results] == [(96, 64), (64, 64)]
    assert [r.image.mode for r in results] == ["RGB", "RGB"]
    assert all(r.region is None for r in results)
    first = results[0].detail
    assert first["resized"] is True and results[1].detail["resized"] is False
    assert first["raw_size"] == [96, 64] and first["source_size"] == [90, 60] and first["input_size"] == [96, 64]
    assert first["pipeline_class"] == "StableDiffusionInstructPix2PixPipeline"
    assert first["steps"] == STEPS and first["guidance_scale"] == 7.5 and first["image_guidance_scale"] == 1.5
    assert first["seed"] == 1 and results[1].detail["seed"] == 2
    assert first["prompt"] == 'Replace the text "GO AWAY" with "WELCOME". Keep everything else.'
    assert first["safety_checker_disabled"] is True and first["safety_checker"] == "disabled"
    assert "on purpose" in first["safety_checker_note"]


def test_same_seed_same_bytes_other_seed_other_image(editor: DiffusersEditor) -> None:
    image = _photo(64, 64, 3)
    a = editor.edit([image, image], [INSTRUCTION, INSTRUCTION], [7, 8])
    b = editor.edit([image, image], [INSTRUCTION, INSTRUCTION], [7, 8])
    assert _sha(a[0].image) == _sha(b[0].image) and _sha(a[1].image) == _sha(b[1].image)
    assert _sha(a[0].image) != _sha(a[1].image)


def test_config_and_info_record_what_affects_output(editor: DiffusersEditor) -> None:
    cfg = editor.config()
    assert cfg["pipeline_class"] == "StableDiffusionInstructPix2PixPipeline"
    assert cfg["steps"] == STEPS and cfg["image_guidance_scale"] == 1.5 and cfg["guidance_scale"] == 7.5
    assert cfg["safety_checker_disabled"] is True and "on purpose" in cfg["safety_checker_note"]
    assert cfg["scheduler"] == "EulerAncestralDiscreteScheduler" and cfg["dtype"] == "float32"
    assert cfg["ignored_params"] == []
    info = editor.info
    assert info.model_id == editor.model and info.device == "cpu" and info.dtype == "float32"
    assert info.library.startswith("diffusers 0.") and "; torch " in info.library


def test_resolution_resizes_the_input_and_the_output_comes_back(tiny_model: Path) -> None:
    ed = _editor(tiny_model, resolution=64, batch_size=1)
    (result,) = ed.edit([_photo(96, 64, 4)], [INSTRUCTION], [0])
    assert result.detail["input_size"] == [80, 48]  # ~64x64 pixels, aspect kept, multiples of 16
    assert result.raw_size == (80, 48) and result.image.size == (96, 64)
    assert target_size(4000, 3000, 1024, None, 16) == (1184, 880)
    assert target_size(4000, 3000, None, 512, 8) == (512, 384)


def test_no_resample_without_a_configured_size(editor: DiffusersEditor, resamples: list) -> None:
    """No resolution set: a source already a multiple of 16 reaches the pipeline untouched; another is
    resampled once, by the editor, and the pipeline does not resample it again."""
    (result,) = editor.edit([_photo(64, 48, 6)], [INSTRUCTION], [0])
    assert resamples == [] and result.raw_size == (64, 48) and result.detail["size_rule"] == "input"
    assert result.detail["size_call_args"] == {}  # InstructPix2Pix takes no height/width: it draws at its input
    editor.edit([_photo(90, 60, 7)], [INSTRUCTION], [0])
    assert resamples == [((90, 60), (96, 64)), ((96, 64), (90, 60))]


def test_registry_factory_and_auto_pipeline(tiny_model: Path) -> None:
    from sp_assets.backends.registry import FACTORIES

    profile = Profile(role="editor", name="tiny_auto", implementation="diffusers",
                      params={"pipeline": "auto", "model": str(tiny_model), "device": "cpu", "steps": STEPS,
                              "prompt_template": "{text}", "disable_safety_checker": False})
    ed = FACTORIES["editor"]["diffusers"](profile, None)  # the factory ignores the policy
    assert isinstance(ed, DiffusersEditor) and ed.profile_name == "tiny_auto"
    assert type(ed.pipe).__name__ == "StableDiffusionInstructPix2PixPipeline"
    # Not disabled by the profile, but the saved model has none: recorded as absent, not disabled.
    assert ed.safety_checker == "absent" and ed.config()["safety_checker_disabled"] is False
    assert ed.prompt_for(INSTRUCTION) == INSTRUCTION.text


# -- call arguments: only what the pipeline accepts -----------------------------------------------


def test_signature_filter_passes_only_accepted_arguments() -> None:
    def fake_call(self, prompt, image, guidance_scale=1.0, true_cfg_scale=4.0, **kwargs):
        return None

    passed, dropped = accepted_call_args(
        fake_call, {"guidance_scale": 2.0, "image_guidance_scale": 1.5, "true_cfg_scale": None, "strength": 0.5})
    assert passed == {"guidance_scale": 2.0}  # None means unset; **kwargs does not count as accepting
    assert dropped == ["image_guidance_scale", "strength"]

    from diffusers import FluxKontextPipeline, QwenImageEditPipeline, StableDiffusionInstructPix2PixPipeline

    wanted = {"image_guidance_scale": 1.5, "true_cfg_scale": 4.0}
    assert accepted_call_args(StableDiffusionInstructPix2PixPipeline.__call__, wanted) == (
        {"image_guidance_scale": 1.5}, ["true_cfg_scale"])
    assert accepted_call_args(FluxKontextPipeline.__call__, wanted) == ({"true_cfg_scale": 4.0}, ["image_guidance_scale"])
    assert accepted_call_args(QwenImageEditPipeline.__call__, wanted) == ({"true_cfg_scale": 4.0}, ["image_guidance_scale"])


def test_unaccepted_extra_call_args_and_bad_templates_are_errors(tiny_model: Path) -> None:
    with pytest.raises(ProfileError, match=r"does not accept extra_call_args \['true_cfg_scale'\]"):
        _editor(tiny_model, extra_call_args={"true_cfg_scale": 4.0})
    with pytest.raises(ProfileError, match="profile param 'steps'"):
        _editor(tiny_model, extra_call_args={"num_inference_steps": 4})
    with pytest.raises(ProfileError, match="unknown fields"):
        _editor(tiny_model, prompt_template="{text} {colour}")


# -- failures name the profile and the fix ---------------------------------------------------------


def test_unknown_pipeline_class_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ProfileError) as exc:
        DiffusersEditor(profile_name="typo", pipeline="FluxKontexPipeline", model=str(tmp_path / "none"))
    msg = str(exc.value)
    assert "'typo'" in msg and "FluxKontexPipeline" in msg and "Did you mean FluxKontextPipeline" in msg
    assert "Fix:" in msg and "QwenImageEditPipeline" in msg
    with pytest.raises(ProfileError, match="does not take both 'image' and 'prompt'"):
        pipeline_class("t2i", "StableDiffusionPipeline")
    with pytest.raises(ProfileError, match="is not a class in diffusers"):
        pipeline_class("x", "NoSuchPipeline")


def test_missing_local_folder_raises_missing_weights(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-model"
    with pytest.raises(MissingWeightsError) as exc:
        _editor(missing)
    msg = str(exc.value)
    assert "'tiny'" in msg and str(missing) in msg and "hf download" in msg
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(MissingWeightsError, match="hf download"):
        _editor(empty)


def test_uncached_hub_model_raises_missing_weights_offline(offline_empty_hub: Path) -> None:
    model = "safetypairs-tests/not-a-cached-model"
    for pipeline in ("StableDiffusionInstructPix2PixPipeline", "auto"):
        with pytest.raises(MissingWeightsError) as exc:
            DiffusersEditor(profile_name="hub_profile", pipeline=pipeline, model=model, device="cpu")
        msg = str(exc.value)
        assert "'hub_profile'" in msg and model in msg and f"hf download {model}" in msg


def test_hub_id_loads_from_the_local_cache_offline(tiny_model: Path, offline_empty_hub: Path) -> None:
    """A hub id resolves in the local cache (no network); the snapshot's commit is recorded."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = offline_empty_hub / "hub" / "models--safetypairs-tests--tiny-ip2p"
    shutil.copytree(tiny_model, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    ed = DiffusersEditor(profile_name="cached", pipeline="StableDiffusionInstructPix2PixPipeline",
                         model="safetypairs-tests/tiny-ip2p", device="cpu", steps=STEPS)
    assert ed.info.revision == commit and ed.config()["resolved_commit"] == commit
    (result,) = ed.edit([_photo(64, 48, 5)], [INSTRUCTION], [0])
    assert result.image.size == (64, 48) and result.detail["revision"] == commit


def test_shipped_profiles_match_installed_diffusers(offline_empty_hub: Path) -> None:
    """Every diffusers profile names a real pipeline, passes only accepted arguments, and (with no
    weights cached) fails with a MissingWeightsError that gives the download command."""
    doc = yaml.safe_load((REPO_ROOT / "resources" / "editors.yaml").read_text(encoding="utf-8"))
    profiles = {n: p for n, p in doc.items() if p.get("implementation") == "diffusers"}
    assert {"instruct_pix2pix", "flux_kontext", "qwen_image_edit", "qwen_image_edit_plus"} <= set(profiles)
    for name, entry in profiles.items():
        params = entry["params"]
        cls = pipeline_class(name, params["pipeline"])
        assert cls is not None and cls.__name__ == params["pipeline"]
        _, dropped = accepted_call_args(cls.__call__, {
            **(params.get("extra_call_args") or {}), "guidance_scale": params.get("guidance_scale"),
            "image_guidance_scale": params.get("image_guidance_scale")})
        assert dropped == [], f"{name}: {cls.__name__} does not accept {dropped}"
        with pytest.raises(MissingWeightsError, match=f"hf download {params['model']}"):
            DiffusersEditor(profile_name=name, **{**params, "device": "cpu", "dtype": "float32"})


# -- GPU ------------------------------------------------------------------------------------------


def test_cuda_edit_matches_sizes_and_reproduces(tiny_model: Path) -> None:
    import torch

    if not torch.cuda.is_available():
        pytest.skip("CUDA is not available on this machine")
    for offload in (False, True):
        ed = _editor(tiny_model, device="auto", dtype="auto", cpu_offload=offload)
        assert ed.device.startswith("cuda") and ed.dtype_name == "bfloat16"
        images = [_photo(90, 60, 0), _photo(64, 64, 1)]
        a = ed.edit(images, [INSTRUCTION, INSTRUCTION], [1, 2])
        b = ed.edit(images, [INSTRUCTION, INSTRUCTION], [1, 2])
        assert [r.image.size for r in a] == [(90, 60), (64, 64)]
        assert [r.raw_size for r in a] == [(96, 64), (64, 64)]
        assert [_sha(r.image) for r in a] == [_sha(r.image) for r in b]
        assert ed.config()["cpu_offload"] is offload
        ed.close()
