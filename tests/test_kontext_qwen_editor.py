"""DiffusersEditor's size rules for FLUX.1 Kontext and Qwen-Image-Edit, through the real call path.

Tiny random-weight pipelines are built from configs, saved and loaded back through ``DiffusersEditor``.
FluxKontextPipeline is complete (its CLIP and T5 tokenizers are built offline). The Qwen-Image-Edit
pipelines are real (transformer, VAE, sizes, resizing, latents) except their Qwen2.5-VL text encoder
and processor, which need torchvision: a subclass under the same class name replaces
``encode_prompt`` and records the image the vision encoder would read.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sp_assets.core.record_types import Instruction
from sp_assets.backends.editors.diffusers_pipeline import DiffusersEditor
from sp_assets.backends.editors.diffusers_sizes import (
    KONTEXT, QWEN_EDIT, QWEN_EDIT_PLUS, kontext_preferred_size, plan_size, qwen_area_size,
)
from sp_assets.backends.profiles import ProfileError

sys.path.insert(0, str(Path(__file__).parent))
from tiny_diffusers import (  # noqa: E402
    build_tiny_flux_kontext, build_tiny_qwen_image_edit, qwen_edit_without_text_encoder,
)

INSTRUCTION = Instruction(text='Replace the text "GO AWAY" with "WELCOME".', keep="Keep everything else.")
ONE_MP = 1024 * 1024
pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


def _photo(width: int, height: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def _record_calls(monkeypatch: pytest.MonkeyPatch, cls: type) -> list[dict]:
    """The keyword arguments of every call of ``cls`` (the real call still runs)."""
    calls: list[dict] = []
    real = cls.__call__

    @functools.wraps(real)
    def call(self, **kwargs):
        calls.append(kwargs)
        return real(self, **kwargs)

    monkeypatch.setattr(cls, "__call__", call)
    return calls


# -- the rules, as pure functions ------------------------------------------------------------------


@pytest.mark.parametrize(("source", "preferred"), [
    ((400, 300), (1184, 880)), ((300, 600), (720, 1456)), ((1000, 1000), (1024, 1024)),
    ((90, 60), (1328, 800)),  # cut to 80x48 first, as the pipeline's image processor does
    ((4000, 1000), (1568, 672)),
])
def test_kontext_preferred_size(source: tuple[int, int], preferred: tuple[int, int]) -> None:
    assert kontext_preferred_size(*source, 16) == preferred


def test_plans_by_pipeline_class() -> None:
    kw = dict(resolution=None, max_side=None, multiple_of=16, pipe_multiple=16)
    k = plan_size(KONTEXT, (400, 300), **kw)
    assert (k.rule, k.input_size, k.draw_size) == ("kontext_preferred_resolution", (400, 300), (1184, 880))
    assert dict(k.call_args) == {"height": 880, "width": 1184, "max_area": 1184 * 880, "_auto_resize": True}
    q = plan_size(QWEN_EDIT, (800, 600), **kw)
    assert (q.input_size, q.reference_size, q.vision_size, q.draw_size) == ((800, 600),) + ((1184, 896),) * 3
    p = plan_size(QWEN_EDIT_PLUS, (800, 600), **kw)
    assert p.vision_size == qwen_area_size(800, 600, 384 * 384) == (448, 320) and p.reference_size == (1184, 896)
    # Configured: Kontext reads and draws at it (auto-resize off); Qwen draws at it, reads at ~1 MP.
    k64 = plan_size(KONTEXT, (96, 64), **{**kw, "resolution": 64})
    assert k64.input_size == k64.draw_size == (80, 48) and dict(k64.call_args)["_auto_resize"] is False
    q512 = plan_size(QWEN_EDIT, (800, 600), **{**kw, "resolution": 512})
    assert q512.input_size == (800, 600) and q512.reference_size == (1184, 896) and q512.draw_size == (592, 448)
    # Other pipelines: untouched when already a multiple, the multiple at least the pipeline's own.
    assert plan_size("StableDiffusionInstructPix2PixPipeline", (64, 48), **kw).input_size == (64, 48)
    assert plan_size("X", (90, 60), **{**kw, "multiple_of": 4, "pipe_multiple": 8}).input_size == (88, 64)
    # Different aspects never share a call; same preferred resolution may.
    assert k.batch_key == plan_size(KONTEXT, (320, 240), **kw).batch_key
    assert k.batch_key != plan_size(KONTEXT, (300, 600), **kw).batch_key


def test_profiles_that_fight_the_size_rule_are_refused(tmp_path: Path) -> None:
    missing = str(tmp_path / "none")  # refused before anything is loaded
    with pytest.raises(ProfileError, match=r"may not set \['max_area'\] for FluxKontextPipeline.*resolution"):
        DiffusersEditor("k", pipeline=KONTEXT, model=missing, extra_call_args={"max_area": 512 * 512})
    with pytest.raises(ProfileError, match=r"may not set \['height', 'width'\] for QwenImageEditPipeline"):
        DiffusersEditor("q", pipeline=QWEN_EDIT, model=missing, extra_call_args={"height": 512, "width": 512})
    with pytest.raises(ProfileError, match="_auto_resize: true .* Fix: remove _auto_resize"):
        DiffusersEditor("k", pipeline=KONTEXT, model=missing, resolution=512, extra_call_args={"_auto_resize": True})


# -- FLUX.1 Kontext, the real pipeline ----------------------------------------------------------------


@pytest.fixture(scope="module")
def kontext_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_flux_kontext(tmp_path_factory.mktemp("tiny_kontext"))


def _kontext(model: Path, **params) -> DiffusersEditor:
    base = dict(pipeline=KONTEXT, model=str(model), device="cpu", steps=2, guidance_scale=2.5, batch_size=4,
                extra_call_args={"max_sequence_length": 32})
    return DiffusersEditor(profile_name="tiny_kontext", **{**base, **params})


def test_kontext_draws_each_source_at_its_preferred_resolution(kontext_model: Path, monkeypatch, resamples) -> None:
    from diffusers import FluxKontextPipeline

    ed = _kontext(kontext_model)
    calls = _record_calls(monkeypatch, FluxKontextPipeline)
    references: list[tuple[int, int]] = []
    real_preprocess = ed.pipe.image_processor.preprocess
    monkeypatch.setattr(ed.pipe.image_processor, "preprocess",
                        lambda image, height, width, **kw: references.append((width, height))
                        or real_preprocess(image, height, width, **kw))
    sources = [_photo(400, 300, 0), _photo(300, 600, 1), _photo(320, 240, 2)]
    results = ed.edit(sources, [INSTRUCTION] * 3, [1, 2, 3])

    # 4:3 sources share a call; the 1:2 one cannot share its height/width and gets its own.
    asked = sorted((c["width"], c["height"], c["max_area"], len(c["image"])) for c in calls)
    assert asked == [(720, 1456, 720 * 1456, 1), (1184, 880, 1184 * 880, 2)]
    assert all(c["_auto_resize"] is True for c in calls)
    assert sorted(references) == [(720, 1456), (1184, 880)]  # the reference read at the asked size
    assert [r.raw_size for r in results] == [(1184, 880), (720, 1456), (1184, 880)]  # not 1024x1024
    assert [r.image.size for r in results] == [(400, 300), (300, 600), (320, 240)]
    d = results[1].detail
    assert d["size_rule"] == "kontext_preferred_resolution" and d["input_size"] == [300, 600]
    assert d["size_call_args"] == {"height": 1456, "width": 720, "max_area": 720 * 1456, "_auto_resize": True}
    assert d["draw_size"] == d["reference_size"] == d["raw_size"] == [720, 1456]
    # Each source resampled once on the way in (by the pipeline) and once on the way back.
    assert sorted(resamples) == sorted([((400, 300), (1184, 880)), ((300, 600), (720, 1456)),
                                        ((320, 240), (1184, 880)), ((1184, 880), (400, 300)),
                                        ((720, 1456), (300, 600)), ((1184, 880), (320, 240))])
    assert "preferred resolution" in ed.config()["size_rule"] and ed.config()["pipeline_multiple"] == 16


def test_kontext_with_a_resolution_reads_and_draws_at_it(kontext_model: Path, monkeypatch, resamples) -> None:
    from diffusers import FluxKontextPipeline

    ed = _kontext(kontext_model, resolution=64)
    calls = _record_calls(monkeypatch, FluxKontextPipeline)
    (result,) = ed.edit([_photo(96, 64, 4)], [INSTRUCTION], [0])
    (call,) = calls
    assert (call["width"], call["height"], call["max_area"], call["_auto_resize"]) == (80, 48, 80 * 48, False)
    assert [im.size for im in call["image"]] == [(80, 48)]
    assert result.raw_size == (80, 48) and result.image.size == (96, 64)
    assert result.detail["size_rule"] == "configured" and result.detail["input_size"] == [80, 48]
    assert resamples == [((96, 64), (80, 48)), ((80, 48), (96, 64))]  # the editor's, none by the pipeline


# -- Qwen-Image-Edit and -Plus: real pipelines, recorded text encoder --------------------------------------


@pytest.fixture(scope="module")
def qwen_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny_qwen")
    return {QWEN_EDIT: build_tiny_qwen_image_edit(root), QWEN_EDIT_PLUS: build_tiny_qwen_image_edit(root, plus=True)}


def _qwen(monkeypatch: pytest.MonkeyPatch, models: dict[str, Path], name: str) -> tuple[DiffusersEditor, type]:
    import diffusers

    stand_in = qwen_edit_without_text_encoder(getattr(diffusers, name))
    monkeypatch.setattr(diffusers, name, stand_in)
    ed = DiffusersEditor(profile_name="tiny_qwen", pipeline=name, model=str(models[name]), device="cpu", steps=1,
                         negative_prompt=" ", extra_call_args={"true_cfg_scale": 4.0}, batch_size=4)
    assert type(ed.pipe) is stand_in and ed.config()["batch_size"] == 1
    return ed, stand_in


def test_qwen_edit_gets_one_image_per_call_read_near_one_megapixel(qwen_models, monkeypatch, resamples) -> None:
    ed, stand_in = _qwen(monkeypatch, qwen_models, QWEN_EDIT)
    calls = _record_calls(monkeypatch, stand_in)
    results = ed.edit([_photo(800, 600, 5), _photo(600, 800, 6)], [INSTRUCTION] * 2, [1, 2])

    assert len(calls) == 2 and all(isinstance(c["image"], Image.Image) for c in calls)  # never a list
    assert [c["image"].size for c in calls] == [(800, 600), (600, 800)]  # untouched: the pipeline resizes
    assert [(c["width"], c["height"]) for c in calls] == [(1184, 896), (896, 1184)]
    # What the vision encoder read, twice per call (true CFG): the ~1 MP copy, not the full source.
    seen = [im.size for im in stand_in.vision_inputs]
    assert seen == [(1184, 896)] * 2 + [(896, 1184)] * 2
    assert all(0.9 * ONE_MP < w * h < 1.1 * ONE_MP for w, h in seen)
    assert [r.raw_size for r in results] == [(1184, 896), (896, 1184)]
    assert [r.image.size for r in results] == [(800, 600), (600, 800)]
    d = results[0].detail
    assert d["size_rule"] == "qwen_one_megapixel" and d["size_call_args"] == {"height": 896, "width": 1184}
    assert d["vision_size"] == d["reference_size"] == d["draw_size"] == [1184, 896] and d["batch_call_size"] == 1
    assert sorted(resamples) == sorted([((800, 600), (1184, 896)), ((600, 800), (896, 1184)),
                                        ((1184, 896), (800, 600)), ((896, 1184), (600, 800))])


def test_qwen_edit_plus_gets_a_one_reference_list(qwen_models, monkeypatch) -> None:
    ed, stand_in = _qwen(monkeypatch, qwen_models, QWEN_EDIT_PLUS)
    calls = _record_calls(monkeypatch, stand_in)
    (result,) = ed.edit([_photo(800, 600, 7)], [INSTRUCTION], [3])

    (call,) = calls
    assert isinstance(call["image"], list) and [im.size for im in call["image"]] == [(800, 600)]
    assert (call["width"], call["height"]) == (1184, 896)
    # Plus reads a 384x384-area copy with its vision encoder, the ~1 MP one with its VAE.
    assert [[im.size for im in images] for images in stand_in.vision_inputs] == [[(448, 320)]] * 2
    assert result.raw_size == (1184, 896) and result.image.size == (800, 600)
    assert result.detail["vision_size"] == [448, 320] and result.detail["reference_size"] == [1184, 896]


# -- GPU ------------------------------------------------------------------------------------------------


def test_cuda_kontext_keeps_the_size_rule_and_reproduces(kontext_model: Path) -> None:
    import torch

    if not torch.cuda.is_available():
        pytest.skip("CUDA is not available on this machine")
    for offload in (False, True):
        ed = _kontext(kontext_model, device="auto", dtype="auto", cpu_offload=offload)
        assert ed.device.startswith("cuda") and ed.dtype_name == "bfloat16"
        sources = [_photo(400, 300, 0), _photo(300, 600, 1)]
        a = ed.edit(sources, [INSTRUCTION] * 2, [1, 2])
        b = ed.edit(sources, [INSTRUCTION] * 2, [1, 2])
        assert [r.raw_size for r in a] == [(1184, 880), (720, 1456)]
        assert [r.image.size for r in a] == [(400, 300), (300, 600)]
        assert [r.image.tobytes() for r in a] == [r.image.tobytes() for r in b]
        ed.close()
