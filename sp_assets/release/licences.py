"""The datasheet's licence facts, read from data: each profile's ``licences`` and the demo photographs' statements."""

from __future__ import annotations

from typing import Mapping

from sp_assets.backends.profiles import Profile, ProfileError, get_profile
from sp_assets.backends.sources.photos import demo_photos
from sp_assets.release.inputs import ExportInputs

NOT_RECORDED = "not recorded by the pipeline: see the model card"
GUARD_USE = "evaluated as a guard (not used to build pairs)"
ROLE_USES = {"judge": "judged sources", "writer": "wrote instructions", "editor": "made the edits"}


def _profile(role: str, name: str) -> Profile | None:
    """The profile as defined now; None for a name the profile files do not define (a built-in baseline)."""
    try:
        return get_profile(role, name)
    except ProfileError:
        return None


def profile_licences(role: str, name: str) -> list[tuple[str, str]]:
    """(component, licence) of a profile, from its ``licences``; one "not recorded" row where it has none."""
    profile = _profile(role, name)
    if profile is not None and profile.licences:
        return list(profile.licences)
    implementation = (profile.implementation if profile else "") or name
    return [(f"{role} profile `{name}` ({implementation})", NOT_RECORDED)]


class _LicenceTable:
    """(what it did, component, licence) rows, each component listed once per use."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, str, str]] = []
        self._seen: set[tuple[str, str]] = set()

    def _append(self, use: str, component: str, licence: str) -> None:
        if (component, use) not in self._seen:
            self._seen.add((component, use))
            self.rows.append((use, component, licence))

    def add(self, use: str, role: str, name: str) -> None:
        for component, licence in profile_licences(role, name):
            self._append(use, component, licence)

    def add_guard(self, name: str) -> None:
        """A guard's terms; a judge evaluated as a guard has its judge's, listed here only if not listed yet."""
        profile = _profile("guard", name)
        judge = profile.extra.get("judge_profile") if profile and profile.implementation == "judge" else None
        if not judge:
            self.add(GUARD_USE, "guard", name)
            return
        listed = {component for component, _ in self._seen}  # usually the judge that built the pairs
        for component, licence in profile_licences("judge", str(judge)):
            if component not in listed:
                self._append(GUARD_USE, component, licence)


def licence_rows(inputs: ExportInputs) -> list[tuple[str, str, str]]:
    """(what it did, component, licence) for every model and source behind the exported pairs."""
    table = _LicenceTable()
    for p in inputs.profiles_used:
        table.add(ROLE_USES[p["role"]], p["role"], p["profile"])
    for v in inputs.verify_configs:
        if v.get("verifier_profile"):
            table.add("verified the edits", "judge", v["verifier_profile"])
        if v.get("embedder_profile"):
            table.add("measured preservation", "embedder", v["embedder_profile"])
    for guard in inputs.guards:
        table.add_guard(guard)
    return table.rows


def photo_rows(photos_used: Mapping[str, int]) -> list[tuple[str, str, str, int]]:
    """(photo, skimage.data function, licence statement, sources) for the demo photographs behind the pairs."""
    known = demo_photos()
    rows = []
    for key, n in photos_used.items():
        photo = known.get(key)
        if photo is None:
            rows.append((key, f"skimage.data.{key}", "not in demo_photos.yaml: check skimage.data", n))
        else:
            rows.append((key, f"skimage.data.{photo.skimage}", photo.licence, n))
    return rows
