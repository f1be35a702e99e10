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


# -- parameters: each backend's Params model, checked where the profile loads ------------------------

def _all_profiles(monkeypatch) -> list:
    from sp_assets.backends.profiles import PROFILES_DIR_ENV_VAR, ROLES

    monkeypatch.setenv(PROFILES_DIR_ENV_VAR, f"{REPO_ROOT / 'resources'}{os.pathsep}{REPO_ROOT / 'deploy' / 'resources'}")
    return [p for role in ROLES for p in load_profiles(role).values()]


def test_every_builtin_backend_declares_its_constructor_parameters():
    """Params and the constructor agree: the same names, the same defaults (a field without a default is
    a keyword without one), so a checked profile always builds and no default is written twice apart."""
    import inspect

    from pydantic_core import PydanticUndefined

    not_params = {"self", "policy", "profile_name", "reader", "server", "profile_file"}  # given by the registry
    for role, factories in registry.FACTORIES.items():
        for implementation, factory in factories.items():
            cls = factory.cls()
            fields = cls.Params.model_fields
            taken = {n: p for n, p in inspect.signature(cls.__init__).parameters.items() if n not in not_params}
            assert set(fields) == set(taken), (role, implementation)
            for name, field in fields.items():
                default = taken[name].default
                expected = PydanticUndefined if default is inspect.Parameter.empty else default
                assert field.default == expected, (role, implementation, name)


def test_every_shipped_profile_passes_its_params_check(monkeypatch):
    for profile in _all_profiles(monkeypatch):
        registry.check_profile_params(profile)


def _resolved_without_pydantic(role: str, name: str, entries: dict) -> dict:
    """A profile's hashed config worked out from the YAML alone: ``extends`` merged, params as written."""
    entry = dict(entries[name])
    if "extends" in entry:
        base = _resolved_without_pydantic(role, entry.pop("extends"), entries)
        entry = {**base["_entry"], **entry, "params": {**base["_entry"].get("params", {}), **entry.get("params", {})}}
    extra = {k: v for k, v in entry.items() if k not in
             ("implementation", "params", "description", "licences", "num_cpus", "num_gpus", "requires", "server")}
    resolved = {"role": role, "name": name, "implementation": entry["implementation"],
                "implementation_version": registry.CODE_VERSIONS[entry["implementation"]],
                "params": entry.get("params") or {}, **({"extra": extra} if extra else {})}
    return {**resolved, "_entry": entry}


def test_config_hashes_cover_the_params_as_written_not_the_checked_defaults(monkeypatch):
    """Stored rows are keyed by these hashes: checking params must not change them. Each shipped profile's
    hash equals one worked out from its YAML with no pydantic involved; four demo defaults are pinned."""
    import yaml

    from sp_assets.core.hashing import sha256_json

    seen = 0
    for profile in _all_profiles(monkeypatch):
        if profile.implementation == registry.JUDGE_AS_GUARD:
            continue
        entries: dict = {}
        for folder in (REPO_ROOT / "resources", REPO_ROOT / "deploy" / "resources"):
            path = folder / f"{profile.role}s.yaml"
            entries.update(yaml.safe_load(path.read_text(encoding="utf-8")) if path.is_file() else {})
        expected = _resolved_without_pydantic(profile.role, profile.name, entries)
        expected.pop("_entry")
        assert registry.config_sha256(profile) == sha256_json(expected), profile.name
        seen += 1
    assert seen >= 20
    pinned = {("judge", "scene_text"): "044a572febe72d662ddc2c5c360a100669c15ef3e92924151ff6cf6d97d271e8",
              ("writer", "template"): "bff480dc0ecc2252bcbd2047db8b7586915aa2b95773b6ef13a52be3e9f42939",
              ("editor", "text_region"): "920e1af170b2087dc8774e38a045d0b5c00703a447f85bfdd58da94bdc400a23",
              ("embedder", "efficientnet_lite0"): "ee39b07c719288d532c9fca03e3adf4360b515841fe042ca22af3f3b2f1f52ab"}
    for (role, name), sha in pinned.items():
        assert registry.config_sha256(get_profile(role, name)) == sha, name
    # The pin bites: hashing the checked model with its defaults filled in would change the hash.
    editor = get_profile("editor", "text_region")
    filled = registry.params_model(editor).model_validate(editor.params).model_dump()
    assert sha256_json(editor.resolved(registry.code_version(editor)) | {"params": filled}) != pinned[
        ("editor", "text_region")]


