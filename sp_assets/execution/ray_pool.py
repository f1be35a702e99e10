"""The worker pool on Ray: model-holding actors on this machine or a cluster; Dagster stays the orchestrator.

``RayPool.map`` sends each batch of a ``work.Work`` to an actor and yields results as batches finish.
Each actor is a long-lived process that builds every backend it is asked for once (the process's
backend cache) and keeps it for its life, so a model loads once per worker, not once per batch. Actors
get the CPUs and GPUs the work's profile asks for (``num_cpus``, ``num_gpus``) and as many threads as
their share of the machine, so workers do not oversubscribe the cores. Retries are Ray's own: an actor
that dies (out of memory, killed) is restarted by Ray (``max_restarts``) and the batch it held runs again
(``max_task_retries``), as does a batch whose task raised (``retry_exceptions``), up to ``retries`` times;
then the step stops naming the batch. Plain functions (cheap bookkeeping) run in the driver.

``address``: ``local`` starts a Ray on this machine on demand (dashboard off, CPUs and object store
bounded, every server on 127.0.0.1) and stops it when the pool closes; ``auto`` or ``ray://host:port``
joins a running cluster (for example KubeRay on Kubernetes), whose addresses are its own.
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

from sp_assets.execution.pool import Job, run_job
from sp_assets.execution.work import Work

log = logging.getLogger(__name__)
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "SP_WORKER_THREADS")
LOOPBACK = "127.0.0.1"


def local_init_args(cpus: int, object_store_mb: int) -> dict[str, Any]:
    """``ray.init``'s arguments for a Ray on this machine alone: no dashboard, no server off the loopback
    address (a local Ray runs whatever task reaches its ports, so no other machine should reach them)."""
    return dict(num_cpus=cpus, include_dashboard=False, object_store_memory=object_store_mb << 20,
                _node_ip_address=LOOPBACK, log_to_driver=False, configure_logging=False, namespace="safetypairs")


@contextlib.contextmanager
def _single_machine() -> Iterator[None]:
    """Ray's single-machine mode, its default on macOS and Windows, while ``ray.init`` starts a local Ray.

    On Linux ``ray.init`` replaces a node address of 127.0.0.1 with the machine's routable one, and Ray's
    servers (GCS, raylet, workers) listen on every interface unless the node address is 127.0.0.1. In
    single-machine mode it keeps 127.0.0.1. The flag is read only while a node starts (the workers get
    the address from the raylet), so it is set back at once and a later cluster address is unaffected."""
    import ray._private.ray_constants as constants

    before = getattr(constants, "ENABLE_RAY_CLUSTER", True)
    constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        constants.ENABLE_RAY_CLUSTER = before


class _Worker:
    """A Ray actor: holds the backends it has built for its whole life and runs batches of work. Ray starts
    it again (the same arguments) when its process dies."""

    def __init__(self, threads: int):
        for name in THREAD_VARIABLES:  # before any numeric library is imported in this process
            os.environ[name] = str(threads)
        try:
            import torch

            torch.set_num_threads(threads)
        except ImportError:
            pass

    def pid(self) -> int:
        return os.getpid()

    def run(self, job: Work, batch: Sequence[Any]) -> tuple[int, list[Any]]:
        """The batch's results, and the process that made them (a restarted worker has a new one)."""
        return os.getpid(), run_job(job, batch)


def _warn_unless_loopback(node_ip: str) -> None:
    # Another Ray release may drop the single-machine flag; say so rather than listen on the network unnoticed.
    if node_ip != LOOPBACK:
        log.warning("the local Ray listens on %s, not %s: this Ray release ignored the loopback setting, so other "
                    "machines on the network can reach it. Start Ray yourself (ray start --head "
                    "--node-ip-address=%s) and set the Ray address to it, or pin ray to a tested release.",
                    node_ip, LOOPBACK, LOOPBACK)


@dataclass
class _Slot:
    actor: Any
    pid: int


