"""Images on an S3-compatible server (moto's, started here on 127.0.0.1): the whole graph for one category
reads and writes every image there, and the DuckDB catalog stays local with paths relative to the root."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
from dagster import DagsterInstance

from tests.conftest import run_graph, store_at

boto3 = pytest.importorskip("boto3")
pytest.importorskip("s3fs")
pytest.importorskip("moto")
BUCKET = "safetypairs-test"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def s3(monkeypatch):
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(url, timeout=2)
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.2)
        for name, value in {"AWS_ENDPOINT_URL": url, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                            "AWS_DEFAULT_REGION": "us-east-1"}.items():
            monkeypatch.setenv(name, value)
        client = boto3.client("s3", endpoint_url=url)
        client.create_bucket(Bucket=BUCKET)
        yield client
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


@pytest.mark.full
def test_images_round_trip_through_the_whole_graph_on_object_storage(s3, tmp_path):
    data = tmp_path / "data"
    run_graph(data, "o2_violence", "o2_violence", instance=DagsterInstance.ephemeral(),
              images_url=f"s3://{BUCKET}/run")
    store = store_at(data)
    keys = {o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix="run/")
            for o in page.get("Contents", [])}
    paths = [p for (p,) in store.query(
        "SELECT image_path FROM source_images UNION ALL SELECT edited_path FROM edited_images WHERE status = 'ok' "
        "UNION ALL SELECT safe_path FROM benchmark_split").rows()]
    assert paths and all(p.startswith("images/") for p in paths)  # relative to the image root
    assert {f"run/{p}" for p in paths} <= keys
    assert not (data / "images").exists()  # nothing went to the local disk
    # The bytes behind each stored hash are the object's, and the export read them from the bucket.
    pair = store.query("SELECT safe_sha256, safe_path FROM benchmark_split LIMIT 1").to_dicts()[0]
    body = s3.get_object(Bucket=BUCKET, Key=f"run/{pair['safe_path']}")["Body"].read()
    import hashlib

    assert hashlib.sha256(body).hexdigest() == pair["safe_sha256"]
    assert list((data / "export" / "data").glob("*.parquet"))
    assert store.query("SELECT count(*) FROM guard_metrics").item() > 0
