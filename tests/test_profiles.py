"""Profile folders: the shipped profiles with a deployment's on top, and worker resources kept out of hashes."""

from __future__ import annotations

import os

import pytest

from sp_assets.backends import registry
from sp_assets.backends.profiles import ProfileError, get_profile, load_profiles
from sp_assets.core.policy import REPO_ROOT


def test_a_deployment_folder_adds_profiles_to_the_shipped_ones(monkeypatch):
    monkeypatch.setenv("SP_PROFILES_DIR", os.pathsep.join([str(REPO_ROOT / "resources"), str(REPO_ROOT / "deploy" / "resources")]))
    editors = load_profiles("editor")
    assert {"text_region", "qwen_image_edit", "qwen_image_edit_gpu"} <= set(editors)
    gpu = get_profile("editor", "qwen_image_edit_gpu")
    assert gpu.resources == {"num_gpus": 1.0, "num_cpus": 4.0} and "num_gpus" not in gpu.extra
    assert get_profile("judge", "llavaguard_gpu").resources["num_gpus"] == 1.0
    assert load_profiles("writer") == load_profiles("writer", REPO_ROOT / "resources")  # no writers.yaml there


def test_worker_resources_do_not_change_the_config_hash(tmp_path, monkeypatch):
    (tmp_path / "editors.yaml").write_text(
        "plain:\n  implementation: text_region\n  params: {pad: 3}\n"
        "on_gpu:\n  implementation: text_region\n  num_gpus: 1\n  params: {pad: 3}\n")
    monkeypatch.setenv("SP_PROFILES_DIR", str(tmp_path))
    plain, gpu = get_profile("editor", "plain"), get_profile("editor", "on_gpu")
    assert gpu.resources == {"num_gpus": 1.0}
    assert registry.config_sha256(plain) != "" and {**plain.resolved(), "name": None} == {**gpu.resolved(), "name": None}


def test_a_bad_resource_value_names_the_file_and_the_profile(tmp_path, monkeypatch):
    (tmp_path / "editors.yaml").write_text("bad:\n  implementation: text_region\n  num_gpus: lots\n")
    monkeypatch.setenv("SP_PROFILES_DIR", str(tmp_path))
    with pytest.raises(ProfileError, match=r"editors.yaml: profile 'bad' num_gpus must be a number"):
        load_profiles("editor")


def test_a_profile_extends_another_and_changes_only_what_it_names(tmp_path, monkeypatch):
    """deploy/resources: a cluster profile takes the shipped one whole (prompt, requires, licences) plus its GPU."""
    from sp_assets.backends.profiles import PROFILES_DIR_ENV_VAR

    monkeypatch.setenv(PROFILES_DIR_ENV_VAR, f"{REPO_ROOT / 'resources'}{os.pathsep}{REPO_ROOT / 'deploy' / 'resources'}")
    shipped, gpu = get_profile("judge", "llavaguard"), get_profile("judge", "llavaguard_gpu")
    assert gpu.params == {**shipped.params, "device": "cuda", "batch_size": 8}
    assert gpu.params["prompt_template"] == shipped.params["prompt_template"]
    assert (gpu.requires, gpu.licences, gpu.resources) == (shipped.requires, shipped.licences,
                                                           {"num_gpus": 1.0, "num_cpus": 2.0})
    assert "extends" not in gpu.extra
    editor = get_profile("editor", "qwen_image_edit_gpu")
    assert editor.params == {**get_profile("editor", "qwen_image_edit").params, "device": "cuda"}
    monkeypatch.setenv(PROFILES_DIR_ENV_VAR, str(tmp_path))
    (tmp_path / "judges.yaml").write_text("a:\n  extends: b\nb:\n  extends: a\n")
    with pytest.raises(ProfileError, match="extends 'a': a cycle of extends"):
        load_profiles("judge")
    (tmp_path / "judges.yaml").write_text("c:\n  extends: nowhere\n")
    with pytest.raises(ProfileError, match="'c' extends 'nowhere': no profile of that name"):
        load_profiles("judge")
