"""The heavy stages on a local Ray with two model-holding workers: the same rows as in-process, also when a
worker process is killed mid-stage (it is replaced and its batch runs again)."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

import pytest
from dagster import DagsterInstance

from sp_assets.execution import pools
from tests.conftest import run_graph
from tests.test_crash_safety import _snapshot

ray = pytest.importorskip("ray")
FIRST, LAST = "o1_hate", "o2_violence"


def _in_process(tmp_path_factory, **settings):
    data = tmp_path_factory.mktemp("in_process") / "data"
    run_graph(data, FIRST, LAST, instance=DagsterInstance.ephemeral(), **settings)
    return _snapshot(data / "safetypairs.duckdb")


@pytest.fixture(scope="module")
def in_process(tmp_path_factory):
    return _in_process(tmp_path_factory)


@pytest.fixture(scope="module")
def in_process_small_batches(tmp_path_factory):
    # Batches of two: many batches to kill a worker among. (Batched models see their batch, so the
    # batch size is part of the config: the reference uses the same.)
    return _in_process(tmp_path_factory, batch_items=2)


@pytest.fixture
def ray_run(tmp_path):
    yield tmp_path / "data"
    pools.close_pools()  # stops the local Ray this test started


@pytest.mark.full
def test_two_ray_workers_give_the_rows_of_an_in_process_run(in_process, ray_run):
    run_graph(ray_run, FIRST, LAST, instance=DagsterInstance.ephemeral(), execution="ray", ray_workers=2)
    [pool] = [p for p in pools.active_pools() if hasattr(p, "worker_pids")]
    assert len(pool.worker_pids()) == 2 and os.getpid() not in pool.worker_pids()
    assert _snapshot(ray_run / "safetypairs.duckdb") == in_process


@pytest.mark.full
def test_a_ray_worker_killed_mid_stage_is_replaced_and_the_rows_are_the_same(in_process_small_batches, ray_run):
    killed: list[int] = []

    def kill_one_worker() -> None:
        # Mid-run (the first stages' batches back, the edits and their verification still to come), kill a worker.
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            live = [p for p in pools.active_pools() if hasattr(p, "worker_pids") and p.worker_pids()]
            if live and live[0].batches_done >= 10:
                pid = live[0].worker_pids()[0]
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
                return
            time.sleep(0.05)

    killer = threading.Thread(target=kill_one_worker, daemon=True)
    killer.start()
    run_graph(ray_run, FIRST, LAST, instance=DagsterInstance.ephemeral(), execution="ray", ray_workers=2,
              batch_items=2)
    killer.join(timeout=5)
    assert killed, "no worker was killed"
    [pool] = [p for p in pools.active_pools() if hasattr(p, "worker_pids")]
    assert killed[0] not in pool.worker_pids()  # replaced
    assert _snapshot(ray_run / "safetypairs.duckdb") == in_process_small_batches


# -- what Ray's own retries keep: a restarted worker, a bounded number of tries, the failing batch named ----


def _doubles_unless_poisoned(backend, images, policy, batch):
    """A task for the pool: "kill" ends the worker process as running out of memory would; "raise" raises."""
    if "kill" in batch:
        os._exit(1)
    if "raise" in batch:
        raise ValueError("a row this task cannot take")
    return [x * 2 for x in batch]


@pytest.mark.full
def test_ray_restarts_a_dead_worker_and_a_batch_that_fails_every_try_is_named(tmp_path):
    from sp_assets.core.policy import DEFAULT_POLICY_PATH, load_policy
    from sp_assets.execution.ray_pool import RayPool
    from sp_assets.execution.work import Work

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the workers cannot import the tests
    pool = RayPool(address="local", workers=1, retries=1, cpus=1, object_store_mb=100)
    work = Work(task=_doubles_unless_poisoned, images=str(tmp_path), policy=load_policy(DEFAULT_POLICY_PATH))
    try:
        assert dict(pool.map(work, [[1, 2]])) == {0: [2, 4]}
        [first] = pool.worker_pids()
        with pytest.raises(RuntimeError, match=r"task 'test_ray._doubles_unless_poisoned' failed on batch 1 after 1 "
                                               r"retries: its Ray worker process died on every try"):
            list(pool.map(work, [[3], ["kill"], [4]]))
        assert dict(pool.map(work, [[5], [6]])) == {0: [10], 1: [12]}  # Ray started the worker again
        assert pool.worker_pids() != [first] and pool.batches_done == 4
        with pytest.raises(RuntimeError, match=r"failed on batch 0 after 1 retries: a row this task cannot take"):
            list(pool.map(work, [["raise"]]))
    finally:
        pool.close()
        ray.cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


# -- a local Ray listens on the loopback address only ------------------------------------------------


def _fake_init(monkeypatch, node_ip="127.0.0.1"):
    """ray.init recorded, not run: its arguments and whether Ray's single-machine mode was on during it."""
    import ray._private.ray_constants as constants

    calls: list[dict] = []
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kw: calls.append({**kw, "cluster": constants.ENABLE_RAY_CLUSTER}))
    monkeypatch.setattr(ray.util, "get_node_ip_address", lambda: node_ip)
    return calls, constants


def test_a_local_ray_is_asked_for_the_loopback_address_and_a_cluster_is_left_alone(monkeypatch):
    from sp_assets.execution.ray_pool import RayPool

    calls, constants = _fake_init(monkeypatch)
    before = constants.ENABLE_RAY_CLUSTER
    RayPool(address="local", cpus=1, object_store_mb=100)
    RayPool(address="ray://head:10001")
    local, cluster = calls
    assert local["_node_ip_address"] == "127.0.0.1" and local["include_dashboard"] is False
    assert local["cluster"] is False and local["num_cpus"] == 1 and local["object_store_memory"] == 100 << 20
    assert cluster["address"] == "ray://head:10001" and "_node_ip_address" not in cluster
    assert cluster["cluster"] == before and constants.ENABLE_RAY_CLUSTER == before  # set back after the start


def test_a_local_ray_off_the_loopback_address_is_reported(monkeypatch, caplog):
    from sp_assets.execution.ray_pool import RayPool

    _fake_init(monkeypatch, node_ip="192.0.2.7")
    with caplog.at_level("WARNING", logger="sp_assets.execution.ray_pool"):
        RayPool(address="local", cpus=1)
    assert "listens on 192.0.2.7, not 127.0.0.1" in caplog.text


@pytest.mark.full
def test_a_local_ray_and_its_workers_listen_on_the_loopback_address_only():
    from sp_assets.execution.ray_pool import RayPool

    assert not ray.is_initialized()
    pool = RayPool(address="local", workers=1, cpus=1, object_store_mb=100)
    try:
        assert ray.util.get_node_ip_address() == "127.0.0.1"
        assert [n["NodeManagerAddress"] for n in ray.nodes()] == ["127.0.0.1"]
        assert ray.get_runtime_context().gcs_address.startswith("127.0.0.1:")
        worker_ip = ray.get(ray.remote(lambda: ray.util.get_node_ip_address()).remote())
        assert worker_ip == "127.0.0.1"
    finally:
        pool.close()
