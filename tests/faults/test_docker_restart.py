"""The Docker engine is stopped and started again (as scripts/services.sh starts it) while a
task runs: the run fails cleanly (terminal, explained, no container left) and a resubmission
completes.

The engine is shared by everyone on this machine: the outage is kept short, serialized
through a lock file, and the engine is always started again in ``finally``."""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable

import docker
import pytest

from tests.faults.conftest import make_world, tool_cwl
from tests.fixtures.docker_images import PushedImage, labelled_containers, session_scope

pytestmark = [pytest.mark.integration, pytest.mark.slow]

LOCK = Path("/tmp/helixgate-dockerd-restart.lock")  # noqa: S108 - shared by every test session on this host
STATE = Path(os.environ.get("HELIXGATE_SERVICES_DIR", "/tmp/helixgate-services"))  # noqa: S108


def _engine_up() -> bool:
    try:
        return bool(docker.from_env(timeout=5).ping())
    except Exception:  # noqa: BLE001 - any failure means "not up"
        return False


def _dockerd_pid() -> int | None:
    try:
        return int(Path("/var/run/docker.pid").read_text().strip())
    except (OSError, ValueError):
        return None


def _start_dockerd() -> None:
    STATE.mkdir(parents=True, exist_ok=True)
    with open(STATE / "dockerd.log", "ab") as log:
        subprocess.Popen(  # noqa: S603 - same command line as scripts/services.sh
            ["dockerd", "--containerd=/run/containerd/containerd.sock"],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not _engine_up():
        time.sleep(0.2)
    assert _engine_up(), "dockerd did not come back"


@contextmanager
def engine_outage() -> Iterator[float]:
    """Stop dockerd (SIGTERM to the pid in its pid file), then start it again; yields nothing useful."""
    with open(LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one engine restart at a time on this host
        started = time.monotonic()
        try:
            pid = _dockerd_pid()
            assert pid is not None, "no /var/run/docker.pid: dockerd is not running as services.sh starts it"
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.1)
            yield started
        finally:
            if not _engine_up():
                _start_dockerd()


def _containers(run_id: str) -> list[Any]:
    return labelled_containers(f"helixgate.run_id={run_id}")


def test_docker_engine_restart_during_a_task_fails_cleanly_and_resubmission_completes(
    live_server_factory: Callable[..., Any], pushed_busybox: PushedImage, test_session_id: str
) -> None:
    env = {"HELIXGATE_CONTAINER_SCOPE": session_scope(test_session_id), "HELIXGATE_LEASE_SECONDS": "5"}
    server = live_server_factory(extra_env=env)
    world = make_world(server, pushed_busybox)
    obj = world.steward.upload(b"b\na\n", name="t.txt", dataset_id=world.dataset_id)
    params = {"text": {"class": "File", "location": world.drs_uri(obj["id"])}}
    slow = tool_cwl(world.image.pinned_ref, 'sleep 30; sort "$0"')
    run_id = world.analyst.submit_run("tool.cwl", params, attachments={"tool.cwl": slow})
    deadline = time.monotonic() + 90
    while not _containers(run_id) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _containers(run_id), "the task's container should be running"

    with engine_outage() as started:
        time.sleep(1)  # the worker notices the engine is gone
    outage = time.monotonic() - started

    state = world.analyst.wait(run_id, timeout=180)
    log = world.analyst.run_log(run_id)
    assert state in ("EXECUTOR_ERROR", "SYSTEM_ERROR"), (state, log, server.log()[-3000:])
    assert log["run_log"]["system_logs"], log  # the failure is explained
    deadline = time.monotonic() + 30
    while _containers(run_id) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _containers(run_id) == []

    quick = tool_cwl(world.image.pinned_ref, 'sort "$0"')
    again = world.analyst.submit_run("tool.cwl", params, attachments={"tool.cwl": quick})
    assert world.analyst.wait(again, timeout=180) == "COMPLETE", world.analyst.run_log(again)
    verify = server.cli("audit", "verify")
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert outage < 60, f"engine outage lasted {outage:.1f}s"
