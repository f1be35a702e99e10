"""Dagster CLI runs as real processes, for the tests that kill one and start it again: each run in its own
process group, stopped by that group (SIGINT, then SIGKILL), never by name."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from sp_assets.defs import STAGE_NAMES

DAGSTER = str(Path(sys.executable).parent / "dagster")
REPO = Path(__file__).resolve().parent.parent
STAGES = ",".join(STAGE_NAMES)


def cli_env(home: Path, data: Path, **extra: str) -> dict[str, str]:
    home.mkdir(parents=True, exist_ok=True)
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    return {**os.environ, "DAGSTER_HOME": str(home), "SP_DATA_ROOT": str(data), "SP_DEMO_UNSAFE": "3",
            "SP_DEMO_SAFE": "1", **extra}


def start_run(env: dict[str, str], partitions: list[str], log: Path, select: str = STAGES) -> subprocess.Popen:
    cmd = [DAGSTER, "asset", "materialize", "-m", "sp_assets", "--select", select, *partitions]
    out = open(log, "w")  # noqa: SIM115 - closed with the process below
    # Its own process group, so the kill takes the run and anything it started; SIGINT default (Dagster
    # CLI runs ignore SIGTERM from a non-interactive parent).
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def stop_run(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=20)


def run_to_end(env: dict[str, str], partitions: list[str], log: Path, timeout: float = 900, select: str = STAGES) -> None:
    proc = start_run(env, partitions, log, select)
    try:
        assert proc.wait(timeout=timeout) == 0, log.read_text()[-4000:]
    finally:
        stop_run(proc)
