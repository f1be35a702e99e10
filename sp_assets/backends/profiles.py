"""Backend profiles as data: read ``resources/<role>s.yaml``, resolve a named profile, hash it.

A profile's hash covers everything that can change its output (implementation, parameters, the
implementation's code version), so rows made under different settings never share a key. The hash is
taken over ``params`` as written in the file: a backend's ``Params`` model (a ``ProfileParams``) checks
them, and its defaults are never written into the hash, so adding a parameter with a default does not
change the hash of a profile that leaves it out.
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from sp_assets.core.policy import REPO_ROOT

ROLES = ("source", "judge", "writer", "editor", "embedder", "guard")
PROFILES_DIR_ENV_VAR = "SP_PROFILES_DIR"


class ProfileError(ValueError):
    """A profile that cannot be used; the message names the file, the profile and the fix."""


class ProfileParams(BaseModel):
    """A backend's profile parameters: one typed field per keyword its constructor takes, with the same
    default and its limits. Strict (a quoted number or ``true`` is not a number) and closed (a name the
    backend does not take is refused), so a typo stops the run instead of being ignored."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


@dataclass(frozen=True)
class Profile:
    role: str
    name: str
    implementation: str
    params: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    source_file: str = ""
    # (component, licence) pairs: what the benchmark's datasheet says about the profile's terms.
    # Not part of the resolved config: a licence note does not change any output.
    licences: tuple[tuple[str, str], ...] = ()
    # What a worker running the profile needs (num_cpus, num_gpus): where it runs, not what it computes,
    # so not part of the resolved config either.
    resources: dict[str, float] = field(default_factory=dict)
    # Python packages (import names) the profile needs beyond the base install, e.g. torchvision; checked
    # before its backend is built. What the machine must have, not what the profile computes: not hashed.
    requires: tuple[str, ...] = ()
    # Where a model server runs and how to reach it (base_url, the name of the environment variable holding
    # its key, requests in flight, timeouts, retries): the same model behind another URL gives the same
    # answers, so none of it is hashed (and the key itself is never in a profile at all).
    server: dict[str, Any] = field(default_factory=dict)

    def resolved(self, code_version: str = "") -> dict[str, Any]:
        """The fully resolved config: what gets hashed and recorded."""
        return {
            "role": self.role,
            "name": self.name,
            "implementation": self.implementation,
            "implementation_version": code_version,
            "params": self.params,
            **({"extra": self.extra} if self.extra else {}),
        }


def profiles_dirs() -> list[Path]:
    """The folders profiles are read from, in order: ``SP_PROFILES_DIR`` may name several (separated by
    ``os.pathsep``); a profile in a later folder adds to, or replaces, one of the same name before it."""
    raw = os.environ.get(PROFILES_DIR_ENV_VAR, "").strip()
    if not raw:
        return [REPO_ROOT / "resources"]
    return [Path(p).expanduser().resolve() for p in raw.split(os.pathsep) if p.strip()]


def load_profiles(role: str, directory: Path | None = None) -> dict[str, Profile]:
    if role not in ROLES:
        raise ProfileError(f"unknown role {role!r}; roles are {', '.join(ROLES)}")
    folders = [directory] if directory else profiles_dirs()
    files = [d / f"{role}s.yaml" for d in folders if (d / f"{role}s.yaml").is_file()]
    if not files:
        raise ProfileError(f"{folders[-1] / f'{role}s.yaml'}: profile file for {role}s not found; create it or set "
                           f"{PROFILES_DIR_ENV_VAR}.")
    raw: dict[str, tuple[Path, dict[str, Any]]] = {}
    for path in files:
        raw.update(_read_file(path))
    return {name: _build(role, name, path, _extended(raw, name)) for name, (path, _) in raw.items()}


def _read_file(path: Path) -> dict[str, tuple[Path, dict[str, Any]]]:
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ProfileError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(doc, dict):
        raise ProfileError(f"{path}: expected a mapping of profile name -> settings.")
    out = {}
    for name, entry in doc.items():
        if not isinstance(entry, dict):
            raise ProfileError(f"{path}: profile {name!r} must be a mapping with 'implementation' and 'params'.")
        if not isinstance(entry.get("params") or {}, dict):
            raise ProfileError(f"{path}: profile {name!r} 'params' must be a mapping, got {entry['params']!r}.")
        out[str(name)] = (path, dict(entry))
    return out


