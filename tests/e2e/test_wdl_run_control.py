"""Run control for WDL runs: cancel kills the running task's container and stops the run; a
worker killed mid-task is replaced, the reconciler re-queues the run and removes the orphaned
container, and the run completes on the new worker."""

from __future__ import annotations

import signal
import time
from typing import Any, Callable

import pytest

from tests.e2e.conftest import World
from tests.e2e.test_run_control import _containers, _world
from tests.e2e.test_wdl_tamper import slow_run
from tests.fixtures.docker_images import PushedImage, session_scope

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _wait_containers(run_id: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not _containers(run_id) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _containers(run_id), "a task container of the run should be running"


def _wait_no_containers(run_id: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while _containers(run_id) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _containers(run_id) == []


def test_cancel_stops_a_wdl_run_and_leaves_no_container(world: World) -> None:
    run_id = slow_run(world, 60)
    _wait_containers(run_id)
    world.analyst.cancel_run(run_id)
    assert world.analyst.wait(run_id, timeout=60) == "CANCELED"
    _wait_no_containers(run_id)
    tasks = {t["name"]: t for t in world.analyst.run_tasks(run_id)}
    assert "call-merge" not in tasks or tasks["call-merge"].get("exit_code") is None, tasks


def test_worker_killed_mid_wdl_task_is_recovered_and_orphans_removed(
    live_server_factory: Callable[..., Any], pushed_busybox: PushedImage, test_session_id: str
) -> None:
    env = {"HELIXGATE_CONTAINER_SCOPE": session_scope(test_session_id), "HELIXGATE_LEASE_SECONDS": "4"}
    first = live_server_factory(extra_env=env)
    world = _world(first, pushed_busybox, test_session_id)
    run_id = slow_run(world, 6)
    _wait_containers(run_id)
    first.process.send_signal(signal.SIGKILL)  # worker and API die mid-task
    first.process.wait(10)
    assert _containers(run_id), "the killed worker's container is now an orphan"
    second = live_server_factory(extra_env=env, data_dir=first.data_dir, port=first.port)
    world.analyst.api.base_url = second.url
    state = world.analyst.wait(run_id, timeout=180)
    log = world.analyst.run_log(run_id)
    assert state == "COMPLETE", (log["run_log"]["system_logs"], second.log()[-3000:])
    assert any("re-queued" in m for m in log["run_log"]["system_logs"])
    out = log["outputs"]["slowfruit.out"]
    data = b"".join(world.analyst.download(out["location"].rsplit("/", 1)[-1]))
    assert data == b"BANANA\nAPPLE\ndone\n"
    _wait_no_containers(run_id)
    verify = second.cli("audit", "verify")
    assert verify.returncode == 0, verify.stderr
