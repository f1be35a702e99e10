"""`make demo` on a terminal: progress per stage and category and the summary, Dagster's events in a log
file it names, warnings and errors still shown, a failed run's exit status, log path and last lines."""

from __future__ import annotations

import io
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from sp_assets.core.policy import REPO_ROOT
from sp_assets.core.progress import Progress, Throttle, duration, parse
from sp_assets.core.run_display import RunDisplay
from sp_assets.demo import STAGES

RUN = "__ASSET_JOB - ae6672ad-3648-4559-9dda-8077fdf963a1"
DEBUG_EVENT = re.compile(r" - dagster - DEBUG - ")
LOG_PATH = re.compile(r"Dagster's events go to (\S+\.log);")


def _event(level: str, text: str, pid: bool = True) -> str:
    return f"2026-12-01 16:19:44 +0000 - dagster - {level} - {RUN} - {'30964 - ' if pid else ''}{text}\n"


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


# -- the progress line ---------------------------------------------------------------------------------


def test_progress_line_gives_rate_and_time_left_and_parses_back():
    p = Progress("verified_pairs", "o2_violence", "judge", 12, 40, 9.2)
    assert p.rate == pytest.approx(12 / 9.2)
    assert p.left_s == pytest.approx(28 / (12 / 9.2))  # 21.5 s at 1.30 items/s
    assert p.line() == "progress verified_pairs o2_violence judge: 12/40 items in 9.2 s, 1.30/s, ~21 s left"
    back = parse(_event("INFO", f"verified_pairs - {p.line()}", pid=False))
    assert back == p and back.left_s == pytest.approx(p.left_s)


def test_progress_at_the_start_and_at_the_end():
    start = Progress("policy_labels", "all", "reader", 0, 6, 0.0)
    assert start.rate is None and start.left_s is None
    assert start.line().endswith("0/6 items in 0.0 s, ?/s, time left unknown")
    end = Progress("policy_labels", "all", "reader", 6, 6, 5.0)
    assert end.finished and end.left_s == 0.0 and end.line().endswith("6/6 items in 5.0 s, 1.20/s, done")
    assert parse(start.line()) == start and parse(end.line()) == end
    assert parse("verified_pairs: judge 8/8 (5 s)") is None


def test_duration_reads_as_minutes_and_hours():
    assert [duration(s) for s in (4.4, 185, 3725)] == ["4 s", "3 min 05 s", "1 h 02 min"]


def test_throttle_goes_by_time_not_by_count():
    clock = Clock()
    throttle = Throttle(every_s=4.0, clock=clock)
    assert throttle.due("judge", 0, 40)  # the start
    updates = []
    for t, done in [(1, 4), (2, 8), (3.9, 12), (4.1, 16), (6, 20), (8.2, 24), (8.3, 40)]:
        clock.now = t
        updates.append(throttle.due("judge", done, 40))
    assert updates == [False, False, False, True, False, True, True]  # 4 s apart, and always the end
    assert throttle.due("judge", 0, 5) and throttle.due("reader", 1, 5)  # each piece of work on its own


# -- the display ---------------------------------------------------------------------------------------


def _display(live: bool = False) -> tuple[RunDisplay, io.StringIO, Clock]:
    out, clock = io.StringIO(), Clock()
    return RunDisplay(out, STAGES, live=live, every_s=10.0, clock=clock), out, clock


def _progress(stage: str, category: str, role: str, done: int, total: int, seconds: float) -> str:
    return _event("INFO", f"{stage} - {Progress(stage, category, role, done, total, seconds).line()}", pid=False)


def test_plain_display_hides_events_and_prints_progress_every_few_seconds():
    display, out, clock = _display()
    display.feed(_event("DEBUG", 'verified_pairs - STEP_START - Started execution of step "verified_pairs".'))
    for t, done in [(1, 0), (3, 16), (8, 32), (12, 48), (14, 64)]:
        clock.now = t
        display.feed(_progress("verified_pairs", "o2_violence", "judge", done, 64, t - 1))
    display.feed(_event("DEBUG", "verified_pairs - ASSET_MATERIALIZATION - Materialized value verified_pairs."))
    clock.now = 20
    display.feed(_event("DEBUG", 'verified_pairs - STEP_SUCCESS - Finished execution of step "verified_pairs".'))
    lines = out.getvalue().splitlines()
    assert lines == [
        "[5/7 verified_pairs] o2_violence judge: 0/64 items in 0.0 s, ?/s, time left unknown (stage 1 s)",
        "[5/7 verified_pairs] o2_violence judge: 48/64 items in 11.0 s, 4.36/s, ~4 s left (stage 12 s)",
        "[5/7 verified_pairs] done in 20 s: items computed: judge 64",
    ]


