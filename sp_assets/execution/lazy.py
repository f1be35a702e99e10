"""Backends loaded on first use: a stage whose every answer is in the memo never loads a model."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sp_assets.backends import registry
from sp_assets.backends.base import Backend
from sp_assets.backends.profiles import Profile
from sp_assets.core.policy import Policy
from sp_assets.execution.work import Task, Work


@dataclass
class LazyBackend:
    """A profile's backend, built (once per process, through the registry) only when ``get`` is called."""

    profile: Profile
    policy: Policy
    _backend: Backend | None = field(default=None, repr=False)

    @property
    def cls(self) -> type:
        return registry.backend_class(self.profile)

    @property
    def config_sha256(self) -> str:
        return registry.config_sha256(self.profile)

    @property
    def scope(self) -> str:
        """'policy' when one answer serves every category (the ``scope`` parameter of the profile that is
        built: a judge evaluated as a guard answers as its judge does, so it reuses the judge's answers)."""
        return str(self.build_profile.params.get("scope", getattr(self.cls, "scope", "category")))

    @property
    def build_profile(self) -> Profile:
        """The profile a worker builds: a judge evaluated as a guard is built from its judge's profile."""
        return registry.runs(self.profile)

    def work(self, task: Task, images: str, reader_only: bool = False, **args: Any) -> Work:
        """A ``Work`` for the worker pool: ``task`` runs where the backend is built (once per worker)."""
        return Work(task, images, self.policy, self.build_profile, args, reader_only)

    def get(self) -> Backend:
        if self._backend is None:
            self._backend = registry.build(self.profile, self.policy)
        return self._backend

    def __getattr__(self, name: str) -> Any:  # model info and the like, from the loaded backend
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self.get(), name)
