"""The worker-pool seam: the heavy stages hand batches of items to a pool and get results back.

``map(work, batches)`` runs every batch of a ``work.Work`` (or of a plain function, run here) and
yields ``(batch index, results)`` as each batch finishes, so the stage can commit as it goes; results
come in item order within a batch, batches in any order. ``InProcessPool`` runs them one after another
in this process, holding the models in the process's backend cache; ``ray_pool.RayPool`` runs them on
model-holding Ray actors, on this machine or a cluster.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator, Protocol, Sequence, TypeVar

from sp_assets.execution.work import Work, run_work

Item = TypeVar("Item")
Result = TypeVar("Result")
Job = Work | Callable[[Sequence[Any]], list[Any]]


def batched(items: Sequence[Item], size: int) -> Iterator[list[Item]]:
    """Consecutive batches of at most ``size`` items, in order."""
    if size < 1:
        raise ValueError(f"batch size must be at least 1, got {size}")
    for start in range(0, len(items), size):
        yield list(items[start:start + size])


def run_job(job: Job, batch: Sequence[Any]) -> list[Any]:
    results = run_work(job, batch) if isinstance(job, Work) else job(batch)
    if len(results) != len(batch):
        name = job.name if isinstance(job, Work) else getattr(job, "__name__", job)
        raise RuntimeError(f"task {name!r} returned {len(results)} results for {len(batch)} items; a task must "
                           "return one result per item")
    return results


class WorkerPool(Protocol):
    def map(self, job: Job, batches: Sequence[Sequence[Any]]) -> Iterator[tuple[int, list[Any]]]:
        """(batch index, results) for every batch, results in item order; batches may finish in any order."""
        ...

    def close(self) -> None:
        ...


class InProcessPool:
    """Runs every batch in this process, in order: the embedded default."""

    def map(self, job: Job, batches: Sequence[Sequence[Any]]) -> Iterator[tuple[int, list[Any]]]:
        for i, batch in enumerate(batches):
            yield i, run_job(job, batch)

    def close(self) -> None:
        pass
