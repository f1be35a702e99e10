"""Numeric work that must give the same bits in every process, whatever its thread settings.

Float sums come out in another order with another number of threads, so a classifier trained, or a
sentence embedded, with two threads can differ in the last digits from one made with one thread. The
pipeline's answers must not depend on which worker (or how many) made them.
"""

from __future__ import annotations

import contextlib
from typing import Iterator


@contextlib.contextmanager
def single_threaded() -> Iterator[None]:
    """Run the block with one BLAS / OpenMP thread and one torch thread, then restore the settings."""
    from threadpoolctl import threadpool_limits

    try:
        import torch
    except ImportError:  # no torch here: only the BLAS pools matter
        torch = None
    before = torch.get_num_threads() if torch is not None else None
    if torch is not None:
        torch.set_num_threads(1)
    try:
        with threadpool_limits(limits=1):
            yield
    finally:
        if torch is not None and before is not None:
            torch.set_num_threads(before)


WORKER_THREADS_ENV_VAR = "SP_WORKER_THREADS"


def worker_threads() -> int | None:
    """The threads a worker process may use (set by the worker pool from its CPU share), or None."""
    import os

    raw = os.environ.get(WORKER_THREADS_ENV_VAR, "").strip()
    return int(raw) if raw.isdigit() and int(raw) > 0 else None