@dataclass
class RayPool:
    """Batches of work on Ray actors, ``workers`` of them per kind of resources asked for."""

    address: str = "local"
    workers: int = 2
    retries: int = 2
    cpus: int | None = None  # for a local Ray: the CPUs it may use (default: this machine's)
    object_store_mb: int = 256  # for a local Ray: the shared-memory object store
    _slots: dict[tuple[float, float], list[_Slot]] = field(default_factory=dict)
    _started_here: bool = False
    batches_done: int = 0  # batches whose results came back, over the pool's life (to watch it work)

    def __post_init__(self) -> None:
        import ray

        if self.workers < 1:
            raise ValueError(f"ray workers must be at least 1, got {self.workers}")
        if ray.is_initialized():
            return
        if self.address == "local":
            cpus = self.cpus or os.cpu_count() or 1
            with _single_machine():
                ray.init(**local_init_args(cpus, self.object_store_mb))
            self._started_here = True
            log.info("started a local Ray with %s CPUs (%s workers per kind of work)", cpus, self.workers)
            _warn_unless_loopback(ray.util.get_node_ip_address())
        else:
            ray.init(address=self.address, log_to_driver=False, configure_logging=False, namespace="safetypairs")
            log.info("joined the Ray cluster at %s", self.address)

    # -- workers -----------------------------------------------------------------------------------

    def _threads(self, num_cpus: float) -> int:
        """A worker computes with as many threads as the CPUs it holds: more would oversubscribe the cores
        other workers hold."""
        return max(1, int(num_cpus))

    def _new_slots(self, shape: tuple[float, float], n: int) -> list[_Slot]:
        """``n`` workers of one shape, started together (each spends seconds importing its libraries).

        Ray restarts a worker whose process dies (``max_restarts=-1``) and runs the batch it held again on
        the new process; a batch is tried ``1 + retries`` times in all, whether its worker died or its task
        raised (``max_task_retries``, and ``retry_exceptions`` on each call)."""
        import ray

        num_cpus, num_gpus = shape
        actor_class = ray.remote(_Worker).options(num_cpus=num_cpus, num_gpus=num_gpus, max_concurrency=1,
                                                  max_restarts=-1, max_task_retries=self.retries)
        actors = [actor_class.remote(self._threads(num_cpus)) for _ in range(n)]
        pids = ray.get([actor.pid.remote() for actor in actors])
        for pid in pids:
            log.info("Ray worker started: pid %s (%s CPU, %s GPU)", pid, num_cpus, num_gpus)
        return [_Slot(actor, pid) for actor, pid in zip(actors, pids)]

    def _pool(self, work: Work) -> list[_Slot]:
        shape = (work.resources["num_cpus"], work.resources["num_gpus"])
        if shape not in self._slots:
            self._slots[shape] = self._new_slots(shape, self.workers)
        return self._slots[shape]

    def worker_pids(self) -> list[int]:
        """Process ids of the workers (to watch them, or to test what happens when one dies); a worker Ray
        restarted shows its new pid from its first result on."""
        return [slot.pid for slots in self._slots.values() for slot in slots]

    # -- running -----------------------------------------------------------------------------------

    def map(self, job: Job, batches: Sequence[Sequence[Any]]) -> Iterator[tuple[int, list[Any]]]:
        if not isinstance(job, Work):
            for i, batch in enumerate(batches):  # bookkeeping functions stay in the driver
                yield i, run_job(job, batch)
            return
        yield from _Scheduler(self, job, batches).results()

    def close(self) -> None:
        import ray

        self._slots.clear()
        if self._started_here and ray.is_initialized():
            ray.shutdown()
            self._started_here = False


class _Scheduler:
    """One ``map``: every worker of the work's pool busy with one batch at a time, until all are done.

    Ray replaces a dead worker and retries its batch; what stays here is which batch each worker holds, so
    a batch that fails every try is named (``ray.util.ActorPool`` raises without saying which batch failed),
    and the pid that made each result, so ``worker_pids`` follows a restarted worker."""

    def __init__(self, pool: RayPool, job: Work, batches: Sequence[Sequence[Any]]):
        import ray

        self.pool, self.job, self.batches = pool, job, batches
        self.slots = pool._pool(job)
        self.job_ref = ray.put(job)  # shipped once, not with every batch
        self.todo = iter(range(len(batches)))
        self.running: dict[Any, tuple[int, _Slot]] = {}  # result ref -> (batch index, its worker)

    def submit(self, slot: _Slot) -> None:
        index = next(self.todo, None)
        if index is not None:
            ref = slot.actor.run.options(retry_exceptions=True).remote(self.job_ref, self.batches[index])
            self.running[ref] = (index, slot)

    def results(self) -> Iterator[tuple[int, list[Any]]]:
        import ray

        for slot in self.slots:
            self.submit(slot)
        while self.running:
            [ref], _ = ray.wait(list(self.running), num_returns=1)
            index, slot = self.running.pop(ref)
            failed = f"task {self.job.name!r} failed on batch {index} after {self.pool.retries} retries"
            try:
                pid, results = ray.get(ref)
            except ray.exceptions.RayActorError as exc:
                raise RuntimeError(f"{failed}: its Ray worker process died on every try (out of memory, or killed; "
                                   f"the Ray logs say which). Ray: {exc}") from exc
            except ray.exceptions.RayTaskError as exc:
                cause = exc.cause if isinstance(exc.cause, BaseException) else exc
                raise RuntimeError(f"{failed}: {cause}") from cause
            if pid != slot.pid:
                log.warning("Ray worker pid %s died; Ray restarted it as pid %s", slot.pid, pid)
                slot.pid = pid
            self.submit(slot)
            self.pool.batches_done += 1
            yield index, results