@pytest.mark.parametrize("role, implementation, params, match", [
    ("editor", "text_region", {"font_name": "ComicSans.ttf"},
     r"parameter 'font_name' = 'ComicSans.ttf': not a font file shipped with matplotlib; choose one of .*DejaVuSerif-Bold\.ttf"),
    ("editor", "text_region", {"font_name": "../fonts/ttf/DejaVuSans.ttf"}, r"'font_name' = '\.\./fonts/ttf/DejaVuSans\.ttf'"),
    ("editor", "text_region", {"inpaint_method": "fast"}, r"parameter 'inpaint_method' = 'fast': input should be 'telea' or 'ns'"),
    ("editor", "text_region", {"inpaint_radius": -1}, r"'inpaint_radius' = -1: input should be greater than or equal to 0"),
    ("editor", "text_region", {"inpaint_radius": "7"}, r"'inpaint_radius' = '7': input should be a valid integer"),
    ("editor", "text_region", {"pad": True}, r"'pad' = True: input should be a valid integer"),
    ("editor", "text_region", {"radius": 3}, (r"unknown parameter 'radius' \(value 3\); did you mean 'inpaint_radius'\? "
                                              r"it takes inpaint_method, inpaint_radius, .*Fix: rename or remove it")),
    ("editor", "diffusers", {"model": ""}, r"'model' = '': string should have at least 1 character"),
    ("editor", "diffusers", {"model": "m", "steps": 0}, r"'steps' = 0: input should be greater than or equal to 1"),
    ("editor", "diffusers", {}, r"parameter 'model' is required\. Fix: set it under params"),
    ("judge", "scene_text", {"unsafe_threshold": 0.0}, r"'unsafe_threshold' = 0\.0: input should be greater than 0"),
    ("judge", "scene_text", {"head": "tree"}, r"'head' = 'tree': input should be 'svc' or 'logreg'"),
    ("judge", "scene_text", {"safe_prior": 0.0}, r"'safe_prior' = 0\.0"),
    ("judge", "shieldgemma2", {"threshold": 1.5}, r"'threshold' = 1\.5: input should be less than or equal to 1"),
    ("judge", "shieldgemma2", {"batch_size": 0}, r"'batch_size' = 0"),
    ("judge", "shieldgemma2", {"policy_style": "prose"}, r"'policy_style' = 'prose': input should be 'shieldgemma' or 'rules'"),
    ("judge", "vlm", {"model": "m", "scope": "image"}, r"'scope' = 'image'"),
    ("judge", "vlm", {"model": "m", "max_new_tokens": 4}, r"'max_new_tokens' = 4: input should be greater than or equal to 8"),
    ("writer", "vlm", {"model": "m", "fallback": "skip"}, r"'fallback' = 'skip'"),
    ("writer", "template", {"variants": 0}, r"'variants' = 0"),
    ("guard", "open_nsfw", {"threshold": 1.5}, r"'threshold' = 1\.5"),
    ("guard", "ocr_toxicity", {"threshold": -0.1}, r"'threshold' = -0\.1"),
    ("embedder", "efficientnet_lite0", {"resize_size": 200}, r"'resize_size' = 200: input should be greater than or equal to 224"),
    ("source", "demo", {"seed": 3}, r"unknown parameter 'seed' \(value 3\); it takes no parameters"),
])
def test_a_bad_parameter_names_the_file_the_profile_the_value_and_the_fix(role, implementation, params, match):
    from sp_assets.backends.profiles import Profile

    profile = Profile(role=role, name="mine", implementation=implementation, params=params,
                      source_file=f"/deploy/{role}s.yaml")
    with pytest.raises(ProfileError, match=match) as err:
        registry.check_profile_params(profile)
    assert str(err.value).startswith(f"/deploy/{role}s.yaml: {role} profile 'mine' (implementation {implementation!r}): ")


def test_your_own_backend_may_declare_params(tmp_path, monkeypatch):
    """A class of your own with a Params model is checked like a built-in; one without is built as before."""
    (tmp_path / "my_param_guards.py").write_text(
        "from sp_assets.backends.guards.open_nsfw import OpenNSFWGuard\n"
        "from sp_assets.backends.profiles import ProfileParams\n"
        "class Strict(OpenNSFWGuard):\n"
        "    class Params(ProfileParams):\n"
        "        threshold: float = 0.5\n"
        "class Loose(OpenNSFWGuard):\n"
        "    def __init__(self, x=0):\n"
        "        super().__init__()\n")
    (tmp_path / "guards.yaml").write_text("strict:\n  implementation: my_param_guards:Strict\n  params: {threshold: 0.4, x: 1}\n"
                                          "loose:\n  implementation: my_param_guards:Loose\n  params: {x: 1}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("SP_PROFILES_DIR", str(tmp_path))
    with pytest.raises(ProfileError, match=r"guards\.yaml: guard profile 'strict' .*unknown parameter 'x'"):
        registry.check_profile_params(get_profile("guard", "strict"))
    registry.check_profile_params(get_profile("guard", "loose"))  # none of its own: its constructor decides
