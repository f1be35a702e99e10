"""Which worker pool a run uses, from the execution settings: in-process (default) or Ray.

One pool per process and settings: the Ray workers (and the models they hold) outlive a stage and serve
every stage of the run; a local Ray started here stops when the process ends.
"""

from __future__ import annotations

import atexit
import threading
from typing import Any

from sp_assets.execution.pool import InProcessPool, WorkerPool

EXECUTIONS = ("in_process", "ray")
_POOLS: dict[tuple[Any, ...], WorkerPool] = {}
_LOCK = threading.Lock()


def make_pool(execution: str, ray_address: str = "local", ray_workers: int = 2, task_retries: int = 2,
              ray_cpus: int | None = None, ray_object_store_mb: int = 256) -> WorkerPool:
    """The pool for these settings, made once per process."""
    if execution not in EXECUTIONS:
        raise ValueError(f"execution {execution!r} is not one of {', '.join(EXECUTIONS)}; set SP_EXECUTION or the "
                         "settings resource's 'execution' field.")
    key = (execution, ray_address, ray_workers, task_retries, ray_cpus, ray_object_store_mb)
    with _LOCK:
        if key not in _POOLS:
            _POOLS[key] = InProcessPool() if execution == "in_process" else _ray_pool(*key[1:])
        return _POOLS[key]


def _ray_pool(address: str, workers: int, retries: int, cpus: int | None, store_mb: int) -> WorkerPool:
    try:
        from sp_assets.execution.ray_pool import RayPool
    except ImportError as exc:  # ray is an optional extra
        raise ImportError("execution 'ray' needs Ray: pip install -e '.[ray]' (make test installs it)") from exc
    try:
        import ray  # noqa: F401
    except ImportError as exc:
        raise ImportError("execution 'ray' needs Ray: pip install -e '.[ray]' (make test installs it)") from exc
    return RayPool(address=address, workers=workers, retries=retries, cpus=cpus, object_store_mb=store_mb)


def active_pools() -> list[WorkerPool]:
    """The pools this process has made (to watch their workers)."""
    with _LOCK:
        return list(_POOLS.values())


def close_pools() -> None:
    """Stop every pool's workers (and a local Ray started by this process)."""
    with _LOCK:
        for pool in _POOLS.values():
            pool.close()
        _POOLS.clear()


atexit.register(close_pools)