def _extended(raw: dict[str, tuple[Path, dict[str, Any]]], name: str, seen: tuple[str, ...] = ()) -> dict[str, Any]:
    """A profile's entry with ``extends: <other profile>`` resolved: the other profile's settings, then this
    one's on top (``params`` merged key by key), e.g. a cluster profile that only adds num_gpus and a device."""
    path, entry = raw[name]
    base_name = entry.get("extends")
    if base_name is None:
        return dict(entry)
    if base_name not in raw or base_name in (*seen, name):
        why = "a cycle of extends" if base_name in raw else f"no profile of that name (defined: {', '.join(raw)})"
        raise ProfileError(f"{path}: profile {name!r} extends {base_name!r}: {why}; fix 'extends'.")
    base = _extended(raw, str(base_name), (*seen, name))
    merged = {**base, **{k: v for k, v in entry.items() if k != "extends"}}
    for key in ("params", "server"):
        merged[key] = {**(base.get(key) or {}), **(entry.get(key) or {})}
    return merged


def _build(role: str, name: str, path: Path, entry: dict[str, Any]) -> Profile:
    """A Profile from its (extended) entry, every field checked."""
    entry = dict(entry)
    implementation = entry.pop("implementation", None)
    if role == "guard" and entry.get("kind") == "judge":
        implementation = implementation or "judge"
    if not implementation:
        raise ProfileError(f"{path}: profile {name!r} has no 'implementation'; name a backend.")
    params = entry.pop("params", None) or {}
    description = " ".join(str(entry.pop("description", "")).split())
    licences = _licences(entry.pop("licences", None) or [], path, str(name))
    resources = _resources(entry, path, str(name))
    requires = _requires(entry.pop("requires", None) or [], path, str(name))
    server = entry.pop("server", None) or {}
    if not isinstance(server, dict):
        raise ProfileError(f"{path}: profile {name!r} 'server' must be a mapping (base_url, api_key_env, ...), "
                           f"got {server!r}.")
    return Profile(
        role=role,
        name=str(name),
        implementation=str(implementation),
        params=params,
        description=description,
        extra=entry,
        source_file=str(path),
        licences=licences,
        resources=resources,
        requires=requires,
        server=server,
    )


def _licences(raw: Any, path: Path, name: str) -> tuple[tuple[str, str], ...]:
    ok = isinstance(raw, list) and all(isinstance(e, dict) and {"component", "licence"} <= set(e) for e in raw)
    if not ok:
        raise ProfileError(f"{path}: profile {name!r} 'licences' must be a list of {{component: ..., licence: ...}} "
                           f"entries, got {raw!r}.")
    return tuple((str(e["component"]), str(e["licence"])) for e in raw)


def _requires(raw: Any, path: Path, name: str) -> tuple[str, ...]:
    ok = isinstance(raw, list) and all(isinstance(e, str) and all(p.isidentifier() for p in e.split("."))
                                       for e in raw)
    if not ok:
        raise ProfileError(f"{path}: profile {name!r} 'requires' must be a list of Python module names "
                           f"(for example [torchvision]), got {raw!r}.")
    return tuple(raw)


RESOURCE_KEYS = ("num_cpus", "num_gpus")


def _resources(entry: dict[str, Any], path: Path, name: str) -> dict[str, float]:
    out = {}
    for key in RESOURCE_KEYS:
        if key in entry:
            value = entry.pop(key)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
                raise ProfileError(f"{path}: profile {name!r} {key} must be a number >= 0, got {value!r}.")
            out[key] = float(value)
    return out


def get_profile(role: str, name: str, directory: Path | None = None) -> Profile:
    profiles = load_profiles(role, directory)
    if name not in profiles:
        raise ProfileError(
            f"{role} profile {name!r} is not defined in "
            f"{', '.join(str(d / f'{role}s.yaml') for d in ([directory] if directory else profiles_dirs()))}; "
            f"defined profiles: {', '.join(profiles) or '(none)'}."
        )
    return profiles[name]


def check_params(profile: Profile, model: type[BaseModel]) -> None:
    """Check ``profile.params`` against a backend's ``Params`` model; a ``ProfileError`` names the file, the
    profile, each parameter at fault, its value and the fix. The params themselves are left as written."""
    try:
        model.model_validate(profile.params)
    except ValidationError as exc:
        problems = "; ".join(_problem(error, model) for error in exc.errors())
        raise ProfileError(f"{profile.source_file}: {profile.role} profile {profile.name!r} "
                           f"(implementation {profile.implementation!r}): {problems}.") from None


def _problem(error: Any, model: type[BaseModel]) -> str:
    """One pydantic error in the words of a profile file."""
    name = ".".join(str(part) for part in error["loc"]) or "params"
    known = list(model.model_fields)
    if error["type"] == "extra_forbidden":
        close = difflib.get_close_matches(name, known, n=1)
        return (f"unknown parameter {name!r} (value {error['input']!r}); "
                f"{'did you mean ' + repr(close[0]) + '? ' if close else ''}"
                f"it takes {', '.join(known) or 'no parameters'}. Fix: rename or remove it under params")
    if error["type"] == "missing":
        return f"parameter {name!r} is required. Fix: set it under params"
    why = error["msg"].removeprefix("Value error, ")
    return f"parameter {name!r} = {error['input']!r}: {why[0].lower() + why[1:]}. Fix: change it under params"
