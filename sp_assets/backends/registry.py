"""Which class runs each profile ``implementation``, and a once-per-process model cache.

A profile's ``implementation`` is a built-in name (``FACTORIES``), the name an installed package registers in
the entry-point group ``safetypairs.<role>s`` (for example ``safetypairs.guards``), or an import path
``package.module:Class`` of your own subclass of the role's interface (``Guard``, ``Judge``, ``Editor``,
``InstructionWriter``, ``Embedder``, ``Source``). Your class gets the profile's ``params`` as keyword
arguments, and also ``policy`` / ``profile_name`` where its ``__init__`` names them. Every built-in class
declares its parameters as a ``Params`` model (a ``profiles.ProfileParams``), checked here before the
backend is built; your class may declare one too. Its qualified name and
its package's version (or, for a module outside any installed package, its source file's sha256) are part of
the profile's config hash, so rows made by another version of your code never share a key.

Loaded backends are cached by (role, resolved config hash, policy hash): a single-run backfill over many
categories, and several stages in one in-process run, load each model once. ``LOAD_COUNTS`` counts real loads.
"""

from __future__ import annotations

import importlib
import inspect
import sys
import threading
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from sp_assets.backends.base import Backend, Editor, Embedder, Guard, InstructionWriter, Judge, Source
from sp_assets.backends.common.packages import check_packages
from sp_assets.core.policy import Policy
from sp_assets.backends.profiles import Profile, ProfileError, check_params, get_profile
from sp_assets.core.hashing import sha256_json

# Bump an implementation's version when a code change alters its output: it changes the
# config hash, so cached edits and stored rows made by the old code are not mistaken for new ones.
CODE_VERSIONS: dict[str, str] = {
    "scene_text": "2",
    "manifest": "1",
    "template": "2",
    "text_region": "1",
    "efficientnet_lite0": "1",
    "open_nsfw": "1",
    "ocr_toxicity": "1",
    "ocr_blocklist": "1",
    "judge": "1",
    "diffusers": "1",
    "vlm": "1",
    "shieldgemma2": "2",  # 2: custom policies written in the built-in definitions' form
    "clip": "1",
    "demo": "1",
    "folder": "1",
    "openai_server": "1",
}


@dataclass(frozen=True)
class Factory:
    """Builds one implementation from a profile. The class is imported only when it is needed, so a
    profile that needs a heavy library imports it only when chosen."""

    target: str  # "module:Class"
    takes_policy: bool = False
    takes_profile_name: bool = False
    takes_server: bool = False  # the profile's ``server`` section (where a model server runs; not hashed)
    takes_profile_file: bool = False  # the profile file's path, for messages that name it

    def cls(self) -> type:
        module, name = self.target.split(":")
        return getattr(importlib.import_module(module), name)

    def __call__(self, profile: Profile, policy: Policy | None) -> Backend:
        args = [policy] if self.takes_policy else []
        kwargs: dict[str, Any] = {"profile_name": profile.name} if self.takes_profile_name else {}
        if self.takes_server:
            kwargs["server"] = dict(profile.server)
        if self.takes_profile_file:
            kwargs["profile_file"] = profile.source_file
        return self.cls()(*args, **kwargs, **profile.params)


