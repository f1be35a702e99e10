"""`make dev`: the UI's server lists the seven assets with one partition per policy category."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from sp_assets.core.policy import REPO_ROOT, load_active_policy

QUERY = "{ assetNodes { assetKey { path } partitionKeys groupName } }"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _graphql(port: int) -> dict:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/graphql", data=json.dumps({"query": QUERY}).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.load(resp)


@pytest.mark.full
def test_dagster_dev_shows_seven_partitioned_assets(tmp_path):
    port = _free_port()
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path), "SP_DATA_ROOT": str(tmp_path / "data")}
    cmd = [str(Path(sys.executable).parent / "dagster"), "dev", "-h", "127.0.0.1", "-p", str(port)]
    # SIGINT must be default in the child: `dagster dev` ignores SIGTERM from a non-interactive parent.
    proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 180
        nodes = None
        while time.monotonic() < deadline:
            try:
                nodes = _graphql(port)["data"]["assetNodes"]
                if nodes:
                    break
            except Exception:  # noqa: BLE001 - server still starting
                pass
            time.sleep(2)
        assert nodes, "dagster dev did not answer within 180 s"
        keys = {n["assetKey"]["path"][0]: n for n in nodes}
        assert set(keys) == {"source_pool", "policy_labels", "edit_instructions", "edited_images",
                             "verified_pairs", "benchmark_split", "guard_metrics"}
        slugs = load_active_policy().slugs
        for node in keys.values():
            assert node["partitionKeys"] == slugs
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
