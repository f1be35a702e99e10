"""Backends from the user's own code: a profile names ``module:Class`` (or an entry point of an installed
package), the class is checked against the role's interface, and its name and version are in the config
hash. The guard is the README's own example, taken from the README."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import yaml
from PIL import Image

from sp_assets.backends import registry
from sp_assets.backends.profiles import ProfileError, get_profile
from sp_assets.core.policy import REPO_ROOT, load_active_policy

README = REPO_ROOT / "README.md"
POLICY = load_active_policy()


def _readme_guard() -> str:
    block = re.search(r"<!-- own-guard:start -->\n```python\n(.*?)```\n<!-- own-guard:end -->", README.read_text(), re.S)
    assert block, "README lost its own-guard example"
    return block.group(1)


@pytest.fixture
def own_code(tmp_path, monkeypatch):
    """A folder outside the package holding the README's guard, and a profile folder naming it."""
    code = tmp_path / "my_code"
    code.mkdir()
    (code / "my_guards.py").write_text(_readme_guard())
    (code / "not_a_guard.py").write_text("class Nothing:\n    pass\n")
    profiles = tmp_path / "my_profiles"
    profiles.mkdir()
    (profiles / "guards.yaml").write_text(yaml.safe_dump({
        "red_sign": {"implementation": "my_guards:RedSignGuard", "params": {"share": 0.05}},
        "not_a_guard": {"implementation": "not_a_guard:Nothing"},
        "missing": {"implementation": "no_such_module_here:Guard"},
    }))
    monkeypatch.syspath_prepend(str(code))
    monkeypatch.setenv("SP_PROFILES_DIR", f"{REPO_ROOT / 'resources'}:{profiles}")
    for name in ("my_guards", "not_a_guard"):
        monkeypatch.delitem(__import__("sys").modules, name, raising=False)
    registry._source_sha256.cache_clear()
    return code


def test_a_guard_from_a_folder_outside_the_package_loads_and_rates(own_code):
    profile = get_profile("guard", "red_sign")
    guard = registry.build(profile, POLICY)
    assert type(guard).__name__ == "RedSignGuard" and guard.share == 0.05
    red, grey = Image.new("RGB", (32, 32), (220, 20, 20)), Image.new("RGB", (32, 32), (120, 120, 120))
    [a, b] = guard.predict([red, grey], POLICY.categories[0])
    assert (a.rating, b.rating) == ("unsafe", "safe") and a.score == 1.0 and b.score == 0.0
    assert get_profile("guard", "open_nsfw")  # the shipped profiles are still there beside the user's


def test_the_config_hash_names_the_class_and_the_version_of_its_code(own_code):
    profile = get_profile("guard", "red_sign")
    version = registry.code_version(profile)
    assert version.startswith("my_guards:RedSignGuard@source sha256 ")
    before = registry.config_sha256(profile)
    (own_code / "my_guards.py").write_text(_readme_guard() + "\n# a changed line\n")
    registry._source_sha256.cache_clear()
    assert registry.config_sha256(profile) != before  # rows of the edited code never share a key


def test_a_class_that_is_not_a_guard_or_does_not_import_stops_with_the_fix(own_code):
    with pytest.raises(ProfileError, match=r"guards\.yaml: guard profile 'not_a_guard' .* not a subclass of "
                                           r"sp_assets\.backends\.base\.Guard"):
        registry.build(get_profile("guard", "not_a_guard"), POLICY)
    with pytest.raises(ProfileError, match=r"'missing' names 'no_such_module_here:Guard', which does not import "
                                           r".*PYTHONPATH"):
        registry.backend_class(get_profile("guard", "missing"))


def test_an_installed_package_registers_a_guard_by_entry_point(tmp_path, monkeypatch):
    site = tmp_path / "site"
    (site / "ep_guards").mkdir(parents=True)
    (site / "ep_guards" / "__init__.py").write_text(_readme_guard())
    info = site / "ep_guards-1.2.3.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: ep-guards\nVersion: 1.2.3\n")
    (info / "top_level.txt").write_text("ep_guards\n")
    (info / "entry_points.txt").write_text("[safetypairs.guards]\nred_sign_ep = ep_guards:RedSignGuard\n")
    profiles = tmp_path / "profiles"
    shutil.copytree(REPO_ROOT / "resources", profiles)
    guards = yaml.safe_load((profiles / "guards.yaml").read_text())
    guards["installed"] = {"implementation": "red_sign_ep"}
    (profiles / "guards.yaml").write_text(yaml.safe_dump(guards))
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("SP_PROFILES_DIR", str(profiles))
    profile = get_profile("guard", "installed")
    assert registry.code_version(profile) == "ep_guards:RedSignGuard@ep-guards 1.2.3"
    assert type(registry.build(profile, POLICY)).__name__ == "RedSignGuard"


def test_an_unknown_implementation_lists_the_choices_and_the_import_path_form(tmp_path, monkeypatch):
    profiles = tmp_path / "profiles"
    shutil.copytree(REPO_ROOT / "resources", profiles)
    guards = yaml.safe_load((profiles / "guards.yaml").read_text())
    guards["typo"] = {"implementation": "open_nsfww"}
    (profiles / "guards.yaml").write_text(yaml.safe_dump(guards))
    monkeypatch.setenv("SP_PROFILES_DIR", str(profiles))
    with pytest.raises(ProfileError, match=r"open_nsfww.*open_nsfw.*'package\.module:Class'"):
        registry.backend_class(get_profile("guard", "typo"))


@pytest.mark.full
def test_guard_metrics_evaluates_the_users_guard(own_code, shared_graph, tmp_path):
    from tests.conftest import SHARED_RANGE, run_graph, store_at

    data = shared_graph.copy_to(tmp_path)
    run_graph(data, *SHARED_RANGE, selection=["guard_metrics"], guards=["red_sign", "open_nsfw"])
    rows = store_at(data).query("SELECT guard, guard_config_sha256, n_pairs FROM guard_metrics "
                                "WHERE guard = 'red_sign'").rows()
    assert rows and all(sha == registry.config_sha256(get_profile("guard", "red_sign")) for _, sha, _ in rows)
    assert sum(n for *_, n in rows) > 0