_B = "sp_assets.backends."
# A model behind an OpenAI-compatible server (vLLM, SGLang): it gets the profile's unhashed ``server`` section.
_SERVED = {"takes_policy": True, "takes_profile_name": True, "takes_server": True, "takes_profile_file": True}
FACTORIES: dict[str, dict[str, Factory]] = {
    "source": {"demo": Factory(_B + "sources.demo:DemoSource", takes_policy=True),
               "folder": Factory(_B + "sources.folder:FolderSource", takes_policy=True)},
    "judge": {"scene_text": Factory(_B + "judges.scene_text:SceneTextJudge", takes_policy=True),
              "manifest": Factory(_B + "judges.manifest:ManifestJudge", takes_policy=True),
              "vlm": Factory(_B + "judges.vlm:VLMJudge", takes_policy=True, takes_profile_name=True),
              "shieldgemma2": Factory(_B + "judges.shieldgemma2:ShieldGemma2Judge", takes_policy=True,
                                      takes_profile_name=True),
              "openai_server": Factory(_B + "judges.openai_server:ServerJudge", **_SERVED)},
    "writer": {"template": Factory(_B + "writers.template:TemplateWriter"),
               "vlm": Factory(_B + "writers.vlm:VLMWriter", takes_policy=True, takes_profile_name=True),
               "openai_server": Factory(_B + "writers.openai_server:ServerWriter", **_SERVED)},
    "editor": {"text_region": Factory(_B + "editors.text_region:TextRegionEditor"),
               "diffusers": Factory(_B + "editors.diffusers_pipeline:DiffusersEditor", takes_profile_name=True)},
    "embedder": {"efficientnet_lite0": Factory(_B + "embedders.efficientnet:EfficientNetLite0Embedder"),
                 "clip": Factory(_B + "embedders.clip:CLIPEmbedder", takes_profile_name=True)},
    "guard": {"open_nsfw": Factory(_B + "guards.open_nsfw:OpenNSFWGuard"),
              "ocr_toxicity": Factory(_B + "guards.text_toxicity:TextToxicityGuard"),
              "ocr_blocklist": Factory(_B + "guards.blocklist:BlocklistGuard"),
              "openai_server": Factory(_B + "judges.openai_server:ServerGuard", **_SERVED)},
}
JUDGE_AS_GUARD = "judge"  # a guard profile of this implementation evaluates a judge profile


def runs(profile: Profile) -> Profile:
    """The profile whose backend runs for ``profile``: itself, or for a guard of implementation 'judge', the
    judge profile it evaluates (its ``judge_profile``), so the judge's answers serve as the guard's."""
    if profile.role != "guard" or profile.implementation != JUDGE_AS_GUARD:
        return profile
    name = profile.extra.get("judge_profile")
    if not name:
        raise ProfileError(f"{profile.source_file}: guard {profile.name!r} of kind 'judge' needs 'judge_profile'.")
    return get_profile("judge", str(name))


# The interface a class of each role must implement (a profile naming your own class is checked against it).
INTERFACES: dict[str, type] = {"source": Source, "judge": Judge, "writer": InstructionWriter, "editor": Editor,
                               "embedder": Embedder, "guard": Guard}
ENTRY_POINT_GROUP = "safetypairs.{role}s"  # e.g. [project.entry-points."safetypairs.guards"] my_guard = "pkg.mod:Cls"


def _factory(profile: Profile) -> Factory:
    factories = FACTORIES.get(profile.role, {})
    factory = factories.get(profile.implementation)
    if factory is not None:
        return factory
    target = profile.implementation if ":" in profile.implementation else _entry_points(profile.role).get(
        profile.implementation)
    if target is None:
        registered = sorted(_entry_points(profile.role))
        raise ProfileError(
            f"{profile.source_file}: {profile.role} profile {profile.name!r} names implementation "
            f"{profile.implementation!r}, which does not exist; choose one of "
            f"{', '.join([*factories, *([JUDGE_AS_GUARD] if profile.role == 'guard' else []), *registered])}, "
            f"or give the import path of your own {INTERFACES[profile.role].__name__} subclass "
            "('package.module:Class')."
        )
    return _user_factory(profile, target)


def _entry_points(role: str) -> dict[str, str]:
    """name -> 'module:Class' registered by installed packages for a role."""
    return {ep.name: ep.value for ep in metadata.entry_points(group=ENTRY_POINT_GROUP.format(role=role))}


def _user_factory(profile: Profile, target: str) -> Factory:
    """A Factory for your own class, after checking that it imports and implements the role's interface."""
    where = f"{profile.source_file}: {profile.role} profile {profile.name!r}"
    module, _, name = target.partition(":")
    try:
        cls = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise ProfileError(f"{where} names {target!r}, which does not import here ({type(exc).__name__}: {exc}). "
                           "Fix: install its package, or put the folder that holds the module on PYTHONPATH.") from exc
    interface = INTERFACES[profile.role]
    if not (isinstance(cls, type) and issubclass(cls, interface)):
        raise ProfileError(f"{where} names {target!r}, which is not a subclass of "
                           f"sp_assets.backends.base.{interface.__name__}; subclass it and implement its methods.")
    takes = inspect.signature(cls.__init__).parameters
    return Factory(target, takes_policy="policy" in takes, takes_profile_name="profile_name" in takes,
                   takes_server="server" in takes, takes_profile_file="profile_file" in takes)


