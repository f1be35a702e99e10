"""The worker-pool seam: the heavy stages hand batches of items to a pool and get results back.

A task is a function of one batch (a list of items) that returns one result per item. The pool holds
the models for its whole life (here: the process's backend cache), runs the batches and yields each
batch's results as soon as they are ready, so the stage can commit as it goes. ``InProcessPool`` runs
them one after another in this process; other pools (several workers, machines) plug in behind the
same ``map``.
"""

from __future__ import annotations

from typing import Callable, Iterable, Iterator, Protocol, Sequence, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")
Task = Callable[[Sequence[Item]], list[Result]]


def batched(items: Sequence[Item], size: int) -> Iterator[list[Item]]:
    """Consecutive batches of at most ``size`` items, in order."""
    if size < 1:
        raise ValueError(f"batch size must be at least 1, got {size}")
    for start in range(0, len(items), size):
        yield list(items[start:start + size])


class WorkerPool(Protocol):
    def map(self, task: Task, batches: Iterable[Sequence[Item]]) -> Iterator[tuple[Sequence[Item], list[Result]]]:
        """(batch, results) for every batch, results in item order; batches may finish in any order."""
        ...


class InProcessPool:
    """Runs every batch in this process, in order: the embedded default."""

    def map(self, task: Task, batches: Iterable[Sequence[Item]]) -> Iterator[tuple[Sequence[Item], list[Result]]]:
        for batch in batches:
            results = task(batch)
            if len(results) != len(batch):
                raise RuntimeError(f"task {getattr(task, '__name__', task)!r} returned {len(results)} results "
                                   f"for {len(batch)} items; a task must return one result per item")
            yield batch, results


def run_batches(pool: WorkerPool, task: Task, items: Sequence[Item], size: int) -> list[tuple[Item, Result]]:
    """Every (item, result) of ``items``, in item order, computed in batches of ``size`` through ``pool``."""
    order = {id(item): i for i, item in enumerate(items)}
    done: list[tuple[int, Item, Result]] = []
    for batch, results in pool.map(task, batched(items, size)):
        done.extend((order[id(item)], item, result) for item, result in zip(batch, results, strict=True))
    return [(item, result) for _, item, result in sorted(done, key=lambda t: t[0])]
