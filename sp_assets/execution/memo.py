"""Every model call memoized by its provenance key, in the DuckDB table ``model_calls``.

A call's key is (role, the profile's resolved config hash, the hash of its inputs): the image hash(es),
and the category and the part of the policy the answer depends on where it depends on them. A re-run
of unchanged inputs makes no model call; a run killed half-way keeps every batch it committed.

``Memo.run`` looks the keys up in one query, hands only the misses to the worker pool (each distinct
key once), and commits each batch's results in one short transaction as the batch finishes. An entry
whose stored file is gone is recomputed, never trusted.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable, Generic, Sequence, TypeVar

from sp_assets.core.hashing import canonical_json, sha256_json
from sp_assets.core.policy import Policy
from sp_assets.execution.pool import Job, WorkerPool, batched
from sp_assets.storage import ImageStore, Store, memo_queries

Item = TypeVar("Item")
Result = TypeVar("Result")

COMMIT_EVERY_S = 2.0  # finished batches are committed together at most this often


@dataclass(frozen=True)
class Encoded:
    """A result as stored: JSON text, optional bytes (vectors), and the stored files it points at."""

    output_json: str
    output_blob: bytes | None = None
    files: tuple[str, ...] = ()


@dataclass(frozen=True)
class Call(Generic[Item, Result]):
    """One kind of memoized call.

    ``inputs(item)`` gives what decides the answer (JSON-able); ``encode`` turns a result into an
    ``Encoded`` (None: do not store it, e.g. a failed edit that may succeed next time); ``decode``
    turns a stored entry back into a result.
    """

    role: str
    config_sha256: str
    inputs: Callable[[Item], Any]
    encode: Callable[[Result], Encoded | None]
    decode: Callable[[str, bytes | None], Result]


@dataclass(frozen=True)
class Outcome(Generic[Result]):
    result: Result
    computed_run_id: str
    reused: bool
    stage: str  # the stage that made the call


class Memo:
    """The memo of one stage of one run."""

    def __init__(self, store: Store, images: ImageStore, pool: WorkerPool, run_id: str, stage: str,
                 batch_size: int, policy: Policy):
        self.store, self.images, self.pool, self.policy = store, images, pool, policy
        self.run_id, self.stage, self.batch_size = run_id, stage, batch_size
        # (role, items done, items to compute, seconds since they started): at the start, after every
        # batch and at the end; the stage decides which of these are worth a log line.
        self.progress: Callable[[str, int, int, float], None] = lambda role, done, total, seconds: None
        self.computed: Counter[str] = Counter()  # this stage's model calls, by role
        self.reused: Counter[str] = Counter()  # answers this stage found in the memo, by role

    def run(self, call: Call, job: Job, items: Sequence[Any]) -> list[tuple[Any, Outcome]]:
        """(item, outcome) for every item, in order: stored answers reused, the rest computed through the
        worker pool (``job``: a ``work.Work``, or a plain function run here) and stored."""
        keys = [sha256_json(call.inputs(item)) for item in items]
        stored = self._lookup(call, keys)
        unique = dict(zip(keys, items))  # first item of each key, in item order
        # Batches are cut from the whole (deduplicated) item list, not from the misses alone: a batch is
        # committed whole or not at all, so a resumed run computes exactly the batches a killed run had
        # not committed, with the same members (batched models can differ in the last bits otherwise).
        batches = [[(k, it) for k, it in chunk if k not in stored]
                   for chunk in batched(list(unique.items()), self.batch_size)]
        batches = [b for b in batches if b]
        computed: dict[str, Outcome] = {}
        if batches:  # models load and run with no database connection held (the store opens one per call)
            computed = self._compute(call, job, batches)
        hits = sum(1 for k in keys if k in stored)
        self.reused[call.role] += hits
        return [(item, stored[k] if k in stored else computed[k]) for k, item in zip(keys, items)]

    def missing(self, call: Call, items: Sequence[Any]) -> list[Any]:
        """The items whose answers are not stored yet (one lookup; nothing is computed)."""
        keys = [sha256_json(call.inputs(item)) for item in items]
        stored = self._lookup(call, keys)
        return [item for key, item in zip(keys, items) if key not in stored]

    def _lookup(self, call: Call, keys: Sequence[str]) -> dict[str, Outcome]:
        found = {}
        for row in memo_queries.lookup(self.store, call.role, call.config_sha256, sorted(set(keys))):
            files = json.loads(row["files_json"] or "[]")
            if all(self.images.exists(f) for f in files):  # a result whose file is gone is not trusted
                found[row["input_key"]] = Outcome(call.decode(row["output_json"], row["output_blob"]),
                                                  row["computed_run_id"], True, row["stage"])
        return found

    def _compute(self, call: Call, job: Job, batches: list[list[tuple[str, Any]]]) -> dict[str, Outcome]:
        out: dict[str, Outcome] = {}
        pending: list[dict[str, Any]] = []
        started = last_commit = time.monotonic()
        done, total = 0, sum(len(b) for b in batches)
        self.progress(call.role, done, total, 0.0)
        # Batches may come back in any order (a pool of several workers); the index names the batch.
        for index, results in self.pool.map(job, [[item for _, item in b] for b in batches]):
            pairs = batches[index]
            self.computed[call.role] += len(pairs)
            for (key, item), result in zip(pairs, results, strict=True):
                out[key] = Outcome(result, self.run_id, False, self.stage)
                encoded = call.encode(result)
                if encoded is not None:
                    pending.append(self._row(call, key, item, encoded))
            done += len(pairs)
            # Whole batches, in one short transaction, at most every COMMIT_EVERY_S seconds of work: a
            # kill loses no more than that, and cheap calls do not pay a commit each.
            if time.monotonic() - last_commit >= COMMIT_EVERY_S:
                memo_queries.save(self.store, pending)
                pending, last_commit = [], time.monotonic()
            if done < total:
                self.progress(call.role, done, total, time.monotonic() - started)
        memo_queries.save(self.store, pending)
        self.progress(call.role, done, total, time.monotonic() - started)
        return out

    def _row(self, call: Call, key: str, item: Any, encoded: Encoded) -> dict[str, Any]:
        return {"role": call.role, "config_sha256": call.config_sha256, "input_key": key,
                "inputs_json": canonical_json(call.inputs(item)), "output_json": encoded.output_json,
                "output_blob": encoded.output_blob, "files_json": json.dumps(list(encoded.files)),
                "stage": self.stage, "computed_run_id": self.run_id,
                "created_at": dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)}
