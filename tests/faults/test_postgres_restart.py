"""PostgreSQL restarted while workflows run: every run ends COMPLETE or fails cleanly, none is
lost or duplicated, no task is recorded twice, and the audit chain still verifies.

The cluster is shared with other tests: the restart is one quick ``pg_ctlcluster restart``
and the cluster is started again in ``finally`` whatever happens."""

from __future__ import annotations

import subprocess
import time
from collections import Counter
from typing import Any, Callable

import pytest
import requests

from tests.faults.conftest import all_run_ids, db_count, make_world, tool_cwl, wait_all
from tests.fixtures.docker_images import PushedImage, session_scope

pytestmark = [pytest.mark.integration, pytest.mark.slow]

RUNS = 6


def _cluster() -> tuple[str, str]:
    out = subprocess.run(["pg_lsclusters", "-h"], capture_output=True, text=True, check=True).stdout
    version, name = out.split()[:2]
    return version, name


def _online() -> bool:
    out = subprocess.run(["pg_lsclusters", "-h"], capture_output=True, text=True, check=False).stdout
    return "online" in out


def ensure_postgres_up() -> None:
    if not _online():
        version, name = _cluster()
        subprocess.run(["pg_ctlcluster", version, name, "start"], check=False, timeout=60)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        r = subprocess.run(["su", "postgres", "-c", "psql -qAtc 'select 1'"], capture_output=True, check=False)
        if r.returncode == 0:
            return
        time.sleep(0.5)
    raise AssertionError("PostgreSQL did not come back")


def test_postgres_restart_during_running_workflows_loses_and_duplicates_nothing(
    live_server_factory: Callable[..., Any], pushed_busybox: PushedImage, test_session_id: str, pg_url: str
) -> None:
    env = {
        "HELIXGATE_CONTAINER_SCOPE": session_scope(test_session_id),
        "HELIXGATE_DATABASE_URL": pg_url,
        "HELIXGATE_LEASE_SECONDS": "6",
    }
    server = live_server_factory(extra_env=env)
    world = make_world(server, pushed_busybox)
    obj = world.steward.upload(b"b\na\n", name="t.txt", dataset_id=world.dataset_id)
    params = {"text": {"class": "File", "location": world.drs_uri(obj["id"])}}
    cwl = tool_cwl(world.image.pinned_ref, 'sleep 3; sort "$0"')
    run_ids = [world.analyst.submit_run("tool.cwl", params, attachments={"tool.cwl": cwl}) for _ in range(RUNS)]

    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and "RUNNING" not in {world.analyst.run_status(r) for r in run_ids}:
        time.sleep(0.2)
    version, name = _cluster()
    try:
        restart = subprocess.run(
            ["pg_ctlcluster", version, name, "restart"], capture_output=True, text=True, timeout=60
        )
        assert restart.returncode == 0, restart.stderr
    finally:
        ensure_postgres_up()

    states = wait_all(world.analyst, run_ids, timeout=300)
    assert set(states.values()) <= {"COMPLETE", "SYSTEM_ERROR", "EXECUTOR_ERROR"}, states
    assert Counter(states.values())["COMPLETE"] >= 1, (states, server.log()[-3000:])
    for run_id, state in states.items():
        log = world.analyst.run_log(run_id)
        if state == "COMPLETE":
            assert log["outputs"]["out"]["location"].startswith("drs://")
        else:  # a clean failure says why
            assert log["run_log"]["system_logs"], log
    listed = all_run_ids(world.analyst)
    assert sorted(listed) == sorted(run_ids)  # nothing lost, nothing duplicated
    assert db_count(pg_url, "SELECT count(*) FROM wes_runs") == RUNS
    assert db_count(pg_url, "SELECT count(*) FROM (SELECT run_id, name FROM wes_tasks "
                            "GROUP BY run_id, name HAVING count(*) > 1) d") == 0
    assert db_count(pg_url, "SELECT count(*) FROM wes_queue") == 0  # no run left queued behind
    assert requests.get(f"{server.url}/ga4gh/wes/v1/service-info", timeout=10).status_code == 200
    verify = server.cli("audit", "verify")
    assert verify.returncode == 0, verify.stdout + verify.stderr
