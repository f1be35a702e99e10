"""What ``make demo`` shows of a Dagster CLI run: its progress and its warnings and errors, not its events.

``RunDisplay.feed`` takes the run's output line by line. Progress lines (``core.progress``) update the
display: one line redrawn in place on a terminal, a plain line every ``PLAIN_EVERY_S`` seconds
otherwise, and one line per finished stage either way. Dagster's WARNING and ERROR events, Python
warnings and tracebacks are printed as they come; the DEBUG and INFO events are not (the caller keeps
them in a log file).
"""

from __future__ import annotations

import collections
import re
import shutil
import time
from typing import Callable, Sequence, TextIO

from sp_assets.core.progress import Progress, duration, parse

PLAIN_EVERY_S = 10.0  # without a terminal, a progress line at most this often
EVENT = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?: [+-]\d{4})? - \S+ - "
                   r"(?P<level>DEBUG|INFO|WARNING|ERROR|CRITICAL) - (?P<message>.*)$")
RUN_PREFIX = re.compile(r"^\S+ - [0-9a-f]{8}-[0-9a-f-]{27} - (?:\d+ - )?")  # job - run id - pid -
STEP_EVENT = re.compile(r"\b(?P<step>\w+) - (?P<event>STEP_START|STEP_SUCCESS|STEP_FAILURE) - ")
ALARM = re.compile(r"traceback|warn|error|exception|fatal|failed|died|killed", re.I)
# Printed by every `dagster asset materialize`: about the command the demo chose, not about the run.
NOISE = ("SupersessionWarning: Function `asset_materialize_command` is superseded",)
SHOWN_LEVELS = {"WARNING", "ERROR", "CRITICAL"}
HEADLINE_ONLY = " - RUN_FAILURE - "  # its traceback repeats the failed step's, shown already
NOT_RELEVANT = ("Stack Trace:", "The above exception was caused by the following exception:")


class OutputFilter:
    """Which lines of the run's output a person should see. A line that is not a Dagster event continues
    the one before it (a multi-line message, a traceback), so it is shown when that one was."""

    def __init__(self) -> None:
        self.showing = False

    def shown(self, line: str) -> str | None:
        """The line as shown (Dagster events without their timestamp and run id), or None to hide it."""
        event = EVENT.match(line)
        if event is not None:
            shown = event["level"] in SHOWN_LEVELS
            self.showing = shown and HEADLINE_ONLY not in line
            return f"{event['level']} {RUN_PREFIX.sub('', event['message'])}" if shown else None
        if any(noise in line for noise in NOISE):
            self.showing = False
        elif ALARM.search(line) and not line[:1].isspace():
            self.showing = True
        return line if self.showing else None


class RunDisplay:
    """Progress per stage and category, and the lines that matter, written to ``out`` as the run goes."""

    def __init__(self, out: TextIO, stages: Sequence[str], live: bool, every_s: float = PLAIN_EVERY_S,
                 clock: Callable[[], float] = time.monotonic):
        self.out, self.stages, self.live, self.every_s, self.clock = out, list(stages), live, every_s, clock
        self.filter = OutputFilter()
        self.relevant: collections.deque[str] = collections.deque(maxlen=12)  # for the failure message
        self.started: dict[str, float] = {}
        self.computed: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
        self.last_plain = float("-inf")
        self.status = ""  # the live line's text

    def feed(self, line: str) -> None:
        line = line.rstrip("\r\n")
        if EVENT.match(line):
            progress, step = parse(line), STEP_EVENT.search(line)
            if progress is not None:
                self._progress(progress)
            elif step is not None:
                self._step(step["step"], step["event"])
        shown = self.filter.shown(line)
        if shown is not None:
            self.print(shown)
            if shown.strip() and not shown[:1].isspace() and shown not in NOT_RELEVANT:
                self.relevant.append(shown)

    def print(self, text: str) -> None:
        """A lasting line (the live line is cleared first and drawn again after it)."""
        self.out.write(("\r\x1b[K" if self.live else "") + text + "\n")
        if self.live and self.status:
            self.out.write(self._fit(self.status))
        self.out.flush()

    def close(self) -> None:
        """Clear the live line (before the summary or the failure message)."""
        if self.live and self.status:
            self.out.write("\r\x1b[K")
            self.out.flush()
        self.status = ""

    def _tag(self, stage: str) -> str:
        n = self.stages.index(stage) + 1 if stage in self.stages else "?"
        return f"[{n}/{len(self.stages)} {stage}]"

    def _progress(self, p: Progress) -> None:
        if p.finished:
            self.computed[p.stage][p.role] += p.done
        elapsed = self.clock() - self.started.get(p.stage, self.clock())
        text = f"{self._tag(p.stage)} {p.category} {p.role}: {p.counts()} (stage {duration(elapsed)})"
        if self.live:
            self.status = text
            self.out.write("\r\x1b[K" + self._fit(text))
            self.out.flush()
        elif self.clock() - self.last_plain >= self.every_s:
            self.last_plain = self.clock()
            self.print(text)

    def _step(self, stage: str, event: str) -> None:
        if event == "STEP_START":
            self.started[stage] = self.clock()
            return
        elapsed = duration(self.clock() - self.started.get(stage, self.clock()))
        self.status = ""
        if event == "STEP_FAILURE":
            self.print(f"{self._tag(stage)} failed after {elapsed}")
            return
        work = ", ".join(f"{role} {n}" for role, n in self.computed[stage].items())
        self.print(f"{self._tag(stage)} done in {elapsed}: "
                   + (f"items computed: {work}" if work else "nothing to compute (answers reused or no model work)"))

    def _fit(self, text: str) -> str:
        width = shutil.get_terminal_size((100, 20)).columns - 1
        return text if len(text) <= width else text[:width - 3] + "..."
