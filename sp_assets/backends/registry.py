"""Which class runs each profile ``implementation``, and a once-per-process model cache.

Profiles name an implementation; this table maps the name to a factory. Imports are lazy, so a
profile that needs a heavy library only imports it when chosen. Loaded backends are cached by
(role, resolved config hash, policy hash): a single-run backfill over many categories, and several
stages in one in-process run, load each model once. ``LOAD_COUNTS`` counts real loads.
"""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any, Callable

from sp_assets.backends.base import Backend
from sp_assets.core.policy import Policy
from sp_assets.backends.profiles import Profile, ProfileError, get_profile
from sp_assets.core.hashing import sha256_json

Factory = Callable[[Profile, Policy], Backend]

# Bump an implementation's version when a code change alters its output: it changes the
# config hash, so cached edits and stored rows made by the old code are not mistaken for new ones.
CODE_VERSIONS: dict[str, str] = {
    "scene_text": "1",
    "manifest": "1",
    "template": "1",
    "text_region": "1",
    "efficientnet_lite0": "1",
    "open_nsfw": "1",
    "judge": "1",
    "diffusers": "1",
    "vlm": "1",
    "shieldgemma2": "1",
    "clip": "1",
    "demo": "1",
    "folder": "1",
}


def _scene_text(profile: Profile, policy: Policy) -> Backend:
    from sp_assets.backends.judges.scene_text import SceneTextJudge

    return SceneTextJudge(policy, **profile.params)


def _manifest(profile: Profile, policy: Policy) -> Backend:
    from sp_assets.backends.judges.manifest import ManifestJudge

    return ManifestJudge(policy, **profile.params)


def _template(profile: Profile, policy: Policy) -> Backend:
    from sp_assets.backends.writers.template import TemplateWriter

    return TemplateWriter(**profile.params)


def _text_region(profile: Profile, policy: Policy) -> Backend:
    from sp_assets.backends.editors.text_region import TextRegionEditor

    return TextRegionEditor(**profile.params)


def _efficientnet_lite0(profile: Profile, policy: Policy) -> Backend:
    from sp_assets.backends.embedders.efficientnet import EfficientNetLite0Embedder

    return EfficientNetLite0Embedder(**profile.params)


def _open_nsfw(profile: Profile, policy: Policy) -> Backend:
    from sp_assets.backends.guards.open_nsfw import OpenNSFWGuard

    return OpenNSFWGuard(**profile.params)


def _diffusers(profile: Profile, policy: Policy) -> Backend:
    from sp_assets.backends.editors.diffusers_pipeline import DiffusersEditor

    return DiffusersEditor(profile_name=profile.name, **profile.params)


def _vlm_judge(profile: Profile, policy: Policy) -> Backend:
    from sp_assets.backends.judges.vlm import VLMJudge

    return VLMJudge(policy, profile_name=profile.name, **profile.params)


def _shieldgemma2(profile: Profile, policy: Policy) -> Backend:
    from sp_assets.backends.judges.shieldgemma2 import ShieldGemma2Judge

    return ShieldGemma2Judge(policy, profile_name=profile.name, **profile.params)


def _vlm_writer(profile: Profile, policy: Policy) -> Backend:
    from sp_assets.backends.writers.vlm import VLMWriter

    return VLMWriter(policy, profile_name=profile.name, **profile.params)


def _clip(profile: Profile, policy: Policy) -> Backend:
    from sp_assets.backends.embedders.clip import CLIPEmbedder

    return CLIPEmbedder(profile_name=profile.name, **profile.params)


def _demo(profile: Profile, policy: Policy) -> Backend:
    from sp_assets.backends.sources.demo import DemoSource

    return DemoSource(policy, **profile.params)


def _folder(profile: Profile, policy: Policy) -> Backend:
    from sp_assets.backends.sources.folder import FolderSource

    return FolderSource(policy, **profile.params)


def _judge_as_guard(profile: Profile, policy: Policy) -> Backend:
    return build(judge_of(profile), policy)


FACTORIES: dict[str, dict[str, Factory]] = {
    "source": {"demo": _demo, "folder": _folder},
    "judge": {"scene_text": _scene_text, "manifest": _manifest, "vlm": _vlm_judge, "shieldgemma2": _shieldgemma2},
    "writer": {"template": _template, "vlm": _vlm_writer},
    "editor": {"text_region": _text_region, "diffusers": _diffusers},
    "embedder": {"efficientnet_lite0": _efficientnet_lite0, "clip": _clip},
    "guard": {"open_nsfw": _open_nsfw, "judge": _judge_as_guard},
}


def judge_of(profile: Profile) -> Profile:
    """The judge profile a guard of implementation 'judge' evaluates (its ``judge_profile``)."""
    name = profile.extra.get("judge_profile")
    if not name:
        raise ProfileError(f"{profile.source_file}: guard {profile.name!r} of kind 'judge' needs 'judge_profile'.")
    return get_profile("judge", str(name))


def config_sha256(profile: Profile) -> str:
    """Hash of the profile's fully resolved config, known before any model loads.

    A judge evaluated as a guard has its judge's hash: the same model gives the same answers, so its
    stored verdicts can be reused.
    """
    if profile.role == "guard" and profile.implementation == "judge":
        return config_sha256(judge_of(profile))
    return sha256_json(profile.resolved(CODE_VERSIONS.get(profile.implementation, "")))


_CACHE: dict[tuple[str, str, str], Backend] = {}
_LOCK = threading.Lock()
LOAD_COUNTS: Counter[str] = Counter()


def build(profile: Profile, policy: Policy) -> Backend:
    """Load (or reuse) the backend a profile names."""
    factories = FACTORIES.get(profile.role, {})
    factory = factories.get(profile.implementation)
    if factory is None:
        raise ProfileError(
            f"{profile.source_file}: {profile.role} profile {profile.name!r} names implementation "
            f"{profile.implementation!r}, which does not exist; choose one of {', '.join(factories)}."
        )
    if factory is _judge_as_guard:
        return factory(profile, policy)  # cached under the judge's own key
    key = (profile.role, config_sha256(profile), policy.sha256)
    with _LOCK:
        backend = _CACHE.get(key)
        if backend is None:
            try:
                backend = factory(profile, policy)
            except TypeError as exc:
                raise ProfileError(
                    f"{profile.source_file}: {profile.role} profile {profile.name!r} has parameters "
                    f"its implementation does not accept ({exc}); check 'params'."
                ) from exc
            _CACHE[key] = backend
            LOAD_COUNTS[f"{profile.role}:{profile.name}"] += 1
    return backend


def clear_cache() -> None:
    """Drop every loaded backend (tests, or to free memory between runs)."""
    with _LOCK:
        for backend in _CACHE.values():
            backend.close()
        _CACHE.clear()


def describe(profile: Profile) -> dict[str, Any]:
    return {
        "profile": profile.name,
        "implementation": profile.implementation,
        "config_sha256": config_sha256(profile),
    }
