"""A unit of batch work for the worker pool: which function runs, with which backend, on which images.

A stage hands the pool a ``Work`` and batches of rows. A worker calls ``run_work``: it builds the backend
once for its life (the process's backend cache), then calls ``work.task(backend, images, policy, batch,
**args)``, which returns one result per row. ``task`` is the function itself (a module-level function of
a role module, so go-to-definition finds it and Ray pickles it by name). Nothing here holds a database
connection or refers to objects of the process that made the ``Work``, so a worker may live in another
process or on another machine.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Callable, Sequence

from sp_assets.backends import registry
from sp_assets.backends.profiles import Profile
from sp_assets.core.policy import Policy
from sp_assets.storage import ImageStore

Rows = Sequence[dict[str, Any]]
Task = Callable[..., list[Any]]  # (backend, images, policy, batch, **args) -> one result per row


@dataclass(frozen=True)
class Work:
    """One kind of batch work: the task function, the image store, the backend profile (built in the
    worker; None for a task that needs no backend) and the policy it is built with, the task's plain
    arguments, and whether the backend's reading half is all the task needs (``reader_only``)."""

    task: Task
    images: str  # the image store's root (a folder or a URL)
    policy: Policy
    profile: Profile | None = None
    args: dict[str, Any] = field(default_factory=dict)
    reader_only: bool = False

    @property
    def name(self) -> str:
        return f"{self.task.__module__.rsplit('.', 1)[-1]}.{self.task.__name__}"

    @property
    def resources(self) -> dict[str, float]:
        """CPUs and GPUs a worker needs for this work, from the profile (``num_cpus``, ``num_gpus``)."""
        needs = self.profile.resources if self.profile else {}
        return {"num_cpus": float(needs.get("num_cpus", 1)), "num_gpus": float(needs.get("num_gpus", 0))}


@lru_cache(maxsize=8)
def image_store(root: str) -> ImageStore:
    return ImageStore(root)


def run_work(work: Work, batch: Rows) -> list[Any]:
    """Run one batch of ``work`` in this process (its backend is loaded here once, then reused)."""
    if work.profile is None:
        backend = None
    elif work.reader_only:
        backend = registry.build_reader(work.profile, work.policy)
    else:
        backend = registry.build(work.profile, work.policy)
    return work.task(backend, image_store(work.images), work.policy, list(batch), **work.args)
