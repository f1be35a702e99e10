"""Profiles that need torchvision (LLaVA-OneVision and Qwen2-VL processors build a video processor) stop
before any weights load when it does not import, with the profile, the package and the install command.

torchvision is made missing, broken or importable with a finder at the front of ``sys.meta_path``, so
the tests mean the same on a machine that has a real torchvision as on this one.
"""

from __future__ import annotations

import dataclasses
import importlib.abc
import importlib.machinery
import sys
from pathlib import Path

import pytest

from sp_assets.backends import registry
from sp_assets.backends.common import packages
from sp_assets.backends.common.hf import MissingWeightsError, ModelSource
from sp_assets.backends.common.packages import MissingPackageError
from sp_assets.backends.profiles import ProfileError, get_profile, load_profiles
from sp_assets.core.policy import DEFAULT_POLICY_PATH, load_policy
from sp_assets.execution.lazy import LazyBackend

NEEDS_TORCHVISION = [("judge", "llavaguard"), ("judge", "qwen_vl_judge"), ("writer", "qwen_vl_writer"),
                     ("editor", "qwen_image_edit"), ("editor", "qwen_image_edit_plus")]


class _FakeTorchvision(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Answers for ``torchvision``: 'missing' (no module), 'broken' (found, fails to import), 'ok'."""

    def __init__(self, state: str) -> None:
        self.state = state

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] != "torchvision":
            return None
        if self.state == "missing":
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return importlib.machinery.ModuleSpec(name, self)

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        if self.state == "broken":  # what PyPI's torchvision does beside the CPU torch wheel
            raise RuntimeError("operator torchvision::nms does not exist")


@pytest.fixture
def torchvision(monkeypatch):
    """Set torchvision's state for the test: ``torchvision('missing' | 'broken' | 'ok')``."""
    registry.clear_cache()

    def set_state(state: str) -> None:
        for name in [n for n in sys.modules if n.split(".")[0] == "torchvision"]:
            monkeypatch.delitem(sys.modules, name)
        monkeypatch.setattr(sys, "meta_path", [_FakeTorchvision(state), *sys.meta_path])

    before = {n for n in sys.modules if n.split(".")[0] == "torchvision"}
    yield set_state
    for name in [n for n in sys.modules if n.split(".")[0] == "torchvision" and n not in before]:
        del sys.modules[name]  # a fake imported during the test must not outlive it (LPIPS would see it)
    registry.clear_cache()


@pytest.fixture(scope="module")
def policy():
    return load_policy(DEFAULT_POLICY_PATH)


def _with_missing_model(profile, tmp_path: Path):
    """The profile pointed at a folder that does not exist: any weight loading would fail at once."""
    return dataclasses.replace(profile, params={**profile.params, "model": str(tmp_path / "no-such-model")})


def _assert_clear(message: str, profile_name: str) -> None:
    assert f"profile {profile_name!r}" in message
    assert "'torchvision'" in message and "resources/" in message
    assert f"{sys.executable} -m pip install" in message and "torchvision" in message.split("Fix:")[1]
    assert "make setup-gpu" in message


def test_shipped_profiles_that_need_torchvision_say_so():
    needing = {(role, name) for role in ("judge", "writer", "editor")
               for name, p in load_profiles(role).items() if "torchvision" in p.requires}
    assert needing == set(NEEDS_TORCHVISION)
    shieldgemma2 = get_profile("judge", "shieldgemma2")  # a Gemma 3 processor: images only, no video
    assert shieldgemma2.requires == ()


@pytest.mark.parametrize("role, name", NEEDS_TORCHVISION)
def test_without_torchvision_the_build_stops_before_any_weights_are_read(role, name, torchvision, policy,
                                                                          tmp_path):
    torchvision("missing")
    profile = _with_missing_model(get_profile(role, name), tmp_path)
    loads = dict(registry.LOAD_COUNTS)
    with pytest.raises(MissingPackageError) as caught:
        registry.build(profile, policy)  # the weights are missing too: the package comes first
    _assert_clear(str(caught.value), name)
    assert "is not installed here" in str(caught.value)
    assert dict(registry.LOAD_COUNTS) == loads
    # How a Dagster step builds it: through a LazyBackend, on its first model call.
    with pytest.raises(MissingPackageError, match=name):
        LazyBackend(profile, policy).get()


def test_a_broken_torchvision_gets_the_same_clear_message(torchvision, policy, tmp_path):
    torchvision("broken")
    profile = _with_missing_model(get_profile("judge", "llavaguard"), tmp_path)
    with pytest.raises(MissingPackageError) as caught:
        registry.build(profile, policy)
    message = str(caught.value)
    _assert_clear(message, "llavaguard")
    assert "installed but does not import" in message
    assert "RuntimeError: operator torchvision::nms does not exist" in message


def test_a_judge_evaluated_as_a_guard_needs_what_its_judge_needs(torchvision, policy):
    torchvision("missing")
    guard = get_profile("guard", "llavaguard")
    with pytest.raises(MissingPackageError) as caught:
        registry.check_requirements(guard)
    _assert_clear(str(caught.value), "llavaguard")
    assert isinstance(caught.value, ImportError)  # guard_metrics skips an unloadable guard with the reason


def test_profiles_that_do_not_need_torchvision_are_unaffected(torchvision, policy):
    torchvision("missing")
    for role in ("judge", "writer", "editor", "embedder"):
        for profile in load_profiles(role).values():
            if not profile.requires:
                registry.check_requirements(profile)
    editor = registry.build(get_profile("editor", "text_region"), policy)
    assert type(editor).__name__ == "TextRegionEditor"


@pytest.mark.parametrize("role, name", [n for n in NEEDS_TORCHVISION if n[0] != "editor"])
def test_an_importable_torchvision_passes_and_loading_goes_on(role, name, torchvision, policy, tmp_path):
    profile = _with_missing_model(get_profile(role, name), tmp_path)
    registry.backend_class(profile)  # import the backend (and transformers) before torchvision is faked
    torchvision("ok")
    registry.check_requirements(get_profile("editor", "qwen_image_edit"))
    with pytest.raises(MissingWeightsError, match="no-such-model"):  # past the check, at the weights
        registry.build(profile, policy)


def test_a_processor_that_asks_for_a_missing_library_while_loading_is_reported_clearly(tmp_path):
    """For profiles that do not list the package: transformers' own 'requires the X library' error."""

    def loader(path, **kwargs):
        raise ImportError("\nQwen2VLVideoProcessor requires the Torchvision library but it was not found in your "
                          "environment. Check out the instructions on the installation page.")

    with pytest.raises(MissingPackageError) as caught:
        ModelSource(str(tmp_path)).load("my_vlm", loader, weights=False)
    message = str(caught.value)
    assert "profile 'my_vlm'" in message and "'torchvision'" in message and "is not installed here" in message
    assert f"to load {str(tmp_path)!r}" in message and "-m pip install" in message

    def other(path, **kwargs):
        raise ImportError("cannot import name 'Thing' from 'somewhere'")

    with pytest.raises(ImportError, match="cannot import name 'Thing'") as caught:
        ModelSource(str(tmp_path)).load("my_vlm", other, weights=False)
    assert not isinstance(caught.value, MissingPackageError)  # not a missing package: left as it was


@pytest.mark.parametrize("torch_version, expected", [
    ("2.13.0+cpu", '-m pip install "torch==2.13.0+cpu" torchvision --index-url https://download.pytorch.org/whl/cpu'),
    ("2.13.0+cu128", '"torch==2.13.0+cu128" torchvision --index-url https://download.pytorch.org/whl/cu128'),
    ("2.13.0", '-m pip install "torch==2.13.0" torchvision'),
])
def test_the_install_command_matches_the_installed_torch(monkeypatch, torch_version, expected):
    monkeypatch.setattr(packages, "package_version", lambda dist: torch_version)
    command = packages.install_command("torchvision")
    assert command.endswith(expected) and command.startswith(sys.executable)
    assert packages.install_command("bitsandbytes") == f"{sys.executable} -m pip install bitsandbytes"


def test_requires_is_checked_when_read_and_kept_out_of_the_config_hash(tmp_path, monkeypatch):
    (tmp_path / "editors.yaml").write_text(
        "plain:\n  implementation: text_region\n  params: {pad: 3}\n"
        "needs:\n  implementation: text_region\n  requires: [torchvision, PIL.Image]\n  params: {pad: 3}\n"
        "bad:\n  implementation: text_region\n  requires: torchvision\n")
    monkeypatch.setenv("SP_PROFILES_DIR", str(tmp_path))
    with pytest.raises(ProfileError, match=r"editors.yaml: profile 'bad' 'requires' must be a list of Python module"):
        load_profiles("editor")
    (tmp_path / "editors.yaml").write_text((tmp_path / "editors.yaml").read_text().split("bad:")[0])
    plain, needs = get_profile("editor", "plain"), get_profile("editor", "needs")
    assert needs.requires == ("torchvision", "PIL.Image") and "requires" not in needs.extra
    assert {**plain.resolved(), "name": None} == {**needs.resolved(), "name": None}


def test_the_step_stops_when_it_takes_its_backend_not_at_its_first_model_call(torchvision, policy):
    """edited_images takes every editor it will run first thing: a second editor that cannot run stops the step
    there, before the first editor's work; guards are left to be skipped with their reason."""
    from sp_assets.defs.resources import EditorResource, GuardResource, JudgeResource

    torchvision("missing")
    editor = EditorResource(profile="text_region", also=["qwen_image_edit"])
    assert editor.lazy(policy, "text_region").config_sha256  # a profile without needs is unaffected
    with pytest.raises(ImportError) as stopped:
        editor.lazy(policy, "qwen_image_edit")
    _assert_clear(str(stopped.value), "qwen_image_edit")
    with pytest.raises(ImportError):
        JudgeResource(profile="llavaguard").lazy(policy)
    GuardResource().lazy(policy, "llavaguard")  # not raised here: guard_metrics skips it with the reason
