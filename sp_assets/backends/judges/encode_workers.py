"""Sentence vectors of many strings encoded in worker processes, each on one thread (a cold judge cache).

The workers are plain ``python -m sp_assets.backends.judges.encode_workers`` processes, not
multiprocessing: a spawned multiprocessing child imports the caller's main script again, which breaks a
user's script or notebook that builds the judge without an ``if __name__ == "__main__"`` guard.

Protocol: the parent writes one JSON document to a worker's stdin (model folder, batch size, batches of
strings); the worker loads the encoder once and writes, for each batch in order, a 4-byte big-endian
length and the batch's float32 vectors. A worker that fails leaves its batches to the caller.
"""

from __future__ import annotations

import json
import logging
import queue
import struct
import subprocess
import sys
import tempfile
import threading
from typing import Iterator, Sequence

import numpy as np

_HEADER = struct.Struct(">I")
log = logging.getLogger(__name__)


def encode_in_workers(batches: Sequence[list[str]], model_dir: str, batch_size: int, dim: int, workers: int
                      ) -> Iterator[tuple[int, np.ndarray | None]]:
    """(batch index, vectors) as workers finish them, in no fixed order; (index, None) for each batch a
    failed worker did not deliver. Worker k encodes batches k, k + workers, ... (lengths spread evenly)."""
    results: queue.Queue[tuple[int, np.ndarray | None]] = queue.Queue()
    shares = [list(range(k, len(batches), workers)) for k in range(workers)]
    procs = []
    for share in shares:
        errors = tempfile.TemporaryFile()  # a file, not a pipe: a chatty worker cannot block on it
        proc = subprocess.Popen([sys.executable, "-m", __name__], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=errors)
        proc.errors = errors  # type: ignore[attr-defined]
        procs.append(proc)
        threading.Thread(target=_collect, args=(proc, share, batches, model_dir, batch_size, dim, results),
                         daemon=True).start()
    try:
        for _ in range(len(batches)):
            yield results.get()
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            proc.errors.close()  # type: ignore[attr-defined]


def _collect(proc: subprocess.Popen, share: list[int], batches: Sequence[list[str]], model_dir: str,
             batch_size: int, dim: int, results: queue.Queue) -> None:
    done = 0
    try:
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(json.dumps({"model_dir": model_dir, "batch_size": batch_size,
                                     "batches": [batches[i] for i in share]}).encode("utf-8"))
        proc.stdin.close()
        for index in share:
            head = proc.stdout.read(_HEADER.size)
            if len(head) < _HEADER.size:
                break
            data = proc.stdout.read(_HEADER.unpack(head)[0])
            results.put((index, np.frombuffer(data, dtype=np.float32).reshape(-1, dim).copy()))
            done += 1
    except (OSError, ValueError):
        pass
    finally:
        if done < len(share):
            proc.wait()
            proc.errors.seek(0)  # type: ignore[attr-defined]
            tail = proc.errors.read()[-2000:].decode("utf-8", "replace")  # type: ignore[attr-defined]
            log.warning("an encoding worker stopped after %d of %d batches (exit %s); they are encoded here. "
                        "Its last output: %s", done, len(share), proc.returncode, tail.strip() or "(none)")
        for index in share[done:]:
            results.put((index, None))


def _main() -> None:
    from sentence_transformers import SentenceTransformer

    from sp_assets.backends.common.hf import quiet_load
    from sp_assets.backends.common.threads import single_threaded

    job = json.loads(sys.stdin.buffer.read().decode("utf-8"))
    encoder = quiet_load(lambda: SentenceTransformer(job["model_dir"], device="cpu", local_files_only=True))
    out = sys.stdout.buffer
    with single_threaded():  # as PolicyTextHead.encode: the same bits as in the parent
        for batch in job["batches"]:
            vectors = encoder.encode(batch, batch_size=job["batch_size"], convert_to_numpy=True,
                                     normalize_embeddings=True, show_progress_bar=False)
            data = np.asarray(vectors, dtype=np.float32).tobytes()
            out.write(_HEADER.pack(len(data)) + data)
            out.flush()


if __name__ == "__main__":
    _main()