def code_version(profile: Profile) -> str:
    """What version of the code runs a profile: the built-in's ``CODE_VERSIONS`` entry, or for your own class
    its qualified name and its package's version (a module outside any package: its source file's sha256)."""
    if profile.implementation in FACTORIES.get(profile.role, {}):
        return CODE_VERSIONS.get(profile.implementation, "")
    cls = _factory(profile).cls()
    return f"{cls.__module__}:{cls.__qualname__}@{_package_version(cls)}"


def _package_version(cls: type) -> str:
    top = cls.__module__.split(".")[0]
    for dist in metadata.packages_distributions().get(top, []):
        return f"{dist} {metadata.version(dist)}"
    source = getattr(sys.modules.get(cls.__module__), "__file__", None)
    return f"source sha256 {_source_sha256(source)}" if source else "unversioned"


@lru_cache(maxsize=64)
def _source_sha256(path: str) -> str:
    from sp_assets.core.hashing import sha256_file

    return sha256_file(Path(path))


def backend_class(profile: Profile) -> type:
    """The class that runs a profile, without building it (a judge-guard: its judge's class)."""
    return _factory(runs(profile)).cls()


def config_sha256(profile: Profile) -> str:
    """Hash of the profile's fully resolved config, known before any model loads.

    A judge evaluated as a guard has its judge's hash: the same model gives the same answers, so its
    stored verdicts can be reused.
    """
    profile = runs(profile)
    return sha256_json(profile.resolved(code_version(profile)))


def params_model(profile: Profile) -> type[BaseModel] | None:
    """The ``Params`` model of the class that runs a profile (a judge-guard: its judge's); None for a class of
    your own that declares none. Only the class's own counts: a subclass of a built-in backend that takes
    other parameters is not held to its parent's."""
    model = vars(backend_class(profile)).get("Params")
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None


def check_profile_params(profile: Profile) -> None:
    """Stop, before anything loads, when a profile's ``params`` do not fit its backend's ``Params``: a
    ``ProfileError`` naming the file, the profile, the parameter, its value and the fix."""
    resolved = runs(profile)
    model = params_model(resolved)
    if model is not None:
        check_params(resolved, model)


def check_requirements(profile: Profile) -> None:
    """Stop, before anything loads, when a package the profile ``requires`` does not import here.

    Raises ``MissingPackageError`` (an ImportError) naming the profile, its file, the package and the
    command that installs it. A judge evaluated as a guard needs what its judge needs.
    """
    resolved = runs(profile)
    if resolved.requires:
        check_packages(f"{resolved.role} profile {resolved.name!r} ({resolved.source_file})", resolved.requires)


_CACHE: dict[tuple[str, str, str], Backend] = {}
_LOCK = threading.Lock()
LOAD_COUNTS: Counter[str] = Counter()


def build(profile: Profile, policy: Policy) -> Backend:
    """Load (or reuse) the backend a profile names."""
    profile = runs(profile)  # a judge-guard is cached under its judge's own key
    factory = _factory(profile)
    key = (profile.role, config_sha256(profile), policy.sha256)
    with _LOCK:
        backend = _CACHE.get(key)
        if backend is None:
            check_profile_params(profile)
            check_requirements(profile)
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


def build_reader(profile: Profile, policy: Policy) -> Any:
    """What reads images for a two-step profile: its light reader when the class has one (cached by the
    reading's key, so profiles that read alike share it), else the whole backend."""
    resolved = runs(profile)
    cls = backend_class(resolved)
    maker = getattr(cls, "make_reader", None)
    if maker is None:
        return build(profile, policy)
    key = ("reader", sha256_json(cls.reader_key(resolved.params)), "")
    with _LOCK:
        reader = _CACHE.get(key)
    if reader is None:
        check_profile_params(resolved)
        check_requirements(resolved)
        reader = maker(resolved.params)
        if reader is None:
            return build(profile, policy)
        with _LOCK:
            reader = _CACHE.setdefault(key, reader)
            LOAD_COUNTS[f"reader:{resolved.name}"] += 1
    return reader


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