def test_warnings_errors_and_tracebacks_reach_the_terminal():
    display, out, _ = _display()
    feed = [
        _event("WARNING", "verified_pairs - yield 10% is under the floor"),
        _event("DEBUG", "verified_pairs - STEP_OUTPUT - Yielded output"),
        "  a continuation of a DEBUG event\n",
        "Traceback (most recent call last):\n",
        '  File "x.py", line 1, in <module>\n',
        "ValueError: bad value 3 in row 7\n",
        _event("ERROR", "RUN_FAILURE - Execution of run failed. Steps failed: ['verified_pairs']."),
        "\n",
        "Stack Trace:\n",
        '  File "y.py", line 2\n',
        _event("INFO", "verified_pairs - a message for the UI only", pid=False),
        "/x/click/core.py:911: SupersessionWarning: Function `asset_materialize_command` is superseded and ...\n",
        "  return callback(*args, **kwargs)\n",
    ]
    for line in feed:
        display.feed(line)
    assert out.getvalue().splitlines() == [
        "WARNING verified_pairs - yield 10% is under the floor",
        "Traceback (most recent call last):", '  File "x.py", line 1, in <module>', "ValueError: bad value 3 in row 7",
        "ERROR RUN_FAILURE - Execution of run failed. Steps failed: ['verified_pairs'].",
    ]
    assert list(display.relevant) == [
        "WARNING verified_pairs - yield 10% is under the floor", "Traceback (most recent call last):",
        "ValueError: bad value 3 in row 7", "ERROR RUN_FAILURE - Execution of run failed. Steps failed: ['verified_pairs'].",
    ]


def test_live_display_redraws_one_line_and_keeps_lasting_lines_apart():
    display, out, clock = _display(live=True)
    display.feed(_event("DEBUG", 'policy_labels - STEP_START - Started execution of step "policy_labels".'))
    for done in (0, 1, 2):
        clock.now += 1
        display.feed(_progress("policy_labels", "o1_hate", "judge", done, 3, clock.now))
    display.feed(_event("WARNING", "policy_labels - something to see"))
    display.close()
    text = out.getvalue()
    assert text.count("\r\x1b[K") >= 4 and text.count("\n") == 1  # progress redrawn in place, not new lines
    assert "\r\x1b[KWARNING policy_labels - something to see\n[2/7 policy_labels] o1_hate judge: 2/3" in text
    assert text.endswith("\r\x1b[K")  # the live line cleared for the summary


# -- the real runner -------------------------------------------------------------------------------------


def _demo(tmp: Path, *args: str, **env: str) -> tuple[int, str, str]:
    """python -m sp_assets.demo on a small pool in its own Dagster home and data root."""
    home = tmp / "home"
    home.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO_ROOT / "dagster.yaml", home / "dagster.yaml")
    env = {**os.environ, "DAGSTER_HOME": str(home), "SP_DATA_ROOT": str(tmp / "data"), "SP_DEMO_UNSAFE": "2",
           "SP_DEMO_SAFE": "1", **env}
    proc = subprocess.Popen([sys.executable, "-m", "sp_assets.demo", *args], cwd=REPO_ROOT, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=420)
    except BaseException:
        proc.send_signal(signal.SIGINT)  # the demo stops its Dagster run, then exits
        try:
            proc.communicate(timeout=90)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
        raise
    return proc.returncode, out, err


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    return _demo(tmp_path_factory.mktemp("demo"), "--categories", "o2_violence...o2_violence")


@pytest.mark.full
def test_demo_shows_progress_and_the_summary_not_dagster_events(demo_run):
    status, out, err = demo_run
    assert status == 0, err[-3000:] + out[-3000:]
    terminal = out + err
    assert not [line for line in terminal.splitlines() if DEBUG_EVENT.search(line)]
    assert "STEP_SUCCESS" not in terminal and "ASSET_MATERIALIZATION" not in terminal
    assert re.search(r"\] o2_violence \w+: \d+/\d+ items in [\d.]+ s, ", out), out
    for n, stage in enumerate(STAGES, 1):
        assert re.search(rf"^\[{n}/7 {stage}\] done in \d+ s", out, re.M), out
    assert "wall time per stage" in out and "Total wall time:" in out
    assert out.index("[7/7 guard_metrics] done") < out.index("Total wall time:")


@pytest.mark.full
def test_demo_log_file_holds_dagster_events_and_progress(demo_run):
    _, out, _ = demo_run
    log = Path(LOG_PATH.search(out).group(1))
    assert log.parent.name == "logs" and log.parent.parent.name == "data"
    assert f"Dagster's events of this run: {log}" in out
    text = log.read_text()
    assert DEBUG_EVENT.search(text) and "RUN_SUCCESS" in text and "STEP_SUCCESS" in text
    lines = [parse(line) for line in text.splitlines() if " - INFO - " in line]
    progress = [p for p in lines if p is not None]
    assert {p.stage for p in progress} >= {"source_pool", "policy_labels", "verified_pairs"}
    assert any(p.category == "o2_violence" and p.finished for p in progress)


@pytest.mark.full
def test_failed_demo_exits_non_zero_with_the_log_and_the_error(tmp_path):
    status, out, err = _demo(tmp_path, "--categories", "o2_violence...o2_violence", SP_JUDGE="no_such_judge")
    assert status != 0
    log = Path(LOG_PATH.search(out).group(1))
    assert log.is_file() and "STEP_FAILURE" in log.read_text()
    assert "ERROR policy_labels - STEP_FAILURE" in out and "[2/7 policy_labels] failed" in out
    assert f"Dagster's whole event log: {log}" in err
    tail = err.split("Last relevant lines:", 1)[1]
    assert "judge profile 'no_such_judge' is not defined" in tail and "Stack Trace" not in tail
    assert "Total wall time" not in out
