"""Good neighbours on one Docker engine, with real processes: deployment A (API + worker, plus
a second worker process on the same database), deployment B, and deployment C that was
configured with A's container scope all reconcile every two seconds while A's and B's sleeping
tasks run. Every run completes (no task killed by another's clean-up); a container of a run A's
database does not know survives every sweep; a leftover container of a run A's database says
ended is removed."""

from __future__ import annotations

import re
import time
import uuid
from typing import Callable

import docker
import pytest

from tests.e2e.test_run_control import _containers, _slow_workflow, _submit, _world
from tests.fixtures.docker_images import TEST_LABEL, PushedImage
from tests.fixtures.live import LiveServer
from wes_server.containers import MANAGED_LABEL, PROCESS_LABEL, RUN_LABEL, SCOPE_LABEL, TASK_LABEL

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SLEEP = 15
FAST_RECONCILE = {"HELIXGATE_LEASE_SECONDS": "4"}  # a sweep every 2 s on every process


def _scope(server: LiveServer) -> str:
    found = re.search(r"container scope ([A-Za-z0-9._-]+)\)", server.log())
    assert found, server.log()[-2000:]
    return found.group(1)


def _plant(client: docker.DockerClient, image: str, scope: str, run_id: str, session: str) -> str:
    labels = {MANAGED_LABEL: "true", SCOPE_LABEL: scope, RUN_LABEL: run_id, TASK_LABEL: "t", TEST_LABEL: session}
    return str(client.api.create_container(image, ["sleep", "300"], labels=labels)["Id"])


def _exists(client: docker.DockerClient, container_id: str) -> bool:
    try:
        client.api.inspect_container(container_id)
        return True
    except docker.errors.NotFound:
        return False


def test_deployments_and_workers_sharing_one_engine_never_kill_each_others_tasks(
    live_server_factory: Callable[..., LiveServer],
    pushed_busybox: PushedImage,
    busybox_image: str,
    docker_client: docker.DockerClient,
    test_session_id: str,
) -> None:
    a = live_server_factory(extra_env=FAST_RECONCILE, workers=1)
    a_worker = live_server_factory(
        extra_env=FAST_RECONCILE, workers=1, service="worker", data_dir=a.data_dir, port=a.port
    )
    b = live_server_factory(extra_env=FAST_RECONCILE, workers=1)
    scope_a, scope_b = _scope(a), _scope(b)
    assert scope_a.startswith("hg-") and scope_b.startswith("hg-") and scope_a != scope_b
    assert _scope(a_worker) == scope_a, "every process of one deployment derives the same scope"
    # A deployment configured with A's scope (or a database restored elsewhere): its sweeps see
    # A's containers but must leave them, their runs being unknown to its database.
    c = live_server_factory(extra_env={**FAST_RECONCILE, "HELIXGATE_CONTAINER_SCOPE": scope_a}, workers=1)
    assert _scope(c) == scope_a

    world_a = _world(a, pushed_busybox, test_session_id)
    world_b = _world(b, pushed_busybox, test_session_id)
    unknown = _plant(docker_client, busybox_image, scope_a, uuid.uuid4().hex, test_session_id)
    planted = [unknown]
    try:
        docker_client.api.start(unknown)
        runs = [(world_a, _submit(world_a, _slow_workflow(world_a.image.pinned_ref, SLEEP))) for _ in range(2)]
        runs.append((world_b, _submit(world_b, _slow_workflow(world_b.image.pinned_ref, SLEEP))))
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not all(_containers(run_id) for _, run_id in runs):
            time.sleep(0.2)
        assert all(_containers(run_id) for _, run_id in runs), "every run's sleeping task should be running"
        # both of A's runs are running at once, one on each of A's two worker processes
        a_runs = [world_a.analyst.api.get_json(f"/ga4gh/wes/v1/runs/{r}") for w, r in runs if w is world_a]
        assert all(r["state"] == "RUNNING" for r in a_runs), a_runs
        started_by = {
            (c.get("Labels") or {}).get(PROCESS_LABEL)
            for w, r in runs
            if w is world_a
            for c in docker_client.api.containers(all=True, filters={"label": f"{RUN_LABEL}={r}"})
        }
        assert len(started_by) == 2 and None not in started_by, started_by

        for world, run_id in runs:
            state = world.analyst.wait(run_id, timeout=240)
            log = world.analyst.run_log(run_id)
            assert state == "COMPLETE", (state, log["run_log"]["system_logs"])
            assert all(t["exit_code"] == 0 for t in world.analyst.run_tasks(run_id))
        assert _exists(docker_client, unknown), "a container of a run A's database does not know was removed"

        # A leftover of a run that A's database says ended goes at the next sweep of A's processes.
        ended_run = runs[0][1]
        leftover = _plant(docker_client, busybox_image, scope_a, ended_run, test_session_id)
        planted.append(leftover)
        deadline = time.monotonic() + 60
        while _exists(docker_client, leftover) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not _exists(docker_client, leftover), "the leftover of an ended run was not removed"
        assert _exists(docker_client, unknown)
        for server in (a, a_worker, b, c):
            assert "Traceback" not in server.log(), server.log()[-3000:]
    finally:
        for cid in planted:
            try:
                docker_client.api.remove_container(cid, force=True)
            except docker.errors.NotFound:
                pass
