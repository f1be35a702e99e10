"""Progress of a stage's batch work as one log line that people read and programs parse back.

A stage logs, at INFO, while the worker pool returns batches::

    progress verified_pairs o2_violence judge: 12/40 items in 9.2 s, 1.30/s, ~22 s left

(stage, category or ``all`` for work shared by every category, role, items done / total, seconds since
the work started, items per second, time left at that rate). The Dagster UI shows these lines as they
are; ``make demo`` reads them from the run's output and draws its progress display.
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
import time
from dataclasses import dataclass
from typing import Callable, Hashable, Iterator

EVERY_S = 4.0  # a line at most this often per piece of work, plus its first and its last
MIN_ITEMS_FOR_ESTIMATE = 10
ALL = "all"  # the category of work done once for every category of the run (a prefetch)

LINE = re.compile(r"\bprogress (?P<stage>\w+) (?P<category>\S+) (?P<role>\w+): (?P<done>\d+)/(?P<total>\d+) items "
                  r"in (?P<seconds>\d+(?:\.\d+)?) s, ")


@dataclass(frozen=True)
class Progress:
    """How far one piece of work (a stage's role in a category) has got."""

    stage: str
    category: str
    role: str
    done: int
    total: int
    seconds: float

    @property
    def finished(self) -> bool:
        return self.done >= self.total

    @property
    def rate(self) -> float | None:
        """Items per second so far (None before the first item is done)."""
        return self.done / self.seconds if self.done and self.seconds > 0 else None

    @property
    def left_s(self) -> float | None:
        """Seconds left at the rate so far (None while no rate is known, or for work of fewer than
        ``MIN_ITEMS_FOR_ESTIMATE`` items: a few unequal steps, such as a judge's build, give no rate)."""
        if self.finished:
            return 0.0
        rate = self.rate
        return (self.total - self.done) / rate if rate and self.total >= MIN_ITEMS_FOR_ESTIMATE else None

    def line(self) -> str:
        """The log line (``LINE`` parses it back)."""
        return f"progress {self.stage} {self.category} {self.role}: {self.counts()}"

    def counts(self) -> str:
        """``12/40 items in 9.2 s, 1.30/s, ~22 s left``."""
        rate = "?/s" if self.rate is None else f"{self.rate:.2f}/s"
        if self.finished:
            left = "done"
        else:
            left = "time left unknown" if self.left_s is None else f"~{duration(self.left_s)} left"
        return f"{self.done}/{self.total} items in {self.seconds:.1f} s, {rate}, {left}"


def parse(text: str) -> Progress | None:
    """The progress in a log line (anywhere in it, so a Dagster event line works), or None."""
    m = LINE.search(text)
    if m is None:
        return None
    return Progress(m["stage"], m["category"], m["role"], int(m["done"]), int(m["total"]), float(m["seconds"]))


def duration(seconds: float) -> str:
    """``42 s``, ``3 min 05 s``, ``1 h 02 min``: for people, not for parsing."""
    s = int(round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


class Throttle:
    """Says which updates of a piece of work are worth a line: its start, then at most one every
    ``every_s`` seconds, and always its end. Time decides, not counts: a fast role gives few lines, a
    slow one still shows it is alive."""

    def __init__(self, every_s: float = EVERY_S, clock: Callable[[], float] = time.monotonic):
        self.every_s, self.clock = every_s, clock
        self.last: dict[Hashable, float] = {}

    def due(self, key: Hashable, done: int, total: int) -> bool:
        now = self.clock()
        if done >= total:
            self.last.pop(key, None)
            return True
        if done == 0 or key not in self.last or now - self.last[key] >= self.every_s:
            self.last[key] = now
            return True
        return False


# -- work inside a model call (a judge's build, its example encoding) ------------------------------

Listener = Callable[[str, int, int, float], None]  # (role, done, total, seconds)
_listener: Listener | None = None
_log = logging.getLogger("sp_assets.progress")


def listen(listener: Listener | None) -> None:
    """Send ``report``'s updates to ``listener`` (a stage sets its own when it starts; a process runs one
    stage at a time). None: to Python logging, as ``progress model all <role>: ...`` lines."""
    global _listener
    _listener = listener


def report(role: str, done: int, total: int, seconds: float) -> None:
    """How far a long piece of work inside a model call has got, for the terminal and the run's log."""
    listener = _listener
    if listener is not None:
        listener(role, done, total, seconds)
    else:
        _log.info(Progress("model", ALL, role, done, total, seconds).line())


@contextlib.contextmanager
def heartbeat(role: str, done: int, total: int, began: float, every_s: float = EVERY_S) -> Iterator[None]:
    """While the block runs (a step that cannot count its own progress: a fit, a load), report
    ``done/total`` again every ``every_s`` seconds, so a long step never looks like a hung one."""
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(every_s):
            report(role, done, total, time.monotonic() - began)

    thread = threading.Thread(target=beat, name=f"progress-{role}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
